//! Secrets: paths, version states, metadata, generation specs and human-readable durations.
//! Pure data and validation; no I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{KeyId, KeyVersion};

/// Why a secret path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSecretPath {
    /// Empty, or longer than [`SecretPath::MAX_LEN`] bytes.
    #[error("a secret path has 1 to {} bytes", SecretPath::MAX_LEN)]
    Length,
    /// More than [`SecretPath::MAX_DEPTH`] segments.
    #[error("a secret path has at most {} segments", SecretPath::MAX_DEPTH)]
    Depth,
    /// An empty segment (`a//b`, a leading or trailing `/`).
    #[error("a secret path has no empty segments")]
    EmptySegment,
    /// `.` or `..`.
    #[error("a secret path has no '.' or '..' segments")]
    DotSegment,
    /// A segment longer than [`SecretPath::MAX_SEGMENT_LEN`].
    #[error(
        "a secret path segment has at most {} bytes",
        SecretPath::MAX_SEGMENT_LEN
    )]
    SegmentLength,
    /// A character outside `A-Z a-z 0-9 - _ .`.
    #[error("a secret path segment contains only letters, digits, '-', '_' and '.'")]
    Charset,
    /// The last segment is one of the route words (`metadata`, `undelete`, `destroy`, `rotate`).
    #[error("a secret path may not end in a reserved word ({})", SecretPath::RESERVED.join(", "))]
    Reserved,
}

/// A secret's path: `team/app/db-password`. Segments of letters, digits, `-`, `_`, `.`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct SecretPath(String);

impl SecretPath {
    /// Longest path, in bytes.
    pub const MAX_LEN: usize = 512;
    /// Most segments.
    pub const MAX_DEPTH: usize = 16;
    /// Longest segment, in bytes.
    pub const MAX_SEGMENT_LEN: usize = 128;
    /// Last segments that name sub-resources in the API and so cannot end a path.
    pub const RESERVED: &'static [&'static str] = &["metadata", "undelete", "destroy", "rotate"];

    /// The first segment of the paths under which Custodian keeps secrets of its own (database
    /// passwords). `:` is outside the characters a request may use, so no request can name,
    /// read or overwrite them; only the service builds them ([`SecretPath::internal`]).
    pub const INTERNAL_ROOT: &'static str = "custodian:db";

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `custodian:db/<rest>`, a path of Custodian's own, where `rest` follows the rules of a
    /// request's path (one segment less, to leave room for the root).
    ///
    /// # Errors
    /// As [`SecretPath::try_from`] for `rest`.
    pub fn internal(rest: &str) -> Result<Self, InvalidSecretPath> {
        let checked = Self::try_from(rest.to_owned())?;
        if checked.0.split('/').count() >= Self::MAX_DEPTH
            || checked.0.len() + Self::INTERNAL_ROOT.len() + 1 > Self::MAX_LEN
        {
            return Err(InvalidSecretPath::Depth);
        }
        Ok(Self(format!("{}/{}", Self::INTERNAL_ROOT, checked.0)))
    }

    /// A path read back from the store: a request's path or one of Custodian's own.
    ///
    /// # Errors
    /// As [`SecretPath::try_from`].
    pub fn from_stored(s: String) -> Result<Self, InvalidSecretPath> {
        match s
            .strip_prefix(Self::INTERNAL_ROOT)
            .and_then(|r| r.strip_prefix('/'))
        {
            Some(rest) => Self::internal(rest),
            None => Self::try_from(s),
        }
    }

    /// Whether this is one of Custodian's own paths (never listed to a caller).
    pub fn is_internal(&self) -> bool {
        self.0
            .strip_prefix(Self::INTERNAL_ROOT)
            .is_some_and(|r| r.starts_with('/'))
    }
}

