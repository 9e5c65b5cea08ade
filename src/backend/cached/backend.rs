//! [`CachedBackend`]: "cached" wrapping mode over any device backend.
//!
//! Creating a version asks the device for a root key and a 256-bit version-KEK drawn from the
//! device and sealed by that root key in the same device call (`generate_and_seal`); the sealed
//! KEK is stored beside the version. Wraps and unwraps then run in software: the KEK is unwrapped
//! by the device on first use (one device call), held in a [`VersionKek`] for at most the TTL,
//! and each blob is wrapped with KWP under a key derived from the KEK, the blob header, a fresh
//! 96-bit nonce and the canonical context ([`super::kwp`]).

use std::sync::Arc;

use async_trait::async_trait;

use super::{kwp, KekCache, KekCacheConfig, KwpError, VersionKek};
use crate::backend::{
    AuditSigner, BackendError, DeviceDescription, DeviceHealth, KeyBackend, ObjectFacts, Reseal,
    Resealed, Sealed,
};
use crate::domain::{Algorithm, BackendKind, KeyId, KeyVersion, RootKeyRef, RootMaterial};
use crate::format::blob::{GCM_IV_LEN, HEADER_LEN};
use crate::secret::SecretBytes;

/// Domain separation of the version-KEK's own seal (its AAD).
const KEK_AAD_LABEL: &[u8] = b"custodian/version-kek/v1";
/// Length of a version-KEK.
const KEK_LEN: usize = super::KEK_LEN;

/// The AAD the device binds a version's sealed KEK to: label ‖ key id ‖ version.
fn kek_aad(root: &RootKeyRef) -> Vec<u8> {
    let mut aad = KEK_AAD_LABEL.to_vec();
    aad.extend_from_slice(root.key_id.as_bytes());
    aad.extend_from_slice(&root.version.get().to_be_bytes());
    aad
}

/// Cached mode over `inner`.
pub struct CachedBackend {
    inner: Arc<dyn KeyBackend>,
    cache: KekCache<(KeyId, KeyVersion)>,
    rejected: crate::backend::tpm::backend::Rejections,
}

impl CachedBackend {
    /// Cached mode over `inner`, with a KEK cache of `config`.
    pub fn new(inner: Arc<dyn KeyBackend>, config: KekCacheConfig) -> Self {
        Self {
            inner,
            cache: KekCache::new(config),
            rejected: Default::default(),
        }
    }

    /// The version's KEK: from the cache, or unwrapped by the device (one call, shared by
    /// concurrent requests).
    async fn kek(&self, root: &RootKeyRef) -> Result<Arc<VersionKek>, BackendError> {
        let inner = Arc::clone(&self.inner);
        let root_for_unwrap = root.clone();
        let label = root.label();
        let kek = self
            .cache
            .get_or_unwrap((root.key_id, root.version), move || async move {
                let root = root_for_unwrap;
                let sealed = root.material.wrapped_kek.clone().ok_or(
                    BackendError::Invariant("a cached-mode version has no stored KEK"),
                )?;
                let iv: [u8; GCM_IV_LEN] = sealed
                    .get(..GCM_IV_LEN)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(|| BackendError::KeyBlobRejected(root.label()))?;
                let ciphertext = sealed.get(GCM_IV_LEN..).unwrap_or_default().to_vec();
                let kek = match inner.open(&root, iv, kek_aad(&root), ciphertext).await {
                    Ok(k) => k,
                    // The stored KEK does not open under its root key: the database row was
                    // changed, or belongs to another version. Not the caller's fault.
                    Err(BackendError::AuthenticationFailed) => {
                        tracing::error!(label = %root.label(), "stored version-KEK failed its integrity check");
                        return Err(BackendError::KeyBlobRejected(root.label()));
                    }
                    Err(e) => return Err(e),
                };
                VersionKek::from_slice(kek.expose_secret())
                    .map_err(|_| BackendError::KeyBlobRejected(root.label()))
            })
            .await;
        self.rejected.track(&label, kek)
    }
}

/// Splits the blob AAD (header ‖ canonical context) into its parts.
fn split(aad: &[u8]) -> Result<(&[u8], &[u8]), BackendError> {
    if aad.len() < HEADER_LEN {
        return Err(BackendError::Invariant("blob AAD shorter than its header"));
    }
    Ok(aad.split_at(HEADER_LEN))
}

/// KWP's "header" input: the blob header followed by the nonce.
fn bound_header(header: &[u8], nonce: &[u8; GCM_IV_LEN]) -> Vec<u8> {
    let mut h = header.to_vec();
    h.extend_from_slice(nonce);
    h
}

/// Wraps `plaintext` under `kek` with a fresh nonce, bound to `aad` (header ‖ context).
fn wrap_under(kek: &VersionKek, aad: &[u8], plaintext: &[u8]) -> Result<Sealed, BackendError> {
    let (header, context) = split(aad)?;
    let iv = nonce()?;
    let ciphertext =
        kwp::wrap(kek, &bound_header(header, &iv), context, plaintext).map_err(kwp_error)?;
    Ok(Sealed { iv, ciphertext })
}

