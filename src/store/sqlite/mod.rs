//! The SQLite store (rusqlite): WAL journal, a file created with mode 0600, one connection
//! behind a mutex, every query on the blocking pool.

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, TransactionBehavior};
use time::OffsetDateTime;

mod audit;
mod database;
mod error;
mod identity;
mod jobs;
mod keys;
mod secrets;
mod space;

use self::error::Error;
use super::migrations::{Migration, SQLITE};
use super::{
    AuditAppender, AuditStore, AuditTail, IdentityStore, JobStore, KeyStore, KeyUpdate,
    MetadataUpdate, NewSecretVersion, RewrapBatch, RewrapItem, RewrapShard, RotationClaim,
    SealedSecret, SecretStore, Store, StoreError, VersionOp,
};
use crate::audit::{AuditArchive, AuditFilter, AuditRecord, Checkpoint};
use crate::domain::job::{Job, JobEvent, JobState};
use crate::domain::secret::{SecretPath, SecretRecord};
use crate::domain::{
    AccessKeyRecord, Alias, Key, KeyId, KeyName, KeyRef, KeyVersion, KeyVersionRecord,
    PolicyRecord, PrincipalRecord, RootKeyRef, TokenRecord, VersionState,
};
use crate::telemetry::run_blocking;

// Children (`keys`, `secrets`, …) read these through `super::`.
use super::codec::{from_millis, millis, now_text, parse_time, time_text};

/// The SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    timer: crate::metrics::StoreTimer,
    /// The disk reserve and whether the disk filled up.
    space: Arc<space::Space>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating with mode 0600 if needed) the database at `path` and migrates it.
    ///
    /// # Errors
    /// `Io` when the file cannot be created or has loose permissions that cannot be fixed;
    /// `Migration` naming the failing version; `SchemaTooNew` when a newer binary migrated the
    /// database past what this one knows.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, SQLITE).await
    }

    /// Opens the database at `path` migrated only up to `version` (at most the newest): what a
    /// binary that knew only those migrations leaves behind. For upgrade tests; the server always
    /// uses [`SqliteStore::open`].
    ///
    /// # Errors
    /// As [`SqliteStore::open`].
    pub async fn open_at_schema(path: &Path, version: u32) -> Result<Self, StoreError> {
        let known = SQLITE.iter().take_while(|m| m.version <= version).count();
        Self::open_with(path, SQLITE.get(..known).unwrap_or(SQLITE)).await
    }

    /// The newest schema version this binary knows.
    pub fn latest_schema() -> u32 {
        SQLITE.last().map_or(0, |m| m.version)
    }

    async fn open_with(path: &Path, migrations: &'static [Migration]) -> Result<Self, StoreError> {
        let owned = path.to_owned();
        let (conn, space) = run_blocking(move || {
            open_blocking(&owned, migrations).map(|c| (c, space::Space::open(&owned)))
        })
        .await?
        .map_err(Error::into_store)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_owned(),
            timer: crate::metrics::StoreTimer::unregistered("sqlite"),
            space: Arc::new(space),
        })
    }

    /// The same store, its calls timed by `timer` (metrics).
    #[must_use]
    pub fn with_timer(mut self, timer: crate::metrics::StoreTimer) -> Self {
        self.timer = timer;
        self
    }

    async fn with_conn<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, Error> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let space = Arc::clone(&self.space);
        let started = std::time::Instant::now();
        let result = run_blocking(move || {
            // A poisoned lock means a panic mid-query; the connection itself is still valid
            // because every write runs in a transaction that rolled back.
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            let result = space.prepare(&guard).and_then(|()| f(&mut guard));
            space.after(result)
        })
        .await
        .map_err(StoreError::from)
        .and_then(|r| r);
        self.timer.observe(started, &result);
        result
    }
}

