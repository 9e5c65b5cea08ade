//! Bulk re-wrap: moves every stored wrapped data key (secrets' data keys) of a key to its
//! primary version, in bounded batches. Each batch is committed atomically together with the
//! job's progress, and each row is replaced only if it still holds exactly the bytes that were
//! re-wrapped, so the job is idempotent and resumable: after a crash the next run picks up the
//! rows still under older versions, and nothing is lost or written twice. The value ciphertexts
//! never change: only their data keys are re-wrapped, with the same path/version binding.
//!
//! A job's items are split into [`REWRAP_SHARDS`] parts (by the store; decision 0022; one part
//! where the store is not shared, SQLite). A node
//! works on one part at a time, the one whose lease (`rewrap/<job>/<part>`) it holds, so several nodes
//! sharing a database work through one job at once, each on its own rows; a node killed
//! mid-batch loses its lease and another takes the part over from the rows still left.

use std::collections::{BTreeMap, HashSet};

use futures_util::StreamExt as _;

use super::{check_unwrap, noted, seal_result, usable_header, KeyService, ServiceError};
use crate::backend::{BackendError, Reseal, Resealed};
use crate::domain::job::{Job, JobEvent, JobKind, JobState};
use crate::domain::secret::SecretPath;
use crate::domain::{Key, KeyRef, KeyVersion};
use crate::format::secret::data_key_context;
use crate::format::Blob;
use crate::policy::{Action, Principal, Resource};
use crate::store::{RewrapItem, RewrapShard};

/// How many parts a re-wrap job is split into: at most this many nodes work on one job at once.
pub const REWRAP_SHARDS: u32 = 8;

/// Chunks of one re-wrap batch in the device at once (each holds one device session while its
/// items are unwrapped and wrapped again): two keep both cores of a small node busy and leave
/// the other sessions to requests.
const REWRAP_PARALLEL: usize = 2;

/// The most items one device call re-wraps ([`crate::backend::KeyBackend::reseal`]): enough
/// that the hand-off to the device's thread is paid once for many items, few enough that a
/// session is back for requests within a few milliseconds.
const RESEAL_CHUNK: usize = 25;

/// How long a lease must have been expired before a job's end removes it (any expired lease is
/// free to take; the hour only leaves alone those a node is about to renew).
const SWEPT_LEASE_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// The duty lease of part `index` of job `job_id`: per job, so that a node busy with other
/// jobs does not keep renewing a part it settled in this one.
pub fn shard_lease(job_id: &str, index: u32) -> String {
    format!("{}/{job_id}/{index}", crate::rotation::REWRAP_LEASE)
}

/// Where this node stands on one job: the part it works on and its walk over that part.
#[derive(Debug, Default, Clone)]
pub(crate) struct RewrapPass {
    shard: Option<u32>,
    cursor: Option<(SecretPath, u32)>,
    progressed: bool,
    /// Parts walked to their end here with nothing more this node can do.
    settled: HashSet<u32>,
    /// Items that failed on this node: skipped for the rest of the job here.
    failed: HashSet<(SecretPath, u32)>,
}

/// A job with its live progress.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobStatus {
    /// The job.
    #[serde(flatten)]
    pub job: Job,
    /// Stored data keys per version of the job's key right now (`remaining` = all but the
    /// target's).
    pub versions: Vec<VersionCount>,
    /// Stored data keys not yet under the target version.
    pub remaining: u64,
    /// Re-wrapped items per second since the job started.
    pub rate_per_second: f64,
}

/// Stored data keys under one version.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VersionCount {
    /// The version.
    pub version: KeyVersion,
    /// How many stored data keys it wraps.
    pub stored_data_keys: u64,
}

/// Whether a job has more to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Call again.
    More,
    /// This node can do nothing more in this part: take another.
    Settled,
    /// Finished (completed or failed).
    Finished,
}

impl KeyService {
    /// Starts (or returns the running) re-wrap job of the key `r`.
    ///
    /// # Errors
    /// `Forbidden`, `KeyNotFound`, key state errors, `Store`.
    pub async fn start_rewrap(&self, p: &Principal, r: &KeyRef) -> Result<JobStatus, ServiceError> {
        // One decision, before anything is started: the job's status is part of what
        // `key:rotate` on this key returns, not a second read to authorise afterwards.
        let key = self.resolve(p, Action::KeyRotate, r).await?;
        let job = self.start_rewrap_job(&key).await?;
        self.status(job).await
    }

