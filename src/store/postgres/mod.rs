//! The PostgreSQL store (tokio-postgres, a deadpool connection pool, rustls for TLS): the same
//! contract as the SQLite store, on a database several nodes can share.
//!
//! Concurrency: every write runs in one READ COMMITTED transaction that first locks the rows its
//! decision depends on, in one order — the secret's row, then the key's row — so a
//! read-check-write never acts on state another transaction is changing:
//! - a key change (`update_key`, `add_key_version`, `set_version_state`, `destroy_versions`)
//!   locks the key's row `FOR UPDATE`;
//! - a write that stores data under a key version (a secret version, a re-wrap batch) locks the
//!   key's row `FOR SHARE` and only then reads the version's state, so it waits for a
//!   destruction in progress and sees its outcome, and a destruction waits for it and counts
//!   its reference;
//! - a secret write locks the secret's row `FOR UPDATE` (creating it first when absent), which
//!   allocates version numbers one writer at a time.
//!
//! A deadlock or serialization failure aborts the transaction; it runs again from the start
//! (up to [`MAX_ATTEMPTS`] times). Reads that assemble one object from several tables (a key
//! and its versions, a secret and its versions) are single statements, so they see one
//! snapshot.
//!
//! Durability: every connection runs with `synchronous_commit = on`, so a commit has reached
//! the server's WAL on disk before it returns. Migrations run under an advisory lock, so nodes
//! starting together apply each one once.

mod audit;
mod database;
mod error;
mod identity;
mod jobs;
mod keys;
mod secrets;
pub(crate) mod tls;

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{ManagerConfig, Pool, RecyclingMethod, Runtime};
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};

use self::error::Error;
pub use self::tls::SslMode;
use super::migrations::{Migration, POSTGRES};
use super::{
    AuditAppender, AuditStore, AuditTail, IdentityStore, JobStore, KeyStore, KeyUpdate,
    MetadataUpdate, NewSecretVersion, RewrapBatch, RewrapItem, RewrapShard, RotationClaim,
    SealedSecret, SecretForRead, SecretStore, Store, StoreError, VersionOp,
};
use crate::audit::{AuditArchive, AuditFilter, AuditRecord, Checkpoint};
use crate::domain::job::{Job, JobEvent, JobState};
use crate::domain::secret::{SecretPath, SecretRecord};
use crate::domain::{
    AccessKeyRecord, Alias, Key, KeyId, KeyName, KeyRef, KeyVersion, KeyVersionRecord,
    PolicyRecord, PrincipalRecord, RootKeyRef, TokenRecord, VersionState,
};

// Children (`keys`, `secrets`, …) read these through `super::`.
use super::codec::{from_millis, millis, parse_time, time_text};

/// How many times a transaction aborted by a deadlock or a serialization failure runs.
pub const MAX_ATTEMPTS: u32 = 8;

/// The advisory lock key that serialises nodes' one-time start-up work (the audit signing key,
/// the bootstrap principal) across nodes.
const STARTUP_LOCK: i64 = MIGRATION_LOCK + 1;

/// The advisory lock key that serialises migrations across nodes ("custodia" in ASCII).
const MIGRATION_LOCK: i64 = 0x6375_7374_6f64_6961;

/// Where and how to connect (`[store] kind = "postgres"`).
#[derive(Clone)]
pub struct PostgresSettings {
    /// `postgres://user@host:port/dbname` (no password: see `password`).
    pub url: String,
    /// The password, from `password_file` or the environment; `None` for trust or peer
    /// authentication.
    pub password: Option<SecretString>,
    /// Most connections this node holds (the audit writer and migrations use one more each).
    pub pool_size: usize,
    /// How long to wait for a connection (to be made, or to be free in the pool): a request
    /// that cannot get one by then fails `store_unavailable`.
    pub connect_timeout: Duration,
    /// TLS to the server.
    pub sslmode: SslMode,
}

impl std::fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("url", &self.url)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("sslmode", &self.sslmode)
            .finish()
    }
}

