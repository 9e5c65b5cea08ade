//! Identifiers, states and records shared by every layer. Pure data: no I/O, no crate imports.

pub mod job;
pub mod secret;

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// The immutable identifier of a key (a random UUID). Blobs carry it as 16 raw bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(Uuid);

impl KeyId {
    /// A fresh random key id.
    pub fn generate() -> Self {
        Self(Uuid::new_v4())
    }

    /// The id from the 16 bytes a blob carries.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(Uuid::from_bytes(bytes))
    }

    /// The 16 bytes a blob carries.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for KeyId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// Why a key name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidKeyName {
    /// Empty, or longer than [`KeyName::MAX_LEN`].
    #[error("a key name has 1 to {} characters", KeyName::MAX_LEN)]
    Length,
    /// A character outside `A-Z a-z 0-9 - _ .`, or a first character that is not alphanumeric.
    #[error("a key name starts with a letter or digit and contains only letters, digits, '-', '_' and '.'")]
    Charset,
    /// Names shaped like a key id would make `/v1/keys/{id-or-name}` ambiguous.
    #[error("a key name may not have the form of a key id (UUID)")]
    LooksLikeId,
}

/// A human-chosen, unique key name: `billing-master`, `app.v2`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct KeyName(String);

impl KeyName {
    /// The longest name accepted.
    pub const MAX_LEN: usize = 128;

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for KeyName {
    type Error = InvalidKeyName;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(InvalidKeyName::Length);
        }
        let first_ok = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
        let rest_ok = s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !first_ok || !rest_ok {
            return Err(InvalidKeyName::Charset);
        }
        if Uuid::parse_str(&s).is_ok() {
            return Err(InvalidKeyName::LooksLikeId);
        }
        Ok(Self(s))
    }
}

