//! Store-neutral access to a deployment's database, for black-box tests that read, edit or scan
//! what the server stored: [`Deployment::db`](super::Deployment::db) opens the SQLite file with
//! rusqlite, or connects (tokio-postgres, no TLS, as the test cluster's superuser) to the
//! deployment's own PostgreSQL database. SQL is written once, with `$1, $2…` placeholders (turned
//! into `?1, ?2…` for SQLite); what differs between the dialects has a named method
//! ([`Db::refuse_inserts`], [`Db::rows_of`], [`Db::files_at_rest`]…).
//!
//! Calls are synchronous, so that sync helpers and async tests use them alike: on PostgreSQL
//! they run on a runtime of the handle's own, on its own thread.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context as _, Result};
use tokio_postgres::types::private::BytesMut;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

/// Where a deployment's database lives.
#[derive(Debug, Clone)]
pub enum Location {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A database of its own on the test cluster.
    Postgres {
        /// Its URL (the cluster's superuser, this database).
        url: String,
        /// When it was created: nothing in it can have been written before.
        created: SystemTime,
    },
}

/// One value of a row or of a statement's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    /// SQL NULL.
    Null,
    /// INTEGER / BIGINT (and INT, SMALLINT, OID, BOOL as 0 or 1).
    Int(i64),
    /// TEXT.
    Text(String),
    /// BLOB / BYTEA.
    Bytes(Vec<u8>),
}

impl Cell {
    /// The integer; panics naming the value otherwise.
    #[track_caller]
    pub fn as_i64(&self) -> i64 {
        match self {
            Self::Int(v) => *v,
            other => panic!("not an integer: {other:?}"),
        }
    }

    /// The text; panics naming the value otherwise.
    #[track_caller]
    pub fn as_text(&self) -> &str {
        match self {
            Self::Text(v) => v,
            other => panic!("not text: {other:?}"),
        }
    }

    /// The bytes; panics naming the value otherwise.
    #[track_caller]
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Bytes(v) => v,
            other => panic!("not bytes: {other:?}"),
        }
    }

    /// The bytes, taken out of the cell; panics naming the value otherwise.
    #[track_caller]
    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            Self::Bytes(v) => v,
            other => panic!("not bytes: {other:?}"),
        }
    }

    /// True for SQL NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }
}

impl From<i64> for Cell {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

impl From<u32> for Cell {
    fn from(v: u32) -> Self {
        Self::Int(v.into())
    }
}

impl From<&str> for Cell {
    fn from(v: &str) -> Self {
        Self::Text(v.to_owned())
    }
}

impl From<String> for Cell {
    fn from(v: String) -> Self {
        Self::Text(v)
    }
}

impl From<&String> for Cell {
    fn from(v: &String) -> Self {
        Self::Text(v.clone())
    }
}

impl From<&[u8]> for Cell {
    fn from(v: &[u8]) -> Self {
        Self::Bytes(v.to_vec())
    }
}

impl From<Vec<u8>> for Cell {
    fn from(v: Vec<u8>) -> Self {
        Self::Bytes(v)
    }
}

impl rusqlite::ToSql for Cell {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Self::Null => ValueRef::Null,
            Self::Int(v) => ValueRef::Integer(*v),
            Self::Text(v) => ValueRef::Text(v.as_bytes()),
            Self::Bytes(v) => ValueRef::Blob(v),
        }))
    }
}

impl ToSql for Cell {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Self::Null => Ok(IsNull::Yes),
            Self::Int(v) if *ty == Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
            Self::Int(v) if *ty == Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
            Self::Int(v) if <i64 as ToSql>::accepts(ty) => v.to_sql(ty, out),
            Self::Text(v) if <&str as ToSql>::accepts(ty) => v.as_str().to_sql(ty, out),
            Self::Bytes(v) if <&[u8] as ToSql>::accepts(ty) => v.as_slice().to_sql(ty, out),
            other => Err(format!("{other:?} for a parameter of type {ty}").into()),
        }
    }

    // Every type: the value's own kind decides (see `to_sql`), and NULL fits any parameter.
    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A file holding the database at rest, as read after the database flushed everything to disk.