fn open_blocking(path: &Path, migrations: &[Migration]) -> Result<Connection, Error> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    // Create the file ourselves so it never exists with the umask's mode; SQLite gives the
    // -wal and -shm files the mode of the database file.
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    let mut perms = std::fs::metadata(path)?.permissions();
    if perms.mode() & 0o077 != 0 {
        tracing::warn!(path = %path.display(), "database file was readable by others; setting mode 0600");
        perms.set_mode(0o600);
        std::fs::set_permissions(path, perms)?;
    }
    let mut conn = connect(path)?;
    migrate(&mut conn, migrations)?;
    Ok(conn)
}

/// A connection to an existing database file with the settings every connection uses.
fn connect(path: &Path) -> Result<Connection, Error> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // Every commit is durable (fsync of the WAL) before it returns.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Deleted content (destroyed secret versions) is overwritten with zeros, not left in free pages.
    conn.pragma_update(None, "secure_delete", "ON")?;
    Ok(conn)
}

/// Applies every migration newer than the recorded version, each in its own transaction.
/// Refuses a database recorded at a version newer than the last of `migrations`: a newer binary
/// migrated it, and this one would misread what it does not know.
fn migrate(conn: &mut Connection, migrations: &[Migration]) -> Result<(), Error> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL) STRICT;",
    )?;
    let current: u32 = conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )?;
    let supported = migrations.last().map_or(0, |m| m.version);
    if current > supported {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported,
        }
        .into());
    }
    for m in migrations.iter().filter(|m| m.version > current) {
        let wrap = |source: rusqlite::Error| StoreError::Migration {
            version: m.version,
            source: Box::new(source),
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(wrap)?;
        tx.execute_batch(m.sql).map_err(wrap)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            params![m.version, m.name, now_text()],
        )
        .map_err(wrap)?;
        tx.commit().map_err(wrap)?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "database migration applied"
        );
    }
    Ok(())
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn insert_key(&self, key: &Key) -> Result<(), StoreError> {
        let key = key.clone();
        self.with_conn(move |conn| keys::insert(conn, &key)).await
    }

    async fn key(&self, r: &KeyRef) -> Result<Option<Key>, StoreError> {
        let r = r.clone();
        self.with_conn(move |conn| keys::get(conn, &r)).await
    }

    async fn list_keys(&self, after: Option<&KeyName>, limit: u32) -> Result<Vec<Key>, StoreError> {
        let after = after.cloned();
        self.with_conn(move |conn| keys::list(conn, after.as_ref(), limit))
            .await
    }

    async fn update_key(
        &self,
        id: KeyId,
        update: &KeyUpdate,
        now: OffsetDateTime,
    ) -> Result<Key, StoreError> {
        let update = update.clone();
        self.with_conn(move |conn| keys::update(conn, id, &update, now))
            .await
    }

    async fn add_key_version(
        &self,
        id: KeyId,
        record: &KeyVersionRecord,
        expected_primary: KeyVersion,
        schedule: Option<RotationClaim>,
    ) -> Result<Key, StoreError> {
        let record = record.clone();
        self.with_conn(move |conn| keys::add_version(conn, id, &record, expected_primary, schedule))
            .await
    }

    async fn set_version_state(
        &self,
        id: KeyId,
        version: KeyVersion,
        from: &[VersionState],
        to: VersionState,
        now: OffsetDateTime,
    ) -> Result<Key, StoreError> {
        let from = from.to_vec();
        self.with_conn(move |conn| keys::set_version_state(conn, id, version, &from, to, now))
            .await
    }

    async fn destroy_versions(
        &self,
        id: KeyId,
        versions: &[KeyVersion],
        whole_key: bool,
        now: OffsetDateTime,
    ) -> Result<Key, StoreError> {
        let versions = versions.to_vec();
        self.with_conn(move |conn| keys::destroy_versions(conn, id, &versions, whole_key, now))
            .await
    }

    async fn references(&self, id: KeyId) -> Result<Vec<(KeyVersion, u64)>, StoreError> {
        self.with_conn(move |conn| keys::references(conn, id)).await
    }

    async fn mark_device_destroyed(&self, root: &RootKeyRef) -> Result<(), StoreError> {
        let root = root.clone();
        self.with_conn(move |conn| keys::mark_device_destroyed(conn, &root))
            .await
    }

    async fn pending_device_destroys(
        &self,
        marked_before: OffsetDateTime,
    ) -> Result<Vec<RootKeyRef>, StoreError> {
        self.with_conn(move |conn| keys::pending_device_destroys(conn, marked_before))
            .await
    }

    async fn reserve_wraps(&self, root: &RootKeyRef, n: u64) -> Result<u64, StoreError> {
        let root = root.clone();
        self.with_conn(move |conn| keys::reserve_wraps(conn, &root, n))
            .await
    }

    async fn due_key_rotations(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<(KeyId, OffsetDateTime)>, StoreError> {
        self.with_conn(move |conn| keys::due_rotations(conn, now, limit))
            .await
    }

    async fn budget_rotations(
        &self,
        threshold: u64,
        limit: u32,
    ) -> Result<Vec<(KeyId, KeyVersion)>, StoreError> {
        let threshold = i64::try_from(threshold).unwrap_or(i64::MAX);
        self.with_conn(move |conn| {
            let rows = conn
                .prepare_cached(
                    "SELECT k.id, k.primary_version FROM keys k
             JOIN key_versions v ON v.key_id = k.id AND v.version = k.primary_version
             WHERE k.state = 'enabled' AND v.wraps_reserved >= ?1
             ORDER BY k.id LIMIT ?2",
                )?
                .query_map(rusqlite::params![threshold, limit], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(id, v)| {
                    Ok((
                        id.parse()
                            .map_err(|_| StoreError::Corrupt { column: "keys.id" })?,
                        u32::try_from(v).ok().and_then(KeyVersion::new).ok_or(
                            StoreError::Corrupt {
                                column: "keys.primary_version",
                            },
                        )?,
                    ))
                })
                .collect()
        })
        .await
    }

    async fn due_key_deletions(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<KeyId>, StoreError> {
        self.with_conn(move |conn| keys::due_deletions(conn, now, limit))
            .await
    }

    async fn put_alias(
        &self,
        name: &KeyName,
        key_id: KeyId,
        create_only: bool,
        now: OffsetDateTime,
    ) -> Result<Alias, StoreError> {
        let name = name.clone();
        self.with_conn(move |conn| keys::put_alias(conn, &name, key_id, create_only, now))
            .await
    }

    async fn alias(&self, name: &KeyName) -> Result<Option<Alias>, StoreError> {
        let name = name.clone();
        self.with_conn(move |conn| keys::alias(conn, &name)).await
    }

    async fn list_aliases(&self) -> Result<Vec<Alias>, StoreError> {
        self.with_conn(|conn| keys::list_aliases(conn)).await
    }

    async fn delete_alias(&self, name: &KeyName) -> Result<bool, StoreError> {
        let name = name.clone();
        self.with_conn(move |conn| keys::delete_alias(conn, &name))
            .await
    }
}

#[async_trait]
impl IdentityStore for SqliteStore {
    async fn principal(&self, name: &str) -> Result<Option<PrincipalRecord>, StoreError> {
        let name = name.to_owned();
        self.with_conn(move |conn| identity::principal(conn, &name))
            .await
    }

    async fn list_principals(&self) -> Result<Vec<PrincipalRecord>, StoreError> {
        self.with_conn(|conn| identity::list_principals(conn)).await
    }

    async fn put_principal(
        &self,
        p: &PrincipalRecord,
        create_only: bool,
    ) -> Result<PrincipalRecord, StoreError> {
        let p = p.clone();
        self.with_conn(move |conn| identity::put_principal(conn, &p, create_only))
            .await
    }

    async fn delete_principal(&self, name: &str, now: OffsetDateTime) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.with_conn(move |conn| identity::delete_principal(conn, &name, now))
            .await
    }

    async fn policy(&self, name: &str) -> Result<Option<PolicyRecord>, StoreError> {
        let name = name.to_owned();
        self.with_conn(move |conn| identity::policy(conn, &name))
            .await
    }

    async fn list_policies(&self) -> Result<Vec<PolicyRecord>, StoreError> {
        self.with_conn(|conn| identity::list_policies(conn)).await
    }

    async fn put_policy(
        &self,
        name: &KeyName,
        document: &serde_json::Value,
        only_if_absent: bool,
        now: OffsetDateTime,
    ) -> Result<PolicyRecord, StoreError> {
        let (name, document) = (name.clone(), document.clone());
        self.with_conn(move |conn| {
            identity::put_policy(conn, &name, &document, only_if_absent, now)
        })
        .await
    }

    async fn delete_policy(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.with_conn(move |conn| identity::delete_policy(conn, &name))
            .await
    }

    async fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        let t = token.clone();
        self.with_conn(move |conn| identity::insert_token(conn, &t))
            .await
    }

    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let id = id.to_owned();
        self.with_conn(move |conn| identity::token(conn, &id)).await
    }

    async fn token_count(&self) -> Result<u64, StoreError> {
        self.with_conn(|conn| identity::token_count(conn)).await
    }

    async fn list_tokens(&self, principal: Option<&str>) -> Result<Vec<TokenRecord>, StoreError> {
        let principal = principal.map(str::to_owned);
        self.with_conn(move |conn| identity::list_tokens(conn, principal.as_deref()))
            .await
    }

    async fn revoke_token(&self, id: &str, now: OffsetDateTime) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.with_conn(move |conn| identity::revoke_token(conn, &id, now))
            .await
    }

    async fn insert_access_key(&self, key: &AccessKeyRecord) -> Result<(), StoreError> {
        let a = key.clone();
        self.with_conn(move |conn| identity::insert_access_key(conn, &a))
            .await
    }

    async fn access_key(&self, id: &str) -> Result<Option<AccessKeyRecord>, StoreError> {
        let id = id.to_owned();
        self.with_conn(move |conn| identity::access_key(conn, &id))
            .await
    }

    async fn list_access_keys(
        &self,
        principal: Option<&str>,
    ) -> Result<Vec<AccessKeyRecord>, StoreError> {
        let principal = principal.map(str::to_owned);
        self.with_conn(move |conn| identity::list_access_keys(conn, principal.as_deref()))
            .await
    }

    async fn revoke_access_key(&self, id: &str, now: OffsetDateTime) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.with_conn(move |conn| identity::revoke_access_key(conn, &id, now))
            .await
    }

    async fn reseal_access_key(
        &self,
        id: &str,
        old: &[u8],
        sealed: &[u8],
        key_version: KeyVersion,
    ) -> Result<bool, StoreError> {
        let (id, old, sealed) = (id.to_owned(), old.to_vec(), sealed.to_vec());
        self.with_conn(move |conn| {
            Ok(conn.execute(
                "UPDATE access_keys SET sealed_secret = ?3, key_version = ?4
                 WHERE id = ?1 AND sealed_secret = ?2 AND revoked_at IS NULL",
                rusqlite::params![id, old, sealed, key_version.get()],
            )? > 0)
        })
        .await
    }
}

