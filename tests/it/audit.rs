//! The audit log, black-box: one record per request (allowed, denied, failed, unauthenticated)
//! with the right fields; an untouched export verifies offline and every tamper case is caught
//! at the right sequence; rows edited in the database are caught by the next checkpoint or by
//! verification; an unwritable log fails requests with 503; records carry no secret; archive;
//! exports in a row reuse the latest checkpoint instead of signing one each (issue 12, item 13).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::common::cli::{admin_cli, finish, json_of};
use crate::common::db::Cell;
use crate::common::server::{Auth, Reply, BIN};
use crate::common::{b64, unb64, unique, Deployment, Server};

/// Every record of the log (as the admin), keyed by request id.
async fn records_by_request(s: &Server) -> HashMap<String, Vec<Value>> {
    let mut by_id: HashMap<String, Vec<Value>> = HashMap::new();
    let mut after = 0u64;
    loop {
        let r = s
            .get(&format!("/v1/audit/events?after={after}&limit=1000"))
            .await;
        let page = r.ok()["records"].as_array().unwrap().clone();
        for rec in &page {
            by_id
                .entry(rec["request_id"].as_str().unwrap().to_owned())
                .or_default()
                .push(rec.clone());
        }
        match r.body["next_after"].as_u64() {
            Some(n) => after = n,
            None => break,
        }
    }
    by_id
}

/// The one final record of `reply`'s request. A request that changed stored state also has one
/// `pending` announcement, written before the change, with the same request id and principal.
#[track_caller]
fn record_of<'a>(all: &'a HashMap<String, Vec<Value>>, reply: &Reply) -> &'a Value {
    let id = reply.request_id.as_deref().expect("x-request-id");
    let recs = all.get(id).unwrap_or_else(|| panic!("no record for {id}"));
    let (pending, last): (Vec<&Value>, Vec<&Value>) =
        recs.iter().partition(|r| r["outcome"] == "pending");
    assert_eq!(
        last.len(),
        1,
        "exactly one final record per request: {recs:?}"
    );
    assert!(pending.len() <= 1, "at most one announcement: {recs:?}");
    if let Some(p) = pending.first() {
        assert!(
            p["sequence"].as_u64() < last[0]["sequence"].as_u64(),
            "{recs:?}"
        );
        assert_eq!(p["principal"], last[0]["principal"]);
        assert_eq!(p["status"], 0);
    }
    last[0]
}

/// Whether `reply`'s request announced a change to stored state before making it.
fn announced(all: &HashMap<String, Vec<Value>>, reply: &Reply) -> bool {
    let id = reply.request_id.as_deref().expect("x-request-id");
    all.get(id)
        .is_some_and(|recs| recs.iter().any(|r| r["outcome"] == "pending"))
}

async fn token_for(s: &Server, name: &str, policies: &[&str]) -> String {
    s.post(
        "/v1/principals",
        json!({ "name": name, "policies": policies }),
    )
    .await
    .ok();
    let t = s.post("/v1/tokens", json!({ "principal": name })).await;
    t.ok()["token"].as_str().unwrap().to_owned()
}

