//! The HTTP side: [`ClientBuilder`] (address, credential, TLS, timeouts, retries, cache) and
//! [`Client`]'s transport, which every typed call goes through.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use zeroize::Zeroizing;

use custodian_types::api_types::error::ErrorBody;
use custodian_types::secret::BearerToken;

use crate::cache::DataKeyCache;
use crate::error::Error;

/// The response header carrying the server's request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// How long an unused connection stays in the pool: half the server's default idle timeout
/// (`server.idle_timeout_ms`, 60 s).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// When and how long to retry.
///
/// A request is retried when the server answers `429` (it did nothing), when it answers `503`
/// and the request is [`Retry::Safe`] (repeating it cannot do twice what was meant once), and
/// when the connection could not be made. A `Retry-After` from the server is waited out exactly
/// when it is at most [`max_retry_after`](Self::max_retry_after); a longer one ends the call at
/// once with the error, which carries the server's value. Otherwise the wait grows
/// exponentially from [`initial_backoff`](Self::initial_backoff), capped at
/// [`max_backoff`](Self::max_backoff), with full jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (default 4; 1 turns retries off).
    pub max_attempts: u32,
    /// The first back-off (default 100 ms).
    pub initial_backoff: Duration,
    /// The longest back-off (default 5 s).
    pub max_backoff: Duration,
    /// The longest `Retry-After` the client waits for (default 30 s).
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// No retries: every call is tried once.
    pub const fn none() -> Self {
        Self {
            max_attempts: 1,
            initial_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
            max_retry_after: Duration::ZERO,
        }
    }

    /// The wait before attempt `attempt + 1` (after `attempt` failures, `attempt ≥ 1`): the
    /// server's `Retry-After` when it gave one, else a jittered exponential back-off. `None`
    /// when the server asks for more than [`max_retry_after`](Self::max_retry_after).
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Option<Duration> {
        if let Some(wait) = retry_after {
            return (wait <= self.max_retry_after).then_some(wait);
        }
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        let cap = self
            .initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff);
        Some(cap.mul_f64(jitter()))
    }
}

/// A uniform fraction in `[0, 1)` from the OS RNG (full jitter spreads clients that failed
/// together); 1 when the RNG fails, which only makes the wait the cap.
fn jitter() -> f64 {
    let mut b = [0u8; 4];
    match getrandom::getrandom(&mut b) {
        Ok(()) => f64::from(u32::from_be_bytes(b)) / (f64::from(u32::MAX) + 1.0),
        Err(_) => 1.0,
    }
}

/// Whether a request may be sent again after a `503` or a lost connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Repeating it cannot do twice what was meant once: reads, and the cryptographic
    /// operations (a second data key or blob is as good as the first).
    Safe,
    /// It may have changed something before failing (create, rotate, ...): retried only on
    /// `429` and on connections never made.
    Unsafe,
}

impl Retry {
    /// The usual answer for `method`: `Safe` for `GET` and `HEAD` only. Custodian's `PUT` and
    /// `DELETE` are not idempotent where it matters: `PUT /v1/secrets/{path}` writes a new
    /// version each time, `DELETE` of a secret soft-deletes the newest live version.
    pub fn for_method(method: &Method) -> Self {
        if matches!(*method, Method::GET | Method::HEAD) {
            Self::Safe
        } else {
            Self::Unsafe
        }
    }
}

/// How the client proves who it is.
enum Credential {
    /// `Authorization: Bearer …`.
    Bearer(BearerToken),
    /// None in the headers: a TLS client certificate (mTLS), or a public route only.
    None,
}

/// Builds a [`Client`]. Defaults: no credential, no extra CA (plain `http://`, or `https://`
/// with a CA given here), connect timeout 10 s, request timeout 60 s, [`RetryPolicy::default`],
/// no data-key cache.
pub struct ClientBuilder {
    base: String,
    credential: Credential,
    ca: Vec<reqwest::Certificate>,
    identity: Option<reqwest::Identity>,
    connect_timeout: Duration,
    timeout: Duration,
    retry: RetryPolicy,
    cache: Option<Arc<DataKeyCache>>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base", &self.base)
            .field(
                "bearer_token",
                &matches!(self.credential, Credential::Bearer(_)),
            )
            .field("client_certificate", &self.identity.is_some())
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// Sends `token` as `Authorization: Bearer` on every request.
    pub fn bearer_token(mut self, token: BearerToken) -> Self {
        self.credential = Credential::Bearer(token);
        self
    }