#[async_trait]
impl SecretStore for SqliteStore {
    async fn secret(&self, path: &SecretPath) -> Result<Option<SecretRecord>, StoreError> {
        let path = path.clone();
        self.with_conn(move |conn| secrets::get(conn, &path)).await
    }

    async fn list_secrets(
        &self,
        prefix: &str,
        after: Option<&SecretPath>,
        limit: u32,
    ) -> Result<Vec<SecretRecord>, StoreError> {
        let (prefix, after) = (prefix.to_owned(), after.cloned());
        self.with_conn(move |conn| secrets::list(conn, &prefix, after.as_ref(), limit))
            .await
    }

    async fn secret_version_data(
        &self,
        path: &SecretPath,
        version: u32,
    ) -> Result<Option<SealedSecret>, StoreError> {
        let path = path.clone();
        self.with_conn(move |conn| secrets::data(conn, &path, version))
            .await
    }

    async fn insert_secret_version(&self, v: &NewSecretVersion) -> Result<Vec<u32>, StoreError> {
        let v = v.clone();
        self.with_conn(move |conn| secrets::insert(conn, &v)).await
    }

    async fn put_secret_metadata(
        &self,
        path: &SecretPath,
        key_id: KeyId,
        default_max_versions: u32,
        update: &MetadataUpdate,
        now: OffsetDateTime,
    ) -> Result<SecretRecord, StoreError> {
        let (path, update) = (path.clone(), update.clone());
        self.with_conn(move |conn| {
            secrets::put_metadata(conn, &path, key_id, default_max_versions, &update, now)
        })
        .await
    }

