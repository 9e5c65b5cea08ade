//! One conformance suite for the `KeyBackend` trait, run through the real server against
//! SoftHSM2 and swtpm alike, in both wrapping modes: the same cases for every (device, mode).
//! (The service is the trait's only caller, and one process can hold only one PKCS#11 module
//! context, so the suite drives the trait through `custodian serve`; `tpm_device.rs` covers the
//! TPM layer beneath it and `device.rs` the PKCS#11 one.)
//!
//! Then what only a TPM or cached mode can show: swtpm stopped and restarted mid-operation (503,
//! then recovery without restarting Custodian), blobs made before a Custodian restart opening
//! after it, a stored key blob that no longer loads (named error, named in readiness), the KEK
//! cache expiring under load without failing a request, and TPM2_Certify in the custody report.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::db::Cell;
use crate::common::swtpm::Swtpm;
use crate::common::{b64, unb64, unique, Deployment, Server};

/// The four (device, mode) pairs with the blob algorithm each must write.
const PLACEMENTS: &[(&str, &str, &str, u8)] = &[
    ("pkcs11", "direct", "aes256_gcm_device", 0x01),
    ("pkcs11", "cached", "aes256_kwp_cached", 0x02),
    ("tpm", "direct", "aes256_kwp_tpm_hmac", 0x03),
    ("tpm", "cached", "aes256_kwp_cached", 0x02),
];

/// A deployment with a TPM (its own swtpm) as well as its SoftHSM token.
fn with_tpm(tpm: &Swtpm, extra: &str) -> anyhow::Result<Deployment> {
    let d = Deployment::new()?;
    d.append_config(&format!("[tpm]\ntcti = \"{}\"\n{extra}", tpm.tcti()))?;
    Ok(d)
}

async fn create(s: &Server, name: &str, backend: &str, mode: &str) -> Value {
    let r = s
        .post(
            "/v1/keys",
            json!({ "name": name, "backend": backend, "mode": mode }),
        )
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.body);
    r.body
}

fn flip(blob_b64: &str, at: usize) -> String {
    let mut b = unb64(blob_b64);
    let i = at.min(b.len() - 1);
    b[i] ^= 0x01;
    b64(&b)
}

