//! The one accept loop, for plain HTTP and HTTPS alike (TLS only adds the handshake step).
//!
//! Every connection is bounded:
//! - **caps**: a global cap and a per-source cap (an IPv4 address, or an IPv6 /64), so that one
//!   source cannot take every slot. The global cap in force is the configured one lowered to fit
//!   the open-file limit ([`effective_caps`]); one source never holds more than half of it. A
//!   connection over a cap is accepted and closed at once, so the kernel backlog keeps
//!   draining, and counted (logged at debug);
//! - **header-read timeout**: a connection must finish its TLS handshake, and then deliver a
//!   complete request head, within `header_read_timeout` (HTTP/1.1: hyper's timer, which also
//!   runs while a kept-alive connection waits for its next request; before the first request,
//!   for both HTTP versions: a watchdog, which also covers the HTTP/2 preface);
//! - **idle timeout**: a connection with no request in flight for `idle_timeout` is closed
//!   (gracefully: HTTP/2 gets a GOAWAY).
//!
//! The peer address is canonicalised where it enters (`::ffff:a.b.c.d` on a dual-stack
//! listener becomes `a.b.c.d`), so `ConnectInfo<SocketAddr>` in the request extensions, which
//! the audit layer, the throttle and policy's `source_cidr` read, is the client's real address
//! family. On shutdown the listener is closed, every connection is asked to finish (in-flight
//! requests complete; idle connections close), and serving returns once all have ended or
//! `drain_timeout` has passed for each.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use super::tls::{client_identity, CertificateRefused, ClientIdentity};
use crate::config::IdentitySan;

/// File descriptors kept back from the connection cap for everything else the process opens:
/// the database and its WAL files (two connections), the PKCS#11 module's token files, the
/// TPM connection, log files, the runtime's own descriptors and the listener.
pub const FD_RESERVE: u64 = 32;

/// How long to wait before accepting again when the process is out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How a connection is served.
#[derive(Clone)]
pub struct ServeSettings {
    /// Time for the TLS handshake, then again for a complete request head.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight this long is closed.
    pub idle_timeout: Duration,
    /// Global cap in force (see [`effective_caps`]).
    pub max_connections: usize,
    /// Per-source cap in force.
    pub max_connections_per_source: usize,
    /// How long a connection may take to finish once asked to (shutdown or idle close).
    pub drain_timeout: Duration,
    /// HTTPS, when configured.
    pub tls: Option<TlsSettings>,
}

/// HTTPS: the rustls configuration and how client certificates name principals.
#[derive(Clone)]
pub struct TlsSettings {
    /// The rustls server configuration.
    pub config: Arc<rustls::ServerConfig>,
    /// Which SAN names the principal.
    pub identity: IdentitySan,
}

/// The caps in force: the configured global cap lowered to the soft open-file limit less
/// [`FD_RESERVE`] (at least 1), and the configured per-source cap lowered to half of that (at
/// least 1), so that one source never holds every slot.
pub fn effective_caps(
    max_connections: usize,
    max_per_source: usize,
    nofile_soft: Option<u64>,
) -> (usize, usize) {
    let by_files = nofile_soft.map_or(usize::MAX, |n| {
        usize::try_from(n.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX)
    });
    let total = max_connections.min(by_files).max(1);
    let per_source = max_per_source.min(total / 2).max(1);
    (total, per_source)
}

/// The peer address as policy should see it: an IPv4-mapped IPv6 address becomes IPv4.
pub fn canonical_peer(peer: SocketAddr) -> SocketAddr {
    SocketAddr::new(peer.ip().to_canonical(), peer.port())
}

/// What the per-source cap counts: an IPv4 address, or the /64 of an IPv6 address (one host
/// commonly holds a whole /64).
fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
    }
}

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OverCap {
    Global,
    Source,
}

impl OverCap {
    fn as_str(self) -> &'static str {
        match self {
            Self::Global => "global",
            Self::Source => "per_source",
        }
    }
}