impl PostgresSettings {
    /// Settings for `url` with the defaults: no password, 16 connections, 5 s, no TLS.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            password: None,
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            sslmode: SslMode::Disable,
        }
    }

    /// The driver's connection settings.
    ///
    /// # Errors
    /// `Unavailable` for a URL that does not parse or that carries a password (passwords come
    /// from `password_file` or the environment, never from a URL that ends up in logs and
    /// process listings).
    pub(crate) fn pg_config(&self) -> Result<tokio_postgres::Config, StoreError> {
        let mut pg: tokio_postgres::Config = self
            .url
            .parse()
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        if pg.get_password().is_some() {
            return Err(StoreError::Unavailable(
                "the PostgreSQL URL must not contain a password; use store.password_file or \
                 store.password_env"
                    .into(),
            ));
        }
        if let Some(p) = &self.password {
            pg.password(p.expose_secret().as_bytes());
        }
        pg.connect_timeout(self.connect_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .application_name("custodian")
            // Durable before a commit returns, whatever the server's default.
            .options("-c synchronous_commit=on")
            .ssl_mode(self.sslmode.driver_mode());
        Ok(pg)
    }
}

/// Connects outside the pool: migrations and the audit writer hold their own connection.
#[derive(Clone)]
struct Connector {
    pg: tokio_postgres::Config,
    tls: tls::Tls,
}

impl Connector {
    async fn connect(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        self.tls.connect(&self.pg).await
    }
}

/// The PostgreSQL store.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    connector: Connector,
    url: String,
    /// Times every pooled call (metrics).
    timer: crate::metrics::StoreTimer,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// A connection or a transaction: what the table modules run their statements on. Statements
/// are prepared once per connection and cached.
enum Db<'a> {
    /// A pooled connection, outside any transaction (single-statement reads and writes).
    Client(&'a deadpool_postgres::Client),
    /// Inside a transaction.
    Tx(&'a deadpool_postgres::Transaction<'a>),
}

/// Statement parameters.
type Params<'a> = [&'a (dyn ToSql + Sync)];

impl Db<'_> {
    async fn prepare(&self, sql: &str) -> Result<Statement, Error> {
        Ok(match self {
            Self::Client(c) => c.prepare_cached(sql).await?,
            Self::Tx(t) => t.prepare_cached(sql).await?,
        })
    }

    /// Every row.
    async fn query(&self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>, Error> {
        let s = self.prepare(sql).await?;
        Ok(match self {
            Self::Client(c) => c.query(&s, params).await?,
            Self::Tx(t) => t.query(&s, params).await?,
        })
    }

    /// At most one row.
    async fn query_opt(&self, sql: &str, params: &Params<'_>) -> Result<Option<Row>, Error> {
        let s = self.prepare(sql).await?;
        Ok(match self {
            Self::Client(c) => c.query_opt(&s, params).await?,
            Self::Tx(t) => t.query_opt(&s, params).await?,
        })
    }

    /// Exactly one row.
    async fn query_one(&self, sql: &str, params: &Params<'_>) -> Result<Row, Error> {
        let s = self.prepare(sql).await?;
        Ok(match self {
            Self::Client(c) => c.query_one(&s, params).await?,
            Self::Tx(t) => t.query_one(&s, params).await?,
        })
    }

    /// Rows changed.
    async fn execute(&self, sql: &str, params: &Params<'_>) -> Result<u64, Error> {
        let s = self.prepare(sql).await?;
        Ok(match self {
            Self::Client(c) => c.execute(&s, params).await?,
            Self::Tx(t) => t.execute(&s, params).await?,
        })
    }
}

/// Runs `$body` (an expression using `$db: Db`) on a pooled connection outside a transaction.
macro_rules! autocommit {
    ($store:expr, |$db:ident| $body:expr) => {{
        let started = std::time::Instant::now();
        let result: Result<_, Error> = async {
            let client = $store.pool.get().await?;
            let $db = Db::Client(&client);
            $body.await
        }
        .await;
        let result = result.map_err(Error::into_store);
        $store.timer.observe(started, &result);
        result
    }};
}

