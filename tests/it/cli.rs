//! The CLI, end to end: `keys create|list|show`, `datakey`, `encrypt | decrypt` against a running
//! server, token from the environment or a file, never from an argument.

use std::process::Command;

use crate::common::cli::{admin_cli as cli, json_of};
use crate::common::server::BIN;
use crate::common::{unb64, Deployment};

#[tokio::test]
async fn the_cli_creates_a_key_gets_a_data_key_and_round_trips_data() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    let created = json_of(&cli(
        &s,
        &["keys", "create", "cli-key", "--description", "from the CLI"],
        b"",
    ));
    assert_eq!(created["name"], "cli-key");
    assert_eq!(created["description"], "from the CLI");
    let listed = json_of(&cli(&s, &["keys", "list"], b""));
    assert_eq!(listed["keys"][0]["id"], created["id"]);
    let shown = json_of(&cli(
        &s,
        &["keys", "show", created["id"].as_str().unwrap()],
        b"",
    ));
    assert_eq!(shown["name"], "cli-key");

    let dk = json_of(&cli(
        &s,
        &[
            "datakey",
            "cli-key",
            "--context",
            "app=cli",
            "--bytes",
            "16",
        ],
        b"",
    ));
    assert_eq!(unb64(dk["plaintext"].as_str().unwrap()).len(), 16);
    let blob = unb64(dk["ciphertext"].as_str().unwrap());
    let out = cli(&s, &["decrypt", "--context", "app=cli"], &blob);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, unb64(dk["plaintext"].as_str().unwrap()));

    let data = b"streamed through the CLI\x00\xff";
    let enc = cli(
        &s,
        &["encrypt", "cli-key", "--context", "a=b", "--context", "c=d"],
        data,
    );
    assert!(
        enc.status.success(),
        "{}",
        String::from_utf8_lossy(&enc.stderr)
    );
    let dec = cli(
        &s,
        &["decrypt", "--context", "c=d", "--context", "a=b"],
        &enc.stdout,
    );
    assert_eq!(dec.stdout, data);
    let enc64 = cli(&s, &["encrypt", "cli-key", "--base64"], b"text mode");
    let dec64 = cli(&s, &["decrypt", "--base64"], &enc64.stdout);
    assert_eq!(dec64.stdout, b"text mode");

    // Negative twins: wrong context, unknown key, no token, a token file.
    let wrong = cli(
        &s,
        &["decrypt", "--context", "a=x", "--context", "c=d"],
        &enc.stdout,
    );
    assert!(!wrong.status.success());
    assert!(wrong.stdout.is_empty(), "plaintext printed on failure");
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("decryption_failed"));
    let missing = cli(&s, &["datakey", "no-such-key"], b"");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("key_not_found"));
    let bad_ctx = cli(&s, &["datakey", "cli-key", "--context", "novalue"], b"");
    assert!(!bad_ctx.status.success());

    let no_token = Command::new(BIN)
        .args(["keys", "list"])
        .env("CUSTODIAN_ADDR", &s.base)
        .env_remove("CUSTODIAN_TOKEN")
        .env_remove("CUSTODIAN_TOKEN_FILE")
        .output()?;
    assert!(!no_token.status.success());
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("CUSTODIAN_TOKEN"));
    let token_file = d.path().join("token");
    std::fs::write(&token_file, format!("{}\n", s.token))?;
    let via_file = Command::new(BIN)
        .args(["keys", "list", "--token-file"])
        .arg(&token_file)
        .env("CUSTODIAN_ADDR", &s.base)
        .env_remove("CUSTODIAN_TOKEN")
        .output()?;
    assert_eq!(json_of(&via_file)["keys"][0]["name"], "cli-key");
    Ok(())
}

#[test]
fn every_subcommand_explains_itself_and_takes_no_secret_arguments() {
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["token", "init", "--help"],
        &["keys", "create", "--help"],
        &["keys", "list", "--help"],
        &["keys", "show", "--help"],
        &["datakey", "--help"],
        &["encrypt", "--help"],
        &["decrypt", "--help"],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
        assert!(text.contains("usage"), "{args:?}: {text}");
        for forbidden in ["--token ", "--pin", "--plaintext", "--password"] {
            assert!(!text.contains(forbidden), "{args:?} offers {forbidden}");
        }
    }
}
