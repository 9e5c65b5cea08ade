//! [`AuditLog`]: the one writer of the audit chain on this node.
//!
//! Requests hand their entry to the writer and wait for its acknowledgement, which comes only
//! after the entry's record is committed: a response is never sent before its record is
//! durable. The writer is one OS thread with its own database connection
//! ([`crate::store::AuditAppender`]): it blocks on the commit's fsync without occupying the
//! async runtime or the connection requests use, and it takes every entry waiting when it starts
//! a transaction (group commit), so throughput holds under load while each commit is one fsync.
//! It also signs checkpoints with the device-resident key, at a configured interval and record
//! count, after re-checking the chain it is about to sign from the stored rows. An export asks
//! for a checkpoint too, but signs a new one at most once per
//! [`AuditSettings::export_checkpoint_interval`]: within it, the export ends at the latest
//! checkpoint (after the same re-check of the rows that follow it), so exporting in a loop
//! neither uses the device nor grows the checkpoint table.
//!
//! Where the store's appender can ([`AuditAppender::writes_versions`]: SQLite), an announcement
//! may carry a secret version ([`AuditLog::append_with_version`]) or a re-wrap batch
//! ([`AuditLog::append_with_rewrap`]): the writer writes it in the same transaction as the
//! batch's records, so the two are durable together or not at all (decisions 0026 and 0025).
//!
//! When a write fails, the requests in that batch fail (the API answers 503) and readiness
//! reports the audit log unwritable until a later write succeeds.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use std::sync::mpsc;
use std::time::Instant;

use tokio::sync::oneshot;

use super::export::Checkpoint;
use super::record::{decode_hash, format_time, AuditEntry, AuditRecord, GENESIS};
use super::signature::{PublicKey, ALGORITHM};
use crate::backend::{AuditSigner, BackendError};
use crate::store::{
    AuditAppender, AuditTail, NewSecretVersion, RewrapBatch, RewrapWrite, Store, StoreError,
    VersionWrite,
};

/// Name of the writer thread (as `ps -L` and `/proc/<pid>/task/*/comm` show it).
pub const WRITER_THREAD: &str = "custodian-audit";
/// Most entries committed in one transaction.
const MAX_BATCH: usize = 1024;
/// Times a batch is chained again after another node took its sequence numbers.
const MAX_APPEND_RACES: u32 = 100;
/// After a race with another node, batches are appended under the database's head lock for this
/// long (renewed by every race): contended appends wait their turn instead of retrying.
const CONTENDED_FOR: Duration = Duration::from_secs(10);
/// Records read per page when re-checking the chain before a checkpoint.
const CHECK_PAGE: u32 = 1000;

/// Audit settings.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// This node's name in records.
    pub node: String,
    /// A checkpoint is signed at least this often while records arrive.
    pub checkpoint_interval: Duration,
    /// …and whenever this many records are not yet covered.
    pub checkpoint_records: u64,
    /// An export signs a new checkpoint only when none was signed for an export within this
    /// interval (and records followed the last checkpoint); zero: every export may sign one.
    pub export_checkpoint_interval: Duration,
}