/// Runs `$body` (an expression using `$db: Db`) in a READ COMMITTED transaction and commits it;
/// runs it again from the start when the database aborted it to break a deadlock.
macro_rules! transaction {
    ($store:expr, |$db:ident| $body:expr) => {{
        let mut attempt = 1;
        let started = std::time::Instant::now();
        let result = loop {
            let result: Result<_, Error> = async {
                let mut client = $store.pool.get().await?;
                let tx = client.transaction().await?;
                let out = {
                    let $db = Db::Tx(&tx);
                    $body.await?
                };
                tx.commit().await?;
                Ok(out)
            }
            .await;
            match result {
                Err(e) if e.is_retryable() && attempt < MAX_ATTEMPTS => {
                    tracing::debug!(
                        attempt,
                        "PostgreSQL transaction aborted by a race; retrying"
                    );
                    tokio::time::sleep(retry_pause(attempt)).await;
                    attempt += 1;
                }
                other => break other.map_err(Error::into_store),
            }
        };
        $store.timer.observe(started, &result);
        result
    }};
}

/// A short, growing, jittered pause before a retry, so racing transactions do not meet again.
fn retry_pause(attempt: u32) -> Duration {
    let mut b = [0u8; 1];
    let jitter = getrandom::getrandom(&mut b).map_or(0, |()| u64::from(b[0]) % 8);
    Duration::from_millis((1u64 << attempt.min(6)) + jitter)
}

impl PostgresStore {
    /// Connects, migrates to the newest schema (under an advisory lock) and builds the pool.
    ///
    /// # Errors
    /// `Unavailable` when the database cannot be reached or the settings are unusable;
    /// `Migration` naming the failing version; `SchemaTooNew` when a newer binary migrated the
    /// database past what this one knows.
    pub async fn open(settings: &PostgresSettings) -> Result<Self, StoreError> {
        Self::open_with(settings, POSTGRES).await
    }

    /// Opens the database migrated only up to `version`, as a binary that knew only those
    /// migrations leaves it. For upgrade tests; the server always uses [`PostgresStore::open`].
    ///
    /// # Errors
    /// As [`PostgresStore::open`].
    pub async fn open_at_schema(
        settings: &PostgresSettings,
        version: u32,
    ) -> Result<Self, StoreError> {
        let known = POSTGRES.iter().take_while(|m| m.version <= version).count();
        Self::open_with(settings, POSTGRES.get(..known).unwrap_or(POSTGRES)).await
    }

    /// The newest schema version this binary knows.
    pub fn latest_schema() -> u32 {
        POSTGRES.last().map_or(0, |m| m.version)
    }

    /// A connection of its own, outside the pool, with the store's settings: for
    /// `store::migrate`, which copies whole tables with `COPY` in one long transaction.
    ///
    /// # Errors
    /// `Unavailable` when the database cannot be reached.
    pub(crate) async fn dedicated_client(&self) -> Result<tokio_postgres::Client, StoreError> {
        self.connector.connect().await.map_err(error::map)
    }

    async fn open_with(
        settings: &PostgresSettings,
        migrations: &'static [Migration],
    ) -> Result<Self, StoreError> {
        let pg = settings.pg_config()?;
        let tls = tls::Tls::new(&settings.sslmode)?;
        let connector = Connector {
            pg: pg.clone(),
            tls: tls.clone(),
        };
        migrate(&connector, migrations).await?;
        let manager = tls.manager(
            pg,
            ManagerConfig {
                // A connection the server closed (restart, failover) is dropped, not handed out.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let timeout = Some(settings.connect_timeout);
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(timeout)
            .create_timeout(timeout)
            .recycle_timeout(timeout)
            .build()
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        Ok(Self {
            pool,
            connector,
            url: settings.url.clone(),
            timer: crate::metrics::StoreTimer::unregistered("postgres"),
        })
    }

    /// The same store, its calls timed by `timer` (metrics).
    #[must_use]
    pub fn with_timer(mut self, timer: crate::metrics::StoreTimer) -> Self {
        self.timer = timer;
        self
    }
}

/// Applies every migration newer than the recorded version, each in its own transaction, while
/// holding the migration advisory lock on a connection of its own.
async fn migrate(connector: &Connector, migrations: &[Migration]) -> Result<(), StoreError> {
    let mut client = connector.connect().await.map_err(error::map)?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(error::map)?;
    let result = migrate_locked(&mut client, migrations).await;
    // Closing the connection would release the lock too; unlock explicitly all the same.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    result
}

async fn migrate_locked(
    client: &mut tokio_postgres::Client,
    migrations: &[Migration],
) -> Result<(), StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
        )
        .await
        .map_err(error::map)?;
    let current: i64 = client
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .await
        .and_then(|r| r.try_get(0))
        .map_err(error::map)?;
    let current = u32::try_from(current).map_err(|_| StoreError::Corrupt {
        column: "schema_migrations.version",
    })?;
    let supported = migrations.last().map_or(0, |m| m.version);
    if current > supported {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported,
        });
    }
    for m in migrations.iter().filter(|m| m.version > current) {
        let wrap = |source: tokio_postgres::Error| StoreError::Migration {
            version: m.version,
            source: Box::new(source),
        };
        let tx = client.transaction().await.map_err(wrap)?;
        tx.batch_execute(m.sql).await.map_err(wrap)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            &[&i64::from(m.version), &m.name, &super::codec::now_text()],
        )
        .await
        .map_err(wrap)?;
        tx.commit().await.map_err(wrap)?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "database migration applied"
        );
    }
    Ok(())
}