async fn as_token(
    s: &Server,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Reply {
    let header = format!("Bearer {token}");
    let (ct, bytes) = match body {
        Some(b) => (Some("application/json"), b.to_string().into_bytes()),
        None => (None, Vec::new()),
    };
    s.raw(method, path, Auth::Header(&header), ct, bytes).await
}

#[tokio::test]
async fn every_request_kind_produces_exactly_one_final_record_with_its_fields() -> anyhow::Result<()>
{
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    let key_name = unique("audited");
    let created = s.post("/v1/keys", json!({ "name": key_name })).await;
    let key_id = created.ok()["id"].as_str().unwrap().to_owned();
    let ctx = json!({ "tenant": "acme-1", "purpose": "orders" });
    let datakey = s
        .post(
            &format!("/v1/keys/{key_name}/datakey"),
            json!({ "context": ctx }),
        )
        .await;
    let blob = datakey.ok()["ciphertext"].as_str().unwrap().to_owned();
    let decrypt_ok = s
        .post("/v1/decrypt", json!({ "ciphertext": blob, "context": ctx }))
        .await;
    decrypt_ok.ok();
    let wrong_ctx = s
        .post(
            "/v1/decrypt",
            json!({ "ciphertext": blob, "context": { "tenant": "acme-2", "purpose": "orders" } }),
        )
        .await;
    wrong_ctx.assert_error(400, "decryption_failed");
    let no_token = s
        .raw(Method::GET, "/v1/keys", Auth::None, None, Vec::new())
        .await;
    no_token.assert_error(401, "missing_token");
    let bad_token = s
        .raw(
            Method::GET,
            "/v1/keys",
            Auth::Header("Bearer cst_nope_nope"),
            None,
            Vec::new(),
        )
        .await;
    bad_token.assert_error(401, "invalid_token");
    let app = token_for(&s, &unique("app"), &["application"]).await;
    let denied = as_token(&s, &app, Method::POST, "/v1/keys/rotate-me/rotate", None).await;
    assert_eq!(denied.status.as_u16(), 403, "{}", denied.body);
    let malformed = s.post_bytes("/v1/decrypt", b"{not json").await;
    assert_eq!(malformed.status.as_u16(), 400);
    let unknown_route = s.get("/v1/no/such/thing").await;
    unknown_route.assert_error(404, "route_not_found");
    let secret = s
        .send_json(
            Method::PUT,
            "/v1/secrets/app/db",
            json!({ "value": b64(b"hunter2-value"), "key": key_name }),
        )
        .await;
    assert!(secret.status.is_success(), "{}", secret.body);
    let health = s.get_public("/v1/health/ready").await;

    let all = records_by_request(&s).await;

    let r = record_of(&all, &created);
    assert_eq!(r["principal"], "bootstrap-admin");
    assert_eq!(r["action"], "key:create");
    assert_eq!(r["outcome"], "success");
    assert_eq!(r["status"], 201);
    assert_eq!(r["method"], "POST");
    assert_eq!(r["route"], "/v1/keys");
    assert_eq!(r["source"], "127.0.0.1");
    assert!(r["credential"].as_str().is_some_and(|c| !c.is_empty()));
    // Creating a key changes stored state: announced before; a data key is not.
    assert!(announced(&all, &created));
    assert!(!announced(&all, &datakey));

    let r = record_of(&all, &datakey);
    assert_eq!(r["action"], "datakey:generate-plaintext");
    assert_eq!(r["resource"], format!("key/{key_name}"));
    assert_eq!(r["key_id"], key_id);
    assert_eq!(r["key_version"], 1);
    assert_eq!(r["route"], "/v1/keys/{key}/datakey");
    assert_eq!(r["context_keys"], json!(["purpose", "tenant"]));
    let digest = r["context_digest"].as_str().unwrap().to_owned();
    assert_eq!(digest.len(), 64);

    let r = record_of(&all, &decrypt_ok);
    assert_eq!(r["action"], "decrypt");
    assert_eq!(r["key_id"], key_id);
    assert_eq!(r["context_digest"], digest, "same context, same digest");
    let r = record_of(&all, &wrong_ctx);
    assert_eq!(r["outcome"], "rejected");
    assert_eq!(r["error_code"], "decryption_failed");
    assert_ne!(
        r["context_digest"], digest,
        "another context, another digest"
    );

    for (reply, code) in [(&no_token, "missing_token"), (&bad_token, "invalid_token")] {
        let r = record_of(&all, reply);
        assert_eq!(r["outcome"], "unauthenticated");
        assert_eq!(r["status"], 401);
        assert_eq!(r["error_code"], code);
        assert!(r["principal"].is_null());
    }
    let r = record_of(&all, &denied);
    assert_eq!(r["outcome"], "denied");
    assert_eq!(r["action"], "key:rotate");
    assert_eq!(r["error_code"], "forbidden");
    assert!(r["principal"].as_str().unwrap().starts_with("app-"));

    let r = record_of(&all, &malformed);
    assert_eq!(r["outcome"], "rejected");
    assert_eq!(r["error_code"], "malformed_json");
    let r = record_of(&all, &unknown_route);
    assert_eq!(r["route"], "(unmatched)");
    assert_eq!(r["status"], 404);
    let r = record_of(&all, &secret);
    assert_eq!(r["action"], "secret:write");
    assert_eq!(r["resource"], "secret/app/db");

    // Probes are not audited.
    let probe = health.request_id.as_deref().unwrap_or_default();
    assert!(!all.contains_key(probe));
    // Sequence numbers are gapless and the chain links.
    let mut recs: Vec<&Value> = all.values().flatten().collect();
    recs.sort_by_key(|r| r["sequence"].as_u64());
    for w in recs.windows(2) {
        assert_eq!(
            w[1]["sequence"].as_u64(),
            w[0]["sequence"].as_u64().map(|n| n + 1)
        );
        assert_eq!(w[1]["prev_hash"], w[0]["hash"]);
    }
    Ok(())
}

#[tokio::test]
async fn filters_select_records() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    let key = s.create_key(&unique("filtered")).await;
    let id = key["id"].as_str().unwrap();
    for _ in 0..3 {
        s.post(&format!("/v1/keys/{id}/datakey"), json!({}))
            .await
            .ok();
    }
    let app = token_for(&s, &unique("app"), &["application"]).await;
    // The application role may not create keys: one denied request.
    as_token(
        &s,
        &app,
        Method::POST,
        "/v1/keys",
        Some(json!({ "name": unique("denied") })),
    )
    .await;

    let r = s
        .get(&format!(
            "/v1/audit/events?key={id}&action=datakey:generate-plaintext"
        ))
        .await;
    assert_eq!(r.ok()["records"].as_array().unwrap().len(), 3);
    let r = s.get("/v1/audit/events?outcome=denied").await;
    let denied = r.ok()["records"].as_array().unwrap();
    assert_eq!(denied.len(), 1, "{denied:?}");
    let r = s.get("/v1/audit/events?limit=2").await;
    assert_eq!(r.ok()["records"].as_array().unwrap().len(), 2);
    assert!(r.body["next_after"].as_u64().is_some());
    let r = s.get("/v1/audit/events?since=2100-01-01T00:00:00Z").await;
    assert!(r.ok()["records"].as_array().unwrap().is_empty());
    // Negative twins: bad parameters are 400, never 500.
    s.get("/v1/audit/events?limit=0")
        .await
        .assert_error(400, "invalid_limit");
    s.get("/v1/audit/events?limit=1001")
        .await
        .assert_error(400, "invalid_limit");
    let r = s.get("/v1/audit/events?limit=1000").await;
    assert!(!r.ok()["records"].as_array().unwrap().is_empty());
    s.get("/v1/audit/events?outcome=maybe")
        .await
        .assert_error(400, "invalid_query");
    s.get("/v1/audit/events?since=yesterday")
        .await
        .assert_error(400, "invalid_query");
    s.get("/v1/audit/events?after=-1")
        .await
        .assert_error(400, "invalid_query");
    // An application may not read the log; the auditor may, but may not archive.
    as_token(&s, &app, Method::GET, "/v1/audit/events", None)
        .await
        .assert_error(403, "forbidden");
    let auditor = token_for(&s, &unique("auditor"), &["auditor"]).await;
    let r = as_token(&s, &auditor, Method::GET, "/v1/audit/events", None).await;
    r.ok();
    as_token(
        &s,
        &auditor,
        Method::POST,
        "/v1/audit/archive",
        Some(json!({ "through": 1, "export_sha256": "00" })),
    )
    .await
    .assert_error(403, "forbidden");
    Ok(())
}

