//! Throttles on unauthenticated traffic (issue 12), black-box: unauthenticated requests beyond
//! a per-source budget are answered 429 and aggregated into one record per source instead of
//! one record each (item 7); the failure throttle never refuses a valid token and also counts
//! per token id (item 15).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

use crate::audit::{export_to, lines_of, verify_lines};
use crate::common::server::Auth;
use crate::common::{Deployment, Server};

/// A client whose requests come from `ip` (any 127/8 address reaches the loopback listener).
fn client_from(ip: &str) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>()?)
        .build()?)
}

/// Sends GET `path` from `client` with `authorization` (if any); returns the status, the
/// error code and the `Retry-After` header.
async fn get_from(
    s: &Server,
    client: &reqwest::Client,
    path: &str,
    authorization: Option<&str>,
) -> anyhow::Result<(u16, String, Option<String>)> {
    let mut req = client.get(format!("{}{path}", s.base));
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let res = req.send().await?;
    let status = res.status().as_u16();
    let retry = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value = res.json().await.unwrap_or(Value::Null);
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Ok((status, code, retry))
}

/// The sequence of the last record.
async fn head(s: &Server) -> u64 {
    s.get_public("/v1/health/ready").await.body["audit"]["head"]
        .as_u64()
        .unwrap()
}

/// Every record after `after` without a principal (unauthenticated, unknown routes, and the
/// aggregates).
async fn anonymous_after(s: &Server, after: u64) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = after;
    loop {
        let r = s
            .get(&format!("/v1/audit/events?after={after}&limit=1000"))
            .await;
        out.extend(
            r.ok()["records"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["principal"].is_null())
                .cloned(),
        );
        match r.body["next_after"].as_u64() {
            Some(n) => after = n,
            None => return out,
        }
    }
}

/// Every record after `after`.
pub(crate) async fn all_after(s: &Server, after: u64) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = after;
    loop {
        let r = s
            .get(&format!("/v1/audit/events?after={after}&limit=1000"))
            .await;
        out.extend(r.ok()["records"].as_array().unwrap().iter().cloned());
        match r.body["next_after"].as_u64() {
            Some(n) => after = n,
            None => return out,
        }
    }
}

