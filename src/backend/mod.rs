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

pub mod pkcs11;
pub mod tpm;

use async_trait::async_trait;

use crate::domain::{BackendKind, RootKeyRef};
use crate::secret::SecretBytes;

/// Output of a device seal: the IV it used and ciphertext ‖ tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The 96-bit GCM IV.
    pub iv: [u8; 12],
    /// Ciphertext followed by the 128-bit tag.
    pub ciphertext: Vec<u8>,
}

/// What the device says about its own health.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceHealth {
    /// True when a session is usable right now.
    pub usable: bool,
    /// How many times the module has been re-initialised since start-up.
    pub reinitialisations: u64,
    /// A short, non-secret reason when not usable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
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

    // --- a bug ---
    /// Something that must hold did not.
    #[error("backend invariant violated: {0}")]
    Invariant(&'static str),
}

/// A device that holds root keys and seals/opens under them.
///
/// Every method may block on the device; implementations run device calls on the blocking pool
/// and return `Unavailable` rather than falling back to software.
#[async_trait]
pub trait KeyBackend: Send + Sync + 'static {
    /// Which kind of device this is.
    fn kind(&self) -> BackendKind;

    /// Generates the root key for `root` inside the device: AES-256, non-extractable, sensitive.
    ///
    /// # Errors
    /// `Unavailable`/`Device` when the device refuses; `Invariant` when the created object does
    /// not read back with the required attributes (it is destroyed again first).
    async fn create_root_key(&self, root: &RootKeyRef) -> Result<(), BackendError>;

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

    /// Checks that a session is usable now (a cheap device call).
    async fn health(&self) -> DeviceHealth;
}
