//! A small API client for the CLI subcommands.

use std::io::{Read, Write};
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::secret::BearerToken;

/// Environment variable holding the bearer token.
pub const TOKEN_ENV: &str = "CUSTODIAN_TOKEN";

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
    #[error("{status}: {code}: {message} (request {request_id})")]
    Api {
        /// HTTP status.
        status: StatusCode,
        /// Stable error code.
        code: String,
        /// Message.
        message: String,
        /// Request id for the operator.
        request_id: String,
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
/// `BadContext` for an argument without `=`.
pub fn context_json(pairs: &[String]) -> Result<Value, ClientError> {
    let mut map = serde_json::Map::new();
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| ClientError::BadContext(p.clone()))?;
        if map
            .insert(k.to_owned(), Value::String(v.to_owned()))
            .is_some()
        {
            return Err(ClientError::DuplicateContextKey(k.to_owned()));
        }
    }
    Ok(Value::Object(map))
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
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token.expose_secret());
        if let Some(b) = body {
            req = req.json(&b);
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
            },
            Err(_) => ClientError::Api {
                status,
                code: "unexpected_response".to_owned(),
                message: text.chars().take(200).collect(),
                request_id: String::new(),
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
}