pub struct AtRest {
    /// Its path.
    pub name: String,
    /// Its permission bits.
    pub mode: u32,
    /// True for a PostgreSQL WAL segment (the cluster's journal, shared by every database on
    /// it; SQLite's `-wal` file is the database's own and counts as one of its files).
    pub wal: bool,
    /// Its contents.
    pub bytes: Vec<u8>,
}

/// A connection to a deployment's database.
pub struct Db {
    inner: Inner,
}

enum Inner {
    Sqlite(rusqlite::Connection, PathBuf),
    Postgres(Pg, SystemTime),
}

impl Db {
    /// Opens the database at `location`.
    pub fn open(location: &Location) -> Result<Self> {
        let inner = match location {
            Location::Sqlite(path) => {
                let c = rusqlite::Connection::open(path)
                    .with_context(|| format!("open {}", path.display()))?;
                c.busy_timeout(Duration::from_secs(5))?;
                Inner::Sqlite(c, path.clone())
            }
            Location::Postgres { url, created } => Inner::Postgres(Pg::connect(url)?, *created),
        };
        Ok(Self { inner })
    }

    /// True on PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self.inner, Inner::Postgres(..))
    }

    /// Every row `sql` returns.
    pub fn query(&self, sql: &str, params: &[Cell]) -> Result<Vec<Vec<Cell>>> {
        match &self.inner {
            Inner::Sqlite(c, _) => {
                let mut stmt = c.prepare(&sqlite_placeholders(sql))?;
                let n = stmt.column_count();
                let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    out.push(
                        (0..n)
                            .map(|i| sqlite_cell(row.get_ref(i)?))
                            .collect::<Result<_>>()?,
                    );
                }
                Ok(out)
            }
            Inner::Postgres(pg, _) => match pg.call(Op::Query(sql.to_owned(), params.to_vec()))? {
                Out::Rows(rows) => Ok(rows),
                _ => unreachable!("a query answers rows"),
            },
        }
    }

    /// The one row `sql` returns (an error when there are none or several).
    pub fn query_one(&self, sql: &str, params: &[Cell]) -> Result<Vec<Cell>> {
        let mut rows = self.query(sql, params)?;
        if rows.len() != 1 {
            bail!("{} rows, not one, from {sql}", rows.len());
        }
        Ok(rows.remove(0))
    }

    /// Runs one statement; the number of rows it changed.
    pub fn execute(&self, sql: &str, params: &[Cell]) -> Result<u64> {
        match &self.inner {
            Inner::Sqlite(c, _) => Ok(c
                .execute(
                    &sqlite_placeholders(sql),
                    rusqlite::params_from_iter(params),
                )?
                .try_into()?),
            Inner::Postgres(pg, _) => {
                match pg.call(Op::Execute(sql.to_owned(), params.to_vec()))? {
                    Out::Count(n) => Ok(n),
                    _ => unreachable!("a statement answers a count"),
                }
            }
        }
    }

    /// Runs statements separated by semicolons, without parameters.
    pub fn batch(&self, sql: &str) -> Result<()> {
        match &self.inner {
            Inner::Sqlite(c, _) => Ok(c.execute_batch(sql)?),
            Inner::Postgres(pg, _) => pg.call(Op::Batch(sql.to_owned())).map(|_| ()),
        }
    }

    /// Flips bits in the last byte of the stored wrapped data key of the secret at `path`
    /// (the GCM tag, or KWP's last block): the device then refuses it.
    pub fn damage_wrapped_dek(&self, path: &str) -> Result<()> {
        let mut blob = self
            .query_one(
                "SELECT wrapped_dek FROM secret_versions WHERE path = $1",
                &[path.into()],
            )?
            .remove(0)
            .into_bytes();
        let last = blob.len() - 1;
        blob[last] ^= 0x55;
        self.execute(
            "UPDATE secret_versions SET wrapped_dek = $2 WHERE path = $1",
            &[path.into(), blob.into()],
        )?;
        Ok(())
    }

    /// Makes every insert into `table` fail with `message` (a trigger `refuse_<table>`) until
    /// [`Db::allow_inserts`].
    pub fn refuse_inserts(&self, table: &str, message: &str) -> Result<()> {
        let message = message.replace('\'', "''");
        if self.is_postgres() {
            self.batch(&format!(
                "CREATE FUNCTION refuse_{table}() RETURNS trigger LANGUAGE plpgsql
                 AS $$ BEGIN RAISE EXCEPTION '{message}'; END $$;
                 CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table}
                 FOR EACH ROW EXECUTE FUNCTION refuse_{table}();"
            ))
        } else {
            self.batch(&format!(
                "CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table}
                 BEGIN SELECT RAISE(ABORT, '{message}'); END;"
            ))
        }
    }

    /// Removes what [`Db::refuse_inserts`] installed on `table`.
    pub fn allow_inserts(&self, table: &str) -> Result<()> {
        if self.is_postgres() {
            self.batch(&format!(
                "DROP TRIGGER refuse_{table} ON {table}; DROP FUNCTION refuse_{table}();"
            ))
        } else {
            self.batch(&format!("DROP TRIGGER refuse_{table};"))
        }
    }

    /// The name of every table the store made, sorted (none of the engine's own).
    pub fn tables(&self) -> Result<Vec<String>> {
        let sql = if self.is_postgres() {
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1"
        } else {
            "SELECT name FROM sqlite_master WHERE type = 'table'
             AND name NOT LIKE 'sqlite_%' ORDER BY name"
        };
        let rows = self.query(sql, &[])?;
        Ok(rows
            .into_iter()
            .map(|r| r[0].as_text().to_owned())
            .collect())
    }

    /// Every row of `table`, every column, in an order that only a change to the rows changes
    /// (SQLite: by rowid; PostgreSQL, which has none: by every column in turn).
    pub fn rows_of(&self, table: &str) -> Result<Vec<Vec<Cell>>> {
        if self.is_postgres() {
            let n = self.query_one(
                "SELECT COUNT(*) FROM information_schema.columns
                 WHERE table_schema = 'public' AND table_name = $1",
                &[table.into()],
            )?[0]
                .as_i64();
            let order = (1..=n)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            self.query(&format!("SELECT * FROM \"{table}\" ORDER BY {order}"), &[])
        } else {
            self.query(&format!("SELECT * FROM \"{table}\" ORDER BY rowid"), &[])
        }
    }

    /// What holds the database at rest, read once the database has put everything on disk.
    ///
    /// SQLite: the database file and, where present, its `-wal` and `-shm` files.
    ///
    /// PostgreSQL: after a `CHECKPOINT` (every committed change written to the data files),
    /// every file of this database's directory (`base/<oid>`: tables, indexes, TOAST, free
    /// space and visibility maps) and every WAL segment of the cluster written to since the
    /// database was created (the current ones, and any recycled under a new name since: a
    /// segment untouched since then cannot hold anything of this database). The test process
    /// runs as root, so it reads the `postgres` user's files. A file removed while they are
    /// listed and read (a recycled segment, a dropped relation) is left out: it holds nothing
    /// any more.
    pub fn files_at_rest(&self) -> Result<Vec<AtRest>> {
        match &self.inner {
            Inner::Sqlite(_, path) => {
                let mut out = Vec::new();
                for suffix in ["", "-wal", "-shm"] {
                    let mut name = path.file_name().context("a file name")?.to_owned();
                    name.push(suffix);
                    let p = path.with_file_name(name);
                    if p.exists() {
                        out.push(read_at_rest(&p, false)?.context("the file went away")?);
                    }
                }
                Ok(out)
            }
            Inner::Postgres(_, created) => {
                self.batch("CHECKPOINT")?;
                let data = self.query_one(
                    "SELECT setting FROM pg_settings WHERE name = 'data_directory'",
                    &[],
                )?[0]
                    .as_text()
                    .to_owned();
                let oid = self.query_one(
                    "SELECT oid::bigint FROM pg_database WHERE datname = current_database()",
                    &[],
                )?[0]
                    .as_i64();
                let data = Path::new(&data);
                let mut out = Vec::new();
                for entry in std::fs::read_dir(data.join("base").join(oid.to_string()))? {
                    if let Some(f) = read_at_rest(&entry?.path(), false)? {
                        out.push(f);
                    }
                }
                // Modification times are kept to the nanosecond; a second of slack all the same.
                let since = *created - Duration::from_secs(1);
                for entry in std::fs::read_dir(data.join("pg_wal"))? {
                    let entry = entry?;
                    let recent = entry
                        .metadata()
                        .is_ok_and(|m| m.is_file() && m.modified().is_ok_and(|t| t >= since));
                    if recent {
                        if let Some(f) = read_at_rest(&entry.path(), true)? {
                            out.push(f);
                        }
                    }
                }
                Ok(out)
            }
        }
    }
}

