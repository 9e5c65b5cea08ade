//! Key backends: the devices that hold master keys. One trait, [`KeyBackend`]; one directory
//! per device kind. A backend hands out seal/open operations under a root key, never key bytes.
//!
//! # Create/rollback protocol (two-store writes)
//!
//! A new key version is created in this order, by [`crate::service::KeyService`]:
//! 1. [`KeyBackend::create_root_key`] generates the root key inside the device;
//! 2. the store records the version;
//! 3. if step 2 fails, [`KeyBackend::destroy_root_key`] removes the device object and the fact
//!    is logged (at `error` if the destroy fails too, naming the orphaned label).
//!
//! A device object without a store record is therefore at worst an orphan that an operator can
//! see by its label; a store record without a device object never exists by our doing.

pub mod cached;
pub mod lane;
pub mod metered;
pub mod pkcs11;
pub mod tpm;

use async_trait::async_trait;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::audit::signature::PublicKey;
use crate::domain::{Algorithm, BackendKind, RootKeyRef, RootMaterial, WrapMode};
use crate::secret::SecretBytes;

/// Output of a device seal: the IV it used and ciphertext ‖ tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The 96-bit GCM IV.
    pub iv: [u8; 12],
    /// Ciphertext followed by the 128-bit tag.
    pub ciphertext: Vec<u8>,
}

/// One stored data key to move to another root key ([`KeyBackend::reseal`]). Holds no
/// plaintext: the sealed form and the two AADs only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reseal {
    /// The IV it was sealed with.
    pub iv: [u8; 12],
    /// Its ciphertext ‖ tag.
    pub ciphertext: Vec<u8>,
    /// The AAD it was sealed with.
    pub open_aad: Vec<u8>,
    /// The AAD to seal it with.
    pub seal_aad: Vec<u8>,
}

/// What [`KeyBackend::reseal`] answers: a verdict per item, in item order, or one error for
/// the whole call.
pub type Resealed = Result<Vec<Result<Sealed, BackendError>>, BackendError>;

/// What the device says about its own health.
///
/// The fields are in name order: readiness answers list members that way (as when the answer
/// was a JSON map).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceHealth {
    /// A short, non-secret reason when not usable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// How many times the module has been re-initialised since start-up.
    pub reinitialisations: u64,
    /// True when a session is usable right now.
    pub usable: bool,
}

/// How a device's sessions and caches are used now, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DeviceUsage {
    /// The session pool, for devices that have one.
    pub sessions: Option<SessionUsage>,
    /// The version-KEK cache, in cached mode.
    pub kek_cache: Option<KekCacheUsage>,
}

/// A session pool's use (counters since start-up).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SessionUsage {
    /// Sessions in the pool.
    pub capacity: u64,
    /// Sessions checked out now.
    pub in_use: u64,
    /// Operations that found every session busy and waited.
    pub waits: u64,
    /// Seconds spent waiting, summed.
    pub wait_seconds: f64,
    /// Waits that ran out (answered `device_busy`).
    pub timeouts: u64,
}

/// A version-KEK cache's use.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KekCacheUsage {
    /// Counters since start-up.
    pub counters: cached::KekCacheMetrics,
    /// KEKs held now.
    pub entries: u64,
}

