//! How values that every store keeps alike are written: times as RFC 3339 text (exactly what was
//! given, nanoseconds included, so an audit record's time reads back byte for byte) and
//! schedule instants as unix milliseconds (compared and ordered in queries).

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::StoreError;

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
