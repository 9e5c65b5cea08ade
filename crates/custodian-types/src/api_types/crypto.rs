//! Data keys and small-payload encryption: the bodies of `POST /v1/keys/{key}/datakey`,
//! `POST /v1/keys/{key}/encrypt`, `POST /v1/decrypt` and `POST /v1/reencrypt`, and their
//! answers (one type, and one schema, each).

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;
use zeroize::Zeroizing;

use super::{described_ref, schema_ref};
use crate::domain::{KeyId, KeyVersion};
use crate::format::EncryptionContext;
use crate::secret::SecretText;

/// `POST /v1/keys/{key}/datakey` body. `C` is the context: [`EncryptionContext`] on the server,
/// the command line's pairs on the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(bound = "", description = "`POST /v1/keys/{key}/datakey` body.")]
pub struct DataKeyRequest<C = EncryptionContext> {
    /// The encryption context.
    #[serde(default)]
    #[schema(schema_with = context_schema)]
    pub context: C,
    /// Data key length in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = bytes_schema)]
    pub bytes: Option<u64>,
    /// Return the plaintext copy.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(default = true)]
    pub plaintext: Option<bool>,
}

impl DataKeyRequest {
    /// Every field, for the server's `unknown_field` check.
    pub const FIELDS: &'static [&'static str] = &["context", "bytes", "plaintext"];
}

/// `POST /v1/keys/{key}/encrypt` body. `P` is the base64 plaintext ([`SecretText`] on the server,
/// a zeroising buffer's text on the client), `C` the context.
///
/// # Security
/// `Debug` never shows the plaintext.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(bound = "", description = "`POST /v1/keys/{key}/encrypt` body.")]
pub struct EncryptRequest<P = SecretText, C = EncryptionContext> {
    /// 1 to 4096 bytes once decoded.
    #[schema(value_type = String, content_encoding = "base64", max_length = 5464)]
    pub plaintext: P,
    /// The encryption context.
    #[serde(default)]
    #[schema(schema_with = context_schema)]
    pub context: C,
}

impl EncryptRequest {
    /// Every field, for the server's `unknown_field` check.
    pub const FIELDS: &'static [&'static str] = &["plaintext", "context"];
}

impl<P, C: fmt::Debug> fmt::Debug for EncryptRequest<P, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptRequest")
            .field("plaintext", &"[REDACTED]")
            .field("context", &self.context)
            .finish()
    }
}

/// `POST /v1/decrypt` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(bound = "")]
pub struct DecryptRequest<C = EncryptionContext> {
    /// A ciphertext blob, format version 1.
    #[schema(content_encoding = "base64", max_length = 5536)]
    pub ciphertext: String,
    /// The encryption context the blob was sealed with.
    #[serde(default)]
    #[schema(schema_with = context_schema)]
    pub context: C,
}

impl DecryptRequest {
    /// Every field, for the server's `unknown_field` check.
    pub const FIELDS: &'static [&'static str] = &["ciphertext", "context"];
}

/// `POST /v1/reencrypt` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(bound = "")]
pub struct ReencryptRequest<C = EncryptionContext> {
    /// A ciphertext blob, format version 1.
    #[schema(content_encoding = "base64", max_length = 5536)]
    pub ciphertext: String,
    /// The context the blob was sealed with.
    #[serde(default)]
    #[schema(schema_with = source_context_schema)]
    pub context: C,
    /// Key id, name or `alias/<name>`; default: the blob's own key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_key: Option<String>,
    /// The new blob's context; default: `context`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = destination_context_schema)]
    pub destination_context: Option<C>,
}

impl ReencryptRequest {
    /// Every field, for the server's `unknown_field` check.
    pub const FIELDS: &'static [&'static str] = &[
        "ciphertext",
        "context",
        "destination_key",
        "destination_context",
    ];
}

/// `POST /v1/keys/{key}/datakey` response: the wrapped data key and, unless the request said
/// `plaintext: false`, the data key itself.
///
/// # Security
/// `Debug` never shows the plaintext.
#[derive(Serialize, Deserialize, ToSchema)]
#[schema(
    description = "A new data key: wrapped and, unless the request set `plaintext` to false, in the clear."
)]
pub struct DataKeyResponse {
    /// The key that wrapped the data key.
    #[schema(schema_with = key_id_schema)]
    pub key_id: KeyId,
    /// Its version.
    #[schema(schema_with = key_version_schema)]
    pub key_version: KeyVersion,
    /// The wrapped data key: a ciphertext blob, format version 1.
    #[schema(content_encoding = "base64")]
    pub ciphertext: String,
    /// The data key. Absent when the request set plaintext to false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, content_encoding = "base64", nullable = false)]
    pub plaintext: Option<Zeroizing<String>>,
}

