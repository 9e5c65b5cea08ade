//! Wall-clock jumps, forward and back, through the debug build's test clock
//! (`CUSTODIAN_TEST_CLOCK_OFFSET_FILE`, see `src/clock.rs`): token expiry, scheduled key
//! rotation, key deletion dates and the audit chain behave as `docs/lifecycle.md#clock-jumps`
//! says, with no restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::audit::{export_to, lines_of, verify_lines};
use crate::common::server::{Auth, Reply};
use crate::common::{Deployment, Server};

const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;

/// Moves the service's clock to `offset` seconds from the host's and waits until the server
/// has read it (it polls every 50 ms).
async fn jump(file: &Path, offset: i64) {
    std::fs::write(file, offset.to_string()).expect("offset file written");
    tokio::time::sleep(Duration::from_millis(300)).await;
}

fn time_of(v: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(v.as_str().expect("a time"), &Rfc3339).expect("RFC 3339")
}

async fn key(s: &Server, name: &str) -> Value {
    s.get(&format!("/v1/keys/{name}")).await.ok().clone()
}

async fn as_token(s: &Server, token: &str, path: &str) -> Reply {
    let header = format!("Bearer {token}");
    s.raw(Method::GET, path, Auth::Header(&header), None, Vec::new())
        .await
}

/// Polls `key` until `done` holds or `within` passes; returns the last view.
async fn key_until(
    s: &Server,
    name: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + within;
    loop {
        let k = key(s, name).await;
        if done(&k) || std::time::Instant::now() > deadline {
            return k;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn offset_file(d: &mut Deployment) -> PathBuf {
    let file = d.path().join("clock-offset");
    std::fs::write(&file, "0").expect("offset file written");
    d.env.push((
        "CUSTODIAN_TEST_CLOCK_OFFSET_FILE".into(),
        file.display().to_string(),
    ));
    file
}

#[tokio::test]
async fn clock_jumps_forward_and_back_move_expiry_rotation_and_deletion_as_documented(
) -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let clock = offset_file(&mut d);
    d.append_config("[keys]\nlifecycle_check_interval_ms = 100\n")?;
    let s = d.start().await?;

    s.create_key("rotating").await;
    let k = s
        .send_json(
            Method::PATCH,
            "/v1/keys/rotating",
            json!({ "rotation_period": "1d" }),
        )
        .await;
    let first_due = time_of(&k.ok()["next_rotation_at"]);
    s.create_key("doomed").await;
    let doomed = s
        .post(
            "/v1/keys/doomed/schedule-deletion",
            json!({ "pending_days": 7 }),
        )
        .await;
    let deletion_date = time_of(&doomed.ok()["deletion_date"]);
    s.post(
        "/v1/principals",
        json!({ "name": "reader", "policies": ["admin"] }),
    )
    .await
    .ok();
    let minted = s
        .post("/v1/tokens", json!({ "principal": "reader", "ttl": "1h" }))
        .await;
    let token = minted.ok()["token"].as_str().unwrap().to_owned();
    as_token(&s, &token, "/v1/keys/rotating").await.ok();

    // +2 h: the token has expired; nothing is due yet.
    jump(&clock, 2 * HOUR).await;
    as_token(&s, &token, "/v1/keys/rotating")
        .await
        .assert_error(401, "token_expired");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(key(&s, "rotating").await["primary_version"], 1);
    assert_eq!(key(&s, "doomed").await["state"], "pending_deletion");

    // Back to the host's time: expiry is a date compared with the clock, so the token is
    // accepted again until the clock passes it (documented; revoke to end a token for good).
    jump(&clock, 0).await;
    as_token(&s, &token, "/v1/keys/rotating").await.ok();

    // +25 h: the rotation is due and runs once; the next one is a period after the rotation.
    jump(&clock, 25 * HOUR).await;
    let k = key_until(&s, "rotating", Duration::from_secs(10), |k| {
        k["primary_version"] == 2
    })
    .await;
    assert_eq!(k["primary_version"], 2, "{k}");
    let second_due = time_of(&k["next_rotation_at"]);
    let shifted_now = OffsetDateTime::now_utc() + time::Duration::seconds(25 * HOUR);
    assert!(
        second_due > first_due + time::Duration::seconds(DAY - 60)
            && (second_due - shifted_now).whole_seconds().abs() <= DAY + 60,
        "next rotation {second_due}, first {first_due}, service now ≈ {shifted_now}"
    );
    assert_eq!(key(&s, "doomed").await["state"], "pending_deletion");

    // +10 d: several periods passed, yet one rotation (no catch-up burst); the deletion date
    // has passed, so the key is destroyed.
    jump(&clock, 10 * DAY).await;
    let doomed = key_until(&s, "doomed", Duration::from_secs(10), |k| {
        k["state"] == "destroyed"
    })
    .await;
    assert_eq!(doomed["state"], "destroyed", "{doomed}");
    assert!(OffsetDateTime::now_utc() + time::Duration::seconds(10 * DAY) > deletion_date);
    let k = key_until(&s, "rotating", Duration::from_secs(10), |k| {
        k["primary_version"] == 3
    })
    .await;
    assert_eq!(k["primary_version"], 3, "{k}");
    let third_due = time_of(&k["next_rotation_at"]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        key(&s, "rotating").await["primary_version"],
        3,
        "a catch-up rotation ran"
    );

    // Back to the host's time: nothing runs again, nothing comes back; the schedule keeps its
    // absolute date (now 11 days away) rather than firing early.
    jump(&clock, 0).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let k = key(&s, "rotating").await;
    assert_eq!(k["primary_version"], 3, "{k}");
    assert_eq!(time_of(&k["next_rotation_at"]), third_due);
    assert_eq!(key(&s, "doomed").await["state"], "destroyed");

    // Records written while the clock went back and forth still form a chain that verifies:
    // the chain orders by sequence, never by time.
    let (export, pem) = export_to(&s, d.path(), "").await?;
    let lines = lines_of(&export);
    let times: Vec<String> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["time"].as_str().map(str::to_owned))
        .collect();
    assert!(
        times.windows(2).any(|w| w[1] < w[0]),
        "no record carries an earlier time than the one before it: the jumps did not reach the log"
    );
    let (ok, out) = verify_lines(d.path(), &lines, &pem);
    assert!(ok, "{out}");
    Ok(())
}
