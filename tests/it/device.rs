//! The device itself: root key attributes read back through PKCS#11, and the service's
//! behaviour when the token disappears and comes back.

use std::time::Duration;

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass};
use serde_json::json;

use crate::common::{b64, inproc, unb64, Deployment};

// The in-process token lock is held for the whole test on purpose (it serialises use of the token
// directory); no other task on this test's runtime takes it.
#[allow(clippy::await_holding_lock)]
#[tokio::test]
async fn master_keys_are_generated_in_the_token_and_never_extractable() -> anyhow::Result<()> {
    let hsm = inproc::lock();
    let mut d = Deployment::on_existing_token(&hsm.softhsm_conf, &hsm.label, &hsm.user_pin_file)?;
    let s = d.start().await?;
    let key = s.create_key(&crate::common::unique("custody")).await;
    let id = uuid::Uuid::parse_str(key["id"].as_str().unwrap())?;
    // Stop the server so only this process uses the token directory.
    s.kill();

    let session = hsm.session();
    let mut cka_id = id.as_bytes().to_vec();
    cka_id.extend_from_slice(&1u32.to_be_bytes());
    let found = session.find_objects(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Id(cka_id.clone()),
    ])?;
    assert_eq!(found.len(), 1, "exactly one root key object per version");
    let master = found[0];

    let attrs = session.get_attributes(
        master,
        &[
            AttributeType::Sensitive,
            AttributeType::AlwaysSensitive,
            AttributeType::NeverExtractable,
            AttributeType::Local,
            AttributeType::Extractable,
            AttributeType::Token,
            AttributeType::Private,
            AttributeType::KeyType,
            AttributeType::ValueLen,
            AttributeType::Label,
        ],
    )?;
    let expected = [
        Attribute::Sensitive(true),
        Attribute::AlwaysSensitive(true),
        Attribute::NeverExtractable(true),
        Attribute::Local(true),
        Attribute::Extractable(false),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32.into()),
        Attribute::Label(format!("custodian:{id}:v1").into_bytes()),
    ];
    for e in expected {
        assert!(attrs.contains(&e), "{e:?} missing from {attrs:?}");
    }

    // CKA_VALUE cannot be read: the token reports it sensitive and returns nothing.
    let info = session.get_attribute_info(master, &[AttributeType::Value])?;
    assert!(
        matches!(info.as_slice(), [AttributeInfo::Sensitive]),
        "{info:?}"
    );
    let value = session.get_attributes(master, &[AttributeType::Value])?;
    assert!(
        !value.iter().any(|a| matches!(a, Attribute::Value(_))),
        "CKA_VALUE came back: {value:?}"
    );

    // Wrapping it with another key fails: it is not extractable.
    let wrapping = session.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Token(false),
            Attribute::ValueLen(32.into()),
            Attribute::Wrap(true),
            Attribute::Encrypt(true),
        ],
    )?;
    for mechanism in [Mechanism::AesKeyWrapPad, Mechanism::AesKeyWrap] {
        let err = session
            .wrap_key(&mechanism, wrapping, master)
            .expect_err("wrapping the master key must fail");
        assert!(
            matches!(
                err,
                CkError::Pkcs11(RvError::KeyUnextractable | RvError::KeyNotWrappable, _)
            ),
            "unexpected error {err:?}"
        );
    }
    // And it cannot be copied into an extractable object.
    let copy = session.copy_object(master, &[Attribute::Extractable(true)]);
    assert!(copy.is_err(), "copying the master key succeeded");
    Ok(())
}

