//! The key lifecycle CLI, end to end against the real binary: `keys rotate|update|disable|enable|
//! schedule-deletion|cancel-deletion|versions|version …|rewrap`, `reencrypt`, `aliases …` and
//! `jobs …`, each with its failure twin. A failed command prints nothing on stdout, and
//! `reencrypt` never prints plaintext.

use std::process::Command;

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::common::cli::{admin_cli as cli, bytes_of, fails_with, json_of};
use crate::common::server::BIN;
use crate::common::{unb64, unique, Deployment, Server};

/// Starts a deployment whose config ends with `extra` (TOML sections).
async fn start(extra: &str) -> anyhow::Result<(Deployment, Server)> {
    let mut d = Deployment::new()?;
    if !extra.is_empty() {
        d.append_config(extra)?;
    }
    let s = d.start().await?;
    Ok((d, s))
}

/// The key version a blob names (header bytes 22..26).
fn blob_version(blob: &[u8]) -> u32 {
    u32::from_be_bytes(blob[22..26].try_into().unwrap())
}

/// The key id a blob names (header bytes 6..22), hyphenated.
fn blob_key(blob: &[u8]) -> String {
    uuid::Uuid::from_slice(&blob[6..22]).unwrap().to_string()
}

/// `(version, state, stored_data_keys)` of each entry of `keys versions`.
fn version_states(versions: &Value) -> Vec<(u64, String, u64)> {
    versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap(),
                v["state"].as_str().unwrap().to_owned(),
                v["stored_data_keys"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn date(v: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(v.as_str().unwrap(), &Rfc3339).unwrap()
}

#[tokio::test]
async fn rotation_keeps_old_blobs_readable_and_reencrypt_moves_them_forward() -> anyhow::Result<()>
{
    let (_d, s) = start("").await?;
    let name = unique("cli-rot");
    let other = unique("cli-dest");
    json_of(&cli(&s, &["keys", "create", &name], b""));
    let other_key = json_of(&cli(&s, &["keys", "create", &other], b""));
    let data = b"sealed before the rotation\x00\xff";
    let old = bytes_of(&cli(&s, &["encrypt", &name, "--context", "app=a"], data));
    assert_eq!(blob_version(&old), 1);

    let rotated = json_of(&cli(&s, &["keys", "rotate", &name], b""));
    assert_eq!(rotated["primary_version"], 2);
    assert_eq!(rotated["versions"][0]["state"], "active");
    assert_eq!(rotated["versions"][1]["state"], "primary");
    let new = bytes_of(&cli(&s, &["encrypt", &name], b"after"));
    assert_eq!(blob_version(&new), 2, "new blobs use the new primary");
    assert_eq!(
        bytes_of(&cli(&s, &["decrypt", "--context", "app=a"], &old)),
        data,
        "a blob sealed before the rotation still decrypts"
    );

    let versions = json_of(&cli(&s, &["keys", "versions", &name], b""));
    assert_eq!(versions["key_id"], rotated["id"]);
    assert_eq!(versions["primary_version"], 2);
    assert_eq!(versions["min_decryption_version"], 1);
    assert_eq!(
        version_states(&versions),
        [(1, "active".into(), 0), (2, "primary".into(), 0)]
    );

    // Re-encrypt to the new version of the same key, the context kept; raw in, raw out.
    let moved = cli(&s, &["reencrypt", "--context", "app=a"], &old);
    let moved = bytes_of(&moved);
    assert_eq!(blob_version(&moved), 2);
    assert_eq!(blob_key(&moved), rotated["id"].as_str().unwrap());
    assert!(
        !moved.windows(data.len()).any(|w| w == data),
        "reencrypt printed the plaintext"
    );
    assert_eq!(
        bytes_of(&cli(&s, &["decrypt", "--context", "app=a"], &moved)),
        data
    );

    // To another key through an alias, with a new context; base64 in, base64 out.
    json_of(&cli(
        &s,
        &["aliases", "create", "cli-dest-now", &other],
        b"",
    ));
    let old64 = format!("{}\n", crate::common::b64(&old));
    let out = cli(
        &s,
        &[
            "reencrypt",
            "--base64",
            "--context",
            "app=a",
            "--destination-key",
            "alias/cli-dest-now",
            "--destination-context",
            "app=b",
            "--destination-context",
            "tier=2",
        ],
        old64.as_bytes(),
    );
    let text = String::from_utf8(bytes_of(&out))?;
    assert!(text.ends_with('\n'), "base64 output is one line");
    let elsewhere = unb64(text.trim());
    assert_eq!(blob_key(&elsewhere), other_key["id"].as_str().unwrap());
    assert_eq!(blob_version(&elsewhere), 1);
    assert_eq!(
        bytes_of(&cli(
            &s,
            &[
                "decrypt",
                "--base64",
                "--context",
                "tier=2",
                "--context",
                "app=b"
            ],
            text.as_bytes()
        )),
        data
    );
    fails_with(
        &cli(&s, &["decrypt", "--context", "app=a"], &elsewhere),
        "decryption_failed",
    );
    // The empty destination context.
    let emptied = bytes_of(&cli(
        &s,
        &[
            "reencrypt",
            "--context",
            "app=a",
            "--empty-destination-context",
        ],
        &old,
    ));
    assert_eq!(bytes_of(&cli(&s, &["decrypt"], &emptied)), data);

    // Negative twins: a wrong source context, a tampered blob, an unknown destination.
    fails_with(
        &cli(&s, &["reencrypt", "--context", "app=x"], &old),
        "decryption_failed",
    );
    let mut tampered = old.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    fails_with(
        &cli(&s, &["reencrypt", "--context", "app=a"], &tampered),
        "decryption_failed",
    );
    fails_with(
        &cli(
            &s,
            &[
                "reencrypt",
                "--context",
                "app=a",
                "--destination-key",
                "alias/nowhere",
            ],
            &old,
        ),
        "key_not_found",
    );
    let both = cli(
        &s,
        &[
            "reencrypt",
            "--destination-context",
            "a=b",
            "--empty-destination-context",
        ],
        &old,
    );
    assert!(!both.status.success() && both.stdout.is_empty());
    Ok(())
}

#[tokio::test]
async fn updates_and_version_states_govern_what_decrypts() -> anyhow::Result<()> {
    let (_d, s) = start("").await?;
    let name = unique("cli-upd");
    json_of(&cli(&s, &["keys", "create", &name], b""));
    let old = bytes_of(&cli(&s, &["encrypt", &name], b"version one"));
    json_of(&cli(&s, &["keys", "rotate", &name], b""));

    // Description and rotation period; options left out stay.
    let k = json_of(&cli(
        &s,
        &[
            "keys",
            "update",
            &name,
            "--description",
            "rotated quarterly",
            "--rotation-period",
            "90d",
        ],
        b"",
    ));
    assert_eq!(k["description"], "rotated quarterly");
    assert_eq!(k["rotation_period"], "90d");
    let next = date(&k["next_rotation_at"]);
    let in_90d = OffsetDateTime::now_utc() + time::Duration::days(90);
    assert!((next - in_90d).abs() < time::Duration::minutes(5), "{next}");
    let k = json_of(&cli(&s, &["keys", "update", &name, "--no-rotation"], b""));
    assert!(k.get("rotation_period").is_none(), "{k}");
    assert!(k.get("next_rotation_at").is_none(), "{k}");
    assert_eq!(k["description"], "rotated quarterly");
    fails_with(
        &cli(
            &s,
            &["keys", "update", &name, "--rotation-period", "5m"],
            b"",
        ),
        "invalid_field",
    );
    fails_with(
        &cli(
            &s,
            &["keys", "update", &name, "--rotation-period", "soon"],
            b"",
        ),
        "invalid_field",
    );
    // Nothing to change, or two contradictory changes: refused before any request.
    let nothing = cli(&s, &["keys", "update", &name], b"");
    assert!(!nothing.status.success() && nothing.stdout.is_empty());
    let both = cli(
        &s,
        &[
            "keys",
            "update",
            &name,
            "--rotation-period",
            "90d",
            "--no-rotation",
        ],
        b"",
    );
    assert!(!both.status.success() && both.stdout.is_empty());

    // min_decryption_version retires version 1 without destroying it, and back.
    let k = json_of(&cli(
        &s,
        &["keys", "update", &name, "--min-decryption-version", "2"],
        b"",
    ));
    assert_eq!(k["min_decryption_version"], 2);
    fails_with(&cli(&s, &["decrypt"], &old), "key_version_below_minimum");
    fails_with(&cli(&s, &["reencrypt"], &old), "key_version_below_minimum");
    fails_with(
        &cli(
            &s,
            &["keys", "update", &name, "--min-decryption-version", "3"],
            b"",
        ),
        "invalid_field",
    );
    json_of(&cli(
        &s,
        &["keys", "update", &name, "--min-decryption-version", "1"],
        b"",
    ));
    assert_eq!(bytes_of(&cli(&s, &["decrypt"], &old)), b"version one");

    // Version states: the primary is protected; a disabled version decrypts nothing.
    fails_with(
        &cli(&s, &["keys", "version", "disable", &name, "2"], b""),
        "primary_version",
    );
    fails_with(
        &cli(&s, &["keys", "version", "destroy", &name, "2"], b""),
        "primary_version",
    );
    fails_with(
        &cli(&s, &["keys", "version", "disable", &name, "9"], b""),
        "key_version_not_found",
    );
    let k = json_of(&cli(&s, &["keys", "version", "disable", &name, "1"], b""));
    assert_eq!(k["versions"][0]["state"], "disabled");
    fails_with(&cli(&s, &["decrypt"], &old), "key_version_disabled");
    let k = json_of(&cli(&s, &["keys", "version", "enable", &name, "1"], b""));
    assert_eq!(k["versions"][0]["state"], "active");
    assert_eq!(bytes_of(&cli(&s, &["decrypt"], &old)), b"version one");

    // Nothing stored references version 1: it can be destroyed, for good.
    let k = json_of(&cli(&s, &["keys", "version", "destroy", &name, "1"], b""));
    assert_eq!(k["versions"][0]["state"], "destroyed");
    let versions = json_of(&cli(&s, &["keys", "versions", &name], b""));
    assert_eq!(
        version_states(&versions),
        [(1, "destroyed".into(), 0), (2, "primary".into(), 0)]
    );
    assert!(versions["versions"][0]["destroyed_at"].is_string());
    fails_with(&cli(&s, &["decrypt"], &old), "key_version_destroyed");
    fails_with(
        &cli(&s, &["keys", "version", "enable", &name, "1"], b""),
        "key_version_destroyed",
    );
    Ok(())
}

#[tokio::test]
async fn disable_enable_and_deletion_follow_the_state_machine() -> anyhow::Result<()> {
    let (_d, s) = start("").await?;
    let name = unique("cli-state");
    json_of(&cli(&s, &["keys", "create", &name], b""));
    json_of(&cli(&s, &["datakey", &name, "--no-plaintext"], b""));

    let k = json_of(&cli(&s, &["keys", "disable", &name], b""));
    assert_eq!(k["state"], "disabled");
    // A repeat is a no-op, not an error.
    let k = json_of(&cli(&s, &["keys", "disable", &name], b""));
    assert_eq!(k["state"], "disabled");
    let stderr = fails_with(&cli(&s, &["datakey", &name], b""), "key_disabled");
    assert!(stderr.contains("409"), "{stderr}");
    fails_with(&cli(&s, &["keys", "rotate", &name], b""), "key_disabled");
    let k = json_of(&cli(&s, &["keys", "enable", &name], b""));
    assert_eq!(k["state"], "enabled");
    json_of(&cli(&s, &["keys", "enable", &name], b""));
    json_of(&cli(&s, &["datakey", &name, "--no-plaintext"], b""));

    // The waiting period is 7 to 30 days; the default is 30.
    for bad in ["3", "6", "31"] {
        fails_with(
            &cli(
                &s,
                &["keys", "schedule-deletion", &name, "--pending-days", bad],
                b"",
            ),
            "invalid_pending_days",
        );
    }
    fails_with(
        &cli(&s, &["keys", "cancel-deletion", &name], b""),
        "invalid_key_state",
    );
    let k = json_of(&cli(&s, &["keys", "schedule-deletion", &name], b""));
    assert_eq!(k["state"], "pending_deletion");
    let in_30d = OffsetDateTime::now_utc() + time::Duration::days(30);
    let when = date(&k["deletion_date"]);
    assert!((when - in_30d).abs() < time::Duration::minutes(5), "{when}");
    fails_with(&cli(&s, &["datakey", &name], b""), "key_pending_deletion");
    fails_with(
        &cli(&s, &["keys", "enable", &name], b""),
        "invalid_key_state",
    );
    fails_with(
        &cli(&s, &["keys", "schedule-deletion", &name], b""),
        "invalid_key_state",
    );

    // Cancelling returns to disabled, not enabled.
    let k = json_of(&cli(&s, &["keys", "cancel-deletion", &name], b""));
    assert_eq!(k["state"], "disabled");
    assert!(k.get("deletion_date").is_none(), "{k}");
    fails_with(&cli(&s, &["datakey", &name], b""), "key_disabled");
    // From disabled, with the shortest window.
    let k = json_of(&cli(
        &s,
        &["keys", "schedule-deletion", &name, "--pending-days", "7"],
        b"",
    ));
    let in_7d = OffsetDateTime::now_utc() + time::Duration::days(7);
    assert!((date(&k["deletion_date"]) - in_7d).abs() < time::Duration::minutes(5));
    json_of(&cli(&s, &["keys", "cancel-deletion", &name], b""));
    json_of(&cli(&s, &["keys", "enable", &name], b""));
    json_of(&cli(&s, &["datakey", &name, "--no-plaintext"], b""));

    fails_with(
        &cli(&s, &["keys", "disable", "no-such-key"], b""),
        "key_not_found",
    );
    Ok(())
}

#[tokio::test]
async fn aliases_are_created_shown_listed_repointed_and_deleted() -> anyhow::Result<()> {
    let (_d, s) = start("").await?;
    let first = json_of(&cli(&s, &["keys", "create", "cli-alias-a"], b""));
    let second = json_of(&cli(&s, &["keys", "create", "cli-alias-b"], b""));

    let a = json_of(&cli(
        &s,
        &["aliases", "create", "current", "cli-alias-a"],
        b"",
    ));
    assert_eq!(a["name"], "current");
    assert_eq!(a["key_id"], first["id"]);
    assert!(a["created_at"].is_string() && a["updated_at"].is_string());
    let shown = json_of(&cli(&s, &["aliases", "show", "current"], b""));
    assert_eq!(shown["key_id"], first["id"]);
    // alias/NAME works wherever a key is named.
    let k = json_of(&cli(&s, &["keys", "show", "alias/current"], b""));
    assert_eq!(k["id"], first["id"]);
    let dk = json_of(&cli(
        &s,
        &["datakey", "alias/current", "--no-plaintext"],
        b"",
    ));
    assert_eq!(dk["key_id"], first["id"]);
    let blob = bytes_of(&cli(&s, &["encrypt", "alias/current"], b"via alias"));
    assert_eq!(blob_key(&blob), first["id"].as_str().unwrap());
    let versions = json_of(&cli(&s, &["keys", "versions", "alias/current"], b""));
    assert_eq!(versions["key_id"], first["id"]);

    fails_with(
        &cli(&s, &["aliases", "create", "current", "cli-alias-b"], b""),
        "alias_exists",
    );
    fails_with(
        &cli(&s, &["aliases", "create", "bad/name", "cli-alias-b"], b""),
        "invalid_alias_name",
    );
    fails_with(
        &cli(&s, &["aliases", "create", "other", "no-such-key"], b""),
        "key_not_found",
    );
    json_of(&cli(
        &s,
        &["aliases", "create", "second", "cli-alias-b"],
        b"",
    ));
    let list = json_of(&cli(&s, &["aliases", "list"], b""));
    let names: Vec<&str> = list["aliases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"current") && names.contains(&"second"),
        "{list}"
    );

    // Re-pointing moves new work to the other key.
    let moved = json_of(&cli(
        &s,
        &["aliases", "repoint", "current", "cli-alias-b"],
        b"",
    ));
    assert_eq!(moved["key_id"], second["id"]);
    let dk = json_of(&cli(
        &s,
        &["datakey", "alias/current", "--no-plaintext"],
        b"",
    ));
    assert_eq!(dk["key_id"], second["id"]);
    fails_with(
        &cli(&s, &["aliases", "repoint", "nowhere", "cli-alias-a"], b""),
        "alias_not_found",
    );

    // Delete prints nothing; the alias is gone, the key stays.
    let deleted = cli(&s, &["aliases", "delete", "current"], b"");
    assert!(
        deleted.status.success(),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    assert!(deleted.stdout.is_empty());
    fails_with(
        &cli(&s, &["aliases", "show", "current"], b""),
        "alias_not_found",
    );
    fails_with(
        &cli(&s, &["aliases", "delete", "current"], b""),
        "alias_not_found",
    );
    fails_with(
        &cli(&s, &["keys", "show", "alias/current"], b""),
        "key_not_found",
    );
    json_of(&cli(&s, &["keys", "show", "cli-alias-b"], b""));
    // Names a URL would resolve away are refused before any request.
    let dots = cli(&s, &["aliases", "show", ".."], b"");
    assert!(!dots.status.success() && dots.stdout.is_empty());
    assert!(String::from_utf8_lossy(&dots.stderr).contains("no alias is named"));
    Ok(())
}

#[tokio::test]
async fn a_rotation_starts_a_job_that_jobs_list_and_watch_follow() -> anyhow::Result<()> {
    let (_d, s) = start("[keys]\nlifecycle_check_interval_ms = 100\n").await?;
    let name = unique("cli-job");
    let key = json_of(&cli(&s, &["keys", "create", &name], b""));
    assert_eq!(
        json_of(&cli(&s, &["jobs", "list"], b""))["jobs"],
        serde_json::json!([])
    );
    json_of(&cli(&s, &["keys", "rotate", &name], b""));

    let jobs = json_of(&cli(&s, &["jobs", "list"], b""));
    let job = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["key_id"] == key["id"])
        .cloned()
        .unwrap_or_else(|| panic!("no job after the rotation: {jobs}"));
    assert_eq!(job["kind"], "rewrap");
    assert_eq!(job["target_version"], 2);
    let id = job["id"].as_str().unwrap();

    // With no secrets stored there is nothing to move: the watch ends once the worker has seen
    // the job, with the final job on stdout and the progress on stderr.
    let out = cli(
        &s,
        &["jobs", "show", id, "--watch", "--interval-ms", "100"],
        b"",
    );
    let done = json_of(&out);
    assert_eq!(done["id"], id);
    assert_eq!(done["state"], "completed");
    assert_eq!(done["remaining"], 0);
    assert!(done["finished_at"].is_string(), "{done}");
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(
        progress.contains(&format!("job {id} completed: 0/0 re-wrapped (100.0%)")),
        "{progress}"
    );

    let shown = json_of(&cli(&s, &["jobs", "show", id], b""));
    assert_eq!(shown["state"], "completed");
    let completed = json_of(&cli(&s, &["jobs", "list", "--state", "completed"], b""));
    assert!(completed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|j| j["id"] == id));
    let running = json_of(&cli(
        &s,
        &["jobs", "list", "--state", "running", "--limit", "5"],
        b"",
    ));
    assert!(!running["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|j| j["id"] == id));

    // Negative twins.
    fails_with(
        &cli(&s, &["jobs", "show", "no-such-job"], b""),
        "job_not_found",
    );
    fails_with(
        &cli(&s, &["jobs", "show", "no-such-job", "--watch"], b""),
        "job_not_found",
    );
    fails_with(
        &cli(&s, &["jobs", "list", "--limit", "0"], b""),
        "invalid_limit",
    );
    let bad_state = cli(&s, &["jobs", "list", "--state", "sleeping"], b"");
    assert!(!bad_state.status.success() && bad_state.stdout.is_empty());
    Ok(())
}

/// The runbook of docs/lifecycle.md: rotate, re-wrap, verify, retire and destroy the old
/// version; the stored secret stays readable throughout.
#[tokio::test]
async fn rotate_rewrap_verify_and_retire_the_old_version() -> anyhow::Result<()> {
    let name = unique("cli-runbook");
    let (_d, s) = start(&format!(
        "[secrets]\ndefault_key = \"{name}\"\n[keys]\nrewrap_after_rotation = false\n\
         lifecycle_check_interval_ms = 100\nrewrap_pause_ms = 0\n"
    ))
    .await?;
    json_of(&cli(&s, &["keys", "create", &name], b""));
    for i in 0..3 {
        json_of(&cli(
            &s,
            &["secrets", "put", &format!("runbook/s{i}")],
            format!("value {i}").as_bytes(),
        ));
    }
    let before = json_of(&cli(&s, &["keys", "versions", &name], b""));
    assert_eq!(version_states(&before), [(1, "primary".into(), 3)]);

    json_of(&cli(&s, &["keys", "rotate", &name], b""));
    let after = json_of(&cli(&s, &["keys", "versions", &name], b""));
    assert_eq!(
        version_states(&after),
        [(1, "active".into(), 3), (2, "primary".into(), 0)]
    );
    // No automatic job here, and version 1 is still in use: it cannot be destroyed.
    assert_eq!(
        json_of(&cli(&s, &["jobs", "list"], b""))["jobs"],
        serde_json::json!([])
    );
    let stderr = fails_with(
        &cli(&s, &["keys", "version", "destroy", &name, "1"], b""),
        "key_version_in_use",
    );
    assert!(
        stderr.contains('3'),
        "the message names the count: {stderr}"
    );

    let job = json_of(&cli(&s, &["keys", "rewrap", &name], b""));
    assert_eq!(job["target_version"], 2);
    let id = job["id"].as_str().unwrap();
    let out = cli(
        &s,
        &["jobs", "show", id, "--watch", "--interval-ms", "100"],
        b"",
    );
    let done = json_of(&out);
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["done"], 3);
    assert_eq!(done["failed_items"], 0);
    assert_eq!(done["remaining"], 0);
    assert!(String::from_utf8_lossy(&out.stderr).contains("3/3 re-wrapped (100.0%)"));

    let moved = json_of(&cli(&s, &["keys", "versions", &name], b""));
    assert_eq!(
        version_states(&moved),
        [(1, "active".into(), 0), (2, "primary".into(), 3)]
    );
    // Retire first (a reversible step), check the secrets still read, then destroy.
    json_of(&cli(&s, &["keys", "version", "disable", &name, "1"], b""));
    for i in 0..3 {
        assert_eq!(
            bytes_of(&cli(&s, &["secrets", "get", &format!("runbook/s{i}")], b"")),
            format!("value {i}").as_bytes()
        );
    }
    let k = json_of(&cli(&s, &["keys", "version", "destroy", &name, "1"], b""));
    assert_eq!(k["versions"][0]["state"], "destroyed");
    assert_eq!(
        bytes_of(&cli(&s, &["secrets", "get", "runbook/s0"], b"")),
        b"value 0"
    );
    Ok(())
}

#[test]
fn lifecycle_subcommands_explain_themselves_and_take_no_secret_arguments() {
    for args in [
        &["keys", "--help"][..],
        &["keys", "rotate", "--help"],
        &["keys", "update", "--help"],
        &["keys", "disable", "--help"],
        &["keys", "enable", "--help"],
        &["keys", "schedule-deletion", "--help"],
        &["keys", "cancel-deletion", "--help"],
        &["keys", "versions", "--help"],
        &["keys", "version", "--help"],
        &["keys", "version", "disable", "--help"],
        &["keys", "version", "enable", "--help"],
        &["keys", "version", "destroy", "--help"],
        &["keys", "rewrap", "--help"],
        &["reencrypt", "--help"],
        &["aliases", "--help"],
        &["aliases", "create", "--help"],
        &["aliases", "repoint", "--help"],
        &["aliases", "show", "--help"],
        &["aliases", "list", "--help"],
        &["aliases", "delete", "--help"],
        &["jobs", "--help"],
        &["jobs", "list", "--help"],
        &["jobs", "show", "--help"],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
        assert!(text.contains("usage"), "{args:?}: {text}");
        for forbidden in ["--token ", "--pin", "--plaintext", "--password", "--value"] {
            assert!(!text.contains(forbidden), "{args:?} offers {forbidden}");
        }
    }
}
