//! The audit tables: records, checkpoints, archives; and the audit writer's own connection.

use tokio::runtime::Handle;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row};

use super::error::Error;
use super::{big, corrupt, to_u64, Connector, Db};
use crate::audit::record::StoredHashes;
use crate::audit::{AuditArchive, AuditEntry, AuditFilter, AuditRecord, Checkpoint, Outcome};
use crate::store::codec::{self, AuditRow};
use crate::store::{AuditAppender, AuditTail, StaleKind, StoreError};

const RECORD_COLUMNS: &str = "sequence, time, node, request_id, method, route, principal, \
    credential, source, action, resource, key_id, key_version, other_keys, outcome, status, \
    error_code, context_digest, context_keys, prev_hash, hash, details";

const CHECKPOINT_COLUMNS: &str =
    "sequence, head, time, node, algorithm, key_fingerprint, signature";

const ARCHIVE_COLUMNS: &str =
    "through_sequence, head, export_sha256, archived_at, principal, request_id";

/// The audit writer's connection, outside the pool. The writer is a thread of its own that
/// blocks on each call; the calls run on the server's runtime. A connection the server closed
/// (restart, failover) is replaced on the next call, so the log recovers without a restart.
pub struct Appender {
    runtime: Handle,
    connector: Connector,
    client: Option<Connected>,
}

/// The writer's live connection and its append statement, prepared once per connection (the
/// server parses and plans it once, not at every group commit).
struct Connected {
    client: Client,
    /// Prepared at the first append on this connection.
    append: Option<tokio_postgres::Statement>,
}

impl Connected {
    async fn open(connector: &Connector) -> Result<Self, tokio_postgres::Error> {
        let client = connector.connect().await?;
        Ok(Self {
            client,
            append: None,
        })
    }
}

impl Appender {
    /// Connects now, so a server that cannot reach its database fails at start-up.
    pub(super) async fn connect(connector: Connector) -> Result<Self, StoreError> {
        let client = Connected::open(&connector)
            .await
            .map_err(super::error::map)?;
        Ok(Self {
            runtime: Handle::current(),
            connector,
            client: Some(client),
        })
    }

    /// Runs `f` on a live connection (reconnecting first when the last one closed).
    fn run<T>(
        &mut self,
        f: impl for<'c> FnOnce(
            &'c mut Connected,
        ) -> futures_util::future::BoxFuture<'c, Result<T, Error>>,
    ) -> Result<T, StoreError> {
        let runtime = self.runtime.clone();
        let connector = self.connector.clone();
        let slot = &mut self.client;
        runtime.block_on(async move {
            if slot.as_ref().is_none_or(|c| c.client.is_closed()) {
                *slot = None;
                *slot = Some(
                    Connected::open(&connector)
                        .await
                        .map_err(super::error::map)?,
                );
            }
            let Some(connected) = slot.as_mut() else {
                return Err(StoreError::Unavailable("no audit connection".into()));
            };
            let result = f(connected).await.map_err(Error::into_store);
            if connected.client.is_closed() {
                *slot = None;
            }
            result
        })
    }
}

impl AuditAppender for Appender {
    fn append(&mut self, records: &[AuditRecord]) -> Result<(), StoreError> {
        let records = records.to_vec();
        self.run(|c| Box::pin(append(c, records)))
    }

    fn append_serialized(
        &mut self,
        entries: &[AuditEntry],
    ) -> Result<Option<Vec<AuditRecord>>, StoreError> {
        let entries = entries.to_vec();
        self.run(|c| Box::pin(append_under_lock(c, entries)))
            .map(Some)
    }

