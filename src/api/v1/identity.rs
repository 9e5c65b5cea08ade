//! Principals, policies, tokens and explain.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::Json;
use zeroize::Zeroizing;

use crate::api::error::ApiError;
use crate::api::extract::{ApiJson, Caller, JsonBody, RequestBody};
use crate::api_types::identity::{
    CreatePrincipalRequest, CreateTokenRequest, DecidedBy, Effect, ExplainRequest, ExplainResponse,
    ListTokensQuery, PatchPrincipalRequest, Policy, PolicyList, Principal, PrincipalList,
    TokenCreated, TokenInfo, TokenList,
};
use crate::domain::KeyName;
use crate::policy::document::{self, RESOURCE_KINDS};
use crate::policy::{Action, Decision};
use crate::service::identity::PrincipalRequest;

fn name_in(field: &'static str, code: &'static str, raw: String) -> Result<KeyName, ApiError> {
    KeyName::try_from(raw).map_err(|e| ApiError::bad_request(code, format!("{field}: {e}")))
}

fn path_name(
    path: Result<Path<String>, PathRejection>,
    code: &'static str,
    what: &str,
) -> Result<KeyName, ApiError> {
    let Path(raw) =
        path.map_err(|_| ApiError::client(StatusCode::NOT_FOUND, code, format!("no such {what}")))?;
    KeyName::try_from(raw)
        .map_err(|_| ApiError::client(StatusCode::NOT_FOUND, code, format!("no such {what}")))
}

fn policy_names(raw: Option<Vec<String>>) -> Result<Option<Vec<KeyName>>, ApiError> {
    raw.map(|v| {
        v.into_iter()
            .map(|n| name_in("policies", "invalid_policy_name", n))
            .collect()
    })
    .transpose()
}

impl RequestBody for CreatePrincipalRequest {
    const FIELDS: &'static [&'static str] = CreatePrincipalRequest::FIELDS;
}

impl RequestBody for PatchPrincipalRequest {
    const FIELDS: &'static [&'static str] = PatchPrincipalRequest::FIELDS;
}

/// `POST /v1/principals` → 201
pub async fn create_principal(
    Caller(p): Caller,
    ApiJson(b): ApiJson<CreatePrincipalRequest>,
) -> Result<(StatusCode, Json<Principal>), ApiError> {
    let name = name_in("name", "invalid_principal_name", b.name)?;
    let req = PrincipalRequest {
        attributes: b.attributes,
        policies: policy_names(b.policies)?,
    };
    Ok((
        StatusCode::CREATED,
        Json(Principal::from(&p.create_principal(name, req).await?)),
    ))
}

/// `GET /v1/principals`
pub async fn list_principals(Caller(p): Caller) -> Result<Json<PrincipalList>, ApiError> {
    Ok(Json(PrincipalList {
        principals: p.principals().await?.iter().map(Principal::from).collect(),
    }))
}

