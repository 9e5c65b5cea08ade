//! One audit record, its canonical encoding and its place in the hash chain.
//!
//! The chain hash of a record is
//! `SHA-256("custodian-audit-record/v1" ‖ 0x00 ‖ prev_hash ‖ fields)`, where `prev_hash` is the
//! 32 raw bytes of the previous record's hash (32 zero bytes before the first record) and
//! `fields` is every field below, in this order, each encoded as a 4-byte big-endian length
//! followed by its UTF-8 bytes (an absent field is the length `0xFFFFFFFF` and no bytes; a list
//! is a 4-byte count followed by its elements encoded the same way). Numbers are decimal ASCII.
//! A record with [`AuditEntry::details`] appends them after the two lists: a 4-byte count, then
//! each name and value encoded as a field, in name order; a record without details appends
//! nothing, so records written before details existed keep their hashes.
//! `docs/audit.md` gives the same construction for auditors.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Domain separation prefix of the record hash.
pub const RECORD_DOMAIN: &[u8] = b"custodian-audit-record/v1\0";

/// The chain value before the first record.
pub const GENESIS: [u8; 32] = [0; 32];

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// 2xx: it was done.
    Success,
    /// 403: policy denied it.
    Denied,
    /// 401 or 429: no valid credential.
    Unauthenticated,
    /// Any other 4xx: the request was malformed or named something absent.
    Rejected,
    /// 5xx: a dependency or the service failed.
    Failed,
    /// Announces a change to stored state that is about to be made: written before the
    /// change, durably, and followed by the record of the same request id with the final
    /// outcome. An announcement without that record means the outcome is unknown (the process
    /// stopped, or the final record could not be written): the change may have been made.
    Pending,
}

impl Outcome {
    /// The outcome an HTTP status stands for.
    pub fn from_status(status: u16) -> Self {
        match status {
            200..=399 => Self::Success,
            401 | 429 => Self::Unauthenticated,
            403 => Self::Denied,
            400..=499 => Self::Rejected,
            _ => Self::Failed,
        }
    }

    /// The name used in records and filters.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Denied => "denied",
            Self::Unauthenticated => "unauthenticated",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
            Self::Pending => "pending",
        }
    }

    /// The outcome named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Success,
            Self::Denied,
            Self::Unauthenticated,
            Self::Rejected,
            Self::Failed,
            Self::Pending,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

/// Everything a record says about a request, before it has a place in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When the request finished, RFC 3339 UTC with microseconds (`…T12:00:00.000000Z`).
    pub time: String,
    /// The node that served it.
    pub node: String,
    /// The request id (the `x-request-id` response header).
    pub request_id: String,
    /// HTTP method.
    pub method: String,
    /// The route template that matched (`/v1/keys/{key}/datakey`), or `(unmatched)` when none
    /// did (never the raw path: it is caller input of any shape).
    pub route: String,
    /// The authenticated principal.
    pub principal: Option<String>,
    /// The id of the credential that authenticated it (never the credential).
    pub credential: Option<String>,
    /// The source address.
    pub source: Option<String>,
    /// The policy action asked for (the denied one, when one was denied).
    pub action: Option<String>,
    /// The resource it was asked for (`key/orders`, `secret/app/db`).
    pub resource: Option<String>,
    /// The key used.
    pub key_id: Option<String>,
    /// The key version used.
    pub key_version: Option<u32>,
    /// Further keys the request used (`reencrypt`), as `id/vN`.
    pub other_keys: Vec<String>,
    /// What became of it.
    pub outcome: Outcome,
    /// HTTP status.
    pub status: u16,
    /// The stable error code, on failure.
    pub error_code: Option<String>,
    /// Hex SHA-256 of the canonical encoding of the encryption context, when one was sent.
    pub context_digest: Option<String>,
    /// The context's key names (never its values).
    pub context_keys: Vec<String>,
    /// Further named facts, sorted by name: `destination_context_digest` and
    /// `destination_context_keys` (`reencrypt`), `count`, `first_seen`, `last_seen` (an
    /// aggregate of throttled requests). Names and values are never secrets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
}

/// A record: an entry with its sequence number and chain hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the log, from 1, without gaps.
    pub sequence: u64,
    /// The request.
    #[serde(flatten)]
    pub entry: AuditEntry,
    /// Hex hash of the previous record.
    pub prev_hash: String,
    /// Hex hash of this record.
    pub hash: String,
}

impl AuditRecord {
    /// Chains `entry` at `sequence` after `prev`.
    pub fn chain(sequence: u64, entry: AuditEntry, prev: &[u8; 32]) -> Self {
        let hash = record_hash(sequence, &entry, prev);
        Self {
            sequence,
            entry,
            prev_hash: hex::encode(prev),
            hash: hex::encode(hash),
        }
    }

    /// The hash this record should carry, recomputed from its fields and its `prev_hash`, or
    /// `None` when `prev_hash` is not 32 bytes of hex.
    pub fn recompute(&self) -> Option<[u8; 32]> {
        let prev = decode_hash(&self.prev_hash)?;
        Some(record_hash(self.sequence, &self.entry, &prev))
    }

