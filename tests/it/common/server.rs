//! A deployment of the real binary: its own SoftHSM2 token directory, config, PIN files and
//! SQLite file in a temporary directory; servers started from it are killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tempfile::TempDir;

use super::db::{Db, Location};
use super::module;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_custodian");

/// A deployment directory.
pub struct Deployment {
    dir: TempDir,
    softhsm_conf: PathBuf,
    config: PathBuf,
    store: Location,
    /// The bootstrap token, once the first start has printed it.
    pub token: Option<String>,
    starts: u32,
    /// Extra environment for the server process.
    pub env: Vec<(String, String)>,
    /// A program (and its arguments) that runs the server binary, e.g. `prlimit --nofile=80:80`;
    /// it must exec the binary so that the server keeps the launcher's pid.
    pub launcher: Vec<String>,
}

/// A response: status and JSON body (`Value::Null` when the body is not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// Parsed body.
    pub body: Value,
    /// `x-request-id` header.
    pub request_id: Option<String>,
}

impl Reply {
    /// Asserts a success status and returns the body.
    #[track_caller]
    pub fn ok(&self) -> &Value {
        assert!(
            self.status.is_success(),
            "expected success, got {} {}",
            self.status,
            self.body
        );
        &self.body
    }

    /// Asserts the error shape with `status` and `code`, a request id, and no plaintext.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        let err = &self.body["error"];
        assert_eq!(err["code"], code, "body: {}", self.body);
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "body: {}",
            self.body
        );
        let rid = err["request_id"].as_str().unwrap_or_default();
        assert!(!rid.is_empty(), "error without request id: {}", self.body);
        assert_eq!(
            Some(rid),
            self.request_id.as_deref(),
            "body id and header id differ"
        );
        assert!(
            self.body.get("plaintext").is_none(),
            "error carries plaintext: {}",
            self.body
        );
    }
}

impl Deployment {
    /// A fresh deployment with its own token directory and an initialised token.
    pub fn new() -> Result<Self> {
        Self::with_softhsm_line("")
    }

    /// As [`Deployment::new`], with one extra line in `softhsm2.conf`.
    pub fn with_softhsm_line(extra: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let setup = concat!(env!("CARGO_MANIFEST_DIR"), "/softhsm/setup");
        let out = Command::new(setup)
            .arg(dir.path().join("softhsm"))
            .arg(extra)
            .output()?;
        if !out.status.success() {
            bail!(
                "softhsm/setup failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let softhsm_conf = PathBuf::from(String::from_utf8(out.stdout)?.trim());
        let d = Self::in_dir(dir, softhsm_conf, "it")?;
        d.token_init()?;
        Ok(d)
    }

    /// A deployment that uses an existing SoftHSM configuration and token (in-process tests).
    pub fn on_existing_token(
        softhsm_conf: &Path,
        label: &str,
        user_pin_file: &Path,
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let d = Self::in_dir(dir, softhsm_conf.to_owned(), label)?;
        std::fs::copy(user_pin_file, d.path().join("user.pin"))?;
        Ok(d)
    }

    fn in_dir(dir: TempDir, softhsm_conf: PathBuf, label: &str) -> Result<Self> {
        let config = dir.path().join("custodian.toml");
        let (store, location) = store_section(dir.path());
        std::fs::write(
            &config,
            format!(
                r#"[server]
listen = "127.0.0.1:0"
max_body_bytes = 65536
{store}
[backend]
module = "{}"
token_label = "{label}"
user_pin_file = "user.pin"
sessions = 4
reinit_backoff_initial_ms = 50
reinit_backoff_max_ms = 400
"#,
                module()
            ),
        )?;
        Ok(Self {
            dir,
            softhsm_conf,
            config,
            store: location,
            token: None,
            starts: 0,
            env: Vec::new(),
            launcher: Vec::new(),
        })
    }

    /// The deployment directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The SoftHSM token directory.
    pub fn token_dir(&self) -> PathBuf {
        self.softhsm_conf
            .parent()
            .expect("conf has a parent")
            .join("tokens")
    }

    /// The SQLite database file (SQLite runs only: see [`on_postgres`]; for either store, use
    /// [`Deployment::db`]).
    pub fn database(&self) -> PathBuf {
        self.path().join("data/custodian.db")
    }

    /// A connection to this deployment's database, whichever the store: its SQLite file, or
    /// its own database on the PostgreSQL test cluster (the store it was created with: a
    /// `[store]` section replaced by [`Deployment::set_store`] is not followed).
    pub fn db(&self) -> Result<Db> {
        Db::open(&self.store)
    }

    /// The configuration file.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// Replaces the `[store]` section of the configuration file with `toml`.
    pub fn set_store(&self, toml: &str) -> Result<()> {
        let text = std::fs::read_to_string(&self.config)?;
        let start = text.find("[store]").context("no [store] section")?;
        let end = text[start..]
            .find("\n[")
            .map_or(text.len(), |i| start + i + 1);
        let text = format!("{}{toml}\n{}", &text[..start], &text[end..]);
        std::fs::write(&self.config, text)?;
        Ok(())
    }

    /// Appends TOML (e.g. a `[secrets]` section) to the configuration file.
    pub fn append_config(&self, toml: &str) -> Result<()> {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.config)?;
        writeln!(f, "\n{toml}")?;
        Ok(())
    }

    /// A command for the binary with this deployment's environment.
    pub fn command(&self) -> Command {
        self.command_via(&[])
    }

    /// [`Deployment::command`] run through `launcher` (none: the binary itself).
    fn command_via(&self, launcher: &[String]) -> Command {
        let mut c = match launcher.split_first() {
            None => Command::new(BIN),
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(BIN);
                c
            }
        };
        c.env("SOFTHSM2_CONF", &self.softhsm_conf)
            .env_remove("CUSTODIAN_TOKEN")
            .env_remove("RUST_LOG")
            .current_dir(self.path());
        c
    }

