//! Running the `custodian` CLI in tests: spawn with stdin piped in, a 60 s deadline, and the
//! assertions every CLI test makes about its output.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::server::{Server, BIN};

/// Runs `c` with `stdin` piped in; a command still running after 60 s is killed and fails the
/// test.
pub fn finish(mut c: Command, stdin: &[u8]) -> Output {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the CLI");
    // A command that fails before reading stdin closes it: a broken pipe here is expected.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after 60 s; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Runs the CLI against `s` with the admin token in the environment.
pub fn admin_cli(s: &Server, args: &[&str], stdin: &[u8]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("CUSTODIAN_ADDR", &s.base)
        .env("CUSTODIAN_TOKEN", &s.token)
        .env_remove("CUSTODIAN_TOKEN_FILE");
    finish(c, stdin)
}

/// Asserts success and parses stdout as JSON.
#[track_caller]
pub fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// Asserts success and returns the raw stdout.
#[track_caller]
pub fn bytes_of(out: &Output) -> Vec<u8> {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout.clone()
}

/// Asserts failure with `code` in an `error: …` line on stderr and nothing on stdout; returns
/// stderr.
#[track_caller]
pub fn fails_with(out: &Output, code: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "expected {code}, succeeded: {stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "stdout on failure: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.starts_with("error: "), "stderr: {stderr}");
    assert!(stderr.contains(code), "expected {code}, got: {stderr}");
    stderr
}
