//! `/v1/health/live` and `/v1/health/ready`. Unauthenticated; they reveal no secrets.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use crate::api::AppState;
use crate::api_types::audit::AuditStatus;
use crate::api_types::health::{DeviceHealth, Live, Ready};
use crate::audit;
use crate::service;

/// A device's health, as the API shows it.
pub(super) fn device(d: &service::DeviceHealth) -> DeviceHealth {
    DeviceHealth {
        reason: d.reason.map(str::to_owned),
        reinitialisations: d.reinitialisations,
        usable: d.usable,
    }
}

/// The audit log's state, as the API shows it.
pub(super) fn audit_status(a: &audit::AuditStatus) -> AuditStatus {
    AuditStatus {
        chain_broken_at: a.chain_broken_at,
        checkpoint: a.checkpoint,
        head: a.head,
        writable: a.writable,
    }
}

/// `GET /v1/health/live`: the process is serving HTTP.
pub async fn live() -> Json<Live> {
    Json(Live {
        status: "live".to_owned(),
    })
}

/// `GET /v1/health/ready`: a device session is usable, the database accepts
/// a write, and the audit log is writable with its stored chain intact.
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Ready>) {
    let r = state.door.readiness().await;
    let (status, word) = if r.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    };
    (
        status,
        Json(Ready {
            audit: audit_status(&r.audit),
            device: device(&r.device),
            rejected_key_blobs: r.rejected_key_blobs,
            status: word.to_owned(),
            store_writable: r.store_writable,
            tpm: r.tpm.as_ref().map(device),
            tpm_keys: r.tpm_keys,
        }),
    )
}
