//! The connection layer, black-box (issue 12, items 5 and 6): under an 80-file limit, idle and
//! half-sent connections neither starve `/v1/health/live` nor stay open past the header-read
//! timeout, while a connection that keeps sending requests is served; on a dual-stack listener
//! IPv4 clients are seen as IPv4 by `source_cidr`.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::server::{Auth, Reply};
use crate::common::{Deployment, Server};

/// The port the server listens on.
fn port_of(s: &Server) -> anyhow::Result<u16> {
    let port = s.base.rsplit(':').next().context("base has a port")?;
    Ok(port.parse()?)
}

/// GET `/v1/health/live` from `local` (a loopback address) with a deadline.
async fn live_from(local: IpAddr, port: u16, within: Duration) -> anyhow::Result<u16> {
    let client = reqwest::Client::builder()
        .local_address(local)
        .timeout(within)
        .build()?;
    let res = client
        .get(format!("http://127.0.0.1:{port}/v1/health/live"))
        .send()
        .await?;
    Ok(res.status().as_u16())
}

/// Waits until the server closes `sock` (EOF or reset); returns how long that took.
fn closed_within(mut sock: TcpStream, limit: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    sock.set_read_timeout(Some(limit))?;
    let mut buf = [0u8; 1024];
    loop {
        match sock.read(&mut buf) {
            Ok(0) => return Ok(start.elapsed()),
            // A 408 or an error page before the close is fine; keep reading to the end.
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                anyhow::bail!("the server kept the connection open for {limit:?}")
            }
            Err(_) => return Ok(start.elapsed()),
        }
    }
}

