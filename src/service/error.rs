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
    /// A SigV4 `Authorization` header that cannot be checked (malformed, or not signing what
    /// must be signed).
    #[error("incomplete or malformed request signature")]
    MalformedSignature,
    /// No access key with the id a signature names.
    #[error("unknown access key")]
    UnknownAccessKey,
    /// The signature does not match the request and the access key's secret.
    #[error("the request signature does not match")]
    SignatureMismatch,
    /// The signing time is more than 15 minutes from the server's clock.
    #[error("the request signature has expired (or is dated in the future)")]
    SignatureExpired,
    /// The access key's lifetime is over.
    #[error("expired access key")]
    AccessKeyExpired,
    /// The access key was revoked.
    #[error("revoked access key")]
    AccessKeyRevoked,
}

/// Why a service operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    // --- the caller ---
    /// Authentication failed.
    #[error(transparent)]
    Unauthenticated(AuthFailure),
    /// A verified client certificate names no principal unambiguously (the reason says why).
    #[error("client certificate refused: {0}")]
    CertificateRefused(String),
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
    /// No access key with that id.
    #[error("access key {0} not found")]
    AccessKeyNotFound(String),
    /// No such database connection.
    #[error("no database connection named {0:?}")]
    DbConnectionNotFound(String),
    /// A database connection of that name exists.
    #[error("a database connection named {0:?} exists")]
    DbConnectionExists(String),
    /// Roles still name the connection.
    #[error("database connection {0:?} is named by roles; delete them first")]
    DbConnectionInUse(String),
    /// A connection's settings are unusable.
    #[error("invalid database connection: {0}")]
    InvalidDbConnection(String),
    /// No such database role.
    #[error("no database role named {0:?}")]
    DbRoleNotFound(String),
    /// A database role of that name exists for another connection or kind.
    #[error("database role {0:?} exists with another connection or kind; delete it first")]
    DbRoleExists(String),
    /// Leases of the role are live.
    #[error("database role {0:?} has live leases")]
    DbRoleInUse(String),
    /// A role definition is not usable.
    #[error("invalid database role: {0}")]
    InvalidDbRole(String),
    /// The operation needs a role of the other kind.
    #[error("database role {role:?} is not a {wanted} role")]
    DbRoleKind {
        /// The role.
        role: String,
        /// The kind the operation needs.
        wanted: &'static str,
    },
    /// No such lease.
    #[error("no database lease {0:?}")]
    DbLeaseNotFound(String),
    /// The lease was revoked or has expired.
    #[error("the lease has ended")]
    DbLeaseEnded,
    /// A renewal past the lease's max TTL.
    #[error("renewing for {asked}s would pass the lease's max TTL ({left}s left)")]
    LeaseMaxTtlExceeded {
        /// Seconds asked for.
        asked: u64,
        /// Seconds left to the max TTL.
        left: u64,
    },
    /// A password version that is neither current nor previous within its overlap.
    #[error("password version {0} is not available")]
    DbPasswordVersionNotFound(u32),
    /// The target database failed or refused.
    #[error(transparent)]
    Database(#[from] crate::database::DatabaseError),
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
    /// A request for random bytes of zero or more than the limit.
    #[error("random bytes requested: {got}; ask for 1 to {limit}")]
    InvalidRandomLength {
        /// Bytes asked for.
        got: usize,
        /// Limit.
        limit: usize,
    },
    /// Bytes that do not parse as a blob.
    #[error(transparent)]
    InvalidCiphertext(#[from] BlobError),
    /// The blob names a key (or version) this service does not have.
    #[error("the ciphertext names a key or key version that does not exist")]
    CiphertextKeyNotFound,
    /// A TPM key held by another node's TPM.
    #[error("key is held by the TPM of node {node}: send the request to that node")]
    KeyOnOtherNode {
        /// The node whose TPM holds it.
        node: String,
    },
    /// The caller named a key, and the blob was sealed by another.
    #[error("the ciphertext was not produced by the key the request names")]
    WrongKey,
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

/// What kind of failure an error is, for every front door: each maps a kind to its own wire
/// status (HTTP status for the native and Vault doors, an error type for AWS), and the audit
/// record takes its outcome from it. Grouped by who is at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No valid credential.
    Unauthenticated,
    /// Policy denied the action.
    Forbidden,
    /// The request was malformed or out of range.
    Invalid,
    /// The request was too large.
    TooLarge,
    /// What the request names does not exist.
    NotFound,
    /// What the request names is in a state that does not allow it, or a concurrent change won.
    Conflict,
    /// What the request names is gone for good.
    Gone,
    /// A dependency (device, database, audit log) is unavailable; retry later.
    Unavailable,
    /// The device does not support the operation.
    Unsupported,
    /// Stored data failed an integrity check, or an invariant broke: an operator must look.
    Internal,
}

impl ErrorKind {
    /// The audit outcome of a request that ended with an error of this kind.
    pub fn outcome(self) -> crate::audit::Outcome {
        use crate::audit::Outcome;
        match self {
            Self::Unauthenticated => Outcome::Unauthenticated,
            Self::Forbidden => Outcome::Denied,
            Self::Unavailable | Self::Unsupported | Self::Internal => Outcome::Failed,
            Self::Invalid | Self::TooLarge | Self::NotFound | Self::Conflict | Self::Gone => {
                Outcome::Rejected
            }
        }
    }

    /// Whether the caller is at fault (its details may be told to it).
    pub fn is_caller(self) -> bool {
        !matches!(self, Self::Unavailable | Self::Unsupported | Self::Internal)
    }
}

/// The stable code of a blob parse failure.
fn blob_code(e: &BlobError) -> &'static str {
    match e {
        BlobError::UnsupportedVersion(_) => "unsupported_ciphertext_version",
        BlobError::UnknownAlgorithm(_) => "unsupported_ciphertext_algorithm",
        BlobError::Truncated
        | BlobError::TooLong
        | BlobError::BadMagic
        | BlobError::InvalidKeyVersion
        | BlobError::InvalidIvLength(_) => "malformed_ciphertext",
    }
}

