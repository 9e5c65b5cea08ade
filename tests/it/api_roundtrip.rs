//! Positive paths: keys, data keys and encrypt/decrypt round trips, with and without context.
//! Each has negative twins in `api_errors`.

use serde_json::json;

use crate::common::{b64, unb64, unique, Deployment};

#[tokio::test]
async fn datakey_round_trips_with_and_without_context() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    let key = s.create_key("billing").await;

    for context in [json!({}), json!({"tenant": "acme", "app": "billing"})] {
        let dk = s
            .post("/v1/keys/billing/datakey", json!({ "context": context }))
            .await;
        let dk = dk.ok();
        assert_eq!(dk["key_id"], key["id"]);
        assert_eq!(dk["key_version"], 1);
        let plaintext = unb64(dk["plaintext"].as_str().unwrap());
        assert_eq!(plaintext.len(), 32);
        let out = s
            .post(
                "/v1/decrypt",
                json!({ "ciphertext": dk["ciphertext"], "context": context }),
            )
            .await;
        let out = out.ok();
        assert_eq!(unb64(out["plaintext"].as_str().unwrap()), plaintext);
        assert_eq!(out["key_id"], key["id"]);
        assert_eq!(out["key_version"], 1);
    }

    // No context field at all is the empty context.
    let dk = s.post("/v1/keys/billing/datakey", json!({})).await;
    let out = s
        .post(
            "/v1/decrypt",
            json!({ "ciphertext": dk.ok()["ciphertext"] }),
        )
        .await;
    assert_eq!(out.ok()["plaintext"], dk.body["plaintext"]);
    Ok(())
}

#[tokio::test]
async fn datakey_sizes_and_wrapped_only_copies() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    let key = s.create_key("sizes").await;
    let id = key["id"].as_str().unwrap();
    for bytes in [16, 24, 32] {
        let dk = s
            .post(&format!("/v1/keys/{id}/datakey"), json!({ "bytes": bytes }))
            .await;
        let pt = unb64(dk.ok()["plaintext"].as_str().unwrap());
        assert_eq!(pt.len(), bytes);
        let out = s
            .post(
                "/v1/decrypt",
                json!({ "ciphertext": dk.body["ciphertext"] }),
            )
            .await;
        assert_eq!(unb64(out.ok()["plaintext"].as_str().unwrap()), pt);
    }
    let wrapped_only = s
        .post("/v1/keys/sizes/datakey", json!({ "plaintext": false }))
        .await;
    assert!(
        wrapped_only.ok().get("plaintext").is_none(),
        "{}",
        wrapped_only.body
    );
    let out = s
        .post(
            "/v1/decrypt",
            json!({ "ciphertext": wrapped_only.body["ciphertext"] }),
        )
        .await;
    assert_eq!(unb64(out.ok()["plaintext"].as_str().unwrap()).len(), 32);
    // Two data keys are never alike.
    let a = s.post("/v1/keys/sizes/datakey", json!({})).await;
    let b = s.post("/v1/keys/sizes/datakey", json!({})).await;
    assert_ne!(a.body["plaintext"], b.body["plaintext"]);
    assert_ne!(a.body["ciphertext"], b.body["ciphertext"]);
    Ok(())
}

#[tokio::test]
async fn encrypt_round_trips_up_to_the_limit() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    s.create_key("payloads").await;
    for (len, context) in [
        (1, json!({})),
        (100, json!({"purpose": "test"})),
        (4096, json!({"a": "1", "b": "2"})),
    ] {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let enc = s
            .post(
                "/v1/keys/payloads/encrypt",
                json!({ "plaintext": b64(&data), "context": context }),
            )
            .await;
        let ct = enc.ok()["ciphertext"].as_str().unwrap().to_owned();
        assert!(enc.body.get("plaintext").is_none());
        assert_eq!(
            unb64(&ct).len(),
            39 + len + 16,
            "blob = header, IV, ciphertext, tag"
        );
        let dec = s
            .post(
                "/v1/decrypt",
                json!({ "ciphertext": ct, "context": context }),
            )
            .await;
        assert_eq!(unb64(dec.ok()["plaintext"].as_str().unwrap()), data);
    }
    Ok(())
}

