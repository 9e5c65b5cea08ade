//! Process and file hardening, black-box (issue 12, items 14 and 16): `token init` creates
//! missing PIN directories 0700 and refuses PIN files that group or others may read, the server
//! refuses to start on such a PIN file, and the running server has core dumps off (unless the
//! dangerous opt-in is set), read back from `/proc/<pid>/limits` and its start-up log.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use anyhow::{ensure, Context as _};

use crate::common::Deployment;

fn mode(path: &Path) -> anyhow::Result<u32> {
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
}

/// Runs `token init` with `config` (in the deployment directory) and the SO PIN at `so_pin`.
fn token_init(
    d: &Deployment,
    config: &Path,
    so_pin: &Path,
) -> anyhow::Result<std::process::Output> {
    Ok(d.command()
        .args(["token", "init", "--config"])
        .arg(config)
        .arg("--so-pin-file")
        .arg(so_pin)
        .output()?)
}

#[test]
fn token_init_makes_private_pin_directories_and_refuses_shared_pin_files() -> anyhow::Result<()> {
    let d = Deployment::new()?;
    // A second token whose PIN files live in directories that do not exist yet.
    let config = d.path().join("nested.toml");
    let text = std::fs::read_to_string(d.config())?
        .replace("token_label = \"it\"", "token_label = \"nested\"")
        .replace(
            "user_pin_file = \"user.pin\"",
            "user_pin_file = \"pins/a/b/user.pin\"",
        );
    std::fs::write(&config, text)?;
    let so_pin = d.path().join("so-pins/c/so.pin");
    let out = token_init(&d, &config, &so_pin)?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for dir in ["pins", "pins/a", "pins/a/b", "so-pins", "so-pins/c"] {
        let m = mode(&d.path().join(dir))?;
        ensure!(m == 0o700, "{dir} has mode {m:o}, not 700");
    }
    for file in ["pins/a/b/user.pin", "so-pins/c/so.pin"] {
        let m = mode(&d.path().join(file))?;
        ensure!(m == 0o600, "{file} has mode {m:o}, not 600");
    }

    // Negative twin: an existing PIN file that others may read is refused, naming the file,
    // its mode and the fix; after `chmod 600` the same command succeeds.
    let user_pin = d.path().join("pins/a/b/user.pin");
    std::fs::set_permissions(&user_pin, std::fs::Permissions::from_mode(0o644))?;
    let out = token_init(&d, &config, &so_pin)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "token init accepted a 0644 PIN file");
    ensure!(
        stderr.contains(&user_pin.display().to_string())
            && stderr.contains("0644")
            && stderr.contains("chmod 600"),
        "{stderr}"
    );
    std::fs::set_permissions(&user_pin, std::fs::Permissions::from_mode(0o600))?;
    std::fs::set_permissions(&so_pin, std::fs::Permissions::from_mode(0o640))?;
    let out = token_init(&d, &config, &so_pin)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success() && stderr.contains("0640"), "{stderr}");
    std::fs::set_permissions(&so_pin, std::fs::Permissions::from_mode(0o600))?;
    let out = token_init(&d, &config, &so_pin)?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test]
async fn the_server_refuses_a_pin_file_others_may_read() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let pin = d.path().join("user.pin");
    std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o604))?;
    let stderr = d.start_expecting_failure()?;
    ensure!(
        stderr.contains("user.pin") && stderr.contains("0604") && stderr.contains("chmod 600"),
        "{stderr}"
    );
    // Twin: owner-only (read-only here) starts.
    std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o400))?;
    let s = d.start().await?;
    s.get_public("/v1/health/live").await.ok();
    Ok(())
}

/// The soft and hard "Max core file size" of a process.
fn core_limits(pid: u32) -> anyhow::Result<(String, String)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .context("no core line")?;
    let mut fields = line["Max core file size".len()..].split_whitespace();
    Ok((
        fields.next().context("soft")?.to_owned(),
        fields.next().context("hard")?.to_owned(),
    ))
}

#[tokio::test]
async fn core_dumps_are_off_unless_dangerously_allowed() -> anyhow::Result<()> {
    // Launched with core dumps allowed, as a shell with `ulimit -c unlimited` would.
    let launcher = vec!["prlimit".to_owned(), "--core=1048576:unlimited".to_owned()];
    let mut d = Deployment::new()?;
    d.launcher = launcher.clone();
    let s = d.start().await?;
    ensure!(
        core_limits(s.pid())? == ("0".to_owned(), "0".to_owned()),
        "core limits {:?}",
        core_limits(s.pid())?
    );
    let (_, stderr) = s.output();
    let line = stderr
        .lines()
        .find(|l| l.contains("process hardening in force"))
        .context("no hardening line in the log")?;
    ensure!(line.contains("dumpable=0"), "{line}");
    ensure!(
        line.contains("core_limit_soft=0 core_limit_hard=0"),
        "{line}"
    );
    s.kill();

    // The opt-in leaves both as the environment set them, and says so loudly.
    let text = std::fs::read_to_string(d.config())?.replace(
        "[server]\n",
        "[server]\ndangerous_allow_core_dumps = true\n",
    );
    std::fs::write(d.config(), text)?;
    let s = d.start().await?;
    ensure!(
        core_limits(s.pid())? == ("1048576".to_owned(), "unlimited".to_owned()),
        "core limits {:?}",
        core_limits(s.pid())?
    );
    let (_, stderr) = s.output();
    let line = stderr
        .lines()
        .find(|l| l.contains("process hardening in force"))
        .context("no hardening line in the log")?;
    ensure!(line.contains("dumpable=1"), "{line}");
    ensure!(
        stderr.contains("dangerous_allow_core_dumps is set"),
        "no warning"
    );
    Ok(())
}
