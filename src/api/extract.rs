//! Request extraction: a JSON body extractor whose every failure is a 400 with a code naming the
//! problem (malformed JSON, unknown field, the field that is wrong, oversized body), and the
//! authenticated principal.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::service::Authorized;

/// A request body type: its field names (for the `unknown_field` check) and which code a bad
/// value in each field gets.
pub trait RequestBody: DeserializeOwned {
    /// Every accepted top-level field.
    const FIELDS: &'static [&'static str];

    /// The top-level fields documented as nullable (`null` means something, e.g. "turn
    /// scheduled rotation off"); `null` in any other field is refused rather than read as
    /// absent, as `docs/openapi.json` says.
    const NULLABLE: &'static [&'static str] = &[];

    /// The code for a bad value in `field`.
    fn field_code(field: &str) -> &'static str {
        match field {
            "context" | "destination_context" => "invalid_context",
            _ => "invalid_field",
        }
    }
}

/// A JSON body of type `T`.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: RequestBody,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let JsonBody(bytes) = JsonBody::from_request(req, state).await?;
        parse(&bytes).map(Self)
    }
}

/// Refuses a request whose `Content-Type` is not `application/json` (parameters allowed).
///
/// # Errors
/// 415 `unsupported_media_type`.
pub fn require_json(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if is_json {
        Ok(())
    } else {
        Err(ApiError::client(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be sent as Content-Type: application/json",
        ))
    }
}

pub use crate::api_types::double_option;

/// A body sent as JSON, not yet parsed (for routes whose body type depends on the path).
/// Zero bytes are allowed here; [`parse`] decides whether that is valid.
#[derive(Debug)]
pub struct JsonBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        require_json(req.headers())?;
        let bytes = Bytes::from_request(req, state).await.map_err(|e| match e {
            BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
                ApiError::bad_request(
                    "body_too_large",
                    "the request body is larger than the server accepts",
                )
            }
            _ => ApiError::bad_request("invalid_request", "the request body could not be read"),
        })?;
        Ok(Self(bytes))
    }
}

/// Parses a body; on failure, classifies the error structurally (never by message text).
pub fn parse<T: RequestBody>(bytes: &[u8]) -> Result<T, ApiError> {
    match serde_json::from_slice::<T>(bytes) {
        Ok(v) => {
            check_shape::<T>(bytes)?;
            Ok(v)
        }
        Err(_) => Err(classify::<T>(bytes)),
    }
}

/// Refuses what serde's derive lets through but the document does not: a body that is not a
/// JSON object (a struct also deserialises from an array of its fields in order), and `null`
/// in a field not documented as nullable ([`RequestBody::NULLABLE`]). The body is re-read only
/// when it contains the bytes `null` at all.
fn check_shape<T: RequestBody>(bytes: &[u8]) -> Result<(), ApiError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad_request(
            "invalid_request",
            "the body must be a JSON object",
        ));
    }
    if !bytes.windows(4).any(|w| w == b"null") {
        return Ok(());
    }
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(bytes)
        .map_err(|_| ApiError::bad_request("invalid_request", "the body must be a JSON object"))?;
    match object
        .iter()
        .find(|(k, v)| v.is_null() && !T::NULLABLE.contains(&k.as_str()))
    {
        Some((field, _)) => Err(ApiError::bad_request(
            T::field_code(field),
            format!("field `{field}` must not be null (leave it out instead)"),
        )),
        None => Ok(()),
    }
}

