//! Principals, policies, tokens and `login` through the real binary only: the billing / auditor
//! / on-call scenario of docs/policy.md, with every allow next to the deny it implies and
//! `policies explain` agreeing with enforcement; `login` storing a 0600 file that later commands
//! use; revoked, expired and deleted principals' tokens refused.
//!
//! Every command runs with `HOME` pointing at a directory of the test, so no login file of the
//! machine running the tests is ever read or written.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::common::cli::{fails_with, finish, json_of};
use crate::common::server::BIN;
use crate::common::{unb64, Deployment, Server};

/// The CLI against `s` as `token` (no token at all with `None`), `HOME` set to `home`, nothing
/// else inherited that could name a token.
fn command(s: &Server, home: &Path, token: Option<&str>) -> Command {
    let mut c = Command::new(BIN);
    c.env("CUSTODIAN_ADDR", &s.base)
        .env("HOME", home)
        .env_remove("CUSTODIAN_TOKEN")
        .env_remove("CUSTODIAN_TOKEN_FILE")
        .env_remove("XDG_CONFIG_HOME");
    if let Some(t) = token {
        c.env("CUSTODIAN_TOKEN", t);
    }
    c
}

/// Runs the CLI as `token`.
fn cli(s: &Server, home: &Path, token: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut c = command(s, home, Some(token));
    c.args(args);
    finish(c, stdin)
}

/// Asserts success with nothing on stdout.
#[track_caller]
fn quiet(out: &Output) {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "stdout: {:?}", out.stdout);
}

/// `tokens create`: the token alone on stdout, its metadata as JSON on stderr.
#[track_caller]
fn mint(s: &Server, home: &Path, admin: &str, args: &[&str]) -> (String, Value) {
    let out = cli(
        s,
        home,
        admin,
        &[&["tokens", "create"][..], args].concat(),
        b"",
    );
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "stdout: {stdout}");
    let token = stdout.trim().to_owned();
    assert!(token.starts_with("cst_"), "{token}");
    let info: Value = serde_json::from_slice(&out.stderr).expect("metadata JSON on stderr");
    assert!(info.get("token").is_none(), "metadata repeats the token");
    assert!(!String::from_utf8_lossy(&out.stderr).contains(&token));
    (token, info)
}

/// A home directory for the CLI, inside the deployment directory.
fn home_in(d: &Deployment) -> PathBuf {
    let home = d.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    home
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap()
}

/// The on-call policy: incident response on keys from the loopback network, inside
/// `[not_before, not_after)`, and never anything that yields plaintext.
fn on_call_policy(not_before: OffsetDateTime, not_after: OffsetDateTime) -> String {
    format!(
        r#"{{
  "statements": [
    {{
      "sid": "incident-response",
      "effect": "allow",
      "actions": ["key:read", "key:rotate", "key:disable"],
      "resources": ["key/*"],
      "conditions": {{
        "source_cidr": ["127.0.0.0/8", "::1/128"],
        "time_window": {{ "not_before": "{}", "not_after": "{}" }}
      }}
    }},
    {{
      "sid": "never-plaintext",
      "effect": "deny",
      "actions": ["datakey:*", "encrypt", "decrypt", "reencrypt", "secret:read"],
      "resources": ["*"]
    }}
  ]
}}"#,
        rfc3339(not_before),
        rfc3339(not_after)
    )
}

const BILLING_POLICY: &str = r#"{
  "statements": [
    {
      "sid": "tenant-data-keys",
      "effect": "allow",
      "actions": ["datakey:generate", "datakey:generate-plaintext", "decrypt"],
      "resources": ["key/billing-*"],
      "conditions": { "context_equals": { "tenant": "${principal.tenant}" } }
    }
  ]
}"#;

/// `policies explain` as the admin; returns the answer.
fn explain(s: &Server, home: &Path, admin: &str, args: &[&str]) -> Value {
    json_of(&cli(
        s,
        home,
        admin,
        &[&["policies", "explain"][..], args].concat(),
        b"",
    ))
}