/// Sum of `details.count` of the aggregate records of `source` among `records`.
fn aggregated(records: &[Value], source: &str) -> u64 {
    records
        .iter()
        .filter(|r| r["route"] == "(throttled)" && r["source"] == source)
        .map(|r| {
            r["details"]["count"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum()
}

/// Polls until the aggregate records of `source` after `after` count `expected` requests.
async fn wait_aggregated(s: &Server, after: u64, source: &str, expected: u64) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let records = anonymous_after(s, after).await;
        if aggregated(&records, source) >= expected || Instant::now() > deadline {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const BUDGET: u64 = 10;

fn anonymous_budget(d: &mut Deployment, per_minute: u64, flush: &str, max_sources: u64) {
    d.env.push((
        "CUSTODIAN__SERVER__ANONYMOUS_REQUESTS_PER_MINUTE".into(),
        per_minute.to_string(),
    ));
    d.env.push((
        "CUSTODIAN__SERVER__ANONYMOUS_FLUSH_INTERVAL".into(),
        flush.to_owned(),
    ));
    d.env.push((
        "CUSTODIAN__SERVER__ANONYMOUS_MAX_SOURCES".into(),
        max_sources.to_string(),
    ));
}

#[tokio::test]
async fn unauthenticated_requests_past_the_budget_are_aggregated_per_source() -> anyhow::Result<()>
{
    let mut d = Deployment::new()?;
    anonymous_budget(&mut d, BUDGET, "1s", 1000);
    let s = d.start().await?;
    let start = head(&s).await;
    let local = client_from("127.0.0.1")?;
    let (mut individual, mut throttled, mut valid) = (0u64, 0u64, 0u64);
    for i in 0..500u32 {
        // Missing token, a token that does not verify, and an unknown route, in turn.
        let (path, auth) = match i % 3 {
            0 => ("/v1/keys", None),
            1 => ("/v1/keys", Some("Bearer cst_0000000000000000_nope")),
            _ => ("/v1/no/such/route", None),
        };
        let (status, code, retry) = get_from(&s, &local, path, auth).await?;
        if status == 429 && code == "too_many_unauthenticated_requests" {
            let retry: u64 = retry.expect("Retry-After on a throttled request").parse()?;
            assert!((1..=60).contains(&retry), "Retry-After {retry}");
            throttled += 1;
        } else {
            assert!(
                [401, 404, 429].contains(&status),
                "request {i}: {status} {code}"
            );
            individual += 1;
        }
        // Negative twin: a valid token from the same address is never throttled.
        if i % 50 == 0 {
            s.get("/v1/keys").await.ok();
            valid += 1;
        }
    }
    assert_eq!(individual, BUDGET, "the budget is answered as usual");
    assert_eq!(throttled, 500 - BUDGET);
    assert_eq!(valid, 10);
    // Negative twin: another address has its own budget.
    let other = client_from("127.0.0.2")?;
    let (status, code, _) = get_from(&s, &other, "/v1/keys", None).await?;
    assert_eq!((status, code.as_str()), (401, "missing_token"));

    let records = wait_aggregated(&s, start, "127.0.0.1", throttled).await;
    let one_by_one: Vec<&Value> = records
        .iter()
        .filter(|r| r["route"] != "(throttled)" && r["source"] == "127.0.0.1")
        .collect();
    assert_eq!(
        one_by_one.len() as u64,
        BUDGET,
        "only the budget is recorded one by one"
    );
    assert_eq!(
        aggregated(&records, "127.0.0.1"),
        throttled,
        "every throttled request is counted, once"
    );
    let aggregates: Vec<&Value> = records
        .iter()
        .filter(|r| r["route"] == "(throttled)")
        .collect();
    // One record per source and flush: far fewer than the throttled requests.
    assert!(aggregates.len() < 20, "{}", aggregates.len());
    for a in &aggregates {
        assert_eq!(a["outcome"], "unauthenticated");
        assert_eq!(a["status"], 429);
        assert_eq!(a["error_code"], "too_many_unauthenticated_requests");
        assert!(a["principal"].is_null());
        assert_eq!(a["details"]["window_seconds"], "60");
        let (first, last) = (
            a["details"]["first_seen"].as_str().unwrap(),
            a["details"]["last_seen"].as_str().unwrap(),
        );
        assert!(first.ends_with('Z') && first <= last, "{first} {last}");
    }
    // The log grew by the budget, the other address's request and the aggregates; every other
    // new record is an authenticated one (the valid requests and the event reads above).
    let all = all_after(&s, start).await;
    let without_principal = all.iter().filter(|r| r["principal"].is_null()).count() as u64;
    assert_eq!(without_principal, BUDGET + 1 + aggregates.len() as u64);
    assert!(all.len() < 200, "the log grew by {}", all.len());

    // The aggregates are in the chain: an export verifies.
    let (export, pem) = export_to(&s, d.path(), "").await?;
    let lines = lines_of(&export);
    assert!(lines
        .iter()
        .any(|l| l.contains("\"route\":\"(throttled)\"")));
    let (ok, out) = verify_lines(d.path(), &lines, &pem);
    assert!(ok, "{out}");
    Ok(())
}

#[tokio::test]
async fn sources_past_the_cap_share_one_many_aggregate() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    anonymous_budget(&mut d, 2, "1s", 1);
    let s = d.start().await?;
    let start = head(&s).await;
    let tracked = client_from("127.0.0.2")?;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(get_from(&s, &tracked, "/v1/keys", None).await?.0);
    }
    assert_eq!(
        statuses,
        [401, 401, 429],
        "the first source has its own budget"
    );
    // The table holds one source: the others share one budget.
    let mut statuses = Vec::new();
    for ip in ["127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"] {
        statuses.push(get_from(&s, &client_from(ip)?, "/v1/keys", None).await?.0);
    }
    assert_eq!(statuses, [401, 401, 429, 429]);
    let records = wait_aggregated(&s, start, "(many)", 2).await;
    assert_eq!(aggregated(&records, "(many)"), 2);
    let records = wait_aggregated(&s, start, "127.0.0.2", 1).await;
    assert_eq!(aggregated(&records, "127.0.0.2"), 1);
    // Negative twin: no aggregate names the sources that were folded into `(many)`.
    for ip in ["127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"] {
        assert_eq!(aggregated(&records, ip), 0, "{ip}");
    }
    // A valid token from a folded source is unaffected.
    let admin = format!("Bearer {}", s.token);
    let (status, _, _) = get_from(&s, &client_from("127.0.0.6")?, "/v1/keys", Some(&admin)).await?;
    assert_eq!(status, 200);
    Ok(())
}

#[tokio::test]
async fn throttled_counts_are_written_at_shutdown() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    // Never flushed while running: only the shutdown can write the aggregate.
    anonymous_budget(&mut d, 3, "1h", 1000);
    let s = d.start().await?;
    let start = head(&s).await;
    let from = client_from("127.0.0.3")?;
    for i in 0..12 {
        let (status, ..) = get_from(&s, &from, "/v1/no/such/route", None).await?;
        assert_eq!(status, if i < 3 { 404 } else { 429 });
    }
    // Negative twin: nothing is aggregated before the flush.
    assert_eq!(
        aggregated(&anonymous_after(&s, start).await, "127.0.0.3"),
        0
    );
    let status = s.terminate()?;
    assert!(status.success(), "{status}");
    let s = d.start().await?;
    let records = anonymous_after(&s, start).await;
    assert_eq!(aggregated(&records, "127.0.0.3"), 9);
    Ok(())
}

#[tokio::test]
async fn failed_tokens_are_throttled_but_a_valid_token_from_the_same_address_is_not(
) -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    let wrong = "Bearer cst_0000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let mut codes = Vec::new();
    for _ in 0..30 {
        let r = s
            .raw(
                Method::GET,
                "/v1/keys",
                Auth::Header(wrong),
                None,
                Vec::new(),
            )
            .await;
        codes.push((r.status.as_u16(), r.body["error"]["code"].clone()));
    }
    assert!(codes[..20]
        .iter()
        .all(|(s, c)| *s == 401 && c == "invalid_token"));
    assert!(codes[20..]
        .iter()
        .all(|(s, c)| *s == 429 && c == "too_many_auth_failures"));
    // The same address with a valid token: verified first, so never refused.
    s.get("/v1/keys").await.ok();
    s.raw(
        Method::GET,
        "/v1/keys",
        Auth::Header(wrong),
        None,
        Vec::new(),
    )
    .await
    .assert_error(429, "too_many_auth_failures");
    s.raw(Method::GET, "/v1/keys", Auth::None, None, Vec::new())
        .await
        .assert_error(429, "too_many_auth_failures");
    s.get("/v1/keys").await.ok();
    Ok(())
}