#[tokio::test]
async fn a_lost_device_gives_503_and_not_ready_then_recovers() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    s.create_key("k").await;
    let context = json!({"app": "device-test"});
    let dk = s
        .post("/v1/keys/k/datakey", json!({ "context": context }))
        .await;
    let (ct, pt) = (dk.ok()["ciphertext"].clone(), dk.body["plaintext"].clone());

    // The token directory vanishes, as a removed HSM would.
    let tokens = d.token_dir();
    let away = tokens.with_extension("away");
    std::fs::rename(&tokens, &away)?;

    let ready = s.wait_ready(503, Duration::from_secs(10)).await;
    assert_eq!(ready.status.as_u16(), 503, "{}", ready.body);
    assert_eq!(ready.body["device"]["usable"], false);
    s.post(
        "/v1/decrypt",
        json!({ "ciphertext": ct, "context": context }),
    )
    .await
    .assert_error(503, "device_unavailable");
    s.post("/v1/keys/k/datakey", json!({}))
        .await
        .assert_error(503, "device_unavailable");
    s.post("/v1/keys/k/encrypt", json!({ "plaintext": b64(b"x") }))
        .await
        .assert_error(503, "device_unavailable");
    // Never a software fallback: still not ready a while later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.get_public("/v1/health/ready").await.status.as_u16(), 503);

    // It comes back: the supervisor re-initialises and everything made before still works.
    std::fs::rename(&away, &tokens)?;
    let ready = s.wait_ready(200, Duration::from_secs(15)).await;
    assert_eq!(ready.status.as_u16(), 200, "{}", ready.body);
    assert!(ready.body["device"]["reinitialisations"].as_u64().unwrap() >= 1);
    let out = s
        .post(
            "/v1/decrypt",
            json!({ "ciphertext": ct, "context": context }),
        )
        .await;
    assert_eq!(out.ok()["plaintext"], pt);
    let fresh = s.post("/v1/keys/k/datakey", json!({})).await;
    assert_eq!(unb64(fresh.ok()["plaintext"].as_str().unwrap()).len(), 32);
    Ok(())
}

// The in-process token lock is held for the whole test on purpose (see above).
#[allow(clippy::await_holding_lock)]
#[tokio::test]
async fn a_failed_key_record_destroys_the_new_device_object() -> anyhow::Result<()> {
    let hsm = inproc::lock();
    let mut d = Deployment::on_existing_token(&hsm.softhsm_conf, &hsm.label, &hsm.user_pin_file)?;
    let s = d.start().await?;
    let kept = s.create_key(&crate::common::unique("kept")).await;

    // Make the next key record fail inside the database, after the device object exists.
    d.db()?.refuse_inserts("keys", "refused")?;
    let r = s
        .post(
            "/v1/keys",
            json!({ "name": crate::common::unique("doomed") }),
        )
        .await;
    r.assert_error(503, "store_unavailable");
    let (_, stderr) = s.output();
    s.kill();

    let line = stderr
        .lines()
        .find(|l| l.contains("root key destroyed again"))
        .unwrap_or_else(|| panic!("no rollback logged:\n{stderr}"));
    let doomed_id = line
        .split("key_id=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the rollback names the key id");
    let doomed = uuid::Uuid::parse_str(doomed_id)?;
    let kept = uuid::Uuid::parse_str(kept["id"].as_str().unwrap())?;

    let session = hsm.session();
    let object = |id: uuid::Uuid| {
        let mut cka_id = id.as_bytes().to_vec();
        cka_id.extend_from_slice(&1u32.to_be_bytes());
        session
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Id(cka_id),
            ])
            .unwrap()
    };
    assert_eq!(
        object(kept).len(),
        1,
        "the recorded key's root key is in the token"
    );
    assert!(
        object(doomed).is_empty(),
        "the unrecorded root key was left in the token"
    );
    Ok(())
}

