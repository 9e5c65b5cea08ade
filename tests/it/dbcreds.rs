//! Database credentials against real PostgreSQL with real logins (issue 24): each test starts a
//! cluster of its own whose logins need a password (SCRAM), so "the old password is refused"
//! means PostgreSQL refused it. Static roles rotated in the database (also across `kill -9`
//! during 20 rotations), dynamic users that log in and are gone from `pg_roles` when their lease
//! ends (by expiry, by revocation, with their token), the database down during a rotation and a
//! revocation, the negative twins (a principal without `db:creds`, names and templates that try
//! to inject SQL), and the admin password in no response, log, audit export or database file.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::postgres::PrivateCluster;
use crate::common::server::on_postgres;
use crate::common::{Deployment, Server};
use crate::policy::{call, principal, put_policy};

const ADMIN_PASSWORD: &str = "Adm1n-pw-for-dbcreds-7f3a";
const APP_INITIAL: &str = "app-initial-pw-91c2";
/// A database role whose name carries a quote, a semicolon, a comment and a look-alike letter.
const WEIRD_ROLE: &str = "we\"ird'; DROP TABLE orders; --\u{0430}pp";

/// A private cluster: an admin for Custodian (superuser), one without privileges, an
/// application role, a table, and `pg_hba.conf` asking every login but the test's superuser
/// for a password.
struct Target {
    cluster: PrivateCluster,
    /// `postgres://127.0.0.1:PORT/postgres` (no user: Custodian's admin is a separate field).
    url: String,
}

async fn target() -> Target {
    let cluster = PrivateCluster::start();
    let weird = WEIRD_ROLE.replace('"', "\"\"");
    cluster
        .admin_sql(&format!(
            "CREATE ROLE custodian_admin LOGIN SUPERUSER PASSWORD '{ADMIN_PASSWORD}';
             CREATE ROLE weak_admin LOGIN PASSWORD '{ADMIN_PASSWORD}';
             CREATE ROLE app LOGIN PASSWORD '{APP_INITIAL}';
             CREATE ROLE sched_app LOGIN PASSWORD '{APP_INITIAL}';
             CREATE ROLE \"{weird}\" LOGIN PASSWORD '{APP_INITIAL}';
             CREATE TABLE orders (id int);
             INSERT INTO orders VALUES (1), (2);
             GRANT SELECT ON orders TO app, sched_app, \"{weird}\";"
        ))
        .await;
    cluster.configure(
        None,
        "local all all trust\nhost all postgres 127.0.0.1/32 trust\n\
         host all all 127.0.0.1/32 scram-sha-256\n",
    );
    let url = format!("postgres://127.0.0.1:{}/postgres", cluster.port());
    Target { cluster, url }
}

impl Target {
    /// Logs in as `user` with `password` and counts the orders it can see.
    async fn login(&self, user: &str, password: &str) -> Result<i64, String> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("127.0.0.1")
            .port(self.cluster.port())
            .user(user)
            .password(password)
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(5));
        let why = |e: tokio_postgres::Error| {
            e.as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_owned())
        };
        let (client, connection) = cfg.connect(tokio_postgres::NoTls).await.map_err(why)?;
        tokio::spawn(connection);
        let row = client
            .query_one("SELECT count(*) FROM orders", &[])
            .await
            .map_err(why)?;
        Ok(row.get(0))
    }

    /// A connection as the cluster's superuser.
    async fn superuser(&self) -> tokio_postgres::Client {
        let (client, connection) =
            tokio_postgres::connect(&self.cluster.url, tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(connection);
        client
    }

    /// Whether `pg_roles` has `name`.
    async fn has_role(&self, name: &str) -> bool {
        let client = self.superuser().await;
        client
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&name])
            .await
            .unwrap()
            .is_some()
    }

    /// Whether the orders table is still there (nothing was injected).
    async fn orders_intact(&self) -> bool {
        let client = self.superuser().await;
        client
            .query_one("SELECT count(*) FROM orders", &[])
            .await
            .map(|r| r.get::<_, i64>(0) == 2)
            .unwrap_or(false)
    }
}