/// Open connections, in total and per source.
#[derive(Debug)]
struct Slots {
    max_total: usize,
    max_per_source: usize,
    state: Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// One open connection's place under the caps; freed on drop.
#[derive(Debug)]
struct Slot {
    slots: Arc<Slots>,
    key: IpAddr,
}

impl Slots {
    fn new(max_total: usize, max_per_source: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_source,
            state: Mutex::default(),
        })
    }

    fn take(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, OverCap> {
        let key = source_key(ip);
        // The counters stay consistent even if a holder panicked: every update is one step.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.total >= self.max_total {
            return Err(OverCap::Global);
        }
        let mine = state.by_source.entry(key).or_insert(0);
        if *mine >= self.max_per_source {
            return Err(OverCap::Source);
        }
        *mine += 1;
        state.total += 1;
        Ok(Slot {
            slots: Arc::clone(self),
            key,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self
            .slots
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        state.total = state.total.saturating_sub(1);
        if let Some(n) = state.by_source.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.by_source.remove(&self.key);
            }
        }
    }
}

/// Requests on one connection, for the idle watchdog.
#[derive(Debug)]
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// Milliseconds after `opened` of the last request start or end.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
        InFlight(Arc::clone(self))
    }

    /// Resolves once the connection has had no request in flight for its limit: the
    /// header-read timeout before the first request, the idle timeout after.
    async fn idle(&self, first: Duration, idle: Duration) {
        loop {
            let limit = if self.requests.load(Ordering::Relaxed) == 0 {
                first
            } else {
                idle
            };
            let now = Instant::now();
            let deadline =
                self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + limit;
            if self.in_flight.load(Ordering::Relaxed) == 0 && now >= deadline {
                return;
            }
            // With a request in flight, look again one limit later (its end moves `last_ms`).
            tokio::time::sleep_until(deadline.max(now + limit.min(Duration::from_secs(1)))).await;
        }
    }
}

/// A request in flight; its end counts as activity.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// What a connection's client certificate established, copied into each request.
#[derive(Debug, Clone)]
enum PeerCertificate {
    None,
    Identity(ClientIdentity),
    Refused(CertificateRefused),
}

/// Accepts connections until `shutdown` resolves, then drains them.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: ServeSettings,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Slots::new(
        settings.max_connections,
        settings.max_connections_per_source,
    );
    tracing::info!(
        max_connections = settings.max_connections,
        max_connections_per_source = settings.max_connections_per_source,
        header_read_timeout_ms =
            u64::try_from(settings.header_read_timeout.as_millis()).unwrap_or(u64::MAX),
        idle_timeout_ms = u64::try_from(settings.idle_timeout.as_millis()).unwrap_or(u64::MAX),
        "connection limits in force"
    );
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let acceptor = settings
        .tls
        .as_ref()
        .map(|t| (TlsAcceptor::from(Arc::clone(&t.config)), t.identity));
    let settings = Arc::new(settings);
    // Every connection task holds a receiver: `closed()` on the sender resolves when all ended.
    let (stop, stopping) = watch::channel(false);
    let mut refused: u64 = 0;
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE/ENFILE: the cap should prevent it; back off rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let peer = canonical_peer(peer);
        let slot = match slots.take(peer.ip()) {
            Ok(slot) => slot,
            Err(cap) => {
                refused += 1;
                tracing::debug!(peer = %peer, cap = cap.as_str(), refused_total = refused, "connection over the cap closed");
                drop(tcp);
                continue;
            }
        };
        let task = Connection {
            peer,
            router: router.clone(),
            builder: builder.clone(),
            settings: Arc::clone(&settings),
            stopping: stopping.clone(),
            _slot: slot,
        };
        match &acceptor {
            None => {
                tokio::spawn(task.run(tcp, PeerCertificate::None));
            }
            Some((acceptor, identity)) => {
                let (acceptor, identity) = (acceptor.clone(), *identity);
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(
                        task.settings.header_read_timeout,
                        acceptor.accept(tcp),
                    );
                    let stream = match handshake.await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %task.peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(peer = %task.peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let certificate = match stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                    {
                        None => PeerCertificate::None,
                        Some(cert) => match client_identity(cert, identity) {
                            Ok(id) => PeerCertificate::Identity(id),
                            Err(why) => {
                                tracing::debug!(peer = %task.peer, reason = %why, "client certificate refused");
                                PeerCertificate::Refused(why)
                            }
                        },
                    };
                    task.run(stream, certificate).await;
                });
            }
        }
    }
    // Stop accepting (new connections are refused by the kernel), then drain.
    drop(listener);
    let _ = stop.send(true);
    drop(stopping);
    stop.closed().await;
}

