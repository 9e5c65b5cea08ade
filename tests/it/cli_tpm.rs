//! The CLI with keys on a TPM (a real swtpm beside the SoftHSM token, the real binary):
//! `keys create --backend tpm [--mode direct]`, data keys and encrypt/decrypt through the CLI on
//! both modes, and `custody report` → `custody verify` counting the TPM attestations, with the
//! negative twins: a tampered attestation (the report's signature fails), an attestation key
//! other than the pinned one (the attestation check fails), an unknown backend (clap refuses),
//! and a TPM key asked of a server without `[tpm]` (`backend_not_configured`).

use std::process::Command;

use serde_json::Value;

use crate::common::cli::{admin_cli as cli, bytes_of, fails_with, finish, json_of};
use crate::common::server::BIN;
use crate::common::swtpm::Swtpm;
use crate::common::{unb64, unique, Deployment};

/// `custody verify FILE --public-key PEM [extra…]`, offline.
fn verify(report: &std::path::Path, pem: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let mut c = Command::new(BIN);
    c.args(["custody", "verify"])
        .arg(report)
        .arg("--public-key")
        .arg(pem)
        .args(extra)
        .env_remove("CUSTODIAN_TOKEN")
        .env_remove("CUSTODIAN_ADDR");
    finish(c, b"")
}

