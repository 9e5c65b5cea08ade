//! Negative twins: every bad input gets a clear 4xx with a stable code, never plaintext, never a
//! 5xx; tampering never makes the service re-initialise the device or report not-ready.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::server::Auth;
use crate::common::{b64, unb64, Deployment, Server};

async fn server_with_key(name: &str) -> anyhow::Result<(Deployment, Server)> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    s.create_key(name).await;
    Ok((d, s))
}

async fn blob(s: &Server, key: &str, context: Value) -> Vec<u8> {
    let r = s
        .post(
            &format!("/v1/keys/{key}/encrypt"),
            json!({ "plaintext": b64(b"attack at dawn"), "context": context }),
        )
        .await;
    unb64(r.ok()["ciphertext"].as_str().unwrap())
}

#[tokio::test]
async fn missing_wrong_and_malformed_tokens_are_401() -> anyhow::Result<()> {
    let (_d, s) = server_with_key("k").await?;
    let body = json!({}).to_string().into_bytes();
    let cases = [
        (Auth::None, "missing_token"),
        (
            Auth::Header("Bearer cst_0000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            "invalid_token",
        ),
        (Auth::Header("Bearer not-a-token"), "invalid_token"),
        (Auth::Header("Basic dXNlcjpwYXNz"), "invalid_token"),
        (Auth::Header("Bearer "), "invalid_token"),
    ];
    for (auth, code) in cases {
        let r = s
            .raw(
                Method::POST,
                "/v1/keys/k/datakey",
                auth,
                Some("application/json"),
                body.clone(),
            )
            .await;
        r.assert_error(401, code);
    }
    // A header that is not even visible ASCII is an invalid token, not a missing one.
    let r = s
        .raw(
            Method::GET,
            "/v1/keys",
            Auth::Bytes(b"Bearer cst_\xe9\xe9"),
            None,
            Vec::new(),
        )
        .await;
    r.assert_error(401, "invalid_token");
    // The right token id with a different secret.
    let mut forged = s.token.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let header = format!("Bearer {forged}");
    let r = s
        .raw(
            Method::GET,
            "/v1/keys",
            Auth::Header(&header),
            None,
            Vec::new(),
        )
        .await;
    r.assert_error(401, "invalid_token");
    // Every /v1 route except health requires the token.
    for (m, p) in [
        (Method::GET, "/v1/keys"),
        (Method::POST, "/v1/keys"),
        (Method::GET, "/v1/keys/k"),
        (Method::POST, "/v1/decrypt"),
        (Method::POST, "/v1/keys/k/encrypt"),
    ] {
        s.raw(m, p, Auth::None, Some("application/json"), b"{}".to_vec())
            .await
            .assert_error(401, "missing_token");
    }
    Ok(())
}

#[tokio::test]
async fn unknown_keys_are_404() -> anyhow::Result<()> {
    let (_d, s) = server_with_key("k").await?;
    s.get("/v1/keys/nope")
        .await
        .assert_error(404, "key_not_found");
    s.get("/v1/keys/00000000-0000-4000-8000-000000000000")
        .await
        .assert_error(404, "key_not_found");
    s.post("/v1/keys/nope/datakey", json!({}))
        .await
        .assert_error(404, "key_not_found");
    s.post("/v1/keys/nope/encrypt", json!({ "plaintext": b64(b"x") }))
        .await
        .assert_error(404, "key_not_found");
    s.get("/v1/keys/bad%20name")
        .await
        .assert_error(404, "key_not_found");
    // A path segment that is not UTF-8 still gets the JSON error shape.
    s.get("/v1/keys/%FF")
        .await
        .assert_error(404, "key_not_found");
    s.post("/v1/keys/%FF%FE/datakey", json!({}))
        .await
        .assert_error(404, "key_not_found");
    Ok(())
}

#[tokio::test]
async fn malformed_json_is_400() -> anyhow::Result<()> {
    let (_d, s) = server_with_key("k").await?;
    for body in [&b"{"[..], b"not json", b"{\"context\": }", b"\xff\xfe"] {
        let r = s.post_bytes("/v1/keys/k/datakey", body).await;
        r.assert_error(400, "malformed_json");
    }
    let r = s.post_bytes("/v1/keys/k/datakey", b"[1,2]").await;
    r.assert_error(400, "invalid_request");
    let r = s
        .raw(
            Method::POST,
            "/v1/keys/k/datakey",
            Auth::Admin,
            Some("text/plain"),
            b"{}".to_vec(),
        )
        .await;
    r.assert_error(415, "unsupported_media_type");
    Ok(())
}

#[tokio::test]
async fn bad_base64_is_400() -> anyhow::Result<()> {
    let (_d, s) = server_with_key("k").await?;
    s.post("/v1/keys/k/encrypt", json!({ "plaintext": "not base64!" }))
        .await
        .assert_error(400, "invalid_base64");
    s.post("/v1/decrypt", json!({ "ciphertext": "@@@@" }))
        .await
        .assert_error(400, "invalid_base64");
    s.post("/v1/decrypt", json!({ "ciphertext": 12 }))
        .await
        .assert_error(400, "invalid_field");
    Ok(())
}

#[tokio::test]
async fn unknown_fields_are_400() -> anyhow::Result<()> {
    let (_d, s) = server_with_key("k").await?;
    let r = s
        .post(
            "/v1/keys/k/datakey",
            json!({ "bytes": 32, "key_spec": "AES_256" }),
        )
        .await;
    r.assert_error(400, "unknown_field");
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("key_spec"));
    s.post("/v1/keys", json!({ "name": "x", "admin": true }))
        .await
        .assert_error(400, "unknown_field");
    s.post("/v1/decrypt", json!({ "ciphertext": "", "extra": 1 }))
        .await
        .assert_error(400, "unknown_field");
    Ok(())
}