/// Fetches the export and the public key into files in `dir`.
pub(crate) async fn export_to(
    s: &Server,
    dir: &Path,
    query: &str,
) -> anyhow::Result<(Vec<u8>, std::path::PathBuf)> {
    let (status, export) = s.get_bytes(&format!("/v1/audit/export{query}")).await;
    assert_eq!(status.as_u16(), 200, "{}", String::from_utf8_lossy(&export));
    let (status, pem) = s.get_bytes("/v1/audit/public-key").await;
    assert_eq!(status.as_u16(), 200);
    let pem_path = dir.join("audit-public.pem");
    std::fs::write(&pem_path, &pem)?;
    Ok((export, pem_path))
}

/// Runs `custodian audit verify` on `lines`; returns (success, stdout + stderr).
pub(crate) fn verify_lines(dir: &Path, lines: &[String], pem: &Path) -> (bool, String) {
    let file = dir.join(format!("{}.jsonl", unique("export")));
    std::fs::write(
        &file,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    let mut c = std::process::Command::new(BIN);
    c.arg("audit")
        .arg("verify")
        .arg(&file)
        .arg("--public-key")
        .arg(pem);
    let out = finish(c, b"");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

pub(crate) fn lines_of(export: &[u8]) -> Vec<String> {
    String::from_utf8(export.to_vec())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn index_of(lines: &[String], kind: &str, seq: u64) -> usize {
    lines
        .iter()
        .position(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["type"] == kind && v["sequence"] == seq
        })
        .unwrap_or_else(|| panic!("no {kind} {seq}"))
}

fn edit(lines: &mut [String], i: usize, f: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_str(&lines[i]).unwrap();
    f(&mut v);
    lines[i] = v.to_string();
}

#[tokio::test]
async fn export_verifies_offline_and_each_tamper_names_its_sequence() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    d.append_config("[audit]\ncheckpoint_records = 5")?;
    let s = d.start().await?;
    let key = unique("exported");
    s.create_key(&key).await;
    for _ in 0..12 {
        s.post(&format!("/v1/keys/{key}/datakey"), json!({}))
            .await
            .ok();
    }
    let (export, pem) = export_to(&s, d.path(), "").await?;
    let lines = lines_of(&export);
    let checkpoints = lines
        .iter()
        .filter(|l| l.contains("\"type\":\"checkpoint\""))
        .count();
    assert!(
        checkpoints >= 3,
        "a checkpoint every 5 records plus one at export: {checkpoints}"
    );
    let records = lines
        .iter()
        .filter(|l| l.contains("\"type\":\"record\""))
        .count();

    let (ok, out) = verify_lines(d.path(), &lines, &pem);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "{records} records, {checkpoints} checkpoints, intact"
        )),
        "{out}"
    );

    // Edited field.
    let mut t = lines.clone();
    edit(&mut t, index_of(&lines, "record", 7), |v| {
        v["principal"] = json!("mallory")
    });
    let (ok, out) = verify_lines(d.path(), &t, &pem);
    assert!(!ok && out.contains("sequence 7"), "{out}");
    // Deleted line.
    let mut t = lines.clone();
    t.remove(index_of(&lines, "record", 4));
    let (ok, out) = verify_lines(d.path(), &t, &pem);
    assert!(!ok && out.contains("sequence 4"), "{out}");
    // Swapped lines.
    let mut t = lines.clone();
    t.swap(index_of(&lines, "record", 8), index_of(&lines, "record", 9));
    let (ok, out) = verify_lines(d.path(), &t, &pem);
    assert!(!ok && out.contains("sequence 8"), "{out}");
    // Forged checkpoint: moved to another head with the old signature.
    let mut t = lines.clone();
    let cp = index_of(&lines, "checkpoint", 10);
    edit(&mut t, cp, |v| {
        v["time"] = json!("2030-01-01T00:00:00.000000Z")
    });
    let (ok, out) = verify_lines(d.path(), &t, &pem);
    assert!(!ok && out.contains("sequence 10"), "{out}");
    // Truncated: the last checkpoint removed.
    let mut t = lines.clone();
    t.pop();
    let (ok, out) = verify_lines(d.path(), &t, &pem);
    assert!(!ok, "{out}");
    // Another public key.
    let other = d.path().join("other.pem");
    std::fs::write(&other, "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEyx+Dz5b0ypQyU9Rz9rbXHHHA/rgtpkYEeYFD6QFsSDqF1hvyXjC9pJR6mL2pCAEfQkkTjEnpqVOw/mZ+OfBAEA==\n-----END PUBLIC KEY-----\n")?;
    let (ok, _) = verify_lines(d.path(), &lines, &other);
    assert!(!ok);

    // An export after a point starts there and verifies too.
    let (part, _) = export_to(&s, d.path(), "?after=6").await?;
    let part = lines_of(&part);
    let first: Value = serde_json::from_str(&part[1])?;
    assert_eq!(first["sequence"], 7);
    let (ok, out) = verify_lines(d.path(), &part, &pem);
    assert!(ok, "{out}");
    Ok(())
}

