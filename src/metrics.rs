//! Prometheus metrics: one explicit registry per process (no global recorder), rendered in the
//! OpenMetrics text format at `GET /metrics` for principals allowed `metrics:read`.
//!
//! Two kinds of series:
//! - **pushed**: counters and histograms the code updates as things happen (HTTP requests,
//!   device operations, audit commits, store calls), held in [`Metrics`] and handed to each
//!   layer as a clone of the part it records ([`DeviceMetrics`], [`AuditMetrics`],
//!   [`StoreTimer`]);
//! - **read at scrape time**: values that already live somewhere (the session pool, the KEK
//!   cache's counters, the database pool, the audit head, the key inventory, job progress). The
//!   service gathers them into a [`Snapshot`] just before rendering, so nothing keeps a second
//!   copy up to date.
//!
//! Names follow Prometheus conventions: `custodian_` prefix, `_total` on counters, base units
//! (`_seconds`). Labels carry bounded values only: route templates (never raw paths), device
//! kinds, modes, outcomes and error kinds; key names and job ids appear only on the
//! per-job progress gauges of running jobs and on no other series.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

/// The media type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets: 100 µs to about 26 s, doubling.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0001, 2.0, 19)
}

/// Labels of a request through a front door.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route template the router matched, or `(unmatched)`.
    pub route: String,
    /// The HTTP method.
    pub method: String,
    /// `native`, `vault` or `aws`.
    pub door: &'static str,
    /// How it ended, as the audit record says it: `success`, `denied`, `rejected`,
    /// `unauthenticated`, `failed`.
    pub outcome: &'static str,
}

/// Labels of a device operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeviceLabels {
    /// `pkcs11` or `tpm`.
    pub device: &'static str,
    /// `direct` or `cached`.
    pub mode: &'static str,
    /// `seal`, `generate_and_seal`, `open`, `reseal`, `random`, `create_root_key`,
    /// `destroy_root_key`.
    pub op: &'static str,
    /// `ok` or the error's kind (`unavailable`, `busy`, `rejected`, `failed`).
    pub result: &'static str,
}

/// Labels of a store call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    /// `sqlite` or `postgres`.
    pub store: &'static str,
    /// `ok` or `error`.
    pub result: &'static str,
}

/// The device-operation series, for the backend decorator that records them.
#[derive(Clone, Debug)]
pub struct DeviceMetrics {
    operations: Family<DeviceLabels, Counter>,
    duration: Family<DeviceLabels, Histogram>,
}

impl Default for DeviceMetrics {
    /// Series registered nowhere.
    fn default() -> Self {
        Self::new()
    }
}

impl DeviceMetrics {
    fn new() -> Self {
        Self {
            operations: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(latency_buckets())),
        }
    }

    /// Records one operation that took from `started` until now.
    pub fn observe(&self, labels: DeviceLabels, started: Instant) {
        self.duration
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        self.operations.get_or_create(&labels).inc();
    }
}

/// The audit writer's series.
#[derive(Clone, Debug)]
pub struct AuditMetrics {
    commit: Histogram,
    /// A request's wait for its record: the queue, the group commit and both hand-offs.
    wait: Histogram,
    batch: Histogram,
    failures: Counter,
}

impl Default for AuditMetrics {
    /// Series registered nowhere (a log built without a registry).
    fn default() -> Self {
        Self::new()
    }
}

impl AuditMetrics {
    fn new() -> Self {
        Self {
            commit: Histogram::new(latency_buckets()),
            wait: Histogram::new(latency_buckets()),
            // 1 to 1024 records (the writer's largest batch), doubling.
            batch: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            failures: Counter::default(),
        }
    }

    /// Records one group commit of `records` records that took from `started` until now.
    pub fn committed(&self, records: usize, started: Instant) {
        self.commit.observe(started.elapsed().as_secs_f64());
        self.batch.observe(records as f64);
    }

    /// Records one request's wait for its record, from `started` (its hand-off to the writer)
    /// until the writer's answer reached it.
    pub fn waited(&self, started: Instant) {
        self.wait.observe(started.elapsed().as_secs_f64());
    }

