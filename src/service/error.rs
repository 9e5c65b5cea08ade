//! Service errors: one enum, grouped by who is at fault. The HTTP mapping lives in
//! `api/error.rs`.

use crate::backend::BackendError;
use crate::format::BlobError;
use crate::store::StoreError;

/// Why authentication failed. Each has its own stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// No `Authorization: Bearer` header.
    #[error("missing bearer token")]
    Missing,
    /// Not a token this service issues, or no such token.
    #[error("invalid bearer token")]
    Invalid,
    /// The token's lifetime is over.
    #[error("expired bearer token")]
    Expired,
}

/// Why a service operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    // --- the caller ---
    /// Authentication failed.
    #[error(transparent)]
    Unauthenticated(AuthFailure),
    /// Policy denied the action.
    #[error("not allowed to {action} on {resource}")]
    Forbidden {
        /// The action's name.
        action: &'static str,
        /// The resource.
        resource: String,
    },
    /// No key with that id or name.
    #[error("key {0} not found")]
    KeyNotFound(String),
    /// The key name is taken.
    #[error("a key named {0} already exists")]
    KeyNameTaken(String),
    /// The key is disabled.
    #[error("key {0} is disabled")]
    KeyDisabled(String),
    /// Plaintext over the limit.
    #[error("plaintext is {got} bytes; the limit is {limit}")]
    PlaintextTooLarge {
        /// Bytes sent.
        got: usize,
        /// Limit.
        limit: usize,
    },
    /// Empty plaintext.
    #[error("plaintext is empty")]
    PlaintextEmpty,
    /// Bytes that do not parse as a blob.
    #[error(transparent)]
    InvalidCiphertext(#[from] BlobError),
    /// The blob names a key (or version) this service does not have.
    #[error("the ciphertext names a key or key version that does not exist")]
    CiphertextKeyNotFound,
    /// The blob did not authenticate: changed bytes, wrong context or wrong key.
    #[error("decryption failed: the ciphertext or its encryption context does not match")]
    DecryptionFailed,

    // --- a dependency ---
    /// The device failed or is unavailable.
    #[error(transparent)]
    Backend(BackendError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<BackendError> for ServiceError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::AuthenticationFailed => Self::DecryptionFailed,
            other => Self::Backend(other),
        }
    }
}
