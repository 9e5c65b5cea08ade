//! A small API client for the CLI subcommands.
//!
//! Secret values (plaintexts, data keys, secret versions) are held in zeroising buffers on this
//! side of the HTTP client. The buffers inside `reqwest` and `hyper` (the request body handed
//! over, the response body read back) are theirs and are freed without being zeroised.

use std::io::{Read, Write};
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::domain::secret::SecretPath;
use crate::secret::BearerToken;

/// Environment variable holding the bearer token.
pub const TOKEN_ENV: &str = "CUSTODIAN_TOKEN";

/// The most bytes `secrets put` reads: the largest `secrets.max_value_bytes` any server can be
/// configured with. The server enforces its own, usually smaller, limit (413 `value_too_large`).
pub const MAX_SECRET_VALUE_BYTES: usize = 1024 * 1024;

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No token in the environment or the named file.
    #[error("no token: set {TOKEN_ENV} or pass --token-file")]
    NoToken,
    /// The token file could not be read.
    #[error("cannot read token file {path}: {source}")]
    TokenFile {
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The server answered with an error.
    #[error(
        "{status}: {code}: {message}{} (request {request_id})",
        current_suffix(*.current_version)
    )]
    Api {
        /// HTTP status.
        status: StatusCode,
        /// Stable error code.
        code: String,
        /// Message.
        message: String,
        /// Request id for the operator.
        request_id: String,
        /// The secret's current version, sent with `cas_mismatch`.
        current_version: Option<u64>,
    },
    /// The server could not be reached or answered something unreadable.
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// Reading stdin or writing stdout failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A `--context` argument is not `key=value`.
    #[error("--context expects key=value, got {0:?}")]
    BadContext(String),
    /// The same `--context` key twice.
    #[error("--context key {0:?} given twice")]
    DuplicateContextKey(String),
    /// The server sent base64 that does not decode.
    #[error("the server sent invalid base64 in {0}")]
    BadBase64(&'static str),
    /// A secret path that no URL can address faithfully (the server checks every other rule).
    #[error("invalid_secret_path: {path:?}: {reason}")]
    InvalidSecretPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A value over [`MAX_SECRET_VALUE_BYTES`].
    #[error(
        "value_too_large: the value is over {MAX_SECRET_VALUE_BYTES} bytes, more than any server accepts"
    )]
    ValueTooLarge,
    /// The `--file` holding a secret value could not be opened.
    #[error("cannot open value file {path}: {source}")]
    ValueFile {
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A `--custom` argument is not `key=value`.
    #[error("--custom expects key=value, got {0:?}")]
    BadCustom(String),
    /// The same `--custom` key twice.
    #[error("--custom key {0:?} given twice")]
    DuplicateCustomKey(String),
}

/// ` (current_version=N)` after a `cas_mismatch` message: the structured field, for scripts
/// that retry with it.
fn current_suffix(current: Option<u64>) -> String {
    current.map_or_else(String::new, |v| format!(" (current_version={v})"))
}

/// Reads the bearer token from `CUSTODIAN_TOKEN` or `file`.
///
/// # Errors
/// `NoToken`, `TokenFile`.
pub fn load_token(file: Option<&Path>) -> Result<BearerToken, ClientError> {
    if let Some(path) = file {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
            ClientError::TokenFile {
                path: path.display().to_string(),
                source,
            }
        })?);
        return Ok(BearerToken::new(text.trim().to_owned()));
    }
    match std::env::var(TOKEN_ENV) {
        Ok(t) if !t.trim().is_empty() => Ok(BearerToken::new(t.trim().to_owned())),
        _ => Err(ClientError::NoToken),
    }
}

/// Parses repeated `--context k=v` arguments into a JSON object.
///
/// # Errors
/// `BadContext` for an argument without `=`, `DuplicateContextKey` for a key given twice.
pub fn context_json(pairs: &[String]) -> Result<Value, ClientError> {
    pairs_json(
        pairs,
        ClientError::BadContext,
        ClientError::DuplicateContextKey,
    )
}

