//! What the store keeps of database credentials (issue 24): connections, roles and leases.
//! Each is written whole as a JSON document beside the columns queries use; passwords are
//! never part of them (they are secret versions under `custodian:db/`).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::StoreError;
use crate::domain::KeyId;

/// A record as the JSON document its row keeps.
pub(super) fn encode<T: Serialize>(record: &T) -> Result<String, StoreError> {
    serde_json::to_string(record).map_err(|_| StoreError::Corrupt { column: "doc" })
}

/// A record from the JSON document in `column`.
pub(super) fn decode<T: serde::de::DeserializeOwned>(
    text: &str,
    column: &'static str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|_| StoreError::Corrupt { column })
}

/// A role's `next_rotation_at` column: only static roles fall due.
pub(super) fn next_rotation_millis(role: &DbRoleRecord) -> Option<i64> {
    match role.spec {
        RoleSpec::Static(_) => role.next_rotation_at.map(super::codec::millis),
        RoleSpec::Dynamic(_) => None,
    }
}

/// A revision as the database's signed integer.
pub(super) fn revision_column(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A target database and the admin Custodian changes it as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbConnectionRecord {
    /// Its name (key name rules).
    pub name: String,
    /// The database kind (`postgresql`).
    pub plugin: String,
    /// `postgres://host:port/dbname`.
    pub url: String,
    /// The admin role.
    pub admin_user: String,
    /// `disable`, `require` or `verify-full`.
    pub sslmode: String,
    /// The CA for `verify-full` (public).
    pub ca_pem: Option<String>,
    /// The Custodian key whose data keys seal this connection's passwords.
    pub key_id: KeyId,
    /// The secret version of `custodian:db/<name>/admin` that holds the admin's password.
    pub admin_version: u32,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// What revoking the token that created a lease does to the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnTokenRevoke {
    /// The lease ends with the token.
    Revoke,
    /// The lease runs to its own end.
    Keep,
}

/// A static role's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticSpec {
    /// The existing database role whose password Custodian owns.
    pub username: String,
    /// Seconds between scheduled rotations; `None`: on demand only.
    pub rotation_period_secs: Option<u64>,
    /// Seconds the previous password stays readable after a rotation.
    pub overlap_secs: u64,
}

/// A dynamic role's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DynamicSpec {
    /// Creation templates.
    pub creation: Vec<String>,
    /// Revocation templates (empty: the plugin's default).
    pub revocation: Vec<String>,
    /// Renewal templates (empty: the plugin's default).
    pub renew: Vec<String>,
    /// Default lease TTL, seconds.
    pub default_ttl_secs: u64,
    /// Longest lease, seconds.
    pub max_ttl_secs: u64,
    /// What a revoked token does to its leases.
    pub on_token_revoke: OnTokenRevoke,
}

/// A role's kind and settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RoleSpec {
    /// Custodian owns an existing role's password.
    Static(StaticSpec),
    /// Each request creates a user under a lease.
    Dynamic(DynamicSpec),
}

impl RoleSpec {
    /// `static` or `dynamic`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Static(_) => "static",
            Self::Dynamic(_) => "dynamic",
        }
    }
}

/// Where a static role's password stands. Versions are the secret versions of its password
/// path. A rotation writes a version and records it as `pending`, sets it in the database, then
/// makes it `current` (the old current becomes `previous`); a `pending` version is always
/// re-applied before anything else is done with the role, so a crash at any point leaves a
/// password that works one step away.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticState {
    /// The version given out.
    pub current: Option<u32>,
    /// A version written but not yet confirmed applied in the database.
    pub pending: Option<u32>,
    /// The version before `current`, readable until `previous_until`.
    pub previous: Option<u32>,
    /// When `previous` stops being readable.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub previous_until: Option<OffsetDateTime>,
    /// When the password last changed in the database.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub last_rotated_at: Option<OffsetDateTime>,
    /// Failed attempts in a row (for the retry back-off).
    #[serde(default)]
    pub failures: u32,
}

