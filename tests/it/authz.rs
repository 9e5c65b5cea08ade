//! Authorisation of every resource a request touches, black-box (issue 12): a walk over every
//! route of `docs/openapi.json` as a principal without rights and as principals holding a right
//! on only some of the resources a request touches; then one regression test per review item
//! (destination of `reencrypt`, keys used by secret writes, per-item lists, destruction by
//! writes, the generated-secret floor, rewrap's single decision, explain, policy attachment).

use std::collections::{BTreeMap, HashMap};

use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::common::server::{wait_job_done, Reply};
use crate::common::{b64, Deployment, Server};
use crate::policy::{call, principal, put_policy};

/// Every row of every table except the audit log's and the duty leases, hashed per table: what
/// a request changed in the store (the audit log grows with every request and is checked
/// through its records; the lifecycle worker renews its lease every tick, whatever requests do).
fn store_state(d: &Deployment) -> anyhow::Result<BTreeMap<String, String>> {
    let db = d.db()?;
    let mut out = BTreeMap::new();
    for t in db.tables()? {
        // The audit log's tables: audit_records, audit_checkpoints, audit_archives.
        if t.starts_with("audit_") || t == "leases" {
            continue;
        }
        let mut h = Sha256::new();
        for row in db.rows_of(&t)? {
            for v in row {
                h.update(format!("{v:?}\u{1f}").as_bytes());
            }
            h.update(b"\x1e");
        }
        out.insert(t, hex::encode(h.finalize()));
    }
    Ok(out)
}

/// Every audit record by request id.
async fn records(s: &Server) -> HashMap<String, Value> {
    let mut by_id = HashMap::new();
    let mut after = 0u64;
    loop {
        let r = s
            .get(&format!("/v1/audit/events?after={after}&limit=1000"))
            .await;
        for rec in r.ok()["records"].as_array().unwrap() {
            by_id.insert(rec["request_id"].as_str().unwrap().to_owned(), rec.clone());
        }
        match r.body["next_after"].as_u64() {
            Some(n) => after = n,
            None => return by_id,
        }
    }
}

/// The items of a list response (its one array).
fn items(r: &Reply) -> Vec<Value> {
    r.ok()
        .as_object()
        .and_then(|o| o.values().find_map(|v| v.as_array().cloned()))
        .unwrap_or_else(|| panic!("not a list: {}", r.body))
}

/// What the walk sets up as the admin, named by the routes' parameters.
struct Fixture {
    blob: String,
    job: String,
    token_id: String,
    access_key_id: String,
    lease_id: String,
}

/// A database connection (`walk-conn`, to the test cluster as its superuser), a static role on
/// a database role made for the walk, and a dynamic role with one lease.
async fn database_fixture(s: &Server) -> String {
    let mut cfg: tokio_postgres::Config = crate::common::postgres::admin_url().parse().unwrap();
    cfg.user("postgres");
    let url = crate::common::postgres::url_of(&cfg).replace("postgres@", "");
    let db_role = format!("walk_{}", uuid::Uuid::new_v4().simple());
    crate::common::postgres::admin(None)
        .await
        .batch_execute(&format!("CREATE ROLE {db_role} LOGIN"))
        .await
        .unwrap();
    s.post(
        "/v1/db/connections",
        json!({ "name": "walk-conn", "url": url, "admin_user": "postgres", "admin_password": "trust",
                "key": "k-b" }),
    )
    .await
    .ok();
    s.send_json(
        Method::PUT,
        "/v1/db/roles/walk-static",
        json!({ "connection": "walk-conn", "kind": "static", "username": db_role }),
    )
    .await
    .ok();
    s.send_json(
        Method::PUT,
        "/v1/db/roles/walk-dyn",
        json!({ "connection": "walk-conn", "kind": "dynamic",
                "creation_statements": ["CREATE ROLE {{name}} LOGIN PASSWORD {{password}} VALID UNTIL {{expiration}}"] }),
    )
    .await
    .ok();
    let creds = s.post("/v1/db/creds/walk-dyn", json!({})).await;
    creds.ok()["lease"]["id"].as_str().unwrap().to_owned()
}

async fn fixture(s: &Server) -> Fixture {
    s.create_key("k-a").await;
    s.create_key("k-b").await;
    s.post("/v1/aliases", json!({ "name": "al-a", "key": "k-a" }))
        .await
        .ok();
    s.send_json(
        Method::PUT,
        "/v1/secrets/s/a",
        json!({ "value_text": "v1", "key": "k-a" }),
    )
    .await
    .ok();
    let blob = s
        .post(
            "/v1/keys/k-a/encrypt",
            json!({ "plaintext": b64(b"walk"), "context": { "t": "1" } }),
        )
        .await;
    let blob = blob.ok()["ciphertext"].as_str().unwrap().to_owned();
    put_policy(
        s,
        "pol-x",
        json!({ "statements": [{ "effect": "allow", "actions": ["key:read"], "resources": ["key/k-a"] }] }),
    )
    .await
    .ok();
    principal(s, "p-target", &["pol-x"], json!({})).await;
    let tokens = s.get("/v1/tokens?principal=p-target").await;
    let token_id = items(&tokens)[0]["id"].as_str().unwrap().to_owned();
    let access_key = s
        .post(
            "/v1/access-keys",
            json!({ "principal": "p-target", "key": "k-b" }),
        )
        .await;
    let access_key_id = access_key.ok()["id"].as_str().unwrap().to_owned();
    let lease_id = database_fixture(s).await;
    let job = s.post("/v1/keys/k-a/rewrap", json!({})).await;
    assert_eq!(job.status.as_u16(), 202, "{}", job.body);
    let job = job.body["id"].as_str().unwrap().to_owned();
    // Finished before the walk, so no background progress changes the store under it.
    wait_job_done(s, "k-a").await;
    Fixture {
        blob,
        job,
        token_id,
        access_key_id,
        lease_id,
    }
}

/// One request of the walk: the route template it exercises, the concrete path and a body
/// that is valid, so that only authorisation can refuse it.
struct Call {
    method: Method,
    route: &'static str,
    path: String,
    body: Option<Value>,
}

