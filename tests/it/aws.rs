//! The AWS KMS door driven by the real clients (pinned in the virtual environment that
//! `scripts/lib.sh`'s `ensure_python_clients` makes; its python in `CUSTODIAN_TEST_PYTHON`):
//! boto3 through every operation with the negative twins (tests/clients/boto3_kms.py), the AWS
//! Encryption SDK round trip of a 10 MiB file (tests/clients/esdk_file.py), and the access keys
//! behind them (create, list, revoke, expiry) on the native API.

use std::process::Command;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{Deployment, Server};
use crate::vault::python;

/// An access key as the native API returned it.
pub(crate) struct AccessKey {
    pub(crate) id: String,
    pub(crate) secret: String,
}

pub(crate) async fn access_key(s: &Server, principal: &str, extra: Value) -> AccessKey {
    let mut body = json!({ "principal": principal, "description": "aws door test" });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let r = s.post("/v1/access-keys", body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    AccessKey {
        id: r.body["id"].as_str().unwrap().to_owned(),
        secret: r.body["secret_access_key"].as_str().unwrap().to_owned(),
    }
}

/// A server whose access keys are sealed under `access-keys`, with an access key for the
/// bootstrap admin and one for a principal whose policy lacks `decrypt`.
async fn deployment() -> anyhow::Result<(Deployment, Server, AccessKey, AccessKey)> {
    let mut d = Deployment::new()?;
    d.append_config("[aws]\naccess_key_key = \"access-keys\"")?;
    let s = d.start().await?;
    s.create_key("access-keys").await;
    let admin = access_key(&s, "bootstrap-admin", json!({})).await;
    let r = s
        .send_json(
            Method::PUT,
            "/v1/policies/no-decrypt",
            json!({ "statements": [{
                "sid": "everything-but-decrypt",
                "effect": "allow",
                "actions": ["encrypt", "datakey:generate", "datakey:generate-plaintext", "key:read"],
                "resources": ["key/*", "alias/*"],
            }]}),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.body);
    let r = s
        .post(
            "/v1/principals",
            json!({ "name": "aws-limited", "policies": ["no-decrypt"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let limited = access_key(&s, "aws-limited", json!({})).await;
    Ok((d, s, admin, limited))
}

pub(crate) fn run_client(script: &str, s: &Server, env: &[(&str, &str)]) -> (bool, String) {
    let path = format!("{}/tests/clients/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut c = Command::new(python());
    c.arg(path)
        .env("KMS_ENDPOINT", &s.base)
        .env("AWS_REGION", "us-east-1")
        // Nothing from the environment of the machine running the tests.
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The audit records of the AWS door.
async fn aws_records(s: &Server) -> Vec<Value> {
    let r = s.get("/v1/audit/events?limit=1000").await;
    r.ok()["records"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["route"] == "/")
        .collect()
}

#[tokio::test]
async fn boto3_drives_every_operation() -> anyhow::Result<()> {
    let (_d, s, admin, limited) = deployment().await?;
    let (ok, out) = run_client(
        "boto3_kms.py",
        &s,
        &[
            ("ADMIN_KEY_ID", &admin.id),
            ("ADMIN_SECRET", &admin.secret),
            ("LIMITED_KEY_ID", &limited.id),
            ("LIMITED_SECRET", &limited.secret),
        ],
    );
    eprintln!("{out}");
    assert!(ok, "boto3 client script failed:\n{out}");
    assert!(out.contains("ALL PASSED"), "{out}");

    // Same rules behind every door: the denied Decrypt is recorded `denied` (the wire said
    // 400), as `decrypt` on the key, with the door and its operation named.
    let records = aws_records(&s).await;
    let denied: Vec<&Value> = records
        .iter()
        .filter(|e| e["outcome"] == "denied" && e["action"] == "decrypt")
        .collect();
    assert!(!denied.is_empty(), "no denied decrypt among {records:#?}");
    let d = denied[0];
    assert_eq!(d["status"], 400, "{d}");
    assert_eq!(d["principal"], "aws-limited", "{d}");
    assert_eq!(d["details"]["front_door"], "aws-kms", "{d}");
    assert_eq!(d["details"]["front_door_operation"], "Decrypt", "{d}");
    assert!(
        d["credential"]
            .as_str()
            .is_some_and(|c| c == format!("access-key:{}", limited.id)),
        "{d}"
    );
    // Successful crypto names the key version used; failed authentications are recorded too.
    assert!(records.iter().any(|e| e["outcome"] == "success"
        && e["details"]["front_door_operation"] == "GenerateDataKey"
        && e["key_id"].is_string()));
    assert!(records.iter().any(|e| e["outcome"] == "unauthenticated"));
    // The secret access key is in no record.
    let all = s.get("/v1/audit/events?limit=1000").await;
    assert!(!all.body.to_string().contains(&admin.secret));
    Ok(())
}

#[tokio::test]
async fn the_encryption_sdk_round_trips_a_10_mib_file() -> anyhow::Result<()> {
    let (_d, s, admin, _limited) = deployment().await?;
    let key = s.create_key("esdk").await;
    let key_id = key["id"].as_str().unwrap().to_owned();
    let dir = tempfile::tempdir()?;
    let (ok, out) = run_client(
        "esdk_file.py",
        &s,
        &[
            ("ADMIN_KEY_ID", &admin.id),
            ("ADMIN_SECRET", &admin.secret),
            (
                "KEY_ARN",
                &format!("arn:aws:kms:us-east-1:000000000000:key/{key_id}"),
            ),
            ("WORK_DIR", dir.path().to_str().unwrap()),
        ],
    );
    eprintln!("{out}");
    assert!(ok, "ESDK client script failed:\n{out}");
    assert!(out.contains("ALL PASSED"), "{out}");
    // The changed context was refused by Custodian itself: a rejected Decrypt of that key.
    let records = aws_records(&s).await;
    assert!(
        records
            .iter()
            .any(|e| e["details"]["front_door_operation"] == "Decrypt"
                && e["outcome"] == "rejected"
                && e["error_code"] == "decryption_failed"
                && e["key_id"] == key_id.as_str()),
        "{records:#?}"
    );
    assert!(records.iter().any(
        |e| e["details"]["front_door_operation"] == "GenerateDataKey" && e["outcome"] == "success"
    ));
    Ok(())
}

#[tokio::test]
async fn access_keys_are_created_listed_revoked_and_expire() -> anyhow::Result<()> {
    let (_d, s, admin, limited) = deployment().await?;
    // Listed without their secrets; filtered by principal.
    let r = s.get("/v1/access-keys?principal=aws-limited").await;
    let keys = r.ok()["access_keys"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0]["id"], limited.id.as_str());
    assert!(!r.body.to_string().contains(&limited.secret));
    assert!(keys[0].get("secret_access_key").is_none());
    let r = s.get("/v1/access-keys").await;
    assert_eq!(r.ok()["access_keys"].as_array().map(Vec::len), Some(2));

    // Negative twins of creation: an unknown principal, a bad key, a principal that may not.
    s.post("/v1/access-keys", json!({ "principal": "nobody" }))
        .await
        .assert_error(404, "principal_not_found");
    s.post(
        "/v1/access-keys",
        json!({ "principal": "aws-limited", "key": "no-such-key" }),
    )
    .await
    .assert_error(404, "key_not_found");
    s.post(
        "/v1/access-keys",
        json!({ "principal": "aws-limited", "surprise": 1 }),
    )
    .await
    .assert_error(400, "unknown_field");

    // The secret is not in the database in clear (SQLite: its files; PostgreSQL: the database's
    // files and the WAL written since it was made).
    for f in _d.db()?.files_at_rest()? {
        assert!(
            crate::common::db::find_any(&f.bytes, &[admin.secret.as_bytes()]).is_none(),
            "the secret is stored in clear in {}",
            f.name
        );
    }

    // An expiring key works until it expires; a revoked one stops at once.
    // Long enough for a first probe on a loaded machine (boto3 starts in about a second).
    let brief = access_key(&s, "aws-limited", json!({ "ttl": "6s" })).await;
    let made = std::time::Instant::now();
    let probe = |k: &AccessKey| {
        run_client(
            "boto3_probe.py",
            &s,
            &[("ADMIN_KEY_ID", &k.id), ("ADMIN_SECRET", &k.secret)],
        )
    };
    let (ok, out) = probe(&brief);
    assert!(ok && out.contains("OK"), "{out}");
    tokio::time::sleep(std::time::Duration::from_millis(6500).saturating_sub(made.elapsed())).await;
    let (_, out) = probe(&brief);
    assert!(out.contains("UnrecognizedClientException"), "{out}");

    let (ok, out) = probe(&limited);
    assert!(ok && out.contains("OK"), "{out}");
    assert_eq!(
        s.send(Method::DELETE, &format!("/v1/access-keys/{}", limited.id))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let (_, out) = probe(&limited);
    assert!(out.contains("UnrecognizedClientException"), "{out}");
    s.send(Method::DELETE, "/v1/access-keys/CKIAAAAAAAAAAAAAAAAA")
        .await
        .assert_error(404, "access_key_not_found");
    s.send(Method::DELETE, "/v1/access-keys/not-an-id")
        .await
        .assert_error(404, "access_key_not_found");

    // Deleting a principal revokes its access keys.
    let third = access_key(&s, "aws-limited", json!({})).await;
    assert_eq!(
        s.send(Method::DELETE, "/v1/principals/aws-limited")
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let (_, out) = probe(&third);
    assert!(out.contains("UnrecognizedClientException"), "{out}");

    // The sealing key's version is referenced by every access key not revoked (the admin's
    // alone now: the principal's deletion revoked the others), so it cannot be destroyed under
    // it.
    let versions = s.get("/v1/keys/access-keys/versions").await;
    let body = versions.ok().clone();
    assert_eq!(body["versions"][0]["stored_data_keys"], 1, "{body}");
    Ok(())
}

/// A re-wrap job moves the live access keys sealed under the key's older versions too, naming
/// them in its record: afterwards the old version can be retired and destroyed while the access
/// key still signs. (Before, an access key held its version: retiring it locked the key's holder
/// out, destroying it was refused.) A revoked access key is left where it is.
#[tokio::test]
async fn a_rewrap_moves_access_keys_so_their_old_version_can_go() -> anyhow::Result<()> {
    let (_d, s, admin, limited) = deployment().await?;
    let probe = |k: &AccessKey| {
        run_client(
            "boto3_probe.py",
            &s,
            &[("ADMIN_KEY_ID", &k.id), ("ADMIN_SECRET", &k.secret)],
        )
    };
    assert_eq!(
        s.send(Method::DELETE, &format!("/v1/access-keys/{}", limited.id))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    s.send(Method::POST, "/v1/keys/access-keys/rotate")
        .await
        .ok();
    let job = s.send(Method::POST, "/v1/keys/access-keys/rewrap").await;
    assert_eq!(job.status.as_u16(), 202, "{}", job.body);
    let done = crate::common::server::wait_job_done(&s, "access-keys").await;
    assert_eq!(done["state"], "completed", "{done}");

    let records = crate::throttle::all_after(&s, 0).await;
    let moved: Vec<&Value> = records
        .iter()
        .filter(|r| r["details"]["access_keys_moved"].is_string())
        .collect();
    assert_eq!(
        moved.len(),
        1,
        "one job end names the moved keys: {moved:?}"
    );
    assert_eq!(moved[0]["details"]["access_keys_moved"], admin.id.as_str());
    let versions = s.get("/v1/keys/access-keys/versions").await;
    let body = versions.ok().clone();
    let held = |v: u64| {
        body["versions"]
            .as_array()
            .and_then(|vs| vs.iter().find(|x| x["version"] == v))
            .map(|x| x["stored_data_keys"].clone())
    };
    assert_eq!(held(1), Some(json!(0)), "{body}");
    assert_eq!(held(2), Some(json!(1)), "{body}");

    let r = s
        .send_json(
            Method::PATCH,
            "/v1/keys/access-keys",
            json!({ "min_decryption_version": 2 }),
        )
        .await;
    assert_eq!(r.ok()["min_decryption_version"], 2);
    let (ok, out) = probe(&admin);
    assert!(
        ok && out.contains("OK"),
        "signs after version 1 is retired: {out}"
    );
    s.send(Method::POST, "/v1/keys/access-keys/versions/1/destroy")
        .await
        .ok();
    let (ok, out) = probe(&admin);
    assert!(
        ok && out.contains("OK"),
        "signs after version 1 is destroyed: {out}"
    );
    // The revoked key stayed under version 1 and still fails as revoked.
    let (_, out) = probe(&limited);
    assert!(out.contains("UnrecognizedClientException"), "{out}");
    Ok(())
}

#[tokio::test]
async fn the_cli_creates_lists_and_revokes_access_keys() -> anyhow::Result<()> {
    use crate::common::cli::{admin_cli, json_of};
    let (_d, s, _admin, _limited) = deployment().await?;
    let out = admin_cli(
        &s,
        &[
            "access-keys",
            "create",
            "--principal",
            "bootstrap-admin",
            "--ttl",
            "1h",
        ],
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout.clone())?;
    let value = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .map(str::to_owned)
            .unwrap_or_default()
    };
    let key = AccessKey {
        id: value("AWS_ACCESS_KEY_ID"),
        secret: value("AWS_SECRET_ACCESS_KEY"),
    };
    assert_eq!((key.id.len(), key.secret.len()), (20, 40), "{stdout}");
    // The metadata goes to stderr, without the secret.
    let meta: Value = serde_json::from_slice(&out.stderr)?;
    assert_eq!(meta["id"], key.id.as_str());
    assert!(meta["expires_at"].is_string());
    assert!(!String::from_utf8_lossy(&out.stderr).contains(&key.secret));

    let probe = || {
        run_client(
            "boto3_probe.py",
            &s,
            &[("ADMIN_KEY_ID", &key.id), ("ADMIN_SECRET", &key.secret)],
        )
    };
    let (ok, text) = probe();
    assert!(ok && text.contains("OK"), "{text}");

    let listed = json_of(&admin_cli(
        &s,
        &["access-keys", "list", "--principal", "bootstrap-admin"],
        b"",
    ));
    let ids: Vec<&str> = listed["access_keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k["id"].as_str())
        .collect();
    assert!(ids.contains(&key.id.as_str()), "{listed}");
    assert!(!listed.to_string().contains(&key.secret));

    let out = admin_cli(&s, &["access-keys", "revoke", &key.id], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ok, text) = probe();
    assert!(
        !ok && text.contains("UnrecognizedClientException"),
        "{text}"
    );
    // Negative twin: an unknown principal is refused with the API's code.
    let out = admin_cli(&s, &["access-keys", "create", "--principal", "nobody"], b"");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("principal_not_found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
