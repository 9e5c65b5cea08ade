//! PostgreSQL stopped under load and started again, with a real cluster of the test's own: while
//! it is down every request answers 503 within the request deadline (no hang, no 500, no
//! panic) and readiness is red; when it is back the node serves again by itself (no restart),
//! with nothing lost and the audit chain intact.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::common::postgres::PrivateCluster;
use crate::common::{b64, Deployment, Server};

/// Everything a request may answer while the database (or, in `nodes`, the device) is down.
pub(crate) const DOWN_CODES: [&str; 3] = [
    "store_unavailable",
    "audit_unavailable",
    "device_unavailable",
];

/// `connect_timeout` in the deployment, and how long a request may take while the database is
/// down: the timeout plus a margin for a loaded machine.
const CONNECT_TIMEOUT_S: u64 = 2;
const DEADLINE: Duration = Duration::from_secs(CONNECT_TIMEOUT_S + 4);

#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) ok: AtomicU64,
    pub(crate) unavailable: AtomicU64,
    pub(crate) other: AtomicU64,
    pub(crate) slowest_ms: AtomicU64,
}

/// Writes secrets and asks for data keys (key `outage`) until `stop`, counting answers by kind.
/// Any answer other than success or a 503 with a down code is counted in `other` and printed.
pub(crate) async fn load(s: Arc<Server>, worker: u32, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let started = Instant::now();
        let r = if n % 2 == 0 {
            s.send_json(
                Method::PUT,
                &format!("/v1/secrets/load/{worker}/{n}"),
                json!({"value_text": n.to_string(), "key": "outage"}),
            )
            .await
        } else {
            s.post("/v1/keys/outage/datakey", json!({})).await
        };
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tally.slowest_ms.fetch_max(ms, Ordering::Relaxed);
        let code = r.body["error"]["code"].as_str().unwrap_or("").to_owned();
        if r.status.is_success() {
            tally.ok.fetch_add(1, Ordering::Relaxed);
        } else if r.status.as_u16() == 503 && DOWN_CODES.contains(&code.as_str()) {
            tally.unavailable.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50)).await;
        } else {
            eprintln!("unexpected answer: {} {}", r.status, r.body);
            tally.other.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_stopped_under_load_gives_503_then_service_resumes_without_restart(
) -> anyhow::Result<()> {
    let cluster = PrivateCluster::start();
    let settings = cluster.database().await;
    let mut d = Deployment::new()?;
    d.set_store(&format!(
        "[store]\nkind = \"postgres\"\nurl = \"{}\"\npool_size = 8\nconnect_timeout = \"{CONNECT_TIMEOUT_S}s\"",
        settings.url
    ))?;
    let s = Arc::new(d.start().await?);
    s.create_key("outage").await;
    let before = s
        .post(
            "/v1/keys/outage/encrypt",
            json!({"plaintext": b64(b"kept across the outage")}),
        )
        .await;
    before.ok();
    s.send_json(
        Method::PUT,
        "/v1/secrets/kept",
        json!({"value_text": "before", "key": "outage"}),
    )
    .await
    .ok();

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let workers: Vec<_> = (0..4)
        .map(|w| {
            tokio::spawn(load(
                Arc::clone(&s),
                w,
                Arc::clone(&stop),
                Arc::clone(&tally),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ok_before_outage = tally.ok.load(Ordering::Relaxed);
    assert!(
        ok_before_outage > 0,
        "the load was served before the outage"
    );

    cluster.stop();
    // While it is down: readiness is red and single requests answer 503 within the deadline.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r = s.wait_ready(503, Duration::from_secs(15)).await;
    assert_eq!(
        r.status.as_u16(),
        503,
        "readiness while the database is down: {}",
        r.body
    );
    for path in ["/v1/keys/outage", "/v1/secrets/kept"] {
        let started = Instant::now();
        let r = s.get(path).await;
        assert_eq!(r.status.as_u16(), 503, "{path}: {}", r.body);
        let code = r.body["error"]["code"].as_str().unwrap_or("");
        assert!(DOWN_CODES.contains(&code), "{path}: {}", r.body);
        assert!(
            started.elapsed() < DEADLINE,
            "{path} took {:?}",
            started.elapsed()
        );
    }
    let unavailable_during = tally.unavailable.load(Ordering::Relaxed);
    assert!(unavailable_during > 0, "the load saw the outage");

    cluster.restart();
    // Back: readiness turns green by itself and requests succeed again, on the same process.
    let pid = s.pid();
    let r = s.wait_ready(200, Duration::from_secs(30)).await;
    assert_eq!(
        r.status.as_u16(),
        200,
        "readiness after the database returned: {}",
        r.body
    );
    assert_eq!(s.pid(), pid, "the node was not restarted");
    let ok_at_return = tally.ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await?;
    }
    assert!(
        tally.ok.load(Ordering::Relaxed) > ok_at_return,
        "the load is served again after the database returned"
    );
    assert_eq!(
        tally.other.load(Ordering::Relaxed),
        0,
        "no 500 or other answer"
    );
    let slowest = Duration::from_millis(tally.slowest_ms.load(Ordering::Relaxed));
    eprintln!(
        "outage under load: {} served, {} answered 503, slowest {slowest:?}",
        tally.ok.load(Ordering::Relaxed),
        tally.unavailable.load(Ordering::Relaxed)
    );
    assert!(slowest < DEADLINE, "slowest request took {slowest:?}");

    // Nothing written before the outage was lost.
    let r = s
        .post(
            "/v1/decrypt",
            json!({"ciphertext": before.ok()["ciphertext"]}),
        )
        .await;
    assert_eq!(r.ok()["plaintext"], b64(b"kept across the outage"));
    let r = s.get("/v1/secrets/kept?text=true").await;
    assert_eq!(r.ok()["value_text"], "before", "{}", r.body);

    // The audit chain is whole across the outage: an export verifies.
    let (export, pem) = crate::audit::export_to(&s, d.path(), "").await?;
    let lines: Vec<String> = String::from_utf8(export)?
        .lines()
        .map(str::to_owned)
        .collect();
    let (ok, out) = crate::audit::verify_lines(d.path(), &lines, &pem);
    assert!(ok, "{out}");
    Ok(())
}
