//! Moving an install from SQLite to PostgreSQL (`custodian store migrate`): every table copied
//! row for row, byte for byte, in one PostgreSQL transaction, and checked before it commits.
//!
//! The copy works below the [`Store`](super::Store) traits, at the SQL level, because the traits
//! do not expose everything an install holds (policy history, job trails, archives, the exact
//! state and timestamps of secret versions, the wrap budget of key versions). Both dialects have
//! the same tables and columns (`src/store/migrations/`), so each table is read from SQLite in
//! primary-key order and written with PostgreSQL's binary `COPY` into the same columns. Text is
//! copied as it is stored: times are RFC 3339 text, and audit hashes cover them, so the chain
//! keeps verifying.
//!
//! The order of events, and what each guards against:
//! 1. The source must exist (opening would otherwise create an empty database) and nobody may
//!    have it open: a running server is refused (`SourceInUse`), found by taking SQLite's
//!    exclusive lock, which a process that has the file open prevents.
//! 2. The source is opened as the server opens it ([`SqliteStore::open`]), so it is migrated to
//!    the newest schema first; the target likewise ([`PostgresStore::open`]).
//! 3. For the copy the source is held under the exclusive lock (no server can start on it
//!    meanwhile) and read in one transaction; on the target every table is locked against
//!    writers and must be empty, or nothing is written (`TargetNotEmpty`, naming the tables).
//! 4. Each table is streamed: a blocking reader sends batches of rows over a bounded channel,
//!    the writer copies them in. Before the commit every table is read back from the target and
//!    its row count and a SHA-256 digest over its rows compared with the source's; any
//!    difference rolls everything back.
//! 5. After the commit the target is read through the store itself: the audit chain's last
//!    record and checkpoint must be the source's.
//!
//! A table a future migration adds must be listed in [`COPIED`] (or, with a reason, in
//! [`NOT_COPIED`]); a source with a table in neither is refused, and a unit test compares the
//! lists with the schema the migrations build.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_postgres::binary_copy::{BinaryCopyInWriter, BinaryCopyOutStream};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Transaction;

use super::postgres::{PostgresSettings, PostgresStore};
use super::sqlite::SqliteStore;
use super::{AuditStore, StoreError};
use crate::telemetry::run_blocking;

/// Every table that is copied, in an order that satisfies the foreign keys.
pub const COPIED: &[&str] = &[
    "keys",
    "tpm_key_nodes",
    "key_versions",
    "aliases",
    "principals",
    "policies",
    "policy_versions",
    "tokens",
    "access_keys",
    "db_connections",
    "db_roles",
    "db_leases",
    "secrets",
    "secret_versions",
    "jobs",
    "job_events",
    "audit_records",
    "audit_checkpoints",
    "audit_archives",
];

/// Tables that are deliberately not copied, with the reason.
pub const NOT_COPIED: &[(&str, &str)] = &[
    (
        "schema_migrations",
        "each database records its own migrations; the target is migrated when it is opened",
    ),
    (
        "heartbeat",
        "the readiness probe's scratch row, rewritten by every check",
    ),
    (
        "leases",
        "which running node holds a background duty: the target's nodes take them afresh",
    ),
];

/// Rows per batch handed from the reader to the writer.
const BATCH: usize = 1024;

/// Batches in flight between the reader and the writer.
const IN_FLIGHT: usize = 4;

