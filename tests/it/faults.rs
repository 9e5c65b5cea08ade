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

/// Where SQLite's next write goes when the disk fills.
#[derive(Clone, Copy, Debug)]
enum Wal {
    /// At the WAL's end: the next commit, an audit record as it happens, needs a new page.
    Growing,
    /// The WAL was copied back (this test checkpoints it from a connection of its own) after
    /// this many more writes, so commits are written again from its start into pages the file
    /// already holds, until one of a write's three commits (its announcement, the secret, its
    /// final record) needs a new page. Which one depends on the frames the WAL held; from 0 to
    /// 3 more writes, each of the three is hit (a final record at 1 and 2, here).
    CopiedBack(usize),
}

#[tokio::test]
async fn a_full_disk_refuses_writes_keeps_reads_fails_audit_closed_and_recovers(
) -> anyhow::Result<()> {
    full_disk(Wal::Growing).await
}

#[tokio::test]
async fn a_full_disk_after_the_wal_was_copied_back_loses_no_acknowledged_write(
) -> anyhow::Result<()> {
    for more_writes in 0..4 {
        full_disk(Wal::CopiedBack(more_writes)).await?;
    }
    Ok(())
}

/// Fills the disk under a running server's SQLite database, then frees it (see the
/// variants' tests).
async fn full_disk(wal: Wal) -> anyhow::Result<()> {
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

    if let Wal::CopiedBack(more_writes) = wal {
        for i in 0..more_writes {
            put_secret(&s, &format!("app/more-{i}"), b"more").await.ok();
        }
        // The server's own checkpointer may be at it too, or a background duty writing: try
        // until one pass copies every frame.
        let conn = rusqlite::Connection::open(&db)?;
        let mut passes = 0;
        loop {
            let (busy, frames, copied): (i64, i64, i64) =
                conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
            passes += 1;
            if busy == 0 && copied == frames {
                break;
            }
            assert!(passes < 100, "the WAL was never copied back");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(conn);
        // What can be written again is the WAL file's length (the most it ever held; the
        // server may have started it over since), not the frames it holds now. A `PUT` takes
        // about 8 frames of 4 KiB; start-up alone writes about 100.
        let mut wal_file = db.clone().into_os_string();
        wal_file.push("-wal");
        let wal_bytes = std::fs::metadata(&wal_file)?.len();
        assert!(
            wal_bytes > 200 * 1024,
            "too short a WAL to write into again: {wal_bytes} bytes"
        );
    }

    // The disk fills up. A write may still be acknowledged while SQLite has room in space it
    // already holds: a WAL copied back is written again from its start. Such a write is
    // durable and must read back at the end. Once the WAL needs a new page, writes are
    // refused, and stay refused.
    assert!(disk.fill("filler-1")? > 0);
    let mut acknowledged = Vec::new();
    let mut refused = Vec::new();
    let mut codes = Vec::new();
    for i in 0..200 {
        let path = format!("app/during-{i}");
        let r = put_secret(&s, &path, format!("during {i}").as_bytes()).await;
        if r.status.is_success() {
            assert!(
                refused.is_empty(),
                "a write was acknowledged after a refusal: {}",
                r.body
            );
            acknowledged.push(path);
            continue;
        }
        assert_eq!(r.status.as_u16(), 503, "a write on a full disk: {}", r.body);
        codes.push(
            r.body["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
        refused.push(path);
        if refused.len() == 3 {
            break;
        }
    }
    assert_eq!(
        refused.len(),
        3,
        "writes kept being acknowledged on a full disk"
    );
    if let Wal::CopiedBack(more_writes) = wal {
        assert!(
            !acknowledged.is_empty(),
            "no write went into the WAL's old pages ({more_writes} more writes)"
        );
    }
    // Whichever commit found the disk full, an audit record included (it is tried again in
    // the released reserve), the write is answered as what it is: refused, and made nowhere.
    assert_eq!(codes, ["storage_full"; 3], "{wal:?}");
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
    for path in &refused {
        read_secret(&s, path)
            .await
            .assert_error(404, "secret_not_found");
    }
    for path in &acknowledged {
        let i = path.trim_start_matches("app/during-");
        assert_secret(
            &read_secret(&s, path).await,
            format!("during {i}").as_bytes(),
        );
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

/// What one request of a load got.
enum Answer {
    /// A data key: its plaintext and blob, checked after the fault.
    Made { plaintext: String, blob: String },
    /// A 503 with this code.
    Refused(String),
}

/// Requests data keys from `key` in `workers` loops until `stop` is set.
async fn datakey_load(
    s: &Server,
    key: &str,
    workers: usize,
    stop: &std::sync::atomic::AtomicBool,
) -> Vec<Answer> {
    let one = |_| async {
        let mut answers = Vec::new();
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let r = s
                .post(
                    &format!("/v1/keys/{key}/datakey"),
                    json!({ "context": { "load": "fault" } }),
                )
                .await;
            if r.status.is_success() {
                answers.push(Answer::Made {
                    plaintext: r.body["plaintext"].as_str().unwrap_or_default().to_owned(),
                    blob: r.body["ciphertext"].as_str().unwrap_or_default().to_owned(),
                });
            } else {
                assert_eq!(r.status.as_u16(), 503, "only 503 under a fault: {}", r.body);
                r.assert_error(503, r.body["error"]["code"].as_str().unwrap_or("?"));
                answers.push(Answer::Refused(
                    r.body["error"]["code"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                ));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        answers
    };
    let all = futures_util::future::join_all((0..workers).map(one)).await;
    all.into_iter().flatten().collect()
}

/// Every data key the load was given opens to the plaintext it was given with; the refusals
/// carry only the codes a device fault may give; the fault bit and service came back.
async fn check_load(s: &Server, answers: &[Answer], allowed: &[&str]) {
    let refused: Vec<&str> = answers
        .iter()
        .filter_map(|a| match a {
            Answer::Refused(code) => Some(code.as_str()),
            Answer::Made { .. } => None,
        })
        .collect();
    assert!(!refused.is_empty(), "the fault never showed");
    assert!(
        refused.iter().all(|c| allowed.contains(c)),
        "unexpected refusals: {refused:?}"
    );
    assert!(
        matches!(answers.last(), Some(Answer::Made { .. }))
            || answers
                .iter()
                .rev()
                .take(8)
                .any(|a| matches!(a, Answer::Made { .. })),
        "no data key after the fault was healed"
    );
    for a in answers {
        if let Answer::Made { plaintext, blob } = a {
            let opened = s
                .post(
                    "/v1/decrypt",
                    json!({ "ciphertext": blob, "context": { "load": "fault" } }),
                )
                .await;
            assert_eq!(opened.ok()["plaintext"].as_str(), Some(plaintext.as_str()));
        }
    }
}

/// Waits until `ready` answers `status`, or panics after `within`.
async fn until_ready(s: &Server, status: u16, within: Duration) {
    let r = s.wait_ready(status, within).await;
    assert_eq!(r.status.as_u16(), status, "{}", r.body);
}

#[tokio::test]
async fn a_token_that_vanishes_mid_load_gives_only_503s_then_every_answer_checks_out(
) -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    s.create_key("loaded").await;
    let tokens = d.token_dir();
    let away = tokens.with_extension("away");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let fault = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        std::fs::rename(&tokens, &away).expect("token directory moved away");
        until_ready(&s, 503, Duration::from_secs(10)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        std::fs::rename(&away, &tokens).expect("token directory back");
        until_ready(&s, 200, Duration::from_secs(15)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
    };
    let (answers, ()) = tokio::join!(datakey_load(&s, "loaded", 3, &stop), fault);
    check_load(&s, &answers, &["device_unavailable"]).await;
    Ok(())
}

#[tokio::test]
async fn a_tpm_killed_and_restarted_mid_load_gives_only_503s_then_every_answer_checks_out(
) -> anyhow::Result<()> {
    let mut tpm = crate::common::swtpm::Swtpm::start()?;
    let mut d = Deployment::new()?;
    d.append_config(&format!("[tpm]\ntcti = \"{}\"\n", tpm.tcti()))?;
    let s = d.start().await?;
    s.post(
        "/v1/keys",
        json!({ "name": "tpm-loaded", "backend": "tpm", "mode": "direct" }),
    )
    .await
    .ok();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let tpm_ref = &mut tpm;
    let fault = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        tpm_ref.stop();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        tpm_ref.restart().expect("swtpm restarts");
        until_ready(&s, 200, Duration::from_secs(20)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
    };
    let (answers, ()) = tokio::join!(datakey_load(&s, "tpm-loaded", 3, &stop), fault);
    check_load(&s, &answers, &["device_unavailable", "device_busy"]).await;
    Ok(())
}

/// Sends SIGSTOP or SIGCONT to a process.
fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid}");
}

/// The device sessions checked out now, from `/metrics`.
async fn sessions_in_use(s: &Server, device: &str) -> f64 {
    let (status, body) = s.get_bytes("/metrics").await;
    assert_eq!(status.as_u16(), 200);
    let text = String::from_utf8_lossy(&body).into_owned();
    let prefix = format!("custodian_device_sessions_in_use{{device=\"{device}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in /metrics:\n{text}"))
}

#[tokio::test]
async fn a_slow_hsm_answers_503_at_the_deadline_and_the_session_pool_recovers() -> anyhow::Result<()>
{
    let shim = std::path::Path::new(crate::common::server::BIN).with_file_name("libslow_pkcs11.so");
    anyhow::ensure!(
        shim.exists(),
        "{} is missing: scripts/test builds it (cargo build -p slow-pkcs11)",
        shim.display()
    );
    let mut d = Deployment::new()?;
    let delay = d.path().join("device-delay-ms");
    std::fs::write(&delay, "0")?;
    let config = std::fs::read_to_string(d.config())?;
    let config = config
        .replacen(
            &format!("module = \"{}\"", crate::common::module()),
            &format!("module = \"{}\"", shim.display()),
            1,
        )
        .replacen(
            "max_body_bytes = 65536",
            "max_body_bytes = 65536\nrequest_timeout_ms = 1500",
            1,
        );
    anyhow::ensure!(config.contains("libslow_pkcs11") && config.contains("request_timeout_ms"));
    std::fs::write(d.config(), config)?;
    d.env
        .push(("SLOW_PKCS11_MODULE".into(), crate::common::module()));
    d.env
        .push(("SLOW_PKCS11_DELAY_FILE".into(), delay.display().to_string()));
    let s = d.start().await?;
    s.create_key("slowed").await;
    let made = s
        .post(
            "/v1/keys/slowed/encrypt",
            json!({ "plaintext": b64(b"before the slowdown") }),
        )
        .await;
    let blob = made.ok()["ciphertext"].clone();

    // Every device call now takes 3 s, twice the request deadline.
    std::fs::write(&delay, "3000")?;
    let slow = |_| async { s.post("/v1/keys/slowed/datakey", json!({})).await };
    let answers = futures_util::future::join_all((0..6).map(slow)).await;
    for r in &answers {
        r.assert_error(503, "request_timeout");
    }
    s.post("/v1/decrypt", json!({ "ciphertext": blob }))
        .await
        .assert_error(503, "request_timeout");

    // Fast again: the calls that were under way finish, their sessions come back to the pool
    // (none leaked), and every request is served.
    std::fs::write(&delay, "0")?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while sessions_in_use(&s, "pkcs11").await > 0.0 {
        assert!(
            Instant::now() < deadline,
            "device sessions were not returned to the pool"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let served = futures_util::future::join_all(
        (0..8).map(|_| async { s.post("/v1/keys/slowed/datakey", json!({})).await }),
    )
    .await;
    for r in &served {
        assert_eq!(unb64(r.ok()["plaintext"].as_str().unwrap()).len(), 32);
    }
    let opened = s.post("/v1/decrypt", json!({ "ciphertext": blob })).await;
    assert_eq!(
        unb64(opened.ok()["plaintext"].as_str().unwrap()),
        b"before the slowdown"
    );
    assert_eq!(sessions_in_use(&s, "pkcs11").await, 0.0);
    Ok(())
}

#[tokio::test]
async fn a_paused_tpm_answers_503_at_the_deadline_then_serves_again() -> anyhow::Result<()> {
    let tpm = crate::common::swtpm::Swtpm::start()?;
    let mut d = Deployment::new()?;
    d.append_config(&format!("[tpm]\ntcti = \"{}\"\n", tpm.tcti()))?;
    let config = std::fs::read_to_string(d.config())?.replacen(
        "max_body_bytes = 65536",
        "max_body_bytes = 65536\nrequest_timeout_ms = 1500",
        1,
    );
    std::fs::write(d.config(), config)?;
    let s = d.start().await?;
    s.post(
        "/v1/keys",
        json!({ "name": "tpm-paused", "backend": "tpm", "mode": "direct" }),
    )
    .await
    .ok();
    let made = s
        .post(
            "/v1/keys/tpm-paused/encrypt",
            json!({ "plaintext": b64(b"before the pause") }),
        )
        .await;
    let blob = made.ok()["ciphertext"].clone();

    let pid = tpm.pid().expect("swtpm runs");
    signal(pid, "STOP");
    let paused = futures_util::future::join_all(
        (0..3).map(|_| async { s.post("/v1/keys/tpm-paused/datakey", json!({})).await }),
    )
    .await;
    signal(pid, "CONT");
    for r in &paused {
        r.assert_error(503, "request_timeout");
    }
    // Resumed: the calls that waited complete and new ones are served.
    let deadline = Instant::now() + Duration::from_secs(15);
    let opened = loop {
        let r = s.post("/v1/decrypt", json!({ "ciphertext": blob })).await;
        if r.status.is_success() || Instant::now() > deadline {
            break r;
        }
        assert_eq!(r.status.as_u16(), 503, "{}", r.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        unb64(opened.ok()["plaintext"].as_str().unwrap()),
        b"before the pause"
    );
    for _ in 0..5 {
        let r = s.post("/v1/keys/tpm-paused/datakey", json!({})).await;
        assert_eq!(unb64(r.ok()["plaintext"].as_str().unwrap()).len(), 32);
    }
    until_ready(&s, 200, Duration::from_secs(5)).await;
    Ok(())
}
