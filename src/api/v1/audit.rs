//! Audit and custody routes: events, export (JSON Lines), the signing public key, archive, and
//! the signed custody report.

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api::error::ApiError;
use crate::api::extract::{ApiJson, Caller, RequestBody};
use crate::api_types::audit::{
    AuditArchive, AuditArchiveRequest, AuditEventList, AuditEventsQuery, AuditExportQuery,
    AuditOutcome, AuditRecord,
};
use crate::audit::custody::SignedReport;
use crate::audit::export::Line;
use crate::audit::record::format_time;
use crate::audit::{self, AuditFilter, Outcome};
use crate::service::audit::{export_line, MAX_EVENTS_PAGE};

/// A record as the API shows it: the same members in the same order as the stored record.
pub(super) fn record(r: audit::AuditRecord) -> AuditRecord {
    let e = r.entry;
    AuditRecord {
        sequence: r.sequence,
        time: e.time,
        node: e.node,
        request_id: e.request_id,
        method: e.method,
        route: e.route,
        principal: e.principal,
        credential: e.credential,
        source: e.source,
        action: e.action,
        resource: e.resource,
        key_id: e.key_id,
        key_version: e.key_version,
        other_keys: e.other_keys,
        outcome: match e.outcome {
            Outcome::Success => AuditOutcome::Success,
            Outcome::Denied => AuditOutcome::Denied,
            Outcome::Unauthenticated => AuditOutcome::Unauthenticated,
            Outcome::Rejected => AuditOutcome::Rejected,
            Outcome::Failed => AuditOutcome::Failed,
            Outcome::Pending => AuditOutcome::Pending,
        },
        status: e.status,
        error_code: e.error_code,
        context_digest: e.context_digest,
        context_keys: e.context_keys,
        details: e.details,
        prev_hash: r.prev_hash,
        hash: r.hash,
    }
}

/// A completed archive as the API shows it.
pub(super) fn archive_record(a: audit::AuditArchive) -> AuditArchive {
    AuditArchive {
        through: a.through,
        head: a.head,
        export_sha256: a.export_sha256,
        archived_at: a.archived_at,
        principal: a.principal,
        request_id: a.request_id,
    }
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
}

/// An RFC 3339 query time in the records' own format, so string order is time order.
fn query_time(field: &'static str, s: Option<String>) -> Result<Option<String>, ApiError> {
    s.map(|s| {
        time::OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339)
            .map(format_time)
            .map_err(|_| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("`{field}` is not an RFC 3339 time"),
                )
            })
    })
    .transpose()
}

/// `GET /v1/audit/events`
pub async fn events(
    Caller(p): Caller,
    q: Result<Query<AuditEventsQuery>, QueryRejection>,
) -> Result<Json<AuditEventList<AuditRecord>>, ApiError> {
    let q = query(q)?;
    let limit = q.limit.unwrap_or(100);
    // The same code as every other paged list; the service checks the bound again.
    if limit == 0 || limit > MAX_EVENTS_PAGE {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be 1 to {MAX_EVENTS_PAGE}"),
        ));
    }
    let outcome = q
        .outcome
        .map(|o| {
            Outcome::parse(&o).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    "outcome is success, denied, unauthenticated, rejected or failed",
                )
            })
        })
        .transpose()?;
    let filter = AuditFilter {
        after: q.after.unwrap_or(0),
        limit,
        principal: q.principal,
        key_id: q.key,
        action: q.action,
        outcome,
        since: query_time("since", q.since)?,
        until: query_time("until", q.until)?,
    };
    let records = p.audit_events(&filter).await?;
    let next_after = (records.len() == limit as usize)
        .then(|| records.last().map(|r| r.sequence))
        .flatten();
    Ok(Json(AuditEventList {
        records: records.into_iter().map(record).collect(),
        next_after,
    }))
}

/// `GET /v1/audit/export`: JSON Lines, streamed page by page, ending on a checkpoint. Without
/// `until`, that is a checkpoint signed now, or the latest one when an export had one signed
/// within `audit.export_checkpoint_interval` (bounded device signatures and stored rows).
pub async fn export(
    Caller(p): Caller,
    q: Result<Query<AuditExportQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let plan = p.audit_export_plan(q.after, q.until).await?;
    let first = export_line(&Line::Header(plan.header.clone()))?;
    let caller = p.clone();
    let until = plan.until;
    // State: (next `after`, finished). Each step yields one page of lines as one chunk.
    let pages = futures_util::stream::unfold((plan.header.after, false), move |(after, done)| {
        let caller = caller.clone();
        async move {
            if done || after >= until {
                return None;
            }
            match caller.audit_export_page(after, until).await {
                Ok(lines) => {
                    let next = lines
                        .iter()
                        .rev()
                        .find_map(|l| match l {
                            Line::Record(r) => Some(r.sequence),
                            _ => None,
                        })
                        .unwrap_or(until);
                    let mut chunk = Vec::new();
                    for l in &lines {
                        match export_line(l) {
                            Ok(b) => chunk.extend(b),
                            Err(e) => return Some((Err(stream_error(e)), (next, true))),
                        }
                    }
                    Some((Ok(Bytes::from(chunk)), (next, false)))
                }
                // The body is already streaming: end it early; the verifier reports the
                // missing records and the cause is logged here.
                Err(e) => Some((Err(stream_error(e)), (after, true))),
            }
        }
    });
    let head =
        futures_util::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(first)) });
    let body = Body::from_stream(futures_util::StreamExt::chain(head, pages));
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

fn stream_error(e: crate::service::ServiceError) -> std::io::Error {
    tracing::error!(error = %e, "audit export stopped early");
    std::io::Error::other("audit export stopped early")
}

/// `GET /v1/audit/public-key`: PEM.
pub async fn public_key(Caller(p): Caller) -> Result<Response, ApiError> {
    let pem = p.audit_public_key().await?;
    Ok(([(header::CONTENT_TYPE, "application/x-pem-file")], pem).into_response())
}

impl RequestBody for AuditArchiveRequest {
    const FIELDS: &'static [&'static str] = AuditArchiveRequest::FIELDS;
}

/// `POST /v1/audit/archive`
pub async fn archive(
    Caller(p): Caller,
    headers: HeaderMap,
    ApiJson(req): ApiJson<AuditArchiveRequest>,
) -> Result<Json<AuditArchive>, ApiError> {
    let request_id = headers
        .get(crate::api::REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let a = p
        .audit_archive(req.through, &req.export_sha256, &request_id)
        .await?;
    Ok(Json(archive_record(a)))
}

/// `GET /v1/custody/report`
pub async fn custody_report(Caller(p): Caller) -> Result<Json<SignedReport>, ApiError> {
    Ok(Json(p.custody_report().await?))
}
