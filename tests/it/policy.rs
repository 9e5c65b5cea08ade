//! Identity and policy, black-box: the authorisation matrix of the built-in roles (with explain
//! agreeing on every case), encryption-context conditions with `${principal.…}`, deny over allow,
//! token expiry and revocation, policy validation, and denials that do not reveal existence.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::server::{Auth, Reply};
use crate::common::{b64, unb64, Deployment, Server};

/// Sends a request as the holder of `token`.
pub(crate) async fn call(
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

/// Creates a principal with `policies` and `attributes`, returns a token for it.
pub(crate) async fn principal(
    s: &Server,
    name: &str,
    policies: &[&str],
    attributes: Value,
) -> String {
    let r = s
        .post(
            "/v1/principals",
            json!({ "name": name, "policies": policies, "attributes": attributes }),
        )
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.body);
    let t = s.post("/v1/tokens", json!({ "principal": name })).await;
    assert_eq!(t.status.as_u16(), 201, "{}", t.body);
    t.body["token"].as_str().unwrap().to_owned()
}

pub(crate) async fn put_policy(s: &Server, name: &str, doc: Value) -> Reply {
    s.send_json(Method::PUT, &format!("/v1/policies/{name}"), doc)
        .await
}

async fn explain(
    s: &Server,
    principal: &str,
    action: &str,
    resource: &str,
    context: Option<Value>,
) -> String {
    let mut body = json!({ "principal": principal, "action": action, "resource": resource });
    if let Some(c) = context {
        body["context"] = c;
    }
    let r = s.post("/v1/policies/explain", body).await;
    r.ok()["effect"].as_str().unwrap().to_owned()
}

struct Case {
    op: &'static str,
    action: &'static str,
    resource: &'static str,
    method: Method,
    path: &'static str,
    body: Option<Value>,
}

fn cases(blob: &str) -> Vec<Case> {
    let c = |op, action, resource, method, path, body| Case {
        op,
        action,
        resource,
        method,
        path,
        body,
    };
    vec![
        c(
            "create key",
            "key:create",
            "key/*",
            Method::POST,
            "/v1/keys",
            Some(json!({ "name": "NEWKEY" })),
        ),
        c(
            "show key",
            "key:read",
            "key/app-key",
            Method::GET,
            "/v1/keys/app-key",
            None,
        ),
        c(
            "list keys",
            "key:read",
            "key/*",
            Method::GET,
            "/v1/keys",
            None,
        ),
        c(
            "datakey with plaintext",
            "datakey:generate-plaintext",
            "key/app-key",
            Method::POST,
            "/v1/keys/app-key/datakey",
            Some(json!({})),
        ),
        c(
            "datakey wrapped only",
            "datakey:generate",
            "key/app-key",
            Method::POST,
            "/v1/keys/app-key/datakey",
            Some(json!({ "plaintext": false })),
        ),
        c(
            "encrypt",
            "encrypt",
            "key/app-key",
            Method::POST,
            "/v1/keys/app-key/encrypt",
            Some(json!({ "plaintext": b64(b"x") })),
        ),
        c(
            "decrypt",
            "decrypt",
            "key/app-key",
            Method::POST,
            "/v1/decrypt",
            Some(json!({ "ciphertext": blob })),
        ),
        c(
            "reencrypt",
            "reencrypt",
            "key/app-key",
            Method::POST,
            "/v1/reencrypt",
            Some(json!({ "ciphertext": blob })),
        ),
        c(
            "rotate",
            "key:rotate",
            "key/app-key",
            Method::POST,
            "/v1/keys/app-key/rotate",
            None,
        ),
        c(
            "update key",
            "key:update",
            "key/app-key",
            Method::PATCH,
            "/v1/keys/app-key",
            Some(json!({ "description": "d" })),
        ),
        c(
            "write secret",
            "secret:write",
            "secret/m/x",
            Method::PUT,
            "/v1/secrets/m/x",
            Some(json!({ "value_text": "v" })),
        ),
        c(
            "read secret",
            "secret:read",
            "secret/m/x",
            Method::GET,
            "/v1/secrets/m/x",
            None,
        ),
        c(
            "list secrets",
            "secret:list",
            "secret/*",
            Method::GET,
            "/v1/secrets",
            None,
        ),
        c(
            "read policies",
            "policy:read",
            "policy/*",
            Method::GET,
            "/v1/policies",
            None,
        ),
        c(
            "write policy",
            "policy:admin",
            "policy/scratch",
            Method::PUT,
            "/v1/policies/scratch",
            Some(
                json!({ "statements": [{ "effect": "allow", "actions": ["key:read"], "resources": ["*"] }] }),
            ),
        ),
        c(
            "list principals",
            "principal:admin",
            "principal/*",
            Method::GET,
            "/v1/principals",
            None,
        ),
        c(
            "read metrics",
            "metrics:read",
            "metrics/node",
            Method::GET,
            "/metrics",
            None,
        ),
    ]
}

