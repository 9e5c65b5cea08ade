//! Several nodes: three `custodian serve` processes on one PostgreSQL database and ONE SoftHSM2
//! token directory (every node loads `libsofthsm2.so` on the same `SOFTHSM2_CONF`, standing in
//! for a network HSM). Every node serves every request; what one node changes, the others honour
//! within a second; their audit records form one chain that verifies offline; background duties
//! run on one node at a time, once per due time; a node killed with SIGKILL at random moments
//! loses nothing.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::db::{Db, Location};
use crate::common::{b64, Deployment, Server};

/// A deployment on its own PostgreSQL database (whatever `CUSTODIAN_TEST_STORE` says), and a
/// connection to that database.
async fn shared_deployment() -> anyhow::Result<(Deployment, Db)> {
    shared_deployment_with("").await
}

/// As [`shared_deployment`], with more `[keys]` settings.
async fn shared_deployment_with(keys: &str) -> anyhow::Result<(Deployment, Db)> {
    let d = Deployment::new()?;
    let (_, settings) = crate::common::postgres::fresh_database().await;
    let db = Db::open(&Location::Postgres {
        url: settings.url.clone(),
        created: std::time::SystemTime::now(),
    })?;
    d.set_store(&format!(
        "[store]\nkind = \"postgres\"\nurl = \"{}\"\npool_size = 8\nconnect_timeout = \"3s\"",
        settings.url
    ))?;
    // Every version kept, so each acknowledged write stays readable by its version.
    d.append_config(&format!(
        "[keys]\nlifecycle_check_interval_ms = 1000\n{keys}\n[secrets]\ndefault_max_versions = 1000"
    ))?;
    Ok((d, db))
}

/// Starts node `n` of the deployment (its audit records and leases name it `node-<n>`).
async fn start_node(d: &mut Deployment, n: usize) -> anyhow::Result<Server> {
    d.env = vec![("CUSTODIAN__AUDIT__NODE".to_owned(), format!("node-{n}"))];
    d.start().await
}