    async fn update_secret_versions(
        &self,
        path: &SecretPath,
        versions: &[u32],
        op: VersionOp,
        now: OffsetDateTime,
    ) -> Result<Vec<u32>, StoreError> {
        let (path, versions) = (path.clone(), versions.to_vec());
        self.with_conn(move |conn| secrets::update_versions(conn, &path, &versions, op, now))
            .await
    }

    async fn due_rotations(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<(SecretPath, OffsetDateTime)>, StoreError> {
        self.with_conn(move |conn| secrets::due(conn, now, limit))
            .await
    }
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn create_job(&self, job: &Job) -> Result<(), StoreError> {
        let job = job.clone();
        self.with_conn(move |conn| jobs::create(conn, &job)).await
    }

    async fn job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let id = id.to_owned();
        self.with_conn(move |conn| jobs::get(conn, &id)).await
    }

    async fn list_jobs(&self, state: Option<JobState>, limit: u32) -> Result<Vec<Job>, StoreError> {
        self.with_conn(move |conn| jobs::list(conn, state, limit))
            .await
    }

    async fn rewrap_candidates(
        &self,
        key_id: KeyId,
        target: KeyVersion,
        shard: RewrapShard,
        after: Option<&(SecretPath, u32)>,
        limit: u32,
    ) -> Result<Vec<RewrapItem>, StoreError> {
        // One node owns an SQLite database: the whole job is part 0.
        if shard.index != 0 {
            return Ok(Vec::new());
        }
        let after = after.cloned();
        self.with_conn(move |conn| jobs::candidates(conn, key_id, target, after.as_ref(), limit))
            .await
    }

