//! The audit tables: records, checkpoints, archives.

use rusqlite::types::Value as SqlValue;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use super::error::Error;
use super::read_cache::ReadCache;
use super::space::Space;
use crate::audit::record::StoredHashes;
use crate::audit::{AuditArchive, AuditEntry, AuditFilter, AuditRecord, Checkpoint, Outcome};
use crate::store::codec::{self, AuditRow};
use crate::store::{AuditAppender, AuditTail, RewrapWrite, StaleKind, StoreError, VersionWrite};

/// The audit writer's own connection; it writes whatever the disk reserve allows.
pub struct Appender {
    pub(super) conn: Connection,
    pub(super) space: std::sync::Arc<Space>,
    /// The store's secret reads: the versions and re-wrap batches written here forget theirs.
    pub(super) read_cache: std::sync::Arc<ReadCache>,
}

impl Appender {
    /// Runs one write; when the disk was full and the reserve has been released since it
    /// began, runs it once more in the freed room (the failed try rolled back). A write whose
    /// second try differs from its first counts its calls ([`AuditAppender::append_with`]).
    fn write(
        &mut self,
        mut f: impl FnMut(&mut Connection) -> Result<(), Error>,
    ) -> Result<(), StoreError> {
        let mark = self.space.mark();
        let result = f(&mut self.conn).map_err(Error::into_store);
        if !self.space.released_since(mark, &result) {
            return result;
        }
        // Still full: the reserve is used up (the store is low already); the writer's caller
        // fails closed.
        f(&mut self.conn).map_err(Error::into_store)
    }
}

impl AuditAppender for Appender {
    fn append(&mut self, records: &[AuditRecord]) -> Result<(), StoreError> {
        self.write(|conn| append(conn, records))
    }

    fn writes_versions(&self) -> bool {
        true
    }

    fn append_with(
        &mut self,
        records: &[AuditRecord],
        versions: &mut [VersionWrite],
        rewraps: &mut [RewrapWrite],
    ) -> Result<(), StoreError> {
        let space = std::sync::Arc::clone(&self.space);
        let mut first = true;
        let mut pruned = false;
        let written = self.write(|conn| {
            if std::mem::take(&mut first) {
                pruned = append_with(conn, records, versions, rewraps, &space)?;
            } else {
                // The disk filled up under the batch: nothing was written. Its records are
                // written again in the released reserve, without the versions and re-wrap
                // batches, which are refused as every write is while the disk is low.
                for v in versions.iter_mut() {
                    v.result = Some(Err(StoreError::Full(LOW.into())));
                }
                for r in rewraps.iter_mut() {
                    r.result = Some(Err(StoreError::Full(LOW.into())));
                }
                append(conn, records)?;
            }
            Ok(())
        });
        // After the commit (or its failure) and before the writer answers anyone.
        self.read_cache.forget(
            versions.iter().map(|v| &v.version.path).chain(
                rewraps
                    .iter()
                    .flat_map(|r| r.batch.items.iter().map(|(i, _)| &i.path)),
            ),
        );
        written?;
        if pruned {
            super::secrets::checkpoint(&self.conn);
        }
        Ok(())
    }

    fn insert_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        self.write(|conn| insert_checkpoint(conn, checkpoint))
    }

    fn range(
        &mut self,
        after: u64,
        until: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        range(&self.conn, after, until, limit).map_err(Error::into_store)
    }

    fn tail(&mut self) -> Result<AuditTail, StoreError> {
        tail(&self.conn).map_err(Error::into_store)
    }

    fn range_hashes(
        &mut self,
        after: u64,
        until: u64,
        limit: u32,
    ) -> Result<Vec<StoredHashes>, StoreError> {
        range_hashes(&self.conn, after, until, limit).map_err(Error::into_store)
    }
}

const RECORD_COLUMNS: &str = "sequence, time, node, request_id, method, route, principal, \
    credential, source, action, resource, key_id, key_version, other_keys, outcome, status, \
    error_code, context_digest, context_keys, prev_hash, hash, details";

const CHECKPOINT_COLUMNS: &str =
    "sequence, head, time, node, algorithm, key_fingerprint, signature";

