//! Key lifecycle over HTTP: rotation and old blobs, re-encrypt, scheduled rotation across a
//! restart, the wrap budget, the state machine, version retirement and destruction, deletion,
//! and aliases.

use std::time::Duration;

use cryptoki::object::{Attribute, ObjectClass};
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::server::Reply;
use crate::common::{b64, inproc, unb64, Deployment, Server};

async fn post_empty(s: &Server, path: &str) -> Reply {
    s.send(Method::POST, path).await
}

async fn patch(s: &Server, path: &str, body: Value) -> Reply {
    s.send_json(Method::PATCH, path, body).await
}

async fn encrypt(s: &Server, key: &str, data: &[u8], context: Value) -> String {
    let r = s
        .post(
            &format!("/v1/keys/{key}/encrypt"),
            json!({ "plaintext": b64(data), "context": context }),
        )
        .await;
    r.ok()["ciphertext"].as_str().unwrap().to_owned()
}

async fn decrypt(s: &Server, ct: &str, context: Value) -> Reply {
    s.post(
        "/v1/decrypt",
        json!({ "ciphertext": ct, "context": context }),
    )
    .await
}

async fn server() -> anyhow::Result<(Deployment, Server)> {
    let mut d = Deployment::new()?;
    d.append_config("[keys]\nmin_rotation_period = \"2s\"\nlifecycle_check_interval_ms = 200\n")?;
    let s = d.start().await?;
    Ok((d, s))
}

#[tokio::test]
async fn rotation_keeps_old_blobs_readable_and_wraps_new_ones_under_the_new_version(
) -> anyhow::Result<()> {
    let (_d, s) = server().await?;
    s.create_key("rot").await;
    let old = encrypt(&s, "rot", b"before rotation", json!({"a": "1"})).await;
    let rotated = post_empty(&s, "/v1/keys/rot/rotate").await;
    let k = rotated.ok();
    assert_eq!(k["primary_version"], 2);
    assert_eq!(k["versions"][0]["state"], "active");
    assert_eq!(k["versions"][1]["state"], "primary");
    let new = encrypt(&s, "rot", b"after rotation", json!({})).await;
    assert_eq!(
        unb64(&new)[22..26],
        2u32.to_be_bytes(),
        "new blobs name version 2"
    );
    let r = decrypt(&s, &old, json!({"a": "1"})).await;
    assert_eq!(r.ok()["key_version"], 1);
    assert_eq!(
        unb64(r.body["plaintext"].as_str().unwrap()),
        b"before rotation"
    );
    assert_eq!(
        unb64(
            decrypt(&s, &new, json!({})).await.ok()["plaintext"]
                .as_str()
                .unwrap()
        ),
        b"after rotation"
    );
    let dk = s.post("/v1/keys/rot/datakey", json!({})).await;
    assert_eq!(dk.ok()["key_version"], 2);
    // Each version is its own device object.
    let versions = s.get("/v1/keys/rot/versions").await;
    assert_eq!(versions.ok()["versions"].as_array().unwrap().len(), 2);
    Ok(())
}

