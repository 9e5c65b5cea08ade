//! The custody report, black-box: attributes are read back from the token at report time (a
//! weaker object put into the token by the test, and a missing one, are flagged), and the
//! signed report verifies offline with the CLI and with OpenSSL alone; a changed byte does not.

use std::process::Command;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use serde_json::Value;

use crate::common::cli::finish;
use crate::common::server::BIN;
use crate::common::{inproc, unique, Deployment, Server};

async fn report(s: &Server) -> (Value, Value) {
    let r = s.get("/v1/custody/report").await;
    let envelope = r.ok().clone();
    let payload: Value =
        serde_json::from_str(envelope["payload"].as_str().expect("payload text")).expect("JSON");
    (envelope, payload)
}

fn version<'a>(payload: &'a Value, key_id: &str, v: u64) -> &'a Value {
    payload["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_id"] == key_id)
        .and_then(|k| {
            k["versions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["version"] == v)
        })
        .unwrap_or_else(|| panic!("no {key_id} v{v} in {payload}"))
}

fn openssl_verify(
    dir: &std::path::Path,
    pem: &std::path::Path,
    payload: &[u8],
    sig_b64: &str,
) -> bool {
    let payload_file = dir.join(format!("{}.json", unique("payload")));
    let sig_file = dir.join(format!("{}.der", unique("sig")));
    std::fs::write(&payload_file, payload).unwrap();
    std::fs::write(&sig_file, STANDARD.decode(sig_b64).unwrap()).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(pem)
        .arg("-signature")
        .arg(&sig_file)
        .arg(&payload_file)
        .output()
        .expect("openssl runs");
    let ok = out.status.success();
    assert_eq!(
        ok,
        String::from_utf8_lossy(&out.stdout).contains("Verified OK"),
        "{out:?}"
    );
    ok
}