    /// The hash as bytes, or `None` when it is not 32 bytes of hex.
    pub fn hash_bytes(&self) -> Option<[u8; 32]> {
        decode_hash(&self.hash)
    }
}

/// 32 bytes from 64 hex digits.
pub fn decode_hash(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// A stored record as the chain's re-check sees it: its sequence, its stored `prev_hash` and
/// `hash` (`None` where not 32 bytes of hex), and the hash its stored fields give after its
/// `prev_hash` (`None` where that is not hex), as [`AuditRecord::recompute`] gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredHashes {
    /// The record's sequence.
    pub sequence: u64,
    /// Its stored `prev_hash`.
    pub prev_hash: Option<[u8; 32]>,
    /// Its stored `hash`.
    pub hash: Option<[u8; 32]>,
    /// The hash recomputed from its stored fields.
    pub recomputed: Option<[u8; 32]>,
}

impl StoredHashes {
    /// The hashes of a record read whole.
    pub fn of(r: &AuditRecord) -> Self {
        Self {
            sequence: r.sequence,
            prev_hash: decode_hash(&r.prev_hash),
            hash: r.hash_bytes(),
            recomputed: r.recompute(),
        }
    }
}

/// The chain hash fed field by field, in the order of the module docs: what [`record_hash`]
/// computes from an entry, and what a store may compute from a stored row's columns without
/// building the entry first.
pub struct FieldHasher(Sha256);

impl FieldHasher {
    /// Starts the hash of the record after `prev`.
    pub fn new(prev: &[u8; 32]) -> Self {
        let mut h = Sha256::new();
        h.update(RECORD_DOMAIN);
        h.update(prev);
        Self(h)
    }

    /// One field, or an absent one.
    pub fn field(&mut self, field: Option<&str>) {
        match field {
            Some(s) => {
                self.0.update(field_len(s.len()).to_be_bytes());
                self.0.update(s.as_bytes());
            }
            None => self.0.update(u32::MAX.to_be_bytes()),
        }
    }

    /// A number, as its decimal digits.
    pub fn number(&mut self, n: u64) {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut rest = n;
        loop {
            at -= 1;
            // A digit: `rest % 10` is below 10.
            digits[at] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        self.field(std::str::from_utf8(&digits[at..]).ok());
    }

    /// A list: its count, then each element as a field.
    pub fn list<'a>(&mut self, items: impl ExactSizeIterator<Item = &'a str>) {
        self.0.update(field_len(items.len()).to_be_bytes());
        for s in items {
            self.field(Some(s));
        }
    }

    /// The details, in name order; nothing at all when there are none.
    pub fn details<'a>(&mut self, pairs: impl ExactSizeIterator<Item = (&'a str, &'a str)>) {
        if pairs.len() == 0 {
            return;
        }
        self.0.update(field_len(pairs.len()).to_be_bytes());
        for (name, value) in pairs {
            self.field(Some(name));
            self.field(Some(value));
        }
    }

    /// The hash.
    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

/// The chain hash of `entry` at `sequence` after `prev` (module docs).
pub fn record_hash(sequence: u64, entry: &AuditEntry, prev: &[u8; 32]) -> [u8; 32] {
    let mut h = FieldHasher::new(prev);
    h.number(sequence);
    for field in [
        &entry.time,
        &entry.node,
        &entry.request_id,
        &entry.method,
        &entry.route,
    ] {
        h.field(Some(field));
    }
    for field in [
        &entry.principal,
        &entry.credential,
        &entry.source,
        &entry.action,
        &entry.resource,
        &entry.key_id,
    ] {
        h.field(field.as_deref());
    }
    match entry.key_version {
        Some(v) => h.number(u64::from(v)),
        None => h.field(None),
    }
    h.field(Some(entry.outcome.as_str()));
    h.number(u64::from(entry.status));
    h.field(entry.error_code.as_deref());
    h.field(entry.context_digest.as_deref());
    h.list(entry.context_keys.iter().map(String::as_str));
    h.list(entry.other_keys.iter().map(String::as_str));
    h.details(entry.details.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    h.finish()
}

/// A length as the encoding's u32. Fields are bounded far below 4 GiB by the request limits;
/// a longer one would saturate, which still changes the hash and cannot collide with "absent"
/// because `u32::MAX - 1` is the largest length written.
fn field_len(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX - 1).min(u32::MAX - 1)
}