/// Why a migration failed, grouped by who is at fault.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    // --- the caller ---
    /// The source file does not exist (opening it would create an empty database).
    #[error("the source database {} does not exist", .0.display())]
    SourceMissing(PathBuf),
    /// Another process has the source open.
    #[error(
        "the source database {} is in use by another process; stop the server (and anything \
         else that has the file open) first",
        .0.display()
    )]
    SourceInUse(PathBuf),
    /// The target URL does not parse.
    #[error("the PostgreSQL URL does not parse (postgres://user@host:port/dbname)")]
    BadUrl,
    /// The target URL carries a password.
    #[error(
        "the PostgreSQL URL must not contain a password (URLs end up in shell histories and \
         process listings); pass the password from a file or the environment"
    )]
    PasswordInUrl,
    /// The target already holds data.
    #[error(
        "the target database is not empty ({0}); migrate into a new, empty database (and do not \
         start the server on it before)"
    )]
    TargetNotEmpty(RowCounts),
    /// The source has tables this binary does not know how to copy.
    #[error(
        "the source database has tables this binary does not copy ({0}); it was written by a \
         newer binary: migrate with that one"
    )]
    UnknownTables(String),
    /// The two schemas differ where they must agree.
    #[error("table {table}: the source and the target schema differ: {detail}")]
    SchemaMismatch {
        /// The table.
        table: &'static str,
        /// How they differ.
        detail: String,
    },

    // --- a dependency ---
    /// The source database failed.
    #[error("source database")]
    Source(#[source] StoreError),
    /// The target database failed.
    #[error("target database")]
    Target(#[source] StoreError),

    // --- a bug (or a damaged source) ---
    /// A stored value does not have its column's type.
    #[error("source value in {table}.{column} is not valid {expected}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// The column.
        column: String,
        /// What it should have been.
        expected: &'static str,
    },
    /// What was written is not what was read.
    #[error("verification failed for {table}: {detail}")]
    Verify {
        /// The table (or `audit chain`).
        table: &'static str,
        /// What differs.
        detail: String,
    },
}

/// Row counts per table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowCounts(pub Vec<(&'static str, u64)>);

impl fmt::Display for RowCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (table, rows) in &self.0 {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            let s = if *rows == 1 { "" } else { "s" };
            write!(f, "{table}: {rows} row{s}")?;
        }
        Ok(())
    }
}

/// What a migration copied.
#[derive(Debug, Clone)]
pub struct MigrationReport {
    /// Rows copied per table, in copy order.
    pub tables: RowCounts,
    /// The audit chain's last record (sequence, hex hash), on both sides.
    pub audit_head: Option<(u64, String)>,
    /// The last signed checkpoint's sequence, on both sides.
    pub last_checkpoint: Option<u64>,
    /// How long the copy (with its checks) took.
    pub elapsed: Duration,
}

impl MigrationReport {
    /// All rows copied.
    pub fn total_rows(&self) -> u64 {
        self.tables.0.iter().map(|(_, n)| n).sum()
    }
}

impl fmt::Display for MigrationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (table, rows) in &self.tables.0 {
            writeln!(f, "{table:<18} {rows:>10}")?;
        }
        let total = self.total_rows();
        writeln!(f, "{:<18} {total:>10}", "total")?;
        match &self.audit_head {
            Some((seq, hash)) => writeln!(f, "audit chain: through sequence {seq}, head {hash}")?,
            None => writeln!(f, "audit chain: empty")?,
        }
        if let Some(c) = self.last_checkpoint {
            writeln!(f, "last signed checkpoint: sequence {c}")?;
        }
        let secs = self.elapsed.as_secs_f64();
        // Display only: a rate, no precision needed.
        #[allow(clippy::cast_precision_loss)]
        let rate = if secs > 0.0 { total as f64 / secs } else { 0.0 };
        write!(
            f,
            "copied and verified in {secs:.2} s ({rate:.0} rows/s); counts, contents and the \
             audit head match"
        )
    }
}

