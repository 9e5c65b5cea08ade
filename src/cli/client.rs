//! The CLI subcommands' API calls, over the transport of the `custodian-client` library
//! ([`custodian_client::Client`]: retries on `429`/`503` with `Retry-After`, timeouts, errors
//! with request ids, the optional CA and client certificate).
//!
//! Secret values (plaintexts, data keys, secret versions, freshly minted bearer tokens) are held
//! in zeroising buffers on this side of the HTTP client. The buffers inside `reqwest` and
//! `hyper` (the request body handed over, the response body read back) are theirs and are freed
//! without being zeroised.
//!
//! The bearer token is taken, in this order, from `CUSTODIAN_TOKEN`, from `--token-file` (or
//! `CUSTODIAN_TOKEN_FILE`), and from the file `custodian login` wrote
//! (`~/.config/custodian/token`); never from an argument.

use std::collections::BTreeMap;
use std::fs::{DirBuilder, Permissions};
use std::io::{BufRead, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use custodian_client::client::{key_url, segment, urlencode, Retry};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use zeroize::Zeroizing;

use crate::api_types::audit::{AuditArchive, AuditArchiveRequest};
use crate::api_types::crypto::{
    DataKeyRequest, DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse,
    ReencryptRequest, ReencryptResponse,
};
use crate::api_types::identity::{
    Attributes, CreatePrincipalRequest, CreateTokenRequest, ExplainRequest, PatchPrincipalRequest,
    TokenCreated, TokenInfo,
};
use crate::api_types::keys::CreateKeyRequest;
use crate::api_types::lifecycle::{
    CreateAliasRequest, Job, PatchKeyRequest, RepointAliasRequest, ScheduleDeletionRequest,
};
use crate::api_types::secrets::{
    PutSecretMetadataRequest, PutSecretRequest, SecretValue, SecretVersionsRequest,
};
use crate::domain::job::JobState;
use crate::domain::secret::SecretPath;
use crate::domain::{BackendKind, WrapMode};
use crate::secret::BearerToken;

/// Environment variable holding the bearer token.
pub const TOKEN_ENV: &str = "CUSTODIAN_TOKEN";

/// Where `custodian login` stores the token, relative to `$HOME`.
pub const LOGIN_TOKEN_PATH: &str = ".config/custodian/token";

/// The most bytes `policies put` reads: far more than any server's `server.max_body_bytes`
/// allows, so the server's limit is the one that answers (`body_too_large`).
pub const MAX_POLICY_BYTES: usize = 1024 * 1024;

/// The longest line `custodian login` accepts on stdin; a token is about 64 characters.
const MAX_TOKEN_INPUT: usize = 4096;
/// The longest token the server parses.
const MAX_TOKEN_LEN: usize = 128;

/// The most bytes `secrets put` reads: the largest `secrets.max_value_bytes` any server can be
/// configured with. The server enforces its own, usually smaller, limit (413 `value_too_large`).
pub const MAX_SECRET_VALUE_BYTES: usize = 1024 * 1024;

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No token in the environment, the named file or the login file.
    #[error("no token: set {TOKEN_ENV}, pass --token-file, or run `custodian login`")]
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
    /// The API call failed: the server's error (with its code and request id), an
    /// unreachable server, or an answer the client cannot use.
    #[error(transparent)]
    Client(#[from] custodian_client::Error),
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
    /// An `--attr` argument is not `key=value`.
    #[error("--attr expects key=value, got {0:?}")]
    BadAttribute(String),
    /// The same `--attr` key twice.
    #[error("--attr key {0:?} given twice")]
    DuplicateAttributeKey(String),
    /// A policy document over [`MAX_POLICY_BYTES`].
    #[error("invalid_policy: the document is over {MAX_POLICY_BYTES} bytes")]
    PolicyTooLarge,
    /// The `--file` holding a policy document could not be opened.
    #[error("cannot open policy file {path}: {source}")]
    PolicyFile {
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// `explain` names the explain route, not a policy.
    #[error(
        "invalid_policy_name: \"explain\" is a route (/v1/policies/explain), not a policy name"
    )]
    ReservedPolicyName,
    /// `login` read something from stdin that is not one token on one line (never echoed).
    #[error(
        "stdin does not hold a bearer token: expected one line of at most {MAX_TOKEN_LEN} visible ASCII characters"
    )]
    NotAToken,
    /// `login`: the server does not accept the token (401).
    #[error("the server refused the token: {code}: {message}")]
    TokenRefused {
        /// Stable error code (`invalid_token`, `token_expired`, `token_revoked`).
        code: String,
        /// Message.
        message: String,
    },
    /// No `$HOME` to find the login token file under.
    #[error("HOME is not set: pass --token-file or set CUSTODIAN_TOKEN_FILE")]
    NoHome,
    /// The token could not be stored.
    #[error("cannot store the token in {path}: {source}")]
    TokenStore {
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// The file `custodian login` writes and later commands read: `$HOME/.config/custodian/token`.
/// `None` when `HOME` is unset or empty.
pub fn login_token_path() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(LOGIN_TOKEN_PATH))
}

/// Reads the bearer token: `CUSTODIAN_TOKEN` if set and not blank, else `file` (from
/// `--token-file` or `CUSTODIAN_TOKEN_FILE`), else the login file ([`login_token_path`]).
///
/// # Errors
/// `NoToken` when none of the three gives a token; `TokenFile` when a file cannot be read.
pub fn load_token(file: Option<&Path>) -> Result<BearerToken, ClientError> {
    let env = std::env::var(TOKEN_ENV).ok().map(Zeroizing::new);
    choose_token(env.as_deref().map(String::as_str), file, login_token_path())
}

/// [`load_token`] with its three sources passed in.
fn choose_token(
    env: Option<&str>,
    file: Option<&Path>,
    login_file: Option<PathBuf>,
) -> Result<BearerToken, ClientError> {
    if let Some(t) = env.map(str::trim).filter(|t| !t.is_empty()) {
        return Ok(BearerToken::new(t.to_owned()));
    }
    if let Some(path) = file {
        return read_token_file(path)?.ok_or(ClientError::NoToken);
    }
    match login_file {
        Some(path) => match read_token_file(&path) {
            // No login file: nothing was configured at all.
            Err(ClientError::TokenFile { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Err(ClientError::NoToken)
            }
            other => other?.ok_or(ClientError::NoToken),
        },
        None => Err(ClientError::NoToken),
    }
}

/// The token in `path`, trimmed; `None` when the file holds only whitespace.
fn read_token_file(path: &Path) -> Result<Option<BearerToken>, ClientError> {
    let text =
        Zeroizing::new(
            std::fs::read_to_string(path).map_err(|source| ClientError::TokenFile {
                path: path.display().to_string(),
                source,
            })?,
        );
    let token = text.trim();
    Ok((!token.is_empty()).then(|| BearerToken::new(token.to_owned())))
}

/// Reads one bearer token from the first line of `input` (`custodian login`). The text is
/// checked only for shape; the server decides whether it is valid.
///
/// # Errors
/// `NotAToken` for an empty line, more than [`MAX_TOKEN_LEN`] characters, or characters other
/// than visible ASCII; `Io`.
pub fn read_token_line(input: &mut impl BufRead) -> Result<BearerToken, ClientError> {
    // Allocated once, larger than the most it may hold: reading never reallocates and leaves no
    // unzeroised copy behind.
    let mut line = Zeroizing::new(String::with_capacity(MAX_TOKEN_INPUT + 8));
    let limit = u64::try_from(MAX_TOKEN_INPUT).unwrap_or(u64::MAX);
    match input.take(limit).read_line(&mut line) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            return Err(ClientError::NotAToken)
        }
        Err(e) => return Err(e.into()),
    }
    token_from_line(&line)
}