/// A file's name, mode and bytes; `None` if it is no longer there.
fn read_at_rest(path: &Path, wal: bool) -> Result<Option<AtRest>> {
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if gone(&e) => return Ok(None),
        Err(e) => return Err(e).with_context(|| path.display().to_string()),
    };
    if !meta.is_file() {
        return Ok(None);
    }
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if gone(&e) => return Ok(None),
        Err(e) => return Err(e).with_context(|| path.display().to_string()),
    };
    Ok(Some(AtRest {
        name: format!("{} (owner uid {})", path.display(), meta.uid()),
        mode: meta.permissions().mode() & 0o777,
        wal,
        bytes,
    }))
}

/// The index of the first of `needles` found in `haystack`, if any: one pass over the haystack
/// for all of them (files at rest on PostgreSQL include WAL segments of 16 MiB, and tests are
/// built without optimisation).
pub fn find_any(haystack: &[u8], needles: &[&[u8]]) -> Option<usize> {
    // Needles by their first two bytes, with a bit per two-byte prefix to skip most positions.
    let mut bits = vec![0u64; 1 << 10];
    let mut by_prefix: std::collections::HashMap<usize, Vec<usize>> = Default::default();
    for (i, n) in needles.iter().enumerate() {
        match n {
            [] => return Some(i),
            [only] => {
                if haystack.contains(only) {
                    return Some(i);
                }
            }
            [a, b, ..] => {
                let k = usize::from(*a) << 8 | usize::from(*b);
                bits[k >> 6] |= 1 << (k & 63);
                by_prefix.entry(k).or_default().push(i);
            }
        }
    }
    let mut k = usize::from(*haystack.first()?);
    for (pos, &byte) in haystack.iter().enumerate().skip(1) {
        k = (k << 8 | usize::from(byte)) & 0xffff;
        if bits[k >> 6] & (1 << (k & 63)) != 0 {
            let start = pos - 1;
            for &i in &by_prefix[&k] {
                if haystack[start..].starts_with(needles[i]) {
                    return Some(i);
                }
            }
        }
    }
    None
}

