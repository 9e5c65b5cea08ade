//! The HTTP API (axum): router assembly, request ids, authentication, deadlines and tracing.
//! Device and database types never appear here: handlers reach the service only through the
//! [`crate::service::Authorized`] handle the authentication middleware makes with the
//! [`crate::service::FrontDoor`], and map its typed results to HTTP.

pub mod audit;
pub mod error;
pub mod extract;
pub mod serve;
pub mod throttle;
pub mod tls;
pub mod v1;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tower_http::trace::TraceLayer;

use crate::secret::BearerToken;
use crate::service::{Credential, FrontDoor, ServiceError};
use error::{ApiError, REQUEST_ID};

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// The service, as a front door reaches it.
    pub door: FrontDoor,
    /// Largest secret value, in bytes (checked before decoding).
    pub max_secret_bytes: usize,
    /// Failed authentications per source address and token id.
    pub throttle: Arc<throttle::AuthThrottle>,
    /// Individually audited unauthenticated requests per source.
    pub anonymous: Arc<throttle::AnonymousThrottle>,
}

/// Limits the router enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Per-request deadline.
    pub request_timeout: Duration,
    /// Largest body on the secrets routes: room for the largest value in base64.
    pub secret_body_bytes: usize,
}

/// The header carrying the request id, on every response.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The OpenAPI document, served at `/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// Builds the router: public health and OpenAPI routes, everything else behind a bearer token.
pub fn router(state: AppState, limits: Limits) -> Router {
    let protected = Router::new()
        .route("/v1/keys", post(v1::keys::create).get(v1::keys::list))
        .route(
            "/v1/keys/{key}",
            get(v1::keys::show).patch(v1::lifecycle::patch),
        )
        .route("/v1/keys/{key}/rotate", post(v1::lifecycle::rotate))
        .route("/v1/keys/{key}/disable", post(v1::lifecycle::disable))
        .route("/v1/keys/{key}/enable", post(v1::lifecycle::enable))
        .route(
            "/v1/keys/{key}/schedule-deletion",
            post(v1::lifecycle::schedule_deletion),
        )
        .route(
            "/v1/keys/{key}/cancel-deletion",
            post(v1::lifecycle::cancel_deletion),
        )
        .route("/v1/keys/{key}/versions", get(v1::lifecycle::versions))
        .route(
            "/v1/keys/{key}/versions/{version}/{action}",
            post(v1::lifecycle::version_action),
        )
        .route("/v1/keys/{key}/rewrap", post(v1::lifecycle::rewrap))
        .route("/v1/jobs", get(v1::lifecycle::jobs))
        .route("/v1/jobs/{id}", get(v1::lifecycle::job))
        .route("/v1/jobs/{id}/events", get(v1::lifecycle::job_events))
        .route(
            "/v1/aliases",
            post(v1::lifecycle::create_alias).get(v1::lifecycle::list_aliases),
        )
        .route(
            "/v1/aliases/{name}",
            get(v1::lifecycle::show_alias)
                .put(v1::lifecycle::repoint_alias)
                .delete(v1::lifecycle::delete_alias),
        )
        .route("/v1/reencrypt", post(v1::lifecycle::reencrypt))
        .route(
            "/v1/principals",
            post(v1::identity::create_principal).get(v1::identity::list_principals),
        )
        .route(
            "/v1/principals/{name}",
            get(v1::identity::show_principal)
                .patch(v1::identity::patch_principal)
                .delete(v1::identity::delete_principal),
        )
        .route("/v1/policies", get(v1::identity::list_policies))
        .route("/v1/policies/explain", post(v1::identity::explain))
        .route(
            "/v1/policies/{name}",
            get(v1::identity::show_policy)
                .put(v1::identity::put_policy)
                .delete(v1::identity::delete_policy),
        )
        .route(
            "/v1/tokens",
            post(v1::identity::create_token).get(v1::identity::list_tokens),
        )
        .route(
            "/v1/tokens/{id}",
            axum::routing::delete(v1::identity::revoke_token),
        )
        .route("/v1/audit/events", get(v1::audit::events))
        .route("/v1/audit/export", get(v1::audit::export))
        .route("/v1/audit/public-key", get(v1::audit::public_key))
        .route("/v1/audit/archive", post(v1::audit::archive))
        .route("/v1/custody/report", get(v1::audit::custody_report))
        .route("/v1/keys/{key}/datakey", post(v1::crypto::datakey))
        .route("/v1/keys/{key}/encrypt", post(v1::crypto::encrypt))
        .route("/v1/decrypt", post(v1::crypto::decrypt))
        .merge(
            Router::new()
                .route("/v1/secrets", get(v1::secrets::list))
                .route(
                    "/v1/secrets/{*path}",
                    get(v1::secrets::get)
                        .put(v1::secrets::put)
                        .post(v1::secrets::post)
                        .delete(v1::secrets::delete),
                )
                // Inner to the router-wide limit, so it wins on these routes.
                .layer(DefaultBodyLimit::max(limits.secret_body_bytes)),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    let public = Router::new()
        .route("/v1/health/live", get(v1::health::live))
        .route("/v1/health/ready", get(v1::health::ready))
        .route("/v1/openapi.json", get(openapi));
    let timeout = limits.request_timeout;
    Router::new()
        .merge(public)
        .merge(protected)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(middleware::from_fn(move |req: Request, next: Next| deadline(timeout, req, next)))
        // Outside the deadline, so a timed-out request is recorded too.
        .layer(middleware::from_fn_with_state(state.clone(), audit::record))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let request_id = req
                .headers()
                .get(REQUEST_ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let matched_path = req
                .extensions()
                .get::<axum::extract::MatchedPath>()
                .map(|p| p.as_str())
                .unwrap_or_default();
            tracing::info_span!("request", request_id, method = %req.method(), matched_path, principal = tracing::field::Empty)
        })
        // Failures are logged once, with their cause, by `ApiError`.
        .on_failure(()))
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