    /// Starts a re-wrap job to `key`'s primary version, unless one is already running to it.
    pub(crate) async fn start_rewrap_job(&self, key: &Key) -> Result<Job, ServiceError> {
        usable_header(key)?;
        for job in self.store.list_jobs(Some(JobState::Running), 1000).await? {
            if job.key_id == key.id && job.target_version == key.primary_version {
                return Ok(job);
            }
        }
        let now = crate::clock::now();
        let job = Job {
            id: uuid::Uuid::new_v4().to_string(),
            kind: JobKind::Rewrap,
            key_id: key.id,
            target_version: key.primary_version,
            state: JobState::Running,
            done: 0,
            failed_items: 0,
            last_error: None,
            created_at: now,
            updated_at: now,
            finished_at: None,
        };
        crate::audit::note::detail("job_id", job.id.clone());
        self.changing().await?;
        self.store.create_job(&job).await?;
        self.rewrap_started.notify_one();
        tracing::info!(job_id = %job.id, key_id = %key.id, target_version = key.primary_version.get(), "re-wrap job started");
        Ok(job)
    }

    /// The job `id` with its progress.
    ///
    /// # Errors
    /// `JobNotFound`, `Forbidden`, `Store`.
    pub async fn job(&self, p: &Principal, id: &str) -> Result<JobStatus, ServiceError> {
        let job = self.readable_job(p, id).await?;
        self.status(job).await
    }

    /// The trail of job `id`: its start, every committed batch and its end.
    ///
    /// # Errors
    /// `JobNotFound`, `Forbidden`, `Store`.
    pub async fn job_events(&self, p: &Principal, id: &str) -> Result<Vec<JobEvent>, ServiceError> {
        self.readable_job(p, id).await?;
        Ok(self.store.job_events(id).await?)
    }

    /// The job `id`, if `p` may read its key. An unknown id is reported as not found only to a
    /// principal that may read every key: to anyone else it is forbidden, like a job of a key
    /// it may not read.
    async fn readable_job(&self, p: &Principal, id: &str) -> Result<Job, ServiceError> {
        match self.store.job(id).await? {
            Some(job) => {
                self.authorize(p, Action::KeyRead, &self.job_resource(&job).await?, None)
                    .await?;
                Ok(job)
            }
            None => {
                self.authorize(p, Action::KeyRead, &Resource::all_keys(), None)
                    .await?;
                Err(ServiceError::JobNotFound(id.to_owned()))
            }
        }
    }

    /// The key a job works on, as policy sees it (by id and, while it exists, by name).
    async fn job_resource(&self, job: &Job) -> Result<Resource, ServiceError> {
        Ok(match self.lookup_key(&KeyRef::Id(job.key_id)).await? {
            Some(key) => Resource::key(&key.id, key.name.as_str()),
            None => Resource::named("key", job.key_id.to_string()),
        })
    }

    /// Jobs, newest first.
    ///
    /// # Errors
    /// `Forbidden`, `Store`.
    pub async fn jobs(
        &self,
        p: &Principal,
        state: Option<JobState>,
        limit: u32,
    ) -> Result<Vec<JobStatus>, ServiceError> {
        let filter = self.item_filter(p, Action::KeyRead, "key").await?;
        let mut out = Vec::new();
        // Jobs are listed newest first without a cursor: the newest `MAX_LIST_SCAN` are
        // examined and the first `limit` the principal may read are shown.
        let scan = u32::try_from(super::MAX_LIST_SCAN).unwrap_or(u32::MAX);
        for job in self.store.list_jobs(state, scan).await? {
            if out.len() >= limit as usize {
                break;
            }
            if !filter.allows(&self.job_resource(&job).await?) {
                continue;
            }
            out.push(self.status(job).await?);
        }
        Ok(out)
    }

    pub(super) async fn status(&self, job: Job) -> Result<JobStatus, ServiceError> {
        let counts = self.store.references(job.key_id).await?;
        let remaining = counts
            .iter()
            .filter(|(v, _)| *v != job.target_version)
            .map(|(_, c)| c)
            .sum();
        let end = job.finished_at.unwrap_or_else(crate::clock::now);
        let secs = (end - job.created_at).as_seconds_f64().max(0.001);
        Ok(JobStatus {
            rate_per_second: job.done as f64 / secs,
            remaining,
            versions: counts
                .into_iter()
                .map(|(version, stored_data_keys)| VersionCount {
                    version,
                    stored_data_keys,
                })
                .collect(),
            job,
        })
    }