#[tokio::test]
async fn billing_auditor_and_on_call_are_held_to_their_policies() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    let home = home_in(&d);
    let admin = s.token.clone();
    let run = |token: &str, args: &[&str], stdin: &[u8]| cli(&s, &home, token, args, stdin);

    json_of(&run(&admin, &["keys", "create", "billing-eu"], b""));
    json_of(&run(&admin, &["keys", "create", "payroll"], b""));

    // Policies from files written now, and one from stdin.
    let billing_file = d.path().join("billing.json");
    std::fs::write(&billing_file, BILLING_POLICY)?;
    let put = json_of(&run(
        &admin,
        &[
            "policies",
            "put",
            "billing",
            "--file",
            billing_file.to_str().unwrap(),
        ],
        b"",
    ));
    assert_eq!(put["name"], "billing");
    assert_eq!(put["version"], 1);
    assert_eq!(put["document"]["statements"][0]["sid"], "tenant-data-keys");
    let now = OffsetDateTime::now_utc();
    let on_call = on_call_policy(
        now - time::Duration::hours(1),
        now + time::Duration::hours(8),
    );
    let put = json_of(&run(
        &admin,
        &["policies", "put", "on-call"],
        on_call.as_bytes(),
    ));
    assert_eq!(put["version"], 1);
    // A document with an unknown action is refused, naming where.
    let broken = d.path().join("broken.json");
    std::fs::write(
        &broken,
        BILLING_POLICY.replace(r#""decrypt""#, r#""key:fly""#),
    )?;
    let err = fails_with(
        &run(
            &admin,
            &[
                "policies",
                "put",
                "broken",
                "--file",
                broken.to_str().unwrap(),
            ],
            b"",
        ),
        "invalid_policy",
    );
    assert!(err.contains("statements[0].actions[2]"), "{err}");
    assert!(err.contains("key:fly"), "{err}");
    fails_with(
        &run(&admin, &["policies", "show", "broken"], b""),
        "policy_not_found",
    );

    // Principals: the billing service with its tenant, an auditor, an on-call engineer.
    let billing = json_of(&run(
        &admin,
        &[
            "principals",
            "create",
            "billing-app",
            "--attr",
            "tenant=acme",
            "--policy",
            "billing",
        ],
        b"",
    ));
    assert_eq!(billing["attributes"]["tenant"], "acme");
    assert_eq!(billing["policies"], serde_json::json!(["billing"]));
    json_of(&run(
        &admin,
        &["principals", "create", "auditor-1", "--policy", "auditor"],
        b"",
    ));
    json_of(&run(
        &admin,
        &[
            "principals",
            "create",
            "oncall-1",
            "--attr",
            "team=sre",
            "--policy",
            "on-call",
        ],
        b"",
    ));
    let (billing_token, info) = mint(
        &s,
        &home,
        &admin,
        &[
            "--principal",
            "billing-app",
            "--ttl",
            "30d",
            "--description",
            "billing service",
        ],
    );
    assert_eq!(info["principal"], "billing-app");
    assert_eq!(info["description"], "billing service");
    assert!(info["expires_at"].is_string(), "{info}");
    assert!(billing_token.contains(info["id"].as_str().unwrap()));
    let (auditor_token, _) = mint(&s, &home, &admin, &["--principal", "auditor-1"]);
    let (oncall_token, _) = mint(&s, &home, &admin, &["--principal", "oncall-1"]);

    // Billing: data keys for its own tenant on billing keys only.
    let dk = json_of(&run(
        &billing_token,
        &["datakey", "billing-eu", "--context", "tenant=acme"],
        b"",
    ));
    let blob = unb64(dk["ciphertext"].as_str().unwrap());
    let plain = run(
        &billing_token,
        &["decrypt", "--context", "tenant=acme"],
        &blob,
    );
    assert!(plain.status.success());
    assert_eq!(plain.stdout, unb64(dk["plaintext"].as_str().unwrap()));
    for args in [
        &["datakey", "billing-eu", "--context", "tenant=evil"][..],
        &["datakey", "billing-eu"],
        &["datakey", "payroll", "--context", "tenant=acme"],
    ] {
        fails_with(&run(&billing_token, args, b""), "forbidden");
    }
    // Lists show only what the principal may read: billing may read no key, principal or policy.
    for (args, field) in [
        (&["keys", "list"][..], "keys"),
        (&["principals", "list"], "principals"),
        (&["policies", "list"], "policies"),
    ] {
        let listed = json_of(&run(&billing_token, args, b""));
        assert_eq!(listed[field], serde_json::json!([]), "{args:?}: {listed}");
    }
    fails_with(
        &run(
            &billing_token,
            &["decrypt", "--context", "tenant=evil"],
            &blob,
        ),
        "forbidden",
    );

    // Auditor: sees the inventory, never a data key or a plaintext.
    let listed = json_of(&run(&auditor_token, &["keys", "list"], b""));
    let names: Vec<&str> = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["billing-eu", "payroll"]);
    json_of(&run(&auditor_token, &["keys", "show", "payroll"], b""));
    json_of(&run(&auditor_token, &["policies", "show", "billing"], b""));
    for args in [
        &["datakey", "billing-eu", "--context", "tenant=acme"][..],
        &[
            "datakey",
            "billing-eu",
            "--no-plaintext",
            "--context",
            "tenant=acme",
        ],
        &["keys", "rotate", "billing-eu"],
    ] {
        fails_with(&run(&auditor_token, args, b""), "forbidden");
    }
    fails_with(
        &run(
            &auditor_token,
            &["decrypt", "--context", "tenant=acme"],
            &blob,
        ),
        "forbidden",
    );

    // On-call: rotates and disables keys from here, inside its window; no plaintext.
    let rotated = json_of(&run(&oncall_token, &["keys", "rotate", "billing-eu"], b""));
    assert_eq!(rotated["primary_version"], 2);
    assert_eq!(
        json_of(&run(&oncall_token, &["keys", "disable", "payroll"], b""))["state"],
        "disabled"
    );
    assert_eq!(
        json_of(&run(&oncall_token, &["keys", "enable", "payroll"], b""))["state"],
        "enabled"
    );
    for args in [
        &["datakey", "billing-eu", "--context", "tenant=acme"][..],
        &["keys", "create", "oncall-key"],
        &["keys", "schedule-deletion", "payroll"],
    ] {
        fails_with(&run(&oncall_token, args, b""), "forbidden");
    }

    // Explain agrees with every decision above, and names the statement that made it.
    let e = explain(
        &s,
        &home,
        &admin,
        &[
            "--principal",
            "billing-app",
            "--action",
            "datakey:generate-plaintext",
            "--resource",
            "key/billing-eu",
            "--context",
            "tenant=acme",
        ],
    );
    assert_eq!(e["effect"], "allow");
    assert_eq!(
        e["decided_by"],
        serde_json::json!({"policy": "billing", "statement": 0, "sid": "tenant-data-keys"})
    );
    assert_eq!(e["action"], "datakey:generate-plaintext");
    assert_eq!(e["resource"], "key/billing-eu");
    for args in [
        &["--resource", "key/billing-eu", "--context", "tenant=evil"][..],
        &["--resource", "key/billing-eu"],
        &["--resource", "key/payroll", "--context", "tenant=acme"],
    ] {
        let e = explain(
            &s,
            &home,
            &admin,
            &[
                &[
                    "--principal",
                    "billing-app",
                    "--action",
                    "datakey:generate-plaintext",
                ][..],
                args,
            ]
            .concat(),
        );
        assert_eq!(e["effect"], "deny", "{args:?}");
        assert!(e.get("decided_by").is_none(), "default deny: {e}");
    }
    let e = explain(
        &s,
        &home,
        &admin,
        &[
            "--principal",
            "auditor-1",
            "--action",
            "datakey:generate",
            "--resource",
            "key/billing-eu",
            "--context",
            "tenant=acme",
        ],
    );
    assert_eq!(e["effect"], "deny");
    assert_eq!(
        e["decided_by"],
        serde_json::json!({"policy": "auditor", "statement": 1, "sid": "never-plaintext"})
    );
    let e = explain(
        &s,
        &home,
        &admin,
        &[
            "--principal",
            "auditor-1",
            "--action",
            "key:read",
            "--resource",
            "key/payroll",
        ],
    );
    assert_eq!(e["effect"], "allow");
    assert_eq!(e["decided_by"]["policy"], "auditor");
    let rotate = |source: Option<&str>| {
        let mut args = vec![
            "--principal",
            "oncall-1",
            "--action",
            "key:rotate",
            "--resource",
            "key/billing-eu",
        ];
        if let Some(ip) = source {
            args.extend(["--source", ip]);
        }
        explain(&s, &home, &admin, &args)
    };
    assert_eq!(rotate(Some("127.0.0.1"))["effect"], "allow");
    assert_eq!(
        rotate(Some("127.0.0.1"))["decided_by"]["sid"],
        "incident-response"
    );
    assert_eq!(rotate(Some("192.0.2.7"))["effect"], "deny");
    // No source on the question: the condition refers to something absent, so it is false.
    assert_eq!(rotate(None)["effect"], "deny");
    // The auditor may explain too (policy:read); the billing service may not.
    json_of(&cli(
        &s,
        &home,
        &auditor_token,
        &[
            "policies",
            "explain",
            "--principal",
            "oncall-1",
            "--action",
            "key:rotate",
            "--resource",
            "key/payroll",
        ],
        b"",
    ));
    fails_with(
        &run(
            &billing_token,
            &[
                "policies",
                "explain",
                "--principal",
                "billing-app",
                "--action",
                "decrypt",
                "--resource",
                "key/payroll",
            ],
            b"",
        ),
        "forbidden",
    );
    fails_with(
        &run(
            &admin,
            &[
                "policies",
                "explain",
                "--principal",
                "billing-app",
                "--action",
                "key:fly",
                "--resource",
                "key/payroll",
            ],
            b"",
        ),
        "unknown_action",
    );

    // The incident is over: a new version of on-call whose window has closed applies at once.
    let closed = on_call_policy(
        now - time::Duration::hours(9),
        now - time::Duration::hours(1),
    );
    let put = json_of(&run(
        &admin,
        &["policies", "put", "on-call"],
        closed.as_bytes(),
    ));
    assert_eq!(put["version"], 2);
    fails_with(
        &run(&oncall_token, &["keys", "rotate", "billing-eu"], b""),
        "forbidden",
    );
    assert_eq!(rotate(Some("127.0.0.1"))["effect"], "deny");
    Ok(())
}