fn calls(f: &Fixture) -> Vec<Call> {
    let c = |method: Method, route: &'static str, path: &str, body: Option<Value>| Call {
        method,
        route,
        path: path.to_owned(),
        body,
    };
    let ctx = json!({ "t": "1" });
    vec![
        c(
            Method::POST,
            "/v1/keys",
            "/v1/keys",
            Some(json!({ "name": "k-new" })),
        ),
        c(Method::GET, "/v1/keys", "/v1/keys", None),
        c(Method::GET, "/v1/keys/{key}", "/v1/keys/k-a", None),
        c(
            Method::PATCH,
            "/v1/keys/{key}",
            "/v1/keys/k-a",
            Some(json!({ "description": "x" })),
        ),
        c(
            Method::POST,
            "/v1/keys/{key}/rotate",
            "/v1/keys/k-a/rotate",
            None,
        ),
        c(
            Method::POST,
            "/v1/keys/{key}/disable",
            "/v1/keys/k-a/disable",
            None,
        ),
        c(
            Method::POST,
            "/v1/keys/{key}/enable",
            "/v1/keys/k-a/enable",
            None,
        ),
        c(
            Method::POST,
            "/v1/keys/{key}/schedule-deletion",
            "/v1/keys/k-a/schedule-deletion",
            Some(json!({ "pending_days": 7 })),
        ),
        c(
            Method::POST,
            "/v1/keys/{key}/cancel-deletion",
            "/v1/keys/k-a/cancel-deletion",
            None,
        ),
        c(
            Method::GET,
            "/v1/keys/{key}/versions",
            "/v1/keys/k-a/versions",
            None,
        ),
        c(
            Method::POST,
            "/v1/keys/{key}/versions/{version}/{action}",
            "/v1/keys/k-a/versions/1/destroy",
            None,
        ),
        c(
            Method::POST,
            "/v1/keys/{key}/rewrap",
            "/v1/keys/k-a/rewrap",
            None,
        ),
        c(
            Method::POST,
            "/v1/keys/{key}/datakey",
            "/v1/keys/k-a/datakey",
            Some(json!({ "context": ctx })),
        ),
        c(
            Method::POST,
            "/v1/keys/{key}/encrypt",
            "/v1/keys/k-a/encrypt",
            Some(json!({ "plaintext": b64(b"x"), "context": ctx })),
        ),
        c(
            Method::POST,
            "/v1/decrypt",
            "/v1/decrypt",
            Some(json!({ "ciphertext": f.blob, "context": ctx })),
        ),
        c(
            Method::POST,
            "/v1/reencrypt",
            "/v1/reencrypt",
            Some(json!({ "ciphertext": f.blob, "context": ctx })),
        ),
        c(Method::GET, "/v1/jobs", "/v1/jobs", None),
        c(
            Method::GET,
            "/v1/jobs/{id}",
            &format!("/v1/jobs/{}", f.job),
            None,
        ),
        c(
            Method::GET,
            "/v1/jobs/{id}/events",
            &format!("/v1/jobs/{}/events", f.job),
            None,
        ),
        c(
            Method::POST,
            "/v1/aliases",
            "/v1/aliases",
            Some(json!({ "name": "al-new", "key": "k-a" })),
        ),
        c(Method::GET, "/v1/aliases", "/v1/aliases", None),
        c(Method::GET, "/v1/aliases/{name}", "/v1/aliases/al-a", None),
        c(
            Method::PUT,
            "/v1/aliases/{name}",
            "/v1/aliases/al-a",
            Some(json!({ "key": "k-b" })),
        ),
        c(
            Method::DELETE,
            "/v1/aliases/{name}",
            "/v1/aliases/al-a",
            None,
        ),
        c(
            Method::POST,
            "/v1/principals",
            "/v1/principals",
            Some(json!({ "name": "p-new", "policies": ["pol-x"] })),
        ),
        c(Method::GET, "/v1/principals", "/v1/principals", None),
        c(
            Method::GET,
            "/v1/principals/{name}",
            "/v1/principals/p-target",
            None,
        ),
        c(
            Method::PATCH,
            "/v1/principals/{name}",
            "/v1/principals/p-target",
            Some(json!({ "policies": ["admin"] })),
        ),
        c(
            Method::DELETE,
            "/v1/principals/{name}",
            "/v1/principals/p-target",
            None,
        ),
        c(Method::GET, "/v1/policies", "/v1/policies", None),
        c(
            Method::POST,
            "/v1/policies/explain",
            "/v1/policies/explain",
            Some(json!({ "principal": "p-target", "action": "key:read", "resource": "key/k-a" })),
        ),
        c(
            Method::GET,
            "/v1/policies/{name}",
            "/v1/policies/pol-x",
            None,
        ),
        c(
            Method::PUT,
            "/v1/policies/{name}",
            "/v1/policies/pol-x",
            Some(
                json!({ "statements": [{ "effect": "allow", "actions": ["*"], "resources": ["*"] }] }),
            ),
        ),
        c(
            Method::DELETE,
            "/v1/policies/{name}",
            "/v1/policies/pol-x",
            None,
        ),
        c(
            Method::POST,
            "/v1/tokens",
            "/v1/tokens",
            Some(json!({ "principal": "p-target" })),
        ),
        c(Method::GET, "/v1/tokens", "/v1/tokens", None),
        c(
            Method::POST,
            "/v1/access-keys",
            "/v1/access-keys",
            Some(json!({ "principal": "p-target", "key": "k-b" })),
        ),
        c(Method::GET, "/v1/access-keys", "/v1/access-keys", None),
        c(
            Method::DELETE,
            "/v1/access-keys/{id}",
            &format!("/v1/access-keys/{}", f.access_key_id),
            None,
        ),
        c(
            Method::POST,
            "/v1/db/connections",
            "/v1/db/connections",
            Some(
                json!({ "name": "walk-conn2", "url": "postgres://127.0.0.1:1/x",
                         "admin_user": "postgres", "admin_password": "x", "key": "k-b" }),
            ),
        ),
        c(
            Method::GET,
            "/v1/db/connections",
            "/v1/db/connections",
            None,
        ),
        c(
            Method::GET,
            "/v1/db/connections/{name}",
            "/v1/db/connections/walk-conn",
            None,
        ),
        c(
            Method::DELETE,
            "/v1/db/connections/{name}",
            "/v1/db/connections/walk-conn",
            None,
        ),
        c(
            Method::PUT,
            "/v1/db/roles/{name}",
            "/v1/db/roles/walk-dyn",
            Some(json!({ "connection": "walk-conn", "kind": "dynamic",
                         "creation_statements": ["CREATE ROLE {{name}}"] })),
        ),
        c(Method::GET, "/v1/db/roles", "/v1/db/roles", None),
        c(
            Method::GET,
            "/v1/db/roles/{name}",
            "/v1/db/roles/walk-static",
            None,
        ),
        c(
            Method::DELETE,
            "/v1/db/roles/{name}",
            "/v1/db/roles/walk-static",
            None,
        ),
        c(
            Method::GET,
            "/v1/db/static-creds/{name}",
            "/v1/db/static-creds/walk-static",
            None,
        ),
        c(
            Method::POST,
            "/v1/db/rotate-role/{name}",
            "/v1/db/rotate-role/walk-static",
            None,
        ),
        c(
            Method::POST,
            "/v1/db/creds/{name}",
            "/v1/db/creds/walk-dyn",
            Some(json!({})),
        ),
        c(
            Method::POST,
            "/v1/db/leases/{id}/renew",
            &format!("/v1/db/leases/{}/renew", f.lease_id),
            Some(json!({})),
        ),
        c(
            Method::DELETE,
            "/v1/db/leases/{id}",
            &format!("/v1/db/leases/{}", f.lease_id),
            None,
        ),
        c(
            Method::DELETE,
            "/v1/tokens/{id}",
            &format!("/v1/tokens/{}", f.token_id),
            None,
        ),
        c(Method::GET, "/v1/audit/events", "/v1/audit/events", None),
        c(Method::GET, "/v1/audit/export", "/v1/audit/export", None),
        c(
            Method::GET,
            "/v1/audit/public-key",
            "/v1/audit/public-key",
            None,
        ),
        c(
            Method::POST,
            "/v1/audit/archive",
            "/v1/audit/archive",
            Some(json!({ "through": 1, "export_sha256": "00".repeat(32) })),
        ),
        c(
            Method::GET,
            "/v1/custody/report",
            "/v1/custody/report",
            None,
        ),
        c(Method::GET, "/metrics", "/metrics", None),
        c(Method::GET, "/v1/secrets", "/v1/secrets", None),
        c(Method::GET, "/v1/secrets/{path}", "/v1/secrets/s/a", None),
        c(
            Method::PUT,
            "/v1/secrets/{path}",
            "/v1/secrets/s/a",
            Some(json!({ "value_text": "v2" })),
        ),
        c(
            Method::DELETE,
            "/v1/secrets/{path}",
            "/v1/secrets/s/a",
            None,
        ),
        c(
            Method::GET,
            "/v1/secrets/{path}/metadata",
            "/v1/secrets/s/a/metadata",
            None,
        ),
        c(
            Method::PUT,
            "/v1/secrets/{path}/metadata",
            "/v1/secrets/s/a/metadata",
            Some(json!({ "max_versions": 5 })),
        ),
        c(
            Method::POST,
            "/v1/secrets/{path}/undelete",
            "/v1/secrets/s/a/undelete",
            Some(json!({ "versions": [1] })),
        ),
        c(
            Method::POST,
            "/v1/secrets/{path}/destroy",
            "/v1/secrets/s/a/destroy",
            Some(json!({ "versions": [1] })),
        ),
        c(
            Method::POST,
            "/v1/secrets/{path}/rotate",
            "/v1/secrets/s/a/rotate",
            None,
        ),
    ]
}

