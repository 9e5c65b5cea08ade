//! `custodian store migrate` (issue 14), black-box: an install populated on SQLite moves to a
//! fresh PostgreSQL database with nothing lost — the same tokens authenticate, old ciphertexts
//! decrypt, every secret version reads back in its state, jobs and policies are there, and an
//! audit export taken after the move verifies offline across the move. Negative twins: a source
//! in use, a non-empty target, a password in the URL and a missing source are refused and
//! change nothing.

use std::path::Path;
use std::process::{Command, Output};

use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::audit::{export_to, lines_of, verify_lines};
use crate::common::cli::finish;
use crate::common::postgres::{admin, fresh_database};
use crate::common::server::{wait_job_done, Auth, BIN};
use crate::common::{b64, unb64, unique, Deployment, Server};

/// Replaces the deployment's `[store]` section (up to the next section) with `section`.
fn set_store(d: &Deployment, section: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(d.config())?;
    let start = text
        .find("[store]")
        .ok_or_else(|| anyhow::anyhow!("no [store] section"))?;
    let end = text[start + 1..]
        .find("\n[")
        .map_or(text.len(), |i| start + 1 + i);
    let new = format!("{}{section}\n{}", &text[..start], &text[end..]);
    std::fs::write(d.config(), new)?;
    Ok(())
}

/// A deployment on SQLite whatever `CUSTODIAN_TEST_STORE` says: the source of a move.
fn sqlite_deployment(extra: &str) -> anyhow::Result<Deployment> {
    let d = Deployment::new()?;
    set_store(&d, "[store]\npath = \"data/custodian.db\"")?;
    if !extra.is_empty() {
        d.append_config(extra)?;
    }
    Ok(d)
}

/// Runs `custodian store migrate --from FROM --to URL [more]`.
fn migrate(from: &Path, url: &str, more: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    c.args(["store", "migrate", "--from"])
        .arg(from)
        .args(["--to", url])
        .args(more)
        .env_remove("RUST_LOG");
    finish(c, b"")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Rows per copied table in a PostgreSQL database, straight from the database.
async fn pg_counts(db: &str) -> Vec<(String, i64)> {
    let client = admin(Some(db)).await;
    let mut counts = Vec::new();
    for table in custodian::store::migrate::COPIED {
        let n: i64 = match client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
        {
            Ok(row) => row.get(0),
            // Not created yet: the schema is applied when the target is first opened.
            Err(_) => -1,
        };
        counts.push(((*table).to_owned(), n));
    }
    counts
}

async fn as_token(
    s: &Server,
    token: &str,
    method: Method,
    path: &str,
) -> crate::common::server::Reply {
    let header = format!("Bearer {token}");
    s.raw(method, path, Auth::Header(&header), None, Vec::new())
        .await
}

async fn encrypt(s: &Server, key: &str, what: &[u8]) -> String {
    let r = s
        .post(
            &format!("/v1/keys/{key}/encrypt"),
            json!({ "plaintext": b64(what), "context": { "app": "billing" } }),
        )
        .await;
    r.ok()["ciphertext"].as_str().unwrap().to_owned()
}

fn records_in(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "record")
        .filter_map(|v| v["sequence"].as_u64())
        .collect()
}