/// The bearer token on `line` (typed at the terminal or read from stdin), surrounding
/// whitespace removed. The text is checked only for shape; the server decides whether it is
/// valid.
///
/// # Errors
/// `NotAToken` for an empty line, more than [`MAX_TOKEN_LEN`] characters, or characters other
/// than visible ASCII.
pub fn token_from_line(line: &str) -> Result<BearerToken, ClientError> {
    let token = line.trim();
    if token.is_empty()
        || token.len() > MAX_TOKEN_LEN
        || !token.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ClientError::NotAToken);
    }
    Ok(BearerToken::new(token.to_owned()))
}

/// Writes `token` to `path` with mode 0600, creating missing directories with mode 0700. The
/// file is written under a temporary name in the same directory (`tempfile`: created
/// exclusively under a random name, removed if anything fails) and renamed into place, so a
/// reader never sees half a token and an existing file with a looser mode is replaced, not
/// reused.
///
/// # Errors
/// `TokenStore`.
pub fn store_token(path: &Path, token: &BearerToken) -> Result<(), ClientError> {
    let err = |source| ClientError::TokenStore {
        path: path.display().to_string(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err)?;
    let name = path
        .file_name()
        .ok_or_else(|| err(std::io::Error::other("the path names no file")))?;
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".tmp-");
    let write = || -> std::io::Result<()> {
        let mut f = tempfile::Builder::new().prefix(&prefix).tempfile_in(dir)?;
        // The umask may only have removed bits; say exactly what is meant.
        f.as_file().set_permissions(Permissions::from_mode(0o600))?;
        f.write_all(token.expose_secret().as_bytes())?;
        f.write_all(b"\n")?;
        f.as_file().sync_all()?;
        // On failure the temporary file comes back inside the error and is removed with it.
        f.persist(path).map_err(|e| e.error)?;
        Ok(())
    };
    write().map_err(err)
}

/// Reads a policy document (JSON text, sent as it is) from `input`.
///
/// # Errors
/// `PolicyTooLarge` past [`MAX_POLICY_BYTES`]; `Io`.
pub fn read_policy(input: &mut impl Read) -> Result<Vec<u8>, ClientError> {
    let mut doc = Vec::new();
    let limit = u64::try_from(MAX_POLICY_BYTES).unwrap_or(u64::MAX);
    input.take(limit.saturating_add(1)).read_to_end(&mut doc)?;
    if doc.len() > MAX_POLICY_BYTES {
        return Err(ClientError::PolicyTooLarge);
    }
    Ok(doc)
}

/// Reads a policy document from the file at `path` (see [`read_policy`]).
///
/// # Errors
/// `PolicyFile` when it cannot be opened; as [`read_policy`].
pub fn read_policy_file(path: &Path) -> Result<Vec<u8>, ClientError> {
    let mut file = std::fs::File::open(path).map_err(|source| ClientError::PolicyFile {
        path: path.display().to_string(),
        source,
    })?;
    read_policy(&mut file)
}

/// Parses repeated `--attr k=v` arguments into principal attributes.
///
/// # Errors
/// `BadAttribute` for an argument without `=`, `DuplicateAttributeKey` for a key given twice.
pub fn attributes(pairs: &[String]) -> Result<Attributes, ClientError> {
    pairs_map(
        pairs,
        ClientError::BadAttribute,
        ClientError::DuplicateAttributeKey,
    )
}

/// Where `keys create` asks for the new key to live. A field left `None` is not sent, so the
/// server's default applies (PKCS#11; `direct` on PKCS#11, `cached` on a TPM).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyPlacementArgs {
    /// `--backend`.
    pub backend: Option<BackendKind>,
    /// `--mode`.
    pub mode: Option<WrapMode>,
}

/// The `POST /v1/keys` body: `backend` and `mode` only when given.
pub fn create_key_body(
    name: &str,
    description: &str,
    placement: &KeyPlacementArgs,
) -> CreateKeyRequest {
    CreateKeyRequest {
        name: name.to_owned(),
        description: description.to_owned(),
        backend: placement.backend.map(|b| b.as_str().to_owned()),
        mode: placement.mode.map(|m| m.as_str().to_owned()),
    }
}

/// Parses repeated `--context k=v` arguments into a JSON object.
///
/// # Errors
/// `BadContext` for an argument without `=`, `DuplicateContextKey` for a key given twice.
pub fn context_json(pairs: &[String]) -> Result<Value, ClientError> {
    let map = pairs_map(
        pairs,
        ClientError::BadContext,
        ClientError::DuplicateContextKey,
    )?;
    Ok(Value::Object(
        map.into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
    ))
}

/// Splits each `k=v` at the first `=` into a map of strings; a repeated key is an error.
fn pairs_map(
    pairs: &[String],
    malformed: fn(String) -> ClientError,
    repeated: fn(String) -> ClientError,
) -> Result<BTreeMap<String, String>, ClientError> {
    let mut map = BTreeMap::new();
    for p in pairs {
        let (k, v) = p.split_once('=').ok_or_else(|| malformed(p.clone()))?;
        if map.insert(k.to_owned(), v.to_owned()).is_some() {
            return Err(repeated(k.to_owned()));
        }
    }
    Ok(map)
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

/// Settings for a generated secret (`secrets metadata set --generate-…`), sent as the
/// `generate` member of [`PutSecretMetadataRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
    pub fn body(
        &self,
    ) -> Result<
        PutSecretMetadataRequest<String, BTreeMap<String, String>, GenerateChange>,
        ClientError,
    > {
        let custom = self
            .custom
            .as_ref()
            .map(|pairs| {
                pairs_map(
                    pairs,
                    ClientError::BadCustom,
                    ClientError::DuplicateCustomKey,
                )
            })
            .transpose()?;
        Ok(PutSecretMetadataRequest {
            key: self.key.clone(),
            max_versions: self.max_versions,
            expires_after: self.expires_after.clone(),
            custom,
            generate: self.generate.clone(),
        })
    }
}

/// What `keys update` changes; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyChange {
    /// New description.
    pub description: Option<String>,
    /// New rotation period, e.g. `90d`; `Some(None)` turns scheduled rotation off.
    pub rotation_period: Option<Option<String>>,
    /// Versions below this one no longer decrypt.
    pub min_decryption_version: Option<u32>,
}

impl KeyChange {
    /// The `PATCH /v1/keys/{key}` body.
    pub fn body(&self) -> PatchKeyRequest<String> {
        PatchKeyRequest {
            description: self.description.clone(),
            rotation_period: self.rotation_period.clone(),
            min_decryption_version: self.min_decryption_version,
        }
    }
}

/// What `principals update` changes; `None` leaves a field as it is, `Some` replaces it whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrincipalChange {
    /// `k=v` pairs replacing every attribute (`Some(vec![])` removes them all).
    pub attributes: Option<Vec<String>>,
    /// Policy names replacing the attached list (`Some(vec![])` detaches every policy).
    pub policies: Option<Vec<String>>,
}