fn corrupt(column: &'static str) -> Error {
    StoreError::Corrupt { column }.into()
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A row as read, before validation (rusqlite's closure cannot return our error type).
type RawRecord = (
    (i64, String, String, String, String, String),
    (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ),
    (Option<String>, Option<i64>, String, String, i64),
    (Option<String>, Option<String>, String, String, String),
    String,
);

fn raw_record(r: &Row<'_>) -> rusqlite::Result<RawRecord> {
    Ok((
        (
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
        ),
        (r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?, r.get(10)?),
        (r.get(11)?, r.get(12)?, r.get(13)?, r.get(14)?, r.get(15)?),
        (r.get(16)?, r.get(17)?, r.get(18)?, r.get(19)?, r.get(20)?),
        r.get(21)?,
    ))
}

fn record(raw: RawRecord) -> Result<AuditRecord, Error> {
    let (
        (sequence, time, node, request_id, method, route),
        (principal, credential, source, action, resource),
        (key_id, key_version, other_keys, outcome, status),
        (error_code, context_digest, context_keys, prev_hash, hash),
        details,
    ) = raw;
    let list =
        |s: &str, column| serde_json::from_str::<Vec<String>>(s).map_err(|_| corrupt(column));
    Ok(AuditRecord {
        sequence: u64::try_from(sequence).map_err(|_| corrupt("audit_records.sequence"))?,
        entry: AuditEntry {
            time,
            node,
            request_id,
            method,
            route,
            principal,
            credential,
            source,
            action,
            resource,
            key_id,
            key_version: key_version
                .map(u32::try_from)
                .transpose()
                .map_err(|_| corrupt("audit_records.key_version"))?,
            other_keys: list(&other_keys, "audit_records.other_keys")?,
            outcome: Outcome::parse(&outcome).ok_or(corrupt("audit_records.outcome"))?,
            status: u16::try_from(status).map_err(|_| corrupt("audit_records.status"))?,
            error_code,
            context_digest,
            context_keys: list(&context_keys, "audit_records.context_keys")?,
            details: serde_json::from_str(&details)
                .map_err(|_| corrupt("audit_records.details"))?,
        },
        prev_hash,
        hash,
    })
}

fn checkpoint(r: &Row<'_>) -> rusqlite::Result<(i64, Checkpoint)> {
    Ok((
        r.get(0)?,
        Checkpoint {
            sequence: 0,
            head: r.get(1)?,
            time: r.get(2)?,
            node: r.get(3)?,
            algorithm: r.get(4)?,
            key_fingerprint: r.get(5)?,
            signature: r.get(6)?,
        },
    ))
}

fn checkpoint_of((seq, mut c): (i64, Checkpoint)) -> Result<Checkpoint, Error> {
    c.sequence = u64::try_from(seq).map_err(|_| corrupt("audit_checkpoints.sequence"))?;
    Ok(c)
}

fn archive(r: &Row<'_>) -> rusqlite::Result<(i64, AuditArchive)> {
    Ok((
        r.get(0)?,
        AuditArchive {
            through: 0,
            head: r.get(1)?,
            export_sha256: r.get(2)?,
            archived_at: r.get(3)?,
            principal: r.get(4)?,
            request_id: r.get(5)?,
        },
    ))
}

pub(super) fn tail(conn: &Connection) -> Result<AuditTail, Error> {
    let last = conn
        .query_row(
            "SELECT sequence, hash FROM audit_records ORDER BY sequence DESC LIMIT 1",
            [],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
        )
        .optional()?
        .map(|(s, h)| {
            u64::try_from(s)
                .map(|s| (s, h))
                .map_err(|_| corrupt("audit_records.sequence"))
        })
        .transpose()?;
    let checkpoint = conn
        .query_row(
            &format!(
                "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY sequence DESC LIMIT 1"
            ),
            [],
            checkpoint,
        )
        .optional()?
        .map(checkpoint_of)
        .transpose()?;
    let archive = conn
        .query_row(
            "SELECT through_sequence, head, export_sha256, archived_at, principal, request_id
             FROM audit_archives ORDER BY through_sequence DESC LIMIT 1",
            [],
            archive,
        )
        .optional()?
        .map(|(s, mut a)| {
            a.through = u64::try_from(s).map_err(|_| corrupt("audit_archives.through_sequence"))?;
            Ok::<_, Error>(a)
        })
        .transpose()?;
    Ok(AuditTail {
        last,
        checkpoint,
        archive,
    })
}

pub(super) fn append(conn: &mut Connection, records: &[AuditRecord]) -> Result<(), Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    insert_records(&tx, records)?;
    tx.commit()?;
    Ok(())
}

/// [`AuditAppender::append_with`] on SQLite: the versions, each under its savepoint, then the
/// records, in one transaction. While the disk is low no version is tried (the reserve is for
/// audit records). Returns whether a version pruned older ones (their erasure is finished by a
/// checkpoint after the commit).
fn append_with(
    conn: &mut Connection,
    records: &[AuditRecord],
    versions: &mut [VersionWrite],
    rewraps: &mut [RewrapWrite],
    space: &Space,
) -> Result<bool, Error> {
    let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut pruned = false;
    for r in rewraps.iter_mut() {
        r.result = Some(on_its_own(&mut tx, space, |sp| {
            super::jobs::apply_in(sp, &r.batch)
        })?);
    }
    for v in versions.iter_mut() {
        let result = on_its_own(&mut tx, space, |sp| super::secrets::insert(sp, &v.version))?;
        pruned |= result.as_ref().is_ok_and(|p| !p.is_empty());
        v.result = Some(result);
    }
    insert_records(&tx, records)?;
    tx.commit()?;
    Ok(pruned)
}

/// Runs one change that rides in the records' transaction under a savepoint of its own: kept
/// if it succeeds, undone alone if not, and not tried while the disk is low. The outer error
/// is the savepoint's own (the whole transaction fails); the inner one is the change's answer.
fn on_its_own<T>(
    tx: &mut rusqlite::Transaction<'_>,
    space: &Space,
    change: impl FnOnce(&Connection) -> Result<T, Error>,
) -> Result<Result<T, StoreError>, Error> {
    if space.is_low() {
        return Ok(Err(StoreError::Full(LOW.into())));
    }
    let mut sp = tx.savepoint()?;
    let result = change(&sp);
    if result.is_ok() {
        sp.commit()?;
    } else {
        sp.rollback()?;
    }
    Ok(space.after(result))
}

/// Why a version was not tried: the disk is low (or filled up during the batch).
const LOW: &str = "the database's disk is full: writes are refused";

fn insert_records(tx: &rusqlite::Transaction<'_>, records: &[AuditRecord]) -> Result<(), Error> {
    {
        let mut stmt = tx.prepare_cached(&format!(
            "INSERT INTO audit_records ({RECORD_COLUMNS}) VALUES
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)"
        ))?;
        for r in records {
            let e = &r.entry;
            let other_keys = serde_json::to_string(&e.other_keys)
                .map_err(|_| corrupt("audit_records.other_keys"))?;
            let context_keys = serde_json::to_string(&e.context_keys)
                .map_err(|_| corrupt("audit_records.context_keys"))?;
            let details =
                serde_json::to_string(&e.details).map_err(|_| corrupt("audit_records.details"))?;
            stmt.execute(params![
                to_i64(r.sequence),
                e.time,
                e.node,
                e.request_id,
                e.method,
                e.route,
                e.principal,
                e.credential,
                e.source,
                e.action,
                e.resource,
                e.key_id,
                e.key_version,
                other_keys,
                e.outcome.as_str(),
                e.status,
                e.error_code,
                e.context_digest,
                context_keys,
                r.prev_hash,
                r.hash,
                details,
            ])?;
        }
    }
    Ok(())
}