/// Expected outcome per role, in the order of `cases`.
const EXPECTED: &[(&str, [bool; 17])] = &[
    ("admin", [true; 17]),
    (
        "key-operator",
        [
            true, true, true, false, false, false, false, false, true, true, false, false, false,
            false, false, false, false,
        ],
    ),
    (
        "application",
        [
            false, false, false, true, true, true, true, true, false, false, false, false, false,
            false, false, false, false,
        ],
    ),
    (
        "auditor",
        [
            false, true, true, false, false, false, false, false, false, false, false, false, true,
            true, false, false, false,
        ],
    ),
    (
        "monitoring",
        [
            false, false, false, false, false, false, false, false, false, false, false, false,
            false, false, false, false, true,
        ],
    ),
];

#[tokio::test]
async fn the_built_in_roles_form_the_documented_matrix_and_explain_agrees() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    d.append_config("[secrets]\ndefault_key = \"app-key\"\n")?;
    let s = d.start().await?;
    s.create_key("app-key").await;
    let blob = s
        .post(
            "/v1/keys/app-key/encrypt",
            json!({ "plaintext": b64(b"matrix") }),
        )
        .await;
    let blob = blob.ok()["ciphertext"].as_str().unwrap().to_owned();
    s.send_json(Method::PUT, "/v1/secrets/m/x", json!({ "value_text": "v" }))
        .await
        .ok();

    let mut n = 0;
    for (role, expected) in EXPECTED {
        let who = format!("as-{role}");
        let token = principal(&s, &who, &[role], json!({})).await;
        for (case, allowed) in cases(&blob).into_iter().zip(expected.iter()) {
            let path = case.path;
            let body = case.body.map(|b| {
                let text = b.to_string().replace("NEWKEY", &format!("new-{role}-{n}"));
                serde_json::from_str::<Value>(&text).unwrap()
            });
            let listing = case.method == Method::GET
                && matches!(
                    path,
                    "/v1/keys" | "/v1/secrets" | "/v1/policies" | "/v1/principals"
                );
            let r = call(&s, &token, case.method, path, body).await;
            if listing {
                // Lists decide item by item: a role shows what it may read, and a role that
                // may read nothing of the kind gets an empty list, not 403.
                let items = r
                    .ok()
                    .as_object()
                    .and_then(|o| o.values().find_map(|v| v.as_array().map(Vec::len)));
                assert_eq!(
                    items.is_some_and(|n| n > 0),
                    *allowed,
                    "{role} / {}: {}",
                    case.op,
                    r.body
                );
            } else if *allowed {
                assert!(
                    r.status.is_success(),
                    "{role} / {}: expected success, got {} {}",
                    case.op,
                    r.status,
                    r.body
                );
            } else {
                r.assert_error(403, "forbidden");
            }
            let effect = explain(&s, &who, case.action, case.resource, None).await;
            assert_eq!(
                effect == "allow",
                *allowed,
                "explain disagrees for {role} / {}",
                case.op
            );
            n += 1;
        }
    }
    assert!(n >= 60, "only {n} matrix cases");
    Ok(())
}