#[tokio::test]
async fn rows_edited_in_the_database_are_detected() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    let key = unique("edited");
    s.create_key(&key).await;
    for _ in 0..4 {
        s.post(&format!("/v1/keys/{key}/datakey"), json!({}))
            .await
            .ok();
    }
    // Everything so far is under a checkpoint.
    let (export, pem) = export_to(&s, d.path(), "").await?;
    assert!(verify_lines(d.path(), &lines_of(&export), &pem).0);

    // An edit under the checkpoint: the export verification names the row.
    d.db()?.execute(
        "UPDATE audit_records SET principal = 'someone-else' WHERE sequence = 3",
        &[],
    )?;
    let (export, _) = export_to(&s, d.path(), "").await?;
    let (ok, out) = verify_lines(d.path(), &lines_of(&export), &pem);
    assert!(!ok && out.contains("sequence 3"), "{out}");

    // An edit after the last checkpoint: the next checkpoint refuses to sign over it.
    let head = s.get_public("/v1/health/ready").await.body["audit"]["head"]
        .as_u64()
        .unwrap();
    s.post(&format!("/v1/keys/{key}/datakey"), json!({}))
        .await
        .ok();
    let edited = head + 1;
    let n = d.db()?.execute(
        "UPDATE audit_records SET outcome = 'denied' WHERE sequence = $1",
        &[(edited as i64).into()],
    )?;
    assert_eq!(n, 1);
    let (status, body) = s.get_bytes("/v1/audit/export").await;
    assert_eq!(status.as_u16(), 500, "{}", String::from_utf8_lossy(&body));
    let body: Value = serde_json::from_slice(&body)?;
    assert_eq!(body["error"]["code"], "audit_chain_broken");
    let ready = s.wait_ready(503, Duration::from_secs(5)).await;
    assert_eq!(ready.status.as_u16(), 503, "{}", ready.body);
    assert_eq!(ready.body["audit"]["chain_broken_at"], edited);
    Ok(())
}

