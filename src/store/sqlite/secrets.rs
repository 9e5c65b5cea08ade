//! The secrets tables: records, versions, pruning, destruction and due rotations.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use time::OffsetDateTime;
use tokio::sync::oneshot;

use super::error::Error;
use super::read_cache::ReadCache;
use super::space::Space;
use super::{from_millis, millis, parse_time, time_text};
use crate::domain::secret::{
    CustomMetadata, GenerateSpec, HumanDuration, SecretPath, SecretRecord, SecretVersionInfo,
    SecretVersionState,
};
use crate::domain::{KeyId, KeyVersion, VersionState};
use crate::store::{
    MetadataUpdate, NewSecretVersion, SealedSecret, SecretForRead, StaleKind, StoreError, VersionOp,
};

const SECRET_COLUMNS: &str = "path, key_id, current_version, max_versions, expires_after_s, \
                              custom, generate, next_rotation_at, created_at, updated_at";

fn corrupt(column: &'static str) -> Error {
    StoreError::Corrupt { column }.into()
}

/// A `secrets` row, raw.
struct Row {
    path: String,
    key_id: String,
    current_version: u32,
    max_versions: u32,
    expires_after_s: Option<i64>,
    custom: String,
    generate: Option<String>,
    next_rotation_at: Option<i64>,
    created_at: String,
    updated_at: String,
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        path: r.get(0)?,
        key_id: r.get(1)?,
        current_version: r.get(2)?,
        max_versions: r.get(3)?,
        expires_after_s: r.get(4)?,
        custom: r.get(5)?,
        generate: r.get(6)?,
        next_rotation_at: r.get(7)?,
        created_at: r.get(8)?,
        updated_at: r.get(9)?,
    })
}

fn versions(conn: &Connection, path: &str) -> Result<Vec<SecretVersionInfo>, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT version, state, created_at, deleted_at, destroyed_at, key_id, key_version
         FROM secret_versions WHERE path = ?1 ORDER BY version",
    )?;
    let rows = stmt.query_map([path], |r| {
        Ok((
            r.get::<_, u32>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, Option<String>>(5)?,
            r.get::<_, Option<u32>>(6)?,
        ))
    })?;
    rows.map(|r| {
        let (version, state, created, deleted, destroyed, key_id, key_version) = r?;
        let opt_time = |t: Option<String>, c| t.map(|t| parse_time(&t, c)).transpose();
        Ok(SecretVersionInfo {
            version,
            state: SecretVersionState::parse(&state).ok_or(corrupt("secret_versions.state"))?,
            created_at: parse_time(&created, "secret_versions.created_at")?,
            deleted_at: opt_time(deleted, "secret_versions.deleted_at")?,
            destroyed_at: opt_time(destroyed, "secret_versions.destroyed_at")?,
            key_id: key_id
                .map(|k| {
                    k.parse::<KeyId>()
                        .map_err(|_| corrupt("secret_versions.key_id"))
                })
                .transpose()?,
            key_version: key_version
                .map(|v| KeyVersion::new(v).ok_or(corrupt("secret_versions.key_version")))
                .transpose()?,
        })
    })
    .collect()
}

fn record(conn: &Connection, r: Row) -> Result<SecretRecord, Error> {
    let versions = versions(conn, &r.path)?;
    Ok(SecretRecord {
        path: SecretPath::from_stored(r.path).map_err(|_| corrupt("secrets.path"))?,
        key_id: r.key_id.parse().map_err(|_| corrupt("secrets.key_id"))?,
        current_version: r.current_version,
        max_versions: r.max_versions,
        expires_after: r
            .expires_after_s
            .map(|s| {
                u64::try_from(s)
                    .map(|s| HumanDuration(std::time::Duration::from_secs(s)))
                    .map_err(|_| corrupt("secrets.expires_after_s"))
            })
            .transpose()?,
        custom: serde_json::from_str::<CustomMetadata>(&r.custom)
            .map_err(|_| corrupt("secrets.custom"))?,
        generate: r
            .generate
            .map(|g| {
                serde_json::from_str::<GenerateSpec>(&g).map_err(|_| corrupt("secrets.generate"))
            })
            .transpose()?,
        next_rotation_at: r
            .next_rotation_at
            .map(|t| from_millis(t, "secrets.next_rotation_at"))
            .transpose()?,
        created_at: parse_time(&r.created_at, "secrets.created_at")?,
        updated_at: parse_time(&r.updated_at, "secrets.updated_at")?,
        versions,
    })
}