#[tokio::test]
async fn an_install_moves_from_sqlite_to_postgres_with_nothing_lost() -> anyhow::Result<()> {
    let mut d =
        sqlite_deployment("[secrets]\ndefault_key = \"sk\"\n\n[audit]\ncheckpoint_records = 5")?;
    let s = d.start().await?;

    // Keys: one rotated (two versions) with a ciphertext under each, an alias.
    let key = unique("moved");
    s.create_key(&key).await;
    s.create_key("sk").await;
    let before_v1 = encrypt(&s, &key, b"before the move, v1").await;
    s.send(Method::POST, &format!("/v1/keys/{key}/rotate"))
        .await
        .ok();
    let before_v2 = encrypt(&s, &key, b"before the move, v2").await;
    let alias = unique("moved-alias");
    s.post("/v1/aliases", json!({ "name": alias, "key": key }))
        .await
        .ok();

    // An archive of the oldest records: the chain then starts after it, linked to its head.
    let (early, _) = export_to(&s, d.path(), "").await?;
    let last: Value = serde_json::from_str(lines_of(&early).last().unwrap())?;
    let archived_through = last["sequence"].as_u64().unwrap();
    let digest = hex::encode(Sha256::digest(&early));
    s.post(
        "/v1/audit/archive",
        json!({ "through": archived_through, "export_sha256": digest }),
    )
    .await
    .ok();

    // A policy, a principal with it, and its token.
    let policy = unique("reader");
    let r = s
        .send_json(
            Method::PUT,
            &format!("/v1/policies/{policy}"),
            json!({ "statements": [{ "effect": "allow", "actions": ["key:read"], "resources": ["*"] }] }),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.body);
    let principal = unique("reader-app");
    s.post(
        "/v1/principals",
        json!({ "name": principal, "policies": [policy] }),
    )
    .await
    .ok();
    let t = s
        .post("/v1/tokens", json!({ "principal": principal }))
        .await;
    let app_token = t.ok()["token"].as_str().unwrap().to_owned();
    as_token(&s, &app_token, Method::GET, &format!("/v1/keys/{key}"))
        .await
        .ok();

    // Secrets: four versions, one destroyed, one deleted; a second path.
    for v in ["one", "two", "three", "four"] {
        s.send_json(
            Method::PUT,
            "/v1/secrets/app/db",
            json!({ "value_text": v }),
        )
        .await
        .ok();
    }
    s.send_json(
        Method::PUT,
        "/v1/secrets/app/api",
        json!({ "value_text": "api-secret" }),
    )
    .await
    .ok();
    s.post("/v1/secrets/app/db/destroy", json!({ "versions": [1] }))
        .await
        .ok();
    s.send(Method::DELETE, "/v1/secrets/app/db?versions=2")
        .await
        .ok();

    // A re-wrap job: the secrets' key rotated, their data keys moved to the new version.
    s.send(Method::POST, "/v1/keys/sk/rotate").await.ok();
    let job = s.send(Method::POST, "/v1/keys/sk/rewrap").await;
    assert_eq!(job.status.as_u16(), 202, "{}", job.body);
    let job_id = job.body["id"].as_str().unwrap().to_owned();
    let finished = wait_job_done(&s, "sk").await;
    assert_eq!(finished["state"], "completed", "{finished}");

    // An export before the move: it ends on a checkpoint signed now.
    let (export, pem) = export_to(&s, d.path(), "").await?;
    let before = records_in(&lines_of(&export));
    let last_before = *before.iter().max().unwrap();
    assert!(
        last_before > 20,
        "enough requests for checkpoints: {last_before}"
    );

    // Refused while the server has the file open; the target is left as it was.
    let (db, settings) = fresh_database().await;
    let out = migrate(&d.database(), &settings.url, &[]);
    let (stdout, stderr) = text(&out);
    assert!(
        !out.status.success(),
        "migrated under a running server: {stdout}"
    );
    assert!(stderr.contains("in use by another process"), "{stderr}");
    assert!(pg_counts(&db).await.iter().all(|(_, n)| *n <= 0));

    s.terminate()?;
    let out = migrate(&d.database(), &settings.url, &[]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "migrate failed: {stderr}");
    assert!(
        stdout.contains("audit_records") && stdout.contains("total"),
        "{stdout}"
    );
    // The export's own request and the public key's follow its last record.
    let head: u64 = stdout
        .split("through sequence ")
        .nth(1)
        .and_then(|t| t.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no audit head in {stdout}"));
    assert!(head > last_before, "{stdout}");
    eprintln!("store migrate:\n{stdout}");
    // Every table holds what the source holds, row for row.
    let source = rusqlite::Connection::open(d.database())?;
    for (table, n) in pg_counts(&db).await {
        let m: i64 =
            source.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
        assert_eq!(n, m, "{table}");
    }
    drop(source);

    // The same deployment on PostgreSQL.
    set_store(
        &d,
        &format!(
            "[store]\nkind = \"postgres\"\nurl = \"{}\"\npool_size = 4\nconnect_timeout = \"3s\"",
            settings.url
        ),
    )?;
    let s = d.start().await?;
    let (stdout, _) = s.output();
    assert!(
        !stdout.contains("store it now"),
        "a second bootstrap token was minted: the tokens were not moved"
    );

    // Tokens: the admin's (every request here) and the application's.
    as_token(&s, &app_token, Method::GET, &format!("/v1/keys/{key}"))
        .await
        .ok();
    as_token(&s, &app_token, Method::POST, "/v1/keys/nope/rotate")
        .await
        .assert_error(403, "forbidden");
    // Keys: both versions, the alias, and ciphertexts from before the move.
    let versions = s.get(&format!("/v1/keys/{key}/versions")).await;
    assert_eq!(
        versions.ok()["versions"].as_array().unwrap().len(),
        2,
        "{}",
        versions.body
    );
    let a = s.get(&format!("/v1/aliases/{alias}")).await;
    assert_eq!(
        a.ok()["key_id"],
        s.get(&format!("/v1/keys/{key}")).await.ok()["id"]
    );
    for (blob, plain) in [
        (&before_v1, &b"before the move, v1"[..]),
        (&before_v2, &b"before the move, v2"[..]),
    ] {
        let r = s
            .post(
                "/v1/decrypt",
                json!({ "ciphertext": blob, "context": { "app": "billing" } }),
            )
            .await;
        assert_eq!(unb64(r.ok()["plaintext"].as_str().unwrap()), plain);
    }
    // Secrets: every version in its state.
    let meta = s.get("/v1/secrets/app/db/metadata").await;
    let states: Vec<&str> = meta.ok()["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["destroyed", "deleted", "live", "live"],
        "{}",
        meta.body
    );
    s.get("/v1/secrets/app/db?version=1")
        .await
        .assert_error(410, "secret_version_destroyed");
    for (version, value) in [(3, "three"), (4, "four")] {
        let r = s
            .get(&format!("/v1/secrets/app/db?version={version}&text=true"))
            .await;
        assert_eq!(r.ok()["value_text"], value);
    }
    s.post("/v1/secrets/app/db/undelete", json!({ "versions": [2] }))
        .await
        .ok();
    let r = s.get("/v1/secrets/app/db?version=2&text=true").await;
    assert_eq!(r.ok()["value_text"], "two");
    let r = s.get("/v1/secrets/app/api?text=true").await;
    assert_eq!(r.ok()["value_text"], "api-secret");
    // The job and its trail, the policy.
    let j = s.get(&format!("/v1/jobs/{job_id}")).await;
    assert_eq!(j.ok()["state"], "completed");
    let trail = s.get(&format!("/v1/jobs/{job_id}/events")).await;
    assert!(trail.ok()["events"].as_array().unwrap().len() >= 2);
    s.get(&format!("/v1/policies/{policy}")).await.ok();

    // The audit chain continues: an export now covers records from before and after the move
    // and verifies offline.
    let (export, pem_after) = export_to(&s, d.path(), "").await?;
    assert_eq!(std::fs::read(&pem)?, std::fs::read(&pem_after)?);
    let lines = lines_of(&export);
    let after = records_in(&lines);
    assert_eq!(
        after.first(),
        Some(&(archived_through + 1)),
        "the export starts after the archive"
    );
    let header: Value = serde_json::from_str(&lines[0])?;
    assert_eq!(
        header["prev_hash"], last["head"],
        "linked to the archived head"
    );
    assert!(after.contains(&last_before));
    assert!(
        after.iter().any(|seq| *seq > last_before),
        "no record after the move"
    );
    let (ok, out) = verify_lines(d.path(), &lines, &pem_after);
    assert!(ok, "{out}");
    Ok(())
}

#[tokio::test]
async fn migrate_refuses_a_non_empty_target_a_password_in_the_url_and_a_missing_source(
) -> anyhow::Result<()> {
    let mut d = sqlite_deployment("")?;
    let s = d.start().await?;
    s.create_key(&unique("small")).await;
    s.terminate()?;
    let (db, settings) = fresh_database().await;

    // A missing source: refused, and not created.
    let missing = d.path().join("data/nope.db");
    let out = migrate(&missing, &settings.url, &[]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(!missing.exists(), "the missing source was created");

    // A password in the URL: refused without echoing it, before the source is touched.
    let with_password = settings.url.replacen('@', ":hunter2-in-url@", 1);
    for url in [
        with_password.clone(),
        format!("{}?password=hunter2-in-url", settings.url),
    ] {
        let out = migrate(&d.database(), &url, &[]);
        let (stdout, stderr) = text(&out);
        assert!(!out.status.success());
        assert!(stderr.contains("must not contain a password"), "{stderr}");
        assert!(
            !stderr.contains("hunter2") && !stdout.contains("hunter2"),
            "the password was echoed: {stderr}"
        );
    }
    assert!(pg_counts(&db).await.iter().all(|(_, n)| *n <= 0));

    // A password variable that is not set: refused, naming the option.
    let out = migrate(
        &d.database(),
        &settings.url,
        &["--to-password-env", "CUSTODIAN_TEST_NO_SUCH_VARIABLE"],
    );
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("--to-password-env"), "{stderr}");
    assert!(pg_counts(&db).await.iter().all(|(_, n)| *n <= 0));

    // The first move succeeds; a second into the same (now non-empty) database is refused,
    // names what is there, and changes nothing.
    let out = migrate(&d.database(), &settings.url, &[]);
    assert!(out.status.success(), "{}", text(&out).1);
    let counts = pg_counts(&db).await;
    let out = migrate(&d.database(), &settings.url, &[]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "migrated twice: {stdout}");
    assert!(
        stderr.contains("the target database is not empty"),
        "{stderr}"
    );
    assert!(
        stderr.contains("keys: 1 row") && stderr.contains("tokens: 1 row"),
        "{stderr}"
    );
    assert!(stderr.contains("audit_records: "), "{stderr}");
    assert_eq!(
        pg_counts(&db).await,
        counts,
        "a refused migration changed the target"
    );

    // Any data at all makes a target non-empty (here one principal).
    let (db2, settings2) = fresh_database().await;
    let client = admin(Some(&db2)).await;
    drop(custodian::store::postgres::PostgresStore::open(&settings2).await?);
    client
        .batch_execute(
            "INSERT INTO principals (name, attributes, policies, created_at, updated_at) \
             VALUES ('someone', '{}', '[]', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
        )
        .await?;
    let out = migrate(&d.database(), &settings2.url, &[]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("principals: 1 row"), "{stderr}");
    Ok(())
}

#[test]
fn migrate_takes_its_password_from_a_file_or_the_environment_only() {
    let out = Command::new(BIN)
        .args(["store", "migrate", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--to-password-file") && help.contains("--to-password-env"));
    for forbidden in ["--password ", "--to-password ", "--pin", "--token "] {
        assert!(!help.contains(forbidden), "offers {forbidden}: {help}");
    }
    // Both at once are refused by the parser.
    let out = Command::new(BIN)
        .args([
            "store",
            "migrate",
            "--from",
            "x.db",
            "--to",
            "postgres://u@h/d",
            "--to-password-file",
            "f",
            "--to-password-env",
            "V",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