impl PrincipalChange {
    /// The `PATCH /v1/principals/{name}` body.
    ///
    /// # Errors
    /// `BadAttribute`, `DuplicateAttributeKey`.
    pub fn body(&self) -> Result<PatchPrincipalRequest, ClientError> {
        Ok(PatchPrincipalRequest {
            attributes: self.attributes.as_deref().map(attributes).transpose()?,
            policies: self.policies.clone(),
        })
    }
}

/// A `POST /v1/policies/explain` question.
#[derive(Debug, Clone, PartialEq)]
pub struct Explain {
    /// The principal asked about.
    pub principal: String,
    /// The action, e.g. `datakey:generate`.
    pub action: String,
    /// The resource, e.g. `key/billing-eu` or `secret/team/app/db`.
    pub resource: String,
    /// The encryption context of the imagined request; `None`: a request without one.
    pub context: Option<Value>,
    /// The source address of the imagined request; `None`: unknown.
    pub source: Option<IpAddr>,
}

impl Explain {
    /// The request body.
    pub fn body(&self) -> ExplainRequest<&Value> {
        ExplainRequest {
            principal: self.principal.clone(),
            action: self.action.clone(),
            resource: self.resource.clone(),
            context: self.context.as_ref(),
            source: self.source,
        }
    }
}

/// A token minted by `POST /v1/tokens`: the text, shown once, and its metadata.
#[derive(Debug)]
pub struct MintedToken {
    /// The token text (redacted in `Debug`, zeroised on drop).
    pub token: BearerToken,
    /// Its metadata (never revoked yet).
    pub info: TokenInfo,
}

/// An access key minted by `POST /v1/access-keys`: the secret, shown once, and its metadata.
#[derive(Debug)]
pub struct MintedAccessKey {
    /// The access key id (public).
    pub id: String,
    /// The secret access key (redacted in `Debug`, zeroised on drop).
    pub secret: BearerToken,
    /// `{id, principal, description, key_id, created_at, expires_at?}`.
    pub info: Value,
}

/// What `custodian login` learnt about a token the server accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCheck {
    /// `GET /v1/keys?limit=1` succeeded.
    KeyReadAllowed,
    /// The token authenticates, but its principal's policies deny `key:read` (403).
    KeyReadDenied,
}

/// A `POST /v1/keys/{key}/…` call without a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAction {
    /// A new primary version now.
    Rotate,
    /// `enabled → disabled`.
    Disable,
    /// `disabled → enabled`.
    Enable,
    /// `pending_deletion → disabled`.
    CancelDeletion,
    /// Start (or return the running) re-wrap job.
    Rewrap,
}

impl KeyAction {
    fn segment(self) -> &'static str {
        match self {
            Self::Rotate => "rotate",
            Self::Disable => "disable",
            Self::Enable => "enable",
            Self::CancelDeletion => "cancel-deletion",
            Self::Rewrap => "rewrap",
        }
    }
}

/// A `POST /v1/keys/{key}/versions/{version}/…` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionAction {
    /// `active → disabled`.
    Disable,
    /// `disabled → active`.
    Enable,
    /// Destroy the version's root key in the device; final.
    Destroy,
}

impl VersionAction {
    fn segment(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Enable => "enable",
            Self::Destroy => "destroy",
        }
    }
}

/// The blob and contexts of a `reencrypt`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reencrypt {
    /// The context the blob was sealed with.
    pub context: Value,
    /// The key (id, name or `alias/<name>`) to seal under; default: the blob's own key.
    pub destination_key: Option<String>,
    /// The context to seal with; default: `context`.
    pub destination_context: Option<Value>,
}

/// How long `jobs show --watch` keeps polling through an outage (unreachable server, 503), e.g.
/// a server restart.
const WATCH_OUTAGE: std::time::Duration = std::time::Duration::from_secs(30);

/// The progress line of a job: state, done of done + remaining, percent, rate, failures and an
/// estimate of the time left while it runs.
pub fn progress_line(job: &Job) -> String {
    let id = &job.id;
    let state = job.state.as_str();
    let (done, remaining, failed, rate) = (
        job.done,
        job.remaining,
        job.failed_items,
        job.rate_per_second,
    );
    let total = done.saturating_add(remaining);
    // Counts far beyond 2^53 would lose precision here; that only blurs a percentage.
    let percent = if total == 0 {
        100.0
    } else {
        done as f64 * 100.0 / total as f64
    };
    let mut line =
        format!("job {id} {state}: {done}/{total} re-wrapped ({percent:.1}%), {rate:.1}/s");
    if failed > 0 {
        line.push_str(&format!(", {failed} failed"));
    }
    if job.state == JobState::Running && rate > 0.0 && remaining > 0 {
        line.push_str(&format!(", ~{:.0}s left", (remaining as f64 / rate).ceil()));
    }
    line
}

/// What changes between two progress lines worth a new line when the output cannot be redrawn
/// (the rate alone changes on every poll).
fn progress_key(job: &Job) -> (JobState, u64, u64, u64) {
    (job.state, job.done, job.remaining, job.failed_items)
}

/// A poll failure that may pass: the server unreachable or a 503.
fn transient(e: &ClientError) -> bool {
    match e {
        ClientError::Client(custodian_client::Error::Http(_)) => true,
        ClientError::Client(e) => e.status() == Some(StatusCode::SERVICE_UNAVAILABLE),
        _ => false,
    }
}

/// The CLI's API client: the library's [`custodian_client::Client`] (transport, retries, TLS,
/// errors) and the calls of every subcommand.
pub struct Client {
    api: custodian_client::Client,
}

impl Client {
    /// A CLI client over `api`.
    pub fn new(api: custodian_client::Client) -> Self {
        Self { api }
    }

    /// The library client (for the typed calls: data keys, streaming files).
    pub fn api(&self) -> &custodian_client::Client {
        &self.api
    }

    /// The token this client sends (for `login`, to store it once the server accepted it).
    pub fn token(&self) -> Option<&BearerToken> {
        self.api.token()
    }