/// Routes that list: they answer every principal, with the items it may read.
fn is_list(c: &Call) -> bool {
    c.method == Method::GET
        && matches!(
            c.route,
            "/v1/keys"
                | "/v1/jobs"
                | "/v1/aliases"
                | "/v1/principals"
                | "/v1/policies"
                | "/v1/tokens"
                | "/v1/access-keys"
                | "/v1/secrets"
                | "/v1/db/connections"
                | "/v1/db/roles"
        )
}

/// Routes anyone may call without a token (the health probes, the OpenAPI document and the
/// auditor's page's files, which carry no data).
const PUBLIC: &[&str] = &[
    "/v1/health/live",
    "/v1/health/ready",
    "/v1/openapi.json",
    "/ui/",
    "/ui/app.js",
    "/ui/verify.js",
    "/ui/style.css",
];

/// Sends `c` as `token` and checks that it was refused by policy and changed nothing: `403
/// forbidden`, the store as it was, and an audit record `denied` that names the action and no
/// key version used (no device call was made).
async fn assert_refused(
    s: &Server,
    d: &Deployment,
    token: &str,
    c: &Call,
    why: &str,
) -> anyhow::Result<()> {
    let before = store_state(d)?;
    let r = call(s, token, c.method.clone(), &c.path, c.body.clone()).await;
    assert_eq!(
        r.status.as_u16(),
        403,
        "{why}: {} {} answered {} {}",
        c.method,
        c.path,
        r.status,
        r.body
    );
    r.assert_error(403, "forbidden");
    assert_eq!(
        store_state(d)?,
        before,
        "{why}: {} {} changed the store although it was refused",
        c.method,
        c.path
    );
    let all = records(s).await;
    let rec = &all[r.request_id.as_deref().unwrap_or_default()];
    assert_eq!(rec["outcome"], "denied", "{why}: {rec}");
    assert!(rec["action"].is_string(), "{why}: no action noted: {rec}");
    assert!(rec["key_id"].is_null(), "{why}: a key was used: {rec}");
    Ok(())
}

