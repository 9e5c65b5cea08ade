//! Secrets over HTTP: round trips, versions, soft delete/undelete/destroy, pruning, expiry,
//! check-and-set (also under concurrency), the AAD binding against swapped database rows,
//! generated secrets rotating across a restart, and plaintext hygiene.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::db::{find_any, Cell};
use crate::common::server::Auth;
use crate::common::{b64, unb64, Deployment, Server};

/// A deployment whose secrets default to key `sk`, with small limits for the tests.
async fn secrets_server(extra: &str) -> anyhow::Result<(Deployment, Server)> {
    let mut d = Deployment::new()?;
    d.append_config(&format!(
        "[secrets]\ndefault_key = \"sk\"\nmax_value_bytes = 2048\nrotation_check_interval_ms = 200\n{extra}"
    ))?;
    let s = d.start().await?;
    s.create_key("sk").await;
    Ok((d, s))
}

/// A GET sent byte for byte, without client-side path normalisation.
async fn raw_get(s: &Server, target: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = s.base.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await?;
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        s.token
    );
    conn.write_all(req.as_bytes()).await?;
    let mut out = String::new();
    conn.read_to_string(&mut out).await?;
    let status = out.split_whitespace().nth(1).unwrap_or_default().parse()?;
    Ok((status, out))
}

async fn put(s: &Server, path: &str, body: Value) -> crate::common::server::Reply {
    s.send_json(Method::PUT, &format!("/v1/secrets/{path}"), body)
        .await
}

async fn put_text(s: &Server, path: &str, text: &str) -> u64 {
    let r = put(s, path, json!({ "value_text": text })).await;
    r.ok()["version"].as_u64().unwrap()
}

async fn read(s: &Server, path_and_query: &str) -> crate::common::server::Reply {
    s.get(&format!("/v1/secrets/{path_and_query}")).await
}

