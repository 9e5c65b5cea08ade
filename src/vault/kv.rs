//! Vault KV version 2 on Custodian's secrets (mount `secret`): `data/` read (by version) and
//! write (with `options.cas`), `delete/`, `undelete/`, `destroy/`, `metadata/` read, update,
//! delete and list, `config` read.
//!
//! - A KV secret's `data` (a JSON object) is stored as one Custodian secret version whose value
//!   is that object's compact JSON; each version under its own data key wrapped by the device,
//!   with `[secrets] default_key` (writes fail `key_required` without one). A value written
//!   through the native API that is not a JSON object reads as `{"value": <text or base64>}`.
//! - A soft-deleted version reads 404 with `data.data: null` and its `metadata`, as Vault
//!   answers; a destroyed one the same with `destroyed: true`.
//! - `DELETE metadata/<path>` destroys every version (the bytes are erased); Custodian keeps the
//!   metadata record (for the audit trail), where Vault removes it.
//! - `cas_required` and `delete_version_after` are not supported: setting them is refused with
//!   400 rather than ignored.

use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::{body_of, ok, VaultError};
use crate::api::AppState;
use crate::domain::secret::{SecretPath, SecretRecord, SecretVersionInfo, SecretVersionState};
use crate::secret::SecretBytes;
use crate::service::secrets::{MetadataRequest, Versions};
use crate::service::{Authorized, ServiceError};

type Result<T> = std::result::Result<T, VaultError>;

/// The KV v2 routes.
pub fn routes(mount: &str) -> Router<AppState> {
    let at = |path: &str| format!("/v1/{mount}/{path}");
    Router::new()
        .route(
            &at("data/{*path}"),
            get(read).post(write).put(write).delete(delete_latest),
        )
        .route(
            &at("delete/{*path}"),
            axum::routing::post(delete).put(delete),
        )
        .route(
            &at("undelete/{*path}"),
            axum::routing::post(undelete).put(undelete),
        )
        .route(
            &at("destroy/{*path}"),
            axum::routing::post(destroy).put(destroy),
        )
        .route(
            &at("metadata/{*path}"),
            get(metadata)
                .post(update_metadata)
                .put(update_metadata)
                .delete(delete_metadata),
        )
        .route(&at("metadata"), get(list_root))
        .route(&at("metadata/"), get(list_root))
        .route(&at("config"), get(config))
}

fn path_of(raw: &str) -> Result<SecretPath> {
    SecretPath::try_from(raw.trim_end_matches('/').to_owned())
        .map_err(|e| VaultError::invalid("invalid_path", format!("invalid secret path: {e}")))
}

