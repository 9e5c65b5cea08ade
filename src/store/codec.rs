//! How values that every store keeps alike are written: times as RFC 3339 text (exactly what was
//! given, nanoseconds included, so an audit record's time reads back byte for byte) and
//! schedule instants as unix milliseconds (compared and ordered in queries).

use std::borrow::Cow;
use std::collections::BTreeMap;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::StoreError;
use crate::audit::record::{decode_hash, FieldHasher, Outcome, StoredHashes, GENESIS};

pub(crate) fn now_text() -> String {
    time_text(crate::clock::now())
}

pub(crate) fn time_text(t: OffsetDateTime) -> String {
    // RFC 3339 formatting of a valid UTC time cannot fail; fall back to the unix time.
    t.format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

pub(crate) fn parse_time(s: &str, column: &'static str) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|_| StoreError::Corrupt { column })
}

/// True when a version marked for device destruction at `destroyed_at` was marked after
/// `before` (a version with no time is old enough).
pub(crate) fn marked_after(
    destroyed_at: Option<&str>,
    before: OffsetDateTime,
) -> Result<bool, StoreError> {
    Ok(destroyed_at
        .map(|t| parse_time(t, "key_versions.destroyed_at"))
        .transpose()?
        .is_some_and(|at| at > before))
}

pub(crate) fn millis(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

pub(crate) fn from_millis(ms: i64, column: &'static str) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|_| StoreError::Corrupt { column })
}

/// A stored audit record's row as the chain's re-check reads it: the columns in the order of
/// `audit_records` (sequence, time, node, request_id, method, route, principal, credential,
/// source, action, resource, key_id, key_version, other_keys, outcome, status, error_code,
/// context_digest, context_keys, prev_hash, hash, details), borrowed from the store's row.
pub(crate) trait AuditRow {
    /// Column `i` as text; `None` for NULL.
    fn text(&self, i: usize) -> Result<Option<&str>, StoreError>;
    /// Column `i` as an integer; `None` for NULL.
    fn integer(&self, i: usize) -> Result<Option<i64>, StoreError>;
}

/// A row's [`StoredHashes`], hashing its columns where they lie: the same checks and the same
/// hash as building the record and [`crate::audit::AuditRecord::recompute`]; a column the record
/// could not hold is `Corrupt`.
pub(crate) fn stored_hashes(r: &impl AuditRow) -> Result<StoredHashes, StoreError> {
    let corrupt = |column| StoreError::Corrupt { column };
    let text = |i, column| r.text(i)?.ok_or_else(|| corrupt(column));
    let sequence = r
        .integer(0)?
        .and_then(|s| u64::try_from(s).ok())
        .ok_or_else(|| corrupt("audit_records.sequence"))?;
    let prev_hash = decode_hash(text(19, "audit_records.prev_hash")?);
    let hash = decode_hash(text(20, "audit_records.hash")?);
    let mut h = FieldHasher::new(prev_hash.as_ref().unwrap_or(&GENESIS));
    h.number(sequence);
    for (i, column) in [
        (1, "audit_records.time"),
        (2, "audit_records.node"),
        (3, "audit_records.request_id"),
        (4, "audit_records.method"),
        (5, "audit_records.route"),
    ] {
        h.field(Some(text(i, column)?));
    }
    for i in 6..=11 {
        h.field(r.text(i)?);
    }
    match r.integer(12)? {
        Some(v) => {
            let v = u32::try_from(v).map_err(|_| corrupt("audit_records.key_version"))?;
            h.number(u64::from(v));
        }
        None => h.field(None),
    }
    let outcome = text(14, "audit_records.outcome")?;
    Outcome::parse(outcome).ok_or_else(|| corrupt("audit_records.outcome"))?;
    h.field(Some(outcome));
    let status = r
        .integer(15)?
        .and_then(|s| u16::try_from(s).ok())
        .ok_or_else(|| corrupt("audit_records.status"))?;
    h.number(u64::from(status));
    h.field(r.text(16)?);
    h.field(r.text(17)?);
    let context_keys = json_list(
        text(18, "audit_records.context_keys")?,
        "audit_records.context_keys",
    )?;
    let other_keys = json_list(
        text(13, "audit_records.other_keys")?,
        "audit_records.other_keys",
    )?;
    h.list(context_keys.iter().map(AsRef::as_ref));
    h.list(other_keys.iter().map(AsRef::as_ref));
    let details = json_map(text(21, "audit_records.details")?)?;
    h.details(details.iter().map(|(n, v)| (n.as_ref(), v.as_ref())));
    Ok(StoredHashes {
        sequence,
        prev_hash,
        hash,
        recomputed: prev_hash.map(|_| h.finish()),
    })
}

/// A JSON list of strings, borrowed where it holds no escapes.
fn json_list<'a>(s: &'a str, column: &'static str) -> Result<Vec<Cow<'a, str>>, StoreError> {
    if s == "[]" {
        return Ok(Vec::new());
    }
    match serde_json::from_str::<Vec<&str>>(s) {
        Ok(v) => Ok(v.into_iter().map(Cow::Borrowed).collect()),
        Err(_) => serde_json::from_str::<Vec<String>>(s)
            .map(|v| v.into_iter().map(Cow::Owned).collect())
            .map_err(|_| StoreError::Corrupt { column }),
    }
}

/// The details' JSON object, in name order, borrowed where it holds no escapes.
fn json_map(s: &str) -> Result<BTreeMap<Cow<'_, str>, Cow<'_, str>>, StoreError> {
    if s == "{}" {
        return Ok(BTreeMap::new());
    }
    match serde_json::from_str::<BTreeMap<&str, &str>>(s) {
        Ok(m) => Ok(m
            .into_iter()
            .map(|(n, v)| (Cow::Borrowed(n), Cow::Borrowed(v)))
            .collect()),
        Err(_) => serde_json::from_str::<BTreeMap<String, String>>(s)
            .map(|m| {
                m.into_iter()
                    .map(|(n, v)| (Cow::Owned(n), Cow::Owned(v)))
                    .collect()
            })
            .map_err(|_| StoreError::Corrupt {
                column: "audit_records.details",
            }),
    }
}
