//! `GET /metrics` scraped from a live server (issue 18): the series are there under their
//! documented names and labels, counters move by exactly the requests made, histograms carry
//! buckets, count and sum, values read at scrape time follow the store (key inventory, wrap
//! budget, overdue rotations, re-wrap job progress and failures); only `metrics:read` may scrape.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::db::Cell;
use crate::common::server::{Auth, Server};
use crate::common::{b64, Deployment};
use crate::policy::{call, principal};

/// A scrape: every sample line as `name{labels}` → value, and the raw text.
pub(crate) struct Scrape {
    pub samples: BTreeMap<String, f64>,
    pub text: String,
}

impl Scrape {
    /// The value of the series `series` (`name{label="v",…}` exactly as rendered).
    #[track_caller]
    pub fn value(&self, series: &str) -> f64 {
        match self.samples.get(series) {
            Some(v) => *v,
            None => panic!("no series {series} in:\n{}", self.text),
        }
    }

    /// The value of `series`, 0 when absent (a labelled counter not yet created).
    pub fn value_or_zero(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or(0.0)
    }

    /// Whether a `# TYPE name kind` line is there.
    pub fn has_type(&self, name: &str, kind: &str) -> bool {
        self.text
            .lines()
            .any(|l| l == format!("# TYPE {name} {kind}"))
    }
}