/// `$1, $2…` as SQLite's `?1, ?2…`.
fn sqlite_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

fn sqlite_cell(v: rusqlite::types::ValueRef<'_>) -> Result<Cell> {
    use rusqlite::types::ValueRef;
    Ok(match v {
        ValueRef::Null => Cell::Null,
        ValueRef::Integer(i) => Cell::Int(i),
        ValueRef::Text(t) => Cell::Text(String::from_utf8(t.to_vec())?),
        ValueRef::Blob(b) => Cell::Bytes(b.to_vec()),
        ValueRef::Real(r) => bail!("a REAL ({r}): the schema has none"),
    })
}

/// A request to the PostgreSQL thread.
enum Op {
    Query(String, Vec<Cell>),
    Execute(String, Vec<Cell>),
    Batch(String),
}

enum Out {
    Rows(Vec<Vec<Cell>>),
    Count(u64),
    Done,
}

type Request = (Op, std::sync::mpsc::Sender<Result<Out>>);

fn refs(params: &[Cell]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

/// One connection, driven by a current-thread runtime on a thread of its own (the tests calling
/// it may be inside a runtime already, which may not block on another).
struct Pg {
    tx: Option<tokio::sync::mpsc::UnboundedSender<Request>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Pg {
    fn connect(url: &str) -> Result<Self> {
        let url = url.to_owned();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Request>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let thread = std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.into()));
                    return;
                }
            };
            rt.block_on(async move {
                let client = match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                    Ok((client, connection)) => {
                        tokio::spawn(connection);
                        client
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow::Error::new(e).context(url)));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                while let Some((op, reply)) = rx.recv().await {
                    let _ = reply.send(run(&client, op).await);
                }
            });
        });
        ready_rx
            .recv()
            .context("the PostgreSQL thread ended before connecting")??;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    fn call(&self, op: Op) -> Result<Out> {
        let (reply_tx, reply_rx) = std::sync::mpsc::channel();
        self.tx
            .as_ref()
            .context("connection closed")?
            .send((op, reply_tx))
            .ok()
            .context("the PostgreSQL thread has ended")?;
        reply_rx
            .recv()
            .context("the PostgreSQL thread ended without an answer")?
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop, which drops (closes) the connection.
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn run(client: &tokio_postgres::Client, op: Op) -> Result<Out> {
    match op {
        Op::Query(sql, params) => {
            let rows = client
                .query(sql.as_str(), &refs(&params))
                .await
                .with_context(|| sql.clone())?;
            let rows = rows
                .iter()
                .map(|row| (0..row.len()).map(|i| pg_cell(row, i)).collect())
                .collect::<Result<_>>()?;
            Ok(Out::Rows(rows))
        }
        Op::Execute(sql, params) => Ok(Out::Count(
            client
                .execute(sql.as_str(), &refs(&params))
                .await
                .with_context(|| sql.clone())?,
        )),
        Op::Batch(sql) => {
            client
                .batch_execute(&sql)
                .await
                .with_context(|| sql.clone())?;
            Ok(Out::Done)
        }
    }
}

fn pg_cell(row: &tokio_postgres::Row, i: usize) -> Result<Cell> {
    let ty = row.columns()[i].type_();
    let int = |v: Option<i64>| v.map_or(Cell::Null, Cell::Int);
    Ok(if *ty == Type::INT8 {
        int(row.try_get::<_, Option<i64>>(i)?)
    } else if *ty == Type::INT4 {
        int(row.try_get::<_, Option<i32>>(i)?.map(i64::from))
    } else if *ty == Type::INT2 {
        int(row.try_get::<_, Option<i16>>(i)?.map(i64::from))
    } else if *ty == Type::OID {
        int(row.try_get::<_, Option<u32>>(i)?.map(i64::from))
    } else if *ty == Type::BOOL {
        int(row.try_get::<_, Option<bool>>(i)?.map(i64::from))
    } else if *ty == Type::BYTEA {
        row.try_get::<_, Option<Vec<u8>>>(i)?
            .map_or(Cell::Null, Cell::Bytes)
    } else if <String as tokio_postgres::types::FromSql>::accepts(ty) {
        row.try_get::<_, Option<String>>(i)?
            .map_or(Cell::Null, Cell::Text)
    } else {
        bail!(
            "column {} has type {ty}: cast it to BIGINT, TEXT or BYTEA",
            row.columns()[i].name()
        )
    })
}
