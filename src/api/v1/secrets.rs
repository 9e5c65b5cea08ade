//! `/v1/secrets`: path-named, versioned secrets.
//!
//! `/v1/secrets/{path}` takes GET (read), PUT (write) and DELETE (soft delete);
//! `/v1/secrets/{path}/metadata` GET and PUT; `/v1/secrets/{path}/undelete`, `/destroy` and
//! `/rotate` POST. The last segment words are reserved, so a secret path never ends in one.

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use zeroize::Zeroizing;

use super::{decode_secret, encode_secret};
use crate::api::error::ApiError;
use crate::api::extract::{parse, Caller, JsonBody, RequestBody};
use crate::api::AppState;
use crate::api_types::secrets::{
    DeleteSecretQuery, ListSecretsQuery, PutSecretMetadataRequest, PutSecretRequest,
    ReadSecretQuery, SecretChanged, SecretList, SecretRecord, SecretValue, SecretVersionsRequest,
    SecretWritten,
};
use crate::domain::secret::SecretPath;
use crate::domain::KeyRef;
use crate::secret::SecretBytes;
use crate::service::secrets::{MetadataRequest, Versions, Written};

/// What a `/v1/secrets/{…}` URL addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Value(SecretPath),
    Metadata(SecretPath),
    Undelete(SecretPath),
    Destroy(SecretPath),
    Rotate(SecretPath),
}

/// The `{*path}` of a secrets URL, split into the secret path and the sub-resource.
#[derive(Debug)]
pub struct SecretUrl(Target);

impl<S: Send + Sync> FromRequestParts<S> for SecretUrl {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| {
                    ApiError::bad_request(
                        "invalid_secret_path",
                        "the secret path is not valid UTF-8",
                    )
                })?;
        let (head, tail) = match raw.rsplit_once('/') {
            Some((head, last)) if SecretPath::RESERVED.contains(&last) => {
                (head.to_owned(), Some(last))
            }
            _ => (raw.clone(), None),
        };
        let path = SecretPath::try_from(head)
            .map_err(|e| ApiError::bad_request("invalid_secret_path", e.to_string()))?;
        Ok(Self(match tail {
            None => Target::Value(path),
            Some("metadata") => Target::Metadata(path),
            Some("undelete") => Target::Undelete(path),
            Some("destroy") => Target::Destroy(path),
            _ => Target::Rotate(path),
        }))
    }
}

/// `Allow` of a secret's value, of its metadata, and of its actions.
const ALLOW_VALUE: &str = "GET, HEAD, PUT, DELETE";
const ALLOW_METADATA: &str = "GET, HEAD, PUT";
const ALLOW_ACTION: &str = "POST";

impl Target {
    /// The methods the addressed sub-resource takes.
    fn allow(&self) -> &'static str {
        match self {
            Self::Value(_) => ALLOW_VALUE,
            Self::Metadata(_) => ALLOW_METADATA,
            Self::Undelete(_) | Self::Destroy(_) | Self::Rotate(_) => ALLOW_ACTION,
        }
    }
}

/// The `Allow` of the secrets URL `path` (a request path under `/v1/secrets/`), by its
/// sub-resource as [`SecretUrl`] splits it; `None` for any other path. For the router's own
/// 405s: the catch-all route takes the union of every sub-resource's methods, which is not
/// what any one of them takes.
pub fn allow_for(path: &str) -> Option<&'static str> {
    let rest = path.strip_prefix("/v1/secrets/")?;
    Some(match rest.rsplit_once('/') {
        Some((_, "metadata")) => ALLOW_METADATA,
        Some((_, last)) if SecretPath::RESERVED.contains(&last) => ALLOW_ACTION,
        _ => ALLOW_VALUE,
    })
}