/// Splits each `k=v` at the first `=` into a JSON object of strings; a repeated key is an error.
fn pairs_json(
    pairs: &[String],
    malformed: fn(String) -> ClientError,
    repeated: fn(String) -> ClientError,
) -> Result<Value, ClientError> {
    let mut map = serde_json::Map::new();
    for p in pairs {
        let (k, v) = p.split_once('=').ok_or_else(|| malformed(p.clone()))?;
        if map
            .insert(k.to_owned(), Value::String(v.to_owned()))
            .is_some()
        {
            return Err(repeated(k.to_owned()));
        }
    }
    Ok(Value::Object(map))
}

/// Reads a secret value from `input`, byte for byte (a trailing newline is part of the value).
///
/// # Errors
/// `ValueTooLarge` past [`MAX_SECRET_VALUE_BYTES`]; `Io`.
pub fn read_value(input: &mut impl Read) -> Result<Zeroizing<Vec<u8>>, ClientError> {
    // Allocated once, larger than the most it may hold, so reading never reallocates and leaves
    // no unzeroised partial copy behind in freed memory.
    let mut value = Zeroizing::new(Vec::with_capacity(MAX_SECRET_VALUE_BYTES + 64));
    let limit = u64::try_from(MAX_SECRET_VALUE_BYTES).unwrap_or(u64::MAX);
    input
        .take(limit.saturating_add(1))
        .read_to_end(&mut value)?;
    if value.len() > MAX_SECRET_VALUE_BYTES {
        return Err(ClientError::ValueTooLarge);
    }
    Ok(value)
}

/// Reads a secret value from the file at `path` (see [`read_value`]).
///
/// # Errors
/// `ValueFile` when it cannot be opened; as [`read_value`].
pub fn read_value_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, ClientError> {
    let mut file = std::fs::File::open(path).map_err(|source| ClientError::ValueFile {
        path: path.display().to_string(),
        source,
    })?;
    read_value(&mut file)
}

/// Settings for a generated secret (`secrets metadata set --generate-…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerateChange {
    /// Characters per value.
    pub length: u32,
    /// `alphanumeric`, `hex`, `base64` or `printable`.
    pub charset: String,
    /// Rotation interval, e.g. `30d`.
    pub rotate_every: String,
}

/// What `secrets metadata set` changes; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataChange {
    /// The key (id or name) for a path this call creates.
    pub key: Option<String>,
    /// Versions kept (0 = unlimited).
    pub max_versions: Option<u32>,
    /// `Some(None)` clears the expiry.
    pub expires_after: Option<Option<String>>,
    /// `k=v` pairs replacing the whole custom map.
    pub custom: Option<Vec<String>>,
    /// `Some(None)` stops generation and rotation.
    pub generate: Option<Option<GenerateChange>>,
}

impl MetadataChange {
    /// The `PUT /v1/secrets/{path}/metadata` body.
    ///
    /// # Errors
    /// `BadCustom`, `DuplicateCustomKey`.
    pub fn body(&self) -> Result<Value, ClientError> {
        let mut body = serde_json::Map::new();
        if let Some(k) = &self.key {
            body.insert("key".to_owned(), json!(k));
        }
        if let Some(m) = self.max_versions {
            body.insert("max_versions".to_owned(), json!(m));
        }
        if let Some(e) = &self.expires_after {
            body.insert("expires_after".to_owned(), json!(e));
        }
        if let Some(pairs) = &self.custom {
            let custom = pairs_json(
                pairs,
                ClientError::BadCustom,
                ClientError::DuplicateCustomKey,
            )?;
            body.insert("custom".to_owned(), custom);
        }
        if let Some(g) = &self.generate {
            let spec = g.as_ref().map(|g| {
                json!({ "length": g.length, "charset": g.charset, "rotate_every": g.rotate_every })
            });
            body.insert("generate".to_owned(), json!(spec));
        }
        Ok(Value::Object(body))
    }
}

/// An API client.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: BearerToken,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
    #[serde(default)]
    request_id: String,
    #[serde(default)]
    current_version: Option<u64>,
}