    /// Sends a request without a body and reads a JSON answer or the API error.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
    ) -> Result<T, ClientError> {
        self.send(method, path, None).await
    }

    /// Sends `body`, one of the [`crate::api_types`] request types, and reads a JSON answer or
    /// the API error. Retried on `503` only for reads (`Retry::for_method`).
    async fn call_typed<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let retry = Retry::for_method(&method);
        Ok(self.api.call(method, path, body, retry).await?)
    }

    /// [`call_typed`](Self::call_typed) for a cryptographic operation, which changes nothing
    /// stored and so is retried on `503` too.
    async fn call_crypto<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        Ok(self.api.call(Method::POST, path, body, Retry::Safe).await?)
    }

    /// Sends `body` (JSON text) and reads a JSON answer or the API error.
    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let retry = Retry::for_method(&method);
        Ok(self
            .api
            .send(method, path, body.map(Zeroizing::new), retry)
            .await?)
    }

    /// Sends `body` (JSON text); a success status hands back the response unread, anything else
    /// becomes the API error.
    async fn execute(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::Response, ClientError> {
        let retry = Retry::for_method(&method);
        Ok(self
            .api
            .execute(method, path, body.map(Zeroizing::new), retry)
            .await?)
    }

    /// `POST /v1/keys`
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn create_key(
        &self,
        name: &str,
        description: &str,
        placement: &KeyPlacementArgs,
    ) -> Result<Value, ClientError> {
        self.call_typed(
            Method::POST,
            "/v1/keys",
            &create_key_body(name, description, placement),
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
        self.call(Method::GET, &path).await
    }

    /// `GET /v1/keys/{key}`
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn show_key(&self, key: &str) -> Result<Value, ClientError> {
        self.call(Method::GET, &key_url(key)?).await
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
        let body = DataKeyRequest {
            context,
            bytes: Some(u64::from(bytes)),
            plaintext: Some(plaintext),
        };
        // Printed as the server sent it.
        let v: Value = self
            .call_crypto(&format!("{}/datakey", key_url(key)?), &body)
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
        let plaintext = Zeroizing::new(STANDARD.encode(&data[..]));
        let body = EncryptRequest {
            plaintext: plaintext.as_str(),
            context,
        };
        let r: EncryptResponse = self
            .call_crypto(&format!("{}/encrypt", key_url(key)?), &body)
            .await?;
        let ct = r.ciphertext;
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
        let r: DecryptResponse = self
            .call_crypto(
                "/v1/decrypt",
                &DecryptRequest {
                    ciphertext: ct,
                    context,
                },
            )
            .await?;
        let bytes = Zeroizing::new(
            STANDARD
                .decode(r.plaintext.as_bytes())
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
        let put = PutSecretRequest {
            value: Some(encoded.as_str()),
            value_text: None,
            key: key.map(str::to_owned),
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
        let r: SecretValue<String> = self.call(Method::GET, &url).await?;
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
        self.call(Method::GET, &path).await
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
        self.call(Method::DELETE, &url).await
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
        let body = SecretVersionsRequest {
            versions: (!versions.is_empty()).then(|| versions.to_vec()),
        };
        self.call_typed(Method::POST, &secret_url(path, Some("undelete"))?, &body)
            .await
    }

    /// `POST /v1/secrets/{path}/destroy`: erases `versions` for good.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn destroy_secret(&self, path: &str, versions: &[u32]) -> Result<Value, ClientError> {
        let body = SecretVersionsRequest {
            versions: Some(versions.to_vec()),
        };
        self.call_typed(Method::POST, &secret_url(path, Some("destroy"))?, &body)
            .await
    }

    /// `GET /v1/secrets/{path}/metadata`
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn secret_metadata(&self, path: &str) -> Result<Value, ClientError> {
        self.call(Method::GET, &secret_url(path, Some("metadata"))?)
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
        self.call_typed(Method::PUT, &url, &change.body()?).await
    }

    /// `POST /v1/secrets/{path}/rotate`: writes a fresh generated version now.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn rotate_secret(&self, path: &str) -> Result<Value, ClientError> {
        self.call(Method::POST, &secret_url(path, Some("rotate"))?)
            .await
    }

    /// `POST /v1/keys/{key}/rotate|disable|enable|cancel-deletion|rewrap`: the key, or (rewrap)
    /// the job.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn key_action(&self, key: &str, action: KeyAction) -> Result<Value, ClientError> {
        let url = format!("{}/{}", key_url(key)?, action.segment());
        self.call(Method::POST, &url).await
    }

    /// `PATCH /v1/keys/{key}`
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn update_key(&self, key: &str, change: &KeyChange) -> Result<Value, ClientError> {
        self.call_typed(Method::PATCH, &key_url(key)?, &change.body())
            .await
    }

    /// `POST /v1/keys/{key}/schedule-deletion`, with no body when `pending_days` is `None` (the
    /// server's default window).
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn schedule_key_deletion(
        &self,
        key: &str,
        pending_days: Option<u32>,
    ) -> Result<Value, ClientError> {
        let url = format!("{}/schedule-deletion", key_url(key)?);
        match pending_days {
            Some(d) => {
                let body = ScheduleDeletionRequest {
                    pending_days: Some(d),
                };
                self.call_typed(Method::POST, &url, &body).await
            }
            None => self.call(Method::POST, &url).await,
        }
    }

    /// `GET /v1/keys/{key}/versions`
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn key_versions(&self, key: &str) -> Result<Value, ClientError> {
        self.call(Method::GET, &format!("{}/versions", key_url(key)?))
            .await
    }

    /// `POST /v1/keys/{key}/versions/{version}/disable|enable|destroy`: the key.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn version_action(
        &self,
        key: &str,
        version: u32,
        action: VersionAction,
    ) -> Result<Value, ClientError> {
        let url = format!("{}/versions/{version}/{}", key_url(key)?, action.segment());
        self.call(Method::POST, &url).await
    }

    /// `POST /v1/reencrypt`: reads a blob raw (or as base64) from `input` and writes the new
    /// blob to `out` the same way. The server never sends the plaintext; only the new blob is
    /// read from its answer.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn reencrypt(
        &self,
        request: &Reencrypt,
        input: &mut impl Read,
        base64: bool,
        out: &mut impl Write,
    ) -> Result<(), ClientError> {
        let mut data = Vec::new();
        input.take(1 << 20).read_to_end(&mut data)?;
        let ct = if base64 {
            String::from_utf8_lossy(&data).trim().to_owned()
        } else {
            STANDARD.encode(&data)
        };
        let body = ReencryptRequest {
            ciphertext: ct,
            context: &request.context,
            destination_key: request.destination_key.clone(),
            destination_context: request.destination_context.as_ref(),
        };
        let r: ReencryptResponse = self.call_crypto("/v1/reencrypt", &body).await?;
        if base64 {
            writeln!(out, "{}", r.ciphertext)?;
        } else {
            out.write_all(
                &STANDARD
                    .decode(r.ciphertext)
                    .map_err(|_| ClientError::BadBase64("ciphertext"))?,
            )?;
        }
        out.flush()?;
        Ok(())
    }

    /// `POST /v1/aliases`
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn create_alias(&self, name: &str, key: &str) -> Result<Value, ClientError> {
        let body = CreateAliasRequest {
            name: name.to_owned(),
            key: key.to_owned(),
        };
        self.call_typed(Method::POST, "/v1/aliases", &body).await
    }

    /// `PUT /v1/aliases/{name}`: points the alias at `key`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn repoint_alias(&self, name: &str, key: &str) -> Result<Value, ClientError> {
        let body = RepointAliasRequest {
            key: key.to_owned(),
        };
        self.call_typed(Method::PUT, &alias_url(name)?, &body).await
    }

    /// `GET /v1/aliases/{name}`
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn show_alias(&self, name: &str) -> Result<Value, ClientError> {
        self.call(Method::GET, &alias_url(name)?).await
    }

    /// `GET /v1/aliases`
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn list_aliases(&self) -> Result<Value, ClientError> {
        self.call(Method::GET, "/v1/aliases").await
    }

    /// `DELETE /v1/aliases/{name}` (answered 204, no body).
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn delete_alias(&self, name: &str) -> Result<(), ClientError> {
        self.execute(Method::DELETE, &alias_url(name)?, None)
            .await?;
        Ok(())
    }

    /// `GET /v1/jobs?state=&limit=`
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn list_jobs(
        &self,
        state: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Value, ClientError> {
        let mut q = Vec::new();
        if let Some(s) = state {
            q.push(format!("state={}", urlencode(s)));
        }
        if let Some(l) = limit {
            q.push(format!("limit={l}"));
        }
        let path = if q.is_empty() {
            "/v1/jobs".to_owned()
        } else {
            format!("/v1/jobs?{}", q.join("&"))
        };
        self.call(Method::GET, &path).await
    }

    /// `GET /v1/jobs/{id}`
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn job(&self, id: &str) -> Result<Job, ClientError> {
        let url = format!("/v1/jobs/{}", segment("job id", id)?);
        self.call(Method::GET, &url).await
    }

    /// Polls `GET /v1/jobs/{id}` every `interval` until the job is no longer `running`,
    /// reporting each poll to `watcher`. Returns the final job. Once one poll succeeded, polls
    /// that fail with an unreachable server or a 503 are retried for up to 30 s
    /// (`WATCH_OUTAGE`; reported once to `watcher`), so a server restart does not end the watch.
    ///
    /// # Errors
    /// [`ClientError`]: the last poll error once the outage lasts too long, or any other API
    /// error; the watcher's I/O errors.
    pub async fn watch_job(
        &self,
        id: &str,
        interval: std::time::Duration,
        watcher: &mut impl JobWatcher,
    ) -> Result<Job, ClientError> {
        let mut seen = false;
        let mut failing_since: Option<std::time::Instant> = None;
        loop {
            match self.job(id).await {
                Ok(job) => {
                    seen = true;
                    failing_since = None;
                    if job.state != JobState::Running {
                        watcher.finished(&job)?;
                        return Ok(job);
                    }
                    watcher.progress(&job)?;
                }
                // A server never reached (e.g. a wrong --addr) fails at once.
                Err(e)
                    if seen
                        && transient(&e)
                        && failing_since.is_none_or(|t| t.elapsed() < WATCH_OUTAGE) =>
                {
                    if failing_since.is_none() {
                        failing_since = Some(std::time::Instant::now());
                        watcher.retrying(&format!(
                            "{e}; retrying for up to {} s",
                            WATCH_OUTAGE.as_secs()
                        ))?;
                    }
                }
                Err(e) => {
                    watcher.abandoned()?;
                    return Err(e);
                }
            }
            tokio::time::sleep(interval).await;
        }
    }
}

