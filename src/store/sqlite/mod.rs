//! The SQLite store (rusqlite): WAL journal, a file created with mode 0600, every query on the
//! blocking pool. One connection behind a mutex writes (and reads what a write decides on); a
//! few `query_only` connections serve the hot reads beside it, so a read never waits behind a
//! commit's flush; secret versions written at once share one commit (`secrets::insert_queued`).

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
mod read_cache;
mod secrets;
mod space;

use self::error::Error;
use super::migrations::{Migration, SQLITE};
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
use crate::telemetry::run_blocking;

// Children (`keys`, `secrets`, …) read these through `super::`.
use super::codec::{from_millis, millis, now_text, parse_time, time_text};

/// Read-only connections to the same file, used round-robin (WAL lets them read while the
/// writing connection commits).
struct Readers {
    conns: Vec<Mutex<Connection>>,
    next: std::sync::atomic::AtomicUsize,
}

/// How many read-only connections a store opens.
const READERS: usize = 4;

/// Bytes of secret reads kept in memory unless `store.secret_cache_bytes` says otherwise.
pub const DEFAULT_READ_CACHE_BYTES: usize = 16 << 20;

impl Readers {
    fn open(path: &Path) -> Result<Self, Error> {
        let conns = (0..READERS)
            .map(|_| {
                let conn = connect(path)?;
                conn.pragma_update(None, "query_only", true)?;
                Ok(Mutex::new(conn))
            })
            .collect::<Result<_, Error>>()?;
        Ok(Self {
            conns,
            next: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// A free connection if there is one, else the next in turn (waiting for it).
    fn take(&self) -> std::sync::MutexGuard<'_, Connection> {
        let start = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let n = self.conns.len();
        for i in 0..n {
            if let Ok(guard) = self.conns[(start + i) % n].try_lock() {
                return guard;
            }
        }
        // A poisoned lock means a panic mid-read; the connection itself is still valid.
        self.conns[start % n]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

/// The SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    readers: Arc<Readers>,
    /// Stops (and closes its connection) when the last clone of the store is dropped.
    _checkpointer: Arc<Checkpointer>,
    /// Secret versions waiting for the next group commit (`secrets::insert_queued`).
    queued_versions: Arc<Mutex<Vec<secrets::Queued>>>,
    path: PathBuf,
    timer: crate::metrics::StoreTimer,
    /// The disk reserve and whether the disk filled up.
    space: Arc<space::Space>,
    /// Newest-version secret reads, forgotten by every change to their rows (decision 0028).
    read_cache: Arc<read_cache::ReadCache>,
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
        let (conn, readers, checkpointer, space) = run_blocking(move || {
            let conn = open_blocking(&owned, migrations)?;
            let readers = Readers::open(&owned)?;
            let checkpointer = connect(&owned)?;
            Ok::<_, Error>((conn, readers, checkpointer, space::Space::open(&owned)))
        })
        .await?
        .map_err(Error::into_store)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            readers: Arc::new(readers),
            _checkpointer: Arc::new(Checkpointer::start(checkpointer)?),
            queued_versions: Arc::new(Mutex::new(Vec::new())),
            path: path.to_owned(),
            timer: crate::metrics::StoreTimer::unregistered("sqlite"),
            space: Arc::new(space),
            read_cache: Arc::new(read_cache::ReadCache::new(DEFAULT_READ_CACHE_BYTES)),
        })
    }

    /// The same store, keeping at most `bytes` of secret reads in memory (0: none). Every
    /// clone of the store and every audit appender it made share the one cache.
    #[must_use]
    pub fn with_read_cache(self, bytes: usize) -> Self {
        self.read_cache.set_budget(bytes);
        self
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
        self.timed(move || {
            // A poisoned lock means a panic mid-query; the connection itself is still valid
            // because every write runs in a transaction that rolled back.
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            let result = space.prepare(&guard).and_then(|()| f(&mut guard));
            space.after(result)
        })
        .await
    }