/// A stored count or number as the `u32` the domain uses; `Corrupt` when out of range.
fn to_u32(v: i64, column: &'static str) -> Result<u32, Error> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt { column }.into())
}

/// A stored count as `u64`; `Corrupt` when negative.
fn to_u64(v: i64, column: &'static str) -> Result<u64, Error> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt { column }.into())
}

/// A count for a BIGINT column (saturating: no count here nears 2^63).
fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `Corrupt` for `column`.
fn corrupt(column: &'static str) -> Error {
    StoreError::Corrupt { column }.into()
}

#[async_trait]
impl KeyStore for PostgresStore {
    async fn insert_key(&self, key: &Key) -> Result<(), StoreError> {
        transaction!(self, |db| keys::insert(&db, key))
    }

    async fn key(&self, r: &KeyRef) -> Result<Option<Key>, StoreError> {
        autocommit!(self, |db| keys::get(&db, r))
    }

    async fn list_keys(&self, after: Option<&KeyName>, limit: u32) -> Result<Vec<Key>, StoreError> {
        autocommit!(self, |db| keys::list(&db, after, limit))
    }

    async fn update_key(
        &self,
        id: KeyId,
        update: &KeyUpdate,
        now: OffsetDateTime,
    ) -> Result<Key, StoreError> {
        transaction!(self, |db| keys::update(&db, id, update, now))
    }

    async fn add_key_version(
        &self,
        id: KeyId,
        record: &KeyVersionRecord,
        expected_primary: KeyVersion,
        schedule: Option<RotationClaim>,
    ) -> Result<Key, StoreError> {
        transaction!(self, |db| keys::add_version(
            &db,
            id,
            record,
            expected_primary,
            schedule
        ))
    }

    async fn set_version_state(
        &self,
        id: KeyId,
        version: KeyVersion,
        from: &[VersionState],
        to: VersionState,
        now: OffsetDateTime,
    ) -> Result<Key, StoreError> {
        transaction!(self, |db| keys::set_version_state(
            &db, id, version, from, to, now
        ))
    }

    async fn destroy_versions(
        &self,
        id: KeyId,
        versions: &[KeyVersion],
        whole_key: bool,
        now: OffsetDateTime,
    ) -> Result<Key, StoreError> {
        transaction!(self, |db| keys::destroy_versions(
            &db, id, versions, whole_key, now
        ))
    }

    async fn references(&self, id: KeyId) -> Result<Vec<(KeyVersion, u64)>, StoreError> {
        autocommit!(self, |db| keys::references(&db, id))
    }

    async fn mark_device_destroyed(&self, root: &RootKeyRef) -> Result<(), StoreError> {
        autocommit!(self, |db| keys::mark_device_destroyed(&db, root))
    }

    async fn pending_device_destroys(
        &self,
        marked_before: OffsetDateTime,
    ) -> Result<Vec<RootKeyRef>, StoreError> {
        autocommit!(self, |db| keys::pending_device_destroys(&db, marked_before))
    }

    async fn reserve_wraps(&self, root: &RootKeyRef, n: u64) -> Result<u64, StoreError> {
        autocommit!(self, |db| keys::reserve_wraps(&db, root, n))
    }

