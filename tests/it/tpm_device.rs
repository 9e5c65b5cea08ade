//! The TPM device layer against a real swtpm per test: version keys, HMAC, blob persistence,
//! slot hygiene, rejected blobs, loss and recovery of the device, attribute read-back,
//! certification with its negative twins, and randomness.

use std::process::Command;
use std::time::Duration;

use custodian::backend::tpm::context::RECONNECT_BACKOFF_MAX;
use custodian::backend::tpm::{
    verify_certification, CertifyError, TpmConfig, TpmDevice, TpmKeyBlob,
};
use custodian::backend::BackendError;
use sha2::{Digest as _, Sha256};

use crate::common::swtpm::Swtpm;

/// Opens a device on the blocking pool (open blocks until the first connection is made).
async fn open(config: TpmConfig) -> anyhow::Result<TpmDevice> {
    Ok(tokio::task::spawn_blocking(move || TpmDevice::open(&config)).await??)
}

#[tokio::test]
async fn hmac_is_deterministic_per_key_and_differs_across_keys_and_inputs() -> anyhow::Result<()> {
    let tpm = Swtpm::start()?;
    let dev = open(tpm.config()).await?;
    let k1 = dev.create_version_key().await?;
    let k2 = dev.create_version_key().await?;
    assert_ne!(k1, k2);

    let a1 = dev.hmac(&k1, "k1/v1", b"input a").await?;
    let a1_again = dev.hmac(&k1, "k1/v1", b"input a").await?;
    let b1 = dev.hmac(&k1, "k1/v1", b"input b").await?;
    let a2 = dev.hmac(&k2, "k2/v1", b"input a").await?;
    assert_eq!(*a1, *a1_again, "same key, same input");
    assert_ne!(*a1, *b1, "same key, other input");
    assert_ne!(*a1, *a2, "other key, same input");

    // Inputs above 1024 bytes are hashed first: HMAC(key, SHA-256(data)), documented.
    let long = vec![0x5a_u8; 4000];
    let long_mac = dev.hmac(&k1, "k1/v1", &long).await?;
    let digest = Sha256::digest(&long);
    assert_eq!(*long_mac, *dev.hmac(&k1, "k1/v1", &digest).await?);
    let at_limit = vec![0x5a_u8; 1024];
    assert_ne!(*dev.hmac(&k1, "k1/v1", &at_limit).await?, *long_mac);
    Ok(())
}

#[tokio::test]
async fn many_keys_used_in_turn_never_run_out_of_object_slots() -> anyhow::Result<()> {
    let tpm = Swtpm::start()?;
    let dev = open(tpm.config()).await?;
    let mut keys = Vec::new();
    for _ in 0..12 {
        keys.push(dev.create_version_key().await?);
    }
    let mut first = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        first.push(*dev.hmac(k, &format!("k{i}/v1"), b"slots").await?);
    }
    // Round two, interleaved with certifications (primary + AK + key = all 3 slots).
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(*dev.hmac(k, &format!("k{i}/v1"), b"slots").await?, first[i]);
        if i % 4 == 0 {
            let cert = dev.certify(k, &format!("k{i}/v1"), b"nonce").await?;
            verify_certification(&cert, &k.public, b"nonce")?;
        }
    }
    for _ in 0..3 {
        dev.info().await?;
        dev.random(48).await?;
    }
    assert!(dev.health().await.usable);
    Ok(())
}