    /// Waits up to `idle` for this node to start a re-wrap job (jobs started on other nodes
    /// are found when it runs out).
    pub async fn wait_for_rewrap_job(&self, idle: std::time::Duration) {
        let _ = tokio::time::timeout(idle, self.rewrap_started.notified()).await;
    }

    /// Running jobs, for the worker.
    ///
    /// # Errors
    /// `Store`.
    pub async fn running_jobs(&self) -> Result<Vec<Job>, ServiceError> {
        Ok(self.store.list_jobs(Some(JobState::Running), 100).await?)
    }

    /// The part of `job` this node works on next: the one it holds, else the first free part
    /// it has not settled (starting at a place of its own, so nodes spread over the parts).
    /// `None` when every part is settled here or held by other nodes.
    pub async fn claim_rewrap_shard(
        &self,
        job: &Job,
        ttl: std::time::Duration,
    ) -> Option<RewrapShard> {
        let pass = self.pass_state(&job.id);
        let parts = self.rewrap_parts();
        let part = |index| RewrapShard { index, of: parts };
        if let Some(k) = pass.shard.filter(|k| !pass.settled.contains(k)) {
            if self.holds_lease(&shard_lease(&job.id, k), ttl).await {
                return Some(part(k));
            }
        }
        let start = self
            .instance
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
        for i in 0..parts {
            let k = start.wrapping_add(i) % parts;
            if Some(k) == pass.shard || pass.settled.contains(&k) {
                continue;
            }
            if self.holds_lease(&shard_lease(&job.id, k), ttl).await {
                if let Ok(mut passes) = self.rewrap_passes.lock() {
                    let pass = passes.entry(job.id.clone()).or_default();
                    pass.shard = Some(k);
                    pass.cursor = None;
                    pass.progressed = false;
                }
                return Some(part(k));
            }
        }
        None
    }

    /// How many parts a job is split into: [`REWRAP_SHARDS`], or one where the store does not
    /// split jobs (SQLite, one node).
    fn rewrap_parts(&self) -> u32 {
        if self.store.splits_rewrap_jobs() {
            REWRAP_SHARDS
        } else {
            1
        }
    }

    /// Marks a part of `job` as settled here.
    pub fn settle_rewrap_shard(&self, job_id: &str, shard: RewrapShard) {
        if let Ok(mut passes) = self.rewrap_passes.lock() {
            let pass = passes.entry(job_id.to_owned()).or_default();
            pass.settled.insert(shard.index);
            pass.shard = None;
            pass.cursor = None;
            pass.progressed = false;
        }
    }

    /// Called when this node finds no part of `job` to take: ends the job `completed` when
    /// nothing is left under older versions (whichever nodes moved it); once every part is
    /// settled here, `failed` when all that is left failed on this node. Otherwise other nodes
    /// are still at work (or know failures this node has not met): with every part settled
    /// here, the parts are opened again, to be taken up when their leases fall free.
    ///
    /// # Errors
    /// `Store`.
    pub async fn finish_rewrap_job(&self, job: &Job) -> Result<Progress, ServiceError> {
        let key = self.fresh_key(job.key_id).await?;
        if key.primary_version != job.target_version {
            let note = format!("superseded: key rotated to version {}", key.primary_version);
            return self.end_job(job, JobState::Completed, Some(note)).await;
        }
        let pass = self.pass_state(&job.id);
        let settled_here = pass.settled.len() as u32 >= self.rewrap_parts();
        let page = self.keys_config.rewrap_batch_size.max(1);
        let mut after = None;
        let mut left = 0usize;
        loop {
            let items = self
                .store
                .rewrap_candidates(
                    key.id,
                    job.target_version,
                    RewrapShard::ALL,
                    after.as_ref(),
                    page,
                )
                .await?;
            // Left: an item not seen failing here, or any item while a part is unsettled here.
            let unknown = items
                .iter()
                .any(|i| !pass.failed.contains(&(i.path.clone(), i.version)));
            if unknown || (!settled_here && !items.is_empty()) {
                if settled_here {
                    if let Ok(mut passes) = self.rewrap_passes.lock() {
                        if let Some(pass) = passes.get_mut(&job.id) {
                            pass.settled.clear();
                        }
                    }
                }
                return Ok(Progress::More);
            }
            left += items.len();
            match items.last() {
                Some(last) if items.len() == page as usize => {
                    after = Some((last.path.clone(), last.version));
                }
                _ => break,
            }
        }
        // Access keys sealed under the key's older versions are stored data keys too: moved at
        // the end (they are few), so the old versions can be retired and destroyed after.
        crate::audit::note::detail("job_id", job.id.clone());
        let (moved, unmoved) = self.move_access_keys(&key).await?;
        if !moved.is_empty() {
            crate::audit::note::detail("access_keys_moved", moved.join(","));
        }
        let left = left + unmoved as usize;
        if left == 0 {
            return self.end_job(job, JobState::Completed, None).await;
        }
        let note = format!("{left} stored data keys could not be re-wrapped; see the job's trail and the server log");
        self.end_job(job, JobState::Failed, Some(note)).await
    }