pub(super) fn insert_checkpoint(conn: &Connection, c: &Checkpoint) -> Result<(), Error> {
    conn.execute(
        &format!("INSERT INTO audit_checkpoints ({CHECKPOINT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
        params![
            to_i64(c.sequence),
            c.head,
            c.time,
            c.node,
            c.algorithm,
            c.key_fingerprint,
            c.signature
        ],
    )?;
    Ok(())
}

/// The records with `after < sequence <= until` (`?1`, `?2`), in order, at most `?3`.
fn range_statement(conn: &Connection) -> rusqlite::Result<rusqlite::CachedStatement<'_>> {
    conn.prepare_cached(&format!(
        "SELECT {RECORD_COLUMNS} FROM audit_records
         WHERE sequence > ?1 AND sequence <= ?2 ORDER BY sequence LIMIT ?3"
    ))
}

pub(super) fn range(
    conn: &Connection,
    after: u64,
    until: u64,
    limit: u32,
) -> Result<Vec<AuditRecord>, Error> {
    let mut stmt = range_statement(conn)?;
    let rows = stmt
        .query_map(params![to_i64(after), to_i64(until), limit], raw_record)?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter().map(record).collect()
}

/// [`AuditAppender::range_hashes`] from the rows' columns where they lie
/// ([`codec::stored_hashes`]), without building each record.
pub(super) fn range_hashes(
    conn: &Connection,
    after: u64,
    until: u64,
    limit: u32,
) -> Result<Vec<StoredHashes>, Error> {
    let mut stmt = range_statement(conn)?;
    let mut rows = stmt.query(params![to_i64(after), to_i64(until), limit])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(codec::stored_hashes(row)?);
    }
    Ok(out)
}