/// Why an audit operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The record could not be written; the request must fail. The cause is logged once by
    /// the writer for the whole batch.
    #[error("the audit log could not be written")]
    Unwritable,
    /// Reading or writing the log's tables failed.
    #[error("the audit log's storage failed")]
    Store(#[source] StoreError),
    /// A checkpoint could not be made; the cause is logged by the writer.
    #[error("the audit checkpoint failed")]
    CheckpointFailed,
    /// The writer is gone (shutting down).
    #[error("the audit writer is not running")]
    Stopped,
    /// The device refused to sign.
    #[error("the audit signing key failed")]
    Signing(#[source] BackendError),
    /// The stored chain does not verify from the last checkpoint; nothing is signed over it.
    #[error("the stored audit chain is broken at sequence {0}")]
    ChainBroken(u64),
}

/// The audit log's health, for readiness.
///
/// The fields are in name order: readiness answers list members that way (as when the answer
/// was a JSON map).
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditStatus {
    /// Where the stored chain was found broken, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain_broken_at: Option<u64>,
    /// Sequence of the last checkpoint.
    pub checkpoint: u64,
    /// Sequence of the last record.
    pub head: u64,
    /// False after a failed write, until a write succeeds.
    pub writable: bool,
}

impl AuditStatus {
    /// True when records can be written and the chain verified.
    pub fn is_ready(&self) -> bool {
        self.writable && self.chain_broken_at.is_none()
    }
}

enum Command {
    Append(Box<AuditEntry>, Ack),
    Checkpoint(oneshot::Sender<Result<Option<Checkpoint>, AuditError>>),
}

/// A version's answer from [`AuditLog::append_with_version`]: the record's sequence, and the
/// versions pruning destroyed or why the version was not written.
pub type VersionAnswer = (u64, Result<Vec<u32>, StoreError>);

/// A re-wrap batch's answer from [`AuditLog::append_with_rewrap`]: the record's sequence, and
/// the rows moved or why nothing was written.
pub type RewrapAnswer = (u64, Result<u64, StoreError>);

/// Where an entry's answer goes once its version is with the batch's (see [`Writer::commit`]).
enum Reply {
    Record(oneshot::Sender<Result<u64, AuditError>>),
    Version(oneshot::Sender<Result<VersionAnswer, AuditError>>),
    Rewrap(oneshot::Sender<Result<RewrapAnswer, AuditError>>),
}

/// Where an appended entry's answer goes.
enum Ack {
    Record(oneshot::Sender<Result<u64, AuditError>>),
    /// The entry announces a secret version written in the same commit.
    Version(
        Box<NewSecretVersion>,
        oneshot::Sender<Result<VersionAnswer, AuditError>>,
    ),
    /// The entry announces a re-wrap batch applied in the same commit.
    Rewrap(
        Box<RewrapBatch>,
        oneshot::Sender<Result<RewrapAnswer, AuditError>>,
    ),
}

struct Shared {
    writable: AtomicBool,
    head: AtomicU64,
    checkpoint: AtomicU64,
    broken_at: Mutex<Option<u64>>,
}

/// The audit log of this node.
pub struct AuditLog {
    tx: Option<mpsc::Sender<Command>>,
    /// The writer thread, joined on drop: it holds a device session handle (the signer) and a
    /// database connection, which must be released before the process exits, not during.
    writer: Option<std::thread::JoinHandle<()>>,
    shared: Arc<Shared>,
    signer: Option<Arc<dyn AuditSigner>>,
    node: String,
    /// The appender's [`AuditAppender::writes_versions`]: whether
    /// [`AuditLog::append_with_version`] may be used.
    writes_versions: bool,
    /// Where each append's wait is recorded (shared with the writer's series).
    metrics: crate::metrics::AuditMetrics,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Loads the chain's tail from `store` and starts the writer.
    ///
    /// # Errors
    /// `Store` when the tail cannot be loaded; `ChainBroken` when it does not parse.
    pub async fn start(
        store: Arc<dyn Store>,
        signer: Arc<dyn AuditSigner>,
        settings: AuditSettings,
        metrics: crate::metrics::AuditMetrics,
    ) -> Result<Self, AuditError> {
        let tail = store.audit_tail().await.map_err(AuditError::Store)?;
        let head_hash = match &tail.last {
            Some((_, h)) => decode_hash(h).ok_or(AuditError::ChainBroken(tail.head()))?,
            None => match &tail.archive {
                Some(a) => decode_hash(&a.head).ok_or(AuditError::ChainBroken(a.through))?,
                None => GENESIS,
            },
        };
        let shared = Arc::new(Shared {
            writable: AtomicBool::new(true),
            head: AtomicU64::new(tail.head()),
            checkpoint: AtomicU64::new(tail.checkpoint.as_ref().map_or(0, |c| c.sequence)),
            broken_at: Mutex::new(None),
        });
        // Unbounded: every sender waits for its acknowledgement, so the queue never holds more
        // entries than there are requests in flight.
        let (tx, rx) = mpsc::channel();
        let appender = store.audit_appender().await.map_err(AuditError::Store)?;
        let writes_versions = appender.writes_versions();
        let writer = Writer {
            appender,
            runtime: tokio::runtime::Handle::current(),
            signer: Arc::clone(&signer),
            settings: settings.clone(),
            shared: Arc::clone(&shared),
            head: (tail.head(), head_hash),
            last_checkpoint: tail.checkpoint.map(|c| (c.sequence, c.head)),
            last_export_checkpoint: None,
            floor: tail.archive.map(|a| (a.through, a.head)),
            in_doubt: false,
            raced: false,
            contended_until: None,
            metrics: metrics.clone(),
        };
        let writer = std::thread::Builder::new()
            .name(WRITER_THREAD.to_owned())
            .spawn(move || writer.run(rx))
            .map_err(|e| AuditError::Store(StoreError::Io(e)))?;
        Ok(Self {
            tx: Some(tx),
            writer: Some(writer),
            shared,
            signer: Some(signer),
            node: settings.node,
            writes_versions,
            metrics,
        })
    }

    /// A log that discards every entry. **Benchmarks only**: it exists so a benchmark can
    /// measure what auditing costs in the same run. No configuration reaches it.
    #[doc(hidden)]
    pub fn dangerous_discarding_for_benchmarks(node: &str) -> Self {
        Self {
            tx: None,
            writer: None,
            shared: Arc::new(Shared {
                writable: AtomicBool::new(true),
                head: AtomicU64::new(0),
                checkpoint: AtomicU64::new(0),
                broken_at: Mutex::new(None),
            }),
            signer: None,
            node: node.to_owned(),
            writes_versions: false,
            metrics: crate::metrics::AuditMetrics::default(),
        }
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Appends `entry` and waits until its record is durable; returns its sequence number.
    ///
    /// # Errors
    /// `Unwritable` or `Stopped`: the caller must fail the request.
    pub async fn append(&self, entry: AuditEntry) -> Result<u64, AuditError> {
        let Some(tx) = &self.tx else { return Ok(0) };
        let (ack, done) = oneshot::channel();
        self.submit(tx, Command::Append(Box::new(entry), Ack::Record(ack)), done)
            .await
    }

    /// Hands `command` to the writer and waits for its answer on `done`; the wait is recorded
    /// (`custodian_audit_wait_duration_seconds`).
    async fn submit<T>(
        &self,
        tx: &mpsc::Sender<Command>,
        command: Command,
        done: oneshot::Receiver<Result<T, AuditError>>,
    ) -> Result<T, AuditError> {
        let started = Instant::now();
        tx.send(command).map_err(|_| AuditError::Stopped)?;
        let answer = done.await.map_err(|_| AuditError::Stopped)?;
        self.metrics.waited(started);
        answer
    }

    /// Whether [`AuditLog::append_with_version`] writes a version in its record's commit (the
    /// store's audit writer can write secret versions; SQLite).
    pub fn writes_versions(&self) -> bool {
        self.writes_versions
    }

    /// Appends `entry`, the announcement of `version`, and writes the version in the same
    /// commit ([`AuditAppender::append_with`]): the record is durable with the version or
    /// without it, never the version without its record. Returns the record's sequence and the
    /// version's own answer (as [`crate::store::SecretStore::insert_secret_version`] gives it).
    ///
    /// # Errors
    /// `Unwritable` or `Stopped`: nothing was written and the caller must fail the request.
    /// `Stopped` also where [`AuditLog::writes_versions`] is false.
    pub async fn append_with_version(
        &self,
        entry: AuditEntry,
        version: NewSecretVersion,
    ) -> Result<VersionAnswer, AuditError> {
        self.ride(entry, |ack| Ack::Version(Box::new(version), ack))
            .await
    }

    /// Appends `entry`, the announcement of a re-wrap `batch`, and applies the batch in the same
    /// commit, as [`AuditLog::append_with_version`] writes a version: the record is durable with
    /// the batch or without it, never the batch without its record. Returns the record's
    /// sequence and the batch's own answer (as [`crate::store::JobStore::apply_rewrap`] gives
    /// it).
    ///
    /// # Errors
    /// `Unwritable` or `Stopped`: nothing was written. `Stopped` also where
    /// [`AuditLog::writes_versions`] is false.
    pub async fn append_with_rewrap(
        &self,
        entry: AuditEntry,
        batch: RewrapBatch,
    ) -> Result<RewrapAnswer, AuditError> {
        self.ride(entry, |ack| Ack::Rewrap(Box::new(batch), ack))
            .await
    }

    /// Appends `entry` with the change `ack` carries, where the writer writes changes
    /// ([`AuditLog::writes_versions`]); `Stopped` elsewhere.
    async fn ride<T>(
        &self,
        entry: AuditEntry,
        ack: impl FnOnce(oneshot::Sender<Result<T, AuditError>>) -> Ack,
    ) -> Result<T, AuditError> {
        let Some(tx) = self.tx.as_ref().filter(|_| self.writes_versions) else {
            return Err(AuditError::Stopped);
        };
        let (sender, done) = oneshot::channel();
        let command = Command::Append(Box::new(entry), ack(sender));
        self.submit(tx, command, done).await
    }

    /// The checkpoint an export ends at: signs one over everything written so far, unless the
    /// last one already covers it or an export had one signed less than
    /// [`AuditSettings::export_checkpoint_interval`] ago; in those cases the stored records
    /// after the latest checkpoint are re-checked and the latest checkpoint is returned.
    /// `None` for an empty log.
    ///
    /// # Errors
    /// `ChainBroken` when the stored chain does not verify; `CheckpointFailed`, `Stopped`.
    pub async fn checkpoint_now(&self) -> Result<Option<Checkpoint>, AuditError> {
        let Some(tx) = &self.tx else { return Ok(None) };
        let (ack, done) = oneshot::channel();
        tx.send(Command::Checkpoint(ack))
            .map_err(|_| AuditError::Stopped)?;
        done.await.map_err(|_| AuditError::Stopped)?
    }

    /// The signing key, for auditors.
    ///
    /// # Errors
    /// `Stopped` for a log without a signer (benchmarks).
    pub fn public_key(&self) -> Result<&PublicKey, AuditError> {
        self.signer
            .as_ref()
            .map(|s| s.public_key())
            .ok_or(AuditError::Stopped)
    }

    /// The signer (also used for the custody report).
    pub fn signer(&self) -> Option<&Arc<dyn AuditSigner>> {
        self.signer.as_ref()
    }

    /// Current health.
    pub fn status(&self) -> AuditStatus {
        AuditStatus {
            writable: self.shared.writable.load(Ordering::Acquire),
            head: self.shared.head.load(Ordering::Acquire),
            checkpoint: self.shared.checkpoint.load(Ordering::Acquire),
            chain_broken_at: self.shared.broken_at.lock().ok().and_then(|g| *g),
        }
    }
}

impl Drop for AuditLog {
    /// Closes the queue (every request still waiting has its acknowledgement: the writer
    /// drains the queue first) and waits for the writer thread to finish.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(w) = self.writer.take() {
            if w.join().is_err() {
                tracing::error!("the audit writer thread panicked");
            }
        }
    }
}

