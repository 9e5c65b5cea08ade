//! `/v1/keys`: create and list.

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

use super::{optional_ref, schema_ref};
use crate::domain::Key;

/// `POST /v1/keys` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// The key's name (checked by the server: `invalid_key_name`).
    #[schema(schema_with = key_name_schema)]
    pub name: String,
    /// At most 1024 bytes.
    #[serde(default)]
    #[schema(default = "")]
    pub description: String,
    /// `pkcs11` (the default) or `tpm`; sent only when chosen.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = backend_schema)]
    pub backend: Option<String>,
    /// `direct` or `cached`; sent only when chosen.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = mode_schema)]
    pub mode: Option<String>,
}

impl CreateKeyRequest {
    /// Every field, for the server's `unknown_field` check.
    pub const FIELDS: &'static [&'static str] = &["name", "description", "backend", "mode"];
}

/// `GET /v1/keys` query: `?limit=&after=`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListKeysQuery {
    /// Page size, 1 to 1000 (default 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// The `next` of the previous page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

/// `GET /v1/keys` response.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyList {
    /// The page, by name.
    #[schema(schema_with = keys_schema)]
    pub keys: Vec<Key>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = next_schema)]
    pub next: Option<String>,
}

/// `name`: a `KeyName`.
fn key_name_schema() -> RefOr<Schema> {
    schema_ref("KeyName")
}

/// A string, one of `values`, with a default when there is one.
fn string_enum(values: &[&str], default: Option<&str>, description: &str) -> RefOr<Schema> {
    RefOr::T(Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(values.iter().copied()))
            .default(default.map(Into::into))
            .description(Some(description))
            .build(),
    ))
}

/// `backend`.
fn backend_schema() -> RefOr<Schema> {
    string_enum(
        &["pkcs11", "tpm"],
        Some("pkcs11"),
        "The device that holds the key's root keys. `tpm` needs a `[tpm]` section on the server; \
         otherwise `503 backend_not_configured`.",
    )
}

/// `mode`.
fn mode_schema() -> RefOr<Schema> {
    string_enum(
        &["direct", "cached"],
        None,
        "How data keys are wrapped, fixed for the key's life. Default `direct` on `pkcs11`, \
         `cached` on `tpm`.",
    )
}

/// `keys`: an array of `Key`.
fn keys_schema() -> RefOr<Schema> {
    RefOr::T(Schema::Array(
        ArrayBuilder::new().items(schema_ref("Key")).build(),
    ))
}

/// `next`: a `KeyName`, present when more keys follow.
fn next_schema() -> RefOr<Schema> {
    optional_ref("KeyName", "Present when more keys follow: pass as `after`.")
}