    /// Re-wraps one batch of part `shard` of `job`, continuing after the last batch of the
    /// current pass over that part.
    ///
    /// A pass walks the part's candidates in (path, version) order. Items that fail (a tampered
    /// or unreadable row) are remembered and skipped for the rest of the job on this node, so
    /// they cannot block the rows behind them. A pass that moved something is followed by
    /// another; one that moved nothing settles the part here ([`Progress::Settled`]), and once
    /// every part is settled [`KeyService::finish_rewrap_job`] ends the job. After a restart the
    /// walk starts over, which is safe: rows already moved are no longer candidates.
    ///
    /// # Errors
    /// `Backend` (device down: the batch is retried later) and `Store`.
    pub async fn rewrap_batch(
        &self,
        job: &Job,
        shard: RewrapShard,
    ) -> Result<Progress, ServiceError> {
        let key = self.fresh_key(job.key_id).await?;
        let now = crate::clock::now();
        if key.primary_version != job.target_version {
            let note = format!("superseded: key rotated to version {}", key.primary_version);
            return self.end_job(job, JobState::Completed, Some(note)).await;
        }
        let header = match usable_header(&key) {
            Ok(h) => h,
            Err(e) => {
                return self
                    .end_job(job, JobState::Failed, Some(e.to_string()))
                    .await
            }
        };
        let RewrapPass {
            cursor,
            progressed,
            failed: skip,
            ..
        } = self.pass_state(&job.id);
        let items = self
            .store
            .rewrap_candidates(
                key.id,
                job.target_version,
                shard,
                cursor.as_ref(),
                self.keys_config.rewrap_batch_size,
            )
            .await?;
        if items.is_empty() {
            // The end of a pass over the part: another if this one moved something.
            if cursor.is_some() && progressed {
                self.restart_pass(&job.id);
                return Ok(Progress::More);
            }
            return Ok(Progress::Settled);
        }
        let last = items.last().map(|i| (i.path.clone(), i.version));
        let mut moved: Vec<(RewrapItem, Vec<u8>)> = Vec::with_capacity(items.len());
        let mut newly_failed = Vec::new();
        let mut last_error = None;
        let mut device_down = None;
        let wanted: Vec<RewrapItem> = items
            .into_iter()
            .filter(|i| !skip.contains(&(i.path.clone(), i.version)))
            .collect();
        let results = self.reseal_items(&key, header, wanted).await?;
        for (item, result) in results {
            match result {
                Ok(blob) => moved.push((item, blob)),
                Err(ServiceError::Backend(
                    e @ (BackendError::Unavailable | BackendError::Busy),
                )) => {
                    device_down = Some(e);
                    break;
                }
                Err(e) => {
                    tracing::error!(job_id = %job.id, path = %item.path, version = item.version, error = %e, "stored data key could not be re-wrapped");
                    last_error = Some(format!("{} v{}: {e}", item.path, item.version));
                    newly_failed.push((item.path.clone(), item.version));
                }
            }
        }
        let advanced = device_down.is_none();
        if let Some(e) = device_down {
            if moved.is_empty() {
                return Err(ServiceError::Backend(e));
            }
        }
        let failed = newly_failed.len() as u64;
        if moved.is_empty() && failed == 0 {
            // Only known failures in this stretch: move the cursor past them, write nothing.
            self.record_pass(&job.id, last, Vec::new(), false);
            return Ok(Progress::More);
        }
        let batch = crate::store::RewrapBatch {
            job_id: job.id.clone(),
            key_id: key.id,
            target: job.target_version,
            items: moved,
            failed,
            last_error,
            now,
        };
        let progressed = !batch.items.is_empty();
        crate::audit::note::detail("job_id", job.id.clone());
        crate::audit::note::detail("items_rewrapped", batch.items.len().to_string());
        crate::audit::note::detail("items_failed", failed.to_string());
        crate::audit::note::detail("target_version", job.target_version.get().to_string());
        crate::audit::note::detail("shard", format!("{}/{}", shard.index, shard.of));
        match self.changing_with_rewrap(batch).await? {
            Ok(_) => {}
            // The key rotated, was disabled or its primary changed meanwhile: nothing was
            // written; the next call sees the new state.
            Err(crate::store::StoreError::Stale { .. }) => return Ok(Progress::More),
            Err(e) => return Err(e.into()),
        }
        self.record_pass(
            &job.id,
            if advanced { last } else { None },
            newly_failed,
            progressed,
        );
        Ok(Progress::More)
    }

