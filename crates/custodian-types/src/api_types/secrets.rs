//! Path-named, versioned secrets: the bodies and queries of `/v1/secrets` and
//! `/v1/secrets/{path}[/metadata|/undelete|/destroy|/rotate]`.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use zeroize::Zeroizing;

use super::{
    array_of, double_option, nullable_ref, optional_ref, schema_fns, schema_ref, string_enum,
};
use crate::domain::secret::{
    self, Charset, CustomMetadata, GenerateSpec, HumanDuration, SecretPath, SecretVersionState,
};
use crate::domain::{KeyId, KeyVersion};
use crate::secret::SecretText;

/// `GET /v1/secrets/{path}` query: `?version=&text=`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadSecretQuery {
    /// The version to read; default: the newest live one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// Also answer the value as text (`value_text`) when it is UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<bool>,
}

/// `GET /v1/secrets/{path}` response: one version's value. `P` is the path ([`SecretPath`] on
/// the server, the text the client reads back).
///
/// # Security
/// `Debug` never shows the value.
#[derive(Serialize, Deserialize, ToSchema)]
#[schema(bound = "", description = "One version of a secret, with its value.")]
pub struct SecretValue<P = SecretPath> {
    /// The secret.
    #[schema(schema_with = path_schema)]
    pub path: P,
    /// The version read.
    #[schema(schema_with = secret_version_schema)]
    pub version: u32,
    /// When the version was written.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// The value, standard base64.
    #[schema(value_type = String, content_encoding = "base64")]
    pub value: Zeroizing<String>,
    /// The value as text; only with `text=true` and a value that is valid UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, nullable = false)]
    pub value_text: Option<Zeroizing<String>>,
}

impl<P: fmt::Debug> fmt::Debug for SecretValue<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretValue")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("value", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

/// `PUT /v1/secrets/{path}` body: exactly one of `value` and `value_text` (`invalid_field`
/// otherwise). `V` holds the value ([`SecretText`] on the server, the client's zeroising
/// buffer's text).
///
/// # Security
/// `Debug` never shows the value.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(
    bound = "",
    description = "Exactly one of `value` and `value_text` (`invalid_field` otherwise)."
)]
pub struct PutSecretRequest<V = SecretText> {
    /// The value, standard base64; at most `secrets.max_value_bytes` once decoded (413
    /// `value_too_large`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, content_encoding = "base64", nullable = false)]
    pub value: Option<V>,
    /// The value as UTF-8 text; at most `secrets.max_value_bytes` bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, nullable = false)]
    pub value_text: Option<V>,
    /// Key id or name wrapping this version's data key. Default: the secret's key, else
    /// `secrets.default_key` (400 `key_required` when there is none).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub key: Option<String>,
    /// Check-and-set: write only if the current version equals this (0: only if no version
    /// was written); 409 `cas_mismatch` with `current_version` otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, nullable = false)]
    pub cas: Option<u32>,
}

impl PutSecretRequest {
    /// Every field, for the server's `unknown_field` check.
    pub const FIELDS: &'static [&'static str] = &["value", "value_text", "key", "cas"];
}

impl<V> fmt::Debug for PutSecretRequest<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |v: &Option<V>| v.as_ref().map(|_| "[REDACTED]");
        f.debug_struct("PutSecretRequest")
            .field("value", &redacted(&self.value))
            .field("value_text", &redacted(&self.value_text))
            .field("key", &self.key)
            .field("cas", &self.cas)
            .finish()
    }
}