/// Every case, on one (device, mode).
async fn conformance(
    s: &Server,
    d: &Deployment,
    backend: &str,
    mode: &str,
    algorithm: &str,
    code: u8,
) {
    let name = unique(&format!("conf-{backend}-{mode}"));
    let key = create(s, &name, backend, mode).await;
    let id = key["id"].as_str().unwrap().to_owned();
    assert_eq!(key["backend"], backend);
    assert_eq!(key["mode"], mode);
    assert_eq!(key["versions"][0]["algorithm"], algorithm);
    let ctx = json!({ "tenant": "acme", "purpose": "conformance" });

    // Data key round trip; the blob names its algorithm.
    let dk = s
        .post(
            &format!("/v1/keys/{name}/datakey"),
            json!({ "context": ctx }),
        )
        .await;
    let plaintext = dk.ok()["plaintext"].as_str().unwrap().to_owned();
    let blob = dk.body["ciphertext"].as_str().unwrap().to_owned();
    assert_eq!(unb64(&plaintext).len(), 32);
    assert_eq!(unb64(&blob)[5], code, "{backend}/{mode}");
    let r = s
        .post("/v1/decrypt", json!({ "ciphertext": blob, "context": ctx }))
        .await;
    assert_eq!(r.ok()["plaintext"], plaintext, "{backend}/{mode}");

    // Negative twins: context off by one pair, an extra pair, no context, flipped bytes in the
    // header's algorithm, the nonce and the body, truncation.
    for bad in [
        json!({ "tenant": "acme", "purpose": "conformancE" }),
        json!({ "tenant": "acme", "purpose": "conformance", "x": "y" }),
        json!({}),
    ] {
        s.post("/v1/decrypt", json!({ "ciphertext": blob, "context": bad }))
            .await
            .assert_error(400, "decryption_failed");
    }
    for at in [27, 30, 40, usize::MAX] {
        s.post(
            "/v1/decrypt",
            json!({ "ciphertext": flip(&blob, at), "context": ctx }),
        )
        .await
        .assert_error(400, "decryption_failed");
    }
    let mut other_alg = unb64(&blob);
    other_alg[5] = if code == 0x01 { 0x02 } else { 0x01 };
    s.post(
        "/v1/decrypt",
        json!({ "ciphertext": b64(&other_alg), "context": ctx }),
    )
    .await
    .assert_error(400, "decryption_failed");
    let short = &unb64(&blob)[..30];
    let r = s
        .post(
            "/v1/decrypt",
            json!({ "ciphertext": b64(short), "context": ctx }),
        )
        .await;
    assert_eq!(r.status.as_u16(), 400, "{}", r.body);

    // Encrypt / decrypt payloads at both size limits, and one byte over.
    for len in [1usize, 4096] {
        let payload = vec![0x5a; len];
        let r = s
            .post(
                &format!("/v1/keys/{name}/encrypt"),
                json!({ "plaintext": b64(&payload), "context": ctx }),
            )
            .await;
        let c = r.ok()["ciphertext"].as_str().unwrap().to_owned();
        let r = s
            .post("/v1/decrypt", json!({ "ciphertext": c, "context": ctx }))
            .await;
        assert_eq!(unb64(r.ok()["plaintext"].as_str().unwrap()), payload);
    }
    s.post(
        &format!("/v1/keys/{name}/encrypt"),
        json!({ "plaintext": b64(&[0u8; 4097]) }),
    )
    .await
    .assert_error(400, "plaintext_too_large");

    // Re-encrypt under a new context: the old context no longer opens the new blob.
    let new_ctx = json!({ "tenant": "acme", "purpose": "moved" });
    let r = s
        .post(
            "/v1/reencrypt",
            json!({ "ciphertext": blob, "context": ctx, "destination_context": new_ctx }),
        )
        .await;
    let moved = r.ok()["ciphertext"].as_str().unwrap().to_owned();
    let r = s
        .post(
            "/v1/decrypt",
            json!({ "ciphertext": moved, "context": new_ctx }),
        )
        .await;
    assert_eq!(r.ok()["plaintext"], plaintext);
    s.post(
        "/v1/decrypt",
        json!({ "ciphertext": moved, "context": ctx }),
    )
    .await
    .assert_error(400, "decryption_failed");

    // A secret under the key, then rotation with its re-wrap job: nothing lost.
    let path = format!("conf/{}", unique("secret"));
    let put = s
        .send_json(
            Method::PUT,
            &format!("/v1/secrets/{path}"),
            json!({ "value": b64(b"conformance-value"), "key": name }),
        )
        .await;
    assert!(put.status.is_success(), "{}", put.body);
    let r = s.post(&format!("/v1/keys/{name}/rotate"), json!({})).await;
    assert_eq!(r.ok()["primary_version"], 2);
    assert_eq!(r.body["versions"][1]["algorithm"], algorithm);
    let job = crate::common::server::wait_job_done(s, &id).await;
    assert_eq!(job["state"], "completed", "{job}");
    let r = s.get(&format!("/v1/secrets/{path}")).await;
    assert_eq!(
        unb64(r.ok()["value"].as_str().unwrap()),
        b"conformance-value"
    );
    let r = s
        .post("/v1/decrypt", json!({ "ciphertext": blob, "context": ctx }))
        .await;
    assert_eq!(
        r.ok()["plaintext"],
        plaintext,
        "v1 blobs open after rotation"
    );
    let r = s
        .post(
            &format!("/v1/keys/{name}/datakey"),
            json!({ "context": ctx }),
        )
        .await;
    assert_eq!(
        unb64(r.ok()["ciphertext"].as_str().unwrap())[22..26],
        [0, 0, 0, 2]
    );

    // Disabled: nothing wraps or unwraps; enabled again: it does.
    s.post(&format!("/v1/keys/{name}/disable"), json!({}))
        .await
        .ok();
    s.post(&format!("/v1/keys/{name}/datakey"), json!({}))
        .await
        .assert_error(409, "key_disabled");
    s.post(&format!("/v1/keys/{name}/enable"), json!({}))
        .await
        .ok();

    // Destroy version 1 (nothing stored references it after the re-wrap): its blobs stop
    // opening and its stored device material is erased.
    let r = s
        .post(&format!("/v1/keys/{name}/versions/1/destroy"), json!({}))
        .await;
    assert!(r.status.is_success(), "{}", r.body);
    let r = s
        .post("/v1/decrypt", json!({ "ciphertext": blob, "context": ctx }))
        .await;
    assert_eq!(
        r.body["error"]["code"], "key_version_destroyed",
        "{}",
        r.body
    );
    let db = d.db().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let row = db
            .query_one(
                "SELECT device_object, length(device_blob), length(wrapped_kek)
                 FROM key_versions WHERE key_id = $1 AND version = 1",
                &[id.as_str().into()],
            )
            .unwrap();
        let (state, blob_len, kek_len) = (row[0].as_text(), &row[1], &row[2]);
        if state == "destroyed" {
            assert_eq!(
                (blob_len, kek_len),
                (&Cell::Null, &Cell::Null),
                "material erased"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "device object still {state}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Version 2 still carries what its mode needs.
    let row = db
        .query_one(
            "SELECT length(device_blob), length(wrapped_kek) FROM key_versions
             WHERE key_id = $1 AND version = 2",
            &[id.as_str().into()],
        )
        .unwrap();
    let (blob_len, kek_len) = (&row[0], &row[1]);
    assert_eq!(!blob_len.is_null(), backend == "tpm", "{backend}/{mode}");
    assert_eq!(!kek_len.is_null(), mode == "cached", "{backend}/{mode}");
}

#[tokio::test]
async fn every_backend_and_mode_passes_the_same_cases() -> anyhow::Result<()> {
    let tpm = Swtpm::start()?;
    let mut d = with_tpm(&tpm, "")?;
    let s = d.start().await?;
    for (backend, mode, algorithm, code) in PLACEMENTS {
        conformance(&s, &d, backend, mode, algorithm, *code).await;
    }
    Ok(())
}

#[tokio::test]
async fn defaults_and_bad_placements() -> anyhow::Result<()> {
    let tpm = Swtpm::start()?;
    let mut d = with_tpm(&tpm, "")?;
    let s = d.start().await?;
    let k = s
        .post("/v1/keys", json!({ "name": unique("default-hsm") }))
        .await;
    assert_eq!(
        (k.ok()["backend"].clone(), k.body["mode"].clone()),
        (json!("pkcs11"), json!("direct"))
    );
    let k = s
        .post(
            "/v1/keys",
            json!({ "name": unique("default-tpm"), "backend": "tpm" }),
        )
        .await;
    assert_eq!(k.ok()["mode"], "cached");
    s.post(
        "/v1/keys",
        json!({ "name": unique("x"), "backend": "floppy" }),
    )
    .await
    .assert_error(400, "invalid_field");
    s.post(
        "/v1/keys",
        json!({ "name": unique("x"), "mode": "sometimes" }),
    )
    .await
    .assert_error(400, "invalid_field");
    // A node without a TPM refuses TPM keys with 503, never a software fallback.
    let mut plain = Deployment::new()?;
    let p = plain.start().await?;
    p.post(
        "/v1/keys",
        json!({ "name": unique("nope"), "backend": "tpm" }),
    )
    .await
    .assert_error(503, "backend_not_configured");
    Ok(())
}

#[tokio::test]
async fn swtpm_restart_mid_operation_is_503_then_recovers_without_a_custodian_restart(
) -> anyhow::Result<()> {
    let mut tpm = Swtpm::start()?;
    let mut d = with_tpm(&tpm, "")?;
    let s = d.start().await?;
    let name = unique("tpm-direct");
    create(&s, &name, "tpm", "direct").await;
    let ctx = json!({ "a": "b" });
    let dk = s
        .post(
            &format!("/v1/keys/{name}/datakey"),
            json!({ "context": ctx }),
        )
        .await;
    let blob = dk.ok()["ciphertext"].as_str().unwrap().to_owned();

    tpm.stop();
    let r = s.post(&format!("/v1/keys/{name}/datakey"), json!({})).await;
    r.assert_error(503, "device_unavailable");
    let ready = s.wait_ready(503, Duration::from_secs(10)).await;
    assert_eq!(ready.status.as_u16(), 503, "{}", ready.body);
    assert_eq!(ready.body["tpm"]["usable"], false);

    tpm.restart()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = s
            .post("/v1/decrypt", json!({ "ciphertext": blob, "context": ctx }))
            .await;
        if r.status.is_success() {
            break;
        }
        assert_eq!(
            r.status.as_u16(),
            503,
            "only 503 while recovering: {}",
            r.body
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no recovery: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ready = s.wait_ready(200, Duration::from_secs(10)).await;
    assert_eq!(ready.status.as_u16(), 200, "{}", ready.body);
    Ok(())
}

#[tokio::test]
async fn blobs_made_before_a_custodian_restart_open_after_it() -> anyhow::Result<()> {
    let tpm = Swtpm::start()?;
    let mut d = with_tpm(&tpm, "")?;
    let s = d.start().await?;
    let mut made = Vec::new();
    for (backend, mode, _, _) in PLACEMENTS {
        let name = unique(&format!("persist-{backend}-{mode}"));
        create(&s, &name, backend, mode).await;
        let dk = s
            .post(
                &format!("/v1/keys/{name}/datakey"),
                json!({ "context": { "k": "v" } }),
            )
            .await;
        made.push((
            dk.ok()["plaintext"].as_str().unwrap().to_owned(),
            dk.body["ciphertext"].as_str().unwrap().to_owned(),
        ));
    }
    s.kill();
    let s = d.start().await?;
    for (plaintext, blob) in made {
        let r = s
            .post(
                "/v1/decrypt",
                json!({ "ciphertext": blob, "context": { "k": "v" } }),
            )
            .await;
        assert_eq!(r.ok()["plaintext"], plaintext.as_str());
    }
    Ok(())
}

#[tokio::test]
async fn a_tpm_blob_that_does_not_load_is_named_and_shown_in_readiness() -> anyhow::Result<()> {
    let tpm = Swtpm::start()?;
    let mut d = with_tpm(&tpm, "")?;
    let s = d.start().await?;
    let bad = unique("tpm-corrupt");
    let key = create(&s, &bad, "tpm", "direct").await;
    let good = unique("tpm-fine");
    create(&s, &good, "tpm", "direct").await;
    let id = key["id"].as_str().unwrap().to_owned();
    s.kill();
    // Flip a byte in the stored private part of version 1's blob.
    let db = d.db()?;
    let mut blob = db
        .query_one(
            "SELECT device_blob FROM key_versions WHERE key_id = $1 AND version = 1",
            &[id.as_str().into()],
        )?
        .remove(0)
        .into_bytes();
    let last = blob.len() - 5;
    blob[last] ^= 0x40;
    db.execute(
        "UPDATE key_versions SET device_blob = $2 WHERE key_id = $1 AND version = 1",
        &[id.as_str().into(), blob.into()],
    )?;
    drop(db);

    let s = d.start().await?;
    let r = s.post(&format!("/v1/keys/{bad}/datakey"), json!({})).await;
    r.assert_error(500, "key_blob_rejected");
    let message = r.body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("custodian:{id}:v1")),
        "the error names the version: {message}"
    );
    let (_, stderr) = s.output();
    assert!(
        stderr.contains(&format!("custodian:{id}:v1")),
        "the log names the version"
    );
    // The other key still works; readiness names the refused version but stays ready.
    s.post(&format!("/v1/keys/{good}/datakey"), json!({}))
        .await
        .ok();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let ready = s.get_public("/v1/health/ready").await;
    assert_eq!(ready.status.as_u16(), 200, "{}", ready.body);
    assert_eq!(
        ready.body["rejected_key_blobs"],
        json!([format!("custodian:{id}:v1")])
    );
    Ok(())
}

#[tokio::test]
async fn kek_cache_expiry_under_load_never_fails_a_request() -> anyhow::Result<()> {
    let tpm = Swtpm::start()?;
    let mut d = with_tpm(&tpm, "[keys]\nkek_cache_ttl = \"1s\"\n")?;
    let s = std::sync::Arc::new(d.start().await?);
    let mut names = Vec::new();
    for backend in ["pkcs11", "tpm"] {
        let name = unique(&format!("ttl-{backend}"));
        create(&s, &name, backend, "cached").await;
        names.push(name);
    }
    let until = tokio::time::Instant::now() + Duration::from_millis(3500);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = std::sync::Arc::clone(&s);
        let name = names[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u32;
            while tokio::time::Instant::now() < until {
                let dk = s.post(&format!("/v1/keys/{name}/datakey"), json!({})).await;
                let blob = dk.ok()["ciphertext"].as_str().unwrap().to_owned();
                let r = s.post("/v1/decrypt", json!({ "ciphertext": blob })).await;
                assert_eq!(r.ok()["plaintext"], dk.body["plaintext"]);
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await?;
    }
    assert!(
        total > 16,
        "the load ran across several expiries: {total} round trips"
    );
    Ok(())
}

#[tokio::test]
async fn custody_report_certifies_tpm_keys_and_the_statement_verifies() -> anyhow::Result<()> {
    use custodian::backend::tpm::verify_certification;
    let tpm = Swtpm::start()?;
    let mut d = with_tpm(&tpm, "")?;
    let s = d.start().await?;
    let name = unique("certified");
    let key = create(&s, &name, "tpm", "cached").await;
    let id = key["id"].as_str().unwrap();
    let r = s.get("/v1/custody/report").await;
    let payload: Value = serde_json::from_str(r.ok()["payload"].as_str().unwrap())?;
    let devices = payload["devices"].as_array().unwrap();
    let tpm_dev = devices
        .iter()
        .find(|d| d["backend"] == "tpm")
        .expect("the TPM is described");
    assert!(!tpm_dev["manufacturer"].as_str().unwrap().is_empty());
    assert!(!tpm_dev["firmware"].as_str().unwrap().is_empty());
    let k = payload["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_id"] == id)
        .unwrap();
    assert_eq!(k["mode"], "cached");
    let v = &k["versions"][0];
    assert_eq!(v["anomalies"], json!([]), "{v}");
    let attrs = &v["device_object"]["attributes"];
    for a in ["fixedTPM", "fixedParent", "sensitiveDataOrigin"] {
        assert_eq!(attrs[a], true, "{a}");
    }
    assert_eq!(attrs["decrypt"], false);
    let att = &v["device_object"]["attestation"];
    let cert = custodian::backend::tpm::Certification {
        attest: hex::decode(att["attest"].as_str().unwrap())?,
        signature_der: hex::decode(att["signature"].as_str().unwrap())?,
        attestation_key_pem: att["attestation_key"].as_str().unwrap().to_owned(),
        key_name: hex::decode(att["key_name"].as_str().unwrap())?,
    };
    let public = hex::decode(att["key_public"].as_str().unwrap())?;
    let qualifying = hex::decode(att["qualifying_data"].as_str().unwrap())?;
    verify_certification(&cert, &public, &qualifying)?;
    // Negative twins: another nonce, a flipped signature byte.
    assert!(verify_certification(&cert, &public, b"another nonce").is_err());
    let mut forged = cert.clone();
    let n = forged.signature_der.len() - 1;
    forged.signature_der[n] ^= 1;
    assert!(verify_certification(&forged, &public, &qualifying).is_err());
    Ok(())
}

#[tokio::test]
async fn rewrap_moves_data_keys_a_chunk_per_device_call_and_a_bad_row_fails_alone(
) -> anyhow::Result<()> {
    const SECRETS: usize = 30;
    let tpm = Swtpm::start()?;
    let mut d = with_tpm(
        &tpm,
        "[keys]\nrewrap_after_rotation = false\nrewrap_pause_ms = 0\n",
    )?;
    let s = d.start().await?;
    let db = d.db()?;
    for (backend, mode, _, _) in PLACEMENTS {
        let name = unique(&format!("chunks-{backend}-{mode}"));
        create(&s, &name, backend, mode).await;
        for i in 0..SECRETS {
            let r = s
                .send_json(
                    Method::PUT,
                    &format!("/v1/secrets/{name}/{i:02}"),
                    json!({ "value_text": format!("v{i}"), "key": name }),
                )
                .await;
            assert!(r.status.is_success(), "{}", r.body);
        }
        // Two rows' tags are damaged: the device refuses those two, inside chunks whose other
        // rows it moves.
        let bad = [3usize, 27];
        for i in bad {
            db.damage_wrapped_dek(&format!("{name}/{i:02}"))?;
        }
        s.post(&format!("/v1/keys/{name}/rotate"), json!({}))
            .await
            .ok();
        let ops = |m: &crate::metrics::Scrape, op: &str| {
            m.value_or_zero(&format!(
                "custodian_device_operations_total{{device=\"{backend}\",mode=\"{mode}\",op=\"{op}\",result=\"ok\"}}"
            ))
        };
        let before = crate::metrics::scrape(&s, &s.token).await;
        s.post(&format!("/v1/keys/{name}/rewrap"), json!({}))
            .await
            .ok();
        let job = crate::common::server::wait_job_done(&s, &name).await;
        let after = crate::metrics::scrape(&s, &s.token).await;
        assert_eq!(job["state"], "failed", "{backend}/{mode}: {job}");
        assert_eq!(job["done"], SECRETS - bad.len(), "{backend}/{mode}: {job}");
        assert_eq!(job["failed_items"], bad.len(), "{backend}/{mode}: {job}");
        // The job's items are split into 8 parts, each walked in batches of up to 100 and
        // handed to the device in chunks: at most a call per part here, where an unwrap and a
        // wrap per item would be 28 of each.
        let calls = ops(&after, "reseal") - ops(&before, "reseal");
        assert!(
            (1.0..=8.0).contains(&calls),
            "{backend}/{mode}: {SECRETS} items in {calls} reseal calls"
        );
        for op in ["open", "seal"] {
            assert_eq!(
                ops(&after, op) - ops(&before, op),
                0.0,
                "{backend}/{mode}: no {op} per item"
            );
        }
        let versions = s.get(&format!("/v1/keys/{name}/versions")).await;
        assert_eq!(versions.ok()["versions"][0]["stored_data_keys"], bad.len());
        assert_eq!(
            versions.body["versions"][1]["stored_data_keys"],
            SECRETS - bad.len()
        );
        for i in 0..SECRETS {
            let r = s.get(&format!("/v1/secrets/{name}/{i:02}?text=true")).await;
            if bad.contains(&i) {
                r.assert_error(500, "secret_integrity_failed");
            } else {
                assert_eq!(r.ok()["value_text"], format!("v{i}"), "{backend}/{mode}");
            }
        }
    }
    Ok(())
}