/// Scrapes `/metrics` with `token` and parses the OpenMetrics text.
pub(crate) async fn scrape(s: &Server, token: &str) -> Scrape {
    let res = reqwest::Client::new()
        .get(format!("{}/metrics", s.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let text = res.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let mut samples = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        samples.insert(series.to_owned(), value.parse::<f64>().unwrap());
    }
    Scrape { samples, text }
}

fn requests(route: &str, method: &str, outcome: &str) -> String {
    format!(
        "custodian_http_requests_total{{route=\"{route}\",method=\"{method}\",door=\"native\",outcome=\"{outcome}\"}}"
    )
}

fn device_ops(mode: &str, op: &str, result: &str) -> String {
    format!(
        "custodian_device_operations_total{{device=\"pkcs11\",mode=\"{mode}\",op=\"{op}\",result=\"{result}\"}}"
    )
}

async fn datakey(s: &Server, key: &str) -> Value {
    let r = s
        .post(
            &format!("/v1/keys/{key}/datakey"),
            json!({ "context": { "app": "m" } }),
        )
        .await;
    r.ok().clone()
}

#[tokio::test]
async fn a_live_server_exposes_every_family_and_counters_move() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    // The lifecycle worker must not rotate the key the test makes overdue.
    d.append_config("[keys]\nlifecycle_check_interval_ms = 3600000\n")?;
    let s = d.start().await?;
    let monitor = principal(&s, "prometheus", &["monitoring"], json!({})).await;
    let auditor = principal(&s, "auditor-m", &["auditor"], json!({})).await;

    // Negative twins first: no token, a principal without metrics:read.
    let r = s
        .raw(Method::GET, "/metrics", Auth::None, None, Vec::new())
        .await;
    r.assert_error(401, "missing_token");
    call(&s, &auditor, Method::GET, "/metrics", None)
        .await
        .assert_error(403, "forbidden");

    let direct = s.create_key("m-direct").await;
    let cached = s
        .post("/v1/keys", json!({ "name": "m-cached", "mode": "cached" }))
        .await;
    assert_eq!(cached.status.as_u16(), 201, "{}", cached.body);
    datakey(&s, "m-direct").await;
    datakey(&s, "m-cached").await;
    datakey(&s, "m-cached").await;
    // A tampered blob: the device refuses it (result `rejected`).
    let blob = datakey(&s, "m-direct").await["ciphertext"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &blob)?;
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    s.post(
        "/v1/decrypt",
        json!({ "ciphertext": b64(&bytes), "context": { "app": "m" } }),
    )
    .await
    .assert_error(400, "decryption_failed");

    let first = scrape(&s, &monitor).await;
    let route = "/v1/keys/{key}/datakey";
    let before = first.value(&requests(route, "POST", "success"));
    assert_eq!(before, 4.0, "four data keys so far");
    assert_eq!(first.value(&requests("/metrics", "GET", "denied")), 1.0);
    assert_eq!(
        first.value(&requests("/v1/decrypt", "POST", "rejected")),
        1.0
    );
    assert!(first.has_type("custodian_http_requests", "counter"));
    assert!(first.has_type("custodian_http_request_duration_seconds", "histogram"));
    for suffix in ["_count", "_sum"] {
        let series = format!(
            "custodian_http_request_duration_seconds{suffix}{{route=\"{route}\",method=\"POST\",door=\"native\",outcome=\"success\"}}"
        );
        assert!(first.value(&series) > 0.0, "{series}");
    }
    assert_eq!(
        first.value(&format!(
            "custodian_http_request_duration_seconds_bucket{{le=\"+Inf\",route=\"{route}\",method=\"POST\",door=\"native\",outcome=\"success\"}}"
        )),
        4.0
    );

    // Device operations by device, mode, operation and result, with latency.
    assert_eq!(
        first.value(&device_ops("direct", "generate_and_seal", "ok")),
        2.0
    );
    assert_eq!(
        first.value(&device_ops("cached", "generate_and_seal", "ok")),
        2.0
    );
    assert_eq!(first.value(&device_ops("direct", "open", "rejected")), 1.0);
    assert!(first.value(&device_ops("direct", "create_root_key", "ok")) >= 1.0);
    assert!(first.has_type("custodian_device_operation_duration_seconds", "histogram"));
    // Sessions and the KEK cache (two data keys under one cached version: a miss, then a hit).
    // The deployment's `backend.sessions`; one may be in use by a checkpoint being signed.
    assert_eq!(
        first.value("custodian_device_sessions{device=\"pkcs11\"}"),
        4.0
    );
    assert!(first.value("custodian_device_sessions_in_use{device=\"pkcs11\"}") <= 1.0);
    assert!(first.has_type("custodian_device_session_waits", "counter"));
    assert!(first.value("custodian_kek_cache_unwraps_total{device=\"pkcs11\"}") >= 1.0);
    assert!(first.value("custodian_kek_cache_hits_total{device=\"pkcs11\"}") >= 1.0);
    assert!(first.value("custodian_kek_cache_misses_total{device=\"pkcs11\"}") >= 1.0);
    assert_eq!(
        first.value("custodian_kek_cache_entries{device=\"pkcs11\"}"),
        1.0
    );
    assert!(first.has_type("custodian_kek_cache_expiries", "counter"));
    assert_eq!(first.value("custodian_device_up{device=\"pkcs11\"}"), 1.0);

    // The audit writer: commits timed, batch sizes, the chain head.
    let commits = first.value("custodian_audit_commit_duration_seconds_count");
    assert!(commits > 0.0);
    assert!(first.value("custodian_audit_commit_batch_records_count") > 0.0);
    let head = first.value("custodian_audit_chain_head");
    assert!(head >= 8.0, "{head}");
    assert_eq!(first.value("custodian_audit_writable"), 1.0);
    assert_eq!(first.value("custodian_audit_chain_intact"), 1.0);

    // The store: calls timed, the pool.
    let store = if crate::common::server::on_postgres() {
        "postgres"
    } else {
        "sqlite"
    };
    let store_calls = format!(
        "custodian_store_operation_duration_seconds_count{{store=\"{store}\",result=\"ok\"}}"
    );
    assert!(first.value(&store_calls) > 0.0);
    assert!(first.value("custodian_store_pool_max") >= 1.0);
    assert!(first.has_type("custodian_store_pool_in_use", "gauge"));

    // The inventory.
    assert_eq!(
        first.value("custodian_keys{state=\"enabled\",device=\"pkcs11\",mode=\"direct\"}"),
        1.0
    );
    assert_eq!(
        first.value("custodian_keys{state=\"enabled\",device=\"pkcs11\",mode=\"cached\"}"),
        1.0
    );
    assert_eq!(
        first.value("custodian_key_versions{state=\"primary\"}"),
        2.0
    );
    assert_eq!(first.value("custodian_key_versions_near_wrap_budget"), 0.0);
    assert_eq!(first.value("custodian_keys_rotation_overdue"), 0.0);
    assert_eq!(first.value("custodian_rewrap_jobs{state=\"failed\"}"), 0.0);

    // Counters move by exactly what was done: three more data keys, one more scrape.
    for _ in 0..3 {
        datakey(&s, "m-direct").await;
    }
    s.post("/v1/keys/m-cached/disable", json!({})).await.ok();
    let second = scrape(&s, &monitor).await;
    assert_eq!(
        second.value(&requests(route, "POST", "success")),
        before + 3.0
    );
    assert_eq!(
        second.value(&requests("/metrics", "GET", "success")),
        1.0,
        "the first scrape is counted once it is answered"
    );
    assert_eq!(
        second.value(&device_ops("direct", "generate_and_seal", "ok")),
        5.0
    );
    assert!(second.value("custodian_audit_commit_duration_seconds_count") > commits);
    // Every record appended between the scrapes was waited for once (the first scrape's and
    // the four requests' since), and each wait holds its batch's commit.
    let records = second.value("custodian_audit_chain_head") - head;
    let waited = second.value("custodian_audit_wait_duration_seconds_count")
        - first.value("custodian_audit_wait_duration_seconds_count");
    assert_eq!(waited, records, "one wait per record appended");
    assert!(records >= 5.0, "{records}");
    let wait_sum = second.value("custodian_audit_wait_duration_seconds_sum")
        - first.value("custodian_audit_wait_duration_seconds_sum");
    let commit_sum = second.value("custodian_audit_commit_duration_seconds_sum")
        - first.value("custodian_audit_commit_duration_seconds_sum");
    assert!(
        wait_sum >= commit_sum && commit_sum > 0.0,
        "waits {wait_sum} s, commits {commit_sum} s"
    );
    assert!(second.value("custodian_audit_chain_head") > head);
    assert!(second.value(&store_calls) > first.value(&store_calls));
    assert_eq!(
        second.value("custodian_keys{state=\"disabled\",device=\"pkcs11\",mode=\"cached\"}"),
        1.0
    );
    assert!(!second
        .samples
        .contains_key("custodian_keys{state=\"enabled\",device=\"pkcs11\",mode=\"cached\"}"));

    // A version near its wrap budget and an overdue rotation, as the store records them.
    let id = direct["id"].as_str().unwrap().to_owned();
    let db = d.db()?;
    db.execute(
        "UPDATE key_versions SET wraps_reserved = $1 WHERE key_id = $2",
        &[Cell::Int(4_100_000_000), Cell::Text(id.clone())],
    )?;
    s.send_json(
        Method::PATCH,
        "/v1/keys/m-direct",
        json!({ "rotation_period": "1h" }),
    )
    .await
    .ok();
    let overdue_at = (time::OffsetDateTime::now_utc().unix_timestamp() - 120) * 1000;
    db.execute(
        "UPDATE keys SET next_rotation_at = $1 WHERE id = $2",
        &[Cell::Int(overdue_at), Cell::Text(id)],
    )?;
    let third = scrape(&s, &monitor).await;
    assert_eq!(third.value("custodian_key_versions_near_wrap_budget"), 1.0);
    let ratio = third.value("custodian_key_wrap_budget_used_ratio_max");
    assert!((0.95..0.96).contains(&ratio), "{ratio}");
    assert_eq!(third.value("custodian_keys_rotation_overdue"), 1.0);

    // Nothing secret in the text: no token, no plaintext, no key names.
    assert!(!third.text.contains(&monitor));
    assert!(!third.text.contains(&s.token));
    assert!(!third.text.contains("m-direct"));
    Ok(())
}