/// The answer of a write (`PUT /v1/secrets/{path}`, `POST …/rotate`). `P` is the path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = SecretWritten, bound = "", description = "A new secret version.")]
pub struct SecretWritten<P = SecretPath> {
    /// The secret.
    #[schema(schema_with = path_schema)]
    pub path: P,
    /// The version written.
    #[schema(schema_with = secret_version_schema)]
    pub version: u32,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

/// `PUT /v1/secrets/{path}/metadata` body; a field left out keeps its value. `D` is a duration,
/// `C` the custom map, `G` a generation spec (the domain's validating types on the server).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(
    deny_unknown_fields,
    bound(deserialize = "D: Deserialize<'de>, C: Deserialize<'de>, G: Deserialize<'de>")
)]
#[schema(
    as = PutSecretMetadataRequest,
    bound = "",
    description = "Every field is optional; a field left out keeps its value."
)]
pub struct PutSecretMetadataRequest<D = HumanDuration, C = CustomMetadata, G = GenerateSpec> {
    /// Key id or name; becomes the secret's `key_id` only when this call creates the path.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub key: Option<String>,
    /// Versions kept; lowering it destroys the oldest beyond it at once. 0 = unlimited.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, nullable = false)]
    pub max_versions: Option<u32>,
    /// `Some(None)` (`null`) removes the expiry.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(schema_with = expires_after_schema)]
    pub expires_after: Option<Option<D>>,
    /// Replaces the whole map.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = custom_schema)]
    pub custom: Option<C>,
    /// Turns generation on, or with `Some(None)` (`null`) off.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(schema_with = generate_schema)]
    pub generate: Option<Option<G>>,
}

impl<D, C, G> Default for PutSecretMetadataRequest<D, C, G> {
    fn default() -> Self {
        Self {
            key: None,
            max_versions: None,
            expires_after: None,
            custom: None,
            generate: None,
        }
    }
}

impl PutSecretMetadataRequest {
    /// Every field, for the server's `unknown_field` check.
    pub const FIELDS: &'static [&'static str] =
        &["key", "max_versions", "expires_after", "custom", "generate"];
}

/// `POST /v1/secrets/{path}/undelete` body (`{}` restores the newest deleted version) and
/// `POST /v1/secrets/{path}/destroy` body (`versions` required: `invalid_field` otherwise).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = UndeleteSecretRequest, description = "`POST /v1/secrets/{path}/undelete` body.")]
pub struct SecretVersionsRequest {
    /// Versions to restore or erase, 1 to 1000 of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = undelete_versions_schema)]
    pub versions: Option<Vec<u32>>,
}

impl SecretVersionsRequest {
    /// Every field, for the server's `unknown_field` check.
    pub const FIELDS: &'static [&'static str] = &["versions"];
}

/// `POST /v1/secrets/{path}/destroy` body as the document describes it: the same type as
/// [`SecretVersionsRequest`], with `versions` required (the server answers `invalid_field`
/// without it, so the wire type itself keeps it optional).
#[derive(ToSchema)]
#[allow(dead_code)] // Never built: only its schema is used.
#[schema(description = "`POST /v1/secrets/{path}/destroy` body.")]
pub struct DestroySecretRequest {
    /// Versions to erase for good.
    #[schema(schema_with = destroy_versions_schema)]
    versions: Vec<u32>,
}

/// The answer of a delete, undelete or destroy. `P` is the path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = SecretChanged, bound = "", description = "The result of a delete, undelete or destroy.")]
pub struct SecretChanged<P = SecretPath> {
    /// The secret.
    #[schema(schema_with = path_schema)]
    pub path: P,
    /// Versions whose state changed; versions already in the target state are left out.
    #[schema(schema_with = changed_schema)]
    pub changed: Vec<u32>,
}

/// `DELETE /v1/secrets/{path}` query: `?versions=1,3` (default: the newest live version).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteSecretQuery {
    /// Comma-separated version numbers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versions: Option<String>,
}

/// `GET /v1/secrets` query: `?prefix=&limit=&after=`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListSecretsQuery {
    /// Only paths starting with this text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// The `next` of the previous page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

/// One version of a secret, without its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(description = "One version of a secret, without its value.")]
pub struct SecretVersionInfo {
    /// The version number.
    #[schema(schema_with = secret_version_schema)]
    pub version: u32,
    /// live: readable; deleted: hidden, restorable; destroyed: erased for good.
    #[schema(schema_with = secret_version_state_schema)]
    pub state: SecretVersionState,
    /// When it was written.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// When it was soft-deleted; null unless it is.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub deleted_at: Option<OffsetDateTime>,
    /// When it was destroyed; null unless it was.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub destroyed_at: Option<OffsetDateTime>,
    /// The key wrapping this version's data key; null once destroyed.
    #[schema(schema_with = version_key_id_schema, required = true)]
    pub key_id: Option<KeyId>,
    /// The key version wrapping this version's data key; null once destroyed.
    #[schema(schema_with = version_key_version_schema, required = true)]
    pub key_version: Option<KeyVersion>,
}