    async fn due_key_rotations(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<(KeyId, OffsetDateTime)>, StoreError> {
        autocommit!(self, |db| keys::due_rotations(&db, now, limit))
    }

    async fn budget_rotations(
        &self,
        threshold: u64,
        limit: u32,
    ) -> Result<Vec<(KeyId, KeyVersion)>, StoreError> {
        let threshold = i64::try_from(threshold).unwrap_or(i64::MAX);
        autocommit!(self, |db| async {
            let rows = db
                .query(
                    "SELECT k.id, k.primary_version FROM keys k
             JOIN key_versions v ON v.key_id = k.id AND v.version = k.primary_version
             WHERE k.state = 'enabled' AND v.wraps_reserved >= $1
             ORDER BY k.id LIMIT $2",
                    &[&threshold, &i64::from(limit)],
                )
                .await?;
            rows.iter()
                .map(|r| {
                    let id = r
                        .try_get::<_, &str>(0)?
                        .parse()
                        .map_err(|_| corrupt("keys.id"))?;
                    let version = u32::try_from(r.try_get::<_, i64>(1)?)
                        .ok()
                        .and_then(KeyVersion::new)
                        .ok_or(corrupt("keys.primary_version"))?;
                    Ok((id, version))
                })
                .collect()
        })
    }

    async fn due_key_deletions(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<KeyId>, StoreError> {
        autocommit!(self, |db| keys::due_deletions(&db, now, limit))
    }

    async fn put_alias(
        &self,
        name: &KeyName,
        key_id: KeyId,
        create_only: bool,
        now: OffsetDateTime,
    ) -> Result<Alias, StoreError> {
        autocommit!(self, |db| keys::put_alias(
            &db,
            name,
            key_id,
            create_only,
            now
        ))
    }

    async fn alias(&self, name: &KeyName) -> Result<Option<Alias>, StoreError> {
        autocommit!(self, |db| keys::alias(&db, name))
    }

    async fn list_aliases(&self) -> Result<Vec<Alias>, StoreError> {
        autocommit!(self, |db| keys::list_aliases(&db))
    }

    async fn delete_alias(&self, name: &KeyName) -> Result<bool, StoreError> {
        autocommit!(self, |db| keys::delete_alias(&db, name))
    }
}

#[async_trait]
impl IdentityStore for PostgresStore {
    async fn principal(&self, name: &str) -> Result<Option<PrincipalRecord>, StoreError> {
        autocommit!(self, |db| identity::principal(&db, name))
    }

    async fn list_principals(&self) -> Result<Vec<PrincipalRecord>, StoreError> {
        autocommit!(self, |db| identity::list_principals(&db))
    }

    async fn put_principal(
        &self,
        p: &PrincipalRecord,
        create_only: bool,
    ) -> Result<PrincipalRecord, StoreError> {
        autocommit!(self, |db| identity::put_principal(&db, p, create_only))
    }

    async fn delete_principal(&self, name: &str, now: OffsetDateTime) -> Result<bool, StoreError> {
        transaction!(self, |db| identity::delete_principal(&db, name, now))
    }

    async fn policy(&self, name: &str) -> Result<Option<PolicyRecord>, StoreError> {
        autocommit!(self, |db| identity::policy(&db, name))
    }

    async fn list_policies(&self) -> Result<Vec<PolicyRecord>, StoreError> {
        autocommit!(self, |db| identity::list_policies(&db))
    }

    async fn put_policy(
        &self,
        name: &KeyName,
        document: &serde_json::Value,
        only_if_absent: bool,
        now: OffsetDateTime,
    ) -> Result<PolicyRecord, StoreError> {
        transaction!(self, |db| identity::put_policy(
            &db,
            name,
            document,
            only_if_absent,
            now
        ))
    }

    async fn delete_policy(&self, name: &str) -> Result<bool, StoreError> {
        autocommit!(self, |db| identity::delete_policy(&db, name))
    }

    async fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        autocommit!(self, |db| identity::insert_token(&db, token))
    }

    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        autocommit!(self, |db| identity::token(&db, id))
    }

    async fn token_count(&self) -> Result<u64, StoreError> {
        autocommit!(self, |db| identity::token_count(&db))
    }

    async fn list_tokens(&self, principal: Option<&str>) -> Result<Vec<TokenRecord>, StoreError> {
        autocommit!(self, |db| identity::list_tokens(&db, principal))
    }

    async fn revoke_token(&self, id: &str, now: OffsetDateTime) -> Result<bool, StoreError> {
        autocommit!(self, |db| identity::revoke_token(&db, id, now))
    }