    /// Another node may have signed the same head already (nodes share the chain): its
    /// checkpoint stands, and this one, over the same sequence and head, is not needed.
    fn insert_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let cp = checkpoint.clone();
        self.run(|conn| {
            Box::pin(async move {
                conn.client
                    .execute(
                        &format!(
                            "INSERT INTO audit_checkpoints ({CHECKPOINT_COLUMNS})
                             VALUES ($1, $2, $3, $4, $5, $6, $7)
                             ON CONFLICT (sequence) DO NOTHING"
                        ),
                        &[
                            &big(cp.sequence),
                            &cp.head,
                            &cp.time,
                            &cp.node,
                            &cp.algorithm,
                            &cp.key_fingerprint,
                            &cp.signature,
                        ],
                    )
                    .await?;
                Ok(())
            })
        })
    }

    fn range(
        &mut self,
        after: u64,
        until: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.run(move |c| {
            Box::pin(async move {
                let rows = range_rows(&c.client, after, until, limit).await?;
                rows.iter().map(record).collect()
            })
        })
    }

    fn range_hashes(
        &mut self,
        after: u64,
        until: u64,
        limit: u32,
    ) -> Result<Vec<StoredHashes>, StoreError> {
        self.run(move |c| {
            Box::pin(async move {
                let rows = range_rows(&c.client, after, until, limit).await?;
                Ok(rows
                    .iter()
                    .map(codec::stored_hashes)
                    .collect::<Result<_, _>>()?)
            })
        })
    }

    fn tail(&mut self) -> Result<AuditTail, StoreError> {
        self.run(|c| {
            Box::pin(async move {
                let client = &c.client;
                let mut out = AuditTail::default();
                if let Some(r) = client.query_opt(LAST, &[]).await? {
                    out.last = Some((
                        to_u64(r.try_get(0)?, "audit_records.sequence")?,
                        r.try_get(1)?,
                    ));
                }
                out.checkpoint = client
                    .query_opt(LAST_CHECKPOINT.as_str(), &[])
                    .await?
                    .as_ref()
                    .map(checkpoint)
                    .transpose()?;
                out.archive = client
                    .query_opt(LAST_ARCHIVE.as_str(), &[])
                    .await?
                    .as_ref()
                    .map(archive)
                    .transpose()?;
                Ok(out)
            })
        })
    }
}

const RANGE: &str = "SELECT sequence, time, node, request_id, method, route, principal, \
    credential, source, action, resource, key_id, key_version, other_keys, outcome, status, \
    error_code, context_digest, context_keys, prev_hash, hash, details FROM audit_records \
    WHERE sequence > $1 AND sequence <= $2 ORDER BY sequence LIMIT $3";

const LAST: &str = "SELECT sequence, hash FROM audit_records ORDER BY sequence DESC LIMIT 1";

static LAST_CHECKPOINT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY sequence DESC LIMIT 1")
});

static LAST_ARCHIVE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("SELECT {ARCHIVE_COLUMNS} FROM audit_archives ORDER BY through_sequence DESC LIMIT 1")
});

/// The advisory lock key of the chain's head: writers that take it append one after another.
const AUDIT_HEAD_LOCK: i64 = 0x6375_7374_6f64_6961 + 2;

/// [`AuditAppender::append_serialized`]: in one transaction, the head lock, the stored head (or
/// the archive floor, or genesis), the batch chained on it and inserted, the commit. The lock and
/// the head read go out together, and so do the insert and the commit (two round trips).
async fn append_under_lock(
    c: &mut Connected,
    entries: Vec<AuditEntry>,
) -> Result<Vec<AuditRecord>, Error> {
    let statement = c.statement().await?;
    let tx = c.client.transaction().await?;
    let (_, last) = futures_util::future::try_join(
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_HEAD_LOCK]),
        tx.query_opt(LAST, &[]),
    )
    .await?;
    let (mut seq, mut prev) = match last {
        Some(r) => (
            to_u64(r.try_get(0)?, "audit_records.sequence")?,
            crate::audit::record::decode_hash(r.try_get(1)?)
                .ok_or(corrupt("audit_records.hash"))?,
        ),
        None => match tx.query_opt(LAST_ARCHIVE.as_str(), &[]).await? {
            Some(r) => {
                let a = archive(&r)?;
                let head = crate::audit::record::decode_hash(&a.head)
                    .ok_or(corrupt("audit_archives.head"))?;
                (a.through, head)
            }
            None => (0, crate::audit::record::GENESIS),
        },
    };
    let mut records = Vec::with_capacity(entries.len());
    for entry in entries {
        seq += 1;
        let record = AuditRecord::chain(seq, entry, &prev);
        prev = record.hash_bytes().ok_or(corrupt("audit_records.hash"))?;
        records.push(record);
    }
    {
        let columns = Columns::of(&records)?;
        let params = columns.params();
        tx.execute(&statement, &params).await?;
    }
    tx.commit().await?;
    Ok(records)
}

