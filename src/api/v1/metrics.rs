//! `GET /metrics`: this node's Prometheus metrics, for principals allowed `metrics:read`.

use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::api::error::ApiError;
use crate::api::extract::Caller;

/// `GET /metrics`
pub async fn metrics(Caller(p): Caller) -> Result<Response, ApiError> {
    let text = p.metrics_text().await?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}
