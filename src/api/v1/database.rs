//! Database credentials (issue 24): connections, roles, static passwords, dynamic credentials
//! and their leases. Handlers parse and check the request's shape; the service authorises
//! (`db:admin`, `db:rotate`, `db:creds`) and does the work.

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;

use super::lifecycle::optional_body;
use crate::api::error::ApiError;
use crate::api::extract::{ApiJson, Caller, RequestBody};
use crate::api_types::database::{
    CreateDbConnectionRequest, DbConnection, DbConnectionList, DbCreds, DbCredsRequest, DbLease,
    DbRole, DbRoleList, PutDbRoleRequest, RenewLeaseRequest, RotatedRole, StaticCreds,
    StaticCredsQuery,
};
use crate::domain::KeyName;
use crate::service::database::is_lease_id;

impl RequestBody for CreateDbConnectionRequest {
    const FIELDS: &'static [&'static str] = CreateDbConnectionRequest::FIELDS;
}

impl RequestBody for PutDbRoleRequest {
    const FIELDS: &'static [&'static str] = PutDbRoleRequest::FIELDS;
}

impl RequestBody for DbCredsRequest {
    const FIELDS: &'static [&'static str] = DbCredsRequest::FIELDS;
}

impl RequestBody for RenewLeaseRequest {
    const FIELDS: &'static [&'static str] = RenewLeaseRequest::FIELDS;
}

/// A name from the path; one that breaks the name rules names nothing (404 `code`).
fn name_in_path(
    path: Result<Path<String>, PathRejection>,
    code: &'static str,
) -> Result<KeyName, ApiError> {
    let not_found = || ApiError::client(StatusCode::NOT_FOUND, code, "no such name");
    let Path(raw) = path.map_err(|_| not_found())?;
    KeyName::try_from(raw).map_err(|_| not_found())
}

fn connection_name(path: Result<Path<String>, PathRejection>) -> Result<KeyName, ApiError> {
    name_in_path(path, "db_connection_not_found")
}

fn role_name(path: Result<Path<String>, PathRejection>) -> Result<KeyName, ApiError> {
    name_in_path(path, "db_role_not_found")
}

fn lease_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let not_found =
        || ApiError::client(StatusCode::NOT_FOUND, "db_lease_not_found", "no such lease");
    let Path(id) = path.map_err(|_| not_found())?;
    if is_lease_id(&id) {
        Ok(id)
    } else {
        Err(not_found())
    }
}

/// `POST /v1/db/connections` → 201
pub async fn create_connection(
    Caller(p): Caller,
    ApiJson(b): ApiJson<CreateDbConnectionRequest>,
) -> Result<(StatusCode, Json<DbConnection>), ApiError> {
    Ok((StatusCode::CREATED, Json(p.create_db_connection(b).await?)))
}

/// `GET /v1/db/connections`
pub async fn list_connections(Caller(p): Caller) -> Result<Json<DbConnectionList>, ApiError> {
    Ok(Json(DbConnectionList {
        connections: p.db_connections().await?,
    }))
}

/// `GET /v1/db/connections/{name}`
pub async fn show_connection(
    Caller(p): Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<DbConnection>, ApiError> {
    Ok(Json(p.db_connection(&connection_name(path)?).await?))
}

/// `DELETE /v1/db/connections/{name}` → 204
pub async fn delete_connection(
    Caller(p): Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    p.delete_db_connection(&connection_name(path)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /v1/db/roles/{name}`
pub async fn put_role(
    Caller(p): Caller,
    path: Result<Path<String>, PathRejection>,
    ApiJson(b): ApiJson<PutDbRoleRequest>,
) -> Result<Json<DbRole>, ApiError> {
    let name = KeyName::try_from(
        path.map_err(|e| ApiError::bad_request("invalid_db_role", e.body_text()))?
            .0,
    )
    .map_err(|e| ApiError::bad_request("invalid_db_role", format!("name: {e}")))?;
    Ok(Json(p.put_db_role(&name, b).await?))
}

/// `GET /v1/db/roles`
pub async fn list_roles(Caller(p): Caller) -> Result<Json<DbRoleList>, ApiError> {
    Ok(Json(DbRoleList {
        roles: p.db_roles().await?,
    }))
}

/// `GET /v1/db/roles/{name}`
pub async fn show_role(
    Caller(p): Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<DbRole>, ApiError> {
    Ok(Json(p.db_role(&role_name(path)?).await?))
}

/// `DELETE /v1/db/roles/{name}` → 204
pub async fn delete_role(
    Caller(p): Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    p.delete_db_role(&role_name(path)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/db/static-creds/{name}?version=`
pub async fn static_creds(
    Caller(p): Caller,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<StaticCredsQuery>, QueryRejection>,
) -> Result<Json<StaticCreds>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    Ok(Json(p.static_creds(&role_name(path)?, q.version).await?))
}

/// `POST /v1/db/rotate-role/{name}`
pub async fn rotate_role(
    Caller(p): Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<RotatedRole>, ApiError> {
    Ok(Json(p.rotate_db_role(&role_name(path)?).await?))
}

/// `POST /v1/db/creds/{name}` (optional body) → 201
pub async fn create_creds(
    Caller(p): Caller,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<DbCreds>), ApiError> {
    let name = role_name(path)?;
    let b: Option<DbCredsRequest> = optional_body(&headers, &body)?;
    let creds = p.create_db_creds(&name, b.and_then(|b| b.ttl)).await?;
    Ok((StatusCode::CREATED, Json(creds)))
}

/// `POST /v1/db/leases/{id}/renew` (optional body)
pub async fn renew_lease(
    Caller(p): Caller,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<DbLease>, ApiError> {
    let id = lease_id(path)?;
    let b: Option<RenewLeaseRequest> = optional_body(&headers, &body)?;
    Ok(Json(
        p.renew_db_lease(&id, b.and_then(|b| b.increment)).await?,
    ))
}

/// `DELETE /v1/db/leases/{id}` → 204
pub async fn revoke_lease(
    Caller(p): Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    p.revoke_db_lease(&lease_id(path)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
