//! The auditor's page (`/ui/`, issue 18) in a real browser: Debian's headless Chromium driven
//! through chromedriver by selenium (tests/clients/ui_browser.py, in the tools environment that
//! `scripts/lib.sh`'s `ensure_python_tools` makes; its python in `CUSTODIAN_TEST_TOOLS_PYTHON`)
//! against a real server. It refuses a wrong token, signs in with an auditor's, shows the keys
//! from a custody report whose signature it checked, filters the audit log, and verifies the
//! export with WebCrypto: "intact" first, then, after a record under a checkpoint is changed in
//! the database, the failure naming that record. Screenshots of each page are written under the
//! deployment's temporary directory (copied to `CUSTODIAN_UI_SCREENSHOTS` when that is set, which
//! is how `docs/ui/` is refreshed).

use std::path::Path;
use std::process::Command;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{b64, Deployment, Server};
use crate::policy::{call, principal};

/// The tools environment's python.
pub(crate) fn tools_python() -> String {
    std::env::var("CUSTODIAN_TEST_TOOLS_PYTHON").unwrap_or_else(|_| {
        panic!(
            "CUSTODIAN_TEST_TOOLS_PYTHON is not set: run the tests through scripts/test, which \
             makes the virtual environment with the pinned tools (scripts/lib.sh \
             ensure_python_tools)"
        )
    })
}

/// Runs the browser script in `phase` as `token`; returns what the page showed.
fn browse(s: &Server, token: &str, shots: &Path, phase: &str) -> Value {
    let script = format!("{}/tests/clients/ui_browser.py", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(tools_python())
        .arg(script)
        .env("BASE", &s.base)
        .env("TOKEN", token)
        .env("SHOTS", shots)
        .env("PHASE", phase)
        // Selenium must not look for a browser or a driver on the network.
        .env("SE_OFFLINE", "true")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser ({phase}) failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

/// The page's files come with the policy and headers the page relies on, and the HTML has no
/// inline script, no inline style, no event-handler attribute and no third-party reference.
#[tokio::test]
async fn the_page_is_served_with_a_strict_policy_and_no_inline_code() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    let http = reqwest::Client::new();
    for (path, media) in [
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/verify.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
    ] {
        let res = http.get(format!("{}{path}", s.base)).send().await?;
        assert_eq!(res.status().as_u16(), 200, "{path}");
        let h = res.headers();
        assert!(h["content-type"].to_str()?.starts_with(media), "{path}");
        assert_eq!(
            h["content-security-policy"].to_str()?,
            custodian::api::ui::CONTENT_SECURITY_POLICY
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "no-referrer");
        let body = res.text().await?;
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{path} refers elsewhere"
        );
        assert!(
            !body.contains("localStorage.")
                && !body.contains("sessionStorage.")
                && !body.contains("document.cookie ="),
            "{path} stores something"
        );
        if path == "/ui/" {
            for tag in body.split("<script").skip(1) {
                let open = tag.split('>').next().unwrap_or_default();
                assert!(
                    open.contains("src="),
                    "inline script in the page: <script{open}>"
                );
            }
            assert!(!body.contains("style="), "inline style in the page");
            assert!(!body.contains("<style"), "a style element in the page");
            let lower = body.to_lowercase();
            for handler in [" onclick=", " onload=", " onsubmit=", " onerror="] {
                assert!(
                    !lower.contains(handler),
                    "event handler attribute {handler}"
                );
            }
        }
    }
    let policy = custodian::api::ui::CONTENT_SECURITY_POLICY;
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(policy.contains(directive), "{directive}");
    }
    assert!(!policy.contains("unsafe"), "{policy}");
    // Its twin: a file that is not part of the page is not served from /ui/.
    let res = http
        .get(format!("{}/ui/secrets.json", s.base))
        .send()
        .await?;
    assert_eq!(res.status().as_u16(), 404);
    // The page's files are not audited (they carry no data): no record names them.
    let events = s.get("/v1/audit/events?limit=1000").await;
    assert!(
        events.ok()["records"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| !r["route"].as_str().unwrap_or_default().starts_with("/ui/")),
        "{}",
        events.body
    );
    Ok(())
}

