//! The audit log and custody routes: the queries of `GET /v1/audit/events` and
//! `GET /v1/audit/export`, the page of events, and the body of `POST /v1/audit/archive`.
//!
//! The export itself is JSON Lines (a header, records, checkpoints) and the custody report a
//! signed envelope whose payload must reach the client byte for byte: both keep the audit
//! module's types (`audit::export::Line`, `audit::custody::SignedReport`), which the offline
//! verifier reads too.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{array_of, optional_ref, schema_fns};

/// `GET /v1/audit/events` query; every filter is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEventsQuery {
    /// Records after this sequence (the `next_after` of the previous page).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    /// Page size (1 to 1000; default 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Only this principal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// Only this key id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Only this policy action.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Only this outcome (`success`, `denied`, `unauthenticated`, `rejected`, `failed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Only records at or after this RFC 3339 time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Only records before this RFC 3339 time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

/// `GET /v1/audit/events` response. `R` is a record (the audit module's `AuditRecord` on the
/// server; by default a JSON value).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = AuditEventList, bound = "", description = "A page of audit records.")]
pub struct AuditEventList<R = serde_json::Value> {
    /// Oldest first.
    #[schema(schema_with = records_schema)]
    pub records: Vec<R>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub next_after: Option<u64>,
}

/// `GET /v1/audit/export` query: `?after=&until=`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditExportQuery {
    /// Records after this sequence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    /// Up to this checkpoint; default: a checkpoint signed now (or a recent one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
}

/// `POST /v1/audit/archive` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AuditArchiveRequest)]
pub struct AuditArchiveRequest {
    /// The sequence of a checkpoint: records up to it are archived.
    #[schema(minimum = 1)]
    pub through: u64,
    /// Hex SHA-256 of the export file exactly as `GET /v1/audit/export?until={through}`
    /// returns it.
    #[schema(schema_with = export_sha256_schema)]
    pub export_sha256: String,
}

impl AuditArchiveRequest {
    /// Every field, for the server's `unknown_field` check.
    pub const FIELDS: &'static [&'static str] = &["through", "export_sha256"];
}

schema_fns! {
    /// `records`.
    records_schema => array_of("AuditRecord", Some("Oldest first."));
    /// `export_sha256`.
    export_sha256_schema => optional_ref(
        "AuditHash",
        "Hex SHA-256 of the export file exactly as `GET /v1/audit/export?until={through}` \
         returns it.",
    );
}