/// The time format of records: RFC 3339, UTC, microseconds.
pub fn format_time(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn entry() -> AuditEntry {
        AuditEntry {
            time: "2026-11-27T12:00:00.000000Z".into(),
            node: "n1".into(),
            request_id: "r1".into(),
            method: "POST".into(),
            route: "/v1/keys/{key}/datakey".into(),
            principal: Some("app".into()),
            credential: Some("tok_1".into()),
            source: Some("127.0.0.1".into()),
            action: Some("datakey:generate".into()),
            resource: Some("key/orders".into()),
            key_id: Some("k".into()),
            key_version: Some(1),
            other_keys: vec![],
            outcome: Outcome::Success,
            status: 200,
            error_code: None,
            context_digest: None,
            context_keys: vec!["tenant".into()],
            details: BTreeMap::new(),
        }
    }

    #[test]
    fn every_field_is_bound() {
        let base = record_hash(1, &entry(), &GENESIS);
        let mut changed = Vec::new();
        let mut e = entry();
        e.principal = None;
        changed.push(e);
        let mut e = entry();
        e.principal = Some(String::new());
        changed.push(e);
        let mut e = entry();
        e.key_version = Some(2);
        changed.push(e);
        let mut e = entry();
        e.context_keys = vec![];
        changed.push(e);
        let mut e = entry();
        e.other_keys = vec!["tenant".into()];
        e.context_keys = vec![];
        changed.push(e);
        let mut e = entry();
        e.outcome = Outcome::Denied;
        changed.push(e);
        let mut e = entry();
        e.details.insert("count".into(), "1".into());
        changed.push(e);
        let mut e = entry();
        e.details.insert("count".into(), "2".into());
        changed.push(e);
        let mut e = entry();
        e.details.insert("counts".into(), "1".into());
        changed.push(e);
        for e in &changed {
            assert_ne!(record_hash(1, e, &GENESIS), base, "{e:?}");
        }
        assert_ne!(record_hash(2, &entry(), &GENESIS), base);
        assert_ne!(record_hash(1, &entry(), &[1; 32]), base);
    }

    #[test]
    fn adjacent_fields_cannot_trade_bytes() {
        let mut a = entry();
        a.principal = Some("ab".into());
        a.credential = Some("c".into());
        let mut b = entry();
        b.principal = Some("a".into());
        b.credential = Some("bc".into());
        assert_ne!(record_hash(1, &a, &GENESIS), record_hash(1, &b, &GENESIS));
    }

    #[test]
    fn details_cannot_trade_bytes_and_absent_details_add_nothing() {
        let mut a = entry();
        a.details.insert("ab".into(), "c".into());
        let mut b = entry();
        b.details.insert("a".into(), "bc".into());
        assert_ne!(record_hash(1, &a, &GENESIS), record_hash(1, &b, &GENESIS));
        // A record without details hashes as records did before details existed: its hash is
        // the one pinned here (computed by the construction in `docs/audit.md` without them).
        let mut h = Sha256::new();
        h.update(RECORD_DOMAIN);
        h.update(GENESIS);
        let e = entry();
        let fields: [Option<String>; 17] = [
            Some("1".into()),
            Some(e.time.clone()),
            Some(e.node.clone()),
            Some(e.request_id.clone()),
            Some(e.method.clone()),
            Some(e.route.clone()),
            e.principal.clone(),
            e.credential.clone(),
            e.source.clone(),
            e.action.clone(),
            e.resource.clone(),
            e.key_id.clone(),
            e.key_version.map(|v| v.to_string()),
            Some(e.outcome.as_str().into()),
            Some(e.status.to_string()),
            e.error_code.clone(),
            e.context_digest.clone(),
        ];
        for f in &fields {
            match f {
                Some(s) => {
                    h.update((s.len() as u32).to_be_bytes());
                    h.update(s.as_bytes());
                }
                None => h.update(u32::MAX.to_be_bytes()),
            }
        }
        h.update(1u32.to_be_bytes());
        h.update(6u32.to_be_bytes());
        h.update(b"tenant");
        h.update(0u32.to_be_bytes());
        let expected: [u8; 32] = h.finalize().into();
        assert_eq!(record_hash(1, &e, &GENESIS), expected);
    }

    #[test]
    fn recompute_matches_chain() {
        let r = AuditRecord::chain(7, entry(), &[9; 32]);
        assert_eq!(r.recompute(), r.hash_bytes());
        let mut t = r.clone();
        t.entry.status = 500;
        assert_ne!(t.recompute(), t.hash_bytes());
    }

    #[test]
    fn outcomes_from_status() {
        assert_eq!(Outcome::from_status(200), Outcome::Success);
        assert_eq!(Outcome::from_status(401), Outcome::Unauthenticated);
        assert_eq!(Outcome::from_status(429), Outcome::Unauthenticated);
        assert_eq!(Outcome::from_status(403), Outcome::Denied);
        assert_eq!(Outcome::from_status(413), Outcome::Rejected);
        assert_eq!(Outcome::from_status(503), Outcome::Failed);
        for o in [
            "success",
            "denied",
            "unauthenticated",
            "rejected",
            "failed",
            "pending",
        ] {
            assert_eq!(Outcome::parse(o).map(Outcome::as_str), Some(o));
        }
    }

    #[test]
    fn time_format_is_fixed_width() {
        let t = time::macros::datetime!(2026-01-02 03:04:05.000006 UTC);
        assert_eq!(format_time(t), "2026-01-02T03:04:05.000006Z");
    }
}
