//! Key lifecycle routes: rotate, PATCH, state changes, versions, re-wrap jobs, aliases and
//! re-encrypt.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;

use super::keys::key_ref;
use super::{decode_public, encode};
use crate::api::error::ApiError;
use crate::api::extract::{parse, require_json, ApiJson, Caller, KeyPath, RequestBody};
use crate::api_types::crypto::{ReencryptRequest, ReencryptResponse};
use crate::api_types::keys::Key;
use crate::api_types::lifecycle::{
    Alias, AliasList, CreateAliasRequest, Job, JobEvent, JobEventList, JobList, KeyVersionList,
    KeyVersionUsage, ListJobsQuery, PatchKeyRequest, RepointAliasRequest, ScheduleDeletionRequest,
    VersionCount,
};
use crate::domain::job::JobState;
use crate::domain::KeyName;
use crate::service::lifecycle::{KeyPatch, VersionAction, VersionUsage};
use crate::service::rewrap::JobStatus;

/// A version with its usage, as the API shows it.
pub(super) fn version_usage(u: &VersionUsage) -> KeyVersionUsage {
    let r = &u.record;
    KeyVersionUsage {
        version: r.version,
        state: r.state,
        algorithm: r.algorithm,
        created_at: r.created_at,
        destroyed_at: r.destroyed_at,
        wraps_reserved: r.wraps_reserved,
        stored_data_keys: u.stored_data_keys,
    }
}

/// A job with its progress, as the API shows it.
pub(super) fn job_status(s: &JobStatus) -> Job {
    let versions = s
        .versions
        .iter()
        .map(|v| VersionCount {
            version: v.version,
            stored_data_keys: v.stored_data_keys,
        })
        .collect();
    Job::new(&s.job, versions, s.remaining, s.rate_per_second)
}

/// Parses an optional JSON body: empty means "no body"; anything else must be JSON.
pub(super) fn optional_body<T: RequestBody>(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Option<T>, ApiError> {
    if body.is_empty() {
        return Ok(None);
    }
    require_json(headers)?;
    parse(body).map(Some)
}

/// `POST /v1/keys/{key}/rotate`
pub async fn rotate(Caller(p): Caller, KeyPath(key): KeyPath) -> Result<Json<Key>, ApiError> {
    Ok(Json(Key::from(&p.rotate_key(&key_ref(&key)?).await?)))
}

impl RequestBody for PatchKeyRequest {
    const NULLABLE: &'static [&'static str] = &["rotation_period"];
    const FIELDS: &'static [&'static str] = PatchKeyRequest::FIELDS;
}

/// `PATCH /v1/keys/{key}`
pub async fn patch(
    Caller(p): Caller,
    KeyPath(key): KeyPath,
    ApiJson(b): ApiJson<PatchKeyRequest>,
) -> Result<Json<Key>, ApiError> {
    if b.description.as_ref().is_some_and(|d| d.len() > 1024) {
        return Err(ApiError::bad_request(
            "invalid_field",
            "field `description` is longer than 1024 bytes",
        ));
    }
    let patch = KeyPatch {
        description: b.description,
        rotation_period: b.rotation_period,
        min_decryption_version: b.min_decryption_version,
    };
    Ok(Json(Key::from(
        &p.update_key(&key_ref(&key)?, patch).await?,
    )))
}

/// `POST /v1/keys/{key}/disable`
pub async fn disable(Caller(p): Caller, KeyPath(key): KeyPath) -> Result<Json<Key>, ApiError> {
    Ok(Json(Key::from(&p.disable_key(&key_ref(&key)?).await?)))
}

/// `POST /v1/keys/{key}/enable`
pub async fn enable(Caller(p): Caller, KeyPath(key): KeyPath) -> Result<Json<Key>, ApiError> {
    Ok(Json(Key::from(&p.enable_key(&key_ref(&key)?).await?)))
}

/// `POST /v1/keys/{key}/cancel-deletion`
pub async fn cancel_deletion(
    Caller(p): Caller,
    KeyPath(key): KeyPath,
) -> Result<Json<Key>, ApiError> {
    Ok(Json(Key::from(
        &p.cancel_key_deletion(&key_ref(&key)?).await?,
    )))
}

