//! `GET /metrics`: authorised `metrics:read` on `metrics/node`, then the values read at scrape
//! time (readiness, device sessions and KEK caches, the database pool, the audit head, the key
//! inventory and the re-wrap jobs) gathered into a [`Snapshot`] and rendered with the pushed
//! series.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use super::{KeyService, ServiceError};
use crate::config::MAX_WRAPS_PER_VERSION;
use crate::domain::job::JobState;
use crate::domain::{Key, KeyName, KeyState, VersionState};
use crate::metrics::{Kind, Sampled, Snapshot};
use crate::policy::{Action, Principal, Resource};

/// Keys read per page for the inventory gauges.
const KEY_PAGE: u32 = 1000;
/// Most keys the inventory gauges examine in one scrape (bounded work per scrape).
pub const MAX_INVENTORY_KEYS: usize = 100_000;
/// Most jobs examined per scrape (newest first).
const MAX_JOBS: u32 = 1000;
/// A version whose wraps reached this share of [`MAX_WRAPS_PER_VERSION`] is "near its budget".
pub const NEAR_WRAP_BUDGET: f64 = 0.9;

/// This node's metrics as a policy resource.
fn metrics_resource() -> Resource {
    Resource::named("metrics", "node")
}

fn bit(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

impl KeyService {
    /// The metrics in the OpenMetrics text format.
    ///
    /// # Errors
    /// `Forbidden`; `Store` when the inventory cannot be read.
    pub async fn metrics_text(&self, p: &Principal) -> Result<String, ServiceError> {
        self.authorize(p, Action::MetricsRead, &metrics_resource(), None)
            .await?;
        let snapshot = self.metrics_snapshot().await?;
        Ok(self.metrics.render(snapshot).await)
    }

    async fn metrics_snapshot(&self) -> Result<Snapshot, ServiceError> {
        let mut out = Vec::new();
        self.sample_readiness(&mut out).await;
        self.sample_devices(&mut out).await;
        self.sample_store(&mut out);
        self.sample_keys(&mut out).await?;
        self.sample_jobs(&mut out).await?;
        Ok(Snapshot(out))
    }

    async fn sample_readiness(&self, out: &mut Vec<Sampled>) {
        let r = self.readiness().await;
        let mut up = Sampled::new(
            "custodian_device_up",
            "1 when a session on the device works now (readiness), else 0",
            Kind::Gauge,
        )
        .with(&[("device", "pkcs11")], bit(r.device.usable));
        let mut reinit = Sampled::new(
            "custodian_device_reinitialisations",
            "Times the device's module was re-initialised after a fatal error",
            Kind::Counter,
        )
        .with(&[("device", "pkcs11")], r.device.reinitialisations as f64);
        if let Some(t) = &r.tpm {
            up.push(&[("device", "tpm")], bit(t.usable));
            reinit.push(&[("device", "tpm")], t.reinitialisations as f64);
        }
        out.push(up);
        out.push(reinit);
        out.push(
            Sampled::new(
                "custodian_key_blobs_rejected",
                "Key versions whose stored device material the device refused",
                Kind::Gauge,
            )
            .with(&[], r.rejected_key_blobs.len() as f64),
        );
        out.push(
            Sampled::new(
                "custodian_store_writable",
                "1 when the database accepted a write just now (readiness), else 0",
                Kind::Gauge,
            )
            .with(&[], bit(r.store_writable)),
        );
        // Read live, not from the coalesced readiness probe: the head moves with every record.
        let a = &self.audit.status();
        out.push(
            Sampled::new(
                "custodian_audit_writable",
                "1 while audit records can be written, 0 after a failed write until one succeeds",
                Kind::Gauge,
            )
            .with(&[], bit(a.writable)),
        );
        out.push(
            Sampled::new(
                "custodian_audit_chain_intact",
                "1 while the stored audit chain verifies, 0 once a broken record was found",
                Kind::Gauge,
            )
            .with(&[], bit(a.chain_broken_at.is_none())),
        );
        out.push(
            Sampled::new(
                "custodian_audit_chain_head",
                "Sequence of the last committed audit record",
                Kind::Gauge,
            )
            .with(&[], a.head as f64),
        );
        out.push(
            Sampled::new(
                "custodian_audit_checkpoint",
                "Sequence of the last signed audit checkpoint",
                Kind::Gauge,
            )
            .with(&[], a.checkpoint as f64),
        );
    }

    async fn sample_devices(&self, out: &mut Vec<Sampled>) {
        let mut capacity = Sampled::new(
            "custodian_device_sessions",
            "Sessions in the device's pool",
            Kind::Gauge,
        );
        let mut in_use = Sampled::new(
            "custodian_device_sessions_in_use",
            "Sessions checked out now",
            Kind::Gauge,
        );
        let mut waits = Sampled::new(
            "custodian_device_session_waits",
            "Operations that found every session busy and waited",
            Kind::Counter,
        );
        let mut wait_seconds = Sampled::new(
            "custodian_device_session_wait_seconds",
            "Seconds operations spent waiting for a session",
            Kind::Counter,
        );
        let mut timeouts = Sampled::new(
            "custodian_device_session_wait_timeouts",
            "Session waits that ran out (answered device_busy)",
            Kind::Counter,
        );
        let kek = |name, help, kind| Sampled::new(name, help, kind);
        let mut hits = kek(
            "custodian_kek_cache_hits",
            "Version-KEK requests served from memory",
            Kind::Counter,
        );
        let mut misses = kek(
            "custodian_kek_cache_misses",
            "Version-KEK requests that found no fresh entry",
            Kind::Counter,
        );
        let mut unwraps = kek(
            "custodian_kek_cache_unwraps",
            "Version-KEK unwraps by the device",
            Kind::Counter,
        );
        let mut expiries = kek(
            "custodian_kek_cache_expiries",
            "Version-KEKs dropped from memory at their TTL",
            Kind::Counter,
        );
        let mut evictions = kek(
            "custodian_kek_cache_evictions",
            "Version-KEKs dropped to stay within capacity",
            Kind::Counter,
        );
        let mut entries = kek(
            "custodian_kek_cache_entries",
            "Version-KEKs in memory now",
            Kind::Gauge,
        );
        for b in self.backends.all() {
            let device = b.kind().as_str();
            let labels = [("device", device)];
            let usage = b.usage().await;
            if let Some(s) = usage.sessions {
                capacity.push(&labels, s.capacity as f64);
                in_use.push(&labels, s.in_use as f64);
                waits.push(&labels, s.waits as f64);
                wait_seconds.push(&labels, s.wait_seconds);
                timeouts.push(&labels, s.timeouts as f64);
            }
            if let Some(k) = usage.kek_cache {
                hits.push(&labels, k.counters.hits as f64);
                misses.push(&labels, k.counters.misses as f64);
                unwraps.push(&labels, k.counters.unwraps as f64);
                expiries.push(&labels, k.counters.expirations as f64);
                evictions.push(&labels, k.counters.evictions as f64);
                entries.push(&labels, k.entries as f64);
            }
        }
        out.extend([
            capacity,
            in_use,
            waits,
            wait_seconds,
            timeouts,
            hits,
            misses,
            unwraps,
            expiries,
            evictions,
            entries,
        ]);
    }

    fn sample_store(&self, out: &mut Vec<Sampled>) {
        let pool = self.store.pool_usage();
        for (name, help, value) in [
            (
                "custodian_store_pool_max",
                "The most database connections the pool opens",
                pool.max,
            ),
            (
                "custodian_store_pool_open",
                "Database connections open now",
                pool.open,
            ),
            (
                "custodian_store_pool_in_use",
                "Database connections checked out now",
                pool.in_use,
            ),
            (
                "custodian_store_pool_waiting",
                "Callers waiting for a database connection now",
                pool.waiting,
            ),
        ] {
            out.push(Sampled::new(name, help, Kind::Gauge).with(&[], value as f64));
        }
    }

    /// Every key (up to [`MAX_INVENTORY_KEYS`]), page by page.
    async fn inventory(&self) -> Result<Vec<Key>, ServiceError> {
        let mut keys: Vec<Key> = Vec::new();
        let mut after: Option<KeyName> = None;
        loop {
            let page = self.store.list_keys(after.as_ref(), KEY_PAGE).await?;
            let full = page.len() == KEY_PAGE as usize;
            after = page.last().map(|k| k.name.clone());
            keys.extend(page);
            if !full || keys.len() >= MAX_INVENTORY_KEYS {
                return Ok(keys);
            }
        }
    }

    async fn sample_keys(&self, out: &mut Vec<Sampled>) -> Result<(), ServiceError> {
        let keys = self.inventory().await?;
        let now = crate::clock::now();
        let mut by_state: BTreeMap<(&str, &str, &str), u64> = BTreeMap::new();
        let mut versions: BTreeMap<&str, u64> = BTreeMap::new();
        let (mut near_budget, mut max_ratio, mut overdue) = (0u64, 0f64, 0u64);
        for k in &keys {
            *by_state
                .entry((k.state.as_str(), k.backend.as_str(), k.mode.as_str()))
                .or_default() += 1;
            for v in &k.versions {
                *versions.entry(v.state.as_str()).or_default() += 1;
                if v.state == VersionState::Destroyed {
                    continue;
                }
                let ratio = v.wraps_reserved as f64 / MAX_WRAPS_PER_VERSION as f64;
                max_ratio = max_ratio.max(ratio);
                if ratio >= NEAR_WRAP_BUDGET {
                    near_budget += 1;
                }
            }
            if k.state == KeyState::Enabled && k.next_rotation_at.is_some_and(|at| at < now) {
                overdue += 1;
            }
        }
        let mut keys_family = Sampled::new(
            "custodian_keys",
            "Keys by state, device and mode",
            Kind::Gauge,
        );
        for ((state, device, mode), n) in by_state {
            keys_family.push(
                &[("state", state), ("device", device), ("mode", mode)],
                n as f64,
            );
        }
        let mut versions_family = Sampled::new(
            "custodian_key_versions",
            "Key versions by state",
            Kind::Gauge,
        );
        for (state, n) in versions {
            versions_family.push(&[("state", state)], n as f64);
        }
        out.push(keys_family);
        out.push(versions_family);
        out.push(
            Sampled::new(
                "custodian_key_versions_near_wrap_budget",
                "Undestroyed key versions whose reserved wraps reached 90 % of the 2^32 budget",
                Kind::Gauge,
            )
            .with(&[], near_budget as f64),
        );
        out.push(
            Sampled::new(
                "custodian_key_wrap_budget_used_ratio_max",
                "The largest share of its 2^32 wrap budget any undestroyed key version reserved",
                Kind::Gauge,
            )
            .with(&[], max_ratio),
        );
        out.push(
            Sampled::new(
                "custodian_keys_rotation_overdue",
                "Enabled keys whose scheduled rotation time has passed without a rotation",
                Kind::Gauge,
            )
            .with(&[], overdue as f64),
        );
        Ok(())
    }

    async fn sample_jobs(&self, out: &mut Vec<Sampled>) -> Result<(), ServiceError> {
        let jobs = self.store.list_jobs(None, MAX_JOBS).await?;
        let mut by_state: BTreeMap<&str, u64> = [
            (JobState::Running.as_str(), 0),
            (JobState::Completed.as_str(), 0),
            (JobState::Failed.as_str(), 0),
        ]
        .into();
        let mut last_failure: Option<OffsetDateTime> = None;
        let mut items = Sampled::new(
            "custodian_rewrap_job_items",
            "Progress of each running re-wrap job: stored data keys done, failed attempts, left",
            Kind::Gauge,
        );
        for job in jobs {
            *by_state.entry(job.state.as_str()).or_default() += 1;
            match job.state {
                JobState::Failed => {
                    let at = job.finished_at.unwrap_or(job.updated_at);
                    last_failure = Some(last_failure.map_or(at, |l| l.max(at)));
                }
                JobState::Completed => {}
                JobState::Running => {
                    let key = job.key_id.to_string();
                    let id = job.id.clone();
                    let status = self.status(job).await?;
                    let labels = |state| {
                        [
                            ("job", id.as_str()),
                            ("key_id", key.as_str()),
                            ("state", state),
                        ]
                    };
                    items.push(&labels("done"), status.job.done as f64);
                    items.push(&labels("failed"), status.job.failed_items as f64);
                    items.push(&labels("left"), status.remaining as f64);
                }
            }
        }
        let mut jobs_family = Sampled::new(
            "custodian_rewrap_jobs",
            "Re-wrap jobs by state (the newest 1000)",
            Kind::Gauge,
        );
        for (state, n) in by_state {
            jobs_family.push(&[("state", state)], n as f64);
        }
        out.push(jobs_family);
        out.push(items);
        // Declared always, with a sample once a job has failed.
        let mut failure = Sampled::new(
            "custodian_rewrap_job_last_failure_timestamp_seconds",
            "When the most recent re-wrap job failed (Unix time)",
            Kind::Gauge,
        );
        if let Some(at) = last_failure {
            failure.push(&[], at.unix_timestamp() as f64);
        }
        out.push(failure);
        Ok(())
    }
}