    /// Trusts the CA certificate(s) in `pem` for the server's certificate.
    ///
    /// # Errors
    /// [`Error::Tls`] when `pem` does not parse, [`Error::NoCaCertificate`] when it holds no
    /// certificate.
    pub fn ca_certificate_pem(mut self, pem: &[u8]) -> Result<Self, Error> {
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(Error::Tls)?;
        if certs.is_empty() {
            return Err(Error::NoCaCertificate);
        }
        self.ca.extend(certs);
        Ok(self)
    }

    /// Presents the client certificate and private key in `pem` (PEM, certificate chain and
    /// PKCS#8 key in one buffer) during the TLS handshake: mTLS, for a server that maps
    /// certificates to principals.
    ///
    /// # Errors
    /// [`Error::Tls`] when `pem` does not hold a certificate and a key.
    ///
    /// # Security
    /// The key is copied into the TLS stack; the caller's buffer should be a zeroising one.
    pub fn client_identity_pem(mut self, pem: &[u8]) -> Result<Self, Error> {
        self.identity = Some(reqwest::Identity::from_pem(pem).map_err(Error::Tls)?);
        Ok(self)
    }

    /// The longest a connection may take to establish (default 10 s).
    pub fn connect_timeout(mut self, limit: Duration) -> Self {
        self.connect_timeout = limit;
        self
    }

    /// The longest one attempt may take, from sending to the end of the answer (default 60 s).
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = limit;
        self
    }

    /// How failed requests are retried.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Reuses data keys through `cache` (off by default; see [`DataKeyCache`]).
    pub fn data_key_cache(mut self, cache: Arc<DataKeyCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The client.
    ///
    /// # Errors
    /// [`Error::BadAddress`] for an address that is not `http(s)://…`; [`Error::Tls`] when the
    /// TLS stack refuses the settings.
    pub fn build(self) -> Result<Client, Error> {
        if !(self.base.starts_with("http://") || self.base.starts_with("https://")) {
            return Err(Error::BadAddress(self.base));
        }
        let mut http = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .timeout(self.timeout)
            // Below the server's idle timeout (60 s by default): a pooled connection is dropped
            // here before the server closes it, so no request goes out on a closing connection.
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .use_rustls_tls();
        for ca in self.ca {
            http = http.add_root_certificate(ca);
        }
        if let Some(identity) = self.identity {
            http = http.identity(identity);
        }
        Ok(Client {
            http: http.build().map_err(Error::Tls)?,
            base: self.base,
            credential: Arc::new(self.credential),
            retry: self.retry,
            cache: self.cache,
        })
    }
}