/// A role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbRoleRecord {
    /// Its name (key name rules).
    pub name: String,
    /// Its connection.
    pub connection: String,
    /// Kind and settings.
    pub spec: RoleSpec,
    /// A static role's password state (default for dynamic roles).
    #[serde(default)]
    pub state: StaticState,
    /// When the next rotation (or retry) of a static role is due.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub next_rotation_at: Option<OffsetDateTime>,
    /// Counts writes, from 1: every write names the revision it read.
    pub revision: u64,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A lease on a dynamic user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbLeaseRecord {
    /// `dbl_` + 26 characters of `a-z2-7`.
    pub id: String,
    /// The role.
    pub role: String,
    /// The role's connection.
    pub connection: String,
    /// The database user.
    pub username: String,
    /// The principal that created it.
    pub principal: String,
    /// The credential (token) it was created with, e.g. `token:<id>`.
    pub credential_id: String,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it ends.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// The latest it may be renewed to.
    #[serde(with = "time::serde::rfc3339")]
    pub max_expires_at: OffsetDateTime,
    /// When the background duty may next try to revoke it after a failure.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub retry_at: Option<OffsetDateTime>,
    /// Failed revocations in a row.
    #[serde(default)]
    pub failures: u32,
    /// When it was revoked.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub revoked_at: Option<OffsetDateTime>,
}

/// Which leases a listing returns (all given conditions hold).
#[derive(Debug, Clone, Default)]
pub struct DbLeaseFilter<'a> {
    /// Of this role.
    pub role: Option<&'a str>,
    /// Created with this credential.
    pub credential_id: Option<&'a str>,
    /// Not revoked, ended at or before this instant, and not waiting for a retry after it.
    pub due_at: Option<OffsetDateTime>,
    /// Not revoked.
    pub live: bool,
    /// Most rows.
    pub limit: u32,
}

/// Database credentials' store.
#[async_trait]
pub trait DatabaseStore: Send + Sync {
    /// Records a new connection.
    ///
    /// # Errors
    /// `Conflict { db_connections.name }` when the name is taken; database errors.
    async fn insert_db_connection(&self, c: &DbConnectionRecord) -> Result<(), StoreError>;

    /// The connection `name`.
    ///
    /// # Errors
    /// Database errors.
    async fn db_connection(&self, name: &str) -> Result<Option<DbConnectionRecord>, StoreError>;

    /// Every connection, by name.
    ///
    /// # Errors
    /// Database errors.
    async fn list_db_connections(&self) -> Result<Vec<DbConnectionRecord>, StoreError>;

    /// Deletes a connection; false when there was none.
    ///
    /// # Errors
    /// Database errors.
    async fn delete_db_connection(&self, name: &str) -> Result<bool, StoreError>;

    /// Writes a role: a new one when `expected` is `None` (`Conflict { db_roles.name }` when it
    /// exists), else only when the stored revision is `expected` (false otherwise). The record's
    /// `revision` is what gets stored.
    ///
    /// # Errors
    /// `Conflict`; database errors.
    async fn put_db_role(
        &self,
        role: &DbRoleRecord,
        expected: Option<u64>,
    ) -> Result<bool, StoreError>;

    /// The role `name`.
    ///
    /// # Errors
    /// Database errors.
    async fn db_role(&self, name: &str) -> Result<Option<DbRoleRecord>, StoreError>;

    /// Every role (of one connection, or all), by name.
    ///
    /// # Errors
    /// Database errors.
    async fn list_db_roles(
        &self,
        connection: Option<&str>,
    ) -> Result<Vec<DbRoleRecord>, StoreError>;

    /// Deletes a role; false when there was none.
    ///
    /// # Errors
    /// Database errors.
    async fn delete_db_role(&self, name: &str) -> Result<bool, StoreError>;

    /// Static roles whose rotation (or retry) is due at `now`, soonest first.
    ///
    /// # Errors
    /// Database errors.
    async fn due_db_rotations(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<DbRoleRecord>, StoreError>;

    /// Records a new lease.
    ///
    /// # Errors
    /// `Conflict { db_leases.id }`; database errors.
    async fn insert_db_lease(&self, lease: &DbLeaseRecord) -> Result<(), StoreError>;

    /// The lease `id`.
    ///
    /// # Errors
    /// Database errors.
    async fn db_lease(&self, id: &str) -> Result<Option<DbLeaseRecord>, StoreError>;

    /// Rewrites a lease that is not revoked: false when it is (or is gone). Setting
    /// `revoked_at` this way is the one revocation of the lease: of two writers, one gets true.
    ///
    /// # Errors
    /// Database errors.
    async fn update_db_lease(&self, lease: &DbLeaseRecord) -> Result<bool, StoreError>;

    /// Leases matching `filter`, by end time.
    ///
    /// # Errors
    /// Database errors.
    async fn list_db_leases(
        &self,
        filter: &DbLeaseFilter<'_>,
    ) -> Result<Vec<DbLeaseRecord>, StoreError>;
}
