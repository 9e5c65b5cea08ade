//! [`AuditLog`]: the one writer of the audit chain on this node.
//!
//! Requests hand their entry to the writer and wait for its acknowledgement, which comes only
//! after the entry's record is committed: a response is never sent before its record is
//! durable. The writer is one OS thread with its own database connection
//! ([`crate::store::AuditAppender`]): it blocks on the commit's fsync without occupying the
//! async runtime or the connection requests use, and it takes every entry waiting when it starts
//! a transaction (group commit), so throughput holds under load while each commit is one fsync.
//! Checkpoints are signed with the device-resident key, at a configured interval and record
//! count, after re-checking the chain about to be signed from the stored rows. That re-check and
//! the signature run on a second thread with a connection of its own (the checkpointer), so the
//! writer goes on committing while they run; the writer stores the signed checkpoint when it
//! comes back. An export asks for a checkpoint too, which the writer makes itself (its answer
//! ends the export), but signs a new one at most once per
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
/// Name of the thread that re-checks and signs checkpoints for the writer.
pub const CHECKPOINT_THREAD: &str = "custodian-ckpt";
/// While a checkpoint is being signed, the writer looks for it at least this often.
const SIGNED_POLL: Duration = Duration::from_millis(2);
/// After a checkpoint failed (the device refused, the chain is broken), the next is tried no
/// sooner than this: not again after every batch.
const CHECKPOINT_RETRY: Duration = Duration::from_secs(1);
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
        let signing = Signing {
            runtime: tokio::runtime::Handle::current(),
            signer: Arc::clone(&signer),
            node: settings.node.clone(),
        };
        // The checkpointer only reads the chain: its own connection keeps the re-check's reads
        // off the writer's.
        let reader = store.audit_appender().await.map_err(AuditError::Store)?;
        let background = Background::start(Checkpointer {
            reader,
            signing: signing.clone(),
            shared: Arc::clone(&shared),
        })?;
        let writer = Writer {
            appender,
            signing,
            background,
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

/// What signs a checkpoint: the device-resident key, reached from a plain thread.
#[derive(Clone)]
struct Signing {
    /// For the one async call made off the runtime: the device signature.
    runtime: tokio::runtime::Handle,
    signer: Arc<dyn AuditSigner>,
    node: String,
}

impl Signing {
    /// A checkpoint over `head`, signed now.
    fn sign(&self, head: (u64, [u8; 32])) -> Result<Checkpoint, AuditError> {
        let hex_head = hex::encode(head.1);
        let time = format_time(crate::clock::now());
        let message = Checkpoint::message(head.0, &hex_head, &time, &self.node);
        let signature = self
            .runtime
            .block_on(self.signer.sign(message))
            .map_err(AuditError::Signing)?;
        Ok(Checkpoint {
            sequence: head.0,
            head: hex_head,
            time,
            node: self.node.clone(),
            algorithm: ALGORITHM.to_owned(),
            key_fingerprint: self.signer.public_key().fingerprint(),
            signature: STANDARD.encode(signature),
        })
    }
}

/// A checkpoint for the checkpointer to make: the stored chain from `from` (the last
/// checkpoint, the archive floor or the start) must link up to `head` before it is signed.
struct CheckpointJob {
    from: (u64, [u8; 32]),
    head: (u64, [u8; 32]),
}

/// The checkpointer thread's side: re-checks and signs each job it is handed, one at a time.
struct Checkpointer {
    reader: Box<dyn AuditAppender>,
    signing: Signing,
    shared: Arc<Shared>,
}

impl Checkpointer {
    fn run(
        mut self,
        jobs: mpsc::Receiver<CheckpointJob>,
        signed: mpsc::Sender<Result<Checkpoint, AuditError>>,
    ) {
        for job in jobs {
            let answer = recheck_marking(&mut *self.reader, &self.shared, job.from, job.head)
                .and_then(|()| self.signing.sign(job.head));
            if signed.send(answer).is_err() {
                break;
            }
        }
    }
}

/// The writer's side of the checkpointer: the job it handed over, if any, and its answer.
struct Background {
    jobs: Option<mpsc::Sender<CheckpointJob>>,
    signed: mpsc::Receiver<Result<Checkpoint, AuditError>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// A job was handed over and its answer is not yet taken.
    in_flight: bool,
    /// The last checkpoint failed: none is handed over before then.
    retry_after: Option<Instant>,
}

impl Background {
    fn start(checkpointer: Checkpointer) -> Result<Self, AuditError> {
        let (jobs, job_rx) = mpsc::channel();
        let (signed_tx, signed) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(CHECKPOINT_THREAD.to_owned())
            .spawn(move || checkpointer.run(job_rx, signed_tx))
            .map_err(|e| AuditError::Store(StoreError::Io(e)))?;
        Ok(Self {
            jobs: Some(jobs),
            signed,
            thread: Some(thread),
            in_flight: false,
            retry_after: None,
        })
    }
}

struct Writer {
    appender: Box<dyn AuditAppender>,
    signing: Signing,
    /// The checkpointer, which re-checks and signs while this thread commits.
    background: Background,
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
            let mut wait = next_tick.saturating_duration_since(Instant::now());
            if self.background.in_flight {
                wait = wait.min(SIGNED_POLL);
            }
            let mut checkpoints = Vec::new();
            match rx.recv_timeout(wait) {
                Ok(first) => {
                    let mut appends = Vec::new();
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
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            self.take_signed(false);
            if !checkpoints.is_empty() {
                // An export waits for its checkpoint: made here, not handed over.
                let result = self.export_checkpoint();
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
            let due =
                self.head.0.saturating_sub(self.covered()) >= self.settings.checkpoint_records;
            let ticked = Instant::now() >= next_tick;
            if ticked {
                next_tick = Instant::now() + interval;
            }
            if due || ticked {
                self.checkpoint_in_background();
            }
        }
        self.stop_background();
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

    /// The sequence the last checkpoint covers (0 before the first).
    fn covered(&self) -> u64 {
        self.last_checkpoint.as_ref().map_or(0, |c| c.0)
    }

    /// Whether records follow the last checkpoint (or the archive floor): something to sign.
    fn uncovered(&self) -> bool {
        self.head.0 != self.covered() && self.head.0 != self.floor.as_ref().map_or(0, |f| f.0)
    }

    /// Where a re-check starts: the last checkpoint, else the archive floor, else the start.
    fn check_from(&self) -> Result<(u64, [u8; 32]), AuditError> {
        match (&self.last_checkpoint, &self.floor) {
            (Some((s, h)), _) | (None, Some((s, h))) => {
                Ok((*s, decode_hash(h).ok_or(AuditError::ChainBroken(*s))?))
            }
            (None, None) => Ok((0, GENESIS)),
        }
    }

    /// [`recheck`] from the last checkpoint to the head, here on the writer's thread.
    fn recheck_marking(&mut self) -> Result<(), AuditError> {
        let from = self.check_from()?;
        recheck_marking(&mut *self.appender, &self.shared, from, self.head)
    }

    /// Re-checks the stored chain since the last checkpoint, then signs and stores a
    /// checkpoint over the head, on this thread. Returns the latest checkpoint.
    fn checkpoint(&mut self) -> Result<Option<Checkpoint>, AuditError> {
        if !self.uncovered() {
            return self
                .appender
                .tail()
                .map(|t| t.checkpoint)
                .map_err(AuditError::Store);
        }
        self.recheck_marking()?;
        let checkpoint = self.signing.sign(self.head)?;
        self.store_checkpoint(&checkpoint)?;
        Ok(Some(checkpoint))
    }

    /// Hands a checkpoint over the head to the checkpointer, unless one is being made already
    /// or nothing follows the last one. Where the checkpointer is gone, signs here.
    fn checkpoint_in_background(&mut self) {
        let waiting = self
            .background
            .retry_after
            .is_some_and(|t| Instant::now() < t);
        if self.background.in_flight || waiting || !self.uncovered() {
            return;
        }
        let job = match self.check_from() {
            Ok(from) => CheckpointJob {
                from,
                head: self.head,
            },
            Err(e) => {
                mark_broken(&self.shared, &e);
                tracing::error!(error = %e, "audit checkpoint failed");
                self.background.retry_after = Some(Instant::now() + CHECKPOINT_RETRY);
                return;
            }
        };
        if let Some(jobs) = &self.background.jobs {
            if jobs.send(job).is_ok() {
                self.background.in_flight = true;
                return;
            }
        }
        tracing::warn!("the audit checkpointer is gone; signing on the writer's thread");
        if let Err(e) = self.checkpoint() {
            tracing::error!(error = %e, "audit checkpoint failed");
        }
    }

    /// Stores the checkpointer's answer if it has come (`wait`: waits for it): a checkpoint
    /// past the last one is stored; one an export's checkpoint overtook is dropped.
    fn take_signed(&mut self, wait: bool) {
        if !self.background.in_flight {
            return;
        }
        let answer = if wait {
            self.background.signed.recv().ok()
        } else {
            match self.background.signed.try_recv() {
                Ok(a) => Some(a),
                Err(mpsc::TryRecvError::Empty) => return,
                Err(mpsc::TryRecvError::Disconnected) => None,
            }
        };
        self.background.in_flight = false;
        let covered = self.covered();
        let stored = match answer {
            Some(Ok(c)) if c.sequence > covered => self.store_checkpoint(&c),
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(e),
            None => Err(AuditError::CheckpointFailed),
        };
        self.background.retry_after = match stored {
            Ok(()) => None,
            Err(e) => {
                tracing::error!(error = %e, "audit checkpoint failed");
                Some(Instant::now() + CHECKPOINT_RETRY)
            }
        };
    }

    /// Stores a signed checkpoint; it becomes the last one.
    fn store_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<(), AuditError> {
        self.appender
            .insert_checkpoint(checkpoint)
            .map_err(AuditError::Store)?;
        self.last_checkpoint = Some((checkpoint.sequence, checkpoint.head.clone()));
        self.shared
            .checkpoint
            .store(checkpoint.sequence, Ordering::Release);
        Ok(())
    }

    /// Stops the checkpointer: a checkpoint it is making is waited for and stored.
    fn stop_background(&mut self) {
        drop(self.background.jobs.take());
        self.take_signed(true);
        if let Some(t) = self.background.thread.take() {
            if t.join().is_err() {
                tracing::error!("the audit checkpointer thread panicked");
            }
        }
    }
}

/// [`recheck`], noting where the chain broke for readiness.
fn recheck_marking(
    reader: &mut dyn AuditAppender,
    shared: &Shared,
    from: (u64, [u8; 32]),
    head: (u64, [u8; 32]),
) -> Result<(), AuditError> {
    recheck(reader, from, head).inspect_err(|e| mark_broken(shared, e))
}

/// Notes where the chain broke, if `e` says so.
fn mark_broken(shared: &Shared, e: &AuditError) {
    if let AuditError::ChainBroken(s) = e {
        if let Ok(mut g) = shared.broken_at.lock() {
            *g = Some(*s);
        }
    }
}

/// Verifies the stored records after `from` link up to `head`: a row edited in the database
/// since the last checkpoint is found before anything is signed over it.
fn recheck(
    reader: &mut dyn AuditAppender,
    from: (u64, [u8; 32]),
    head: (u64, [u8; 32]),
) -> Result<(), AuditError> {
    let (mut after, mut prev) = from;
    while after < head.0 {
        let page = reader
            .range_hashes(after, head.0, CHECK_PAGE)
            .map_err(AuditError::Store)?;
        if page.is_empty() {
            return Err(AuditError::ChainBroken(after + 1));
        }
        for r in page {
            let expected = after + 1;
            if r.sequence != expected
                || r.prev_hash != Some(prev)
                || r.hash.is_none()
                || r.recomputed != r.hash
            {
                return Err(AuditError::ChainBroken(expected));
            }
            prev = r.hash.unwrap_or(GENESIS);
            after = expected;
        }
    }
    if prev != head.1 {
        return Err(AuditError::ChainBroken(head.0));
    }
    Ok(())
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

    /// P-256's base point: a valid public key, never used to verify.
    fn base_point() -> PublicKey {
        let g = hex::decode(
            "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296\
             4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5",
        )
        .unwrap();
        PublicKey::from_sec1(&g).unwrap()
    }

    /// A SQLite store at `db` and its audit log, signing with `signer` every
    /// `checkpoint_records` records (and not on a timer).
    async fn started(
        db: &std::path::Path,
        signer: Arc<dyn AuditSigner>,
        checkpoint_records: u64,
    ) -> (Arc<dyn Store>, Arc<AuditLog>) {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(db).await.unwrap());
        let settings = AuditSettings {
            node: "n1".into(),
            checkpoint_interval: Duration::from_secs(3600),
            checkpoint_records,
            export_checkpoint_interval: Duration::from_secs(3600),
        };
        let log = AuditLog::start(
            Arc::clone(&store),
            signer,
            settings,
            crate::metrics::AuditMetrics::default(),
        )
        .await
        .unwrap();
        (store, Arc::new(log))
    }

    /// A signer that signs (a fixed, unverifiable signature) only once the test lets it.
    struct GatedSigner {
        key: PublicKey,
        gate: tokio::sync::Semaphore,
        asked: AtomicU64,
    }

    #[async_trait::async_trait]
    impl AuditSigner for GatedSigner {
        fn public_key(&self) -> &PublicKey {
            &self.key
        }
        async fn sign(&self, _: Vec<u8>) -> Result<Vec<u8>, BackendError> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            let permit = self.gate.acquire().await;
            drop(permit);
            Ok(vec![0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01])
        }
        async fn inspect(&self) -> Result<Option<crate::backend::ObjectFacts>, BackendError> {
            Ok(None)
        }
    }

    /// Waits up to 5 s for `done`.
    async fn eventually(what: &str, done: impl Fn() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("not within 5 s: {what}");
    }

    /// A checkpoint is re-checked and signed off the writer's thread: while the device takes
    /// its time over the signature, records are still committed and acknowledged; the signed
    /// checkpoint is stored when it comes, and the next one covers what was written meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_commit_while_a_checkpoint_is_being_signed() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Arc::new(GatedSigner {
            key: base_point(),
            gate: tokio::sync::Semaphore::new(0),
            asked: AtomicU64::new(0),
        });
        let (store, log) = started(&dir.path().join("custodian.db"), signer.clone(), 3).await;
        for i in 1..=3 {
            assert_eq!(log.append(entry(&format!("r{i}"))).await.unwrap(), i);
        }
        eventually("the third record asks for a signature", || {
            signer.asked.load(Ordering::SeqCst) == 1
        })
        .await;
        // The signature is held back: the writer goes on committing.
        for i in 4..=8 {
            let seq =
                tokio::time::timeout(Duration::from_secs(5), log.append(entry(&format!("r{i}"))))
                    .await
                    .expect("a record waited for the checkpoint's signature")
                    .unwrap();
            assert_eq!(seq, i);
        }
        assert_eq!(log.status().checkpoint, 0);
        assert_eq!(signer.asked.load(Ordering::SeqCst), 1);

        signer.gate.add_permits(10);
        eventually("the checkpoint over record 3, then one over 8", || {
            log.status().checkpoint == 8
        })
        .await;
        let stored: Vec<u64> = store
            .audit_checkpoints(0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.sequence)
            .collect();
        assert_eq!(stored, [3, 8]);
        assert_eq!(signer.asked.load(Ordering::SeqCst), 2);
    }

    /// A record edited in the database before the checkpointer re-checks it: nothing is
    /// signed over it, and readiness names the record.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_checkpointer_signs_nothing_over_an_edited_record() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("custodian.db");
        let signer = Arc::new(GatedSigner {
            key: base_point(),
            gate: tokio::sync::Semaphore::new(10),
            asked: AtomicU64::new(0),
        });
        let (store, log) = started(&db, signer.clone(), 3).await;
        for i in 1..=2 {
            log.append(entry(&format!("r{i}"))).await.unwrap();
        }
        let edit = rusqlite::Connection::open(&db).unwrap();
        edit.execute(
            "UPDATE audit_records SET principal = 'mallory' WHERE sequence = 2",
            [],
        )
        .unwrap();
        log.append(entry("r3")).await.unwrap();
        eventually("the re-check finds record 2", || {
            log.status().chain_broken_at == Some(2)
        })
        .await;
        assert_eq!(signer.asked.load(Ordering::SeqCst), 0);
        assert_eq!(log.status().checkpoint, 0);
        assert!(store.audit_checkpoints(0, 100).await.unwrap().is_empty());
        // Records are still written (the chain's break is reported, not hidden).
        assert_eq!(log.append(entry("r4")).await.unwrap(), 4);
    }

    /// A signer that refuses, counting how often it was asked.
    struct RefusingSigner {
        key: PublicKey,
        asked: AtomicU64,
    }

    #[async_trait::async_trait]
    impl AuditSigner for RefusingSigner {
        fn public_key(&self) -> &PublicKey {
            &self.key
        }
        async fn sign(&self, _: Vec<u8>) -> Result<Vec<u8>, BackendError> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            Err(BackendError::Unavailable)
        }
        async fn inspect(&self) -> Result<Option<crate::backend::ObjectFacts>, BackendError> {
            Ok(None)
        }
    }

    /// A checkpoint the device refused is tried again after a pause (with the first batch
    /// after it), not after every batch; the records are written all the same.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_checkpoint_is_tried_again_after_a_pause() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Arc::new(RefusingSigner {
            key: base_point(),
            asked: AtomicU64::new(0),
        });
        let (_store, log) = started(&dir.path().join("custodian.db"), signer.clone(), 1).await;
        log.append(entry("r1")).await.unwrap();
        eventually("the first checkpoint is asked for", || {
            signer.asked.load(Ordering::SeqCst) == 1
        })
        .await;
        let refused = Instant::now();
        for i in 2..=20 {
            log.append(entry(&format!("r{i}"))).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if refused.elapsed() < CHECKPOINT_RETRY {
            assert_eq!(signer.asked.load(Ordering::SeqCst), 1);
        }
        assert_eq!(log.status().checkpoint, 0);
        assert_eq!(log.status().head, 20);
        // The next record after the pause tries again.
        let pause = CHECKPOINT_RETRY + Duration::from_millis(200);
        tokio::time::sleep(pause.saturating_sub(refused.elapsed())).await;
        log.append(entry("r21")).await.unwrap();
        eventually("the checkpoint is tried again after the pause", || {
            signer.asked.load(Ordering::SeqCst) == 2
        })
        .await;
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
        let (store, log) = started(&db, Arc::new(NoSigner(base_point())), u64::MAX).await;
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