/// The `PUT /v1/secrets/{path}` body; `value` borrows the zeroising base64 buffer.
#[derive(Serialize)]
struct PutSecretBody<'a> {
    value: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cas: Option<u32>,
}

/// The part of a `GET /v1/secrets/{path}` answer the CLI uses.
#[derive(Deserialize)]
struct SecretValueOut {
    value: Zeroizing<String>,
}

#[derive(Deserialize)]
struct CryptoOut {
    ciphertext: Option<String>,
    plaintext: Option<Zeroizing<String>>,
}

impl Client {
    /// A client for the server at `base` (e.g. `http://127.0.0.1:8200`).
    pub fn new(base: &str, token: BearerToken) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_owned(),
            token,
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, ClientError> {
        self.send(method, path, body.map(|b| b.to_string().into_bytes()))
            .await
    }

    /// Sends `body` (JSON text) and reads a JSON answer or the API error.
    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token.expose_secret());
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b);
        }
        let res = req.send().await?;
        let status = res.status();
        if status.is_success() {
            return Ok(res.json().await?);
        }
        let text = res.text().await.unwrap_or_default();
        Err(match serde_json::from_str::<ErrorBody>(&text) {
            Ok(b) => ClientError::Api {
                status,
                code: b.error.code,
                message: b.error.message,
                request_id: b.error.request_id,
                current_version: b.error.current_version,
            },
            Err(_) => ClientError::Api {
                status,
                code: "unexpected_response".to_owned(),
                message: text.chars().take(200).collect(),
                request_id: String::new(),
                current_version: None,
            },
        })
    }

    /// `POST /v1/keys`
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn create_key(&self, name: &str, description: &str) -> Result<Value, ClientError> {
        self.call(
            Method::POST,
            "/v1/keys",
            Some(json!({ "name": name, "description": description })),
        )
        .await
    }

    /// `GET /v1/keys`
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn list_keys(
        &self,
        limit: Option<u32>,
        after: Option<&str>,
    ) -> Result<Value, ClientError> {
        let mut q = Vec::new();
        if let Some(l) = limit {
            q.push(format!("limit={l}"));
        }
        if let Some(a) = after {
            q.push(format!("after={}", urlencode(a)));
        }
        let path = if q.is_empty() {
            "/v1/keys".to_owned()
        } else {
            format!("/v1/keys?{}", q.join("&"))
        };
        self.call(Method::GET, &path, None).await
    }

    /// `GET /v1/keys/{key}`
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn show_key(&self, key: &str) -> Result<Value, ClientError> {
        self.call(Method::GET, &format!("/v1/keys/{}", urlencode(key)), None)
            .await
    }

    /// `POST /v1/keys/{key}/datakey`; the JSON answer is written to `out` as it came.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn datakey(
        &self,
        key: &str,
        bytes: u32,
        plaintext: bool,
        context: Value,
        out: &mut impl Write,
    ) -> Result<(), ClientError> {
        let body = json!({ "bytes": bytes, "plaintext": plaintext, "context": context });
        let v: Value = self
            .call(
                Method::POST,
                &format!("/v1/keys/{}/datakey", urlencode(key)),
                Some(body),
            )
            .await?;
        let text = Zeroizing::new(serde_json::to_string_pretty(&v).unwrap_or_default());
        writeln!(out, "{}", text.as_str())?;
        Ok(())
    }

    /// Encrypts stdin-sized `input` (≤ 4096 bytes); writes the blob raw or as base64.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn encrypt(
        &self,
        key: &str,
        context: Value,
        input: &mut impl Read,
        base64_out: bool,
        out: &mut impl Write,
    ) -> Result<(), ClientError> {
        let mut data = Zeroizing::new(Vec::new());
        input.take(1 << 20).read_to_end(&mut data)?;
        let body = json!({ "plaintext": Zeroizing::new(STANDARD.encode(&data[..])).as_str(), "context": context });
        let r: CryptoOut = self
            .call(
                Method::POST,
                &format!("/v1/keys/{}/encrypt", urlencode(key)),
                Some(body),
            )
            .await?;
        let ct = r.ciphertext.ok_or(ClientError::BadBase64("ciphertext"))?;
        if base64_out {
            writeln!(out, "{ct}")?;
        } else {
            out.write_all(
                &STANDARD
                    .decode(ct)
                    .map_err(|_| ClientError::BadBase64("ciphertext"))?,
            )?;
        }
        Ok(())
    }

    /// Decrypts a blob read raw (or as base64) from `input`; writes the plaintext raw.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn decrypt(
        &self,
        context: Value,
        input: &mut impl Read,
        base64_in: bool,
        out: &mut impl Write,
    ) -> Result<(), ClientError> {
        let mut data = Vec::new();
        input.take(1 << 20).read_to_end(&mut data)?;
        let ct = if base64_in {
            String::from_utf8_lossy(&data).trim().to_owned()
        } else {
            STANDARD.encode(&data)
        };
        let r: CryptoOut = self
            .call(
                Method::POST,
                "/v1/decrypt",
                Some(json!({ "ciphertext": ct, "context": context })),
            )
            .await?;
        let pt = r.plaintext.ok_or(ClientError::BadBase64("plaintext"))?;
        let bytes = Zeroizing::new(
            STANDARD
                .decode(pt.as_bytes())
                .map_err(|_| ClientError::BadBase64("plaintext"))?,
        );
        out.write_all(&bytes)?;
        out.flush()?;
        Ok(())
    }

    /// `PUT /v1/secrets/{path}`: writes `value` as a new version (check-and-set with `cas`).
    ///
    /// # Errors
    /// [`ClientError`]; `InvalidSecretPath` before any request for a path no URL can carry.
    pub async fn put_secret(
        &self,
        path: &str,
        value: &[u8],
        key: Option<&str>,
        cas: Option<u32>,
    ) -> Result<Value, ClientError> {
        let url = secret_url(path, None)?;
        let encoded = Zeroizing::new(STANDARD.encode(value));
        // Room for the whole body, so serialising never reallocates (and leaves no copy behind).
        let room = encoded.len() + 64 + key.map_or(0, |k| k.len() * 6);
        let mut body = Zeroizing::new(Vec::with_capacity(room));
        let put = PutSecretBody {
            value: encoded.as_str(),
            key,
            cas,
        };
        serde_json::to_writer(&mut *body, &put).map_err(std::io::Error::from)?;
        // The HTTP client takes ownership of the bytes (see the module docs).
        self.send(Method::PUT, &url, Some(std::mem::take(&mut *body)))
            .await
    }

    /// `GET /v1/secrets/{path}[?version=N]`: writes the raw value to `out`, and nothing when the
    /// call fails.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn get_secret(
        &self,
        path: &str,
        version: Option<u32>,
        out: &mut impl Write,
    ) -> Result<(), ClientError> {
        let mut url = secret_url(path, None)?;
        if let Some(v) = version {
            url.push_str(&format!("?version={v}"));
        }
        let r: SecretValueOut = self.call(Method::GET, &url, None).await?;
        let bytes = Zeroizing::new(
            STANDARD
                .decode(r.value.as_bytes())
                .map_err(|_| ClientError::BadBase64("value"))?,
        );
        out.write_all(&bytes)?;
        out.flush()?;
        Ok(())
    }

    /// `GET /v1/secrets?prefix=&limit=&after=`: metadata records, never values.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn list_secrets(
        &self,
        prefix: Option<&str>,
        limit: Option<u32>,
        after: Option<&str>,
    ) -> Result<Value, ClientError> {
        let mut q = Vec::new();
        if let Some(p) = prefix {
            q.push(format!("prefix={}", urlencode(p)));
        }
        if let Some(l) = limit {
            q.push(format!("limit={l}"));
        }
        if let Some(a) = after {
            q.push(format!("after={}", urlencode(a)));
        }
        let path = if q.is_empty() {
            "/v1/secrets".to_owned()
        } else {
            format!("/v1/secrets?{}", q.join("&"))
        };
        self.call(Method::GET, &path, None).await
    }

    /// `DELETE /v1/secrets/{path}[?versions=…]`: soft-deletes `versions`, or the newest live
    /// version when empty.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn delete_secret(&self, path: &str, versions: &[u32]) -> Result<Value, ClientError> {
        let mut url = secret_url(path, None)?;
        if !versions.is_empty() {
            let list: Vec<String> = versions.iter().map(u32::to_string).collect();
            url.push_str(&format!("?versions={}", list.join(",")));
        }
        self.call(Method::DELETE, &url, None).await
    }

    /// `POST /v1/secrets/{path}/undelete`: restores `versions`, or the newest deleted version
    /// when empty.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn undelete_secret(
        &self,
        path: &str,
        versions: &[u32],
    ) -> Result<Value, ClientError> {
        let body = if versions.is_empty() {
            json!({})
        } else {
            json!({ "versions": versions })
        };
        self.call(
            Method::POST,
            &secret_url(path, Some("undelete"))?,
            Some(body),
        )
        .await
    }

    /// `POST /v1/secrets/{path}/destroy`: erases `versions` for good.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn destroy_secret(&self, path: &str, versions: &[u32]) -> Result<Value, ClientError> {
        self.call(
            Method::POST,
            &secret_url(path, Some("destroy"))?,
            Some(json!({ "versions": versions })),
        )
        .await
    }

    /// `GET /v1/secrets/{path}/metadata`
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn secret_metadata(&self, path: &str) -> Result<Value, ClientError> {
        self.call(Method::GET, &secret_url(path, Some("metadata"))?, None)
            .await
    }

    /// `PUT /v1/secrets/{path}/metadata`
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn set_secret_metadata(
        &self,
        path: &str,
        change: &MetadataChange,
    ) -> Result<Value, ClientError> {
        let url = secret_url(path, Some("metadata"))?;
        self.call(Method::PUT, &url, Some(change.body()?)).await
    }

    /// `POST /v1/secrets/{path}/rotate`: writes a fresh generated version now.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn rotate_secret(&self, path: &str) -> Result<Value, ClientError> {
        self.call(Method::POST, &secret_url(path, Some("rotate"))?, None)
            .await
    }
}