#[tokio::test]
async fn oversized_bodies_are_400() -> anyhow::Result<()> {
    let (_d, s) = server_with_key("k").await?;
    // The test deployment accepts 64 KiB bodies.
    let big = json!({ "plaintext": "A".repeat(70 * 1024) })
        .to_string()
        .into_bytes();
    let r = s.post_bytes("/v1/keys/k/encrypt", &big).await;
    r.assert_error(400, "body_too_large");
    Ok(())
}

#[tokio::test]
async fn plaintext_over_4096_bytes_is_400() -> anyhow::Result<()> {
    let (_d, s) = server_with_key("k").await?;
    s.post(
        "/v1/keys/k/encrypt",
        json!({ "plaintext": b64(&[7u8; 4096]) }),
    )
    .await
    .ok();
    for len in [4097, 5000, 40_000] {
        let r = s
            .post(
                "/v1/keys/k/encrypt",
                json!({ "plaintext": b64(&vec![7u8; len]) }),
            )
            .await;
        r.assert_error(400, "plaintext_too_large");
    }
    s.post("/v1/keys/k/encrypt", json!({ "plaintext": "" }))
        .await
        .assert_error(400, "plaintext_empty");
    Ok(())
}

#[tokio::test]
async fn bytes_out_of_range_is_400() -> anyhow::Result<()> {
    let (_d, s) = server_with_key("k").await?;
    for bytes in [
        json!(0),
        json!(8),
        json!(31),
        json!(33),
        json!(64),
        json!(-1),
        json!(1.5),
        json!("32"),
        json!(null),
    ] {
        if bytes.is_null() {
            // null is "not given": the default 32.
            s.post("/v1/keys/k/datakey", json!({ "bytes": bytes }))
                .await
                .ok();
            continue;
        }
        let r = s
            .post("/v1/keys/k/datakey", json!({ "bytes": bytes }))
            .await;
        r.assert_error(400, "invalid_bytes");
    }
    Ok(())
}

#[tokio::test]
async fn contexts_that_are_not_string_maps_are_400() -> anyhow::Result<()> {
    let (_d, s) = server_with_key("k").await?;
    let bad = [
        json!({"a": 1}),
        json!({"a": null}),
        json!({"a": {"b": "c"}}),
        json!(["a", "b"]),
        json!("a=b"),
        json!({"": "empty key"}),
        json!({"k": "v".repeat(1025)}),
    ];
    for context in bad {
        s.post("/v1/keys/k/datakey", json!({ "context": context }))
            .await
            .assert_error(400, "invalid_context");
        s.post(
            "/v1/keys/k/encrypt",
            json!({ "plaintext": b64(b"x"), "context": context }),
        )
        .await
        .assert_error(400, "invalid_context");
        s.post(
            "/v1/decrypt",
            json!({ "ciphertext": b64(b"x"), "context": context }),
        )
        .await
        .assert_error(400, "invalid_context");
    }
    let too_many: serde_json::Map<String, Value> =
        (0..65).map(|i| (format!("k{i}"), json!("v"))).collect();
    s.post("/v1/keys/k/datakey", json!({ "context": too_many }))
        .await
        .assert_error(400, "invalid_context");
    // A duplicate key in the raw JSON is refused, not silently collapsed.
    let dup = br#"{"context": {"a": "1", "a": "2"}}"#.to_vec();
    let r = s.post_bytes("/v1/keys/k/datakey", &dup).await;
    r.assert_error(400, "invalid_context");
    Ok(())
}