#[tokio::test]
async fn reencrypt_across_versions_and_keys_keeps_or_changes_the_context() -> anyhow::Result<()> {
    let (_d, s) = server().await?;
    s.create_key("src").await;
    s.create_key("dst").await;
    let ctx = json!({"tenant": "acme"});
    let old = encrypt(&s, "src", b"moving data", ctx.clone()).await;
    post_empty(&s, "/v1/keys/src/rotate").await.ok();

    // Same key, new version, context kept.
    let r = s
        .post(
            "/v1/reencrypt",
            json!({ "ciphertext": old, "context": ctx }),
        )
        .await;
    let body = r.ok().clone();
    assert!(
        body.get("plaintext").is_none(),
        "reencrypt never returns plaintext"
    );
    assert_eq!(body["key_version"], 2);
    assert_eq!(body["source_key_version"], 1);
    let moved = body["ciphertext"].as_str().unwrap();
    assert_eq!(
        unb64(
            decrypt(&s, moved, ctx.clone()).await.ok()["plaintext"]
                .as_str()
                .unwrap()
        ),
        b"moving data"
    );
    decrypt(&s, moved, json!({}))
        .await
        .assert_error(400, "decryption_failed");

    // Another key, new context.
    let new_ctx = json!({"tenant": "acme", "moved": "yes"});
    let r = s.post("/v1/reencrypt", json!({ "ciphertext": old, "context": ctx, "destination_key": "dst", "destination_context": new_ctx })).await;
    let dst = s.get("/v1/keys/dst").await;
    assert_eq!(r.ok()["key_id"], dst.ok()["id"]);
    let moved = r.body["ciphertext"].as_str().unwrap();
    assert_eq!(
        unb64(
            decrypt(&s, moved, new_ctx.clone()).await.ok()["plaintext"]
                .as_str()
                .unwrap()
        ),
        b"moving data"
    );
    decrypt(&s, moved, ctx.clone())
        .await
        .assert_error(400, "decryption_failed");

    // Negative twins: wrong source context, tampered blob, unknown destination.
    s.post(
        "/v1/reencrypt",
        json!({ "ciphertext": old, "context": {"tenant": "evil"} }),
    )
    .await
    .assert_error(400, "decryption_failed");
    let mut bad = unb64(&old);
    *bad.last_mut().unwrap() ^= 1;
    s.post(
        "/v1/reencrypt",
        json!({ "ciphertext": b64(&bad), "context": ctx }),
    )
    .await
    .assert_error(400, "decryption_failed");
    s.post(
        "/v1/reencrypt",
        json!({ "ciphertext": old, "context": ctx, "destination_key": "nope" }),
    )
    .await
    .assert_error(404, "key_not_found");
    s.post(
        "/v1/reencrypt",
        json!({ "ciphertext": old, "destination_context": {"a": 1} }),
    )
    .await
    .assert_error(400, "invalid_context");
    Ok(())
}

