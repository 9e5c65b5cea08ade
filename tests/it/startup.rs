//! Start-up refuses clearly: a token without the configured mechanism, a missing token, a
//! missing PIN, an invalid configuration, and several failing dependencies in a fixed order.

use crate::common::Deployment;

#[test]
fn a_token_without_aes_gcm_is_refused_naming_the_mechanism() -> anyhow::Result<()> {
    let d = Deployment::with_softhsm_line("slots.mechanisms = CKM_AES_KEY_GEN,CKM_AES_CBC")?;
    let stderr = d.start_expecting_failure()?;
    assert!(stderr.contains("CKM_AES_GCM"), "stderr: {stderr}");
    Ok(())
}

#[test]
fn a_missing_token_is_refused() -> anyhow::Result<()> {
    let d = Deployment::new()?;
    let text = std::fs::read_to_string(d.config())?
        .replace("token_label = \"it\"", "token_label = \"absent\"");
    std::fs::write(d.config(), text)?;
    let stderr = d.start_expecting_failure()?;
    assert!(
        stderr.contains("no initialised token matches"),
        "stderr: {stderr}"
    );
    Ok(())
}

#[test]
fn a_wrong_or_missing_pin_is_refused() -> anyhow::Result<()> {
    let d = Deployment::new()?;
    let pin = d.path().join("user.pin");
    std::fs::write(&pin, "wrong-pin\n")?;
    let stderr = d.start_expecting_failure()?;
    assert!(stderr.contains("C_Login"), "stderr: {stderr}");
    std::fs::remove_file(&pin)?;
    let stderr = d.start_expecting_failure()?;
    assert!(stderr.contains("user.pin"), "stderr: {stderr}");
    Ok(())
}

/// The token, the store and the TPM open side by side (start-up waits for the slowest, not
/// their sum), yet the refusal does not depend on which of them failed first: the token's
/// failure is reported before the store's, and the store's before the TPM's.
#[test]
fn failures_of_token_store_and_tpm_are_reported_in_that_order() -> anyhow::Result<()> {
    let d = Deployment::new()?;
    // Nothing listens on a port just released: the TPM cannot be reached.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    d.append_config(&format!(
        "[tpm]\ntcti = \"swtpm:host=127.0.0.1,port={port}\""
    ))?;
    let working = std::fs::read_to_string(d.config())?;
    let pin = d.path().join("user.pin");
    let good_pin = std::fs::read(&pin)?;
    let refusal = || -> anyhow::Result<String> {
        let stderr = d.start_expecting_failure()?;
        let line = stderr.lines().rev().find(|l| l.starts_with("error: "));
        Ok(line
            .unwrap_or_else(|| panic!("no error line; stderr: {stderr}"))
            .to_owned())
    };

    // All three fail: a wrong PIN, a database path that is a directory, no TPM.
    std::fs::write(&pin, "wrong-pin\n")?;
    d.set_store(&format!(
        "[store]\nkind = \"sqlite\"\npath = \"{}\"",
        d.path().display()
    ))?;
    let line = refusal()?;
    assert!(
        line.starts_with("error: key device: ") && line.contains("C_Login"),
        "{line}"
    );

    // The store and the TPM fail.
    std::fs::write(&pin, &good_pin)?;
    let line = refusal()?;
    assert!(line.starts_with("error: store: "), "{line}");

    // Only the TPM fails, and the refusal names it.
    std::fs::write(d.config(), &working)?;
    let line = refusal()?;
    assert!(
        line.starts_with("error: TPM: ") && line.contains("unavailable"),
        "{line}"
    );
    Ok(())
}

#[test]
fn check_config_validates_without_starting() -> anyhow::Result<()> {
    let d = Deployment::new()?;
    let out = d
        .command()
        .args(["serve", "--check-config", "--config"])
        .arg(d.config())
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(d.config())? + "\n[bogus]\nx = 1\n";
    std::fs::write(d.config(), text)?;
    let out = d
        .command()
        .args(["serve", "--check-config", "--config"])
        .arg(d.config())
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus"));
    Ok(())
}

#[test]
fn environment_overrides_the_file() -> anyhow::Result<()> {
    let d = Deployment::new()?;
    let out = d
        .command()
        .args(["serve", "--check-config", "--config"])
        .arg(d.config())
        .env("CUSTODIAN__BACKEND__SESSIONS", "0")
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("backend.sessions"));
    Ok(())
}
