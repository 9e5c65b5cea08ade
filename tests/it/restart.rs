//! Restarts: after a crash (SIGKILL) the server starts cleanly, keeps its bootstrap token
//! (without printing it again), and every blob made before still decrypts.

use serde_json::json;

use crate::common::{b64, unb64, Deployment};

#[tokio::test]
async fn blobs_survive_a_crash_and_restart() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    let key = s.create_key("persist").await;
    let context = json!({"tenant": "acme"});
    let dk = s
        .post("/v1/keys/persist/datakey", json!({ "context": context }))
        .await;
    let (dk_ct, dk_pt) = (dk.ok()["ciphertext"].clone(), dk.body["plaintext"].clone());
    let enc = s
        .post(
            "/v1/keys/persist/encrypt",
            json!({ "plaintext": b64(b"survives restarts") }),
        )
        .await;
    let enc_ct = enc.ok()["ciphertext"].clone();
    let first_token = s.token.clone();
    let (stdout, _) = s.output();
    assert_eq!(
        stdout.matches(&first_token).count(),
        1,
        "the token is shown exactly once"
    );
    s.kill();

    let s = d.start().await?;
    let (stdout, _) = s.output();
    assert!(
        !stdout.contains("bootstrap admin token"),
        "bootstrap token printed again: {stdout}"
    );
    assert_eq!(s.token, first_token);
    let out = s
        .post(
            "/v1/decrypt",
            json!({ "ciphertext": dk_ct, "context": context }),
        )
        .await;
    assert_eq!(out.ok()["plaintext"], dk_pt);
    let out = s.post("/v1/decrypt", json!({ "ciphertext": enc_ct })).await;
    assert_eq!(
        unb64(out.ok()["plaintext"].as_str().unwrap()),
        b"survives restarts"
    );
    let shown = s.get("/v1/keys/persist").await;
    assert_eq!(shown.ok()["id"], key["id"]);
    // A third start, after a clean stop this time, still works.
    s.kill();
    let s = d.start().await?;
    s.post(
        "/v1/decrypt",
        json!({ "ciphertext": dk_ct, "context": context }),
    )
    .await
    .ok();
    Ok(())
}