/// The record at `path`.
pub(super) fn get(conn: &Connection, path: &SecretPath) -> Result<Option<SecretRecord>, Error> {
    let r = conn
        .prepare_cached(&format!(
            "SELECT {SECRET_COLUMNS} FROM secrets WHERE path = ?1"
        ))?
        .query_row([path.as_str()], row)
        .optional()?;
    r.map(|r| record(conn, r)).transpose()
}

/// A page of records.
pub(super) fn list(
    conn: &Connection,
    prefix: &str,
    after: Option<&SecretPath>,
    limit: u32,
) -> Result<Vec<SecretRecord>, Error> {
    // `substr` rather than LIKE: a prefix may contain `_`, which LIKE treats as a wildcard.
    let rows = conn
        .prepare_cached(&format!(
            "SELECT {SECRET_COLUMNS} FROM secrets
             WHERE substr(path, 1, length(?1)) = ?1 AND path > ?2 ORDER BY path LIMIT ?3"
        ))?
        .query_map(
            params![prefix, after.map(SecretPath::as_str).unwrap_or(""), limit],
            row,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter().map(|r| record(conn, r)).collect()
}

/// The wrapped data key and ciphertext of one version.
pub(super) fn data(
    conn: &Connection,
    path: &SecretPath,
    version: u32,
) -> Result<Option<SealedSecret>, Error> {
    Ok(conn
        .prepare_cached(
            "SELECT wrapped_dek, ciphertext FROM secret_versions
             WHERE path = ?1 AND version = ?2 AND wrapped_dek IS NOT NULL AND ciphertext IS NOT NULL",
        )?
        .query_row(params![path.as_str(), version], |r| {
            Ok(SealedSecret { wrapped_dek: r.get(0)?, ciphertext: r.get(1)? })
        })
        .optional()?)
}

/// The record at `path` and the sealed data of `version` (default: the newest live one), read
/// in one transaction so the two agree.
pub(super) fn for_read(
    conn: &Connection,
    path: &SecretPath,
    version: Option<u32>,
) -> Result<Option<SecretForRead>, Error> {
    let tx = conn.unchecked_transaction()?;
    let Some(record) = get(&tx, path)? else {
        return Ok(None);
    };
    let wanted = version.or_else(|| record.latest_live().map(|v| v.version));
    let sealed = match wanted {
        Some(n) => data(&tx, path, n)?.map(|d| (n, d)),
        None => None,
    };
    tx.finish()?;
    Ok(Some((record, sealed)))
}

/// Erases versions: state destroyed, ciphertext and wrapped data key gone.
fn destroy(tx: &Connection, path: &str, versions: &[u32], now: &str) -> Result<Vec<u32>, Error> {
    let mut changed = Vec::new();
    for v in versions {
        let n = tx.execute(
            "UPDATE secret_versions SET state = 'destroyed', destroyed_at = ?3,
                 wrapped_dek = NULL, ciphertext = NULL, key_id = NULL, key_version = NULL
             WHERE path = ?1 AND version = ?2 AND state != 'destroyed'",
            params![path, v, now],
        )?;
        if n > 0 {
            changed.push(*v);
        }
    }
    Ok(changed)
}

/// Destroys the oldest versions beyond `max_versions` (0 = unlimited).
fn prune(tx: &Connection, path: &str, max_versions: u32, now: &str) -> Result<Vec<u32>, Error> {
    if max_versions == 0 {
        return Ok(Vec::new());
    }
    let kept: Vec<u32> = tx
        .prepare_cached(
            "SELECT version FROM secret_versions WHERE path = ?1 AND state != 'destroyed'
             ORDER BY version",
        )?
        .query_map([path], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let excess = kept.len().saturating_sub(max_versions as usize);
    let pruned = destroy(tx, path, &kept[..excess], now)?;
    if let Some(&oldest_kept) = kept.get(excess) {
        tx.prepare_cached(
            "DELETE FROM secret_versions WHERE path = ?1 AND state = 'destroyed'
               AND version < ?2 AND version < (SELECT version FROM secret_versions
                 WHERE path = ?1 AND state = 'destroyed' AND version < ?2
                 ORDER BY version DESC LIMIT 1 OFFSET ?3)",
        )?
        .execute(params![
            path,
            oldest_kept,
            crate::store::KEPT_TOMBSTONES - 1
        ])?;
    }
    Ok(pruned)
}

/// A secret version waiting for a group commit, and where its answer goes.
pub(super) struct Queued {
    version: NewSecretVersion,
    done: oneshot::Sender<Result<Vec<u32>, StoreError>>,
}

impl Queued {
    /// The queued version and the receiver of its answer: the versions pruning destroyed,
    /// once the commit that holds it returned, or why it was not written.
    pub(super) fn new(
        version: NewSecretVersion,
    ) -> (Self, oneshot::Receiver<Result<Vec<u32>, StoreError>>) {
        let (done, answer) = oneshot::channel();
        (Self { version, done }, answer)
    }
}

/// Writes every queued version in one transaction, each under a savepoint of its own so one
/// that fails (check-and-set, a stale version, a retired key) is undone alone and answered with
/// its error, and answers each once the commit returned: group commit, one flush for all the
/// versions written while the previous commit was flushing. A failed commit fails them all.
/// Each is decided on the state the ones before it left, so two versions of one path in one
/// group get what they would get one after the other (the service writes a path under its
/// lock, so only callers of the store itself send such pairs).
pub(super) fn insert_queued(
    conn: &mut Connection,
    queue: &Mutex<Vec<Queued>>,
    space: &Space,
    cache: &ReadCache,
) {
    let mut batch = std::mem::take(&mut *queue.lock().unwrap_or_else(|p| p.into_inner()));
    // A caller that stopped waiting (its request was cancelled, or its own group commit could
    // not run and it answered with that error) is not written behind its back.
    batch.retain(|q| !q.done.is_closed());
    if batch.is_empty() {
        return;
    }
    let mut results = Vec::with_capacity(batch.len());
    let committed = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .and_then(|mut tx| {
            for q in &batch {
                let mut sp = tx.savepoint()?;
                let result = insert(&sp, &q.version);
                if result.is_ok() {
                    sp.commit()?;
                } else {
                    sp.rollback()?;
                }
                results.push(result);
            }
            tx.commit()
        });
    // Before anyone is answered: a read after a write's answer never finds the old version.
    cache.forget(batch.iter().map(|q| &q.version.path));
    let pruned_any = results
        .iter()
        .any(|r| r.as_ref().is_ok_and(|p| !p.is_empty()));
    match committed {
        Ok(()) => {
            if pruned_any {
                checkpoint(conn);
            }
            for (q, result) in batch.into_iter().zip(results) {
                // A caller that gave up waiting has no one to tell.
                let _ = q.done.send(space.after(result));
            }
        }
        Err(e) => {
            // Nothing was written: every version gets the commit's failure.
            let failure = space.after::<()>(Err(Error::Sql(e)));
            for q in batch {
                let _ = q
                    .done
                    .send(failure.as_ref().map(|()| Vec::new()).map_err(shared));
            }
        }
    }
}

/// The failure of a commit, once for each version it held.
fn shared(e: &StoreError) -> StoreError {
    let text: Box<dyn std::error::Error + Send + Sync> =
        format!("group commit: {e}: {:?}", std::error::Error::source(e)).into();
    match e {
        StoreError::Full(_) => StoreError::Full(text),
        _ => StoreError::Unavailable(text),
    }
}

/// Records a version inside the caller's transaction (see the trait docs).
pub(super) fn insert(tx: &Connection, v: &NewSecretVersion) -> Result<Vec<u32>, Error> {
    let path = v.path.as_str();
    let now = time_text(v.created_at);
    // Every statement here is prepared once per connection: a group commit runs them for each
    // version it holds, while the database's write lock is held.
    let existing: Option<(u32, u32, Option<i64>)> = tx
        .prepare_cached(
            "SELECT current_version, max_versions, next_rotation_at FROM secrets WHERE path = ?1",
        )?
        .query_row([path], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let current = existing.map_or(0, |e| e.0);
    if let Some(cas) = v.cas {
        if cas != current {
            return Err(StoreError::CheckAndSet { current }.into());
        }
    }
    super::keys::require_version(
        tx,
        v.key_id,
        v.key_version,
        &[VersionState::Primary, VersionState::Active],
    )?;
    if v.version != current + 1 {
        return Err(StoreError::Stale {
            what: StaleKind::SecretVersion,
        }
        .into());
    }
    if let Some(claim) = v.rotation {
        if let Some(expected) = claim.expected {
            let seen = existing.and_then(|e| e.2);
            if seen != expected.map(millis) {
                return Err(StoreError::Stale {
                    what: StaleKind::RotationSchedule,
                }
                .into());
            }
        }
    }
    let max_versions = match existing {
        Some((_, max, _)) => max,
        None => {
            tx.prepare_cached(&format!(
                "INSERT INTO secrets ({SECRET_COLUMNS})
                 VALUES (?1, ?2, 0, ?3, NULL, '{{}}', NULL, NULL, ?4, ?4)"
            ))?
            .execute(params![
                path,
                v.key_id.to_string(),
                v.default_max_versions,
                now
            ])?;
            v.default_max_versions
        }
    };
    tx.prepare_cached(
        "INSERT INTO secret_versions
             (path, version, state, created_at, key_id, key_version, wrapped_dek, ciphertext)
         VALUES (?1, ?2, 'live', ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        path,
        v.version,
        now,
        v.key_id.to_string(),
        v.key_version.get(),
        v.wrapped_dek,
        v.ciphertext
    ])?;
    tx.prepare_cached("UPDATE secrets SET current_version = ?2, updated_at = ?3 WHERE path = ?1")?
        .execute(params![path, v.version, now])?;
    if let Some(claim) = v.rotation {
        tx.prepare_cached("UPDATE secrets SET next_rotation_at = ?2 WHERE path = ?1")?
            .execute(params![path, millis(claim.next)])?;
    }
    if crate::store::pruning_may_apply(v.version, max_versions) {
        prune(tx, path, max_versions, &now)
    } else {
        Ok(Vec::new())
    }
}

/// Creates (if absent) and updates metadata (see the trait docs).
pub(super) fn put_metadata(
    conn: &mut Connection,
    path: &SecretPath,
    key_id: KeyId,
    default_max_versions: u32,
    u: &MetadataUpdate,
    now: OffsetDateTime,
) -> Result<SecretRecord, Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let p = path.as_str();
    let now_text = time_text(now);
    tx.execute(
        &format!(
            "INSERT INTO secrets ({SECRET_COLUMNS})
             VALUES (?1, ?2, 0, ?3, NULL, '{{}}', NULL, NULL, ?4, ?4)
             ON CONFLICT (path) DO NOTHING"
        ),
        params![p, key_id.to_string(), default_max_versions, now_text],
    )?;
    if let Some(k) = u.key_id {
        tx.execute(
            "UPDATE secrets SET key_id = ?2 WHERE path = ?1",
            params![p, k.to_string()],
        )?;
    }
    if let Some(max) = u.max_versions {
        tx.execute(
            "UPDATE secrets SET max_versions = ?2 WHERE path = ?1",
            params![p, max],
        )?;
    }
    if let Some(exp) = u.expires_after {
        let secs = exp.map(|d| i64::try_from(d.0.as_secs()).unwrap_or(i64::MAX));
        tx.execute(
            "UPDATE secrets SET expires_after_s = ?2 WHERE path = ?1",
            params![p, secs],
        )?;
    }
    if let Some(custom) = &u.custom {
        let json = serde_json::to_string(custom).map_err(|_| corrupt("secrets.custom"))?;
        tx.execute(
            "UPDATE secrets SET custom = ?2 WHERE path = ?1",
            params![p, json],
        )?;
    }
    if let Some((spec, next)) = &u.generate {
        let json = spec
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|_| corrupt("secrets.generate"))?;
        tx.execute(
            "UPDATE secrets SET generate = ?2, next_rotation_at = ?3 WHERE path = ?1",
            params![p, json, next.map(millis)],
        )?;
    }
    tx.execute(
        "UPDATE secrets SET updated_at = ?2 WHERE path = ?1",
        params![p, now_text],
    )?;
    let max: u32 = tx.query_row(
        "SELECT max_versions FROM secrets WHERE path = ?1",
        [p],
        |r| r.get(0),
    )?;
    let pruned = prune(&tx, p, max, &now_text)?;
    tx.commit()?;
    if !pruned.is_empty() {
        checkpoint(conn);
    }
    get(conn, path)?.ok_or(StoreError::NotFound.into())
}

/// Applies `op` to versions (see the trait docs).
pub(super) fn update_versions(
    conn: &mut Connection,
    path: &SecretPath,
    versions: &[u32],
    op: VersionOp,
    now: OffsetDateTime,
) -> Result<Vec<u32>, Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let p = path.as_str();
    let now_text = time_text(now);
    for v in versions {
        let exists: Option<i64> = tx
            .query_row(
                "SELECT 1 FROM secret_versions WHERE path = ?1 AND version = ?2",
                params![p, v],
                |r| r.get(0),
            )
            .optional()?;
        if exists.is_none() {
            return Err(StoreError::NotFound.into());
        }
    }
    let changed = match op {
        VersionOp::Destroy => destroy(&tx, p, versions, &now_text)?,
        VersionOp::Delete | VersionOp::Undelete => {
            let (from, to, deleted_at) = match op {
                VersionOp::Delete => ("live", "deleted", Some(now_text.as_str())),
                _ => ("deleted", "live", None),
            };
            let mut changed = Vec::new();
            for v in versions {
                let n = tx.execute(
                    "UPDATE secret_versions SET state = ?4, deleted_at = ?5
                     WHERE path = ?1 AND version = ?2 AND state = ?3",
                    params![p, v, from, to, deleted_at],
                )?;
                if n > 0 {
                    changed.push(*v);
                }
            }
            changed
        }
    };
    if !changed.is_empty() {
        tx.execute(
            "UPDATE secrets SET updated_at = ?2 WHERE path = ?1",
            params![p, now_text],
        )?;
    }
    tx.commit()?;
    if op == VersionOp::Destroy && !changed.is_empty() {
        checkpoint(conn);
    }
    Ok(changed)
}