#[tokio::test]
async fn keys_show_by_id_or_name_and_list_in_pages() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    let mut names: Vec<String> = (0..5).map(|_| unique("k")).collect();
    for n in &names {
        let key = s.create_key(n).await;
        assert_eq!(key["name"], n.as_str());
        assert_eq!(key["state"], "enabled");
        assert_eq!(key["backend"], "pkcs11");
        assert_eq!(key["mode"], "direct");
        assert_eq!(key["primary_version"], 1);
        assert_eq!(key["versions"][0]["state"], "primary");
        let by_id = s
            .get(&format!("/v1/keys/{}", key["id"].as_str().unwrap()))
            .await;
        let by_name = s.get(&format!("/v1/keys/{n}")).await;
        assert_eq!(by_id.ok(), &key);
        assert_eq!(by_name.ok(), &key);
    }
    names.sort();
    let mut seen = Vec::new();
    let mut path = "/v1/keys?limit=2".to_owned();
    loop {
        let page = s.get(&path).await;
        let body = page.ok();
        let keys = body["keys"].as_array().unwrap();
        assert!(keys.len() <= 2);
        seen.extend(keys.iter().map(|k| k["name"].as_str().unwrap().to_owned()));
        match body.get("next").and_then(|n| n.as_str()) {
            Some(next) => path = format!("/v1/keys?limit=2&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, names);
    Ok(())
}

#[tokio::test]
async fn health_and_openapi_are_public_and_complete() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    let live = s.get_public("/v1/health/live").await;
    assert_eq!(live.ok()["status"], "live");
    let ready = s.get_public("/v1/health/ready").await;
    assert_eq!(ready.ok()["status"], "ready");
    assert_eq!(ready.body["device"]["usable"], true);
    assert_eq!(ready.body["store_writable"], true);

    let doc = s.get_public("/v1/openapi.json").await;
    let paths = &doc.ok()["paths"];
    for (path, methods) in [
        ("/v1/keys", &["post", "get"][..]),
        ("/v1/keys/{key}", &["get", "patch"]),
        ("/v1/keys/{key}/datakey", &["post"]),
        ("/v1/keys/{key}/encrypt", &["post"]),
        ("/v1/keys/{key}/rotate", &["post"]),
        ("/v1/keys/{key}/disable", &["post"]),
        ("/v1/keys/{key}/enable", &["post"]),
        ("/v1/keys/{key}/schedule-deletion", &["post"]),
        ("/v1/keys/{key}/cancel-deletion", &["post"]),
        ("/v1/keys/{key}/versions", &["get"]),
        ("/v1/keys/{key}/versions/{version}/{action}", &["post"]),
        ("/v1/keys/{key}/rewrap", &["post"]),
        ("/v1/jobs", &["get"]),
        ("/v1/jobs/{id}", &["get"]),
        ("/v1/jobs/{id}/events", &["get"]),
        ("/v1/aliases", &["post", "get"]),
        ("/v1/aliases/{name}", &["get", "put", "delete"]),
        ("/v1/decrypt", &["post"]),
        ("/v1/reencrypt", &["post"]),
        ("/v1/secrets", &["get"]),
        ("/v1/secrets/{path}", &["get", "put", "delete"]),
        ("/v1/secrets/{path}/metadata", &["get", "put"]),
        ("/v1/secrets/{path}/undelete", &["post"]),
        ("/v1/secrets/{path}/destroy", &["post"]),
        ("/v1/secrets/{path}/rotate", &["post"]),
        ("/v1/health/live", &["get"]),
        ("/v1/health/ready", &["get"]),
        ("/v1/openapi.json", &["get"]),
    ] {
        for method in methods {
            assert!(
                paths[path][method].is_object(),
                "OpenAPI document lacks {method} {path}"
            );
        }
    }
    // The served document describes every operation the router serves (the router serves only
    // the operations of the table the document is generated from: `openapi::
    // the_router_serves_every_documented_operation` and `routes_are_added_only_from_the_table`).
    for s in custodian::api::served_operations() {
        let o = s.operation;
        assert_eq!(
            paths[o.path][o.method.as_str()]["operationId"],
            o.id,
            "route {} {} is not in the served document",
            o.method.as_str(),
            o.path
        );
    }
    Ok(())
}