const BILLING: &str = r#"{"statements":[
  {"sid":"billing-envelope","effect":"allow","actions":["datakey:generate","decrypt"],"resources":["key/billing-*"],
   "conditions":{"context_equals":{"tenant":"${principal.tenant}"}}}]}"#;

#[tokio::test]
async fn context_conditions_substitute_principal_attributes() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    s.create_key("billing-eu").await;
    s.create_key("payroll").await;
    put_policy(&s, "billing", serde_json::from_str(BILLING)?)
        .await
        .ok();
    let acme = principal(
        &s,
        "billing-acme",
        &["billing"],
        json!({ "tenant": "acme" }),
    )
    .await;
    let anon = principal(&s, "billing-anon", &["billing"], json!({})).await;

    let dk = |ctx: Value, plaintext: bool| json!({ "context": ctx, "plaintext": plaintext });
    let ok = call(
        &s,
        &acme,
        Method::POST,
        "/v1/keys/billing-eu/datakey",
        Some(dk(json!({"tenant": "acme"}), false)),
    )
    .await;
    let blob = ok.ok()["ciphertext"].as_str().unwrap().to_owned();
    // Another tenant, no context, another key, the plaintext copy: all refused.
    call(
        &s,
        &acme,
        Method::POST,
        "/v1/keys/billing-eu/datakey",
        Some(dk(json!({"tenant": "evil"}), false)),
    )
    .await
    .assert_error(403, "forbidden");
    call(
        &s,
        &acme,
        Method::POST,
        "/v1/keys/billing-eu/datakey",
        Some(dk(json!({}), false)),
    )
    .await
    .assert_error(403, "forbidden");
    call(
        &s,
        &acme,
        Method::POST,
        "/v1/keys/payroll/datakey",
        Some(dk(json!({"tenant": "acme"}), false)),
    )
    .await
    .assert_error(403, "forbidden");
    call(
        &s,
        &acme,
        Method::POST,
        "/v1/keys/billing-eu/datakey",
        Some(dk(json!({"tenant": "acme"}), true)),
    )
    .await
    .assert_error(403, "forbidden");
    // Decrypt follows the same condition.
    let out = call(
        &s,
        &acme,
        Method::POST,
        "/v1/decrypt",
        Some(json!({ "ciphertext": blob, "context": {"tenant": "acme"} })),
    )
    .await;
    assert_eq!(unb64(out.ok()["plaintext"].as_str().unwrap()).len(), 32);
    call(
        &s,
        &acme,
        Method::POST,
        "/v1/decrypt",
        Some(json!({ "ciphertext": blob, "context": {"tenant": "evil"} })),
    )
    .await
    .assert_error(403, "forbidden");
    // A principal without the attribute gets nothing (absent → false).
    call(
        &s,
        &anon,
        Method::POST,
        "/v1/keys/billing-eu/datakey",
        Some(dk(json!({"tenant": "acme"}), false)),
    )
    .await
    .assert_error(403, "forbidden");
    call(
        &s,
        &anon,
        Method::POST,
        "/v1/keys/billing-eu/datakey",
        Some(dk(json!({"tenant": "${principal.tenant}"}), false)),
    )
    .await
    .assert_error(403, "forbidden");

    // Explain names the statement and agrees.
    let r = s.post("/v1/policies/explain", json!({ "principal": "billing-acme", "action": "datakey:generate", "resource": "key/billing-eu", "context": {"tenant": "acme"} })).await;
    assert_eq!(r.ok()["effect"], "allow");
    assert_eq!(
        r.body["decided_by"],
        json!({ "policy": "billing", "statement": 0, "sid": "billing-envelope" })
    );
    assert_eq!(
        explain(
            &s,
            "billing-acme",
            "datakey:generate",
            "key/billing-eu",
            Some(json!({"tenant": "evil"}))
        )
        .await,
        "deny"
    );
    // Denials do not reveal whether a key exists.
    call(&s, &acme, Method::GET, "/v1/keys/payroll", None)
        .await
        .assert_error(403, "forbidden");
    call(&s, &acme, Method::GET, "/v1/keys/does-not-exist", None)
        .await
        .assert_error(403, "forbidden");
    call(
        &s,
        &acme,
        Method::POST,
        "/v1/keys/billing-nope/datakey",
        Some(dk(json!({"tenant": "acme"}), false)),
    )
    .await
    .assert_error(404, "key_not_found");
    Ok(())
}