impl From<&secret::SecretVersionInfo> for SecretVersionInfo {
    fn from(v: &secret::SecretVersionInfo) -> Self {
        Self {
            version: v.version,
            state: v.state,
            created_at: v.created_at,
            deleted_at: v.deleted_at,
            destroyed_at: v.destroyed_at,
            key_id: v.key_id,
            key_version: v.key_version,
        }
    }
}

/// How a generated secret is made and how often it rotates (the domain's [`GenerateSpec`],
/// which the server reads requests into, checked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = GenerateSpec, description = "How a generated secret is made and how often it rotates.")]
pub struct GenerateSpecBody {
    /// Characters per generated value; at most `secrets.max_value_bytes`.
    #[schema(minimum = 1, maximum = 4096)]
    pub length: u32,
    /// alphanumeric `A-Z a-z 0-9`; hex `0-9 a-f`; base64 `A-Z a-z 0-9 + /`; printable `!` to
    /// `~`.
    #[schema(schema_with = charset_schema)]
    pub charset: Charset,
    /// Interval between automatic rotations; at least `1s`.
    #[schema(schema_with = rotate_every_schema)]
    pub rotate_every: HumanDuration,
}

impl From<&GenerateSpec> for GenerateSpecBody {
    fn from(g: &GenerateSpec) -> Self {
        Self {
            length: g.length,
            charset: g.charset,
            rotate_every: g.rotate_every,
        }
    }
}

/// A secret's metadata and version history; never values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(description = "A secret's metadata and version history; never values.")]
pub struct SecretRecord {
    /// The path.
    pub path: SecretPath,
    /// The key that wraps new versions' data keys, chosen when the path was created.
    #[schema(schema_with = record_key_id_schema)]
    pub key_id: KeyId,
    /// The highest version number written (0: no version yet).
    pub current_version: u32,
    /// Versions kept before the oldest are destroyed; 0 = unlimited.
    pub max_versions: u32,
    /// Present when versions expire: older versions are answered 410 secret_version_expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = record_expires_after_schema)]
    pub expires_after: Option<HumanDuration>,
    /// Free string metadata.
    #[schema(schema_with = record_custom_schema)]
    pub custom: CustomMetadata,
    /// Present for generated secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = record_generate_schema)]
    pub generate: Option<GenerateSpecBody>,
    /// When the next automatic rotation is due; present for generated secrets.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime, nullable = false)]
    pub next_rotation_at: Option<OffsetDateTime>,
    /// When the path was first written.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// When the path or its metadata last changed.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
    /// Every version, oldest first, destroyed ones included.
    pub versions: Vec<SecretVersionInfo>,
}

impl From<&secret::SecretRecord> for SecretRecord {
    fn from(r: &secret::SecretRecord) -> Self {
        Self {
            path: r.path.clone(),
            key_id: r.key_id,
            current_version: r.current_version,
            max_versions: r.max_versions,
            expires_after: r.expires_after,
            custom: r.custom.clone(),
            generate: r.generate.as_ref().map(GenerateSpecBody::from),
            next_rotation_at: r.next_rotation_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
            versions: r.versions.iter().map(SecretVersionInfo::from).collect(),
        }
    }
}

/// `GET /v1/secrets` response: metadata records, never values. `R` is a record, `P` a path.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = SecretList, bound = "", description = "A page of secret metadata records; never values.")]
pub struct SecretList<R = SecretRecord, P = SecretPath> {
    /// Records by path (bytewise); never values.
    #[schema(schema_with = records_schema)]
    pub secrets: Vec<R>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = next_schema)]
    pub next: Option<P>,
}