/// Unwraps what [`wrap_under`] made with nonce `iv` and the same `aad`.
fn unwrap_under(
    kek: &VersionKek,
    iv: [u8; GCM_IV_LEN],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<SecretBytes, BackendError> {
    let (header, context) = split(aad)?;
    kwp::unwrap(kek, &bound_header(header, &iv), context, ciphertext).map_err(kwp_error)
}

fn kwp_error(e: KwpError) -> BackendError {
    match e {
        KwpError::IntegrityCheckFailed | KwpError::WrappedLength(_) => {
            BackendError::AuthenticationFailed
        }
        other => BackendError::Device(Box::new(other)),
    }
}

fn nonce() -> Result<[u8; GCM_IV_LEN], BackendError> {
    let mut n = [0u8; GCM_IV_LEN];
    getrandom::getrandom(&mut n).map_err(|e| BackendError::Device(Box::new(e)))?;
    Ok(n)
}

#[async_trait]
impl KeyBackend for CachedBackend {
    fn kind(&self) -> BackendKind {
        self.inner.kind()
    }

    /// The KEK cache only: the device's sessions are reported by its direct-mode backend.
    async fn usage(&self) -> crate::backend::DeviceUsage {
        crate::backend::DeviceUsage {
            sessions: None,
            kek_cache: Some(crate::backend::KekCacheUsage {
                counters: self.cache.metrics(),
                entries: self.cache.len().await as u64,
            }),
        }
    }

    fn algorithm(&self) -> Algorithm {
        Algorithm::Aes256KwpCached
    }

    async fn create_root_key(&self, root: &RootKeyRef) -> Result<RootMaterial, BackendError> {
        let mut material = self.inner.create_root_key(root).await?;
        let with_blob = RootKeyRef {
            material: material.clone(),
            ..root.clone()
        };
        let sealed = self
            .inner
            .generate_and_seal(&with_blob, kek_aad(root), KEK_LEN)
            .await;
        let (kek, sealed) = match sealed {
            Ok(s) => s,
            Err(e) => {
                if let Err(d) = self.inner.destroy_root_key(&with_blob).await {
                    tracing::error!(label = %root.label(), error = %d, "could not destroy a root key whose KEK failed: orphaned device object");
                }
                return Err(e);
            }
        };
        let mut stored = sealed.iv.to_vec();
        stored.extend_from_slice(&sealed.ciphertext);
        material.wrapped_kek = Some(stored.into());
        // Prime the cache with the KEK just drawn: the first wrap needs no device call.
        let kek = VersionKek::from_slice(kek.expose_secret())
            .map_err(|e| BackendError::Device(Box::new(e)))?;
        let _ = self
            .cache
            .get_or_unwrap((root.key_id, root.version), move || async move {
                Ok::<_, BackendError>(kek)
            })
            .await?;
        Ok(material)
    }

    async fn destroy_root_key(&self, root: &RootKeyRef) -> Result<(), BackendError> {
        self.cache.invalidate(&(root.key_id, root.version)).await;
        self.inner.destroy_root_key(root).await
    }

    async fn seal(
        &self,
        root: &RootKeyRef,
        aad: Vec<u8>,
        plaintext: SecretBytes,
    ) -> Result<Sealed, BackendError> {
        let kek = self.kek(root).await?;
        wrap_under(&kek, &aad, plaintext.expose_secret())
    }

    async fn generate_and_seal(
        &self,
        root: &RootKeyRef,
        aad: Vec<u8>,
        len: usize,
    ) -> Result<(SecretBytes, Sealed), BackendError> {
        // The data key comes from the host's CSPRNG: drawing it from the device would cost the
        // device call per request that cached mode exists to avoid.
        let mut key = zeroize::Zeroizing::new(vec![0u8; len]);
        getrandom::getrandom(&mut key).map_err(|e| BackendError::Device(Box::new(e)))?;
        crate::backend::seal_drawn_key(self, root, aad, SecretBytes::new(key)).await
    }

    async fn open(
        &self,
        root: &RootKeyRef,
        iv: [u8; 12],
        aad: Vec<u8>,
        ciphertext: Vec<u8>,
    ) -> Result<SecretBytes, BackendError> {
        let kek = self.kek(root).await?;
        unwrap_under(&kek, iv, &aad, &ciphertext)
    }

    /// Both version-KEKs once, then every item in memory: no device call once they are cached.
    async fn reseal(&self, from: &RootKeyRef, to: &RootKeyRef, items: Vec<Reseal>) -> Resealed {
        let (old, new) = (self.kek(from).await?, self.kek(to).await?);
        Ok(items
            .iter()
            .map(|item| {
                let plaintext = unwrap_under(&old, item.iv, &item.open_aad, &item.ciphertext)?;
                wrap_under(&new, &item.seal_aad, plaintext.expose_secret())
            })
            .collect())
    }

    async fn health(&self) -> DeviceHealth {
        self.inner.health().await
    }

    fn rejected_key_blobs(&self) -> Vec<String> {
        self.rejected.labels()
    }

    async fn maintain(&self) -> Vec<(KeyId, KeyVersion)> {
        let dropped = self.cache.sweep().await;
        if !dropped.is_empty() {
            tracing::debug!(dropped = dropped.len(), "expired version-KEKs dropped");
        }
        dropped
    }

    async fn audit_signer(&self) -> Result<Arc<dyn AuditSigner>, BackendError> {
        self.inner.audit_signer().await
    }

    async fn random(&self, n: usize) -> Result<SecretBytes, BackendError> {
        self.inner.random(n).await
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