#[tokio::test]
async fn deny_wins_and_policy_changes_apply_at_once() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    s.create_key("billing-eu").await;
    s.create_key("payroll-eu").await;
    put_policy(&s, "no-payroll", json!({ "statements": [{ "effect": "deny", "actions": ["datakey:*"], "resources": ["key/payroll-*"] }] })).await.ok();
    let app = principal(&s, "app", &["application", "no-payroll"], json!({})).await;
    call(
        &s,
        &app,
        Method::POST,
        "/v1/keys/billing-eu/datakey",
        Some(json!({})),
    )
    .await
    .ok();
    call(
        &s,
        &app,
        Method::POST,
        "/v1/keys/payroll-eu/datakey",
        Some(json!({})),
    )
    .await
    .assert_error(403, "forbidden");
    let r = s.post("/v1/policies/explain", json!({ "principal": "app", "action": "datakey:generate-plaintext", "resource": "key/payroll-eu" })).await;
    assert_eq!(r.ok()["effect"], "deny");
    assert_eq!(r.body["decided_by"]["policy"], "no-payroll");

    // Deleting a policy in use: allowed, and the principal loses its rights at once.
    assert_eq!(
        s.send(Method::DELETE, "/v1/policies/application")
            .await
            .status
            .as_u16(),
        204
    );
    call(
        &s,
        &app,
        Method::POST,
        "/v1/keys/billing-eu/datakey",
        Some(json!({})),
    )
    .await
    .assert_error(403, "forbidden");
    // Detaching the deny and attaching admin restores everything, at once.
    let r = s
        .send_json(
            Method::PATCH,
            "/v1/principals/app",
            json!({ "policies": ["admin"] }),
        )
        .await;
    assert_eq!(r.ok()["policies"], json!(["admin"]));
    call(
        &s,
        &app,
        Method::POST,
        "/v1/keys/payroll-eu/datakey",
        Some(json!({})),
    )
    .await
    .ok();
    // Every write makes a new version.
    let v1 = put_policy(&s, "no-payroll", json!({ "statements": [{ "effect": "deny", "actions": ["decrypt"], "resources": ["key/payroll-*"] }] })).await;
    assert_eq!(v1.ok()["version"], 2);
    Ok(())
}

/// A deleted policy can be written again under its name, its version going on from the kept
/// history; a deleted built-in role is installed again at the next start (the start-up that
/// installs it must not collide with its history either).
#[tokio::test]
async fn deleted_policies_are_written_again_and_deleted_roles_return_at_restart(
) -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    let doc = |action: &str| json!({ "statements": [{ "effect": "allow", "actions": [action], "resources": ["*"] }] });
    assert_eq!(
        put_policy(&s, "scratch", doc("key:read")).await.ok()["version"],
        1
    );
    assert_eq!(
        put_policy(&s, "scratch", doc("secret:read")).await.ok()["version"],
        2
    );
    let deleted = s.send(Method::DELETE, "/v1/policies/scratch").await;
    assert_eq!(deleted.status.as_u16(), 204, "{}", deleted.body);
    s.get("/v1/policies/scratch")
        .await
        .assert_error(404, "policy_not_found");
    let again = put_policy(&s, "scratch", doc("key:read")).await;
    assert_eq!(again.ok()["version"], 3, "the history goes on");
    assert_eq!(
        s.get("/v1/policies/scratch").await.ok()["document"],
        doc("key:read")
    );

    let deleted = s.send(Method::DELETE, "/v1/policies/monitoring").await;
    assert_eq!(deleted.status.as_u16(), 204, "{}", deleted.body);
    s.get("/v1/policies/monitoring")
        .await
        .assert_error(404, "policy_not_found");
    s.kill();
    let s = d.start().await?;
    let back = s.get("/v1/policies/monitoring").await;
    assert_eq!(back.ok()["version"], 2, "installed again after version 1");
    assert_eq!(
        back.body["document"]["statements"][0]["actions"],
        json!(["metrics:read"])
    );
    Ok(())
}

