//! The API contract, checked (issue 18): schemathesis (pinned in `scripts/lib.sh` PY_TOOLS; its
//! python in `CUSTODIAN_TEST_TOOLS_PYTHON`) generates requests for every operation of
//! `docs/openapi.json` as served by a running server, valid and invalid, and checks every
//! answer: no 5xx, each status documented for its operation, each body matching its documented
//! schema and media type, documented headers present. The run is bounded (examples per
//! operation and a time budget) and seeded, so it is repeatable.

use std::process::Command;

use reqwest::Method;
use serde_json::json;

use crate::common::swtpm::Swtpm;
use crate::common::{b64, Deployment};
use crate::policy::{principal, put_policy};
use crate::ui::tools_python;

#[tokio::test]
async fn every_operation_answers_as_documented_under_schemathesis() -> anyhow::Result<()> {
    // A TPM too, so that every documented key placement (`"backend": "tpm"`) is served.
    let tpm = Swtpm::start()?;
    let mut d = Deployment::new()?;
    d.append_config(&format!("[tpm]\ntcti = \"{}\"\n", tpm.tcti()))?;
    // The throttles of failed and unauthenticated requests are tested on their own
    // (tests/it/throttle.rs); here they would turn most of the generated requests without a
    // valid token into 429s and hide what the routes answer.
    for (name, value) in [
        ("CUSTODIAN__SERVER__AUTH_FAILURES_PER_MINUTE", "1000000"),
        (
            "CUSTODIAN__SERVER__ANONYMOUS_REQUESTS_PER_MINUTE",
            "1000000",
        ),
    ] {
        d.env.push((name.into(), value.into()));
    }
    let s = d.start().await?;
    // Resources for the documented examples and the generated names to find.
    s.create_key("billing-eu").await;
    s.post(
        "/v1/keys/billing-eu/encrypt",
        json!({ "plaintext": b64(b"contract"), "context": { "tenant": "acme" } }),
    )
    .await
    .ok();
    s.send_json(
        Method::PUT,
        "/v1/secrets/team/app/db-password",
        json!({ "value_text": "s3cr3t", "key": "billing-eu" }),
    )
    .await
    .ok();
    // The run deletes what the documented examples name (the bootstrap principal among them,
    // which revokes its token): it runs as a principal of its own that no example names.
    put_policy(
        &s,
        "contract-everything",
        json!({ "statements": [{ "effect": "allow", "actions": ["*"], "resources": ["*"] }] }),
    )
    .await
    .ok();
    let runner = principal(
        &s,
        "contract-runner-7f3a",
        &["contract-everything"],
        json!({}),
    )
    .await;
    let reports = d.path().join("schemathesis");
    let st = std::path::Path::new(&tools_python()).with_file_name("st");
    let out = Command::new(st)
        .arg("--config-file")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/schemathesis.toml"
        ))
        .args([
            "run",
            &format!("{}/v1/openapi.json", s.base),
            "--url",
            &s.base,
        ])
        // Every check but `positive_data_acceptance`: it wants a 2xx for any schema-valid
        // request, which a KMS cannot give (names that exist nowhere answer 404, JSON Schema
        // counts 1.0 as an integer where serde does not; decision 0043).
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        .args(["--seed", "18", "--workers", "1"])
        .args(["--max-examples", "25", "--max-time", "100"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--report", "junit", "--report-dir"])
        .arg(&reports)
        .env("CUSTODIAN_TOKEN", &runner)
        .env("NO_COLOR", "1")
        // schemathesis keeps a cache of crashes in `.schemathesis/` under its working
        // directory and replays them: the deployment's directory, not the checkout.
        .current_dir(d.path())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// What schemathesis found, fixed, each with its twin: a body that is a JSON array or carries
/// `null` in a field not documented as nullable is refused (a documented nullable field still
/// takes it), and a secrets sub-resource answers a method it does not take with 405 and an
/// `Allow` naming what it takes, before looking at the body.
#[tokio::test]
async fn findings_of_the_contract_run_stay_fixed() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    s.create_key("c-key").await;
    s.post("/v1/principals", json!({ "name": "c-app", "policies": [] }))
        .await
        .ok();
    s.post("/v1/tokens", json!({ "principal": "c-app", "ttl": null }))
        .await
        .assert_error(400, "invalid_field");
    s.post("/v1/tokens", json!({ "principal": "c-app" }))
        .await
        .ok();
    s.send_json(Method::PATCH, "/v1/principals/c-app", json!([null, null]))
        .await
        .assert_error(400, "invalid_request");
    s.send_json(
        Method::PATCH,
        "/v1/principals/c-app",
        json!({ "policies": null }),
    )
    .await
    .assert_error(400, "invalid_field");
    s.send_json(
        Method::PATCH,
        "/v1/keys/c-key",
        json!({ "min_decryption_version": null }),
    )
    .await
    .assert_error(400, "invalid_field");
    // Documented as nullable: `null` turns scheduled rotation off.
    let r = s
        .send_json(
            Method::PATCH,
            "/v1/keys/c-key",
            json!({ "rotation_period": null }),
        )
        .await;
    assert!(r.ok()["rotation_period"].is_null(), "{}", r.body);

    let http = reqwest::Client::new();
    for (method, path, allow) in [
        (Method::PUT, "/v1/secrets/c/one/rotate", "POST"),
        (Method::GET, "/v1/secrets/c/one/destroy", "POST"),
        (Method::POST, "/v1/secrets/c/one", "GET, HEAD, PUT, DELETE"),
        (
            Method::DELETE,
            "/v1/secrets/c/one/metadata",
            "GET, HEAD, PUT",
        ),
        // Methods no secrets route takes: the router's 405, with the same per-resource Allow.
        (
            Method::OPTIONS,
            "/v1/secrets/c/one",
            "GET, HEAD, PUT, DELETE",
        ),
        (Method::PATCH, "/v1/secrets/c/one/undelete", "POST"),
        (
            Method::OPTIONS,
            "/v1/secrets/c/one/metadata",
            "GET, HEAD, PUT",
        ),
    ] {
        // No body and no content type: the method is refused before the body is looked at.
        let res = http
            .request(method.clone(), format!("{}{path}", s.base))
            .bearer_auth(&s.token)
            .send()
            .await?;
        assert_eq!(res.status().as_u16(), 405, "{method} {path}");
        assert_eq!(res.headers()["allow"], allow, "{method} {path}");
        let body: serde_json::Value = res.json().await?;
        assert_eq!(body["error"]["code"], "method_not_allowed");
    }
    Ok(())
}
