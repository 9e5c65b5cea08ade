//! `/v1/keys`: create and list.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

use super::{described_ref, optional_ref, schema_fns, schema_ref, string_enum};
use crate::domain::secret::HumanDuration;
use crate::domain::{
    self, Algorithm, BackendKind, KeyId, KeyName, KeyState, KeyVersion, VersionState, WrapMode,
};

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

/// A key and its versions: the answer of `POST /v1/keys`, `GET /v1/keys/{key}` and of every
/// call that changes a key (rotate, `PATCH`, enable, disable, deletion, version actions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(description = "A key and its versions.")]
pub struct Key {
    /// Immutable id.
    pub id: KeyId,
    /// Unique name.
    pub name: KeyName,
    /// Free text for operators.
    pub description: String,
    /// Lifecycle state.
    #[schema(schema_with = key_state_schema)]
    pub state: KeyState,
    /// The device kind that holds the root keys.
    #[schema(schema_with = key_backend_schema)]
    pub backend: BackendKind,
    /// How data keys are wrapped.
    #[schema(schema_with = key_mode_schema)]
    pub mode: WrapMode,
    /// When the key was created.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// The version that wraps new data.
    pub primary_version: KeyVersion,
    /// Versions below it no longer unwrap (`key_version_below_minimum`).
    #[schema(schema_with = min_decryption_version_schema)]
    pub min_decryption_version: KeyVersion,
    /// Present only while scheduled rotation is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = rotation_period_schema)]
    pub rotation_period: Option<HumanDuration>,
    /// When the next scheduled rotation is due; only with `rotation_period`.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime, nullable = false)]
    pub next_rotation_at: Option<OffsetDateTime>,
    /// Only while `pending_deletion`: when the key is destroyed.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime, nullable = false)]
    pub deletion_date: Option<OffsetDateTime>,
    /// Only when a due deletion was refused: why (stored data keys still reference a version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub deletion_blocked: Option<String>,
    /// When the key last changed.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
    /// Oldest first.
    pub versions: Vec<KeyVersionRecord>,
}

impl From<&domain::Key> for Key {
    fn from(k: &domain::Key) -> Self {
        Self {
            id: k.id,
            name: k.name.clone(),
            description: k.description.clone(),
            state: k.state,
            backend: k.backend,
            mode: k.mode,
            created_at: k.created_at,
            primary_version: k.primary_version,
            min_decryption_version: k.min_decryption_version,
            rotation_period: k.rotation_period,
            next_rotation_at: k.next_rotation_at,
            deletion_date: k.deletion_date,
            deletion_blocked: k.deletion_blocked.clone(),
            updated_at: k.updated_at,
            versions: k.versions.iter().map(KeyVersionRecord::from).collect(),
        }
    }
}

/// One version of a key (never its device material).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = KeyVersion, description = "One version of a key.")]
pub struct KeyVersionRecord {
    /// The version number.
    pub version: KeyVersion,
    /// `primary` seals new data; `active` only unwraps; `disabled` does neither until enabled;
    /// `destroyed` is final.
    #[schema(schema_with = version_state_schema)]
    pub state: VersionState,
    /// The algorithm of the blobs this version seals.
    #[schema(schema_with = algorithm_schema)]
    pub algorithm: Algorithm,
    /// When the root key was generated.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// Present once the version is destroyed.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime, nullable = false)]
    pub destroyed_at: Option<OffsetDateTime>,
    /// Wraps reserved under this version: an upper bound of the seals it has done.
    pub wraps_reserved: u64,
}

impl From<&domain::KeyVersionRecord> for KeyVersionRecord {
    fn from(v: &domain::KeyVersionRecord) -> Self {
        Self {
            version: v.version,
            state: v.state,
            algorithm: v.algorithm,
            created_at: v.created_at,
            destroyed_at: v.destroyed_at,
            wraps_reserved: v.wraps_reserved,
        }
    }
}

/// `GET /v1/keys` response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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

/// `backend`.
fn backend_schema() -> RefOr<Schema> {
    string_enum(
        &["pkcs11", "tpm"],
        Some("pkcs11"),
        Some("The device that holds the key's root keys. `tpm` needs a `[tpm]` section on the server; \
         otherwise `503 backend_not_configured`."),
    )
}

/// `mode`.
fn mode_schema() -> RefOr<Schema> {
    string_enum(
        &["direct", "cached"],
        None,
        Some(
            "How data keys are wrapped, fixed for the key's life. Default `direct` on `pkcs11`, \
         `cached` on `tpm`.",
        ),
    )
}

/// `keys`: an array of `Key`.
fn keys_schema() -> RefOr<Schema> {
    super::array_of("Key", None)
}

/// Every `KeyState`.
const KEY_STATES: [KeyState; 4] = [
    KeyState::Enabled,
    KeyState::Disabled,
    KeyState::PendingDeletion,
    KeyState::Destroyed,
];

/// Every `VersionState`.
const VERSION_STATES: [VersionState; 4] = [
    VersionState::Primary,
    VersionState::Active,
    VersionState::Disabled,
    VersionState::Destroyed,
];

/// Every `Algorithm`.
const ALGORITHMS: [Algorithm; 3] = [
    Algorithm::Aes256GcmDevice,
    Algorithm::Aes256KwpCached,
    Algorithm::Aes256KwpTpmHmac,
];

schema_fns! {
    /// A key's `state`.
    key_state_schema => string_enum(&KEY_STATES.map(KeyState::as_str), None, Some("Lifecycle state."));
    /// A key's `backend`.
    key_backend_schema => string_enum(
        &[BackendKind::Pkcs11, BackendKind::Tpm].map(BackendKind::as_str),
        None,
        Some("The device kind that holds the root keys."),
    );
    /// A key's `mode`.
    key_mode_schema => string_enum(
        &[WrapMode::Direct, WrapMode::Cached].map(WrapMode::as_str),
        None,
        Some("How data keys are wrapped."),
    );
    /// A key's `min_decryption_version`.
    min_decryption_version_schema => described_ref(
        "KeyVersionNumber",
        "Versions below it no longer unwrap (`key_version_below_minimum`).",
    );
    /// A key's `rotation_period`.
    rotation_period_schema => described_ref("Duration", "Present only while scheduled rotation is on.");
    /// A version's `state`.
    version_state_schema => version_state();
}

/// A version's `algorithm`.
pub(crate) fn algorithm_schema() -> RefOr<Schema> {
    string_enum(
        &ALGORITHMS.map(Algorithm::as_str),
        None,
        Some("The algorithm of the blobs this version seals."),
    )
}

/// A version's `state`.
pub(crate) fn version_state() -> RefOr<Schema> {
    string_enum(
        &VERSION_STATES.map(VersionState::as_str),
        None,
        Some(
            "`primary` seals new data; `active` only unwraps; `disabled` does neither until \
             enabled; `destroyed` is final.",
        ),
    )
}

/// `next`: a `KeyName`, present when more keys follow.
fn next_schema() -> RefOr<Schema> {
    optional_ref("KeyName", "Present when more keys follow: pass as `after`.")
}