    /// Runs `f` on the blocking pool, timed by the store's metrics.
    async fn timed<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    {
        let started = std::time::Instant::now();
        let result = run_blocking(f)
            .await
            .map_err(StoreError::from)
            .and_then(|r| r);
        self.timer.observe(started, &result);
        result
    }

    /// Runs a read on one of the read-only connections.
    async fn with_reader<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        self.timed(move || f(&readers.take()).map_err(Error::into_store))
            .await
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
    conn.busy_handler(Some(wait_for_lock))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // Every commit is durable (fsync of the WAL) before it returns.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Deleted content (destroyed secret versions) is overwritten with zeros, not left in free pages.
    conn.pragma_update(None, "secure_delete", "ON")?;
    // No connection copies the WAL back into the database as it commits: the store's own
    // checkpointer thread does (`Checkpointer`). Left to the committing connection, once
    // the WAL passed 1,000 pages under steady reads every commit paid for a checkpoint as well
    // (two more flushes).
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    // Room for every statement a connection runs often (rusqlite keeps 16 by default; the
    // request connection alone runs more than that, and one pushed out is parsed again).
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 128;

/// A WAL with more frames (pages) than this is started over: 8,192 pages of 4 KiB, 32 MiB.
/// Public for the bench, which warms the WAL past it before measuring.
pub const WAL_RESTART_FRAMES: i64 = 8192;

/// How often the checkpointer copies what the WAL holds back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// The thread that checkpoints the WAL every [`CHECKPOINT_EVERY`]: passive (it never waits
/// for, nor blocks, the writing connections), and a restart once the WAL passed
/// [`WAL_RESTART_FRAMES`]. Dropping it stops the thread and waits for it, so the file is no
/// longer open once the last clone of the store is gone (`store migrate` needs it alone).
struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(conn: Connection) -> Result<Self, StoreError> {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("custodian-sqlite-checkpoint".to_owned())
            .spawn(move || {
                let mut failing = false;
                // Nothing is ever sent: the sender's drop ends the wait at once.
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    failing = checkpoint_once(&conn, failing);
                }
            })
            .map_err(StoreError::Io)?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // A panic in the thread has been reported already; nothing is left to do.
            let _ = thread.join();
        }
    }
}

/// One round of the checkpointer; returns whether it is failing now (logged when that changes).
fn checkpoint_once(conn: &Connection, failing: bool) -> bool {
    // (busy, frames in the WAL, frames copied back)
    let passive = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1));
    // Under steady writes a passive checkpoint never quite catches up, and the WAL never
    // starts over: past the bound, wait for the readers and writers of the moment (the busy
    // handler's wait) and start it over.
    let result = match passive {
        Ok(frames) if frames > WAL_RESTART_FRAMES => {
            conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))
        }
        other => other.map(drop),
    };
    match (result, failing) {
        (Err(e), false) => {
            tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
            true
        }
        (Ok(()), true) => {
            tracing::info!("WAL checkpoint works again");
            false
        }
        (result, _) => result.is_err(),
    }
}

/// How long a connection waits for another one's write lock (the audit writer's connection
/// and the store's writing one take turns; an offline command may hold it too) before its
/// statement fails busy.
const LOCK_WAIT: Duration = Duration::from_secs(5);
/// The first polls are this short: the other connection here holds the lock for one commit,
/// a fraction of a millisecond. SQLite's own `busy_timeout` sleeps 1, 2, 5, 10 … ms, a whole
/// commit's time or more lost at every turn.
const LOCK_POLL_SHORT: Duration = Duration::from_micros(50);
/// Short polls come first, then [`LOCK_POLL_LONG`] ones until [`LOCK_WAIT`] is spent.
const LOCK_POLLS_SHORT: u32 = 100;
const LOCK_POLL_LONG: Duration = Duration::from_millis(1);

