//! Plaintext never rests: data keys, payloads, tokens and PINs never reach the database file or
//! the server's output (at trace level), and the database file is private.

use std::os::unix::fs::PermissionsExt;

use serde_json::json;

use crate::common::{b64, unb64, Deployment};

/// Every form a secret could leak in.
fn forms(secret: &[u8]) -> Vec<Vec<u8>> {
    vec![
        secret.to_vec(),
        b64(secret).into_bytes(),
        hex::encode(secret).into_bytes(),
        hex::encode_upper(secret).into_bytes(),
    ]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn plaintext_never_reaches_the_database_or_the_logs() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    d.env.push(("RUST_LOG".into(), "trace".into()));
    let s = d.start().await?;
    s.create_key("hygiene").await;
    let mut secrets = Vec::new();
    for _ in 0..3 {
        let dk = s
            .post(
                "/v1/keys/hygiene/datakey",
                json!({ "context": {"app": "hygiene"} }),
            )
            .await;
        secrets.push(unb64(dk.ok()["plaintext"].as_str().unwrap()));
        let out = s
            .post(
                "/v1/decrypt",
                json!({ "ciphertext": dk.body["ciphertext"], "context": {"app": "hygiene"} }),
            )
            .await;
        out.ok();
    }
    let marker = format!("payload-marker-{}", uuid::Uuid::new_v4()).into_bytes();
    let enc = s
        .post(
            "/v1/keys/hygiene/encrypt",
            json!({ "plaintext": b64(&marker) }),
        )
        .await;
    s.post(
        "/v1/decrypt",
        json!({ "ciphertext": enc.ok()["ciphertext"] }),
    )
    .await
    .ok();
    secrets.push(marker);
    let token = s.token.clone();
    let (stdout, stderr) = s.output();
    s.kill();

    assert!(
        stderr.contains("TRACE") || stderr.contains("DEBUG"),
        "the server did not log at debug/trace"
    );
    let pin = std::fs::read(d.path().join("user.pin"))?;
    let pin = pin.strip_suffix(b"\n").unwrap_or(&pin).to_vec();

    let mut files = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let path = d.database().with_file_name(format!("custodian.db{suffix}"));
        if path.exists() {
            let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{} has mode {mode:o}", path.display());
            files.push((path.display().to_string(), std::fs::read(&path)?));
        }
    }
    assert!(!files.is_empty());
    files.push(("stderr".into(), stderr.into_bytes()));
    files.push((
        "stdout (minus the one bootstrap line)".into(),
        stdout
            .lines()
            .filter(|l| !l.contains("bootstrap admin token"))
            .collect::<Vec<_>>()
            .join("\n")
            .into_bytes(),
    ));

    for (name, bytes) in &files {
        for secret in &secrets {
            for form in forms(secret) {
                assert!(!contains(bytes, &form), "a plaintext appears in {name}");
            }
        }
        assert!(
            !contains(bytes, token.as_bytes()),
            "the bearer token appears in {name}"
        );
        let token_secret = token.rsplit('_').next().unwrap();
        assert!(
            !contains(bytes, token_secret.as_bytes()),
            "the token secret appears in {name}"
        );
        assert!(!contains(bytes, &pin), "the user PIN appears in {name}");
    }
    Ok(())
}
