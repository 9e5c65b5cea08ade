//! Key lifecycle, versions, re-wrap jobs and aliases: the bodies of `PATCH /v1/keys/{key}`,
//! `POST /v1/keys/{key}/schedule-deletion`, `GET /v1/keys/{key}/versions`, `/v1/jobs…` and
//! `/v1/aliases…`. The state-change routes without a body (rotate, enable, disable,
//! cancel-deletion, version actions) answer with the domain's `Key`.
//!
//! Lists whose items are the service's own records (`JobStatus`, `VersionUsage`) are generic
//! over the item: the server fills in its type; the default, a JSON value, is the item as a
//! client sees it without the server's types.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{array_of, described_ref, double_option, nullable_ref, schema_fns, schema_ref};
use crate::domain::job::JobEvent;
use crate::domain::secret::HumanDuration;
use crate::domain::{Alias, KeyId, KeyVersion};

/// `PATCH /v1/keys/{key}` body. `D` is the rotation period ([`HumanDuration`] on the server,
/// the command line's text on the client). A field left out keeps its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, bound(deserialize = "D: Deserialize<'de>"))]
#[schema(
    bound = "",
    description = "Every field is optional; a field left out keeps its value."
)]
pub struct PatchKeyRequest<D = HumanDuration> {
    /// At most 1024 bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 1024, nullable = false)]
    pub description: Option<String>,
    /// The scheduled-rotation period; `Some(None)` (`null`) turns scheduled rotation off.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(schema_with = rotation_period_schema)]
    pub rotation_period: Option<Option<D>>,
    /// Versions below this one no longer decrypt.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = min_decryption_version_schema)]
    pub min_decryption_version: Option<u32>,
}

impl<D> Default for PatchKeyRequest<D> {
    fn default() -> Self {
        Self {
            description: None,
            rotation_period: None,
            min_decryption_version: None,
        }
    }
}

impl PatchKeyRequest {
    /// Every field, for the server's `unknown_field` check.
    pub const FIELDS: &'static [&'static str] =
        &["description", "rotation_period", "min_decryption_version"];
}

/// `POST /v1/keys/{key}/schedule-deletion` body (the body itself is optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleDeletionRequest {
    /// Days until the key is destroyed, 7 to 30 (`invalid_pending_days` otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 7, maximum = 30, default = 30, nullable = false)]
    pub pending_days: Option<u32>,
}

impl ScheduleDeletionRequest {
    /// Every field, for the server's `unknown_field` check.
    pub const FIELDS: &'static [&'static str] = &["pending_days"];
}

/// `GET /v1/keys/{key}/versions` response. `V` is one version with its usage (the service's
/// `VersionUsage`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = KeyVersions, bound = "", description = "A key's versions with the stored data keys each still wraps.")]
pub struct KeyVersionList<V = serde_json::Value> {
    /// The key.
    #[schema(schema_with = key_id_schema)]
    pub key_id: KeyId,
    /// The version that encrypts.
    #[schema(schema_with = version_schema)]
    pub primary_version: KeyVersion,
    /// The oldest version that still decrypts.
    #[schema(schema_with = version_schema)]
    pub min_decryption_version: KeyVersion,
    /// Oldest first.
    #[schema(schema_with = versions_schema)]
    pub versions: Vec<V>,
}

/// `GET /v1/jobs` query: `?state=running|completed|failed&limit=`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListJobsQuery {
    /// Only jobs in this state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// `GET /v1/jobs` response. `J` is a job with its progress (the service's `JobStatus`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = JobList, bound = "", description = "Jobs with their progress, newest first.")]
pub struct JobList<J = serde_json::Value> {
    /// Newest first.
    #[schema(schema_with = jobs_schema)]
    pub jobs: Vec<J>,
}

/// `GET /v1/jobs/{id}/events` response: the job's trail.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(bound = "", description = "A job's trail, oldest first.")]
pub struct JobEventList<E = JobEvent> {
    /// The job.
    pub job_id: String,
    /// Oldest first.
    #[schema(schema_with = job_events_schema)]
    pub events: Vec<E>,
}

/// `POST /v1/aliases` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAliasRequest {
    /// Key name rules (`invalid_alias_name` otherwise).
    #[schema(schema_with = alias_name_schema)]
    pub name: String,
    /// A key id or name, not `alias/…`.
    pub key: String,
}

impl CreateAliasRequest {
    /// Every field, for the server's `unknown_field` check.
    pub const FIELDS: &'static [&'static str] = &["name", "key"];
}

/// `PUT /v1/aliases/{name}` body: where the alias points from now on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RepointAliasRequest {
    /// A key id or name, not `alias/…`.
    pub key: String,
}

impl RepointAliasRequest {
    /// Every field, for the server's `unknown_field` check.
    pub const FIELDS: &'static [&'static str] = &["key"];
}

/// `GET /v1/aliases` response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(bound = "")]
pub struct AliasList<A = Alias> {
    /// Every alias, by name.
    #[schema(schema_with = aliases_schema)]
    pub aliases: Vec<A>,
}

schema_fns! {
    /// `rotation_period`: a `Duration` or `null`.
    rotation_period_schema => nullable_ref(
        "Duration",
        "At least `keys.min_rotation_period` (default `1h`); sets `next_rotation_at` to now + \
         the period. `null` turns scheduled rotation off.",
    );
    /// `min_decryption_version`.
    min_decryption_version_schema => described_ref("KeyVersionNumber", "1 to the primary version.");
    /// A `KeyId`.
    key_id_schema => schema_ref("KeyId");
    /// A `KeyVersionNumber`.
    version_schema => schema_ref("KeyVersionNumber");
    /// `versions`: `KeyVersionUsage` items.
    versions_schema => array_of("KeyVersionUsage", Some("Oldest first."));
    /// `jobs`: `Job` items.
    jobs_schema => array_of("Job", Some("Newest first."));
    /// `events`: `JobEvent` items.
    job_events_schema => array_of("JobEvent", Some("Oldest first."));
    /// An alias's `name`.
    alias_name_schema => described_ref("KeyName", "Key name rules (`invalid_alias_name` otherwise).");
    /// `aliases`: `Alias` items.
    aliases_schema => array_of("Alias", None);
}
