//! `/v1/keys`: create, list, show.

use axum::extract::Query;
use axum::http::StatusCode;
use axum::Json;

use crate::api::error::ApiError;
use crate::api::extract::{ApiJson, Caller, KeyPath, RequestBody};
use crate::api_types::keys::{CreateKeyRequest, Key, KeyList, ListKeysQuery};
use crate::domain::{BackendKind, KeyName, KeyRef, WrapMode};
use crate::service::KeyPlacement;

impl RequestBody for CreateKeyRequest {
    const FIELDS: &'static [&'static str] = CreateKeyRequest::FIELDS;
}

/// Longest description accepted.
const MAX_DESCRIPTION: usize = 1024;

/// `POST /v1/keys`
pub async fn create(
    Caller(p): Caller,
    ApiJson(body): ApiJson<CreateKeyRequest>,
) -> Result<(StatusCode, Json<Key>), ApiError> {
    let name = KeyName::try_from(body.name)
        .map_err(|e| ApiError::bad_request("invalid_key_name", e.to_string()))?;
    if body.description.len() > MAX_DESCRIPTION {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("field `description` is longer than {MAX_DESCRIPTION} bytes"),
        ));
    }
    let backend = match body.backend.as_deref() {
        None => BackendKind::Pkcs11,
        Some(b) => BackendKind::parse(b).ok_or_else(|| {
            ApiError::bad_request("invalid_field", "field `backend` is `pkcs11` or `tpm`")
        })?,
    };
    let mut placement = KeyPlacement::default_for(backend);
    if let Some(m) = body.mode.as_deref() {
        placement.mode = WrapMode::parse(m).ok_or_else(|| {
            ApiError::bad_request("invalid_field", "field `mode` is `direct` or `cached`")
        })?;
    }
    let key = p.create_key(name, body.description, placement).await?;
    Ok((StatusCode::CREATED, Json(Key::from(&key))))
}

/// Default and largest page sizes.
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

/// `GET /v1/keys?limit=&after=`
pub async fn list(
    Caller(p): Caller,
    query: Result<Query<ListKeysQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<KeyList>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be 1 to {MAX_LIMIT}"),
        ));
    }
    let after = q
        .after
        .map(KeyName::try_from)
        .transpose()
        .map_err(|e| ApiError::bad_request("invalid_query", format!("after: {e}")))?;
    let page = p.list_keys(after, limit).await?;
    Ok(Json(KeyList {
        keys: page.keys.iter().map(Key::from).collect(),
        next: page.next.map(|n| n.to_string()),
    }))
}

/// Parses `{key}` path segments: a key id or a key name.
pub(crate) fn key_ref(raw: &str) -> Result<KeyRef, ApiError> {
    raw.parse::<KeyRef>().map_err(|e| {
        ApiError::client(
            StatusCode::NOT_FOUND,
            "key_not_found",
            format!("key {raw:?} not found: {e}"),
        )
    })
}

/// `GET /v1/keys/{key}`
pub async fn show(Caller(p): Caller, KeyPath(key): KeyPath) -> Result<Json<Key>, ApiError> {
    let r = key_ref(&key)?;
    Ok(Json(Key::from(&p.key(&r).await?)))
}
