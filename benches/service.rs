//! End-to-end service benchmark: the HTTP API of a real `custodian serve` against a SoftHSM2
//! token and a swtpm TPM 2.0 simulator, next to a raw in-process baseline of the same device
//! calls on the same devices.
//!
//! One run (`scripts/bench`, or `cargo bench --bench service`):
//!
//! 1. provisions a throw-away install in `CUSTODIAN_BENCH_DIR` (SoftHSM conf from
//!    `softhsm/setup`, a config file, `custodian token init`) and, unless `--tpm false`, starts
//!    its own swtpm (state in `CUSTODIAN_BENCH_DIR/swtpm`, two free loopback ports, killed when
//!    the bench ends, on error too) and names it in the config's `[tpm] tcti`; starts the server,
//!    creates the key `bench` (PKCS#11, direct) and the device-and-mode keys `bench-p11-cached`,
//!    `bench-tpm-direct` and `bench-tpm-cached`, and checks one data key round trip on each;
//! 2. stops the server (two processes never use one token directory at once, and swtpm serves
//!    one connection at a time), opens the same token in this process and times
//!    `gcm_seal_with_iv` / `gcm_open` on the same root key object, single-threaded; then opens
//!    the swtpm with `TpmDevice::open`, creates a version key and times `TpmDevice::hmac` (what
//!    TPM direct mode asks of the TPM per wrap or unwrap) and TPM2_GetRandom(32) + `hmac` (per
//!    TPM direct data key), single-threaded;
//! 3. restarts the server on the same directory and drives `POST /v1/keys/bench/datakey`,
//!    `POST /v1/decrypt`, as the floor of the HTTP stack `GET /v1/health/live`, and `POST
//!    /v1/keys/{key}/datakey` on each device-and-mode key at several concurrencies for a fixed
//!    time each, over keep-alive HTTP/1.1 to 127.0.0.1;
//! 4. on the same server, measures the bulk re-wrap job: stores N secrets under the key
//!    `bench-rewrap` (16 writers), times `datakey` on `bench` at concurrency 8 without a job, then
//!    rotates `bench-rewrap`, starts its re-wrap job (`POST /v1/keys/bench-rewrap/rewrap`) and
//!    times the same load while the job runs, following the job until it completes; then rotates
//!    again and times a second job with no foreground load. It checks that no stored data key is
//!    left under an older version;
//! 5. stops the server and measures what the audit log (issue 6) costs: builds the app in this
//!    process from the same config file, token, database and key, three times in turn
//!    (`App::build`, audited; `App::dangerous_build_unaudited_for_benchmarks`, unaudited;
//!    audited again, so drift over the phase does not favour one side), and drives the same
//!    `datakey` request at the same concurrencies for the same time on each. It reports the
//!    audited/unaudited ratio per concurrency against the issue's requirement (audited at least
//!    2/3 of unaudited), the records written (`audit.head` of `GET /v1/health/ready`), the
//!    block device's flushes and, from them, an estimate of the group-commit batch;
//! 6. prints Markdown tables (ops/s, p50/p99, errors, server RSS and CPU; `datakey` by device
//!    and mode, against the no-device floor and PKCS#11 direct; re-wrap items/s and foreground
//!    latency with and without the job; the audit cost) and exits non-zero on any
//!    failure, including a single failed request. A missed audit target is reported as FAIL in
//!    the tables but does not change the exit status.
//!
//! The bench needs `SOFTHSM2_CONF` to point at the bench token before its first PKCS#11 call,
//! and `std::env::set_var` is banned, so when `CUSTODIAN_BENCH_DIR` is unset it prepares a
//! temporary directory and re-runs itself with both variables set. Under `cargo test` (no
//! `--bench` argument) it does nothing.
//!
//! Knobs (a flag wins over its environment variable):
//!
//! | flag | environment | default |
//! |---|---|---|
//! | `--sessions N` | `CUSTODIAN_BENCH_SESSIONS` | 4 (server `backend.sessions`) |
//! | `--secs S` | `CUSTODIAN_BENCH_SECS` | 5 (each HTTP row) |
//! | `--raw-secs S` | `CUSTODIAN_BENCH_RAW_SECS` | 3 (each raw loop) |
//! | `--concurrency LIST` | `CUSTODIAN_BENCH_CONCURRENCY` | `1,8,32` |
//! | `--max-requests N` | `CUSTODIAN_BENCH_MAX_REQUESTS` | 500000 (per HTTP row) |
//! | `--log-filter F` | `CUSTODIAN_BENCH_LOG_FILTER` | `info` (server `log.filter`) |
//! | `--rewrap-secrets N` | `CUSTODIAN_BENCH_REWRAP_SECRETS` | 5000 (0 skips the re-wrap phase) |
//! | `--rewrap-secs S` | `CUSTODIAN_BENCH_REWRAP_SECS` | 15 (foreground window, re-wrap phase) |
//! | `--rewrap-batch N` | `CUSTODIAN_BENCH_REWRAP_BATCH` | the server's default for the pause: 100, or 500 with `--rewrap-pause-ms 0` (server `keys.rewrap_batch_size`) |
//! | `--rewrap-pause-ms MS` | `CUSTODIAN_BENCH_REWRAP_PAUSE_MS` | 20 (server `keys.rewrap_pause_ms`) |
//! | `--rewrap-mode direct\|cached` | `CUSTODIAN_BENCH_REWRAP_MODE` | `direct` (wrapping mode of the PKCS#11 key the re-wrap phase moves) |
//! | `--audit-secs S` | `CUSTODIAN_BENCH_AUDIT_SECS` | the `--secs` value (each audit-cost row; 0 skips the audit phase) |
//! | `--tpm true\|false` | `CUSTODIAN_BENCH_TPM` | `true` (`false`: no swtpm, no `[tpm]`, no TPM keys or rows) |
//! | `--peer openbao` | `CUSTODIAN_BENCH_PEER` | none (set: run only the side-by-side comparison with OpenBao, see `service/peer.rs`) |
//! | `--peer-client wrk\|reqwest` | `CUSTODIAN_BENCH_PEER_CLIENT` | `wrk` (the peer rows' load generator: `wrk -t1`, or this bench's own client) |
//! | `--soak MINUTES` | `CUSTODIAN_BENCH_SOAK_MINUTES` | none (set: run only the soak of `scripts/soak`, see `service/soak.rs`) |
//!
//! `CUSTODIAN_BENCH_PKCS11_MODULE` names the module (default: SoftHSM2's Debian path). With
//! `--tpm true` the `swtpm` binary must be on `PATH` (`scripts/lib.sh` installs it).

// No `unwrap`, `expect` or `panic` here: every failure is an `anyhow` error with context, and
// `main` turns it into a message and a non-zero exit status.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;

use custodian::backend::pkcs11::device::login;
use custodian::backend::pkcs11::encrypt::{gcm_open, gcm_seal_with_iv};
use custodian::backend::tpm::{TpmConfig, TpmDevice};
use custodian::config::PinSource;
use custodian::domain::{Algorithm, RootKeyRef};
use custodian::format::{Blob, EncryptionContext};
use custodian::service::READINESS_TTL;

#[path = "service/peer.rs"]
mod peer;
#[path = "service/soak.rs"]
mod soak;
#[path = "service/targets.rs"]
mod targets;

/// Token label of the bench install.
const TOKEN_LABEL: &str = "bench";
/// Key name used for every request.
const KEY_NAME: &str = "bench";
/// The encryption context of every request: `{"app":"bench"}`.
const CONTEXT_JSON: &str = r#"{"app":"bench"}"#;
/// Data key (and raw plaintext) length in bytes.
const DATA_KEY_LEN: usize = 32;
/// Unrecorded warm-up before each HTTP row (connections opened, caches filled).
const WARMUP: Duration = Duration::from_millis(300);
/// How long the server may take to print its address and to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the server may take to drain and exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Default module path (Debian's softhsm2 package).
const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The prefix of the line on which the server prints the bootstrap token.
const BOOTSTRAP_PREFIX: &str = "bootstrap admin token (shown once; store it now): ";
/// The prefix of the line on which the server prints its address.
const LISTEN_PREFIX: &str = "custodian listening on ";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it.
    if !args.iter().any(|a| a == "--bench") {
        println!("service bench: skipped (not run by `cargo bench`; use scripts/bench)");
        return ExitCode::SUCCESS;
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("service bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<()> {
    let knobs = Knobs::parse(args)?;
    let Some(dir) = std::env::var_os("CUSTODIAN_BENCH_DIR").map(PathBuf::from) else {
        return rerun_in_temp_dir(args);
    };
    let module = std::env::var_os("CUSTODIAN_BENCH_PKCS11_MODULE")
        .map_or_else(|| PathBuf::from(DEFAULT_MODULE), PathBuf::from);
    // Declared before the install and the report: dropped (killed) last, on error too.
    let swtpm = if knobs.tpm {
        eprintln!("bench: starting swtpm");
        Some(Swtpm::start(&dir.join("swtpm"))?)
    } else {
        None
    };
    let install = Install::prepare(&dir, &module, &knobs, swtpm.as_ref())?;
    if let Some(nodes) = knobs.nodes {
        print!("{}", node_comparison(&install, &knobs, nodes)?);
        return Ok(());
    }
    if let Some(minutes) = knobs.soak {
        return soak::soak(&install, minutes);
    }
    if knobs.peer {
        print!("{}", peer::peer_comparison(&install, &knobs)?);
        return Ok(());
    }
    if knobs.store.is_some() {
        print!("{}", store_comparison(&install, &knobs)?);
        return Ok(());
    }
    let report = measure(&install, &knobs, swtpm.as_ref())?;
    print!("{}", report.markdown(&install, &knobs));
    ensure!(
        report.total_errors() == 0,
        "{} requests failed (first: {})",
        report.total_errors(),
        report.first_error().unwrap_or("unknown")
    );
    Ok(())
}

/// Prepares a temporary directory and SoftHSM conf, then runs this binary again with
/// `CUSTODIAN_BENCH_DIR` and `SOFTHSM2_CONF` set (this process may not change its own
/// environment, and the PKCS#11 module reads `SOFTHSM2_CONF` when it initialises).
fn rerun_in_temp_dir(args: &[String]) -> Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix("custodian-bench-")
        .tempdir()
        .context("creating a temporary directory")?;
    let conf = softhsm_setup(&tmp.path().join("softhsm"))?;
    let exe = std::env::current_exe().context("locating the bench executable")?;
    let status = Command::new(exe)
        .args(args)
        .env("CUSTODIAN_BENCH_DIR", tmp.path())
        .env("SOFTHSM2_CONF", &conf)
        .status()
        .context("re-running the bench with CUSTODIAN_BENCH_DIR set")?;
    ensure!(status.success(), "the bench run failed ({status})");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Knobs

/// Run parameters, from flags and environment variables.
#[derive(Debug, Clone)]
struct Knobs {
    sessions: usize,
    http_time: Duration,
    raw_time: Duration,
    concurrency: Vec<usize>,
    max_requests: u64,
    log_filter: String,
    /// Secrets stored for the re-wrap phase; 0 skips the phase.
    rewrap_secrets: u64,
    /// Length of each foreground window of the re-wrap phase.
    rewrap_time: Duration,
    /// The server's `keys.rewrap_batch_size`.
    rewrap_batch: u32,
    /// The server's `keys.rewrap_pause_ms`.
    rewrap_pause_ms: u64,
    /// The wrapping mode of the re-wrap phase's key (`direct` or `cached`).
    rewrap_mode: String,
    /// Length of each row of the audit phase; `None` skips the phase.
    audit_time: Option<Duration>,
    /// Start a swtpm and measure the TPM keys and the raw TPM rows.
    tpm: bool,
    /// `postgres`: run only the store comparison (SQLite, then PostgreSQL, in this run).
    store: Option<String>,
    /// `--nodes N`: run only the node comparison (one node, then N, on one PostgreSQL database
    /// and one token, in this run).
    nodes: Option<usize>,
    /// `--soak MINUTES`: run only the soak (`scripts/soak`).
    soak: Option<u32>,
    /// `--peer openbao`: run only the side-by-side comparison with OpenBao.
    peer: bool,
    /// `--peer-client wrk|reqwest`: the peer rows' load generator.
    peer_client: peer::PeerClient,
}

impl Knobs {
    fn parse(args: &[String]) -> Result<Self> {
        let mut sessions = env_knob("CUSTODIAN_BENCH_SESSIONS")?;
        let mut secs = env_knob("CUSTODIAN_BENCH_SECS")?;
        let mut raw_secs = env_knob("CUSTODIAN_BENCH_RAW_SECS")?;
        let mut concurrency = env_knob("CUSTODIAN_BENCH_CONCURRENCY")?;
        let mut max_requests = env_knob("CUSTODIAN_BENCH_MAX_REQUESTS")?;
        let mut log_filter = env_knob("CUSTODIAN_BENCH_LOG_FILTER")?;
        let mut rewrap_secrets = env_knob("CUSTODIAN_BENCH_REWRAP_SECRETS")?;
        let mut rewrap_secs = env_knob("CUSTODIAN_BENCH_REWRAP_SECS")?;
        let mut rewrap_batch = env_knob("CUSTODIAN_BENCH_REWRAP_BATCH")?;
        let mut rewrap_pause_ms = env_knob("CUSTODIAN_BENCH_REWRAP_PAUSE_MS")?;
        let mut rewrap_mode = env_knob("CUSTODIAN_BENCH_REWRAP_MODE")?;
        let mut audit_secs = env_knob("CUSTODIAN_BENCH_AUDIT_SECS")?;
        let mut tpm = env_knob("CUSTODIAN_BENCH_TPM")?;
        let mut store = env_knob("CUSTODIAN_BENCH_STORE")?;
        let mut nodes = env_knob("CUSTODIAN_BENCH_NODES")?;
        let mut soak = env_knob("CUSTODIAN_BENCH_SOAK_MINUTES")?;
        let mut peer = env_knob("CUSTODIAN_BENCH_PEER")?;
        let mut peer_client = env_knob("CUSTODIAN_BENCH_PEER_CLIENT")?;
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let slot = match arg.as_str() {
                "--bench" => continue,
                "--sessions" => &mut sessions,
                "--secs" => &mut secs,
                "--raw-secs" => &mut raw_secs,
                "--concurrency" => &mut concurrency,
                "--max-requests" => &mut max_requests,
                "--log-filter" => &mut log_filter,
                "--rewrap-secrets" => &mut rewrap_secrets,
                "--rewrap-secs" => &mut rewrap_secs,
                "--rewrap-batch" => &mut rewrap_batch,
                "--rewrap-pause-ms" => &mut rewrap_pause_ms,
                "--rewrap-mode" => &mut rewrap_mode,
                "--audit-secs" => &mut audit_secs,
                "--tpm" => &mut tpm,
                "--store" => &mut store,
                "--nodes" => &mut nodes,
                "--soak" => &mut soak,
                "--peer" => &mut peer,
                "--peer-client" => &mut peer_client,
                other => bail!(
                    "unknown argument {other:?}; knobs: --sessions N, --secs S, --raw-secs S, \
                     --concurrency 1,8,32, --max-requests N, --log-filter F, --rewrap-secrets N, \
                     --rewrap-secs S, --rewrap-batch N, --rewrap-pause-ms MS, \
                     --rewrap-mode direct|cached, --audit-secs S, \
                     --tpm true|false, --store postgres, --nodes N, --soak MINUTES, --peer openbao, \
                     --peer-client wrk|reqwest"
                ),
            };
            *slot = Some(
                it.next()
                    .with_context(|| format!("{arg} needs a value"))?
                    .clone(),
            );
        }
        let sessions: usize = parse_knob("sessions", sessions, "4")?;
        let max_requests: u64 = parse_knob("max-requests", max_requests, "500000")?;
        ensure!(max_requests >= 1, "max-requests must be at least 1");
        ensure!(sessions >= 1, "sessions must be at least 1");
        let rewrap_secrets: u64 = parse_knob("rewrap-secrets", rewrap_secrets, "5000")?;
        ensure!(
            rewrap_secrets <= 1_000_000,
            "rewrap-secrets must be at most 1000000"
        );
        // The server's own limits for `keys.rewrap_batch_size`; the pause is bounded here so
        // that a typo cannot make the phase run for hours.
        let rewrap_pause_ms: u64 = parse_knob("rewrap-pause-ms", rewrap_pause_ms, "20")?;
        ensure!(
            rewrap_pause_ms <= 10_000,
            "rewrap-pause-ms must be at most 10000"
        );
        // Unless given, the server's own default for that pause, written into its config so
        // that the report names it.
        let default_batch = custodian::config::default_rewrap_batch_size(rewrap_pause_ms);
        let rewrap_batch: u32 =
            parse_knob("rewrap-batch", rewrap_batch, &default_batch.to_string())?;
        ensure!(
            (1..=10_000).contains(&rewrap_batch),
            "rewrap-batch must be 1 to 10000"
        );
        let rewrap_mode = rewrap_mode.unwrap_or_else(|| "direct".to_owned());
        ensure!(
            rewrap_mode == "direct" || rewrap_mode == "cached",
            "rewrap-mode must be direct or cached"
        );
        let concurrency = concurrency
            .as_deref()
            .unwrap_or("1,8,32")
            .split(',')
            .map(|c| {
                c.trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|c| (1..=1024).contains(c))
                    .with_context(|| format!("concurrency {c:?} is not a number from 1 to 1024"))
            })
            .collect::<Result<Vec<_>>>()?;
        let http_time = seconds("secs", parse_knob("secs", secs, "5")?)?;
        // Default: as long as the HTTP rows; 0 skips the phase.
        let audit_time = match audit_secs {
            None => Some(http_time),
            Some(text) => {
                let secs: f64 = parse_knob("audit-secs", Some(text), "")?;
                if secs == 0.0 {
                    None
                } else {
                    Some(seconds("audit-secs", secs)?)
                }
            }
        };
        Ok(Self {
            sessions,
            http_time,
            raw_time: seconds("raw-secs", parse_knob("raw-secs", raw_secs, "3")?)?,
            concurrency,
            max_requests,
            log_filter: log_filter.unwrap_or_else(|| "info".to_owned()),
            rewrap_secrets,
            rewrap_time: seconds("rewrap-secs", parse_knob("rewrap-secs", rewrap_secs, "15")?)?,
            rewrap_batch,
            rewrap_pause_ms,
            rewrap_mode,
            audit_time,
            tpm: parse_knob("tpm (true or false)", tpm, "true")?,
            nodes: match nodes.as_deref() {
                None => None,
                Some(text) => {
                    let n: usize = parse_knob("nodes", Some(text.to_owned()), "")?;
                    ensure!((2..=8).contains(&n), "--nodes must be 2 to 8");
                    Some(n)
                }
            },
            peer: match peer.as_deref() {
                None => false,
                Some("openbao") => true,
                Some(other) => bail!("--peer {other:?}: the peer is openbao"),
            },
            peer_client: peer::PeerClient::parse(peer_client.as_deref())?,
            soak: match soak.as_deref() {
                None => None,
                Some(text) => {
                    let m: u32 = parse_knob("soak", Some(text.to_owned()), "")?;
                    ensure!((1..=1440).contains(&m), "--soak must be 1 to 1440 minutes");
                    Some(m)
                }
            },
            store: match store.as_deref() {
                None | Some("sqlite") => None,
                Some("postgres") => Some("postgres".to_owned()),
                Some(other) => bail!("--store {other:?}: the comparison is --store postgres"),
            },
        })
    }
}

fn env_knob(var: &str) -> Result<Option<String>> {
    match std::env::var(var) {
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {var}")),
    }
}

fn parse_knob<T: std::str::FromStr>(name: &str, value: Option<String>, default: &str) -> Result<T> {
    let text = value.as_deref().unwrap_or(default);
    text.trim()
        .parse()
        .map_err(|_| anyhow!("{name} = {text:?} is not a valid value"))
}

fn seconds(name: &str, secs: f64) -> Result<Duration> {
    ensure!(
        secs.is_finite() && secs > 0.0 && secs <= 3600.0,
        "{name} must be between 0 and 3600 seconds"
    );
    Ok(Duration::from_secs_f64(secs))
}

// ---------------------------------------------------------------------------------------------
// The install: directory, SoftHSM conf, config file, token

/// A provisioned throw-away install.
struct Install {
    dir: PathBuf,
    softhsm_conf: PathBuf,
    config: PathBuf,
    module: PathBuf,
    user_pin: PathBuf,
    sessions: usize,
    log_filter: String,
}