#[tokio::test]
async fn the_last_hmac_key_stays_loaded_and_only_the_same_blob_uses_it() -> anyhow::Result<()> {
    let tpm = Swtpm::start()?;
    let dev = open(tpm.config()).await?;
    let k1 = dev.create_version_key().await?;
    let k2 = dev.create_version_key().await?;
    let loads = dev.hmac_key_loads();
    let first = dev.hmac(&k1, "k1/v1", b"kept").await?;
    for _ in 0..20 {
        assert_eq!(*dev.hmac(&k1, "k1/v1", b"kept").await?, *first);
    }
    assert_eq!(
        dev.hmac_key_loads() - loads,
        1,
        "21 HMACs under one key, one load"
    );
    // Another key takes the slot; the first comes back with the same results.
    let other = dev.hmac(&k2, "k2/v1", b"kept").await?;
    assert_ne!(*other, *first);
    assert_eq!(*dev.hmac(&k1, "k1/v1", b"kept").await?, *first);
    assert_eq!(dev.hmac_key_loads() - loads, 3);
    // A blob that differs from the kept one in any byte is loaded, not served by the kept key:
    // a damaged private part is refused by the TPM.
    let mut damaged = k1.clone();
    let last = damaged.private.len() - 1;
    damaged.private[last] ^= 0x01;
    match dev.hmac(&damaged, "k1/v1", b"kept").await {
        Err(BackendError::KeyBlobRejected(label)) => assert_eq!(label, "k1/v1"),
        other => panic!("expected KeyBlobRejected, got {other:?}"),
    }
    assert_eq!(*dev.hmac(&k1, "k1/v1", b"kept").await?, *first);
    // Certification needs all three slots: it releases the kept key first.
    let cert = dev.certify(&k2, "k2/v1", b"nonce").await?;
    verify_certification(&cert, &k2.public, b"nonce")?;
    let before = dev.hmac_key_loads();
    assert_eq!(*dev.hmac(&k1, "k1/v1", b"kept").await?, *first);
    assert_eq!(
        dev.hmac_key_loads() - before,
        1,
        "loaded again after the certification"
    );
    // Unloading another key leaves the kept one; unloading the kept one frees its slot.
    dev.unload(&k2).await?;
    dev.hmac(&k1, "k1/v1", b"kept").await?;
    assert_eq!(dev.hmac_key_loads() - before, 1);
    dev.unload(&k1).await?;
    dev.hmac(&k1, "k1/v1", b"kept").await?;
    assert_eq!(dev.hmac_key_loads() - before, 2);
    Ok(())
}

#[tokio::test]
async fn blobs_reload_after_a_swtpm_restart_and_a_fresh_open() -> anyhow::Result<()> {
    let mut tpm = Swtpm::start()?;
    let dev = open(tpm.config()).await?;
    let key = dev.create_version_key().await?;
    let before = *dev.hmac(&key, "p/v1", b"persist").await?;
    drop(dev);

    // The blob as a database would hold it: plain bytes.
    let stored = (key.public.clone(), key.private.clone());
    tpm.restart()?;
    let dev = open(tpm.config()).await?;
    let reloaded = TpmKeyBlob {
        public: stored.0,
        private: stored.1,
    };
    assert_eq!(*dev.hmac(&reloaded, "p/v1", b"persist").await?, before);
    drop(dev);

    // A primary persisted at a handle is the same key: the blob loads under it too, and a
    // second open finds the persisted primary instead of creating another.
    let mut config = tpm.config();
    config.primary_persistent_handle = Some(0x8100_0001);
    for _ in 0..2 {
        let dev = open(config.clone()).await?;
        assert_eq!(*dev.hmac(&reloaded, "p/v1", b"persist").await?, before);
    }
    Ok(())
}

#[tokio::test]
async fn foreign_and_corrupted_blobs_are_rejected_by_name_and_the_device_stays_usable(
) -> anyhow::Result<()> {
    let tpm = Swtpm::start()?;
    let other_tpm = Swtpm::start()?;
    let dev = open(tpm.config()).await?;
    let good = dev.create_version_key().await?;
    let expected = *dev.hmac(&good, "good/v1", b"x").await?;

    let other = open(other_tpm.config()).await?;
    let foreign = other.create_version_key().await?;
    drop(other);
    match dev.hmac(&foreign, "foreign/v7", b"x").await {
        Err(BackendError::KeyBlobRejected(label)) => assert_eq!(label, "foreign/v7"),
        other => panic!("a foreign blob must be rejected by name, got {other:?}"),
    }

    let mut corrupted = good.clone();
    let last = corrupted.private.len() - 1;
    corrupted.private[last] ^= 0x01;
    match dev.hmac(&corrupted, "good/v1-tampered", b"x").await {
        Err(BackendError::KeyBlobRejected(label)) => assert_eq!(label, "good/v1-tampered"),
        other => panic!("a corrupted blob must be rejected by name, got {other:?}"),
    }
    let mut truncated = good.clone();
    truncated.public.truncate(10);
    assert!(matches!(
        dev.hmac(&truncated, "t/v1", b"x").await,
        Err(BackendError::KeyBlobRejected(_))
    ));
    assert!(matches!(
        dev.certify(&corrupted, "good/v1-tampered", b"n").await,
        Err(BackendError::KeyBlobRejected(_))
    ));

    // The verdict was about the blobs, not the device.
    assert_eq!(*dev.hmac(&good, "good/v1", b"x").await?, expected);
    let health = dev.health().await;
    assert!(health.usable);
    assert_eq!(health.reinitialisations, 0);
    Ok(())
}