#[tokio::test]
async fn every_route_authorises_every_resource() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    let f = fixture(&s).await;
    let walk = calls(&f);

    // The walk covers every route and method of the OpenAPI document (a new route fails here
    // until it is added with a body that only authorisation can refuse).
    let doc: Value = serde_json::from_str(include_str!("../../docs/openapi.json"))?;
    let mut documented = 0;
    for (path, methods) in doc["paths"].as_object().unwrap() {
        if PUBLIC.contains(&path.as_str()) {
            continue;
        }
        for method in methods.as_object().unwrap().keys() {
            if !["get", "put", "post", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            documented += 1;
            assert!(
                walk.iter()
                    .any(|c| c.route == path && c.method.as_str().eq_ignore_ascii_case(method)),
                "{method} {path} is not in the authorisation walk"
            );
        }
    }
    assert!(documented >= 45, "only {documented} documented operations");

    // A principal without any policy: every route is refused before it touches anything;
    // lists answer, empty.
    let nobody = principal(&s, "nobody", &[], json!({})).await;
    for c in &walk {
        if is_list(c) {
            let r = call(&s, &nobody, c.method.clone(), &c.path, None).await;
            assert!(items(&r).is_empty(), "{}: {}", c.path, r.body);
        } else {
            assert_refused(&s, &d, &nobody, c, "no rights").await?;
        }
    }

    // The admin may do each read of the walk: the paths and bodies are right, so the 403s
    // above came from policy and nothing else.
    for c in walk.iter().filter(|c| c.method == Method::GET) {
        let r = s
            .raw(
                c.method.clone(),
                &c.path,
                crate::common::server::Auth::Admin,
                None,
                Vec::new(),
            )
            .await;
        assert!(
            r.status.is_success(),
            "admin {}: {} {}",
            c.path,
            r.status,
            r.body
        );
    }

    // Unknown names behind a denied resource answer 403, never a 404 that reveals existence;
    // the admin, allowed the action on them, learns that they do not exist.
    let unknown = [
        "/v1/keys/no-such-key",
        "/v1/jobs/00000000-0000-4000-8000-000000000000",
        "/v1/aliases/no-such-alias",
        "/v1/policies/no-such-policy",
        "/v1/principals/no-such-principal",
        "/v1/secrets/no/such/secret",
        "/v1/db/connections/no-such-connection",
        "/v1/db/roles/no-such-role",
        "/v1/db/static-creds/no-such-role",
    ];
    for path in unknown {
        call(&s, &nobody, Method::GET, path, None)
            .await
            .assert_error(403, "forbidden");
        let r = s.get(path).await;
        assert_eq!(r.status.as_u16(), 404, "admin {path}: {}", r.body);
    }

    // Principals holding a right on only some of the resources a request touches.
    put_policy(
        &s,
        "almost",
        json!({ "statements": [
            { "effect": "allow", "actions": ["reencrypt", "decrypt", "encrypt"], "resources": ["key/k-a"],
              "conditions": { "context_equals": { "t": "1" } } },
            { "effect": "allow", "actions": ["secret:write", "secret:read", "secret:list"], "resources": ["secret/*"] },
            { "effect": "allow", "actions": ["principal:admin"], "resources": ["principal/*"] },
            { "effect": "allow", "actions": ["alias:write"], "resources": ["alias/*"] },
            { "effect": "allow", "actions": ["policy:read"], "resources": ["principal/*"] }
        ] }),
    )
    .await
    .ok();
    let almost = principal(&s, "almost", &["almost"], json!({})).await;
    let partial = [
        (
            "reencrypt to another key without a right on it",
            Call {
                method: Method::POST,
                route: "/v1/reencrypt",
                path: "/v1/reencrypt".into(),
                body: Some(
                    json!({ "ciphertext": f.blob, "context": { "t": "1" }, "destination_key": "k-b" }),
                ),
            },
        ),
        (
            "reencrypt to a context it may not use",
            Call {
                method: Method::POST,
                route: "/v1/reencrypt",
                path: "/v1/reencrypt".into(),
                body: Some(
                    json!({ "ciphertext": f.blob, "context": { "t": "1" }, "destination_context": { "t": "2" } }),
                ),
            },
        ),
        (
            "secret write under a key it may not use",
            Call {
                method: Method::PUT,
                route: "/v1/secrets/{path}",
                path: "/v1/secrets/s/a".into(),
                body: Some(json!({ "value_text": "v2" })),
            },
        ),
        (
            "secret write naming an unknown key",
            Call {
                method: Method::PUT,
                route: "/v1/secrets/{path}",
                path: "/v1/secrets/s/new".into(),
                body: Some(json!({ "value_text": "v", "key": "no-such-key" })),
            },
        ),
        (
            "metadata naming a key it may not use",
            Call {
                method: Method::PUT,
                route: "/v1/secrets/{path}/metadata",
                path: "/v1/secrets/s/a/metadata".into(),
                body: Some(json!({ "key": "k-b" })),
            },
        ),
        (
            "attaching a policy without policy:attach",
            Call {
                method: Method::POST,
                route: "/v1/principals",
                path: "/v1/principals".into(),
                body: Some(json!({ "name": "p-sneaky", "policies": ["admin"] })),
            },
        ),
        (
            "attaching an unknown policy without policy:attach",
            Call {
                method: Method::PATCH,
                route: "/v1/principals/{name}",
                path: "/v1/principals/p-target".into(),
                body: Some(json!({ "policies": ["no-such-policy"] })),
            },
        ),
        (
            "alias to a key it may not read",
            Call {
                method: Method::POST,
                route: "/v1/aliases",
                path: "/v1/aliases".into(),
                body: Some(json!({ "name": "al-sneaky", "key": "k-b" })),
            },
        ),
    ];
    for (why, c) in &partial {
        assert_refused(&s, &d, &almost, c, why).await?;
    }

    // Positive twins: with the missing right added, the same requests succeed.
    put_policy(
        &s,
        "missing",
        json!({ "statements": [
            { "effect": "allow", "actions": ["reencrypt"], "resources": ["key/k-b"] },
            { "effect": "allow", "actions": ["reencrypt"], "resources": ["key/k-a"],
              "conditions": { "context_equals": { "t": "2" } } },
            { "effect": "allow", "actions": ["secret:use-key"], "resources": ["key/*"] },
            { "effect": "allow", "actions": ["policy:attach"], "resources": ["policy/*"] },
            { "effect": "allow", "actions": ["key:read"], "resources": ["key/k-b"] }
        ] }),
    )
    .await
    .ok();
    let almost_plus = principal(&s, "almost-plus", &["almost", "missing"], json!({})).await;
    for (why, c) in &partial {
        let r = call(&s, &almost_plus, c.method.clone(), &c.path, c.body.clone()).await;
        if why.contains("unknown") {
            // Allowed to use (or attach) the name: now it learns that it does not exist.
            assert_eq!(r.status.as_u16(), 404, "{why}: {}", r.body);
        } else {
            assert!(r.status.is_success(), "{why}: {} {}", r.status, r.body);
        }
    }
    Ok(())
}