    fn token_init(&self) -> Result<()> {
        let out = self
            .command()
            .args(["token", "init", "--config"])
            .arg(&self.config)
            .arg("--so-pin-file")
            .arg(self.path().join("so.pin"))
            .output()?;
        if !out.status.success() {
            bail!(
                "token init failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Starts `custodian serve` and waits until it listens; records the bootstrap token the
    /// first start prints.
    pub async fn start(&mut self) -> Result<Server> {
        self.starts += 1;
        let stdout = self.path().join(format!("stdout-{}.log", self.starts));
        let stderr = self.path().join(format!("stderr-{}.log", self.starts));
        let mut cmd = self.command_via(&self.launcher);
        cmd.args(["serve", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout)?)
            .stderr(std::fs::File::create(&stderr)?);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().context("spawning custodian serve")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            let out = std::fs::read_to_string(&stdout).unwrap_or_default();
            if let Some(line) = out
                .lines()
                .find_map(|l| l.strip_prefix("custodian listening on "))
            {
                if let Some(t) = out.lines().find_map(|l| l.split("store it now): ").nth(1)) {
                    self.token = Some(t.trim().to_owned());
                }
                break line.trim().to_owned();
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "custodian serve exited with {status} before listening:\n{}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("custodian serve did not listen within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let token = self
            .token
            .clone()
            .context("no bootstrap token was ever printed")?;
        Ok(Server {
            child,
            base: format!("http://{addr}"),
            token,
            // Idle pooled connections are dropped before the server's header-read timeout
            // (10 s) closes them: reusing one the server is closing fails the request
            // (`IncompleteMessage`), as a slow step between two requests can make happen.
            http: reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_secs(4))
                .build()?,
            stdout,
            stderr,
        })
    }

    /// Runs `custodian serve` expecting it to refuse to start; returns its stderr.
    pub fn start_expecting_failure(&self) -> Result<String> {
        let mut child = self
            .command()
            .args(["serve", "--config"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if child.try_wait()?.is_some() {
                let out = child.wait_with_output()?;
                assert!(!out.status.success(), "serve should have refused to start");
                return Ok(String::from_utf8_lossy(&out.stderr).into_owned());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("serve kept running although it should have refused to start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A running server, killed (SIGKILL) on drop.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// The bootstrap admin token.
    pub token: String,
    http: reqwest::Client,
    stdout: PathBuf,
    stderr: PathBuf,
}

/// How a request authenticates.
pub enum Auth<'a> {
    /// The bootstrap admin token.
    Admin,
    /// No `Authorization` header.
    None,
    /// This exact header value.
    Header(&'a str),
    /// This header value as raw bytes (may be outside visible ASCII).
    Bytes(&'a [u8]),
}

impl Server {
    /// Sends a request with a raw body and content type.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Reply {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        req = match auth {
            Auth::Admin => req.bearer_auth(&self.token),
            Auth::None => req,
            Auth::Header(h) => req.header("authorization", h),
            Auth::Bytes(b) => req.header(
                "authorization",
                reqwest::header::HeaderValue::from_bytes(b).expect("a header value"),
            ),
        };
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let res = req
            .body(body)
            .send()
            .await
            .expect("request reaches the server");
        let status = res.status();
        let request_id = res
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = res.bytes().await.expect("response body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            body,
            request_id,
        }
    }

    /// POSTs JSON as the admin.
    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.raw(
            Method::POST,
            path,
            Auth::Admin,
            Some("application/json"),
            body.to_string().into_bytes(),
        )
        .await
    }

    /// POSTs raw bytes labelled as JSON, as the admin.
    pub async fn post_bytes(&self, path: &str, body: &[u8]) -> Reply {
        self.raw(
            Method::POST,
            path,
            Auth::Admin,
            Some("application/json"),
            body.to_vec(),
        )
        .await
    }

    /// Sends `method` without a body, as the admin.
    pub async fn send(&self, method: Method, path: &str) -> Reply {
        self.raw(method, path, Auth::Admin, None, Vec::new()).await
    }

    /// Sends `method` with a JSON body, as the admin.
    pub async fn send_json(&self, method: Method, path: &str, body: Value) -> Reply {
        self.raw(
            method,
            path,
            Auth::Admin,
            Some("application/json"),
            body.to_string().into_bytes(),
        )
        .await
    }

    /// GETs as the admin.
    pub async fn get(&self, path: &str) -> Reply {
        self.raw(Method::GET, path, Auth::Admin, None, Vec::new())
            .await
    }

    /// GETs as the admin and returns the status and the raw body (for non-JSON responses).
    pub async fn get_bytes(&self, path: &str) -> (StatusCode, Vec<u8>) {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("request reaches the server");
        let status = res.status();
        let bytes = res.bytes().await.expect("response body");
        (status, bytes.to_vec())
    }

    /// GETs without credentials.
    pub async fn get_public(&self, path: &str) -> Reply {
        self.raw(Method::GET, path, Auth::None, None, Vec::new())
            .await
    }

    /// Creates a key and returns its JSON.
    pub async fn create_key(&self, name: &str) -> Value {
        let r = self
            .post("/v1/keys", serde_json::json!({ "name": name }))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body
    }

    /// Everything the server wrote to stdout and stderr so far.
    pub fn output(&self) -> (String, String) {
        (
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default(),
        )
    }

    /// Stops the server with SIGTERM (a graceful shutdown) and waits until it has exited.
    pub fn terminate(mut self) -> Result<std::process::ExitStatus> {
        // Close this client's idle connections first: the server drains open ones.
        drop(std::mem::replace(&mut self.http, reqwest::Client::new()));
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()?;
        if !status.success() {
            bail!("kill -TERM failed: {status}");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("custodian serve did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server (SIGKILL: no graceful shutdown, like a crash) and waits for it.
    pub fn kill(mut self) {
        self.kill_inner();
    }

    fn kill_inner(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Polls readiness until it has `status` or `timeout` passes; returns the last reply.
    pub async fn wait_ready(&self, status: u16, timeout: Duration) -> Reply {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.get_public("/v1/health/ready").await;
            if r.status.as_u16() == status || Instant::now() > deadline {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill_inner();
    }
}

/// Waits until no re-wrap job of key `key` (a name or id) is running; returns its newest job.
pub async fn wait_job_done(s: &Server, key: &str) -> Value {
    let key_id = s.get(&format!("/v1/keys/{key}")).await.ok()["id"].clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let jobs = s.get("/v1/jobs").await;
        let mine: Vec<Value> = jobs.ok()["jobs"]
            .as_array()
            .expect("jobs array")
            .iter()
            .filter(|j| j["key_id"] == key_id)
            .cloned()
            .collect();
        if !mine.is_empty() && mine.iter().all(|j| j["state"] != "running") {
            // Jobs are listed newest first.
            return mine[0].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "re-wrap did not finish: {}",
            jobs.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// True when the black-box suite runs against PostgreSQL (`CUSTODIAN_TEST_STORE=postgres`, set
/// by the README's test command for its second pass): every deployment then gets a fresh
/// database on the test cluster instead of a SQLite file.
pub fn on_postgres() -> bool {
    std::env::var("CUSTODIAN_TEST_STORE").is_ok_and(|s| s == "postgres")
}

/// The `[store]` section of a new deployment in `dir`, and where its database will be.
fn store_section(dir: &Path) -> (String, Location) {
    if !on_postgres() {
        return (
            "[store]\npath = \"data/custodian.db\"".to_owned(),
            Location::Sqlite(dir.join("data/custodian.db")),
        );
    }
    let created = std::time::SystemTime::now();
    // Its own runtime on its own thread: deployments are made inside and outside tokio tests.
    let settings = std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(super::postgres::fresh_database())
            .1
    })
    .join()
    .expect("a fresh PostgreSQL database");
    (
        format!(
            "[store]\nkind = \"postgres\"\nurl = \"{}\"\npool_size = 8\nconnect_timeout = \"3s\"",
            settings.url
        ),
        Location::Postgres {
            url: settings.url.clone(),
            created,
        },
    )
}