#[tokio::test]
async fn a_stopped_tpm_is_unavailable_and_the_device_recovers_without_reopening(
) -> anyhow::Result<()> {
    let mut tpm = Swtpm::start()?;
    let dev = open(tpm.config()).await?;
    let key = dev.create_version_key().await?;
    let before = *dev.hmac(&key, "r/v1", b"recover").await?;

    tpm.stop();
    let stopped = dev.hmac(&key, "r/v1", b"recover").await;
    assert!(
        matches!(stopped, Err(BackendError::Unavailable)),
        "{stopped:?}"
    );
    assert!(matches!(
        dev.random(8).await,
        Err(BackendError::Unavailable)
    ));
    let health = dev.health().await;
    assert!(!health.usable);
    assert_eq!(health.reason, Some("tpm_unreachable"));

    tpm.restart()?;
    // Let the reconnect back-off window pass; the next call must then succeed.
    tokio::time::sleep(RECONNECT_BACKOFF_MAX + Duration::from_millis(100)).await;
    assert_eq!(*dev.hmac(&key, "r/v1", b"recover").await?, before);
    let health = dev.health().await;
    assert!(health.usable);
    assert!(health.reinitialisations >= 1);

    // A restart the device did not notice (no call in between) is absorbed by one retry.
    tpm.restart()?;
    assert_eq!(*dev.hmac(&key, "r/v1", b"recover").await?, before);
    Ok(())
}

#[tokio::test]
async fn version_keys_read_back_with_the_required_attributes() -> anyhow::Result<()> {
    let tpm = Swtpm::start()?;
    let dev = open(tpm.config()).await?;
    let key = dev.create_version_key().await?;
    let info = dev.object_attributes(&key, "a/v1")?;
    assert!(info.fixed_tpm, "fixedTPM");
    assert!(info.fixed_parent, "fixedParent");
    assert!(info.sensitive_data_origin, "sensitiveDataOrigin");
    assert!(info.user_with_auth, "userWithAuth");
    assert!(info.sign, "sign");
    assert!(!info.decrypt, "not decrypt");
    assert!(!info.restricted, "not restricted");
    assert_eq!(info.key_type, "keyedhash");
    assert_eq!(info.scheme_hash, Some("sha256"));
    // Name = 000b ‖ SHA-256(TPMT_PUBLIC) = 000b ‖ SHA-256(TPM2B_PUBLIC without its size).
    let expected = format!("000b{}", hex::encode(Sha256::digest(&key.public[2..])));
    assert_eq!(info.name_hex, expected);

    let mut broken = key.clone();
    broken.public.truncate(5);
    assert!(matches!(
        dev.object_attributes(&broken, "a/v1"),
        Err(BackendError::KeyBlobRejected(_))
    ));
    Ok(())
}

