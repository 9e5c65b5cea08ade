//! The service core's audit guarantees, black-box (issue 13): background work is recorded as
//! the `system` principal naming what it changed, and no change to stored state stands without
//! a record — a state-changing request whose announcement cannot be written changes nothing.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::server::wait_job_done;
use crate::common::{b64, Deployment, Server};

/// Every audit record, in order.
async fn all_records(s: &Server) -> Vec<Value> {
    crate::throttle::all_after(s, 0).await
}

/// The records of background work `worker` doing `action`, each with the announcement that
/// preceded it: (announcement, final record).
async fn background(s: &Server, worker: &str, action: &str) -> Vec<(Value, Value)> {
    let all = all_records(s).await;
    let mine: Vec<&Value> = all
        .iter()
        .filter(|r| {
            r["principal"] == "system"
                && r["credential"] == format!("worker:{worker}")
                && r["action"] == action
        })
        .collect();
    let mut out = Vec::new();
    for fin in mine.iter().filter(|r| r["outcome"] != "pending") {
        let pending = mine
            .iter()
            .find(|p| p["outcome"] == "pending" && p["request_id"] == fin["request_id"])
            .unwrap_or_else(|| panic!("no announcement before {fin}"));
        assert!(pending["sequence"].as_u64() < fin["sequence"].as_u64());
        assert_eq!(fin["route"], "(background)");
        assert_eq!(fin["method"], "-");
        assert!(fin["source"].is_null());
        out.push(((*pending).clone(), (*fin).clone()));
    }
    out
}

/// Polls `check` until it holds (at most 20 s).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn background_work_is_recorded_as_the_system_principal() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    d.append_config(
        "[secrets]\ndefault_key = \"bg\"\nmin_rotate_every = \"1s\"\nrotation_check_interval_ms = 200\n\
         [keys]\nmin_rotation_period = \"1s\"\nlifecycle_check_interval_ms = 100\nrewrap_pause_ms = 0\n",
    )?;
    let s = d.start().await?;
    let key = s.create_key("bg").await;
    let key_id = key["id"].as_str().unwrap().to_owned();

    // A generated secret rotates by itself: the system writes version 2.
    s.send_json(
        Method::PUT,
        "/v1/secrets/bg/gen/metadata",
        json!({ "generate": { "length": 16, "charset": "hex", "rotate_every": "1s" } }),
    )
    .await
    .ok();
    eventually("generated secret rotated", || async {
        !background(&s, "secret-rotation", "secret:rotate")
            .await
            .is_empty()
    })
    .await;
    let (pending, fin) = &background(&s, "secret-rotation", "secret:rotate").await[0];
    assert_eq!(fin["outcome"], "success");
    assert_eq!(fin["resource"], "secret/bg/gen");
    assert_eq!(
        fin["key_id"],
        key_id.as_str(),
        "the key that wrapped it: {fin}"
    );
    assert!(fin["details"]["secret_version"]
        .as_str()
        .is_some_and(|v| v != "1"));
    assert_eq!(
        pending["details"]["secret_version"],
        fin["details"]["secret_version"]
    );
    s.send_json(
        Method::PUT,
        "/v1/secrets/bg/gen/metadata",
        json!({ "generate": null }),
    )
    .await
    .ok();

    // A scheduled rotation makes version 2; the re-wrap it starts moves the secret's versions.
    s.send_json(
        Method::PATCH,
        "/v1/keys/bg",
        json!({ "rotation_period": "1s" }),
    )
    .await
    .ok();
    eventually("scheduled rotation", || async {
        !background(&s, "lifecycle", "key:rotate").await.is_empty()
    })
    .await;
    s.send_json(
        Method::PATCH,
        "/v1/keys/bg",
        json!({ "rotation_period": null }),
    )
    .await
    .ok();
    let (_, fin) = &background(&s, "lifecycle", "key:rotate").await[0];
    assert_eq!(fin["outcome"], "success");
    assert_eq!(fin["resource"], format!("key/{key_id}"));
    assert_eq!(fin["details"]["version_created"], "2", "{fin}");
    assert!(
        fin["details"]["job_id"].is_string(),
        "the re-wrap it started: {fin}"
    );
    wait_job_done(&s, "bg").await;
    let batches = background(&s, "rewrap", "key:rewrap-batch").await;
    assert!(!batches.is_empty());
    let moved: u64 = batches
        .iter()
        .filter_map(|(_, f)| f["details"]["items_rewrapped"].as_str())
        .map(|n| n.parse::<u64>().unwrap())
        .sum();
    assert!(moved >= 1, "{batches:?}");
    assert!(
        batches
            .iter()
            .any(|(_, f)| f["details"]["job_state"] == "completed"),
        "the job's end is recorded: {batches:?}"
    );

    // A deletion date that has passed: the worker destroys the key and its device objects.
    let doomed = s.create_key("doomed").await;
    let doomed_id = doomed["id"].as_str().unwrap().to_owned();
    s.post(
        "/v1/keys/doomed/schedule-deletion",
        json!({ "pending_days": 7 }),
    )
    .await
    .ok();
    d.db()?.execute(
        "UPDATE keys SET deletion_date = 0 WHERE id = $1",
        &[doomed_id.as_str().into()],
    )?;
    eventually("due deletion", || async {
        background(&s, "lifecycle", "key:delete")
            .await
            .iter()
            .any(|(_, f)| f["resource"] == format!("key/{doomed_id}"))
    })
    .await;
    let deleted = background(&s, "lifecycle", "key:delete").await;
    let (_, fin) = deleted
        .iter()
        .find(|(_, f)| f["resource"] == format!("key/{doomed_id}"))
        .unwrap();
    assert_eq!(fin["outcome"], "success");
    assert_eq!(fin["details"]["versions_destroyed"], "1", "{fin}");
    let k = s.get("/v1/keys/doomed").await;
    assert_eq!(k.ok()["state"], "destroyed");

    // Negative twin: a worker that finds nothing to do records nothing; every system record
    // is one of the kinds above, each preceded by its announcement.
    let all = all_records(&s).await;
    for r in all.iter().filter(|r| r["principal"] == "system") {
        assert!(
            [
                "worker:lifecycle",
                "worker:rewrap",
                "worker:secret-rotation"
            ]
            .contains(&r["credential"].as_str().unwrap_or_default()),
            "{r}"
        );
    }
    let rotations = background(&s, "lifecycle", "key:rotate").await.len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        background(&s, "lifecycle", "key:rotate").await.len(),
        rotations,
        "no rotation is due any more, so no record"
    );
    // The chain with the system records verifies offline.
    let export = s.get_bytes("/v1/audit/export").await;
    assert_eq!(export.0.as_u16(), 200);
    Ok(())
}

