//! The audit log and custody evidence that an auditor can verify offline.
//!
//! - [`record`]: one record per API request, its canonical encoding and hash chain.
//! - [`note`]: what the service learns about a request (principal, action, key, context
//!   digest), gathered for its record.
//! - [`log`]: the writer: group commit, durable before the response, signed checkpoints.
//! - [`export`]: the JSON Lines export and its offline verification.
//! - [`signature`]: ECDSA P-256 signatures by the device-resident key, verified offline.
//! - [`custody`]: the signed custody report envelope and its offline verification.
//!
//! The audit log is not tracing: tracing may be filtered, the audit trail may not.

pub mod custody;
pub mod export;
pub mod log;
pub mod note;
pub mod record;
pub mod signature;

pub use export::Checkpoint;
pub use log::{AuditError, AuditLog, AuditSettings, AuditStatus};
pub use record::{AuditEntry, AuditRecord, Outcome};

/// Filters of `GET /v1/audit/events`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Records after this sequence.
    pub after: u64,
    /// At most this many.
    pub limit: u32,
    /// Only this principal.
    pub principal: Option<String>,
    /// Only this key id.
    pub key_id: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// Only this outcome.
    pub outcome: Option<Outcome>,
    /// Only records at or after this time (record time format).
    pub since: Option<String>,
    /// Only records before this time (record time format).
    pub until: Option<String>,
}

/// A completed archive: records up to `through` were exported and removed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditArchive {
    /// Last archived sequence.
    pub through: u64,
    /// Hex chain hash of record `through`: the next record links to it.
    pub head: String,
    /// Hex SHA-256 of the export file that holds the archived records.
    pub export_sha256: String,
    /// When.
    pub archived_at: String,
    /// Who.
    pub principal: String,
    /// The request that did it (its own audit record has this id).
    pub request_id: String,
}