/// Where [`Client::watch_job`] reports what it sees.
pub trait JobWatcher {
    /// The job, still running, as last polled.
    ///
    /// # Errors
    /// Output errors.
    fn progress(&mut self, job: &Job) -> std::io::Result<()>;
    /// The job, no longer running.
    ///
    /// # Errors
    /// Output errors.
    fn finished(&mut self, job: &Job) -> std::io::Result<()>;
    /// A poll failed and will be retried (`note` says why and for how long).
    ///
    /// # Errors
    /// Output errors.
    fn retrying(&mut self, note: &str) -> std::io::Result<()>;
    /// The watch ends on an error.
    ///
    /// # Errors
    /// Output errors.
    fn abandoned(&mut self) -> std::io::Result<()>;
}

/// A [`JobWatcher`] writing each [`progress_line`] to a writer: redrawn in place when `redraw`
/// (a terminal), else a new line whenever the counts or state change.
pub struct LineWatcher<W> {
    out: W,
    redraw: bool,
    shown: Option<(JobState, u64, u64, u64)>,
    open_line: bool,
}

impl<W: Write> LineWatcher<W> {
    /// Lines on `out`, redrawn in place when `redraw`.
    pub fn new(out: W, redraw: bool) -> Self {
        Self {
            out,
            redraw,
            shown: None,
            open_line: false,
        }
    }

    fn close_line(&mut self) -> std::io::Result<()> {
        if self.open_line {
            writeln!(self.out)?;
            self.open_line = false;
        }
        Ok(())
    }
}

impl<W: Write> JobWatcher for LineWatcher<W> {
    fn progress(&mut self, job: &Job) -> std::io::Result<()> {
        let line = progress_line(job);
        if self.redraw {
            // Return to the start of the line and clear it, then draw.
            write!(self.out, "\r\x1b[2K{line}")?;
            self.open_line = true;
        } else if self.shown.as_ref() != Some(&progress_key(job)) {
            writeln!(self.out, "{line}")?;
            self.shown = Some(progress_key(job));
        }
        self.out.flush()
    }

    fn finished(&mut self, job: &Job) -> std::io::Result<()> {
        self.progress(job)?;
        self.close_line()
    }

    fn retrying(&mut self, note: &str) -> std::io::Result<()> {
        self.close_line()?;
        writeln!(self.out, "{note}")?;
        // The progress line is printed again once the server answers.
        self.shown = None;
        self.out.flush()
    }

    fn abandoned(&mut self) -> std::io::Result<()> {
        self.close_line()
    }
}

impl Client {
    /// `POST /v1/principals`: a principal with `attributes` (`k=v` pairs) and `policies`.
    ///
    /// # Errors
    /// [`ClientError`]; `BadAttribute`, `DuplicateAttributeKey` before any request.
    pub async fn create_principal(
        &self,
        name: &str,
        attributes: &[String],
        policies: &[String],
    ) -> Result<Value, ClientError> {
        let body = CreatePrincipalRequest {
            name: name.to_owned(),
            attributes: Some(self::attributes(attributes)?),
            policies: Some(policies.to_vec()),
        };
        self.call_typed(Method::POST, "/v1/principals", &body).await
    }

    /// `GET /v1/principals`
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn list_principals(&self) -> Result<Value, ClientError> {
        self.call(Method::GET, "/v1/principals").await
    }

    /// `GET /v1/principals/{name}`
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn show_principal(&self, name: &str) -> Result<Value, ClientError> {
        self.call(Method::GET, &principal_url(name)?).await
    }

    /// `PATCH /v1/principals/{name}`
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn update_principal(
        &self,
        name: &str,
        change: &PrincipalChange,
    ) -> Result<Value, ClientError> {
        let url = principal_url(name)?;
        self.call_typed(Method::PATCH, &url, &change.body()?).await
    }

    /// `DELETE /v1/principals/{name}` (answered 204; the principal's tokens are revoked).
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn delete_principal(&self, name: &str) -> Result<(), ClientError> {
        self.execute(Method::DELETE, &principal_url(name)?, None)
            .await?;
        Ok(())
    }