/// SQLite's busy handler: `tries` earlier polls found the database locked; sleep and try
/// again (`true`) until about [`LOCK_WAIT`] has passed, then give up (`false`: `SQLITE_BUSY`).
fn wait_for_lock(tries: i32) -> bool {
    match lock_poll(u32::try_from(tries).unwrap_or(0)) {
        Some(pause) => {
            std::thread::sleep(pause);
            true
        }
        None => false,
    }
}

/// The pause before poll `tries + 1`, or `None` once [`LOCK_WAIT`] is spent.
fn lock_poll(tries: u32) -> Option<Duration> {
    let short = tries.min(LOCK_POLLS_SHORT);
    let waited = LOCK_POLL_SHORT * short + LOCK_POLL_LONG * (tries - short);
    (waited < LOCK_WAIT).then_some(if tries < LOCK_POLLS_SHORT {
        LOCK_POLL_SHORT
    } else {
        LOCK_POLL_LONG
    })
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
            identity::reseal_access_key(conn, &id, &old, &sealed, key_version)
        })
        .await
    }
}

#[async_trait]
impl SecretStore for SqliteStore {
    async fn secret(&self, path: &SecretPath) -> Result<Option<SecretRecord>, StoreError> {
        let path = path.clone();
        self.with_reader(move |conn| secrets::get(conn, &path))
            .await
    }

