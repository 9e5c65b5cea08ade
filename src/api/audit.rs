//! The audit layer: one record for every request outside the public health and OpenAPI routes,
//! durable before the response leaves. A request whose record cannot be written is answered
//! `503 audit_unavailable` instead of its response.
//!
//! Unauthenticated requests (those that end without a principal: a missing or failed
//! credential, an unknown route) are recorded one by one only within their source's budget
//! ([`AnonymousThrottle`]); beyond it they are answered `429 too_many_unauthenticated_requests`
//! and counted, and [`write_aggregates`] later appends one record per source with the count.
//! A request that carries no credential at all is refused before it runs once its source is
//! over budget.

use std::collections::BTreeMap;
use std::net::IpAddr;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ErrorCode};
use super::throttle::{Aggregate, AnonymousThrottle, WINDOW};
use super::{retry_later, tls, AppState, REQUEST_ID_HEADER};
use crate::audit::note::{self, Note};
use crate::audit::record::format_time;
use crate::audit::{AuditEntry, AuditLog, Outcome};

/// The error code of requests refused by the unauthenticated-request throttle, and of their
/// aggregate records.
pub const THROTTLED_CODE: &str = "too_many_unauthenticated_requests";

/// The `route` of an aggregate record.
pub const THROTTLED_ROUTE: &str = "(throttled)";

fn throttled(retry: u64) -> Response {
    retry_later(
        StatusCode::TOO_MANY_REQUESTS,
        THROTTLED_CODE,
        "too many unauthenticated requests from this address; retry later",
        retry,
    )
}

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
    let peer: Option<IpAddr> = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let source = peer.map(|ip| ip.to_string());
    let credential = req.headers().contains_key(header::AUTHORIZATION)
        || req.extensions().get::<tls::ClientIdentity>().is_some();
    if !credential {
        if let Some(retry) = state.anonymous.refuse_early(peer) {
            return throttled(retry);
        }
    }
    let n = Note::default();
    let res = note::scope(n.clone(), next.run(req)).await;
    let noted = n.snapshot();
    if noted.principal.is_none() {
        if let Some(retry) = state.anonymous.admit(peer) {
            return throttled(retry);
        }
    }
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

/// The record of `a`: route `(throttled)`, its source, outcome `unauthenticated`, status 429,
/// [`THROTTLED_CODE`], and the details `count`, `first_seen`, `last_seen` and
/// `window_seconds` (the budget window).
pub fn aggregate_entry(a: &Aggregate, node: &str) -> AuditEntry {
    let details = BTreeMap::from([
        ("count".to_owned(), a.count.to_string()),
        ("first_seen".to_owned(), format_time(a.first_seen)),
        ("last_seen".to_owned(), format_time(a.last_seen)),
        ("window_seconds".to_owned(), WINDOW.as_secs().to_string()),
    ]);
    AuditEntry {
        time: format_time(time::OffsetDateTime::now_utc()),
        node: node.to_owned(),
        request_id: uuid::Uuid::new_v4().to_string(),
        method: "*".to_owned(),
        route: THROTTLED_ROUTE.to_owned(),
        principal: None,
        credential: None,
        source: a.source.clone(),
        action: None,
        resource: None,
        key_id: None,
        key_version: None,
        other_keys: Vec::new(),
        outcome: Outcome::Unauthenticated,
        status: StatusCode::TOO_MANY_REQUESTS.as_u16(),
        error_code: Some(THROTTLED_CODE.to_owned()),
        context_digest: None,
        context_keys: Vec::new(),
        details,
    }
}

/// Appends one aggregate record per source with throttled requests not yet written (one
/// group commit). A count whose record cannot be written is put back for the next call.
pub async fn write_aggregates(log: &AuditLog, throttle: &AnonymousThrottle) {
    let pending = throttle.drain();
    if pending.is_empty() {
        return;
    }
    let writes = pending
        .iter()
        .map(|a| log.append(aggregate_entry(a, log.node())));
    let results = futures_util::future::join_all(writes).await;
    for (a, result) in pending.into_iter().zip(results) {
        if let Err(e) = result {
            tracing::error!(error = %e, count = a.count, "throttled-request aggregate not written; kept for the next attempt");
            throttle.restore(a);
        }
    }
}

/// Writes the aggregates every [`crate::config::AnonymousLimit::flush_interval`], forever.
pub async fn flush_aggregates(
    service: std::sync::Arc<crate::service::KeyService>,
    throttle: std::sync::Arc<AnonymousThrottle>,
) {
    let mut tick = tokio::time::interval(throttle.limit().flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick completes at once; nothing is pending yet.
    tick.tick().await;
    loop {
        tick.tick().await;
        write_aggregates(service.audit(), &throttle).await;
    }
}