#[tokio::test]
async fn login_stores_the_token_0600_and_commands_fall_back_to_it() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    let home = home_in(&d);
    let admin = s.token.clone();
    let run = |token: &str, args: &[&str], stdin: &[u8]| cli(&s, &home, token, args, stdin);
    // No token anywhere yet.
    let login_file = home.join(".config/custodian/token");
    let bare = |args: &[&str]| {
        let mut c = command(&s, &home, None);
        c.args(args);
        finish(c, b"")
    };
    let none = fails_with(&bare(&["keys", "list"]), "no token");
    assert!(none.contains("custodian login"), "{none}");

    json_of(&run(&admin, &["keys", "create", "billing-eu"], b""));
    let policy = d.path().join("billing.json");
    std::fs::write(&policy, BILLING_POLICY)?;
    json_of(&run(
        &admin,
        &[
            "policies",
            "put",
            "billing",
            "--file",
            policy.to_str().unwrap(),
        ],
        b"",
    ));
    json_of(&run(
        &admin,
        &[
            "principals",
            "create",
            "billing-app",
            "--attr",
            "tenant=acme",
            "--policy",
            "billing",
        ],
        b"",
    ));
    let (billing_token, _) = mint(&s, &home, &admin, &["--principal", "billing-app"]);

    // Login reads stdin only; a token argument is refused by the parser.
    let mut c = command(&s, &home, None);
    c.args(["login", billing_token.as_str()]);
    let out = finish(c, b"");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unexpected argument"));
    assert!(!login_file.exists());

    // The billing principal may read no key: the list it gets is empty, and login stores the
    // token (what login checks is authentication, not which keys a principal may read).
    let mut c = command(&s, &home, None);
    c.arg("login");
    let out = finish(c, format!("{billing_token}\n").as_bytes());
    quiet(&out);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains(login_file.to_str().unwrap()), "{said}");
    assert!(said.contains("token accepted"), "{said}");
    assert!(
        !said.contains(&billing_token),
        "login echoed the token: {said}"
    );
    assert_eq!(std::fs::read_to_string(&login_file)?.trim(), billing_token);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&login_file), 0o600);
    assert_eq!(mode(login_file.parent().unwrap()), 0o700);
    assert_eq!(mode(&home.join(".config")), 0o700);
    let entries: Vec<_> = std::fs::read_dir(login_file.parent().unwrap())?
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["token"], "a temporary file was left behind");

    // Later commands use the stored token when neither CUSTODIAN_TOKEN nor a token file is given.
    let dk = json_of(&bare(&[
        "datakey",
        "billing-eu",
        "--context",
        "tenant=acme",
    ]));
    assert!(dk["ciphertext"].is_string());
    fails_with(
        &bare(&["datakey", "billing-eu", "--context", "tenant=evil"]),
        "forbidden",
    );
    // Which token a command used shows in what it may list: billing reads no key, the admin
    // every key.
    let keys_listed = |out: &std::process::Output| json_of(out)["keys"].as_array().unwrap().len();
    assert_eq!(keys_listed(&bare(&["keys", "list"])), 0);
    // Precedence: CUSTODIAN_TOKEN, then --token-file / CUSTODIAN_TOKEN_FILE, then the login file.
    assert!(keys_listed(&run(&admin, &["keys", "list"], b"")) > 0);
    let admin_file = d.path().join("admin.token");
    std::fs::write(&admin_file, format!("{admin}\n"))?;
    let mut c = command(&s, &home, None);
    c.args(["keys", "list", "--token-file"]).arg(&admin_file);
    assert!(keys_listed(&finish(c, b"")) > 0);
    let mut c = command(&s, &home, None);
    c.args(["keys", "list"])
        .env("CUSTODIAN_TOKEN_FILE", &admin_file);
    assert!(keys_listed(&finish(c, b"")) > 0);
    let mut c = command(&s, &home, Some(&admin));
    c.args(["keys", "list", "--token-file"]).arg(&login_file);
    assert!(keys_listed(&finish(c, b"")) > 0);

    // Refused logins leave the stored token as it was: not a token, an unknown token.
    let login_with = |stdin: &[u8]| {
        let mut c = command(&s, &home, None);
        c.arg("login");
        finish(c, stdin)
    };
    let err = fails_with(
        &login_with(b"hello world\n"),
        "does not hold a bearer token",
    );
    assert!(!err.contains("hello"), "{err}");
    fails_with(&login_with(b""), "does not hold a bearer token");
    fails_with(
        &login_with(b"cst_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n"),
        "invalid_token",
    );
    assert_eq!(std::fs::read_to_string(&login_file)?.trim(), billing_token);

    // --token-file (or CUSTODIAN_TOKEN_FILE) chooses where login stores; a looser existing file
    // is replaced by a 0600 one.
    let elsewhere = d.path().join("elsewhere/admin-token");
    std::fs::create_dir_all(elsewhere.parent().unwrap())?;
    std::fs::write(&elsewhere, "old")?;
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o644))?;
    let mut c = command(&s, &home, None);
    c.arg("login").env("CUSTODIAN_TOKEN_FILE", &elsewhere);
    let out = finish(c, admin.as_bytes());
    quiet(&out);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("may not list keys"));
    assert_eq!(std::fs::read_to_string(&elsewhere)?.trim(), admin);
    assert_eq!(mode(&elsewhere), 0o600);
    assert_eq!(std::fs::read_to_string(&login_file)?.trim(), billing_token);

    // Without HOME and without a token file there is nowhere to store.
    let mut c = command(&s, &home, None);
    c.arg("login").env_remove("HOME");
    fails_with(&finish(c, admin.as_bytes()), "HOME is not set");

    // A revoked token is refused by login, and the stored one stops working.
    let id = billing_token.split('_').nth(1).unwrap();
    quiet(&run(&admin, &["tokens", "revoke", id], b""));
    fails_with(
        &login_with(format!("{billing_token}\n").as_bytes()),
        "token_revoked",
    );
    fails_with(
        &bare(&["datakey", "billing-eu", "--context", "tenant=acme"]),
        "token_revoked",
    );
    Ok(())
}

