//! The one error shape of the API, `{"error": {"code", "message", "request_id"}}`, and the
//! mapping from service errors to it: status chosen by variant, never by message text. 5xx
//! bodies are opaque; the full error is logged inside the request span.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::backend::BackendError;
use crate::format::BlobError;
use crate::service::{AuthFailure, ServiceError};
use crate::store::StoreError;

tokio::task_local! {
    /// The id of the request being served, for error bodies.
    pub static REQUEST_ID: String;
}

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// The current version, on a check-and-set mismatch (sent as `error.current_version`).
    current_version: Option<u64>,
    /// Logged for 5xx, never sent.
    cause: Option<Box<ServiceError>>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'a str,
    message: &'a str,
    request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    current_version: Option<u64>,
}

impl ApiError {
    /// A 4xx error with a stable code and a message for the caller.
    pub fn client(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            current_version: None,
            cause: None,
        }
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::client(StatusCode::BAD_REQUEST, code, message)
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    fn server(status: StatusCode, code: &'static str, cause: ServiceError) -> Self {
        let message = match (status, code) {
            (StatusCode::SERVICE_UNAVAILABLE, _) => "a dependency is unavailable; retry later",
            (_, "secret_integrity_failed") => {
                "the stored secret failed its integrity check; quote the request id to the operator"
            }
            _ => "internal error; quote the request id to the operator",
        };
        Self {
            status,
            code,
            message: message.to_owned(),
            current_version: None,
            cause: Some(Box::new(cause)),
        }
    }
}