/// The decryption-error family: a tampered blob fails with one of these, never with plaintext.
const DECRYPTION_ERRORS: &[&str] = &[
    "decryption_failed",
    "malformed_ciphertext",
    "unsupported_ciphertext_version",
    "unsupported_ciphertext_algorithm",
    "ciphertext_key_not_found",
];

#[tokio::test]
async fn every_single_byte_change_fails_decryption_without_reinitialising() -> anyhow::Result<()> {
    let (_d, s) = server_with_key("k").await?;
    let context = json!({"tenant": "acme"});
    let good = blob(&s, "k", context.clone()).await;
    for i in 0..good.len() {
        for flip in [0x01u8, 0x80] {
            let mut bad = good.clone();
            bad[i] ^= flip;
            let r = s
                .post(
                    "/v1/decrypt",
                    json!({ "ciphertext": b64(&bad), "context": context }),
                )
                .await;
            assert_eq!(r.status.as_u16(), 400, "byte {i} ^ {flip:#x}: {}", r.body);
            let code = r.body["error"]["code"].as_str().unwrap_or_default();
            assert!(DECRYPTION_ERRORS.contains(&code), "byte {i}: code {code}");
            r.assert_error(400, code);
        }
    }
    // Tag and ciphertext bytes are checked by the device: that is `decryption_failed`.
    let mut tag = good.clone();
    *tag.last_mut().unwrap() ^= 1;
    s.post(
        "/v1/decrypt",
        json!({ "ciphertext": b64(&tag), "context": context }),
    )
    .await
    .assert_error(400, "decryption_failed");
    // Hundreds of failed tag checks later the device is still considered healthy.
    let ready = s.get_public("/v1/health/ready").await;
    assert_eq!(
        ready.ok()["device"]["reinitialisations"],
        0,
        "{}",
        ready.body
    );
    let ok = s
        .post(
            "/v1/decrypt",
            json!({ "ciphertext": b64(&good), "context": context }),
        )
        .await;
    assert_eq!(
        unb64(ok.ok()["plaintext"].as_str().unwrap()),
        b"attack at dawn"
    );
    Ok(())
}

#[tokio::test]
async fn truncated_blobs_are_malformed() -> anyhow::Result<()> {
    let (_d, s) = server_with_key("k").await?;
    let good = blob(&s, "k", json!({})).await;
    for len in [0, 1, 3, 4, 5, 6, 21, 26, 27, 38, 39, 40, 54] {
        let r = s
            .post("/v1/decrypt", json!({ "ciphertext": b64(&good[..len]) }))
            .await;
        r.assert_error(400, "malformed_ciphertext");
    }
    // Cutting the tag short below 16 bytes is malformed; shortening the ciphertext fails auth.
    let r = s
        .post(
            "/v1/decrypt",
            json!({ "ciphertext": b64(&good[..good.len() - 1]) }),
        )
        .await;
    r.assert_error(400, "decryption_failed");
    Ok(())
}

#[tokio::test]
async fn unknown_format_versions_are_named() -> anyhow::Result<()> {
    let (_d, s) = server_with_key("k").await?;
    let good = blob(&s, "k", json!({})).await;
    for v in [0u8, 2, 9, 255] {
        let mut b = good.clone();
        b[4] = v;
        let r = s
            .post("/v1/decrypt", json!({ "ciphertext": b64(&b) }))
            .await;
        r.assert_error(400, "unsupported_ciphertext_version");
        assert!(r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("version {v}")));
    }
    Ok(())
}