impl RequestBody for ScheduleDeletionRequest {
    const FIELDS: &'static [&'static str] = ScheduleDeletionRequest::FIELDS;
    fn field_code(field: &str) -> &'static str {
        match field {
            "pending_days" => "invalid_pending_days",
            _ => "invalid_field",
        }
    }
}

/// `POST /v1/keys/{key}/schedule-deletion` `{pending_days: 7..30 (default 30)}`
pub async fn schedule_deletion(
    Caller(p): Caller,
    KeyPath(key): KeyPath,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Key>, ApiError> {
    let b: Option<ScheduleDeletionRequest> = optional_body(&headers, &body)?;
    let days = b.and_then(|b| b.pending_days);
    if days.is_some_and(|d| !crate::service::lifecycle::PENDING_DAYS.contains(&d)) {
        return Err(ApiError::bad_request(
            "invalid_pending_days",
            "pending_days must be 7 to 30",
        ));
    }
    Ok(Json(Key::from(
        &p.schedule_key_deletion(&key_ref(&key)?, days).await?,
    )))
}

/// `GET /v1/keys/{key}/versions`
pub async fn versions(
    Caller(p): Caller,
    KeyPath(key): KeyPath,
) -> Result<Json<KeyVersionList>, ApiError> {
    let (key, versions) = p.key_versions(&key_ref(&key)?).await?;
    Ok(Json(KeyVersionList {
        key_id: key.id,
        primary_version: key.primary_version,
        min_decryption_version: key.min_decryption_version,
        versions: versions.iter().map(version_usage).collect(),
    }))
}

/// `POST /v1/keys/{key}/versions/{version}/{action}` (disable, enable, destroy)
pub async fn version_action(
    Caller(p): Caller,
    path: Result<Path<(String, String, String)>, axum::extract::rejection::PathRejection>,
) -> Result<Json<Key>, ApiError> {
    let Path((key, version, action)) = path
        .map_err(|_| ApiError::client(StatusCode::NOT_FOUND, "route_not_found", "no such route"))?;
    let action = match action.as_str() {
        "disable" => VersionAction::Disable,
        "enable" => VersionAction::Enable,
        "destroy" => VersionAction::Destroy,
        _ => {
            return Err(ApiError::client(
                StatusCode::NOT_FOUND,
                "route_not_found",
                "version actions are disable, enable and destroy",
            ))
        }
    };
    let version: u32 = version.parse().map_err(|_| {
        ApiError::client(
            StatusCode::NOT_FOUND,
            "key_version_not_found",
            format!("no key version {version:?}"),
        )
    })?;
    Ok(Json(Key::from(
        &p.change_version(&key_ref(&key)?, version, action).await?,
    )))
}

/// `POST /v1/keys/{key}/rewrap` → 202 and the job.
pub async fn rewrap(
    Caller(p): Caller,
    KeyPath(key): KeyPath,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    let job = p.start_rewrap(&key_ref(&key)?).await?;
    Ok((StatusCode::ACCEPTED, Json(job_status(&job))))
}

/// `GET /v1/jobs?state=running|completed|failed&limit=`
pub async fn jobs(
    Caller(p): Caller,
    q: Result<Query<ListJobsQuery>, QueryRejection>,
) -> Result<Json<JobList>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let job_state = q
        .state
        .map(|s| {
            JobState::parse(&s).ok_or_else(|| {
                ApiError::bad_request("invalid_query", "state is running, completed or failed")
            })
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request(
            "invalid_limit",
            "limit must be 1 to 1000",
        ));
    }
    Ok(Json(JobList {
        jobs: p
            .jobs(job_state, limit)
            .await?
            .iter()
            .map(job_status)
            .collect(),
    }))
}