impl Install {
    fn prepare(dir: &Path, module: &Path, knobs: &Knobs, swtpm: Option<&Swtpm>) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = dir
            .canonicalize()
            .with_context(|| format!("resolving {}", dir.display()))?;
        let softhsm_conf = softhsm_setup(&dir.join("softhsm"))?;
        // The raw baseline runs in this process: the module must read the bench token's conf.
        let ours = std::env::var_os("SOFTHSM2_CONF").map(PathBuf::from);
        let same = ours
            .as_deref()
            .and_then(|p| p.canonicalize().ok())
            .is_some_and(|p| p == softhsm_conf);
        ensure!(
            same,
            "SOFTHSM2_CONF ({ours:?}) must be {} before the bench starts: run scripts/bench, or \
             leave CUSTODIAN_BENCH_DIR unset",
            softhsm_conf.display()
        );
        let module_text = module
            .to_str()
            .with_context(|| format!("module path {} is not UTF-8", module.display()))?;
        let config = dir.join("custodian.toml");
        let tcti = swtpm.map(Swtpm::tcti);
        // Relative paths in the config resolve against its directory.
        let mut text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n\
             [store]\nkind = \"sqlite\"\npath = \"custodian.db\"\n\n\
             [backend]\nkind = \"pkcs11\"\nmodule = {module}\ntoken_label = \"{TOKEN_LABEL}\"\n\
             user_pin_file = \"user.pin\"\nsessions = {sessions}\n\n\
             [log]\nformat = \"text\"\nfilter = {filter}\n\n\
             [keys]\nrewrap_after_rotation = false\nrewrap_batch_size = {batch}\n\
             rewrap_pause_ms = {pause}\n",
            sessions = knobs.sessions,
            // Re-wrap jobs start only when the bench asks for one, so each is timed from its
            // start; the rotations themselves start nothing.
            batch = knobs.rewrap_batch,
            pause = knobs.rewrap_pause_ms,
            // A JSON string literal is a valid TOML basic string.
            module = serde_json::to_string(module_text)?,
            filter = serde_json::to_string(&knobs.log_filter)?,
        );
        if let Some(tcti) = &tcti {
            write!(text, "\n[tpm]\ntcti = {}\n", serde_json::to_string(tcti)?)?;
        }
        std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
        let install = Self {
            user_pin: dir.join("user.pin"),
            dir,
            softhsm_conf,
            config,
            module: module.to_owned(),
            sessions: knobs.sessions,
            log_filter: knobs.log_filter.clone(),
        };
        let out = install
            .command()
            .args(["token", "init", "--config"])
            .arg(&install.config)
            .arg("--so-pin-file")
            .arg(install.dir.join("so.pin"))
            .output()
            .context("running `custodian token init`")?;
        ensure!(
            out.status.success(),
            "`custodian token init` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(install)
    }

    /// A `custodian` command with the bench token's conf and none of the caller's Custodian
    /// settings (`CUSTODIAN__*` overrides would change what is measured).
    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_custodian"));
        for (name, _) in std::env::vars_os() {
            let n = name.to_string_lossy();
            if n.starts_with("CUSTODIAN") || n == "RUST_LOG" {
                cmd.env_remove(&name);
            }
        }
        cmd.env("SOFTHSM2_CONF", &self.softhsm_conf);
        cmd
    }
}

/// Runs `softhsm/setup DIR` and returns the conf path it prints.
fn softhsm_setup(dir: &Path) -> Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("softhsm/setup");
    let out = Command::new(&script)
        .arg(dir)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    ensure!(
        out.status.success(),
        "{} failed ({}): {}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let conf = String::from_utf8(out.stdout).context("softhsm/setup printed non-UTF-8")?;
    let conf = PathBuf::from(conf.trim());
    conf.canonicalize().with_context(|| {
        format!(
            "softhsm/setup printed {}, which does not exist",
            conf.display()
        )
    })
}

// ---------------------------------------------------------------------------------------------
// The server process

/// A running `custodian serve`; killed on drop unless stopped.
struct Server {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Server {
    /// Starts the server; returns it and the bootstrap token if this start printed one.
    fn start(install: &Install, run: u32) -> Result<(Self, Option<String>)> {
        let log = install.dir.join(format!("server-{run}.log"));
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = install
            .command()
            .args(["serve", "--config"])
            .arg(&install.config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .context("starting `custodian serve`")?;
        let stdout = child.stdout.take();
        let (tx, rx) = mpsc::channel::<String>();
        // Reads stdout to the end so the server never blocks on a full pipe; lines after the
        // address line go nowhere.
        std::thread::spawn(move || {
            let Some(stdout) = stdout else { return };
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let _ = tx.send(line);
            }
        });
        // From here on, a failure kills the child through `Drop`.
        let mut server = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let mut token = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!(
                        "the server printed no address in {START_TIMEOUT:?}{}",
                        server.log_tail()
                    )
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = server.child.wait().context("waiting for the server")?;
                    bail!(
                        "the server exited at start-up ({status}){}",
                        server.log_tail()
                    )
                }
            };
            if let Some(t) = line.strip_prefix(BOOTSTRAP_PREFIX) {
                token = Some(t.trim().to_owned());
            } else if let Some(a) = line.strip_prefix(LISTEN_PREFIX) {
                server.addr = a
                    .trim()
                    .parse()
                    .with_context(|| format!("parsing the listen address {a:?}"))?;
                break;
            }
        }
        ensure!(
            server.addr.ip().is_loopback(),
            "the server listens on {}, not on loopback",
            server.addr
        );
        Ok((server, token))
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Polls `GET /v1/health/ready` until it answers 200.
    async fn wait_ready(&mut self, client: &reqwest::Client) -> Result<()> {
        self.wait_ready_every(client, Duration::from_millis(50))
            .await
    }

    /// Polls `GET /v1/health/ready` every `every` until it answers 200.
    async fn wait_ready_every(&mut self, client: &reqwest::Client, every: Duration) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let url = self.url("/v1/health/ready");
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().context("checking the server")? {
                bail!("the server exited ({status}){}", self.log_tail());
            }
            match client.get(&url).send().await {
                Ok(r) if r.status() == StatusCode::OK => return Ok(()),
                Ok(r) => last = format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(every).await;
        }
        bail!(
            "the server was not ready in {START_TIMEOUT:?} (last: {last}){}",
            self.log_tail()
        )
    }

    /// Sends SIGTERM and waits for a clean exit.
    fn stop(mut self) -> Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .context("running kill -TERM")?;
        ensure!(
            status.success(),
            "kill -TERM {} failed ({status})",
            self.pid()
        );
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().context("waiting for the server")? {
                ensure!(
                    status.success(),
                    "the server exited with {status}{}",
                    self.log_tail()
                );
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "the server did not exit within {STOP_TIMEOUT:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines of the server log, for error messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        format!("\n--- {} (tail) ---\n{tail}", self.log.display())
    }

    /// `VmRSS` and `VmHWM` of the server, in KiB.
    fn memory(&self) -> Result<Memory> {
        memory_of(self.pid())
    }
}

/// `VmRSS` and `VmHWM` of process `pid`, in KiB.
fn memory_of(pid: u32) -> Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {name} in {path}"))
    };
    Ok(Memory {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// Sends `req` and reads the answer: `Ok` on 200, else the status and body (or the transport
/// error) as text.
async fn send_expecting_ok(req: reqwest::RequestBuilder) -> std::result::Result<(), String> {
    let res = req.send().await.map_err(|e| e.to_string())?;
    let status = res.status();
    let bytes = res.bytes().await.map_err(|e| e.to_string())?;
    if status == StatusCode::OK {
        Ok(())
    } else {
        Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)))
    }
}

/// Stores `value` at secret `path` under the bench key (what the read rows fetch).
async fn put_bench_secret(
    client: &reqwest::Client,
    server: &Server,
    token: &str,
    path: &str,
    value: &str,
) -> Result<()> {
    expect_json(
        client
            .put(server.url(&format!("/v1/secrets/{path}")))
            .bearer_auth(token)
            .json(&serde_json::json!({ "value_text": value, "key": KEY_NAME })),
        "PUT the secret the reads fetch",
        StatusCode::OK,
    )
    .await
    .map(drop)
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Memory {
    rss_kib: u64,
    hwm_kib: u64,
}

/// CPU time a process has used, from `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, Default)]
struct CpuTime {
    user: Duration,
    system: Duration,
}

impl CpuTime {
    fn since(self, before: Self) -> Self {
        Self {
            user: self.user.saturating_sub(before.user),
            system: self.system.saturating_sub(before.system),
        }
    }

    fn total(self) -> Duration {
        self.user + self.system
    }
}

fn cpu_time(pid: &str, ticks_per_sec: f64) -> Result<CpuTime> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // Fields after the command name (which may contain spaces) start with the state, field 3;
    // utime and stime are fields 14 and 15.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("unexpected {path}"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .map(|t| t as f64)
            .with_context(|| format!("unexpected {path}"))
    };
    Ok(CpuTime {
        user: Duration::from_secs_f64(ticks(11)? / ticks_per_sec),
        system: Duration::from_secs_f64(ticks(12)? / ticks_per_sec),
    })
}

/// CPU time of the whole machine, from the first line of `/proc/stat`.
#[derive(Debug, Clone, Copy, Default)]
struct MachineCpu {
    /// Every CPU's time not idle and not waiting for I/O.
    busy: Duration,
    /// Time the hypervisor gave this VM's CPUs to someone else.
    steal: Duration,
}

impl MachineCpu {
    fn since(self, before: Self) -> Self {
        Self {
            busy: self.busy.saturating_sub(before.busy),
            steal: self.steal.saturating_sub(before.steal),
        }
    }
}

fn machine_cpu(ticks_per_sec: f64) -> Result<MachineCpu> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let fields: Vec<f64> = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .context("unexpected /proc/stat")?
        .split_whitespace()
        .map(|f| f.parse::<f64>().context("unexpected /proc/stat"))
        .collect::<Result<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let field = |i: usize| fields.get(i).copied().unwrap_or(0.0);
    let busy = field(0) + field(1) + field(2) + field(5) + field(6) + field(7);
    let secs = |t: f64| Duration::from_secs_f64(t / ticks_per_sec);
    Ok(MachineCpu {
        busy: secs(busy),
        steal: secs(field(7)),
    })
}

/// `getconf CLK_TCK`, or 100 (the Linux value everywhere we run) if that fails.
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

// ---------------------------------------------------------------------------------------------
// The swtpm process

/// How long swtpm may take to accept connections.
const SWTPM_START_TIMEOUT: Duration = Duration::from_secs(10);

/// The bench's own swtpm: a TPM 2.0 simulator on two free loopback ports (server P, control
/// P+1) with its state in the bench directory; killed and reaped on drop.
struct Swtpm {
    child: Child,
    port: u16,
    version: String,
}

impl Swtpm {
    /// Starts swtpm on `state` (created 0700), retrying with new ports if another process takes
    /// them first.
    fn start(state: &Path) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::create_dir_all(state).with_context(|| format!("creating {}", state.display()))?;
        std::fs::set_permissions(state, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", state.display()))?;
        let version = Command::new("swtpm")
            .arg("--version")
            .output()
            .context("running `swtpm --version` (install swtpm, or pass --tpm false)")?;
        let version = String::from_utf8_lossy(&version.stdout)
            .lines()
            .next()
            .unwrap_or("unknown version")
            .trim()
            .to_owned();
        let mut last_error = None;
        for _ in 0..10 {
            let port = free_port_pair()?;
            match spawn_swtpm(state, port) {
                Ok(child) => {
                    return Ok(Self {
                        child,
                        port,
                        version,
                    })
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("swtpm did not start")))
    }

    /// The TCTI for tss-esapi and for `[tpm] tcti`.
    fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port P such that P and P+1 are both free on 127.0.0.1 right now.
fn free_port_pair() -> Result<u16> {
    use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
    for _ in 0..100 {
        let first = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
            .context("binding a loopback port")?;
        let port = first.local_addr().context("reading a bound port")?.port();
        let Some(next) = port.checked_add(1) else {
            continue;
        };
        if TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, next)).is_ok() {
            return Ok(port);
        }
    }
    bail!("found no two consecutive free loopback ports")
}