#[tokio::test]
async fn tpm_keys_through_the_cli_and_their_attestations_verify_offline() -> anyhow::Result<()> {
    let tpm = Swtpm::start()?;
    let mut d = Deployment::new()?;
    d.append_config(&format!("[tpm]\ntcti = \"{}\"\n", tpm.tcti()))?;
    let s = d.start().await?;

    // TPM keys: the default mode on a TPM is cached; direct on request.
    let cached_name = unique("cli-tpm-cached");
    let cached = json_of(&cli(
        &s,
        &["keys", "create", &cached_name, "--backend", "tpm"],
        b"",
    ));
    assert_eq!(cached["backend"], "tpm");
    assert_eq!(cached["mode"], "cached");
    assert_eq!(cached["versions"][0]["algorithm"], "aes256_kwp_cached");
    let direct_name = unique("cli-tpm-direct");
    let direct = json_of(&cli(
        &s,
        &[
            "keys",
            "create",
            &direct_name,
            "--backend",
            "tpm",
            "--mode",
            "direct",
        ],
        b"",
    ));
    assert_eq!(direct["backend"], "tpm");
    assert_eq!(direct["mode"], "direct");
    assert_eq!(direct["versions"][0]["algorithm"], "aes256_kwp_tpm_hmac");
    // Without the flags nothing changes: PKCS#11, direct.
    let plain = json_of(&cli(&s, &["keys", "create", &unique("cli-hsm")], b""));
    assert_eq!(
        (&plain["backend"], &plain["mode"]),
        (&"pkcs11".into(), &"direct".into())
    );

    // keys show / list carry the placement.
    let shown = json_of(&cli(&s, &["keys", "show", &direct_name], b""));
    assert_eq!(
        (&shown["backend"], &shown["mode"]),
        (&"tpm".into(), &"direct".into())
    );
    let listed = json_of(&cli(&s, &["keys", "list"], b""));
    let entry = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == cached_name.as_str())
        .unwrap();
    assert_eq!(
        (&entry["backend"], &entry["mode"]),
        (&"tpm".into(), &"cached".into())
    );

    for (name, code) in [(&cached_name, 0x02u8), (&direct_name, 0x03)] {
        // Data key: the blob names the key's algorithm and opens through the CLI.
        let dk = json_of(&cli(&s, &["datakey", name, "--context", "app=tpm"], b""));
        let plaintext = unb64(dk["plaintext"].as_str().unwrap());
        assert_eq!(plaintext.len(), 32);
        let blob = unb64(dk["ciphertext"].as_str().unwrap());
        assert_eq!(blob[5], code, "{name}");
        let out = bytes_of(&cli(&s, &["decrypt", "--context", "app=tpm"], &blob));
        assert_eq!(out, plaintext);
        // Negative twin: another context.
        let wrong = cli(&s, &["decrypt", "--context", "app=other"], &blob);
        fails_with(&wrong, "decryption_failed");

        // Encrypt / decrypt a payload.
        let data = b"kept under a TPM key\x00\xff";
        let enc = bytes_of(&cli(&s, &["encrypt", name, "--context", "t=1"], data));
        assert_eq!(enc[5], code);
        assert_eq!(
            bytes_of(&cli(&s, &["decrypt", "--context", "t=1"], &enc)),
            data
        );
        let mut flipped = enc.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        fails_with(
            &cli(&s, &["decrypt", "--context", "t=1"], &flipped),
            "decryption_failed",
        );
    }

    // The custody report, saved as received, and the signing key.
    let report = d.path().join("custody.json");
    let pem = d.path().join("audit.pem");
    let r = report.to_str().unwrap();
    bytes_of(&cli(
        &s,
        &["custody", "report", "--format", "json", "--out", r],
        b"",
    ));
    bytes_of(&cli(
        &s,
        &["audit", "public-key", "--out", pem.to_str().unwrap()],
        b"",
    ));
    let md = String::from_utf8(bytes_of(&cli(
        &s,
        &["custody", "report", "--format", "md"],
        b"",
    )))?;
    assert!(md.contains("| tpm/cached | 1 | primary |"), "{md}");
    assert!(md.contains("| tpm/direct | 1 | primary |"), "{md}");
    assert!(md.contains("2 verified, 0 failed."), "{md}");

    // Offline verification: the signature and both TPM attestations.
    let out = verify(&report, &pem, &[]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("signature valid; 2 TPM attestations verified; 0 anomalies\n"),
        "{text}"
    );
    assert!(text.contains(&format!("key {cached_name} (")), "{text}");
    assert!(
        text.contains("v1 [tpm/cached]: TPM attestation verified (AK "),
        "{text}"
    );
    assert!(
        text.contains("v1 [tpm/direct]: TPM attestation verified (AK "),
        "{text}"
    );
    assert!(
        text.contains("endorsement key certificate chain is not checked"),
        "{text}"
    );
    assert!(text.contains("device: tpm token"), "{text}");

    // Pinning the attestation key: the TPM's own AK passes…
    let envelope: Value = serde_json::from_slice(&std::fs::read(&report)?)?;
    let payload: Value = serde_json::from_str(envelope["payload"].as_str().unwrap())?;
    let version = |name: &str| -> Value {
        payload["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == name)
            .unwrap()["versions"][0]
            .clone()
    };
    let att = version(&direct_name)["device_object"]["attestation"].clone();
    let ak = d.path().join("ak.pem");
    std::fs::write(&ak, att["attestation_key"].as_str().unwrap())?;
    let out = verify(&report, &pem, &["--attestation-key", ak.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("pinned with --attestation-key"));

    // …and any other key fails every attestation although the signature is valid, naming the
    // key versions (here the audit signing key stands in for a stranger's AK: also P-256).
    let out = verify(&report, &pem, &["--attestation-key", pem.to_str().unwrap()]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("signature valid (")); // the signature itself is fine
    assert!(
        stdout.contains("signature valid; 0 TPM attestations verified, 2 FAILED"),
        "{stdout}"
    );
    assert!(
        stdout.contains("TPM attestation FAILED: signed by attestation key"),
        "{stdout}"
    );
    assert!(
        stderr.starts_with("error: attestation_failed: 2 of 2 TPM attestations"),
        "{stderr}"
    );
    assert!(stderr.contains(" v1 [tpm/"), "{stderr}");

    // A flipped byte in one attestation: the report's signature no longer verifies.
    let payload_text = envelope["payload"].as_str().unwrap();
    let attest_hex = att["attest"].as_str().unwrap();
    let i = attest_hex.len() / 2;
    let flipped_char = if &attest_hex[i..=i] == "0" { "1" } else { "0" };
    let tampered_hex = format!("{}{flipped_char}{}", &attest_hex[..i], &attest_hex[i + 1..]);
    assert_eq!(payload_text.matches(attest_hex).count(), 1);
    let mut tampered = envelope.clone();
    tampered["payload"] = Value::String(payload_text.replacen(attest_hex, &tampered_hex, 1));
    let tampered_file = d.path().join("tampered.json");
    std::fs::write(&tampered_file, tampered.to_string())?;
    let out = verify(&tampered_file, &pem, &[]);
    let stderr = fails_with(&out, "does not verify");
    assert!(stderr.contains("custody report"), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn unknown_backends_are_refused_and_tpm_keys_need_a_tpm() -> anyhow::Result<()> {
    // clap refuses values outside the enums before anything is sent.
    for args in [
        &["keys", "create", "k", "--backend", "floppy"][..],
        &[
            "keys",
            "create",
            "k",
            "--backend",
            "tpm",
            "--mode",
            "sometimes",
        ][..],
    ] {
        let out = Command::new(BIN)
            .args(args)
            .env("CUSTODIAN_ADDR", "http://127.0.0.1:9")
            .env("CUSTODIAN_TOKEN", "unused")
            .output()?;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("invalid value"), "{stderr}");
        assert!(
            stderr.contains("[possible values: pkcs11, tpm]")
                || stderr.contains("[possible values: direct, cached]"),
            "{stderr}"
        );
    }

    // A server without [tpm]: a TPM key is refused by name, and nothing is created.
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    let name = unique("no-tpm");
    let out = cli(&s, &["keys", "create", &name, "--backend", "tpm"], b"");
    let stderr = fails_with(&out, "backend_not_configured");
    assert!(stderr.contains("503"), "{stderr}");
    let out = cli(
        &s,
        &[
            "keys",
            "create",
            &name,
            "--backend",
            "tpm",
            "--mode",
            "direct",
        ],
        b"",
    );
    fails_with(&out, "backend_not_configured");
    fails_with(&cli(&s, &["keys", "show", &name], b""), "key_not_found");
    // The positive twin on the same server: PKCS#11 in cached mode works without a TPM.
    let ok = json_of(&cli(
        &s,
        &[
            "keys",
            "create",
            &name,
            "--backend",
            "pkcs11",
            "--mode",
            "cached",
        ],
        b"",
    ));
    assert_eq!(ok["mode"], "cached");
    Ok(())
}