#[tokio::test]
async fn principals_policies_and_tokens_are_managed_from_the_cli() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    let home = home_in(&d);
    let admin = s.token.clone();
    let run = |token: &str, args: &[&str], stdin: &[u8]| cli(&s, &home, token, args, stdin);

    // The built-in roles are there, and the bootstrap principal holds admin.
    let policies = json_of(&run(&admin, &["policies", "list"], b""));
    let mut names: Vec<&str> = policies["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "admin",
            "application",
            "auditor",
            "key-operator",
            "monitoring"
        ]
    );
    let auditor = json_of(&run(&admin, &["policies", "show", "auditor"], b""));
    assert_eq!(auditor["version"], 1);
    assert_eq!(
        auditor["document"]["statements"][1]["sid"],
        "never-plaintext"
    );
    let boot = json_of(&run(
        &admin,
        &["principals", "show", "bootstrap-admin"],
        b"",
    ));
    assert_eq!(boot["policies"], serde_json::json!(["admin"]));

    // Principals: create, refuse a duplicate or an unknown policy, replace attributes/policies.
    let created = json_of(&run(
        &admin,
        &[
            "principals",
            "create",
            "app-1",
            "--attr",
            "tenant=acme",
            "--attr",
            "team=payments",
            "--policy",
            "auditor",
        ],
        b"",
    ));
    assert_eq!(
        created["attributes"],
        serde_json::json!({"tenant": "acme", "team": "payments"})
    );
    assert!(created["created_at"].is_string());
    fails_with(
        &run(&admin, &["principals", "create", "app-1"], b""),
        "principal_exists",
    );
    fails_with(
        &run(
            &admin,
            &[
                "principals",
                "create",
                "app-2",
                "--policy",
                "no-such-policy",
            ],
            b"",
        ),
        "policy_not_found",
    );
    fails_with(
        &run(
            &admin,
            &["principals", "create", "app-2", "--attr", "novalue"],
            b"",
        ),
        "--attr expects key=value",
    );
    fails_with(
        &run(&admin, &["principals", "show", "app-2"], b""),
        "principal_not_found",
    );
    let listed = json_of(&run(&admin, &["principals", "list"], b""));
    let mut names: Vec<&str> = listed["principals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["app-1", "bootstrap-admin"]);
    let updated = json_of(&run(
        &admin,
        &["principals", "update", "app-1", "--attr", "tenant=globex"],
        b"",
    ));
    assert_eq!(
        updated["attributes"],
        serde_json::json!({"tenant": "globex"})
    );
    assert_eq!(updated["policies"], serde_json::json!(["auditor"]));
    let updated = json_of(&run(
        &admin,
        &[
            "principals",
            "update",
            "app-1",
            "--clear-attrs",
            "--policy",
            "application",
            "--policy",
            "auditor",
        ],
        b"",
    ));
    assert_eq!(updated["attributes"], serde_json::json!({}));
    assert_eq!(
        updated["policies"],
        serde_json::json!(["application", "auditor"])
    );
    let updated = json_of(&run(
        &admin,
        &["principals", "update", "app-1", "--policy", "auditor"],
        b"",
    ));
    assert_eq!(updated["policies"], serde_json::json!(["auditor"]));
    // The parser insists on a change and keeps the replace/clear pairs apart.
    for args in [
        &["principals", "update", "app-1"][..],
        &[
            "principals",
            "update",
            "app-1",
            "--attr",
            "a=b",
            "--clear-attrs",
        ],
        &[
            "principals",
            "update",
            "app-1",
            "--policy",
            "auditor",
            "--clear-policies",
        ],
    ] {
        let out = run(&admin, args, b"");
        assert!(!out.status.success(), "{args:?}");
        assert!(out.stdout.is_empty());
    }

    // Tokens: an expiring one, one revoked, metadata never shows token text.
    let (short, info) = mint(&s, &home, &admin, &["--principal", "app-1", "--ttl", "1s"]);
    assert!(info["expires_at"].is_string());
    let (t2, info2) = mint(
        &s,
        &home,
        &admin,
        &["--principal", "app-1", "--description", "second"],
    );
    assert!(info2.get("expires_at").is_none(), "{info2}");
    json_of(&run(&t2, &["keys", "list"], b""));
    let listed = run(&admin, &["tokens", "list", "--principal", "app-1"], b"");
    let text = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(!text.contains(&short) && !text.contains(&t2));
    let tokens = json_of(&listed);
    assert_eq!(tokens["tokens"].as_array().unwrap().len(), 2);
    assert!(tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["principal"] == "app-1" && t.get("token").is_none()));
    let all = json_of(&run(&admin, &["tokens", "list"], b""));
    assert_eq!(all["tokens"].as_array().unwrap().len(), 3, "{all}");
    std::thread::sleep(Duration::from_millis(1500));
    fails_with(&run(&short, &["keys", "list"], b""), "token_expired");

    let id2 = info2["id"].as_str().unwrap();
    quiet(&run(&admin, &["tokens", "revoke", id2], b""));
    fails_with(&run(&t2, &["keys", "list"], b""), "token_revoked");
    let tokens = json_of(&run(
        &admin,
        &["tokens", "list", "--principal", "app-1"],
        b"",
    ));
    let revoked = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id2)
        .unwrap();
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    fails_with(
        &run(&admin, &["tokens", "revoke", "0123456789abcdef"], b""),
        "token_not_found",
    );
    fails_with(
        &run(&admin, &["tokens", "revoke", ".."], b""),
        "no token id is named",
    );
    fails_with(
        &run(&admin, &["tokens", "create", "--principal", "nobody"], b""),
        "principal_not_found",
    );
    // Only principal:admin mints tokens or manages principals and policies.
    let (t3, _) = mint(&s, &home, &admin, &["--principal", "app-1"]);
    for args in [
        &["tokens", "create", "--principal", "app-1"][..],
        &["tokens", "list", "--principal", "app-1"],
        &["principals", "create", "sneaky"],
        &["principals", "update", "app-1", "--policy", "admin"],
        &["policies", "delete", "auditor"],
    ] {
        fails_with(&run(&t3, args, b""), "forbidden");
    }
    fails_with(
        &run(&t3, &["policies", "put", "mine"], BILLING_POLICY.as_bytes()),
        "forbidden",
    );
    // Listing every token shows only those of principals it may manage: none.
    let listed = json_of(&run(&t3, &["tokens", "list"], b""));
    assert_eq!(listed["tokens"], serde_json::json!([]), "{listed}");

    // Deleting a principal revokes its tokens.
    json_of(&run(&t3, &["keys", "list"], b""));
    quiet(&run(&admin, &["principals", "delete", "app-1"], b""));
    fails_with(&run(&t3, &["keys", "list"], b""), "token_revoked");
    fails_with(
        &run(&admin, &["principals", "delete", "app-1"], b""),
        "principal_not_found",
    );

    // Policies: every put is a new version; delete; then it is gone.
    let v1 = json_of(&run(
        &admin,
        &["policies", "put", "temp"],
        BILLING_POLICY.as_bytes(),
    ));
    let v2 = json_of(&run(
        &admin,
        &["policies", "put", "temp"],
        BILLING_POLICY.as_bytes(),
    ));
    assert_eq!(
        (v1["version"].as_u64(), v2["version"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(v1["created_at"], v2["created_at"]);
    quiet(&run(&admin, &["policies", "delete", "temp"], b""));
    fails_with(
        &run(&admin, &["policies", "show", "temp"], b""),
        "policy_not_found",
    );
    fails_with(
        &run(&admin, &["policies", "delete", "temp"], b""),
        "policy_not_found",
    );
    fails_with(
        &run(
            &admin,
            &["policies", "put", "explain"],
            BILLING_POLICY.as_bytes(),
        ),
        "invalid_policy_name",
    );
    fails_with(
        &run(
            &admin,
            &["policies", "put", "empty"],
            b"{\"statements\": []}",
        ),
        "invalid_policy",
    );
    let missing = d.path().join("missing.json");
    fails_with(
        &run(
            &admin,
            &["policies", "put", "x", "--file", missing.to_str().unwrap()],
            b"",
        ),
        "cannot open policy file",
    );
    Ok(())
}

#[test]
fn identity_subcommands_explain_themselves_and_take_no_token_argument() {
    for args in [
        &["principals", "--help"][..],
        &["principals", "create", "--help"],
        &["principals", "list", "--help"],
        &["principals", "show", "--help"],
        &["principals", "update", "--help"],
        &["principals", "delete", "--help"],
        &["policies", "--help"],
        &["policies", "put", "--help"],
        &["policies", "list", "--help"],
        &["policies", "show", "--help"],
        &["policies", "delete", "--help"],
        &["policies", "explain", "--help"],
        &["tokens", "--help"],
        &["tokens", "create", "--help"],
        &["tokens", "list", "--help"],
        &["tokens", "revoke", "--help"],
        &["login", "--help"],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
        assert!(text.contains("usage"), "{args:?}: {text}");
        for forbidden in ["--token ", "--pin", "--plaintext", "--password"] {
            assert!(!text.contains(forbidden), "{args:?} offers {forbidden}");
        }
    }
    // `login` takes exactly these options, and no positional argument.
    let out = Command::new(BIN)
        .args(["login", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut options: Vec<&str> = text
        .lines()
        .flat_map(|l| l.split_whitespace())
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.trim_end_matches([',', '.', ')']))
        .collect();
    options.sort_unstable();
    options.dedup();
    assert_eq!(options, ["--addr", "--help", "--token-file"], "{text}");
    assert!(
        text.contains("Usage: custodian login [OPTIONS]\n"),
        "{text}"
    );
}

#[tokio::test]
async fn login_from_a_pipe_neither_prompts_nor_opens_the_terminal() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    let home = home_in(&d);
    let login_file = home.join(".config/custodian/token");
    // `setsid`: no controlling terminal, so opening /dev/tty would fail. Stdin is a pipe: the
    // token is read from it, with no prompt, and the terminal is never looked for.
    let mut c = Command::new("setsid");
    c.arg("--wait").arg(BIN).arg("login");
    c.env("CUSTODIAN_ADDR", &s.base)
        .env("HOME", &home)
        .env_remove("CUSTODIAN_TOKEN")
        .env_remove("CUSTODIAN_TOKEN_FILE")
        .env_remove("XDG_CONFIG_HOME");
    let out = finish(c, format!("{}\n", s.token).as_bytes());
    quiet(&out);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("token accepted"), "{said}");
    assert!(!said.contains("input hidden"), "prompted on a pipe: {said}");
    assert!(!said.contains(&s.token), "login echoed the token: {said}");
    assert_eq!(std::fs::read_to_string(&login_file)?.trim(), s.token);

    // Its twin: a pipe holding no token is refused the same way, without a prompt.
    let mut c = Command::new("setsid");
    c.arg("--wait").arg(BIN).arg("login");
    c.env("CUSTODIAN_ADDR", &s.base).env("HOME", &home);
    let said = fails_with(&finish(c, b""), "does not hold a bearer token");
    assert!(!said.contains("input hidden"), "prompted on a pipe: {said}");
    Ok(())
}

#[tokio::test]
async fn login_at_a_terminal_prompts_and_does_not_echo_the_token() -> anyhow::Result<()> {
    use std::io::{Read as _, Write as _};
    use std::process::Stdio;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    let mut d = Deployment::new()?;
    let s = d.start().await?;
    let home = home_in(&d);
    let login_file = home.join(".config/custodian/token");
    // `script` runs login on a pseudo-terminal that echoes what is typed (`--echo always`), and
    // copies its stdin to the terminal and the terminal's output to its stdout.
    let mut child = Command::new("script")
        .args(["--quiet", "--return", "--echo", "always", "--command"])
        .arg(format!("'{BIN}' login"))
        .arg("/dev/null")
        .env("CUSTODIAN_ADDR", &s.base)
        .env("HOME", &home)
        .env_remove("CUSTODIAN_TOKEN")
        .env_remove("CUSTODIAN_TOKEN_FILE")
        .env_remove("XDG_CONFIG_HOME")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = child.stdout.take().unwrap();
    let reader = {
        let seen = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let text = |seen: &Mutex<Vec<u8>>| String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !text(&seen).contains("input hidden") {
        assert!(Instant::now() < deadline, "no prompt: {}", text(&seen));
        std::thread::sleep(Duration::from_millis(50));
    }
    // The prompt is written just before echo is turned off; typing right after it could race
    // that, and the terminal would then echo what the test typed, not what login did.
    std::thread::sleep(Duration::from_secs(1));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{}\n", s.token).as_bytes())?;
    stdin.flush()?;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("login did not finish: {}", text(&seen));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(stdin);
    reader.join().unwrap();
    let said = text(&seen);
    assert!(child.wait()?.success(), "{said}");
    assert!(said.contains("bearer token (input hidden"), "{said}");
    assert!(said.contains("token accepted"), "{said}");
    assert!(
        !said.contains(&s.token),
        "the terminal echoed the token: {said}"
    );
    assert_eq!(std::fs::read_to_string(&login_file)?.trim(), s.token);
    Ok(())
}