/// Polls `f` until it returns true; the time it took, or `None` past `limit`.
async fn within<F, Fut>(limit: Duration, mut f: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if f().await {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_serve_one_database_and_one_token() -> anyhow::Result<()> {
    let (mut d, db) = shared_deployment().await?;
    let n1 = start_node(&mut d, 1).await?;
    let n2 = start_node(&mut d, 2).await?;
    let n3 = start_node(&mut d, 3).await?;

    // A key made on node 1 wraps on node 2 and unwraps on node 3; a secret written on node 2 is
    // read on node 3 and node 1.
    n1.create_key("shared").await;
    let ct = n2
        .post(
            "/v1/keys/shared/encrypt",
            json!({ "plaintext": b64(b"across nodes"), "context": {"t": "1"} }),
        )
        .await;
    let blob = ct.ok()["ciphertext"].as_str().unwrap().to_owned();
    let pt = n3
        .post(
            "/v1/decrypt",
            json!({ "ciphertext": blob, "context": {"t": "1"} }),
        )
        .await;
    assert_eq!(pt.ok()["plaintext"], b64(b"across nodes"));
    let w = n2
        .send_json(
            Method::PUT,
            "/v1/secrets/app/db",
            json!({ "value_text": "v1", "key": "shared" }),
        )
        .await;
    assert!(w.status.is_success(), "{}", w.body);
    for n in [&n3, &n1] {
        assert_eq!(n.get("/v1/secrets/app/db").await.ok()["value"], b64(b"v1"));
    }

    // Disabled on node 1: refused on nodes 2 and 3 within a second (both had it cached).
    let r = n1.post("/v1/keys/shared/disable", json!({})).await;
    assert!(r.status.is_success(), "{}", r.body);
    for n in [&n2, &n3] {
        let took = within(Duration::from_secs(1), || async {
            n.post(
                "/v1/keys/shared/encrypt",
                json!({ "plaintext": b64(b"x"), "context": {"t": "1"} }),
            )
            .await
            .status
            .as_u16()
                == 409
        })
        .await;
        assert!(
            took.is_some(),
            "a key disabled on node 1 was still used after 1 s"
        );
    }
    let r = n3.post("/v1/keys/shared/enable", json!({})).await;
    assert!(r.status.is_success(), "{}", r.body);

    // A token revoked on node 1 is refused by node 2 within a second (node 2 had it cached);
    // a policy narrowed on node 3 holds on node 1 within a second.
    let r = crate::policy::put_policy(
        &n1,
        "user",
        json!({ "statements": [{ "effect": "allow", "actions": ["encrypt", "key:read"], "resources": ["key/*"] }] }),
    )
    .await;
    assert!(r.status.is_success(), "{}", r.body);
    let user = crate::policy::principal(&n1, "user-1", &["user"], json!({})).await;
    let as_user = |n: &Server| {
        let (base, token) = (n.base.clone(), user.clone());
        async move {
            reqwest::Client::new()
                .post(format!("{base}/v1/keys/shared/encrypt"))
                .bearer_auth(token)
                .json(&json!({ "plaintext": b64(b"u"), "context": {"t": "1"} }))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    assert_eq!(as_user(&n2).await, 200);
    assert_eq!(as_user(&n1).await, 200);
    let r = crate::policy::put_policy(
        &n3,
        "user",
        json!({ "statements": [{ "effect": "allow", "actions": ["key:read"], "resources": ["key/*"] }] }),
    )
    .await;
    assert!(r.status.is_success(), "{}", r.body);
    let took = within(Duration::from_secs(1), || async {
        as_user(&n1).await == 403
    })
    .await;
    assert!(
        took.is_some(),
        "a narrowed policy was not honoured on node 1 within 1 s"
    );
    let tokens = n1.get("/v1/tokens?principal=user-1").await;
    let token_id = tokens.ok()["tokens"][0]["id"].as_str().unwrap().to_owned();
    let r = n1
        .send(Method::DELETE, &format!("/v1/tokens/{token_id}"))
        .await;
    assert!(r.status.is_success(), "{}", r.body);
    let took = within(Duration::from_secs(1), || async {
        as_user(&n2).await == 401
    })
    .await;
    assert!(
        took.is_some(),
        "a token revoked on node 1 still worked on node 2 after 1 s"
    );

    // Writes on all three at once: one audit chain, every node's records in it, verified offline.
    let nodes = [Arc::new(n1), Arc::new(n2), Arc::new(n3)];
    let mut tasks = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        for j in 0..3 {
            let n = Arc::clone(n);
            tasks.push(tokio::spawn(async move {
                for k in 0..20 {
                    let r = n
                        .send_json(
                            Method::PUT,
                            &format!("/v1/secrets/load/{i}-{j}"),
                            json!({ "value_text": format!("{k}"), "key": "shared" }),
                        )
                        .await;
                    assert!(r.status.is_success(), "{}", r.body);
                }
            }));
        }
    }
    for t in tasks {
        t.await?;
    }
    for (i, n) in nodes.iter().enumerate() {
        for j in 0..3 {
            let r = n
                .get(&format!("/v1/secrets/load/{}-{j}", (i + 1) % 3))
                .await;
            assert_eq!(r.ok()["value"], b64(b"19"));
            assert_eq!(r.ok()["version"], 20);
        }
    }
    let dir = tempfile::tempdir()?;
    let (export, pem) = crate::audit::export_to(&nodes[1], dir.path(), "").await?;
    let lines = crate::audit::lines_of(&export);
    let (ok, out) = crate::audit::verify_lines(dir.path(), &lines, &pem);
    assert!(
        ok,
        "the export of three nodes' records does not verify: {out}"
    );
    let mut by_node = BTreeMap::new();
    for l in &lines {
        let v: Value = serde_json::from_str(l)?;
        if let Some(node) = v["node"].as_str() {
            *by_node.entry(node.to_owned()).or_insert(0) += 1;
        }
    }
    for n in ["node-1", "node-2", "node-3"] {
        assert!(
            by_node.get(n).copied().unwrap_or(0) >= 20,
            "{n} has too few records in the export: {by_node:?}"
        );
    }

    // One node holds each duty lease.
    let leases = db.query("SELECT name, holder FROM leases ORDER BY name", &[])?;
    assert!(!leases.is_empty());
    let holders: HashSet<String> = leases.iter().map(|r| r[1].as_text().to_owned()).collect();
    assert!(
        holders.iter().all(|h| h.starts_with("node-")),
        "{holders:?}"
    );
    Ok(())
}

/// A small random number below `n` (the operating system's generator; no seed to manage).
fn below(n: u64) -> u64 {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).expect("random bytes");
    u64::from_le_bytes(b) % n
}

/// One acknowledged secret write: what a client was told was stored.
#[derive(Debug, Clone)]
struct Acked {
    path: String,
    version: u64,
    value: String,
}

/// Writes secrets round-robin over the nodes that are up until `stop`; returns what was
/// acknowledged.
async fn write_until(
    nodes: Arc<std::sync::Mutex<Vec<Option<String>>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    token: String,
) -> Vec<Acked> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut acked = Vec::new();
    let mut k = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        k += 1;
        let base = {
            let up = nodes.lock().unwrap();
            let live: Vec<&String> = up.iter().flatten().collect();
            if live.is_empty() {
                None
            } else {
                Some(live[(k as usize) % live.len()].clone())
            }
        };
        let Some(base) = base else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let path = format!("chaos/{}", k % 40);
        let value = format!("write {k}");
        let r = http
            .put(format!("{base}/v1/secrets/{path}"))
            .bearer_auth(&token)
            .json(&json!({ "value_text": value, "key": "chaos" }))
            .send()
            .await;
        if let Ok(r) = r {
            if r.status().is_success() {
                let body: Value = r.json().await.unwrap_or(Value::Null);
                if let Some(version) = body["version"].as_u64() {
                    acked.push(Acked {
                        path,
                        version,
                        value,
                    });
                }
            }
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_killed_at_random_moments_lose_and_duplicate_nothing() -> anyhow::Result<()> {
    let (mut d, db) = shared_deployment_with(
        "rewrap_batch_size = 10\nrewrap_pause_ms = 50\nmin_rotation_period = \"2s\"",
    )
    .await?;
    let mut servers: Vec<Option<Server>> = Vec::new();
    for n in 1..=3 {
        servers.push(Some(start_node(&mut d, n).await?));
    }
    let first = servers[0].as_ref().unwrap();
    first.create_key("chaos").await;
    let token = first.token.clone();
    // Data to re-wrap: 200 secrets under version 1, then a rotation that starts a re-wrap job.
    for i in 0..200 {
        let r = first
            .send_json(
                Method::PUT,
                &format!("/v1/secrets/bulk/{i}"),
                json!({ "value_text": format!("bulk {i}"), "key": "chaos" }),
            )
            .await;
        assert!(r.status.is_success(), "{}", r.body);
    }
    let r = first.post("/v1/keys/chaos/rotate", json!({})).await;
    assert!(r.status.is_success(), "{}", r.body);
    // A scheduled duty due every 2 s through the kills: whichever node holds the lifecycle
    // lease (and the lease moves as holders die) rotates it once per due time.
    let sched = first.create_key("scheduled").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    first
        .send_json(
            Method::PATCH,
            "/v1/keys/scheduled",
            json!({ "rotation_period": "2s" }),
        )
        .await
        .ok();

    let bases = Arc::new(std::sync::Mutex::new(
        servers
            .iter()
            .map(|s| s.as_ref().map(|s| s.base.clone()))
            .collect::<Vec<_>>(),
    ));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn(write_until(
        Arc::clone(&bases),
        Arc::clone(&stop),
        token.clone(),
    ));
    // 20 SIGKILLs of a random node at random moments, each restarted at once.
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(150 + below(400))).await;
        let i = below(3) as usize;
        bases.lock().unwrap()[i] = None;
        if let Some(s) = servers[i].take() {
            s.kill();
        }
        let s = start_node(&mut d, i + 1).await?;
        bases.lock().unwrap()[i] = Some(s.base.clone());
        servers[i] = Some(s);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = writer.await?;
    assert!(
        acked.len() > 50,
        "too few writes acknowledged: {}",
        acked.len()
    );
    let n = servers[below(3) as usize].as_ref().unwrap();

    // Nothing acknowledged is lost; no version number was given twice.
    let mut seen = HashSet::new();
    for a in &acked {
        assert!(
            seen.insert((a.path.clone(), a.version)),
            "version {} of {} acknowledged twice",
            a.version,
            a.path
        );
        let r = n
            .get(&format!("/v1/secrets/{}?version={}", a.path, a.version))
            .await;
        assert_eq!(
            r.ok()["value"],
            b64(a.value.as_bytes()),
            "acknowledged write lost: {a:?}"
        );
    }
    for i in 0..40 {
        let m = n.get(&format!("/v1/secrets/chaos/{i}/metadata")).await;
        if m.status.as_u16() == 404 {
            continue;
        }
        let versions: Vec<u64> = m.ok()["versions"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v["version"].as_u64())
            .collect();
        let expected: Vec<u64> = (1..=versions.len() as u64).collect();
        assert_eq!(versions, expected, "chaos/{i}: versions not contiguous");
    }

    // The re-wrap job completes on the surviving nodes, every secret on the new version.
    let job = crate::common::server::wait_job_done(n, "chaos").await;
    assert_eq!(job["state"], "completed", "{job}");
    // Each of the 200 re-wrapped exactly once, however many times a batch's node was killed.
    assert_eq!(
        (job["done"].as_u64(), job["failed_items"].as_u64()),
        (Some(200), Some(0)),
        "{job}"
    );
    let left = db.query_one(
        "SELECT count(*) FROM secret_versions v JOIN keys k ON k.id = v.key_id
         WHERE k.name = 'chaos' AND v.key_version = 1 AND v.wrapped_dek IS NOT NULL",
        &[],
    )?;
    assert_eq!(left[0].as_i64(), 0, "secrets still wrapped under version 1");
    for i in (0..200).step_by(37) {
        let r = n.get(&format!("/v1/secrets/bulk/{i}")).await;
        assert_eq!(r.ok()["value"], b64(format!("bulk {i}").as_bytes()));
    }

    // The scheduled rotation ran once per due time: each version came at least most of a
    // period after the one before (two runs for one due time would be moments apart), and no
    // more rotations were recorded as done than there are new versions.
    let k = n.get("/v1/keys/scheduled").await;
    let created: Vec<time::OffsetDateTime> = k.ok()["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            time::OffsetDateTime::parse(
                v["created_at"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap()
        })
        .collect();
    assert!(
        created.len() >= 3,
        "the schedule did not keep running: {}",
        k.body
    );
    let mut sorted = created.clone();
    sorted.sort();
    for pair in sorted.windows(2) {
        assert!(
            pair[1] - pair[0] >= time::Duration::milliseconds(1500),
            "two rotations {} apart for one due time: {}",
            pair[1] - pair[0],
            k.body
        );
    }
    let done = db.query_one(
        "SELECT count(*) FROM audit_records WHERE action = 'key:rotate' AND resource = $1 \
         AND outcome = 'success'",
        &[crate::common::db::Cell::Text(format!("key/{sched}"))],
    )?;
    let new_versions = i64::try_from(created.len())? - 1;
    assert!(
        (1..=new_versions).contains(&done[0].as_i64()),
        "{} rotations recorded done for {new_versions} new versions",
        done[0].as_i64(),
    );

    // One chain from all of it, verified offline.
    let dir = tempfile::tempdir()?;
    let (export, pem) = crate::audit::export_to(n, dir.path(), "").await?;
    let lines = crate::audit::lines_of(&export);
    let (ok, out) = crate::audit::verify_lines(dir.path(), &lines, &pem);
    assert!(ok, "the export does not verify after the kills: {out}");
    Ok(())
}

/// One re-wrap job, three nodes: each node takes parts of the job (its batches' audit records
/// name the node and the part), no two nodes work on one part, and together they move every
/// item exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_work_through_one_rewrap_job_at_once() -> anyhow::Result<()> {
    let (mut d, db) = shared_deployment_with(
        "rewrap_after_rotation = false\nrewrap_batch_size = 4\nrewrap_pause_ms = 40",
    )
    .await?;
    let mut servers = Vec::new();
    for n in 1..=3 {
        servers.push(start_node(&mut d, n).await?);
    }
    let first = &servers[0];
    first.create_key("spread").await;
    const SECRETS: usize = 240;
    for i in 0..SECRETS {
        let r = first
            .send_json(
                Method::PUT,
                &format!("/v1/secrets/spread/{i}"),
                json!({ "value_text": format!("spread {i}"), "key": "spread" }),
            )
            .await;
        assert!(r.status.is_success(), "{}", r.body);
    }
    let r = first.post("/v1/keys/spread/rotate", json!({})).await;
    assert!(r.status.is_success(), "{}", r.body);
    let r = first.post("/v1/keys/spread/rewrap", json!({})).await;
    assert!(r.status.is_success(), "{}", r.body);
    let job_id = r.ok()["id"].as_str().unwrap().to_owned();
    let job = crate::common::server::wait_job_done(&servers[2], "spread").await;
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(
        (job["done"].as_u64(), job["failed_items"].as_u64()),
        (Some(SECRETS as u64), Some(0)),
        "{job}"
    );

    // Who moved what: the batches' records name their node and part.
    let rows = db.query(
        "SELECT node, details FROM audit_records WHERE action = 'key:rewrap-batch' \
         AND outcome = 'success' ORDER BY sequence",
        &[],
    )?;
    let mut moved_by_node: BTreeMap<String, u64> = BTreeMap::new();
    let mut nodes_of_part: BTreeMap<String, HashSet<String>> = BTreeMap::new();
    for row in &rows {
        let details: Value = serde_json::from_str(row[1].as_text())?;
        if details["job_id"] != job_id.as_str() {
            continue;
        }
        let Some(moved) = details["items_rewrapped"].as_str() else {
            continue;
        };
        let node = row[0].as_text().to_owned();
        *moved_by_node.entry(node.clone()).or_default() += moved.parse::<u64>()?;
        nodes_of_part
            .entry(details["shard"].as_str().unwrap_or("?").to_owned())
            .or_default()
            .insert(node);
    }
    assert_eq!(
        moved_by_node.values().sum::<u64>(),
        SECRETS as u64,
        "the records account for every item: {moved_by_node:?}"
    );
    assert!(
        moved_by_node.len() >= 2,
        "one node did the whole job: {moved_by_node:?}"
    );
    assert!(
        nodes_of_part.len() >= 3 && !nodes_of_part.contains_key("?"),
        "the job was not split into parts: {nodes_of_part:?}"
    );
    for (part, nodes) in &nodes_of_part {
        assert_eq!(
            nodes.len(),
            1,
            "part {part} worked by {nodes:?} (no node was killed)"
        );
    }
    let left = db.query_one(
        "SELECT count(*) FROM secret_versions v JOIN keys k ON k.id = v.key_id
         WHERE k.name = 'spread' AND v.key_version = 1 AND v.wrapped_dek IS NOT NULL",
        &[],
    )?;
    assert_eq!(left[0].as_i64(), 0);
    for i in (0..SECRETS).step_by(23) {
        let r = servers[i % 3].get(&format!("/v1/secrets/spread/{i}")).await;
        assert_eq!(r.ok()["value"], b64(format!("spread {i}").as_bytes()));
    }
    Ok(())
}

/// Three nodes under load while a shared part goes away for 5 s: every node answers only
/// successes or 503 with a down code, readiness is red on each, and each serves again by itself
/// (same process) when the part returns.
async fn outage_on_three_nodes(
    mut d: Deployment,
    take_away: impl FnOnce(),
    bring_back: impl FnOnce(),
    expected_code: &str,
) -> anyhow::Result<()> {
    use crate::store_outage::{load, Tally};
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut nodes = Vec::new();
    for n in 1..=3 {
        nodes.push(Arc::new(start_node(&mut d, n).await?));
    }
    nodes[0].create_key("outage").await;
    let stop = Arc::new(AtomicBool::new(false));
    let tallies: Vec<Arc<Tally>> = (0..3).map(|_| Arc::new(Tally::default())).collect();
    let workers: Vec<_> = nodes
        .iter()
        .zip(&tallies)
        .enumerate()
        .map(|(i, (n, t))| {
            tokio::spawn(load(
                Arc::clone(n),
                i as u32,
                Arc::clone(&stop),
                Arc::clone(t),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(tallies.iter().all(|t| t.ok.load(Ordering::Relaxed) > 0));

    take_away();
    let away = Instant::now();
    for n in &nodes {
        let r = n.wait_ready(503, Duration::from_secs(10)).await;
        assert_eq!(r.status.as_u16(), 503, "{}", r.body);
        let probe = n.post("/v1/keys/outage/datakey", json!({})).await;
        assert_eq!(probe.status.as_u16(), 503, "{}", probe.body);
        let code = probe.body["error"]["code"].as_str().unwrap_or_default();
        assert!(
            code == expected_code || crate::store_outage::DOWN_CODES.contains(&code),
            "{}",
            probe.body
        );
    }
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(away.elapsed())).await;
    let pids: Vec<u32> = nodes.iter().map(|n| n.pid()).collect();
    bring_back();
    for n in &nodes {
        let r = n.wait_ready(200, Duration::from_secs(30)).await;
        assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    }
    let ok_back: Vec<u64> = tallies
        .iter()
        .map(|t| t.ok.load(Ordering::Relaxed))
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await?;
    }
    for (i, t) in tallies.iter().enumerate() {
        assert!(
            t.ok.load(Ordering::Relaxed) > ok_back[i],
            "node {} serves again",
            i + 1
        );
        assert!(
            t.unavailable.load(Ordering::Relaxed) > 0,
            "node {} saw the outage",
            i + 1
        );
        assert_eq!(
            t.other.load(Ordering::Relaxed),
            0,
            "node {}: no 500 or other answer",
            i + 1
        );
    }
    assert_eq!(
        nodes.iter().map(|n| n.pid()).collect::<Vec<_>>(),
        pids,
        "no node was restarted"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_shared_token_away_for_5_s_is_503_on_every_node_then_recovers() -> anyhow::Result<()> {
    let (d, _db) = shared_deployment().await?;
    let tokens = d.token_dir();
    let away = tokens.with_extension("away");
    let (t1, a1) = (tokens.clone(), away.clone());
    outage_on_three_nodes(
        d,
        move || std::fs::rename(&t1, &a1).expect("move the token away"),
        move || std::fs::rename(&away, &tokens).expect("bring the token back"),
        "device_unavailable",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgresql_stopped_for_5_s_is_503_on_every_node_then_recovers() -> anyhow::Result<()> {
    let cluster = Arc::new(crate::common::postgres::PrivateCluster::start());
    let settings = cluster.database().await;
    let d = Deployment::new()?;
    d.set_store(&format!(
        "[store]\nkind = \"postgres\"\nurl = \"{}\"\npool_size = 8\nconnect_timeout = \"2s\"",
        settings.url
    ))?;
    let (c1, c2) = (Arc::clone(&cluster), Arc::clone(&cluster));
    outage_on_three_nodes(
        d,
        move || c1.stop(),
        move || c2.restart(),
        "store_unavailable",
    )
    .await
}

/// A TPM key belongs to the node whose TPM made it: that node serves it; another node, with a
/// TPM of its own or none, answers 503 `key_on_other_node` naming the owner, and PKCS#11 keys
/// are served by every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tpm_key_is_served_by_its_node_and_named_by_the_others() -> anyhow::Result<()> {
    let (mut d, _db) = shared_deployment().await?;
    let (tpm1, tpm2) = (
        crate::common::swtpm::Swtpm::start()?,
        crate::common::swtpm::Swtpm::start()?,
    );
    let start_with = |d: &mut Deployment, n: usize, tcti: Option<String>| {
        d.env = vec![("CUSTODIAN__AUDIT__NODE".to_owned(), format!("node-{n}"))];
        if let Some(t) = tcti {
            d.env.push(("CUSTODIAN__TPM__TCTI".to_owned(), t));
        }
    };
    start_with(&mut d, 1, Some(tpm1.tcti()));
    let n1 = d.start().await?;
    start_with(&mut d, 2, Some(tpm2.tcti()));
    let n2 = d.start().await?;
    start_with(&mut d, 3, None);
    let n3 = d.start().await?;

    let r = n1
        .post("/v1/keys", json!({ "name": "on-tpm-1", "backend": "tpm" }))
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.body);
    n1.create_key("on-token").await;
    n1.post("/v1/keys/on-tpm-1/datakey", json!({})).await.ok();
    for n in [&n2, &n3] {
        let r = n.post("/v1/keys/on-tpm-1/datakey", json!({})).await;
        r.assert_error(503, "key_on_other_node");
        assert!(
            r.body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("node-1")),
            "{}",
            r.body
        );
        n.post("/v1/keys/on-token/datakey", json!({})).await.ok();
    }
    Ok(())
}

/// Three nodes started at the same moment on a new database and a new token: the one-time
/// set-up happens once (one audit signing key in the token, one bootstrap token printed), every
/// node becomes ready, and a checkpoint signed by any of them verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_started_at_once_set_up_once() -> anyhow::Result<()> {
    let (d, _db) = shared_deployment().await?;
    let mut children = Vec::new();
    for n in 1..=3 {
        let out = d.path().join(format!("node-{n}.out"));
        let err = d.path().join(format!("node-{n}.err"));
        let child = d
            .command()
            .args(["serve", "--config"])
            .arg(d.config())
            .env("CUSTODIAN__AUDIT__NODE", format!("node-{n}"))
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&out)?)
            .stderr(std::fs::File::create(&err)?)
            .spawn()?;
        children.push((KillOnDrop(child), out, err));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut bases = Vec::new();
    let mut tokens = Vec::new();
    for (child, out, err) in &mut children {
        let base = loop {
            let text = std::fs::read_to_string(&*out).unwrap_or_default();
            if let Some(addr) = text
                .lines()
                .find_map(|l| l.strip_prefix("custodian listening on "))
            {
                tokens.extend(
                    text.lines()
                        .filter_map(|l| l.split("store it now): ").nth(1))
                        .map(|t| t.trim().to_owned()),
                );
                break format!("http://{}", addr.trim());
            }
            if let Some(status) = child.0.try_wait()? {
                panic!(
                    "a node exited ({status}):\n{}",
                    std::fs::read_to_string(&*err).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "a node did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        bases.push(base);
    }
    assert_eq!(
        tokens.len(),
        1,
        "bootstrap tokens printed: {}",
        tokens.len()
    );
    let token = &tokens[0];
    let http = reqwest::Client::new();
    for base in &bases {
        let r = http.get(format!("{base}/v1/health/ready")).send().await?;
        assert_eq!(r.status().as_u16(), 200, "{base} is not ready");
        let r = http
            .get(format!("{base}/v1/audit/public-key"))
            .bearer_auth(token)
            .send()
            .await?;
        assert_eq!(r.status().as_u16(), 200);
    }
    // Every node signs with the same, single signing key: each one's export verifies with the
    // key any of them publishes.
    let key_of = |base: &String| {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        async move {
            http.get(format!("{base}/v1/audit/public-key"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let first = key_of(&bases[0]).await;
    for base in &bases[1..] {
        assert_eq!(key_of(base).await, first, "nodes sign with different keys");
    }
    let dir = tempfile::tempdir()?;
    let pem = dir.path().join("public.pem");
    std::fs::write(&pem, &first)?;
    for base in &bases {
        let export = http
            .get(format!("{base}/v1/audit/export"))
            .bearer_auth(token)
            .send()
            .await?
            .bytes()
            .await?;
        let lines = crate::audit::lines_of(&export);
        let (ok, out) = crate::audit::verify_lines(dir.path(), &lines, &pem);
        assert!(ok, "{base}: {out}");
    }
    Ok(())
}

/// A child process killed when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Wrap budgets across nodes: data keys asked of all three nodes at once reserve wraps in the
/// database, and each version past its budget (`rotate_after_wraps = 40`) is rotated once, by
/// the node holding the lifecycle lease, whichever node's reservations crossed it: versions are
/// contiguous, and every version but the primary was rotated only after its budget was used.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrap_budgets_hold_and_rotate_once_across_nodes() -> anyhow::Result<()> {
    let (mut d, db) = shared_deployment_with(
        "rotate_after_wraps = 40\nwrap_reservation_block = 5\nrewrap_after_rotation = false",
    )
    .await?;
    let mut nodes = Vec::new();
    for n in 1..=3 {
        nodes.push(Arc::new(start_node(&mut d, n).await?));
    }
    let key = nodes[0].create_key("budget").await;
    let key_id = key["id"].as_str().unwrap().to_owned();
    // The load goes to the two nodes that do NOT hold the lifecycle lease: their crossings must
    // still be rotated (by the holder).
    let holder = loop {
        let rows = db.query("SELECT holder FROM leases WHERE name = 'lifecycle'", &[])?;
        if let Some(r) = rows.first() {
            break r[0]
                .as_text()
                .split('/')
                .next()
                .unwrap_or_default()
                .to_owned();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut tasks = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        if format!("node-{}", i + 1) == holder {
            continue;
        }
        let n = Arc::clone(n);
        tasks.push(tokio::spawn(async move {
            let mut versions = Vec::new();
            for _ in 0..90 {
                let r = n.post("/v1/keys/budget/datakey", json!({})).await;
                versions.push(r.ok()["key_version"].as_u64().unwrap());
                if i == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            versions
        }));
    }
    let mut used = Vec::new();
    for t in tasks {
        used.extend(t.await?);
    }
    // The last crossing is rotated within a few lifecycle ticks.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let rows = db.query(
        "SELECT version, wraps_reserved FROM key_versions WHERE key_id = $1 ORDER BY version",
        &[crate::common::db::Cell::Text(key_id.clone())],
    )?;
    let versions: Vec<i64> = rows.iter().map(|r| r[0].as_i64()).collect();
    let expected: Vec<i64> = (1..=versions.len() as i64).collect();
    assert_eq!(versions, expected, "versions are not contiguous");
    assert!(
        versions.len() >= 2,
        "180 wraps at a budget of 40 never rotated"
    );
    // Every crossing was rotated: the primary is within its budget once the load stopped.
    let primary = &rows[rows.len() - 1];
    assert!(
        primary[1].as_i64() < 40,
        "the primary version {} is past its budget ({} reserved) and was not rotated",
        primary[0].as_i64(),
        primary[1].as_i64()
    );
    for r in &rows[..rows.len() - 1] {
        assert!(
            r[1].as_i64() >= 40,
            "version {} was rotated before its budget was used ({} reserved): a rotation ran twice",
            r[0].as_i64(),
            r[1].as_i64()
        );
    }
    // Every data key named a version that existed, and all three nodes' wraps were counted.
    let reserved: i64 = rows.iter().map(|r| r[1].as_i64()).sum();
    assert!(
        reserved >= used.len() as i64,
        "{reserved} reserved for {} wraps",
        used.len()
    );
    Ok(())
}

/// Heavy concurrent auditing on three nodes at once (8 clients per node): every request gets
/// its record (no `audit_unavailable` from writers racing for sequence numbers), and the chain
/// they made together verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_busy_nodes_share_one_audit_chain() -> anyhow::Result<()> {
    let (mut d, _db) = shared_deployment().await?;
    let mut nodes = Vec::new();
    for n in 1..=3 {
        nodes.push(Arc::new(start_node(&mut d, n).await?));
    }
    nodes[0].create_key("busy").await;
    let mut tasks = Vec::new();
    for n in &nodes {
        for _ in 0..8 {
            let n = Arc::clone(n);
            tasks.push(tokio::spawn(async move {
                let mut failures = Vec::new();
                for _ in 0..40 {
                    let r = n.post("/v1/keys/busy/datakey", json!({})).await;
                    if !r.status.is_success() {
                        failures.push(r.body.to_string());
                    }
                }
                failures
            }));
        }
    }
    let mut failures = Vec::new();
    for t in tasks {
        failures.extend(t.await?);
    }
    assert!(
        failures.is_empty(),
        "{} of 960 failed, e.g. {}",
        failures.len(),
        failures[0]
    );
    let dir = tempfile::tempdir()?;
    let (export, pem) = crate::audit::export_to(&nodes[2], dir.path(), "").await?;
    let lines = crate::audit::lines_of(&export);
    let (ok, out) = crate::audit::verify_lines(dir.path(), &lines, &pem);
    assert!(ok, "{out}");
    for node in ["node-1", "node-2", "node-3"] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("\"node\":\"{node}\""))),
            "no record of {node} in the export"
        );
    }
    Ok(())
}

/// A TPM key's scheduled rotation runs on the node whose TPM holds it even while another node
/// holds the lifecycle lease (that node cannot reach the TPM), and runs once; a token key's runs
/// once on the lease holder. The clock jump reaches both nodes through the debug build's test
/// clock. Readiness of the TPM node lists the key; the node without a TPM lists none.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tpm_keys_duties_run_on_its_node_whoever_holds_the_lease() -> anyhow::Result<()> {
    let (mut d, db) = shared_deployment().await?;
    let tpm = crate::common::swtpm::Swtpm::start()?;
    let clock = d.path().join("clock-offset");
    std::fs::write(&clock, "0")?;
    let env = |n: usize| {
        vec![
            ("CUSTODIAN__AUDIT__NODE".to_owned(), format!("node-{n}")),
            (
                "CUSTODIAN_TEST_CLOCK_OFFSET_FILE".to_owned(),
                clock.display().to_string(),
            ),
        ]
    };
    // Node 2 (no TPM) starts first and takes the lifecycle lease.
    d.env = env(2);
    let n2 = d.start().await?;
    let holder = || -> anyhow::Result<Option<String>> {
        Ok(db
            .query("SELECT holder FROM leases WHERE name = 'lifecycle'", &[])?
            .first()
            .map(|r| {
                r[0].as_text()
                    .split('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            }))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while holder()?.as_deref() != Some("node-2") {
        anyhow::ensure!(
            Instant::now() < deadline,
            "node 2 never took the lifecycle lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    d.env = env(1);
    d.env.push(("CUSTODIAN__TPM__TCTI".to_owned(), tpm.tcti()));
    let n1 = d.start().await?;

    let created = n1
        .post("/v1/keys", json!({ "name": "in-tpm-1", "backend": "tpm" }))
        .await;
    assert_eq!(created.status.as_u16(), 201, "{}", created.body);
    let tpm_key_id = created.body["id"].as_str().unwrap().to_owned();
    let token_key_id = n1.create_key("in-token").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for name in ["in-tpm-1", "in-token"] {
        n1.send_json(
            Method::PATCH,
            &format!("/v1/keys/{name}"),
            json!({ "rotation_period": "1d" }),
        )
        .await
        .ok();
    }
    // Readiness: node 1 serves the TPM key, node 2 has no TPM and lists nothing.
    let listed = within(Duration::from_secs(5), || async {
        n1.get_public("/v1/health/ready").await.body["tpm_keys"] == json!(["in-tpm-1"])
    })
    .await;
    assert!(
        listed.is_some(),
        "{}",
        n1.get_public("/v1/health/ready").await.body
    );
    assert!(n2
        .get_public("/v1/health/ready")
        .await
        .body
        .get("tpm_keys")
        .is_none());

    // A day and an hour later, on both nodes: each key rotates once, each on its own node.
    std::fs::write(&clock, (25 * 3600).to_string())?;
    let rotated = within(Duration::from_secs(20), || async {
        let a = n2.get("/v1/keys/in-tpm-1").await;
        let b = n2.get("/v1/keys/in-token").await;
        a.body["primary_version"] == 2 && b.body["primary_version"] == 2
    })
    .await;
    assert!(
        rotated.is_some(),
        "{} {}",
        n2.get("/v1/keys/in-tpm-1").await.body,
        n2.get("/v1/keys/in-token").await.body
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(holder()?.as_deref(), Some("node-2"), "the lease moved");
    let runs = |key_id: &str| -> anyhow::Result<Vec<String>> {
        Ok(db
            .query(
                "SELECT node FROM audit_records WHERE action = 'key:rotate' AND resource = $1 \
                 AND outcome = 'success' ORDER BY sequence",
                &[crate::common::db::Cell::Text(format!("key/{key_id}"))],
            )?
            .iter()
            .map(|r| r[0].as_text().to_owned())
            .collect())
    };
    assert_eq!(runs(&tpm_key_id)?, ["node-1"], "the TPM key's rotation");
    assert_eq!(runs(&token_key_id)?, ["node-2"], "the token key's rotation");
    for n in [&n1, &n2] {
        assert_eq!(n.get("/v1/keys/in-tpm-1").await.ok()["primary_version"], 2);
    }
    n1.post("/v1/keys/in-tpm-1/datakey", json!({})).await.ok();
    Ok(())
}
