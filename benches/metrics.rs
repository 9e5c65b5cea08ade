//! What the metrics cost a request (issue 18): recording one request's series (its HTTP counter
//! and histogram, one device operation, two store calls, its share of an audit commit) on one
//! thread and on two at once, and rendering a scrape, each printed next to a baseline measured
//! in the same run: the SHA-256 of one audit record (what every request already pays to chain
//! its record) and the clock reads the timing itself needs.
//!
//! Run with `cargo bench --bench metrics` (docs/performance.md has a run's figures).

use std::hint::black_box;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use custodian::metrics::{DeviceLabels, Kind, Metrics, RequestLabels, Sampled, Snapshot};

/// Iterations of each timed loop.
const ITERATIONS: u32 = 1_000_000;
/// Routes the registry is filled with before timing (a realistic label set).
const ROUTES: &[&str] = &[
    "/v1/keys/{key}/datakey",
    "/v1/keys/{key}/encrypt",
    "/v1/decrypt",
    "/v1/reencrypt",
    "/v1/secrets/{*path}",
    "/v1/keys",
    "/v1/keys/{key}",
    "/v1/audit/events",
    "/metrics",
    "/",
];

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it.
    if !std::env::args().any(|a| a == "--bench") {
        println!("metrics bench: skipped (not run by `cargo bench`)");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("metrics bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let metrics = Arc::new(Metrics::new());
    let labels = |route: &str, outcome: &'static str| RequestLabels {
        route: route.to_owned(),
        method: "POST".to_owned(),
        door: "native",
        outcome,
    };
    let device = DeviceLabels {
        device: "pkcs11",
        mode: "direct",
        op: "generate_and_seal",
        result: "ok",
    };
    // Fill the registry as a running server would have it.
    for route in ROUTES {
        for outcome in ["success", "denied", "rejected", "failed"] {
            metrics.request(labels(route, outcome), Instant::now());
        }
    }

    let record = [0x5au8; 300];
    let hash = per_op(|| {
        black_box(Sha256::digest(black_box(&record)));
    });
    let clock = per_op(|| {
        black_box(Instant::now().elapsed());
    });
    let store = metrics.store_timer("sqlite");
    let audit = metrics.audit();
    let dev = metrics.device();
    let record_one = |m: &Metrics| {
        let started = Instant::now();
        dev.observe(device.clone(), started);
        store.observe(started, &Ok::<(), ()>(()));
        store.observe(started, &Ok::<(), ()>(()));
        audit.committed(16, started);
        m.request(labels("/v1/keys/{key}/datakey", "success"), started);
    };
    let one_thread = per_op(|| record_one(&metrics));
    let two_threads = {
        let m2 = Arc::clone(&metrics);
        let started = Instant::now();
        let other = std::thread::spawn(move || {
            for _ in 0..ITERATIONS {
                m2.request(labels("/v1/keys/{key}/datakey", "success"), Instant::now());
            }
        });
        for _ in 0..ITERATIONS {
            record_one(&metrics);
        }
        let _ = other.join();
        started.elapsed() / ITERATIONS
    };
    let snapshot = Snapshot(
        (0..40)
            .map(|_| {
                Sampled::new("custodian_bench_sampled", "x", Kind::Gauge)
                    .with(&[("device", "pkcs11")], 1.0)
            })
            .collect(),
    );
    let render_runs = 200u32;
    let started = Instant::now();
    let mut bytes = 0;
    for _ in 0..render_runs {
        bytes = runtime.block_on(metrics.render(snapshot.clone())).len();
    }
    let render = started.elapsed() / render_runs;

    println!("| what | time | vs SHA-256 of one audit record |");
    println!("|---|---:|---:|");
    let row = |what: &str, d: Duration| {
        println!(
            "| {what} | {:.0} ns | {:.2}× |",
            d.as_secs_f64() * 1e9,
            d.as_secs_f64() / hash.as_secs_f64()
        );
    };
    row("baseline: SHA-256 of a 300-byte audit record", hash);
    row("baseline: Instant::now() + elapsed()", clock);
    row("one request's series, 1 thread", one_thread);
    row(
        "one request's series, 2 threads recording at once",
        two_threads,
    );
    println!(
        "| one scrape ({bytes} bytes, {} routes × 4 outcomes, 40 sampled families) | {:.0} µs | — |",
        ROUTES.len(),
        render.as_secs_f64() * 1e6
    );
    ExitCode::SUCCESS
}

/// Mean time of `f` over [`ITERATIONS`] calls.
fn per_op(mut f: impl FnMut()) -> Duration {
    for _ in 0..ITERATIONS / 10 {
        f();
    }
    let started = Instant::now();
    for _ in 0..ITERATIONS {
        f();
    }
    started.elapsed() / ITERATIONS
}