/// Due rotations.
pub(super) fn due(
    conn: &Connection,
    now: OffsetDateTime,
    limit: u32,
) -> Result<Vec<(SecretPath, OffsetDateTime)>, Error> {
    let rows = conn
        .prepare_cached(
            "SELECT path, next_rotation_at FROM secrets
             WHERE next_rotation_at IS NOT NULL AND next_rotation_at <= ?1
             ORDER BY next_rotation_at LIMIT ?2",
        )?
        .query_map(params![millis(now), limit], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(|(p, t)| {
            Ok((
                SecretPath::from_stored(p).map_err(|_| corrupt("secrets.path"))?,
                from_millis(t, "secrets.next_rotation_at")?,
            ))
        })
        .collect()
}

/// How long a destroy waits, in all, for the checkpoint that takes its pages out of the WAL.
/// The store's writing connection waits with it, so this stays short.
const ERASE_WAIT: Duration = Duration::from_secs(1);

/// Moves every WAL frame into the database file and truncates the WAL, so erased values do not
/// linger in the journal (`secure_delete` zeroes them in the database file itself), and waits
/// for that to finish: until then the database file may still hold a page from before the
/// destroy, and a crash in between would leave it there.
///
/// SQLite refuses at once, without the busy handler, while another checkpoint runs (the
/// store's checkpointer thread, every 200 ms), and leaves the checkpoint unfinished when a
/// reader kept older frames past the busy handler's wait. The pragma reports both in its row's
/// first column (1: busy), not as an error. Both, and a busy error, are tried again for up to
/// [`ERASE_WAIT`] in all. Past that the failure is logged, not fatal: the checkpointer thread
/// copies the frames back at its next round.
pub(super) fn checkpoint(conn: &Connection) {
    let started = Instant::now();
    let mut pause = Duration::from_micros(50);
    loop {
        let result = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            r.get::<_, i64>(0)
        });
        let retry = match &result {
            Ok(0) => return,
            Ok(_) => true,
            Err(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ),
            Err(_) => false,
        };
        if !retry || started.elapsed() + pause > ERASE_WAIT {
            match result {
                Err(e) => tracing::warn!(error = %e, "WAL checkpoint after destroying secret versions failed"),
                Ok(_) => tracing::warn!("WAL checkpoint after destroying secret versions did not finish: a reader held older frames"),
            }
            return;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A destroy's checkpoint finishes although another connection's checkpoint holds the
    /// checkpoint lock (and a writer the write lock) when it starts: SQLite refuses it at once
    /// then, in the pragma's row, and the destroyed pages would stay in the WAL only.
    #[test]
    fn the_erasing_checkpoint_waits_out_another_checkpoint_and_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("erase.db");
        let open = |path: &std::path::Path| {
            let c = Connection::open(path).unwrap();
            let mode: String = c
                .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
            c.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
            c
        };
        let subject = open(&path);
        subject
            .execute_batch("CREATE TABLE t (b BLOB); INSERT INTO t VALUES (zeroblob(4000));")
            .unwrap();
        // A writer holds the write lock...
        let writer = open(&path);
        writer
            .execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (zeroblob(4000));")
            .unwrap();
        // ...and a FULL checkpoint on a third connection takes the checkpoint lock and waits
        // for the writer with its busy handler.
        let other = {
            let path = path.clone();
            std::thread::spawn(move || {
                let c = Connection::open(&path).unwrap();
                c.busy_timeout(Duration::from_secs(10)).unwrap();
                c.query_row("PRAGMA wal_checkpoint(FULL)", [], |r| r.get::<_, i64>(0))
                    .unwrap()
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            writer.execute_batch("COMMIT").unwrap();
        });
        checkpoint(&subject);
        let wal = std::fs::metadata(dir.path().join("erase.db-wal"))
            .unwrap()
            .len();
        assert_eq!(
            wal, 0,
            "the WAL still holds {wal} bytes after the erasing checkpoint"
        );
        release.join().unwrap();
        other.join().unwrap();
    }
}