/// A deployment with a sealing key `dbk` as `secrets.default_key` and a fast background duty.
async fn deployment() -> anyhow::Result<(Deployment, Server)> {
    let mut d = Deployment::new()?;
    d.append_config(
        "[secrets]\ndefault_key = \"dbk\"\nmin_rotate_every = \"1s\"\nrotation_check_interval_ms = 200\n",
    )?;
    let s = d.start().await?;
    s.create_key("dbk").await;
    Ok((d, s))
}

async fn create_connection(s: &Server, t: &Target, name: &str) -> Value {
    let r = s
        .post(
            "/v1/db/connections",
            json!({ "name": name, "url": t.url, "admin_user": "custodian_admin",
                    "admin_password": ADMIN_PASSWORD }),
        )
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.body);
    r.body
}

async fn put_role(s: &Server, name: &str, body: Value) -> crate::common::server::Reply {
    s.send_json(Method::PUT, &format!("/v1/db/roles/{name}"), body)
        .await
}

async fn static_password(s: &Server, role: &str) -> (String, u64) {
    let r = s.get(&format!("/v1/db/static-creds/{role}")).await;
    let b = r.ok();
    (
        b["password"].as_str().unwrap().to_owned(),
        b["version"].as_u64().unwrap(),
    )
}

/// Polls `check` until it holds (at most `secs` seconds).
async fn eventually<F, Fut>(what: &str, secs: u64, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_roles_rotate_in_postgres_and_nothing_leaks() -> anyhow::Result<()> {
    let t = target().await;
    let (d, s) = deployment().await?;

    // Connection creation checks the admin: a wrong password, an admin that may not manage
    // roles, a URL with credentials, an unknown TLS mode are clear 4xx and store nothing.
    let bad = |body: Value| {
        let s = &s;
        async move { s.post("/v1/db/connections", body).await }
    };
    let base = json!({ "name": "orders", "url": t.url, "admin_user": "custodian_admin",
                       "admin_password": ADMIN_PASSWORD });
    let mut wrong_pw = base.clone();
    wrong_pw["admin_password"] = json!("not-the-password");
    bad(wrong_pw)
        .await
        .assert_error(400, "database_login_failed");
    let mut weak = base.clone();
    weak["admin_user"] = json!("weak_admin");
    bad(weak)
        .await
        .assert_error(400, "database_privileges_insufficient");
    let mut in_url = base.clone();
    in_url["url"] = json!(t.url.replace("127.0.0.1", "custodian_admin:x@127.0.0.1"));
    bad(in_url).await.assert_error(400, "invalid_db_connection");
    let mut tls = base.clone();
    tls["sslmode"] = json!("verify-full");
    bad(tls).await.assert_error(400, "invalid_db_connection");
    let mut extra = base.clone();
    extra["admin_pasword"] = json!("typo");
    assert_eq!(bad(extra).await.status.as_u16(), 400);
    assert!(s.get("/v1/db/connections").await.ok()["connections"]
        .as_array()
        .unwrap()
        .is_empty());

    let created = create_connection(&s, &t, "orders").await;
    assert!(!created.to_string().contains(ADMIN_PASSWORD), "{created}");
    s.post("/v1/db/connections", base.clone())
        .await
        .assert_error(409, "db_connection_exists");

    // A static role on a database role that does not exist (a look-alike of `app`) is refused.
    put_role(
        &s,
        "ghost",
        json!({ "connection": "orders", "kind": "static", "username": "\u{0430}pp" }),
    )
    .await
    .assert_error(400, "database_role_missing");
    // A role name that breaks the name rules never reaches the database.
    let r = s
        .raw(
            Method::PUT,
            "/v1/db/roles/x%22%3B%20DROP%20TABLE%20orders",
            crate::common::server::Auth::Admin,
            Some("application/json"),
            json!({ "connection": "orders", "kind": "static", "username": "app" })
                .to_string()
                .into_bytes(),
        )
        .await;
    assert_eq!(r.status.as_u16(), 400, "{}", r.body);

    // Taking over `app`: its first password is set at once; the initial one stops working.
    let role = put_role(
        &s,
        "app-static",
        json!({ "connection": "orders", "kind": "static", "username": "app", "overlap": "1h" }),
    )
    .await;
    assert_eq!(role.ok()["current_version"], 1, "{}", role.body);
    let (v1_pw, v1) = static_password(&s, "app-static").await;
    assert_eq!(v1, 1);
    assert_eq!(t.login("app", &v1_pw).await, Ok(2));
    assert!(t.login("app", APP_INITIAL).await.is_err());

    // A rotation: the old password is refused by PostgreSQL, the new one logs in.
    let r = s.post("/v1/db/rotate-role/app-static", json!({})).await;
    assert_eq!(r.ok()["version"], 2);
    let (v2_pw, v2) = static_password(&s, "app-static").await;
    assert_eq!(v2, 2);
    assert_ne!(v1_pw, v2_pw);
    assert_eq!(t.login("app", &v2_pw).await, Ok(2));
    let refused = t.login("app", &v1_pw).await.unwrap_err();
    assert!(
        refused.contains("password authentication failed"),
        "{refused}"
    );
    // The previous version stays readable within its overlap; older ones are not given out.
    let prev = s.get("/v1/db/static-creds/app-static?version=1").await;
    assert_eq!(prev.ok()["current"], false);
    assert_eq!(prev.ok()["password"], v1_pw.as_str());
    s.get("/v1/db/static-creds/app-static?version=7")
        .await
        .assert_error(404, "db_password_version_not_found");

    // A role whose name is made of quotes, a semicolon and a comment is rotated as that role:
    // the name is quoted by PostgreSQL's rules, nothing is injected.
    put_role(
        &s,
        "weird",
        json!({ "connection": "orders", "kind": "static", "username": WEIRD_ROLE }),
    )
    .await
    .ok();
    let (weird_pw, _) = static_password(&s, "weird").await;
    assert_eq!(t.login(WEIRD_ROLE, &weird_pw).await, Ok(2));
    assert!(t.orders_intact().await, "the orders table was touched");

    // Negative twins on policy: db:creds on another role, db:admin only, no rights.
    put_policy(
        &s,
        "orders-reader",
        json!({ "statements": [{ "effect": "allow", "actions": ["db:creds"], "resources": ["db/orders/weird"] }] }),
    )
    .await
    .ok();
    let reader = principal(&s, "orders-reader", &["orders-reader"], json!({})).await;
    call(
        &s,
        &reader,
        Method::GET,
        "/v1/db/static-creds/app-static",
        None,
    )
    .await
    .assert_error(403, "forbidden");
    call(&s, &reader, Method::POST, "/v1/db/rotate-role/weird", None)
        .await
        .assert_error(403, "forbidden");
    let ok = call(&s, &reader, Method::GET, "/v1/db/static-creds/weird", None).await;
    assert_eq!(ok.ok()["username"], WEIRD_ROLE);
    call(
        &s,
        &reader,
        Method::GET,
        "/v1/db/static-creds/no-such-role",
        None,
    )
    .await
    .assert_error(403, "forbidden");
    s.get("/v1/db/static-creds/no-such-role")
        .await
        .assert_error(404, "db_role_not_found");
    let listed = call(&s, &reader, Method::GET, "/v1/db/roles", None).await;
    assert!(listed.ok()["roles"].as_array().unwrap().is_empty());

    // A schedule rotates by itself (the background duty, recorded as the system): the password
    // handed out after two scheduled rotations logs in.
    put_role(
        &s,
        "sched",
        json!({ "connection": "orders", "kind": "static", "username": "sched_app",
                "rotation_period": "1s" }),
    )
    .await
    .ok();
    eventually("two scheduled rotations", 15, || async {
        s.get("/v1/db/roles/sched").await.body["current_version"]
            .as_u64()
            .is_some_and(|v| v >= 3)
    })
    .await;
    let (sched_pw, _) = static_password(&s, "sched").await;
    let mut logged_in = t.login("sched_app", &sched_pw).await;
    if logged_in.is_err() {
        // A scheduled rotation may land between the read and the login: read again.
        let (again, _) = static_password(&s, "sched").await;
        logged_in = t.login("sched_app", &again).await;
    }
    assert_eq!(logged_in, Ok(2));

    // The audit trail names connection, role and database user, never a password.
    let records = crate::throttle::all_after(&s, 0).await;
    let rotation = records
        .iter()
        .find(|r| {
            r["action"] == "db:rotate"
                && r["outcome"] == "success"
                && r["details"]["db_role"] == "app-static"
        })
        .expect("a rotation record");
    assert_eq!(rotation["details"]["db_connection"], "orders");
    assert_eq!(rotation["details"]["db_user"], "app");
    assert_eq!(rotation["resource"], "db/orders/app-static");
    let scheduled = records
        .iter()
        .find(|r| r["credential"] == "worker:db-rotation" && r["outcome"] == "success")
        .expect("a scheduled rotation record");
    assert_eq!(scheduled["principal"], "system");
    assert_eq!(scheduled["details"]["db_user"], "sched_app");
    assert_eq!(scheduled["resource"], "db/orders/sched");

    // The admin password (and the role passwords) are in no response, log, audit export or
    // database file.
    let (export_status, export) = s.get_bytes("/v1/audit/export").await;
    assert!(export_status.is_success());
    let export = String::from_utf8_lossy(&export).into_owned();
    let (stdout, stderr) = s.output();
    let listings = format!(
        "{}{}{}",
        s.get("/v1/db/connections").await.body,
        s.get("/v1/db/connections/orders").await.body,
        s.get("/v1/db/roles").await.body
    );
    for secret in [ADMIN_PASSWORD, v1_pw.as_str(), v2_pw.as_str()] {
        assert!(!export.contains(secret), "a password in the audit export");
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "a password in the logs"
        );
        assert!(!listings.contains(secret), "a password in a listing");
    }
    // Every row of every table, on either store.
    let db = d.db()?;
    let mut seen_admin_user = false;
    for table in db.tables()? {
        for row in db.rows_of(&table)? {
            for cell in row {
                let bytes = match cell {
                    crate::common::db::Cell::Text(t) => t.into_bytes(),
                    crate::common::db::Cell::Bytes(b) => b,
                    _ => continue,
                };
                // The scan reads what is stored in clear: the admin's name is there.
                seen_admin_user |= bytes.windows(15).any(|w| w == b"custodian_admin");
                for secret in [ADMIN_PASSWORD, v1_pw.as_str(), v2_pw.as_str()] {
                    assert!(
                        !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                        "a password in plaintext in table {table}"
                    );
                }
            }
        }
    }
    assert!(
        seen_admin_user,
        "the scan did not read the connections' rows"
    );
    if !on_postgres() {
        drop(s);
        for suffix in ["", "-wal", "-shm"] {
            let mut path = d.database().into_os_string();
            path.push(suffix);
            if let Ok(bytes) = std::fs::read(&path) {
                for secret in [ADMIN_PASSWORD, v1_pw.as_str(), v2_pw.as_str()] {
                    assert!(
                        !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                        "a password in plaintext in {path:?}"
                    );
                }
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_credentials_log_in_and_end_with_their_lease() -> anyhow::Result<()> {
    let t = target().await;
    let (_d, s) = deployment().await?;
    create_connection(&s, &t, "orders").await;
    // The admin's SQL passes through as written (a quote, a %, a semicolon inside a literal);
    // only the placeholders are replaced, by values PostgreSQL quotes.
    let creation = json!([
        "CREATE ROLE {{name}} LOGIN PASSWORD {{password}} VALID UNTIL {{expiration}}",
        "GRANT SELECT ON orders TO {{name}}",
        "COMMENT ON ROLE {{name}} IS 'Custodian''s 100% lease; -- not a comment'"
    ]);
    // Templates are checked when the role is written.
    put_role(
        &s,
        "reader",
        json!({ "connection": "orders", "kind": "dynamic",
                "creation_statements": ["CREATE ROLE {{name}} PASSWORD {{pass}}"] }),
    )
    .await
    .assert_error(400, "invalid_db_role");
    put_role(
        &s,
        "reader",
        json!({ "connection": "orders", "kind": "dynamic", "creation_statements": creation,
                "default_ttl": "3s", "max_ttl": "8s" }),
    )
    .await
    .ok();

    // Fresh credentials log in and read the table.
    let r = s.post("/v1/db/creds/reader", json!({})).await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.body);
    let user = r.body["username"].as_str().unwrap().to_owned();
    let password = r.body["password"].as_str().unwrap().to_owned();
    let lease = r.body["lease"]["id"].as_str().unwrap().to_owned();
    assert!(user.starts_with("c_reader_"), "{user}");
    assert_eq!(t.login(&user, &password).await, Ok(2));
    let comment: Option<String> = t
        .superuser()
        .await
        .query_one(
            "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1",
            &[&user],
        )
        .await?
        .get(0);
    assert_eq!(
        comment.as_deref(),
        Some("Custodian's 100% lease; -- not a comment")
    );

    // Renewal within the max TTL works; past it is refused; a TTL over the max is refused.
    let renewed = s
        .post(
            &format!("/v1/db/leases/{lease}/renew"),
            json!({ "increment": "4s" }),
        )
        .await;
    assert!(
        renewed.ok()["ttl_seconds"].as_u64().unwrap() >= 3,
        "{}",
        renewed.body
    );
    s.post(
        &format!("/v1/db/leases/{lease}/renew"),
        json!({ "increment": "1h" }),
    )
    .await
    .assert_error(400, "lease_max_ttl_exceeded");
    s.post("/v1/db/creds/reader", json!({ "ttl": "1h" }))
        .await
        .assert_error(400, "lease_max_ttl_exceeded");

    // A second lease, revoked explicitly: the user is gone at once; revoking again is a no-op;
    // renewing a revoked lease is refused.
    let other = s.post("/v1/db/creds/reader", json!({ "ttl": "8s" })).await;
    let other_user = other.body["username"].as_str().unwrap().to_owned();
    let other_pw = other.body["password"].as_str().unwrap().to_owned();
    let other_lease = other.body["lease"]["id"].as_str().unwrap().to_owned();
    assert_eq!(t.login(&other_user, &other_pw).await, Ok(2));
    let r = s
        .send(Method::DELETE, &format!("/v1/db/leases/{other_lease}"))
        .await;
    assert_eq!(r.status.as_u16(), 204, "{}", r.body);
    assert!(!t.has_role(&other_user).await);
    assert!(t.login(&other_user, &other_pw).await.is_err());
    let again = s
        .send(Method::DELETE, &format!("/v1/db/leases/{other_lease}"))
        .await;
    assert_eq!(again.status.as_u16(), 204);
    s.post(&format!("/v1/db/leases/{other_lease}/renew"), json!({}))
        .await
        .assert_error(410, "db_lease_ended");
    s.send(
        Method::DELETE,
        "/v1/db/leases/dbl_aaaaaaaaaaaaaaaaaaaaaaaaaa",
    )
    .await
    .assert_error(404, "db_lease_not_found");
    s.send(Method::DELETE, "/v1/db/leases/'%3B%20DROP")
        .await
        .assert_error(404, "db_lease_not_found");

    // At expiry the background duty revokes the first lease: the login is refused and the user
    // is gone from pg_roles; the revocation is recorded once, as the system.
    eventually("the expired user is dropped", 20, || async {
        !t.has_role(&user).await
    })
    .await;
    assert!(t.login(&user, &password).await.is_err());
    let records = crate::throttle::all_after(&s, 0).await;
    let revoked: Vec<&Value> = records
        .iter()
        .filter(|r| {
            r["details"]["lease_id"] == lease.as_str() && r["details"]["lease_revoked"] == "true"
        })
        .collect();
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert_eq!(revoked[0]["principal"], "system");
    assert_eq!(revoked[0]["credential"], "worker:db-lease-expiry");
    assert_eq!(revoked[0]["details"]["db_user"], user.as_str());
    assert_eq!(revoked[0]["details"]["db_connection"], "orders");

    // Policy: a principal without db:creds is refused; with it, it gets credentials, and
    // revoking its token ends its lease (the role's default, on_token_revoke = revoke).
    put_policy(
        &s,
        "admin-only",
        json!({ "statements": [{ "effect": "allow", "actions": ["db:admin"], "resources": ["db/orders/*"] }] }),
    )
    .await
    .ok();
    let admin_only = principal(&s, "admin-only", &["admin-only"], json!({})).await;
    call(
        &s,
        &admin_only,
        Method::POST,
        "/v1/db/creds/reader",
        Some(json!({})),
    )
    .await
    .assert_error(403, "forbidden");
    put_policy(
        &s,
        "app",
        json!({ "statements": [{ "effect": "allow", "actions": ["db:creds"], "resources": ["db/orders/reader"] }] }),
    )
    .await
    .ok();
    let app = principal(&s, "app", &["app"], json!({})).await;
    let mine = call(
        &s,
        &app,
        Method::POST,
        "/v1/db/creds/reader",
        Some(json!({ "ttl": "8s" })),
    )
    .await;
    assert_eq!(mine.status.as_u16(), 201, "{}", mine.body);
    let my_user = mine.body["username"].as_str().unwrap().to_owned();
    assert!(t.has_role(&my_user).await);
    let tokens = s.get("/v1/tokens?principal=app").await;
    let token_id = tokens.ok()["tokens"][0]["id"].as_str().unwrap().to_owned();
    let r = s
        .send(Method::DELETE, &format!("/v1/tokens/{token_id}"))
        .await;
    assert_eq!(r.status.as_u16(), 204, "{}", r.body);
    eventually("the token's lease is revoked", 6, || async {
        !t.has_role(&my_user).await
    })
    .await;
    // Deleting a principal revokes its tokens, and so ends their leases too.
    let app2 = principal(&s, "app2", &["app"], json!({})).await;
    let theirs = call(
        &s,
        &app2,
        Method::POST,
        "/v1/db/creds/reader",
        Some(json!({ "ttl": "8s" })),
    )
    .await;
    let their_user = theirs.body["username"].as_str().unwrap().to_owned();
    assert!(t.has_role(&their_user).await);
    let r = s.send(Method::DELETE, "/v1/principals/app2").await;
    assert_eq!(r.status.as_u16(), 204, "{}", r.body);
    eventually("the deleted principal's lease is revoked", 6, || async {
        !t.has_role(&their_user).await
    })
    .await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_down_during_rotation_and_revocation_is_503_then_retried() -> anyhow::Result<()> {
    let t = target().await;
    let (_d, s) = deployment().await?;
    create_connection(&s, &t, "orders").await;
    put_role(
        &s,
        "app-static",
        json!({ "connection": "orders", "kind": "static", "username": "app" }),
    )
    .await
    .ok();
    put_role(
        &s,
        "reader",
        json!({ "connection": "orders", "kind": "dynamic",
                "creation_statements": ["CREATE ROLE {{name}} LOGIN PASSWORD {{password}} VALID UNTIL {{expiration}}"],
                "default_ttl": "1h" }),
    )
    .await
    .ok();
    let (v1_pw, _) = static_password(&s, "app-static").await;
    let creds = s.post("/v1/db/creds/reader", json!({})).await;
    let user = creds.body["username"].as_str().unwrap().to_owned();
    let lease = creds.body["lease"]["id"].as_str().unwrap().to_owned();

    t.cluster.stop();
    s.post("/v1/db/rotate-role/app-static", json!({}))
        .await
        .assert_error(503, "database_unavailable");
    s.send(Method::DELETE, &format!("/v1/db/leases/{lease}"))
        .await
        .assert_error(503, "database_unavailable");
    s.post("/v1/db/creds/reader", json!({}))
        .await
        .assert_error(503, "database_unavailable");
    // Nothing half-applied: the password handed out is still the one the database has.
    let (during, version) = static_password(&s, "app-static").await;
    assert_eq!((during.as_str(), version), (v1_pw.as_str(), 1));
    t.cluster.restart();

    // The background duty finishes the rotation and the revocation once the database is back.
    eventually("the pending rotation is applied", 40, || async {
        s.get("/v1/db/roles/app-static").await.body["current_version"] == 2
    })
    .await;
    let (v2_pw, v2) = static_password(&s, "app-static").await;
    assert_eq!(v2, 2);
    assert_eq!(t.login("app", &v2_pw).await, Ok(2));
    assert!(t.login("app", &v1_pw).await.is_err());
    eventually("the lease is revoked", 40, || async {
        !t.has_role(&user).await
    })
    .await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_20_rotations_leaves_a_password_that_logs_in() -> anyhow::Result<()> {
    let t = target().await;
    let (mut d, s) = deployment().await?;
    create_connection(&s, &t, "orders").await;
    put_role(
        &s,
        "app-static",
        json!({ "connection": "orders", "kind": "static", "username": "app" }),
    )
    .await
    .ok();
    // Concurrent rotations and reads (no node-local lock: the role's revision and the
    // database's lock on the password serialise them): the password handed out afterwards logs
    // in.
    let mut tasks = Vec::new();
    for i in 0..12 {
        let (base, token) = (s.base.clone(), s.token.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let r = if i % 3 == 0 {
                client.get(format!("{base}/v1/db/static-creds/app-static"))
            } else {
                client.post(format!("{base}/v1/db/rotate-role/app-static"))
            };
            let r = r.bearer_auth(token).send().await.unwrap();
            (
                i % 3 == 0,
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        let (read, status, body) = t.await?;
        assert!(status == 200 || status == 409, "{status} {body}");
        if !read && status == 200 {
            versions.push(body["version"].as_u64().unwrap());
        }
    }
    // Rotations that overlap finish one pending version together rather than each making
    // their own: each reports a version newer than the first, none newer than the current.
    let (password, current) = static_password(&s, "app-static").await;
    assert!(!versions.is_empty());
    assert!(
        versions.iter().all(|v| (2..=current).contains(v)),
        "{versions:?} vs {current}"
    );
    assert_eq!(t.login("app", &password).await, Ok(2));

    let mut s = s;
    for round in 0..20 {
        let base = s.base.clone();
        let token = s.token.clone();
        let rotation = tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{base}/v1/db/rotate-role/app-static"))
                .bearer_auth(token)
                .send()
                .await
        });
        let mut byte = [0u8; 1];
        getrandom::getrandom(&mut byte)?;
        // 0 to 127 ms: before, during or after the database call.
        tokio::time::sleep(Duration::from_millis(u64::from(byte[0] & 127))).await;
        s.kill();
        let _ = rotation.await;
        s = d.start().await?;
        let (password, version) = static_password(&s, "app-static").await;
        assert_eq!(
            t.login("app", &password).await,
            Ok(2),
            "round {round}: version {version} does not log in"
        );
    }
    Ok(())
}

/// `PGUSER=` and `PGPASSWORD=` from a `db static-creds`/`db creds` run.
fn login_lines(out: &std::process::Output) -> (String, String) {
    let text = String::from_utf8(crate::common::cli::bytes_of(out)).unwrap();
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or_else(|| panic!("no {k} in the output"))
            .to_owned()
    };
    (get("PGUSER="), get("PGPASSWORD="))
}

/// The README's example, through the CLI: an operator sets up a connection and two roles; an
/// application reads its login, survives a rotation by reading it again (no restart), and
/// loses access when its lease ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_follows_rotations_and_loses_access_with_its_lease() -> anyhow::Result<()> {
    use crate::common::cli::{admin_cli, fails_with, json_of};
    let t = target().await;
    let (d, s) = deployment().await?;
    let password_file = d.path().join("admin.pw");
    std::fs::write(&password_file, format!("{ADMIN_PASSWORD}\n"))?;
    let wrong_file = d.path().join("wrong.pw");
    std::fs::write(&wrong_file, "not-it\n")?;
    let pw = password_file.to_str().unwrap();
    let create = |file: &str| {
        admin_cli(
            &s,
            &[
                "db",
                "connections",
                "create",
                "orders",
                "--url",
                &t.url,
                "--admin-user",
                "custodian_admin",
                "--admin-password-file",
                file,
            ],
            b"",
        )
    };
    fails_with(
        &create(wrong_file.to_str().unwrap()),
        "database_login_failed",
    );
    let missing = create("/nonexistent/admin.pw");
    assert!(!missing.status.success());
    let created = json_of(&create(pw));
    assert_eq!(created["admin_user"], "custodian_admin");
    assert!(!created.to_string().contains(ADMIN_PASSWORD));

    json_of(&admin_cli(
        &s,
        &[
            "db",
            "roles",
            "put",
            "app-static",
            "--connection",
            "orders",
            "--kind",
            "static",
            "--username",
            "app",
        ],
        b"",
    ));
    json_of(&admin_cli(
        &s,
        &[
            "db",
            "roles",
            "put",
            "reader",
            "--connection",
            "orders",
            "--kind",
            "dynamic",
            "--creation-statement",
            "CREATE ROLE {{name}} LOGIN PASSWORD {{password}} VALID UNTIL {{expiration}}",
            "--creation-statement",
            "GRANT SELECT ON orders TO {{name}}",
            "--default-ttl",
            "3s",
            "--max-ttl",
            "5s",
        ],
        b"",
    ));

    // The application reads its login and uses it.
    let (user, first) = login_lines(&admin_cli(&s, &["db", "static-creds", "app-static"], b""));
    assert_eq!(user, "app");
    assert_eq!(t.login(&user, &first).await, Ok(2));
    // A rotation: the old login is refused; reading again (no restart) gets one that works.
    let rotated = json_of(&admin_cli(&s, &["db", "rotate", "app-static"], b""));
    assert_eq!(rotated["version"], 2);
    assert!(t.login(&user, &first).await.is_err());
    let (_, second) = login_lines(&admin_cli(&s, &["db", "static-creds", "app-static"], b""));
    assert_eq!(t.login(&user, &second).await, Ok(2));

    // Dynamic credentials work until the lease ends, then the login is refused.
    let out = admin_cli(&s, &["db", "creds", "reader"], b"");
    let lease: Value = serde_json::from_slice(&out.stderr)?;
    let (dyn_user, dyn_pw) = login_lines(&out);
    assert_eq!(t.login(&dyn_user, &dyn_pw).await, Ok(2));
    fails_with(
        &admin_cli(
            &s,
            &[
                "db",
                "leases",
                "renew",
                lease["id"].as_str().unwrap(),
                "--increment",
                "1h",
            ],
            b"",
        ),
        "lease_max_ttl_exceeded",
    );
    eventually("the lease ends", 20, || async {
        t.login(&dyn_user, &dyn_pw).await.is_err()
    })
    .await;
    eventually("the user is dropped", 20, || async {
        !t.has_role(&dyn_user).await
    })
    .await;
    Ok(())
}