async fn read_text(s: &Server, path_and_query: &str) -> String {
    let sep = if path_and_query.contains('?') {
        '&'
    } else {
        '?'
    };
    let r = read(s, &format!("{path_and_query}{sep}text=true")).await;
    r.ok()["value_text"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn values_round_trip_with_version_history() -> anyhow::Result<()> {
    let (_d, s) = secrets_server("").await?;
    assert_eq!(put_text(&s, "team/app/db", "one").await, 1);
    assert_eq!(put_text(&s, "team/app/db", "two").await, 2);
    let binary: Vec<u8> = (0..=255).collect();
    let r = put(&s, "team/app/db", json!({ "value": b64(&binary) })).await;
    assert_eq!(r.ok()["version"], 3);

    let latest = read(&s, "team/app/db").await;
    assert_eq!(latest.ok()["version"], 3);
    assert_eq!(unb64(latest.body["value"].as_str().unwrap()), binary);
    assert!(
        latest.body.get("value_text").is_none(),
        "text only when asked for"
    );
    // Not UTF-8: no text even when asked.
    let latest = read(&s, "team/app/db?text=true").await;
    assert!(latest.ok().get("value_text").is_none());
    assert_eq!(read_text(&s, "team/app/db?version=1").await, "one");
    assert_eq!(read_text(&s, "team/app/db?version=2").await, "two");
    assert_eq!(
        unb64(
            read(&s, "team/app/db?version=2").await.ok()["value"]
                .as_str()
                .unwrap()
        ),
        b"two"
    );

    let meta = s.get("/v1/secrets/team/app/db/metadata").await;
    let meta = meta.ok();
    assert_eq!(meta["current_version"], 3);
    assert_eq!(meta["versions"].as_array().unwrap().len(), 3);
    assert!(meta["versions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v["state"] == "live" && v["key_version"] == 1));
    // An explicit key works too, and an empty value is a value.
    s.create_key("other").await;
    let r = put(
        &s,
        "team/app/api",
        json!({ "value_text": "", "key": "other" }),
    )
    .await;
    assert_eq!(r.ok()["version"], 1);
    assert_eq!(read_text(&s, "team/app/api").await, "");
    Ok(())
}

#[tokio::test]
async fn list_by_prefix_never_returns_values() -> anyhow::Result<()> {
    let (_d, s) = secrets_server("").await?;
    for p in ["team/a/x", "team/a/y", "team/b/z", "teamx/q", "other/p"] {
        put_text(&s, p, "secret-value-not-listed").await;
    }
    let r = s.get("/v1/secrets?prefix=team/").await;
    let paths: Vec<&str> = r.ok()["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["team/a/x", "team/a/y", "team/b/z"]);
    assert!(!r.body.to_string().contains("secret-value-not-listed"));
    assert!(!r.body.to_string().contains("\"value\""));
    let page1 = s.get("/v1/secrets?limit=2").await;
    let next = page1.ok()["next"].as_str().unwrap().to_owned();
    let page2 = s.get(&format!("/v1/secrets?limit=2&after={next}")).await;
    assert_eq!(page2.ok()["secrets"][0]["path"], "team/a/y");
    s.get("/v1/secrets?limit=0")
        .await
        .assert_error(400, "invalid_limit");
    s.get("/v1/secrets?after=a//b")
        .await
        .assert_error(400, "invalid_query");
    Ok(())
}

#[tokio::test]
async fn soft_delete_undelete_and_destroy() -> anyhow::Result<()> {
    let (d, s) = secrets_server("").await?;
    put_text(&s, "app/pw", "v1-value").await;
    put_text(&s, "app/pw", "v2-value").await;
    put_text(&s, "app/pw", "v3-value").await;

    // Soft delete of the latest: reads fall back to the newest live version.
    let del = s.send(Method::DELETE, "/v1/secrets/app/pw").await;
    assert_eq!(del.ok()["changed"], json!([3]));
    assert_eq!(read_text(&s, "app/pw").await, "v2-value");
    read(&s, "app/pw?version=3")
        .await
        .assert_error(404, "secret_version_deleted");
    let undel = s.post("/v1/secrets/app/pw/undelete", json!({})).await;
    assert_eq!(undel.ok()["changed"], json!([3]));
    assert_eq!(read_text(&s, "app/pw").await, "v3-value");

    // Delete named versions.
    let del = s
        .send(Method::DELETE, "/v1/secrets/app/pw?versions=1,2")
        .await;
    assert_eq!(del.ok()["changed"], json!([1, 2]));
    read(&s, "app/pw?version=1")
        .await
        .assert_error(404, "secret_version_deleted");

    // Destroy: gone for good, cannot be undeleted.
    let v1 =
        "SELECT wrapped_dek, ciphertext FROM secret_versions WHERE path = 'app/pw' AND version = 1";
    let row = d.db()?.query_one(v1, &[])?;
    let stored_v1 = (row[0].as_bytes().to_vec(), row[1].as_bytes().to_vec());
    let destroyed = s
        .post("/v1/secrets/app/pw/destroy", json!({ "versions": [1] }))
        .await;
    assert_eq!(destroyed.ok()["changed"], json!([1]));
    read(&s, "app/pw?version=1")
        .await
        .assert_error(410, "secret_version_destroyed");
    s.post("/v1/secrets/app/pw/undelete", json!({ "versions": [1] }))
        .await
        .assert_error(410, "secret_version_destroyed");
    let again = s
        .post("/v1/secrets/app/pw/destroy", json!({ "versions": [1] }))
        .await;
    assert_eq!(
        again.ok()["changed"],
        json!([]),
        "destroying twice changes nothing"
    );
    let undel = s
        .post("/v1/secrets/app/pw/undelete", json!({ "versions": [2] }))
        .await;
    assert_eq!(undel.ok()["changed"], json!([2]));
    assert_eq!(read_text(&s, "app/pw?version=2").await, "v2-value");

    // Negative twins.
    s.post("/v1/secrets/app/pw/destroy", json!({ "versions": [9] }))
        .await
        .assert_error(404, "secret_version_not_found");
    s.post("/v1/secrets/app/pw/destroy", json!({}))
        .await
        .assert_error(400, "invalid_field");
    s.post("/v1/secrets/app/pw/destroy", json!({ "versions": [] }))
        .await
        .assert_error(400, "invalid_field");
    s.post("/v1/secrets/nope/destroy", json!({ "versions": [1] }))
        .await
        .assert_error(404, "secret_not_found");
    s.send(Method::DELETE, "/v1/secrets/app/pw?versions=x")
        .await
        .assert_error(400, "invalid_query");

    // The destroyed version's bytes are gone from its row...
    s.kill();
    let db = d.db()?;
    assert_eq!(
        db.query_one(v1, &[])?,
        [Cell::Null, Cell::Null],
        "the destroyed version's row still holds its data"
    );
    // ...and from what holds the database at rest. SQLite: the database file and its journal
    // (`secure_delete`, and a WAL checkpoint after each destroy). PostgreSQL keeps the old row
    // version in the table's pages until they are rewritten, and in WAL segments until they are
    // recycled (docs/store.md, "Erasure on PostgreSQL"), so there the check is of the procedure
    // that page documents for byte-level removal: after `VACUUM (FULL, ANALYZE) secret_versions`
    // (and the `CHECKPOINT` before reading), the database's data files hold neither.
    if db.is_postgres() {
        db.batch("VACUUM (FULL, ANALYZE) secret_versions")?;
    }
    let mut bytes = Vec::new();
    for f in db.files_at_rest()?.into_iter().filter(|f| !f.wal) {
        bytes.extend(f.bytes);
    }
    let contains = |needle: &[u8]| find_any(&bytes, &[needle]).is_some();
    assert!(
        !contains(&stored_v1.1),
        "the destroyed ciphertext is still on disk"
    );
    assert!(
        !contains(&stored_v1.0),
        "the destroyed wrapped data key is still on disk"
    );
    assert!(contains(b"app/pw"), "the path itself is still recorded");
    Ok(())
}

#[tokio::test]
async fn max_versions_prunes_the_oldest() -> anyhow::Result<()> {
    let (_d, s) = secrets_server("").await?;
    let meta = s
        .send_json(
            Method::PUT,
            "/v1/secrets/pruned/metadata",
            json!({ "max_versions": 2 }),
        )
        .await;
    assert_eq!(meta.ok()["max_versions"], 2);
    for i in 1..=4 {
        put_text(&s, "pruned", &format!("value-{i}")).await;
    }
    read(&s, "pruned?version=1")
        .await
        .assert_error(410, "secret_version_destroyed");
    read(&s, "pruned?version=2")
        .await
        .assert_error(410, "secret_version_destroyed");
    assert_eq!(read_text(&s, "pruned?version=3").await, "value-3");
    assert_eq!(read_text(&s, "pruned").await, "value-4");
    // Lowering the limit prunes at once.
    let meta = s
        .send_json(
            Method::PUT,
            "/v1/secrets/pruned/metadata",
            json!({ "max_versions": 1 }),
        )
        .await;
    let states: Vec<&str> = meta.ok()["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["destroyed", "destroyed", "destroyed", "live"]);
    Ok(())
}

/// A secret written more than `max_versions` + 100 times: the newest 100 destroyed versions stay
/// listed (410), older ones are removed (404) and the metadata stays bounded.
#[tokio::test]
async fn old_tombstones_are_removed_beyond_the_newest_100() -> anyhow::Result<()> {
    let (_d, s) = secrets_server("").await?;
    s.send_json(
        Method::PUT,
        "/v1/secrets/churn/metadata",
        json!({ "max_versions": 1 }),
    )
    .await
    .ok();
    for i in 1..=105 {
        put_text(&s, "churn", &format!("value-{i}")).await;
    }
    let meta = s.get("/v1/secrets/churn/metadata").await;
    let versions: Vec<u64> = meta.ok()["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, (5..=105).collect::<Vec<u64>>());
    read(&s, "churn?version=4")
        .await
        .assert_error(404, "secret_version_not_found");
    read(&s, "churn?version=5")
        .await
        .assert_error(410, "secret_version_destroyed");
    assert_eq!(read_text(&s, "churn").await, "value-105");
    Ok(())
}

#[tokio::test]
async fn expired_versions_are_gone_with_410() -> anyhow::Result<()> {
    let (_d, s) = secrets_server("").await?;
    put_text(&s, "short", "lived").await;
    let meta = s
        .send_json(
            Method::PUT,
            "/v1/secrets/short/metadata",
            json!({ "expires_after": "1s", "custom": {"owner": "team-a"} }),
        )
        .await;
    assert_eq!(meta.ok()["expires_after"], "1s");
    assert_eq!(meta.body["custom"]["owner"], "team-a");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    read(&s, "short")
        .await
        .assert_error(410, "secret_version_expired");
    read(&s, "short?version=1")
        .await
        .assert_error(410, "secret_version_expired");
    // A new version is readable again; clearing expiry makes the old one readable too.
    put_text(&s, "short", "fresh").await;
    assert_eq!(read_text(&s, "short").await, "fresh");
    s.send_json(
        Method::PUT,
        "/v1/secrets/short/metadata",
        json!({ "expires_after": null }),
    )
    .await
    .ok();
    assert_eq!(read_text(&s, "short?version=1").await, "lived");
    // Bad metadata.
    for bad in [
        json!({ "expires_after": "soon" }),
        json!({ "max_versions": -1 }),
        json!({ "custom": {"k": 1} }),
    ] {
        let r = s
            .send_json(Method::PUT, "/v1/secrets/short/metadata", bad)
            .await;
        r.assert_error(400, "invalid_field");
    }
    let many: serde_json::Map<String, Value> =
        (0..33).map(|i| (format!("k{i}"), json!("v"))).collect();
    let r = s
        .send_json(
            Method::PUT,
            "/v1/secrets/short/metadata",
            json!({ "custom": many }),
        )
        .await;
    r.assert_error(400, "invalid_metadata");
    Ok(())
}

#[tokio::test]
async fn check_and_set_semantics() -> anyhow::Result<()> {
    let (_d, s) = secrets_server("").await?;
    // cas 0: only if absent.
    assert_eq!(
        put(&s, "cas/x", json!({ "value_text": "a", "cas": 0 }))
            .await
            .ok()["version"],
        1
    );
    let r = put(&s, "cas/x", json!({ "value_text": "b", "cas": 0 })).await;
    r.assert_error(409, "cas_mismatch");
    assert_eq!(r.body["error"]["current_version"], 1);
    assert_eq!(
        put(&s, "cas/x", json!({ "value_text": "b", "cas": 1 }))
            .await
            .ok()["version"],
        2
    );
    let r = put(&s, "cas/x", json!({ "value_text": "c", "cas": 1 })).await;
    r.assert_error(409, "cas_mismatch");
    assert_eq!(r.body["error"]["current_version"], 2);
    assert_eq!(read_text(&s, "cas/x").await, "b");
    put(&s, "cas/x", json!({ "value_text": "c", "cas": -1 }))
        .await
        .assert_error(400, "invalid_field");
    Ok(())
}

#[tokio::test]
async fn concurrent_writers_never_share_a_version_number() -> anyhow::Result<()> {
    let (_d, s) = secrets_server("").await?;
    let s = std::sync::Arc::new(s);
    // Without cas: every writer succeeds, each with its own number.
    let mut tasks = Vec::new();
    for i in 0..24 {
        let s = std::sync::Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            put(&s, "race/free", json!({ "value_text": format!("w{i}") })).await
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        let r = t.await?;
        versions.push(r.ok()["version"].as_u64().unwrap());
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=24).collect::<Vec<_>>());

    // With cas on the same current version: exactly one wins, the rest get 409.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = std::sync::Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            put(
                &s,
                "race/free",
                json!({ "value_text": format!("c{i}"), "cas": 24 }),
            )
            .await
        }));
    }
    let (mut won, mut lost) = (0, 0);
    for t in tasks {
        let r = t.await?;
        match r.status.as_u16() {
            200 => {
                assert_eq!(r.body["version"], 25);
                won += 1;
            }
            409 => {
                r.assert_error(409, "cas_mismatch");
                lost += 1;
            }
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert_eq!((won, lost), (1, 15));
    let meta = s.get("/v1/secrets/race/free/metadata").await;
    assert_eq!(meta.ok()["current_version"], 25);
    Ok(())
}

#[tokio::test]
async fn bad_paths_sizes_and_bodies_are_refused() -> anyhow::Result<()> {
    let (_d, s) = secrets_server("").await?;
    let long = "a".repeat(600);
    let deep = vec!["d"; 17].join("/");
    for bad in ["a//b", "a%20b", "a/b%24", long.as_str(), deep.as_str()] {
        put(&s, bad, json!({ "value_text": "x" }))
            .await
            .assert_error(400, "invalid_secret_path");
        read(&s, bad).await.assert_error(400, "invalid_secret_path");
    }
    // Dot segments: HTTP clients normalise them away, so send them on a raw connection.
    for target in [
        "/v1/secrets/a/../b",
        "/v1/secrets/a/%2e%2e/b",
        "/v1/secrets/./a",
    ] {
        let (status, body) = raw_get(&s, target).await?;
        assert_eq!(status, 400, "{target}: {body}");
        assert!(body.contains("invalid_secret_path"), "{target}: {body}");
    }
    // 2048 bytes is the configured limit.
    put(&s, "big", json!({ "value": b64(&[1u8; 2048]) }))
        .await
        .ok();
    put(&s, "big", json!({ "value": b64(&[1u8; 2049]) }))
        .await
        .assert_error(413, "value_too_large");
    put(&s, "big", json!({ "value_text": "x".repeat(2049) }))
        .await
        .assert_error(413, "value_too_large");
    put(&s, "big", json!({ "value": b64(&[1u8; 9000]) }))
        .await
        .assert_error(413, "value_too_large");
    put(&s, "big", json!({ "value": "!!" }))
        .await
        .assert_error(400, "invalid_base64");
    put(&s, "big", json!({ "value": "eA==", "value_text": "x" }))
        .await
        .assert_error(400, "invalid_field");
    put(&s, "big", json!({}))
        .await
        .assert_error(400, "invalid_field");
    put(&s, "big", json!({ "value_text": "x", "ttl": 5 }))
        .await
        .assert_error(400, "unknown_field");
    let r = s
        .raw(
            Method::PUT,
            "/v1/secrets/big",
            Auth::Admin,
            Some("application/json"),
            b"{".to_vec(),
        )
        .await;
    r.assert_error(400, "malformed_json");
    // Unknown paths and versions.
    read(&s, "nope").await.assert_error(404, "secret_not_found");
    read(&s, "big?version=7")
        .await
        .assert_error(404, "secret_version_not_found");
    read(&s, "big?version=x")
        .await
        .assert_error(400, "invalid_query");
    s.get("/v1/secrets/nope/metadata")
        .await
        .assert_error(404, "secret_not_found");
    s.post("/v1/secrets/big/rotate", json!({}))
        .await
        .assert_error(400, "secret_not_generated");
    s.send(Method::GET, "/v1/secrets/big/destroy")
        .await
        .assert_error(405, "method_not_allowed");
    put(
        &s,
        "k/x",
        json!({ "value_text": "x", "key": "no-such-key" }),
    )
    .await
    .assert_error(404, "key_not_found");
    // Authentication applies here too.
    s.raw(Method::GET, "/v1/secrets/big", Auth::None, None, Vec::new())
        .await
        .assert_error(401, "missing_token");
    s.raw(Method::GET, "/v1/secrets", Auth::None, None, Vec::new())
        .await
        .assert_error(401, "missing_token");
    Ok(())
}

#[tokio::test]
async fn writes_without_a_key_need_a_default() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    put(&s, "a", json!({ "value_text": "x" }))
        .await
        .assert_error(400, "key_required");
    s.kill();
    // A configured default that does not exist is the operator's fault: 503, not 4xx.
    d.append_config("[secrets]\ndefault_key = \"missing\"\n")?;
    let s = d.start().await?;
    put(&s, "a", json!({ "value_text": "x" }))
        .await
        .assert_error(503, "default_key_missing");
    s.create_key("explicit").await;
    assert_eq!(
        put(&s, "a", json!({ "value_text": "x", "key": "explicit" }))
            .await
            .ok()["version"],
        1
    );
    // Later writes keep using the secret's key.
    assert_eq!(
        put(&s, "a", json!({ "value_text": "y" })).await.ok()["version"],
        2
    );
    assert_eq!(read_text(&s, "a").await, "y");
    // Naming a key in metadata moves later writes to it.
    let second = s.create_key("second").await;
    let meta = s
        .send_json(
            Method::PUT,
            "/v1/secrets/a/metadata",
            json!({ "key": "second" }),
        )
        .await;
    assert_eq!(meta.ok()["key_id"], second["id"]);
    put_text(&s, "a", "z").await;
    let meta = s.get("/v1/secrets/a/metadata").await;
    assert_eq!(meta.ok()["versions"][2]["key_id"], second["id"]);
    assert_ne!(meta.body["versions"][1]["key_id"], second["id"]);
    assert_eq!(read_text(&s, "a?version=2").await, "y");
    // Nothing left to delete: a clear 404, not "secret not found".
    for _ in 0..3 {
        s.send(Method::DELETE, "/v1/secrets/a").await.ok();
    }
    let r = s.send(Method::DELETE, "/v1/secrets/a").await;
    r.assert_error(404, "secret_version_not_found");
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no live version"));
    Ok(())
}

#[tokio::test]
async fn a_failed_device_write_leaves_nothing_behind() -> anyhow::Result<()> {
    let (d, s) = secrets_server("").await?;
    put_text(&s, "durable", "before").await;
    let tokens = d.token_dir();
    let away = tokens.with_extension("away");
    std::fs::rename(&tokens, &away)?;
    let r = put(&s, "durable", json!({ "value_text": "during" })).await;
    r.assert_error(503, "device_unavailable");
    let r = put(&s, "fresh/path", json!({ "value_text": "during" })).await;
    r.assert_error(503, "device_unavailable");
    std::fs::rename(&away, &tokens)?;
    assert_eq!(
        s.wait_ready(200, Duration::from_secs(15))
            .await
            .status
            .as_u16(),
        200
    );
    let meta = s.get("/v1/secrets/durable/metadata").await;
    assert_eq!(
        meta.ok()["current_version"],
        1,
        "no half version: {}",
        meta.body
    );
    assert_eq!(meta.body["versions"].as_array().unwrap().len(), 1);
    s.get("/v1/secrets/fresh/path/metadata")
        .await
        .assert_error(404, "secret_not_found");
    assert_eq!(put_text(&s, "durable", "after").await, 2);
    assert_eq!(read_text(&s, "durable").await, "after");
    Ok(())
}

#[tokio::test]
async fn swapped_database_rows_fail_to_decrypt() -> anyhow::Result<()> {
    let (d, s) = secrets_server("").await?;
    put_text(&s, "swap/a", "value-of-a").await;
    put_text(&s, "swap/b", "value-of-b").await;
    put_text(&s, "swap/a", "value-of-a-2").await;
    let db = d.db()?;
    let row = |path: &str, v: u32| -> (Vec<u8>, Vec<u8>) {
        let r = db
            .query_one(
                "SELECT wrapped_dek, ciphertext FROM secret_versions WHERE path = $1 AND version = $2",
                &[path.into(), v.into()],
            )
            .unwrap();
        (r[0].as_bytes().to_vec(), r[1].as_bytes().to_vec())
    };
    let set = |path: &str, v: u32, data: &(Vec<u8>, Vec<u8>)| {
        db.execute(
            "UPDATE secret_versions SET wrapped_dek = $3, ciphertext = $4 WHERE path = $1 AND version = $2",
            &[path.into(), v.into(), data.0.clone().into(), data.1.clone().into()],
        )
        .unwrap();
    };
    let (a1, b1, a2) = (row("swap/a", 1), row("swap/b", 1), row("swap/a", 2));
    // Across paths.
    set("swap/a", 1, &b1);
    set("swap/b", 1, &a1);
    read(&s, "swap/a?version=1")
        .await
        .assert_error(500, "secret_integrity_failed");
    read(&s, "swap/b")
        .await
        .assert_error(500, "secret_integrity_failed");
    // Across versions of one path.
    set("swap/a", 1, &a2);
    read(&s, "swap/a?version=1")
        .await
        .assert_error(500, "secret_integrity_failed");
    // Only the value moved (data key left in place): also refused.
    set("swap/a", 1, &(a1.0.clone(), a2.1.clone()));
    read(&s, "swap/a?version=1")
        .await
        .assert_error(500, "secret_integrity_failed");
    // Put back, everything reads again: the failures were the swaps, nothing else.
    set("swap/a", 1, &a1);
    set("swap/b", 1, &b1);
    assert_eq!(read_text(&s, "swap/a?version=1").await, "value-of-a");
    assert_eq!(read_text(&s, "swap/b").await, "value-of-b");
    // No failed check looked like a device fault.
    let ready = s.get_public("/v1/health/ready").await;
    assert_eq!(ready.ok()["device"]["reinitialisations"], 0);
    Ok(())
}

#[tokio::test]
async fn secret_data_keys_cannot_be_unwrapped_through_decrypt() -> anyhow::Result<()> {
    let (d, s) = secrets_server("").await?;
    put_text(&s, "guarded", "value").await;
    let wrapped = d
        .db()?
        .query_one(
            "SELECT wrapped_dek FROM secret_versions WHERE path = 'guarded'",
            &[],
        )?
        .remove(0)
        .into_bytes();
    let ctx = json!({ "custodian:secret_path": "guarded", "custodian:secret_version": "1" });
    s.post(
        "/v1/decrypt",
        json!({ "ciphertext": b64(&wrapped), "context": ctx }),
    )
    .await
    .assert_error(400, "invalid_context");
    s.post("/v1/decrypt", json!({ "ciphertext": b64(&wrapped) }))
        .await
        .assert_error(400, "decryption_failed");
    Ok(())
}

#[tokio::test]
async fn generated_secrets_rotate_on_schedule_and_across_a_restart() -> anyhow::Result<()> {
    // A floor of 1 s so the schedule is seen within the test (the default floor is 1 h).
    let (mut d, s) = secrets_server("min_rotate_every = \"1s\"\n").await?;
    let spec = json!({ "generate": { "length": 32, "charset": "hex", "rotate_every": "2s" } });
    let meta = s
        .send_json(Method::PUT, "/v1/secrets/gen/db/metadata", spec)
        .await;
    assert_eq!(
        meta.ok()["current_version"],
        1,
        "version 1 is generated at once"
    );
    let v1 = read_text(&s, "gen/db").await;
    assert_eq!(v1.len(), 32);
    assert!(v1.bytes().all(|b| b.is_ascii_hexdigit()));

    // Rotates by itself.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    loop {
        let m = s.get("/v1/secrets/gen/db/metadata").await;
        if m.ok()["current_version"].as_u64().unwrap() >= 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no rotation within 8 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let v2 = read_text(&s, "gen/db?version=2").await;
    assert_ne!(v1, v2);
    // Rotate now, on request.
    let now = s.post("/v1/secrets/gen/db/rotate", json!({})).await;
    let manual = now.ok()["version"].as_u64().unwrap();

    // Down for longer than two periods: after the restart the overdue rotation runs once.
    s.kill();
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let s = d.start().await?;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let m = s.get("/v1/secrets/gen/db/metadata").await;
    let after = m.ok()["current_version"].as_u64().unwrap();
    assert_eq!(
        after,
        manual + 1,
        "exactly one catch-up rotation after the restart: {}",
        m.body
    );
    let next: time::OffsetDateTime = time::OffsetDateTime::parse(
        m.body["next_rotation_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )?;
    assert!(
        next > time::OffsetDateTime::now_utc(),
        "the schedule moved forward"
    );
    // Every version is distinct.
    let mut seen = std::collections::HashSet::new();
    for v in 1..=after {
        assert!(seen.insert(read_text(&s, &format!("gen/db?version={v}")).await));
    }
    // Negative twins: bad specs.
    for bad in [
        json!({ "generate": { "length": 0, "charset": "hex", "rotate_every": "1h" } }),
        json!({ "generate": { "length": 5000, "charset": "hex", "rotate_every": "1h" } }),
    ] {
        let r = s
            .send_json(Method::PUT, "/v1/secrets/gen/bad/metadata", bad)
            .await;
        r.assert_error(400, "invalid_metadata");
    }
    let r = s
        .send_json(
            Method::PUT,
            "/v1/secrets/gen/bad/metadata",
            json!({ "generate": { "length": 8, "charset": "emoji", "rotate_every": "1h" } }),
        )
        .await;
    r.assert_error(400, "invalid_field");
    Ok(())
}

/// Kill -9 in the middle of concurrent writes to fresh paths, several times. Every acknowledged
/// write stands, and every version stands with its announcement. On SQLite a version is written
/// in its announcement's own commit (decision 0026), so an announcement the crash left without
/// a final record has its version too: nothing announced is half-made. (PostgreSQL announces,
/// then writes: there an announcement may stand alone, as decision 0017 says, and only the
/// first two are checked.) Rounds repeat until the crashes have caught writes in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_write_leaves_every_version_with_its_announcement() -> anyhow::Result<()> {
    const WRITERS: usize = 16;
    let (mut d, first) = secrets_server("").await?;
    let client = reqwest::Client::new();
    let mut server = Some(first);
    let mut caught = 0;
    for round in 0..5 {
        let s = match server.take() {
            Some(s) => s,
            None => d.start().await?,
        };
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let (client, base, token) = (client.clone(), s.base.clone(), s.token.clone());
            writers.push(tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for i in 0.. {
                    let path = format!("crash/{round}-{w}-{i}");
                    let sent = client
                        .put(format!("{base}/v1/secrets/{path}"))
                        .bearer_auth(&token)
                        .json(&json!({ "value_text": "in flight" }))
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == 200 => acknowledged.push(path),
                        Ok(r) => panic!("{path}: {} before the crash", r.status()),
                        // The server is gone.
                        Err(_) => break,
                    }
                }
                acknowledged
            }));
        }
        tokio::time::sleep(Duration::from_millis(1200)).await;
        s.kill();
        let mut acknowledged = Vec::new();
        for w in writers {
            acknowledged.extend(w.await?);
        }
        assert!(
            !acknowledged.is_empty(),
            "round {round}: no write was acknowledged"
        );

        let db = d.db()?;
        let prefix = format!("crash/{round}-");
        let versions: std::collections::HashSet<String> = db
            .query("SELECT path FROM secret_versions WHERE version = 1", &[])?
            .iter()
            .map(|r| r[0].as_text().to_owned())
            .filter(|p| p.starts_with(&prefix))
            .collect();
        let records = db.query(
            "SELECT request_id, resource, outcome FROM audit_records WHERE action = 'secret:write'",
            &[],
        )?;
        let finished: std::collections::HashSet<&str> = records
            .iter()
            .filter(|r| r[2].as_text() != "pending")
            .map(|r| r[0].as_text())
            .collect();
        let announced: Vec<(&str, &str)> = records
            .iter()
            .filter(|r| r[2].as_text() == "pending")
            .filter_map(|r| {
                let path = r[1].as_text().strip_prefix("secret/")?;
                path.starts_with(&prefix).then_some((r[0].as_text(), path))
            })
            .collect();
        for path in &acknowledged {
            assert!(versions.contains(path), "acknowledged {path} was lost");
        }
        let announced_paths: std::collections::HashSet<&str> =
            announced.iter().map(|(_, p)| *p).collect();
        for path in &versions {
            assert!(
                announced_paths.contains(path.as_str()),
                "{path} stands without its announcement"
            );
        }
        let in_flight: Vec<&(&str, &str)> = announced
            .iter()
            .filter(|(request, _)| !finished.contains(request))
            .collect();
        if !db.is_postgres() {
            let half_made: Vec<_> = in_flight
                .iter()
                .filter(|(_, path)| !versions.contains(*path))
                .collect();
            assert!(
                half_made.is_empty(),
                "round {round}: announced without their version: {half_made:?}"
            );
        }
        caught += in_flight.len();
        if caught > 0 {
            return Ok(());
        }
    }
    anyhow::bail!("five crashes caught no write between its announcement and its final record")
}

