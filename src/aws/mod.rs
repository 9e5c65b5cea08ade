//! The AWS KMS-compatible front door (issue 16): the JSON 1.1 protocol that `boto3`, the AWS
//! Encryption SDK and other AWS clients speak, signed with Signature Version 4, on the main
//! listener at `POST /` with `X-Amz-Target: TrentService.<Operation>`. This module is only a
//! wire format: it reads the signature into a [`Credential::AccessKey`] (the service verifies
//! it, since only the service can open the access key's secret), maps each operation to the
//! same service operation the native API uses (so the same policies and audit records apply),
//! and maps typed results and errors back to AWS's shapes.
//!
//! - Keys are named by id, key ARN, `alias/<name>` or alias ARN (a Custodian key name works
//!   too); answers carry the key ARN built from `[aws]` (`arn:<partition>:kms:<region>:
//!   <account>:key/<id>`), and Decrypt answers exactly the ARN of the key the ciphertext names.
//! - `EncryptionContext` is Custodian's encryption context; `CiphertextBlob` is Custodian's
//!   blob.
//! - Errors are `{"__type": "<Exception>", "message": …}` with AWS's types; every failure a
//!   client can fix is HTTP 400 (as AWS answers), dependencies 503, internal errors 500. The
//!   audit record's outcome comes from the service error's kind, so a policy denial is
//!   recorded `denied` although the wire says 400.
//!
//! docs/compat.md lists the operations, their Custodian actions and what is refused.

mod ops;

#[doc(hidden)]
pub use ops::{read_for_fuzzing, OPERATIONS};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use crate::api::error::ErrorCode;
use crate::api::AppState;
use crate::audit::Outcome;
use crate::service::sigv4::SignedRequest;
use crate::service::{AuthFailure, Credential, ErrorKind, ServiceError};

/// The JSON 1.1 media type of requests and answers.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// The target prefix of every operation.
pub const TARGET_PREFIX: &str = "TrentService.";
/// The service name clients sign for.
pub const SIGNING_SERVICE: &str = "kms";
/// The door's name in audit records.
pub const DOOR: &str = "aws-kms";

/// The door's route, merged into the main router (which adds request ids, the deadline and the
/// audit record).
pub fn router() -> Router<AppState> {
    Router::new().route(ROUTE, post(handle))
}

/// The one route this door serves; the audit layer names the door for requests matched to it.
pub const ROUTE: &str = "/";

/// An error as AWS answers it, carrying the typed outcome and code for the audit record.
#[derive(Debug)]
pub(crate) struct AwsError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    outcome: Outcome,
    code: &'static str,
}

impl AwsError {
    /// A request the door itself refuses (`ValidationException` and the like): 400.
    pub(crate) fn rejected(
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind,
            message: message.into(),
            outcome: Outcome::Rejected,
            code,
        }
    }

    /// `ValidationException`.
    pub(crate) fn validation(message: impl Into<String>) -> Self {
        Self::rejected("ValidationException", "invalid_request", message)
    }

    fn unauthenticated(kind: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind,
            message: message.into(),
            outcome: Outcome::Unauthenticated,
            code,
        }
    }

    /// A service error as AWS KMS answers it (module docs).
    pub(crate) fn from_service(e: &ServiceError) -> Self {
        let (kind, code) = e.classify();
        if let ServiceError::Unauthenticated(f) = e {
            let (aws, message) = match f {
                AuthFailure::Missing => (
                    "MissingAuthenticationTokenException",
                    "Missing Authentication Token",
                ),
                AuthFailure::MalformedSignature => (
                    "IncompleteSignatureException",
                    "The request signature does not conform to AWS standards.",
                ),
                AuthFailure::SignatureMismatch => (
                    "InvalidSignatureException",
                    "The request signature we calculated does not match the signature you \
                     provided. Check your AWS Secret Access Key and signing method.",
                ),
                AuthFailure::SignatureExpired => (
                    "InvalidSignatureException",
                    "Signature expired: the signing time is more than 15 minutes from the \
                     server's time.",
                ),
                _ => (
                    "UnrecognizedClientException",
                    "The security token included in the request is invalid.",
                ),
            };
            return Self::unauthenticated(aws, code, message);
        }
        let aws = match e {
            ServiceError::CertificateRefused(_) => "UnrecognizedClientException",
            ServiceError::Forbidden { .. } => "AccessDeniedException",
            ServiceError::KeyNotFound(_) | ServiceError::AliasNotFound(_) => "NotFoundException",
            ServiceError::InvalidCiphertext(_)
            | ServiceError::CiphertextKeyNotFound
            | ServiceError::DecryptionFailed => "InvalidCiphertextException",
            ServiceError::KeyDisabled(_) => "DisabledException",
            ServiceError::WrongKey => "IncorrectKeyException",
            ServiceError::KeyNameTaken(_) | ServiceError::AliasExists(_) => {
                "AlreadyExistsException"
            }
            // The device is saturated: AWS's answer to "slow down", which clients retry.
            _ if code == "device_busy" => "ThrottlingException",
            _ => match kind {
                ErrorKind::Unauthenticated => "UnrecognizedClientException",
                ErrorKind::Forbidden => "AccessDeniedException",
                ErrorKind::Invalid | ErrorKind::TooLarge => "ValidationException",
                ErrorKind::NotFound => "NotFoundException",
                ErrorKind::Conflict | ErrorKind::Gone => "KMSInvalidStateException",
                ErrorKind::Unsupported => "UnsupportedOperationException",
                ErrorKind::Unavailable => "DependencyTimeoutException",
                ErrorKind::Internal => "KMSInternalException",
            },
        };
        let status = match (aws, kind) {
            ("ThrottlingException", _) => StatusCode::BAD_REQUEST,
            (_, ErrorKind::Unavailable) => StatusCode::SERVICE_UNAVAILABLE,
            (_, ErrorKind::Internal) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        if status.is_server_error() {
            tracing::error!(error = %e, code, "AWS KMS door: request failed");
        }
        Self {
            status,
            kind: aws,
            message: e.public_message(),
            outcome: kind.outcome(),
            code,
        }
    }
}