    /// `PUT /v1/policies/{name}`: `document` is sent as it is; the server validates it.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn put_policy(&self, name: &str, document: Vec<u8>) -> Result<Value, ClientError> {
        self.send(Method::PUT, &policy_url(name)?, Some(document))
            .await
    }

    /// `GET /v1/policies`
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn list_policies(&self) -> Result<Value, ClientError> {
        self.call(Method::GET, "/v1/policies").await
    }

    /// `GET /v1/policies/{name}`
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn show_policy(&self, name: &str) -> Result<Value, ClientError> {
        self.call(Method::GET, &policy_url(name)?).await
    }

    /// `DELETE /v1/policies/{name}` (answered 204).
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn delete_policy(&self, name: &str) -> Result<(), ClientError> {
        self.execute(Method::DELETE, &policy_url(name)?, None)
            .await?;
        Ok(())
    }

    /// `POST /v1/policies/explain`
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn explain(&self, question: &Explain) -> Result<Value, ClientError> {
        self.call_typed(Method::POST, "/v1/policies/explain", &question.body())
            .await
    }

    /// `POST /v1/tokens`: a new token for `principal`, shown once.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn create_token(
        &self,
        principal: &str,
        ttl: Option<&str>,
        description: &str,
    ) -> Result<MintedToken, ClientError> {
        let body = CreateTokenRequest {
            principal: principal.to_owned(),
            ttl,
            description: description.to_owned(),
        };
        let mut out: TokenCreated = self.call_typed(Method::POST, "/v1/tokens", &body).await?;
        Ok(MintedToken {
            info: out.info(),
            // Moved, not copied: the String now belongs to the zeroising `BearerToken`.
            token: BearerToken::new(std::mem::take(&mut *out.token)),
        })
    }

    /// `GET /v1/tokens[?principal=]`: metadata only, never token text.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn list_tokens(&self, principal: Option<&str>) -> Result<Value, ClientError> {
        let path = match principal {
            Some(p) => format!("/v1/tokens?principal={}", urlencode(p)),
            None => "/v1/tokens".to_owned(),
        };
        self.call(Method::GET, &path).await
    }

    /// `DELETE /v1/tokens/{id}` (answered 204).
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn revoke_token(&self, id: &str) -> Result<(), ClientError> {
        let url = format!("/v1/tokens/{}", segment("token id", id)?);
        self.execute(Method::DELETE, &url, None).await?;
        Ok(())
    }

    /// `POST /v1/access-keys`: a new AWS SigV4 access key for `principal`, its secret shown
    /// once.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn create_access_key(
        &self,
        principal: &str,
        key: Option<&str>,
        ttl: Option<&str>,
        description: &str,
    ) -> Result<MintedAccessKey, ClientError> {
        let body = crate::api_types::access_keys::CreateAccessKeyRequest {
            principal: principal.to_owned(),
            key: key.map(str::to_owned),
            ttl,
            description: description.to_owned(),
        };
        let mut out: crate::api_types::access_keys::AccessKeyCreated<
            serde_json::Map<String, Value>,
        > = self
            .call_typed(Method::POST, "/v1/access-keys", &body)
            .await?;
        let id = out
            .info
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        Ok(MintedAccessKey {
            id,
            // Moved, not copied: the String now belongs to the zeroising wrapper.
            secret: BearerToken::new(std::mem::take(&mut *out.secret_access_key)),
            info: Value::Object(out.info),
        })
    }

    /// `GET /v1/access-keys[?principal=]`: metadata only, never a secret.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn list_access_keys(&self, principal: Option<&str>) -> Result<Value, ClientError> {
        let path = match principal {
            Some(p) => format!("/v1/access-keys?principal={}", urlencode(p)),
            None => "/v1/access-keys".to_owned(),
        };
        self.call(Method::GET, &path).await
    }

    /// `DELETE /v1/access-keys/{id}` (answered 204).
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn revoke_access_key(&self, id: &str) -> Result<(), ClientError> {
        let url = format!("/v1/access-keys/{}", segment("access key id", id)?);
        self.execute(Method::DELETE, &url, None).await?;
        Ok(())
    }

    /// Checks that the server accepts this client's token with `GET /v1/keys?limit=1`.
    /// Authentication is what is checked: lists answer every authenticated principal (with the
    /// items it may read), and a 403 from an older server that authorised lists as a whole
    /// still means the token is valid.
    ///
    /// # Errors
    /// `TokenRefused` on 401; any other [`ClientError`] as it came (nothing is known then).
    pub async fn check_token(&self) -> Result<TokenCheck, ClientError> {
        match self.list_keys(Some(1), None).await {
            Ok(_) => Ok(TokenCheck::KeyReadAllowed),
            Err(ClientError::Client(custodian_client::Error::Api { status, .. }))
                if status == StatusCode::FORBIDDEN =>
            {
                Ok(TokenCheck::KeyReadDenied)
            }
            Err(ClientError::Client(custodian_client::Error::Api {
                status,
                code,
                message,
                ..
            })) if status == StatusCode::UNAUTHORIZED => {
                Err(ClientError::TokenRefused { code, message })
            }
            Err(e) => Err(e),
        }
    }
}

/// Filters of `GET /v1/audit/events`; `None` leaves a filter out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Records after this sequence (the `next_after` of the previous page).
    pub after: Option<u64>,
    /// Page size (1 to 1000; server default 100).
    pub limit: Option<u32>,
    /// Only this principal.
    pub principal: Option<String>,
    /// Only this key id.
    pub key: Option<String>,
    /// Only this policy action.
    pub action: Option<String>,
    /// Only this outcome (`success`, `denied`, `unauthenticated`, `rejected`, `failed`).
    pub outcome: Option<String>,
    /// Only records at or after this RFC 3339 time.
    pub since: Option<String>,
    /// Only records before this RFC 3339 time.
    pub until: Option<String>,
}

impl AuditQuery {
    /// `/v1/audit/events?…` with every filter that is set, percent-encoded.
    pub fn url(&self) -> String {
        let mut q = Vec::new();
        if let Some(a) = self.after {
            q.push(format!("after={a}"));
        }
        if let Some(l) = self.limit {
            q.push(format!("limit={l}"));
        }
        for (name, value) in [
            ("principal", &self.principal),
            ("key", &self.key),
            ("action", &self.action),
            ("outcome", &self.outcome),
            ("since", &self.since),
            ("until", &self.until),
        ] {
            if let Some(v) = value {
                q.push(format!("{name}={}", urlencode(v)));
            }
        }
        if q.is_empty() {
            "/v1/audit/events".to_owned()
        } else {
            format!("/v1/audit/events?{}", q.join("&"))
        }
    }
}

/// `/v1/audit/export` with `after` and `until` when set.
fn export_url(after: Option<u64>, until: Option<u64>) -> String {
    let q: Vec<String> = [("after", after), ("until", until)]
        .into_iter()
        .filter_map(|(n, v)| v.map(|v| format!("{n}={v}")))
        .collect();
    if q.is_empty() {
        "/v1/audit/export".to_owned()
    } else {
        format!("/v1/audit/export?{}", q.join("&"))
    }
}

impl Client {
    /// `GET /v1/audit/events`: one page of records and, unless it is the last, `next_after`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn audit_events(&self, query: &AuditQuery) -> Result<Value, ClientError> {
        self.call(Method::GET, &query.url()).await
    }

    /// `GET /v1/audit/export[?after=&until=]`: streams the JSON Lines body into `out` chunk by
    /// chunk as it arrives (never the whole export in memory). Without `until` the server signs
    /// a checkpoint first, so the export ends on one.
    ///
    /// # Errors
    /// [`ClientError`]: an API error before anything is written, `Http` when the body stops
    /// early (whatever arrived is already in `out`), `Io` when `out` fails.
    pub async fn audit_export(
        &self,
        after: Option<u64>,
        until: Option<u64>,
        out: &mut impl Write,
    ) -> Result<(), ClientError> {
        let mut res = self
            .execute(Method::GET, &export_url(after, until), None)
            .await?;
        while let Some(chunk) = res.chunk().await.map_err(custodian_client::Error::from)? {
            out.write_all(&chunk)?;
        }
        out.flush()?;
        Ok(())
    }

    /// `GET /v1/audit/public-key`: the PEM text of the audit signing key.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn audit_public_key(&self) -> Result<String, ClientError> {
        Ok(self
            .execute(Method::GET, "/v1/audit/public-key", None)
            .await?
            .text()
            .await
            .map_err(custodian_client::Error::from)?)
    }

    /// `POST /v1/audit/archive`: removes the records up to the checkpoint `through`, given the
    /// SHA-256 of their export; returns the archive record.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn audit_archive(
        &self,
        through: u64,
        export_sha256: &str,
    ) -> Result<AuditArchive, ClientError> {
        let body = AuditArchiveRequest {
            through,
            export_sha256: export_sha256.to_owned(),
        };
        self.call_typed(Method::POST, "/v1/audit/archive", &body)
            .await
    }

    /// `GET /v1/custody/report`: the signed envelope, byte for byte as the server sent it (the
    /// signed payload inside it must not pass through a JSON re-encoder).
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn custody_report(&self) -> Result<Vec<u8>, ClientError> {
        Ok(self
            .execute(Method::GET, "/v1/custody/report", None)
            .await?
            .bytes()
            .await
            .map_err(custodian_client::Error::from)?
            .to_vec())
    }
}