impl fmt::Debug for DataKeyResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKeyResponse")
            .field("key_id", &self.key_id)
            .field("key_version", &self.key_version)
            .field("ciphertext", &self.ciphertext)
            .field("plaintext", &self.plaintext.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

/// `POST /v1/keys/{key}/encrypt` response: the blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(description = "A new blob.")]
pub struct EncryptResponse {
    /// The key that sealed the blob.
    #[schema(schema_with = key_id_schema)]
    pub key_id: KeyId,
    /// Its version.
    #[schema(schema_with = key_version_schema)]
    pub key_version: KeyVersion,
    /// A ciphertext blob, format version 1.
    #[schema(content_encoding = "base64")]
    pub ciphertext: String,
}

/// `POST /v1/decrypt` response: the plaintext.
///
/// # Security
/// `Debug` never shows the plaintext.
#[derive(Serialize, Deserialize, ToSchema)]
#[schema(description = "The plaintext of a blob.")]
pub struct DecryptResponse {
    /// The key that opened the blob.
    #[schema(schema_with = key_id_schema)]
    pub key_id: KeyId,
    /// Its version.
    #[schema(schema_with = key_version_schema)]
    pub key_version: KeyVersion,
    /// The decrypted data key or payload.
    #[schema(value_type = String, content_encoding = "base64")]
    pub plaintext: Zeroizing<String>,
}

impl fmt::Debug for DecryptResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecryptResponse")
            .field("key_id", &self.key_id)
            .field("key_version", &self.key_version)
            .field("plaintext", &"[REDACTED]")
            .finish()
    }
}

/// `POST /v1/reencrypt` response: the new blob and the key version that had sealed the input;
/// never the plaintext.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(description = "A new blob under the destination key; never the plaintext.")]
pub struct ReencryptResponse {
    /// The key that sealed the new blob.
    #[schema(schema_with = key_id_schema)]
    pub key_id: KeyId,
    /// Its version (the destination's primary version).
    #[schema(schema_with = key_version_schema)]
    pub key_version: KeyVersion,
    /// The new blob, under the destination's primary version.
    #[schema(content_encoding = "base64")]
    pub ciphertext: String,
    /// The key that had sealed the input.
    #[schema(schema_with = key_id_schema)]
    pub source_key_id: KeyId,
    /// Its version.
    #[schema(schema_with = key_version_schema)]
    pub source_key_version: KeyVersion,
}

/// A `KeyId`.
fn key_id_schema() -> RefOr<Schema> {
    schema_ref("KeyId")
}

/// A `KeyVersionNumber`.
fn key_version_schema() -> RefOr<Schema> {
    schema_ref("KeyVersionNumber")
}

/// `context`: an `EncryptionContext`.
fn context_schema() -> RefOr<Schema> {
    schema_ref("EncryptionContext")
}

/// `context` of a re-encryption.
fn source_context_schema() -> RefOr<Schema> {
    described_ref("EncryptionContext", "The context the blob was sealed with.")
}

/// `destination_context` of a re-encryption.
fn destination_context_schema() -> RefOr<Schema> {
    described_ref(
        "EncryptionContext",
        "The new blob's context; default: `context`.",
    )
}

/// `bytes`: 16, 24 or 32.
fn bytes_schema() -> RefOr<Schema> {
    RefOr::T(Schema::Object(
        ObjectBuilder::new()
            // `null` is "not given", as an absent member is (the server has always taken it).
            .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
                Type::Integer,
                Type::Null,
            ]))
            .enum_values(Some([
                serde_json::json!(16),
                serde_json::json!(24),
                serde_json::json!(32),
                serde_json::Value::Null,
            ]))
            .default(Some(32.into()))
            .description(Some("Data key length in bytes; `null` or absent: 32."))
            .build(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_plaintexts() -> Result<(), serde_json::Error> {
        let req: EncryptRequest =
            serde_json::from_str(r#"{"plaintext": "c2VjcmV0LXBheWxvYWQ=", "context": {}}"#)?;
        let shown = format!("{req:?}");
        assert!(!shown.contains("c2VjcmV0LXBheWxvYWQ"), "{shown}");
        let client = EncryptRequest {
            plaintext: "c2VjcmV0LXBheWxvYWQ=",
            context: serde_json::json!({}),
        };
        assert!(!format!("{client:?}").contains("c2VjcmV0"));
        let res: DecryptResponse = serde_json::from_str(
            r#"{"key_id": "0b7f6bd4-6a43-4d1c-9c8f-3c1d8e4b5a61", "key_version": 1,
                "plaintext": "c2VjcmV0LXBheWxvYWQ="}"#,
        )?;
        assert!(!format!("{res:?}").contains("c2VjcmV0"));
        let dk: DataKeyResponse = serde_json::from_str(
            r#"{"key_id": "0b7f6bd4-6a43-4d1c-9c8f-3c1d8e4b5a61", "key_version": 1,
                "ciphertext": "AQID", "plaintext": "c2VjcmV0LXBheWxvYWQ="}"#,
        )?;
        assert!(!format!("{dk:?}").contains("c2VjcmV0"));
        Ok(())
    }
}