/// Gives every request a fresh id (client-sent ids are replaced: they would reach logs and
/// error bodies unchecked), sets it on the response, and scopes it for error bodies.
async fn request_id(mut req: Request, next: Next) -> Response {
    let id = uuid::Uuid::new_v4().to_string();
    if let Ok(v) = HeaderValue::from_str(&id) {
        req.headers_mut().insert(REQUEST_ID_HEADER, v.clone());
        let mut res = REQUEST_ID.scope(id, next.run(req)).await;
        res.headers_mut().insert(REQUEST_ID_HEADER, v);
        return res;
    }
    REQUEST_ID.scope(id, next.run(req)).await
}

/// Answers 503 `request_timeout` when a request outlives the deadline.
async fn deadline(limit: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(res) => res,
        Err(_) => ApiError::client(
            StatusCode::SERVICE_UNAVAILABLE,
            "request_timeout",
            "the request did not complete in time; retry later",
        )
        .into_response(),
    }
}

/// `status` with `code` and a `Retry-After` of `retry` seconds.
fn retry_later(
    status: StatusCode,
    code: &'static str,
    message: &'static str,
    retry: u64,
) -> Response {
    let mut res = ApiError::client(status, code, message).into_response();
    if let Ok(v) = HeaderValue::from_str(&retry.to_string()) {
        res.headers_mut().insert(header::RETRY_AFTER, v);
    }
    res
}

/// Resolves `Authorization: Bearer …` to a principal, or answers 401 — or 429 when the source
/// or the token id has failed too often ([`throttle::AuthThrottle`]). The credential is
/// verified first, so a valid one is never refused by the throttle.
async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let source = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let credential = credential_of(req.headers(), req.extensions());
    match state.door.authenticate(&credential, source).await {
        Ok(caller) => {
            tracing::Span::current().record("principal", caller.principal().name.as_str());
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => {
            if let ServiceError::Unauthenticated(_) = &e {
                if let Some(retry) = state.throttle.fail(source, token_id_of(&credential)) {
                    return retry_later(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too_many_auth_failures",
                        "too many failed authentications from this address or for this token; retry later",
                        retry,
                    );
                }
            }
            ApiError::from(e).into_response()
        }
    }
}

/// The public id part of a presented bearer token, for counting failures per token id.
fn token_id_of(credential: &Credential) -> Option<&str> {
    match credential {
        Credential::Bearer(t) => crate::service::auth::token_id(t.expose_secret()),
        _ => None,
    }
}

/// The credential a request presents, as this door reads it: `Authorization: Bearer …` wins;
/// without that header, the client certificate the TLS layer verified (or refused, with its
/// reason: issue 12, item 12, never treated as "no certificate").
fn credential_of(headers: &axum::http::HeaderMap, ext: &axum::http::Extensions) -> Credential {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        return match v
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
        {
            Some(token) => Credential::Bearer(BearerToken::new(token.to_owned())),
            None => Credential::Malformed,
        };
    }
    if let Some(refused) = ext.get::<tls::CertificateRefused>() {
        return Credential::RefusedCertificate(refused.to_string());
    }
    match ext.get::<tls::ClientIdentity>() {
        Some(id) => Credential::Certificate {
            principal: id.principal.clone(),
            fingerprint: id.fingerprint.clone(),
        },
        None => Credential::None,
    }
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// Notes the principal of a request that matched no route (404, 405) when it carries a valid
/// credential, so its audit record names it and the unauthenticated-request throttle leaves it
/// alone. A failed token is counted by the failure throttle as on any route; the answer stays
/// the 404 or 405.
async fn attribute(state: &AppState, req: Request) {
    // Only the head: the body is not `Sync`, and is not needed.
    let (req, _) = req.into_parts();
    let source = req
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let credential = credential_of(&req.headers, &req.extensions);
    // Authenticating notes the principal for the record; the answer stays the 404 or 405.
    match state.door.authenticate(&credential, source).await {
        Err(ServiceError::Unauthenticated(_))
            if req.headers.contains_key(header::AUTHORIZATION) =>
        {
            let _ = state.throttle.fail(source, token_id_of(&credential));
        }
        Ok(_) | Err(_) => {}
    }
}

async fn not_found(State(state): State<AppState>, req: Request) -> ApiError {
    attribute(&state, req).await;
    ApiError::client(StatusCode::NOT_FOUND, "route_not_found", "no such route")
}

async fn method_not_allowed(State(state): State<AppState>, req: Request) -> ApiError {
    attribute(&state, req).await;
    ApiError::client(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}