/// `GET /v1/principals/{name}`
pub async fn show_principal(
    Caller(p): Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Principal>, ApiError> {
    let name = path_name(path, "principal_not_found", "principal")?;
    Ok(Json(Principal::from(&p.principal_record(&name).await?)))
}

/// `PATCH /v1/principals/{name}`
pub async fn patch_principal(
    Caller(p): Caller,
    path: Result<Path<String>, PathRejection>,
    ApiJson(b): ApiJson<PatchPrincipalRequest>,
) -> Result<Json<Principal>, ApiError> {
    let name = path_name(path, "principal_not_found", "principal")?;
    let req = PrincipalRequest {
        attributes: b.attributes,
        policies: policy_names(b.policies)?,
    };
    Ok(Json(Principal::from(
        &p.update_principal(&name, req).await?,
    )))
}

/// `DELETE /v1/principals/{name}` → 204 (its tokens are revoked)
pub async fn delete_principal(
    Caller(p): Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let name = path_name(path, "principal_not_found", "principal")?;
    p.delete_principal(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /v1/policies/{name}`: the body is the policy document; a new version each time.
pub async fn put_policy(
    Caller(p): Caller,
    path: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody,
) -> Result<Json<Policy>, ApiError> {
    let Path(raw) = path.map_err(|_| {
        ApiError::bad_request("invalid_policy_name", "the policy name is not valid UTF-8")
    })?;
    let name = name_in("name", "invalid_policy_name", raw)?;
    Ok(Json(Policy::from(&p.put_policy(&name, &body).await?)))
}

/// `GET /v1/policies/{name}`
pub async fn show_policy(
    Caller(p): Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Policy>, ApiError> {
    let name = path_name(path, "policy_not_found", "policy")?;
    Ok(Json(Policy::from(&p.policy(&name).await?)))
}

/// `GET /v1/policies`
pub async fn list_policies(Caller(p): Caller) -> Result<Json<PolicyList>, ApiError> {
    Ok(Json(PolicyList {
        policies: p.policies().await?.iter().map(Policy::from).collect(),
    }))
}

/// `DELETE /v1/policies/{name}` → 204
pub async fn delete_policy(
    Caller(p): Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let name = path_name(path, "policy_not_found", "policy")?;
    p.delete_policy(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

impl RequestBody for ExplainRequest {
    const FIELDS: &'static [&'static str] = ExplainRequest::FIELDS;
}

/// `POST /v1/policies/explain`: the decision and the statement that made it.
pub async fn explain(
    Caller(p): Caller,
    ApiJson(b): ApiJson<ExplainRequest>,
) -> Result<Json<ExplainResponse>, ApiError> {
    let principal = name_in("principal", "invalid_principal_name", b.principal)?;
    let action = Action::parse(&b.action).ok_or_else(|| {
        ApiError::bad_request("unknown_action", format!("unknown action {:?}", b.action))
    })?;
    let (kind, rest) = b
        .resource
        .split_once('/')
        .ok_or_else(|| ApiError::bad_request("invalid_resource", "a resource is <kind>/<name>"))?;
    let kind = RESOURCE_KINDS
        .iter()
        .copied()
        .find(|k| *k == kind)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_resource",
                format!("resource kinds are {}", RESOURCE_KINDS.join(", ")),
            )
        })?;
    let decision = p
        .explain(&principal, action, kind, rest, b.context.as_ref(), b.source)
        .await?;
    // The resource as written: the response never names what a key reference resolved to.
    Ok(Json(explained(
        decision,
        action.as_str().to_owned(),
        format!("{kind}/{rest}"),
    )))
}

/// The answer of explain: the engine's decision on `action` on `resource`.
pub(super) fn explained(decision: Decision, action: String, resource: String) -> ExplainResponse {
    let Decision { effect, decided_by } = decision;
    ExplainResponse {
        effect: match effect {
            document::Effect::Allow => Effect::Allow,
            document::Effect::Deny => Effect::Deny,
        },
        decided_by: decided_by.map(|d| DecidedBy {
            policy: d.policy,
            statement: u64::try_from(d.statement).unwrap_or(u64::MAX),
            sid: d.sid,
        }),
        action,
        resource,
    }
}

impl RequestBody for CreateTokenRequest {
    const FIELDS: &'static [&'static str] = CreateTokenRequest::FIELDS;
}

/// `POST /v1/tokens` → 201
pub async fn create_token(
    Caller(p): Caller,
    ApiJson(b): ApiJson<CreateTokenRequest>,
) -> Result<(StatusCode, Json<TokenCreated>), ApiError> {
    if b.description.len() > 1024 {
        return Err(ApiError::bad_request(
            "invalid_field",
            "field `description` is longer than 1024 bytes",
        ));
    }
    let principal = name_in("principal", "invalid_principal_name", b.principal)?;
    let minted = p.create_token(&principal, b.ttl, b.description).await?;
    Ok((
        StatusCode::CREATED,
        Json(TokenCreated::new(
            Zeroizing::new(minted.token.expose_secret().to_owned()),
            &minted.info,
        )),
    ))
}

/// `GET /v1/tokens?principal=`
pub async fn list_tokens(
    Caller(p): Caller,
    q: Result<Query<ListTokensQuery>, QueryRejection>,
) -> Result<Json<TokenList>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let principal = q
        .principal
        .map(|n| name_in("principal", "invalid_query", n))
        .transpose()?;
    Ok(Json(TokenList {
        tokens: p
            .tokens(principal.as_ref())
            .await?
            .iter()
            .map(TokenInfo::from)
            .collect(),
    }))
}

/// `DELETE /v1/tokens/{id}` → 204; the token stops working at once.
pub async fn revoke_token(
    Caller(p): Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(id) = path
        .map_err(|_| ApiError::client(StatusCode::NOT_FOUND, "token_not_found", "no such token"))?;
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::client(
            StatusCode::NOT_FOUND,
            "token_not_found",
            "no such token",
        ));
    }
    p.revoke_token(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