#[tokio::test]
async fn malformed_policies_are_refused_naming_the_path() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    let cases = [
        (
            json!({ "statements": [{ "effect": "allow", "actions": ["key:fly"], "resources": ["*"] }] }),
            "statements[0].actions[0]",
        ),
        (
            json!({ "statements": [{ "effect": "allow", "actions": ["*"], "resources": ["disk/x"] }] }),
            "statements[0].resources[0]",
        ),
        (
            json!({ "statements": [{ "effect": "perhaps", "actions": ["*"], "resources": ["*"] }] }),
            "statements[0].effect",
        ),
        (json!({ "statements": [] }), "statements"),
        (
            json!({ "statements": [{ "effect": "allow", "actions": ["*"], "resources": ["*"], "conditions": { "source_cidr": ["300.0.0.0/8"] } }] }),
            "statements[0].conditions.source_cidr[0]",
        ),
        (
            json!({ "statements": [{ "effect": "allow", "actions": ["*"], "resources": ["*"], "conditions": { "context_equals": { "t": "${user.x}" } } }] }),
            "statements[0].conditions.context_equals.t",
        ),
        (json!({ "rules": [] }), "rules"),
    ];
    for (doc, path) in cases {
        let r = put_policy(&s, "bad", doc).await;
        r.assert_error(400, "invalid_policy");
        assert!(
            r.body["error"]["message"].as_str().unwrap().contains(path),
            "{path}: {}",
            r.body
        );
    }
    s.get("/v1/policies/bad")
        .await
        .assert_error(404, "policy_not_found");
    // `explain` is a route of its own, so it can never name a policy.
    put_policy(&s, "explain", json!({ "statements": [] }))
        .await
        .assert_error(405, "method_not_allowed");
    // Unknown actions and resource kinds in explain, unknown policies on principals.
    s.post(
        "/v1/policies/explain",
        json!({ "principal": "x", "action": "key:fly", "resource": "key/a" }),
    )
    .await
    .assert_error(400, "unknown_action");
    s.post(
        "/v1/policies/explain",
        json!({ "principal": "x", "action": "decrypt", "resource": "disk/a" }),
    )
    .await
    .assert_error(400, "invalid_resource");
    s.post(
        "/v1/principals",
        json!({ "name": "p", "policies": ["nope"] }),
    )
    .await
    .assert_error(404, "policy_not_found");
    s.post(
        "/v1/principals",
        json!({ "name": "p", "attributes": { "bad key": "x" } }),
    )
    .await
    .assert_error(400, "invalid_field");
    s.post("/v1/principals", json!({ "name": "p" })).await.ok();
    s.post("/v1/principals", json!({ "name": "p" }))
        .await
        .assert_error(409, "principal_exists");
    Ok(())
}