#[tokio::test]
async fn the_signed_report_verifies_offline_and_with_openssl() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    let key = s.create_key(&unique("reported")).await;
    let id = key["id"].as_str().unwrap().to_owned();
    s.post(&format!("/v1/keys/{id}/rotate"), serde_json::json!({}))
        .await
        .ok();
    s.send_json(
        reqwest::Method::PUT,
        "/v1/secrets/custody/one",
        serde_json::json!({ "value": crate::common::b64(b"v"), "key": id }),
    )
    .await;
    let (envelope, payload) = report(&s).await;
    assert_eq!(payload["format"], "custodian-custody-report/v1");
    let device = &payload["devices"][0];
    assert_eq!(device["backend"], "pkcs11");
    assert_eq!(device["manufacturer"], "SoftHSM project");
    assert!(device["serial"].as_str().is_some_and(|s| !s.is_empty()));
    for v in [1, 2] {
        let ver = version(&payload, &id, v);
        let attrs = &ver["device_object"]["attributes"];
        assert_eq!(attrs["CKA_SENSITIVE"], true);
        assert_eq!(attrs["CKA_EXTRACTABLE"], false);
        assert_eq!(attrs["CKA_NEVER_EXTRACTABLE"], true);
        assert_eq!(attrs["CKA_ALWAYS_SENSITIVE"], true);
        assert_eq!(attrs["CKA_LOCAL"], true);
        assert_eq!(attrs["CKA_KEY_TYPE"], "CKK_AES");
        assert_eq!(ver["device_object"]["key_bits"], 256);
        assert_eq!(ver["anomalies"], serde_json::json!([]), "{ver}");
        assert_eq!(ver["device_label"], format!("custodian:{id}:v{v}"));
    }
    assert_eq!(version(&payload, &id, 1)["state"], "active");
    assert_eq!(version(&payload, &id, 2)["state"], "primary");
    assert!(payload["signing_key"]["anomalies"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(payload["summary"]["anomalies"], 0);

    // Offline: the CLI with the public key, and OpenSSL alone.
    let (_, pem) = s.get_bytes("/v1/audit/public-key").await;
    let pem_file = d.path().join("custody-public.pem");
    std::fs::write(&pem_file, &pem)?;
    let report_file = d.path().join("report.json");
    std::fs::write(&report_file, envelope.to_string())?;
    let mut c = Command::new(BIN);
    c.args(["custody", "verify"])
        .arg(&report_file)
        .arg("--public-key")
        .arg(&pem_file);
    let out = finish(c, b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let payload_text = envelope["payload"].as_str().unwrap();
    let sig = envelope["signature"].as_str().unwrap();
    assert!(openssl_verify(
        d.path(),
        &pem_file,
        payload_text.as_bytes(),
        sig
    ));

    // Negative twins: one changed character.
    let forged = payload_text.replacen("\"primary\"", "\"disabled\"", 1);
    assert_ne!(forged, payload_text);
    assert!(!openssl_verify(d.path(), &pem_file, forged.as_bytes(), sig));
    let mut tampered = envelope.clone();
    tampered["payload"] = Value::String(forged);
    let tampered_file = d.path().join("tampered.json");
    std::fs::write(&tampered_file, tampered.to_string())?;
    let mut c = Command::new(BIN);
    c.args(["custody", "verify"])
        .arg(&tampered_file)
        .arg("--public-key")
        .arg(&pem_file);
    let out = finish(c, b"");
    assert!(!out.status.success());
    Ok(())
}

#[tokio::test]
async fn only_custody_readers_get_the_report() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    let name = unique("app");
    s.post(
        "/v1/principals",
        serde_json::json!({ "name": name, "policies": ["application"] }),
    )
    .await
    .ok();
    let t = s
        .post("/v1/tokens", serde_json::json!({ "principal": name }))
        .await;
    let token = t.ok()["token"].as_str().unwrap().to_owned();
    let header = format!("Bearer {token}");
    let r = s
        .raw(
            reqwest::Method::GET,
            "/v1/custody/report",
            crate::common::server::Auth::Header(&header),
            None,
            Vec::new(),
        )
        .await;
    r.assert_error(403, "forbidden");
    Ok(())
}

#[allow(clippy::await_holding_lock)]
#[tokio::test]
async fn weaker_and_missing_device_objects_are_flagged() -> anyhow::Result<()> {
    let hsm = inproc::lock();
    let mut d = Deployment::on_existing_token(&hsm.softhsm_conf, &hsm.label, &hsm.user_pin_file)?;
    let s = d.start().await?;
    let weak = s.create_key(&unique("weakened")).await;
    let gone = s.create_key(&unique("vanished")).await;
    let sound = s.create_key(&unique("sound")).await;
    s.kill();

    let cka_id = |key: &Value| {
        let id = uuid::Uuid::parse_str(key["id"].as_str().unwrap()).unwrap();
        let mut v = id.as_bytes().to_vec();
        v.extend_from_slice(&1u32.to_be_bytes());
        v
    };
    let session = hsm.session();
    for key in [&weak, &gone] {
        let found = session.find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Id(cka_id(key)),
        ])?;
        assert_eq!(found.len(), 1);
        session.destroy_object(found[0])?;
    }
    // An imported, extractable, non-sensitive key under the weakened key's id.
    session.create_object(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Value(vec![7u8; 32]),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Id(cka_id(&weak)),
        Attribute::Label(b"planted".to_vec()),
    ])?;
    drop(session);

    let s = d.start().await?;
    let (_, payload) = report(&s).await;
    let w = version(&payload, weak["id"].as_str().unwrap(), 1);
    let anomalies: Vec<&str> = w["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for expected in [
        "CKA_SENSITIVE is false",
        "CKA_ALWAYS_SENSITIVE is false",
        "CKA_EXTRACTABLE is true",
        "CKA_NEVER_EXTRACTABLE is false",
        "CKA_LOCAL is false",
    ] {
        assert!(
            anomalies.contains(&expected),
            "{expected} not in {anomalies:?}"
        );
    }
    assert_eq!(w["device_object"]["attributes"]["CKA_EXTRACTABLE"], true);
    let g = version(&payload, gone["id"].as_str().unwrap(), 1);
    assert!(g["device_object"].is_null());
    assert_eq!(
        g["anomalies"],
        serde_json::json!(["root key missing from the device"])
    );
    let ok = version(&payload, sound["id"].as_str().unwrap(), 1);
    assert_eq!(ok["anomalies"], serde_json::json!([]));
    assert_eq!(payload["summary"]["anomalies"], 2);
    s.kill();
    Ok(())
}