/// Item 1 (high): `reencrypt` without `destination_key` authorises the destination context; the
/// record names the destination context.
#[tokio::test]
async fn reencrypt_binds_only_to_an_authorised_destination_context() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    s.create_key("tenant-key").await;
    put_policy(
        &s,
        "acme-only",
        json!({ "statements": [{ "effect": "allow", "actions": ["encrypt", "decrypt", "reencrypt"],
            "resources": ["key/tenant-key"], "conditions": { "context_equals": { "tenant": "acme" } } }] }),
    )
    .await
    .ok();
    let acme = principal(&s, "acme-app", &["acme-only"], json!({})).await;
    let enc = |ctx: &str| json!({ "plaintext": b64(b"pay"), "context": { "tenant": ctx } });
    let blob = call(
        &s,
        &acme,
        Method::POST,
        "/v1/keys/tenant-key/encrypt",
        Some(enc("acme")),
    )
    .await;
    let blob = blob.ok()["ciphertext"].as_str().unwrap().to_owned();
    call(
        &s,
        &acme,
        Method::POST,
        "/v1/keys/tenant-key/encrypt",
        Some(enc("evil")),
    )
    .await
    .assert_error(403, "forbidden");
    // The attack: re-bind the acme blob to tenant=evil without naming a destination key.
    let rebind = json!({ "ciphertext": blob, "context": { "tenant": "acme" },
                         "destination_context": { "tenant": "evil" } });
    call(&s, &acme, Method::POST, "/v1/reencrypt", Some(rebind))
        .await
        .assert_error(403, "forbidden");
    // Negative twin: the same re-encryption within acme succeeds, and its record names the
    // destination context by the digest an encrypt under that context records.
    let keep = json!({ "ciphertext": blob, "context": { "tenant": "acme" },
                       "destination_context": { "tenant": "acme" } });
    let r = call(&s, &acme, Method::POST, "/v1/reencrypt", Some(keep)).await;
    let out = r.ok()["ciphertext"].as_str().unwrap().to_owned();
    let dec = json!({ "ciphertext": out, "context": { "tenant": "acme" } });
    call(&s, &acme, Method::POST, "/v1/decrypt", Some(dec))
        .await
        .ok();
    // The admin may re-bind (allowed everything): the record names the new context.
    let admin_rebind = s
        .post(
            "/v1/reencrypt",
            json!({ "ciphertext": blob, "context": { "tenant": "acme" },
                    "destination_context": { "tenant": "evil", "region": "eu" } }),
        )
        .await;
    admin_rebind.ok();
    let all = records(&s).await;
    let rec = &all[r.request_id.as_deref().unwrap()];
    assert_eq!(
        rec["details"]["destination_context_digest"], rec["context_digest"],
        "{rec}"
    );
    assert_eq!(rec["details"]["destination_context_keys"], "tenant");
    let rec = &all[admin_rebind.request_id.as_deref().unwrap()];
    let digest = rec["details"]["destination_context_digest"]
        .as_str()
        .unwrap();
    assert_eq!(digest.len(), 64);
    assert_ne!(rec["context_digest"].as_str(), Some(digest));
    assert_eq!(rec["details"]["destination_context_keys"], "region,tenant");
    Ok(())
}

/// Item 2: a secret write needs `secret:use-key` on the key it wraps under; a refused write
/// neither spends the key's wrap budget nor keeps its version from being destroyed.
#[tokio::test]
async fn secret_writes_need_a_right_on_their_key() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    s.create_key("payroll").await;
    s.create_key("team-key").await;
    // Rights on the path only: what `secret:write` alone allowed before.
    put_policy(
        &s,
        "writer",
        json!({ "statements": [
            { "effect": "allow", "actions": ["secret:write", "secret:read"], "resources": ["secret/w/*"] }
        ] }),
    )
    .await
    .ok();
    let w = principal(&s, "writer-1", &["writer"], json!({})).await;
    let put = |key: &str| Some(json!({ "value_text": "s3cret", "key": key }));
    for key in ["payroll", "no-such-key"] {
        call(&s, &w, Method::PUT, "/v1/secrets/w/x", put(key))
            .await
            .assert_error(403, "forbidden");
        call(
            &s,
            &w,
            Method::PUT,
            "/v1/secrets/w/x/metadata",
            Some(json!({ "key": key })),
        )
        .await
        .assert_error(403, "forbidden");
    }
    let versions = s.get("/v1/keys/payroll/versions").await;
    assert_eq!(
        versions.ok()["versions"][0]["wraps_reserved"],
        0,
        "{}",
        versions.body
    );
    assert_eq!(versions.body["versions"][0]["stored_data_keys"], 0);
    // Nothing references payroll v1: it can be destroyed after a rotation.
    s.post("/v1/keys/payroll/rotate", json!({})).await.ok();
    s.post("/v1/keys/payroll/versions/1/destroy", json!({}))
        .await
        .ok();
    // Negative twin: with `secret:use-key` on team-key, that key works (payroll still does
    // not), and later writes keep using it.
    put_policy(
        &s,
        "writer",
        json!({ "statements": [
            { "effect": "allow", "actions": ["secret:write", "secret:read"], "resources": ["secret/w/*"] },
            { "effect": "allow", "actions": ["secret:use-key"], "resources": ["key/team-key"] }
        ] }),
    )
    .await
    .ok();
    call(&s, &w, Method::PUT, "/v1/secrets/w/x", put("payroll"))
        .await
        .assert_error(403, "forbidden");
    call(&s, &w, Method::PUT, "/v1/secrets/w/x", put("team-key"))
        .await
        .ok();
    call(
        &s,
        &w,
        Method::PUT,
        "/v1/secrets/w/x",
        Some(json!({ "value_text": "v2" })),
    )
    .await
    .ok();
    // A secret made under payroll by the admin: the writer may not add versions under it.
    s.send_json(
        Method::PUT,
        "/v1/secrets/w/payroll-db",
        json!({ "value_text": "x", "key": "payroll" }),
    )
    .await
    .ok();
    call(
        &s,
        &w,
        Method::PUT,
        "/v1/secrets/w/payroll-db",
        Some(json!({ "value_text": "y" })),
    )
    .await
    .assert_error(403, "forbidden");
    Ok(())
}

/// Pages through a list route as `token` with `limit=1`, returning the `field` of each item.
async fn page_all(s: &Server, token: &str, route: &str, field: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    let sep = if route.contains('?') { '&' } else { '?' };
    for _ in 0..50 {
        let path = match &after {
            Some(a) => format!("{route}{sep}limit=1&after={a}"),
            None => format!("{route}{sep}limit=1"),
        };
        let r = call(s, token, Method::GET, &path, None).await;
        let page = items(&r);
        assert!(page.len() <= 1, "{path}: {}", r.body);
        out.extend(page.iter().map(|i| i[field].as_str().unwrap().to_owned()));
        match r.body["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => return out,
        }
    }
    panic!("{route}: more pages than items");
}