// The in-process token lock is held for the whole test on purpose (see above).
#[allow(clippy::await_holding_lock)]
#[tokio::test]
async fn a_root_key_missing_from_the_token_is_a_loud_503() -> anyhow::Result<()> {
    let hsm = inproc::lock();
    let mut d = Deployment::on_existing_token(&hsm.softhsm_conf, &hsm.label, &hsm.user_pin_file)?;
    let s = d.start().await?;
    let key = s.create_key(&crate::common::unique("vanishing")).await;
    let name = key["name"].as_str().unwrap().to_owned();
    let blob = s
        .post(
            &format!("/v1/keys/{name}/encrypt"),
            json!({ "plaintext": b64(b"x") }),
        )
        .await;
    let blob = blob.ok()["ciphertext"].clone();
    s.kill();

    // Someone deletes the root key object behind the service's back.
    destroy_version_1(&hsm, &key)?;

    let s = d.start().await?;
    s.post(&format!("/v1/keys/{name}/datakey"), json!({}))
        .await
        .assert_error(503, "key_material_missing");
    s.post("/v1/decrypt", json!({ "ciphertext": blob }))
        .await
        .assert_error(503, "key_material_missing");
    let (_, stderr) = s.output();
    assert!(
        stderr.contains("custody anomaly"),
        "the anomaly is logged loudly"
    );
    // The device itself is fine: readiness holds and other keys work.
    assert_eq!(s.get_public("/v1/health/ready").await.status.as_u16(), 200);
    let other = s.create_key(&crate::common::unique("healthy")).await;
    let r = s
        .post(
            &format!("/v1/keys/{}/datakey", other["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    r.ok();
    Ok(())
}

/// Another process sharing the token (another node) destroys a root key whose handle this
/// server has cached: the server finds the object gone by `CKA_ID` and answers as for a missing
/// root key, without re-initialising the module (readiness stays green, the count of
/// re-initialisations unchanged, other keys keep working).
// The in-process token lock is held for the whole test on purpose (see above).
#[allow(clippy::await_holding_lock)]
#[tokio::test]
async fn a_root_key_destroyed_by_another_process_is_looked_up_again_not_a_device_failure(
) -> anyhow::Result<()> {
    let hsm = inproc::lock();
    let mut d = Deployment::on_existing_token(&hsm.softhsm_conf, &hsm.label, &hsm.user_pin_file)?;
    let s = d.start().await?;
    let key = s.create_key(&crate::common::unique("shared-gone")).await;
    let name = key["name"].as_str().unwrap().to_owned();
    let other = s.create_key(&crate::common::unique("shared-kept")).await;
    // Both handles are cached by use.
    for k in [&name, other["name"].as_str().unwrap()] {
        s.post(&format!("/v1/keys/{k}/datakey"), json!({}))
            .await
            .ok();
    }
    let ready = s.get_public("/v1/health/ready").await;
    let reinits_before = ready.body.to_string();

    destroy_version_1(&hsm, &key)?;

    s.post(&format!("/v1/keys/{name}/datakey"), json!({}))
        .await
        .assert_error(503, "key_material_missing");
    let ready = s.get_public("/v1/health/ready").await;
    assert_eq!(ready.status.as_u16(), 200, "{}", ready.body);
    assert_eq!(
        ready.body.to_string(),
        reinits_before,
        "the module was re-initialised for another process's deletion"
    );
    s.post(
        &format!("/v1/keys/{}/datakey", other["name"].as_str().unwrap()),
        json!({}),
    )
    .await
    .ok();
    let (_, stderr) = s.output();
    assert!(
        !stderr.contains("re-initialising"),
        "the module was re-initialised"
    );
    Ok(())
}

/// Destroys version 1's root key object of `key` (as the API returned it) in the in-process
/// token, behind the server's back (as another process sharing the token would).
fn destroy_version_1(hsm: &inproc::InProc, key: &serde_json::Value) -> anyhow::Result<()> {
    let id = uuid::Uuid::parse_str(key["id"].as_str().unwrap())?;
    let mut cka_id = id.as_bytes().to_vec();
    cka_id.extend_from_slice(&1u32.to_be_bytes());
    let session = hsm.session();
    let found = session.find_objects(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Id(cka_id),
    ])?;
    session.destroy_object(found[0])?;
    Ok(())
}