#[tokio::test]
async fn an_unwritable_audit_log_fails_requests_with_503() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    let key = unique("unwritable");
    s.create_key(&key).await;
    s.wait_ready(200, Duration::from_secs(5)).await;
    d.db()?
        .refuse_inserts("audit_records", "audit storage refused")?;
    let r = s.post(&format!("/v1/keys/{key}/datakey"), json!({})).await;
    r.assert_error(503, "audit_unavailable");
    assert!(r.body.get("plaintext").is_none() && r.body.get("ciphertext").is_none());
    let r = s.get("/v1/keys").await;
    r.assert_error(503, "audit_unavailable");
    let ready = s.wait_ready(503, Duration::from_secs(5)).await;
    assert_eq!(ready.body["audit"]["writable"], false, "{}", ready.body);

    d.db()?.allow_inserts("audit_records")?;
    let r = s.post(&format!("/v1/keys/{key}/datakey"), json!({})).await;
    r.ok();
    let ready = s.wait_ready(200, Duration::from_secs(5)).await;
    assert_eq!(ready.status.as_u16(), 200, "{}", ready.body);
    // The chain continues without a gap over the refused writes.
    let (export, pem) = export_to(&s, d.path(), "").await?;
    let (ok, out) = verify_lines(d.path(), &lines_of(&export), &pem);
    assert!(ok, "{out}");
    Ok(())
}