    async fn secret_for_read(
        &self,
        path: &SecretPath,
        version: Option<u32>,
    ) -> Result<Option<SecretForRead>, StoreError> {
        // Only the newest version's read is kept: the one a plain `GET` asks for.
        if version.is_none() {
            if let Some(read) = self.read_cache.get(path) {
                return Ok(Some(read));
            }
        }
        let ticket = self.read_cache.ticket();
        let owned = path.clone();
        let read = self
            .with_reader(move |conn| secrets::for_read(conn, &owned, version))
            .await?;
        if let (None, Some(read)) = (version, &read) {
            self.read_cache.keep(ticket, path, read);
        }
        Ok(read)
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

    fn forget_read(&self, path: &SecretPath) {
        self.read_cache.forget([path]);
    }

    async fn secret_version_data(
        &self,
        path: &SecretPath,
        version: u32,
    ) -> Result<Option<SealedSecret>, StoreError> {
        let path = path.clone();
        self.with_reader(move |conn| secrets::data(conn, &path, version))
            .await
    }

    async fn insert_secret_version(&self, v: &NewSecretVersion) -> Result<Vec<u32>, StoreError> {
        let (queued, done) = secrets::Queued::new(v.clone());
        self.queued_versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(queued);
        // One group commit of whatever is queued when it gets the connection: ours, unless
        // the group commit before it already took ours along. If this one cannot run, the
        // error is the answer and `done` is dropped, so no later group writes ours.
        let queue = Arc::clone(&self.queued_versions);
        let space = Arc::clone(&self.space);
        let cache = Arc::clone(&self.read_cache);
        self.with_conn(move |conn| {
            secrets::insert_queued(conn, &queue, &space, &cache);
            Ok(())
        })
        .await?;
        done.await.map_err(|_| {
            StoreError::Unavailable("the group commit ended without an answer".into())
        })?
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
        let cache = Arc::clone(&self.read_cache);
        // Forgotten on the blocking thread, after the commit: a request cancelled meanwhile
        // does not leave the old read kept.
        self.with_conn(move |conn| {
            let result =
                secrets::put_metadata(conn, &path, key_id, default_max_versions, &update, now);
            cache.forget([&path]);
            result
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
        let cache = Arc::clone(&self.read_cache);
        self.with_conn(move |conn| {
            let result = secrets::update_versions(conn, &path, &versions, op, now);
            cache.forget([&path]);
            result
        })
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

    fn splits_rewrap_jobs(&self) -> bool {
        false
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
        let cache = Arc::clone(&self.read_cache);
        self.with_conn(move |conn| {
            let result = jobs::apply(conn, &batch);
            cache.forget(batch.items.iter().map(|(item, _)| &item.path));
            result
        })
        .await
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
            read_cache: Arc::clone(&self.read_cache),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_database_is_polled_briefly_at_first_and_given_up_after_five_seconds() {
        let pauses: Vec<Duration> = (0..).map_while(lock_poll).collect();
        assert!(pauses[..100]
            .iter()
            .all(|p| *p == Duration::from_micros(50)));
        assert!(pauses[100..].iter().all(|p| *p == Duration::from_millis(1)));
        let total: Duration = pauses.iter().sum();
        assert!(
            total >= LOCK_WAIT && total <= LOCK_WAIT + Duration::from_millis(1),
            "{total:?}"
        );
    }

    /// The re-check's hashes straight from the rows' columns equal those of the records read
    /// whole, for records with and without every optional field, escapes in the lists and the
    /// details, an edited row, and a row whose column no record can hold (`Corrupt` both ways).
    #[tokio::test]
    async fn the_rechecks_hashes_from_the_columns_match_the_records() {
        use crate::audit::record::{AuditEntry, AuditRecord, Outcome, StoredHashes, GENESIS};
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("custodian.db");
        let store = SqliteStore::open(&db).await.unwrap();
        let mut appender = store.audit_appender().await.unwrap();
        let bare = AuditEntry {
            time: "2026-12-07T12:00:00.000000Z".into(),
            node: "n1".into(),
            request_id: "r".into(),
            method: "GET".into(),
            route: "/v1/keys".into(),
            principal: None,
            credential: None,
            source: None,
            action: None,
            resource: None,
            key_id: None,
            key_version: None,
            other_keys: Vec::new(),
            outcome: Outcome::Unauthenticated,
            status: 401,
            error_code: Some("unauthenticated".into()),
            context_digest: None,
            context_keys: Vec::new(),
            details: std::collections::BTreeMap::new(),
        };
        let full = AuditEntry {
            principal: Some("app \"one\" é".into()),
            credential: Some("token:1".into()),
            source: Some("127.0.0.1".into()),
            action: Some("datakey:generate".into()),
            resource: Some("key/k".into()),
            key_id: Some("0194".into()),
            key_version: Some(4_000_000_000),
            other_keys: vec!["a".into(), "b\\c".into()],
            outcome: Outcome::Success,
            status: 200,
            error_code: None,
            context_digest: Some("ab".repeat(32)),
            context_keys: vec!["app".into(), "line\nbreak".into(), "".into()],
            details: [("z", "1"), ("a", "quote \" here"), ("m", "")]
                .into_iter()
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect(),
            ..bare.clone()
        };
        let mut records = Vec::new();
        let mut prev = GENESIS;
        for (i, e) in [bare, full.clone(), full].into_iter().enumerate() {
            let r = AuditRecord::chain(i as u64 + 1, e, &prev);
            prev = r.hash_bytes().unwrap();
            records.push(r);
        }
        appender.append(&records).unwrap();
        let whole = |a: &mut Box<dyn AuditAppender>| -> Vec<StoredHashes> {
            a.range(0, 10, 10)
                .unwrap()
                .iter()
                .map(StoredHashes::of)
                .collect()
        };
        let expected = whole(&mut appender);
        assert_eq!(expected.len(), 3);
        assert!(expected
            .iter()
            .all(|h| h.recomputed == h.hash && h.hash.is_some()));
        assert_eq!(appender.range_hashes(0, 10, 10).unwrap(), expected);
        assert_eq!(appender.range_hashes(1, 2, 10).unwrap(), expected[1..2]);

        let edit = rusqlite::Connection::open(&db).unwrap();
        edit.execute(
            "UPDATE audit_records SET details = '{\"a\":\"quote \\\" there\",\"m\":\"\",\"z\":\"1\"}', \
             context_keys = '[\"app\"]' WHERE sequence = 3",
            [],
        )
        .unwrap();
        let edited = whole(&mut appender);
        assert_ne!(edited[2].recomputed, edited[2].hash);
        assert_eq!(appender.range_hashes(0, 10, 10).unwrap(), edited);

        edit.execute(
            "UPDATE audit_records SET other_keys = 'not json' WHERE sequence = 2",
            [],
        )
        .unwrap();
        assert!(matches!(
            appender.range(0, 10, 10),
            Err(StoreError::Corrupt {
                column: "audit_records.other_keys"
            })
        ));
        assert!(matches!(
            appender.range_hashes(0, 10, 10),
            Err(StoreError::Corrupt {
                column: "audit_records.other_keys"
            })
        ));
    }

    /// SQLite's plan for `sql` with `params` on a fresh store, one line per step.
    async fn query_plan<P: rusqlite::Params + Send + 'static>(
        sql: &'static str,
        params: P,
    ) -> String {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("custodian.db"))
            .await
            .unwrap();
        store
            .with_conn(move |conn| {
                let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                let rows = stmt.query_map(params, |r| r.get::<_, String>(3))?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?.join("\n"))
            })
            .await
            .unwrap()
    }

    /// A re-wrap batch reads the next rows from its cursor through an index; it does not read
    /// and sort every row of the key (which made a job's reads grow with the square of its size).
    #[tokio::test]
    async fn rewrap_candidates_are_a_range_scan_from_the_cursor() {
        let plan = query_plan(jobs::CANDIDATES, ("k", 2, "a/b", 1, 100)).await;
        assert!(
            plan.contains(
                "SEARCH secret_versions USING INDEX secret_versions_rewrap_walk \
                 (key_id=? AND (path,version)>(?,?))"
            ),
            "{plan}"
        );
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    }

    /// Whether anything is left to move is two seeks in the index of what each key version
    /// wraps, not a walk of the key's rows.
    #[tokio::test]
    async fn whether_a_key_has_rows_left_is_two_index_seeks() {
        let plan = query_plan(jobs::ANY_LEFT, ("k", 2)).await;
        for side in ["<", ">"] {
            let seek = format!(
                "SEARCH secret_versions USING COVERING INDEX secret_versions_by_key \
                 (key_id=? AND key_version{side}?)"
            );
            assert!(plan.contains(&seek), "{plan}");
        }
        assert!(!plan.contains("SCAN secret_versions"), "{plan}");
    }

    /// No commit checkpoints (`wal_autocheckpoint = 0`): the store's thread copies the WAL back
    /// into the database file, and stops with the store.
    #[tokio::test]
    async fn the_checkpointer_copies_the_wal_back_and_stops_with_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("custodian.db");
        let store = SqliteStore::open(&path).await.unwrap();
        let before = std::fs::metadata(&path).unwrap().len();
        // Commits never checkpoint: the writer and the readers run with the automatic
        // checkpoint off. (Comparing the file's size right after the commits raced with the
        // store's own thread on a busy machine.)
        let autocheckpoint = |conn: &Connection| {
            conn.query_row("PRAGMA wal_autocheckpoint", [], |r| r.get::<_, i64>(0))
        };
        assert_eq!(
            store
                .with_conn(move |c| Ok(autocheckpoint(c)?))
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            store
                .with_reader(move |c| Ok(autocheckpoint(c)?))
                .await
                .unwrap(),
            0
        );
        store
            .with_conn(|conn| {
                conn.execute_batch("CREATE TABLE filler (b BLOB)")?;
                for _ in 0..200 {
                    conn.execute("INSERT INTO filler VALUES (zeroblob(4000))", [])?;
                }
                Ok(())
            })
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::fs::metadata(&path).unwrap().len() < before + 200 * 4000 {
            assert!(std::time::Instant::now() < deadline, "no checkpoint in 5 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(store);
        // Every connection of the store is closed: the file can be held exclusively at once.
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
            .unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE; COMMIT").unwrap();
    }
}