/// Item 3: every list decides item by item, so a deny on one item hides it; pages stay full
/// and cursors right.
#[tokio::test]
async fn lists_show_only_what_the_caller_may_read() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    for k in ["a-1", "a-2", "payroll-1", "a-3", "payroll-2"] {
        s.create_key(k).await;
    }
    for (alias, key) in [("al-1", "a-1"), ("al-payroll", "payroll-1")] {
        s.post("/v1/aliases", json!({ "name": alias, "key": key }))
            .await
            .ok();
    }
    for p in ["app/one", "hidden/two", "app/three"] {
        s.send_json(
            Method::PUT,
            &format!("/v1/secrets/{p}"),
            json!({ "value_text": "v", "key": "a-1" }),
        )
        .await
        .ok();
    }
    s.post("/v1/keys/a-1/rewrap", json!({})).await;
    s.post("/v1/keys/payroll-1/rewrap", json!({})).await;
    wait_job_done(&s, "a-1").await;
    wait_job_done(&s, "payroll-1").await;
    put_policy(
        &s,
        "reader",
        json!({ "statements": [
            { "effect": "allow", "actions": ["key:read", "secret:list", "policy:read", "principal:admin"], "resources": ["*"] },
            { "effect": "deny", "actions": ["*"], "resources": ["key/payroll-*", "alias/al-payroll", "secret/hidden/*", "policy/admin", "principal/bootstrap-admin"] }
        ] }),
    )
    .await
    .ok();
    let t = principal(&s, "lister", &["reader"], json!({})).await;

    assert_eq!(
        page_all(&s, &t, "/v1/keys", "name").await,
        ["a-1", "a-2", "a-3"]
    );
    let all_keys = page_all(&s, &s.token, "/v1/keys", "name").await;
    assert_eq!(all_keys.len(), 5, "the admin sees every key: {all_keys:?}");
    assert_eq!(
        page_all(&s, &t, "/v1/secrets?prefix=", "path").await,
        ["app/one", "app/three"]
    );
    let names = |r: &Reply, f: &str| -> Vec<String> {
        items(r)
            .iter()
            .map(|i| i[f].as_str().unwrap().to_owned())
            .collect()
    };
    let aliases = call(&s, &t, Method::GET, "/v1/aliases", None).await;
    assert_eq!(names(&aliases, "name"), ["al-1"]);
    let policies = names(
        &call(&s, &t, Method::GET, "/v1/policies", None).await,
        "name",
    );
    assert!(!policies.contains(&"admin".to_owned()) && policies.contains(&"reader".to_owned()));
    let principals = names(
        &call(&s, &t, Method::GET, "/v1/principals", None).await,
        "name",
    );
    assert!(!principals.contains(&"bootstrap-admin".to_owned()));
    assert!(principals.contains(&"lister".to_owned()));
    let tokens = call(&s, &t, Method::GET, "/v1/tokens", None).await;
    assert!(items(&tokens)
        .iter()
        .all(|i| i["principal"] != "bootstrap-admin"));
    assert!(items(&tokens).iter().any(|i| i["principal"] == "lister"));
    let payroll = s.get("/v1/keys/payroll-1").await.ok()["id"].clone();
    let jobs = call(&s, &t, Method::GET, "/v1/jobs", None).await;
    assert_eq!(items(&jobs).len(), 1, "{}", jobs.body);
    assert!(items(&jobs).iter().all(|j| j["key_id"] != payroll));
    assert_eq!(items(&s.get("/v1/jobs").await).len(), 2);
    // The hidden items are refused one by one too.
    call(&s, &t, Method::GET, "/v1/keys/payroll-2", None)
        .await
        .assert_error(403, "forbidden");
    Ok(())
}

/// Item 4: a write that would destroy versions (beyond `max_versions`, or lowering it) needs
/// `secret:destroy`.
#[tokio::test]
async fn writes_that_destroy_versions_need_secret_destroy() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    s.create_key("k").await;
    put_policy(
        &s,
        "keeper",
        json!({ "statements": [
            { "effect": "allow", "actions": ["secret:*"], "resources": ["secret/p/*", "key/k"] },
            { "effect": "deny", "actions": ["secret:destroy"], "resources": ["secret/p/*"] }
        ] }),
    )
    .await
    .ok();
    put_policy(
        &s,
        "pruner",
        json!({ "statements": [{ "effect": "allow", "actions": ["secret:*"], "resources": ["secret/p/*", "key/k"] }] }),
    )
    .await
    .ok();
    let keeper = principal(&s, "keeper-1", &["keeper"], json!({})).await;
    let pruner = principal(&s, "pruner-1", &["pruner"], json!({})).await;
    s.send_json(
        Method::PUT,
        "/v1/secrets/p/x/metadata",
        json!({ "key": "k", "max_versions": 2 }),
    )
    .await
    .ok();
    let put = |v: &str| Some(json!({ "value_text": v }));
    call(&s, &keeper, Method::PUT, "/v1/secrets/p/x", put("1"))
        .await
        .ok();
    call(&s, &keeper, Method::PUT, "/v1/secrets/p/x", put("2"))
        .await
        .ok();
    call(&s, &keeper, Method::PUT, "/v1/secrets/p/x", put("3"))
        .await
        .assert_error(403, "forbidden");
    call(
        &s,
        &keeper,
        Method::PUT,
        "/v1/secrets/p/x/metadata",
        Some(json!({ "max_versions": 1 })),
    )
    .await
    .assert_error(403, "forbidden");
    // Raising it destroys nothing and is allowed.
    let meta = s.get("/v1/secrets/p/x/metadata").await;
    let states: Vec<&str> = meta.ok()["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["live", "live"], "{}", meta.body);
    // Negative twin: a principal allowed to destroy prunes as before.
    call(&s, &pruner, Method::PUT, "/v1/secrets/p/x", put("3"))
        .await
        .ok();
    let meta = s.get("/v1/secrets/p/x/metadata").await;
    assert_eq!(
        meta.ok()["versions"][0]["state"],
        "destroyed",
        "{}",
        meta.body
    );
    call(
        &s,
        &pruner,
        Method::PUT,
        "/v1/secrets/p/x/metadata",
        Some(json!({ "max_versions": 1 })),
    )
    .await
    .ok();
    Ok(())
}

/// Item 8: generated secrets have a floor on `rotate_every` and a cap on versions kept.
#[tokio::test]
async fn generated_secrets_are_bounded() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    // Unlimited by default for plain secrets; generated ones get the default cap (100).
    d.append_config("[secrets]\ndefault_max_versions = 0\n")?;
    let s = d.start().await?;
    s.create_key("k").await;
    let gen = |every: &str| json!({ "key": "k", "generate": { "length": 16, "charset": "hex", "rotate_every": every } });
    for every in ["1s", "59m"] {
        s.send_json(Method::PUT, "/v1/secrets/g/fast/metadata", gen(every))
            .await
            .assert_error(400, "invalid_metadata");
    }
    for max in [0, 101] {
        let mut body = gen("1h");
        body["max_versions"] = json!(max);
        s.send_json(Method::PUT, "/v1/secrets/g/many/metadata", body)
            .await
            .assert_error(400, "invalid_metadata");
    }
    // Negative twin: 1 h is the floor; an unlimited default becomes the cap.
    let ok = s
        .send_json(Method::PUT, "/v1/secrets/g/ok/metadata", gen("1h"))
        .await;
    assert_eq!(ok.ok()["max_versions"], 100, "{}", ok.body);
    assert_eq!(ok.body["current_version"], 1);
    // A plain secret keeps the configured unlimited default.
    let plain = s
        .send_json(
            Method::PUT,
            "/v1/secrets/g/plain/metadata",
            json!({ "key": "k" }),
        )
        .await;
    assert_eq!(plain.ok()["max_versions"], 0);
    Ok(())
}