    /// Records one group commit that failed.
    pub fn failed(&self) {
        self.failures.inc();
    }
}

/// Times the calls a store makes to its database.
#[derive(Clone, Debug)]
pub struct StoreTimer {
    store: &'static str,
    duration: Family<StoreLabels, Histogram>,
}

impl StoreTimer {
    /// A timer for `store` that records nowhere (until [`Metrics::store_timer`] gives one that
    /// does).
    pub fn unregistered(store: &'static str) -> Self {
        Self {
            store,
            duration: Family::new_with_constructor(|| Histogram::new(latency_buckets())),
        }
    }

    /// Records one call that took from `started` until now.
    pub fn observe<T, E>(&self, started: Instant, result: &Result<T, E>) {
        let labels = StoreLabels {
            store: self.store,
            result: if result.is_ok() { "ok" } else { "error" },
        };
        self.duration
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
    }
}

/// What a value read at scrape time is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only ever goes up (since the process started).
    Counter,
    /// May go up and down.
    Gauge,
}

/// One series family read at scrape time.
#[derive(Clone, Debug)]
pub struct Sampled {
    /// Its name without the `_total` suffix a counter gets.
    pub name: &'static str,
    /// Its help text.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// One value per label set.
    pub series: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl Sampled {
    /// A family with no series yet.
    pub fn new(name: &'static str, help: &'static str, kind: Kind) -> Self {
        Self {
            name,
            help,
            kind,
            series: Vec::new(),
        }
    }

    /// Adds a series.
    #[must_use]
    pub fn with(mut self, labels: &[(&'static str, &str)], value: f64) -> Self {
        self.push(labels, value);
        self
    }

    /// Adds a series.
    pub fn push(&mut self, labels: &[(&'static str, &str)], value: f64) {
        self.series.push((
            labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
            value,
        ));
    }
}

/// The values read at scrape time, in the order they are rendered.
#[derive(Clone, Debug, Default)]
pub struct Snapshot(pub Vec<Sampled>);

fn encode(kind: Kind, series: MetricEncoder<'_>, value: f64) -> Result<(), std::fmt::Error> {
    match kind {
        Kind::Counter => ConstCounter::new(value).encode(series),
        Kind::Gauge => ConstGauge::new(value).encode(series),
    }
}

#[derive(Debug, Default)]
struct SnapshotCollector(Arc<Mutex<Snapshot>>);

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = match self.0.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        };
        for family in &snapshot.0 {
            let metric_type = match family.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
            };
            let mut metric =
                encoder.encode_descriptor(family.name, family.help, None, metric_type)?;
            match family.series.as_slice() {
                // One series without labels: `name value`, not `name{} value`.
                [(labels, value)] if labels.is_empty() => encode(family.kind, metric, *value)?,
                series => {
                    for (labels, value) in series {
                        encode(family.kind, metric.encode_family(labels)?, *value)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<RequestLabels, Histogram>,
    device: DeviceMetrics,
    audit: AuditMetrics,
    store: Family<StoreLabels, Histogram>,
    snapshot: Arc<Mutex<Snapshot>>,
    /// One scrape at a time: a snapshot is installed and rendered as one step.
    render: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every pushed series registered, no snapshot yet.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "custodian_http_requests",
            "Requests answered, by route template, method, front door and audit outcome",
            requests.clone(),
        );
        let request_duration = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        registry.register_with_unit(
            "custodian_http_request_duration",
            "Time from the request's arrival to its answer (its audit record committed)",
            Unit::Seconds,
            request_duration.clone(),
        );
        let device = DeviceMetrics::new();
        registry.register(
            "custodian_device_operations",
            "Key device operations, by device, mode, operation and result",
            device.operations.clone(),
        );
        registry.register_with_unit(
            "custodian_device_operation_duration",
            "Key device operation latency (session wait included)",
            Unit::Seconds,
            device.duration.clone(),
        );
        let audit = AuditMetrics::new();
        registry.register_with_unit(
            "custodian_audit_commit_duration",
            "Audit group commit latency (chain, insert, fsync)",
            Unit::Seconds,
            audit.commit.clone(),
        );
        registry.register_with_unit(
            "custodian_audit_wait_duration",
            "A request's wait for its audit record to be durable: the writer's queue, the group \
             commit and the hand-offs to and from the writer thread",
            Unit::Seconds,
            audit.wait.clone(),
        );
        registry.register(
            "custodian_audit_commit_batch_records",
            "Records per audit group commit",
            audit.batch.clone(),
        );
        registry.register(
            "custodian_audit_commit_failures",
            "Audit group commits that failed (their requests were answered 503)",
            audit.failures.clone(),
        );
        let store = Family::<StoreLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        registry.register_with_unit(
            "custodian_store_operation_duration",
            "Store call latency (connection wait included), by store and result",
            Unit::Seconds,
            store.clone(),
        );
        let snapshot = Arc::new(Mutex::new(Snapshot::default()));
        registry.register_collector(Box::new(SnapshotCollector(Arc::clone(&snapshot))));
        Self {
            registry,
            requests,
            request_duration,
            device,
            audit,
            store,
            snapshot,
            render: tokio::sync::Mutex::new(()),
        }
    }

    /// Records one answered request.
    pub fn request(&self, labels: RequestLabels, started: Instant) {
        self.request_duration
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        self.requests.get_or_create(&labels).inc();
    }

    /// The device-operation series.
    pub fn device(&self) -> DeviceMetrics {
        self.device.clone()
    }

    /// The audit writer's series.
    pub fn audit(&self) -> AuditMetrics {
        self.audit.clone()
    }

    /// A timer recording into this registry's store series as `store`.
    pub fn store_timer(&self, store: &'static str) -> StoreTimer {
        StoreTimer {
            store,
            duration: self.store.clone(),
        }
    }

    /// Renders every series, with `snapshot` as the values read at scrape time.
    pub async fn render(&self, snapshot: Snapshot) -> String {
        let _one = self.render.lock().await;
        match self.snapshot.lock() {
            Ok(mut s) => *s = snapshot,
            Err(p) => *p.into_inner() = snapshot,
        }
        let mut out = String::new();
        // Writing to a `String` cannot fail; were the encoder to report an error anyway, the
        // scrape would get what was written so far and the log would say so.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "metrics encoding failed; the scrape is incomplete");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn renders_pushed_and_sampled_series_with_conventional_names() {
        let m = Metrics::new();
        let started = Instant::now();
        m.request(
            RequestLabels {
                route: "/v1/keys".into(),
                method: "GET".into(),
                door: "native",
                outcome: "success",
            },
            started,
        );
        m.audit().committed(3, started);
        m.store_timer("sqlite").observe(started, &Ok::<(), ()>(()));
        let snapshot = Snapshot(vec![
            Sampled::new("custodian_kek_cache_hits", "hits", Kind::Counter)
                .with(&[("device", "pkcs11")], 7.0),
            Sampled::new("custodian_keys", "keys", Kind::Gauge).with(&[("state", "enabled")], 2.0),
        ]);
        let text = m.render(snapshot).await;
        for needle in [
            "custodian_http_requests_total{route=\"/v1/keys\",method=\"GET\",door=\"native\",outcome=\"success\"} 1",
            "# TYPE custodian_http_request_duration_seconds histogram",
            "custodian_audit_commit_batch_records_count 1",
            "custodian_store_operation_duration_seconds_count{store=\"sqlite\",result=\"ok\"} 1",
            "custodian_kek_cache_hits_total{device=\"pkcs11\"} 7",
            "custodian_keys{state=\"enabled\"} 2",
            "# EOF",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
        // Its negative twin: the next scrape's snapshot replaces the last one's values.
        let text = m.render(Snapshot::default()).await;
        assert!(!text.contains("custodian_kek_cache_hits"), "{text}");
    }
}