/// Re-reads a body that failed to deserialise to say exactly what is wrong with it.
fn classify<T: RequestBody>(bytes: &[u8]) -> ApiError {
    let value: serde_json::Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            return ApiError::bad_request(
                "malformed_json",
                format!("the body is not valid JSON: {e}"),
            )
        }
    };
    let Some(object) = value.as_object() else {
        return ApiError::bad_request("invalid_request", "the body must be a JSON object");
    };
    if let Some(unknown) = object.keys().find(|k| !T::FIELDS.contains(&k.as_str())) {
        return ApiError::bad_request("unknown_field", format!("unknown field `{unknown}`"));
    }
    // Re-run on the original bytes (not the `Value`, which would silently collapse a duplicate
    // key) to learn the path of the first field that fails.
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(_) => ApiError::bad_request(
            "invalid_request",
            "the body does not match the expected shape",
        ),
        Err(e) => {
            let path = e.path().to_string();
            let field = path.split(['.', '[']).next().unwrap_or_default();
            let field = if field.is_empty() || field == "?" {
                "body"
            } else {
                field
            };
            let message = if field == "body" {
                e.inner().to_string()
            } else {
                format!("field `{path}`: {}", e.inner())
            };
            ApiError::bad_request(T::field_code(field), message)
        }
    }
}

/// The `{key}` path segment: a key id or name. A segment that is not even valid UTF-8 gets the
/// API's JSON error shape like every other rejection.
#[derive(Debug, Clone)]
pub struct KeyPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for KeyPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(k)| Self(k))
            .map_err(|_| {
                ApiError::client(
                    StatusCode::NOT_FOUND,
                    "key_not_found",
                    "the key in the path is not a valid key id or name",
                )
            })
    }
}

/// The authenticated principal's handle the authentication middleware put into the request:
/// the only way a handler reaches a service operation.
#[derive(Debug, Clone)]
pub struct Caller(pub Authorized);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Authorized>()
            .cloned()
            .map(Caller)
            .ok_or_else(|| {
                ApiError::client(
                    StatusCode::UNAUTHORIZED,
                    "missing_token",
                    "missing bearer token",
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        bytes: Option<u64>,
        context: Option<crate::format::EncryptionContext>,
    }

    impl RequestBody for Sample {
        const FIELDS: &'static [&'static str] = &["name", "bytes", "context"];
    }

    fn code(body: &str) -> &'static str {
        parse::<Sample>(body.as_bytes()).unwrap_err().code()
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Lenient {
        name: Option<String>,
        note: Option<String>,
    }

    impl RequestBody for Lenient {
        const FIELDS: &'static [&'static str] = &["name", "note"];
        const NULLABLE: &'static [&'static str] = &["note"];
    }

    /// What serde alone accepts but the document refuses (schemathesis found both).
    #[test]
    fn arrays_and_undocumented_nulls_are_refused() {
        let lenient = |b: &str| parse::<Lenient>(b.as_bytes()).map_err(|e| e.code());
        assert!(lenient(r#"{"name":"a","note":"n"}"#).is_ok());
        assert!(lenient(r#"{"name":"a","note":null}"#).is_ok());
        assert!(lenient(r#"{"name":"nullable"}"#).is_ok());
        assert_eq!(lenient("[null, null]").unwrap_err(), "invalid_request");
        assert_eq!(lenient(r#" ["a", "b"]"#).unwrap_err(), "invalid_request");
        assert_eq!(lenient(r#"{"name":null}"#).unwrap_err(), "invalid_field");
        assert_eq!(
            lenient(r#"{"name" : null , "note":null}"#).unwrap_err(),
            "invalid_field"
        );
    }

    #[test]
    fn each_failure_gets_its_own_code() {
        assert!(parse::<Sample>(br#"{"name":"a"}"#).is_ok());
        assert_eq!(code("{"), "malformed_json");
        assert_eq!(code("[]"), "invalid_request");
        assert_eq!(code(r#"{"name":"a","extra":1}"#), "unknown_field");
        assert_eq!(code(r#"{"name":1}"#), "invalid_field");
        assert_eq!(code(r#"{"bytes":-1,"name":"a"}"#), "invalid_field");
        assert_eq!(code(r#"{"name":"a","context":{"k":1}}"#), "invalid_context");
        assert_eq!(code(r#"{"name":"a","context":["k"]}"#), "invalid_context");
        assert_eq!(code(r#"{}"#), "invalid_field");
        assert_eq!(
            code(r#"{"name":"a","context":{"k":"1","k":"2"}}"#),
            "invalid_context"
        );
    }
}