/// Starts swtpm and waits until its control port accepts; fails if it exits first (e.g. a port
/// was taken).
fn spawn_swtpm(state: &Path, port: u16) -> Result<Child> {
    use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
    let ctrl_port = port.checked_add(1).context("no control port above 65535")?;
    let mut child = Command::new("swtpm")
        .arg("socket")
        .arg("--tpm2")
        .arg("--tpmstate")
        .arg(format!("dir={}", state.display()))
        .arg("--server")
        .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
        .arg("--ctrl")
        .arg(format!("type=tcp,port={ctrl_port},bindaddr=127.0.0.1"))
        .arg("--flags")
        .arg("not-need-init,startup-clear")
        .arg("--log")
        .arg(format!(
            "file={},level=1",
            state.join("swtpm.log").display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting swtpm (install swtpm, or pass --tpm false)")?;
    let deadline = Instant::now() + SWTPM_START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().context("checking swtpm")? {
            bail!("swtpm exited with {status} before accepting on port {ctrl_port}");
        }
        // Probe the control port only: the server port serves one client at a time.
        let ctrl = SocketAddrV4::new(Ipv4Addr::LOCALHOST, ctrl_port);
        if TcpStream::connect_timeout(&ctrl.into(), Duration::from_millis(200)).is_ok() {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("swtpm did not accept on port {ctrl_port} within {SWTPM_START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// Measurement

/// Throughput and latency of one loop.
#[derive(Debug, Clone)]
struct Stats {
    ops: u64,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
    errors: u64,
    first_error: Option<String>,
    /// Busy CPU time of everything other than the bench and the server during the loop.
    other_cpu: Duration,
}

impl Stats {
    fn from_latencies(
        mut latencies: Vec<Duration>,
        elapsed: Duration,
        errors: u64,
        first_error: Option<String>,
    ) -> Self {
        latencies.sort_unstable();
        Self {
            ops: latencies.len() as u64,
            elapsed,
            p50: percentile(&latencies, 0.50),
            p99: percentile(&latencies, 0.99),
            errors,
            first_error,
            other_cpu: Duration::ZERO,
        }
    }

    fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// `other_cpu` as a percentage of one core over the loop.
    fn other_cpu_pct(&self) -> f64 {
        100.0 * self.other_cpu.as_secs_f64() / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One raw loop's result.
struct RawRow {
    name: &'static str,
    stats: Stats,
    /// CPU time of the bench process (which makes the device calls) during the loop.
    cpu: CpuTime,
    /// Machine-wide CPU time during the loop.
    machine: MachineCpu,
}

/// One HTTP row's result.
struct HttpRow {
    op: Op,
    concurrency: usize,
    stats: Stats,
    memory: Memory,
    server_cpu: CpuTime,
    client_cpu: CpuTime,
    /// CPU of the bench's swtpm during the row, when there is one.
    swtpm_cpu: Option<CpuTime>,
    machine: MachineCpu,
}

impl HttpRow {
    /// `d` in µs per completed request of the row.
    fn per_op_us(&self, d: Duration) -> f64 {
        d.as_secs_f64() * 1e6 / (self.stats.ops.max(1) as f64)
    }

    /// `d` in cores over the row (1.0 = one core busy throughout).
    fn cores(&self, d: Duration) -> f64 {
        d.as_secs_f64() / self.stats.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

/// What a bench request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// `POST /v1/keys/{key}/datakey` on one of the device-and-mode keys.
    Datakey(DeviceKey),
    Decrypt,
    /// `GET /v1/health/live`: no auth, no JSON body, no device: the floor of the HTTP stack.
    Live,
    /// `GET /v1/keys/bench`: authenticated, policy-checked, audited, no device call: the
    /// service with no device call at all.
    KeyRead,
}

impl Op {
    fn label(self) -> String {
        match self {
            Self::Datakey(key) => format!("POST /v1/keys/{}/datakey", key.name()),
            Self::Decrypt => "POST /v1/decrypt".to_owned(),
            Self::Live => "GET /v1/health/live (reference)".to_owned(),
            Self::KeyRead => format!("GET /v1/keys/{KEY_NAME} (reference: no device call)"),
        }
    }

    /// The raw loop this operation is compared with.
    fn baseline(self) -> Option<&'static str> {
        match self {
            Self::Datakey(key) => key.raw_baseline(),
            Self::Decrypt => Some(RAW_OPEN),
            Self::Live | Self::KeyRead => None,
        }
    }
}

/// The keys of the device-and-mode rows (issue 7): which device holds the root, which mode
/// wraps the data keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeviceKey {
    /// `bench`: one GCM seal in SoftHSM per data key (plus C_GenerateRandom).
    Pkcs11Direct,
    /// One SoftHSM unwrap of the version-KEK per TTL, then software KWP.
    Pkcs11Cached,
    /// One TPM2_HMAC per wrap (plus TPM2_GetRandom per data key).
    TpmDirect,
    /// One TPM2_HMAC unwrap of the version-KEK per TTL, then software KWP.
    TpmCached,
}

impl DeviceKey {
    /// The keys a run measures: all four, or the PKCS#11 two with `--tpm false`.
    fn in_run(tpm: bool) -> Vec<Self> {
        [
            Self::Pkcs11Direct,
            Self::Pkcs11Cached,
            Self::TpmDirect,
            Self::TpmCached,
        ]
        .into_iter()
        .filter(|k| tpm || !k.is_tpm())
        .collect()
    }

    fn name(self) -> &'static str {
        match self {
            Self::Pkcs11Direct => KEY_NAME,
            Self::Pkcs11Cached => "bench-p11-cached",
            Self::TpmDirect => "bench-tpm-direct",
            Self::TpmCached => "bench-tpm-cached",
        }
    }

    fn is_tpm(self) -> bool {
        matches!(self, Self::TpmDirect | Self::TpmCached)
    }

    /// `backend` of `POST /v1/keys`.
    fn backend(self) -> &'static str {
        if self.is_tpm() {
            "tpm"
        } else {
            "pkcs11"
        }
    }

    /// `mode` of `POST /v1/keys`.
    fn mode(self) -> &'static str {
        match self {
            Self::Pkcs11Direct | Self::TpmDirect => "direct",
            Self::Pkcs11Cached | Self::TpmCached => "cached",
        }
    }

    /// The algorithm of the blobs the key's data keys come back in.
    fn algorithm(self) -> Algorithm {
        match self {
            Self::Pkcs11Direct => Algorithm::Aes256GcmDevice,
            Self::Pkcs11Cached | Self::TpmCached => Algorithm::Aes256KwpCached,
            Self::TpmDirect => Algorithm::Aes256KwpTpmHmac,
        }
    }

    /// The raw loop a direct-mode `datakey` is compared with; cached mode makes no device call
    /// per request.
    fn raw_baseline(self) -> Option<&'static str> {
        match self {
            Self::Pkcs11Direct => Some(RAW_SEAL),
            Self::TpmDirect => Some(RAW_TPM_HMAC),
            Self::Pkcs11Cached | Self::TpmCached => None,
        }
    }
}

const RAW_SEAL: &str = "raw gcm_seal_with_iv, 32 B";
const RAW_RNG_SEAL: &str = "raw C_GenerateRandom(32) + gcm_seal_with_iv";
const RAW_OPEN: &str = "raw gcm_open, 32 B";
const RAW_TPM_HMAC: &str = "raw TPM2_HMAC (load + HMAC + flush), 65 B";
const RAW_TPM_HMAC_KEPT: &str = "raw TPM2_HMAC, version key kept loaded, 65 B";
const RAW_TPM_RNG_HMAC: &str = "raw TPM2_GetRandom(32) + TPM2_HMAC, key kept loaded";

/// Everything one run measured.
struct Report {
    started: String,
    revision: String,
    load_before: String,
    library: String,
    /// The swtpm and what it says about itself, unless `--tpm false`.
    tpm: Option<String>,
    /// The keys of the device-and-mode rows, `bench` first.
    device_keys: Vec<DeviceKey>,
    raw: Vec<RawRow>,
    http: Vec<HttpRow>,
    /// The re-wrap phase, unless `--rewrap-secrets 0` skipped it.
    rewrap: Option<RewrapReport>,
    /// The audit phase, unless `--audit-secs 0` skipped it.
    audit: Option<AuditReport>,
    /// The restarts before the load: from spawning the process to the first 200 from
    /// `/v1/health/ready` (polled every 2 ms), and the memory right after the last, before any
    /// load.
    startup: (Starts, Memory),
    /// The WAL warm-up before the first row ([`warm_wal`]).
    wal_warmup: Option<WalWarmup>,
}

/// How many times the server is started before the load, for the start-up figure.
const START_SAMPLES: usize = 5;

/// The start-up times of the restarts before the load, in order.
struct Starts {
    all: Vec<Duration>,
}

impl Starts {
    fn new(all: Vec<Duration>) -> Self {
        Self { all }
    }

    /// The middle one (the upper of the two middle ones for an even count).
    fn median(&self) -> Duration {
        let mut sorted = self.all.clone();
        sorted.sort_unstable();
        sorted.get(sorted.len() / 2).copied().unwrap_or_default()
    }
}

/// What the first server start handed us.
struct Setup {
    token: String,
    blob: Blob,
    blob_b64: String,
    plaintext: Vec<u8>,
}

fn measure(install: &Install, knobs: &Knobs, swtpm: Option<&Swtpm>) -> Result<Report> {
    let started = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .context("formatting the date")?;
    let (revision, load_before) = (revision(), load_average());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the client runtime")?;

    // 1–2. First start: bootstrap token, key, one checked round trip.
    eprintln!("bench: starting the server ({} sessions)", install.sessions);
    let (mut server, token) = Server::start(install, 1)?;
    let token = token.context("the first start printed no bootstrap token")?;
    let client = http_client(1)?;
    let device_keys = DeviceKey::in_run(swtpm.is_some());
    let setup = rt.block_on(async {
        server.wait_ready(&client).await?;
        let setup = first_round_trip(&client, &server, token).await?;
        for &key in &device_keys {
            if key != DeviceKey::Pkcs11Direct {
                create_device_key(&client, &server, &setup.token, key).await?;
            }
        }
        Ok::<_, anyhow::Error>(setup)
    })?;
    server
        .stop()
        .context("stopping the server before the raw baseline")?;

    // 3. Raw baseline, in this process, on the same token object and the same swtpm.
    eprintln!("bench: raw baseline ({:?} per loop)", knobs.raw_time);
    let (library, mut raw) = raw_baseline(install, &setup, knobs.raw_time)?;
    let tpm = match swtpm {
        Some(swtpm) => {
            eprintln!("bench: raw TPM baseline ({:?} per loop)", knobs.raw_time);
            let (description, rows) = raw_tpm(&rt, swtpm, knobs.raw_time)?;
            raw.extend(rows);
            Some(description)
        }
        None => None,
    };

    // 4. Restart and load.
    eprintln!("bench: restarting the server");
    // The client is built before the clock starts: its set-up is not the server's start-up.
    let max_concurrency = knobs.concurrency.iter().copied().max().unwrap_or(1);
    let client = http_client(max_concurrency)?;
    // One start is one sample on a shared VM: the server starts [`START_SAMPLES`] times and
    // the median is judged; the last start serves the load.
    let mut starts = Vec::with_capacity(START_SAMPLES);
    let server = loop {
        let spawned = Instant::now();
        let (mut server, again) = Server::start(install, 2)?;
        ensure!(again.is_none(), "a restart printed a bootstrap token again");
        rt.block_on(server.wait_ready_every(&client, Duration::from_millis(2)))?;
        starts.push(spawned.elapsed());
        if starts.len() == START_SAMPLES {
            break server;
        }
        server.stop()?;
    };
    let startup = (Starts::new(starts), server.memory()?);
    let auth = HeaderValue::from_str(&format!("Bearer {}", setup.token))
        .context("the bootstrap token is not a valid header value")?;
    let context = serde_json::from_str::<serde_json::Value>(CONTEXT_JSON)?;
    let datakey = datakey_target(&server, DeviceKey::Pkcs11Direct, &auth);
    let wal_warmup = match &datakey {
        Ok(target) => {
            let warm = rt.block_on(warm_wal(
                &client,
                target,
                &install.dir.join("custodian.db-wal"),
                knobs.max_requests,
            ))?;
            eprintln!(
                "bench: WAL warmed: {} datakey requests in {:.1} s (the idle memory was read before)",
                warm.requests,
                warm.took.as_secs_f64()
            );
            Some(warm)
        }
        Err(_) => None,
    };
    let decrypt = Ok(Target {
        url: server.url("/v1/decrypt"),
        body: Some(
            serde_json::json!({ "ciphertext": setup.blob_b64, "context": context }).to_string(),
        ),
        auth: Some(auth.clone()),
        put_fresh: false,
    });
    let live = Ok(Target {
        url: server.url("/v1/health/live"),
        body: None,
        auth: None,
        put_fresh: false,
    });
    let key_read = Ok(Target {
        url: server.url(&format!("/v1/keys/{KEY_NAME}")),
        body: None,
        auth: Some(auth.clone()),
        put_fresh: false,
    });
    let ticks = clock_ticks();
    let server_pid = server.pid().to_string();
    let mut http = Vec::new();
    let targets = [
        (Op::Datakey(DeviceKey::Pkcs11Direct), datakey),
        (Op::Decrypt, decrypt),
        (Op::Live, live),
        (Op::KeyRead, key_read),
    ]
    .into_iter()
    .chain(
        device_keys
            .iter()
            .filter(|k| **k != DeviceKey::Pkcs11Direct)
            .map(|&k| (Op::Datakey(k), datakey_target(&server, k, &auth))),
    )
    .map(|(op, target)| target.map(|t| (op, t)))
    .collect::<Result<Vec<_>>>()?;
    let swtpm_pid = swtpm.map(Swtpm::pid);
    let swtpm_cpu = |pid: &Option<String>| {
        pid.as_deref()
            .map(|p| cpu_time(p, ticks))
            .transpose()
            .context("reading swtpm's CPU time")
    };
    for (op, target) in &targets {
        let op = *op;
        for &concurrency in &knobs.concurrency {
            eprintln!(
                "bench: {} at concurrency {concurrency} for {:?}",
                op.label(),
                knobs.http_time
            );
            rt.block_on(load(
                &client,
                target,
                concurrency,
                WARMUP,
                knobs.max_requests,
            ))?;
            let (server_before, client_before, machine_before, swtpm_before) = (
                cpu_time(&server_pid, ticks)?,
                cpu_time("self", ticks)?,
                machine_cpu(ticks)?,
                swtpm_cpu(&swtpm_pid)?,
            );
            let mut stats = rt.block_on(load(
                &client,
                target,
                concurrency,
                knobs.http_time,
                knobs.max_requests,
            ))?;
            let server_cpu = cpu_time(&server_pid, ticks)?.since(server_before);
            let client_cpu = cpu_time("self", ticks)?.since(client_before);
            let machine = machine_cpu(ticks)?.since(machine_before);
            let swtpm_used = swtpm_cpu(&swtpm_pid)?
                .zip(swtpm_before)
                .map(|(after, before)| after.since(before));
            ensure!(
                stats.ops > 0,
                "no {} request completed at concurrency {concurrency} ({} errors; first: {})",
                op.label(),
                stats.errors,
                stats.first_error.as_deref().unwrap_or("none")
            );
            stats.other_cpu = machine.busy.saturating_sub(
                server_cpu.total()
                    + client_cpu.total()
                    + swtpm_used.unwrap_or_default().total()
                    + machine.steal,
            );
            http.push(HttpRow {
                op,
                concurrency,
                stats,
                memory: server.memory()?,
                server_cpu,
                client_cpu,
                swtpm_cpu: swtpm_used,
                machine,
            });
        }
    }

    // 5. The re-wrap phase, on the same server.
    let rewrap = if knobs.rewrap_secrets > 0 {
        Some(rt.block_on(rewrap_phase(&server, &setup.token, knobs, ticks))?)
    } else {
        eprintln!("bench: re-wrap phase skipped (--rewrap-secrets 0)");
        None
    };

    // The service still answers correctly after the load, on every key.
    rt.block_on(async {
        for &key in &device_keys {
            round_trip(&client, &server, &setup.token, key)
                .await
                .with_context(|| format!("round trip on `{}` after the load", key.name()))?;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    server.stop().context("stopping the server")?;

    // 6. The audit phase, in this process, on the same directory (the server is stopped).
    let audit = match knobs.audit_time {
        Some(time) => Some(audit_phase(&rt, install, &setup.token, knobs, time, ticks)?),
        None => {
            eprintln!("bench: audit phase skipped (--audit-secs 0)");
            None
        }
    };
    Ok(Report {
        started,
        revision,
        load_before,
        library,
        tpm,
        device_keys,
        raw,
        http,
        rewrap,
        audit,
        startup,
        wal_warmup,
    })
}

fn http_client(concurrency: usize) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        // Loopback only: never through a proxy from the environment.
        .no_proxy()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(concurrency)
        // Below every limit after which the server closes a kept-alive connection: a connection
        // left in the pool is dropped here first, so a request is never sent on a connection
        // the server is closing. The soak saw two such errors with reqwest's default of 90 s,
        // against `server.idle_timeout_ms` (60 s); a peer run saw one with 30 s, against
        // `server.header_read_timeout_ms` (10 s), which hyper also runs while a kept-alive
        // connection waits for its next request (the peer bench leaves Custodian's pool idle
        // while OpenBao's cell runs).
        .pool_idle_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTP client")
}

/// Creates the key and checks one data key round trip; returns the blob for the decrypt rows.
async fn first_round_trip(
    client: &reqwest::Client,
    server: &Server,
    token: String,
) -> Result<Setup> {
    let res = client
        .post(server.url("/v1/keys"))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "name": KEY_NAME }))
        .send()
        .await
        .context("POST /v1/keys")?;
    let status = res.status();
    ensure!(
        status == StatusCode::CREATED,
        "POST /v1/keys answered {status}: {}",
        res.text().await.unwrap_or_default()
    );
    let (blob_b64, plaintext) = datakey_call(client, server, &token).await?;
    decrypt_check(client, server, &token, &blob_b64, &plaintext).await?;
    let blob_bytes = STANDARD
        .decode(&blob_b64)
        .context("ciphertext is not base64")?;
    let blob =
        Blob::parse(&blob_bytes).map_err(|e| anyhow!("the service returned a bad blob: {e}"))?;
    Ok(Setup {
        token,
        blob,
        blob_b64,
        plaintext,
    })
}

async fn post_json(
    client: &reqwest::Client,
    url: String,
    token: &str,
    body: serde_json::Value,
) -> Result<serde_json::Value> {
    let res = client
        .post(&url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = res.status();
    let text = res.text().await.with_context(|| format!("reading {url}"))?;
    ensure!(
        status == StatusCode::OK,
        "POST {url} answered {status}: {text}"
    );
    serde_json::from_str(&text).with_context(|| format!("POST {url} answered non-JSON"))
}

fn string_field<'a>(v: &'a serde_json::Value, name: &str) -> Result<&'a str> {
    v.get(name)
        .and_then(serde_json::Value::as_str)
        .with_context(|| format!("response has no string field {name:?}"))
}

/// Where requests go: the out-of-process server or the in-process app.
trait Endpoint {
    fn url(&self, path: &str) -> String;
}

impl Endpoint for Server {
    fn url(&self, path: &str) -> String {
        Server::url(self, path)
    }
}

impl Endpoint for InProcessApp {
    fn url(&self, path: &str) -> String {
        InProcessApp::url(self, path)
    }
}

/// One data key request on `bench`; returns the blob (base64) and the plaintext data key.
async fn datakey_call(
    client: &reqwest::Client,
    server: &impl Endpoint,
    token: &str,
) -> Result<(String, Vec<u8>)> {
    datakey_call_on(client, server, token, KEY_NAME).await
}

/// The `datakey` request on `key`, as a load target.
fn datakey_target(server: &Server, key: DeviceKey, auth: &HeaderValue) -> Result<Target> {
    let context = serde_json::from_str::<serde_json::Value>(CONTEXT_JSON)?;
    Ok(Target {
        url: server.url(&format!("/v1/keys/{}/datakey", key.name())),
        body: Some(serde_json::json!({ "context": context }).to_string()),
        auth: Some(auth.clone()),
        put_fresh: false,
    })
}

/// Creates `key` with its backend and mode, checks what the service says it created, and
/// checks one data key round trip.
async fn create_device_key(
    client: &reqwest::Client,
    server: &Server,
    token: &str,
    key: DeviceKey,
) -> Result<()> {
    let what = format!("POST /v1/keys ({})", key.name());
    let created = expect_json(
        client.post(server.url("/v1/keys")).bearer_auth(token).json(
            &serde_json::json!({ "name": key.name(), "backend": key.backend(), "mode": key.mode() }),
        ),
        &what,
        StatusCode::CREATED,
    )
    .await?;
    for (field, want) in [("backend", key.backend()), ("mode", key.mode())] {
        if let Some(got) = created.get(field) {
            ensure!(
                got.as_str() == Some(want),
                "{what} answered {field} {got}, not {want:?}"
            );
        }
    }
    round_trip(client, server, token, key)
        .await
        .with_context(|| format!("first round trip on `{}`", key.name()))
}

/// One `datakey` → `decrypt` round trip on `key`; the blob must carry `key`'s algorithm.
async fn round_trip(
    client: &reqwest::Client,
    server: &Server,
    token: &str,
    key: DeviceKey,
) -> Result<()> {
    let (blob_b64, plaintext) = datakey_call_on(client, server, token, key.name()).await?;
    decrypt_check(client, server, token, &blob_b64, &plaintext).await?;
    let bytes = STANDARD
        .decode(&blob_b64)
        .context("ciphertext is not base64")?;
    let blob = Blob::parse(&bytes).map_err(|e| anyhow!("the service returned a bad blob: {e}"))?;
    ensure!(
        blob.algorithm == key.algorithm(),
        "`{}` ({} {}) returned a blob of {:?}, not {:?}",
        key.name(),
        key.backend(),
        key.mode(),
        blob.algorithm,
        key.algorithm()
    );
    Ok(())
}

/// One data key request on the key `name`; returns the blob (base64) and the plaintext.
async fn datakey_call_on(
    client: &reqwest::Client,
    server: &impl Endpoint,
    token: &str,
    name: &str,
) -> Result<(String, Vec<u8>)> {
    let context = serde_json::from_str::<serde_json::Value>(CONTEXT_JSON)?;
    let url = server.url(&format!("/v1/keys/{name}/datakey"));
    let v = post_json(
        client,
        url,
        token,
        serde_json::json!({ "context": context }),
    )
    .await?;
    let plaintext = STANDARD
        .decode(string_field(&v, "plaintext")?)
        .context("plaintext is not base64")?;
    ensure!(
        plaintext.len() == DATA_KEY_LEN,
        "data key is {} bytes, not {DATA_KEY_LEN}",
        plaintext.len()
    );
    ensure!(v.get("key_id").is_some(), "datakey response has no key_id");
    ensure!(
        v.get("key_version").is_some(),
        "datakey response has no key_version"
    );
    Ok((string_field(&v, "ciphertext")?.to_owned(), plaintext))
}

/// Decrypts `blob_b64` and checks it yields `want`.
async fn decrypt_check(
    client: &reqwest::Client,
    server: &impl Endpoint,
    token: &str,
    blob_b64: &str,
    want: &[u8],
) -> Result<()> {
    let context = serde_json::from_str::<serde_json::Value>(CONTEXT_JSON)?;
    let body = serde_json::json!({ "ciphertext": blob_b64, "context": context });
    let v = post_json(client, server.url("/v1/decrypt"), token, body).await?;
    let got = STANDARD
        .decode(string_field(&v, "plaintext")?)
        .context("plaintext is not base64")?;
    ensure!(got == want, "decrypt returned a different data key");
    Ok(())
}

/// A request to repeat: a POST of a JSON body with an `Authorization` value, or a plain GET.
struct Target {
    url: String,
    body: Option<String>,
    auth: Option<HeaderValue>,
    /// PUT the body to `url` followed by a path no request used before (fresh secret writes)
    /// instead of POSTing it to `url`.
    put_fresh: bool,
}

/// Runs `concurrency` workers against `target` for `duration` or `max_requests` requests,
/// whichever ends first. A request counts as done when it answered 200 and its body was read.
async fn load(
    client: &reqwest::Client,
    target: &Target,
    concurrency: usize,
    duration: Duration,
    max_requests: u64,
) -> Result<Stats> {
    let never = Arc::new(AtomicBool::new(false));
    load_until(client, target, concurrency, duration, max_requests, never).await
}

/// WAL bytes past which the SQLite store's checkpointer starts the WAL over: its restart bound
/// in frames, each a 4 KiB page (SQLite's default page size, which the store keeps) and a
/// 24-byte header, after the 32-byte file header.
const WAL_RESTART_BYTES: u64 =
    custodian::store::sqlite::WAL_RESTART_FRAMES.unsigned_abs() * (4096 + 24) + 32;
/// Longest the WAL warm-up may take before the bench gives up.
const WAL_WARMUP_MAX: Duration = Duration::from_secs(60);

/// What [`warm_wal`] did.
struct WalWarmup {
    took: Duration,
    requests: u64,
}

/// Sends `target` at concurrency 4 until the SQLite store's WAL (`wal`) has passed its restart
/// size, then 0.6 s more (the checkpointer looks every 200 ms; the WAL starts over at the first
/// commit after its restart). The rows after it then commit over a file already written, as a
/// server does once it has run a while. The first ~8,000 commits after a start extend the file
/// instead, and each of their flushes also commits the file's new size (docs/performance.md,
/// "A cold WAL"); the durable-commit probe writes over its WAL too.
async fn warm_wal(
    client: &reqwest::Client,
    target: &Target,
    wal: &Path,
    max_requests: u64,
) -> Result<WalWarmup> {
    let started = Instant::now();
    let mut requests = 0;
    let step = |d| load(client, target, 4, d, max_requests);
    while std::fs::metadata(wal).map_or(0, |m| m.len()) < WAL_RESTART_BYTES {
        ensure!(
            started.elapsed() < WAL_WARMUP_MAX,
            "the WAL {} stayed under {WAL_RESTART_BYTES} bytes for {WAL_WARMUP_MAX:?}",
            wal.display()
        );
        requests += checked(step(Duration::from_millis(500)).await?, "warming the WAL")?.ops;
    }
    requests += checked(step(Duration::from_millis(600)).await?, "warming the WAL")?.ops;
    Ok(WalWarmup {
        took: started.elapsed(),
        requests,
    })
}

/// [`load`] that also ends, after the requests in flight, once `stop` is set.
async fn load_until(
    client: &reqwest::Client,
    target: &Target,
    concurrency: usize,
    duration: Duration,
    max_requests: u64,
    stop: Arc<AtomicBool>,
) -> Result<Stats> {
    load_spread(
        client,
        std::slice::from_ref(target),
        concurrency,
        duration,
        max_requests,
        stop,
    )
    .await
}

