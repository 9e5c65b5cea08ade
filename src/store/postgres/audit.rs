//! The audit tables: records, checkpoints, archives; and the audit writer's own connection.

use tokio::runtime::Handle;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};

use super::error::Error;
use super::{big, corrupt, to_u64, Connector, Db};
use crate::audit::{AuditArchive, AuditEntry, AuditFilter, AuditRecord, Checkpoint, Outcome};
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
    client: Option<Client>,
}

impl Appender {
    /// Connects now, so a server that cannot reach its database fails at start-up.
    pub(super) async fn connect(connector: Connector) -> Result<Self, StoreError> {
        let client = connector.connect().await.map_err(super::error::map)?;
        Ok(Self {
            runtime: Handle::current(),
            connector,
            client: Some(client),
        })
    }

    /// Runs `f` on a live connection (reconnecting first when the last one closed).
    fn run<T>(
        &mut self,
        f: impl for<'c> FnOnce(&'c mut Client) -> futures_util::future::BoxFuture<'c, Result<T, Error>>,
    ) -> Result<T, StoreError> {
        let runtime = self.runtime.clone();
        let connector = self.connector.clone();
        let slot = &mut self.client;
        runtime.block_on(async move {
            if slot.as_ref().is_none_or(Client::is_closed) {
                *slot = None;
                *slot = Some(connector.connect().await.map_err(super::error::map)?);
            }
            let Some(client) = slot.as_mut() else {
                return Err(StoreError::Unavailable("no audit connection".into()));
            };
            let result = f(client).await.map_err(Error::into_store);
            if client.is_closed() {
                *slot = None;
            }
            result
        })
    }
}

impl AuditAppender for Appender {
    fn append(&mut self, records: &[AuditRecord]) -> Result<(), StoreError> {
        let rows = records
            .iter()
            .map(RecordRow::of)
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::into_store)?;
        self.run(|client| Box::pin(append(client, rows)))
    }

    fn insert_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let c = checkpoint.clone();
        self.run(|client| {
            Box::pin(async move {
                client
                    .execute(
                        &format!(
                            "INSERT INTO audit_checkpoints ({CHECKPOINT_COLUMNS})
                             VALUES ($1, $2, $3, $4, $5, $6, $7)"
                        ),
                        &[
                            &big(c.sequence),
                            &c.head,
                            &c.time,
                            &c.node,
                            &c.algorithm,
                            &c.key_fingerprint,
                            &c.signature,
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
        self.run(move |client| {
            Box::pin(async move {
                let rows = client
                    .query(RANGE, &[&big(after), &big(until), &i64::from(limit)])
                    .await?;
                rows.iter().map(record).collect()
            })
        })
    }

    fn tail(&mut self) -> Result<AuditTail, StoreError> {
        self.run(|client| {
            Box::pin(async move {
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

/// One record's column values, owned, so a batch's statements can be sent together.
struct RecordRow {
    sequence: i64,
    other_keys: String,
    context_keys: String,
    details: String,
    key_version: Option<i64>,
    status: i64,
    outcome: &'static str,
    record: AuditRecord,
}

impl RecordRow {
    fn of(r: &AuditRecord) -> Result<Self, Error> {
        let e = &r.entry;
        Ok(Self {
            sequence: big(r.sequence),
            other_keys: serde_json::to_string(&e.other_keys)
                .map_err(|_| corrupt("audit_records.other_keys"))?,
            context_keys: serde_json::to_string(&e.context_keys)
                .map_err(|_| corrupt("audit_records.context_keys"))?,
            details: serde_json::to_string(&e.details)
                .map_err(|_| corrupt("audit_records.details"))?,
            key_version: e.key_version.map(i64::from),
            status: i64::from(e.status),
            outcome: e.outcome.as_str(),
            record: r.clone(),
        })
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 22] {
        let e = &self.record.entry;
        [
            &self.sequence,
            &e.time,
            &e.node,
            &e.request_id,
            &e.method,
            &e.route,
            &e.principal,
            &e.credential,
            &e.source,
            &e.action,
            &e.resource,
            &e.key_id,
            &self.key_version,
            &self.other_keys,
            &self.outcome,
            &self.status,
            &e.error_code,
            &e.context_digest,
            &self.context_keys,
            &self.record.prev_hash,
            &self.record.hash,
            &self.details,
        ]
    }
}

/// One transaction for the batch (group commit); the inserts are pipelined: sent together,
/// answered together.
async fn append(client: &mut Client, rows: Vec<RecordRow>) -> Result<(), Error> {
    let tx = client.transaction().await?;
    let stmt = tx
        .prepare(&format!(
            "INSERT INTO audit_records ({RECORD_COLUMNS}) VALUES
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
              $19, $20, $21, $22)"
        ))
        .await?;
    let params: Vec<_> = rows.iter().map(RecordRow::params).collect();
    futures_util::future::try_join_all(params.iter().map(|p| tx.execute(&stmt, p))).await?;
    tx.commit().await?;
    Ok(())
}

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