#[tokio::test]
async fn wrap_budget_rotations_and_device_destroy_retries_are_recorded() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    d.append_config(
        "[keys]\nrotate_after_wraps = 20\nwrap_reservation_block = 10\nlifecycle_check_interval_ms = 100\n",
    )?;
    let s = d.start().await?;
    let key = s.create_key("busy").await;
    let id = key["id"].as_str().unwrap().to_owned();
    // Past its wrap budget, the primary version is rotated by the lifecycle worker.
    for _ in 0..25 {
        s.post("/v1/keys/busy/datakey", json!({})).await.ok();
    }
    eventually("wrap-budget rotation", || async {
        !background(&s, "lifecycle", "key:rotate").await.is_empty()
    })
    .await;
    let (pending, fin) = &background(&s, "lifecycle", "key:rotate").await[0];
    assert_eq!(fin["resource"], format!("key/{id}"));
    assert_eq!(fin["outcome"], "success");
    assert_eq!(fin["details"]["version_created"], "2");
    assert_eq!(pending["details"]["version_created"], "2");

    // A device destruction left pending (as after a device failure) is retried and recorded.
    s.post("/v1/keys/busy/versions/1/destroy", json!({}))
        .await
        .ok();
    assert!(background(&s, "lifecycle", "key:destroy-device-object")
        .await
        .is_empty());
    // As a destruction whose request failed more than the grace period ago: one marked within it
    // is left to its request, which is why nothing above was retried.
    d.db()?.execute(
        "UPDATE key_versions SET device_object = 'destroy_pending',
             destroyed_at = '2026-01-01T00:00:00Z' WHERE key_id = $1 AND version = 1",
        &[id.as_str().into()],
    )?;
    eventually("device destroy retried", || async {
        !background(&s, "lifecycle", "key:destroy-device-object")
            .await
            .is_empty()
    })
    .await;
    let (_, fin) = &background(&s, "lifecycle", "key:destroy-device-object").await[0];
    assert_eq!(fin["resource"], format!("key/{id}"));
    assert_eq!(fin["details"]["version_destroyed"], "1");
    assert_eq!(fin["outcome"], "success");
    Ok(())
}