/// [`load_until`] with the workers spread over `targets` (worker `w` sends to
/// `targets[w % targets.len()]`): the same request to several nodes.
async fn load_spread(
    client: &reqwest::Client,
    targets: &[Target],
    concurrency: usize,
    duration: Duration,
    max_requests: u64,
    stop: Arc<AtomicBool>,
) -> Result<Stats> {
    ensure!(!targets.is_empty(), "no target to load");
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut workers = tokio::task::JoinSet::new();
    static FRESH: AtomicU64 = AtomicU64::new(0);
    for w in 0..concurrency {
        let target = &targets[w % targets.len()];
        let (client, issued, stop) = (client.clone(), Arc::clone(&issued), Arc::clone(&stop));
        let (url, body, auth) = (target.url.clone(), target.body.clone(), target.auth.clone());
        let put_fresh = target.put_fresh;
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut first_error = None;
            while Instant::now() < deadline
                && !stop.load(Ordering::Relaxed)
                && issued.fetch_add(1, Ordering::Relaxed) < max_requests
            {
                let t = Instant::now();
                let outcome = async {
                    let req = match &body {
                        Some(body) if put_fresh => client
                            .put(format!("{url}{}", FRESH.fetch_add(1, Ordering::Relaxed)))
                            .header(CONTENT_TYPE, "application/json")
                            .body(body.clone()),
                        Some(body) => client
                            .post(&url)
                            .header(CONTENT_TYPE, "application/json")
                            .body(body.clone()),
                        None => client.get(&url),
                    };
                    let req = match &auth {
                        Some(auth) => req.header(AUTHORIZATION, auth.clone()),
                        None => req,
                    };
                    send_expecting_ok(req).await
                }
                .await;
                match outcome {
                    Ok(()) => latencies.push(t.elapsed()),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (latencies, errors, first_error)
        });
    }
    let mut latencies = Vec::new();
    let (mut errors, mut first_error) = (0u64, None);
    while let Some(joined) = workers.join_next().await {
        let (l, e, f) = joined.context("a load worker failed")?;
        latencies.extend(l);
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    Ok(Stats::from_latencies(
        latencies,
        start.elapsed(),
        errors,
        first_error,
    ))
}

// ---------------------------------------------------------------------------------------------
// Store comparison (issue 14): `--store postgres`

/// The rows of the store comparison, each measured on SQLite and then on PostgreSQL.
const STORE_OPS: [&str; 4] = [
    "POST /v1/keys/bench/datakey",
    "POST /v1/decrypt",
    "PUT /v1/secrets/{fresh path}",
    "GET /v1/secrets/bench/read",
];

/// Runs the server on SQLite, then on a fresh PostgreSQL database (`CUSTODIAN_BENCH_POSTGRES_URL`,
/// a superuser URL; scripts/bench starts a throw-away cluster), on the same token, and drives
/// `datakey`, `decrypt`, fresh-path secret writes and secret reads at every concurrency on each.
/// Returns the Markdown table with PostgreSQL ÷ SQLite per row and the issue's target (≥ 0.70
/// of SQLite's throughput at concurrency 32, p99 ≤ 10 ms).
fn store_comparison(install: &Install, knobs: &Knobs) -> Result<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the client runtime")?;
    let database = fresh_bench_database(&rt, "custodian_bench")?;
    let base = std::fs::read_to_string(&install.config).context("reading the bench config")?;
    let sqlite_section = "[store]\nkind = \"sqlite\"\npath = \"custodian.db\"\n";
    ensure!(
        base.contains(sqlite_section),
        "the bench config has no SQLite [store] section"
    );
    let stores = [
        (
            "SQLite",
            "[store]\nkind = \"sqlite\"\npath = \"store-bench.db\"\n".to_owned(),
        ),
        (
            "PostgreSQL",
            format!("[store]\nkind = \"postgres\"\nurl = \"{database}\"\n"),
        ),
    ];
    let max_concurrency = knobs.concurrency.iter().copied().max().unwrap_or(1);
    let mut rows: Vec<(usize, usize, Stats)> = Vec::new();
    let mut warmed = None;
    for (run, (store, section)) in stores.iter().enumerate() {
        let config = install
            .dir
            .join(format!("custodian-{}.toml", store.to_lowercase()));
        std::fs::write(&config, base.replace(sqlite_section, section))
            .with_context(|| format!("writing {}", config.display()))?;
        let variant = Install {
            dir: install.dir.clone(),
            softhsm_conf: install.softhsm_conf.clone(),
            config,
            module: install.module.clone(),
            user_pin: install.user_pin.clone(),
            sessions: install.sessions,
            log_filter: install.log_filter.clone(),
        };
        eprintln!("bench: store comparison: starting the server on {store}");
        let run_no = 20 + u32::try_from(run).unwrap_or(0);
        let (mut server, token) = Server::start(&variant, run_no)?;
        let token = token.with_context(|| format!("no bootstrap token on {store}"))?;
        let client = http_client(max_concurrency)?;
        let targets = rt.block_on(async {
            server.wait_ready(&client).await?;
            let setup = first_round_trip(&client, &server, token.clone()).await?;
            let auth = HeaderValue::from_str(&format!("Bearer {token}"))
                .context("the bootstrap token is not a valid header value")?;
            let put = |url: String| {
                client
                    .put(server.url(&url))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({ "value_text": "bench", "key": KEY_NAME }))
            };
            expect_json(
                put("/v1/secrets/bench/read".to_owned()),
                "PUT a secret",
                StatusCode::OK,
            )
            .await?;
            let context = serde_json::from_str::<serde_json::Value>(CONTEXT_JSON)?;
            let target = |url: String, body: Option<serde_json::Value>, put_fresh| Target {
                url,
                body: body.map(|b| b.to_string()),
                auth: Some(auth.clone()),
                put_fresh,
            };
            Ok::<_, anyhow::Error>([
                target(
                    server.url(&format!("/v1/keys/{KEY_NAME}/datakey")),
                    Some(serde_json::json!({ "context": context })),
                    false,
                ),
                target(
                    server.url("/v1/decrypt"),
                    Some(serde_json::json!({ "ciphertext": setup.blob_b64, "context": context })),
                    false,
                ),
                target(
                    server.url(&format!("/v1/secrets/bench/w{run}/")),
                    Some(serde_json::json!({ "value_text": "bench-value", "key": KEY_NAME })),
                    true,
                ),
                target(server.url("/v1/secrets/bench/read"), None, false),
            ])
        })?;
        // SQLite's WAL past its restart size first, as in the main rows (`warm_wal`).
        // PostgreSQL writes each WAL segment in full when it makes it, and recycles it.
        if run == 0 {
            let warm = rt.block_on(warm_wal(
                &client,
                &targets[0],
                &install.dir.join("store-bench.db-wal"),
                knobs.max_requests,
            ))?;
            warmed = Some(warm);
        }
        for (op, target) in targets.iter().enumerate() {
            for &concurrency in &knobs.concurrency {
                eprintln!(
                    "bench: store comparison: {store}: {} at concurrency {concurrency} for {:?}",
                    STORE_OPS[op], knobs.http_time
                );
                rt.block_on(load(
                    &client,
                    target,
                    concurrency,
                    WARMUP,
                    knobs.max_requests,
                ))?;
                let stats = rt.block_on(load(
                    &client,
                    target,
                    concurrency,
                    knobs.http_time,
                    knobs.max_requests,
                ))?;
                ensure!(
                    stats.errors == 0,
                    "{store}: {} at concurrency {concurrency}: {} errors (first: {})",
                    STORE_OPS[op],
                    stats.errors,
                    stats.first_error.as_deref().unwrap_or("none")
                );
                rows.push((run, op * 1000 + concurrency, stats));
            }
        }
        server
            .stop()
            .with_context(|| format!("stopping the server on {store}"))?;
    }
    let mut out = String::new();
    writeln!(
        out,
        "\n### Store comparison: the same node on SQLite and on PostgreSQL ({} revision {})\n",
        time::OffsetDateTime::now_utc().date(),
        revision()
    )?;
    if let Some(w) = &warmed {
        writeln!(
            out,
            "Before its rows the SQLite server's WAL was warmed past its restart size (`datakey` \
             at concurrency 4: {} requests in {:.1} s); PostgreSQL writes each WAL segment in \
             full when it makes it.\n",
            w.requests,
            w.took.as_secs_f64()
        )?;
    }
    writeln!(
        out,
        "| request | c | SQLite ops/s | p50 | p99 | PostgreSQL ops/s | p50 | p99 | PG ÷ SQLite | target (c=32: ≥ 0.70, p99 ≤ 10 ms) |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")?;
    // The row of one run (0 SQLite, 1 PostgreSQL), operation and concurrency.
    let find = |run: usize, op: usize, concurrency: usize| {
        rows.iter()
            .find(|(r, k, _)| *r == run && *k == op * 1000 + concurrency)
            .map(|(_, _, s)| s)
    };
    for (op, name) in STORE_OPS.iter().enumerate() {
        for &concurrency in &knobs.concurrency {
            let (Some(lite), Some(pg)) = (find(0, op, concurrency), find(1, op, concurrency))
            else {
                continue;
            };
            let (a, b) = (lite.ops_per_sec(), pg.ops_per_sec());
            let ratio = if a > 0.0 { b / a } else { 0.0 };
            // Each half of the target on its own, and whether SQLite itself meets the p99 on
            // this machine (when it does not, the bound is the machine's, not the store's).
            let verdict = if concurrency == 32 {
                let limit = Duration::from_millis(10);
                let mark = |ok: bool| if ok { "ok" } else { "FAIL" };
                if ratio >= 0.70 && pg.p99 <= limit {
                    "PASS".to_owned()
                } else {
                    format!(
                        "ratio {}, p99 {} (SQLite's own p99 {})",
                        mark(ratio >= 0.70),
                        mark(pg.p99 <= limit),
                        mark(lite.p99 <= limit)
                    )
                }
            } else {
                String::new()
            };
            writeln!(
                out,
                "| `{name}` | {concurrency} | {a:.0} | {} | {} | {b:.0} | {} | {} | {ratio:.2} | {verdict} |",
                ms(lite.p50),
                ms(lite.p99),
                ms(pg.p50),
                ms(pg.p99),
            )?;
        }
    }
    // Issue 23, target 1, on the default store: the secret write and read rows at c=32.
    if let (Some(put), Some(get)) = (find(0, 2, 32), find(0, 3, 32)) {
        writeln!(out, "\n{}", targets::secrets_line(put, get))?;
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Node comparison (issue 22): `--nodes N`

/// Creates (again) the database `name` on the cluster of `CUSTODIAN_BENCH_POSTGRES_URL` and
/// returns its URL.
fn fresh_bench_database(rt: &tokio::runtime::Runtime, name: &str) -> Result<String> {
    let admin = std::env::var("CUSTODIAN_BENCH_POSTGRES_URL").context(
        "CUSTODIAN_BENCH_POSTGRES_URL is not set: run scripts/bench --store postgres or --nodes N, \
         which starts a throw-away PostgreSQL cluster",
    )?;
    rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .context("connecting to the bench PostgreSQL cluster")?;
        tokio::spawn(connection);
        for sql in [
            format!("DROP DATABASE IF EXISTS {name}"),
            format!("CREATE DATABASE {name}"),
        ] {
            client
                .batch_execute(&sql)
                .await
                .context("creating the bench database")?;
        }
        let mut cfg: tokio_postgres::Config = admin.parse().context("the admin URL")?;
        cfg.dbname(name);
        let host = match cfg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "127.0.0.1".to_owned(),
        };
        let port = cfg.get_ports().first().copied().unwrap_or(5432);
        let user = cfg.get_user().unwrap_or("postgres").to_owned();
        Ok(format!("postgres://{user}@{host}:{port}/{name}"))
    })
}

/// The highest audit sequence in `url`'s database (how many records all nodes appended).
async fn audit_head(url: &str) -> Result<i64> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("connecting to the bench database")?;
    tokio::spawn(connection);
    let row = client
        .query_one("SELECT COALESCE(max(sequence), 0) FROM audit_records", &[])
        .await
        .context("reading the audit head")?;
    Ok(row.get(0))
}

/// One measured cell of the node comparison: (setup: 0 = one node, 1 = all nodes; op;
/// concurrency) and (stats, audit records appended per second by all nodes).
type NodeRow = ((usize, usize, usize), (Stats, f64));

