//! `GET /v1/health/live` and `GET /v1/health/ready`: unauthenticated, no secrets.
//!
//! The server builds the readiness answer from the device's and the audit log's own health
//! records (the conversions live in `api::v1::health`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::audit::AuditStatus;
use super::{described_ref, nullable_ref, schema_fns, string_enum};

/// `GET /v1/health/live` response: `{"status": "live"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(description = "The process answers.")]
pub struct Live {
    /// Always `live`.
    #[schema(schema_with = live_status_schema)]
    pub status: String,
}

/// `GET /v1/health/ready` response (200 when `status` is `ready`, else 503).
///
/// The members are in name order, with `tpm` sent as `null` when no TPM is configured and
/// `rejected_key_blobs` always sent: the answer as it was when it was built from a JSON map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(description = "Whether the node can serve: its device, TPM, store and audit log.")]
pub struct Ready {
    /// The audit log: `not_ready` unless writable and without `chain_broken_at`.
    #[schema(schema_with = audit_schema)]
    pub audit: AuditStatus,
    /// The PKCS#11 token's state.
    pub device: DeviceHealth,
    /// Labels of key versions whose stored device material (TPM blob, wrapped version-KEK) the
    /// device refused since it last accepted it; empty when none. Does not affect `status`.
    pub rejected_key_blobs: Vec<String>,
    /// `ready` or `not_ready`.
    #[schema(schema_with = ready_status_schema)]
    pub status: String,
    /// True when the database accepted a write just now.
    pub store_writable: bool,
    /// The TPM's state (a one-byte TPM2_GetRandom); `null` when no `[tpm]` is configured.
    #[schema(schema_with = tpm_schema, required = true)]
    pub tpm: Option<DeviceHealth>,
    /// The TPM keys this node serves (their versions are in this node's TPM), by name, at most
    /// 1000; present only when a `[tpm]` is configured. Other nodes answer
    /// `key_on_other_node` for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm_keys: Option<Vec<String>>,
}

/// What a device (the PKCS#11 token, or the TPM) says about its own health. The members are
/// in name order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(description = "A device's health: the PKCS#11 token's or the TPM's.")]
pub struct DeviceHealth {
    /// Present only when not usable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = reason_schema)]
    pub reason: Option<String>,
    /// Successful re-initialisations (PKCS#11) or reconnections (TPM) since start-up.
    pub reinitialisations: u64,
    /// True when the device is usable right now.
    pub usable: bool,
}

schema_fns! {
    /// `Live.status`.
    live_status_schema => string_enum(&["live"], None, Some("Always `live`."));
    /// `Ready.status`.
    ready_status_schema => string_enum(&["ready", "not_ready"], None, Some("`ready` or `not_ready`."));
    /// `Ready.audit`.
    audit_schema => described_ref(
        "AuditStatus",
        "The audit log: `not_ready` unless writable and without `chain_broken_at`.",
    );
    /// `Ready.tpm`.
    tpm_schema => nullable_ref(
        "DeviceHealth",
        "The TPM's state (a one-byte TPM2_GetRandom); `null` when no `[tpm]` is configured.",
    );
    /// `DeviceHealth.reason`.
    reason_schema => string_enum(
        &[
            "device_error",
            "reinitialising",
            "state_lock_poisoned",
            "tpm_unreachable",
            "tpm_busy",
            "tpm_error",
        ],
        None,
        Some(
            "Present only when not usable. The PKCS#11 token: `device_error`, `reinitialising`, \
             `state_lock_poisoned`; the TPM: `tpm_unreachable`, `tpm_busy`, `tpm_error`.",
        ),
    );
}