fn time_text(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn opt_time(t: Option<OffsetDateTime>) -> String {
    t.map(time_text).unwrap_or_default()
}

fn service(e: &ServiceError) -> VaultError {
    VaultError::from_service(e, true)
}

/// A version's metadata as Vault shows it.
fn version_metadata(record: &SecretRecord, v: &SecretVersionInfo) -> Value {
    json!({
        "created_time": time_text(v.created_at),
        "custom_metadata": if record.custom.is_empty() { Value::Null } else { json!(record.custom) },
        "deletion_time": opt_time(v.deleted_at.or(v.destroyed_at)),
        "destroyed": v.state == SecretVersionState::Destroyed,
        "version": v.version,
    })
}

#[derive(Debug, Deserialize)]
struct ReadQuery {
    version: Option<u32>,
}

/// `GET data/<path>[?version=N]`.
async fn read(
    headers: HeaderMap,
    Extension(p): Extension<Authorized>,
    Path(raw): Path<String>,
    Query(q): Query<ReadQuery>,
) -> Result<Response> {
    let path = path_of(&raw)?;
    let version = q.version.filter(|v| *v > 0);
    match p.get_secret(&path, version).await {
        Ok(value) => {
            let record = p.secret_metadata(&path).await.map_err(|e| service(&e))?;
            let info = record.versions.iter().find(|v| v.version == value.version);
            let metadata = info.map_or(Value::Null, |v| version_metadata(&record, v));
            Ok(ok(
                &headers,
                json!({ "data": data_of(value.value.expose_secret()), "metadata": metadata }),
            ))
        }
        Err(
            e @ (ServiceError::SecretVersionDeleted(_) | ServiceError::SecretVersionDestroyed(_)),
        ) => {
            // Vault: 404, and the body still holds the version's metadata.
            let record = p.secret_metadata(&path).await.map_err(|e| service(&e))?;
            let n = match &e {
                ServiceError::SecretVersionDeleted(n) | ServiceError::SecretVersionDestroyed(n) => {
                    *n
                }
                _ => 0,
            };
            let metadata = record
                .versions
                .iter()
                .find(|v| v.version == n)
                .map_or(Value::Null, |v| version_metadata(&record, v));
            let mut res = super::envelope(
                StatusCode::NOT_FOUND,
                &headers,
                json!({ "data": null, "metadata": metadata }),
            );
            let (kind, code) = e.classify();
            res.extensions_mut().insert(kind.outcome());
            res.extensions_mut()
                .insert(crate::api::error::ErrorCode(code));
            Ok(res)
        }
        Err(e) => Err(service(&e)),
    }
}

/// The KV `data` object of a stored value.
fn data_of(bytes: &[u8]) -> Value {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v @ Value::Object(_)) => v,
        _ => match std::str::from_utf8(bytes) {
            Ok(text) => json!({ "value": text }),
            Err(_) => json!({ "value": STANDARD.encode(bytes) }),
        },
    }
}

/// `POST|PUT data/<path>` `{"data": {...}, "options": {"cas": N}}`.
async fn write(
    headers: HeaderMap,
    Extension(p): Extension<Authorized>,
    Path(raw): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let path = path_of(&raw)?;
    // The body holds the secret: parsed once, its value kept only as zeroised bytes.
    let body = Zeroizing::new(body.to_vec());
    let parsed: Value = serde_json::from_slice(&body)
        .map_err(|_| VaultError::invalid("malformed_json", "failed to parse JSON input"))?;
    let Some(data) = parsed.get("data").filter(|d| d.is_object()) else {
        return Err(VaultError::invalid(
            "missing_data",
            "no data provided: the body needs a \"data\" object",
        ));
    };
    let cas = match parsed.get("options").and_then(|o| o.get("cas")) {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    VaultError::invalid("invalid_cas", "options.cas must be a version number")
                })?,
        ),
    };
    let value = SecretBytes::new(Zeroizing::new(
        serde_json::to_vec(data).map_err(|_| VaultError::invalid("malformed_json", "data"))?,
    ));
    let written = p
        .put_secret(&path, value, None, cas)
        .await
        .map_err(|e| match e {
            // Vault answers a check-and-set conflict with 400.
            ServiceError::CasMismatch { .. } => VaultError::invalid(
                "cas_mismatch",
                "check-and-set parameter did not match the current version",
            ),
            e => service(&e),
        })?;
    Ok(ok(
        &headers,
        json!({
            "created_time": time_text(written.created_at),
            "custom_metadata": null,
            "deletion_time": "",
            "destroyed": false,
            "version": written.version,
        }),
    ))
}

#[derive(Debug, Deserialize, Default)]
struct VersionsBody {
    #[serde(default)]
    versions: Vec<u32>,
}

fn versions_of(bytes: &[u8]) -> Result<Vec<u32>> {
    let body = body_of(bytes)?;
    let v: VersionsBody = serde_json::from_value(body).map_err(|_| {
        VaultError::invalid(
            "invalid_versions",
            "versions must be a list of version numbers",
        )
    })?;
    if v.versions.is_empty() {
        return Err(VaultError::invalid(
            "invalid_versions",
            "no versions provided",
        ));
    }
    Ok(v.versions)
}