#[tokio::test]
async fn an_auditor_sees_keys_and_log_and_watches_the_proof_in_the_browser() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    // No timed checkpoint between the browser's export and the test's: both end on the same one.
    d.append_config(
        "[audit]\ncheckpoint_interval = \"1h\"\nexport_checkpoint_interval = \"1h\"\n",
    )?;
    let s = d.start().await?;
    s.create_key("ui-direct").await;
    let cached = s
        .post("/v1/keys", json!({ "name": "ui-cached", "mode": "cached" }))
        .await;
    assert_eq!(cached.status.as_u16(), 201, "{}", cached.body);
    s.post(
        "/v1/keys/ui-direct/encrypt",
        json!({ "plaintext": b64(b"ui"), "context": { "t": "1" } }),
    )
    .await
    .ok();
    let auditor = principal(&s, "ui-auditor", &["auditor"], json!({})).await;
    // A denied request for the log filter to find: auditors never get key material.
    call(
        &s,
        &auditor,
        Method::POST,
        "/v1/keys/ui-direct/datakey",
        Some(json!({})),
    )
    .await
    .assert_error(403, "forbidden");

    let shots = d.path().join("screenshots");
    std::fs::create_dir_all(&shots)?;
    let tour = browse(&s, &auditor, &shots, "tour");

    // A wrong token is refused and nothing past the sign-in is shown.
    let wrong = tour["wrong_token"].as_str().unwrap();
    assert!(wrong.contains("401 invalid_token"), "{wrong}");
    assert_eq!(tour["nav_hidden_after_wrong_token"], true);
    assert_eq!(tour["token_field_after_sign_in"], "");
    // The keys, from a custody report whose signature the browser checked.
    let report = tour["report_verdict"].as_str().unwrap();
    assert!(report.starts_with("Report signature valid"), "{report}");
    assert!(
        report.contains("2 keys, 2 versions, 0 anomalies"),
        "{report}"
    );
    let rows: Vec<Vec<String>> = serde_json::from_value(tour["key_rows"].clone())?;
    let row = |name: &str| {
        rows.iter()
            .find(|r| r[0] == name)
            .unwrap_or_else(|| panic!("{name} not shown: {rows:?}"))
            .clone()
    };
    let direct = row("ui-direct");
    assert_eq!(&direct[2..5], ["enabled", "pkcs11", "direct"]);
    assert!(direct[9].contains("CKA_SENSITIVE=true"), "{direct:?}");
    assert!(direct[9].contains("CKA_EXTRACTABLE=false"), "{direct:?}");
    assert_eq!(direct[13], "none");
    assert_eq!(row("ui-cached")[4], "cached");
    // The log, filtered by outcome: the denied request, and only denied ones.
    let denied: Vec<Vec<String>> = serde_json::from_value(tour["denied_rows"].clone())?;
    assert!(!denied.is_empty());
    assert!(denied.iter().all(|r| r[6] == "denied"), "{denied:?}");
    assert!(
        denied
            .iter()
            .any(|r| r[2] == "ui-auditor" && r[3] == "datakey:generate-plaintext"),
        "{denied:?}"
    );
    // Verification in the browser: intact through the checkpoint the export ended on, with the
    // key fingerprint shown for out-of-band comparison.
    let pem = String::from_utf8(s.get_bytes("/v1/audit/public-key").await.1)?;
    let fingerprint = custodian::audit::signature::PublicKey::from_pem(&pem)?.fingerprint();
    assert_eq!(tour["fingerprint"], fingerprint.as_str());
    let (_, export) = s.get_bytes("/v1/audit/export").await;
    let last_checkpoint = String::from_utf8(export)?
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["type"] == "checkpoint")
        .filter_map(|l| l["sequence"].as_u64())
        .max()
        .unwrap();
    assert_eq!(
        tour["verdict"],
        format!("Intact through sequence {last_checkpoint}").as_str(),
        "{tour}"
    );
    // The token stayed in memory: nothing in storage or cookies; no policy violation reported.
    assert_eq!(tour["storage"], json!([0, 0, ""]));
    let console = tour["console"].to_string();
    assert!(!console.contains("Content Security Policy"), "{console}");
    assert!(!console.contains("Refused to"), "{console}");
    assert_eq!(tour["login_shown_after_sign_out"], true);

    // A record under that checkpoint changed in the database: the browser names it.
    let n = d.db()?.execute(
        "UPDATE audit_records SET principal = 'someone-else' WHERE sequence = 3",
        &[],
    )?;
    assert_eq!(n, 1);
    let broken = browse(&s, &auditor, &shots, "verify");
    assert_eq!(
        broken["verdict"],
        "NOT intact: first bad record is sequence 3: its hash does not match its contents",
        "{broken}"
    );

    for shot in [
        "01-login.png",
        "02-keys.png",
        "03-audit-log.png",
        "04-verify-intact.png",
        "05-verify-broken.png",
    ] {
        let bytes = std::fs::read(shots.join(shot))?;
        assert!(
            bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
            "{shot}"
        );
        if let Some(dir) = std::env::var_os("CUSTODIAN_UI_SCREENSHOTS") {
            std::fs::copy(shots.join(shot), Path::new(&dir).join(shot))?;
        }
    }
    Ok(())
}