    async fn insert_access_key(&self, key: &AccessKeyRecord) -> Result<(), StoreError> {
        autocommit!(self, |db| identity::insert_access_key(&db, key))
    }

    async fn access_key(&self, id: &str) -> Result<Option<AccessKeyRecord>, StoreError> {
        autocommit!(self, |db| identity::access_key(&db, id))
    }

    async fn list_access_keys(
        &self,
        principal: Option<&str>,
    ) -> Result<Vec<AccessKeyRecord>, StoreError> {
        autocommit!(self, |db| identity::list_access_keys(&db, principal))
    }

    async fn revoke_access_key(&self, id: &str, now: OffsetDateTime) -> Result<bool, StoreError> {
        autocommit!(self, |db| identity::revoke_access_key(&db, id, now))
    }

    async fn reseal_access_key(
        &self,
        id: &str,
        old: &[u8],
        sealed: &[u8],
        key_version: KeyVersion,
    ) -> Result<bool, StoreError> {
        autocommit!(self, |db| identity::reseal_access_key(
            &db,
            id,
            old,
            sealed,
            key_version
        ))
    }
}

#[async_trait]
impl SecretStore for PostgresStore {
    async fn secret(&self, path: &SecretPath) -> Result<Option<SecretRecord>, StoreError> {
        autocommit!(self, |db| secrets::get(&db, path))
    }

    async fn list_secrets(
        &self,
        prefix: &str,
        after: Option<&SecretPath>,
        limit: u32,
    ) -> Result<Vec<SecretRecord>, StoreError> {
        autocommit!(self, |db| secrets::list(&db, prefix, after, limit))
    }

    async fn secret_version_data(
        &self,
        path: &SecretPath,
        version: u32,
    ) -> Result<Option<SealedSecret>, StoreError> {
        autocommit!(self, |db| secrets::data(&db, path, version))
    }

    async fn secret_for_read(
        &self,
        path: &SecretPath,
        version: Option<u32>,
    ) -> Result<Option<SecretForRead>, StoreError> {
        autocommit!(self, |db| secrets::get_for_read(&db, path, version))
    }

    async fn insert_secret_version(&self, v: &NewSecretVersion) -> Result<Vec<u32>, StoreError> {
        if secrets::may_insert_first(v) && autocommit!(self, |db| secrets::insert_first(&db, v))? {
            return Ok(Vec::new());
        }
        transaction!(self, |db| secrets::insert(&db, v))
    }

    async fn put_secret_metadata(
        &self,
        path: &SecretPath,
        key_id: KeyId,
        default_max_versions: u32,
        update: &MetadataUpdate,
        now: OffsetDateTime,
    ) -> Result<SecretRecord, StoreError> {
        transaction!(self, |db| secrets::put_metadata(
            &db,
            path,
            key_id,
            default_max_versions,
            update,
            now
        ))
    }

    async fn update_secret_versions(
        &self,
        path: &SecretPath,
        versions: &[u32],
        op: VersionOp,
        now: OffsetDateTime,
    ) -> Result<Vec<u32>, StoreError> {
        transaction!(self, |db| secrets::update_versions(
            &db, path, versions, op, now
        ))
    }

    async fn due_rotations(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<(SecretPath, OffsetDateTime)>, StoreError> {
        autocommit!(self, |db| secrets::due(&db, now, limit))
    }
}

#[async_trait]
impl JobStore for PostgresStore {
    async fn create_job(&self, job: &Job) -> Result<(), StoreError> {
        transaction!(self, |db| jobs::create(&db, job))
    }

    async fn job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        autocommit!(self, |db| jobs::get(&db, id))
    }

    async fn list_jobs(&self, state: Option<JobState>, limit: u32) -> Result<Vec<Job>, StoreError> {
        autocommit!(self, |db| jobs::list(&db, state, limit))
    }

    async fn rewrap_candidates(
        &self,
        key_id: KeyId,
        target: KeyVersion,
        shard: RewrapShard,
        after: Option<&(SecretPath, u32)>,
        limit: u32,
    ) -> Result<Vec<RewrapItem>, StoreError> {
        autocommit!(self, |db| jobs::candidates(
            &db, key_id, target, shard, after, limit
        ))
    }

    async fn apply_rewrap(&self, batch: &RewrapBatch) -> Result<u64, StoreError> {
        transaction!(self, |db| jobs::apply(&db, batch))
    }

