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

use std::net::IpAddr;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ErrorCode};
use super::throttle::AnonymousThrottle;
use super::{retry_later, tls, AppState, REQUEST_ID_HEADER};
use crate::audit::Outcome;
use crate::service::{Ending, FrontDoor, RequestMeta};

/// The error code of requests refused by the unauthenticated-request throttle, and of their
/// aggregate records.
pub const THROTTLED_CODE: &str = "too_many_unauthenticated_requests";

fn throttled(retry: u64) -> Response {
    retry_later(
        StatusCode::TOO_MANY_REQUESTS,
        THROTTLED_CODE,
        "too many unauthenticated requests from this address; retry later",
        retry,
    )
}

/// Routes that are not audited: unauthenticated probes and static files that carry no data.
fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/v1/health/live"
            | "/v1/health/ready"
            | "/v1/openapi.json"
            | "/v1/sys/health"
            | "/ui/"
            | "/ui/app.js"
            | "/ui/verify.js"
            | "/ui/style.css"
    )
}

/// The compatible front door that serves `route`, if it is not the native API's.
fn front_door(state: &AppState, route: &str) -> Option<&'static str> {
    if state.vault.as_ref().is_some_and(|m| m.serves(route)) {
        Some("vault")
    } else if route == crate::aws::ROUTE {
        Some(crate::aws::DOOR)
    } else {
        None
    }
}

/// The route template a request matched, never the raw path: an unmatched path is caller input
/// of any shape.
fn route_of(req: &Request) -> String {
    req.extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "(unmatched)".to_owned(), |p| p.as_str().to_owned())
}

/// Counts and times every answer (`custodian_http_requests_total`,
/// `custodian_http_request_duration_seconds`) by route template, method, front door and the
/// outcome its audit record gives. Outside the audit layer, so what is counted is what the
/// client got (a `503 audit_unavailable` included).
pub async fn count(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let route = route_of(&req);
    let door = front_door(&state, &route).unwrap_or("native");
    // A bounded vocabulary: an unknown method is caller input of any shape.
    let method = match req.method().as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" | "LIST") => m,
        _ => "other",
    }
    .to_owned();
    let res = next.run(req).await;
    let status = res.status().as_u16();
    let outcome = res
        .extensions()
        .get::<Outcome>()
        .copied()
        .unwrap_or_else(|| Outcome::from_status(status));
    state.metrics.request(
        crate::metrics::RequestLabels {
            route,
            method,
            door,
            outcome: outcome.as_str(),
        },
        started,
    );
    res
}

/// The middleware.
pub async fn record(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if is_public(req.uri().path()) {
        return next.run(req).await;
    }
    let method = req.method().as_str().to_owned();
    let route = route_of(&req);
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
    let credential = req.headers().contains_key(header::AUTHORIZATION)
        || req.headers().contains_key("x-vault-token")
        || req.extensions().get::<tls::ClientIdentity>().is_some();
    if !credential {
        if let Some(retry) = state.anonymous.refuse_early(peer) {
            return throttled(retry);
        }
    }
    // The service builds and appends the record; this door only says how the request ended.
    // The compatible doors are named in the record (native records carry no such field).
    let front_door = front_door(&state, &route);
    let scope = state.door.request(RequestMeta {
        request_id,
        method,
        route,
        source: peer,
        front_door,
    });
    let res = scope.run(next.run(req)).await;
    // A credential that could not be checked because a dependency is down (503) is not the
    // caller's failure: it does not use up the source's budget.
    if !scope.authenticated() && !res.status().is_server_error() {
        if let Some(retry) = state.anonymous.admit(peer) {
            return throttled(retry);
        }
    }
    let status = res.status().as_u16();
    let ending = Ending {
        // The typed outcome the error carried; a response no error of ours made (a layer's
        // own rejection) is classified by its status.
        outcome: res
            .extensions()
            .get::<Outcome>()
            .copied()
            .unwrap_or_else(|| Outcome::from_status(status)),
        status,
        error_code: res.extensions().get::<ErrorCode>().map(|c| c.0.to_owned()),
    };
    match scope.finish(ending).await {
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

/// Appends one aggregate record per source with throttled requests not yet written (the
/// service builds each: [`FrontDoor::record_throttled`]). A count whose record cannot be
/// written is put back for the next call.
pub async fn write_aggregates(door: &FrontDoor, throttle: &AnonymousThrottle) {
    let pending = throttle.drain();
    if pending.is_empty() {
        return;
    }
    let writes = pending
        .iter()
        .map(|t| door.record_throttled(t, THROTTLED_CODE));
    let results = futures_util::future::join_all(writes).await;
    for (a, result) in pending.into_iter().zip(results) {
        if let Err(e) = result {
            tracing::error!(error = %e, count = a.count, "throttled-request aggregate not written; kept for the next attempt");
            throttle.restore(a);
        }
    }
}

/// Writes the aggregates every [`crate::config::AnonymousLimit::flush_interval`], forever.
pub async fn flush_aggregates(door: FrontDoor, throttle: std::sync::Arc<AnonymousThrottle>) {
    let mut tick = tokio::time::interval(throttle.limit().flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick completes at once; nothing is pending yet.
    tick.tick().await;
    loop {
        tick.tick().await;
        write_aggregates(&door, &throttle).await;
    }
}