#[tokio::test]
async fn a_context_differing_in_any_pair_fails() -> anyhow::Result<()> {
    let (_d, s) = server_with_key("k").await?;
    let context = json!({"tenant": "acme", "app": "billing"});
    let b = blob(&s, "k", context.clone()).await;
    let dk = s
        .post("/v1/keys/k/datakey", json!({ "context": context }))
        .await;
    let dk_blob = dk.ok()["ciphertext"].as_str().unwrap().to_owned();
    let wrong = [
        json!({}),
        json!({"tenant": "acme"}),
        json!({"tenant": "acme", "app": "billing", "extra": ""}),
        json!({"tenant": "acme", "app": "Billing"}),
        json!({"tenant": "acme", "App": "billing"}),
        json!({"tenant": "acmeapp", "": "billing"}),
        json!({"tenant": "acme", "app": "billing "}),
    ];
    for ctx in wrong {
        let code = if ctx.as_object().unwrap().contains_key("") {
            "invalid_context"
        } else {
            "decryption_failed"
        };
        s.post(
            "/v1/decrypt",
            json!({ "ciphertext": b64(&b), "context": ctx }),
        )
        .await
        .assert_error(400, code);
        s.post(
            "/v1/decrypt",
            json!({ "ciphertext": dk_blob, "context": ctx }),
        )
        .await
        .assert_error(400, code);
    }
    // Order of pairs does not matter: the encoding is canonical.
    let reordered = json!({"app": "billing", "tenant": "acme"});
    s.post(
        "/v1/decrypt",
        json!({ "ciphertext": b64(&b), "context": reordered }),
    )
    .await
    .ok();
    Ok(())
}

#[tokio::test]
async fn a_blob_of_another_key_or_deployment_fails() -> anyhow::Result<()> {
    let (_d1, s1) = server_with_key("k").await?;
    let (_d2, s2) = server_with_key("k").await?;
    let from_one = blob(&s1, "k", json!({})).await;
    // Same key name, different deployment: the blob names a key id the second one lacks.
    s2.post("/v1/decrypt", json!({ "ciphertext": b64(&from_one) }))
        .await
        .assert_error(400, "ciphertext_key_not_found");
    // Same deployment, another key's id spliced into the header: authentication fails.
    let other = s1.create_key("other").await;
    let other_id = uuid::Uuid::parse_str(other["id"].as_str().unwrap())?;
    let mut spliced = from_one.clone();
    spliced[6..22].copy_from_slice(other_id.as_bytes());
    s1.post("/v1/decrypt", json!({ "ciphertext": b64(&spliced) }))
        .await
        .assert_error(400, "decryption_failed");
    // A version the key does not have.
    let mut v2 = from_one;
    v2[22..26].copy_from_slice(&2u32.to_be_bytes());
    s1.post("/v1/decrypt", json!({ "ciphertext": b64(&v2) }))
        .await
        .assert_error(400, "ciphertext_key_not_found");
    Ok(())
}

#[tokio::test]
async fn key_names_are_validated_and_unique() -> anyhow::Result<()> {
    let (_d, s) = server_with_key("taken").await?;
    s.post("/v1/keys", json!({ "name": "taken" }))
        .await
        .assert_error(409, "key_name_taken");
    for bad in [
        "",
        "has space",
        "-lead",
        "a/b",
        &"x".repeat(129),
        "0f1e2d3c-4b5a-4978-8796-a5b4c3d2e1f0",
    ] {
        s.post("/v1/keys", json!({ "name": bad }))
            .await
            .assert_error(400, "invalid_key_name");
    }
    s.post("/v1/keys", json!({}))
        .await
        .assert_error(400, "invalid_field");
    s.post("/v1/keys", json!({ "name": 5 }))
        .await
        .assert_error(400, "invalid_field");
    // The failed attempts left exactly one key.
    let list = s.get("/v1/keys").await;
    assert_eq!(list.ok()["keys"].as_array().unwrap().len(), 1);
    Ok(())
}

#[tokio::test]
async fn unknown_routes_methods_and_queries_are_clear() -> anyhow::Result<()> {
    let (_d, s) = server_with_key("k").await?;
    s.get("/v1/nothing")
        .await
        .assert_error(404, "route_not_found");
    s.send(Method::DELETE, "/v1/decrypt")
        .await
        .assert_error(405, "method_not_allowed");
    s.get("/v1/keys?limit=0")
        .await
        .assert_error(400, "invalid_limit");
    s.get("/v1/keys?limit=1001")
        .await
        .assert_error(400, "invalid_limit");
    s.get("/v1/keys?limit=abc")
        .await
        .assert_error(400, "invalid_query");
    s.get("/v1/keys?colour=red")
        .await
        .assert_error(400, "invalid_query");
    Ok(())
}