    async fn job_events(&self, id: &str) -> Result<Vec<JobEvent>, StoreError> {
        autocommit!(self, |db| jobs::events(&db, id))
    }

    async fn finish_job(
        &self,
        id: &str,
        state: JobState,
        error: Option<String>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        transaction!(self, |db| jobs::finish(
            &db,
            id,
            state,
            error.as_deref(),
            now
        ))
    }
}

#[async_trait]
impl AuditStore for PostgresStore {
    async fn audit_appender(&self) -> Result<Box<dyn AuditAppender>, StoreError> {
        Ok(Box::new(
            audit::Appender::connect(self.connector.clone()).await?,
        ))
    }

    async fn audit_tail(&self) -> Result<AuditTail, StoreError> {
        autocommit!(self, |db| audit::tail(&db))
    }

    async fn audit_range(
        &self,
        after: u64,
        until: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        autocommit!(self, |db| audit::range(&db, after, until, limit))
    }

    async fn audit_search(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        autocommit!(self, |db| audit::search(&db, filter))
    }

    async fn audit_checkpoints(
        &self,
        after: u64,
        until: u64,
    ) -> Result<Vec<Checkpoint>, StoreError> {
        autocommit!(self, |db| audit::checkpoints(&db, after, until))
    }

    async fn archive_audit(&self, archive: &AuditArchive) -> Result<u64, StoreError> {
        transaction!(self, |db| audit::archive_through(&db, archive))
    }
}

#[async_trait]
impl crate::store::database::DatabaseStore for PostgresStore {
    async fn insert_db_connection(
        &self,
        c: &crate::store::database::DbConnectionRecord,
    ) -> Result<(), StoreError> {
        autocommit!(self, |db| database::insert_connection(&db, c))
    }

    async fn db_connection(
        &self,
        name: &str,
    ) -> Result<Option<crate::store::database::DbConnectionRecord>, StoreError> {
        autocommit!(self, |db| database::connection(&db, name))
    }

    async fn list_db_connections(
        &self,
    ) -> Result<Vec<crate::store::database::DbConnectionRecord>, StoreError> {
        autocommit!(self, |db| database::connections(&db))
    }

    async fn delete_db_connection(&self, name: &str) -> Result<bool, StoreError> {
        autocommit!(self, |db| database::delete_connection(&db, name))
    }

    async fn put_db_role(
        &self,
        role: &crate::store::database::DbRoleRecord,
        expected: Option<u64>,
    ) -> Result<bool, StoreError> {
        autocommit!(self, |db| database::put_role(&db, role, expected))
    }

    async fn db_role(
        &self,
        name: &str,
    ) -> Result<Option<crate::store::database::DbRoleRecord>, StoreError> {
        autocommit!(self, |db| database::role(&db, name))
    }

    async fn list_db_roles(
        &self,
        connection: Option<&str>,
    ) -> Result<Vec<crate::store::database::DbRoleRecord>, StoreError> {
        autocommit!(self, |db| database::roles(&db, connection))
    }

    async fn delete_db_role(&self, name: &str) -> Result<bool, StoreError> {
        autocommit!(self, |db| database::delete_role(&db, name))
    }

