//! Plaintext never rests: data keys, payloads, tokens and PINs never reach the database at rest
//! (SQLite: its file and journal; PostgreSQL: the database's data files and the cluster's WAL) or
//! the server's output (at trace level), and the files holding the database are private.

use serde_json::json;

use crate::common::db::find_any;
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
    for f in d.db()?.files_at_rest()? {
        assert_eq!(f.mode, 0o600, "{} has mode {:o}", f.name, f.mode);
        files.push((f.name, f.bytes));
    }
    // The scan sees what the store wrote: the key's name is there.
    assert!(
        files
            .iter()
            .any(|(_, b)| find_any(b, &[b"hygiene"]).is_some()),
        "the key's row is in none of the files read"
    );
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

    // `cst_<hex id>_<base64url secret>`: the secret is everything after the second `_` (it may
    // itself contain `_`, so splitting at the last one could leave a needle of a few
    // characters that random bytes match by chance).
    let token_secret = token.splitn(3, '_').nth(2).unwrap();
    assert!(
        token_secret.len() >= 40,
        "the token's secret part: {token_secret:?}"
    );
    let mut needles: Vec<(&str, Vec<u8>)> = Vec::new();
    for secret in &secrets {
        for form in forms(secret) {
            needles.push(("a plaintext", form));
        }
    }
    needles.push(("the bearer token", token.clone().into_bytes()));
    needles.push(("the token secret", token_secret.as_bytes().to_vec()));
    needles.push(("the user PIN", pin));
    for (name, bytes) in &files {
        if let Some(i) = find_any(bytes, &needles.iter().map(|n| &n.1[..]).collect::<Vec<_>>()) {
            panic!("{} appears in {name}", needles[i].0);
        }
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
    let db = d.db()?;
    let rows: Vec<(String, u32, Vec<u8>, Vec<u8>)> = db
        .query(
            "SELECT path, version, wrapped_dek, ciphertext FROM secret_versions WHERE wrapped_dek IS NOT NULL",
            &[],
        )?
        .into_iter()
        .map(|r| {
            (
                r[0].as_text().to_owned(),
                u32::try_from(r[1].as_i64()).unwrap(),
                r[2].as_bytes().to_vec(),
                r[3].as_bytes().to_vec(),
            )
        })
        .collect();
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
    let at_rest = db.files_at_rest()?;
    drop(db);
    // The scan sees what the store wrote: the secrets' paths are there.
    assert!(
        at_rest
            .iter()
            .any(|f| find_any(&f.bytes, &[b"hyg/s0"]).is_some()),
        "the secrets' rows are in none of the files read"
    );
    files.extend(at_rest.into_iter().map(|f| (f.name, f.bytes)));
    let needles: Vec<Vec<u8>> = values
        .iter()
        .chain(data_keys.iter())
        .flat_map(|s| forms(s))
        .collect();
    let needles: Vec<&[u8]> = needles.iter().map(Vec::as_slice).collect();
    for (name, bytes) in &files {
        assert!(
            find_any(bytes, &needles).is_none(),
            "a plaintext value or data key appears in {name}"
        );
    }
    Ok(())
}