    async fn end_job(
        &self,
        job: &Job,
        state: JobState,
        note: Option<String>,
    ) -> Result<Progress, ServiceError> {
        crate::audit::note::detail("job_id", job.id.clone());
        crate::audit::note::detail("job_state", state.as_str());
        self.changing().await?;
        self.store
            .finish_job(&job.id, state, note, crate::clock::now())
            .await?;
        if let Ok(mut passes) = self.rewrap_passes.lock() {
            passes.remove(&job.id);
        }
        // Each job leaves a lease row per part; those of jobs ended long ago go here. Housekeeping
        // only (an expired lease is free either way), so a failure does not undo the job's end.
        match self.store.remove_expired_leases(SWEPT_LEASE_AGE).await {
            Ok(0) => {}
            Ok(n) => crate::audit::note::detail("leases_removed", n.to_string()),
            Err(e) => tracing::warn!(error = %e, "expired leases were not removed"),
        }
        tracing::info!(job_id = %job.id, state = state.as_str(), "re-wrap job ended");
        Ok(Progress::Finished)
    }

    /// The current pass of a job on this node (cursor and the items known to fail).
    fn pass_state(&self, job_id: &str) -> RewrapPass {
        self.rewrap_passes
            .lock()
            .ok()
            .and_then(|p| p.get(job_id).cloned())
            .unwrap_or_default()
    }

    /// Records a committed batch: the cursor moves past it (when the whole batch was looked at),
    /// failures are remembered, progress is noted.
    fn record_pass(
        &self,
        job_id: &str,
        cursor: Option<(SecretPath, u32)>,
        failed: Vec<(SecretPath, u32)>,
        progressed: bool,
    ) {
        if let Ok(mut passes) = self.rewrap_passes.lock() {
            let pass = passes.entry(job_id.to_owned()).or_default();
            if cursor.is_some() {
                pass.cursor = cursor;
            }
            pass.failed.extend(failed);
            pass.progressed |= progressed;
        }
    }

    /// Starts a new pass over the current part from its beginning.
    fn restart_pass(&self, job_id: &str) {
        if let Ok(mut passes) = self.rewrap_passes.lock() {
            let pass = passes.entry(job_id.to_owned()).or_default();
            pass.cursor = None;
            pass.progressed = false;
        }
    }

