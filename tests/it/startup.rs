//! Start-up refuses clearly: a token without the configured mechanism, a missing token, a
//! missing PIN, an invalid configuration.

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