/// One statement for the whole batch (group commit): each column travels as one array and
/// `unnest` turns the arrays back into rows. A single statement outside an explicit transaction
/// is its own transaction, so the batch costs one round trip and one WAL flush, and is durable
/// (`synchronous_commit = on`) when the answer arrives. The statement is prepared once per
/// connection ([`Connected`]).
async fn append(c: &mut Connected, records: Vec<AuditRecord>) -> Result<(), Error> {
    let statement = c.statement().await?;
    let columns = Columns::of(&records)?;
    c.client.execute(&statement, &columns.params()).await?;
    Ok(())
}

impl Connected {
    /// The append statement, prepared at its first use on this connection.
    async fn statement(&mut self) -> Result<tokio_postgres::Statement, Error> {
        Ok(match &self.append {
            Some(s) => s.clone(),
            None => {
                let s = self.client.prepare_typed(&APPEND, &APPEND_TYPES).await?;
                self.append = Some(s.clone());
                s
            }
        })
    }
}

/// A batch of records as [`APPEND`]'s column arrays.
struct Columns<'r> {
    sequence: Vec<i64>,
    key_version: Vec<Option<i64>>,
    status: Vec<i64>,
    other_keys: Vec<String>,
    context_keys: Vec<String>,
    details: Vec<String>,
    texts: [Vec<&'r str>; 8],
    opts: [Vec<Option<&'r str>>; 8],
}

impl<'r> Columns<'r> {
    fn of(records: &'r [AuditRecord]) -> Result<Self, Error> {
        let n = records.len();
        let mut c = Columns {
            sequence: Vec::with_capacity(n),
            key_version: Vec::with_capacity(n),
            status: Vec::with_capacity(n),
            other_keys: Vec::with_capacity(n),
            context_keys: Vec::with_capacity(n),
            details: Vec::with_capacity(n),
            texts: Default::default(),
            opts: Default::default(),
        };
        for r in records {
            let e = &r.entry;
            c.sequence.push(big(r.sequence));
            c.key_version.push(e.key_version.map(i64::from));
            c.status.push(i64::from(e.status));
            c.other_keys.push(
                serde_json::to_string(&e.other_keys)
                    .map_err(|_| corrupt("audit_records.other_keys"))?,
            );
            c.context_keys.push(
                serde_json::to_string(&e.context_keys)
                    .map_err(|_| corrupt("audit_records.context_keys"))?,
            );
            c.details.push(
                serde_json::to_string(&e.details).map_err(|_| corrupt("audit_records.details"))?,
            );
            let texts: [&'r str; 8] = [
                &e.time,
                &e.node,
                &e.request_id,
                &e.method,
                &e.route,
                e.outcome.as_str(),
                &r.prev_hash,
                &r.hash,
            ];
            for (col, v) in c.texts.iter_mut().zip(texts) {
                col.push(v);
            }
            let opts: [Option<&'r str>; 8] = [
                e.principal.as_deref(),
                e.credential.as_deref(),
                e.source.as_deref(),
                e.action.as_deref(),
                e.resource.as_deref(),
                e.key_id.as_deref(),
                e.error_code.as_deref(),
                e.context_digest.as_deref(),
            ];
            for (col, v) in c.opts.iter_mut().zip(opts) {
                col.push(v);
            }
        }
        Ok(c)
    }

    /// The parameters in [`RECORD_COLUMNS`] order.
    fn params(&self) -> [&(dyn ToSql + Sync); 22] {
        let [time, node, request_id, method, route, outcome, prev_hash, hash] = &self.texts;
        let [principal, credential, source, action, resource, key_id, error_code, context_digest] =
            &self.opts;
        [
            &self.sequence,
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
            &self.key_version,
            &self.other_keys,
            outcome,
            &self.status,
            error_code,
            context_digest,
            &self.context_keys,
            prev_hash,
            hash,
            &self.details,
        ]
    }
}

/// The parameter types of [`APPEND`], in column order (`bigint[]` for the three integer
/// columns, `text[]` for the rest).
static APPEND_TYPES: std::sync::LazyLock<Vec<Type>> = std::sync::LazyLock::new(|| {
    (1..=22)
        .map(|i| match i {
            1 | 13 | 16 => Type::INT8_ARRAY,
            _ => Type::TEXT_ARRAY,
        })
        .collect()
});

static APPEND: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let arrays = (1..=22)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("INSERT INTO audit_records ({RECORD_COLUMNS}) SELECT * FROM unnest({arrays})")
});