/// Copies the SQLite database at `from` into the empty PostgreSQL database `to`, checks the
/// copy, and reports what was copied. Runs offline: the server must be stopped.
///
/// # Errors
/// Caller: `SourceMissing`, `SourceInUse`, `BadUrl`, `PasswordInUrl`, `TargetNotEmpty`,
/// `UnknownTables`, `SchemaMismatch`. Dependency: `Source`, `Target`. Bug or damage: `Corrupt`,
/// `Verify`. Nothing is written to the target on error, except that opening it applies the
/// schema migrations (as the server would) and that a `Verify` failure of the final audit check
/// comes after the commit.
///
/// # Security
/// The password is taken only from `to.password`; the source file's rows (token hashes, wrapped
/// keys, ciphertexts) pass through memory unlogged.
pub async fn sqlite_to_postgres(
    from: &Path,
    to: &PostgresSettings,
) -> Result<MigrationReport, MigrateError> {
    let url: tokio_postgres::Config = to.url.parse().map_err(|_| MigrateError::BadUrl)?;
    if url.get_password().is_some() {
        return Err(MigrateError::PasswordInUrl);
    }
    if !from.is_file() {
        return Err(MigrateError::SourceMissing(from.to_owned()));
    }
    let started = Instant::now();
    // Refuse a source in use before opening it: opening migrates, under a running server too.
    let owned = from.to_owned();
    drop(
        run_blocking(move || open_exclusive(&owned))
            .await
            .map_err(blocking)??,
    );
    drop(
        SqliteStore::open(from)
            .await
            .map_err(MigrateError::Source)?,
    );
    let target = PostgresStore::open(to)
        .await
        .map_err(MigrateError::Target)?;

    let owned = from.to_owned();
    let (source, tables, head) = run_blocking(move || {
        let conn = open_exclusive(&owned)?;
        let tables = source_tables(&conn)?;
        let head = source_head(&conn)?;
        Ok::<_, MigrateError>((conn, tables, head))
    })
    .await
    .map_err(blocking)??;

    let mut client = target
        .dedicated_client()
        .await
        .map_err(MigrateError::Target)?;
    let tx = client.transaction().await.map_err(target_err)?;
    let lock = format!("LOCK TABLE {} IN EXCLUSIVE MODE", COPIED.join(", "));
    tx.batch_execute(&lock).await.map_err(target_err)?;
    let present = target_counts(&tx).await?;
    if present.0.iter().any(|(_, n)| *n > 0) {
        let non_empty = present.0.into_iter().filter(|(_, n)| *n > 0).collect();
        return Err(MigrateError::TargetNotEmpty(RowCounts(non_empty)));
    }
    for t in &tables {
        check_target_columns(&tx, t).await?;
    }

    let (sender, receiver) = mpsc::channel(IN_FLIGHT);
    let reader_tables = tables.clone();
    let reader = run_blocking(move || read_all(&source, &reader_tables, &sender));
    // The writer owns the receiver, so a writer that fails drops it and the reader, blocked on
    // a full channel, stops instead of waiting forever.
    let writer = write_all(&tx, &tables, receiver);
    let (read, written) = tokio::join!(reader, writer);
    // The reader's error explains the writer's (a channel that closed early), so it wins.
    read.map_err(blocking)??;
    let counts = written?;
    tx.commit().await.map_err(target_err)?;

    let tail = target.audit_tail().await.map_err(MigrateError::Target)?;
    if tail.last != head.last {
        return Err(MigrateError::Verify {
            table: "audit chain",
            detail: format!(
                "the target's last record is {:?}, the source's {:?}",
                tail.last, head.last
            ),
        });
    }
    let checkpoint = tail.checkpoint.map(|c| (c.sequence, c.head));
    if checkpoint != head.checkpoint {
        return Err(MigrateError::Verify {
            table: "audit chain",
            detail: format!(
                "the target's last checkpoint is {checkpoint:?}, the source's {:?}",
                head.checkpoint
            ),
        });
    }
    Ok(MigrationReport {
        tables: counts,
        audit_head: head.last,
        last_checkpoint: head.checkpoint.map(|(seq, _)| seq),
        elapsed: started.elapsed(),
    })
}

fn blocking(e: crate::telemetry::BlockingError) -> MigrateError {
    MigrateError::Source(StoreError::Blocking(e))
}

fn source_err(e: rusqlite::Error) -> MigrateError {
    MigrateError::Source(StoreError::Unavailable(Box::new(e)))
}

fn target_err(e: tokio_postgres::Error) -> MigrateError {
    MigrateError::Target(StoreError::Unavailable(Box::new(e)))
}

/// A connection that holds the source file exclusively (SQLite's `locking_mode = EXCLUSIVE`
/// and an open `BEGIN EXCLUSIVE`) until it is dropped: no other connection can read or write
/// the file meanwhile, and one that has it open already makes this fail at once.
fn open_exclusive(path: &Path) -> Result<Connection, MigrateError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(source_err)?;
    let in_use = |e: rusqlite::Error| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            MigrateError::SourceInUse(path.to_owned())
        }
        _ => source_err(e),
    };
    conn.busy_timeout(Duration::ZERO).map_err(source_err)?;
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
        .map_err(in_use)?;
    conn.execute_batch("BEGIN EXCLUSIVE").map_err(in_use)?;
    Ok(conn)
}

/// A column's storage class, the same on both sides: SQLite INTEGER, TEXT, BLOB are PostgreSQL
/// BIGINT, TEXT, BYTEA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Text,
    Bytes,
}