/// A Custodian API client. Cheap to clone (the connection pool and the cache are shared).
///
/// Secret values on this side of the HTTP stack (plaintext data keys, payloads, the bearer
/// token) are held in zeroising buffers; the buffers inside `reqwest` and `hyper` are theirs
/// and are freed without being zeroised.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    credential: Arc<Credential>,
    retry: RetryPolicy,
    cache: Option<Arc<DataKeyCache>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field(
                "bearer_token",
                &matches!(*self.credential, Credential::Bearer(_)),
            )
            .field("retry", &self.retry)
            .field("data_key_cache", &self.cache.is_some())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A builder for the server at `base` (e.g. `https://kms.example:8200`).
    pub fn builder(base: &str) -> ClientBuilder {
        ClientBuilder {
            base: base.trim_end_matches('/').to_owned(),
            credential: Credential::None,
            ca: Vec::new(),
            identity: None,
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
            cache: None,
        }
    }

    /// The bearer token this client sends, if any.
    pub fn token(&self) -> Option<&BearerToken> {
        match &*self.credential {
            Credential::Bearer(t) => Some(t),
            Credential::None => None,
        }
    }

    /// The data-key cache, when one was configured.
    pub fn data_key_cache(&self) -> Option<&Arc<DataKeyCache>> {
        self.cache.as_ref()
    }

    /// Sends a request without a body and reads a JSON answer.
    ///
    /// # Errors
    /// [`Error`].
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        self.send(Method::GET, path, None, Retry::Safe).await
    }

    /// Sends `body` (one of the `api_types` request types) as JSON and reads a JSON answer.
    ///
    /// # Errors
    /// [`Error`].
    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
        retry: Retry,
    ) -> Result<T, Error> {
        // Zeroising: request bodies may carry plaintext (base64) or a secret value.
        let body = Zeroizing::new(serde_json::to_vec(body).map_err(Error::Encode)?);
        self.send(method, path, Some(body), retry).await
    }

    /// Sends `body` (JSON text, or none) and reads a JSON answer.
    ///
    /// # Errors
    /// [`Error`].
    pub async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Zeroizing<Vec<u8>>>,
        retry: Retry,
    ) -> Result<T, Error> {
        let res = self.execute(method, path, body, retry).await?;
        let bytes = Zeroizing::new(res.bytes().await?.to_vec());
        serde_json::from_slice(&bytes)
            .map_err(|_| Error::UnexpectedAnswer("the answer is not the JSON expected"))
    }

    /// Sends `body` (JSON text, or none), retrying as [`RetryPolicy`] says; a success status
    /// hands back the response unread, anything else becomes [`Error::Api`].
    ///
    /// # Errors
    /// [`Error::Api`], [`Error::Http`].
    pub async fn execute(
        &self,
        method: Method,
        path: &str,
        body: Option<Zeroizing<Vec<u8>>>,
        retry: Retry,
    ) -> Result<reqwest::Response, Error> {
        let url = format!("{}{path}", self.base);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let outcome = self
                .attempt(method.clone(), &url, body.as_ref().map(|b| b.as_slice()))
                .await;
            let (again, retry_after) = match &outcome {
                Ok(_) => return outcome,
                Err(Error::Api {
                    status,
                    retry_after,
                    ..
                }) => (
                    *status == StatusCode::TOO_MANY_REQUESTS
                        || (*status == StatusCode::SERVICE_UNAVAILABLE && retry == Retry::Safe),
                    *retry_after,
                ),
                // A connection never made carried nothing; anything later may have.
                Err(Error::Http(e)) => (e.is_connect() || retry == Retry::Safe, None),
                Err(_) => (false, None),
            };
            if !again || attempt >= self.retry.max_attempts {
                return outcome;
            }
            match self.retry.delay(attempt, retry_after) {
                Some(wait) => tokio::time::sleep(wait).await,
                None => return outcome,
            }
        }
    }

    /// One attempt.
    async fn attempt(
        &self,
        method: Method,
        url: &str,
        body: Option<&[u8]>,
    ) -> Result<reqwest::Response, Error> {
        let mut req = self.http.request(method, url);
        if let Credential::Bearer(token) = &*self.credential {
            req = req.bearer_auth(token.expose_secret());
        }
        if let Some(b) = body {
            // The HTTP stack takes its own copy (see the type's docs).
            req = req
                .header(CONTENT_TYPE, "application/json")
                .body(b.to_vec());
        }
        let res = req.send().await?;
        let status = res.status();
        if status.is_success() {
            return Ok(res);
        }
        let header_id = header_text(res.headers(), REQUEST_ID_HEADER);
        let retry_after = retry_after(res.headers());
        // Bounded: an error body is small; a misbehaving peer's is cut at 64 KiB.
        let text = read_capped(res, 64 * 1024).await;
        Err(match serde_json::from_slice::<ErrorBody>(&text) {
            Ok(b) => Error::Api {
                status,
                code: b.error.code,
                message: b.error.message,
                request_id: if b.error.request_id.is_empty() {
                    header_id
                } else {
                    b.error.request_id
                },
                current_version: b.error.current_version,
                retry_after,
            },
            Err(_) => Error::Api {
                status,
                code: "unexpected_response".to_owned(),
                message: String::from_utf8_lossy(&text).chars().take(200).collect(),
                request_id: header_id,
                current_version: None,
                retry_after,
            },
        })
    }
}