impl ServiceError {
    /// The error's kind and its stable code: the one mapping table every front door uses
    /// (docs/api.md lists the codes). Chosen by variant, never by message text.
    pub fn classify(&self) -> (ErrorKind, &'static str) {
        use ErrorKind as K;
        match self {
            Self::Unauthenticated(f) => (
                K::Unauthenticated,
                match f {
                    AuthFailure::Missing => "missing_token",
                    AuthFailure::Invalid => "invalid_token",
                    AuthFailure::Expired => "token_expired",
                    AuthFailure::Revoked => "token_revoked",
                    AuthFailure::MalformedSignature => "incomplete_signature",
                    AuthFailure::UnknownAccessKey => "invalid_access_key",
                    AuthFailure::SignatureMismatch => "signature_mismatch",
                    AuthFailure::SignatureExpired => "signature_expired",
                    AuthFailure::AccessKeyExpired => "access_key_expired",
                    AuthFailure::AccessKeyRevoked => "access_key_revoked",
                },
            ),
            Self::CertificateRefused(_) => (K::Unauthenticated, "client_certificate_refused"),
            Self::Forbidden { .. } => (K::Forbidden, "forbidden"),
            Self::KeyNotFound(_) => (K::NotFound, "key_not_found"),
            Self::KeyNameTaken(_) => (K::Conflict, "key_name_taken"),
            Self::KeyDisabled(_) => (K::Conflict, "key_disabled"),
            Self::KeyPendingDeletion(_) => (K::Conflict, "key_pending_deletion"),
            Self::KeyDestroyed(_) => (K::Gone, "key_destroyed"),
            Self::InvalidKeyState { .. } => (K::Conflict, "invalid_key_state"),
            Self::KeyVersionDisabled(_) => (K::Conflict, "key_version_disabled"),
            Self::KeyVersionDestroyed(_) => (K::Gone, "key_version_destroyed"),
            Self::KeyVersionBelowMinimum { .. } => (K::Conflict, "key_version_below_minimum"),
            Self::KeyVersionNotFound(_) => (K::NotFound, "key_version_not_found"),
            Self::PrimaryVersion(_) => (K::Conflict, "primary_version"),
            Self::KeyVersionInUse { .. } => (K::Conflict, "key_version_in_use"),
            Self::InvalidLifecycleValue(_) => (K::Invalid, "invalid_field"),
            Self::RotationConflict => (K::Conflict, "rotation_conflict"),
            Self::ConcurrentChange => (K::Conflict, "concurrent_change"),
            // The version cannot wrap until the key is rotated: retry later, not the caller's
            // fault.
            Self::WrapLimitReached(_) => (K::Unavailable, "wrap_limit_reached"),
            Self::AliasNotFound(_) => (K::NotFound, "alias_not_found"),
            Self::AliasExists(_) => (K::Conflict, "alias_exists"),
            Self::InvalidPolicy(_) => (K::Invalid, "invalid_policy"),
            Self::PolicyNotFound(_) => (K::NotFound, "policy_not_found"),
            Self::PrincipalNotFound(_) => (K::NotFound, "principal_not_found"),
            Self::PrincipalExists(_) => (K::Conflict, "principal_exists"),
            Self::TokenNotFound(_) => (K::NotFound, "token_not_found"),
            Self::AccessKeyNotFound(_) => (K::NotFound, "access_key_not_found"),
            Self::DbConnectionNotFound(_) => (K::NotFound, "db_connection_not_found"),
            Self::DbConnectionExists(_) => (K::Conflict, "db_connection_exists"),
            Self::DbConnectionInUse(_) => (K::Conflict, "db_connection_in_use"),
            Self::InvalidDbConnection(_) => (K::Invalid, "invalid_db_connection"),
            Self::DbRoleNotFound(_) => (K::NotFound, "db_role_not_found"),
            Self::DbRoleExists(_) => (K::Conflict, "db_role_exists"),
            Self::DbRoleInUse(_) => (K::Conflict, "db_role_in_use"),
            Self::InvalidDbRole(_) => (K::Invalid, "invalid_db_role"),
            Self::DbRoleKind { .. } => (K::Invalid, "db_role_wrong_kind"),
            Self::DbLeaseNotFound(_) => (K::NotFound, "db_lease_not_found"),
            Self::DbLeaseEnded => (K::Gone, "db_lease_ended"),
            Self::LeaseMaxTtlExceeded { .. } => (K::Invalid, "lease_max_ttl_exceeded"),
            Self::DbPasswordVersionNotFound(_) => (K::NotFound, "db_password_version_not_found"),
            Self::Database(d) => {
                use crate::database::DatabaseError as D;
                match d {
                    D::Unavailable(_) => (K::Unavailable, "database_unavailable"),
                    D::LoginFailed(_) => (K::Invalid, "database_login_failed"),
                    D::Privileges(_) => (K::Invalid, "database_privileges_insufficient"),
                    D::RoleMissing(_) => (K::Invalid, "database_role_missing"),
                    D::Statement { .. } => (K::Conflict, "database_statement_failed"),
                    D::Settings(_) => (K::Invalid, "invalid_db_connection"),
                }
            }
            Self::JobNotFound(_) => (K::NotFound, "job_not_found"),
            Self::PlaintextTooLarge { .. } => (K::Invalid, "plaintext_too_large"),
            Self::PlaintextEmpty => (K::Invalid, "plaintext_empty"),
            Self::InvalidRandomLength { .. } => (K::Invalid, "invalid_bytes"),
            Self::InvalidCiphertext(b) => (K::Invalid, blob_code(b)),
            Self::CiphertextKeyNotFound => (K::Invalid, "ciphertext_key_not_found"),
            Self::WrongKey => (K::Invalid, "wrong_key"),
            Self::KeyOnOtherNode { .. } => (K::Unavailable, "key_on_other_node"),
            Self::DecryptionFailed => (K::Invalid, "decryption_failed"),
            Self::InvalidSecretPath(_) => (K::Invalid, "invalid_secret_path"),
            Self::SecretNotFound(_) => (K::NotFound, "secret_not_found"),
            Self::SecretVersionNotFound(_) => (K::NotFound, "secret_version_not_found"),
            Self::SecretVersionDeleted(_) => (K::NotFound, "secret_version_deleted"),
            Self::SecretVersionDestroyed(_) => (K::Gone, "secret_version_destroyed"),
            Self::SecretVersionExpired(_) => (K::Gone, "secret_version_expired"),
            Self::ValueTooLarge { .. } => (K::TooLarge, "value_too_large"),
            Self::CasMismatch { .. } => (K::Conflict, "cas_mismatch"),
            Self::WriteConflict => (K::Conflict, "write_conflict"),
            Self::KeyRequired => (K::Invalid, "key_required"),
            Self::NotGenerated(_) => (K::Invalid, "secret_not_generated"),
            Self::NoVersionToChange(_) => (K::NotFound, "secret_version_not_found"),
            Self::InvalidMetadata(_) => (K::Invalid, "invalid_metadata"),
            Self::DefaultKeyMissing(_) => (K::Unavailable, "default_key_missing"),
            Self::SecretIntegrity { .. } => (K::Internal, "secret_integrity_failed"),
            Self::Audit(crate::audit::AuditError::ChainBroken(_)) => {
                (K::Internal, "audit_chain_broken")
            }
            Self::Audit(_) => (K::Unavailable, "audit_unavailable"),
            Self::AuditArchived { .. } => (K::Gone, "audit_archived"),
            Self::NotACheckpoint(_) => (K::Conflict, "not_a_checkpoint"),
            Self::ExportMismatch => (K::Conflict, "export_mismatch"),
            Self::InvalidAuditQuery(_) => (K::Invalid, "invalid_audit_query"),
            Self::Backend(b) => match b {
                BackendError::Unavailable => (K::Unavailable, "device_unavailable"),
                BackendError::Busy => (K::Unavailable, "device_busy"),
                BackendError::AuthenticationFailed => (K::Invalid, "decryption_failed"),
                BackendError::RootKeyMissing(_) => (K::Unavailable, "key_material_missing"),
                BackendError::Unsupported(_) => (K::Unsupported, "unsupported_by_device"),
                BackendError::NotConfigured(_) => (K::Unavailable, "backend_not_configured"),
                BackendError::KeyBlobRejected(_) => (K::Internal, "key_blob_rejected"),
                BackendError::Device(_)
                | BackendError::MissingMechanism(_)
                | BackendError::Open(_)
                | BackendError::Invariant(_) => (K::Internal, "internal_error"),
            },
            Self::Store(s) => match s {
                StoreError::Conflict { .. } => (K::Conflict, "conflict"),
                StoreError::CheckAndSet { .. } => (K::Conflict, "cas_mismatch"),
                StoreError::Stale { .. } => (K::Conflict, "write_conflict"),
                StoreError::NotFound => (K::NotFound, "secret_version_not_found"),
                StoreError::InUse { .. } => (K::Conflict, "key_version_in_use"),
                StoreError::Unavailable(_) | StoreError::Io(_) | StoreError::Blocking(_) => {
                    (K::Unavailable, "store_unavailable")
                }
                StoreError::Full(_) => (K::Unavailable, "storage_full"),
                StoreError::Corrupt { .. }
                | StoreError::Migration { .. }
                | StoreError::SchemaTooNew { .. } => (K::Internal, "internal_error"),
            },
        }
    }

