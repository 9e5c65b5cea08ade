//! The TPM 2.0 device layer (tss-esapi 7): swtpm in development, a hardware TPM in production.
//! [`backend::TpmBackend`] puts it behind [`crate::backend::KeyBackend`]; see `docs/tpm.md`.
//!
//! - [`context`]: the one owner of the ESAPI context (a dedicated thread), reconnection.
//! - [`keys`]: templates, version-key creation, blobs, attribute read-back.
//! - [`hmac`]: TPM2_HMAC with a version key.
//! - [`attest`]: TPM2_Certify and the offline verifier.
//! - [`info`]: TPM identity and TPM2_GetRandom.
//! - [`error`]: the one classification of tss-esapi errors.
//!
//! Each version key is a KeyedHash HMAC-SHA256 object created under a storage primary that is
//! rebuilt from a fixed template; its blob (marshalled TPM2B_PUBLIC and TPM2B_PRIVATE) lives in
//! the database and is loaded, used and flushed on every operation.

pub mod attest;
pub mod backend;
pub mod context;
pub mod error;
pub mod hmac;
pub mod info;
pub mod keys;

use std::fmt;

use zeroize::Zeroizing;

use crate::backend::{BackendError, DeviceHealth};
use crate::secret::SecretBytes;

pub use attest::{verify_certification, Certification, CertifyError};
pub use info::TpmInfo;
pub use keys::TpmObjectInfo;

use context::ContextHandle;

/// How to reach the TPM: the validated, in-memory form.
///
/// Deliberately not `Deserialize`: like the PKCS#11 PIN, the owner auth value must never be
/// written in a TOML file: `[tpm]` names an environment variable or a file (`owner_auth_env` /
/// `owner_auth_file`) and `app.rs` builds this struct.
#[derive(Clone)]
pub struct TpmConfig {
    /// The TCTI: `swtpm:host=127.0.0.1,port=2321` (development), `device:/dev/tpmrm0`
    /// (a real TPM through the kernel resource manager), `mssim:…`, `tabrmd:…`.
    pub tcti: String,
    /// The owner hierarchy's auth value, if the owner set one. Read from the environment or a
    /// file, never from the command line; never logged.
    pub owner_auth: Option<secrecy::SecretString>,
    /// Persist the storage primary at this handle (`0x81000000..=0x81FFFFFF`) via
    /// TPM2_EvictControl. Optional: the primary is deterministic and is otherwise recreated on
    /// every connect.
    pub primary_persistent_handle: Option<u32>,
}

impl fmt::Debug for TpmConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TpmConfig")
            .field("tcti", &self.tcti)
            .field(
                "owner_auth",
                &self.owner_auth.as_ref().map(|_| "[REDACTED]"),
            )
            .field("primary_persistent_handle", &self.primary_persistent_handle)
            .finish()
    }
}

/// A version key as stored: marshalled TPM2B_PUBLIC and TPM2B_PRIVATE.
///
/// The private part is encrypted and integrity-protected by the TPM under the storage
/// primary's seed; it is useless outside that TPM. It is still kept out of `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct TpmKeyBlob {
    /// Marshalled TPM2B_PUBLIC.
    pub public: Vec<u8>,
    /// Marshalled TPM2B_PRIVATE (the TPM-wrapped sensitive area).
    pub private: Vec<u8>,
}

impl fmt::Debug for TpmKeyBlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TpmKeyBlob {{ public: {} bytes, private: [{} bytes] }}",
            self.public.len(),
            self.private.len()
        )
    }
}

/// A TPM: every call runs on the single context owner (see [`context`]).
pub struct TpmDevice {
    owner: ContextHandle,
}

impl fmt::Debug for TpmDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TpmDevice").finish_non_exhaustive()
    }
}

impl TpmDevice {
    /// Connects, runs TPM2_Startup(CLEAR) if needed, and creates (or finds, when a persistent
    /// handle is configured) the storage primary.
    ///
    /// Blocks the calling thread until the first connection is made; call it at start-up.
    ///
    /// # Errors
    /// `Open` for a malformed TCTI, an oversized owner auth or a persistent handle holding a
    /// foreign object; `Unavailable` when the TPM can't be reached; `Device` otherwise.
    #[tracing::instrument(skip_all, fields(backend = "tpm", tcti = %config.tcti))]
    pub fn open(config: &TpmConfig) -> Result<Self, BackendError> {
        let owner = ContextHandle::spawn(config)?;
        tracing::info!("TPM opened");
        Ok(Self { owner })
    }