impl TryFrom<String> for SecretPath {
    type Error = InvalidSecretPath;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(InvalidSecretPath::Length);
        }
        let segments: Vec<&str> = s.split('/').collect();
        if segments.len() > Self::MAX_DEPTH {
            return Err(InvalidSecretPath::Depth);
        }
        for seg in &segments {
            if seg.is_empty() {
                return Err(InvalidSecretPath::EmptySegment);
            }
            if *seg == "." || *seg == ".." {
                return Err(InvalidSecretPath::DotSegment);
            }
            if seg.len() > Self::MAX_SEGMENT_LEN {
                return Err(InvalidSecretPath::SegmentLength);
            }
            if !seg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(InvalidSecretPath::Charset);
            }
        }
        if segments.last().is_some_and(|l| Self::RESERVED.contains(l)) {
            return Err(InvalidSecretPath::Reserved);
        }
        Ok(Self(s))
    }
}

/// Reads a path and checks it, as [`SecretPath::try_from`] does.
impl<'de> Deserialize<'de> for SecretPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::try_from(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for SecretPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The state of one secret version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretVersionState {
    /// Readable.
    Live,
    /// Soft-deleted: hidden, restorable.
    Deleted,
    /// Ciphertext and wrapped data key erased for good.
    Destroyed,
}

impl SecretVersionState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Deleted => "deleted",
            Self::Destroyed => "destroyed",
        }
    }

    /// The state a stored name names.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "live" => Some(Self::Live),
            "deleted" => Some(Self::Deleted),
            "destroyed" => Some(Self::Destroyed),
            _ => None,
        }
    }
}

/// Characters a generated secret is drawn from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Charset {
    /// `A-Z a-z 0-9`
    Alphanumeric,
    /// `0-9 a-f`
    Hex,
    /// The base64 alphabet `A-Z a-z 0-9 + /`
    Base64,
    /// Printable ASCII without space: `!` to `~`.
    Printable,
}

impl Charset {
    /// The alphabet.
    pub fn alphabet(self) -> Vec<u8> {
        match self {
            Self::Alphanumeric => (b'A'..=b'Z')
                .chain(b'a'..=b'z')
                .chain(b'0'..=b'9')
                .collect(),
            Self::Hex => (b'0'..=b'9').chain(b'a'..=b'f').collect(),
            Self::Base64 => (b'A'..=b'Z')
                .chain(b'a'..=b'z')
                .chain(b'0'..=b'9')
                .chain([b'+', b'/'])
                .collect(),
            Self::Printable => (b'!'..=b'~').collect(),
        }
    }
}

/// How a generated secret is made and how often it rotates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateSpec {
    /// Characters in each value (1 to [`GenerateSpec::MAX_LENGTH`]).
    pub length: u32,
    /// Alphabet.
    pub charset: Charset,
    /// Interval between automatic rotations (at least 1s: durations are whole, non-zero seconds).
    pub rotate_every: HumanDuration,
}

impl GenerateSpec {
    /// Longest generated value.
    pub const MAX_LENGTH: u32 = 4096;
}

/// A duration written for people: `90d`, `12h`, `1h30m`, `45s` (units d, h, m, s).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

/// Why a duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a duration is one or more <number><unit> parts with units d, h, m, s (e.g. 90d, 1h30m)")]
pub struct InvalidDuration;

impl HumanDuration {
    /// Longest duration accepted (100 years), so arithmetic on dates never overflows.
    pub const MAX: Duration = Duration::from_secs(100 * 365 * 86_400);

    /// Parses `90d`, `1h30m`, `45s`.
    ///
    /// # Errors
    /// [`InvalidDuration`] for anything else, zero, or more than [`HumanDuration::MAX`].
    pub fn parse(s: &str) -> Result<Self, InvalidDuration> {
        let mut total: u64 = 0;
        let mut number: Option<u64> = None;
        for c in s.chars() {
            if let Some(d) = c.to_digit(10) {
                let n = number
                    .unwrap_or(0)
                    .checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(d)));
                number = Some(n.ok_or(InvalidDuration)?);
                continue;
            }
            let unit = match c {
                'd' => 86_400,
                'h' => 3_600,
                'm' => 60,
                's' => 1,
                _ => return Err(InvalidDuration),
            };
            let n = number.take().ok_or(InvalidDuration)?;
            total = n
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or(InvalidDuration)?;
        }
        if number.is_some() || total == 0 || total > Self::MAX.as_secs() {
            return Err(InvalidDuration);
        }
        Ok(Self(Duration::from_secs(total)))
    }

    /// The canonical text: largest units first (`1d2h`, `90s` → `1m30s`).
    pub fn to_text(self) -> String {
        let mut left = self.0.as_secs();
        let mut out = String::new();
        for (unit, name) in [(86_400, 'd'), (3_600, 'h'), (60, 'm'), (1, 's')] {
            if left >= unit {
                out.push_str(&format!("{}{name}", left / unit));
                left %= unit;
            }
        }
        out
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_text())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Custom string metadata on a secret: at most 32 pairs, keys 1–128 bytes, values ≤ 1024 bytes.
pub type CustomMetadata = BTreeMap<String, String>;