#[tokio::test]
async fn expired_version_keks_leaving_memory_are_recorded() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    d.append_config("[keys]\nkek_cache_ttl = \"1s\"\n")?;
    let s = d.start().await?;
    let cached = s
        .post("/v1/keys", json!({ "name": "cached", "mode": "cached" }))
        .await;
    let id = cached.ok()["id"].as_str().unwrap().to_owned();
    s.create_key("direct").await;
    // One use of each loads the cached key's version-KEK; the direct key has none.
    for k in ["cached", "direct"] {
        s.post(&format!("/v1/keys/{k}/datakey"), json!({}))
            .await
            .ok();
    }
    // An expiry is recorded after the fact (the KEK has already left memory): one record,
    // no announcement.
    let expiries = || async {
        all_records(&s)
            .await
            .into_iter()
            .filter(|r| r["credential"] == "worker:kek-cache" && r["action"] == "kek:expire")
            .collect::<Vec<Value>>()
    };
    eventually("KEK expiry recorded", || async {
        !expiries().await.is_empty()
    })
    .await;
    let found = expiries().await;
    assert_eq!(found.len(), 1, "only the cached key had a KEK: {found:?}");
    let fin = &found[0];
    assert_eq!(fin["principal"], "system");
    assert_eq!(fin["resource"], format!("key/{id}"));
    assert_eq!(fin["key_id"], id.as_str());
    assert_eq!(fin["key_version"], 1);
    assert_eq!(fin["outcome"], "success");
    assert_eq!(fin["details"]["kek_expired"], "1");
    Ok(())
}

#[tokio::test]
async fn a_change_whose_record_cannot_be_written_is_not_made() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    s.create_key("k").await;
    s.send_json(
        Method::PUT,
        "/v1/secrets/app/db",
        json!({ "value_text": "v1", "key": "k" }),
    )
    .await
    .ok();
    let before = s.get("/v1/keys/k").await.ok().clone();
    d.db()?
        .refuse_inserts("audit_records", "audit storage refused")?;
    let changes: Vec<(Method, &str, Option<Value>)> = vec![
        (Method::POST, "/v1/keys", Some(json!({ "name": "never" }))),
        (Method::POST, "/v1/keys/k/rotate", None),
        (Method::POST, "/v1/keys/k/disable", None),
        (
            Method::PATCH,
            "/v1/keys/k",
            Some(json!({ "description": "changed" })),
        ),
        (
            Method::POST,
            "/v1/aliases",
            Some(json!({ "name": "al", "key": "k" })),
        ),
        (
            Method::PUT,
            "/v1/secrets/app/db",
            Some(json!({ "value_text": "v2" })),
        ),
        (
            Method::PUT,
            "/v1/secrets/app/new",
            Some(json!({ "value_text": "x", "key": "k" })),
        ),
        (Method::DELETE, "/v1/secrets/app/db", None),
        (
            Method::POST,
            "/v1/principals",
            Some(json!({ "name": "p-never" })),
        ),
        (
            Method::PUT,
            "/v1/policies/pol-never",
            Some(
                json!({ "statements": [{ "effect": "allow", "actions": ["*"], "resources": ["*"] }] }),
            ),
        ),
    ];
    for (method, path, body) in &changes {
        let r = match body {
            Some(b) => s.send_json(method.clone(), path, b.clone()).await,
            None => s.send(method.clone(), path).await,
        };
        r.assert_error(503, "audit_unavailable");
    }
    d.db()?.allow_inserts("audit_records")?;

    // Nothing of it was made.
    s.get("/v1/keys/never")
        .await
        .assert_error(404, "key_not_found");
    let after = s.get("/v1/keys/k").await;
    assert_eq!(after.ok()["state"], "enabled");
    assert_eq!(after.body["primary_version"], before["primary_version"]);
    assert_eq!(after.body["description"], before["description"]);
    s.get("/v1/aliases/al")
        .await
        .assert_error(404, "alias_not_found");
    let meta = s.get("/v1/secrets/app/db/metadata").await;
    assert_eq!(meta.ok()["current_version"], 1, "{}", meta.body);
    assert_eq!(meta.body["versions"][0]["state"], "live");
    s.get("/v1/secrets/app/new/metadata")
        .await
        .assert_error(404, "secret_not_found");
    s.get("/v1/principals/p-never")
        .await
        .assert_error(404, "principal_not_found");
    s.get("/v1/policies/pol-never")
        .await
        .assert_error(404, "policy_not_found");
    // No device object was made for the refused key (the custody report lists every root key).
    let custody = s.get("/v1/custody/report").await;
    let text = custody.ok().to_string();
    assert!(
        !text.contains("never"),
        "a refused key left a trace: {text}"
    );

    // Negative twin: with the log writable again, the same changes are made and recorded.
    let r = s.post("/v1/keys", json!({ "name": "never" })).await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.body);
    let r = s
        .post("/v1/keys/k/encrypt", json!({ "plaintext": b64(b"x") }))
        .await;
    r.ok();
    Ok(())
}
