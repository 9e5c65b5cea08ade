//! The Vault-compatible front door (issue 16): what `hvac` and other Vault clients send, on the
//! same listener as the native API, mapped to the same service operations (so the same policies
//! and the same audit records apply). This module is only a wire format: it turns a request into
//! a credential and a service call, and the typed result (or error) into Vault's envelope.
//!
//! Transport as Vault clients expect it:
//! - the token in `X-Vault-Token` (or `Authorization: Bearer`); a missing or bad token is 403
//!   `{"errors":["permission denied"]}`, as Vault answers;
//! - the `LIST` verb, rewritten to `GET …?list=true` before routing ([`rewrite_list`]);
//! - answers in Vault's envelope (`request_id`, `lease_id`, `renewable`, `lease_duration`,
//!   `data`, `wrap_info`, `warnings`, `auth`), errors as `{"errors":[…]}` with `Content-Type`
//!   exactly `application/json` (hvac compares the header);
//! - `GET /v1/sys/health` and `GET /v1/auth/token/lookup-self`.
//!
//! Mounts: Transit at `/v1/transit/`, KV version 2 at `/v1/secret/` unless `[vault]` says
//! otherwise (docs/compat.md).

pub mod kv;
pub mod transit;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::{json, Value};

use crate::api::error::ErrorCode;
use crate::api::{AppState, REQUEST_ID_HEADER};
use crate::audit::Outcome;
use crate::secret::BearerToken;
use crate::service::{Authorized, Credential, ErrorKind, ServiceError};

/// Where the engines are mounted (`[vault] transit_mount`, `kv_mount`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mounts {
    /// Transit's mount path (`transit`).
    pub transit: String,
    /// KV version 2's mount path (`secret`).
    pub kv: String,
}

impl Default for Mounts {
    fn default() -> Self {
        Self {
            transit: "transit".to_owned(),
            kv: "secret".to_owned(),
        }
    }
}

/// First path segments the native API and Vault's own endpoints use.
const TAKEN: &[&str] = &[
    "keys",
    "secrets",
    "health",
    "audit",
    "principals",
    "policies",
    "tokens",
    "jobs",
    "aliases",
    "decrypt",
    "reencrypt",
    "custody",
    "openapi.json",
    "sys",
    "auth",
];

impl Mounts {
    /// A mount path as configured: one segment of lowercase letters, digits, `-` and `_`, not
    /// one the native API or Vault's own endpoints use.
    ///
    /// # Errors
    /// Why it is refused.
    pub fn check(m: &str) -> Result<String, &'static str> {
        let ok = !m.is_empty()
            && m.len() <= 64
            && m.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !ok {
            return Err("one path segment of a-z, 0-9, - and _ (at most 64)");
        }
        if TAKEN.contains(&m) {
            return Err("this path is used by the native API or by Vault's sys/auth endpoints");
        }
        Ok(m.to_owned())
    }

    /// Whether `route` (a matched route template) is one of this door's.
    pub fn serves(&self, route: &str) -> bool {
        [
            format!("/v1/{}/", self.transit),
            format!("/v1/{}/", self.kv),
            "/v1/auth/".to_owned(),
            "/v1/sys/".to_owned(),
        ]
        .iter()
        .any(|p| route.starts_with(p.as_str()))
            || route == format!("/v1/{}/metadata", self.kv)
    }
}

/// The Vault door's routes (authenticated except `sys/health`), to be merged into the main
/// router (which adds request ids, the deadline and the audit record).
pub fn router(state: AppState, mounts: &Mounts) -> Router<AppState> {
    let authenticated = transit::routes(&mounts.transit)
        .merge(kv::routes(&mounts.kv))
        .route("/v1/auth/token/lookup-self", get(lookup_self))
        .route_layer(middleware::from_fn_with_state(state, authenticate));
    Router::new()
        .route("/v1/sys/health", get(health))
        .merge(authenticated)
}

/// Rewrites Vault's `LIST` verb to `GET` with `list=true`, before routing (axum routes only the
/// standard methods). Applied to every request; a no-op for any other method.
pub fn rewrite_list<B>(mut req: axum::http::Request<B>) -> axum::http::Request<B> {
    if req.method().as_str() != "LIST" {
        return req;
    }
    *req.method_mut() = Method::GET;
    let uri = req.uri();
    let query = match uri.query() {
        Some(q) if !q.is_empty() => format!("{q}&list=true"),
        _ => "list=true".to_owned(),
    };
    let rewritten = format!("{}?{query}", uri.path());
    if let Ok(u) = rewritten.parse::<Uri>() {
        *req.uri_mut() = u;
    }
    req
}

/// A body as a JSON object (Vault ignores fields it does not know; so does this door). An empty
/// body is an empty object (hvac's rotate sends none); anything else that is not an object is
/// 400.
pub(crate) fn body_of(bytes: &[u8]) -> Result<Value, VaultError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(serde_json::Map::new()));
    }
    serde_json::from_slice::<Value>(bytes)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| VaultError::invalid("malformed_json", "failed to parse JSON input"))
}