/// Checks the bounds of custom metadata.
///
/// # Errors
/// A message naming the bound that is broken.
pub fn check_custom_metadata(m: &CustomMetadata) -> Result<(), &'static str> {
    if m.len() > 32 {
        return Err("custom metadata has at most 32 pairs");
    }
    if m.iter()
        .any(|(k, v)| k.is_empty() || k.len() > 128 || v.len() > 1024)
    {
        return Err("custom metadata keys have 1 to 128 bytes and values at most 1024");
    }
    Ok(())
}

/// One version of a secret, as stored (without its ciphertext).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SecretVersionInfo {
    /// Version number, from 1.
    pub version: u32,
    /// Live, deleted or destroyed.
    pub state: SecretVersionState,
    /// When it was written.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was soft-deleted, if it is.
    #[serde(with = "time::serde::rfc3339::option")]
    pub deleted_at: Option<OffsetDateTime>,
    /// When it was destroyed, if it was.
    #[serde(with = "time::serde::rfc3339::option")]
    pub destroyed_at: Option<OffsetDateTime>,
    /// The key that wraps its data key (absent once destroyed).
    pub key_id: Option<KeyId>,
    /// The key version that wraps its data key (absent once destroyed).
    pub key_version: Option<KeyVersion>,
}

/// A secret's metadata and version history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SecretRecord {
    /// The path.
    pub path: SecretPath,
    /// The key that wraps new versions' data keys.
    pub key_id: KeyId,
    /// The highest version number written so far (0 when none).
    pub current_version: u32,
    /// Versions kept before the oldest are destroyed (0 = unlimited).
    pub max_versions: u32,
    /// Versions older than this are no longer returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_after: Option<HumanDuration>,
    /// Free string metadata.
    pub custom: CustomMetadata,
    /// Generation and rotation, for generated secrets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generate: Option<GenerateSpec>,
    /// When the next automatic rotation is due.
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub next_rotation_at: Option<OffsetDateTime>,
    /// When the path was first written.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the path or its metadata last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Every version, oldest first.
    pub versions: Vec<SecretVersionInfo>,
}

impl SecretRecord {
    /// The version `n`, if it exists.
    pub fn version(&self, n: u32) -> Option<&SecretVersionInfo> {
        self.versions.iter().find(|v| v.version == n)
    }

    /// The newest live version, if any.
    pub fn latest_live(&self) -> Option<&SecretVersionInfo> {
        self.versions
            .iter()
            .rev()
            .find(|v| v.state == SecretVersionState::Live)
    }