struct Writer {
    appender: Box<dyn AuditAppender>,
    /// For the one async call the writer makes: the device signature of a checkpoint.
    runtime: tokio::runtime::Handle,
    signer: Arc<dyn AuditSigner>,
    settings: AuditSettings,
    shared: Arc<Shared>,
    /// Sequence and hash of the last committed record (or of the archive floor).
    head: (u64, [u8; 32]),
    /// Sequence and hex head of the last checkpoint.
    last_checkpoint: Option<(u64, String)>,
    /// When an export last had a checkpoint signed (this process; a restart allows one).
    last_export_checkpoint: Option<Instant>,
    /// Where the stored log starts: the archive's sequence and head, if archived.
    floor: Option<(u64, String)>,
    /// The last append failed: whether it committed is unknown (a connection lost during the
    /// commit), so the next one first reads where the stored chain ends.
    in_doubt: bool,
    /// The last append lost a race to another node (not a failure).
    raced: bool,
    /// Until when batches are appended under the head lock (another node appended lately).
    contended_until: Option<Instant>,
    /// Commit latency, batch sizes and failures.
    metrics: crate::metrics::AuditMetrics,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Command>) {
        let interval = self.settings.checkpoint_interval;
        let mut next_tick = Instant::now() + interval;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let first = match rx.recv_timeout(wait) {
                Ok(c) => c,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    next_tick = Instant::now() + interval;
                    if let Err(e) = self.checkpoint() {
                        tracing::error!(error = %e, "audit checkpoint failed");
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut appends = Vec::new();
            let mut checkpoints = Vec::new();
            let mut next = Some(first);
            while let Some(c) = next.take() {
                match c {
                    Command::Append(e, ack) => appends.push((*e, ack)),
                    Command::Checkpoint(ack) => checkpoints.push(ack),
                }
                if appends.len() < MAX_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            if !appends.is_empty() {
                self.commit(appends);
            }
            let covered = self.last_checkpoint.as_ref().map_or(0, |c| c.0);
            let due = self.head.0.saturating_sub(covered) >= self.settings.checkpoint_records;
            if due || !checkpoints.is_empty() {
                let result = if checkpoints.is_empty() {
                    self.checkpoint()
                } else {
                    self.export_checkpoint()
                };
                if let Err(e) = &result {
                    tracing::error!(error = %e, "audit checkpoint failed");
                }
                for ack in checkpoints {
                    let _ = ack.send(match &result {
                        Ok(c) => Ok(c.clone()),
                        Err(AuditError::ChainBroken(s)) => Err(AuditError::ChainBroken(*s)),
                        Err(_) => Err(AuditError::CheckpointFailed),
                    });
                }
            }
        }
    }

    /// Chains and commits a batch; acknowledges every entry with its sequence or the failure.
    ///
    /// Several nodes may append to one database: each chains on the head it knows, and the
    /// sequence's primary key lets only one batch take a sequence number. A batch that lost the
    /// race (`Conflict` on the records' key) is chained again on the stored head and retried, so
    /// the nodes' records form one chain without a lock on the single-node path.
    ///
    /// Versions and re-wrap batches that ride along ([`Ack::Version`], [`Ack::Rewrap`]) are
    /// written in the batch's transaction ([`AuditAppender::append_with`]); only a store that
    /// writes versions receives them, and it is never contended (one node), so the head-lock
    /// path below never holds one.
    fn commit(&mut self, batch: Vec<(AuditEntry, Ack)>) {
        let mut entries = Vec::with_capacity(batch.len());
        let mut acks = Vec::with_capacity(batch.len());
        // The versions travel in `versions` and the re-wrap batches in `rewraps`, each in the
        // order of their replies.
        let mut versions = Vec::new();
        let mut rewraps = Vec::new();
        for (entry, ack) in batch {
            match ack {
                Ack::Record(done) => acks.push(Reply::Record(done)),
                // A version whose request stopped waiting (it was cancelled) is not written
                // behind its back, and neither is its announcement: nothing of it happened.
                Ack::Version(_, done) if done.is_closed() => continue,
                Ack::Version(v, done) => {
                    versions.push(VersionWrite {
                        version: *v,
                        result: None,
                    });
                    acks.push(Reply::Version(done));
                }
                Ack::Rewrap(_, done) if done.is_closed() => continue,
                Ack::Rewrap(b, done) => {
                    rewraps.push(RewrapWrite {
                        batch: *b,
                        result: None,
                    });
                    acks.push(Reply::Rewrap(done));
                }
            }
            entries.push(entry);
        }
        if entries.is_empty() {
            return;
        }
        let started = Instant::now();
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            if versions.is_empty()
                && rewraps.is_empty()
                && self.contended_until.is_some_and(|t| Instant::now() < t)
            {
                // Other nodes are appending too: under the database's head lock, the batch is
                // chained on the head read in the same transaction.
                match self.appender.append_serialized(&entries) {
                    Ok(Some(records)) => match records.last().map(|r| (r.sequence, r.hash_bytes()))
                    {
                        Some((seq, Some(hash))) => {
                            self.in_doubt = false;
                            self.raced = false;
                            break Ok((seq, hash));
                        }
                        _ => {
                            break Err(StoreError::Corrupt {
                                column: "audit_records.hash",
                            })
                        }
                    },
                    Ok(None) => self.contended_until = None,
                    Err(StoreError::Conflict { constraint })
                        if constraint.contains("audit_records") && attempt < MAX_APPEND_RACES =>
                    {
                        continue;
                    }
                    Err(e) => {
                        self.in_doubt = true;
                        break Err(e);
                    }
                }
            }
            if self.in_doubt {
                if let Err(e) = self.resync() {
                    break Err(e);
                }
            }
            let (mut seq, mut prev) = self.head;
            let mut records = Vec::with_capacity(entries.len());
            for entry in entries {
                seq += 1;
                let record = AuditRecord::chain(seq, entry, &prev);
                prev = record.hash_bytes().unwrap_or(GENESIS);
                records.push(record);
            }
            match self
                .appender
                .append_with(&records, &mut versions, &mut rewraps)
            {
                Ok(()) => break Ok((seq, prev)),
                Err(StoreError::Conflict { constraint })
                    if constraint.contains("audit_records") && attempt < MAX_APPEND_RACES =>
                {
                    // Another node took these sequence numbers: append under the head lock for a
                    // while (several nodes are writing).
                    tracing::debug!(
                        attempt,
                        "audit append raced another node; chaining again under the head lock"
                    );
                    self.in_doubt = true;
                    self.raced = true;
                    self.contended_until = Some(Instant::now() + CONTENDED_FOR);
                    entries = records.into_iter().map(|r| r.entry).collect();
                }
                Err(e) => break Err(e),
            }
        };
        match result {
            Ok((seq, prev)) => {
                let first = seq + 1 - acks.len() as u64;
                self.metrics.committed(acks.len(), started);
                self.head = (seq, prev);
                self.shared.head.store(seq, Ordering::Release);
                self.shared.writable.store(true, Ordering::Release);
                let unanswered =
                    || StoreError::Unavailable("the audit writer left a change unanswered".into());
                let mut answers = versions
                    .into_iter()
                    .map(|v| v.result.unwrap_or_else(|| Err(unanswered())));
                let mut moved = rewraps
                    .into_iter()
                    .map(|r| r.result.unwrap_or_else(|| Err(unanswered())));
                for (i, ack) in acks.into_iter().enumerate() {
                    let seq = first + i as u64;
                    // A caller that gave up waiting has no one to tell.
                    match ack {
                        Reply::Record(done) => {
                            let _ = done.send(Ok(seq));
                        }
                        Reply::Version(done) => {
                            let answer = answers.next().unwrap_or_else(|| {
                                Err(StoreError::Unavailable(
                                    "the audit writer lost a version's answer".into(),
                                ))
                            });
                            let _ = done.send(Ok((seq, answer)));
                        }
                        Reply::Rewrap(done) => {
                            let answer = moved.next().unwrap_or_else(|| Err(unanswered()));
                            let _ = done.send(Ok((seq, answer)));
                        }
                    }
                }
            }
            Err(e) => {
                self.metrics.failed();
                tracing::error!(error = %e, records = acks.len(), "audit write failed; the requests fail");
                self.in_doubt = true;
                self.shared.writable.store(false, Ordering::Release);
                for ack in acks {
                    match ack {
                        Reply::Record(done) => {
                            let _ = done.send(Err(AuditError::Unwritable));
                        }
                        Reply::Version(done) => {
                            let _ = done.send(Err(AuditError::Unwritable));
                        }
                        Reply::Rewrap(done) => {
                            let _ = done.send(Err(AuditError::Unwritable));
                        }
                    }
                }
            }
        }
    }

    /// After a failed append, or one that raced another node: takes the stored chain's end as
    /// the head. A batch whose commit reached the database although its acknowledgement was
    /// lost (its requests were answered 503) stays in the chain, and the next records link to
    /// it instead of colliding with it; so do other nodes' records.
    fn resync(&mut self) -> Result<(), StoreError> {
        let tail = self.appender.tail()?;
        if let Some((seq, hash)) = tail.last {
            if seq > self.head.0 {
                let Some(bytes) = decode_hash(&hash) else {
                    return Err(StoreError::Corrupt {
                        column: "audit_records.hash",
                    });
                };
                if self.raced {
                    tracing::debug!(
                        stored = seq,
                        known = self.head.0,
                        "other nodes appended audit records; continuing after them"
                    );
                } else {
                    tracing::warn!(
                        stored = seq,
                        expected = self.head.0,
                        "the stored audit chain goes past the last acknowledged record (a \
                         batch reported as failed had committed, or another node appended); \
                         continuing after it"
                    );
                }
                self.head = (seq, bytes);
                self.shared.head.store(seq, Ordering::Release);
            }
        }
        self.in_doubt = false;
        self.raced = false;
        Ok(())
    }

    /// The checkpoint an export ends at ([`AuditLog::checkpoint_now`]).
    fn export_checkpoint(&mut self) -> Result<Option<Checkpoint>, AuditError> {
        let interval = self.settings.export_checkpoint_interval;
        let recent = self
            .last_export_checkpoint
            .is_some_and(|t| t.elapsed() < interval);
        if recent && self.last_checkpoint.is_some() {
            // No signature, but the rows after the checkpoint are still checked: an edit is
            // found as soon as by a signing export.
            self.recheck_marking()?;
            return self
                .appender
                .tail()
                .map(|t| t.checkpoint)
                .map_err(AuditError::Store);
        }
        let before = self.last_checkpoint.as_ref().map(|c| c.0);
        let latest = self.checkpoint()?;
        if latest.as_ref().map(|c| c.sequence) != before {
            self.last_export_checkpoint = Some(Instant::now());
        }
        Ok(latest)
    }

    /// [`Writer::recheck`], noting where the chain broke for readiness.
    fn recheck_marking(&mut self) -> Result<(), AuditError> {
        self.recheck().map_err(|e| {
            if let AuditError::ChainBroken(s) = e {
                if let Ok(mut g) = self.shared.broken_at.lock() {
                    *g = Some(s);
                }
            }
            e
        })
    }

    /// Re-checks the stored chain since the last checkpoint, then signs and stores a
    /// checkpoint over the head. Returns the latest checkpoint.
    fn checkpoint(&mut self) -> Result<Option<Checkpoint>, AuditError> {
        let covered = self.last_checkpoint.as_ref().map_or(0, |c| c.0);
        if self.head.0 == covered || self.head.0 == self.floor.as_ref().map_or(0, |f| f.0) {
            return self
                .appender
                .tail()
                .map(|t| t.checkpoint)
                .map_err(AuditError::Store);
        }
        self.recheck_marking()?;
        let head = hex::encode(self.head.1);
        let time = format_time(crate::clock::now());
        let message = Checkpoint::message(self.head.0, &head, &time, &self.settings.node);
        let signature = self
            .runtime
            .block_on(self.signer.sign(message))
            .map_err(AuditError::Signing)?;
        let checkpoint = Checkpoint {
            sequence: self.head.0,
            head: head.clone(),
            time,
            node: self.settings.node.clone(),
            algorithm: ALGORITHM.to_owned(),
            key_fingerprint: self.signer.public_key().fingerprint(),
            signature: STANDARD.encode(signature),
        };
        self.appender
            .insert_checkpoint(&checkpoint)
            .map_err(AuditError::Store)?;
        self.last_checkpoint = Some((checkpoint.sequence, head));
        self.shared
            .checkpoint
            .store(checkpoint.sequence, Ordering::Release);
        Ok(Some(checkpoint))
    }

    /// Verifies the stored records after the last checkpoint link up to the in-memory head:
    /// a row edited in the database since then is found before anything is signed over it.
    fn recheck(&mut self) -> Result<(), AuditError> {
        let (mut after, mut prev) = match (&self.last_checkpoint, &self.floor) {
            (Some((s, h)), _) => (*s, decode_hash(h).ok_or(AuditError::ChainBroken(*s))?),
            (None, Some((s, h))) => (*s, decode_hash(h).ok_or(AuditError::ChainBroken(*s))?),
            (None, None) => (0, GENESIS),
        };
        while after < self.head.0 {
            let page = self
                .appender
                .range(after, self.head.0, CHECK_PAGE)
                .map_err(AuditError::Store)?;
            if page.is_empty() {
                return Err(AuditError::ChainBroken(after + 1));
            }
            for r in page {
                let expected = after + 1;
                let hash = r.hash_bytes();
                if r.sequence != expected
                    || decode_hash(&r.prev_hash) != Some(prev)
                    || hash.is_none()
                    || r.recompute() != hash
                {
                    return Err(AuditError::ChainBroken(expected));
                }
                prev = hash.unwrap_or(GENESIS);
                after = expected;
            }
        }
        if prev != self.head.1 {
            return Err(AuditError::ChainBroken(self.head.0));
        }
        Ok(())
    }
}