fn record(r: &Row) -> Result<AuditRecord, Error> {
    let list =
        |s: &str, column| serde_json::from_str::<Vec<String>>(s).map_err(|_| corrupt(column));
    Ok(AuditRecord {
        sequence: to_u64(r.try_get(0)?, "audit_records.sequence")?,
        entry: AuditEntry {
            time: r.try_get(1)?,
            node: r.try_get(2)?,
            request_id: r.try_get(3)?,
            method: r.try_get(4)?,
            route: r.try_get(5)?,
            principal: r.try_get(6)?,
            credential: r.try_get(7)?,
            source: r.try_get(8)?,
            action: r.try_get(9)?,
            resource: r.try_get(10)?,
            key_id: r.try_get(11)?,
            key_version: r
                .try_get::<_, Option<i64>>(12)?
                .map(u32::try_from)
                .transpose()
                .map_err(|_| corrupt("audit_records.key_version"))?,
            other_keys: list(r.try_get(13)?, "audit_records.other_keys")?,
            outcome: Outcome::parse(r.try_get(14)?).ok_or(corrupt("audit_records.outcome"))?,
            status: u16::try_from(r.try_get::<_, i64>(15)?)
                .map_err(|_| corrupt("audit_records.status"))?,
            error_code: r.try_get(16)?,
            context_digest: r.try_get(17)?,
            context_keys: list(r.try_get(18)?, "audit_records.context_keys")?,
            details: serde_json::from_str(r.try_get(21)?)
                .map_err(|_| corrupt("audit_records.details"))?,
        },
        prev_hash: r.try_get(19)?,
        hash: r.try_get(20)?,
    })
}

/// The rows of the records with `after < sequence <= until`, in order, at most `limit`.
async fn range_rows(
    client: &Client,
    after: u64,
    until: u64,
    limit: u32,
) -> Result<Vec<Row>, Error> {
    Ok(client
        .query(RANGE, &[&big(after), &big(until), &i64::from(limit)])
        .await?)
}

impl AuditRow for Row {
    fn text(&self, i: usize) -> Result<Option<&str>, StoreError> {
        self.try_get(i).map_err(super::error::map)
    }
    fn integer(&self, i: usize) -> Result<Option<i64>, StoreError> {
        self.try_get(i).map_err(super::error::map)
    }
}

fn checkpoint(r: &Row) -> Result<Checkpoint, Error> {
    Ok(Checkpoint {
        sequence: to_u64(r.try_get(0)?, "audit_checkpoints.sequence")?,
        head: r.try_get(1)?,
        time: r.try_get(2)?,
        node: r.try_get(3)?,
        algorithm: r.try_get(4)?,
        key_fingerprint: r.try_get(5)?,
        signature: r.try_get(6)?,
    })
}

