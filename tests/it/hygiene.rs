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

// The in-process token lock is held for the whole test on purpose (see device.rs).
#[allow(clippy::await_holding_lock)]
#[tokio::test]
async fn secret_values_and_their_data_keys_never_rest_in_plaintext() -> anyhow::Result<()> {
    use cryptoki::object::{Attribute, ObjectClass};
    use custodian::backend::pkcs11::encrypt::gcm_open;
    use custodian::domain::secret::SecretPath;
    use custodian::format::secret::data_key_context;
    use custodian::format::Blob;

    let hsm = crate::common::inproc::lock();
    let mut d = Deployment::on_existing_token(&hsm.softhsm_conf, &hsm.label, &hsm.user_pin_file)?;
    let key = crate::common::unique("hygiene-secrets");
    d.append_config(&format!("[secrets]\ndefault_key = \"{key}\"\n"))?;
    d.env.push(("RUST_LOG".into(), "trace".into()));
    let s = d.start().await?;
    s.create_key(&key).await;
    let mut values: Vec<Vec<u8>> = Vec::new();
    for i in 0..3 {
        let v = format!("secret-marker-{i}-{}", uuid::Uuid::new_v4()).into_bytes();
        let body = json!({ "value": b64(&v) }).to_string().into_bytes();
        let r = s
            .raw(
                reqwest::Method::PUT,
                &format!("/v1/secrets/hyg/s{i}"),
                crate::common::server::Auth::Admin,
                Some("application/json"),
                body,
            )
            .await;
        r.ok();
        let back = s.get(&format!("/v1/secrets/hyg/s{i}")).await;
        assert_eq!(unb64(back.ok()["value"].as_str().unwrap()), v);
        values.push(v);
    }
    let spec =
        json!({ "generate": { "length": 40, "charset": "alphanumeric", "rotate_every": "1h" } });
    s.send_json(reqwest::Method::PUT, "/v1/secrets/hyg/gen/metadata", spec)
        .await
        .ok();
    let generated = s.get("/v1/secrets/hyg/gen").await;
    values.push(unb64(generated.ok()["value"].as_str().unwrap()));
    let (stdout, stderr) = s.output();
    s.kill();

    // Recover every data key through the token itself, to know what to look for.
    let db = rusqlite::Connection::open(d.database())?;
    let rows: Vec<(String, u32, Vec<u8>, Vec<u8>)> = db
        .prepare(
            "SELECT path, version, wrapped_dek, ciphertext FROM secret_versions WHERE wrapped_dek IS NOT NULL",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<Result<_, _>>()?;
    drop(db);
    assert_eq!(rows.len(), 4);
    let session = hsm.session();
    let mut data_keys = Vec::new();
    for (path, version, wrapped, ciphertext) in rows {
        let blob = Blob::parse(&wrapped)?;
        let mut cka_id = blob.key_id.as_bytes().to_vec();
        cka_id.extend_from_slice(&blob.key_version.get().to_be_bytes());
        let handle = session.find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Id(cka_id),
        ])?[0];
        let path = SecretPath::try_from(path)?;
        let context = data_key_context(&path, version)?;
        let dek = gcm_open(
            &session,
            handle,
            blob.iv,
            &blob.header().aad(&context),
            &blob.ciphertext,
        )?;
        assert_eq!(dek.len(), 32);
        // It is the right key: it opens the stored value.
        let value = custodian::format::secret::open_value(&dek, &path, version, &ciphertext)?;
        assert!(
            values.iter().any(|v| v[..] == value[..]),
            "recovered data key opens a known value"
        );
        data_keys.push(dek.to_vec());
    }

    let mut files = vec![
        ("stderr".to_owned(), stderr.into_bytes()),
        ("stdout".to_owned(), stdout.into_bytes()),
    ];
    for suffix in ["", "-wal", "-shm"] {
        let path = d.database().with_file_name(format!("custodian.db{suffix}"));
        if path.exists() {
            files.push((path.display().to_string(), std::fs::read(&path)?));
        }
    }
    for (name, bytes) in &files {
        for secret in values.iter().chain(data_keys.iter()) {
            for form in forms(secret) {
                assert!(
                    !contains(bytes, &form),
                    "a plaintext value or data key appears in {name}"
                );
            }
        }
    }
    Ok(())
}
