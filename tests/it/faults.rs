//! Faults injected into real processes while the server runs: a full disk under the SQLite
//! database (a tmpfs the test mounts), a paused TPM and a token that goes away under load. Each
//! gives a clear 503 while it lasts and full service after, with no restart, no wrong answer
//! and nothing acknowledged lost.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::audit::{export_to, lines_of, verify_lines};
use crate::common::server::Reply;
use crate::common::{b64, unb64, Deployment, Server};

/// A small tmpfs mounted for one test, lazily unmounted when dropped (the server may still
/// hold its files open when a failed assertion unwinds).
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    fn mount(dir: PathBuf, megabytes: u32) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={megabytes}m,mode=0700"))
            .arg("tmpfs")
            .arg(&dir)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "mounting a tmpfs needs root (the test command runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(Self { dir })
    }

    /// Writes `name` until the disk refuses more; returns the bytes written.
    fn fill(&self, name: &str) -> anyhow::Result<u64> {
        let mut file = std::fs::File::create(self.dir.join(name))?;
        let block = vec![0xA5u8; 64 * 1024];
        let mut written = 0u64;
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => return Err(e.into()),
            }
        }
        // Whatever is left below one block: fill it byte by byte.
        while let Ok(1) = file.write(&[0xA5]) {
            written += 1;
        }
        Ok(written)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

async fn put_secret(s: &Server, path: &str, value: &[u8]) -> Reply {
    s.send_json(
        reqwest::Method::PUT,
        &format!("/v1/secrets/{path}"),
        json!({ "value": b64(value) }),
    )
    .await
}

async fn read_secret(s: &Server, path: &str) -> Reply {
    s.get(&format!("/v1/secrets/{path}")).await
}

fn assert_secret(reply: &Reply, value: &[u8]) {
    assert_eq!(
        unb64(reply.ok()["value"].as_str().expect("a value")),
        value,
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn a_full_disk_refuses_writes_keeps_reads_fails_audit_closed_and_recovers(
) -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let disk = SmallDisk::mount(d.path().join("small-disk"), 40)?;
    let db = disk.dir.join("custodian.db");
    d.set_store(&format!(
        "[store]\nkind = \"sqlite\"\npath = \"{}\"",
        db.display()
    ))?;
    d.append_config("[secrets]\ndefault_key = \"secrets\"\n")?;
    let s = d.start().await?;
    s.create_key("secrets").await;
    let reserve = disk.dir.join("custodian.db-reserve");
    assert_eq!(std::fs::metadata(&reserve)?.len(), 8 * 1024 * 1024);

    put_secret(&s, "app/before", b"written before").await.ok();
    let sealed = s
        .post(
            "/v1/keys/secrets/encrypt",
            json!({ "plaintext": b64(b"sealed before") }),
        )
        .await;
    let blob = sealed.ok()["ciphertext"].clone();

    // The disk fills up.
    assert!(disk.fill("filler-1")? > 0);
    let mut codes = Vec::new();
    for i in 0..3 {
        let r = put_secret(&s, &format!("app/during-{i}"), b"refused").await;
        assert_eq!(r.status.as_u16(), 503, "a write on a full disk: {}", r.body);
        codes.push(
            r.body["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    // The first write may be the one that finds the disk full through its audit record; from
    // then on, writes are refused as what they are.
    assert!(
        codes
            .iter()
            .all(|c| c == "storage_full" || c == "audit_unavailable")
            && codes.last().map(String::as_str) == Some("storage_full"),
        "{codes:?}"
    );
    assert!(!reserve.exists(), "the reserve was not released");

    // Reads keep working, each with its audit record written into the released reserve.
    for _ in 0..20 {
        assert_secret(&read_secret(&s, "app/before").await, b"written before");
    }
    let opened = s.post("/v1/decrypt", json!({ "ciphertext": blob })).await;
    assert_eq!(
        unb64(opened.ok()["plaintext"].as_str().unwrap()),
        b"sealed before"
    );
    // Still no write slips through.
    put_secret(&s, "app/during-late", b"refused")
        .await
        .assert_error(503, "storage_full");

    // The reserve is used up too: the audit log cannot record, so nothing is answered.
    disk.fill("filler-2")?;
    let mut answered = Vec::new();
    for _ in 0..200 {
        let r = read_secret(&s, "app/before").await;
        if r.status.as_u16() == 503 {
            r.assert_error(503, "audit_unavailable");
            break;
        }
        answered.push(r);
    }
    assert!(
        answered.len() < 200,
        "reads kept being answered with no room for their records"
    );
    for _ in 0..5 {
        read_secret(&s, "app/before")
            .await
            .assert_error(503, "audit_unavailable");
    }

    // Space returns: the service resumes without a restart.
    std::fs::remove_file(disk.dir.join("filler-1"))?;
    std::fs::remove_file(disk.dir.join("filler-2"))?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let resumed = loop {
        let r = put_secret(&s, "app/after", b"written after").await;
        if r.status.is_success() || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(resumed.ok()["version"], 1);
    assert_eq!(
        std::fs::metadata(&reserve)?.len(),
        8 * 1024 * 1024,
        "reserve not written back"
    );

    // Nothing acknowledged was lost, nothing refused was half-made.
    assert_secret(&read_secret(&s, "app/before").await, b"written before");
    assert_secret(&read_secret(&s, "app/after").await, b"written after");
    for i in 0..3 {
        read_secret(&s, &format!("app/during-{i}"))
            .await
            .assert_error(404, "secret_not_found");
    }
    let (export, pem) = export_to(&s, d.path(), "").await?;
    let lines = lines_of(&export);
    let refused_recorded = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["error_code"] == "storage_full")
        .count();
    assert!(refused_recorded >= 2, "refused writes left no records");
    let (ok, out) = verify_lines(d.path(), &lines, &pem);
    assert!(ok, "{out}");
    drop(s);
    drop(disk);
    Ok(())
}