/// 405 for a method `target` does not take, with the `Allow` header RFC 9110 requires (the
/// router's own 405s carry one; these are decided after the catch-all matched).
fn method_not_allowed(target: &Target) -> Response {
    let mut res = ApiError::client(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
    .into_response();
    res.headers_mut().insert(
        axum::http::header::ALLOW,
        axum::http::HeaderValue::from_static(target.allow()),
    );
    res
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
}

/// A write's answer.
fn written(w: Written) -> SecretWritten {
    SecretWritten {
        path: w.path,
        version: w.version,
        created_at: w.created_at,
    }
}

/// `GET /v1/secrets/{path}` and `GET /v1/secrets/{path}/metadata`
pub async fn get(
    Caller(p): Caller,
    SecretUrl(target): SecretUrl,
    q: Result<Query<ReadSecretQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    match target {
        Target::Value(path) => {
            let v = p.get_secret(&path, q.version).await?;
            let value_text = match q.text {
                Some(true) => std::str::from_utf8(v.value.expose_secret())
                    .ok()
                    .map(|t| Zeroizing::new(t.to_owned())),
                _ => None,
            };
            Ok(Json(SecretValue {
                path: v.path,
                version: v.version,
                created_at: v.created_at,
                value: encode_secret(v.value.expose_secret()),
                value_text,
            })
            .into_response())
        }
        Target::Metadata(path) => {
            if q.version.is_some() || q.text.is_some() {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    "metadata takes no query parameters",
                ));
            }
            Ok(Json(SecretRecord::from(&p.secret_metadata(&path).await?)).into_response())
        }
        other => Ok(method_not_allowed(&other)),
    }
}

impl RequestBody for PutSecretRequest {
    const FIELDS: &'static [&'static str] = PutSecretRequest::FIELDS;
}

impl RequestBody for PutSecretMetadataRequest {
    const NULLABLE: &'static [&'static str] = &["expires_after", "generate"];
    const FIELDS: &'static [&'static str] = PutSecretMetadataRequest::FIELDS;
}

fn key_field(key: Option<String>) -> Result<Option<KeyRef>, ApiError> {
    key.map(|k| {
        k.parse::<KeyRef>().map_err(|e| {
            ApiError::client(
                StatusCode::NOT_FOUND,
                "key_not_found",
                format!("key {k:?} not found: {e}"),
            )
        })
    })
    .transpose()
}

/// `PUT /v1/secrets/{path}` and `PUT /v1/secrets/{path}/metadata`
pub async fn put(
    State(state): State<AppState>,
    Caller(p): Caller,
    SecretUrl(target): SecretUrl,
    req: Request,
) -> Result<Response, ApiError> {
    // The method is checked before the body: a sub-resource that takes no PUT answers 405
    // whatever was sent.
    if !matches!(target, Target::Value(_) | Target::Metadata(_)) {
        return Ok(method_not_allowed(&target));
    }
    let JsonBody(body) = JsonBody::from_request(req, &()).await?;
    match target {
        Target::Value(path) => {
            let b: PutSecretRequest = parse(&body)?;
            let limit = state.max_secret_bytes;
            let value = match (&b.value, &b.value_text) {
                (Some(v), None) => {
                    if v.expose_secret().len() > limit.div_ceil(3) * 4 {
                        return Err(too_large(limit));
                    }
                    SecretBytes::new(decode_secret("value", v)?)
                }
                (None, Some(t)) => SecretBytes::copy_from(t.expose_secret().as_bytes()),
                _ => {
                    return Err(ApiError::bad_request(
                        "invalid_field",
                        "send exactly one of `value` (base64) and `value_text`",
                    ))
                }
            };
            let key = key_field(b.key)?;
            let w = p.put_secret(&path, value, key.as_ref(), b.cas).await?;
            Ok(Json(written(w)).into_response())
        }
        Target::Metadata(path) => {
            let b: PutSecretMetadataRequest = parse(&body)?;
            let req = MetadataRequest {
                key: key_field(b.key)?,
                max_versions: b.max_versions,
                expires_after: b.expires_after,
                custom: b.custom,
                generate: b.generate,
            };
            let record = p.put_secret_metadata(&path, req).await?;
            Ok(Json(SecretRecord::from(&record)).into_response())
        }
        other => Ok(method_not_allowed(&other)),
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::client(
        StatusCode::PAYLOAD_TOO_LARGE,
        "value_too_large",
        format!("the secret value is over the limit of {limit} bytes"),
    )
}

impl RequestBody for SecretVersionsRequest {
    const FIELDS: &'static [&'static str] = SecretVersionsRequest::FIELDS;
}

