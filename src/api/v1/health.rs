//! `/v1/health/live` and `/v1/health/ready`. Unauthenticated; they reveal no secrets.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use crate::api::AppState;
use crate::api_types::health::{Live, Ready};
use crate::audit::AuditStatus;
use crate::service::DeviceHealth;

/// `GET /v1/health/live`: the process is serving HTTP.
pub async fn live() -> Json<Live> {
    Json(Live {
        status: "live".to_owned(),
    })
}

/// `GET /v1/health/ready`: a device session is usable, the database accepts
/// a write, and the audit log is writable with its stored chain intact.
pub async fn ready(
    State(state): State<AppState>,
) -> (StatusCode, Json<Ready<DeviceHealth, AuditStatus>>) {
    let r = state.door.readiness().await;
    let (status, word) = if r.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    };
    (
        status,
        Json(Ready {
            audit: r.audit,
            device: r.device,
            rejected_key_blobs: r.rejected_key_blobs,
            status: word.to_owned(),
            store_writable: r.store_writable,
            tpm: r.tpm,
        }),
    )
}
