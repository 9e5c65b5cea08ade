//! Metadata storage: one trait, [`Store`]; SQLite now, PostgreSQL when several nodes share work.
//!
//! Nothing secret is stored unwrapped: keys are device references, tokens are hashes.
//! Migrations are versioned and run at start-up ([`migrations`]).

pub mod migrations;
pub mod sqlite;

use async_trait::async_trait;

use crate::domain::{Key, KeyName, KeyRef, TokenRecord};

/// Why a store operation failed, grouped by who is at fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    // --- the caller ---
    /// A uniqueness rule was broken; names the rule (e.g. `keys.name`).
    #[error("{constraint} already exists")]
    Conflict {
        /// The rule that was broken.
        constraint: &'static str,
    },

    // --- a dependency ---
    /// The database refused or is unreachable.
    #[error("database error")]
    Database(#[from] rusqlite::Error),
    /// The database file could not be prepared.
    #[error("database file: {0}")]
    Io(#[from] std::io::Error),
    /// The blocking task running the query did not finish.
    #[error(transparent)]
    Blocking(#[from] crate::telemetry::BlockingError),

    // --- a bug (or tampering with the database) ---
    /// A stored value does not parse.
    #[error("stored value in {column} is invalid")]
    Corrupt {
        /// Table and column.
        column: &'static str,
    },
    /// A migration failed; names its version.
    #[error("migration {version} failed")]
    Migration {
        /// Migration version.
        version: u32,
        /// Cause.
        #[source]
        source: rusqlite::Error,
    },
}

/// Metadata storage.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Records a new key and all its versions in one transaction.
    ///
    /// # Errors
    /// `Conflict { constraint: "keys.name" }` when the name is taken.
    async fn insert_key(&self, key: &Key) -> Result<(), StoreError>;

    /// The key `r` names, with its versions.
    ///
    /// # Errors
    /// Database errors; a missing key is `Ok(None)`.
    async fn key(&self, r: &KeyRef) -> Result<Option<Key>, StoreError>;

    /// Up to `limit` keys ordered by name, starting after `after`.
    ///
    /// # Errors
    /// Database errors.
    async fn list_keys(&self, after: Option<&KeyName>, limit: u32) -> Result<Vec<Key>, StoreError>;

    /// Records a new bearer token (its hash only).
    ///
    /// # Errors
    /// `Conflict { constraint: "tokens.id" }` on an id collision.
    async fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError>;

    /// The token with public id `id`.
    ///
    /// # Errors
    /// Database errors; a missing token is `Ok(None)`.
    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError>;

    /// How many tokens exist (0 on a fresh install: time to mint the bootstrap token).
    ///
    /// # Errors
    /// Database errors.
    async fn token_count(&self) -> Result<u64, StoreError>;

    /// Proves the database accepts a durable write now (readiness).
    ///
    /// # Errors
    /// Database errors.
    async fn check_writable(&self) -> Result<(), StoreError>;
}