#[tokio::test]
async fn certification_verifies_offline_and_fails_for_any_change() -> anyhow::Result<()> {
    let tpm = Swtpm::start()?;
    let dev = open(tpm.config()).await?;
    let key = dev.create_version_key().await?;
    let other_key = dev.create_version_key().await?;
    let nonce = [7u8; 32];
    let cert = dev.certify(&key, "c/v1", &nonce).await?;
    verify_certification(&cert, &key.public, &nonce)?;
    assert!(cert
        .attestation_key_pem
        .starts_with("-----BEGIN PUBLIC KEY-----"));
    assert_eq!(
        hex::encode(&cert.key_name),
        dev.object_attributes(&key, "c/v1")?.name_hex
    );

    // The AK comes from a fixed template: the same key every time.
    let again = dev.certify(&other_key, "c/v2", &nonce).await?;
    assert_eq!(again.attestation_key_pem, cert.attestation_key_pem);

    // Negative twins.
    assert!(matches!(
        verify_certification(&cert, &key.public, &[8u8; 32]),
        Err(CertifyError::QualifyingDataMismatch)
    ));
    assert!(matches!(
        verify_certification(&cert, &other_key.public, &nonce),
        Err(CertifyError::NameMismatch)
    ));
    let mut bad_sig = cert.clone();
    let i = bad_sig.signature_der.len() - 3;
    bad_sig.signature_der[i] ^= 0x01;
    assert!(matches!(
        verify_certification(&bad_sig, &key.public, &nonce),
        Err(CertifyError::BadSignature)
    ));
    let mut bad_attest = cert.clone();
    let j = bad_attest.attest.len() - 1;
    bad_attest.attest[j] ^= 0x01;
    assert!(matches!(
        verify_certification(&bad_attest, &key.public, &nonce),
        Err(CertifyError::BadSignature)
    ));
    // The auditor's path in docs/tpm.md: openssl checks the same signature, tpm2_print parses.
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("attest.bin"), &cert.attest)?;
    std::fs::write(dir.path().join("sig.der"), &cert.signature_der)?;
    std::fs::write(dir.path().join("bad.der"), &bad_sig.signature_der)?;
    std::fs::write(dir.path().join("ak.pem"), &cert.attestation_key_pem)?;
    let openssl = |sig: &str| {
        Command::new("openssl")
            .args([
                "dgst",
                "-sha256",
                "-verify",
                "ak.pem",
                "-signature",
                sig,
                "attest.bin",
            ])
            .current_dir(dir.path())
            .output()
    };
    assert!(openssl("sig.der")?.status.success(), "openssl verifies");
    assert!(!openssl("bad.der")?.status.success(), "openssl rejects");
    let printed = Command::new("tpm2_print")
        .args(["-t", "TPMS_ATTEST", "attest.bin"])
        .current_dir(dir.path())
        .output()?;
    // tpm2-tools 5.4 prints the common header, then gives up on the certify body (exit 1).
    let printed = String::from_utf8_lossy(&printed.stdout);
    assert!(printed.contains("magic: ff544347"), "{printed}");
    assert!(printed.contains("type: 8017"), "{printed}");
    assert!(
        printed.contains(&format!("extraData: {}", hex::encode(nonce))),
        "{printed}"
    );
    // ... so the auditor finds the certified Name in the attest bytes by its hex.
    assert!(hex::encode(&cert.attest).contains(&hex::encode(&cert.key_name)));

    // Another TPM's statement about the same name would carry another AK.
    let mut other_ak = cert.clone();
    other_ak.attestation_key_pem = again.attestation_key_pem.replace('A', "B");
    assert!(verify_certification(&other_ak, &key.public, &nonce).is_err());
    Ok(())
}

#[tokio::test]
async fn random_returns_the_requested_lengths_and_info_names_the_tpm() -> anyhow::Result<()> {
    let tpm = Swtpm::start()?;
    let dev = open(tpm.config()).await?;
    for n in [0usize, 1, 31, 32, 33, 64, 100, 1000] {
        assert_eq!(dev.random(n).await?.len(), n);
    }
    let a = dev.random(32).await?;
    let b = dev.random(32).await?;
    assert_ne!(a.expose_secret(), b.expose_secret());
    assert!(!format!("{a:?}").contains(&format!("{:?}", a.expose_secret())));

    let info = dev.info().await?;
    assert_eq!(info.manufacturer, "IBM", "swtpm reports IBM: {info:?}");
    assert!(info.spec_revision.starts_with("1."), "{info:?}");
    assert!(info.firmware_version != 0, "{info:?}");
    Ok(())
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let config = TpmConfig {
        tcti: "device:/dev/tpmrm0".to_owned(),
        owner_auth: Some("owner-secret-123".to_owned().into()),
        primary_persistent_handle: None,
    };
    let shown = format!("{config:?}");
    assert!(!shown.contains("owner-secret-123"), "{shown}");
    assert!(shown.contains("REDACTED"));
    let blob = TpmKeyBlob {
        public: vec![1, 2, 3],
        private: vec![0xde, 0xad, 0xbe, 0xef],
    };
    let shown = format!("{blob:?}");
    assert!(!shown.contains("222") && !shown.contains("de"), "{shown}");
}

#[tokio::test]
async fn an_owner_auth_value_is_used_for_the_owner_hierarchy() -> anyhow::Result<()> {
    let tpm = Swtpm::start()?;
    let changed = Command::new("tpm2_changeauth")
        .args(["-T", &tpm.tcti(), "-c", "owner", "owner-pw-42"])
        .output()?;
    assert!(changed.status.success(), "{changed:?}");

    // Without it the storage primary can't be created: open fails cleanly.
    assert!(open(tpm.config()).await.is_err());

    let mut config = tpm.config();
    config.owner_auth = Some("owner-pw-42".to_owned().into());
    let dev = open(config).await?;
    let key = dev.create_version_key().await?;
    let mac = dev.hmac(&key, "o/v1", b"owner").await?;
    assert_eq!(*mac, *dev.hmac(&key, "o/v1", b"owner").await?);
    Ok(())
}