impl Kind {
    fn of_sqlite(declared: &str) -> Option<Self> {
        match declared.to_ascii_uppercase().as_str() {
            "INTEGER" => Some(Self::Int),
            "TEXT" => Some(Self::Text),
            "BLOB" => Some(Self::Bytes),
            _ => None,
        }
    }

    fn of_postgres(data_type: &str) -> Option<Self> {
        match data_type {
            "bigint" => Some(Self::Int),
            "text" => Some(Self::Text),
            "bytea" => Some(Self::Bytes),
            _ => None,
        }
    }

    fn pg_type(self) -> Type {
        match self {
            Self::Int => Type::INT8,
            Self::Text => Type::TEXT,
            Self::Bytes => Type::BYTEA,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Int => "INTEGER",
            Self::Text => "UTF-8 TEXT",
            Self::Bytes => "BLOB",
        }
    }
}

#[derive(Debug, Clone)]
struct Column {
    name: String,
    kind: Kind,
}

/// One table as the source has it: its columns (in the source's order) and its primary key.
#[derive(Debug, Clone)]
struct Table {
    name: &'static str,
    columns: Vec<Column>,
    key: Vec<String>,
}

impl Table {
    fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| format!("\"{}\"", c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `ORDER BY` on the primary key; text compared as bytes on PostgreSQL too, as SQLite does.
    fn order_by(&self, postgres: bool) -> String {
        self.key
            .iter()
            .map(|k| {
                let text = self
                    .columns
                    .iter()
                    .any(|c| &c.name == k && c.kind == Kind::Text);
                if postgres && text {
                    format!("\"{k}\" COLLATE \"C\"")
                } else {
                    format!("\"{k}\"")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn types(&self) -> Vec<Type> {
        self.columns.iter().map(|c| c.kind.pg_type()).collect()
    }
}

/// The tables of the source that are copied, in [`COPIED`] order; refuses unknown tables.
fn source_tables(conn: &Connection) -> Result<Vec<Table>, MigrateError> {
    let present = sqlite_table_names(conn).map_err(source_err)?;
    let known: BTreeSet<&str> = COPIED
        .iter()
        .copied()
        .chain(NOT_COPIED.iter().map(|(t, _)| *t))
        .collect();
    let unknown: Vec<&str> = present
        .iter()
        .map(String::as_str)
        .filter(|t| !known.contains(t))
        .collect();
    if !unknown.is_empty() {
        return Err(MigrateError::UnknownTables(unknown.join(", ")));
    }
    let mut tables = Vec::with_capacity(COPIED.len());
    for &name in COPIED {
        if !present.iter().any(|t| t == name) {
            return Err(MigrateError::SchemaMismatch {
                table: name,
                detail: "missing from the source".to_owned(),
            });
        }
        let mut stmt = conn
            .prepare("SELECT name, type, pk FROM pragma_table_info(?1) ORDER BY cid")
            .map_err(source_err)?;
        let rows = stmt
            .query_map([name], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(source_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(source_err)?;
        let mut columns = Vec::with_capacity(rows.len());
        let mut key = Vec::new();
        for (column, declared, pk) in rows {
            let kind = Kind::of_sqlite(&declared).ok_or_else(|| MigrateError::SchemaMismatch {
                table: name,
                detail: format!("column {column} has type {declared}, which is not copied"),
            })?;
            if pk > 0 {
                key.push((pk, column.clone()));
            }
            columns.push(Column { name: column, kind });
        }
        key.sort();
        tables.push(Table {
            name,
            columns,
            key: key.into_iter().map(|(_, c)| c).collect(),
        });
    }
    Ok(tables)
}

/// Every table of a SQLite database, by name (SQLite's internal tables excluded).
fn sqlite_table_names(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         ORDER BY name",
    )?;
    let names = stmt.query_map([], |r| r.get(0))?.collect();
    names
}

/// The source's audit chain end: last record (sequence, hash) and last checkpoint (sequence,
/// head).
#[derive(Debug, Clone, Default)]
struct Head {
    last: Option<(u64, String)>,
    checkpoint: Option<(u64, String)>,
}

fn source_head(conn: &Connection) -> Result<Head, MigrateError> {
    let last = |sql: &str| -> Result<Option<(u64, String)>, MigrateError> {
        let mut stmt = conn.prepare(sql).map_err(source_err)?;
        let mut rows = stmt.query([]).map_err(source_err)?;
        let Some(row) = rows.next().map_err(source_err)? else {
            return Ok(None);
        };
        let seq: i64 = row.get(0).map_err(source_err)?;
        let seq = u64::try_from(seq).map_err(|_| MigrateError::Corrupt {
            table: "audit_records",
            column: "sequence".to_owned(),
            expected: "a positive INTEGER",
        })?;
        Ok(Some((seq, row.get(1).map_err(source_err)?)))
    };
    Ok(Head {
        last: last("SELECT sequence, hash FROM audit_records ORDER BY sequence DESC LIMIT 1")?,
        checkpoint: last(
            "SELECT sequence, head FROM audit_checkpoints ORDER BY sequence DESC LIMIT 1",
        )?,
    })
}

/// Rows of every copied table on the target.
async fn target_counts(tx: &Transaction<'_>) -> Result<RowCounts, MigrateError> {
    let mut counts = Vec::with_capacity(COPIED.len());
    for &table in COPIED {
        let n: i64 = tx
            .query_one(&format!("SELECT count(*) FROM \"{table}\""), &[])
            .await
            .and_then(|r| r.try_get(0))
            .map_err(target_err)?;
        counts.push((table, u64::try_from(n).unwrap_or(0)));
    }
    Ok(RowCounts(counts))
}

/// The target's columns of `t` must be the source's: the same names with the same kinds.
async fn check_target_columns(tx: &Transaction<'_>, t: &Table) -> Result<(), MigrateError> {
    let rows = tx
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1 \
             ORDER BY ordinal_position",
            &[&t.name],
        )
        .await
        .map_err(target_err)?;
    let mut target = Vec::with_capacity(rows.len());
    for r in &rows {
        let name: String = r.try_get(0).map_err(target_err)?;
        let data_type: String = r.try_get(1).map_err(target_err)?;
        target.push((name, Kind::of_postgres(&data_type), data_type));
    }
    let mismatch = |detail: String| MigrateError::SchemaMismatch {
        table: t.name,
        detail,
    };
    if target.len() != t.columns.len() {
        let names = |v: Vec<&str>| v.join(", ");
        return Err(mismatch(format!(
            "the source has columns ({}), the target ({})",
            names(t.columns.iter().map(|c| c.name.as_str()).collect()),
            names(target.iter().map(|(n, _, _)| n.as_str()).collect()),
        )));
    }
    for c in &t.columns {
        match target.iter().find(|(n, _, _)| *n == c.name) {
            None => return Err(mismatch(format!("column {} is missing", c.name))),
            Some((_, kind, data_type)) if *kind != Some(c.kind) => {
                return Err(mismatch(format!(
                    "column {} is {} in the source, {data_type} in the target",
                    c.name,
                    c.kind.name()
                )))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// One value, typed by its column.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cell {
    Int(Option<i64>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
}

impl Cell {
    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Self::Int(v) => v,
            Self::Text(v) => v,
            Self::Bytes(v) => v,
        }
    }

    /// Feeds the value, unambiguously framed, into a table digest.
    fn digest(&self, h: &mut Sha256) {
        let (tag, bytes): (u8, Option<&[u8]>) = match self {
            Self::Int(v) => {
                h.update([1]);
                if let Some(v) = v {
                    h.update([1]);
                    h.update(v.to_be_bytes());
                } else {
                    h.update([0]);
                }
                return;
            }
            Self::Text(v) => (2, v.as_deref().map(str::as_bytes)),
            Self::Bytes(v) => (3, v.as_deref()),
        };
        h.update([tag]);
        match bytes {
            Some(b) => {
                h.update([1]);
                h.update((b.len() as u64).to_be_bytes());
                h.update(b);
            }
            None => h.update([0]),
        }
    }
}

/// What the reader hands the writer.
enum Chunk {
    /// Rows of the current table.
    Rows(Vec<Vec<Cell>>),
    /// The current table is complete: its row count and digest.
    End { rows: u64, digest: [u8; 32] },
}

/// Reads every table in order, sending each as batches followed by its `End`. Stops quietly
/// when the writer has gone (its error is the one reported).
fn read_all(
    conn: &Connection,
    tables: &[Table],
    out: &mpsc::Sender<Chunk>,
) -> Result<(), MigrateError> {
    for t in tables {
        let sql = format!(
            "SELECT {} FROM \"{}\" ORDER BY {}",
            t.column_list(),
            t.name,
            t.order_by(false)
        );
        let mut stmt = conn.prepare(&sql).map_err(source_err)?;
        let mut rows = stmt.query([]).map_err(source_err)?;
        let mut hasher = Sha256::new();
        let mut count = 0u64;
        let mut batch = Vec::with_capacity(BATCH);
        while let Some(row) = rows.next().map_err(source_err)? {
            let mut cells = Vec::with_capacity(t.columns.len());
            for (i, c) in t.columns.iter().enumerate() {
                let value = row.get_ref(i).map_err(source_err)?;
                let cell = cell_of(c.kind, value).ok_or_else(|| MigrateError::Corrupt {
                    table: t.name,
                    column: c.name.clone(),
                    expected: c.kind.name(),
                })?;
                cell.digest(&mut hasher);
                cells.push(cell);
            }
            batch.push(cells);
            count += 1;
            if batch.len() == BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                if out.blocking_send(Chunk::Rows(full)).is_err() {
                    return Ok(());
                }
            }
        }
        if !batch.is_empty() && out.blocking_send(Chunk::Rows(batch)).is_err() {
            return Ok(());
        }
        let end = Chunk::End {
            rows: count,
            digest: hasher.finalize().into(),
        };
        if out.blocking_send(end).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

fn cell_of(kind: Kind, v: ValueRef<'_>) -> Option<Cell> {
    Some(match (kind, v) {
        (Kind::Int, ValueRef::Null) => Cell::Int(None),
        (Kind::Int, ValueRef::Integer(i)) => Cell::Int(Some(i)),
        (Kind::Text, ValueRef::Null) => Cell::Text(None),
        (Kind::Text, ValueRef::Text(t)) => Cell::Text(Some(String::from_utf8(t.to_vec()).ok()?)),
        (Kind::Bytes, ValueRef::Null) => Cell::Bytes(None),
        (Kind::Bytes, ValueRef::Blob(b)) => Cell::Bytes(Some(b.to_vec())),
        _ => return None,
    })
}

/// Copies every table from the reader's batches, then reads each back and compares.
async fn write_all(
    tx: &Transaction<'_>,
    tables: &[Table],
    mut input: mpsc::Receiver<Chunk>,
) -> Result<RowCounts, MigrateError> {
    let mut counts = Vec::with_capacity(tables.len());
    for t in tables {
        let (rows, digest) = copy_in(tx, t, &mut input).await?;
        let (back, back_digest) = read_back(tx, t).await?;
        if back != rows {
            return Err(MigrateError::Verify {
                table: t.name,
                detail: format!("{rows} rows read from the source, {back} in the target"),
            });
        }
        if back_digest != digest {
            return Err(MigrateError::Verify {
                table: t.name,
                detail: "the rows in the target differ from the source's".to_owned(),
            });
        }
        counts.push((t.name, rows));
    }
    Ok(RowCounts(counts))
}

/// `COPY … FROM STDIN` of one table; returns the source's row count and digest.
async fn copy_in(
    tx: &Transaction<'_>,
    t: &Table,
    input: &mut mpsc::Receiver<Chunk>,
) -> Result<(u64, [u8; 32]), MigrateError> {
    let sql = format!(
        "COPY \"{}\" ({}) FROM STDIN (FORMAT binary)",
        t.name,
        t.column_list()
    );
    let sink = tx.copy_in(&sql).await.map_err(target_err)?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &t.types()));
    loop {
        match input.recv().await {
            Some(Chunk::Rows(rows)) => {
                for row in &rows {
                    let values: Vec<&(dyn ToSql + Sync)> = row.iter().map(Cell::as_sql).collect();
                    writer.as_mut().write(&values).await.map_err(target_err)?;
                }
            }
            Some(Chunk::End { rows, digest }) => {
                let written = writer.as_mut().finish().await.map_err(target_err)?;
                if written != rows {
                    return Err(MigrateError::Verify {
                        table: t.name,
                        detail: format!("{rows} rows read from the source, {written} written"),
                    });
                }
                return Ok((rows, digest));
            }
            None => {
                return Err(MigrateError::Verify {
                    table: t.name,
                    detail: "the source reader stopped before the end of the table".to_owned(),
                })
            }
        }
    }
}

/// The target's rows of `t` in primary-key order: their count and digest.
async fn read_back(tx: &Transaction<'_>, t: &Table) -> Result<(u64, [u8; 32]), MigrateError> {
    let sql = format!(
        "COPY (SELECT {} FROM \"{}\" ORDER BY {}) TO STDOUT (FORMAT binary)",
        t.column_list(),
        t.name,
        t.order_by(true)
    );
    let stream = tx.copy_out(&sql).await.map_err(target_err)?;
    let mut rows = pin!(BinaryCopyOutStream::new(stream, &t.types()));
    let mut hasher = Sha256::new();
    let mut count = 0u64;
    while let Some(row) = rows.next().await {
        let row = row.map_err(target_err)?;
        for (i, c) in t.columns.iter().enumerate() {
            let cell = match c.kind {
                Kind::Int => Cell::Int(row.try_get(i).map_err(target_err)?),
                Kind::Text => Cell::Text(row.try_get(i).map_err(target_err)?),
                Kind::Bytes => Cell::Bytes(row.try_get(i).map_err(target_err)?),
            };
            cell.digest(&mut hasher);
        }
        count += 1;
    }
    Ok((count, hasher.finalize().into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::migrations::SQLITE;

    /// The schema the newest migrations build: every table in it is copied or deliberately
    /// skipped, so a table added by a future migration fails here until the copier knows it.
    #[test]
    fn every_table_the_migrations_create_is_copied_or_skipped_on_purpose() {
        let conn = Connection::open_in_memory().unwrap();
        for m in SQLITE {
            conn.execute_batch(m.sql).unwrap();
        }
        let mut present: BTreeSet<String> =
            sqlite_table_names(&conn).unwrap().into_iter().collect();
        // Created by the migration runner, not by a migration.
        present.insert("schema_migrations".to_owned());
        let handled: BTreeSet<String> = COPIED
            .iter()
            .copied()
            .chain(NOT_COPIED.iter().map(|(t, _)| *t))
            .map(str::to_owned)
            .collect();
        assert_eq!(present, handled, "tables the copier does not account for");
        assert_eq!(
            COPIED.len() + NOT_COPIED.len(),
            handled.len(),
            "a table is listed twice"
        );
    }

    /// Parents come before children, so the target's foreign keys hold row by row.
    #[test]
    fn copy_order_puts_referenced_tables_first() {
        let conn = Connection::open_in_memory().unwrap();
        for m in SQLITE {
            conn.execute_batch(m.sql).unwrap();
        }
        for (i, child) in COPIED.iter().enumerate() {
            let mut stmt = conn
                .prepare("SELECT \"table\" FROM pragma_foreign_key_list(?1)")
                .unwrap();
            let parents: Vec<String> = stmt
                .query_map([child], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            for parent in parents {
                let at = COPIED.iter().position(|t| *t == parent).unwrap();
                assert!(at < i, "{child} references {parent}, copied after it");
            }
        }
    }

    #[test]
    fn every_source_column_type_has_a_target_type() {
        let conn = Connection::open_in_memory().unwrap();
        for m in SQLITE {
            conn.execute_batch(m.sql).unwrap();
        }
        let tables = source_tables(&conn).unwrap();
        assert_eq!(tables.len(), COPIED.len());
        for t in &tables {
            assert!(
                !t.key.is_empty(),
                "{} has no primary key to order by",
                t.name
            );
        }
    }

    #[test]
    fn digests_frame_values_unambiguously() {
        let digest = |cells: &[Cell]| {
            let mut h = Sha256::new();
            for c in cells {
                c.digest(&mut h);
            }
            h.finalize()
        };
        let a = digest(&[Cell::Text(Some("ab".into())), Cell::Text(Some("c".into()))]);
        let b = digest(&[Cell::Text(Some("a".into())), Cell::Text(Some("bc".into()))]);
        assert_ne!(a, b);
        assert_ne!(
            digest(&[Cell::Text(None)]),
            digest(&[Cell::Text(Some(String::new()))])
        );
        assert_ne!(
            digest(&[Cell::Text(Some("x".into()))]),
            digest(&[Cell::Bytes(Some(b"x".to_vec()))])
        );
    }

    #[test]
    fn row_counts_name_each_table() {
        let c = RowCounts(vec![("keys", 1), ("tokens", 2)]);
        assert_eq!(c.to_string(), "keys: 1 row, tokens: 2 rows");
    }
}
