//! The soak (`scripts/soak [MINUTES]`, issue 20): a mixed load at a fixed rate — 80 % of the
//! mixed capacity measured at the start of the same run — for MINUTES, against a real
//! `custodian serve` on SQLite and the bench token.
//!
//! The mix, by request number: 3 in 10 `datakey`, 3 `decrypt`, 1 secret write (fresh paths and
//! overwrites of 500 paths under the rotating key, so re-wrap jobs have work), 2 secret reads,
//! 1 key read. Beside it: every 60 s the rotating key is rotated and a re-wrap job started; every
//! 20 s a policy is rewritten. Requests are sent open-loop (on schedule, whether or not earlier
//! ones have answered; at most [`IN_FLIGHT`] at once, and a request that finds no slot counts
//! as *behind*).
//!
//! Every minute it prints requests/s, p50, p99, errors, *behind* and the server's RSS. It fails
//! if RSS grows more than 10 % over its value at the end of minute 5 (minute 1 for runs under
//! 6 minutes), if any minute's p99 exceeds 2× minute 1's, if any request gets an unexpected
//! answer, if more than 1 % are behind, or if a re-wrap job does not complete.

use super::*;

/// Most requests in flight at once: below the server's default per-source connection cap (64),
/// with room for the rotation and policy requests.
const IN_FLIGHT: usize = 48;
/// Length of the capacity measurement.
const CAPACITY_TIME: Duration = Duration::from_secs(15);
/// Concurrency of the capacity measurement (closed loop).
const CAPACITY_CONCURRENCY: usize = 16;
/// The share of capacity the soak runs at.
const LOAD_SHARE: f64 = 0.8;
/// The key the soak rotates and re-wraps.
const ROTATING: &str = "soak-rotating";
/// Paths overwritten under the rotating key.
const ROTATING_PATHS: u64 = 500;

/// One request of the mix.
#[derive(Clone, Copy)]
enum Op {
    Datakey,
    Decrypt,
    Put,
    Get,
    KeyRead,
}

impl Op {
    fn of(n: u64) -> Self {
        match n % 10 {
            0..=2 => Self::Datakey,
            3..=5 => Self::Decrypt,
            6 => Self::Put,
            7 | 8 => Self::Get,
            _ => Self::KeyRead,
        }
    }
}

/// What every request needs: the client, the server's base URL, the token, the blob.
struct Mix {
    client: reqwest::Client,
    base: String,
    auth: HeaderValue,
    decrypt_body: String,
}