#[tokio::test]
async fn the_state_machine_refuses_every_disallowed_transition() -> anyhow::Result<()> {
    let (_d, s) = server().await?;
    s.create_key("sm").await;
    let blob = encrypt(&s, "sm", b"x", json!({})).await;

    // enabled: cancel-deletion is not a transition from here.
    post_empty(&s, "/v1/keys/sm/cancel-deletion")
        .await
        .assert_error(409, "invalid_key_state");
    // enabled → disabled; repeating is a no-op.
    assert_eq!(
        post_empty(&s, "/v1/keys/sm/disable").await.ok()["state"],
        "disabled"
    );
    assert_eq!(
        post_empty(&s, "/v1/keys/sm/disable").await.ok()["state"],
        "disabled"
    );
    // A disabled key neither wraps, unwraps nor rotates.
    s.post("/v1/keys/sm/datakey", json!({}))
        .await
        .assert_error(409, "key_disabled");
    decrypt(&s, &blob, json!({}))
        .await
        .assert_error(409, "key_disabled");
    post_empty(&s, "/v1/keys/sm/rotate")
        .await
        .assert_error(409, "key_disabled");
    post_empty(&s, "/v1/keys/sm/cancel-deletion")
        .await
        .assert_error(409, "invalid_key_state");
    // disabled → enabled.
    assert_eq!(
        post_empty(&s, "/v1/keys/sm/enable").await.ok()["state"],
        "enabled"
    );
    assert_eq!(
        unb64(
            decrypt(&s, &blob, json!({})).await.ok()["plaintext"]
                .as_str()
                .unwrap()
        ),
        b"x"
    );

    // pending_days bounds.
    for days in [0, 6, 31, 365] {
        let r = s
            .post(
                "/v1/keys/sm/schedule-deletion",
                json!({ "pending_days": days }),
            )
            .await;
        r.assert_error(400, "invalid_pending_days");
    }
    s.post(
        "/v1/keys/sm/schedule-deletion",
        json!({ "pending_days": "7" }),
    )
    .await
    .assert_error(400, "invalid_pending_days");
    // enabled → pending_deletion (default 30 days).
    let pending = post_empty(&s, "/v1/keys/sm/schedule-deletion").await;
    assert_eq!(pending.ok()["state"], "pending_deletion");
    let date = time::OffsetDateTime::parse(
        pending.body["deletion_date"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )?;
    let days = (date - time::OffsetDateTime::now_utc()).whole_hours();
    assert!(
        (29 * 24..=30 * 24).contains(&days),
        "deletion in about 30 days, got {days} h"
    );
    // pending_deletion: nothing but cancel-deletion.
    s.post("/v1/keys/sm/datakey", json!({}))
        .await
        .assert_error(409, "key_pending_deletion");
    decrypt(&s, &blob, json!({}))
        .await
        .assert_error(409, "key_pending_deletion");
    post_empty(&s, "/v1/keys/sm/rotate")
        .await
        .assert_error(409, "key_pending_deletion");
    post_empty(&s, "/v1/keys/sm/enable")
        .await
        .assert_error(409, "invalid_key_state");
    post_empty(&s, "/v1/keys/sm/disable")
        .await
        .assert_error(409, "invalid_key_state");
    post_empty(&s, "/v1/keys/sm/schedule-deletion")
        .await
        .assert_error(409, "invalid_key_state");
    // pending_deletion → disabled.
    let cancelled = post_empty(&s, "/v1/keys/sm/cancel-deletion").await;
    assert_eq!(cancelled.ok()["state"], "disabled");
    assert!(cancelled.body.get("deletion_date").is_none());
    // disabled → pending_deletion with a short window, then back.
    let r = s
        .post(
            "/v1/keys/sm/schedule-deletion",
            json!({ "pending_days": 7 }),
        )
        .await;
    assert_eq!(r.ok()["state"], "pending_deletion");
    post_empty(&s, "/v1/keys/sm/cancel-deletion").await.ok();
    post_empty(&s, "/v1/keys/nope/disable")
        .await
        .assert_error(404, "key_not_found");
    Ok(())
}

#[tokio::test]
async fn min_decryption_version_retires_old_versions_without_destroying_them() -> anyhow::Result<()>
{
    let (_d, s) = server().await?;
    s.create_key("retire").await;
    let v1 = encrypt(&s, "retire", b"v1 data", json!({})).await;
    post_empty(&s, "/v1/keys/retire/rotate").await.ok();
    patch(
        &s,
        "/v1/keys/retire",
        json!({ "min_decryption_version": 3 }),
    )
    .await
    .assert_error(400, "invalid_field");
    patch(
        &s,
        "/v1/keys/retire",
        json!({ "min_decryption_version": 0 }),
    )
    .await
    .assert_error(400, "invalid_field");
    let k = patch(
        &s,
        "/v1/keys/retire",
        json!({ "min_decryption_version": 2, "description": "retired v1" }),
    )
    .await;
    assert_eq!(k.ok()["min_decryption_version"], 2);
    assert_eq!(k.body["description"], "retired v1");
    let r = decrypt(&s, &v1, json!({})).await;
    r.assert_error(409, "key_version_below_minimum");
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("min_decryption_version"));
    s.post("/v1/reencrypt", json!({ "ciphertext": v1 }))
        .await
        .assert_error(409, "key_version_below_minimum");
    // Lowering it again restores access: nothing was destroyed.
    patch(
        &s,
        "/v1/keys/retire",
        json!({ "min_decryption_version": 1 }),
    )
    .await
    .ok();
    assert_eq!(
        unb64(
            decrypt(&s, &v1, json!({})).await.ok()["plaintext"]
                .as_str()
                .unwrap()
        ),
        b"v1 data"
    );
    patch(&s, "/v1/keys/retire", json!({ "colour": "red" }))
        .await
        .assert_error(400, "unknown_field");
    Ok(())
}

#[tokio::test]
async fn versions_disable_enable_and_the_primary_is_protected() -> anyhow::Result<()> {
    let (_d, s) = server().await?;
    s.create_key("vers").await;
    let v1 = encrypt(&s, "vers", b"v1", json!({})).await;
    post_empty(&s, "/v1/keys/vers/versions/1/disable")
        .await
        .assert_error(409, "primary_version");
    post_empty(&s, "/v1/keys/vers/versions/1/destroy")
        .await
        .assert_error(409, "primary_version");
    post_empty(&s, "/v1/keys/vers/rotate").await.ok();
    let k = post_empty(&s, "/v1/keys/vers/versions/1/disable").await;
    assert_eq!(k.ok()["versions"][0]["state"], "disabled");
    decrypt(&s, &v1, json!({}))
        .await
        .assert_error(409, "key_version_disabled");
    let k = post_empty(&s, "/v1/keys/vers/versions/1/enable").await;
    assert_eq!(k.ok()["versions"][0]["state"], "active");
    assert_eq!(
        unb64(
            decrypt(&s, &v1, json!({})).await.ok()["plaintext"]
                .as_str()
                .unwrap()
        ),
        b"v1"
    );
    post_empty(&s, "/v1/keys/vers/versions/9/disable")
        .await
        .assert_error(404, "key_version_not_found");
    post_empty(&s, "/v1/keys/vers/versions/x/disable")
        .await
        .assert_error(404, "key_version_not_found");
    post_empty(&s, "/v1/keys/vers/versions/1/explode")
        .await
        .assert_error(404, "route_not_found");
    Ok(())
}