impl AuditRow for Row<'_> {
    fn text(&self, i: usize) -> Result<Option<&str>, StoreError> {
        let value = self.get_ref(i).map_err(super::error::map)?;
        value
            .as_str_or_null()
            .map_err(|e| super::error::map(e.into()))
    }
    fn integer(&self, i: usize) -> Result<Option<i64>, StoreError> {
        self.get(i).map_err(super::error::map)
    }
}

pub(super) fn search(conn: &Connection, f: &AuditFilter) -> Result<Vec<AuditRecord>, Error> {
    let mut sql = format!("SELECT {RECORD_COLUMNS} FROM audit_records WHERE sequence > ?1");
    let mut args: Vec<SqlValue> = vec![SqlValue::Integer(to_i64(f.after))];
    let mut add = |column: &str, op: &str, value: Option<String>| {
        if let Some(v) = value {
            args.push(SqlValue::Text(v));
            sql.push_str(&format!(" AND {column} {op} ?{}", args.len()));
        }
    };
    add("principal", "=", f.principal.clone());
    add("key_id", "=", f.key_id.clone());
    add("action", "=", f.action.clone());
    add("outcome", "=", f.outcome.map(|o| o.as_str().to_owned()));
    add("time", ">=", f.since.clone());
    add("time", "<", f.until.clone());
    args.push(SqlValue::Integer(i64::from(f.limit)));
    sql.push_str(&format!(" ORDER BY sequence LIMIT ?{}", args.len()));
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args), raw_record)?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter().map(record).collect()
}

pub(super) fn checkpoints(
    conn: &Connection,
    after: u64,
    until: u64,
) -> Result<Vec<Checkpoint>, Error> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints
         WHERE sequence > ?1 AND sequence <= ?2 ORDER BY sequence"
    ))?;
    let rows = stmt
        .query_map(params![to_i64(after), to_i64(until)], checkpoint)?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter().map(checkpoint_of).collect()
}

pub(super) fn archive_through(conn: &mut Connection, a: &AuditArchive) -> Result<u64, Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let stored: Option<String> = tx
        .query_row(
            "SELECT hash FROM audit_records WHERE sequence = ?1",
            params![to_i64(a.through)],
            |r| r.get(0),
        )
        .optional()?;
    match stored {
        None => return Err(StoreError::NotFound.into()),
        Some(h) if h != a.head => {
            return Err(StoreError::Stale {
                what: StaleKind::AuditHead,
            }
            .into())
        }
        Some(_) => {}
    }
    let removed = tx.execute(
        "DELETE FROM audit_records WHERE sequence <= ?1",
        params![to_i64(a.through)],
    )?;
    tx.execute(
        "INSERT INTO audit_archives (through_sequence, head, export_sha256, archived_at, principal, request_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            to_i64(a.through),
            a.head,
            a.export_sha256,
            a.archived_at,
            a.principal,
            a.request_id
        ],
    )?;
    tx.commit()?;
    Ok(u64::try_from(removed).unwrap_or(0))
}
