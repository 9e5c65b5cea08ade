//! The one place where tokio-postgres's errors become [`StoreError`]s, so no driver type leaves
//! this module.
//!
//! Policy ([`map`]):
//! - A broken UNIQUE or PRIMARY KEY rule (SQLSTATE `23505`) is `Conflict`, naming the rule as
//!   SQLite names it (`keys.name`, `tokens.id`): PostgreSQL reports the constraint's name
//!   (`keys_name_key`), which [`rule_name`] translates, so the service sees one set of names
//!   whatever the store.
//! - A serialization failure (`40001`) or a deadlock (`40P01`) is [`Error::Retry`]: the
//!   transaction lost a race the database resolved by aborting it, and the store runs it again
//!   from the start (`Store::write`); only when the retries run out does it become
//!   `Unavailable`.
//! - Everything else is `Unavailable` with the driver's error as the source: a closed
//!   connection, a refused connection, a pool that waited past its timeout, an administrator's
//!   shutdown (`57P01`), a full disk, and the rule kinds that mean a bug here (foreign key,
//!   CHECK, NOT NULL). (A value that reads but does not parse is `Corrupt`, raised where it is
//!   parsed.)

use std::borrow::Cow;

use tokio_postgres::error::SqlState;

use crate::store::StoreError;

/// An error inside the PostgreSQL store: the driver's, not yet mapped, or one of ours.
#[derive(Debug)]
pub(super) enum Error {
    /// The driver's error, mapped by [`map`] on the way out.
    Sql(tokio_postgres::Error),
    /// The pool could not hand out a connection (database down, timeout).
    Pool(deadpool_postgres::PoolError),
    /// Already neutral.
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Sql(e)
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Pool(e)
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl Error {
    /// True when the transaction should run again: the database aborted it to resolve a race.
    pub(super) fn is_retryable(&self) -> bool {
        match self {
            Self::Sql(e) => e.code().is_some_and(|c| {
                *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
            }),
            Self::Pool(_) | Self::Store(_) => false,
        }
    }

    /// The neutral error.
    pub(super) fn into_store(self) -> StoreError {
        match self {
            Self::Sql(e) => map(e),
            Self::Pool(e) => StoreError::Unavailable(Box::new(e)),
            Self::Store(e) => e,
        }
    }
}

/// Maps a driver error to a [`StoreError`] by the policy in the module docs.
pub(super) fn map(e: tokio_postgres::Error) -> StoreError {
    let unique = e
        .as_db_error()
        .filter(|db| *db.code() == SqlState::UNIQUE_VIOLATION)
        .map(|db| rule_name(db.constraint().unwrap_or("unknown")));
    let full = e
        .as_db_error()
        .is_some_and(|db| *db.code() == SqlState::DISK_FULL);
    match unique {
        Some(constraint) => StoreError::Conflict { constraint },
        None if full => StoreError::Full(Box::new(e)),
        None => StoreError::Unavailable(Box::new(e)),
    }
}

/// The neutral name (`table.column`) of a PostgreSQL constraint name; an unknown constraint
/// keeps its own name.
pub(super) fn rule_name(constraint: &str) -> Cow<'static, str> {
    Cow::Borrowed(match constraint {
        "keys_pkey" => "keys.id",
        "keys_name_key" => "keys.name",
        "key_versions_pkey" => "key_versions.key_id, key_versions.version",
        "aliases_pkey" => "aliases.name",
        "tokens_pkey" => "tokens.id",
        "access_keys_pkey" => "access_keys.id",
        "db_connections_pkey" => "db_connections.name",
        "db_roles_pkey" => "db_roles.name",
        "db_leases_pkey" => "db_leases.id",
        "principals_pkey" => "principals.name",
        "policies_pkey" => "policies.name",
        "policy_versions_pkey" => "policy_versions.name, policy_versions.version",
        "secrets_pkey" => "secrets.path",
        "secret_versions_pkey" => "secret_versions.path, secret_versions.version",
        "jobs_pkey" => "jobs.id",
        "job_events_pkey" => "job_events.job_id, job_events.seq",
        "audit_records_pkey" => "audit_records.sequence",
        "audit_checkpoints_pkey" => "audit_checkpoints.sequence",
        "audit_archives_pkey" => "audit_archives.through_sequence",
        other => return Cow::Owned(other.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraint_names_become_the_neutral_rule_names() {
        assert_eq!(rule_name("keys_name_key"), "keys.name");
        assert_eq!(rule_name("tokens_pkey"), "tokens.id");
        assert_eq!(rule_name("aliases_pkey"), "aliases.name");
        assert_eq!(rule_name("principals_pkey"), "principals.name");
        assert_eq!(rule_name("something_new"), "something_new");
    }
}