#[tokio::test]
async fn rotation_periods_are_bounded_and_shown() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    s.create_key("sched").await;
    // The default floor is one hour.
    patch(&s, "/v1/keys/sched", json!({ "rotation_period": "59m" }))
        .await
        .assert_error(400, "invalid_field");
    patch(&s, "/v1/keys/sched", json!({ "rotation_period": "soon" }))
        .await
        .assert_error(400, "invalid_field");
    let k = patch(&s, "/v1/keys/sched", json!({ "rotation_period": "90d" })).await;
    assert_eq!(k.ok()["rotation_period"], "90d");
    let next = time::OffsetDateTime::parse(
        k.body["next_rotation_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )?;
    assert!((next - time::OffsetDateTime::now_utc()).whole_days() >= 89);
    let k = patch(&s, "/v1/keys/sched", json!({ "rotation_period": null })).await;
    assert!(k.ok().get("rotation_period").is_none());
    assert!(k.body.get("next_rotation_at").is_none());
    Ok(())
}

#[tokio::test]
async fn scheduled_rotation_runs_exactly_once_across_a_restart() -> anyhow::Result<()> {
    let (mut d, s) = server().await?;
    s.create_key("cron").await;
    let k = patch(&s, "/v1/keys/cron", json!({ "rotation_period": "3s" })).await;
    assert_eq!(k.ok()["rotation_period"], "3s");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let k = s.get("/v1/keys/cron").await;
        if k.ok()["primary_version"].as_u64().unwrap() >= 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no scheduled rotation within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Down for more than two periods: after the restart the overdue rotation runs once.
    s.kill();
    tokio::time::sleep(Duration::from_millis(7000)).await;
    let before = u64::try_from(
        d.db()?
            .query_one("SELECT primary_version FROM keys WHERE name = 'cron'", &[])?[0]
            .as_i64(),
    )?;
    let s = d.start().await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let k = s.get("/v1/keys/cron").await;
    assert_eq!(
        k.ok()["primary_version"].as_u64().unwrap(),
        before + 1,
        "one catch-up rotation: {}",
        k.body
    );
    let next = time::OffsetDateTime::parse(
        k.body["next_rotation_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )?;
    assert!(
        next > time::OffsetDateTime::now_utc(),
        "the schedule moved forward"
    );
    Ok(())
}

#[tokio::test]
async fn the_wrap_budget_rotates_the_key_before_its_limit() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    d.append_config("[keys]\nrotate_after_wraps = 40\nwrap_reservation_block = 10\nlifecycle_check_interval_ms = 100\n")?;
    let s = d.start().await?;
    s.create_key("budget").await;
    for _ in 0..45 {
        s.post("/v1/keys/budget/datakey", json!({})).await.ok();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let k = s.get("/v1/keys/budget").await;
        if k.ok()["primary_version"] == 2 {
            let v1 = &k.body["versions"][0];
            let reserved = v1["wraps_reserved"].as_u64().unwrap();
            assert!(
                (40..=60).contains(&reserved),
                "v1 reserved {reserved} wraps"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no wrap-budget rotation: {}",
            k.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The reservation is durable: a restart does not hand out the same wraps again.
    s.kill();
    let s = d.start().await?;
    s.post("/v1/keys/budget/datakey", json!({})).await.ok();
    let k = s.get("/v1/keys/budget").await;
    assert_eq!(
        k.ok()["versions"][1]["wraps_reserved"].as_u64().unwrap() % 10,
        0
    );
    assert!(k.body["versions"][1]["wraps_reserved"].as_u64().unwrap() >= 10);
    Ok(())
}

#[tokio::test]
async fn aliases_point_and_repoint() -> anyhow::Result<()> {
    let (_d, s) = server().await?;
    let a = s.create_key("alpha").await;
    let b = s.create_key("beta").await;
    let r = s
        .post("/v1/aliases", json!({ "name": "current", "key": "alpha" }))
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.body);
    assert_eq!(r.body["key_id"], a["id"]);
    s.post("/v1/aliases", json!({ "name": "current", "key": "beta" }))
        .await
        .assert_error(409, "alias_exists");
    let dk = s.post("/v1/keys/alias%2Fcurrent/datakey", json!({})).await;
    assert_eq!(dk.ok()["key_id"], a["id"]);
    let r = s
        .send_json(Method::PUT, "/v1/aliases/current", json!({ "key": "beta" }))
        .await;
    assert_eq!(r.ok()["key_id"], b["id"]);
    let dk2 = s.post("/v1/keys/alias%2Fcurrent/datakey", json!({})).await;
    assert_eq!(dk2.ok()["key_id"], b["id"], "the alias moved at once");
    // Data made through the alias before the move still decrypts: the blob names its key.
    assert_eq!(
        decrypt(&s, dk.body["ciphertext"].as_str().unwrap(), json!({}))
            .await
            .ok()["key_id"],
        a["id"]
    );
    let r = s
        .post(
            "/v1/reencrypt",
            json!({ "ciphertext": dk.body["ciphertext"], "destination_key": "alias/current" }),
        )
        .await;
    assert_eq!(r.ok()["key_id"], b["id"]);
    let list = s.get("/v1/aliases").await;
    assert_eq!(list.ok()["aliases"].as_array().unwrap().len(), 1);
    assert_eq!(s.get("/v1/aliases/current").await.ok()["key_id"], b["id"]);
    // Negative twins.
    s.post("/v1/aliases", json!({ "name": "bad name", "key": "alpha" }))
        .await
        .assert_error(400, "invalid_alias_name");
    s.post("/v1/aliases", json!({ "name": "x", "key": "nope" }))
        .await
        .assert_error(404, "key_not_found");
    s.post(
        "/v1/aliases",
        json!({ "name": "x", "key": "alias/current" }),
    )
    .await
    .assert_error(400, "invalid_field");
    s.send_json(Method::PUT, "/v1/aliases/missing", json!({ "key": "beta" }))
        .await
        .assert_error(404, "alias_not_found");
    assert_eq!(
        s.send(Method::DELETE, "/v1/aliases/current")
            .await
            .status
            .as_u16(),
        204
    );
    s.get("/v1/aliases/current")
        .await
        .assert_error(404, "alias_not_found");
    s.post("/v1/keys/alias%2Fcurrent/datakey", json!({}))
        .await
        .assert_error(404, "key_not_found");
    s.send(Method::DELETE, "/v1/aliases/current")
        .await
        .assert_error(404, "alias_not_found");
    Ok(())
}

/// Secrets under key `name` need a default key; this deployment has one.
async fn secrets_server(name: &str, extra: &str) -> anyhow::Result<(Deployment, Server)> {
    let mut d = Deployment::new()?;
    d.append_config(&format!("[secrets]\ndefault_key = \"{name}\"\n[keys]\nlifecycle_check_interval_ms = 100\nrewrap_pause_ms = 0\n{extra}"))?;
    let s = d.start().await?;
    s.create_key(name).await;
    Ok((d, s))
}

async fn put_secret(s: &Server, path: &str, value: &str) {
    s.send_json(
        Method::PUT,
        &format!("/v1/secrets/{path}"),
        json!({ "value_text": value }),
    )
    .await
    .ok();
}

// The in-process token lock is held for the whole test on purpose (see device.rs).
#[allow(clippy::await_holding_lock)]
#[tokio::test]
async fn destruction_is_refused_while_referenced_and_final_once_done() -> anyhow::Result<()> {
    let hsm = inproc::lock();
    let mut d = Deployment::on_existing_token(&hsm.softhsm_conf, &hsm.label, &hsm.user_pin_file)?;
    let name = crate::common::unique("doomed");
    d.append_config(&format!("[secrets]\ndefault_key = \"{name}\"\n[keys]\nlifecycle_check_interval_ms = 100\nrewrap_pause_ms = 0\nrewrap_after_rotation = false\n"))?;
    let s = d.start().await?;
    let key = s.create_key(&name).await;
    let key_id = uuid::Uuid::parse_str(key["id"].as_str().unwrap())?;
    for i in 0..5 {
        put_secret(&s, &format!("d/{i}"), &format!("value-{i}")).await;
    }
    let blob_v1 = encrypt(&s, &name, b"app-held", json!({})).await;
    post_empty(&s, &format!("/v1/keys/{name}/rotate"))
        .await
        .ok();

    // v1 wraps five stored data keys: destruction is refused and says how many.
    let versions = s.get(&format!("/v1/keys/{name}/versions")).await;
    assert_eq!(versions.ok()["versions"][0]["stored_data_keys"], 5);
    let r = post_empty(&s, &format!("/v1/keys/{name}/versions/1/destroy")).await;
    r.assert_error(409, "key_version_in_use");
    assert!(r.body["error"]["message"].as_str().unwrap().contains('5'));

    // Re-wrap, then destruction is allowed.
    let job = post_empty(&s, &format!("/v1/keys/{name}/rewrap")).await;
    assert_eq!(job.status.as_u16(), 202, "{}", job.body);
    let done = crate::common::server::wait_job_done(&s, &name).await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["remaining"], 0);
    let versions = s.get(&format!("/v1/keys/{name}/versions")).await;
    assert_eq!(versions.ok()["versions"][0]["stored_data_keys"], 0);
    assert_eq!(versions.body["versions"][1]["stored_data_keys"], 5);
    let k = post_empty(&s, &format!("/v1/keys/{name}/versions/1/destroy")).await;
    assert_eq!(k.ok()["versions"][0]["state"], "destroyed");
    // Old blobs fail with a clear "destroyed"; secrets still read (they moved to v2).
    decrypt(&s, &blob_v1, json!({}))
        .await
        .assert_error(410, "key_version_destroyed");
    post_empty(&s, &format!("/v1/keys/{name}/versions/1/enable"))
        .await
        .assert_error(410, "key_version_destroyed");
    for i in 0..5 {
        let r = s.get(&format!("/v1/secrets/d/{i}?text=true")).await;
        assert_eq!(r.ok()["value_text"], format!("value-{i}"));
    }
    s.kill();

    // The device object of v1 is gone; v2's is there.
    let session = hsm.session();
    let object = |v: u32| {
        let mut cka_id = key_id.as_bytes().to_vec();
        cka_id.extend_from_slice(&v.to_be_bytes());
        session
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Id(cka_id),
            ])
            .unwrap()
    };
    assert!(object(1).is_empty(), "v1 still in the token");
    assert_eq!(object(2).len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_due_deletion_waits_for_references_then_destroys_the_key() -> anyhow::Result<()> {
    let (d, s) = secrets_server("gone", "rewrap_after_rotation = false\n").await?;
    put_secret(&s, "held", "still referenced").await;
    let blob = encrypt(&s, "gone", b"app data", json!({})).await;
    post_empty(&s, "/v1/keys/gone/schedule-deletion").await.ok();
    // Time passes: the deletion date is in the past.
    d.db()?
        .execute("UPDATE keys SET deletion_date = 0 WHERE name = 'gone'", &[])?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let k = s.get("/v1/keys/gone").await;
        if let Some(reason) = k.ok()["deletion_blocked"].as_str() {
            assert!(reason.contains("1 stored data keys"), "{reason}");
            assert_eq!(k.body["state"], "pending_deletion");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deletion was neither done nor blocked: {}",
            k.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Destroy the referencing secret version; the next pass destroys the key.
    s.post("/v1/secrets/held/destroy", json!({ "versions": [1] }))
        .await
        .ok();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let k = s.get("/v1/keys/gone").await;
        if k.ok()["state"] == "destroyed" {
            assert!(k.body["versions"]
                .as_array()
                .unwrap()
                .iter()
                .all(|v| v["state"] == "destroyed"));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "key not destroyed: {}",
            k.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.post("/v1/keys/gone/datakey", json!({}))
        .await
        .assert_error(410, "key_destroyed");
    decrypt(&s, &blob, json!({}))
        .await
        .assert_error(410, "key_destroyed");
    post_empty(&s, "/v1/keys/gone/enable")
        .await
        .assert_error(410, "key_destroyed");
    post_empty(&s, "/v1/keys/gone/cancel-deletion")
        .await
        .assert_error(410, "key_destroyed");
    let pending = d.db()?.query_one(
        "SELECT COUNT(*) FROM key_versions WHERE device_object != 'destroyed'",
        &[],
    )?[0]
        .as_i64();
    assert_eq!(pending, 0, "every device object of the key was destroyed");
    Ok(())
}

#[tokio::test]
async fn a_device_failure_during_rotation_leaves_no_half_version() -> anyhow::Result<()> {
    let (d, s) = server().await?;
    s.create_key("fragile").await;
    let tokens = d.token_dir();
    let away = tokens.with_extension("away");
    std::fs::rename(&tokens, &away)?;
    post_empty(&s, "/v1/keys/fragile/rotate")
        .await
        .assert_error(503, "device_unavailable");
    std::fs::rename(&away, &tokens)?;
    assert_eq!(
        s.wait_ready(200, Duration::from_secs(15))
            .await
            .status
            .as_u16(),
        200
    );
    let k = s.get("/v1/keys/fragile").await;
    assert_eq!(k.ok()["primary_version"], 1);
    assert_eq!(k.body["versions"].as_array().unwrap().len(), 1);
    assert_eq!(
        post_empty(&s, "/v1/keys/fragile/rotate").await.ok()["primary_version"],
        2
    );
    Ok(())
}

#[tokio::test]
async fn tampered_rows_do_not_block_the_rows_behind_them() -> anyhow::Result<()> {
    let (d, s) = secrets_server(
        "mixed",
        "rewrap_batch_size = 3\nrewrap_after_rotation = false\n",
    )
    .await?;
    for i in 0..12 {
        put_secret(&s, &format!("m/{i:02}"), &format!("v{i}")).await;
    }
    // The first four rows in the job's order are tampered: more than one batch of them.
    let db = d.db()?;
    for i in 0..4 {
        db.damage_wrapped_dek(&format!("m/{i:02}"))?; // the GCM tag: the device refuses it
    }
    drop(db);
    post_empty(&s, "/v1/keys/mixed/rotate").await.ok();
    post_empty(&s, "/v1/keys/mixed/rewrap").await;
    let job = crate::common::server::wait_job_done(&s, "mixed").await;
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["done"], 8, "every good row moved: {job}");
    assert_eq!(job["failed_items"], 4, "each bad row counted once: {job}");
    let versions = s.get("/v1/keys/mixed/versions").await;
    assert_eq!(versions.ok()["versions"][0]["stored_data_keys"], 4);
    assert_eq!(versions.body["versions"][1]["stored_data_keys"], 8);
    for i in 4..12 {
        let r = s.get(&format!("/v1/secrets/m/{i:02}?text=true")).await;
        assert_eq!(r.ok()["value_text"], format!("v{i}"));
    }
    s.get("/v1/secrets/m/00")
        .await
        .assert_error(500, "secret_integrity_failed");
    Ok(())
}

#[tokio::test]
async fn a_device_outage_during_rewrap_pauses_the_job_and_loses_nothing() -> anyhow::Result<()> {
    const SECRETS: u64 = 60;
    let (d, s) = secrets_server(
        "outage",
        "rewrap_batch_size = 5\nrewrap_after_rotation = false\n",
    )
    .await?;
    for i in 0..SECRETS {
        put_secret(&s, &format!("o/{i:02}"), &format!("v{i}")).await;
    }
    post_empty(&s, "/v1/keys/outage/rotate").await.ok();
    // The token goes away before the job starts: every batch meets a device that is down.
    let tokens = d.token_dir();
    let away = tokens.with_extension("away");
    std::fs::rename(&tokens, &away)?;
    let ready = s.wait_ready(503, Duration::from_secs(10)).await;
    assert_eq!(ready.status.as_u16(), 503, "{}", ready.body);
    let started = post_empty(&s, "/v1/keys/outage/rewrap").await;
    let job_id = started.ok()["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let job = s.get(&format!("/v1/jobs/{job_id}")).await;
    assert_eq!(job.ok()["state"], "running", "{}", job.body);
    assert_eq!(
        job.body["done"], 0,
        "nothing moves while the device is down"
    );
    assert_eq!(
        job.body["failed_items"], 0,
        "an outage is not an item's failure"
    );
    std::fs::rename(&away, &tokens)?;
    let ready = s.wait_ready(200, Duration::from_secs(15)).await;
    assert_eq!(ready.status.as_u16(), 200, "{}", ready.body);
    let job = crate::common::server::wait_job_done(&s, "outage").await;
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(job["done"], SECRETS, "{job}");
    assert_eq!(job["failed_items"], 0, "{job}");
    let versions = s.get("/v1/keys/outage/versions").await;
    assert_eq!(versions.ok()["versions"][0]["stored_data_keys"], 0);
    assert_eq!(versions.body["versions"][1]["stored_data_keys"], SECRETS);
    for i in 0..SECRETS {
        let r = s.get(&format!("/v1/secrets/o/{i:02}?text=true")).await;
        assert_eq!(r.ok()["value_text"], format!("v{i}"));
    }
    Ok(())
}