#[tokio::test]
async fn failures_are_also_counted_per_token_id() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    // The admin token's public id with another secret, from five addresses, four times each:
    // no address reaches the limit, the token id does.
    let id = s.token.split('_').nth(1).unwrap().to_owned();
    let forged = format!("Bearer cst_{id}_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB");
    for ip in [
        "127.0.0.2",
        "127.0.0.3",
        "127.0.0.4",
        "127.0.0.5",
        "127.0.0.6",
    ] {
        let c = client_from(ip)?;
        for _ in 0..4 {
            let (status, code, _) = get_from(&s, &c, "/v1/keys", Some(&forged)).await?;
            assert_eq!((status, code.as_str()), (401, "invalid_token"));
        }
    }
    let fresh = client_from("127.0.0.7")?;
    let (status, code, retry) = get_from(&s, &fresh, "/v1/keys", Some(&forged)).await?;
    assert_eq!((status, code.as_str()), (429, "too_many_auth_failures"));
    assert!(retry.is_some());
    // Negative twins from the same fresh address: another token id is only 401, and the real
    // token with that id works.
    let other = "Bearer cst_1111111111111111_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";
    let (status, code, _) = get_from(&s, &fresh, "/v1/keys", Some(other)).await?;
    assert_eq!((status, code.as_str()), (401, "invalid_token"));
    let admin = format!("Bearer {}", s.token);
    let (status, _, _) = get_from(&s, &fresh, "/v1/keys", Some(&admin)).await?;
    assert_eq!(status, 200);
    Ok(())
}
