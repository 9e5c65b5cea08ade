//! The one place where rusqlite's errors become [`StoreError`]s, so no driver type leaves this
//! module.
//!
//! Policy ([`map`]):
//! - A broken UNIQUE or PRIMARY KEY rule (`SQLITE_CONSTRAINT_UNIQUE`,
//!   `SQLITE_CONSTRAINT_PRIMARYKEY`) is `Conflict`, naming the rule as SQLite reports it:
//!   `table.column` (`keys.name`, `tokens.id`), columns joined by `, ` for a composite rule.
//!   The writes in this module check the rules they know before inserting and report the same
//!   name, so the database's own check fires only for a rule they do not pre-check, with the
//!   same result.
//! - A full disk (`SQLITE_FULL`) is `Full` (see `space.rs`).
//! - Everything else the database says is `Unavailable`, with the rusqlite error kept as the
//!   source: busy or locked past the busy timeout, I/O and full-disk errors, a file that is not
//!   a database or is corrupt, and the constraint kinds that mean a bug here rather than a
//!   caller's conflict (foreign key, CHECK, NOT NULL). So does a column of an unexpected type.
//!   (A value that reads but does not parse is `Corrupt`, raised where it is parsed.)
//! - A failing migration is `Migration { version }` with the rusqlite error as its source
//!   (raised by `migrate`, which knows the version).

use std::borrow::Cow;

use rusqlite::ffi;

use crate::store::StoreError;

/// An error inside the SQLite store: either the driver's, not yet mapped, or one of ours.
/// Functions of this module return it so `?` works on both; [`Error::into_store`] maps it at
/// the module's edge.
#[derive(Debug)]
pub(super) enum Error {
    /// The driver's error, mapped by [`map`] on the way out.
    Sql(rusqlite::Error),
    /// Already neutral.
    Store(StoreError),
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sql(e)
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Self::Store(StoreError::Io(e))
    }
}

impl Error {
    /// The neutral error: the driver's is mapped by [`map`].
    pub(super) fn into_store(self) -> StoreError {
        match self {
            Self::Sql(e) => map(e),
            Self::Store(e) => e,
        }
    }
}

/// Maps a rusqlite error to a [`StoreError`] by the policy in the module docs.
pub(super) fn map(e: rusqlite::Error) -> StoreError {
    match unique_rule(&e) {
        Some(constraint) => StoreError::Conflict { constraint },
        None if code(&e) == Some(ffi::ErrorCode::DiskFull) => StoreError::Full(Box::new(e)),
        None => StoreError::Unavailable(Box::new(e)),
    }
}

/// The primary result code of a database failure.
pub(super) fn code(e: &rusqlite::Error) -> Option<ffi::ErrorCode> {
    match e {
        rusqlite::Error::SqliteFailure(failure, _) => Some(failure.code),
        _ => None,
    }
}

/// The rule a UNIQUE or PRIMARY KEY violation names (`UNIQUE constraint failed: keys.name`).
fn unique_rule(e: &rusqlite::Error) -> Option<Cow<'static, str>> {
    let rusqlite::Error::SqliteFailure(failure, message) = e else {
        return None;
    };
    if failure.code != ffi::ErrorCode::ConstraintViolation
        || !matches!(
            failure.extended_code,
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        )
    {
        return None;
    }
    let rule = message
        .as_deref()
        .and_then(|m| m.split_once(": "))
        .map(|(_, rule)| rule.trim().to_owned())
        .filter(|rule| !rule.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    Some(Cow::Owned(rule))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unique_violation() -> rusqlite::Error {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE keys (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE);
             INSERT INTO keys VALUES ('a', 'orders');",
        )
        .unwrap();
        conn.execute("INSERT INTO keys VALUES ('b', 'orders')", [])
            .unwrap_err()
    }

    #[test]
    fn a_unique_violation_is_a_conflict_naming_the_rule() {
        match map(unique_violation()) {
            StoreError::Conflict { constraint } => assert_eq!(constraint, "keys.name"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_primary_key_violation_is_a_conflict_naming_the_rule() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE tokens (id TEXT PRIMARY KEY); INSERT INTO tokens VALUES ('t');",
        )
        .unwrap();
        let e = conn
            .execute("INSERT INTO tokens VALUES ('t')", [])
            .unwrap_err();
        match map(e) {
            StoreError::Conflict { constraint } => assert_eq!(constraint, "tokens.id"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_constraints_and_driver_errors_are_unavailable_with_the_cause_kept() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER NOT NULL CHECK (v > 0));")
            .unwrap();
        let check = conn.execute("INSERT INTO t VALUES (0)", []).unwrap_err();
        let syntax = conn
            .execute("INSERT INTO nowhere VALUES (1)", [])
            .unwrap_err();
        for e in [check, syntax, rusqlite::Error::QueryReturnedNoRows] {
            let text = e.to_string();
            let mapped = map(e);
            assert!(matches!(mapped, StoreError::Unavailable(_)), "{mapped:?}");
            let source = std::error::Error::source(&mapped).map(ToString::to_string);
            assert_eq!(source.as_deref(), Some(text.as_str()));
        }
    }
}