/// Item 9: starting a re-wrap is one decision: a principal that may rotate a key but not read
/// it gets 202 and the job, and the record says success.
#[tokio::test]
async fn rewrap_is_decided_once_before_it_starts() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    s.create_key("k").await;
    put_policy(
        &s,
        "rotator",
        json!({ "statements": [
            { "effect": "allow", "actions": ["key:rotate"], "resources": ["key/k"] },
            { "effect": "deny", "actions": ["key:read"], "resources": ["*"] }
        ] }),
    )
    .await
    .ok();
    let t = principal(&s, "rotator-1", &["rotator"], json!({})).await;
    let r = call(&s, &t, Method::POST, "/v1/keys/k/rewrap", None).await;
    assert_eq!(r.status.as_u16(), 202, "{}", r.body);
    assert!(
        r.body["id"].is_string() && r.body["remaining"].is_number(),
        "{}",
        r.body
    );
    let all = records(&s).await;
    let rec = &all[r.request_id.as_deref().unwrap()];
    assert_eq!(rec["outcome"], "success", "{rec}");
    assert_eq!(rec["action"], "key:rotate");
    // Negative twin: without key:rotate nothing starts.
    let jobs_before = items(&s.get("/v1/jobs").await).len();
    s.create_key("other").await;
    call(&s, &t, Method::POST, "/v1/keys/other/rewrap", None)
        .await
        .assert_error(403, "forbidden");
    assert_eq!(items(&s.get("/v1/jobs").await).len(), jobs_before);
    Ok(())
}

/// Item 10: explain resolves a key reference only for a caller that may read the key, and
/// echoes the resource as written.
#[tokio::test]
async fn explain_does_not_resolve_keys_for_callers_without_key_read() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    let id = s.create_key("secret-name").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    put_policy(
        &s,
        "by-name",
        json!({ "statements": [{ "effect": "allow", "actions": ["key:read"], "resources": ["key/secret-name"] }] }),
    )
    .await
    .ok();
    principal(&s, "target", &["by-name"], json!({})).await;
    put_policy(
        &s,
        "explainer",
        json!({ "statements": [{ "effect": "allow", "actions": ["policy:read"], "resources": ["principal/*"] }] }),
    )
    .await
    .ok();
    let e = principal(&s, "explainer-1", &["explainer"], json!({})).await;
    let ask = |resource: String| {
        Some(json!({ "principal": "target", "action": "key:read", "resource": resource }))
    };
    let by_id = format!("key/{id}");
    let r = call(
        &s,
        &e,
        Method::POST,
        "/v1/policies/explain",
        ask(by_id.clone()),
    )
    .await;
    assert_eq!(
        r.ok()["resource"],
        by_id.as_str(),
        "the id was resolved to its name"
    );
    assert_eq!(r.body["effect"], "deny", "{}", r.body);
    let unknown = call(
        &s,
        &e,
        Method::POST,
        "/v1/policies/explain",
        ask("key/nope".into()),
    )
    .await;
    assert_eq!(unknown.ok()["resource"], "key/nope");
    // Negative twin: the admin may read the key, so its id is resolved as enforcement does.
    let r = s
        .post("/v1/policies/explain", ask(by_id.clone()).unwrap())
        .await;
    assert_eq!(r.ok()["effect"], "allow", "{}", r.body);
    assert_eq!(r.body["resource"], by_id.as_str());
    Ok(())
}

/// Item 11: attaching or detaching a policy needs `policy:attach` on it.
#[tokio::test]
async fn scoped_principal_admins_cannot_grant_admin() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    put_policy(
        &s,
        "team-pol",
        json!({ "statements": [{ "effect": "allow", "actions": ["key:read"], "resources": ["key/team-*"] }] }),
    )
    .await
    .ok();
    put_policy(
        &s,
        "team-lead",
        json!({ "statements": [{ "effect": "allow", "actions": ["principal:admin"], "resources": ["principal/team-*"] }] }),
    )
    .await
    .ok();
    let lead = principal(&s, "team-lead-1", &["team-lead"], json!({})).await;
    let create = |name: &str, pol: &str| Some(json!({ "name": name, "policies": [pol] }));
    call(
        &s,
        &lead,
        Method::POST,
        "/v1/principals",
        create("team-a", "admin"),
    )
    .await
    .assert_error(403, "forbidden");
    call(
        &s,
        &lead,
        Method::POST,
        "/v1/principals",
        create("team-a", "team-pol"),
    )
    .await
    .assert_error(403, "forbidden");
    // team-b holds team-pol (the admin attached it); detaching it is a change too.
    principal(&s, "team-b", &["team-pol"], json!({})).await;
    call(
        &s,
        &lead,
        Method::PATCH,
        "/v1/principals/team-b",
        Some(json!({ "policies": [] })),
    )
    .await
    .assert_error(403, "forbidden");
    // With policy:attach on the team's policies: those, and only those.
    put_policy(
        &s,
        "team-attach",
        json!({ "statements": [{ "effect": "allow", "actions": ["policy:attach"], "resources": ["policy/team-*"] }] }),
    )
    .await
    .ok();
    let lead2 = principal(&s, "team-lead-2", &["team-lead", "team-attach"], json!({})).await;
    call(
        &s,
        &lead2,
        Method::POST,
        "/v1/principals",
        create("team-a", "team-pol"),
    )
    .await
    .ok();
    call(
        &s,
        &lead2,
        Method::PATCH,
        "/v1/principals/team-a",
        Some(json!({ "policies": ["team-pol", "admin"] })),
    )
    .await
    .assert_error(403, "forbidden");
    call(
        &s,
        &lead2,
        Method::PATCH,
        "/v1/principals/team-b",
        Some(json!({ "policies": [] })),
    )
    .await
    .ok();
    let a = s.get("/v1/principals/team-a").await;
    assert_eq!(a.ok()["policies"], json!(["team-pol"]));
    Ok(())
}

