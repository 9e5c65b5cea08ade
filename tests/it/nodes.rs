//! Several nodes: three `custodian serve` processes on one PostgreSQL database and ONE SoftHSM2
//! token directory (every node loads `libsofthsm2.so` on the same `SOFTHSM2_CONF`, standing in
//! for a network HSM). Every node serves every request; what one node changes, the others honour
//! within a second; their audit records form one chain that verifies offline; background duties
//! run on one node at a time; a node killed with SIGKILL at random moments loses nothing.

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
    d.append_config("[keys]\nlifecycle_check_interval_ms = 1000")?;
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
        assert!(took.is_some(), "a key disabled on node 1 was still used after 1 s");
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
    let took = within(Duration::from_secs(1), || async { as_user(&n1).await == 403 }).await;
    assert!(took.is_some(), "a narrowed policy was not honoured on node 1 within 1 s");
    let tokens = n1.get("/v1/tokens?principal=user-1").await;
    let token_id = tokens.ok()["tokens"][0]["id"].as_str().unwrap().to_owned();
    let r = n1.send(Method::DELETE, &format!("/v1/tokens/{token_id}")).await;
    assert!(r.status.is_success(), "{}", r.body);
    let took = within(Duration::from_secs(1), || async { as_user(&n2).await == 401 }).await;
    assert!(took.is_some(), "a token revoked on node 1 still worked on node 2 after 1 s");

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
            let r = n.get(&format!("/v1/secrets/load/{}-{j}", (i + 1) % 3)).await;
            assert_eq!(r.ok()["value"], b64(b"19"));
            assert_eq!(r.ok()["version"], 20);
        }
    }
    let dir = tempfile::tempdir()?;
    let (export, pem) = crate::audit::export_to(&nodes[1], dir.path(), "").await?;
    let lines = crate::audit::lines_of(&export);
    let (ok, out) = crate::audit::verify_lines(dir.path(), &lines, &pem);
    assert!(ok, "the export of three nodes' records does not verify: {out}");
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