/// A read of a secret's newest version that the SQLite store keeps in memory (decision 0028)
/// follows every change to the secret: a new version, a delete and an undelete, a destroy, new
/// metadata (expiry set, then cleared), and a re-wrap under a new key version whose old version
/// is then destroyed, so a kept read of the old wrapped data key could no longer be opened. A
/// repeated read makes no store call, and a kept read is still refused to a principal not
/// allowed the path; PostgreSQL nodes keep nothing (other nodes write).
#[tokio::test]
async fn a_kept_read_follows_every_change_to_the_secret() -> anyhow::Result<()> {
    let (_d, s) =
        secrets_server("[keys]\nrewrap_after_rotation = false\nrewrap_pause_ms = 0\n").await?;
    let admin = s.token.clone();
    let store_calls = || async {
        let scrape = crate::metrics::scrape(&s, &admin).await;
        let store = if crate::common::server::on_postgres() {
            "postgres"
        } else {
            "sqlite"
        };
        scrape.value(&format!(
            "custodian_store_operation_duration_seconds_count{{store=\"{store}\",result=\"ok\"}}"
        ))
    };
    put_text(&s, "kept/pw", "one").await;
    assert_eq!(read_text(&s, "kept/pw").await, "one");
    let before = store_calls().await;
    for _ in 0..40 {
        assert_eq!(read_text(&s, "kept/pw").await, "one");
    }
    let calls = store_calls().await - before;
    if crate::common::server::on_postgres() {
        assert!(
            calls >= 40.0,
            "every read goes to PostgreSQL: {calls} store calls"
        );
    } else {
        // The background workers' own calls (every 200 ms here) are all the store saw.
        assert!(calls < 20.0, "40 repeated reads made {calls} store calls");
    }

    // A kept read is still authorised: a principal allowed other paths only is refused it.
    crate::policy::put_policy(
        &s,
        "other-paths",
        json!({ "statements": [{ "effect": "allow", "actions": ["secret:read"], "resources": ["secret/other/*"] }] }),
    )
    .await
    .ok();
    let narrow = crate::policy::principal(&s, "narrow", &["other-paths"], json!({})).await;
    let denied = crate::policy::call(&s, &narrow, Method::GET, "/v1/secrets/kept/pw", None).await;
    denied.assert_error(403, "forbidden");
    assert!(denied.body.get("value").is_none(), "{}", denied.body);

    put_text(&s, "kept/pw", "two").await;
    assert_eq!(read_text(&s, "kept/pw").await, "two");
    s.send(Method::DELETE, "/v1/secrets/kept/pw").await.ok();
    assert_eq!(read_text(&s, "kept/pw").await, "one");
    s.post("/v1/secrets/kept/pw/undelete", json!({})).await.ok();
    assert_eq!(read_text(&s, "kept/pw").await, "two");
    s.post("/v1/secrets/kept/pw/destroy", json!({ "versions": [2] }))
        .await
        .ok();
    assert_eq!(read_text(&s, "kept/pw").await, "one");

    s.send_json(
        Method::PUT,
        "/v1/secrets/kept/pw/metadata",
        json!({ "expires_after": "1s" }),
    )
    .await
    .ok();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    read(&s, "kept/pw")
        .await
        .assert_error(410, "secret_version_expired");
    s.send_json(
        Method::PUT,
        "/v1/secrets/kept/pw/metadata",
        json!({ "expires_after": null }),
    )
    .await
    .ok();
    assert_eq!(read_text(&s, "kept/pw").await, "one");

    s.post("/v1/keys/sk/rotate", json!({})).await.ok();
    let job = s.post("/v1/keys/sk/rewrap", json!({})).await;
    assert_eq!(job.status.as_u16(), 202, "{}", job.body);
    let done = crate::common::server::wait_job_done(&s, "sk").await;
    assert_eq!(done["state"], "completed", "{done}");
    s.post("/v1/keys/sk/versions/1/destroy", json!({}))
        .await
        .ok();
    // The first read after the re-wrap opens the data key under version 2.
    assert_eq!(read_text(&s, "kept/pw").await, "one");
    Ok(())
}