/// The Vault and AWS doors, walked like the native routes: a principal allowed nothing that
/// these routes need (only `key:read` on keys it will never see) gets 403 from every Vault
/// route and `AccessDeniedException` from every AWS operation, sees empty lists, changes
/// nothing, and every refusal is recorded `denied` with its door named.
#[tokio::test]
async fn the_compat_doors_authorise_every_route() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    d.append_config("[secrets]\ndefault_key = \"kv\"\n[aws]\naccess_key_key = \"kv\"")?;
    let s = d.start().await?;
    s.create_key("kv").await;
    let key = s.create_key("walked").await;
    let key_id = key["id"].as_str().unwrap().to_owned();
    let r = s
        .post(
            "/v1/aliases",
            json!({ "name": "walked-alias", "key": "walked" }),
        )
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.body);
    let r = s
        .post(
            "/v1/keys/walked/encrypt",
            json!({ "plaintext": b64(b"secret") }),
        )
        .await;
    let blob = r.ok()["ciphertext"].as_str().unwrap().to_owned();
    let vault_ct = format!("vault:v1:{blob}");
    let r = s
        .send_json(
            Method::PUT,
            "/v1/secrets/team/a",
            json!({ "value": b64(b"v1") }),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.body);
    let r = put_policy(
        &s,
        "elsewhere",
        json!({ "statements": [{
            "effect": "allow", "actions": ["key:read"], "resources": ["key/elsewhere-*"]
        }]}),
    )
    .await;
    assert!(r.status.is_success(), "{}", r.body);
    let token = principal(&s, "nobody", &["elsewhere"], json!({})).await;

    // Vault: every route with the token.
    let ct = json!({ "ciphertext": vault_ct }).to_string();
    let refused: Vec<(&str, String, String)> = vec![
        ("POST", "/v1/transit/keys/new-key".into(), "{}".into()),
        ("GET", "/v1/transit/keys/walked".into(), String::new()),
        ("DELETE", "/v1/transit/keys/walked".into(), String::new()),
        (
            "POST",
            "/v1/transit/keys/walked/rotate".into(),
            String::new(),
        ),
        (
            "POST",
            "/v1/transit/keys/walked/config".into(),
            r#"{"min_decryption_version":1}"#.into(),
        ),
        (
            "POST",
            "/v1/transit/encrypt/walked".into(),
            r#"{"plaintext":"eA=="}"#.into(),
        ),
        (
            "PUT",
            "/v1/transit/encrypt/walked".into(),
            r#"{"plaintext":"eA=="}"#.into(),
        ),
        ("POST", "/v1/transit/decrypt/walked".into(), ct.clone()),
        ("POST", "/v1/transit/rewrap/walked".into(), ct),
        (
            "POST",
            "/v1/transit/datakey/plaintext/walked".into(),
            "{}".into(),
        ),
        (
            "POST",
            "/v1/transit/datakey/wrapped/walked".into(),
            "{}".into(),
        ),
        ("POST", "/v1/transit/random".into(), String::new()),
        ("POST", "/v1/transit/random/8".into(), String::new()),
        ("POST", "/v1/transit/random/seal/8".into(), String::new()),
        ("GET", "/v1/secret/data/team/a".into(), String::new()),
        (
            "POST",
            "/v1/secret/data/team/a".into(),
            r#"{"data":{"x":"1"}}"#.into(),
        ),
        ("DELETE", "/v1/secret/data/team/a".into(), String::new()),
        (
            "POST",
            "/v1/secret/delete/team/a".into(),
            r#"{"versions":[1]}"#.into(),
        ),
        (
            "POST",
            "/v1/secret/undelete/team/a".into(),
            r#"{"versions":[1]}"#.into(),
        ),
        (
            "POST",
            "/v1/secret/destroy/team/a".into(),
            r#"{"versions":[1]}"#.into(),
        ),
        ("GET", "/v1/secret/metadata/team/a".into(), String::new()),
        (
            "POST",
            "/v1/secret/metadata/team/a".into(),
            r#"{"max_versions":3}"#.into(),
        ),
        ("DELETE", "/v1/secret/metadata/team/a".into(), String::new()),
    ];
    let http = reqwest::Client::new();
    for (method, path, body) in &refused {
        let r = http
            .request(
                Method::from_bytes(method.as_bytes())?,
                format!("{}{path}", s.base),
            )
            .header("X-Vault-Token", &token)
            .body(body.clone())
            .send()
            .await?;
        let status = r.status().as_u16();
        let answer: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(
            (status, &answer),
            (403, &json!({ "errors": ["permission denied"] })),
            "{method} {path}"
        );
    }
    // Lists: nothing the caller may read, so Vault's empty list (404).
    for path in ["/v1/transit/keys", "/v1/secret/metadata/team"] {
        let r = http
            .request(Method::from_bytes(b"LIST")?, format!("{}{path}", s.base))
            .header("X-Vault-Token", &token)
            .send()
            .await?;
        assert_eq!(r.status().as_u16(), 404, "LIST {path}");
    }

    // AWS: every operation with an access key of the same principal.
    let ak = crate::aws::access_key(&s, "nobody", json!({})).await;
    let (ok, out) = crate::aws::run_client(
        "boto3_denied.py",
        &s,
        &[
            ("NOBODY_KEY_ID", &ak.id),
            ("NOBODY_SECRET", &ak.secret),
            ("KEY_ID", &key_id),
            ("ALIAS", "alias/walked-alias"),
            ("BLOB", &blob),
        ],
    );
    assert!(ok && out.contains("ALL PASSED"), "{out}");

    // Nothing changed: the key has one enabled version, the secret its one live version.
    let k = s.get("/v1/keys/walked").await;
    assert_eq!(k.ok()["state"], "enabled", "{}", k.body);
    assert_eq!(k.ok()["primary_version"], 1, "{}", k.body);
    let r = s.get("/v1/secrets/team/a").await;
    assert_eq!(r.ok()["version"], 1, "{}", r.body);
    assert!(s.get("/v1/keys/new-key").await.status.as_u16() == 404);

    // Every refusal is recorded as denied, door named.
    let r = s
        .get("/v1/audit/events?principal=nobody&outcome=denied&limit=1000")
        .await;
    let denied = r.ok()["records"].as_array().cloned().unwrap_or_default();
    let by_door = |door: &str| {
        denied
            .iter()
            .filter(|e| e["details"]["front_door"] == door)
            .count()
    };
    assert_eq!(by_door("vault"), refused.len(), "{denied:#?}");
    assert!(by_door("aws-kms") >= 19, "{denied:#?}");
    Ok(())
}
