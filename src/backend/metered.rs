//! [`MeteredBackend`]: a decorator that counts and times a backend's key operations for
//! `GET /metrics`, by device, mode, operation and result. Everything else is passed through
//! unchanged, so the decorated backend behaves exactly as the one it wraps.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::{
    AuditSigner, BackendError, DeviceDescription, DeviceHealth, DeviceUsage, KeyBackend,
    ObjectFacts, Reseal, Resealed, Sealed,
};
use crate::domain::{
    Algorithm, BackendKind, KeyId, KeyVersion, RootKeyRef, RootMaterial, WrapMode,
};
use crate::metrics::{DeviceLabels, DeviceMetrics};
use crate::secret::SecretBytes;

/// `inner`, with its operations recorded.
pub struct MeteredBackend {
    inner: Arc<dyn KeyBackend>,
    device: &'static str,
    mode: &'static str,
    metrics: DeviceMetrics,
}

impl MeteredBackend {
    /// Records `inner`'s operations as device `inner.kind()` in `mode`.
    pub fn new(inner: Arc<dyn KeyBackend>, mode: WrapMode, metrics: DeviceMetrics) -> Self {
        Self {
            device: inner.kind().as_str(),
            mode: mode.as_str(),
            inner,
            metrics,
        }
    }

    fn record<T>(&self, op: &'static str, started: Instant, result: &Result<T, BackendError>) {
        self.metrics.observe(
            DeviceLabels {
                device: self.device,
                mode: self.mode,
                op,
                result: result_label(result),
            },
            started,
        );
    }
}

/// The result label: `ok`, or who is at fault and how, in a bounded vocabulary.
fn result_label<T>(result: &Result<T, BackendError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(BackendError::AuthenticationFailed) => "rejected",
        Err(BackendError::Unavailable | BackendError::NotConfigured(_)) => "unavailable",
        Err(BackendError::Busy) => "busy",
        Err(BackendError::RootKeyMissing(_) | BackendError::KeyBlobRejected(_)) => "key_missing",
        Err(_) => "failed",
    }
}

#[async_trait]
impl KeyBackend for MeteredBackend {
    fn kind(&self) -> BackendKind {
        self.inner.kind()
    }

    fn algorithm(&self) -> Algorithm {
        self.inner.algorithm()
    }

    async fn create_root_key(&self, root: &RootKeyRef) -> Result<RootMaterial, BackendError> {
        let started = Instant::now();
        let r = self.inner.create_root_key(root).await;
        self.record("create_root_key", started, &r);
        r
    }

    async fn destroy_root_key(&self, root: &RootKeyRef) -> Result<(), BackendError> {
        let started = Instant::now();
        let r = self.inner.destroy_root_key(root).await;
        self.record("destroy_root_key", started, &r);
        r
    }

    async fn seal(
        &self,
        root: &RootKeyRef,
        aad: Vec<u8>,
        plaintext: SecretBytes,
    ) -> Result<Sealed, BackendError> {
        let started = Instant::now();
        let r = self.inner.seal(root, aad, plaintext).await;
        self.record("seal", started, &r);
        r
    }

    async fn generate_and_seal(
        &self,
        root: &RootKeyRef,
        aad: Vec<u8>,
        len: usize,
    ) -> Result<(SecretBytes, Sealed), BackendError> {
        let started = Instant::now();
        let r = self.inner.generate_and_seal(root, aad, len).await;
        self.record("generate_and_seal", started, &r);
        r
    }

    async fn open(
        &self,
        root: &RootKeyRef,
        iv: [u8; 12],
        aad: Vec<u8>,
        ciphertext: Vec<u8>,
    ) -> Result<SecretBytes, BackendError> {
        let started = Instant::now();
        let r = self.inner.open(root, iv, aad, ciphertext).await;
        self.record("open", started, &r);
        r
    }

    /// Recorded once per call (`op="reseal"`), whatever the number of items.
    async fn reseal(&self, from: &RootKeyRef, to: &RootKeyRef, items: Vec<Reseal>) -> Resealed {
        let started = Instant::now();
        let r = self.inner.reseal(from, to, items).await;
        self.record("reseal", started, &r);
        r
    }

    async fn health(&self) -> DeviceHealth {
        self.inner.health().await
    }

    async fn maintain(&self) -> Vec<(KeyId, KeyVersion)> {
        self.inner.maintain().await
    }

    async fn usage(&self) -> DeviceUsage {
        self.inner.usage().await
    }

    fn rejected_key_blobs(&self) -> Vec<String> {
        self.inner.rejected_key_blobs()
    }

    async fn audit_signer(&self) -> Result<Arc<dyn AuditSigner>, BackendError> {
        self.inner.audit_signer().await
    }

    async fn random(&self, n: usize) -> Result<SecretBytes, BackendError> {
        let started = Instant::now();
        let result = self.inner.random(n).await;
        self.record("random", started, &result);
        result
    }

    async fn describe(&self) -> Result<DeviceDescription, BackendError> {
        self.inner.describe().await
    }

    async fn inspect_root_key(
        &self,
        root: &RootKeyRef,
    ) -> Result<Option<ObjectFacts>, BackendError> {
        self.inner.inspect_root_key(root).await
    }
}