    async fn apply_rewrap(&self, batch: &RewrapBatch) -> Result<u64, StoreError> {
        let batch = batch.clone();
        self.with_conn(move |conn| jobs::apply(conn, &batch)).await
    }

    async fn job_events(&self, id: &str) -> Result<Vec<JobEvent>, StoreError> {
        let id = id.to_owned();
        self.with_conn(move |conn| jobs::events(conn, &id)).await
    }

    async fn finish_job(
        &self,
        id: &str,
        state: JobState,
        error: Option<String>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.with_conn(move |conn| jobs::finish(conn, &id, state, error, now))
            .await
    }
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn audit_appender(&self) -> Result<Box<dyn AuditAppender>, StoreError> {
        let path = self.path.clone();
        let conn = run_blocking(move || connect(&path))
            .await?
            .map_err(Error::into_store)?;
        Ok(Box::new(audit::Appender {
            conn,
            space: Arc::clone(&self.space),
        }))
    }

    async fn audit_tail(&self) -> Result<AuditTail, StoreError> {
        self.with_conn(|conn| audit::tail(conn)).await
    }

    async fn audit_range(
        &self,
        after: u64,
        until: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.with_conn(move |conn| audit::range(conn, after, until, limit))
            .await
    }

    async fn audit_search(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        let f = filter.clone();
        self.with_conn(move |conn| audit::search(conn, &f)).await
    }