/// Up to `cap` bytes of the body (an error body: never secret).
async fn read_capped(mut res: reqwest::Response, cap: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = res.chunk().await {
        let room = cap.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= cap {
            break;
        }
    }
    out
}

/// A header's value as text; empty when absent or not visible ASCII.
fn header_text(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// `Retry-After` in seconds (the form Custodian sends; an HTTP date is not followed).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// `value` percent-encoded as one path segment. An empty, `.` or `..` value is refused before
/// any request: URL parsing resolves dot segments (percent-encoded ones too), so `.` would
/// address the parent route. No key, alias or job has such a name.
///
/// # Errors
/// [`Error::InvalidName`].
pub fn segment(what: &'static str, value: &str) -> Result<String, Error> {
    if matches!(value, "" | "." | "..") {
        return Err(Error::InvalidName {
            what,
            value: value.to_owned(),
        });
    }
    Ok(urlencode(value))
}

/// `/v1/keys/{key}`, the key (an id, a name or `alias/<name>`) percent-encoded as one segment:
/// `alias/x` becomes `alias%2Fx`.
///
/// # Errors
/// [`Error::InvalidName`].
pub fn key_url(key: &str) -> Result<String, Error> {
    Ok(format!("/v1/keys/{}", segment("key", key)?))
}

/// Percent-encodes a path or query component (key names are `[A-Za-z0-9._-]`, ids are UUIDs;
/// anything else is encoded so the server rejects it cleanly).
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted HTTP peer on loopback (it stands in for no Custodian behaviour: these tests
    /// are about what the client does with answers): answers each connection's request with
    /// the next of `answers` (`None`: read the request and never answer), one request per
    /// connection. Returns the address and the number of requests seen.
    fn peer(
        answers: Vec<Option<String>>,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = seen.clone();
        std::thread::spawn(move || {
            for answer in answers {
                let Ok((mut conn, _)) = listener.accept() else {
                    return;
                };
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                match answer {
                    Some(text) => {
                        let _ = conn.write_all(text.as_bytes());
                    }
                    None => std::thread::sleep(Duration::from_secs(3)),
                }
            }
        });
        (addr, seen)
    }

    fn answer(status: &str, extra: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\nx-request-id: hdr-id\r\n{extra}\r\n{body}",
            body.len()
        )
    }

    const BUSY: &str = r#"{"error":{"code":"device_busy","message":"busy","request_id":"r-503"}}"#;

    #[tokio::test]
    async fn a_503_with_retry_after_is_waited_out_then_the_answer_read() {
        let (addr, seen) = peer(vec![
            Some(answer(
                "503 Service Unavailable",
                "retry-after: 1\r\n",
                BUSY,
            )),
            Some(answer("200 OK", "", r#"{"ok":true}"#)),
        ]);
        let c = Client::builder(&addr).build().unwrap();
        let started = std::time::Instant::now();
        let v: serde_json::Value = c.get("/v1/x").await.unwrap();
        assert_eq!(v["ok"], true);
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_unsafe_request_is_not_repeated_after_a_503_but_is_after_a_429() {
        let (addr, seen) = peer(vec![Some(answer("503 Service Unavailable", "", BUSY))]);
        let c = Client::builder(&addr).build().unwrap();
        let e = c
            .call::<_, serde_json::Value>(Method::POST, "/v1/keys", &"x", Retry::Unsafe)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some("device_busy"));
        assert_eq!(e.request_id(), Some("r-503"));
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);
        let (addr, seen) = peer(vec![
            Some(answer("429 Too Many Requests", "retry-after: 0\r\n", BUSY)),
            Some(answer("201 Created", "", "{}")),
        ]);
        let c = Client::builder(&addr).build().unwrap();
        c.call::<_, serde_json::Value>(Method::POST, "/v1/keys", &"x", Retry::Unsafe)
            .await
            .unwrap();
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn attempts_are_bounded_and_a_silent_server_times_out() {
        let (addr, seen) = peer(vec![
            Some(answer("503 Service Unavailable", "", BUSY)),
            Some(answer("503 Service Unavailable", "", BUSY)),
            Some(answer("503 Service Unavailable", "", BUSY)),
        ]);
        let policy = RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(10),
            ..RetryPolicy::default()
        };
        let c = Client::builder(&addr).retry(policy).build().unwrap();
        let e = c.get::<serde_json::Value>("/v1/x").await.unwrap_err();
        assert_eq!(e.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 3);
        // Not Custodian's error body: the header's request id, and the text cut short.
        let (addr, _) = peer(vec![Some(answer("502 Bad Gateway", "", "upstream gone"))]);
        let c = Client::builder(&addr).build().unwrap();
        let e = c.get::<serde_json::Value>("/v1/x").await.unwrap_err();
        assert_eq!(e.code(), Some("unexpected_response"));
        assert_eq!(e.request_id(), Some("hdr-id"));
        // A peer that never answers: the request timeout ends the attempt.
        let (addr, _) = peer(vec![None]);
        let c = Client::builder(&addr)
            .timeout(Duration::from_millis(300))
            .retry(RetryPolicy::none())
            .build()
            .unwrap();
        let started = std::time::Instant::now();
        match c.get::<serde_json::Value>("/v1/x").await {
            Err(Error::Http(e)) => assert!(e.is_timeout(), "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn back_off_grows_to_its_cap_and_retry_after_is_followed_up_to_its_cap() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(5),
        };
        for attempt in 1..=8 {
            let cap = Duration::from_millis(100 * (1 << (attempt - 1))).min(p.max_backoff);
            let d = p.delay(attempt, None).unwrap();
            assert!(d <= cap, "attempt {attempt}: {d:?} > {cap:?}");
        }
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(3))),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(5))),
            Some(Duration::from_secs(5))
        );
        assert_eq!(p.delay(1, Some(Duration::from_secs(6))), None);
        // Huge attempt counts neither overflow nor exceed the cap.
        assert!(p.delay(u32::MAX, None).unwrap() <= p.max_backoff);
    }

    #[test]
    fn only_reads_are_safe_by_method() {
        assert_eq!(Retry::for_method(&Method::GET), Retry::Safe);
        assert_eq!(Retry::for_method(&Method::HEAD), Retry::Safe);
        // A secret PUT writes a new version, a secret DELETE removes the newest: not repeated.
        assert_eq!(Retry::for_method(&Method::PUT), Retry::Unsafe);
        assert_eq!(Retry::for_method(&Method::DELETE), Retry::Unsafe);
        assert_eq!(Retry::for_method(&Method::POST), Retry::Unsafe);
        assert_eq!(Retry::for_method(&Method::PATCH), Retry::Unsafe);
    }

    #[test]
    fn retry_after_is_read_in_seconds_only() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn the_token_never_shows_in_debug() {
        let c = Client::builder("http://127.0.0.1:1")
            .bearer_token(BearerToken::new("cst_id_verysecretpart".into()))
            .build()
            .unwrap();
        let text = format!("{c:?}");
        assert!(!text.contains("verysecretpart"), "{text}");
        assert!(text.contains("bearer_token: true"), "{text}");
        assert!(matches!(
            Client::builder("127.0.0.1:8200").build(),
            Err(Error::BadAddress(_))
        ));
    }

    #[test]
    fn path_components_are_encoded_and_dot_segments_refused() {
        assert_eq!(urlencode("billing-1.x_y"), "billing-1.x_y");
        assert_eq!(urlencode("a/b c"), "a%2Fb%20c");
        assert_eq!(
            key_url("alias/current").unwrap(),
            "/v1/keys/alias%2Fcurrent"
        );
        for bad in ["", ".", ".."] {
            assert!(matches!(
                key_url(bad),
                Err(Error::InvalidName { what: "key", .. })
            ));
        }
    }
}
