//! Key lifecycle, versions, re-wrap jobs and aliases: the bodies of `PATCH /v1/keys/{key}`,
//! `POST /v1/keys/{key}/schedule-deletion`, `GET /v1/keys/{key}/versions`, `/v1/jobs…` and
//! `/v1/aliases…`, and the records they answer with: a version with its usage, a job with its
//! progress, a job's trail, an alias. The state-change routes without a body (rotate, enable,
//! disable, cancel-deletion, version actions) answer with a [`super::keys::Key`].
//!
//! The server builds a version's usage and a job's progress from the service's records
//! (`VersionUsage`, `JobStatus`; the conversions live in `api::v1::lifecycle`); the domain's
//! records convert here.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::keys::{algorithm_schema, version_state};
use super::{
    array_of, described_ref, double_option, nullable_ref, schema_fns, schema_ref, string_enum,
};
use crate::domain::job::{self, JobKind, JobState};
use crate::domain::secret::HumanDuration;
use crate::domain::{self, Algorithm, KeyId, KeyName, KeyVersion, VersionState};

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

/// A key version with the stored data keys it still wraps (`GET /v1/keys/{key}/versions`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(description = "A key version with the stored data keys it still wraps.")]
pub struct KeyVersionUsage {
    /// The version number.
    pub version: KeyVersion,
    /// `primary` seals new data; `active` only unwraps; `disabled` does neither until enabled;
    /// `destroyed` is final.
    #[schema(schema_with = version_state)]
    pub state: VersionState,
    /// The algorithm of the blobs this version seals.
    #[schema(schema_with = algorithm_schema)]
    pub algorithm: Algorithm,
    /// When the root key was generated.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// Present once the version is destroyed.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime, nullable = false)]
    pub destroyed_at: Option<OffsetDateTime>,
    /// Wraps reserved under this version: an upper bound of the seals it has done.
    pub wraps_reserved: u64,
    /// Wrapped data keys stored by Custodian (secret versions) under this version now. Blobs
    /// held by clients are not counted.
    pub stored_data_keys: u64,
}

/// `GET /v1/keys/{key}/versions` response. `V` is one version with its usage.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = KeyVersions, bound = "", description = "A key's versions with the stored data keys each still wraps.")]
pub struct KeyVersionList<V = KeyVersionUsage> {
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

/// A background job with its progress: the answer of `POST /v1/keys/{key}/rewrap` and
/// `GET /v1/jobs/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(description = "A background job with its progress.")]
pub struct Job {
    /// Random id.
    pub id: String,
    /// What the job does.
    #[schema(schema_with = job_kind_schema)]
    pub kind: JobKind,
    /// The key whose stored data keys it moves.
    pub key_id: KeyId,
    /// The version stored data keys move to (the primary when the job started).
    #[schema(schema_with = target_version_schema)]
    pub target_version: KeyVersion,
    /// Where the job stands.
    pub state: JobState,
    /// Items this job re-wrapped.
    pub done: u64,
    /// Failed attempts; a failing item keeps its version and is retried in later batches.
    pub failed_items: u64,
    /// The last failure, or `superseded: key rotated to version N`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub last_error: Option<String>,
    /// When the job was created.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// When it last made progress or changed state.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
    /// Present once completed or failed.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime, nullable = false)]
    pub finished_at: Option<OffsetDateTime>,
    /// Stored data keys per version of the key, counted now.
    pub versions: Vec<VersionCount>,
    /// Stored data keys of the key not under `target_version`, counted now.
    pub remaining: u64,
    /// `done` over the seconds from `created_at` to `finished_at` (or now).
    #[schema(minimum = 0)]
    pub rate_per_second: f64,
}

impl Job {
    /// A job with its progress: the stored `job`, the stored data keys per version of its key,
    /// those not yet under the target version, and its rate.
    pub fn new(
        job: &job::Job,
        versions: Vec<VersionCount>,
        remaining: u64,
        rate_per_second: f64,
    ) -> Self {
        Self {
            id: job.id.clone(),
            kind: job.kind,
            key_id: job.key_id,
            target_version: job.target_version,
            state: job.state,
            done: job.done,
            failed_items: job.failed_items,
            last_error: job.last_error.clone(),
            created_at: job.created_at,
            updated_at: job.updated_at,
            finished_at: job.finished_at,
            versions,
            remaining,
            rate_per_second,
        }
    }
}

/// Stored data keys under one version of a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(description = "Stored data keys under one version of a key.")]
pub struct VersionCount {
    /// The version.
    pub version: KeyVersion,
    /// How many stored data keys it wraps.
    pub stored_data_keys: u64,
}

/// One step of a job's trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(description = "One step of a job's trail.")]
pub struct JobEvent {
    /// Order within the job, from 1.
    #[schema(minimum = 1)]
    pub seq: u64,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
    /// What happened.
    #[schema(schema_with = job_event_kind_schema)]
    pub kind: String,
    /// Items re-wrapped by this batch.
    pub moved: u64,
    /// Items this batch could not re-wrap.
    pub failed: u64,
    /// Versions moved from (batches), or why the job ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub detail: Option<String>,
}

impl From<&job::JobEvent> for JobEvent {
    fn from(e: &job::JobEvent) -> Self {
        Self {
            seq: e.seq,
            at: e.at,
            kind: e.kind.clone(),
            moved: e.moved,
            failed: e.failed,
            detail: e.detail.clone(),
        }
    }
}

/// An alias: a name that points at a key and can be re-pointed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(description = "A name that points at a key and can be re-pointed (`alias/<name>`).")]
pub struct Alias {
    /// The alias name (used as `alias/<name>`).
    pub name: KeyName,
    /// The key it points at.
    pub key_id: KeyId,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// Changes when the alias is re-pointed.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

impl From<&domain::Alias> for Alias {
    fn from(a: &domain::Alias) -> Self {
        Self {
            name: a.name.clone(),
            key_id: a.key_id,
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }
}

/// `GET /v1/jobs` response. `J` is a job with its progress.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = JobList, bound = "", description = "Jobs with their progress, newest first.")]
pub struct JobList<J = Job> {
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
    /// A job's `kind`.
    job_kind_schema => string_enum(&["rewrap"], None, Some("What the job does."));
    /// A job's `target_version`.
    target_version_schema => described_ref(
        "KeyVersionNumber",
        "The version stored data keys move to (the primary when the job started).",
    );
    /// A job event's `kind`.
    job_event_kind_schema => string_enum(
        &["started", "batch", "completed", "failed"],
        None,
        Some("What happened."),
    );
    /// An alias's `name`.
    alias_name_schema => described_ref("KeyName", "Key name rules (`invalid_alias_name` otherwise).");
    /// `aliases`: `Alias` items.
    aliases_schema => array_of("Alias", None);
}
