//! The Vault-compatible door driven by the real `hvac` client (pinned in the virtual environment
//! that `scripts/lib.sh`'s `ensure_python_clients` makes; its path in `CUSTODIAN_TEST_PYTHON`):
//! Transit keys, encrypt/decrypt with associated data and in batches, rotate and rewrap keeping
//! the context, `min_decryption_version`, data keys, and each negative twin (wrong associated
//! data, tampered ciphertext, another key's ciphertext, 512-bit data key, other key types, a bad
//! token → 403). Then the transport details hvac relies on, checked on the wire.

use std::process::Command;

use reqwest::StatusCode;

use crate::common::Deployment;

/// The virtual environment's python with the pinned clients.
pub fn python() -> String {
    std::env::var("CUSTODIAN_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "CUSTODIAN_TEST_PYTHON is not set: run the tests through scripts/test, which makes \
             the virtual environment with the pinned clients (scripts/lib.sh \
             ensure_python_clients)"
        )
    })
}

fn run_client(script: &str, base: &str, token: &str) -> (bool, String) {
    let path = format!("{}/tests/clients/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(python())
        .arg(path)
        .env("VAULT_ADDR", base)
        .env("VAULT_TOKEN", token)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn hvac_drives_transit() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    let (ok, out) = run_client("hvac_transit.py", &s.base, &s.token);
    eprintln!("{out}");
    assert!(ok, "hvac client script failed:\n{out}");
    assert!(out.contains("ALL PASSED"), "{out}");
    Ok(())
}

#[tokio::test]
async fn hvac_drives_kv_v2() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    d.append_config("[secrets]\ndefault_key = \"kv\"")?;
    let s = d.start().await?;
    s.create_key("kv").await;
    let (ok, out) = run_client("hvac_kv.py", &s.base, &s.token);
    eprintln!("{out}");
    assert!(ok, "hvac client script failed:\n{out}");
    assert!(out.contains("ALL PASSED"), "{out}");
    Ok(())
}

#[tokio::test]
async fn vault_transport_errors_list_and_envelope() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", s.base);

    // A bad token: 403 with Vault's error body and exactly `application/json`.
    let r = http
        .get(url("/v1/transit/keys/k"))
        .header("X-Vault-Token", "cust_nope.nope")
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: serde_json::Value = r.json().await?;
    assert_eq!(body, serde_json::json!({"errors": ["permission denied"]}));
    // No token at all: 403 too.
    let r = http.get(url("/v1/transit/keys/k")).send().await?;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // An empty list is 404 with no errors; the LIST verb and ?list=true both list.
    let list = reqwest::Method::from_bytes(b"LIST")?;
    let r = http
        .request(list.clone(), url("/v1/transit/keys"))
        .header("X-Vault-Token", &s.token)
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        r.json::<serde_json::Value>().await?,
        serde_json::json!({"errors": []})
    );
    let r = http
        .post(url("/v1/transit/keys/listed"))
        .header("X-Vault-Token", &s.token)
        .body("{}")
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::OK);
    let body: serde_json::Value = r.json().await?;
    for field in [
        "request_id",
        "lease_id",
        "renewable",
        "lease_duration",
        "data",
        "wrap_info",
        "warnings",
        "auth",
    ] {
        assert!(body.get(field).is_some(), "envelope field {field}: {body}");
    }
    for req in [
        http.request(list, url("/v1/transit/keys")),
        http.get(url("/v1/transit/keys?list=true")),
    ] {
        let r = req.header("X-Vault-Token", &s.token).send().await?;
        assert_eq!(r.status(), StatusCode::OK);
        let body: serde_json::Value = r.json().await?;
        assert_eq!(body["data"]["keys"], serde_json::json!(["listed"]));
    }

    // A malformed body is 400 in Vault's shape, not a 500.
    let r = http
        .post(url("/v1/transit/encrypt/listed"))
        .header("X-Vault-Token", &s.token)
        .body("{not json")
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: serde_json::Value = r.json().await?;
    assert!(body["errors"][0].is_string(), "{body}");

    // The requests are in the audit log like any other, the door's route named.
    let r = s.get("/v1/audit/events?limit=1000").await;
    let events = r.ok()["records"].as_array().cloned().unwrap_or_default();
    let routes: Vec<&str> = events.iter().filter_map(|e| e["route"].as_str()).collect();
    assert!(routes.contains(&"/v1/transit/keys/{name}"), "{routes:?}");
    // Each names its front door; the native API's records do not carry the field.
    for e in &events {
        let door = &e["details"]["front_door"];
        if e["route"]
            .as_str()
            .is_some_and(|r| r.starts_with("/v1/transit/"))
        {
            assert_eq!(door, "vault", "{e}");
        } else {
            assert!(door.is_null(), "{e}");
        }
    }
    assert!(
        events
            .iter()
            .any(|e| e["route"] == "/v1/transit/keys/{name}" && e["outcome"] == "unauthenticated"),
        "the bad token is recorded: {events:?}"
    );
    Ok(())
}