/// Most versions one request may name.
const MAX_VERSIONS_PER_REQUEST: usize = 1000;

fn versions_list(v: Vec<u32>) -> Result<Vec<u32>, ApiError> {
    if v.is_empty() || v.len() > MAX_VERSIONS_PER_REQUEST {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("`versions` lists 1 to {MAX_VERSIONS_PER_REQUEST} version numbers"),
        ));
    }
    Ok(v)
}

/// `POST /v1/secrets/{path}/undelete|destroy|rotate`
pub async fn post(
    Caller(p): Caller,
    SecretUrl(target): SecretUrl,
    req: Request,
) -> Result<Response, ApiError> {
    match target {
        Target::Rotate(path) => {
            let w = p.rotate_secret(&path).await?;
            Ok(Json(written(w)).into_response())
        }
        Target::Undelete(path) => {
            let JsonBody(body) = JsonBody::from_request(req, &()).await?;
            let b: SecretVersionsRequest = parse(&body)?;
            let which = match b.versions {
                Some(v) => Versions::These(versions_list(v)?),
                None => Versions::Latest,
            };
            let changed = p.undelete_secret_versions(&path, which).await?;
            Ok(Json(SecretChanged { path, changed }).into_response())
        }
        Target::Destroy(path) => {
            let JsonBody(body) = JsonBody::from_request(req, &()).await?;
            let b: SecretVersionsRequest = parse(&body)?;
            let versions = versions_list(b.versions.ok_or_else(|| {
                ApiError::bad_request("invalid_field", "`versions` is required")
            })?)?;
            let changed = p.destroy_secret_versions(&path, versions).await?;
            Ok(Json(SecretChanged { path, changed }).into_response())
        }
        other => Ok(method_not_allowed(&other)),
    }
}

/// `DELETE /v1/secrets/{path}[?versions=1,3]`
pub async fn delete(
    Caller(p): Caller,
    SecretUrl(target): SecretUrl,
    q: Result<Query<DeleteSecretQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Target::Value(path) = target else {
        return Ok(method_not_allowed(&target));
    };
    let which = match query(q)?.versions {
        None => Versions::Latest,
        Some(list) => {
            let parsed = list
                .split(',')
                .map(|v| v.trim().parse::<u32>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| {
                    ApiError::bad_request(
                        "invalid_query",
                        "versions is a comma-separated list of version numbers",
                    )
                })?;
            Versions::These(versions_list(parsed)?)
        }
    };
    let changed = p.delete_secret_versions(&path, which).await?;
    Ok(Json(SecretChanged { path, changed }).into_response())
}

/// `GET /v1/secrets?prefix=&limit=&after=`: paths and metadata, never values.
pub async fn list(
    Caller(p): Caller,
    q: Result<Query<ListSecretsQuery>, QueryRejection>,
) -> Result<Json<SecretList>, ApiError> {
    let q = query(q)?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request(
            "invalid_limit",
            "limit must be 1 to 1000",
        ));
    }
    let prefix = q.prefix.unwrap_or_default();
    if prefix.len() > SecretPath::MAX_LEN {
        return Err(ApiError::bad_request(
            "invalid_query",
            "prefix is longer than any secret path",
        ));
    }
    let after = q
        .after
        .map(SecretPath::try_from)
        .transpose()
        .map_err(|e| ApiError::bad_request("invalid_query", format!("after: {e}")))?;
    let page = p.list_secrets(&prefix, after, limit).await?;
    Ok(Json(SecretList {
        secrets: page.secrets.iter().map(SecretRecord::from).collect(),
        next: page.next,
    }))
}
