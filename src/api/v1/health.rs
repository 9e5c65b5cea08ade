//! `/v1/health/live` and `/v1/health/ready`. Unauthenticated; they reveal no secrets.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use crate::api::AppState;

/// `GET /v1/health/live`: the process is serving HTTP.
pub async fn live() -> Json<Value> {
    Json(json!({ "status": "live" }))
}

/// `GET /v1/health/ready`: a device session is usable, the database accepts
/// a write, and the audit log is writable with its stored chain intact.
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let r = state.door.readiness().await;
    let (status, word) = if r.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    };
    (
        status,
        Json(json!({
            "status": word,
            "device": r.device,
            "tpm": r.tpm,
            "rejected_key_blobs": r.rejected_key_blobs,
            "store_writable": r.store_writable,
            "audit": r.audit
        })),
    )
}