    /// Creates a new version key (HMAC-SHA256, fixedTPM, fixedParent, sensitiveDataOrigin,
    /// userWithAuth, sign; not decrypt, not restricted) under the storage primary.
    ///
    /// # Errors
    /// `Unavailable`, `Busy`, `Device`.
    #[tracing::instrument(skip_all, fields(backend = "tpm", op = "create_version_key"))]
    pub async fn create_version_key(&self) -> Result<TpmKeyBlob, BackendError> {
        self.owner
            .call(|c| keys::create_version_key(&mut c.ctx, c.primary))
            .await
    }

    /// HMAC-SHA256 of `data` under the version key `key` (see [`hmac::hmac`] for inputs over
    /// 1024 bytes). `label` names the key version in errors and logs (e.g. `key-id/v3`).
    ///
    /// # Errors
    /// `KeyBlobRejected(label)` when the blob does not load (tampered, or from another TPM);
    /// `Unavailable`, `Busy`, `Device`.
    #[tracing::instrument(skip_all, fields(backend = "tpm", op = "hmac", key = label))]
    pub async fn hmac(
        &self,
        key: &TpmKeyBlob,
        label: &str,
        data: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, BackendError> {
        let key = key.clone();
        let label = label.to_owned();
        let data = Zeroizing::new(data.to_vec());
        self.owner
            .call(move |c| hmac::hmac(c, &key, &label, &data))
            .await
    }

    /// How many times a version key was loaded for an HMAC since start-up; an HMAC under the
    /// key the last one used loads nothing.
    pub fn hmac_key_loads(&self) -> u64 {
        self.owner.loads()
    }

    /// Flushes the version key in `key` if it is the one kept loaded after an HMAC.
    ///
    /// # Errors
    /// `Unavailable`, `Busy`, `Device`.
    #[tracing::instrument(skip_all, fields(backend = "tpm", op = "unload"))]
    pub async fn unload(&self, key: &TpmKeyBlob) -> Result<(), BackendError> {
        let key = key.clone();
        self.owner.call(move |c| c.release_if(&key)).await
    }

    /// `n` random bytes from TPM2_GetRandom.
    ///
    /// # Errors
    /// `Invariant` above [`info::MAX_RANDOM`]; `Unavailable`, `Busy`, `Device`.
    #[tracing::instrument(skip_all, fields(backend = "tpm", op = "random", len = n))]
    pub async fn random(&self, n: usize) -> Result<SecretBytes, BackendError> {
        self.owner.call(move |c| info::random(&mut c.ctx, n)).await
    }

    /// Manufacturer, vendor strings, firmware version and specification revision.
    ///
    /// # Errors
    /// `Unavailable`, `Busy`, `Device`.
    #[tracing::instrument(skip_all, fields(backend = "tpm", op = "info"))]
    pub async fn info(&self) -> Result<TpmInfo, BackendError> {
        self.owner.call(|c| info::info(&mut c.ctx)).await
    }

    /// The attributes and Name of a version key, read from its public area (no TPM call).
    ///
    /// # Errors
    /// `KeyBlobRejected(label)` when the public area is malformed.
    pub fn object_attributes(
        &self,
        key: &TpmKeyBlob,
        label: &str,
    ) -> Result<TpmObjectInfo, BackendError> {
        keys::object_info(key, label)
    }

    /// A TPM2_Certify statement about the version key `key` by the fixed attestation key, with
    /// `qualifying_data` (≤ 64 bytes: a nonce or a digest) as extraData.
    ///
    /// # Errors
    /// `KeyBlobRejected(label)`; `Invariant` for oversized qualifying data; `Unavailable`,
    /// `Busy`, `Device`.
    #[tracing::instrument(skip_all, fields(backend = "tpm", op = "certify", key = label))]
    pub async fn certify(
        &self,
        key: &TpmKeyBlob,
        label: &str,
        qualifying_data: &[u8],
    ) -> Result<Certification, BackendError> {
        let key = key.clone();
        let label = label.to_owned();
        let qualifying_data = qualifying_data.to_vec();
        self.owner
            .call(move |c| {
                // Primary, attestation key and version key: all three slots.
                c.release_loaded()?;
                attest::certify(&mut c.ctx, c.primary, &key, &label, &qualifying_data)
            })
            .await
    }

    /// Whether the TPM answers now (one TPM2_GetRandom of one byte).
    #[tracing::instrument(skip_all, fields(backend = "tpm", op = "health"))]
    pub async fn health(&self) -> DeviceHealth {
        let result = self.owner.call(|c| info::random(&mut c.ctx, 1)).await;
        let reinitialisations = self.owner.reconnects();
        match result {
            Ok(_) => DeviceHealth {
                usable: true,
                reinitialisations,
                reason: None,
            },
            Err(e) => DeviceHealth {
                usable: false,
                reinitialisations,
                reason: Some(match e {
                    BackendError::Unavailable => "tpm_unreachable",
                    BackendError::Busy => "tpm_busy",
                    _ => "tpm_error",
                }),
            },
        }
    }
}