    async fn due_db_rotations(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<crate::store::database::DbRoleRecord>, StoreError> {
        autocommit!(self, |db| database::due_rotations(&db, now, limit))
    }

    async fn insert_db_lease(
        &self,
        lease: &crate::store::database::DbLeaseRecord,
    ) -> Result<(), StoreError> {
        autocommit!(self, |db| database::insert_lease(&db, lease))
    }

    async fn db_lease(
        &self,
        id: &str,
    ) -> Result<Option<crate::store::database::DbLeaseRecord>, StoreError> {
        autocommit!(self, |db| database::lease(&db, id))
    }

    async fn update_db_lease(
        &self,
        lease: &crate::store::database::DbLeaseRecord,
    ) -> Result<bool, StoreError> {
        autocommit!(self, |db| database::update_lease(&db, lease))
    }

    async fn list_db_leases(
        &self,
        filter: &crate::store::database::DbLeaseFilter<'_>,
    ) -> Result<Vec<crate::store::database::DbLeaseRecord>, StoreError> {
        autocommit!(self, |db| database::leases(&db, filter))
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn pool_usage(&self) -> crate::store::PoolUsage {
        let s = self.pool.status();
        crate::store::PoolUsage {
            max: s.max_size as u64,
            open: s.size as u64,
            in_use: s.size.saturating_sub(s.available) as u64,
            waiting: s.waiting as u64,
        }
    }

    async fn check_writable(&self) -> Result<(), StoreError> {
        autocommit!(self, |db| async {
            db.execute(
                "INSERT INTO heartbeat (id, checked_at) VALUES (1, $1)
                 ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
                &[&super::codec::now_text()],
            )
            .await
            .map(|_| ())
        })
    }

    async fn set_tpm_key_node(&self, key: KeyId, node: &str) -> Result<(), StoreError> {
        let key = key.to_string();
        autocommit!(self, |db| async {
            db.execute(
                "INSERT INTO tpm_key_nodes (key_id, node) VALUES ($1, $2)
                 ON CONFLICT (key_id) DO UPDATE SET node = excluded.node",
                &[&key, &node],
            )
            .await
            .map(|_| ())
        })
    }

    async fn tpm_key_node(&self, key: KeyId) -> Result<Option<String>, StoreError> {
        let key = key.to_string();
        autocommit!(self, |db| async {
            Ok(db
                .query_opt("SELECT node FROM tpm_key_nodes WHERE key_id = $1", &[&key])
                .await?
                .map(|r| r.get::<_, String>(0)))
        })
    }

    async fn tpm_keys_on_node(&self, node: &str, limit: u32) -> Result<Vec<String>, StoreError> {
        let limit = i64::from(limit);
        autocommit!(self, |db| async {
            Ok(db
                .query(
                    "SELECT k.name FROM tpm_key_nodes t JOIN keys k ON k.id = t.key_id
                     WHERE t.node = $1 AND k.state <> 'destroyed' ORDER BY k.name LIMIT $2",
                    &[&node, &limit],
                )
                .await?
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect())
        })
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        autocommit!(self, |db| async {
            let now = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";
            db.query_opt(
                &format!(
                    "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, {now} + $3)
                     ON CONFLICT (name) DO UPDATE
                       SET holder = excluded.holder, expires_at = excluded.expires_at
                       WHERE leases.holder = excluded.holder OR leases.expires_at < {now}
                     RETURNING holder"
                ),
                &[&name, &holder, &ttl_ms],
            )
            .await
            .map(|row| row.is_some())
        })
    }

    async fn remove_expired_leases(
        &self,
        expired_for: std::time::Duration,
    ) -> Result<u64, StoreError> {
        let ms = i64::try_from(expired_for.as_millis()).unwrap_or(i64::MAX);
        autocommit!(self, |db| async {
            let now = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";
            db.execute(
                &format!("DELETE FROM leases WHERE expires_at < {now} - $1"),
                &[&ms],
            )
            .await
        })
    }

    fn shared(&self) -> bool {
        true
    }

    /// A connection of its own holding a session advisory lock: closing it (the guard's drop)
    /// releases the lock, also when the node dies.
    async fn startup_guard(&self) -> Result<Option<super::StartupGuard>, StoreError> {
        let client = self.connector.connect().await.map_err(error::map)?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&STARTUP_LOCK])
            .await
            .map_err(error::map)?;
        Ok(Some(super::StartupGuard(Box::new(client))))
    }

    async fn watch(&self, changes: tokio::sync::mpsc::UnboundedSender<super::Change>) {
        use super::Change;
        loop {
            match self
                .connector
                .tls
                .connect_listening(&self.connector.pg)
                .await
            {
                Ok((client, mut notes)) => {
                    match client.batch_execute("LISTEN custodian_changes").await {
                        Ok(()) => {
                            tracing::debug!("cache coherence: listening for changes");
                            if changes.send(Change::Resync).is_err() {
                                return;
                            }
                            while let Some(payload) = notes.recv().await {
                                if changes.send(Change::parse(&payload)).is_err() {
                                    return;
                                }
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "cache coherence: LISTEN failed"),
                    }
                    if changes.send(Change::Lost).is_err() {
                        return;
                    }
                    tracing::warn!("cache coherence: the change feed was lost; caches are bypassed until it returns");
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cache coherence: cannot connect for changes yet");
                }
            }
            if changes.is_closed() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }
}