    async fn audit_checkpoints(
        &self,
        after: u64,
        until: u64,
    ) -> Result<Vec<Checkpoint>, StoreError> {
        self.with_conn(move |conn| audit::checkpoints(conn, after, until))
            .await
    }

    async fn archive_audit(&self, archive: &AuditArchive) -> Result<u64, StoreError> {
        let a = archive.clone();
        self.with_conn(move |conn| audit::archive_through(conn, &a))
            .await
    }
}

#[async_trait]
impl Store for SqliteStore {
    /// One connection behind a lock: in use while a call holds it.
    fn pool_usage(&self) -> crate::store::PoolUsage {
        let in_use = u64::from(self.conn.try_lock().is_err());
        crate::store::PoolUsage {
            max: 1,
            open: 1,
            in_use,
            waiting: 0,
        }
    }

    async fn check_writable(&self) -> Result<(), StoreError> {
        self.with_conn(|conn| {
            conn.execute(
                "INSERT INTO heartbeat (id, checked_at) VALUES (1, ?1)
                 ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
                [now_text()],
            )?;
            Ok(())
        })
        .await
    }

    async fn set_tpm_key_node(&self, key: KeyId, node: &str) -> Result<(), StoreError> {
        let (key, node) = (key.to_string(), node.to_owned());
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT INTO tpm_key_nodes (key_id, node) VALUES (?1, ?2)
                 ON CONFLICT (key_id) DO UPDATE SET node = excluded.node",
                rusqlite::params![key, node],
            )?;
            Ok(())
        })
        .await
    }

    async fn tpm_key_node(&self, key: KeyId) -> Result<Option<String>, StoreError> {
        let key = key.to_string();
        self.with_conn(move |conn| {
            use rusqlite::OptionalExtension as _;
            Ok(conn
                .query_row(
                    "SELECT node FROM tpm_key_nodes WHERE key_id = ?1",
                    [key],
                    |r| r.get::<_, String>(0),
                )
                .optional()?)
        })
        .await
    }

    async fn tpm_keys_on_node(&self, node: &str, limit: u32) -> Result<Vec<String>, StoreError> {
        let node = node.to_owned();
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT k.name FROM tpm_key_nodes t JOIN keys k ON k.id = t.key_id
                 WHERE t.node = ?1 AND k.state <> 'destroyed' ORDER BY k.name LIMIT ?2",
            )?;
            let names = stmt
                .query_map(rusqlite::params![node, limit], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(names)
        })
        .await
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        self.with_conn(move |conn| {
            use rusqlite::OptionalExtension as _;
            let now = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";
            let held = conn
                .query_row(
                    &format!(
                        "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, {now} + ?3)
                         ON CONFLICT (name) DO UPDATE
                           SET holder = excluded.holder, expires_at = excluded.expires_at
                           WHERE leases.holder = excluded.holder OR leases.expires_at < {now}
                         RETURNING holder"
                    ),
                    rusqlite::params![name, holder, ttl_ms],
                    |_| Ok(()),
                )
                .optional()?;
            Ok(held.is_some())
        })
        .await
    }

    async fn remove_expired_leases(
        &self,
        expired_for: std::time::Duration,
    ) -> Result<u64, StoreError> {
        let ms = i64::try_from(expired_for.as_millis()).unwrap_or(i64::MAX);
        self.with_conn(move |conn| {
            let now = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";
            let n = conn.execute(
                &format!("DELETE FROM leases WHERE expires_at < {now} - ?1"),
                [ms],
            )?;
            Ok(n as u64)
        })
        .await
    }
}