/// A Vault answer: the envelope around `data`.
pub(crate) fn ok(headers: &HeaderMap, data: Value) -> Response {
    envelope(StatusCode::OK, headers, data)
}

pub(crate) fn envelope(status: StatusCode, headers: &HeaderMap, data: Value) -> Response {
    let request_id = headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let body = json!({
        "request_id": request_id,
        "lease_id": "",
        "renewable": false,
        "lease_duration": 0,
        "data": data,
        "wrap_info": null,
        "warnings": null,
        "auth": null,
    });
    json_response(status, &body)
}

/// A JSON body with `Content-Type: application/json` exactly.
fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut res = (status, body.to_string()).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// An error as Vault answers it, carrying the typed outcome and code for the audit record.
#[derive(Debug)]
pub(crate) struct VaultError {
    status: StatusCode,
    messages: Vec<String>,
    outcome: Outcome,
    code: &'static str,
}

impl VaultError {
    /// A 400 for a request the door itself refuses.
    pub(crate) fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            messages: vec![message.into()],
            outcome: Outcome::Rejected,
            code,
        }
    }

    /// Vault's "missing thing": 404 with no messages.
    pub(crate) fn not_found(code: &'static str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            messages: Vec::new(),
            outcome: Outcome::Rejected,
            code,
        }
    }

    fn permission_denied(outcome: Outcome, code: &'static str) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            messages: vec!["permission denied".to_owned()],
            outcome,
            code,
        }
    }

    /// A service error as Vault's Transit answers it: what the caller can fix is 400 (Transit
    /// answers 400 even for an unknown key on a crypto call), denial is 403, a missing thing
    /// 404 where Vault says so (`not_found_is_404`), a dependency 503, anything else 500 with no
    /// detail.
    pub(crate) fn from_service(e: &ServiceError, not_found_is_404: bool) -> Self {
        let (kind, code) = e.classify();
        let status = match kind {
            ErrorKind::Unauthenticated | ErrorKind::Forbidden => {
                return Self::permission_denied(kind.outcome(), code);
            }
            ErrorKind::NotFound if not_found_is_404 => return Self::not_found(code),
            ErrorKind::Invalid
            | ErrorKind::TooLarge
            | ErrorKind::NotFound
            | ErrorKind::Conflict
            | ErrorKind::Gone
            | ErrorKind::Unsupported => StatusCode::BAD_REQUEST,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(error = %e, code, "Vault door: request failed");
        }
        Self {
            status,
            messages: vec![e.public_message()],
            outcome: kind.outcome(),
            code,
        }
    }
}

impl IntoResponse for VaultError {
    fn into_response(self) -> Response {
        let mut res = json_response(self.status, &json!({ "errors": self.messages }));
        res.extensions_mut().insert(self.outcome);
        res.extensions_mut().insert(ErrorCode(self.code));
        res
    }
}

/// The token a Vault client sends.
fn credential_of(headers: &HeaderMap) -> Credential {
    let token = headers
        .get("x-vault-token")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .or_else(|| {
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
        });
    match token {
        Some(t) if !t.is_empty() => Credential::Bearer(BearerToken::new(t.to_owned())),
        _ => Credential::None,
    }
}

/// Authenticates the token with the service; a failure is Vault's 403 (and counts towards the
/// same per-source and per-token throttle as the native API's failures).
async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let source = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let credential = credential_of(req.headers());
    match state.door.authenticate(&credential, source).await {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => {
            if let (ServiceError::Unauthenticated(_), Credential::Bearer(t)) = (&e, &credential) {
                let id = crate::service::auth::token_id(t.expose_secret());
                if state.throttle.fail(source, id).is_some() {
                    let mut err = VaultError::permission_denied(
                        Outcome::Unauthenticated,
                        "too_many_auth_failures",
                    );
                    err.status = StatusCode::TOO_MANY_REQUESTS;
                    err.messages = vec!["too many failed authentications; retry later".to_owned()];
                    return err.into_response();
                }
            }
            let (_, code) = e.classify();
            VaultError::permission_denied(Outcome::Unauthenticated, code).into_response()
        }
    }
}

/// `GET /v1/sys/health`: Vault's health answer for an initialised, unsealed, active node.
async fn health(State(state): State<AppState>) -> Response {
    let ready = state.door.readiness().await.is_ready();
    let body = json!({
        "initialized": true,
        "sealed": false,
        "standby": false,
        "performance_standby": false,
        "replication_performance_mode": "disabled",
        "replication_dr_mode": "disabled",
        "server_time_utc": crate::clock::now().unix_timestamp(),
        "version": concat!("custodian-", env!("CARGO_PKG_VERSION")),
        "cluster_name": "custodian",
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, &body)
}

/// `GET /v1/auth/token/lookup-self`: who the token is (never the token itself).
async fn lookup_self(headers: HeaderMap, Extension(p): Extension<Authorized>) -> Response {
    let principal = p.principal();
    ok(
        &headers,
        json!({
            "accessor": principal.credential_id,
            "display_name": principal.name,
            "entity_id": principal.name,
            "id": "",
            "policies": [],
            "renewable": false,
            "ttl": 0,
            "type": "service",
        }),
    )
}
