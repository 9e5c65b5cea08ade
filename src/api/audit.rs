//! The audit layer: one record for every request outside the public health and OpenAPI routes,
//! durable before the response leaves. A request whose record cannot be written is answered
//! `503 audit_unavailable` instead of its response.

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ErrorCode};
use super::{AppState, REQUEST_ID_HEADER};
use crate::audit::note::{self, Note};
use crate::audit::record::format_time;
use crate::audit::{AuditEntry, Outcome};

/// Routes that are not audited: unauthenticated probes that carry no data.
fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/v1/health/live" | "/v1/health/ready" | "/v1/openapi.json"
    )
}

/// The middleware.
pub async fn record(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if is_public(req.uri().path()) {
        return next.run(req).await;
    }
    let method = req.method().as_str().to_owned();
    // The route template, never the raw path: an unmatched path is caller input of any shape.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "(unmatched)".to_owned(), |p| p.as_str().to_owned());
    let request_id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let source = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let n = Note::default();
    let res = note::scope(n.clone(), next.run(req)).await;
    let noted = n.snapshot();
    let status = res.status().as_u16();
    let (context_digest, context_keys) = match noted.context {
        Some((d, k)) => (Some(d), k),
        None => (None, Vec::new()),
    };
    let (key_id, key_version) = match noted.key {
        Some((k, v)) => (Some(k), Some(v)),
        None => (None, None),
    };
    let entry = AuditEntry {
        time: format_time(time::OffsetDateTime::now_utc()),
        node: state.service.audit().node().to_owned(),
        request_id,
        method,
        route,
        principal: noted.principal,
        credential: noted.credential,
        source,
        action: noted.action,
        resource: noted.resource,
        key_id,
        key_version,
        other_keys: noted.other_keys,
        outcome: Outcome::from_status(status),
        status,
        error_code: res.extensions().get::<ErrorCode>().map(|c| c.0.to_owned()),
        context_digest,
        context_keys,
        details: noted.details,
    };
    match state.service.audit().append(entry).await {
        Ok(_) => res,
        Err(e) => {
            tracing::error!(error = %e, status, "request refused: its audit record was not written");
            ApiError::client(
                StatusCode::SERVICE_UNAVAILABLE,
                "audit_unavailable",
                "the audit log could not record this request; nothing was returned; retry later",
            )
            .into_response()
        }
    }
}