#[tokio::test]
async fn rewrap_job_progress_and_failures_are_exported() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    // One data key per batch, then a long pause: the job stays running with work left.
    d.append_config("[keys]\nrewrap_batch_size = 1\nrewrap_pause_ms = 600000\n")?;
    let s = d.start().await?;
    let monitor = principal(&s, "prom-jobs", &["monitoring"], json!({})).await;
    s.create_key("j-key").await;
    for n in 0..3 {
        s.send_json(
            Method::PUT,
            &format!("/v1/secrets/j/{n}"),
            json!({ "value_text": "v", "key": "j-key" }),
        )
        .await
        .ok();
    }
    s.post("/v1/keys/j-key/rotate", json!({})).await.ok();
    let jobs = s.get("/v1/jobs?state=running").await;
    let job = jobs.ok()["jobs"][0]["id"].as_str().unwrap().to_owned();
    let key_id = s.get("/v1/keys/j-key").await.ok()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let series = |state: &str| {
        format!("custodian_rewrap_job_items{{job=\"{job}\",key_id=\"{key_id}\",state=\"{state}\"}}")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let scraped = loop {
        let m = scrape(&s, &monitor).await;
        if m.value_or_zero(&series("done")) >= 1.0 {
            break m;
        }
        assert!(std::time::Instant::now() < deadline, "{}", m.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(scraped.value(&series("done")), 1.0);
    assert_eq!(scraped.value(&series("left")), 2.0);
    assert_eq!(scraped.value(&series("failed")), 0.0);
    assert_eq!(
        scraped.value("custodian_rewrap_jobs{state=\"running\"}"),
        1.0
    );
    assert!(scraped.has_type(
        "custodian_rewrap_job_last_failure_timestamp_seconds",
        "gauge"
    ));
    assert!(!scraped
        .samples
        .contains_key("custodian_rewrap_job_last_failure_timestamp_seconds"));

    // The job fails (as the store records it): it leaves the progress gauges, the failed count
    // and the time of the last failure say so.
    d.db()?.execute(
        "UPDATE jobs SET state = 'failed', finished_at = updated_at, last_error = 'test' WHERE id = $1",
        &[Cell::Text(job.clone())],
    )?;
    let failed = scrape(&s, &monitor).await;
    assert_eq!(failed.value("custodian_rewrap_jobs{state=\"failed\"}"), 1.0);
    assert_eq!(
        failed.value("custodian_rewrap_jobs{state=\"running\"}"),
        0.0
    );
    assert!(!failed.samples.contains_key(&series("left")));
    let at = failed.value("custodian_rewrap_job_last_failure_timestamp_seconds");
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
    assert!((now - 600.0..=now + 1.0).contains(&at), "{at} vs {now}");
    Ok(())
}
