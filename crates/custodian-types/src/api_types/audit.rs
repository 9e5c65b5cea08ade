//! The audit log and custody routes: the queries of `GET /v1/audit/events` and
//! `GET /v1/audit/export`, the page of events (its [`AuditRecord`]s), the body and answer of
//! `POST /v1/audit/archive`, and the audit log's status in the readiness answer. The server
//! builds these from the audit module's types (the conversions live in `api::audit`).
//!
//! The export itself is JSON Lines (a header, records, checkpoints) and the custody report a
//! signed envelope whose payload must reach the client byte for byte: both keep the audit
//! module's types (`audit::export::Line`, `audit::custody::SignedReport`), which the offline
//! verifier reads too, and their schemas stay written out in the document's base.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::scalars::{AuditHash, AuditTime};
use super::{array_of, described_ref, optional_ref, schema_fns, schema_ref};

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(
    description = "`success`: status 200-399; `unauthenticated`: 401 or 429; `denied`: 403; \
    `rejected`: any other 4xx; `failed`: 5xx; `pending`: an announcement, written durably before \
    a change to stored state and followed by the record of the same request id with the final \
    outcome."
)]
pub enum AuditOutcome {
    /// 2xx or 3xx: it was done.
    Success,
    /// 403: policy denied it.
    Denied,
    /// 401 or 429: no valid credential.
    Unauthenticated,
    /// Any other 4xx.
    Rejected,
    /// 5xx.
    Failed,
    /// An announcement of a change, followed by the request's final record.
    Pending,
}

/// One audit record: one API request. The hash construction is in `docs/audit.md`. The
/// members are in the order of the audit module's record, whose hash covers them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(
    description = "One audit record: one API request. The hash construction is in docs/audit.md."
)]
pub struct AuditRecord {
    /// Position in the log, from 1, without gaps.
    #[schema(minimum = 1)]
    pub sequence: u64,
    /// When the request finished.
    #[schema(value_type = AuditTime)]
    pub time: String,
    /// The node that served the request.
    pub node: String,
    /// The request id (x-request-id).
    pub request_id: String,
    /// The HTTP method.
    pub method: String,
    /// The route template that matched (`/v1/keys/{key}/datakey`), or `(unmatched)`; never the
    /// raw path.
    pub route: String,
    /// The authenticated principal.
    #[schema(required = true)]
    pub principal: Option<String>,
    /// The id of the credential that authenticated it (never the credential).
    #[schema(required = true)]
    pub credential: Option<String>,
    /// The peer IP address.
    #[schema(required = true)]
    pub source: Option<String>,
    /// The policy action asked for (the first denied one, when one was denied).
    #[schema(required = true)]
    pub action: Option<String>,
    /// Its resource (`key/orders`).
    #[schema(required = true)]
    pub resource: Option<String>,
    /// The first key used to wrap or unwrap.
    #[schema(required = true)]
    pub key_id: Option<String>,
    /// Its version.
    #[schema(required = true, minimum = 1)]
    pub key_version: Option<u32>,
    /// Further key versions used, as `<key id>/v<N>`.
    pub other_keys: Vec<String>,
    /// What became of the request.
    pub outcome: AuditOutcome,
    /// The HTTP status sent.
    pub status: u16,
    /// The stable error code, on failure.
    #[schema(required = true)]
    pub error_code: Option<String>,
    /// Hex SHA-256 of the canonical encryption context, when one was sent. Never the values.
    #[schema(required = true, pattern = "^[0-9a-f]{64}$")]
    pub context_digest: Option<String>,
    /// The context's key names, in canonical order.
    pub context_keys: Vec<String>,
    /// Present when not empty: further named facts, sorted by name:
    /// `destination_context_digest` and `destination_context_keys` (`reencrypt`), `count`,
    /// `first_seen`, `last_seen` (an aggregate of throttled requests). Never secrets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
    /// The chain hash of the previous record.
    #[schema(value_type = AuditHash)]
    pub prev_hash: String,
    /// The chain hash of this record.
    #[schema(value_type = AuditHash)]
    pub hash: String,
}

/// A completed archive: records up to `through` were exported and removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(description = "A completed archive: records up to `through` were exported and removed.")]
pub struct AuditArchive {
    /// Last archived sequence.
    pub through: u64,
    /// The chain hash of record `through`; the next record links to it.
    #[schema(schema_with = archive_head_schema)]
    pub head: String,
    /// Hex SHA-256 of the export file that holds the archived records.
    #[schema(schema_with = archive_export_schema)]
    pub export_sha256: String,
    /// When.
    #[schema(value_type = AuditTime)]
    pub archived_at: String,
    /// Who.
    pub principal: String,
    /// The archive request; its own audit record carries this id.
    pub request_id: String,
}

/// The audit log's state, in the readiness answer. The members are in name order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(description = "The audit log's state.")]
pub struct AuditStatus {
    /// Present once the stored chain was found broken: the first bad sequence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub chain_broken_at: Option<u64>,
    /// Sequence of the last signed checkpoint.
    pub checkpoint: u64,
    /// Sequence of the last record.
    pub head: u64,
    /// False after a failed audit write, until a write succeeds.
    pub writable: bool,
}

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

/// `GET /v1/audit/events` response. `R` is a record.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = AuditEventList, bound = "", description = "A page of audit records.")]
pub struct AuditEventList<R = AuditRecord> {
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
    /// An archive's `head`.
    archive_head_schema => described_ref(
        "AuditHash",
        "The chain hash of record `through`; the next record links to it.",
    );
    /// An archive's `export_sha256`.
    archive_export_schema => schema_ref("AuditHash");
    /// `export_sha256`.
    export_sha256_schema => optional_ref(
        "AuditHash",
        "Hex SHA-256 of the export file exactly as `GET /v1/audit/export?until={through}` \
         returns it.",
    );
}