schema_fns! {
    /// A `SecretPath`.
    path_schema => schema_ref("SecretPath");
    /// A `SecretVersionNumber`.
    secret_version_schema => schema_ref("SecretVersionNumber");
    /// `expires_after`: a `Duration` or `null`.
    expires_after_schema => nullable_ref("Duration", "null removes the expiry.");
    /// `custom`.
    custom_schema => optional_ref("CustomMetadata", "Replaces the whole map.");
    /// `generate`: a `GenerateSpec` or `null`.
    generate_schema => nullable_ref(
        "GenerateSpec",
        "Turns generation on (a path without versions gets version 1 at once; otherwise the \
         next rotation is scheduled at now + rotate_every) or, with null, off.",
    );
    /// `versions` of an undelete.
    undelete_versions_schema => optional_ref(
        "SecretVersionList",
        "Versions to restore; default: the newest deleted version.",
    );
    /// `versions` of a destroy.
    destroy_versions_schema => optional_ref("SecretVersionList", "Versions to erase for good.");
    /// `changed`.
    changed_schema => array_of(
        "SecretVersionNumber",
        Some("Versions whose state changed; versions already in the target state are left out."),
    );
    /// `secrets`: `SecretRecord` items.
    records_schema => array_of("SecretRecord", Some("Records by path (bytewise); never values."));
    /// `next`.
    next_schema => optional_ref("SecretPath", "Present when more records follow: pass as `after`.");
    /// A version's `state`.
    secret_version_state_schema => string_enum(
        &[SecretVersionState::Live, SecretVersionState::Deleted, SecretVersionState::Destroyed]
            .map(SecretVersionState::as_str),
        None,
        Some("live: readable; deleted: hidden, restorable; destroyed: erased for good."),
    );
    /// A version's `key_id`.
    version_key_id_schema => nullable_ref(
        "KeyId",
        "The key wrapping this version's data key; null once destroyed.",
    );
    /// A version's `key_version`.
    version_key_version_schema => nullable_ref(
        "KeyVersionNumber",
        "The key version wrapping this version's data key; null once destroyed.",
    );
    /// A spec's `charset`.
    charset_schema => string_enum(
        &["alphanumeric", "hex", "base64", "printable"],
        None,
        Some(
            "alphanumeric `A-Z a-z 0-9`; hex `0-9 a-f`; base64 `A-Z a-z 0-9 + /`; printable `!` \
             to `~`.",
        ),
    );
    /// A spec's `rotate_every`.
    rotate_every_schema => optional_ref("Duration", "Interval between automatic rotations; at least `1s`.");
    /// A record's `key_id`.
    record_key_id_schema => optional_ref(
        "KeyId",
        "The key that wraps new versions' data keys, chosen when the path was created.",
    );
    /// A record's `expires_after`.
    record_expires_after_schema => optional_ref(
        "Duration",
        "Present when versions expire: older versions are answered 410 secret_version_expired.",
    );
    /// A record's `custom`.
    record_custom_schema => schema_ref("CustomMetadata");
    /// A record's `generate`.
    record_generate_schema => optional_ref("GenerateSpec", "Present for generated secrets.");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_values() -> Result<(), serde_json::Error> {
        let put: PutSecretRequest =
            serde_json::from_str(r#"{"value": "c2VjcmV0LXZhbHVl", "cas": 1}"#)?;
        assert!(!format!("{put:?}").contains("c2VjcmV0"));
        let text: PutSecretRequest = serde_json::from_str(r#"{"value_text": "hunter2"}"#)?;
        assert!(!format!("{text:?}").contains("hunter2"));
        let read: SecretValue<String> = serde_json::from_str(
            r#"{"path": "a/b", "version": 1, "created_at": "2024-01-01T00:00:00Z",
                "value": "c2VjcmV0LXZhbHVl", "value_text": "secret-value"}"#,
        )?;
        let shown = format!("{read:?}");
        assert!(
            !shown.contains("c2VjcmV0") && !shown.contains("secret-value"),
            "{shown}"
        );
        Ok(())
    }
}
