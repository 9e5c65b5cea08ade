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
pub mod ui;
pub mod v1;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::handler::Handler;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter};
use axum::Router;
use tower_http::trace::TraceLayer;

use crate::api_types::routes::{self as op, Access, Method, Operation};
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
    /// The Vault-compatible door's mounts; `None` when it is off.
    pub vault: Option<Arc<crate::vault::Mounts>>,
    /// The AWS KMS door's settings (ARNs, the region clients sign for).
    pub aws: Arc<crate::config::AwsConfig>,
    /// Where requests are counted and timed (`GET /metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
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
/// Every route is an operation of the table that `docs/openapi.json` is generated from
/// ([`crate::api_types::routes`]), public or authenticated as its entry says (`table`).
pub fn router(state: AppState, limits: Limits) -> Router {
    let (main, secrets) = table();
    let protected = main
        .authenticated
        .merge(
            secrets
                .authenticated
                // Inner to the router-wide limit, so it wins on these routes.
                .layer(DefaultBodyLimit::max(limits.secret_body_bytes)),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    let public = main.public.merge(secrets.public);
    let timeout = limits.request_timeout;
    let vault = match &state.vault {
        // The Vault-compatible front door: the same service behind another wire format.
        Some(mounts) => crate::vault::router(state.clone(), mounts),
        None => Router::new(),
    };
    Router::new()
        .merge(public)
        .merge(protected)
        .merge(vault)
        // The AWS KMS-compatible front door: `POST /` with `X-Amz-Target`, signed with SigV4.
        .merge(crate::aws::router())
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
        // Outside the audit layer: the answer counted is the one the client gets.
        .layer(middleware::from_fn_with_state(state.clone(), audit::count))
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

/// An operation of the table as the router serves it.
#[derive(Debug, Clone, Copy)]
pub struct ServedOperation {
    /// The table's entry.
    pub operation: &'static Operation,
    /// The pattern the router serves it at.
    pub route: &'static str,
    /// The method the router serves it with.
    pub method: Method,
    /// Whether the router serves it outside authentication.
    pub access: Access,
}

/// Routes added only through the operation table's entries ([`Served::serve`]), so that no
/// route is served undocumented.
struct Served {
    public: Router<AppState>,
    authenticated: Router<AppState>,
    operations: Vec<ServedOperation>,
}

impl Served {
    fn new() -> Self {
        Self {
            public: Router::new(),
            authenticated: Router::new(),
            operations: Vec::new(),
        }
    }

    /// Serves `ops` with `handler`, at the first one's route and method, public or
    /// authenticated as it says. Several operations share a handler only where one catch-all
    /// route serves several documented paths (the secrets' sub-resources); a test checks that
    /// they share the route, the method and the access too.
    fn serve<H, T>(mut self, ops: &[&'static Operation], handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let Some(first) = ops.first() else {
            return self;
        };
        let (route, method, access) = (first.router_path(), first.method, first.access);
        let method_router = on(method_filter(method), handler);
        match access {
            Access::Public => self.public = self.public.route(route, method_router),
            Access::Authenticated => {
                self.authenticated = self.authenticated.route(route, method_router);
            }
        }
        self.operations
            .extend(ops.iter().map(|&operation| ServedOperation {
                operation,
                route,
                method,
                access,
            }));
        self
    }
}

fn method_filter(method: Method) -> MethodFilter {
    match method {
        Method::Get => MethodFilter::GET,
        Method::Post => MethodFilter::POST,
        Method::Put => MethodFilter::PUT,
        Method::Patch => MethodFilter::PATCH,
        Method::Delete => MethodFilter::DELETE,
    }
}

/// The operations the router serves, as it serves them (for the test that the router serves
/// each operation of the table exactly once, as the table says).
pub fn served_operations() -> Vec<ServedOperation> {
    let (main, secrets) = table();
    main.operations
        .into_iter()
        .chain(secrets.operations)
        .collect()
}

/// Every route: the operations of the table and their handlers; the second part is the secrets
/// routes, which take a larger body.
fn table() -> (Served, Served) {
    let main = Served::new()
        .serve(&[&op::CREATE_KEY], v1::keys::create)
        .serve(&[&op::LIST_KEYS], v1::keys::list)
        .serve(&[&op::SHOW_KEY], v1::keys::show)
        .serve(&[&op::UPDATE_KEY], v1::lifecycle::patch)
        .serve(&[&op::ROTATE_KEY], v1::lifecycle::rotate)
        .serve(&[&op::DISABLE_KEY], v1::lifecycle::disable)
        .serve(&[&op::ENABLE_KEY], v1::lifecycle::enable)
        .serve(
            &[&op::SCHEDULE_KEY_DELETION],
            v1::lifecycle::schedule_deletion,
        )
        .serve(&[&op::CANCEL_KEY_DELETION], v1::lifecycle::cancel_deletion)
        .serve(&[&op::LIST_KEY_VERSIONS], v1::lifecycle::versions)
        .serve(&[&op::CHANGE_KEY_VERSION], v1::lifecycle::version_action)
        .serve(&[&op::START_REWRAP], v1::lifecycle::rewrap)
        .serve(&[&op::LIST_JOBS], v1::lifecycle::jobs)
        .serve(&[&op::SHOW_JOB], v1::lifecycle::job)
        .serve(&[&op::JOB_EVENTS], v1::lifecycle::job_events)
        .serve(&[&op::CREATE_ALIAS], v1::lifecycle::create_alias)
        .serve(&[&op::LIST_ALIASES], v1::lifecycle::list_aliases)
        .serve(&[&op::SHOW_ALIAS], v1::lifecycle::show_alias)
        .serve(&[&op::REPOINT_ALIAS], v1::lifecycle::repoint_alias)
        .serve(&[&op::DELETE_ALIAS], v1::lifecycle::delete_alias)
        .serve(&[&op::REENCRYPT], v1::lifecycle::reencrypt)
        .serve(&[&op::CREATE_PRINCIPAL], v1::identity::create_principal)
        .serve(&[&op::LIST_PRINCIPALS], v1::identity::list_principals)
        .serve(&[&op::SHOW_PRINCIPAL], v1::identity::show_principal)
        .serve(&[&op::UPDATE_PRINCIPAL], v1::identity::patch_principal)
        .serve(&[&op::DELETE_PRINCIPAL], v1::identity::delete_principal)
        .serve(&[&op::LIST_POLICIES], v1::identity::list_policies)
        .serve(&[&op::EXPLAIN_DECISION], v1::identity::explain)
        .serve(&[&op::SHOW_POLICY], v1::identity::show_policy)
        .serve(&[&op::PUT_POLICY], v1::identity::put_policy)
        .serve(&[&op::DELETE_POLICY], v1::identity::delete_policy)
        .serve(&[&op::CREATE_TOKEN], v1::identity::create_token)
        .serve(&[&op::LIST_TOKENS], v1::identity::list_tokens)
        .serve(&[&op::REVOKE_TOKEN], v1::identity::revoke_token)
        .serve(&[&op::CREATE_ACCESS_KEY], v1::access_keys::create)
        .serve(&[&op::LIST_ACCESS_KEYS], v1::access_keys::list)
        .serve(&[&op::REVOKE_ACCESS_KEY], v1::access_keys::revoke)
        .serve(
            &[&op::CREATE_DB_CONNECTION],
            v1::database::create_connection,
        )
        .serve(&[&op::LIST_DB_CONNECTIONS], v1::database::list_connections)
        .serve(&[&op::SHOW_DB_CONNECTION], v1::database::show_connection)
        .serve(
            &[&op::DELETE_DB_CONNECTION],
            v1::database::delete_connection,
        )
        .serve(&[&op::PUT_DB_ROLE], v1::database::put_role)
        .serve(&[&op::LIST_DB_ROLES], v1::database::list_roles)
        .serve(&[&op::SHOW_DB_ROLE], v1::database::show_role)
        .serve(&[&op::DELETE_DB_ROLE], v1::database::delete_role)
        .serve(&[&op::READ_STATIC_CREDS], v1::database::static_creds)
        .serve(&[&op::ROTATE_DB_ROLE], v1::database::rotate_role)
        .serve(&[&op::CREATE_DB_CREDS], v1::database::create_creds)
        .serve(&[&op::RENEW_DB_LEASE], v1::database::renew_lease)
        .serve(&[&op::REVOKE_DB_LEASE], v1::database::revoke_lease)
        .serve(&[&op::AUDIT_EVENTS], v1::audit::events)
        .serve(&[&op::AUDIT_EXPORT], v1::audit::export)
        .serve(&[&op::AUDIT_PUBLIC_KEY], v1::audit::public_key)
        .serve(&[&op::AUDIT_ARCHIVE], v1::audit::archive)
        .serve(&[&op::CUSTODY_REPORT], v1::audit::custody_report)
        .serve(&[&op::GENERATE_DATA_KEY], v1::crypto::datakey)
        .serve(&[&op::ENCRYPT], v1::crypto::encrypt)
        .serve(&[&op::DECRYPT], v1::crypto::decrypt)
        .serve(&[&op::LIVE], v1::health::live)
        .serve(&[&op::READY], v1::health::ready)
        .serve(&[&op::OPENAPI], openapi)
        .serve(&[&op::METRICS], v1::metrics::metrics)
        .serve(&[&op::UI_PAGE], ui::page)
        .serve(&[&op::UI_SCRIPT], ui::script)
        .serve(&[&op::UI_VERIFIER], ui::verifier)
        .serve(&[&op::UI_STYLE], ui::style);
    // One catch-all serves the secrets and their sub-resources; its handlers tell them apart by
    // the last segment.
    let secrets = Served::new()
        .serve(&[&op::LIST_SECRETS], v1::secrets::list)
        .serve(
            &[&op::GET_SECRET, &op::GET_SECRET_METADATA],
            v1::secrets::get,
        )
        .serve(
            &[&op::PUT_SECRET, &op::PUT_SECRET_METADATA],
            v1::secrets::put,
        )
        .serve(
            &[
                &op::UNDELETE_SECRET_VERSIONS,
                &op::DESTROY_SECRET_VERSIONS,
                &op::ROTATE_SECRET,
            ],
            v1::secrets::post,
        )
        .serve(&[&op::DELETE_SECRET_VERSIONS], v1::secrets::delete);
    (main, secrets)
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

async fn method_not_allowed(State(state): State<AppState>, req: Request) -> Response {
    // The router sets `Allow` to the route's methods unless the answer has one already.
    let allow = v1::secrets::allow_for(req.uri().path());
    attribute(&state, req).await;
    let mut res = ApiError::client(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
    .into_response();
    if let Some(allow) = allow {
        res.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    res
}
