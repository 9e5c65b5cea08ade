//! Service errors: one enum, grouped by who is at fault. The HTTP mapping lives in
//! `api/error.rs`.

use crate::backend::BackendError;
use crate::domain::secret::InvalidSecretPath;
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
    /// The token was revoked.
    #[error("revoked bearer token")]
    Revoked,
}

/// Why a service operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    // --- the caller ---
    /// Authentication failed.
    #[error(transparent)]
    Unauthenticated(AuthFailure),
    /// Policy denied the action.
    #[error("not allowed to {action} on this resource")]
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
    /// The key is scheduled for deletion.
    #[error("key {0} is pending deletion (cancel the deletion to use it again)")]
    KeyPendingDeletion(String),
    /// The key was destroyed.
    #[error("key {0} was destroyed")]
    KeyDestroyed(String),
    /// A lifecycle transition that the key's state does not allow.
    #[error("cannot {action} key {key}: it is {state}")]
    InvalidKeyState {
        /// The key.
        key: String,
        /// Its state.
        state: &'static str,
        /// What was asked.
        action: &'static str,
    },
    /// The key version is disabled.
    #[error("key version {0} is disabled")]
    KeyVersionDisabled(u32),
    /// The key version was destroyed.
    #[error("key version {0} was destroyed; data it wrapped cannot be decrypted")]
    KeyVersionDestroyed(u32),
    /// The key version is below the key's `min_decryption_version`.
    #[error("key version {version} is below the key's min_decryption_version {minimum}")]
    KeyVersionBelowMinimum {
        /// The version.
        version: u32,
        /// The minimum.
        minimum: u32,
    },
    /// The key has no such version.
    #[error("key version {0} not found")]
    KeyVersionNotFound(u32),
    /// The action would affect the primary version.
    #[error("version {0} is the primary version: rotate first")]
    PrimaryVersion(u32),
    /// Stored data still references the version(s).
    #[error("{count} stored data keys still reference it; re-wrap them first")]
    KeyVersionInUse {
        /// How many.
        count: u64,
    },
    /// A value out of range for a lifecycle call.
    #[error("{0}")]
    InvalidLifecycleValue(&'static str),
    /// Another rotation of the key finished first.
    #[error("another rotation of this key finished first; retry")]
    RotationConflict,
    /// Another change to the same key or version finished first.
    #[error("another change to this key finished first; read it again and retry")]
    ConcurrentChange,
    /// The version has used its whole wrap budget and the key could not be rotated.
    #[error("key version {0} has reached its wrap limit; rotate the key")]
    WrapLimitReached(u32),
    /// No alias by that name.
    #[error("alias {0} not found")]
    AliasNotFound(String),
    /// The alias exists already.
    #[error("alias {0} already exists (PUT it to re-point it)")]
    AliasExists(String),
    /// A policy document that breaks the rules; names the JSON path.
    #[error("invalid policy: {0}")]
    InvalidPolicy(crate::policy::InvalidPolicy),
    /// No policy by that name.
    #[error("policy {0} not found")]
    PolicyNotFound(String),
    /// No principal by that name.
    #[error("principal {0} not found")]
    PrincipalNotFound(String),
    /// The principal exists already.
    #[error("principal {0} already exists")]
    PrincipalExists(String),
    /// No token with that id.
    #[error("token {0} not found")]
    TokenNotFound(String),
    /// No job by that id.
    #[error("job {0} not found")]
    JobNotFound(String),
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
    /// A secret path that breaks the path rules.
    #[error(transparent)]
    InvalidSecretPath(#[from] InvalidSecretPath),
    /// No secret at that path (or no live version of it).
    #[error("secret {0} not found")]
    SecretNotFound(String),
    /// The secret has no such version.
    #[error("secret version {0} not found")]
    SecretVersionNotFound(u32),
    /// The version is soft-deleted.
    #[error("secret version {0} is deleted (it can be undeleted)")]
    SecretVersionDeleted(u32),
    /// The version was destroyed for good.
    #[error("secret version {0} was destroyed")]
    SecretVersionDestroyed(u32),
    /// The version is older than the secret's `expires_after`.
    #[error("secret version {0} has expired")]
    SecretVersionExpired(u32),
    /// The value is over the configured limit.
    #[error("the secret value is {got} bytes; the limit is {limit}")]
    ValueTooLarge {
        /// Bytes sent.
        got: usize,
        /// Limit.
        limit: usize,
    },
    /// Check-and-set failed.
    #[error("check-and-set failed: the current version is {current}")]
    CasMismatch {
        /// The current version.
        current: u32,
    },
    /// Concurrent writers kept taking the next version number.
    #[error("too many concurrent writes to this secret; retry")]
    WriteConflict,
    /// No key named and no default key configured.
    #[error("no key given and no default secrets key is configured (secrets.default_key)")]
    KeyRequired,
    /// Rotation asked of a secret that is not generated.
    #[error("secret {0} is not a generated secret")]
    NotGenerated(String),
    /// A delete or undelete without versions found none in the state it acts on.
    #[error("{0}")]
    NoVersionToChange(&'static str),
    /// Metadata out of bounds.
    #[error("invalid metadata: {0}")]
    InvalidMetadata(&'static str),

    // --- a dependency ---
    /// The device failed or is unavailable.
    #[error(transparent)]
    Backend(BackendError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),

    /// The audit log could not record the request or serve the log; nothing may succeed
    /// unrecorded.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// The audit records asked for were archived.
    #[error("audit records up to sequence {through} were archived")]
    AuditArchived {
        /// The last archived sequence.
        through: u64,
    },
    /// An archive must end exactly on a checkpoint.
    #[error("sequence {0} is not a checkpoint; archive up to a checkpoint's sequence")]
    NotACheckpoint(u64),
    /// The export digest sent with an archive request is not the digest of the export of
    /// those records: the caller does not hold the exact export.
    #[error("the export digest does not match the records to be archived")]
    ExportMismatch,
    /// A bad audit query parameter.
    #[error("invalid audit query: {0}")]
    InvalidAuditQuery(&'static str),

    /// `secrets.default_key` names a key that does not exist.
    #[error("the configured default secrets key {0} does not exist")]
    DefaultKeyMissing(String),

    // --- integrity (tampering with stored data, or a bug) ---
    /// A stored secret version failed authentication or does not parse.
    #[error("stored secret version {version} of {path} failed its integrity check")]
    SecretIntegrity {
        /// The path.
        path: String,
        /// The version.
        version: u32,
    },
}

impl From<BackendError> for ServiceError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::AuthenticationFailed => Self::DecryptionFailed,
            other => Self::Backend(other),
        }
    }
}