/// Reads a name and checks it, as [`KeyName::try_from`] does.
impl<'de> Deserialize<'de> for KeyName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::try_from(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How a request names a key: by id, by name, or by alias (`alias/<name>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRef {
    /// By immutable id.
    Id(KeyId),
    /// By unique name.
    Name(KeyName),
    /// By alias: a re-pointable name (`alias/billing-current`).
    Alias(KeyName),
}

/// The prefix that marks an alias where a key is expected.
pub const ALIAS_PREFIX: &str = "alias/";

impl FromStr for KeyRef {
    type Err = InvalidKeyName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(alias) = s.strip_prefix(ALIAS_PREFIX) {
            return KeyName::try_from(alias.to_owned()).map(Self::Alias);
        }
        match s.parse::<KeyId>() {
            Ok(id) => Ok(Self::Id(id)),
            Err(_) => KeyName::try_from(s.to_owned()).map(Self::Name),
        }
    }
}

impl fmt::Display for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Id(id) => id.fmt(f),
            Self::Name(name) => name.fmt(f),
            Self::Alias(alias) => write!(f, "{ALIAS_PREFIX}{alias}"),
        }
    }
}

/// An alias: a name that points at a key and can be re-pointed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Alias {
    /// The alias name (used as `alias/<name>`).
    pub name: KeyName,
    /// The key it points at.
    pub key_id: KeyId,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was last re-pointed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A key version number, starting at 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyVersion(NonZeroU32);

impl KeyVersion {
    /// Version 1, the one a new key starts with.
    pub const FIRST: Self = Self(NonZeroU32::MIN);

    /// The version with this number, if it is not zero.
    pub fn new(n: u32) -> Option<Self> {
        NonZeroU32::new(n).map(Self)
    }

    /// The version number.
    pub fn get(self) -> u32 {
        self.0.get()
    }
}

impl fmt::Display for KeyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The algorithm that sealed a blob. The blob records the algorithm, never a vendor mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// AES-256-GCM computed by the device with the version's root key; 96-bit IV, 128-bit tag,
    /// AAD = blob header ‖ canonical context.
    Aes256GcmDevice,
    /// Cached mode: RFC 5649 KWP in software under HKDF-SHA256(version-KEK, header ‖ nonce,
    /// canonical context); the version-KEK is wrapped by the device.
    Aes256KwpCached,
    /// TPM direct mode: RFC 5649 KWP under a single-use key that the TPM derives with
    /// `TPM2_HMAC` of the version key over nonce ‖ SHA-256(header ‖ canonical context).
    Aes256KwpTpmHmac,
}

impl Algorithm {
    /// The byte that names the algorithm in a blob header.
    pub fn code(self) -> u8 {
        match self {
            Self::Aes256GcmDevice => 0x01,
            Self::Aes256KwpCached => 0x02,
            Self::Aes256KwpTpmHmac => 0x03,
        }
    }

    /// The algorithm a header byte names, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0x01 => Some(Self::Aes256GcmDevice),
            0x02 => Some(Self::Aes256KwpCached),
            0x03 => Some(Self::Aes256KwpTpmHmac),
            _ => None,
        }
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aes256GcmDevice => "aes256_gcm_device",
            Self::Aes256KwpCached => "aes256_kwp_cached",
            Self::Aes256KwpTpmHmac => "aes256_kwp_tpm_hmac",
        }
    }

    /// The algorithm a stored name names.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Aes256GcmDevice,
            Self::Aes256KwpCached,
            Self::Aes256KwpTpmHmac,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }

    /// Bytes the sealed body adds beyond the plaintext: the GCM tag, or KWP's integrity block
    /// and padding (at least 8).
    pub fn min_body_len(self) -> usize {
        match self {
            Self::Aes256GcmDevice => 16,
            Self::Aes256KwpCached | Self::Aes256KwpTpmHmac => 16,
        }
    }
}

/// Which kind of device holds a key's root keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// A PKCS#11 token (SoftHSM2 in development, a vendor HSM in production).
    Pkcs11,
    /// A TPM 2.0 (swtpm in development, `/dev/tpmrm0` in production).
    Tpm,
}

impl BackendKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pkcs11 => "pkcs11",
            Self::Tpm => "tpm",
        }
    }

    /// The kind a stored name names.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pkcs11" => Some(Self::Pkcs11),
            "tpm" => Some(Self::Tpm),
            _ => None,
        }
    }
}

/// How data keys are wrapped under a key (DESIGN.md, key hierarchy).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WrapMode {
    /// The device wraps and unwraps every data key itself.
    Direct,
    /// The device wraps one version-KEK; data keys are wrapped in software under it while it
    /// is held in locked, zeroizing memory for at most the configured TTL.
    Cached,
}

impl WrapMode {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Cached => "cached",
        }
    }

    /// The mode a stored name names.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "direct" => Some(Self::Direct),
            "cached" => Some(Self::Cached),
            _ => None,
        }
    }
}

/// The lifecycle state of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// Usable for every operation its policy allows.
    Enabled,
    /// Neither wraps nor unwraps until enabled again.
    Disabled,
    /// Neither wraps nor unwraps; destroyed on its deletion date unless cancelled.
    PendingDeletion,
    /// Every version destroyed in the device. Final.
    Destroyed,
}

impl KeyState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "enabled",
            Self::Disabled => "disabled",
            Self::PendingDeletion => "pending_deletion",
            Self::Destroyed => "destroyed",
        }
    }

    /// The state a stored name names.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "enabled" => Some(Self::Enabled),
            "disabled" => Some(Self::Disabled),
            "pending_deletion" => Some(Self::PendingDeletion),
            "destroyed" => Some(Self::Destroyed),
            _ => None,
        }
    }
}

/// The state of one key version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionState {
    /// Wraps new data.
    Primary,
    /// Decrypts (and re-wraps) what it wrapped before; wraps nothing new.
    Active,
    /// Neither wraps nor unwraps until enabled again.
    Disabled,
    /// Its root key is destroyed in the device. Final.
    Destroyed,
}

impl VersionState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Active => "active",
            Self::Disabled => "disabled",
            Self::Destroyed => "destroyed",
        }
    }

    /// The state a stored name names.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "primary" => Some(Self::Primary),
            "active" => Some(Self::Active),
            "disabled" => Some(Self::Disabled),
            "destroyed" => Some(Self::Destroyed),
            _ => None,
        }
    }
}

/// Where a key version's root key lives in the device. The device object carries `device_id`
/// as `CKA_ID` and `label` as `CKA_LABEL`, so it maps back to this record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootKeyRef {
    /// The key this root key belongs to.
    pub key_id: KeyId,
    /// The version it implements.
    pub version: KeyVersion,
    /// What the store keeps for the device: a TPM key's blobs, a cached-mode wrapped KEK.
    pub material: RootMaterial,
}

/// What the store keeps beside a root key. Both parts are useless without the device: a TPM
/// key blob loads only in the TPM that made it; a wrapped KEK opens only under the root key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RootMaterial {
    /// The device's own blob of the root key (TPM: marshalled public ‖ private), if it has one.
    pub device_blob: Option<std::sync::Arc<[u8]>>,
    /// Cached mode: the version-KEK sealed by the root key (IV ‖ ciphertext).
    pub wrapped_kek: Option<std::sync::Arc<[u8]>>,
}

impl RootKeyRef {
    /// A reference without stored material (PKCS#11 direct mode, or a label lookup).
    pub fn bare(key_id: KeyId, version: KeyVersion) -> Self {
        Self {
            key_id,
            version,
            material: RootMaterial::default(),
        }
    }

    /// The `CKA_ID` of the device object: the key id's 16 bytes, then the version (u32 BE).
    pub fn device_id(&self) -> Vec<u8> {
        let mut id = Vec::with_capacity(20);
        id.extend_from_slice(self.key_id.as_bytes());
        id.extend_from_slice(&self.version.get().to_be_bytes());
        id
    }

    /// The `CKA_LABEL` of the device object.
    pub fn label(&self) -> String {
        format!("custodian:{}:v{}", self.key_id, self.version)
    }

    /// The reference a `CKA_ID` value encodes, if it is one of ours.
    pub fn from_device_id(id: &[u8]) -> Option<Self> {
        let key: [u8; 16] = id.get(..16)?.try_into().ok()?;
        let version: [u8; 4] = id.get(16..20)?.try_into().ok()?;
        if id.len() != 20 {
            return None;
        }
        Some(Self::bare(
            KeyId::from_bytes(key),
            KeyVersion::new(u32::from_be_bytes(version))?,
        ))
    }
}

/// One version of a key, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyVersionRecord {
    /// The version number.
    pub version: KeyVersion,
    /// Primary or active.
    pub state: VersionState,
    /// The algorithm new blobs under this version use.
    pub algorithm: Algorithm,
    /// When the root key was generated.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When its root key was destroyed, if it was.
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub destroyed_at: Option<OffsetDateTime>,
    /// Wraps reserved under this version so far (an upper bound of the wraps done).
    pub wraps_reserved: u64,
    /// Stored device material (never serialised: it is device-bound but still not for callers).
    #[serde(skip)]
    pub material: RootMaterial,
}

/// A key and its versions, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Key {
    /// Immutable id.
    pub id: KeyId,
    /// Unique name.
    pub name: KeyName,
    /// Free text for operators.
    pub description: String,
    /// Lifecycle state.
    pub state: KeyState,
    /// Which device kind holds the root keys.
    pub backend: BackendKind,
    /// How data keys are wrapped.
    pub mode: WrapMode,
    /// When the key was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The version that wraps new data.
    pub primary_version: KeyVersion,
    /// Versions below this no longer decrypt (they stay in the device until destroyed).
    pub min_decryption_version: KeyVersion,
    /// Automatic rotation interval, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation_period: Option<secret::HumanDuration>,
    /// When the next scheduled rotation is due.
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub next_rotation_at: Option<OffsetDateTime>,
    /// When a pending deletion takes effect.
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub deletion_date: Option<OffsetDateTime>,
    /// Why a due deletion was refused (e.g. stored data still references a version).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_blocked: Option<String>,
    /// When the key last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Every version, oldest first.
    pub versions: Vec<KeyVersionRecord>,
}

impl Key {
    /// The stored record of `version`, if the key has it.
    pub fn version(&self, version: KeyVersion) -> Option<&KeyVersionRecord> {
        self.versions.iter().find(|v| v.version == version)
    }

    /// The root key that wraps new data under this key.
    pub fn primary_root(&self) -> RootKeyRef {
        self.root(self.primary_version)
    }

    /// The root key of `version`, with its stored material (none when the key has no such
    /// version: the device call then fails by name).
    pub fn root(&self, version: KeyVersion) -> RootKeyRef {
        RootKeyRef {
            key_id: self.id,
            version,
            material: self
                .version(version)
                .map(|v| v.material.clone())
                .unwrap_or_default(),
        }
    }
}

/// A bearer token as stored: its public id, the principal it authenticates, and a hash of its
/// secret part. The secret itself is never stored.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Public id, the lookup key (`cst_<id>_…`).
    pub id: String,
    /// The principal the token authenticates.
    pub principal: String,
    /// SHA-256 over the domain-separated token secret.
    pub secret_hash: [u8; 32],
    /// Free text.
    pub description: String,
    /// When it was minted.
    pub created_at: OffsetDateTime,
    /// When it stops working, if ever.
    pub expires_at: Option<OffsetDateTime>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<OffsetDateTime>,
}

/// A token's metadata as shown by the API (never its secret or hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    /// Public id.
    pub id: String,
    /// The principal it authenticates.
    pub principal: String,
    /// Free text.
    pub description: String,
    /// When it was minted.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it stops working, if ever.
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_at: Option<OffsetDateTime>,
    /// When it was revoked, if it was.
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub revoked_at: Option<OffsetDateTime>,
}

impl From<&TokenRecord> for TokenInfo {
    fn from(t: &TokenRecord) -> Self {
        Self {
            id: t.id.clone(),
            principal: t.principal.clone(),
            description: t.description.clone(),
            created_at: t.created_at,
            expires_at: t.expires_at,
            revoked_at: t.revoked_at,
        }
    }
}

/// An AWS SigV4 access key as stored (issue 16): its public id, the principal it authenticates,
/// and its secret sealed under a Custodian key (a ciphertext blob bound to the id). The secret
/// is never stored in clear: verifying a signature needs it, so it is unwrapped by the device.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKeyRecord {
    /// Public id, the lookup key (`CKIA…`, 20 characters).
    pub id: String,
    /// The principal the key authenticates.
    pub principal: String,
    /// Free text.
    pub description: String,
    /// The secret access key, sealed (a ciphertext blob naming `key_id` and `key_version`).
    pub sealed_secret: Vec<u8>,
    /// The key that sealed it.
    pub key_id: KeyId,
    /// Its version (the record counts as a reference to it until revoked).
    pub key_version: KeyVersion,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it stops working, if ever.
    pub expires_at: Option<OffsetDateTime>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<OffsetDateTime>,
}

impl fmt::Debug for AccessKeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKeyRecord")
            .field("id", &self.id)
            .field("principal", &self.principal)
            .field("key_id", &self.key_id)
            .field("key_version", &self.key_version)
            .field(
                "sealed_secret",
                &format_args!("[{} bytes]", self.sealed_secret.len()),
            )
            .finish_non_exhaustive()
    }
}

/// An access key's metadata as shown by the API (never its secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AccessKeyInfo {
    /// Public id (`access_key_id`).
    pub id: String,
    /// The principal it authenticates.
    pub principal: String,
    /// Free text.
    pub description: String,
    /// The key its secret is sealed under.
    pub key_id: KeyId,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it stops working, if ever.
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_at: Option<OffsetDateTime>,
    /// When it was revoked, if it was.
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub revoked_at: Option<OffsetDateTime>,
}

impl From<&AccessKeyRecord> for AccessKeyInfo {
    fn from(a: &AccessKeyRecord) -> Self {
        Self {
            id: a.id.clone(),
            principal: a.principal.clone(),
            description: a.description.clone(),
            key_id: a.key_id,
            created_at: a.created_at,
            expires_at: a.expires_at,
            revoked_at: a.revoked_at,
        }
    }
}

/// A principal: a named identity with attributes and attached policies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PrincipalRecord {
    /// Unique name (key-name rules).
    pub name: KeyName,
    /// Attributes for `${principal.<attr>}` conditions.
    pub attributes: std::collections::BTreeMap<String, String>,
    /// Attached policy names, evaluated in this order.
    pub policies: Vec<KeyName>,
    /// When created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A stored policy document and its version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyRecord {
    /// Unique name (key-name rules).
    pub name: KeyName,
    /// Version, from 1; every write adds one (a policy written again after a delete goes on
    /// from its last version: the history keeps every one).
    pub version: u32,
    /// The document as JSON.
    pub document: serde_json::Value,
    /// When the first version was written.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When this version was written.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl fmt::Debug for TokenRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRecord")
            .field("id", &self.id)
            .field("principal", &self.principal)
            .field("secret_hash", &"[REDACTED]")
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_are_validated() {
        assert!(KeyName::try_from("billing-master.v2_x".to_owned()).is_ok());
        assert_eq!(
            KeyName::try_from(String::new()),
            Err(InvalidKeyName::Length)
        );
        assert_eq!(
            KeyName::try_from("a".repeat(129)),
            Err(InvalidKeyName::Length)
        );
        assert_eq!(
            KeyName::try_from("-x".to_owned()),
            Err(InvalidKeyName::Charset)
        );
        assert_eq!(
            KeyName::try_from("a b".to_owned()),
            Err(InvalidKeyName::Charset)
        );
        assert_eq!(
            KeyName::try_from("a/b".to_owned()),
            Err(InvalidKeyName::Charset)
        );
        let uuid = KeyId::generate().to_string();
        assert_eq!(KeyName::try_from(uuid), Err(InvalidKeyName::LooksLikeId));
    }

    #[test]
    fn key_ref_prefers_ids() {
        let id = KeyId::generate();
        assert_eq!(id.to_string().parse::<KeyRef>(), Ok(KeyRef::Id(id)));
        assert!(matches!("billing".parse::<KeyRef>(), Ok(KeyRef::Name(_))));
        assert!("bad name".parse::<KeyRef>().is_err());
        assert!(matches!(
            "alias/current".parse::<KeyRef>(),
            Ok(KeyRef::Alias(_))
        ));
        assert!("alias/".parse::<KeyRef>().is_err());
        assert!("alias/a/b".parse::<KeyRef>().is_err());
    }

    #[test]
    fn device_ids_round_trip_and_reject_foreign_ids() {
        let r = RootKeyRef::bare(
            KeyId::generate(),
            KeyVersion::new(7).unwrap_or(KeyVersion::FIRST),
        );
        assert_eq!(RootKeyRef::from_device_id(&r.device_id()), Some(r.clone()));
        assert_eq!(RootKeyRef::from_device_id(&r.device_id()[..19]), None);
        let mut long = r.device_id();
        long.push(0);
        assert_eq!(RootKeyRef::from_device_id(&long), None);
        let mut zero = r.device_id();
        zero[16..20].copy_from_slice(&[0; 4]);
        assert_eq!(RootKeyRef::from_device_id(&zero), None);
    }

    #[test]
    fn algorithm_codes_round_trip() {
        let a = Algorithm::Aes256GcmDevice;
        assert_eq!(Algorithm::from_code(a.code()), Some(a));
        assert_eq!(Algorithm::from_code(0), None);
        assert_eq!(Algorithm::from_code(0xff), None);
    }
}
