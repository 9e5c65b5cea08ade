//! The `custodian secrets` CLI, end to end against the real binary: put (stdin and --file), get
//! (latest, --version, byte-exact binary values), check-and-set, list, delete/undelete/destroy,
//! metadata (max versions, expiry, custom, generation) and rotate; each with its failure twin.
//! Values never come from an argument, and a failed command prints nothing on stdout.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::cli::{admin_cli as cli, bytes_of, fails_with, json_of};
use crate::common::server::BIN;
use crate::common::{Deployment, Server};

/// Starts a deployment whose config ends with `[secrets]` holding `settings` (none when empty).
async fn start(settings: &str) -> anyhow::Result<(Deployment, Server)> {
    let mut d = Deployment::new()?;
    if !settings.is_empty() {
        let mut config = std::fs::OpenOptions::new().append(true).open(d.config())?;
        write!(config, "\n[secrets]\n{settings}\n")?;
    }
    let s = d.start().await?;
    Ok((d, s))
}

/// The states of a metadata record's versions, oldest first.
fn states(record: &Value) -> Vec<(u64, String)> {
    record["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap(),
                v["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn values_round_trip_from_stdin_and_files_byte_exact_with_check_and_set() -> anyhow::Result<()>
{
    let (d, s) = start("default_key = \"cli-sk\"\nmax_value_bytes = 4096").await?;
    s.create_key("cli-sk").await;

    // From stdin, byte for byte: the trailing newline is part of the value.
    let v1 = json_of(&cli(&s, &["secrets", "put", "team/app/db"], b"hunter2\n"));
    assert_eq!(v1["path"], "team/app/db");
    assert_eq!(v1["version"], 1);
    assert!(v1.get("value").is_none(), "put echoed the value: {v1}");
    assert_eq!(
        bytes_of(&cli(&s, &["secrets", "get", "team/app/db"], b"")),
        b"hunter2\n"
    );

    // From --file; stdin is ignored then.
    let file = d.path().join("value.bin");
    std::fs::write(&file, b"from a file")?;
    let v2 = json_of(&cli(
        &s,
        &[
            "secrets",
            "put",
            "team/app/db",
            "--file",
            file.to_str().unwrap(),
        ],
        b"not this",
    ));
    assert_eq!(v2["version"], 2);
    assert_eq!(
        bytes_of(&cli(&s, &["secrets", "get", "team/app/db"], b"")),
        b"from a file"
    );
    assert_eq!(
        bytes_of(&cli(
            &s,
            &["secrets", "get", "team/app/db", "--version", "1"],
            b""
        )),
        b"hunter2\n"
    );

    // Binary values: every byte value, invalid UTF-8 and NULs, through stdin and a file.
    let mut binary: Vec<u8> = (0..=255u8).collect();
    binary.extend_from_slice(b"\xff\xfe\xc3\x28\x00\x00\xed\xa0\x80");
    json_of(&cli(&s, &["secrets", "put", "bin/blob"], &binary));
    assert_eq!(
        bytes_of(&cli(&s, &["secrets", "get", "bin/blob"], b"")),
        binary
    );
    let reversed: Vec<u8> = binary.iter().rev().copied().collect();
    std::fs::write(&file, &reversed)?;
    json_of(&cli(
        &s,
        &[
            "secrets",
            "put",
            "bin/blob",
            "--file",
            file.to_str().unwrap(),
        ],
        b"",
    ));
    assert_eq!(
        bytes_of(&cli(&s, &["secrets", "get", "bin/blob"], b"")),
        reversed
    );
    assert_eq!(
        bytes_of(&cli(
            &s,
            &["secrets", "get", "bin/blob", "--version", "1"],
            b""
        )),
        binary
    );

    // Check-and-set: 0 means "no version yet"; a stale version is refused with the current one.
    json_of(&cli(
        &s,
        &["secrets", "put", "cas/one", "--cas", "0"],
        b"first",
    ));
    let stderr = fails_with(
        &cli(&s, &["secrets", "put", "cas/one", "--cas", "0"], b"second"),
        "cas_mismatch",
    );
    assert!(stderr.contains("current_version=1"), "{stderr}");
    let ok = json_of(&cli(
        &s,
        &["secrets", "put", "cas/one", "--cas", "1"],
        b"second",
    ));
    assert_eq!(ok["version"], 2);
    fails_with(
        &cli(&s, &["secrets", "put", "cas/one", "--cas", "1"], b"third"),
        "cas_mismatch",
    );
    assert_eq!(
        bytes_of(&cli(&s, &["secrets", "get", "cas/one"], b"")),
        b"second"
    );

    // Negative twins: a version that does not exist, a file that does not exist, a value over
    // the server's limit (nothing is written by any of them).
    fails_with(
        &cli(
            &s,
            &["secrets", "get", "team/app/db", "--version", "9"],
            b"",
        ),
        "secret_version_not_found",
    );
    let missing = d.path().join("no-such-file");
    fails_with(
        &cli(
            &s,
            &[
                "secrets",
                "put",
                "team/app/db",
                "--file",
                missing.to_str().unwrap(),
            ],
            b"",
        ),
        "cannot open value file",
    );
    fails_with(
        &cli(&s, &["secrets", "put", "team/app/db"], &[b'x'; 4097]),
        "value_too_large",
    );
    json_of(&cli(&s, &["secrets", "put", "team/app/db"], &[b'x'; 4096]));
    let meta = json_of(&cli(
        &s,
        &["secrets", "metadata", "get", "team/app/db"],
        b"",
    ));
    assert_eq!(meta["current_version"], 3);
    Ok(())
}

#[tokio::test]
async fn list_delete_undelete_and_destroy_change_what_get_returns() -> anyhow::Result<()> {
    let (_d, s) = start("default_key = \"cli-sk\"").await?;
    s.create_key("cli-sk").await;
    for (path, value) in [
        ("svc/a", &b"val-a1"[..]),
        ("svc/a", b"val-a2"),
        ("svc/a", b"val-a3"),
        ("svc/b", b"val-b1"),
        ("svc_c", b"val-c1"),
        ("other/x", b"val-x1"),
    ] {
        json_of(&cli(&s, &["secrets", "put", path], value));
    }

    // List: by path, prefix is a plain string (`_` is not a wildcard), metadata only.
    let page = json_of(&cli(&s, &["secrets", "list", "--prefix", "svc/"], b""));
    let paths: Vec<&str> = page["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["svc/a", "svc/b"]);
    assert!(page.get("next").is_none());
    assert_eq!(page["secrets"][0]["current_version"], 3);
    let text = String::from_utf8(cli(&s, &["secrets", "list"], b"").stdout)?;
    // "dmFsL" starts the base64 of every value.
    for value in ["val-", "dmFsL", "\"value"] {
        assert!(!text.contains(value), "list shows {value}: {text}");
    }
    let first = json_of(&cli(&s, &["secrets", "list", "--limit", "2"], b""));
    assert_eq!(first["secrets"].as_array().unwrap().len(), 2);
    assert_eq!(first["next"], "svc/a");
    let rest = json_of(&cli(
        &s,
        &["secrets", "list", "--limit", "2", "--after", "svc/a"],
        b"",
    ));
    assert_eq!(rest["secrets"][0]["path"], "svc/b");
    assert_eq!(rest["secrets"][1]["path"], "svc_c");
    assert!(rest.get("next").is_none());
    let none = json_of(&cli(&s, &["secrets", "list", "--prefix", "nothing/"], b""));
    assert_eq!(none["secrets"], Value::Array(Vec::new()));
    fails_with(
        &cli(&s, &["secrets", "list", "--limit", "0"], b""),
        "invalid_limit",
    );

    // Delete the newest live version: get falls back to the one before.
    let del = json_of(&cli(&s, &["secrets", "delete", "svc/a"], b""));
    assert_eq!(del["changed"], serde_json::json!([3]));
    assert_eq!(
        bytes_of(&cli(&s, &["secrets", "get", "svc/a"], b"")),
        b"val-a2"
    );
    fails_with(
        &cli(&s, &["secrets", "get", "svc/a", "--version", "3"], b""),
        "secret_version_deleted",
    );
    let del = json_of(&cli(
        &s,
        &["secrets", "delete", "svc/a", "--versions", "1,2"],
        b"",
    ));
    assert_eq!(del["changed"], serde_json::json!([1, 2]));
    fails_with(
        &cli(&s, &["secrets", "get", "svc/a"], b""),
        "secret_not_found",
    );

    // Undelete: default the newest deleted version; then a list.
    let und = json_of(&cli(&s, &["secrets", "undelete", "svc/a"], b""));
    assert_eq!(und["changed"], serde_json::json!([3]));
    assert_eq!(
        bytes_of(&cli(&s, &["secrets", "get", "svc/a"], b"")),
        b"val-a3"
    );
    let und = json_of(&cli(
        &s,
        &["secrets", "undelete", "svc/a", "--versions", "1,2"],
        b"",
    ));
    assert_eq!(und["changed"], serde_json::json!([1, 2]));
    assert_eq!(
        bytes_of(&cli(
            &s,
            &["secrets", "get", "svc/a", "--version", "1"],
            b""
        )),
        b"val-a1"
    );

    // Destroy: gone for good, and undelete cannot bring it back.
    let des = json_of(&cli(
        &s,
        &["secrets", "destroy", "svc/a", "--versions", "1"],
        b"",
    ));
    assert_eq!(des["changed"], serde_json::json!([1]));
    fails_with(
        &cli(&s, &["secrets", "get", "svc/a", "--version", "1"], b""),
        "secret_version_destroyed",
    );
    fails_with(
        &cli(
            &s,
            &["secrets", "undelete", "svc/a", "--versions", "1"],
            b"",
        ),
        "secret_version_destroyed",
    );
    let meta = json_of(&cli(&s, &["secrets", "metadata", "get", "svc/a"], b""));
    assert_eq!(
        states(&meta),
        [
            (1, "destroyed".to_owned()),
            (2, "live".to_owned()),
            (3, "live".to_owned())
        ]
    );
    assert!(meta["versions"][0]["destroyed_at"].is_string());
    assert!(meta["versions"][0]["key_id"].is_null());

    // Negative twins: versions that do not exist, a destroy without versions, bad lists.
    fails_with(
        &cli(&s, &["secrets", "delete", "svc/a", "--versions", "7"], b""),
        "secret_version_not_found",
    );
    fails_with(
        &cli(
            &s,
            &["secrets", "destroy", "svc/a", "--versions", "2,9"],
            b"",
        ),
        "secret_version_not_found",
    );
    assert_eq!(
        bytes_of(&cli(&s, &["secrets", "get", "svc/a"], b"")),
        b"val-a3"
    );
    let no_versions = cli(&s, &["secrets", "destroy", "svc/a"], b"");
    assert!(!no_versions.status.success());
    assert!(String::from_utf8_lossy(&no_versions.stderr).contains("--versions"));
    let not_numbers = cli(
        &s,
        &["secrets", "delete", "svc/a", "--versions", "1,x"],
        b"",
    );
    assert!(!not_numbers.status.success());
    assert!(not_numbers.stdout.is_empty());
    assert_eq!(
        bytes_of(&cli(&s, &["secrets", "get", "svc/a"], b"")),
        b"val-a3"
    );
    Ok(())
}

#[tokio::test]
async fn metadata_set_get_generation_rotation_and_expiry() -> anyhow::Result<()> {
    let (_d, s) = start("default_key = \"cli-sk\"").await?;
    s.create_key("cli-sk").await;

    // Generation turned on for a new path writes version 1 at once.
    let rec = json_of(&cli(
        &s,
        &[
            "secrets",
            "metadata",
            "set",
            "gen/db",
            "--generate-length",
            "24",
            "--generate-charset",
            "hex",
            "--rotate-every",
            "1h",
            "--max-versions",
            "3",
            "--custom",
            "owner=team-a",
            "--custom",
            "note=a=b",
        ],
        b"",
    ));
    assert_eq!(rec["path"], "gen/db");
    assert_eq!(rec["current_version"], 1);
    assert_eq!(rec["max_versions"], 3);
    assert_eq!(
        rec["generate"],
        serde_json::json!({"length": 24, "charset": "hex", "rotate_every": "1h"})
    );
    assert!(rec["next_rotation_at"].is_string());
    assert_eq!(
        rec["custom"],
        serde_json::json!({"owner": "team-a", "note": "a=b"})
    );
    let first = bytes_of(&cli(&s, &["secrets", "get", "gen/db"], b""));
    assert_eq!(first.len(), 24);
    assert!(first.iter().all(|b| b"0123456789abcdef".contains(b)));

    // Rotate writes a fresh value; beyond max_versions the oldest are destroyed.
    let r = json_of(&cli(&s, &["secrets", "rotate", "gen/db"], b""));
    assert_eq!(r["version"], 2);
    let second = bytes_of(&cli(&s, &["secrets", "get", "gen/db"], b""));
    assert_eq!(second.len(), 24);
    assert_ne!(first, second);
    for _ in 0..2 {
        json_of(&cli(&s, &["secrets", "rotate", "gen/db"], b""));
    }
    let meta = json_of(&cli(&s, &["secrets", "metadata", "get", "gen/db"], b""));
    assert_eq!(meta["current_version"], 4);
    assert_eq!(
        states(&meta),
        [
            (1, "destroyed".to_owned()),
            (2, "live".to_owned()),
            (3, "live".to_owned()),
            (4, "live".to_owned())
        ]
    );
    assert_eq!(meta["custom"]["owner"], "team-a");

    // Changing one field leaves the others; --custom replaces the whole map.
    let rec = json_of(&cli(
        &s,
        &[
            "secrets", "metadata", "set", "gen/db", "--custom", "env=prod",
        ],
        b"",
    ));
    assert_eq!(rec["custom"], serde_json::json!({"env": "prod"}));
    assert_eq!(rec["max_versions"], 3);
    assert_eq!(rec["generate"]["length"], 24);
    let rec = json_of(&cli(
        &s,
        &[
            "secrets",
            "metadata",
            "set",
            "gen/db",
            "--max-versions",
            "1",
        ],
        b"",
    ));
    assert_eq!(rec["max_versions"], 1);
    assert_eq!(states(&rec)[2], (3, "destroyed".to_owned()));
    assert_eq!(states(&rec)[3], (4, "live".to_owned()));

    // --no-generate stops rotation; rotate is then refused.
    let rec = json_of(&cli(
        &s,
        &["secrets", "metadata", "set", "gen/db", "--no-generate"],
        b"",
    ));
    assert!(rec.get("generate").is_none(), "{rec}");
    assert!(rec.get("next_rotation_at").is_none(), "{rec}");
    fails_with(
        &cli(&s, &["secrets", "rotate", "gen/db"], b""),
        "secret_not_generated",
    );

    // Metadata on a plain secret, and a path created by metadata alone has no value yet.
    json_of(&cli(&s, &["secrets", "put", "plain/one"], b"v"));
    fails_with(
        &cli(&s, &["secrets", "rotate", "plain/one"], b""),
        "secret_not_generated",
    );
    let empty = json_of(&cli(
        &s,
        &[
            "secrets",
            "metadata",
            "set",
            "plain/empty",
            "--max-versions",
            "0",
        ],
        b"",
    ));
    assert_eq!(empty["current_version"], 0);
    assert_eq!(empty["max_versions"], 0);
    fails_with(
        &cli(&s, &["secrets", "get", "plain/empty"], b""),
        "secret_not_found",
    );

    // Expiry: a version older than expires_after is 410; clearing the expiry brings it back.
    let rec = json_of(&cli(
        &s,
        &[
            "secrets",
            "metadata",
            "set",
            "plain/one",
            "--expires-after",
            "1s",
        ],
        b"",
    ));
    assert_eq!(rec["expires_after"], "1s");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    fails_with(
        &cli(&s, &["secrets", "get", "plain/one"], b""),
        "secret_version_expired",
    );
    let rec = json_of(&cli(
        &s,
        &["secrets", "metadata", "set", "plain/one", "--no-expiry"],
        b"",
    ));
    assert!(rec.get("expires_after").is_none(), "{rec}");
    assert_eq!(
        bytes_of(&cli(&s, &["secrets", "get", "plain/one"], b"")),
        b"v"
    );

    // Negative twins: out-of-bounds metadata, a bad duration, malformed or partial flags.
    fails_with(
        &cli(
            &s,
            &[
                "secrets",
                "metadata",
                "set",
                "gen/bad",
                "--generate-length",
                "0",
                "--generate-charset",
                "hex",
                "--rotate-every",
                "1h",
            ],
            b"",
        ),
        "invalid_metadata",
    );
    fails_with(
        &cli(
            &s,
            &[
                "secrets",
                "metadata",
                "set",
                "plain/one",
                "--expires-after",
                "soon",
            ],
            b"",
        ),
        "invalid_field",
    );
    fails_with(
        &cli(
            &s,
            &[
                "secrets",
                "metadata",
                "set",
                "plain/one",
                "--custom",
                "novalue",
            ],
            b"",
        ),
        "--custom",
    );
    for args in [
        &["--generate-length", "8"][..],
        &["--expires-after", "1d", "--no-expiry"],
        &[
            "--no-generate",
            "--generate-length",
            "8",
            "--generate-charset",
            "hex",
            "--rotate-every",
            "1h",
        ],
        &[
            "--generate-length",
            "8",
            "--generate-charset",
            "emoji",
            "--rotate-every",
            "1h",
        ],
    ] {
        let mut all = vec!["secrets", "metadata", "set", "gen/never"];
        all.extend_from_slice(args);
        let out = cli(&s, &all, b"");
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(out.stdout.is_empty());
    }
    fails_with(
        &cli(&s, &["secrets", "metadata", "get", "gen/never"], b""),
        "secret_not_found",
    );
    fails_with(
        &cli(&s, &["secrets", "metadata", "get", "gen/bad"], b""),
        "secret_not_found",
    );
    Ok(())
}

#[tokio::test]
async fn bad_paths_unknown_secrets_keys_and_tokens_fail_cleanly() -> anyhow::Result<()> {
    // No default key: a write must name one.
    let (d, s) = start("").await?;
    s.create_key("cli-named").await;
    fails_with(
        &cli(&s, &["secrets", "put", "needs/key"], b"v"),
        "key_required",
    );
    json_of(&cli(
        &s,
        &["secrets", "put", "needs/key", "--key", "cli-named"],
        b"v",
    ));
    json_of(&cli(&s, &["secrets", "put", "needs/key"], b"w"));
    assert_eq!(
        bytes_of(&cli(&s, &["secrets", "get", "needs/key"], b"")),
        b"w"
    );
    fails_with(
        &cli(
            &s,
            &["secrets", "put", "other/key", "--key", "no-such-key"],
            b"v",
        ),
        "key_not_found",
    );

    // Paths the server refuses.
    for bad in ["bad path", "a//b", "/lead", "trail/", "é", "a%2Fb"] {
        fails_with(
            &cli(&s, &["secrets", "put", bad, "--key", "cli-named"], b"v"),
            "invalid_secret_path",
        );
        fails_with(
            &cli(&s, &["secrets", "get", bad], b""),
            "invalid_secret_path",
        );
    }
    let deep = vec!["d"; 17].join("/");
    fails_with(
        &cli(&s, &["secrets", "metadata", "get", &deep], b""),
        "invalid_secret_path",
    );
    // Paths no URL can carry are refused before any request: `a/../needs/key` must not
    // address `needs/key`, nor `needs/metadata` the metadata of `needs`.
    for bad in [
        "a/../needs/key",
        "./needs/key",
        "needs/key/..",
        "needs/metadata",
        "",
    ] {
        fails_with(
            &cli(&s, &["secrets", "get", bad], b""),
            "invalid_secret_path",
        );
        fails_with(
            &cli(&s, &["secrets", "delete", bad], b""),
            "invalid_secret_path",
        );
    }
    fails_with(
        &cli(
            &s,
            &["secrets", "put", "x/rotate", "--key", "cli-named"],
            b"v",
        ),
        "invalid_secret_path",
    );
    assert_eq!(
        bytes_of(&cli(&s, &["secrets", "get", "needs/key"], b"")),
        b"w"
    );

    // Paths that do not exist.
    for args in [
        &["secrets", "get", "no/such"][..],
        &["secrets", "get", "no/such", "--version", "1"],
        &["secrets", "delete", "no/such"],
        &["secrets", "undelete", "no/such"],
        &["secrets", "destroy", "no/such", "--versions", "1"],
        &["secrets", "metadata", "get", "no/such"],
        &["secrets", "rotate", "no/such"],
    ] {
        fails_with(&cli(&s, args, b""), "secret_not_found");
    }

    // No token, a wrong token, a token file.
    let no_token = Command::new(BIN)
        .args(["secrets", "get", "needs/key"])
        .env("CUSTODIAN_ADDR", &s.base)
        .env_remove("CUSTODIAN_TOKEN")
        .env_remove("CUSTODIAN_TOKEN_FILE")
        .stdin(Stdio::null())
        .output()?;
    assert!(fails_with(&no_token, "CUSTODIAN_TOKEN").contains("no token"));
    // put fails on the missing token before it waits for a value on stdin.
    let no_token_put = Command::new(BIN)
        .args(["secrets", "put", "needs/key"])
        .env("CUSTODIAN_ADDR", &s.base)
        .env_remove("CUSTODIAN_TOKEN")
        .env_remove("CUSTODIAN_TOKEN_FILE")
        .stdin(Stdio::piped())
        .output()?;
    fails_with(&no_token_put, "CUSTODIAN_TOKEN");
    let wrong = Command::new(BIN)
        .args(["secrets", "get", "needs/key"])
        .env("CUSTODIAN_ADDR", &s.base)
        .env(
            "CUSTODIAN_TOKEN",
            "cst_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )
        .env_remove("CUSTODIAN_TOKEN_FILE")
        .output()?;
    fails_with(&wrong, "invalid_token");
    let token_file = d.path().join("token");
    std::fs::write(&token_file, format!("{}\n", s.token))?;
    let via_file = Command::new(BIN)
        .args(["secrets", "get", "needs/key", "--token-file"])
        .arg(&token_file)
        .env("CUSTODIAN_ADDR", &s.base)
        .env_remove("CUSTODIAN_TOKEN")
        .output()?;
    assert_eq!(bytes_of(&via_file), b"w");
    assert_eq!(
        bytes_of(&cli(&s, &["secrets", "get", "needs/key"], b"")),
        b"w"
    );
    Ok(())
}

#[test]
fn secrets_subcommands_explain_themselves_and_take_no_value_argument() {
    for args in [
        &["secrets", "--help"][..],
        &["secrets", "put", "--help"],
        &["secrets", "get", "--help"],
        &["secrets", "list", "--help"],
        &["secrets", "delete", "--help"],
        &["secrets", "undelete", "--help"],
        &["secrets", "destroy", "--help"],
        &["secrets", "metadata", "--help"],
        &["secrets", "metadata", "get", "--help"],
        &["secrets", "metadata", "set", "--help"],
        &["secrets", "rotate", "--help"],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
        assert!(text.contains("usage"), "{args:?}: {text}");
        for forbidden in ["--token ", "--pin", "--plaintext", "--password", "--value"] {
            assert!(!text.contains(forbidden), "{args:?} offers {forbidden}");
        }
    }

    // `put` takes the path as its only argument, and exactly these options: none carries the
    // value itself (`--ca-file` and `--client-identity` name files: the server's CA, and a
    // client certificate with its key, read from the file, never from the argument).
    let out = Command::new(BIN)
        .args(["secrets", "put", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut options: Vec<&str> = text
        .lines()
        .flat_map(|l| l.split_whitespace())
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.trim_end_matches([',', '.', ')']))
        .collect();
    options.sort_unstable();
    options.dedup();
    assert_eq!(
        options,
        [
            "--addr",
            "--ca-file",
            "--cas",
            "--client-identity",
            "--file",
            "--help",
            "--key",
            "--token-file"
        ],
        "{text}"
    );
    assert!(
        text.contains("Usage: custodian secrets put [OPTIONS] <PATH>\n"),
        "{text}"
    );
    let extra = Command::new(BIN)
        .args(["secrets", "put", "a/b", "hunter2"])
        .env_remove("CUSTODIAN_TOKEN")
        .output()
        .unwrap();
    assert!(!extra.status.success());
    assert!(String::from_utf8_lossy(&extra.stderr).contains("unexpected argument"));
}