/// `DELETE data/<path>`: soft-deletes the latest version.
async fn delete_latest(
    Extension(p): Extension<Authorized>,
    Path(raw): Path<String>,
) -> Result<StatusCode> {
    p.delete_secret_versions(&path_of(&raw)?, Versions::Latest)
        .await
        .map_err(|e| service(&e))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST delete/<path>` `{"versions": [...]}`.
async fn delete(
    Extension(p): Extension<Authorized>,
    Path(raw): Path<String>,
    body: axum::body::Bytes,
) -> Result<StatusCode> {
    let versions = versions_of(&body)?;
    p.delete_secret_versions(&path_of(&raw)?, Versions::These(versions))
        .await
        .map_err(|e| service(&e))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST undelete/<path>` `{"versions": [...]}`.
async fn undelete(
    Extension(p): Extension<Authorized>,
    Path(raw): Path<String>,
    body: axum::body::Bytes,
) -> Result<StatusCode> {
    let versions = versions_of(&body)?;
    p.undelete_secret_versions(&path_of(&raw)?, Versions::These(versions))
        .await
        .map_err(|e| service(&e))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST destroy/<path>` `{"versions": [...]}`.
async fn destroy(
    Extension(p): Extension<Authorized>,
    Path(raw): Path<String>,
    body: axum::body::Bytes,
) -> Result<StatusCode> {
    let versions = versions_of(&body)?;
    p.destroy_secret_versions(&path_of(&raw)?, versions)
        .await
        .map_err(|e| service(&e))?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    list: Option<String>,
}

/// `GET metadata/<path>` (or, with `?list=true` / `LIST`, the names under it).
async fn metadata(
    headers: HeaderMap,
    Extension(p): Extension<Authorized>,
    Path(raw): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Response> {
    if q.list.as_deref() == Some("true") {
        return list(&headers, &p, raw.trim_end_matches('/')).await;
    }
    let path = path_of(&raw)?;
    let record = p.secret_metadata(&path).await.map_err(|e| service(&e))?;
    let versions: Map<String, Value> = record
        .versions
        .iter()
        .map(|v| {
            (
                v.version.to_string(),
                json!({
                    "created_time": time_text(v.created_at),
                    "deletion_time": opt_time(v.deleted_at.or(v.destroyed_at)),
                    "destroyed": v.state == SecretVersionState::Destroyed,
                }),
            )
        })
        .collect();
    let oldest = record
        .versions
        .iter()
        .filter(|v| v.state != SecretVersionState::Destroyed)
        .map(|v| v.version)
        .min()
        .unwrap_or(0);
    Ok(ok(
        &headers,
        json!({
            "cas_required": false,
            "created_time": time_text(record.created_at),
            "current_version": record.current_version,
            "custom_metadata": if record.custom.is_empty() { Value::Null } else { json!(record.custom) },
            "delete_version_after": "0s",
            "max_versions": record.max_versions,
            "oldest_version": oldest,
            "updated_time": time_text(record.updated_at),
            "versions": versions,
        }),
    ))
}

/// `LIST metadata/` at the mount's root.
async fn list_root(
    headers: HeaderMap,
    Extension(p): Extension<Authorized>,
    Query(q): Query<ListQuery>,
) -> Result<Response> {
    if q.list.as_deref() != Some("true") {
        return Err(VaultError::not_found("route_not_found"));
    }
    list(&headers, &p, "").await
}

/// The names one level under `prefix` (folders end in `/`); none is 404, as Vault answers.
async fn list(headers: &HeaderMap, p: &Authorized, prefix: &str) -> Result<Response> {
    let prefix = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    let mut names: Vec<String> = Vec::new();
    let mut after = None;
    loop {
        let page = p
            .list_secrets(&prefix, after.clone(), 1000)
            .await
            .map_err(|e| service(&e))?;
        for s in &page.secrets {
            let Some(rest) = s.path.as_str().strip_prefix(&prefix) else {
                continue;
            };
            let name = match rest.split_once('/') {
                Some((folder, _)) => format!("{folder}/"),
                None => rest.to_owned(),
            };
            if names.last() != Some(&name) && !names.contains(&name) {
                names.push(name);
            }
        }
        match page.next {
            Some(next) if names.len() < 100_000 => after = Some(next),
            _ => break,
        }
    }
    if names.is_empty() {
        return Err(VaultError::not_found("secret_not_found"));
    }
    names.sort();
    Ok(ok(headers, json!({ "keys": names })))
}

/// `POST metadata/<path>`: `max_versions` and `custom_metadata`; `cas_required` and
/// `delete_version_after` are refused when set (module docs).
async fn update_metadata(
    Extension(p): Extension<Authorized>,
    Path(raw): Path<String>,
    body: axum::body::Bytes,
) -> Result<StatusCode> {
    let path = path_of(&raw)?;
    let body = body_of(&body)?;
    if body.get("cas_required").and_then(Value::as_bool) == Some(true) {
        return Err(VaultError::invalid(
            "unsupported_option",
            "cas_required is not supported; send options.cas on each write",
        ));
    }
    if let Some(d) = body.get("delete_version_after").and_then(Value::as_str) {
        if !matches!(d, "" | "0" | "0s") {
            return Err(VaultError::invalid(
                "unsupported_option",
                "delete_version_after is not supported",
            ));
        }
    }
    let max_versions = match body.get("max_versions") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    VaultError::invalid("invalid_field", "max_versions must be a number")
                })?,
        ),
    };
    let custom = match body.get("custom_metadata") {
        None | Some(Value::Null) => None,
        Some(v) => Some(serde_json::from_value(v.clone()).map_err(|_| {
            VaultError::invalid(
                "invalid_custom_metadata",
                "custom_metadata must be an object of strings",
            )
        })?),
    };
    p.put_secret_metadata(
        &path,
        MetadataRequest {
            max_versions,
            custom,
            ..MetadataRequest::default()
        },
    )
    .await
    .map_err(|e| service(&e))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE metadata/<path>`: destroys every version (module docs).
async fn delete_metadata(
    Extension(p): Extension<Authorized>,
    Path(raw): Path<String>,
) -> Result<Response> {
    let path = path_of(&raw)?;
    let record = match p.secret_metadata(&path).await {
        Ok(r) => r,
        // Vault answers 204 for a path that has nothing.
        Err(ServiceError::SecretNotFound(_)) => return Ok(StatusCode::NO_CONTENT.into_response()),
        Err(e) => return Err(service(&e)),
    };
    let versions: Vec<u32> = record
        .versions
        .iter()
        .filter(|v| v.state != SecretVersionState::Destroyed)
        .map(|v| v.version)
        .collect();
    if !versions.is_empty() {
        p.destroy_secret_versions(&path, versions)
            .await
            .map_err(|e| service(&e))?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET config`: the engine's settings as Vault shows them.
async fn config(headers: HeaderMap, Extension(_p): Extension<Authorized>) -> Response {
    ok(
        &headers,
        json!({ "cas_required": false, "delete_version_after": "0s", "max_versions": 0 }),
    )
}

/// What the KV routes read from a request before the service is called: the secret path in the
/// URL, the body as an object, the `versions` list, and a stored value's `data` object. For
/// `custodian::fuzzing`: no request path calls it. Returns how many parts were readable.
#[doc(hidden)]
pub fn read_for_fuzzing(raw_path: &str, body: &[u8]) -> usize {
    let data_is_object = data_of(body).is_object();
    usize::from(path_of(raw_path).is_ok())
        + usize::from(body_of(body).is_ok())
        + usize::from(versions_of(body).is_ok())
        + usize::from(data_is_object)
}