#[tokio::test]
async fn records_contain_no_plaintext_token_or_data_key() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    let key = unique("secrets-scan");
    s.create_key(&key).await;
    let context_value = "ctx-value-4f1d9e";
    let dk = s
        .post(
            &format!("/v1/keys/{key}/datakey"),
            json!({ "context": { "tenant": context_value } }),
        )
        .await;
    let plaintext_b64 = dk.ok()["plaintext"].as_str().unwrap().to_owned();
    let plaintext = unb64(&plaintext_b64);
    let payload = b"payload-7d2c1b-very-secret";
    let enc = s
        .post(
            &format!("/v1/keys/{key}/encrypt"),
            json!({ "plaintext": b64(payload) }),
        )
        .await;
    enc.ok();
    let secret_value = b"secret-value-88aa31";
    s.send_json(
        Method::PUT,
        "/v1/secrets/scan/me",
        json!({ "value": b64(secret_value), "key": key }),
    )
    .await
    .ok();
    let tok = token_for(&s, &unique("scanner"), &["application"]).await;
    as_token(&s, &tok, Method::GET, "/v1/keys", None).await;

    let (export, _) = export_to(&s, d.path(), "").await?;
    let mut table = Vec::new();
    for row in d.db()?.query("SELECT * FROM audit_records", &[])? {
        for cell in row {
            if let Cell::Text(t) = cell {
                table.extend_from_slice(t.as_bytes());
            }
        }
    }
    assert!(!table.is_empty());
    let needles: Vec<(&str, Vec<u8>)> = vec![
        ("data key (base64)", plaintext_b64.clone().into_bytes()),
        ("data key (hex)", hex::encode(&plaintext).into_bytes()),
        ("data key (raw)", plaintext.clone()),
        ("payload", payload.to_vec()),
        ("payload (base64)", b64(payload).into_bytes()),
        ("secret value", secret_value.to_vec()),
        ("secret value (base64)", b64(secret_value).into_bytes()),
        ("admin token", s.token.clone().into_bytes()),
        ("application token", tok.clone().into_bytes()),
        ("context value", context_value.as_bytes().to_vec()),
    ];
    for (what, needle) in &needles {
        for (place, hay) in [("export", &export), ("audit table", &table)] {
            assert!(
                !hay.windows(needle.len()).any(|w| w == needle.as_slice()),
                "{what} found in the {place}"
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn archive_removes_exported_records_and_keeps_the_chain_verifiable() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    let key = unique("archived");
    s.create_key(&key).await;
    for _ in 0..5 {
        s.post(&format!("/v1/keys/{key}/datakey"), json!({}))
            .await
            .ok();
    }
    let (export, pem) = export_to(&s, d.path(), "").await?;
    let lines = lines_of(&export);
    let last: Value = serde_json::from_str(lines.last().unwrap())?;
    assert_eq!(last["type"], "checkpoint");
    let through = last["sequence"].as_u64().unwrap();
    // The export of exactly the records to archive, as the archive will check it.
    let (_, archived_export) = s
        .get_bytes(&format!("/v1/audit/export?until={through}"))
        .await;
    assert_eq!(
        archived_export, export,
        "the same range exports the same bytes"
    );
    let digest = hex::encode(Sha256::digest(&archived_export));

    // Negative twins first.
    s.post(
        "/v1/audit/archive",
        json!({ "through": through, "export_sha256": "00".repeat(32) }),
    )
    .await
    .assert_error(409, "export_mismatch");
    s.post(
        "/v1/audit/archive",
        json!({ "through": through - 1, "export_sha256": digest }),
    )
    .await
    .assert_error(409, "not_a_checkpoint");
    s.post("/v1/audit/archive", json!({ "through": "x" }))
        .await
        .assert_error(400, "invalid_field");

    let archived = s
        .post(
            "/v1/audit/archive",
            json!({ "through": through, "export_sha256": digest }),
        )
        .await;
    let archive = archived.ok().clone();
    assert_eq!(archive["through"], through);
    assert_eq!(archive["head"], last["head"]);

    // The archived records are gone; asking for them is 410; the rest still verifies, linked
    // to the archived head.
    let r = s.get("/v1/audit/events?after=0&limit=1000").await;
    let remaining = r.ok()["records"].as_array().unwrap();
    assert!(remaining
        .iter()
        .all(|r| r["sequence"].as_u64().unwrap() > through));
    s.get("/v1/audit/export?after=1")
        .await
        .assert_error(410, "audit_archived");
    let (export, _) = export_to(&s, d.path(), "").await?;
    let lines = lines_of(&export);
    let header: Value = serde_json::from_str(&lines[0])?;
    assert_eq!(header["after"], through);
    assert_eq!(header["prev_hash"], archive["head"]);
    let (ok, out) = verify_lines(d.path(), &lines, &pem);
    assert!(ok, "{out}");
    // The archive request itself is in the log.
    let mine = archived.request_id.clone().unwrap_or_default();
    let r = s.get("/v1/audit/events?action=audit:archive").await;
    let remaining = r.ok()["records"].as_array().unwrap();
    assert!(remaining
        .iter()
        .any(|rec| rec["request_id"] == mine.as_str() && rec["action"] == "audit:archive"));
    Ok(())
}

#[tokio::test]
async fn the_cli_exports_and_verifies() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    s.create_key(&unique("cli-audit")).await;
    let file = d.path().join("cli-export.jsonl");
    let pem = d.path().join("cli-public.pem");
    let out = admin_cli(
        &s,
        &["audit", "public-key", "--out", pem.to_str().unwrap()],
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = admin_cli(
        &s,
        &["audit", "export", "--out", file.to_str().unwrap()],
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut c = std::process::Command::new(BIN);
    c.args(["audit", "verify"])
        .arg(&file)
        .arg("--public-key")
        .arg(&pem);
    let out = finish(c, b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("intact"));
    let events = json_of(&admin_cli(&s, &["audit", "events", "--limit", "5"], b""));
    assert!(!events["records"].as_array().unwrap().is_empty());
    Ok(())
}

/// The number of stored checkpoints.
fn checkpoints(d: &Deployment) -> anyhow::Result<i64> {
    Ok(d.db()?
        .query_one("SELECT COUNT(*) FROM audit_checkpoints", &[])?[0]
        .as_i64())
}

fn last_checkpoint(lines: &[String]) -> anyhow::Result<u64> {
    let last: Value = serde_json::from_str(lines.last().unwrap())?;
    assert_eq!(last["type"], "checkpoint", "an export ends on a checkpoint");
    Ok(last["sequence"].as_u64().unwrap())
}

#[tokio::test]
async fn exports_in_a_row_reuse_the_latest_checkpoint() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    let key = unique("reexported");
    s.create_key(&key).await;
    let before = checkpoints(&d)?;
    let (first, pem) = export_to(&s, d.path(), "").await?;
    let first = lines_of(&first);
    assert_eq!(checkpoints(&d)?, before + 1, "the first export signs one");
    for _ in 0..3 {
        s.post(&format!("/v1/keys/{key}/datakey"), json!({}))
            .await
            .ok();
    }
    let (second, _) = export_to(&s, d.path(), "").await?;
    let second = lines_of(&second);
    assert_eq!(
        checkpoints(&d)?,
        before + 1,
        "an export within the interval signs none"
    );
    assert_eq!(last_checkpoint(&second)?, last_checkpoint(&first)?);
    assert_eq!(
        second, first,
        "it ends at the same checkpoint: the same bytes"
    );
    let (ok, out) = verify_lines(d.path(), &second, &pem);
    assert!(ok, "{out}");
    Ok(())
}

#[tokio::test]
async fn an_export_after_the_interval_signs_a_new_checkpoint() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    d.append_config("[audit]\nexport_checkpoint_interval = \"1s\"")?;
    let s = d.start().await?;
    let key = unique("reexported");
    s.create_key(&key).await;
    let (first, pem) = export_to(&s, d.path(), "").await?;
    let first = last_checkpoint(&lines_of(&first))?;
    let count = checkpoints(&d)?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    s.post(&format!("/v1/keys/{key}/datakey"), json!({}))
        .await
        .ok();
    let (second, _) = export_to(&s, d.path(), "").await?;
    let second = lines_of(&second);
    assert_eq!(checkpoints(&d)?, count + 1);
    assert!(
        last_checkpoint(&second)? > first,
        "the new checkpoint covers the records written since"
    );
    let (ok, out) = verify_lines(d.path(), &second, &pem);
    assert!(ok, "{out}");
    Ok(())
}
