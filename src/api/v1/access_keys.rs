//! AWS SigV4 access keys (issue 16): create (the secret shown once), list, revoke; in the style
//! of the token routes, with the same action (`principal:admin` on the principal).

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::Json;
use zeroize::Zeroizing;

use crate::api::error::ApiError;
use crate::api::extract::{ApiJson, Caller, RequestBody};
use crate::api_types::access_keys::{
    AccessKeyCreated, AccessKeyList, CreateAccessKeyRequest, ListAccessKeysQuery,
};
use crate::domain::{KeyName, KeyRef};
use crate::service::access_keys::is_access_key_id;

fn principal_name(code: &'static str, raw: String) -> Result<KeyName, ApiError> {
    KeyName::try_from(raw).map_err(|e| ApiError::bad_request(code, format!("principal: {e}")))
}

impl RequestBody for CreateAccessKeyRequest {
    const NULLABLE: &'static [&'static str] = &["key"];
    const FIELDS: &'static [&'static str] = CreateAccessKeyRequest::FIELDS;
}

/// `POST /v1/access-keys` → 201
pub async fn create(
    Caller(p): Caller,
    ApiJson(b): ApiJson<CreateAccessKeyRequest>,
) -> Result<(StatusCode, Json<AccessKeyCreated>), ApiError> {
    if b.description.len() > 1024 {
        return Err(ApiError::bad_request(
            "invalid_field",
            "field `description` is longer than 1024 bytes",
        ));
    }
    let principal = principal_name("invalid_principal_name", b.principal)?;
    let key = b
        .key
        .map(|k| {
            k.parse::<KeyRef>()
                .map_err(|e| ApiError::bad_request("invalid_key_name", format!("key: {e}")))
        })
        .transpose()?;
    let minted = p
        .create_access_key(&principal, key.as_ref(), b.ttl, b.description)
        .await?;
    let secret =
        Zeroizing::new(String::from_utf8_lossy(minted.secret.expose_secret()).into_owned());
    Ok((
        StatusCode::CREATED,
        Json(AccessKeyCreated {
            secret_access_key: secret,
            info: minted.info,
        }),
    ))
}

/// `GET /v1/access-keys?principal=`
pub async fn list(
    Caller(p): Caller,
    q: Result<Query<ListAccessKeysQuery>, QueryRejection>,
) -> Result<Json<AccessKeyList>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let principal = q
        .principal
        .map(|n| principal_name("invalid_query", n))
        .transpose()?;
    Ok(Json(AccessKeyList {
        access_keys: p.access_keys(principal.as_ref()).await?,
    }))
}

/// `DELETE /v1/access-keys/{id}` → 204; requests signed with it are refused at once.
pub async fn revoke(
    Caller(p): Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let not_found = || {
        ApiError::client(
            StatusCode::NOT_FOUND,
            "access_key_not_found",
            "no such access key",
        )
    };
    let Path(id) = path.map_err(|_| not_found())?;
    if !is_access_key_id(&id) {
        return Err(not_found());
    }
    p.revoke_access_key(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
