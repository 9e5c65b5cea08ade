//! The one error shape of the API, `{"error": {"code", "message", "request_id"}}`, and the
//! mapping from service errors to it: status chosen by variant, never by message text. 5xx
//! bodies are opaque; the full error is logged inside the request span.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api_types::error::{ErrorBody, ErrorDetail};
use crate::audit::Outcome;
use crate::service::{ErrorKind, ServiceError};

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
    /// The audit outcome: from the typed service error, or the front door's own rejection.
    outcome: Outcome,
    /// Logged for 5xx, never sent.
    cause: Option<Box<ServiceError>>,
}

impl ApiError {
    /// A 4xx error with a stable code and a message for the caller.
    /// Its audit outcome follows the status the front door chose (`401`/`429`:
    /// unauthenticated, `403`: denied, any other: rejected).
    pub fn client(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            current_version: None,
            outcome: Outcome::from_status(status.as_u16()),
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
}

/// The HTTP status of each kind of service error: the native door's one mapping table (the
/// codes themselves come from [`ServiceError::classify`], shared by every front door).
fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Gone => StatusCode::GONE,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Unsupported => StatusCode::NOT_IMPLEMENTED,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let (kind, code) = e.classify();
        Self {
            status: status_of(kind),
            code,
            message: e.public_message(),
            current_version: e.current_version().map(u64::from),
            outcome: kind.outcome(),
            // Logged (never sent) when the caller is not at fault.
            cause: (!kind.is_caller()).then(|| Box::new(e)),
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
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                request_id,
                current_version: self.current_version,
            },
        };
        let mut res = (self.status, Json(body)).into_response();
        // For the audit record of this request.
        res.extensions_mut().insert(ErrorCode(self.code));
        res.extensions_mut().insert(self.outcome);
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
    use crate::service::AuthFailure;

    #[test]
    fn statuses_follow_the_kind_and_codes_the_service() {
        let cases: Vec<(ServiceError, StatusCode, &str, Outcome)> = vec![
            (
                ServiceError::Unauthenticated(AuthFailure::Missing),
                StatusCode::UNAUTHORIZED,
                "missing_token",
                Outcome::Unauthenticated,
            ),
            (
                ServiceError::Forbidden {
                    action: "decrypt",
                    resource: "key/k".into(),
                },
                StatusCode::FORBIDDEN,
                "forbidden",
                Outcome::Denied,
            ),
            (
                ServiceError::KeyNotFound("k".into()),
                StatusCode::NOT_FOUND,
                "key_not_found",
                Outcome::Rejected,
            ),
            (
                ServiceError::ValueTooLarge { got: 2, limit: 1 },
                StatusCode::PAYLOAD_TOO_LARGE,
                "value_too_large",
                Outcome::Rejected,
            ),
            (
                ServiceError::SecretIntegrity {
                    path: "a".into(),
                    version: 1,
                },
                StatusCode::INTERNAL_SERVER_ERROR,
                "secret_integrity_failed",
                Outcome::Failed,
            ),
        ];
        for (e, status, code, outcome) in cases {
            let api = ApiError::from(e);
            assert_eq!(
                (api.status(), api.code(), api.outcome),
                (status, code, outcome)
            );
        }
        // A front door's own rejections take their outcome from the status it chose.
        let own = ApiError::client(StatusCode::TOO_MANY_REQUESTS, "x", "y");
        assert_eq!(own.outcome, Outcome::Unauthenticated);
    }

    #[test]
    fn server_errors_reveal_nothing_internal() {
        let api = ApiError::from(ServiceError::SecretIntegrity {
            path: "team/db".into(),
            version: 7,
        });
        assert!(!api.message.contains("team/db"));
        assert!(api.cause.is_some());
    }
}