    /// Moves each item's data key to the primary version, keeping its path/version binding:
    /// the items are checked one by one, then handed to the device in chunks of at most
    /// [`RESEAL_CHUNK`] per old version ([`crate::backend::KeyBackend::reseal`]), up to
    /// [`REWRAP_PARALLEL`] chunks at once. Answers the new wrapped data key, or why not, per
    /// item, in item order.
    ///
    /// # Errors
    /// `Store` when the store cannot say which node's TPM holds the key (the batch is retried).
    async fn reseal_items(
        &self,
        key: &Key,
        header: crate::format::blob::Header,
        items: Vec<RewrapItem>,
    ) -> Result<Vec<(RewrapItem, Result<Vec<u8>, ServiceError>)>, ServiceError> {
        let backend = match self.serving_backend(key).await {
            Ok(b) => b,
            // Not this node's device (a TPM key of another node, or no TPM here): every item
            // fails with the reason, as each would on its own.
            Err(ServiceError::KeyOnOtherNode { node }) => {
                let reason = || ServiceError::KeyOnOtherNode { node: node.clone() };
                return Ok(items.into_iter().map(|i| (i, Err(reason()))).collect());
            }
            Err(ServiceError::Backend(e)) => {
                let reason = || ServiceError::Backend(e.duplicate());
                return Ok(items.into_iter().map(|i| (i, Err(reason()))).collect());
            }
            // The store could not say which node holds the key: the batch is retried later,
            // no item is counted as failed for it.
            Err(other) => return Err(other),
        };
        let mut results: Vec<Option<Result<Vec<u8>, ServiceError>>> = Vec::new();
        let mut by_version: BTreeMap<KeyVersion, Vec<(usize, Reseal)>> = BTreeMap::new();
        for (i, item) in items.iter().enumerate() {
            match self.prepare_reseal(key, header, item).await {
                Ok((version, reseal)) => {
                    by_version.entry(version).or_default().push((i, reseal));
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let chunks: Vec<(KeyVersion, Vec<(usize, Reseal)>)> = by_version
            .into_iter()
            .flat_map(|(version, mut all)| {
                let mut chunks = Vec::new();
                while !all.is_empty() {
                    let rest = all.split_off(all.len().min(RESEAL_CHUNK));
                    chunks.push((version, std::mem::replace(&mut all, rest)));
                }
                chunks
            })
            .collect();
        let integrity = |item: &RewrapItem| ServiceError::SecretIntegrity {
            path: item.path.to_string(),
            version: item.version,
        };
        let done: Vec<(Vec<usize>, Resealed)> = futures_util::stream::iter(chunks)
            .map(|(version, chunk)| async move {
                let (places, chunk): (Vec<usize>, Vec<Reseal>) = chunk.into_iter().unzip();
                let (from, to) = (key.root(version), key.primary_root());
                let resealed = backend.reseal(noted(&from), noted(&to), chunk).await;
                (places, resealed)
            })
            .buffer_unordered(REWRAP_PARALLEL)
            .collect()
            .await;
        for (places, resealed) in done {
            match resealed {
                Ok(verdicts) => {
                    for (i, verdict) in places.into_iter().zip(verdicts) {
                        results[i] = Some(match verdict {
                            Ok(sealed) => Ok(seal_result(header, sealed).ciphertext),
                            Err(BackendError::AuthenticationFailed) => Err(integrity(&items[i])),
                            Err(e) => Err(ServiceError::Backend(e)),
                        });
                    }
                }
                Err(e) => {
                    for i in places {
                        results[i] = Some(Err(ServiceError::Backend(e.duplicate())));
                    }
                }
            }
        }
        Ok(items
            .into_iter()
            .zip(results)
            .map(|(item, result)| {
                let result = result.unwrap_or(Err(ServiceError::Backend(BackendError::Invariant(
                    "a re-wrap item got no verdict",
                ))));
                (item, result)
            })
            .collect())
    }

    /// Checks one stored data key (its blob names this key and the version the store says,
    /// that version may unwrap, its algorithm is that version's) and charges the wrap it will
    /// cost to the primary version's budget; answers its version and what the device needs.
    async fn prepare_reseal(
        &self,
        key: &Key,
        header: crate::format::blob::Header,
        item: &RewrapItem,
    ) -> Result<(KeyVersion, Reseal), ServiceError> {
        let integrity = || ServiceError::SecretIntegrity {
            path: item.path.to_string(),
            version: item.version,
        };
        let blob = Blob::parse(&item.wrapped_dek).map_err(|_| integrity())?;
        if blob.key_id != key.id || blob.key_version != item.key_version {
            return Err(integrity());
        }
        check_unwrap(key, blob.key_version)?;
        if key.version(blob.key_version).map(|v| v.algorithm) != Some(blob.algorithm) {
            return Err(integrity());
        }
        let context = data_key_context(&item.path, item.version).map_err(|_| integrity())?;
        self.charge_wrap(key).await?;
        let reseal = Reseal {
            iv: blob.iv,
            open_aad: blob.header().aad(&context),
            seal_aad: header.aad(&context),
            ciphertext: blob.ciphertext,
        };
        Ok((blob.key_version, reseal))
    }
}