/// One accepted connection and what serving it needs.
struct Connection {
    peer: SocketAddr,
    router: Router,
    builder: Builder<TokioExecutor>,
    settings: Arc<ServeSettings>,
    stopping: watch::Receiver<bool>,
    /// Held for the life of the connection.
    _slot: Slot,
}

impl Connection {
    async fn run<I>(mut self, io: I, certificate: PeerCertificate)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let peer = self.peer;
        let activity = Activity::new();
        let service = {
            let (router, activity) = (self.router.clone(), Arc::clone(&activity));
            hyper::service::service_fn(move |req: axum::http::Request<hyper::body::Incoming>| {
                // Vault clients' `LIST` verb, before routing.
                let mut req = crate::vault::rewrite_list(req);
                let in_flight = activity.begin();
                let ext = req.extensions_mut();
                ext.insert(ConnectInfo::<SocketAddr>(peer));
                match &certificate {
                    PeerCertificate::None => {}
                    PeerCertificate::Identity(id) => {
                        ext.insert(id.clone());
                    }
                    PeerCertificate::Refused(why) => {
                        ext.insert(why.clone());
                    }
                }
                let router = router.clone();
                async move {
                    let res = router.oneshot(req).await;
                    drop(in_flight);
                    Ok::<_, Infallible>(res.unwrap_or_else(|never| match never {}))
                }
            })
        };
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(conn);
        let settings = Arc::clone(&self.settings);
        let stopping = &mut self.stopping;
        let why = tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stopping.wait_for(|s| *s) => "shutdown",
            () = activity.idle(settings.header_read_timeout, settings.idle_timeout) => "idle",
        };
        tracing::debug!(peer = %peer, reason = why, "closing connection");
        conn.as_mut().graceful_shutdown();
        match tokio::time::timeout(settings.drain_timeout, conn).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
            }
            Err(_) => tracing::debug!(peer = %peer, "connection did not finish in time; dropped"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_mapped_peers_become_ipv4() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:4000".parse().unwrap();
        assert_eq!(canonical_peer(mapped).to_string(), "127.0.0.1:4000");
        let v6: SocketAddr = "[::1]:4000".parse().unwrap();
        assert_eq!(canonical_peer(v6), v6);
    }

    #[test]
    fn caps_fit_the_open_file_limit_and_leave_room_for_other_sources() {
        assert_eq!(effective_caps(1024, 64, Some(1_048_576)), (1024, 64));
        assert_eq!(effective_caps(1024, 64, None), (1024, 64));
        assert_eq!(effective_caps(1024, 64, Some(80)), (48, 24));
        assert_eq!(effective_caps(1024, 64, Some(10)), (1, 1));
        assert_eq!(effective_caps(10, 10, None), (10, 5));
    }

    #[test]
    fn slots_enforce_both_caps_and_free_on_drop() {
        let slots = Slots::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = slots.take(a).unwrap();
        let _a2 = slots.take(a).unwrap();
        assert_eq!(slots.take(a).unwrap_err(), OverCap::Source);
        let _b1 = slots.take(b).unwrap();
        assert_eq!(slots.take(b).unwrap_err(), OverCap::Global);
        drop(a1);
        let _b2 = slots.take(b).unwrap();
        assert_eq!(slots.take(a).unwrap_err(), OverCap::Global);
    }

    #[test]
    fn an_ipv6_slash_64_is_one_source_and_mapped_ipv4_is_ipv4() {
        let slots = Slots::new(10, 1);
        let _x = slots.take("2001:db8::1".parse().unwrap()).unwrap();
        assert_eq!(
            slots.take("2001:db8::2".parse().unwrap()).unwrap_err(),
            OverCap::Source
        );
        let _y = slots.take("2001:db8:0:1::1".parse().unwrap()).unwrap();
        let _z = slots.take("127.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(
            slots.take("::ffff:127.0.0.1".parse().unwrap()).unwrap_err(),
            OverCap::Source
        );
    }
}