#[tokio::test]
async fn idle_and_half_sent_connections_cannot_starve_the_server() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    // The [server] section opens the file: the keys go there, not after [backend].
    let text = std::fs::read_to_string(d.config())?.replace(
        "[server]\n",
        "[server]\nheader_read_timeout_ms = 600\nidle_timeout_ms = 1500\n",
    );
    std::fs::write(d.config(), text)?;
    d.launcher = vec!["prlimit".to_owned(), "--nofile=80:80".to_owned()];
    let s = d.start().await?;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", s.pid()))?;
    ensure!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.split_whitespace().nth(3) == Some("80")),
        "the server does not run under the 80-file limit:\n{limits}"
    );
    let port = port_of(&s)?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;

    // 70 connections from 127.0.0.1: 60 silent, 10 with a request head that never ends.
    let mut held = Vec::new();
    for i in 0..70 {
        let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        if i % 7 == 0 {
            sock.write_all(b"GET /v1/health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ")?;
        }
        held.push(sock);
    }
    // Another source is served at once: one address cannot take every slot.
    let other: IpAddr = "127.0.0.2".parse()?;
    let status = live_from(other, port, Duration::from_secs(2))
        .await
        .context("/v1/health/live from 127.0.0.2 while 127.0.0.1 holds 70 connections")?;
    ensure!(status == 200, "live answered {status}");

    // Every one of the 70 is closed by the server: over the cap at once, the rest once the
    // header-read timeout (0.6 s) has passed.
    let waits = tokio::task::spawn_blocking(move || {
        held.into_iter()
            .map(|sock| closed_within(sock, Duration::from_secs(5)))
            .collect::<anyhow::Result<Vec<_>>>()
    })
    .await??;
    let slowest = waits.iter().max().copied().unwrap_or_default();
    ensure!(
        slowest < Duration::from_secs(3),
        "slowest close {slowest:?}"
    );
    // Then 127.0.0.1 itself is served again.
    let status = live_from("127.0.0.1".parse()?, port, Duration::from_secs(2)).await?;
    ensure!(status == 200, "live answered {status}");

    // Negative twin: a connection that keeps sending requests within the timeouts is not cut,
    // and once it falls silent it is closed like the others.
    let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    for _ in 0..4 {
        sock.write_all(b"GET /v1/health/live HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let mut buf = [0u8; 4096];
        let n = sock.read(&mut buf)?;
        let head = String::from_utf8_lossy(&buf[..n]);
        ensure!(
            head.starts_with("HTTP/1.1 200"),
            "reply on a kept-alive connection: {head}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let waited =
        tokio::task::spawn_blocking(move || closed_within(sock, Duration::from_secs(5))).await??;
    ensure!(
        waited < Duration::from_secs(3),
        "idle close after {waited:?}"
    );
    let (_, stderr) = s.output();
    ensure!(
        stderr.contains("connection over the cap closed"),
        "over-cap closes are not logged"
    );
    Ok(())
}

/// Sends a request as the holder of `token` to `base`.
async fn call(s: &Server, token: &str, path: &str) -> Reply {
    let header = format!("Bearer {token}");
    s.raw(Method::GET, path, Auth::Header(&header), None, Vec::new())
        .await
}

async fn principal(s: &Server, name: &str, policies: &[&str]) -> anyhow::Result<String> {
    let r = s
        .post(
            "/v1/principals",
            json!({ "name": name, "policies": policies }),
        )
        .await;
    ensure!(r.status.as_u16() == 201, "{}", r.body);
    let t = s.post("/v1/tokens", json!({ "principal": name })).await;
    ensure!(t.status.as_u16() == 201, "{}", t.body);
    Ok(t.body["token"].as_str().context("token")?.to_owned())
}

async fn put_policy(s: &Server, name: &str, doc: Value) -> anyhow::Result<()> {
    let r = s
        .send_json(Method::PUT, &format!("/v1/policies/{name}"), doc)
        .await;
    ensure!(r.status.is_success(), "{}", r.body);
    Ok(())
}

#[tokio::test]
async fn ipv4_clients_of_a_dual_stack_listener_match_ipv4_networks() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let text = std::fs::read_to_string(d.config())?
        .replace("listen = \"127.0.0.1:0\"", "listen = \"[::]:0\"");
    std::fs::write(d.config(), text)?;
    let mut s = d.start().await?;
    let port = port_of(&s)?;
    let v4 = format!("http://127.0.0.1:{port}");
    let v6 = format!("http://[::1]:{port}");
    s.base = v4.clone();
    s.create_key("dual").await;
    put_policy(&s, "v4-loopback-only", json!({ "statements": [{ "effect": "allow", "actions": ["key:read"], "resources": ["*"], "conditions": { "source_cidr": ["127.0.0.0/8"] } }] })).await?;
    put_policy(&s, "read-but-not-from-v4-loopback", json!({ "statements": [
        { "effect": "allow", "actions": ["key:read"], "resources": ["*"] },
        { "effect": "deny", "actions": ["key:read"], "resources": ["*"], "conditions": { "source_cidr": ["127.0.0.0/8"] } }
    ] })).await?;
    let allowed = principal(&s, "v4-allowed", &["v4-loopback-only"]).await?;
    let denied = principal(&s, "v4-denied", &["read-but-not-from-v4-loopback"]).await?;

    // From 127.0.0.1 (which the listener sees as ::ffff:127.0.0.1): the IPv4 allow applies,
    // and so does the IPv4 deny.
    call(&s, &allowed, "/v1/keys/dual").await.ok();
    call(&s, &denied, "/v1/keys/dual")
        .await
        .assert_error(403, "forbidden");
    // From ::1, neither IPv4 network matches: the twins swap.
    s.base = v6;
    call(&s, &allowed, "/v1/keys/dual")
        .await
        .assert_error(403, "forbidden");
    call(&s, &denied, "/v1/keys/dual").await.ok();
    // The audit trail records the IPv4 source as IPv4.
    s.base = v4;
    let events = s.get("/v1/audit/events?limit=1000").await;
    let text = events.ok().to_string();
    ensure!(
        !text.contains("::ffff:"),
        "mapped address in the audit trail"
    );
    ensure!(
        text.contains("\"127.0.0.1\""),
        "no IPv4 source in the audit trail"
    );
    Ok(())
}