/// `/v1/principals/{name}`, the name percent-encoded.
fn principal_url(name: &str) -> Result<String, ClientError> {
    Ok(format!("/v1/principals/{}", segment("principal", name)?))
}

/// `/v1/policies/{name}`, the name percent-encoded (see [`check_policy_name`]).
fn policy_url(name: &str) -> Result<String, ClientError> {
    check_policy_name(name)?;
    Ok(format!("/v1/policies/{}", segment("policy", name)?))
}

/// Refuses, before any request, the policy names no URL can address: `explain`
/// (`/v1/policies/explain` is the explain route) and empty, `.` or `..`. The server checks every
/// other rule.
///
/// # Errors
/// `ReservedPolicyName`, `InvalidName`.
pub fn check_policy_name(name: &str) -> Result<(), ClientError> {
    if name == "explain" {
        return Err(ClientError::ReservedPolicyName);
    }
    segment("policy", name)?;
    Ok(())
}

/// `/v1/aliases/{name}`, the name percent-encoded.
fn alias_url(name: &str) -> Result<String, ClientError> {
    Ok(format!("/v1/aliases/{}", segment("alias", name)?))
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A request body as the JSON it is sent as.
    fn wire<T: Serialize>(body: T) -> Value {
        serde_json::to_value(body).unwrap()
    }

    #[test]
    fn create_key_sends_backend_and_mode_only_when_given() {
        let none = KeyPlacementArgs::default();
        assert_eq!(
            serde_json::to_value(create_key_body("k", "", &none)).unwrap(),
            json!({"name": "k", "description": ""})
        );
        let tpm = KeyPlacementArgs {
            backend: Some(BackendKind::Tpm),
            mode: None,
        };
        assert_eq!(
            serde_json::to_value(create_key_body("k", "d", &tpm)).unwrap(),
            json!({"name": "k", "description": "d", "backend": "tpm"})
        );
        let both = KeyPlacementArgs {
            backend: Some(BackendKind::Pkcs11),
            mode: Some(WrapMode::Cached),
        };
        assert_eq!(
            serde_json::to_value(create_key_body("k", "", &both)).unwrap(),
            json!({"name": "k", "description": "", "backend": "pkcs11", "mode": "cached"})
        );
    }

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
    fn audit_urls_carry_only_the_filters_set() {
        assert_eq!(AuditQuery::default().url(), "/v1/audit/events");
        let q = AuditQuery {
            after: Some(10),
            limit: Some(5),
            principal: Some("billing app".into()),
            key: None,
            action: Some("datakey:generate".into()),
            outcome: Some("denied".into()),
            since: Some("2026-11-27T12:00:00+01:00".into()),
            until: None,
        };
        assert_eq!(
            q.url(),
            "/v1/audit/events?after=10&limit=5&principal=billing%20app\
             &action=datakey%3Agenerate&outcome=denied&since=2026-11-27T12%3A00%3A00%2B01%3A00"
        );
        assert_eq!(export_url(None, None), "/v1/audit/export");
        assert_eq!(export_url(Some(3), None), "/v1/audit/export?after=3");
        assert_eq!(
            export_url(Some(3), Some(9)),
            "/v1/audit/export?after=3&until=9"
        );
    }

    #[test]
    fn keys_and_aliases_are_one_encoded_segment() {
        assert_eq!(key_url("billing").unwrap(), "/v1/keys/billing");
        assert_eq!(
            key_url("alias/current").unwrap(),
            "/v1/keys/alias%2Fcurrent"
        );
        assert_eq!(
            key_url("7c9e6679-7425-40de-944b-e07fc1f90ae7").unwrap(),
            "/v1/keys/7c9e6679-7425-40de-944b-e07fc1f90ae7"
        );
        // Nothing a caller types can add a segment or a query.
        assert_eq!(
            key_url("a/../b?x#y").unwrap(),
            "/v1/keys/a%2F..%2Fb%3Fx%23y"
        );
        assert_eq!(alias_url("a/b").unwrap(), "/v1/aliases/a%2Fb");
        // Dot segments would be resolved away by the URL parser: refused before sending.
        for bad in ["", ".", ".."] {
            assert!(matches!(
                key_url(bad),
                Err(custodian_client::Error::InvalidName { what: "key", .. })
            ));
            assert!(alias_url(bad).is_err());
            assert!(segment("job id", bad).is_err());
        }
    }

    #[test]
    fn key_changes_send_only_what_is_set() {
        assert_eq!(wire(KeyChange::default().body()), json!({}));
        let all = KeyChange {
            description: Some("d".into()),
            rotation_period: Some(Some("90d".into())),
            min_decryption_version: Some(2),
        };
        assert_eq!(
            wire(all.body()),
            json!({"description": "d", "rotation_period": "90d", "min_decryption_version": 2})
        );
        let off = KeyChange {
            rotation_period: Some(None),
            ..KeyChange::default()
        };
        assert_eq!(wire(off.body()), json!({"rotation_period": null}));
    }

    /// A job answer with the members `progress` sets.
    fn job(progress: Value) -> Job {
        let mut v = json!({
            "id": "j1", "kind": "rewrap", "key_id": "6f1c1a2e-8f5e-4a63-9d55-0c1f5b8e2a10",
            "target_version": 2, "state": "running", "done": 0, "failed_items": 0,
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
            "versions": [], "remaining": 0, "rate_per_second": 0.0
        });
        for (k, x) in progress.as_object().into_iter().flatten() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn progress_lines_show_counts_percent_and_rate() {
        let running = job(json!({
            "id": "j1", "state": "running", "done": 250, "remaining": 750,
            "failed_items": 0, "rate_per_second": 125.0
        }));
        assert_eq!(
            progress_line(&running),
            "job j1 running: 250/1000 re-wrapped (25.0%), 125.0/s, ~6s left"
        );
        let finished = job(json!({
            "id": "j1", "state": "completed", "done": 998, "remaining": 2,
            "failed_items": 2, "rate_per_second": 99.8
        }));
        assert_eq!(
            progress_line(&finished),
            "job j1 completed: 998/1000 re-wrapped (99.8%), 99.8/s, 2 failed"
        );
        // Nothing to move: complete, not a division by zero.
        let empty = job(json!({
            "id": "j2", "state": "completed", "done": 0, "remaining": 0,
            "failed_items": 0, "rate_per_second": 0.0
        }));
        assert_eq!(
            progress_line(&empty),
            "job j2 completed: 0/0 re-wrapped (100.0%), 0.0/s"
        );
        // The rate alone does not make a new line when the output cannot be redrawn.
        let mut later = running.clone();
        later.rate_per_second = 3.0;
        assert_eq!(progress_key(&running), progress_key(&later));
        later.done = 251;
        assert_ne!(progress_key(&running), progress_key(&later));
    }

    #[test]
    fn only_unreachable_servers_and_503s_are_retried_while_watching() {
        let api = |status| {
            ClientError::Client(custodian_client::Error::Api {
                status,
                code: "x".into(),
                message: "m".into(),
                request_id: String::new(),
                current_version: None,
                retry_after: None,
            })
        };
        assert!(transient(&api(StatusCode::SERVICE_UNAVAILABLE)));
        assert!(!transient(&api(StatusCode::NOT_FOUND)));
        assert!(!transient(&ClientError::NoToken));
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
        assert_eq!(wire(MetadataChange::default().body().unwrap()), json!({}));
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
            wire(change.body().unwrap()),
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
            wire(stop.body().unwrap()),
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
    fn tokens_come_from_the_environment_then_the_file_then_the_login_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "  cst_file\n").unwrap();
        let login = dir.path().join("login");
        std::fs::write(&login, "cst_login\n").unwrap();
        let pick = |env, file: Option<&Path>, login: Option<PathBuf>| {
            choose_token(env, file, login).map(|t| t.expose_secret().to_owned())
        };
        let login_some = || Some(login.clone());
        assert_eq!(
            pick(Some(" cst_env "), Some(&file), login_some()).unwrap(),
            "cst_env"
        );
        assert_eq!(
            pick(Some("  "), Some(&file), login_some()).unwrap(),
            "cst_file"
        );
        assert_eq!(pick(None, None, login_some()).unwrap(), "cst_login");
        // A named file that is missing is an error, not a fall-back to the login file.
        let missing = dir.path().join("missing");
        assert!(matches!(
            pick(None, Some(&missing), login_some()),
            Err(ClientError::TokenFile { .. })
        ));
        // No login file (or no HOME): nothing configured.
        assert!(matches!(
            pick(None, None, Some(missing.clone())),
            Err(ClientError::NoToken)
        ));
        assert!(matches!(pick(None, None, None), Err(ClientError::NoToken)));
        std::fs::write(&login, "\n").unwrap();
        assert!(matches!(
            pick(None, None, login_some()),
            Err(ClientError::NoToken)
        ));
    }

    #[test]
    fn login_reads_one_token_line_and_stores_it_0600() {
        let t = read_token_line(&mut &b"cst_abc_def\nsecond line"[..]).unwrap();
        assert_eq!(t.expose_secret(), "cst_abc_def");
        let t = read_token_line(&mut &b"  cst_abc_def  "[..]).unwrap();
        assert_eq!(t.expose_secret(), "cst_abc_def");
        for bad in [
            &b""[..],
            b"\n",
            b"two words\n",
            b"\xff\xfe\n",
            &[b'a'; 129][..],
        ] {
            assert!(
                matches!(read_token_line(&mut &bad[..]), Err(ClientError::NotAToken)),
                "{bad:?}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/token");
        store_token(&path, &BearerToken::new("cst_x".to_owned())).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "cst_x\n");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&dir.path().join("a/b")), 0o700);
        // An existing looser file is replaced, and nothing else is left in the directory.
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        store_token(&path, &BearerToken::new("cst_y".to_owned())).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "cst_y\n");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(
            std::fs::read_dir(dir.path().join("a/b")).unwrap().count(),
            1
        );
        assert!(matches!(
            store_token(dir.path(), &BearerToken::new("cst_z".to_owned())),
            Err(ClientError::TokenStore { .. })
        ));
        // A rename that fails (the name is a directory) leaves no temporary file behind.
        std::fs::create_dir(dir.path().join("a/b/sub")).unwrap();
        std::fs::write(dir.path().join("a/b/sub/keep"), "x").unwrap();
        assert!(matches!(
            store_token(
                &dir.path().join("a/b/sub"),
                &BearerToken::new("cst_z".to_owned())
            ),
            Err(ClientError::TokenStore { .. })
        ));
        let mut left: Vec<_> = std::fs::read_dir(dir.path().join("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        left.sort();
        assert_eq!(left, ["sub", "token"]);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "cst_y\n");
    }

    #[test]
    fn identity_bodies_send_what_is_set() {
        assert_eq!(wire(PrincipalChange::default().body().unwrap()), json!({}));
        let change = PrincipalChange {
            attributes: Some(vec!["tenant=acme".into(), "x=a=b".into()]),
            policies: Some(vec![]),
        };
        assert_eq!(
            wire(change.body().unwrap()),
            json!({"attributes": {"tenant": "acme", "x": "a=b"}, "policies": []})
        );
        let clear = PrincipalChange {
            attributes: Some(vec![]),
            ..PrincipalChange::default()
        };
        assert_eq!(wire(clear.body().unwrap()), json!({"attributes": {}}));
        assert!(matches!(
            attributes(&["a=1".into(), "a=2".into()]),
            Err(ClientError::DuplicateAttributeKey(_))
        ));
        assert!(matches!(
            attributes(&["a".into()]),
            Err(ClientError::BadAttribute(_))
        ));
        let mut q = Explain {
            principal: "p".into(),
            action: "decrypt".into(),
            resource: "key/k".into(),
            context: None,
            source: None,
        };
        assert_eq!(
            wire(q.body()),
            json!({"principal": "p", "action": "decrypt", "resource": "key/k"})
        );
        q.context = Some(json!({"tenant": "acme"}));
        q.source = Some("10.1.2.3".parse().unwrap());
        assert_eq!(wire(q.body())["context"], json!({"tenant": "acme"}));
        assert_eq!(wire(q.body())["source"], "10.1.2.3");
    }

    #[test]
    fn principal_policy_and_token_names_are_one_segment() {
        assert_eq!(principal_url("a/b").unwrap(), "/v1/principals/a%2Fb");
        assert_eq!(policy_url("billing").unwrap(), "/v1/policies/billing");
        assert!(matches!(
            policy_url("explain"),
            Err(ClientError::ReservedPolicyName)
        ));
        assert!(check_policy_name("..").is_err());
        assert!(principal_url(".").is_err());
        assert!(read_policy(&mut &vec![b' '; MAX_POLICY_BYTES + 1][..]).is_err());
        assert_eq!(read_policy(&mut &b"{}"[..]).unwrap(), b"{}");
    }

    #[test]
    fn cas_mismatches_show_the_current_version() {
        let e = ClientError::Client(custodian_client::Error::Api {
            status: StatusCode::CONFLICT,
            code: "cas_mismatch".into(),
            message: "check-and-set failed: the current version is 4".into(),
            request_id: "r1".into(),
            current_version: Some(4),
            retry_after: None,
        });
        assert_eq!(
            e.to_string(),
            "409 Conflict: cas_mismatch: check-and-set failed: the current version is 4 \
             (current_version=4) (request r1)"
        );
    }
}