fn archive(r: &Row) -> Result<AuditArchive, Error> {
    Ok(AuditArchive {
        through: to_u64(r.try_get(0)?, "audit_archives.through_sequence")?,
        head: r.try_get(1)?,
        export_sha256: r.try_get(2)?,
        archived_at: r.try_get(3)?,
        principal: r.try_get(4)?,
        request_id: r.try_get(5)?,
    })
}

pub(super) async fn tail(db: &Db<'_>) -> Result<AuditTail, Error> {
    let last = db
        .query_opt(LAST, &[])
        .await?
        .map(|r| {
            Ok::<_, Error>((
                to_u64(r.try_get(0)?, "audit_records.sequence")?,
                r.try_get(1)?,
            ))
        })
        .transpose()?;
    let checkpoint = db
        .query_opt(&LAST_CHECKPOINT, &[])
        .await?
        .as_ref()
        .map(checkpoint)
        .transpose()?;
    let archive = db
        .query_opt(&LAST_ARCHIVE, &[])
        .await?
        .as_ref()
        .map(archive)
        .transpose()?;
    Ok(AuditTail {
        last,
        checkpoint,
        archive,
    })
}

pub(super) async fn range(
    db: &Db<'_>,
    after: u64,
    until: u64,
    limit: u32,
) -> Result<Vec<AuditRecord>, Error> {
    db.query(RANGE, &[&big(after), &big(until), &i64::from(limit)])
        .await?
        .iter()
        .map(record)
        .collect()
}

pub(super) async fn search(db: &Db<'_>, f: &AuditFilter) -> Result<Vec<AuditRecord>, Error> {
    let after = big(f.after);
    let outcome = f.outcome.map(Outcome::as_str);
    let limit = i64::from(f.limit);
    let mut sql = format!("SELECT {RECORD_COLUMNS} FROM audit_records WHERE sequence > $1");
    let mut args: Vec<&(dyn ToSql + Sync)> = vec![&after];
    let filters: [(&str, &str, Option<&(dyn ToSql + Sync)>); 6] = [
        ("principal", "=", f.principal.as_ref().map(|v| v as _)),
        ("key_id", "=", f.key_id.as_ref().map(|v| v as _)),
        ("action", "=", f.action.as_ref().map(|v| v as _)),
        ("outcome", "=", outcome.as_ref().map(|v| v as _)),
        // Times compare as text, byte by byte (RFC 3339 in UTC orders as it reads).
        ("time COLLATE \"C\"", ">=", f.since.as_ref().map(|v| v as _)),
        ("time COLLATE \"C\"", "<", f.until.as_ref().map(|v| v as _)),
    ];
    for (column, op, value) in filters {
        if let Some(v) = value {
            args.push(v);
            sql.push_str(&format!(" AND {column} {op} ${}", args.len()));
        }
    }
    args.push(&limit);
    sql.push_str(&format!(" ORDER BY sequence LIMIT ${}", args.len()));
    db.query(&sql, &args).await?.iter().map(record).collect()
}

pub(super) async fn checkpoints(
    db: &Db<'_>,
    after: u64,
    until: u64,
) -> Result<Vec<Checkpoint>, Error> {
    db.query(
        &format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints
             WHERE sequence > $1 AND sequence <= $2 ORDER BY sequence"
        ),
        &[&big(after), &big(until)],
    )
    .await?
    .iter()
    .map(checkpoint)
    .collect()
}

pub(super) async fn archive_through(db: &Db<'_>, a: &AuditArchive) -> Result<u64, Error> {
    let through = big(a.through);
    let stored: Option<String> = db
        .query_opt(
            "SELECT hash FROM audit_records WHERE sequence = $1 FOR UPDATE",
            &[&through],
        )
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
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
    let removed = db
        .execute(
            "DELETE FROM audit_records WHERE sequence <= $1",
            &[&through],
        )
        .await?;
    db.execute(
        &format!("INSERT INTO audit_archives ({ARCHIVE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"),
        &[
            &through,
            &a.head,
            &a.export_sha256,
            &a.archived_at,
            &a.principal,
            &a.request_id,
        ],
    )
    .await?;
    Ok(removed)
}
