//! The client's one error type.

use std::time::Duration;

use reqwest::StatusCode;

use crate::stream::StreamError;

/// Why a client call failed.
///
/// Grouped by who is at fault: the server's answer ([`Error::Api`]), the way there
/// ([`Error::Http`]), the caller's input ([`Error::InvalidName`], [`Error::Context`]), the
/// client's setup ([`Error::Tls`]), and an answer the client cannot use ([`Error::BadBase64`],
/// [`Error::UnexpectedAnswer`]). No variant holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error. `request_id` names the request in the server's log
    /// and audit trail (empty only when the answer was not Custodian's error body).
    #[error(
        "{status}: {code}: {message}{} (request {request_id})",
        current_suffix(*.current_version)
    )]
    Api {
        /// HTTP status.
        status: StatusCode,
        /// Stable error code (`docs/api.md`).
        code: String,
        /// Message.
        message: String,
        /// Request id for the operator.
        request_id: String,
        /// The secret's current version, sent with `cas_mismatch`.
        current_version: Option<u64>,
        /// The server's `Retry-After`, when it sent one (429, some 503s).
        retry_after: Option<Duration>,
    },
    /// The server could not be reached, timed out, or answered something unreadable.
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// A request body could not be encoded as JSON.
    #[error("cannot encode the request: {0}")]
    Encode(#[source] serde_json::Error),
    /// The server sent base64 that does not decode.
    #[error("the server sent invalid base64 in {0}")]
    BadBase64(&'static str),
    /// The server's answer does not fit the request (e.g. a data key of the wrong length).
    #[error("unexpected answer from the server: {0}")]
    UnexpectedAnswer(&'static str),
    /// A key, alias, job id, principal, policy or token id that no URL can address faithfully
    /// (empty, `.` or `..`).
    #[error("no {what} is named {value:?}")]
    InvalidName {
        /// What was named: `key`, `alias`, `job id`, `principal`, `policy` or `token id`.
        what: &'static str,
        /// The value as given.
        value: String,
    },
    /// An encryption context outside the bounds every server enforces.
    #[error("invalid encryption context: {0}")]
    Context(#[from] custodian_types::format::ContextError),
    /// The CA certificate or client identity given to the builder does not parse.
    #[error("invalid TLS setting: {0}")]
    Tls(#[source] reqwest::Error),
    /// The CA file given to the builder holds no certificate.
    #[error("invalid TLS setting: no certificate in the CA file")]
    NoCaCertificate,
    /// The server address is not an `http://` or `https://` URL.
    #[error("the server address must start with http:// or https://, got {0:?}")]
    BadAddress(String),
    /// A streaming file is malformed, truncated, reordered or tampered with.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// Reading or writing a stream failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The request id the server gave the failed request, when it answered.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Self::Api { request_id, .. } if !request_id.is_empty() => Some(request_id),
            _ => None,
        }
    }

    /// The API error code (`decryption_failed`, `forbidden`, ...), when the server answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// ` (current_version=N)` after a `cas_mismatch` message: the structured field, for scripts
/// that retry with it.
fn current_suffix(current: Option<u64>) -> String {
    current.map_or_else(String::new, |v| format!(" (current_version={v})"))
}
