//! The generator of `docs/openapi.json`.
//!
//! The component schemas of the types in this module's siblings are derived from the types
//! themselves (`utoipa::ToSchema`); everything else comes from `openapi_base.json` next to this
//! file: the operations (paths, parameters, responses, examples), the shared parameters,
//! headers and error responses, and the schemas of the bodies not yet moved here. A typed schema
//! replaces the base's schema of the same name, and the base may not hold one (a test checks).
//!
//! `docs/openapi.json` is this function's output, checked in; the test
//! `openapi::document_is_generated` fails when the two differ and rewrites the file when run with
//! `CUSTODIAN_UPDATE_OPENAPI=1`.

use serde_json::Value;
use utoipa::OpenApi;

use super::audit::{AuditArchiveRequest, AuditEventList};
use super::crypto::{
    DataKeyRequest, DataKeyResponse, DecryptRequest, DecryptResponse, EncryptRequest,
    EncryptResponse, ReencryptRequest, ReencryptResponse,
};
use super::error::{ErrorBody, ErrorDetail};
use super::identity::{
    CreatePrincipalRequest, CreateTokenRequest, ExplainRequest, PatchPrincipalRequest, PolicyList,
    PrincipalList, TokenList,
};
use super::keys::{CreateKeyRequest, KeyList};
use super::lifecycle::{
    AliasList, CreateAliasRequest, JobEventList, JobList, KeyVersionList, PatchKeyRequest,
    RepointAliasRequest, ScheduleDeletionRequest,
};
use super::secrets::{
    DestroySecretRequest, PutSecretMetadataRequest, PutSecretRequest, SecretChanged, SecretList,
    SecretValue, SecretVersionsRequest, SecretWritten,
};

/// The hand-written rest of the document.
pub const BASE: &str = include_str!("openapi_base.json");

/// The schemas derived from the wire types.
#[derive(OpenApi)]
#[openapi(components(schemas(
    ErrorBody,
    ErrorDetail,
    CreateKeyRequest,
    KeyList,
    DataKeyRequest,
    DataKeyResponse,
    EncryptRequest,
    EncryptResponse,
    DecryptRequest,
    DecryptResponse,
    ReencryptRequest,
    ReencryptResponse,
    PatchKeyRequest,
    ScheduleDeletionRequest,
    KeyVersionList,
    JobList,
    JobEventList,
    CreateAliasRequest,
    RepointAliasRequest,
    AliasList,
    SecretValue,
    PutSecretRequest,
    SecretWritten,
    PutSecretMetadataRequest,
    SecretVersionsRequest,
    DestroySecretRequest,
    SecretChanged,
    SecretList,
    CreatePrincipalRequest,
    PatchPrincipalRequest,
    PrincipalList,
    PolicyList,
    ExplainRequest,
    CreateTokenRequest,
    TokenList,
    AuditEventList,
    AuditArchiveRequest,
)))]
struct Typed;

/// The typed answers, closed on the wire (the server sends no other members), though the
/// client reads them leniently: their types have no `deny_unknown_fields`, so the document's
/// `additionalProperties: false` is set here rather than derived.
const CLOSED_ANSWERS: &[&str] = &[
    "Error",
    "ErrorDetail",
    "DataKeyResponse",
    "EncryptResponse",
    "DecryptResponse",
    "ReencryptResponse",
    "KeyVersions",
    "JobList",
    "JobEventList",
    "AliasList",
    "SecretValue",
    "SecretWritten",
    "SecretChanged",
    "SecretList",
    "PrincipalList",
    "PolicyList",
    "TokenList",
    "AuditEventList",
    // Schema-only: the wire type is `UndeleteSecretRequest`'s, which is closed.
    "DestroySecretRequest",
];

/// Why the document could not be built.
#[derive(Debug, thiserror::Error)]
pub enum OpenApiError {
    /// The base is not JSON, or a schema does not serialise.
    #[error("openapi document: {0}")]
    Json(#[from] serde_json::Error),
    /// The base lacks `components.schemas`.
    #[error("openapi base: no components.schemas object")]
    NoSchemas,
    /// The base still describes a schema that a type now describes.
    #[error("openapi base: schema {0} is derived from a type; remove it from the base")]
    Duplicate(String),
}

/// The names of the schemas derived from types.
pub fn typed_schema_names() -> Vec<String> {
    Typed::openapi()
        .components
        .map(|c| c.schemas.into_keys().collect())
        .unwrap_or_default()
}

/// The whole document.
///
/// # Errors
/// [`OpenApiError`]: the base is malformed or overlaps the typed schemas.
pub fn document() -> Result<Value, OpenApiError> {
    let mut doc: Value = serde_json::from_str(BASE)?;
    let schemas = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
        .ok_or(OpenApiError::NoSchemas)?;
    let typed = Typed::openapi().components.map(|c| c.schemas);
    for (name, schema) in typed.unwrap_or_default() {
        if schemas.contains_key(&name) {
            return Err(OpenApiError::Duplicate(name));
        }
        let schema = serde_json::to_value(schema)?;
        schemas.insert(name, schema);
    }
    for name in CLOSED_ANSWERS.iter().copied() {
        if let Some(schema) = schemas.get_mut(name) {
            close(schema);
        }
    }
    // What serde cannot say: a secret write sends exactly one of its two value members.
    if let Some(o) = schemas
        .get_mut("PutSecretRequest")
        .and_then(Value::as_object_mut)
    {
        o.insert(
            "oneOf".to_owned(),
            serde_json::json!([{"required": ["value"]}, {"required": ["value_text"]}]),
        );
    }
    Ok(doc)
}

/// Marks an object schema `additionalProperties: false`.
fn close(schema: &mut Value) {
    if let Some(o) = schema.as_object_mut() {
        o.insert("additionalProperties".to_owned(), Value::Bool(false));
    }
}

/// The document as `docs/openapi.json` holds it: pretty-printed, with a final newline.
///
/// # Errors
/// As [`document`].
pub fn document_text() -> Result<String, OpenApiError> {
    let mut text = serde_json::to_string_pretty(&document()?)?;
    text.push('\n');
    Ok(text)
}