/// Why a backend operation failed, grouped by who is at fault.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    // --- the caller's input ---
    /// The ciphertext, its header or its context did not authenticate. Never returns plaintext.
    #[error("ciphertext failed authentication")]
    AuthenticationFailed,

    // --- a dependency (or a custody anomaly an operator must look at) ---
    /// The root key of this version is not in the device although the store records it.
    #[error("root key {0} is not in the device")]
    RootKeyMissing(String),
    /// The device refused to load the stored key blob of the named key version (tampered,
    /// truncated, or sealed under another device's or another parent's seed). A verdict on one
    /// stored object, not on the device: the device stays usable.
    #[error("the device rejected the stored key blob of {0}")]
    KeyBlobRejected(String),
    /// The device is down or being re-initialised; retry later.
    #[error("the key device is unavailable")]
    Unavailable,
    /// Every session is busy for longer than the wait allows.
    #[error("the key device is busy")]
    Busy,
    /// The device refused an operation for a reason that is not the caller's.
    #[error("the key device failed")]
    Device(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The configured mechanism is not offered by the token.
    #[error("the token does not offer mechanism {0}")]
    MissingMechanism(&'static str),
    /// The token could not be found or opened at start-up.
    #[error("cannot open the token: {0}")]
    Open(String),

    /// This backend does not offer the capability.
    #[error("the key device does not support {0}")]
    Unsupported(&'static str),

    /// Keys of this backend or mode are asked for but it is not configured on this node.
    #[error("the {0} backend is not configured")]
    NotConfigured(&'static str),

    // --- a bug ---
    /// Something that must hold did not.
    #[error("backend invariant violated: {0}")]
    Invariant(&'static str),
}

impl BackendError {
    /// The same error again, for reporting one failure against several items (a device error's
    /// source is kept as its message).
    #[must_use]
    pub fn duplicate(&self) -> Self {
        match self {
            Self::AuthenticationFailed => Self::AuthenticationFailed,
            Self::RootKeyMissing(l) => Self::RootKeyMissing(l.clone()),
            Self::KeyBlobRejected(l) => Self::KeyBlobRejected(l.clone()),
            Self::Unavailable => Self::Unavailable,
            Self::Busy => Self::Busy,
            Self::Device(e) => Self::Device(e.to_string().into()),
            Self::MissingMechanism(m) => Self::MissingMechanism(m),
            Self::Open(m) => Self::Open(m.clone()),
            Self::Unsupported(c) => Self::Unsupported(c),
            Self::NotConfigured(b) => Self::NotConfigured(b),
            Self::Invariant(m) => Self::Invariant(m),
        }
    }
}

/// A device that holds root keys and seals/opens under them.
///
/// Every method may block on the device; implementations run device calls on the blocking pool
/// and return `Unavailable` rather than falling back to software.
#[async_trait]
pub trait KeyBackend: Send + Sync + 'static {
    /// Which kind of device this is.
    fn kind(&self) -> BackendKind;

    /// The algorithm of the blobs [`KeyBackend::seal`] makes (written in their header).
    fn algorithm(&self) -> Algorithm;

    /// Generates the root key for `root` inside the device: non-extractable, sensitive. Returns
    /// what the store must keep beside it (a TPM key blob, a wrapped version-KEK), if anything.
    ///
    /// # Errors
    /// `Unavailable`/`Device` when the device refuses; `Invariant` when the created object does
    /// not read back with the required attributes (it is destroyed again first).
    async fn create_root_key(&self, root: &RootKeyRef) -> Result<RootMaterial, BackendError>;

    /// Destroys the root key for `root`. Used to roll back a failed creation.
    ///
    /// # Errors
    /// `RootKeyMissing` when there is no such object; `Unavailable`/`Device` otherwise.
    async fn destroy_root_key(&self, root: &RootKeyRef) -> Result<(), BackendError>;

    /// Seals `plaintext` under `root` with `aad` bound.
    ///
    /// # Errors
    /// `RootKeyMissing`, `Unavailable`, `Busy`, `Device`.
    async fn seal(
        &self,
        root: &RootKeyRef,
        aad: Vec<u8>,
        plaintext: SecretBytes,
    ) -> Result<Sealed, BackendError>;

    /// Draws a data key of `len` bytes and seals it under `root`, in one trip to the device.
    ///
    /// # Errors
    /// As [`KeyBackend::seal`].
    async fn generate_and_seal(
        &self,
        root: &RootKeyRef,
        aad: Vec<u8>,
        len: usize,
    ) -> Result<(SecretBytes, Sealed), BackendError>;

    /// Opens what [`KeyBackend::seal`] sealed.
    ///
    /// # Errors
    /// `AuthenticationFailed` when anything was changed (the device's verdict, after its health
    /// was confirmed), plus the errors of `seal`.
    async fn open(
        &self,
        root: &RootKeyRef,
        iv: [u8; 12],
        aad: Vec<u8>,
        ciphertext: Vec<u8>,
    ) -> Result<SecretBytes, BackendError>;

    /// Opens each item under `from` and seals what it holds under `to`, with a fresh IV each,
    /// in as few trips to the device as the device allows (PKCS#11: one session for the lot);
    /// the plaintext never leaves the call. An item that does not open answers
    /// `AuthenticationFailed` and the others go on. The whole call fails when the device is
    /// down or busy (`Unavailable`, `Busy`) or a root key cannot be used, and then nothing it
    /// did counts. No default: a decorator that forgot to forward it would lose the batching.
    ///
    /// # Errors
    /// As [`KeyBackend::seal`] and [`KeyBackend::open`], for the whole call.
    async fn reseal(&self, from: &RootKeyRef, to: &RootKeyRef, items: Vec<Reseal>) -> Resealed;

    /// Checks that a session is usable now (a cheap device call).
    async fn health(&self) -> DeviceHealth;

    /// Periodic upkeep (cached mode: drop expired version-KEKs, which zeroises them). Returns
    /// the key versions whose unwrapped key material left memory, for the audit log.
    async fn maintain(&self) -> Vec<(crate::domain::KeyId, crate::domain::KeyVersion)> {
        Vec::new()
    }

    /// How sessions and caches are used now, for metrics; nothing by default.
    async fn usage(&self) -> DeviceUsage {
        DeviceUsage::default()
    }

    /// Labels of key versions whose stored device material the device refused since it last
    /// accepted it (a TPM blob from another TPM, a damaged wrapped KEK), for readiness.
    fn rejected_key_blobs(&self) -> Vec<String> {
        Vec::new()
    }

    /// The device-resident key that signs audit checkpoints and custody reports, generated in
    /// the device on first use and never extractable.
    ///
    /// # Errors
    /// `Unsupported` by default; device errors.
    async fn audit_signer(&self) -> Result<Arc<dyn AuditSigner>, BackendError> {
        Err(BackendError::Unsupported("audit signing"))
    }

    /// `n` bytes from the device's random number generator (`C_GenerateRandom`,
    /// `TPM2_GetRandom`), never the host's.
    ///
    /// # Errors
    /// `Invariant` above the device's per-request limit; device errors. (No default: a
    /// decorator that forgot to forward it would answer "unsupported" instead of the device.)
    async fn random(&self, n: usize) -> Result<SecretBytes, BackendError>;

    /// What the device says about itself now, for the custody report.
    ///
    /// # Errors
    /// `Unsupported` by default; device errors.
    async fn describe(&self) -> Result<DeviceDescription, BackendError> {
        Err(BackendError::Unsupported("device description"))
    }

    /// The root key of `root` as the device reports it now, read fresh (no cached handle);
    /// `None` when the device holds no such object.
    ///
    /// # Errors
    /// `Unsupported` by default; device errors.
    async fn inspect_root_key(
        &self,
        root: &RootKeyRef,
    ) -> Result<Option<ObjectFacts>, BackendError> {
        let _ = root;
        Err(BackendError::Unsupported("custody inspection"))
    }
}

/// The configured backends, one per (device kind, wrapping mode). Cached modes are the same
/// device behind [`cached::CachedBackend`].
#[derive(Clone)]
pub struct Backends {
    pkcs11: Arc<dyn KeyBackend>,
    pkcs11_cached: Arc<dyn KeyBackend>,
    tpm: Option<(Arc<dyn KeyBackend>, Arc<dyn KeyBackend>)>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends")
            .field("tpm", &self.tpm.is_some())
            .finish_non_exhaustive()
    }
}

impl Backends {
    /// PKCS#11 in both modes, and the TPM in both modes when given.
    pub fn new(
        pkcs11: Arc<dyn KeyBackend>,
        tpm: Option<Arc<dyn KeyBackend>>,
        cache: &cached::KekCacheConfig,
    ) -> Self {
        let cached = |b: &Arc<dyn KeyBackend>| -> Arc<dyn KeyBackend> {
            Arc::new(cached::CachedBackend::new(Arc::clone(b), *cache))
        };
        Self {
            pkcs11_cached: cached(&pkcs11),
            tpm: tpm.map(|t| {
                let c = cached(&t);
                (t, c)
            }),
            pkcs11,
        }
    }

    /// The same backends, each behind [`metered::MeteredBackend`] recording its operations
    /// into `metrics`.
    #[must_use]
    pub fn metered(self, metrics: &crate::metrics::DeviceMetrics) -> Self {
        let m = |b: Arc<dyn KeyBackend>, mode: WrapMode| -> Arc<dyn KeyBackend> {
            Arc::new(metered::MeteredBackend::new(b, mode, metrics.clone()))
        };
        Self {
            pkcs11: m(self.pkcs11, WrapMode::Direct),
            pkcs11_cached: m(self.pkcs11_cached, WrapMode::Cached),
            tpm: self
                .tpm
                .map(|(d, c)| (m(d, WrapMode::Direct), m(c, WrapMode::Cached))),
        }
    }

    /// The backend for keys of `kind` in `mode`.
    ///
    /// # Errors
    /// `NotConfigured` for a TPM key on a node without a TPM.
    pub fn get(
        &self,
        kind: BackendKind,
        mode: WrapMode,
    ) -> Result<&Arc<dyn KeyBackend>, BackendError> {
        match (kind, mode) {
            (BackendKind::Pkcs11, WrapMode::Direct) => Ok(&self.pkcs11),
            (BackendKind::Pkcs11, WrapMode::Cached) => Ok(&self.pkcs11_cached),
            (BackendKind::Tpm, mode) => match (&self.tpm, mode) {
                (Some((direct, _)), WrapMode::Direct) => Ok(direct),
                (Some((_, cached)), WrapMode::Cached) => Ok(cached),
                (None, _) => Err(BackendError::NotConfigured("tpm")),
            },
        }
    }

    /// The device that holds the audit signing key (the PKCS#11 token).
    pub fn signing(&self) -> &Arc<dyn KeyBackend> {
        &self.pkcs11
    }

    /// Every configured device once (direct modes), for readiness and the custody report.
    pub fn devices(&self) -> Vec<&Arc<dyn KeyBackend>> {
        let mut v = vec![&self.pkcs11];
        if let Some((t, _)) = &self.tpm {
            v.push(t);
        }
        v
    }

    /// The TPM (direct mode), when configured.
    pub fn tpm(&self) -> Option<&Arc<dyn KeyBackend>> {
        self.tpm.as_ref().map(|(t, _)| t)
    }

    /// Every backend in every mode.
    pub fn all(&self) -> Vec<&Arc<dyn KeyBackend>> {
        let mut v = vec![&self.pkcs11, &self.pkcs11_cached];
        if let Some((t, c)) = &self.tpm {
            v.push(t);
            v.push(c);
        }
        v
    }
}

/// For `generate_and_seal` implementations that draw the key themselves: seals a copy of `key`
/// with `backend` and returns the key beside its sealed form.
///
/// # Errors
/// Those of [`KeyBackend::seal`].
pub(crate) async fn seal_drawn_key(
    backend: &(impl KeyBackend + ?Sized),
    root: &RootKeyRef,
    aad: Vec<u8>,
    key: SecretBytes,
) -> Result<(SecretBytes, Sealed), BackendError> {
    let copy = SecretBytes::new(zeroize::Zeroizing::new(key.expose_secret().to_vec()));
    let sealed = backend.seal(root, aad, copy).await?;
    Ok((key, sealed))
}

/// [`KeyBackend::reseal`] as an open then a seal per item, for devices with nothing better.
///
/// # Errors
/// `Unavailable` or `Busy` from either call ends the whole call with that error.
pub(crate) async fn reseal_each(
    backend: &(impl KeyBackend + ?Sized),
    from: &RootKeyRef,
    to: &RootKeyRef,
    items: Vec<Reseal>,
) -> Resealed {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let moved = match backend
            .open(from, item.iv, item.open_aad, item.ciphertext)
            .await
        {
            Ok(plaintext) => backend.seal(to, item.seal_aad, plaintext).await,
            Err(e) => Err(e),
        };
        match moved {
            Err(e @ (BackendError::Unavailable | BackendError::Busy)) => return Err(e),
            other => out.push(other),
        }
    }
    Ok(out)
}

/// Signs with a device-resident key (ECDSA P-256 over SHA-256); never exposes the key.
#[async_trait]
pub trait AuditSigner: Send + Sync + 'static {
    /// The public half, for auditors.
    fn public_key(&self) -> &PublicKey;

    /// A DER-encoded signature over `message` (hashed with SHA-256 first).
    ///
    /// # Errors
    /// Device errors.
    async fn sign(&self, message: Vec<u8>) -> Result<Vec<u8>, BackendError>;

    /// The signing key's own custody facts, read back from the device now.
    ///
    /// # Errors
    /// Device errors.
    async fn inspect(&self) -> Result<Option<ObjectFacts>, BackendError>;
}

/// The device as it describes itself (PKCS#11 `C_GetTokenInfo`; TPM properties).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceDescription {
    /// Which kind of device.
    pub backend: BackendKind,
    /// Token label.
    pub label: String,
    /// Manufacturer id.
    pub manufacturer: String,
    /// Model.
    pub model: String,
    /// Serial number.
    pub serial: String,
    /// Firmware version.
    pub firmware: String,
    /// Hardware version.
    pub hardware: String,
}

/// A device object's custody attributes as read back from the device.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ObjectFacts {
    /// Attribute name (`CKA_SENSITIVE`, …) → the value the device reported.
    pub attributes: BTreeMap<String, serde_json::Value>,
    /// Key type (`CKK_AES`, `CKK_EC`, …).
    pub key_type: String,
    /// Key size in bits.
    pub key_bits: u64,
    /// How many device objects carry this object's id (more than one is an anomaly).
    pub objects: usize,
    /// Every way the object falls short of invariant 1, in words; empty when it satisfies it.
    pub weaknesses: Vec<String>,
    /// A device attestation of the object (TPM: a `TPM2_Certify` statement), when the device
    /// offers one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attestation: Option<serde_json::Value>,
}