impl Mix {
    async fn send(&self, n: u64) -> std::result::Result<(), String> {
        let url = |p: &str| format!("{}{p}", self.base);
        let context = CONTEXT_JSON;
        let req = match Op::of(n) {
            Op::Datakey => self
                .client
                .post(url(&format!("/v1/keys/{KEY_NAME}/datakey")))
                .header(CONTENT_TYPE, "application/json")
                .body(format!(r#"{{"context":{context}}}"#)),
            Op::Decrypt => self
                .client
                .post(url("/v1/decrypt"))
                .header(CONTENT_TYPE, "application/json")
                .body(self.decrypt_body.clone()),
            Op::Put if n % 20 == 6 => self
                .client
                .put(url(&format!("/v1/secrets/soak/fresh/{n}")))
                .header(CONTENT_TYPE, "application/json")
                .body(format!(r#"{{"value_text":"soak-{n}","key":"{KEY_NAME}"}}"#)),
            Op::Put => self
                .client
                .put(url(&format!("/v1/secrets/soak/rot/{}", n % ROTATING_PATHS)))
                .header(CONTENT_TYPE, "application/json")
                .body(format!(r#"{{"value_text":"soak-{n}","key":"{ROTATING}"}}"#)),
            Op::Get => self.client.get(url("/v1/secrets/soak/read")),
            Op::KeyRead => self.client.get(url(&format!("/v1/keys/{KEY_NAME}"))),
        };
        send_expecting_ok(req.header(AUTHORIZATION, self.auth.clone())).await
    }
}

/// What a minute collected.
#[derive(Default)]
struct Minute {
    latencies: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
    behind: u64,
}

/// One printed row.
struct Row {
    minute: usize,
    ops_per_sec: f64,
    p50: Duration,
    p99: Duration,
    errors: u64,
    behind: u64,
    rss_mib: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs the soak and prints its Markdown report; an error names the first check that failed.
pub(super) fn soak(install: &Install, minutes: u32) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the client runtime")?;
    let (mut server, token) = Server::start(install, 40)?;
    let token = token.context("no bootstrap token printed")?;
    let client = http_client(IN_FLIGHT)?;
    let mix = rt.block_on(async {
        server.wait_ready(&client).await?;
        let setup = first_round_trip(&client, &server, token.clone()).await?;
        expect_json(
            client
                .post(server.url("/v1/keys"))
                .bearer_auth(&token)
                .json(&serde_json::json!({ "name": ROTATING })),
            "POST /v1/keys (rotating)",
            StatusCode::CREATED,
        )
        .await?;
        put_bench_secret(&client, &server, &token, "soak/read", "soak").await?;
        let context = serde_json::from_str::<serde_json::Value>(CONTEXT_JSON)?;
        Ok::<_, anyhow::Error>(Mix {
            client: client.clone(),
            base: server.url(""),
            auth: HeaderValue::from_str(&format!("Bearer {token}"))
                .context("the bootstrap token is not a valid header value")?,
            decrypt_body: serde_json::json!({ "ciphertext": setup.blob_b64, "context": context })
                .to_string(),
        })
    })?;
    let mix = Arc::new(mix);

    // Capacity: the same mix, closed loop.
    eprintln!("soak: measuring the mixed capacity for {CAPACITY_TIME:?}");
    let capacity = rt.block_on(async {
        let next = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + CAPACITY_TIME;
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..CAPACITY_CONCURRENCY {
            let (mix, next) = (Arc::clone(&mix), Arc::clone(&next));
            workers.spawn(async move {
                let mut done = 0u64;
                while Instant::now() < deadline {
                    mix.send(next.fetch_add(1, Ordering::Relaxed)).await?;
                    done += 1;
                }
                Ok::<_, String>(done)
            });
        }
        let mut done = 0u64;
        while let Some(joined) = workers.join_next().await {
            done += joined
                .context("a capacity worker failed")?
                .map_err(|e| anyhow!("during the capacity measurement: {e}"))?;
        }
        Ok::<_, anyhow::Error>(done as f64 / CAPACITY_TIME.as_secs_f64())
    })?;
    let rate = capacity * LOAD_SHARE;
    eprintln!("soak: capacity {capacity:.0}/s; running {rate:.0}/s for {minutes} min");

    let current = Arc::new(std::sync::Mutex::new(Minute::default()));
    let mut rows: Vec<Row> = Vec::new();
    let mut jobs: Vec<String> = Vec::new();
    let mut report = String::new();
    writeln!(
        report,
        "Soak: {minutes} min at {rate:.0} requests/s (80 % of the {capacity:.0}/s mixed capacity \
         measured first, closed loop at concurrency {CAPACITY_CONCURRENCY}); mix 3 datakey : 3 \
         decrypt : 1 secret put : 2 secret get : 1 key read; a rotation with re-wrap every 60 s, \
         a policy write every 20 s.\n"
    )?;
    writeln!(
        report,
        "| minute | requests/s | p50 ms | p99 ms | errors | behind | server RSS MiB |"
    )?;
    writeln!(report, "|---:|---:|---:|---:|---:|---:|---:|")?;
    eprint!("{report}");
    let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let started = Instant::now();
    let total = Duration::from_secs(u64::from(minutes) * 60);
    rt.block_on(async {
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut sent = 0u64;
        let mut minute_end = started + Duration::from_secs(60);
        let mut next_rotation = started + Duration::from_secs(60);
        let mut next_policy = started + Duration::from_secs(20);
        let mut policy_version = 0u32;
        while started.elapsed() < total {
            tick.tick().await;
            let due = (started.elapsed().as_secs_f64() * rate) as u64;
            while sent < due {
                let n = sent;
                sent += 1;
                match Arc::clone(&slots).try_acquire_owned() {
                    Ok(permit) => {
                        let (mix, current) = (Arc::clone(&mix), Arc::clone(&current));
                        tokio::spawn(async move {
                            let t = Instant::now();
                            let outcome = mix.send(n).await;
                            let mut m = current.lock().unwrap_or_else(|p| p.into_inner());
                            match outcome {
                                Ok(()) => m.latencies.push(t.elapsed()),
                                Err(e) => {
                                    m.errors += 1;
                                    m.first_error.get_or_insert(e);
                                }
                            }
                            drop(permit);
                        });
                    }
                    Err(_) => current.lock().unwrap_or_else(|p| p.into_inner()).behind += 1,
                }
            }
            let now = Instant::now();
            if now >= next_policy {
                next_policy += Duration::from_secs(20);
                policy_version += 1;
                let doc = serde_json::json!({ "statements": [{
                    "effect": "allow",
                    "actions": ["secret:read"],
                    "resources": [format!("secret/soak/v{policy_version}/*")],
                }]});
                let put = mix
                    .client
                    .put(format!("{}/v1/policies/soak-policy", mix.base))
                    .header(AUTHORIZATION, mix.auth.clone())
                    .json(&doc);
                if let Err(e) = expect_json(put, "PUT a policy", StatusCode::OK).await {
                    let mut m = current.lock().unwrap_or_else(|p| p.into_inner());
                    m.errors += 1;
                    m.first_error.get_or_insert(format!("{e:#}"));
                }
            }
            if now >= next_rotation {
                next_rotation += Duration::from_secs(60);
                match rotate_and_rewrap(&mix).await {
                    Ok(job) => jobs.push(job),
                    Err(e) => {
                        let mut m = current.lock().unwrap_or_else(|p| p.into_inner());
                        m.errors += 1;
                        m.first_error.get_or_insert(format!("{e:#}"));
                    }
                }
            }
            if now >= minute_end {
                minute_end += Duration::from_secs(60);
                let m = std::mem::take(&mut *current.lock().unwrap_or_else(|p| p.into_inner()));
                let rss_mib = server.memory()?.rss_kib as f64 / 1024.0;
                let mut latencies = m.latencies;
                latencies.sort_unstable();
                let row = Row {
                    minute: rows.len() + 1,
                    ops_per_sec: latencies.len() as f64 / 60.0,
                    p50: percentile(&latencies, 0.50),
                    p99: percentile(&latencies, 0.99),
                    errors: m.errors,
                    behind: m.behind,
                    rss_mib,
                };
                let line = format!(
                    "| {} | {:.0} | {:.2} | {:.2} | {} | {} | {:.1} |\n",
                    row.minute,
                    row.ops_per_sec,
                    ms(row.p50),
                    ms(row.p99),
                    row.errors,
                    row.behind,
                    row.rss_mib
                );
                if let Some(e) = &m.first_error {
                    eprintln!("soak: minute {}: first error: {e}", row.minute);
                }
                eprint!("{line}");
                report.push_str(&line);
                rows.push(row);
            }
        }
        // Let the last requests answer.
        let _ = tokio::time::timeout(
            Duration::from_secs(30),
            slots.acquire_many(u32::try_from(IN_FLIGHT).unwrap_or(u32::MAX)),
        )
        .await;
        Ok::<_, anyhow::Error>(())
    })?;
    let unfinished = rt.block_on(async {
        let mut unfinished = Vec::new();
        for job in &jobs {
            if !job_completes(&mix, job, Duration::from_secs(120)).await? {
                unfinished.push(job.clone());
            }
        }
        Ok::<_, anyhow::Error>(unfinished)
    })?;
    server.stop()?;
    let checked = verdict(&rows, &jobs, &unfinished, &mut report);
    print!("{report}");
    checked
}

/// Rotates the rotating key and starts its re-wrap job; returns the job id.
async fn rotate_and_rewrap(mix: &Mix) -> Result<String> {
    let post = |path: &str| {
        mix.client
            .post(format!("{}{path}", mix.base))
            .header(AUTHORIZATION, mix.auth.clone())
    };
    expect_json(
        post(&format!("/v1/keys/{ROTATING}/rotate")),
        "rotate",
        StatusCode::OK,
    )
    .await?;
    let job = expect_json(
        post(&format!("/v1/keys/{ROTATING}/rewrap")),
        "start a re-wrap job",
        StatusCode::ACCEPTED,
    )
    .await?;
    Ok(string_field(&job, "id")?.to_owned())
}

/// Whether the job reaches `completed` within `within`.
async fn job_completes(mix: &Mix, id: &str, within: Duration) -> Result<bool> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let job = expect_json(
            mix.client
                .get(format!("{}/v1/jobs/{id}", mix.base))
                .header(AUTHORIZATION, mix.auth.clone()),
            "GET a job",
            StatusCode::OK,
        )
        .await?;
        match string_field(&job, "state")? {
            "completed" => return Ok(true),
            "running" => tokio::time::sleep(Duration::from_millis(500)).await,
            other => bail!("re-wrap job {id} ended {other}: {job}"),
        }
    }
    Ok(false)
}

/// Appends the checks to the report; an error names the first that failed.
fn verdict(
    rows: &[Row],
    jobs: &[String],
    unfinished: &[String],
    report: &mut String,
) -> Result<()> {
    ensure!(!rows.is_empty(), "the soak ran for less than a minute");
    let base_minute = if rows.len() >= 6 { 5 } else { 1 };
    let base_rss = rows[base_minute - 1].rss_mib;
    let max_rss = rows[base_minute - 1..]
        .iter()
        .map(|r| r.rss_mib)
        .fold(0.0, f64::max);
    let first_p99 = rows[0].p99;
    let worst_p99 = rows.iter().map(|r| r.p99).max().unwrap_or_default();
    let errors: u64 = rows.iter().map(|r| r.errors).sum();
    let behind: u64 = rows.iter().map(|r| r.behind).sum();
    let requests: f64 = rows.iter().map(|r| r.ops_per_sec * 60.0).sum();
    let rss_ok = max_rss <= base_rss * 1.10;
    let p99_ok = worst_p99 <= first_p99 * 2;
    let behind_ok = (behind as f64) <= requests * 0.01;
    let mark = |ok: bool| if ok { "ok" } else { "FAIL" };
    writeln!(
        report,
        "\nRSS after minute {base_minute}: {base_rss:.1} MiB, highest after it {max_rss:.1} MiB \
         ({:+.1} %, limit +10 %): {}",
        (max_rss / base_rss - 1.0) * 100.0,
        mark(rss_ok)
    )?;
    writeln!(
        report,
        "p99: minute 1 {:.2} ms, worst {:.2} ms (limit 2×): {}",
        ms(first_p99),
        ms(worst_p99),
        mark(p99_ok)
    )?;
    writeln!(
        report,
        "unexpected answers: {errors}: {}",
        mark(errors == 0)
    )?;
    writeln!(
        report,
        "behind schedule: {behind} of {requests:.0}: {}",
        mark(behind_ok)
    )?;
    writeln!(
        report,
        "re-wrap jobs: {} started, {} not completed: {}",
        jobs.len(),
        unfinished.len(),
        mark(unfinished.is_empty())
    )?;
    ensure!(rss_ok, "RSS grew more than 10 %");
    ensure!(p99_ok, "p99 drifted beyond 2× minute 1's");
    ensure!(errors == 0, "{errors} requests got an unexpected answer");
    ensure!(
        behind_ok,
        "more than 1 % of the requests could not be sent on schedule"
    );
    ensure!(
        unfinished.is_empty(),
        "re-wrap jobs did not complete: {unfinished:?}"
    );
    Ok(())
}