/// The same policies behind the Vault door: a principal allowed to encrypt under one key only
/// is refused (403, Vault's answer) under another, and so are its KV reads outside its prefix;
/// each refusal is recorded `denied`. Its lists show only what it may read.
#[tokio::test]
async fn vault_requests_are_authorised_like_native_ones() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    d.append_config("[secrets]\ndefault_key = \"kv\"")?;
    let s = d.start().await?;
    for k in ["kv", "mine", "theirs"] {
        s.create_key(k).await;
    }
    crate::policy::put_policy(
        &s,
        "narrow",
        serde_json::json!({"statements": [
            {"effect": "allow", "actions": ["encrypt", "decrypt", "key:read"], "resources": ["key/mine"]},
            {"effect": "allow", "actions": ["secret:read", "secret:write", "secret:list"], "resources": ["secret/team/*"]},
            {"effect": "allow", "actions": ["secret:use-key"], "resources": ["key/kv"]},
            {"effect": "allow", "actions": ["random"], "resources": ["random/device"]}
        ]}),
    )
    .await
    .ok();
    let token =
        crate::policy::principal(&s, "narrow-app", &["narrow"], serde_json::json!({})).await;
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, body: Option<serde_json::Value>| {
        let mut req = http
            .request(method, format!("{}{path}", s.base))
            .header("X-Vault-Token", &token);
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        req.send()
    };
    let pt = serde_json::json!({"plaintext": crate::common::b64(b"x")});
    let r = call(
        reqwest::Method::POST,
        "/v1/transit/encrypt/mine",
        Some(pt.clone()),
    )
    .await?;
    assert_eq!(r.status(), StatusCode::OK);
    let r = call(
        reqwest::Method::POST,
        "/v1/transit/encrypt/theirs",
        Some(pt),
    )
    .await?;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        r.json::<serde_json::Value>().await?,
        serde_json::json!({"errors": ["permission denied"]})
    );
    let secret = serde_json::json!({"data": {"v": "1"}});
    let r = call(
        reqwest::Method::POST,
        "/v1/secret/data/team/a",
        Some(secret.clone()),
    )
    .await?;
    assert_eq!(r.status(), StatusCode::OK);
    let r = call(
        reqwest::Method::POST,
        "/v1/secret/data/other/a",
        Some(secret),
    )
    .await?;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Random bytes from the device (`seal`) are allowed, the host's (`platform`) are not.
    let r = call(reqwest::Method::POST, "/v1/transit/random/seal/8", None).await?;
    assert_eq!(r.status(), StatusCode::OK);
    let r = call(reqwest::Method::POST, "/v1/transit/random/8", None).await?;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Lists show only what the caller may read.
    let r = call(reqwest::Method::GET, "/v1/transit/keys?list=true", None).await?;
    assert_eq!(r.status(), StatusCode::OK);
    let body: serde_json::Value = r.json().await?;
    assert_eq!(body["data"]["keys"], serde_json::json!(["mine"]));

    let r = s.get("/v1/audit/events?outcome=denied&limit=1000").await;
    let denied: Vec<serde_json::Value> = r.ok()["records"].as_array().cloned().unwrap_or_default();
    let routes: Vec<&str> = denied.iter().filter_map(|e| e["route"].as_str()).collect();
    assert!(routes.contains(&"/v1/transit/encrypt/{name}"), "{routes:?}");
    assert!(routes.contains(&"/v1/secret/data/{*path}"), "{routes:?}");
    assert!(routes.contains(&"/v1/transit/random/{bytes}"), "{routes:?}");
    assert!(
        denied.iter().all(|e| e["details"]["front_door"] == "vault"),
        "{denied:?}"
    );
    Ok(())
}

/// `[vault]` moves the mounts (the defaults then answer 404) or turns the door off.
#[tokio::test]
async fn vault_mounts_are_configurable_and_the_door_can_be_off() -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let status = |s: &crate::common::Server, method: &str, path: &str| {
        let req = http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", s.base),
            )
            .header("X-Vault-Token", s.token.clone())
            .body("{}");
        async move { req.send().await.map(|r| r.status().as_u16()) }
    };
    let mut d = Deployment::new()?;
    d.append_config("[vault]\ntransit_mount = \"kms\"\nkv_mount = \"kv2\"")?;
    let s = d.start().await?;
    assert_eq!(status(&s, "POST", "/v1/kms/keys/moved").await?, 200);
    assert_eq!(status(&s, "POST", "/v1/transit/keys/moved").await?, 404);
    assert_eq!(status(&s, "GET", "/v1/kv2/config").await?, 200);
    assert_eq!(status(&s, "GET", "/v1/secret/config").await?, 404);
    drop(s);

    let mut d = Deployment::new()?;
    d.append_config("[vault]\nenabled = false")?;
    let s = d.start().await?;
    assert_eq!(status(&s, "POST", "/v1/transit/keys/off").await?, 404);
    assert_eq!(status(&s, "GET", "/v1/sys/health").await?, 404);
    // The native API is unaffected.
    s.create_key("still-native").await;
    Ok(())
}
