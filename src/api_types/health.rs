//! `GET /v1/health/live` and `GET /v1/health/ready`: unauthenticated, no secrets.
//!
//! The readiness answer names the device's and the audit log's own health records (`D`, `A`:
//! the backend's `DeviceHealth` and the audit log's `AuditStatus` on the server), so its schema
//! (`Ready`) stays in the document's base next to theirs.

use serde::{Deserialize, Serialize};

/// `GET /v1/health/live` response: `{"status": "live"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Live {
    /// Always `live`.
    pub status: String,
}

/// `GET /v1/health/ready` response (200 when `status` is `ready`, else 503).
///
/// The members are in name order, with `tpm` sent as `null` when no TPM is configured and
/// `rejected_key_blobs` always sent: the answer as it was when it was built from a JSON map.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ready<D, A> {
    /// The audit log: writable, and its stored chain intact.
    pub audit: A,
    /// The PKCS#11 token's state.
    pub device: D,
    /// Labels of key versions whose stored device material the device refused.
    pub rejected_key_blobs: Vec<String>,
    /// `ready` or `not_ready`.
    pub status: String,
    /// True when the database accepted a write just now.
    pub store_writable: bool,
    /// The TPM's state; `null` when no TPM is configured.
    pub tpm: Option<D>,
}