/// The code of a blob parse failure.
fn blob_code(e: &BlobError) -> &'static str {
    match e {
        BlobError::UnsupportedVersion(_) => "unsupported_ciphertext_version",
        BlobError::UnknownAlgorithm(_) => "unsupported_ciphertext_algorithm",
        BlobError::Truncated
        | BlobError::TooLong
        | BlobError::BadMagic
        | BlobError::InvalidKeyVersion
        | BlobError::InvalidIvLength(_) => "malformed_ciphertext",
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        use StatusCode as S;
        let client = |status, code, e: &ServiceError| Self::client(status, code, e.to_string());
        match &e {
            ServiceError::Unauthenticated(f) => {
                let code = match f {
                    AuthFailure::Missing => "missing_token",
                    AuthFailure::Invalid => "invalid_token",
                    AuthFailure::Expired => "token_expired",
                    AuthFailure::Revoked => "token_revoked",
                };
                client(S::UNAUTHORIZED, code, &e)
            }
            ServiceError::Forbidden { .. } => client(S::FORBIDDEN, "forbidden", &e),
            ServiceError::KeyNotFound(_) => client(S::NOT_FOUND, "key_not_found", &e),
            ServiceError::KeyNameTaken(_) => client(S::CONFLICT, "key_name_taken", &e),
            ServiceError::KeyDisabled(_) => client(S::CONFLICT, "key_disabled", &e),
            ServiceError::KeyPendingDeletion(_) => client(S::CONFLICT, "key_pending_deletion", &e),
            ServiceError::KeyDestroyed(_) => client(S::GONE, "key_destroyed", &e),
            ServiceError::InvalidKeyState { .. } => client(S::CONFLICT, "invalid_key_state", &e),
            ServiceError::KeyVersionDisabled(_) => client(S::CONFLICT, "key_version_disabled", &e),
            ServiceError::KeyVersionDestroyed(_) => client(S::GONE, "key_version_destroyed", &e),
            ServiceError::KeyVersionBelowMinimum { .. } => {
                client(S::CONFLICT, "key_version_below_minimum", &e)
            }
            ServiceError::KeyVersionNotFound(_) => {
                client(S::NOT_FOUND, "key_version_not_found", &e)
            }
            ServiceError::PrimaryVersion(_) => client(S::CONFLICT, "primary_version", &e),
            ServiceError::KeyVersionInUse { .. } => client(S::CONFLICT, "key_version_in_use", &e),
            ServiceError::InvalidLifecycleValue(_) => client(S::BAD_REQUEST, "invalid_field", &e),
            ServiceError::RotationConflict => client(S::CONFLICT, "rotation_conflict", &e),
            ServiceError::ConcurrentChange => client(S::CONFLICT, "concurrent_change", &e),
            ServiceError::WrapLimitReached(_) => {
                client(S::SERVICE_UNAVAILABLE, "wrap_limit_reached", &e)
            }
            ServiceError::AliasNotFound(_) => client(S::NOT_FOUND, "alias_not_found", &e),
            ServiceError::AliasExists(_) => client(S::CONFLICT, "alias_exists", &e),
            ServiceError::InvalidPolicy(_) => client(S::BAD_REQUEST, "invalid_policy", &e),
            ServiceError::PolicyNotFound(_) => client(S::NOT_FOUND, "policy_not_found", &e),
            ServiceError::PrincipalNotFound(_) => client(S::NOT_FOUND, "principal_not_found", &e),
            ServiceError::PrincipalExists(_) => client(S::CONFLICT, "principal_exists", &e),
            ServiceError::TokenNotFound(_) => client(S::NOT_FOUND, "token_not_found", &e),
            ServiceError::JobNotFound(_) => client(S::NOT_FOUND, "job_not_found", &e),
            ServiceError::PlaintextTooLarge { .. } => {
                client(S::BAD_REQUEST, "plaintext_too_large", &e)
            }
            ServiceError::PlaintextEmpty => client(S::BAD_REQUEST, "plaintext_empty", &e),
            ServiceError::InvalidCiphertext(b) => client(S::BAD_REQUEST, blob_code(b), &e),
            ServiceError::CiphertextKeyNotFound => {
                client(S::BAD_REQUEST, "ciphertext_key_not_found", &e)
            }
            ServiceError::DecryptionFailed => client(S::BAD_REQUEST, "decryption_failed", &e),
            ServiceError::InvalidSecretPath(_) => client(S::BAD_REQUEST, "invalid_secret_path", &e),
            ServiceError::SecretNotFound(_) => client(S::NOT_FOUND, "secret_not_found", &e),
            ServiceError::SecretVersionNotFound(_) => {
                client(S::NOT_FOUND, "secret_version_not_found", &e)
            }
            ServiceError::SecretVersionDeleted(_) => {
                client(S::NOT_FOUND, "secret_version_deleted", &e)
            }
            ServiceError::SecretVersionDestroyed(_) => {
                client(S::GONE, "secret_version_destroyed", &e)
            }
            ServiceError::SecretVersionExpired(_) => client(S::GONE, "secret_version_expired", &e),
            ServiceError::ValueTooLarge { .. } => {
                client(S::PAYLOAD_TOO_LARGE, "value_too_large", &e)
            }
            ServiceError::CasMismatch { current } => {
                let mut err = client(S::CONFLICT, "cas_mismatch", &e);
                err.current_version = Some(u64::from(*current));
                err
            }
            ServiceError::WriteConflict => client(S::CONFLICT, "write_conflict", &e),
            ServiceError::KeyRequired => client(S::BAD_REQUEST, "key_required", &e),
            ServiceError::NotGenerated(_) => client(S::BAD_REQUEST, "secret_not_generated", &e),
            ServiceError::NoVersionToChange(_) => {
                client(S::NOT_FOUND, "secret_version_not_found", &e)
            }
            ServiceError::InvalidMetadata(_) => client(S::BAD_REQUEST, "invalid_metadata", &e),
            ServiceError::DefaultKeyMissing(_) => {
                Self::server(S::SERVICE_UNAVAILABLE, "default_key_missing", e)
            }
            ServiceError::SecretIntegrity { .. } => {
                Self::server(S::INTERNAL_SERVER_ERROR, "secret_integrity_failed", e)
            }
            ServiceError::Audit(crate::audit::AuditError::ChainBroken(_)) => {
                Self::server(S::INTERNAL_SERVER_ERROR, "audit_chain_broken", e)
            }
            ServiceError::Audit(_) => Self::server(S::SERVICE_UNAVAILABLE, "audit_unavailable", e),
            ServiceError::AuditArchived { .. } => client(S::GONE, "audit_archived", &e),
            ServiceError::NotACheckpoint(_) => client(S::CONFLICT, "not_a_checkpoint", &e),
            ServiceError::ExportMismatch => client(S::CONFLICT, "export_mismatch", &e),
            ServiceError::InvalidAuditQuery(_) => client(S::BAD_REQUEST, "invalid_audit_query", &e),
            ServiceError::Backend(b) => match b {
                BackendError::Unavailable => {
                    Self::server(S::SERVICE_UNAVAILABLE, "device_unavailable", e)
                }
                BackendError::Busy => Self::server(S::SERVICE_UNAVAILABLE, "device_busy", e),
                BackendError::AuthenticationFailed => {
                    client(S::BAD_REQUEST, "decryption_failed", &e)
                }
                BackendError::RootKeyMissing(_) => {
                    Self::server(S::SERVICE_UNAVAILABLE, "key_material_missing", e)
                }
                BackendError::Unsupported(_) => {
                    Self::server(S::NOT_IMPLEMENTED, "unsupported_by_device", e)
                }
                BackendError::NotConfigured(_) => {
                    Self::server(S::SERVICE_UNAVAILABLE, "backend_not_configured", e)
                }
                BackendError::KeyBlobRejected(label) => {
                    // The label names a key version, nothing secret: say which one is broken.
                    let message = format!(
                        "the stored device material of key version {label} does not load in this \
                         device; quote the request id to the operator"
                    );
                    let mut err = Self::server(S::INTERNAL_SERVER_ERROR, "key_blob_rejected", e);
                    err.message = message;
                    err
                }
                BackendError::Device(_)
                | BackendError::MissingMechanism(_)
                | BackendError::Open(_)
                | BackendError::Invariant(_) => {
                    Self::server(S::INTERNAL_SERVER_ERROR, "internal_error", e)
                }
            },
            ServiceError::Store(s) => match s {
                StoreError::Conflict { .. } => client(S::CONFLICT, "conflict", &e),
                StoreError::CheckAndSet { current } => {
                    let mut err = client(S::CONFLICT, "cas_mismatch", &e);
                    err.current_version = Some(u64::from(*current));
                    err
                }
                StoreError::Stale { .. } => client(S::CONFLICT, "write_conflict", &e),
                StoreError::NotFound => client(S::NOT_FOUND, "secret_version_not_found", &e),
                StoreError::InUse { .. } => client(S::CONFLICT, "key_version_in_use", &e),
                StoreError::Unavailable(_) | StoreError::Io(_) | StoreError::Blocking(_) => {
                    Self::server(S::SERVICE_UNAVAILABLE, "store_unavailable", e)
                }
                StoreError::Corrupt { .. }
                | StoreError::Migration { .. }
                | StoreError::SchemaTooNew { .. } => {
                    Self::server(S::INTERNAL_SERVER_ERROR, "internal_error", e)
                }
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(cause) = &self.cause {
            // Inside the request span (TraceLayer), so the log line carries the request id.
            let chain = error_chain(cause);
            if self.status == StatusCode::SERVICE_UNAVAILABLE {
                tracing::warn!(code = self.code, error = %chain, "request failed: dependency unavailable");
            } else {
                tracing::error!(code = self.code, error = %chain, "request failed");
            }
        }
        let request_id = REQUEST_ID.try_with(Clone::clone).unwrap_or_default();
        let body = Body {
            error: Detail {
                code: self.code,
                message: &self.message,
                request_id: &request_id,
                current_version: self.current_version,
            },
        };
        let mut res = (self.status, Json(body)).into_response();
        // For the audit record of this request.
        res.extensions_mut().insert(ErrorCode(self.code));
        res
    }
}

/// The stable error code of an error response, in its extensions (read by the audit layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode(pub &'static str);

/// `error: cause: cause` for logs.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_chosen_by_variant() {
        let cases: Vec<(ServiceError, StatusCode, &str)> = vec![
            (
                ServiceError::Unauthenticated(AuthFailure::Missing),
                StatusCode::UNAUTHORIZED,
                "missing_token",
            ),
            (
                ServiceError::Unauthenticated(AuthFailure::Expired),
                StatusCode::UNAUTHORIZED,
                "token_expired",
            ),
            (
                ServiceError::KeyNotFound("k".into()),
                StatusCode::NOT_FOUND,
                "key_not_found",
            ),
            (
                ServiceError::DecryptionFailed,
                StatusCode::BAD_REQUEST,
                "decryption_failed",
            ),
            (
                BlobError::UnsupportedVersion(9).into(),
                StatusCode::BAD_REQUEST,
                "unsupported_ciphertext_version",
            ),
            (
                BlobError::Truncated.into(),
                StatusCode::BAD_REQUEST,
                "malformed_ciphertext",
            ),
            (
                BackendError::Unavailable.into(),
                StatusCode::SERVICE_UNAVAILABLE,
                "device_unavailable",
            ),
            (
                BackendError::AuthenticationFailed.into(),
                StatusCode::BAD_REQUEST,
                "decryption_failed",
            ),
            (
                BackendError::Invariant("x").into(),
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
            ),
        ];
        for (e, status, code) in cases {
            let api = ApiError::from(e);
            assert_eq!((api.status(), api.code()), (status, code));
        }
    }

    #[test]
    fn server_errors_reveal_nothing_internal() {
        let api = ApiError::from(ServiceError::Backend(BackendError::Invariant(
            "secret detail",
        )));
        assert!(!api.message.contains("secret detail"));
        assert!(!api.message.contains("invariant"));
    }
}