/// `GET /v1/jobs/{id}`
pub async fn job(
    Caller(p): Caller,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<Job>, ApiError> {
    let Path(id) =
        path.map_err(|_| ApiError::client(StatusCode::NOT_FOUND, "job_not_found", "no such job"))?;
    if id.len() > 64 {
        return Err(ApiError::client(
            StatusCode::NOT_FOUND,
            "job_not_found",
            "no such job",
        ));
    }
    Ok(Json(job_status(&p.job(&id).await?)))
}

/// `GET /v1/jobs/{id}/events`: the job's trail.
pub async fn job_events(
    Caller(p): Caller,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<JobEventList>, ApiError> {
    let Path(id) =
        path.map_err(|_| ApiError::client(StatusCode::NOT_FOUND, "job_not_found", "no such job"))?;
    let events = p.job_events(&id).await?;
    Ok(Json(JobEventList {
        job_id: id,
        events: events.iter().map(JobEvent::from).collect(),
    }))
}

impl RequestBody for CreateAliasRequest {
    const FIELDS: &'static [&'static str] = CreateAliasRequest::FIELDS;
}

impl RequestBody for RepointAliasRequest {
    const FIELDS: &'static [&'static str] = RepointAliasRequest::FIELDS;
}

fn alias_name(raw: &str) -> Result<KeyName, ApiError> {
    KeyName::try_from(raw.to_owned())
        .map_err(|e| ApiError::bad_request("invalid_alias_name", e.to_string()))
}

fn alias_path(
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<KeyName, ApiError> {
    let Path(raw) = path
        .map_err(|_| ApiError::client(StatusCode::NOT_FOUND, "alias_not_found", "no such alias"))?;
    KeyName::try_from(raw)
        .map_err(|_| ApiError::client(StatusCode::NOT_FOUND, "alias_not_found", "no such alias"))
}

/// `POST /v1/aliases` → 201
pub async fn create_alias(
    Caller(p): Caller,
    ApiJson(b): ApiJson<CreateAliasRequest>,
) -> Result<(StatusCode, Json<Alias>), ApiError> {
    let name = alias_name(&b.name)?;
    let alias = p.create_alias(name, &key_ref(&b.key)?).await?;
    Ok((StatusCode::CREATED, Json(Alias::from(&alias))))
}

/// `PUT /v1/aliases/{name}` (re-point)
pub async fn repoint_alias(
    Caller(p): Caller,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    ApiJson(b): ApiJson<RepointAliasRequest>,
) -> Result<Json<Alias>, ApiError> {
    let name = alias_path(path)?;
    Ok(Json(Alias::from(
        &p.repoint_alias(name, &key_ref(&b.key)?).await?,
    )))
}

/// `GET /v1/aliases/{name}`
pub async fn show_alias(
    Caller(p): Caller,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<Alias>, ApiError> {
    let name = alias_path(path)?;
    Ok(Json(Alias::from(&p.alias(&name).await?)))
}

/// `DELETE /v1/aliases/{name}` → 204
pub async fn delete_alias(
    Caller(p): Caller,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<StatusCode, ApiError> {
    let name = alias_path(path)?;
    p.delete_alias(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/aliases`
pub async fn list_aliases(Caller(p): Caller) -> Result<Json<AliasList>, ApiError> {
    Ok(Json(AliasList {
        aliases: p.aliases().await?.iter().map(Alias::from).collect(),
    }))
}

impl RequestBody for ReencryptRequest {
    const NULLABLE: &'static [&'static str] = &["destination_key"];
    const FIELDS: &'static [&'static str] = ReencryptRequest::FIELDS;
}

/// `POST /v1/reencrypt`: a new blob under the destination key's primary version; the plaintext
/// is never returned.
pub async fn reencrypt(
    Caller(p): Caller,
    ApiJson(b): ApiJson<ReencryptRequest>,
) -> Result<Json<ReencryptResponse>, ApiError> {
    if b.ciphertext.len() > crate::format::blob::MAX_BLOB_LEN.div_ceil(3) * 4 {
        return Err(ApiError::bad_request(
            "malformed_ciphertext",
            "ciphertext is longer than any blob",
        ));
    }
    let blob = decode_public("ciphertext", &b.ciphertext)?;
    let dest = b.destination_key.as_deref().map(key_ref).transpose()?;
    let r = p
        .reencrypt(
            &blob,
            &b.context,
            None,
            dest.as_ref(),
            b.destination_context.as_ref(),
        )
        .await?;
    Ok(Json(ReencryptResponse {
        key_id: r.sealed.key_id,
        key_version: r.sealed.key_version,
        ciphertext: encode(&r.sealed.ciphertext),
        source_key_id: r.source_key_id,
        source_key_version: r.source_key_version,
    }))
}