/// `/v1/secrets/{path}[/{sub}]` with each path segment percent-encoded and `/` kept between
/// segments.
///
/// Refuses, before any request, the paths a URL cannot carry faithfully; every other path rule
/// is the server's to enforce (`400 invalid_secret_path`):
/// - an empty path, which names no secret (`/v1/secrets/` is another route);
/// - a `.` or `..` segment: URL parsing resolves dot segments, also percent-encoded ones, so
///   `a/../b` would silently address `b`;
/// - a reserved last segment (`metadata`, `undelete`, `destroy`, `rotate`): `app/metadata`
///   would address the metadata of `app`.
fn secret_url(path: &str, sub: Option<&str>) -> Result<String, ClientError> {
    let invalid = |reason| ClientError::InvalidSecretPath {
        path: path.to_owned(),
        reason,
    };
    if path.is_empty() {
        return Err(invalid("a secret path is not empty"));
    }
    let segments: Vec<&str> = path.split('/').collect();
    if segments.iter().any(|s| *s == "." || *s == "..") {
        return Err(invalid("a secret path has no '.' or '..' segments"));
    }
    if segments
        .last()
        .is_some_and(|l| SecretPath::RESERVED.contains(l))
    {
        return Err(invalid(
            "a secret path may not end in metadata, undelete, destroy or rotate",
        ));
    }
    let mut url = String::from("/v1/secrets/");
    let encoded: Vec<String> = segments.iter().map(|s| urlencode(s)).collect();
    url.push_str(&encoded.join("/"));
    if let Some(sub) = sub {
        url.push('/');
        url.push_str(sub);
    }
    Ok(url)
}