    /// The error's kind.
    pub fn kind(&self) -> ErrorKind {
        self.classify().0
    }

    /// The stable error code.
    pub fn code(&self) -> &'static str {
        self.classify().1
    }

    /// The current version, on a check-and-set mismatch (front doors send it to the caller).
    pub fn current_version(&self) -> Option<u32> {
        match self {
            Self::CasMismatch { current } | Self::Store(StoreError::CheckAndSet { current }) => {
                Some(*current)
            }
            _ => None,
        }
    }

    /// What a caller may be told of an error that is not its fault. Caller errors are told
    /// in full (their `Display`); dependency and integrity failures only in general terms, with
    /// the request id to quote; a rejected key blob names the key version (a label, nothing
    /// secret) so the operator knows which one is broken.
    pub fn public_message(&self) -> String {
        let (kind, code) = self.classify();
        if kind.is_caller() {
            return self.to_string();
        }
        match (kind, code, self) {
            // Not a failure of the service: the version must be rotated; say so.
            (_, _, Self::WrapLimitReached(_) | Self::KeyOnOtherNode { .. }) => self.to_string(),
            (_, _, Self::Backend(BackendError::KeyBlobRejected(label))) => format!(
                "the stored device material of key version {label} does not load in this \
                 device; quote the request id to the operator"
            ),
            (ErrorKind::Unavailable, _, _) => "a dependency is unavailable; retry later".to_owned(),
            (_, "secret_integrity_failed", _) => {
                "the stored secret failed its integrity check; quote the request id to the operator"
                    .to_owned()
            }
            _ => "internal error; quote the request id to the operator".to_owned(),
        }
    }

    /// The audit outcome of a request that ended with this error: taken from the typed error,
    /// never from a wire status (an AWS-style door answers a denial with HTTP 400 and still
    /// records `denied`).
    pub fn outcome(&self) -> crate::audit::Outcome {
        self.kind().outcome()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code the table can produce: the string literals of [`ServiceError::classify`] and
    /// [`blob_code`], read from this file (so a code added to the table is seen without a test
    /// having to construct its variant).
    fn table_codes() -> Vec<&'static str> {
        const SOURCE: &str = include_str!("error.rs");
        let start = SOURCE.find("fn blob_code").unwrap_or(0);
        let end = SOURCE[start..]
            .find("\n#[cfg(test)]")
            .map_or(SOURCE.len(), |e| start + e);
        SOURCE[start..end]
            .split('"')
            .skip(1)
            .step_by(2)
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
            .collect()
    }

    #[test]
    fn every_service_code_is_published() {
        let codes = table_codes();
        assert!(
            codes.len() >= 60 && codes.contains(&"invalid_audit_query"),
            "read only {} codes from the table: {codes:?}",
            codes.len()
        );
        let published = crate::api_types::error::CODES;
        let missing: Vec<_> = codes.iter().filter(|c| !published.contains(c)).collect();
        assert!(
            missing.is_empty(),
            "codes the service answers with but api_types::error::CODES (the document's Error \
             code enum) lacks: {missing:?}"
        );
    }

    #[test]
    fn kinds_and_codes_are_chosen_by_variant() {
        let cases: Vec<(ServiceError, ErrorKind, &str)> = vec![
            (
                ServiceError::Unauthenticated(AuthFailure::Expired),
                ErrorKind::Unauthenticated,
                "token_expired",
            ),
            (
                ServiceError::DecryptionFailed,
                ErrorKind::Invalid,
                "decryption_failed",
            ),
            (
                BlobError::UnsupportedVersion(9).into(),
                ErrorKind::Invalid,
                "unsupported_ciphertext_version",
            ),
            (
                BlobError::Truncated.into(),
                ErrorKind::Invalid,
                "malformed_ciphertext",
            ),
            (
                BackendError::Unavailable.into(),
                ErrorKind::Unavailable,
                "device_unavailable",
            ),
            (
                BackendError::AuthenticationFailed.into(),
                ErrorKind::Invalid,
                "decryption_failed",
            ),
            (
                BackendError::Invariant("x").into(),
                ErrorKind::Internal,
                "internal_error",
            ),
            (
                ServiceError::Store(StoreError::CheckAndSet { current: 3 }),
                ErrorKind::Conflict,
                "cas_mismatch",
            ),
        ];
        for (e, kind, code) in cases {
            assert_eq!(e.classify(), (kind, code), "{e:?}");
        }
        assert_eq!(
            ServiceError::Store(StoreError::CheckAndSet { current: 3 }).current_version(),
            Some(3)
        );
    }

    #[test]
    fn outcomes_come_from_the_kind() {
        use crate::audit::Outcome;
        let forbidden = ServiceError::Forbidden {
            action: "decrypt",
            resource: "key/k".into(),
        };
        assert_eq!(forbidden.outcome(), Outcome::Denied);
        assert_eq!(ServiceError::KeyRequired.outcome(), Outcome::Rejected);
        assert_eq!(
            ServiceError::from(BackendError::Unavailable).outcome(),
            Outcome::Failed
        );
    }

    #[test]
    fn server_errors_reveal_nothing_internal() {
        let e = ServiceError::Backend(BackendError::Invariant("secret detail"));
        let m = e.public_message();
        assert!(
            !m.contains("secret detail") && !m.contains("invariant"),
            "{m}"
        );
        let e = ServiceError::Backend(BackendError::KeyBlobRejected("k/v1".into()));
        assert!(e.public_message().contains("k/v1"));
    }
}
