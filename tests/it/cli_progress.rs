//! Progress and polish in the CLI (issue 18): `jobs watch` and `keys rotate --rewrap --wait`
//! follow a re-wrap job with plain lines when stdout is not a terminal and with an indicatif bar
//! (rate, ETA) on a pseudo-terminal (`script`), and exit non-zero when the job fails;
//! `completions bash|zsh|fish` and `man` come from the command tree.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::cli::{admin_cli, finish};
use crate::common::server::BIN;
use crate::common::{Deployment, Server};

/// Stores `n` secrets whose data keys `key` wraps.
async fn secrets_under(s: &Server, key: &str, n: usize) {
    for i in 0..n {
        s.send_json(
            Method::PUT,
            &format!("/v1/secrets/{key}/{i}"),
            json!({ "value_text": format!("v{i}"), "key": key }),
        )
        .await
        .ok();
    }
}

/// The newest running job of the key named `key`, waiting for it to appear.
async fn running_job(s: &Server, key: &str) -> String {
    let id = s.get(&format!("/v1/keys/{key}")).await.ok()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let jobs = s.get("/v1/jobs?state=running").await;
        if let Some(job) = jobs.ok()["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["key_id"] == id.as_str())
        {
            return job["id"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "no running job for {key}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn jobs_watch_prints_lines_to_a_pipe_and_draws_a_bar_on_a_terminal() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    d.append_config("[keys]\nrewrap_batch_size = 4\nrewrap_pause_ms = 150\n")?;
    let s = d.start().await?;
    s.create_key("w-key").await;
    secrets_under(&s, "w-key", 24).await;

    // Not a terminal: one plain line per change, the last one the completed job.
    s.post("/v1/keys/w-key/rotate", json!({})).await.ok();
    let job = running_job(&s, "w-key").await;
    let out = admin_cli(&s, &["jobs", "watch", &job, "--interval-ms", "100"], b"");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        !stdout.contains('\x1b') && !stdout.contains('\r'),
        "{stdout:?}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines.iter().all(|l| l.starts_with(&format!("job {job} "))),
        "{stdout}"
    );
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with(&format!("job {job} completed: 24/24 re-wrapped (100.0%)")),
        "{stdout}"
    );
    // Lines only when something changed: no two alike in a row.
    assert!(lines.windows(2).all(|w| w[0] != w[1]), "{stdout}");

    // A pseudo-terminal: the bar, redrawn in place, with rate and ETA; then the closing line.
    s.post("/v1/keys/w-key/rotate", json!({})).await.ok();
    let job = running_job(&s, "w-key").await;
    let mut c = Command::new("script");
    c.args(["--quiet", "--return", "--command"])
        .arg(format!("'{BIN}' jobs watch {job} --interval-ms 100"))
        .arg("/dev/null")
        .env("CUSTODIAN_ADDR", &s.base)
        .env("CUSTODIAN_TOKEN", &s.token)
        .env("TERM", "xterm")
        .env("COLUMNS", "160");
    let out = finish(c, b"");
    let screen = text(&out.stdout);
    assert!(out.status.success(), "{screen}{}", text(&out.stderr));
    for needle in ["re-wrapped", "ETA", "/s", "[", "\r"] {
        assert!(screen.contains(needle), "{needle:?} not drawn: {screen:?}");
    }
    assert!(
        screen.contains(&format!("job {job} completed: 24/24 re-wrapped (100.0%)")),
        "{screen:?}"
    );

    // Its twin: an unknown job is an error at once, not a bar.
    let out = admin_cli(
        &s,
        &["jobs", "watch", "00000000-0000-4000-8000-000000000000"],
        b"",
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("job_not_found"),
        "{}",
        text(&out.stderr)
    );

    // keys rotate --rewrap --wait: the key and the finished job as JSON, progress on stderr.
    let out = admin_cli(
        &s,
        &[
            "keys",
            "rotate",
            "w-key",
            "--rewrap",
            "--wait",
            "--interval-ms",
            "100",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(answer["key"]["primary_version"], 4);
    assert_eq!(answer["job"]["state"], "completed");
    assert_eq!(answer["job"]["target_version"], 4);
    assert_eq!(answer["job"]["remaining"], 0);
    assert!(
        text(&out.stderr).contains("completed: 24/24"),
        "{}",
        text(&out.stderr)
    );
    // --wait without --rewrap is refused by the parser.
    let out = admin_cli(&s, &["keys", "rotate", "w-key", "--wait"], b"");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    Ok(())
}

#[tokio::test]
async fn a_failed_job_makes_watch_and_rotate_wait_exit_non_zero() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    // One data key per batch and a pause: the job is still running when the key is disabled.
    d.append_config("[keys]\nrewrap_batch_size = 1\nrewrap_pause_ms = 1500\n")?;
    let s = d.start().await?;
    s.create_key("f-key").await;
    secrets_under(&s, "f-key", 4).await;

    let spawn = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env("CUSTODIAN_ADDR", &s.base)
            .env("CUSTODIAN_TOKEN", &s.token)
            .env_remove("CUSTODIAN_TOKEN_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let rotate = spawn(&[
        "keys",
        "rotate",
        "f-key",
        "--rewrap",
        "--wait",
        "--interval-ms",
        "100",
    ]);
    let job = running_job(&s, "f-key").await;
    let watch = spawn(&["jobs", "watch", &job, "--interval-ms", "100"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A disabled key cannot be re-wrapped to: the job's next batch fails it.
    s.post("/v1/keys/f-key/disable", json!({})).await.ok();

    let (rotate, watch) =
        tokio::task::spawn_blocking(move || (rotate.wait_with_output(), watch.wait_with_output()))
            .await?;
    let (rotate, watch) = (rotate?, watch?);
    for (name, out) in [("keys rotate --wait", &rotate), ("jobs watch", &watch)] {
        assert_eq!(out.status.code(), Some(1), "{name}: {}", text(&out.stderr));
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&format!("job {job} failed: ")) && stderr.contains("disabled"),
            "{name}: {stderr}"
        );
    }
    let last = text(&watch.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    assert!(last.starts_with(&format!("job {job} failed: ")), "{last}");
    // The rotation stands: its JSON is printed with the failed job.
    let answer: Value = serde_json::from_slice(&rotate.stdout)?;
    assert_eq!(answer["key"]["primary_version"], 2);
    assert_eq!(answer["job"]["state"], "failed");
    Ok(())
}

#[test]
fn completions_and_man_pages_come_from_the_command_tree() -> anyhow::Result<()> {
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env_remove("CUSTODIAN_TOKEN")
            .output()
            .unwrap()
    };
    // Bash: the script loads and registers a completion function for custodian.
    let bash = run(&["completions", "bash"]);
    assert!(bash.status.success());
    let script = text(&bash.stdout);
    assert!(
        script.contains("watch") && script.contains("--rewrap"),
        "{script}"
    );
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("custodian.bash");
    std::fs::write(&file, &script)?;
    let check = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source '{}' && complete -p custodian",
            file.display()
        ))
        .output()?;
    assert!(check.status.success(), "{}", text(&check.stderr));
    assert!(
        text(&check.stdout).contains("_custodian"),
        "{}",
        text(&check.stdout)
    );
    let zsh = text(&run(&["completions", "zsh"]).stdout);
    assert!(zsh.starts_with("#compdef custodian"), "{zsh}");
    let fish = text(&run(&["completions", "fish"]).stdout);
    assert!(
        fish.contains("complete -c custodian") && fish.contains("jobs"),
        "{fish}"
    );
    // Its twin: a shell we do not generate for.
    let ps = run(&["completions", "powershell"]);
    assert_eq!(ps.status.code(), Some(2));

    // The manual: one page on stdout, or a page per subcommand.
    let man = text(&run(&["man"]).stdout);
    assert!(man.contains(".TH custodian 1"), "{man}");
    assert!(man.contains("completions"), "{man}");
    let pages = dir.path().join("man");
    let out = run(&["man", "--out-dir", pages.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for page in [
        "custodian.1",
        "custodian-jobs-watch.1",
        "custodian-keys-rotate.1",
    ] {
        let body = std::fs::read_to_string(pages.join(page))?;
        assert!(body.contains(".TH"), "{page}");
    }
    let rotate = std::fs::read_to_string(pages.join("custodian-keys-rotate.1"))?;
    assert!(
        rotate.contains("rewrap") && rotate.contains("wait"),
        "{rotate}"
    );
    Ok(())
}