    /// True when `v` is past the secret's `expires_after` at `now`.
    pub fn is_expired(&self, v: &SecretVersionInfo, now: OffsetDateTime) -> bool {
        self.expires_after
            .is_some_and(|d| now - v.created_at >= d.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_paths_cannot_be_named_by_a_request() {
        let own = SecretPath::internal("orders/roles/app").unwrap();
        assert_eq!(own.as_str(), "custodian:db/orders/roles/app");
        assert!(own.is_internal());
        // A request's parser refuses it; only the store's reader takes it back.
        assert!(SecretPath::try_from(own.as_str().to_owned()).is_err());
        assert_eq!(
            SecretPath::from_stored(own.as_str().to_owned()).unwrap(),
            own
        );
        assert!(!SecretPath::try_from("custodian/db".to_owned())
            .unwrap()
            .is_internal());
        // The rest follows a request's rules.
        assert!(SecretPath::internal("orders/../x").is_err());
        assert!(SecretPath::internal("a\"b").is_err());
        assert!(SecretPath::from_stored("custodian:db/".to_owned()).is_err());
        assert!(SecretPath::from_stored("custodian:dbx/a".to_owned()).is_err());
        let deep = vec!["s"; SecretPath::MAX_DEPTH].join("/");
        assert!(SecretPath::try_from(deep.clone()).is_ok());
        assert!(SecretPath::internal(&deep).is_err());
    }

    fn path(s: &str) -> Result<SecretPath, InvalidSecretPath> {
        SecretPath::try_from(s.to_owned())
    }

    #[test]
    fn paths_are_validated() {
        assert!(path("team/app/db-password").is_ok());
        assert!(path("a.b_c-d/E9").is_ok());
        assert_eq!(path(""), Err(InvalidSecretPath::Length));
        assert_eq!(path(&"a".repeat(513)), Err(InvalidSecretPath::Length));
        assert_eq!(path("a//b"), Err(InvalidSecretPath::EmptySegment));
        assert_eq!(path("/a"), Err(InvalidSecretPath::EmptySegment));
        assert_eq!(path("a/"), Err(InvalidSecretPath::EmptySegment));
        assert_eq!(path("a/../b"), Err(InvalidSecretPath::DotSegment));
        assert_eq!(path("./a"), Err(InvalidSecretPath::DotSegment));
        assert_eq!(path("a b"), Err(InvalidSecretPath::Charset));
        assert_eq!(path("a/%2e"), Err(InvalidSecretPath::Charset));
        assert_eq!(
            path(&"s".repeat(129)),
            Err(InvalidSecretPath::SegmentLength)
        );
        assert_eq!(
            path(&vec!["a"; 17].join("/")),
            Err(InvalidSecretPath::Depth)
        );
        assert!(path(&vec!["a"; 16].join("/")).is_ok());
        assert_eq!(path("app/metadata"), Err(InvalidSecretPath::Reserved));
        assert!(path("metadata/app").is_ok());
    }

    #[test]
    fn durations_parse_and_print() {
        assert_eq!(
            HumanDuration::parse("90d").unwrap().0,
            Duration::from_secs(90 * 86_400)
        );
        assert_eq!(
            HumanDuration::parse("1h30m").unwrap().0,
            Duration::from_secs(5_400)
        );
        assert_eq!(
            HumanDuration::parse("2s").unwrap().0,
            Duration::from_secs(2)
        );
        assert_eq!(HumanDuration::parse("90s").unwrap().to_text(), "1m30s");
        for bad in [
            "",
            "0s",
            "10",
            "h",
            "1x",
            "1h 2m",
            "-1s",
            "99999999999999999999d",
            "36600d",
        ] {
            assert!(HumanDuration::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn charsets_have_the_documented_alphabets() {
        assert_eq!(Charset::Alphanumeric.alphabet().len(), 62);
        assert_eq!(Charset::Hex.alphabet().len(), 16);
        assert_eq!(Charset::Base64.alphabet().len(), 64);
        assert_eq!(Charset::Printable.alphabet().len(), 94);
    }

    #[test]
    fn custom_metadata_is_bounded() {
        let mut m = CustomMetadata::new();
        m.insert("owner".into(), "team-a".into());
        assert!(check_custom_metadata(&m).is_ok());
        m.insert(String::new(), "x".into());
        assert!(check_custom_metadata(&m).is_err());
        let many: CustomMetadata = (0..33).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(check_custom_metadata(&many).is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Validation is total, and an accepted path never escapes its place.
            #[test]
            fn path_validation_is_total(s in "\\PC{0,40}") {
                if let Ok(p) = SecretPath::try_from(s) {
                    prop_assert!(p.as_str().split('/').all(|seg| !seg.is_empty() && seg != "." && seg != ".."));
                }
            }

            /// Duration parsing is total; what parses prints and re-parses to the same duration.
            #[test]
            fn durations_round_trip(s in "[0-9dhms]{0,12}") {
                if let Ok(d) = HumanDuration::parse(&s) {
                    prop_assert_eq!(HumanDuration::parse(&d.to_text()), Ok(d));
                }
            }
        }
    }
}