/// One node on PostgreSQL, then `nodes` nodes on the same database and the same SoftHSM2 token
/// directory with the client's workers spread over them, in one run: `datakey`, secret writes
/// and reads at every concurrency, and the audit records all nodes appended per second. On a
/// machine with fewer cores than nodes this measures what coordination costs, not scaling.
fn node_comparison(install: &Install, knobs: &Knobs, nodes: usize) -> Result<String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the client runtime")?;
    let database = fresh_bench_database(&rt, "custodian_bench_nodes")?;
    let base = std::fs::read_to_string(&install.config).context("reading the bench config")?;
    let sqlite_section = "[store]\nkind = \"sqlite\"\npath = \"custodian.db\"\n";
    ensure!(
        base.contains(sqlite_section),
        "the bench config has no SQLite [store] section"
    );
    ensure!(
        !base.contains("[audit]"),
        "the bench config already has an [audit] section"
    );
    let node_install = |n: usize| -> Result<Install> {
        let config = install.dir.join(format!("custodian-node-{n}.toml"));
        let text = format!(
            "{}\n[audit]\nnode = \"node-{n}\"\n",
            base.replace(
                sqlite_section,
                &format!("[store]\nkind = \"postgres\"\nurl = \"{database}\"\n")
            )
        );
        std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
        Ok(Install {
            dir: install.dir.clone(),
            softhsm_conf: install.softhsm_conf.clone(),
            config,
            module: install.module.clone(),
            user_pin: install.user_pin.clone(),
            sessions: install.sessions,
            log_filter: install.log_filter.clone(),
        })
    };
    let max_concurrency = knobs.concurrency.iter().copied().max().unwrap_or(1);
    let client = http_client(max_concurrency)?;
    eprintln!("bench: node comparison: starting node-1 on PostgreSQL");
    let (mut first, token) = Server::start(&node_install(1)?, 40)?;
    let token = token.context("no bootstrap token from node-1")?;
    // The first round trip creates the bench key; the secret is what the reads fetch.
    rt.block_on(async {
        first.wait_ready(&client).await?;
        first_round_trip(&client, &first, token.clone()).await?;
        put_bench_secret(&client, &first, &token, "bench/read", "bench").await?;
        Ok::<_, anyhow::Error>(())
    })?;
    let auth = HeaderValue::from_str(&format!("Bearer {token}"))
        .context("the bootstrap token is not a valid header value")?;
    let context = serde_json::from_str::<serde_json::Value>(CONTEXT_JSON)?;
    let targets_on = |server: &Server, run: usize| -> [Target; 3] {
        let target = |url: String, body: Option<serde_json::Value>, put_fresh| Target {
            url,
            body: body.map(|b| b.to_string()),
            auth: Some(auth.clone()),
            put_fresh,
        };
        [
            target(
                server.url(&format!("/v1/keys/{KEY_NAME}/datakey")),
                Some(serde_json::json!({ "context": context })),
                false,
            ),
            target(
                server.url(&format!("/v1/secrets/bench/n{run}-")),
                Some(serde_json::json!({ "value_text": "bench-value", "key": KEY_NAME })),
                true,
            ),
            target(server.url("/v1/secrets/bench/read"), None, false),
        ]
    };
    const OPS: [&str; 3] = [
        "POST /v1/keys/bench/datakey",
        "PUT /v1/secrets/{fresh path}",
        "GET /v1/secrets/bench/read",
    ];
    let mut rows: Vec<NodeRow> = Vec::new();
    let mut measure = |setup: usize, servers: &[&Server]| -> Result<()> {
        let per_node: Vec<[Target; 3]> = servers
            .iter()
            .map(|s| targets_on(s, setup * 100 + rows.len()))
            .collect();
        for op in 0..OPS.len() {
            let targets: Vec<Target> = per_node
                .iter()
                .map(|t| Target {
                    url: t[op].url.clone(),
                    body: t[op].body.clone(),
                    auth: t[op].auth.clone(),
                    put_fresh: t[op].put_fresh,
                })
                .collect();
            for &concurrency in &knobs.concurrency {
                eprintln!(
                    "bench: node comparison: {} node(s): {} at concurrency {concurrency}",
                    servers.len(),
                    OPS[op]
                );
                let never = || Arc::new(AtomicBool::new(false));
                rt.block_on(load_spread(
                    &client,
                    &targets,
                    concurrency,
                    WARMUP,
                    knobs.max_requests,
                    never(),
                ))?;
                let before = rt.block_on(audit_head(&database))?;
                let stats = rt.block_on(load_spread(
                    &client,
                    &targets,
                    concurrency,
                    knobs.http_time,
                    knobs.max_requests,
                    never(),
                ))?;
                let after = rt.block_on(audit_head(&database))?;
                ensure!(
                    stats.errors == 0,
                    "{} node(s): {} at concurrency {concurrency}: {} errors (first: {})",
                    servers.len(),
                    OPS[op],
                    stats.errors,
                    stats.first_error.as_deref().unwrap_or("none")
                );
                let records = (after - before) as f64 / stats.elapsed.as_secs_f64();
                rows.push(((setup, op, concurrency), (stats, records)));
            }
        }
        Ok(())
    };
    measure(0, &[&first])?;
    let mut others = Vec::new();
    for n in 2..=nodes {
        eprintln!("bench: node comparison: starting node-{n}");
        let (mut s, _) = Server::start(&node_install(n)?, 40 + u32::try_from(n).unwrap_or(0))?;
        rt.block_on(s.wait_ready(&client))?;
        others.push(s);
    }
    let mut all: Vec<&Server> = vec![&first];
    all.extend(others.iter());
    measure(1, &all)?;
    for s in others {
        s.stop().context("stopping a node")?;
    }
    first.stop().context("stopping node-1")?;

    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get);
    let mut out = String::new();
    writeln!(
        out,
        "\n### Nodes: one node, then {nodes} nodes on one PostgreSQL database and one SoftHSM2 token ({} revision {}, {cores} cores)\n",
        time::OffsetDateTime::now_utc().date(),
        revision()
    )?;
    writeln!(
        out,
        "| request | c | 1 node ops/s | p50 | p99 | {nodes} nodes ops/s | p50 | p99 | {nodes} ÷ 1 | audit records/s, {nodes} nodes |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for (op, name) in OPS.iter().enumerate() {
        for &concurrency in &knobs.concurrency {
            let find = |setup| {
                rows.iter()
                    .find(|(k, _)| *k == (setup, op, concurrency))
                    .map(|(_, v)| v)
            };
            let (Some((one, _)), Some((many, records))) = (find(0), find(1)) else {
                continue;
            };
            let (a, b) = (one.ops_per_sec(), many.ops_per_sec());
            let ratio = if a > 0.0 { b / a } else { 0.0 };
            writeln!(
                out,
                "| `{name}` | {concurrency} | {a:.0} | {} | {} | {b:.0} | {} | {} | {ratio:.2} | {records:.0} |",
                ms(one.p50),
                ms(one.p99),
                ms(many.p50),
                ms(many.p99),
            )?;
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Re-wrap phase

/// The key whose stored data keys the re-wrap phase moves.
const REWRAP_KEY: &str = "bench-rewrap";
/// Concurrent writers storing the re-wrap phase's secrets.
const REWRAP_WRITERS: usize = 16;
/// Concurrency of the foreground `datakey` load in the re-wrap phase.
const FOREGROUND_CONCURRENCY: usize = 8;
/// How often the bench asks a running job for its progress.
const JOB_POLL: Duration = Duration::from_millis(50);
/// The server's default `keys.lifecycle_check_interval_ms`, which the bench leaves alone: the
/// re-wrap worker sleeps this long when it finds no running job, so a new job waits up to this
/// long for its first batch.
const WORKER_IDLE: Duration = Duration::from_secs(1);

/// CPU counters at the start of a window of the re-wrap phase.
#[derive(Debug, Clone, Copy)]
struct CpuMark {
    at: Instant,
    server: CpuTime,
    client: CpuTime,
    machine: MachineCpu,
}

/// CPU used during a window.
#[derive(Debug, Clone, Copy)]
struct CpuUse {
    elapsed: Duration,
    server: CpuTime,
    client: CpuTime,
    machine: MachineCpu,
}

impl CpuMark {
    fn now(server_pid: &str, ticks: f64) -> Result<Self> {
        Ok(Self {
            at: Instant::now(),
            server: cpu_time(server_pid, ticks)?,
            client: cpu_time("self", ticks)?,
            machine: machine_cpu(ticks)?,
        })
    }

    fn usage(self, server_pid: &str, ticks: f64) -> Result<CpuUse> {
        Ok(CpuUse {
            elapsed: self.at.elapsed(),
            server: cpu_time(server_pid, ticks)?.since(self.server),
            client: cpu_time("self", ticks)?.since(self.client),
            machine: machine_cpu(ticks)?.since(self.machine),
        })
    }
}

impl CpuUse {
    /// `d` as a percentage of one core over the window.
    fn pct(&self, d: Duration) -> f64 {
        100.0 * d.as_secs_f64() / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    fn server_pct(&self) -> f64 {
        self.pct(self.server.total())
    }

    /// Busy CPU used by neither the server nor the bench.
    fn other_pct(&self) -> f64 {
        self.pct(
            self.machine
                .busy
                .saturating_sub(self.server.total() + self.client.total() + self.machine.steal),
        )
    }
}

/// A foreground window of the re-wrap phase.
struct Window {
    stats: Stats,
    cpu: CpuUse,
}

/// A re-wrap job followed from its start to its end.
struct JobRun {
    /// From just before `POST .../rewrap` to the first poll that saw the job completed.
    wall: Duration,
    /// Items the job re-wrapped (`done`).
    done: u64,
    /// The job's own `rate_per_second`: `done` over `created_at` → `finished_at`.
    rate_per_second: f64,
    /// `(time since the start, done)` of every poll.
    samples: Vec<(Duration, u64)>,
    /// What the job's own trail says.
    trail: Trail,
}

impl JobRun {
    /// `done` over the wall time, start → completed.
    fn items_per_sec(&self) -> f64 {
        self.done as f64 / self.wall.as_secs_f64().max(f64::EPSILON)
    }

    /// `done` as of the last poll at or before `t`.
    fn done_by(&self, t: Duration) -> u64 {
        self.samples
            .iter()
            .take_while(|(at, _)| *at <= t)
            .last()
            .map_or(0, |(_, d)| *d)
    }
}

/// A job's timing from its trail (`GET /v1/jobs/{id}/events`), on the server's clock. A
/// `batch` event carries the time its batch started, before the device calls.
struct Trail {
    /// `started` → first `batch`: the wait for the worker to pick the job up.
    pickup: Duration,
    /// First `batch` → `completed`.
    active: Duration,
    /// Batch events.
    batches: u64,
    /// Items moved, summed over the batch events.
    moved: u64,
    /// Start-to-start intervals of consecutive batches, sorted: the device calls, the commit,
    /// the pause and the worker's look at the job list.
    cycles: Vec<Duration>,
}

impl Trail {
    /// Items per second from the first batch to completion.
    fn active_items_per_sec(&self) -> f64 {
        self.moved as f64 / self.active.as_secs_f64().max(f64::EPSILON)
    }

    fn cycle(&self, p: f64) -> Duration {
        percentile(&self.cycles, p)
    }

    fn max_cycle(&self) -> Duration {
        self.cycles.last().copied().unwrap_or_default()
    }
}

/// Everything the re-wrap phase measured.
struct RewrapReport {
    secrets: u64,
    /// Time to store the secrets with [`REWRAP_WRITERS`] writers.
    write_time: Duration,
    /// Foreground `datakey` with no job running.
    baseline: Window,
    /// Foreground `datakey` while the first job ran (ended when it completed).
    loaded: Window,
    /// When the loaded window ended, counted from the first job's start.
    loaded_end: Duration,
    /// The first job, under the foreground load.
    loaded_job: JobRun,
    /// The second job, alone.
    alone_job: JobRun,
    /// CPU during the second job.
    alone_cpu: CpuUse,
    /// The whole phase, from creating the key to the final check.
    phase_time: Duration,
}

/// Stores secrets under [`REWRAP_KEY`], rotates it and times two re-wrap jobs: one under a
/// foreground `datakey` load, one alone; checks that nothing is left under older versions.
async fn rewrap_phase(
    server: &Server,
    token: &str,
    knobs: &Knobs,
    ticks: f64,
) -> Result<RewrapReport> {
    let phase_start = Instant::now();
    let n = knobs.rewrap_secrets;
    let client = http_client(REWRAP_WRITERS + FOREGROUND_CONCURRENCY + 1)?;
    let server_pid = server.pid().to_string();
    expect_json(
        client
            .post(server.url("/v1/keys"))
            .bearer_auth(token)
            .json(&serde_json::json!({ "name": REWRAP_KEY, "mode": knobs.rewrap_mode })),
        "POST /v1/keys",
        StatusCode::CREATED,
    )
    .await?;
    eprintln!(
        "bench: re-wrap phase: storing {n} secrets under `{REWRAP_KEY}` ({REWRAP_WRITERS} writers)"
    );
    let write_time = store_secrets(&client, server, token, n).await?;
    let (primary, counts) = stored_data_keys(&client, server, token).await?;
    ensure!(
        primary == 1 && counts == [(1, n)],
        "after the writes `{REWRAP_KEY}` has primary version {primary} and stored data keys \
         {counts:?}, not {n} under version 1"
    );

    let context = serde_json::from_str::<serde_json::Value>(CONTEXT_JSON)?;
    let datakey = Target {
        url: server.url(&format!("/v1/keys/{KEY_NAME}/datakey")),
        body: Some(serde_json::json!({ "context": context }).to_string()),
        auth: Some(
            HeaderValue::from_str(&format!("Bearer {token}"))
                .context("the bootstrap token is not a valid header value")?,
        ),
        put_fresh: false,
    };
    let (window, max) = (knobs.rewrap_time, knobs.max_requests);
    let job_timeout = Duration::from_secs(60) + Duration::from_millis(10 * n);

    // Foreground load with no job.
    eprintln!(
        "bench: re-wrap phase: {} at concurrency {FOREGROUND_CONCURRENCY} for {window:?}, no job",
        Op::Datakey(DeviceKey::Pkcs11Direct).label()
    );
    load(&client, &datakey, FOREGROUND_CONCURRENCY, WARMUP, max).await?;
    let mark = CpuMark::now(&server_pid, ticks)?;
    let stats = load(&client, &datakey, FOREGROUND_CONCURRENCY, window, max).await?;
    let baseline = Window {
        cpu: mark.usage(&server_pid, ticks)?,
        stats: checked(stats, "without a job")?,
    };

    // The same load while a job moves every stored data key from version 1 to 2. The window
    // ends when the job completes or after `window`, whichever comes first.
    rotate(&client, server, token, 2).await?;
    eprintln!(
        "bench: re-wrap phase: {} at concurrency {FOREGROUND_CONCURRENCY} while a job re-wraps \
         {n} data keys (at most {window:?})",
        Op::Datakey(DeviceKey::Pkcs11Direct).label()
    );
    let finished = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let id = start_job(&client, server, token).await?;
    let mark = CpuMark::now(&server_pid, ticks)?;
    let foreground = async {
        let stats = load_until(
            &client,
            &datakey,
            FOREGROUND_CONCURRENCY,
            window,
            max,
            Arc::clone(&finished),
        )
        .await?;
        let cpu = mark.usage(&server_pid, ticks)?;
        Ok::<_, anyhow::Error>((stats, cpu, started.elapsed()))
    };
    let follow = follow_job(&client, server, token, &id, started, job_timeout, &finished);
    let ((stats, cpu, loaded_end), loaded_job) = tokio::try_join!(foreground, follow)?;
    let loaded = Window {
        stats: checked(stats, "while the job ran")?,
        cpu,
    };
    ensure!(
        loaded_job.done == n,
        "the first re-wrap job re-wrapped {} data keys, not {n}",
        loaded_job.done
    );

    // A second rotation and a job with nothing else running: version 2 → 3.
    rotate(&client, server, token, 3).await?;
    eprintln!("bench: re-wrap phase: a job re-wraps {n} data keys with no foreground load");
    let started = Instant::now();
    let mark = CpuMark::now(&server_pid, ticks)?;
    let id = start_job(&client, server, token).await?;
    let unused = AtomicBool::new(false);
    let alone_job = follow_job(&client, server, token, &id, started, job_timeout, &unused).await?;
    let alone_cpu = mark.usage(&server_pid, ticks)?;
    ensure!(
        alone_job.done == n,
        "the second re-wrap job re-wrapped {} data keys, not {n}",
        alone_job.done
    );

    verify_rewrapped(&client, server, token, n).await?;
    Ok(RewrapReport {
        secrets: n,
        write_time,
        baseline,
        loaded,
        loaded_end,
        loaded_job,
        alone_job,
        alone_cpu,
        phase_time: phase_start.elapsed(),
    })
}

/// `stats` if at least one request completed.
fn checked(stats: Stats, when: &str) -> Result<Stats> {
    ensure!(
        stats.ops > 0,
        "no {} request completed {when} ({} errors; first: {})",
        Op::Datakey(DeviceKey::Pkcs11Direct).label(),
        stats.errors,
        stats.first_error.as_deref().unwrap_or("none")
    );
    Ok(stats)
}

/// The path and value of the `i`th re-wrap secret.
fn rewrap_secret(i: u64) -> (String, String) {
    (format!("{REWRAP_KEY}/s{i}"), format!("bench value {i}"))
}

/// Writes `n` secrets under [`REWRAP_KEY`] with [`REWRAP_WRITERS`] concurrent writers; returns
/// how long that took.
async fn store_secrets(
    client: &reqwest::Client,
    server: &Server,
    token: &str,
    n: u64,
) -> Result<Duration> {
    let start = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..REWRAP_WRITERS {
        let (client, token) = (client.clone(), token.to_owned());
        let base = server.url("/v1/secrets/");
        writers.spawn(async move {
            for i in (w as u64..n).step_by(REWRAP_WRITERS) {
                let (path, value) = rewrap_secret(i);
                expect_json(
                    client
                        .put(format!("{base}{path}"))
                        .bearer_auth(&token)
                        .json(&serde_json::json!({ "value_text": value, "key": REWRAP_KEY })),
                    &format!("PUT /v1/secrets/{path}"),
                    StatusCode::OK,
                )
                .await?;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(joined) = writers.join_next().await {
        joined.context("a secret writer failed")??;
    }
    Ok(start.elapsed())
}

/// Rotates [`REWRAP_KEY`] and checks it now has `want` as its primary version and that the
/// rotation started no job (`rewrap_after_rotation = false`).
async fn rotate(client: &reqwest::Client, server: &Server, token: &str, want: u64) -> Result<()> {
    let what = format!("POST /v1/keys/{REWRAP_KEY}/rotate");
    let key = expect_json(
        client
            .post(server.url(&format!("/v1/keys/{REWRAP_KEY}/rotate")))
            .bearer_auth(token),
        &what,
        StatusCode::OK,
    )
    .await?;
    let primary = u64_field(&key, "primary_version")?;
    ensure!(
        primary == want,
        "{what} made version {primary} primary, not {want}"
    );
    let running = expect_json(
        client
            .get(server.url("/v1/jobs?state=running"))
            .bearer_auth(token),
        "GET /v1/jobs?state=running",
        StatusCode::OK,
    )
    .await?;
    let jobs = running
        .get("jobs")
        .and_then(serde_json::Value::as_array)
        .context("GET /v1/jobs answered without a `jobs` array")?;
    ensure!(
        jobs.is_empty(),
        "{} job(s) running after {what}; the bench needs `rewrap_after_rotation = false` to time \
         each job from its start",
        jobs.len()
    );
    Ok(())
}

/// Starts the re-wrap job of [`REWRAP_KEY`]; returns its id.
async fn start_job(client: &reqwest::Client, server: &Server, token: &str) -> Result<String> {
    let what = format!("POST /v1/keys/{REWRAP_KEY}/rewrap");
    let job = expect_json(
        client
            .post(server.url(&format!("/v1/keys/{REWRAP_KEY}/rewrap")))
            .bearer_auth(token),
        &what,
        StatusCode::ACCEPTED,
    )
    .await?;
    Ok(string_field(&job, "id")
        .with_context(|| format!("{what} answered without a job id"))?
        .to_owned())
}

/// Polls `GET /v1/jobs/{id}` every [`JOB_POLL`] until the job completes (then sets
/// `finished`), fails, or `timeout` after `started` passes.
async fn follow_job(
    client: &reqwest::Client,
    server: &Server,
    token: &str,
    id: &str,
    started: Instant,
    timeout: Duration,
    finished: &AtomicBool,
) -> Result<JobRun> {
    let what = format!("GET /v1/jobs/{id}");
    let url = server.url(&format!("/v1/jobs/{id}"));
    let mut samples = Vec::new();
    loop {
        let job = expect_json(client.get(&url).bearer_auth(token), &what, StatusCode::OK).await?;
        let at = started.elapsed();
        let done = u64_field(&job, "done")?;
        samples.push((at, done));
        match string_field(&job, "state")? {
            "running" => {}
            "completed" => {
                finished.store(true, Ordering::Relaxed);
                let failed = u64_field(&job, "failed_items")?;
                ensure!(
                    failed == 0,
                    "re-wrap job {id} completed with {failed} failed items (last error: {})",
                    job.get("last_error").unwrap_or(&serde_json::Value::Null)
                );
                let trail = job_trail(client, server, token, id).await?;
                ensure!(
                    trail.moved == done,
                    "re-wrap job {id}: its trail counts {} items moved, the job {done}",
                    trail.moved
                );
                let rate_per_second = job
                    .get("rate_per_second")
                    .and_then(serde_json::Value::as_f64)
                    .with_context(|| format!("{what} answered without `rate_per_second`"))?;
                return Ok(JobRun {
                    wall: at,
                    done,
                    rate_per_second,
                    samples,
                    trail,
                });
            }
            other => bail!(
                "re-wrap job {id} ended {other:?} after {done} items (last error: {})",
                job.get("last_error").unwrap_or(&serde_json::Value::Null)
            ),
        }
        ensure!(
            at < timeout,
            "re-wrap job {id} did not complete within {timeout:?} ({done} items done)"
        );
        tokio::time::sleep(JOB_POLL).await;
    }
}

/// Reads the trail of the finished job `id`.
async fn job_trail(
    client: &reqwest::Client,
    server: &Server,
    token: &str,
    id: &str,
) -> Result<Trail> {
    let what = format!("GET /v1/jobs/{id}/events");
    let v = expect_json(
        client
            .get(server.url(&format!("/v1/jobs/{id}/events")))
            .bearer_auth(token),
        &what,
        StatusCode::OK,
    )
    .await?;
    let events = v
        .get("events")
        .and_then(serde_json::Value::as_array)
        .with_context(|| format!("{what} answered without an `events` array"))?;
    let (mut started, mut completed, mut batches, mut moved) = (None, None, Vec::new(), 0);
    for e in events {
        let at = string_field(e, "at")?;
        let at = time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
            .with_context(|| format!("{what}: bad time {at:?}"))?;
        match string_field(e, "kind")? {
            "started" => started = Some(at),
            "batch" => {
                batches.push(at);
                moved += u64_field(e, "moved")?;
            }
            "completed" => completed = Some(at),
            other => bail!("{what}: unexpected event {other:?}"),
        }
    }
    let span = |a: time::OffsetDateTime, b: time::OffsetDateTime| {
        Duration::try_from(b - a).unwrap_or_default()
    };
    let started = started.with_context(|| format!("{what}: no `started` event"))?;
    let completed = completed.with_context(|| format!("{what}: no `completed` event"))?;
    let first = *batches
        .first()
        .with_context(|| format!("{what}: no `batch` event"))?;
    let mut cycles: Vec<Duration> = batches.windows(2).map(|w| span(w[0], w[1])).collect();
    cycles.sort_unstable();
    Ok(Trail {
        pickup: span(started, first),
        active: span(first, completed),
        batches: batches.len() as u64,
        moved,
        cycles,
    })
}

/// The primary version of [`REWRAP_KEY`] and its stored data keys per version.
async fn stored_data_keys(
    client: &reqwest::Client,
    server: &Server,
    token: &str,
) -> Result<(u64, Vec<(u64, u64)>)> {
    let what = format!("GET /v1/keys/{REWRAP_KEY}/versions");
    let v = expect_json(
        client
            .get(server.url(&format!("/v1/keys/{REWRAP_KEY}/versions")))
            .bearer_auth(token),
        &what,
        StatusCode::OK,
    )
    .await?;
    let counts = v
        .get("versions")
        .and_then(serde_json::Value::as_array)
        .with_context(|| format!("{what} answered without a `versions` array"))?
        .iter()
        .map(|e| Ok((u64_field(e, "version")?, u64_field(e, "stored_data_keys")?)))
        .collect::<Result<Vec<_>>>()
        .with_context(|| format!("reading the answer to {what}"))?;
    Ok((u64_field(&v, "primary_version")?, counts))
}

/// Checks that every stored data key of [`REWRAP_KEY`] is under its primary version (3, after
/// two rotations) and that a few secrets still read back their values.
async fn verify_rewrapped(
    client: &reqwest::Client,
    server: &Server,
    token: &str,
    n: u64,
) -> Result<()> {
    let (primary, counts) = stored_data_keys(client, server, token).await?;
    ensure!(
        primary == 3,
        "`{REWRAP_KEY}` has primary version {primary}, not 3"
    );
    let stale: u64 = counts
        .iter()
        .filter(|(v, _)| *v != primary)
        .map(|(_, c)| c)
        .sum();
    let current: u64 = counts
        .iter()
        .filter(|(v, _)| *v == primary)
        .map(|(_, c)| c)
        .sum();
    ensure!(
        stale == 0 && current == n,
        "after the re-wrap jobs `{REWRAP_KEY}` still has {stale} stored data keys under older \
         versions and {current} (of {n}) under version {primary}: {counts:?}"
    );
    let mut probes = vec![0, n / 2, n - 1];
    probes.dedup();
    for i in probes {
        let (path, want) = rewrap_secret(i);
        let what = format!("GET /v1/secrets/{path}?text=true");
        let v = expect_json(
            client
                .get(server.url(&format!("/v1/secrets/{path}?text=true")))
                .bearer_auth(token),
            &what,
            StatusCode::OK,
        )
        .await?;
        ensure!(
            string_field(&v, "value_text")? == want,
            "{what} returned a different value after the re-wrap"
        );
    }
    Ok(())
}

/// Sends `req`, checks the status is `want`, and parses the JSON body.
async fn expect_json(
    req: reqwest::RequestBuilder,
    what: &str,
    want: StatusCode,
) -> Result<serde_json::Value> {
    let res = req.send().await.with_context(|| what.to_owned())?;
    let status = res.status();
    let text = res
        .text()
        .await
        .with_context(|| format!("reading the answer to {what}"))?;
    ensure!(status == want, "{what} answered {status}: {text}");
    serde_json::from_str(&text).with_context(|| format!("{what} answered non-JSON"))
}

fn u64_field(v: &serde_json::Value, name: &str) -> Result<u64> {
    v.get(name)
        .and_then(serde_json::Value::as_u64)
        .with_context(|| format!("response has no unsigned integer field {name:?}"))
}

impl RewrapReport {
    fn write_markdown(&self, out: &mut String, knobs: &Knobs) -> std::fmt::Result {
        let n = self.secrets;
        let batch = u64::from(knobs.rewrap_batch);
        let batches = n.div_ceil(batch);
        // The worker pauses after every batch, so at least `batches` pauses lie between the
        // job's first batch and its completion.
        let pause_total = Duration::from_millis(knobs.rewrap_pause_ms.saturating_mul(batches));
        writeln!(out, "\n### Re-wrap of {n} stored data keys\n")?;
        writeln!(
            out,
            "- server: `keys.rewrap_batch_size = {}`, `keys.rewrap_pause_ms = {}`, \
             `keys.rewrap_after_rotation = false` (the bench starts each job with `POST \
             /v1/keys/{REWRAP_KEY}/rewrap`); the node's worker starts on a job the node starts at \
             once, and looks for jobs started elsewhere every {:.1} s \
             (`keys.lifecycle_check_interval_ms`, default)",
            knobs.rewrap_batch,
            knobs.rewrap_pause_ms,
            WORKER_IDLE.as_secs_f64()
        )?;
        writeln!(
            out,
            "- {n} secrets (one version each) written under the key `{REWRAP_KEY}` by \
             {REWRAP_WRITERS} concurrent writers in {:.1} s ({:.0} writes/s)",
            self.write_time.as_secs_f64(),
            n as f64 / self.write_time.as_secs_f64().max(f64::EPSILON)
        )?;
        writeln!(
            out,
            "- job: the key `{REWRAP_KEY}` is PKCS#11, mode `{}`; {batches} batches of at most \
             {batch} data keys, each handed to the backend in chunks of up to 25 (one `reseal` \
             call: an unwrap with the old version and a wrap with the new per item, in one device \
             session in direct mode, in memory under the cached version-KEKs in cached mode), \
             one transaction per batch; the pauses alone add up to at least {:.2} s",
            knobs.rewrap_mode,
            pause_total.as_secs_f64()
        )?;
        writeln!(
            out,
            "- foreground: {} `{CONTEXT_JSON}` at concurrency {FOREGROUND_CONCURRENCY}; without \
             the job for {:.1} s after a {:.1} s warm-up; with the job from its start until it \
             completed, at most {:.1} s",
            Op::Datakey(DeviceKey::Pkcs11Direct).label(),
            knobs.rewrap_time.as_secs_f64(),
            WARMUP.as_secs_f64(),
            knobs.rewrap_time.as_secs_f64()
        )?;
        writeln!(
            out,
            "- re-wrap items/s = the job's `done` over the bench's wall time from `POST .../rewrap` \
             to the first poll (every {} ms) that saw it completed; `rate_per_second` is the \
             job's own figure (`done` over `created_at` → `finished_at`)",
            JOB_POLL.as_millis()
        )?;
        writeln!(out)?;
        writeln!(
            out,
            "| re-wrap {n} stored data keys | seconds | re-wrap items/s | job rate_per_second | \
             foreground ops/s | p50 ms | p99 ms | p99 / p99 without job | errors | server CPU % \
             | other CPU % |"
        )?;
        writeln!(
            out,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        )?;
        let job = &self.alone_job;
        writeln!(
            out,
            "| job alone | {:.2} | {:.0} | {:.0} | — | — | — | — | — | {:.0} | {:.0} |",
            job.wall.as_secs_f64(),
            job.items_per_sec(),
            job.rate_per_second,
            self.alone_cpu.server_pct(),
            self.alone_cpu.other_pct()
        )?;
        let base = &self.baseline;
        writeln!(
            out,
            "| foreground datakey c={FOREGROUND_CONCURRENCY}, no job | {:.2} | — | — | {:.0} | {} \
             | {} | 1.00 | {} | {:.0} | {:.0} |",
            base.stats.elapsed.as_secs_f64(),
            base.stats.ops_per_sec(),
            ms(base.stats.p50),
            ms(base.stats.p99),
            base.stats.errors,
            base.cpu.server_pct(),
            base.cpu.other_pct()
        )?;
        let (job, fg) = (&self.loaded_job, &self.loaded);
        writeln!(
            out,
            "| job + foreground datakey c={FOREGROUND_CONCURRENCY} | {:.2} (job) / {:.2} \
             (foreground) | {:.0} | {:.0} | {:.0} | {} | {} | {:.2} | {} | {:.0} | {:.0} |",
            job.wall.as_secs_f64(),
            fg.stats.elapsed.as_secs_f64(),
            job.items_per_sec(),
            job.rate_per_second,
            fg.stats.ops_per_sec(),
            ms(fg.stats.p50),
            ms(fg.stats.p99),
            fg.stats.p99.as_secs_f64() / base.stats.p99.as_secs_f64().max(f64::EPSILON),
            fg.stats.errors,
            fg.cpu.server_pct(),
            fg.cpu.other_pct()
        )?;
        writeln!(out)?;
        writeln!(
            out,
            "From the jobs' own trails (`GET /v1/jobs/{{id}}/events`, server clock; a batch \
             cycle runs from one batch's start to the next: device calls, commit, pause, job \
             list):\n"
        )?;
        writeln!(
            out,
            "| job | wait for the worker s | batches | first batch → completed s | items/s in \
             that span | batch cycle ms, p50 / p90 / max | pause ms |"
        )?;
        writeln!(out, "|---|---:|---:|---:|---:|---:|---:|")?;
        for (name, job) in [("alone", &self.alone_job), ("under load", &self.loaded_job)] {
            let t = &job.trail;
            writeln!(
                out,
                "| {name} | {:.2} | {} | {:.2} | {:.0} | {:.1} / {:.1} / {:.1} | {} |",
                t.pickup.as_secs_f64(),
                t.batches,
                t.active.as_secs_f64(),
                t.active_items_per_sec(),
                t.cycle(0.5).as_secs_f64() * 1e3,
                t.cycle(0.9).as_secs_f64() * 1e3,
                t.max_cycle().as_secs_f64() * 1e3,
                knobs.rewrap_pause_ms
            )?;
        }
        writeln!(out)?;
        let covered = self.loaded_job.done_by(self.loaded_end);
        writeln!(
            out,
            "- the foreground window ended {:.2} s after the job started, with {covered} of {n} \
             items done{}",
            self.loaded_end.as_secs_f64(),
            if covered == n {
                ": the whole job ran under load"
            } else {
                "; the rest of the job ran without foreground load"
            }
        )?;
        writeln!(
            out,
            "- afterwards `GET /v1/keys/{REWRAP_KEY}/versions` showed all {n} stored data keys \
             under version 3 and none under versions 1 and 2"
        )?;
        writeln!(
            out,
            "- the re-wrap phase took {:.1} s in all",
            self.phase_time.as_secs_f64()
        )?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Audit phase

/// Name of the threads of the in-process app's runtime (workers and blocking pool), so their
/// CPU time can be told from the bench client's. At most 15 bytes (`/proc/.../comm`).
const APP_THREAD: &str = "bench-app";
/// How long the durable-commit probe runs.
const COMMIT_PROBE: Duration = Duration::from_secs(1);
/// Most commits the durable-commit probe makes.
const COMMIT_PROBE_MAX: u64 = 5000;
/// The idle pause before each of the probe's isolated commits: about as long as the audit
/// writer sits idle between two requests' commits at concurrency 1.
const ISOLATED_GAP: Duration = Duration::from_micros(250);
/// How long the hand-off probe runs.
const HANDOFF_PROBE: Duration = Duration::from_millis(500);
/// The issue 6 requirement: audited `datakey` throughput at least this share of unaudited.
const AUDIT_TARGET: f64 = 2.0 / 3.0;

/// Which build of the app a pass of the audit phase ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auditing {
    /// `App::build`: every request's record durable before its response.
    On,
    /// `App::dangerous_build_unaudited_for_benchmarks`: records discarded.
    Off,
}

impl Auditing {
    fn label(self) -> &'static str {
        match self {
            Self::On => "audited",
            Self::Off => "unaudited",
        }
    }
}

/// The passes of the audit phase, in order: the audited passes bracket the unaudited one, so a
/// drift that is linear in time affects the mean of the audited rows as much as the unaudited.
const AUDIT_PASSES: [Auditing; 3] = [Auditing::On, Auditing::Off, Auditing::On];

/// One row of the audit phase.
struct AuditRow {
    /// 1-based pass number.
    pass: usize,
    auditing: Auditing,
    concurrency: usize,
    stats: Stats,
    /// Records written during the row (`audit.head` after − before; 0 unaudited).
    records: u64,
    /// Flushes completed by the database's block device during the row (machine-wide).
    flushes: Option<u64>,
    /// CPU of the in-process app's threads.
    app_cpu: CpuTime,
    /// CPU of the rest of this process: the load generator.
    client_cpu: CpuTime,
    machine: MachineCpu,
    /// The requests' waits for their records and the writer's commits during the row, from
    /// the app's `/metrics`; `None` unaudited.
    audit_wait: Option<AuditWait>,
}

/// What the app's audit histograms gained between two scrapes around a row: every request's
/// wait for its record (`custodian_audit_wait_duration_seconds`: its hand-off to the writer,
/// the queue, the group commit, the answer's hand-off back) and every group commit
/// (`custodian_audit_commit_duration_seconds`: chain, insert, `fdatasync`).
#[derive(Clone, Copy)]
struct AuditWait {
    waits: u64,
    wait_sum: Duration,
    commits: u64,
    commit_sum: Duration,
}

impl AuditWait {
    const WAIT: &'static str = "custodian_audit_wait_duration_seconds";
    const COMMIT: &'static str = "custodian_audit_commit_duration_seconds";

    /// The two histograms' `_sum` and `_count` in a scrape.
    fn parse(text: &str) -> Result<Self> {
        let value = |name: &str| -> Result<f64> {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
                .with_context(|| format!("`{name}` is not in the app's /metrics"))
        };
        let count = |name: &str| -> Result<u64> {
            let v = value(&format!("{name}_count"))?;
            ensure!(v >= 0.0 && v.fract() == 0.0, "`{name}_count` is {v}");
            Ok(v as u64)
        };
        let sum = |name: &str| -> Result<Duration> {
            let v = value(&format!("{name}_sum"))?;
            Duration::try_from_secs_f64(v).with_context(|| format!("`{name}_sum` is {v}"))
        };
        Ok(Self {
            waits: count(Self::WAIT)?,
            wait_sum: sum(Self::WAIT)?,
            commits: count(Self::COMMIT)?,
            commit_sum: sum(Self::COMMIT)?,
        })
    }

    /// `GET url` (a server's `/metrics`, itself an audited request), parsed.
    async fn scrape(client: &reqwest::Client, url: &str, auth: &HeaderValue) -> Result<Self> {
        let response = client
            .get(url)
            .header(AUTHORIZATION, auth.clone())
            .send()
            .await
            .context("GET /metrics")?;
        ensure!(
            response.status() == StatusCode::OK,
            "GET /metrics answered {}",
            response.status()
        );
        Self::parse(&response.text().await.context("reading /metrics")?)
    }

    fn since(self, before: Self) -> Self {
        Self {
            waits: self.waits.saturating_sub(before.waits),
            wait_sum: self.wait_sum.saturating_sub(before.wait_sum),
            commits: self.commits.saturating_sub(before.commits),
            commit_sum: self.commit_sum.saturating_sub(before.commit_sum),
        }
    }

    /// Two rows' gains together.
    fn plus(self, other: Self) -> Self {
        Self {
            waits: self.waits + other.waits,
            wait_sum: self.wait_sum + other.wait_sum,
            commits: self.commits + other.commits,
            commit_sum: self.commit_sum + other.commit_sum,
        }
    }

    fn mean_wait(&self) -> Duration {
        self.wait_sum / u32::try_from(self.waits.max(1)).unwrap_or(u32::MAX)
    }

    fn mean_commit(&self) -> Duration {
        self.commit_sum / u32::try_from(self.commits.max(1)).unwrap_or(u32::MAX)
    }
}

impl AuditRow {
    fn pct(&self, d: Duration) -> f64 {
        100.0 * d.as_secs_f64() / self.stats.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    fn per_op_us(&self, d: Duration) -> f64 {
        d.as_secs_f64() * 1e6 / (self.stats.ops.max(1) as f64)
    }

    fn other_pct(&self) -> f64 {
        self.pct(
            self.machine.busy.saturating_sub(
                self.app_cpu.total() + self.client_cpu.total() + self.machine.steal,
            ),
        )
    }
}

/// A loop of one-row durable commits on a scratch database next to the bench database, with
/// the service's settings (WAL, `synchronous = FULL`): what one group commit costs at least.
struct CommitProbe {
    stats: Stats,
    flushes: Option<u64>,
    /// The same commits, each after the thread slept [`ISOLATED_GAP`]: a commit issued from
    /// idle, as the writer issues each at concurrency 1, and not back to back.
    isolated: Stats,
    /// [`handoff_probe`]: a round trip to a thread that sleeps on a CPU left idle.
    handoff: Stats,
}

impl CommitProbe {
    /// The isolated commits' mean, to set beside the app's mean commit (their `elapsed` is
    /// the sum of their latencies, without the pauses).
    fn isolated_mean(&self) -> Duration {
        self.isolated.elapsed / u32::try_from(self.isolated.ops.max(1)).unwrap_or(u32::MAX)
    }

    /// Block-device flushes per commit, when the device reports them.
    fn flushes_per_commit(&self) -> Option<f64> {
        self.flushes
            .filter(|f| *f > 0)
            .map(|f| f as f64 / self.stats.ops.max(1) as f64)
    }
}

/// Where the audited build's extra p50 at concurrency 1 goes, from the rows' scrapes and the
/// commit probe.
struct C1Breakdown {
    /// Audited p50 − unaudited p50 (means over the passes).
    gap: Duration,
    /// The audited c=1 rows' mean wait for a record, and the writer's mean commit.
    wait: Duration,
    commit: Duration,
    /// The probe's commit p50 back to back, and its isolated commits' mean (each after an
    /// idle pause), to set beside the writer's mean commit.
    floor: Duration,
    isolated: Duration,
    /// The hand-off probe's round trip, p50.
    round_trip: Duration,
}

impl C1Breakdown {
    /// The wait less the commit: both hand-offs (to the writer and back) and the writer's
    /// batching at c=1, where no other record queues.
    fn handoffs(&self) -> Duration {
        self.wait.saturating_sub(self.commit)
    }

    /// One isolated commit and one bare round trip between two threads, each measured outside
    /// the app: what the gap costs at least while the record is committed on another thread
    /// than the request's.
    fn bound(&self) -> Duration {
        self.isolated + self.round_trip
    }
}

/// The arithmetic limit at concurrency 1: request time against request time plus one commit.
struct LatencyBound {
    unaudited: Duration,
    commit: Duration,
}

impl LatencyBound {
    fn ratio(&self) -> f64 {
        let u = self.unaudited.as_secs_f64();
        u / (u + self.commit.as_secs_f64()).max(f64::EPSILON)
    }
}

/// Everything the audit phase measured.
struct AuditReport {
    rows: Vec<AuditRow>,
    time: Duration,
    concurrency: Vec<usize>,
    probe: CommitProbe,
    /// The block device whose flushes are counted, as `major:minor name`.
    device: Option<String>,
    /// Worker threads of the in-process app's runtime.
    app_workers: usize,
    /// Build → ready, per pass.
    start_times: Vec<Duration>,
    /// The WAL warm-up of each audited pass, in order.
    wal_warmups: Vec<WalWarmup>,
    phase_time: Duration,
}

/// Builds the app in this process from the install's config file, three times in turn
/// ([`AUDIT_PASSES`]), and drives `datakey` at every concurrency for `time` on each.
fn audit_phase(
    rt: &tokio::runtime::Runtime,
    install: &Install,
    token: &str,
    knobs: &Knobs,
    time: Duration,
    ticks: f64,
) -> Result<AuditReport> {
    let phase_start = Instant::now();
    let config = install_config(install)?;
    let device = BlockDevice::of(&install.dir);
    eprintln!("bench: audit phase: durable commit probe ({COMMIT_PROBE:?})");
    let probe = commit_probe(&install.dir.join("commit-probe.db"), device.as_ref())?;
    let app_workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let max_concurrency = knobs.concurrency.iter().copied().max().unwrap_or(1);
    let auth = HeaderValue::from_str(&format!("Bearer {token}"))
        .context("the bootstrap token is not a valid header value")?;
    let context = serde_json::from_str::<serde_json::Value>(CONTEXT_JSON)?;
    let body = serde_json::json!({ "context": context }).to_string();
    let mut rows = Vec::new();
    let mut start_times = Vec::new();
    let mut wal_warmups = Vec::new();
    for (i, &auditing) in AUDIT_PASSES.iter().enumerate() {
        let pass = i + 1;
        eprintln!(
            "bench: audit phase: pass {pass}/{}, {} app in process",
            AUDIT_PASSES.len(),
            auditing.label()
        );
        let started = Instant::now();
        let app = InProcessApp::start(&config, auditing, app_workers)?;
        // A fresh client: connections of the previous pass went to another app.
        let client = http_client(max_concurrency)?;
        let result = (|| {
            rt.block_on(app.wait_ready(&client))?;
            start_times.push(started.elapsed());
            let target = Target {
                url: app.url(&format!("/v1/keys/{KEY_NAME}/datakey")),
                body: Some(body.clone()),
                auth: Some(auth.clone()),
                put_fresh: false,
            };
            if auditing == Auditing::On {
                let warm = rt.block_on(warm_wal(
                    &client,
                    &target,
                    &install.dir.join("custodian.db-wal"),
                    knobs.max_requests,
                ))?;
                eprintln!(
                    "bench: audit phase: WAL warmed: {} requests in {:.1} s",
                    warm.requests,
                    warm.took.as_secs_f64()
                );
                wal_warmups.push(warm);
            }
            for &concurrency in &knobs.concurrency {
                eprintln!(
                    "bench: audit phase: {} {} at concurrency {concurrency} for {time:?}",
                    auditing.label(),
                    Op::Datakey(DeviceKey::Pkcs11Direct).label()
                );
                rt.block_on(load(
                    &client,
                    &target,
                    concurrency,
                    WARMUP,
                    knobs.max_requests,
                ))?;
                // Scraped before the head is read and after it is read again: the scrapes'
                // own records stay out of `records`, and the first one's wait is counted.
                let waits_before = match auditing {
                    Auditing::On => Some(rt.block_on(app.audit_wait(&client, &auth))?),
                    Auditing::Off => None,
                };
                let head_before = rt.block_on(app.audit_head(&client))?;
                let flushes_before = device.as_ref().and_then(BlockDevice::flushes);
                let (app_before, own_before, machine_before) = (
                    threads_cpu(&APP_THREADS, ticks)?,
                    cpu_time("self", ticks)?,
                    machine_cpu(ticks)?,
                );
                let stats = rt.block_on(load(
                    &client,
                    &target,
                    concurrency,
                    time,
                    knobs.max_requests,
                ))?;
                let app_cpu = threads_cpu(&APP_THREADS, ticks)?.since(app_before);
                let own = cpu_time("self", ticks)?.since(own_before);
                let machine = machine_cpu(ticks)?.since(machine_before);
                let flushes = device
                    .as_ref()
                    .and_then(BlockDevice::flushes)
                    .zip(flushes_before)
                    .map(|(after, before)| after.saturating_sub(before));
                let head_after = rt.block_on(app.audit_head(&client))?;
                let audit_wait = match waits_before {
                    Some(before) => {
                        let w = rt.block_on(app.audit_wait(&client, &auth))?.since(before);
                        // Every request and the first scrape waited once for its record.
                        let records = head_after.saturating_sub(head_before);
                        ensure!(
                            w.waits == records + 1,
                            "the app counted {} audit waits for {records} records and one scrape",
                            w.waits
                        );
                        Some(w)
                    }
                    None => None,
                };
                let stats = checked(stats, &format!("in audit pass {pass}"))?;
                ensure!(
                    head_after >= head_before,
                    "audit.head went back from {head_before} to {head_after}"
                );
                if auditing == Auditing::Off {
                    ensure!(
                        head_after == 0,
                        "the unaudited app reports audit.head {head_after}, not 0"
                    );
                }
                rows.push(AuditRow {
                    pass,
                    auditing,
                    concurrency,
                    stats,
                    records: head_after - head_before,
                    flushes,
                    app_cpu,
                    client_cpu: CpuTime {
                        user: own.user.saturating_sub(app_cpu.user),
                        system: own.system.saturating_sub(app_cpu.system),
                    },
                    machine,
                    audit_wait,
                });
            }
            // The app still answers correctly: one checked round trip.
            rt.block_on(async {
                let (blob, plaintext) = datakey_call(&client, &app, token).await?;
                decrypt_check(&client, &app, token, &blob, &plaintext).await
            })
            .with_context(|| format!("round trip at the end of audit pass {pass}"))
        })();
        drop(client);
        let stopped = app.stop();
        result?;
        stopped?;
    }
    Ok(AuditReport {
        rows,
        time,
        concurrency: knobs.concurrency.clone(),
        probe,
        device: device.map(|d| d.label),
        app_workers,
        start_times,
        wal_warmups,
        phase_time: phase_start.elapsed(),
    })
}

/// The install's configuration from its file alone: `Config::load` would also apply any
/// `CUSTODIAN__*` variables of the caller's environment, which the out-of-process server never
/// sees (see [`Install::command`]).
fn install_config(install: &Install) -> Result<custodian::config::Config> {
    use figment::providers::Format as _;
    let raw: custodian::config::raw::RawConfig =
        figment::Figment::from(figment::providers::Toml::file_exact(&install.config))
            .extract()
            .with_context(|| format!("reading {}", install.config.display()))?;
    custodian::config::Config::from_raw(raw, &install.dir)
        .with_context(|| format!("validating {}", install.config.display()))
}

/// The app built and served in this process, on its own runtime; stopped by dropping the
/// runtime (which cancels every task it runs, the serving task and the workers alike).
struct InProcessApp {
    rt: tokio::runtime::Runtime,
    serving: tokio::task::JoinHandle<Result<(), custodian::app::StartError>>,
    addr: SocketAddr,
}

impl InProcessApp {
    fn start(
        config: &custodian::config::Config,
        auditing: Auditing,
        workers: usize,
    ) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name(APP_THREAD)
            // Blocking threads stay for the whole pass, so their CPU time stays countable.
            .thread_keep_alive(Duration::from_secs(3600))
            .enable_all()
            .build()
            .context("starting the app runtime")?;
        let app = rt
            .block_on(async {
                match auditing {
                    Auditing::On => custodian::app::App::build(config).await,
                    Auditing::Off => {
                        custodian::app::App::dangerous_build_unaudited_for_benchmarks(config).await
                    }
                }
            })
            .map_err(|e| anyhow!("building the {} app: {e}", auditing.label()))?;
        let addr = app.local_addr();
        ensure!(
            addr.ip().is_loopback(),
            "the app listens on {addr}, not on loopback"
        );
        let serving = rt.spawn(app.run());
        Ok(Self { rt, serving, addr })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Polls `GET /v1/health/ready` until it answers 200.
    async fn wait_ready(&self, client: &reqwest::Client) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let url = self.url("/v1/health/ready");
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            ensure!(
                !self.serving.is_finished(),
                "the in-process app stopped serving"
            );
            match client.get(&url).send().await {
                Ok(r) if r.status() == StatusCode::OK => return Ok(()),
                Ok(r) => last = format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the in-process app was not ready in {START_TIMEOUT:?} (last: {last})")
    }

    /// `audit.head` of `GET /v1/health/ready`: the sequence of the last record written. The
    /// service answers readiness from a probe up to [`READINESS_TTL`] old, so this first waits
    /// that long: called with no request in flight, it then reads the current head.
    async fn audit_head(&self, client: &reqwest::Client) -> Result<u64> {
        tokio::time::sleep(READINESS_TTL + Duration::from_millis(50)).await;
        let ready = expect_json(
            client.get(self.url("/v1/health/ready")),
            "GET /v1/health/ready",
            StatusCode::OK,
        )
        .await?;
        ready
            .get("audit")
            .and_then(|a| a.get("head"))
            .and_then(serde_json::Value::as_u64)
            .context("GET /v1/health/ready answered without `audit.head`")
    }

    /// The audit wait and commit histograms of the app's `GET /metrics` (an audited request).
    async fn audit_wait(&self, client: &reqwest::Client, auth: &HeaderValue) -> Result<AuditWait> {
        AuditWait::scrape(client, &self.url("/metrics"), auth).await
    }

    /// Stops serving and drops the runtime with everything it runs.
    fn stop(self) -> Result<()> {
        let Self { rt, serving, .. } = self;
        let early = if serving.is_finished() {
            Some(rt.block_on(serving))
        } else {
            serving.abort();
            None
        };
        rt.shutdown_timeout(STOP_TIMEOUT);
        match early {
            None => Ok(()),
            Some(Ok(Ok(()))) => bail!("the in-process app stopped serving on its own"),
            Some(Ok(Err(e))) => bail!("the in-process app failed: {e}"),
            Some(Err(e)) => bail!("the in-process app's task failed: {e}"),
        }
    }
}

/// The app's threads: its runtime's workers and blocking pool, and the audit log's writer and checkpointer.
const APP_THREADS: [&str; 3] = [
    APP_THREAD,
    custodian::audit::log::WRITER_THREAD,
    custodian::audit::log::CHECKPOINT_THREAD,
];

/// Summed CPU time of this process's threads named one of `names`. A thread that exits between
/// two readings takes its time with it; the app keeps its threads for the whole pass.
fn threads_cpu(names: &[&str], ticks: f64) -> Result<CpuTime> {
    let mut total = CpuTime::default();
    for entry in std::fs::read_dir("/proc/self/task").context("reading /proc/self/task")? {
        let tid = entry.context("reading /proc/self/task")?.file_name();
        let tid = tid.to_string_lossy();
        // A thread may exit while we look: skip what is gone.
        let Ok(comm) = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")) else {
            continue;
        };
        if !names.contains(&comm.trim_end()) {
            continue;
        }
        if let Ok(t) = cpu_time(&format!("self/task/{tid}"), ticks) {
            total.user += t.user;
            total.system += t.system;
        }
    }
    Ok(total)
}

/// The block device holding a directory, for its flush counter in `/proc/diskstats`.
struct BlockDevice {
    major: u64,
    minor: u64,
    label: String,
}

impl BlockDevice {
    /// `None` when the directory is not on a block device listed in `/proc/diskstats` with a
    /// flush counter (tmpfs, old kernels).
    fn of(dir: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt as _;
        let dev = std::fs::metadata(dir).ok()?.dev();
        // Linux's encoding of `dev_t` (glibc `gnu_dev_major` / `gnu_dev_minor`).
        let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff);
        let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0xff);
        let mut device = Self {
            major,
            minor,
            label: String::new(),
        };
        let (name, _) = device.read()?;
        device.label = format!("{major}:{minor} {name}");
        Some(device)
    }

    /// Name and flushes completed, from `/proc/diskstats` (the 16th field after the name).
    fn read(&self) -> Option<(String, u64)> {
        let stats = std::fs::read_to_string("/proc/diskstats").ok()?;
        stats.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (major, minor) = (
                f.first()?.parse::<u64>().ok()?,
                f.get(1)?.parse::<u64>().ok()?,
            );
            if (major, minor) != (self.major, self.minor) {
                return None;
            }
            Some(((*f.get(2)?).to_owned(), f.get(18)?.parse().ok()?))
        })
    }

    fn flushes(&self) -> Option<u64> {
        self.read().map(|(_, f)| f)
    }
}

/// One-row durable commits on a scratch database at `path` (WAL, `synchronous = FULL`, as the
/// store opens its database), for [`COMMIT_PROBE`]; removes the files afterwards.
fn commit_probe(path: &Path, device: Option<&BlockDevice>) -> Result<CommitProbe> {
    let result = (|| {
        let conn = rusqlite::Connection::open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .context("setting WAL")?;
        ensure!(
            mode == "wal",
            "the probe database is in {mode} mode, not WAL"
        );
        conn.pragma_update(None, "synchronous", "FULL")
            .context("setting synchronous = FULL")?;
        conn.execute_batch("CREATE TABLE probe (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
            .context("creating the probe table")?;
        // About the size of an encoded audit record.
        let body = vec![0x5au8; 512];
        // Commits for COMMIT_PROBE (or COMMIT_PROBE_MAX of them), each after `pause`; their
        // latencies.
        let commits = |pause: Option<Duration>| -> Result<Vec<Duration>> {
            let mut latencies = Vec::new();
            let start = Instant::now();
            while start.elapsed() < COMMIT_PROBE && (latencies.len() as u64) < COMMIT_PROBE_MAX {
                if let Some(pause) = pause {
                    std::thread::sleep(pause);
                }
                let t = Instant::now();
                conn.execute_batch("BEGIN IMMEDIATE").context("BEGIN")?;
                conn.execute("INSERT INTO probe (body) VALUES (?1)", [&body])
                    .context("INSERT")?;
                conn.execute_batch("COMMIT").context("COMMIT")?;
                latencies.push(t.elapsed());
            }
            Ok(latencies)
        };
        let flushes_before = device.and_then(BlockDevice::flushes);
        let start = Instant::now();
        let latencies = commits(None)?;
        let elapsed = start.elapsed();
        let flushes = device
            .and_then(BlockDevice::flushes)
            .zip(flushes_before)
            .map(|(after, before)| after.saturating_sub(before));
        let isolated = commits(Some(ISOLATED_GAP))?;
        // The isolated commits' latencies only: their pauses are not part of any commit.
        let busy = isolated.iter().sum();
        Ok(CommitProbe {
            stats: Stats::from_latencies(latencies, elapsed, 0, None),
            flushes,
            isolated: Stats::from_latencies(isolated, busy, 0, None),
            handoff: handoff_probe()?,
        })
    })();
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    result
}

/// What the audit's two hand-offs cost at least on this machine: a thread sends a message
/// to another thread blocked on a channel, which answers at once, as a request's worker and
/// the audit writer do. Between round trips the sender keeps its CPU busy for
/// [`ISOLATED_GAP`], so the other thread sleeps and wakes on a CPU of its own, as the writer
/// does at c=1 while the request's worker runs.
fn handoff_probe() -> Result<Stats> {
    let (to_echo, requests) = std::sync::mpsc::channel::<()>();
    let (to_caller, answers) = std::sync::mpsc::channel::<()>();
    let echo = std::thread::Builder::new()
        .name("bench-echo".into())
        .spawn(move || {
            while requests.recv().is_ok() {
                if to_caller.send(()).is_err() {
                    break;
                }
            }
        })
        .context("starting the hand-off probe's thread")?;
    let mut latencies = Vec::new();
    let start = Instant::now();
    let mut result = Ok(());
    while start.elapsed() < HANDOFF_PROBE {
        let busy = Instant::now();
        while busy.elapsed() < ISOLATED_GAP {
            std::hint::spin_loop();
        }
        let t = Instant::now();
        if to_echo.send(()).is_err() || answers.recv().is_err() {
            result = Err(anyhow!("the hand-off probe's thread stopped"));
            break;
        }
        latencies.push(t.elapsed());
    }
    drop(to_echo);
    let _ = echo.join();
    result?;
    let busy = latencies.iter().sum();
    Ok(Stats::from_latencies(latencies, busy, 0, None))
}

impl AuditReport {
    /// The rows of one build at one concurrency.
    fn rows_of(&self, auditing: Auditing, concurrency: usize) -> Vec<&AuditRow> {
        self.rows
            .iter()
            .filter(|r| r.auditing == auditing && r.concurrency == concurrency)
            .collect()
    }

    /// Mean ops/s of one build at one concurrency.
    fn mean_ops(&self, auditing: Auditing, concurrency: usize) -> f64 {
        let rows = self.rows_of(auditing, concurrency);
        rows.iter().map(|r| r.stats.ops_per_sec()).sum::<f64>() / rows.len().max(1) as f64
    }

    fn ratio(&self, concurrency: usize) -> f64 {
        self.mean_ops(Auditing::On, concurrency)
            / self.mean_ops(Auditing::Off, concurrency).max(f64::EPSILON)
    }

    /// The concurrency at which `auditing` reached its highest mean ops/s, and that rate.
    fn capacity(&self, auditing: Auditing) -> Option<(usize, f64)> {
        self.concurrency
            .iter()
            .map(|&c| (c, self.mean_ops(auditing, c)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// The c=1 gap taken apart; `None` without audited and unaudited c=1 rows.
    fn c1_breakdown(&self) -> Option<C1Breakdown> {
        let p50 = |auditing| -> Option<Duration> {
            let rows = self.rows_of(auditing, 1);
            let n = u32::try_from(rows.len()).ok().filter(|n| *n > 0)?;
            Some(rows.iter().map(|r| r.stats.p50).sum::<Duration>() / n)
        };
        let (on, off) = (p50(Auditing::On)?, p50(Auditing::Off)?);
        let waits = self
            .rows_of(Auditing::On, 1)
            .iter()
            .filter_map(|r| r.audit_wait)
            .reduce(AuditWait::plus)?;
        Some(C1Breakdown {
            gap: on.saturating_sub(off),
            wait: waits.mean_wait(),
            commit: waits.mean_commit(),
            floor: self.probe.stats.p50,
            isolated: self.probe.isolated_mean(),
            round_trip: self.probe.handoff.p50,
        })
    }

    /// The best ratio a closed-loop client at concurrency 1 can see when each request also
    /// waits for one durable commit of the probe's median cost; `None` without a c=1 row.
    fn latency_bound(&self) -> Option<LatencyBound> {
        let rows = self.rows_of(Auditing::Off, 1);
        let unaudited = rows.iter().map(|r| r.stats.p50).min()?;
        Some(LatencyBound {
            unaudited,
            commit: self.probe.stats.p50,
        })
    }

    fn write_markdown(&self, out: &mut String) -> std::fmt::Result {
        writeln!(out, "\n### Audit cost: `datakey` audited and unaudited\n")?;
        writeln!(
            out,
            "- the app built in the bench process from the install's config file (no \
             `CUSTODIAN__*` overrides), same token, database and key `{KEY_NAME}`, with the \
             out-of-process server stopped; audited = `App::build`, unaudited = \
             `App::dangerous_build_unaudited_for_benchmarks` (records discarded)"
        )?;
        writeln!(
            out,
            "- passes in order: {}; each serves on a fresh port, on its own tokio runtime ({} \
             worker threads, as `custodian serve`), with no tracing subscriber (the app logs \
             nothing, unlike the out-of-process server); build → ready took {} s",
            AUDIT_PASSES
                .iter()
                .enumerate()
                .map(|(i, a)| format!("{} {}", i + 1, a.label()))
                .collect::<Vec<_>>()
                .join(", "),
            self.app_workers,
            self.start_times
                .iter()
                .map(|t| format!("{:.2}", t.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(" / ")
        )?;
        writeln!(
            out,
            "- each row: {} `{CONTEXT_JSON}`, {:.1} s after a {:.1} s warm-up, same client as \
             the HTTP rows; records = `audit.head` of `GET /v1/health/ready` after − before the \
             row (the probes themselves are not audited)",
            Op::Datakey(DeviceKey::Pkcs11Direct).label(),
            self.time.as_secs_f64(),
            WARMUP.as_secs_f64()
        )?;
        writeln!(
            out,
            "- before its rows each audited pass warmed the WAL (`warm_wal`: `datakey` at \
             concurrency 4 until the WAL passed its restart size, {WAL_RESTART_BYTES} bytes, \
             then 0.6 s more): {}; the rows then commit over a written WAL, as the commit floor \
             below does and a server does once it has run a while",
            self.wal_warmups
                .iter()
                .map(|w| format!("{} requests in {:.1} s", w.requests, w.took.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(" / ")
        )?;
        let p = &self.probe;
        let per_commit = p
            .flushes_per_commit()
            .map_or_else(|| "not counted".to_owned(), |f| format!("{f:.2}"));
        writeln!(
            out,
            "- durable commit floor on this file system: one-row transactions on a scratch \
             SQLite database next to the bench's (WAL, `synchronous = FULL`), single-threaded, \
             {:.1} s: {:.0} commits/s, p50 {} ms, p99 {} ms; block-device flushes per commit: \
             {per_commit}; then the same commits each after the thread slept {} ms (isolated \
             commits, issued from idle as the writer issues each at c=1): {} commits, p50 {} \
             ms, mean {} ms, p99 {} ms",
            p.stats.elapsed.as_secs_f64(),
            p.stats.ops_per_sec(),
            ms(p.stats.p50),
            ms(p.stats.p99),
            ms(ISOLATED_GAP),
            p.isolated.ops,
            ms(p.isolated.p50),
            ms(p.isolated_mean()),
            ms(p.isolated.p99)
        )?;
        writeln!(
            out,
            "- hand-off probe: a thread sends to another blocked on a channel, which answers at \
             once (as a request's worker and the audit writer do); between round trips the \
             sender keeps its CPU busy for {} ms, so the other thread sleeps on a CPU of its \
             own: {} round trips, p50 {} ms, p99 {} ms",
            ms(ISOLATED_GAP),
            p.handoff.ops,
            ms(p.handoff.p50),
            ms(p.handoff.p99)
        )?;
        writeln!(
            out,
            "- audit wait / commit: the means of the app's `{}` (a request's hand-off to the \
             writer, the queue, the group commit, the answer's hand-off back) and `{}` (the \
             writer's chain, insert and `fdatasync`) over the row, from `GET /metrics` before \
             and after it (the first scrape's own record counted with the row's)",
            AuditWait::WAIT,
            AuditWait::COMMIT
        )?;
        writeln!(
            out,
            "- flushes: completed flush requests of the database's block device ({}) during \
             the row, from `/proc/diskstats`, machine-wide; records per flush ≈ the average \
             group-commit batch if each commit costs the probe's flushes and nothing else on the \
             machine flushes (so a lower bound on the batch)",
            self.device.as_deref().unwrap_or("not found")
        )?;
        writeln!(
            out,
            "- app CPU: the app's runtime threads and the audit writer thread; bench client: \
             the rest of this process; machine busy: every CPU's time neither idle nor waiting \
             for I/O, including the kernel's work for all of them (100 % = one core, {} cores \
             here)",
            std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get)
        )?;
        writeln!(out)?;
        writeln!(
            out,
            "| pass | build | concurrency | ops/s | p50 ms | p99 ms | errors | records | \
             records/s | flushes | records per flush | audit wait µs | commit µs | app CPU % | \
             app µs/op | bench client CPU % | other CPU % | machine busy % |"
        )?;
        writeln!(
            out,
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        )?;
        for r in &self.rows {
            let secs = r.stats.elapsed.as_secs_f64().max(f64::EPSILON);
            let (flushes, per_flush) = match (r.flushes, r.auditing) {
                (None, _) => ("—".to_owned(), "—".to_owned()),
                (Some(f), Auditing::Off) => (f.to_string(), "—".to_owned()),
                (Some(f), Auditing::On) => (
                    f.to_string(),
                    format!("{:.1}", r.records as f64 / f.max(1) as f64),
                ),
            };
            let (wait, commit) = r.audit_wait.map_or_else(
                || ("—".to_owned(), "—".to_owned()),
                |w| (us(w.mean_wait()), us(w.mean_commit())),
            );
            writeln!(
                out,
                "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {:.0} | {flushes} | {per_flush} | \
                 {wait} | {commit} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
                r.pass,
                r.auditing.label(),
                r.concurrency,
                r.stats.ops_per_sec(),
                ms(r.stats.p50),
                ms(r.stats.p99),
                r.stats.errors,
                r.records,
                r.records as f64 / secs,
                r.pct(r.app_cpu.total()),
                r.per_op_us(r.app_cpu.total()),
                r.pct(r.client_cpu.total()),
                r.other_pct(),
                r.pct(r.machine.busy)
            )?;
        }
        writeln!(out)?;
        let odd: Vec<String> = self
            .rows
            .iter()
            .filter(|r| r.auditing == Auditing::On && r.records != r.stats.ops + r.stats.errors)
            .map(|r| {
                format!(
                    "pass {} c={}: {} records for {} requests",
                    r.pass,
                    r.concurrency,
                    r.records,
                    r.stats.ops + r.stats.errors
                )
            })
            .collect();
        if odd.is_empty() {
            writeln!(
                out,
                "Every audited row wrote exactly one record per request it sent.\n"
            )?;
        } else {
            writeln!(
                out,
                "Records and requests differ: {} (other audited requests reached the app, or \
                 the readiness answer was stale).\n",
                odd.join("; ")
            )?;
        }
        writeln!(
            out,
            "Requirement (issue 6): audited `datakey` throughput at least 2/3 of unaudited in \
             the same run (audited = mean of passes {}).\n",
            AUDIT_PASSES
                .iter()
                .enumerate()
                .filter(|(_, a)| **a == Auditing::On)
                .map(|(i, _)| (i + 1).to_string())
                .collect::<Vec<_>>()
                .join(" and ")
        )?;
        writeln!(
            out,
            "| concurrency | unaudited ops/s | audited ops/s | audited / unaudited | p50 ms \
             unaudited → audited | p99 ms unaudited → audited | target ≥ {AUDIT_TARGET:.3} |"
        )?;
        writeln!(out, "|---:|---:|---:|---:|---:|---:|---|")?;
        let mut verdicts = Vec::new();
        for &c in &self.concurrency {
            let ratio = self.ratio(c);
            let pass = ratio >= AUDIT_TARGET;
            let per_pass = |a: Auditing, f: fn(&Stats) -> Duration| {
                self.rows_of(a, c)
                    .iter()
                    .map(|r| ms(f(&r.stats)))
                    .collect::<Vec<_>>()
                    .join(" / ")
            };
            writeln!(
                out,
                "| {c} | {:.0} | {:.0} | {ratio:.3} | {} → {} | {} → {} | {} |",
                self.mean_ops(Auditing::Off, c),
                self.mean_ops(Auditing::On, c),
                per_pass(Auditing::Off, |s| s.p50),
                per_pass(Auditing::On, |s| s.p50),
                per_pass(Auditing::Off, |s| s.p99),
                per_pass(Auditing::On, |s| s.p99),
                if pass { "PASS" } else { "FAIL" }
            )?;
            verdicts.push(format!(
                "c={c} {} ({ratio:.3})",
                if pass { "PASS" } else { "FAIL" }
            ));
        }
        writeln!(out)?;
        if let Some(bound) = self.latency_bound() {
            writeln!(
                out,
                "At concurrency 1 each request waits for its own durable commit, so a \
                 closed-loop client gets at most unaudited p50 / (unaudited p50 + commit floor \
                 p50) = {} / ({} + {}) = {:.3} of the unaudited rate, even if everything else \
                 the audit path does were free.\n",
                ms(bound.unaudited),
                ms(bound.unaudited),
                ms(bound.commit),
                bound.ratio()
            )?;
        }
        if let Some(b) = self.c1_breakdown() {
            let rest = b.gap.as_secs_f64() - b.wait.as_secs_f64();
            writeln!(
                out,
                "Where the audited c=1 p50's extra {} µs goes: the request waited {} µs (mean) \
                 for its record, of which the writer's commit took {} µs and the hand-offs to \
                 the writer and back {} µs; {:.0} µs is the rest (the entry built and sent, and \
                 mean against median). A commit issued from idle costs more than the probe's \
                 back-to-back floor ({} µs at p50): the probe's isolated commits took {} µs on \
                 average. The hand-offs cost what two threads' round trip costs when the other \
                 thread sleeps on an idle CPU: {} µs at p50 in the hand-off probe. One isolated \
                 commit and one such round trip: {} µs.\n",
                us(b.gap),
                us(b.wait),
                us(b.commit),
                us(b.handoffs()),
                rest * 1e6,
                us(b.floor),
                us(b.isolated),
                us(b.round_trip),
                us(b.bound())
            )?;
        }
        if let Some((off, on)) = self
            .capacity(Auditing::Off)
            .zip(self.capacity(Auditing::On))
        {
            writeln!(
                out,
                "At capacity (each build's highest mean ops/s over the concurrencies measured): \
                 unaudited {:.0} at c={}, audited {:.0} at c={}, ratio {:.3}. For information \
                 only: the verdicts above are per concurrency.\n",
                off.1,
                off.0,
                on.1,
                on.0,
                on.1 / off.1.max(f64::EPSILON)
            )?;
        }
        writeln!(
            out,
            "audit cost (audited/unaudited ≥ {AUDIT_TARGET:.3}): {}",
            verdicts.join(", ")
        )?;
        writeln!(
            out,
            "the audit phase took {:.1} s in all",
            self.phase_time.as_secs_f64()
        )?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Raw baseline

/// Opens the bench token in this process and times the device calls the service makes, on
/// the root key object the service used. Returns the library description and the rows.
fn raw_baseline(install: &Install, setup: &Setup, time: Duration) -> Result<(String, Vec<RawRow>)> {
    let ctx = Pkcs11::new(&install.module)
        .with_context(|| format!("loading {}", install.module.display()))?;
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .context("C_Initialize")?;
    let result = raw_loops(&ctx, install, setup, time);
    ctx.finalize().context("C_Finalize")?;
    result
}

fn raw_loops(
    ctx: &Pkcs11,
    install: &Install,
    setup: &Setup,
    time: Duration,
) -> Result<(String, Vec<RawRow>)> {
    let info = ctx.get_library_info().context("C_GetInfo")?;
    let library = format!(
        "{} {} ({})",
        info.manufacturer_id().trim_end(),
        info.library_version(),
        info.library_description().trim_end()
    );
    let mut slot = None;
    for s in ctx
        .get_slots_with_initialized_token()
        .context("C_GetSlotList")?
    {
        if ctx
            .get_token_info(s)
            .context("C_GetTokenInfo")?
            .label()
            .trim_end()
            == TOKEN_LABEL
        {
            ensure!(slot.is_none(), "two tokens are labelled {TOKEN_LABEL:?}");
            slot = Some(s);
        }
    }
    let slot = slot.with_context(|| format!("no token labelled {TOKEN_LABEL:?}"))?;
    let session = ctx.open_rw_session(slot).context("C_OpenSession")?;
    let pin = PinSource::File(install.user_pin.clone())
        .read()
        .context("reading the user PIN")?;
    login(&session, &pin).context("C_Login")?;
    let result = timed_rows(&session, setup, time);
    let _ = session.logout();
    drop(session);
    Ok((library, result?))
}

/// The three raw loops, on a logged-in session.
fn timed_rows(session: &Session, setup: &Setup, time: Duration) -> Result<Vec<RawRow>> {
    let ticks = clock_ticks();
    let root = RootKeyRef::bare(setup.blob.key_id, setup.blob.key_version);
    let key = root_key(session, &root)?;
    let aad = setup.blob.header().aad(&bench_context()?);
    let mut plaintext = [0u8; DATA_KEY_LEN];
    getrandom::getrandom(&mut plaintext).context("host RNG")?;
    let rows = vec![
        raw_row(RAW_SEAL, time, ticks, None, || {
            let iv = host_iv()?;
            let out = gcm_seal_with_iv(session, key, iv, &aad, &plaintext)?;
            ensure!(out.len() == DATA_KEY_LEN + 16, "short ciphertext");
            Ok(())
        })?,
        raw_row(RAW_RNG_SEAL, time, ticks, None, || {
            // What the service's data key path asks of the device.
            let mut data_key = [0u8; DATA_KEY_LEN];
            session.generate_random_slice(&mut data_key)?;
            let iv = host_iv()?;
            gcm_seal_with_iv(session, key, iv, &aad, &data_key)?;
            Ok(())
        })?,
        raw_row(RAW_OPEN, time, ticks, None, || {
            let out = gcm_open(session, key, setup.blob.iv, &aad, &setup.blob.ciphertext)?;
            ensure!(
                out.as_slice() == setup.plaintext.as_slice(),
                "gcm_open returned a different data key"
            );
            Ok(())
        })?,
    ];
    Ok(rows)
}

/// The TPM direct mode's wrap label (`src/backend/tpm/backend.rs`): the raw TPM rows hand the
/// TPM an input of the same shape, label ‖ 96-bit nonce ‖ SHA-256 digest.
const TPM_WRAP_LABEL: &[u8] = b"custodian/tpm-wrap/v1";

/// Opens the bench's swtpm in this process (the server is stopped: swtpm serves one connection
/// at a time), creates a version key and times what TPM direct mode asks of the TPM,
/// single-threaded. Returns the TPM's description and the rows.
fn raw_tpm(
    rt: &tokio::runtime::Runtime,
    swtpm: &Swtpm,
    time: Duration,
) -> Result<(String, Vec<RawRow>)> {
    let config = TpmConfig {
        tcti: swtpm.tcti(),
        owner_auth: None,
        primary_persistent_handle: None,
    };
    let device =
        TpmDevice::open(&config).with_context(|| format!("opening the TPM at {}", config.tcti))?;
    let info = rt
        .block_on(device.info())
        .context("reading the TPM's identity")?;
    let description = format!(
        "{} at `{}`: manufacturer {} ({}), firmware {}, TPM 2.0 library revision {}",
        swtpm.version,
        config.tcti,
        info.manufacturer,
        info.vendor,
        info.firmware_version_text,
        info.spec_revision
    );
    let key = rt
        .block_on(device.create_version_key())
        .context("creating a TPM version key")?;
    let label = "bench-raw/v1";
    let mut input = TPM_WRAP_LABEL.to_vec();
    input.resize(TPM_WRAP_LABEL.len() + 12 + 32, 0);
    getrandom::getrandom(&mut input[TPM_WRAP_LABEL.len()..]).context("host RNG")?;
    let nonce = TPM_WRAP_LABEL.len()..TPM_WRAP_LABEL.len() + 12;
    let ticks = clock_ticks();
    let pid = swtpm.pid();
    let hmac = |input: &mut Vec<u8>| -> Result<()> {
        // A fresh nonce per call, as the service draws one per wrap.
        getrandom::getrandom(&mut input[nonce.clone()]).context("host RNG")?;
        let k = rt.block_on(device.hmac(&key, label, input))?;
        ensure!(k.len() == 32, "TPM2_HMAC returned {} bytes", k.len());
        Ok(())
    };
    // Issue 23's baseline: every call loads the version key and flushes it again (`unload`
    // flushes the key `hmac` kept), as TPM direct mode did per wrap before decision 0025.
    let mut rows = vec![raw_row(RAW_TPM_HMAC, time, ticks, Some(&pid), || {
        hmac(&mut input)?;
        rt.block_on(device.unload(&key))?;
        Ok(())
    })?];
    // What TPM direct mode asks of the TPM per wrap now: the key stays loaded between calls.
    rows.push(raw_row(RAW_TPM_HMAC_KEPT, time, ticks, Some(&pid), || {
        hmac(&mut input)
    })?);
    rows.push(raw_row(RAW_TPM_RNG_HMAC, time, ticks, Some(&pid), || {
        // What the service's TPM direct data key path asks of the TPM.
        let data_key = rt.block_on(device.random(DATA_KEY_LEN))?;
        ensure!(
            data_key.expose_secret().len() == DATA_KEY_LEN,
            "TPM2_GetRandom returned a short data key"
        );
        hmac(&mut input)
    })?);
    // Closes the connection (the owner thread drops the context when its queue closes); the
    // server, started next, then gets swtpm's one connection.
    drop(device);
    std::thread::sleep(Duration::from_millis(200));
    Ok((description, rows))
}

fn bench_context() -> Result<EncryptionContext> {
    EncryptionContext::from_pairs([("app".to_owned(), "bench".to_owned())])
        .map_err(|e| anyhow!("bench context: {e}"))
}

/// A fresh 96-bit IV from the OS, as the service makes them (`iv_source = "host"`).
fn host_iv() -> Result<[u8; 12]> {
    let mut iv = [0u8; 12];
    getrandom::getrandom(&mut iv).context("host RNG")?;
    Ok(iv)
}

/// The handle of `root`'s device object: exactly one AES secret key with its `CKA_ID`, and a
/// Custodian label.
fn root_key(session: &Session, root: &RootKeyRef) -> Result<ObjectHandle> {
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Token(true),
            Attribute::Id(root.device_id()),
        ])
        .context("C_FindObjects")?;
    let [handle] = found[..] else {
        bail!("{} objects carry the root key's CKA_ID, not 1", found.len());
    };
    let label = session
        .get_attributes(handle, &[AttributeType::Label])
        .context("C_GetAttributeValue")?
        .into_iter()
        .find_map(|a| match a {
            Attribute::Label(l) => Some(String::from_utf8_lossy(&l).into_owned()),
            _ => None,
        })
        .context("the root key has no label")?;
    ensure!(
        label == root.label(),
        "the root key is labelled {label:?}, not {:?}",
        root.label()
    );
    Ok(handle)
}

/// Runs `op` single-threaded for `time`, timing each call. The CPU of `device_pid` (swtpm, a
/// device in another process) counts with the bench's own.
fn raw_row(
    name: &'static str,
    time: Duration,
    ticks: f64,
    device_pid: Option<&str>,
    mut op: impl FnMut() -> Result<()>,
) -> Result<RawRow> {
    let cpu_now = || -> Result<CpuTime> {
        let own = cpu_time("self", ticks)?;
        Ok(match device_pid {
            Some(pid) => {
                let device = cpu_time(pid, ticks)?;
                CpuTime {
                    user: own.user + device.user,
                    system: own.system + device.system,
                }
            }
            None => own,
        })
    };
    let (own_before, machine_before) = (cpu_now()?, machine_cpu(ticks)?);
    let mut latencies = Vec::with_capacity(1 << 18);
    let start = Instant::now();
    let deadline = start + time;
    loop {
        let t = Instant::now();
        if t >= deadline {
            break;
        }
        op()?;
        latencies.push(t.elapsed());
    }
    let mut stats = Stats::from_latencies(latencies, start.elapsed(), 0, None);
    let cpu = cpu_now()?.since(own_before);
    let machine = machine_cpu(ticks)?.since(machine_before);
    stats.other_cpu = machine.busy.saturating_sub(cpu.total() + machine.steal);
    Ok(RawRow {
        name,
        stats,
        cpu,
        machine,
    })
}

// ---------------------------------------------------------------------------------------------
// Report

impl Report {
    /// Every stats block of the run that counted HTTP requests.
    fn http_stats(&self) -> impl Iterator<Item = &Stats> {
        let rewrap = self
            .rewrap
            .iter()
            .flat_map(|r| [&r.baseline.stats, &r.loaded.stats]);
        let audit = self
            .audit
            .iter()
            .flat_map(|a| a.rows.iter().map(|r| &r.stats));
        self.http
            .iter()
            .map(|r| &r.stats)
            .chain(rewrap)
            .chain(audit)
    }

    fn total_errors(&self) -> u64 {
        self.http_stats().map(|s| s.errors).sum()
    }

    fn first_error(&self) -> Option<&str> {
        self.http_stats().find_map(|s| s.first_error.as_deref())
    }

    fn raw_ops(&self, name: &str) -> Option<f64> {
        self.raw
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.stats.ops_per_sec())
    }

    fn markdown(&self, install: &Install, knobs: &Knobs) -> String {
        let mut out = String::new();
        let _ = self.write_markdown(&mut out, install, knobs);
        out
    }

    fn write_markdown(
        &self,
        out: &mut String,
        install: &Install,
        knobs: &Knobs,
    ) -> std::fmt::Result {
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        writeln!(out, "\n## Custodian service benchmark\n")?;
        writeln!(out, "- date: {}", self.started)?;
        writeln!(out, "- revision: {}", self.revision)?;
        writeln!(
            out,
            "- machine: {cpus} CPUs (nproc), {}; kernel {}",
            cpu_model(),
            kernel()
        )?;
        writeln!(
            out,
            "- load average (1/5/15 min) before / after: {} / {}",
            self.load_before,
            load_average()
        )?;
        writeln!(
            out,
            "- PKCS#11 module: {} ({})",
            install.module.display(),
            self.library
        )?;
        writeln!(
            out,
            "- TPM: {}",
            self.tpm
                .as_deref()
                .unwrap_or("none (`--tpm false`: no swtpm, no TPM keys or rows)")
        )?;
        writeln!(
            out,
            "- custodian session pool (`backend.sessions`): {}; server log filter: `{}`",
            install.sessions, install.log_filter
        )?;
        writeln!(
            out,
            "- HTTP rows: {:.1} s each after a {:.1} s warm-up, at most {} requests; raw loops: \
             {:.1} s each",
            knobs.http_time.as_secs_f64(),
            WARMUP.as_secs_f64(),
            knobs.max_requests,
            knobs.raw_time.as_secs_f64()
        )?;
        if let Some(w) = &self.wal_warmup {
            writeln!(
                out,
                "- before the first row, after the idle memory was read: `datakey` at concurrency \
                 4 until the SQLite WAL passed its restart size ({WAL_RESTART_BYTES} bytes), then \
                 0.6 s more: {} requests in {:.1} s, so the rows commit over a written WAL",
                w.requests,
                w.took.as_secs_f64()
            )?;
        }
        writeln!(
            out,
            "- load generator: the bench process, one thread, HTTP/1.1 keep-alive to 127.0.0.1 \
             (same machine as the server)"
        )?;
        let (starts, idle) = &self.startup;
        writeln!(
            out,
            "- restarts before the load: median {:.1} ms of {} from spawning `custodian serve` to \
             the first 200 from `/v1/health/ready` (polled every 2 ms; existing token, store and \
             key): {}; idle RSS after the last {:.1} MiB (VmHWM {:.1} MiB)",
            starts.median().as_secs_f64() * 1000.0,
            starts.all.len(),
            starts
                .all
                .iter()
                .map(|d| format!("{:.1}", d.as_secs_f64() * 1000.0))
                .collect::<Vec<_>>()
                .join(" / "),
            idle.rss_kib as f64 / 1024.0,
            idle.hwm_kib as f64 / 1024.0
        )?;
        writeln!(out)?;
        writeln!(
            out,
            "| operation | concurrency | ops/s | p50 ms | p99 ms | errors | server RSS MiB \
             (VmRSS / VmHWM) | service/raw ops/s | other CPU % |"
        )?;
        writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
        for r in &self.raw {
            writeln!(
                out,
                "| {} | 1 (in-process) | {:.0} | {} | {} | 0 | — | — | {:.0} |",
                r.name,
                r.stats.ops_per_sec(),
                ms(r.stats.p50),
                ms(r.stats.p99),
                r.stats.other_cpu_pct()
            )?;
        }
        for r in &self.http {
            let ratio =
                r.op.baseline()
                    .and_then(|name| self.raw_ops(name))
                    .map_or_else(
                        || "—".to_owned(),
                        |raw| format!("{:.3}", r.stats.ops_per_sec() / raw),
                    );
            writeln!(
                out,
                "| {} | {} | {:.0} | {} | {} | {} | {:.1} / {:.1} | {ratio} | {:.0} |",
                r.op.label(),
                r.concurrency,
                r.stats.ops_per_sec(),
                ms(r.stats.p50),
                ms(r.stats.p99),
                r.stats.errors,
                r.memory.rss_kib as f64 / 1024.0,
                r.memory.hwm_kib as f64 / 1024.0,
                r.stats.other_cpu_pct()
            )?;
        }
        writeln!(out)?;
        writeln!(
            out,
            "service/raw: PKCS#11 direct datakey rows against `{RAW_SEAL}`, TPM direct datakey \
             rows against `{RAW_TPM_HMAC}`, decrypt rows against `{RAW_OPEN}`; cached-mode rows \
             make no device call per request. other CPU %: busy CPU not used by the server, the \
             bench or the bench's swtpm during the row (100 % = one core); rows with a large \
             value were measured on a busy machine."
        )?;
        writeln!(out)?;
        writeln!(
            out,
            "CPU during each row (100 % = one core; µs/op = CPU time per completed operation). \
             The process is the bench itself for raw rows (the bench and swtpm for raw TPM rows) \
             and the server for HTTP rows; other = busy CPU used by none of them; steal = time \
             the hypervisor gave to other guests.\n"
        )?;
        writeln!(
            out,
            "| operation | concurrency | process CPU % | process user µs/op | process system \
             µs/op | bench client CPU % | other CPU % | steal % |"
        )?;
        writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|")?;
        for r in &self.raw {
            let secs = r.stats.elapsed.as_secs_f64().max(f64::EPSILON);
            let per_op = |d: Duration| d.as_secs_f64() * 1e6 / (r.stats.ops.max(1) as f64);
            writeln!(
                out,
                "| {} | 1 (in-process) | {:.0} | {:.1} | {:.1} | — | {:.0} | {:.0} |",
                r.name,
                100.0 * r.cpu.total().as_secs_f64() / secs,
                per_op(r.cpu.user),
                per_op(r.cpu.system),
                r.stats.other_cpu_pct(),
                100.0 * r.machine.steal.as_secs_f64() / secs
            )?;
        }
        for r in &self.http {
            let pct = |d: Duration| 100.0 * r.cores(d);
            writeln!(
                out,
                "| {} | {} | {:.0} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} |",
                r.op.label(),
                r.concurrency,
                pct(r.server_cpu.total()),
                r.per_op_us(r.server_cpu.user),
                r.per_op_us(r.server_cpu.system),
                pct(r.client_cpu.total()),
                r.stats.other_cpu_pct(),
                pct(r.machine.steal)
            )?;
        }
        self.write_devices(out, knobs)?;
        if let Some(r) = &self.rewrap {
            r.write_markdown(out, knobs)?;
        }
        if let Some(a) = &self.audit {
            a.write_markdown(out)?;
        }
        targets::write(self, knobs, out)?;
        writeln!(out)?;
        writeln!(out, "errors, all rows: {}", self.total_errors())?;
        Ok(())
    }
}

impl Report {
    fn http_row(&self, op: Op, concurrency: usize) -> Option<&HttpRow> {
        self.http
            .iter()
            .find(|r| r.op == op && r.concurrency == concurrency)
    }

    /// The `datakey` rows by device and mode next to the no-device floor (issue 7).
    fn write_devices(&self, out: &mut String, knobs: &Knobs) -> std::fmt::Result {
        writeln!(out, "\n### datakey by device and mode\n")?;
        writeln!(
            out,
            "`POST /v1/keys/{{key}}/datakey` `{CONTEXT_JSON}` on one key per device and mode, \
             next to `GET /v1/health/live` (no authentication, no body, no device call, no audit \
             record: the floor of the HTTP stack). Same server, client, concurrencies and row \
             length as the table above; keys: {}.\n",
            self.device_keys
                .iter()
                .map(|k| format!("`{}` ({} {})", k.name(), k.backend(), k.mode()))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
        writeln!(
            out,
            "| device | mode | concurrency | ops/s | p50 ms | p99 ms | errors | ÷ no-device floor \
             | ÷ no-device service | ÷ pkcs11 direct | ÷ raw device op | server CPU µs/op \
             | swtpm CPU % | other CPU % |"
        )?;
        writeln!(
            out,
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        )?;
        let ratio = |a: f64, b: Option<f64>| {
            b.filter(|b| *b > 0.0)
                .map_or_else(|| "—".to_owned(), |b| format!("{:.3}", a / b))
        };
        for &c in &knobs.concurrency {
            let floor = self.http_row(Op::Live, c).map(|r| r.stats.ops_per_sec());
            let service = self.http_row(Op::KeyRead, c).map(|r| r.stats.ops_per_sec());
            let p11 = self
                .http_row(Op::Datakey(DeviceKey::Pkcs11Direct), c)
                .map(|r| r.stats.ops_per_sec());
            let rows = [
                ("none", "— (`GET /v1/health/live`)", Op::Live),
                ("none", "— (`GET /v1/keys/bench`)", Op::KeyRead),
            ]
            .into_iter()
            .chain(
                self.device_keys
                    .iter()
                    .map(|&k| (k.backend(), k.mode(), Op::Datakey(k))),
            );
            for (device, mode, op) in rows {
                let Some(r) = self.http_row(op, c) else {
                    continue;
                };
                let ops = r.stats.ops_per_sec();
                let raw = op.baseline().and_then(|name| self.raw_ops(name));
                writeln!(
                    out,
                    "| {device} | {mode} | {c} | {ops:.0} | {} | {} | {} | {} | {} | {} | {} \
                     | {:.1} | {} | {:.0} |",
                    ms(r.stats.p50),
                    ms(r.stats.p99),
                    r.stats.errors,
                    ratio(ops, floor),
                    ratio(ops, service),
                    ratio(ops, p11),
                    ratio(ops, raw),
                    r.per_op_us(r.server_cpu.total()),
                    r.swtpm_cpu.map_or_else(
                        || "—".to_owned(),
                        |t| format!("{:.0}", 100.0 * r.cores(t.total()))
                    ),
                    r.stats.other_cpu_pct()
                )?;
            }
        }
        writeln!(out)?;
        writeln!(
            out,
            "Raw device rates in the same run (one thread, in this process, the server stopped):"
        )?;
        writeln!(out)?;
        for r in &self.raw {
            writeln!(
                out,
                "- {}: {:.0} ops/s, p50 {} ms, p99 {} ms",
                r.name,
                r.stats.ops_per_sec(),
                ms(r.stats.p50),
                ms(r.stats.p99)
            )?;
        }
        writeln!(out)?;
        writeln!(
            out,
            "÷ raw device op: PKCS#11 direct against `{RAW_SEAL}`, TPM direct against \
             `{RAW_TPM_HMAC}` (issue 23's baseline; the service now keeps the version key \
             loaded, see `{RAW_TPM_HMAC_KEPT}`, and a data key also costs a TPM2_GetRandom, see \
             `{RAW_TPM_RNG_HMAC}`). Cached mode makes no device call per request once the \
             version-KEK is cached (one unwrap per key version per `keys.kek_cache_ttl`, 5 min \
             by default; the warm-up before each row fills it). `datakey` also authenticates, \
             checks policy and writes an audit record durably; `health/live` does none of that, \
             `GET /v1/keys/bench` all of it but the device call and the wrap (the service with no \
             device call at all)."
        )?;
        Ok(())
    }
}

/// Milliseconds with three decimals.
fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

/// Whole microseconds.
fn us(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e6)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU model".to_owned())
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// `/proc/loadavg`'s first three fields: other work on the machine skews every number here.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The commit under test, marked when the working tree has changes.
fn revision() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
    };
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown (no git)".to_owned();
    };
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|s| !s.trim().is_empty());
    format!(
        "{}{}",
        commit.trim(),
        if dirty {
            " with uncommitted changes"
        } else {
            ""
        }
    )
}