impl IntoResponse for AwsError {
    fn into_response(self) -> Response {
        let body = json!({ "__type": self.kind, "message": self.message });
        let mut res = answer(self.status, &body);
        res.extensions_mut().insert(self.outcome);
        res.extensions_mut().insert(ErrorCode(self.code));
        res
    }
}

impl From<ServiceError> for AwsError {
    fn from(e: ServiceError) -> Self {
        Self::from_service(&e)
    }
}

/// A JSON 1.1 answer.
fn answer(status: StatusCode, body: &Value) -> Response {
    let mut res = (status, body.to_string()).into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    res
}

/// The credential a request presents: its SigV4 signature as read here, checked against the
/// configured region and the `kms` service. The service verifies the signature itself.
fn credential_of(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Credential, AwsError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(Credential::None);
    };
    let Ok(value) = value.to_str() else {
        return Ok(Credential::MalformedSignature);
    };
    // Header values that are not text cannot be signed headers; they are left out, so a
    // signature over one is reported missing (malformed).
    let pairs: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let signed = match SignedRequest::from_parts(
        value,
        method.as_str(),
        uri.path(),
        uri.query().unwrap_or_default(),
        &pairs,
        body,
    ) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "AWS KMS door: malformed signature");
            return Ok(Credential::MalformedSignature);
        }
    };
    if signed.scope.service != SIGNING_SERVICE {
        return Err(AwsError::unauthenticated(
            "InvalidSignatureException",
            "signature_mismatch",
            format!("Credential should be scoped to correct service: '{SIGNING_SERVICE}'."),
        ));
    }
    if signed.scope.region != state.aws.region {
        return Err(AwsError::unauthenticated(
            "InvalidSignatureException",
            "signature_mismatch",
            format!(
                "Credential should be scoped to a valid region, not '{}'. This endpoint \
                 serves '{}'.",
                signed.scope.region, state.aws.region
            ),
        ));
    }
    if !signed.scope_matches_date() {
        return Err(AwsError::unauthenticated(
            "InvalidSignatureException",
            "signature_mismatch",
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date \
             from HTTP.",
        ));
    }
    Ok(Credential::AccessKey(Box::new(signed)))
}

/// `POST /`: one AWS KMS operation.
async fn handle(
    State(state): State<AppState>,
    extensions: axum::http::Extensions,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let source = extensions
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let operation = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.strip_prefix(TARGET_PREFIX))
        .map(str::to_owned);
    let credential = match credential_of(&state, &method, &uri, &headers, &body) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let caller = match state.door.authenticate(&credential, source).await {
        Ok(c) => c,
        Err(e) => {
            if let (ServiceError::Unauthenticated(_), Credential::AccessKey(r)) = (&e, &credential)
            {
                if state
                    .throttle
                    .fail(source, Some(r.access_key_id.as_str()))
                    .is_some()
                {
                    return AwsError {
                        status: StatusCode::BAD_REQUEST,
                        kind: "ThrottlingException",
                        message: "too many failed authentications; retry later".to_owned(),
                        outcome: Outcome::Unauthenticated,
                        code: "too_many_auth_failures",
                    }
                    .into_response();
                }
            }
            return AwsError::from_service(&e).into_response();
        }
    };
    let Some(operation) = operation else {
        return AwsError::rejected(
            "UnknownOperationException",
            "route_not_found",
            "the X-Amz-Target header must name a TrentService operation",
        )
        .into_response();
    };
    caller.note_operation(&operation);
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !media.starts_with(CONTENT_TYPE) && !media.starts_with("application/x-amz-json-1.0") {
        return AwsError::rejected(
            "UnsupportedMediaTypeException",
            "unsupported_media_type",
            format!("the Content-Type must be {CONTENT_TYPE}"),
        )
        .into_response();
    }
    match ops::dispatch(&state.aws, &caller, &operation, &body).await {
        Ok(v) => answer(StatusCode::OK, &v),
        Err(e) => e.into_response(),
    }
}
