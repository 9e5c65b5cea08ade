//! Bulk re-wrap crash safety: thousands of stored data keys, the server killed with SIGKILL at
//! several points of the job, restarted each time; the job completes, every secret reads back
//! its original value, every stored data key ends under the primary version, and no row was
//! lost or duplicated.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::common::server::Auth;
use crate::common::{Deployment, Server};

const SECRETS: usize = 3000;
const KILLS: usize = 5;

async fn job_done(s: &Server, id: &str) -> (String, u64) {
    let r = s.get(&format!("/v1/jobs/{id}")).await;
    let body = r.ok();
    (
        body["state"].as_str().unwrap().to_owned(),
        body["done"].as_u64().unwrap(),
    )
}

fn db_counts(d: &Deployment) -> anyhow::Result<(u64, u64, u64)> {
    let db = d.db()?;
    let count = |sql: &str| -> anyhow::Result<u64> {
        Ok(u64::try_from(db.query_one(sql, &[])?[0].as_i64())?)
    };
    let rows = count("SELECT COUNT(*) FROM secret_versions")?;
    let off_primary = count(
        "SELECT COUNT(*) FROM secret_versions v JOIN keys k ON k.id = v.key_id
         WHERE v.key_version != k.primary_version",
    )?;
    let distinct = count("SELECT COUNT(DISTINCT path || '#' || version) FROM secret_versions")?;
    Ok((rows, off_primary, distinct))
}

#[tokio::test]
async fn the_rewrap_job_survives_kill_9_at_five_points() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    d.append_config(
        "[secrets]\ndefault_key = \"bulk\"\n[keys]\nrewrap_after_rotation = false\nrewrap_batch_size = 20\nrewrap_pause_ms = 15\nlifecycle_check_interval_ms = 100\n",
    )?;
    let s = Arc::new(d.start().await?);
    s.create_key("bulk").await;

    // A few thousand secrets, written concurrently.
    let mut tasks = Vec::new();
    for w in 0..16 {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            for i in (w..SECRETS).step_by(16) {
                let body = json!({ "value_text": format!("value-{i}") })
                    .to_string()
                    .into_bytes();
                let r = s
                    .raw(
                        Method::PUT,
                        &format!("/v1/secrets/bulk/{i}"),
                        Auth::Admin,
                        Some("application/json"),
                        body,
                    )
                    .await;
                assert_eq!(r.status.as_u16(), 200, "{}", r.body);
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let (rows, _, _) = db_counts(&d)?;
    assert_eq!(rows as usize, SECRETS);

    s.send(Method::POST, "/v1/keys/bulk/rotate").await.ok();
    let job = s.send(Method::POST, "/v1/keys/bulk/rewrap").await;
    assert_eq!(job.status.as_u16(), 202, "{}", job.body);
    let id = job.body["id"].as_str().unwrap().to_owned();
    let mut s = Arc::try_unwrap(s).map_err(|_| anyhow::anyhow!("server still shared"))?;

    // Kill at five distinct points of progress, restarting each time.
    let mut kill_points = Vec::new();
    for k in 1..=KILLS {
        let threshold = (SECRETS * k / (KILLS + 2)) as u64;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (state, done) = job_done(&s, &id).await;
            assert_eq!(
                state, "running",
                "the job finished before kill point {k} ({done} done)"
            );
            if done >= threshold {
                kill_points.push(done);
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no progress to {threshold}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        s.kill();
        let (rows, _, distinct) = db_counts(&d)?;
        assert_eq!(
            (rows as usize, distinct as usize),
            (SECRETS, SECRETS),
            "rows lost or duplicated at kill {k}"
        );
        s = d.start().await?;
    }
    kill_points.dedup();
    assert_eq!(
        kill_points.len(),
        KILLS,
        "kill points were not distinct: {kill_points:?}"
    );

    // The job completes by itself after the last restart.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let done = loop {
        let (state, done) = job_done(&s, &id).await;
        if state == "completed" {
            break done;
        }
        assert_eq!(state, "running");
        assert!(
            tokio::time::Instant::now() < deadline,
            "job did not complete"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        done as usize, SECRETS,
        "each stored data key was re-wrapped exactly once"
    );
    let (rows, off_primary, distinct) = db_counts(&d)?;
    assert_eq!(
        (rows as usize, distinct as usize, off_primary),
        (SECRETS, SECRETS, 0)
    );
    // The job's trail: started, one event per committed batch adding up to every item, completed.
    let trail = s.get(&format!("/v1/jobs/{id}/events")).await;
    let events = trail.ok()["events"].as_array().unwrap().clone();
    assert_eq!(events.first().unwrap()["kind"], "started");
    assert_eq!(events.last().unwrap()["kind"], "completed");
    let moved: u64 = events
        .iter()
        .filter(|e| e["kind"] == "batch")
        .map(|e| e["moved"].as_u64().unwrap())
        .sum();
    assert_eq!(
        moved as usize, SECRETS,
        "the trail accounts for every re-wrapped item"
    );
    assert!(events
        .windows(2)
        .all(|w| w[0]["seq"].as_u64() < w[1]["seq"].as_u64()));
    s.get("/v1/jobs/nope/events")
        .await
        .assert_error(404, "job_not_found");
    let versions = s.get("/v1/keys/bulk/versions").await;
    assert_eq!(versions.ok()["versions"][0]["stored_data_keys"], 0);
    assert_eq!(
        versions.body["versions"][1]["stored_data_keys"]
            .as_u64()
            .unwrap() as usize,
        SECRETS
    );

    // Every secret reads back its original value.
    let s = Arc::new(s);
    let mut tasks = Vec::new();
    for w in 0..16 {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            for i in (w..SECRETS).step_by(16) {
                let r = s.get(&format!("/v1/secrets/bulk/{i}?text=true")).await;
                assert_eq!(r.ok()["value_text"], format!("value-{i}"), "secret {i}");
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok(())
}