impl AuditTail {
    /// Sequence of the last record, or of the archive floor when the table is empty.
    pub fn head(&self) -> u64 {
        match (&self.last, &self.archive) {
            (Some((s, _)), _) => *s,
            (None, Some(a)) => a.through,
            (None, None) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::domain::secret::SecretPath;
    use crate::domain::{KeyId, KeyVersion};
    use crate::store::sqlite::SqliteStore;

    /// A signer that is never asked: the tests' logs sign no checkpoint.
    struct NoSigner(PublicKey);

    #[async_trait::async_trait]
    impl AuditSigner for NoSigner {
        fn public_key(&self) -> &PublicKey {
            &self.0
        }
        async fn sign(&self, _: Vec<u8>) -> Result<Vec<u8>, BackendError> {
            Err(BackendError::RootKeyMissing(
                "no signer in this test".into(),
            ))
        }
        async fn inspect(&self) -> Result<Option<crate::backend::ObjectFacts>, BackendError> {
            Ok(None)
        }
    }

    fn entry(request_id: &str) -> AuditEntry {
        AuditEntry {
            time: "2026-12-07T12:00:00.000000Z".into(),
            node: "n1".into(),
            request_id: request_id.into(),
            method: "PUT".into(),
            route: "/v1/secrets/{*path}".into(),
            principal: Some("admin".into()),
            credential: None,
            source: None,
            action: Some("secret:write".into()),
            resource: Some("secret/a".into()),
            key_id: None,
            key_version: None,
            other_keys: Vec::new(),
            outcome: super::super::Outcome::Pending,
            status: 0,
            error_code: None,
            context_digest: None,
            context_keys: Vec::new(),
            details: BTreeMap::new(),
        }
    }

    /// A version whose request was cancelled while it waited in the writer's queue is not
    /// written, and neither is its announcement; the records around it are.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_version_and_its_announcement_are_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("custodian.db");
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).await.unwrap());
        // P-256's base point: a valid public key, never used.
        let g = hex::decode(
            "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296\
             4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5",
        )
        .unwrap();
        let signer = Arc::new(NoSigner(PublicKey::from_sec1(&g).unwrap()));
        let settings = AuditSettings {
            node: "n1".into(),
            checkpoint_interval: Duration::from_secs(3600),
            checkpoint_records: u64::MAX,
            export_checkpoint_interval: Duration::from_secs(3600),
        };
        let log = Arc::new(
            AuditLog::start(
                Arc::clone(&store),
                signer,
                settings,
                crate::metrics::AuditMetrics::default(),
            )
            .await
            .unwrap(),
        );
        assert!(log.writes_versions());

        // Another connection holds the write lock: the writer's next batch waits for it.
        let blocker = rusqlite::Connection::open(&db).unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
        let first = tokio::spawn({
            let log = Arc::clone(&log);
            async move { log.append(entry("first")).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Queued behind that batch, then given up on.
        let version = NewSecretVersion {
            path: SecretPath::try_from("a".to_owned()).unwrap(),
            version: 1,
            cas: None,
            key_id: KeyId::generate(),
            key_version: KeyVersion::new(1).unwrap(),
            wrapped_dek: vec![1; 8],
            ciphertext: vec![2; 8],
            created_at: crate::clock::now(),
            default_max_versions: 0,
            rotation: None,
        };
        let cancelled = tokio::time::timeout(
            Duration::from_millis(50),
            log.append_with_version(entry("cancelled"), version),
        )
        .await;
        assert!(
            cancelled.is_err(),
            "the version was answered: {cancelled:?}"
        );
        blocker.execute_batch("COMMIT").unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        assert_eq!(log.append(entry("after")).await.unwrap(), 2);

        let written: Vec<String> = store
            .audit_range(0, 10, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.entry.request_id)
            .collect();
        assert_eq!(written, ["first", "after"]);
    }
}