/// Percent-encodes a path or query component (key names are `[A-Za-z0-9._-]`, ids are UUIDs;
/// anything else is encoded so the server rejects it cleanly).
fn urlencode(s: &str) -> String {
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

    #[test]
    fn contexts_parse_from_arguments() {
        let v = context_json(&["a=b".into(), "c=d=e".into(), "f=".into()]).unwrap();
        assert_eq!(v, json!({"a": "b", "c": "d=e", "f": ""}));
        assert!(matches!(
            context_json(&["nope".into()]),
            Err(ClientError::BadContext(_))
        ));
        assert!(matches!(
            context_json(&["a=1".into(), "a=2".into()]),
            Err(ClientError::DuplicateContextKey(_))
        ));
    }

    #[test]
    fn path_components_are_encoded() {
        assert_eq!(urlencode("billing-1.x_y"), "billing-1.x_y");
        assert_eq!(urlencode("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn secret_urls_encode_each_segment_and_keep_slashes() {
        assert_eq!(
            secret_url("team/app/db-1.x_y", None).unwrap(),
            "/v1/secrets/team/app/db-1.x_y"
        );
        assert_eq!(
            secret_url("a b/c?d#e%f\\g", Some("metadata")).unwrap(),
            "/v1/secrets/a%20b/c%3Fd%23e%25f%5Cg/metadata"
        );
        // Empty segments are the server's to refuse; they survive in the URL.
        assert_eq!(secret_url("a//b", None).unwrap(), "/v1/secrets/a//b");
        // A reserved word is fine anywhere but last.
        assert!(secret_url("metadata/x", None).is_ok());
        for bad in [
            "",
            ".",
            "..",
            "a/./b",
            "a/../b",
            "a/..",
            "a/metadata",
            "rotate",
        ] {
            assert!(
                matches!(
                    secret_url(bad, None),
                    Err(ClientError::InvalidSecretPath { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn metadata_changes_send_only_what_is_set() {
        assert_eq!(MetadataChange::default().body().unwrap(), json!({}));
        let change = MetadataChange {
            key: Some("k".into()),
            max_versions: Some(0),
            expires_after: Some(None),
            custom: Some(vec!["a=b=c".into()]),
            generate: Some(Some(GenerateChange {
                length: 8,
                charset: "hex".into(),
                rotate_every: "1h".into(),
            })),
        };
        assert_eq!(
            change.body().unwrap(),
            json!({
                "key": "k",
                "max_versions": 0,
                "expires_after": null,
                "custom": {"a": "b=c"},
                "generate": {"length": 8, "charset": "hex", "rotate_every": "1h"},
            })
        );
        let stop = MetadataChange {
            expires_after: Some(Some("90d".into())),
            generate: Some(None),
            ..MetadataChange::default()
        };
        assert_eq!(
            stop.body().unwrap(),
            json!({"expires_after": "90d", "generate": null})
        );
        let dup = MetadataChange {
            custom: Some(vec!["a=1".into(), "a=2".into()]),
            ..MetadataChange::default()
        };
        assert!(matches!(
            dup.body(),
            Err(ClientError::DuplicateCustomKey(_))
        ));
    }

    #[test]
    fn values_are_read_byte_exact_up_to_the_limit() {
        let value = read_value(&mut &b"line\n\xff\x00"[..]).unwrap();
        assert_eq!(&value[..], b"line\n\xff\x00");
        let max = vec![7u8; MAX_SECRET_VALUE_BYTES];
        assert_eq!(read_value(&mut &max[..]).unwrap().len(), max.len());
        let over = vec![7u8; MAX_SECRET_VALUE_BYTES + 1];
        assert!(matches!(
            read_value(&mut &over[..]),
            Err(ClientError::ValueTooLarge)
        ));
    }

    #[test]
    fn cas_mismatches_show_the_current_version() {
        let e = ClientError::Api {
            status: StatusCode::CONFLICT,
            code: "cas_mismatch".into(),
            message: "check-and-set failed: the current version is 4".into(),
            request_id: "r1".into(),
            current_version: Some(4),
        };
        assert_eq!(
            e.to_string(),
            "409 Conflict: cas_mismatch: check-and-set failed: the current version is 4 \
             (current_version=4) (request r1)"
        );
    }
}