#[tokio::test]
async fn tokens_expire_and_are_revoked_at_once() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    s.post(
        "/v1/principals",
        json!({ "name": "ops", "policies": ["auditor"] }),
    )
    .await
    .ok();
    let short = s
        .post(
            "/v1/tokens",
            json!({ "principal": "ops", "ttl": "1s", "description": "short" }),
        )
        .await;
    let short_token = short.ok()["token"].as_str().unwrap().to_owned();
    assert!(short.body["expires_at"].is_string());
    call(&s, &short_token, Method::GET, "/v1/keys", None)
        .await
        .ok();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    call(&s, &short_token, Method::GET, "/v1/keys", None)
        .await
        .assert_error(401, "token_expired");

    let long = s.post("/v1/tokens", json!({ "principal": "ops" })).await;
    let (token, id) = (
        long.ok()["token"].as_str().unwrap().to_owned(),
        long.body["id"].as_str().unwrap().to_owned(),
    );
    call(&s, &token, Method::GET, "/v1/keys", None).await.ok();
    let listed = s.get("/v1/tokens?principal=ops").await;
    assert_eq!(listed.ok()["tokens"].as_array().unwrap().len(), 2);
    assert!(
        !listed.body.to_string().contains(&token),
        "token listing shows no secret"
    );
    assert_eq!(
        s.send(Method::DELETE, &format!("/v1/tokens/{id}"))
            .await
            .status
            .as_u16(),
        204
    );
    call(&s, &token, Method::GET, "/v1/keys", None)
        .await
        .assert_error(401, "token_revoked");
    s.send(Method::DELETE, "/v1/tokens/0000000000000000")
        .await
        .assert_error(404, "token_not_found");
    s.post("/v1/tokens", json!({ "principal": "ghost" }))
        .await
        .assert_error(404, "principal_not_found");

    // Deleting a principal revokes its tokens.
    let third = s.post("/v1/tokens", json!({ "principal": "ops" })).await;
    let third = third.ok()["token"].as_str().unwrap().to_owned();
    assert_eq!(
        s.send(Method::DELETE, "/v1/principals/ops")
            .await
            .status
            .as_u16(),
        204
    );
    call(&s, &third, Method::GET, "/v1/keys", None)
        .await
        .assert_error(401, "token_revoked");
    // A principal without rights cannot mint tokens for itself.
    s.post(
        "/v1/principals",
        json!({ "name": "reader", "policies": ["auditor"] }),
    )
    .await
    .ok();
    let reader = s.post("/v1/tokens", json!({ "principal": "reader" })).await;
    let reader = reader.ok()["token"].as_str().unwrap().to_owned();
    call(
        &s,
        &reader,
        Method::POST,
        "/v1/tokens",
        Some(json!({ "principal": "reader" })),
    )
    .await
    .assert_error(403, "forbidden");
    Ok(())
}

#[tokio::test]
async fn source_address_conditions_see_the_caller() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    s.create_key("net").await;
    put_policy(&s, "loopback-only", json!({ "statements": [{ "effect": "allow", "actions": ["key:read"], "resources": ["*"], "conditions": { "source_cidr": ["127.0.0.0/8"] } }] })).await.ok();
    put_policy(&s, "elsewhere-only", json!({ "statements": [{ "effect": "allow", "actions": ["key:read"], "resources": ["*"], "conditions": { "source_cidr": ["10.0.0.0/8"] } }] })).await.ok();
    let here = principal(&s, "here", &["loopback-only"], json!({})).await;
    let there = principal(&s, "there", &["elsewhere-only"], json!({})).await;
    call(&s, &here, Method::GET, "/v1/keys/net", None)
        .await
        .ok();
    call(&s, &there, Method::GET, "/v1/keys/net", None)
        .await
        .assert_error(403, "forbidden");
    let r = s.post("/v1/policies/explain", json!({ "principal": "there", "action": "key:read", "resource": "key/net", "source": "10.1.2.3" })).await;
    assert_eq!(r.ok()["effect"], "allow");
    Ok(())
}

#[tokio::test]
async fn repeated_failed_authentication_is_slowed_per_source() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    let wrong = "Bearer cst_0000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    for _ in 0..20 {
        s.raw(
            Method::GET,
            "/v1/keys",
            Auth::Header(wrong),
            None,
            Vec::new(),
        )
        .await
        .assert_error(401, "invalid_token");
    }
    // Over the limit: the next failure is refused with 429 …
    s.raw(
        Method::GET,
        "/v1/keys",
        Auth::Header(wrong),
        None,
        Vec::new(),
    )
    .await
    .assert_error(429, "too_many_auth_failures");
    // … but a valid token is verified first and is never refused (issue 12, item 15: a NAT
    // address shared with a failing client must not lock out the others).
    s.send(Method::GET, "/v1/keys").await.ok();
    // Another source address is not affected.
    let other = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>()?)
        .build()?;
    let res = other
        .get(format!("{}/v1/keys", s.base))
        .bearer_auth(&s.token)
        .send()
        .await?;
    assert_eq!(res.status().as_u16(), 200);
    // Health stays reachable for everyone.
    assert_eq!(s.get_public("/v1/health/live").await.status.as_u16(), 200);
    Ok(())
}
