//! Validated configuration. Loaded in two stages: [`raw::RawConfig`] from TOML plus
//! `CUSTODIAN__SECTION__KEY` environment overrides, then [`Config::from_raw`] into typed values
//! that cannot hold an invalid state. Relative paths are resolved against the directory of the
//! configuration file (or the working directory when there is no file).

mod error;
pub mod raw;

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use secrecy::SecretString;

pub use error::ConfigError;
use raw::RawConfig;

use crate::domain::KeyRef;
use crate::secret::Pin;
use crate::store::postgres::{PostgresSettings, SslMode};
use zeroize::Zeroizing;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP server settings.
    pub server: ServerConfig,
    /// Where metadata is stored.
    pub store: StoreConfig,
    /// Which device holds the master keys.
    pub backend: BackendConfig,
    /// Logging.
    pub log: LogConfig,
    /// Secrets store.
    pub secrets: SecretsConfig,
    /// Key lifecycle.
    pub keys: KeysConfig,
    /// Audit log.
    pub audit: crate::audit::AuditSettings,
    /// The TPM, when one is configured.
    pub tpm: Option<TpmSettings>,
    /// The Vault-compatible front door; `None` when disabled.
    pub vault: Option<crate::vault::Mounts>,
    /// The AWS KMS-compatible front door.
    pub aws: AwsConfig,
}

/// The AWS KMS-compatible front door's settings (`[aws]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsConfig {
    /// ARN partition (`aws`).
    pub partition: String,
    /// ARN region, and the region clients must sign for (`us-east-1`).
    pub region: String,
    /// ARN account, 12 digits (`000000000000`).
    pub account: String,
    /// The key access keys' secrets are sealed under when a request names none.
    pub access_key_key: Option<KeyRef>,
}

impl Default for AwsConfig {
    fn default() -> Self {
        Self {
            partition: "aws".to_owned(),
            region: "us-east-1".to_owned(),
            account: "000000000000".to_owned(),
            access_key_key: None,
        }
    }
}

impl AwsConfig {
    /// The ARN of key `id`.
    pub fn key_arn(&self, id: &str) -> String {
        format!(
            "arn:{}:kms:{}:{}:key/{id}",
            self.partition, self.region, self.account
        )
    }

    /// The ARN of alias `name` (without `alias/`).
    pub fn alias_arn(&self, name: &str) -> String {
        format!(
            "arn:{}:kms:{}:{}:alias/{name}",
            self.partition, self.region, self.account
        )
    }
}

/// The TPM's settings (`[tpm]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmSettings {
    /// TCTI configuration string.
    pub tcti: String,
    /// Where the owner auth value comes from, if the owner hierarchy has one.
    pub owner_auth: Option<PinSource>,
    /// Persistent handle of the storage primary, if it is to be persisted.
    pub primary_handle: Option<u32>,
}

/// The GCM nonce budget of one key version with random 96-bit IVs (NIST SP 800-38D): 2^32.
pub const MAX_WRAPS_PER_VERSION: u64 = 1 << 32;

/// Key lifecycle settings.
#[derive(Debug, Clone)]
pub struct KeysConfig {
    /// Shortest rotation period.
    pub min_rotation_period: Duration,
    /// Automatic rotation threshold.
    pub rotate_after_wraps: u64,
    /// Durable wrap reservation size.
    pub wrap_reservation_block: u64,
    /// Start a re-wrap job after each rotation.
    pub rewrap_after_rotation: bool,
    /// Items per re-wrap batch.
    pub rewrap_batch_size: u32,
    /// Pause between batches.
    pub rewrap_pause: Duration,
    /// Lifecycle worker period.
    pub lifecycle_check_interval: Duration,
    /// Cached mode's version-KEK cache.
    pub kek_cache: crate::backend::cached::KekCacheConfig,
}

/// The re-wrap batch size when `keys.rewrap_batch_size` is not set, for a pause of `pause_ms`
/// between batches. With a pause (the throttle, default 20 ms), 100: a batch holds device
/// sessions for a few milliseconds before the foreground has them back. Without one (0, the
/// throttle off) the job takes the device and the writing connection back to back whatever
/// the size, and 500 spreads each batch's fixed work (the job and lease reads, the announcement,
/// the closing record, one commit) over five times as many items (decision 0025, "A batch's
/// fixed work, and the batch size without a pause").
pub fn default_rewrap_batch_size(pause_ms: u64) -> u32 {
    if pause_ms == 0 {
        500
    } else {
        100
    }
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self {
            min_rotation_period: Duration::from_secs(3600),
            rotate_after_wraps: 1 << 31,
            wrap_reservation_block: 1000,
            rewrap_after_rotation: true,
            rewrap_batch_size: 100,
            rewrap_pause: Duration::from_millis(20),
            lifecycle_check_interval: Duration::from_secs(1),
            kek_cache: crate::backend::cached::KekCacheConfig {
                ttl: Duration::from_secs(300),
                capacity: std::num::NonZeroUsize::MIN.saturating_add(1023),
            },
        }
    }
}

/// Secrets store settings.
#[derive(Debug, Clone)]
pub struct SecretsConfig {
    /// Key (id or name) wrapping data keys of writes that name none.
    pub default_key: Option<KeyRef>,
    /// Largest value, in bytes.
    pub max_value_bytes: usize,
    /// `max_versions` of a new secret (0 = unlimited).
    pub default_max_versions: u32,
    /// Rotation worker period.
    pub rotation_check_interval: Duration,
    /// Shortest `rotate_every` of a generated secret.
    pub min_rotate_every: Duration,
    /// Most versions a generated secret keeps.
    pub max_generated_versions: u32,
}

impl Default for SecretsConfig {
    fn default() -> Self {
        Self {
            default_key: None,
            max_value_bytes: 64 * 1024,
            default_max_versions: 10,
            rotation_check_interval: Duration::from_secs(1),
            min_rotate_every: Duration::from_secs(3600),
            max_generated_versions: 100,
        }
    }
}

/// HTTP server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Largest request body, in bytes.
    pub max_body_bytes: NonZeroUsize,
    /// Per-request deadline.
    pub request_timeout: Duration,
    /// Time to deliver a complete request head (and finish a TLS handshake).
    pub header_read_timeout: Duration,
    /// A connection with no request in flight this long is closed.
    pub idle_timeout: Duration,
    /// Configured connection cap (the cap in force may be lower: see
    /// [`crate::api::serve::effective_caps`]).
    pub max_connections: NonZeroUsize,
    /// Configured cap per source address.
    pub max_connections_per_source: NonZeroUsize,
    /// Whether a crash may write a core dump.
    pub core_dumps: crate::process::CoreDumps,
    /// HTTPS, when configured.
    pub tls: Option<TlsConfig>,
    /// The throttle on unauthenticated requests.
    pub anonymous: AnonymousLimit,
    /// Failed authentications per source (and per token id) and minute before 429.
    pub auth_failures_per_minute: std::num::NonZeroU32,
}

/// How many unauthenticated requests get an audit record each (`[server] anonymous_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnonymousLimit {
    /// Individually audited unauthenticated requests per source and minute.
    pub per_minute: std::num::NonZeroU32,
    /// How often the aggregates of throttled requests are written.
    pub flush_interval: Duration,
    /// Most sources tracked one by one.
    pub max_sources: NonZeroUsize,
}

impl Default for AnonymousLimit {
    /// 60 a minute, flushed every 60 s, 10 000 sources.
    fn default() -> Self {
        Self {
            per_minute: std::num::NonZeroU32::MIN.saturating_add(59),
            flush_interval: Duration::from_secs(60),
            max_sources: NonZeroUsize::MIN.saturating_add(9_999),
        }
    }
}

/// Which subject alternative name of a client certificate names its principal. Exactly one
/// SAN of that type must be present; the subject CN is never used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentitySan {
    /// A URI SAN `custodian:principal:<name>` (other URI SANs, e.g. SPIFFE ids, are ignored).
    Uri,
    /// A DNS SAN; the whole name is the principal name.
    Dns,
}

/// Whether client certificates are required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Accepted when sent; a bearer token works too.
    Optional,
    /// The handshake fails without a certificate from the CA.
    Required,
}

/// HTTPS settings.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// Server certificate chain.
    pub cert_file: PathBuf,
    /// Server private key.
    pub key_file: PathBuf,
    /// Client CA, if client certificates are accepted.
    pub client_ca_file: Option<PathBuf>,
    /// Optional or required.
    pub client_auth: ClientAuth,
    /// Which SAN names the principal.
    pub identity: IdentitySan,
}

/// Storage choice.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// Embedded SQLite database.
    Sqlite {
        /// Database file.
        path: PathBuf,
        /// Most bytes of secret reads kept in memory between writes (0: none; decision 0028).
        secret_cache_bytes: usize,
    },
    /// A PostgreSQL database (several nodes may share it).
    Postgres {
        /// Where and how to connect; the password is read at start-up from `password`.
        settings: PostgresSettings,
        /// Where the password is, if the server asks for one.
        password: Option<SecretSource>,
    },
}

/// Where a secret setting (the database password) is read from at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable.
    Env(String),
    /// A file (mode 0600; trailing newline ignored).
    File(PathBuf),
}

impl SecretSource {
    /// Reads the secret for the setting `field`.
    ///
    /// # Errors
    /// [`ConfigError::Secret`] when the variable is unset, the file unreadable, shared with
    /// group or others, or empty.
    pub fn read(&self, field: &'static str) -> Result<SecretString, ConfigError> {
        let (desc, text) = match self {
            Self::Env(var) => (
                format!("environment variable {var}"),
                std::env::var(var).map_err(|e| e.to_string()),
            ),
            Self::File(path) => (
                format!("file {}", path.display()),
                refuse_shared_pin_file(path)
                    .and_then(|()| std::fs::read_to_string(path).map_err(|e| e.to_string())),
            ),
        };
        let text = Zeroizing::new(text.map_err(|reason| ConfigError::Secret {
            field,
            source_desc: desc.clone(),
            reason,
        })?);
        let value = text.trim_end_matches(['\r', '\n']);
        if value.is_empty() {
            return Err(ConfigError::Secret {
                field,
                source_desc: desc,
                reason: "it is empty".to_owned(),
            });
        }
        Ok(SecretString::from(value.to_owned()))
    }
}

/// Device choice.
#[derive(Debug, Clone)]
pub enum BackendConfig {
    /// A PKCS#11 token.
    Pkcs11(Pkcs11Config),
}

/// How to find the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSelector {
    /// By `CKA_LABEL` of the token (trailing blanks ignored).
    Label(String),
    /// By serial number.
    Serial(String),
}

/// Where the user PIN comes from. Never the command line, never the TOML in clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSource {
    /// An environment variable.
    Env(String),
    /// A file (trailing newline ignored).
    File(PathBuf),
}

impl PinSource {
    /// Reads the PIN.
    ///
    /// # Errors
    /// [`ConfigError::Secret`] when the variable is unset or the file unreadable or empty.
    pub fn read(&self) -> Result<Pin, ConfigError> {
        let (field, desc, text) = match self {
            Self::Env(var) => (
                "backend.user_pin_env",
                format!("environment variable {var}"),
                std::env::var(var).map_err(|e| e.to_string()),
            ),
            Self::File(path) => (
                "backend.user_pin_file",
                format!("file {}", path.display()),
                refuse_shared_pin_file(path)
                    .and_then(|()| std::fs::read_to_string(path).map_err(|e| e.to_string())),
            ),
        };
        let secret_error = |reason: String| ConfigError::Secret {
            field,
            source_desc: desc.clone(),
            reason,
        };
        let mut text = text.map_err(secret_error)?;
        let trimmed_len = text.trim_end_matches(['\n', '\r']).len();
        text.truncate(trimmed_len);
        if text.is_empty() {
            return Err(secret_error("it is empty".to_owned()));
        }
        Ok(SecretString::from(text))
    }
}

/// Refuses a PIN file that group or others may read or write (any bit of 0o077): the server
/// does not start on it, and `token init` does not use it. The reason names the mode and the
/// fix. (Secret volumes that mount files 0644, such as Kubernetes' default, are set to 0400 or
/// 0600 with the volume's `defaultMode`; see decision 0014.)
///
/// The mode is that of the file a symbolic link leads to. A file that cannot be examined is
/// left to the read that follows, which reports why.
fn refuse_shared_pin_file(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
            let mode = meta.permissions().mode() & 0o777;
            Err(format!(
                "its mode is {mode:04o}, which lets group or others read or write the PIN; \
                 run `chmod 600 {}` (owner read/write only) and start again",
                path.display()
            ))
        }
        _ => Ok(()),
    }
}

/// `[store]` validated: the kind, and for PostgreSQL everything but the password's value.
fn store_config(
    raw: raw::RawStore,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<StoreConfig, ConfigError> {
    let invalid = |field: &'static str, reason: &str| ConfigError::Invalid {
        field,
        reason: reason.to_owned(),
    };
    match raw.kind.as_str() {
        "sqlite" => {
            return Ok(StoreConfig::Sqlite {
                path: resolve(&raw.path),
                secret_cache_bytes: raw
                    .secret_cache_bytes
                    .unwrap_or(crate::store::sqlite::DEFAULT_READ_CACHE_BYTES),
            })
        }
        "postgres" if raw.secret_cache_bytes.is_some() => {
            // Other nodes write a shared database behind this node's back: no read is kept.
            return Err(invalid(
                "store.secret_cache_bytes",
                "applies to kind = \"sqlite\" only",
            ));
        }
        "postgres" => {}
        _ => return Err(invalid("store.kind", "must be \"sqlite\" or \"postgres\"")),
    }
    let url = raw
        .url
        .filter(|u| !u.is_empty())
        .ok_or_else(|| invalid("store.url", "required for kind = \"postgres\""))?;
    let parsed: tokio_postgres::Config = url.parse().map_err(|_| {
        invalid(
            "store.url",
            "not a PostgreSQL URL (postgres://user@host:port/db)",
        )
    })?;
    if parsed.get_password().is_some() {
        return Err(invalid(
            "store.url",
            "must not contain a password; use store.password_file or store.password_env",
        ));
    }
    let password = match (raw.password_env, raw.password_file) {
        (None, None) => None,
        (Some(var), None) if !var.is_empty() => Some(SecretSource::Env(var)),
        (None, Some(path)) => Some(SecretSource::File(resolve(&path))),
        _ => {
            return Err(invalid(
                "store.password_env",
                "set at most one of password_env and password_file",
            ))
        }
    };
    if raw.pool_size == 0 || raw.pool_size > 1024 {
        return Err(invalid("store.pool_size", "must be 1 to 1024"));
    }
    let connect_timeout = crate::domain::secret::HumanDuration::parse(&raw.connect_timeout)
        .map(|d| d.0)
        .ok()
        .filter(|d| !d.is_zero() && *d <= Duration::from_secs(300))
        .ok_or_else(|| {
            invalid(
                "store.connect_timeout",
                "a duration from 1ms to 300s, e.g. \"5s\"",
            )
        })?;
    let sslmode = match (raw.sslmode.as_str(), raw.ca_file) {
        ("disable", None) => SslMode::Disable,
        ("require", None) => SslMode::Require,
        ("verify-full", Some(ca)) => SslMode::VerifyFull {
            ca_file: resolve(&ca),
        },
        ("verify-full", None) => {
            return Err(invalid(
                "store.ca_file",
                "required for sslmode = \"verify-full\"",
            ))
        }
        ("disable" | "require", Some(_)) => {
            return Err(invalid(
                "store.ca_file",
                "only used with sslmode = \"verify-full\"",
            ))
        }
        _ => {
            return Err(invalid(
                "store.sslmode",
                "must be \"disable\", \"require\" or \"verify-full\"",
            ))
        }
    };
    let mut settings = PostgresSettings::new(url);
    settings.pool_size = raw.pool_size;
    settings.connect_timeout = connect_timeout;
    settings.sslmode = sslmode;
    Ok(StoreConfig::Postgres { settings, password })
}

/// The mechanism the device uses to wrap data keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrapMechanism {
    /// `CKM_AES_GCM` through `C_Encrypt`/`C_Decrypt`, header ‖ context as AAD.
    AesGcm,
}

/// Where random bytes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RandomSource {
    /// The operating system's CSPRNG (`getrandom`).
    Host,
    /// The device RNG (`C_GenerateRandom`).
    DeviceRng,
}

/// PKCS#11 backend settings.
#[derive(Debug, Clone)]
pub struct Pkcs11Config {
    /// Module path.
    pub module: PathBuf,
    /// Token selector.
    pub token: TokenSelector,
    /// Where the user PIN comes from.
    pub pin: PinSource,
    /// Session pool size.
    pub sessions: NonZeroUsize,
    /// Wrapping mechanism.
    pub mechanism: WrapMechanism,
    /// IV source for GCM.
    pub iv_source: RandomSource,
    /// Data key source.
    pub data_key_source: RandomSource,
    /// First re-initialisation back-off.
    pub reinit_backoff_initial: Duration,
    /// Longest re-initialisation back-off.
    pub reinit_backoff_max: Duration,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging settings.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// Default filter directive.
    pub filter: String,
}

/// Environment variable prefix for overrides: `CUSTODIAN__BACKEND__SESSIONS=8`.
pub const ENV_PREFIX: &str = "CUSTODIAN__";

impl Config {
    /// Loads `file` (if given), applies environment overrides, validates.
    ///
    /// # Errors
    /// [`ConfigError`] naming the field path at fault.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        let base = match file {
            Some(path) => {
                if !path.exists() {
                    return Err(ConfigError::MissingFile(path.to_owned()));
                }
                figment = figment.merge(Toml::file_exact(path));
                path.parent().map(Path::to_owned).unwrap_or_default()
            }
            None => PathBuf::new(),
        };
        let raw: RawConfig = figment
            .merge(Env::prefixed(ENV_PREFIX).split("__"))
            .extract()
            .map_err(Box::new)?;
        Self::from_raw(raw, &base)
    }

    /// Validates a raw configuration; relative paths are joined to `base`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the field path at fault.
    pub fn from_raw(raw: RawConfig, base: &Path) -> Result<Self, ConfigError> {
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            }
        };
        let invalid = |field: &'static str, reason: &str| ConfigError::Invalid {
            field,
            reason: reason.to_owned(),
        };

        let listen = raw
            .server
            .listen
            .parse::<SocketAddr>()
            .map_err(|e| invalid("server.listen", &e.to_string()))?;
        let max_body_bytes = NonZeroUsize::new(raw.server.max_body_bytes)
            .filter(|n| n.get() <= 16 * 1024 * 1024)
            .ok_or_else(|| invalid("server.max_body_bytes", "must be 1 to 16777216"))?;
        if raw.server.request_timeout_ms == 0 {
            return Err(invalid("server.request_timeout_ms", "must be at least 1"));
        }
        let timeout_ms = |field: &'static str, ms: u64| {
            if (100..=3_600_000).contains(&ms) {
                Ok(Duration::from_millis(ms))
            } else {
                Err(invalid(field, "must be 100 to 3600000"))
            }
        };
        let header_read_timeout = timeout_ms(
            "server.header_read_timeout_ms",
            raw.server.header_read_timeout_ms,
        )?;
        let idle_timeout = timeout_ms("server.idle_timeout_ms", raw.server.idle_timeout_ms)?;
        let max_connections = NonZeroUsize::new(raw.server.max_connections)
            .filter(|n| n.get() <= 1_000_000)
            .ok_or_else(|| invalid("server.max_connections", "must be 1 to 1000000"))?;
        let max_connections_per_source = NonZeroUsize::new(raw.server.max_connections_per_source)
            .filter(|n| *n <= max_connections)
            .ok_or_else(|| {
                invalid(
                    "server.max_connections_per_source",
                    "must be 1 to server.max_connections",
                )
            })?;
        let core_dumps = if raw.server.dangerous_allow_core_dumps {
            crate::process::CoreDumps::DangerousAllowed
        } else {
            crate::process::CoreDumps::Disabled
        };
        let tls = match raw.server.tls {
            None => None,
            Some(t) => {
                let client_auth = match t.client_auth.as_str() {
                    "optional" => ClientAuth::Optional,
                    "required" => ClientAuth::Required,
                    _ => {
                        return Err(invalid(
                            "server.tls.client_auth",
                            "must be \"optional\" or \"required\"",
                        ))
                    }
                };
                let identity = match t.identity.as_str() {
                    "uri" => IdentitySan::Uri,
                    "dns" => IdentitySan::Dns,
                    _ => return Err(invalid("server.tls.identity", "must be \"uri\" or \"dns\"")),
                };
                if client_auth == ClientAuth::Required && t.client_ca_file.is_none() {
                    return Err(invalid(
                        "server.tls.client_ca_file",
                        "required client authentication needs a client CA",
                    ));
                }
                Some(TlsConfig {
                    cert_file: resolve(&t.cert_file),
                    key_file: resolve(&t.key_file),
                    client_ca_file: t.client_ca_file.map(|p| resolve(&p)),
                    client_auth,
                    identity,
                })
            }
        };
        let per_minute = std::num::NonZeroU32::new(raw.server.anonymous_requests_per_minute)
            .filter(|n| n.get() <= 1_000_000)
            .ok_or_else(|| {
                invalid(
                    "server.anonymous_requests_per_minute",
                    "must be 1 to 1000000",
                )
            })?;
        let flush_interval =
            crate::domain::secret::HumanDuration::parse(&raw.server.anonymous_flush_interval)
                .map_err(|e| invalid("server.anonymous_flush_interval", &e.to_string()))?
                .0;
        if flush_interval < Duration::from_secs(1) || flush_interval > Duration::from_secs(3600) {
            return Err(invalid(
                "server.anonymous_flush_interval",
                "must be 1s to 1h",
            ));
        }
        let max_sources = NonZeroUsize::new(raw.server.anonymous_max_sources)
            .filter(|n| n.get() <= 1_000_000)
            .ok_or_else(|| invalid("server.anonymous_max_sources", "must be 1 to 1000000"))?;
        let auth_failures_per_minute =
            std::num::NonZeroU32::new(raw.server.auth_failures_per_minute)
                .filter(|n| n.get() <= 1_000_000)
                .ok_or_else(|| {
                    invalid("server.auth_failures_per_minute", "must be 1 to 1000000")
                })?;
        let server = ServerConfig {
            listen,
            auth_failures_per_minute,
            max_body_bytes,
            request_timeout: Duration::from_millis(raw.server.request_timeout_ms),
            header_read_timeout,
            idle_timeout,
            max_connections,
            max_connections_per_source,
            core_dumps,
            tls,
            anonymous: AnonymousLimit {
                per_minute,
                flush_interval,
                max_sources,
            },
        };

        let store = store_config(raw.store, &resolve)?;

        let b = raw.backend;
        if b.kind != "pkcs11" {
            return Err(invalid("backend.kind", "must be \"pkcs11\""));
        }
        let token = match (b.token_label, b.token_serial) {
            (Some(label), None) if !label.is_empty() => TokenSelector::Label(label),
            (None, Some(serial)) if !serial.is_empty() => TokenSelector::Serial(serial),
            _ => {
                return Err(invalid(
                    "backend.token_label",
                    "set exactly one of token_label and token_serial",
                ))
            }
        };
        let pin = match (b.user_pin_env, b.user_pin_file) {
            (Some(var), None) if !var.is_empty() => PinSource::Env(var),
            (None, Some(path)) => PinSource::File(resolve(&path)),
            _ => {
                return Err(invalid(
                    "backend.user_pin_env",
                    "set exactly one of user_pin_env and user_pin_file",
                ))
            }
        };
        let sessions = NonZeroUsize::new(b.sessions)
            .filter(|n| n.get() <= 256)
            .ok_or_else(|| invalid("backend.sessions", "must be 1 to 256"))?;
        let mechanism = match b.wrap_mechanism.as_str() {
            "aes-gcm" => WrapMechanism::AesGcm,
            _ => return Err(invalid("backend.wrap_mechanism", "must be \"aes-gcm\"")),
        };
        let random = |field: &'static str, v: &str| match v {
            "host" => Ok(RandomSource::Host),
            "device-rng" => Ok(RandomSource::DeviceRng),
            _ => Err(invalid(field, "must be \"host\" or \"device-rng\"")),
        };
        let iv_source = random("backend.iv_source", &b.iv_source)?;
        let data_key_source = random("backend.data_key_source", &b.data_key_source)?;
        if b.reinit_backoff_initial_ms == 0 || b.reinit_backoff_initial_ms > b.reinit_backoff_max_ms
        {
            return Err(invalid(
                "backend.reinit_backoff_initial_ms",
                "must be at least 1 and at most backend.reinit_backoff_max_ms",
            ));
        }
        let backend = BackendConfig::Pkcs11(Pkcs11Config {
            module: resolve(&b.module),
            token,
            pin,
            sessions,
            mechanism,
            iv_source,
            data_key_source,
            reinit_backoff_initial: Duration::from_millis(b.reinit_backoff_initial_ms),
            reinit_backoff_max: Duration::from_millis(b.reinit_backoff_max_ms),
        });

        let format = match raw.log.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => return Err(invalid("log.format", "must be \"text\" or \"json\"")),
        };
        let log = LogConfig {
            format,
            filter: raw.log.filter,
        };

        let s = raw.secrets;
        let default_key = s
            .default_key
            .map(|k| k.parse::<KeyRef>())
            .transpose()
            .map_err(|e| invalid("secrets.default_key", &e.to_string()))?;
        if s.max_value_bytes == 0 || s.max_value_bytes > 1024 * 1024 {
            return Err(invalid("secrets.max_value_bytes", "must be 1 to 1048576"));
        }
        if s.rotation_check_interval_ms < 100 {
            return Err(invalid(
                "secrets.rotation_check_interval_ms",
                "must be at least 100",
            ));
        }
        let min_rotate_every = crate::domain::secret::HumanDuration::parse(&s.min_rotate_every)
            .map_err(|e| invalid("secrets.min_rotate_every", &e.to_string()))?
            .0;
        if min_rotate_every < Duration::from_secs(1) {
            return Err(invalid("secrets.min_rotate_every", "must be at least 1s"));
        }
        if !(1..=10_000).contains(&s.max_generated_versions) {
            return Err(invalid(
                "secrets.max_generated_versions",
                "must be 1 to 10000",
            ));
        }
        let secrets = SecretsConfig {
            default_key,
            max_value_bytes: s.max_value_bytes,
            default_max_versions: s.default_max_versions,
            rotation_check_interval: Duration::from_millis(s.rotation_check_interval_ms),
            min_rotate_every,
            max_generated_versions: s.max_generated_versions,
        };

        let k = raw.keys;
        let min_rotation_period =
            crate::domain::secret::HumanDuration::parse(&k.min_rotation_period)
                .map_err(|e| invalid("keys.min_rotation_period", &e.to_string()))?
                .0;
        if k.wrap_reservation_block == 0 || k.wrap_reservation_block > 1_000_000 {
            return Err(invalid(
                "keys.wrap_reservation_block",
                "must be 1 to 1000000",
            ));
        }
        if k.rotate_after_wraps == 0
            || k.rotate_after_wraps + 2 * k.wrap_reservation_block > MAX_WRAPS_PER_VERSION
        {
            return Err(invalid(
                "keys.rotate_after_wraps",
                "must be at least 1 and leave two reservation blocks below 2^32",
            ));
        }
        let rewrap_batch_size = k
            .rewrap_batch_size
            .unwrap_or_else(|| default_rewrap_batch_size(k.rewrap_pause_ms));
        if rewrap_batch_size == 0 || rewrap_batch_size > 10_000 {
            return Err(invalid("keys.rewrap_batch_size", "must be 1 to 10000"));
        }
        if k.lifecycle_check_interval_ms < 50 {
            return Err(invalid(
                "keys.lifecycle_check_interval_ms",
                "must be at least 50",
            ));
        }
        let kek_cache_ttl = crate::domain::secret::HumanDuration::parse(&k.kek_cache_ttl)
            .map_err(|e| invalid("keys.kek_cache_ttl", &e.to_string()))?
            .0;
        if kek_cache_ttl > Duration::from_secs(86_400) {
            return Err(invalid("keys.kek_cache_ttl", "must be at most 24h"));
        }
        let kek_capacity = std::num::NonZeroUsize::new(k.kek_cache_capacity)
            .filter(|n| n.get() <= 1_000_000)
            .ok_or_else(|| invalid("keys.kek_cache_capacity", "must be 1 to 1000000"))?;
        let keys = KeysConfig {
            min_rotation_period,
            rotate_after_wraps: k.rotate_after_wraps,
            wrap_reservation_block: k.wrap_reservation_block,
            rewrap_after_rotation: k.rewrap_after_rotation,
            rewrap_batch_size,
            rewrap_pause: Duration::from_millis(k.rewrap_pause_ms),
            lifecycle_check_interval: Duration::from_millis(k.lifecycle_check_interval_ms),
            kek_cache: crate::backend::cached::KekCacheConfig {
                ttl: kek_cache_ttl,
                capacity: kek_capacity,
            },
        };

        let a = raw.audit;
        let checkpoint_interval =
            crate::domain::secret::HumanDuration::parse(&a.checkpoint_interval)
                .map_err(|e| invalid("audit.checkpoint_interval", &e.to_string()))?
                .0;
        if checkpoint_interval < Duration::from_secs(1)
            || checkpoint_interval > Duration::from_secs(86_400)
        {
            return Err(invalid("audit.checkpoint_interval", "must be 1s to 24h"));
        }
        if a.checkpoint_records == 0 || a.checkpoint_records > 1_000_000 {
            return Err(invalid("audit.checkpoint_records", "must be 1 to 1000000"));
        }
        // `0s` is allowed here (every export signs over new records), unlike other durations.
        let export_checkpoint_interval = match a.export_checkpoint_interval.as_str() {
            "0s" | "0" => Duration::ZERO,
            text => {
                crate::domain::secret::HumanDuration::parse(text)
                    .map_err(|e| invalid("audit.export_checkpoint_interval", &e.to_string()))?
                    .0
            }
        };
        if export_checkpoint_interval > Duration::from_secs(86_400) {
            return Err(invalid(
                "audit.export_checkpoint_interval",
                "must be at most 24h",
            ));
        }
        let node = match a.node {
            Some(n) if n.is_empty() || n.len() > 128 || n.chars().any(char::is_control) => {
                return Err(invalid(
                    "audit.node",
                    "must be 1 to 128 printable characters",
                ))
            }
            Some(n) => n,
            None => host_name(),
        };
        let audit = crate::audit::AuditSettings {
            node,
            checkpoint_interval,
            checkpoint_records: a.checkpoint_records,
            export_checkpoint_interval,
        };

        let t = raw.tpm;
        let tpm = match t.tcti {
            None => {
                if t.owner_auth_env.is_some()
                    || t.owner_auth_file.is_some()
                    || t.primary_handle.is_some()
                {
                    return Err(invalid(
                        "tpm.tcti",
                        "set tcti to use the other [tpm] settings",
                    ));
                }
                None
            }
            Some(tcti) => {
                let known = ["device:", "swtpm:", "mssim:", "tabrmd"];
                if !known.iter().any(|k| tcti.starts_with(k)) {
                    return Err(invalid(
                        "tpm.tcti",
                        "must start with device:, swtpm:, mssim: or tabrmd",
                    ));
                }
                let owner_auth = match (t.owner_auth_env, t.owner_auth_file) {
                    (None, None) => None,
                    (Some(var), None) if !var.is_empty() => Some(PinSource::Env(var)),
                    (None, Some(path)) => Some(PinSource::File(resolve(&path))),
                    _ => {
                        return Err(invalid(
                            "tpm.owner_auth_env",
                            "set at most one of owner_auth_env and owner_auth_file",
                        ))
                    }
                };
                let primary_handle = t
                    .primary_handle
                    .map(|h| {
                        u32::from_str_radix(h.trim_start_matches("0x"), 16)
                            .ok()
                            .filter(|h| (0x8100_0000..=0x81FF_FFFF).contains(h))
                            .ok_or_else(|| {
                                invalid(
                                    "tpm.primary_handle",
                                    "must be a persistent handle 0x81000000 to 0x81FFFFFF",
                                )
                            })
                    })
                    .transpose()?;
                Some(TpmSettings {
                    tcti,
                    owner_auth,
                    primary_handle,
                })
            }
        };

        let v = raw.vault;
        let vault = if v.enabled {
            let mount = |field: &'static str, m: &str| {
                crate::vault::Mounts::check(m).map_err(|reason| invalid(field, reason))
            };
            let (transit, kv) = (
                mount("vault.transit_mount", &v.transit_mount)?,
                mount("vault.kv_mount", &v.kv_mount)?,
            );
            if transit == kv {
                return Err(invalid(
                    "vault.kv_mount",
                    "must differ from vault.transit_mount",
                ));
            }
            Some(crate::vault::Mounts { transit, kv })
        } else {
            None
        };

        let a = raw.aws;
        let label = |s: &str, extra: fn(u8) -> bool| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || extra(b))
        };
        if !label(&a.partition, |b| b == b'-') {
            return Err(invalid(
                "aws.partition",
                "must be 1 to 64 lower-case letters, digits or '-'",
            ));
        }
        if !label(&a.region, |b| b == b'-') {
            return Err(invalid(
                "aws.region",
                "must be 1 to 64 lower-case letters, digits or '-'",
            ));
        }
        if a.account.len() != 12 || !a.account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("aws.account", "must be 12 digits"));
        }
        let access_key_key = a
            .access_key_key
            .map(|k| k.parse::<KeyRef>())
            .transpose()
            .map_err(|e| invalid("aws.access_key_key", &e.to_string()))?;
        let aws = AwsConfig {
            partition: a.partition,
            region: a.region,
            account: a.account,
            access_key_key,
        };

        Ok(Self {
            server,
            store,
            backend,
            log,
            secrets,
            keys,
            audit,
            tpm,
            vault,
            aws,
        })
    }
}

/// The host name as the kernel reports it, or `custodian` when it cannot be read.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty() && s.len() <= 128)
        .unwrap_or_else(|| "custodian".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = Figment::new()
            .merge(Toml::string(toml))
            .extract()
            .map_err(Box::new)?;
        Config::from_raw(raw, Path::new("/etc/custodian"))
    }

    const MINIMAL: &str = r#"
        [backend]
        token_label = "t"
        user_pin_file = "pin"
    "#;

    fn field_of(err: ConfigError) -> &'static str {
        match err {
            ConfigError::Invalid { field, .. } => field,
            other => panic!("expected an invalid field, got {other}"),
        }
    }

    #[test]
    fn minimal_config_gets_defaults_and_resolves_paths() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8200");
        let BackendConfig::Pkcs11(p) = c.backend;
        assert_eq!(p.pin, PinSource::File(PathBuf::from("/etc/custodian/pin")));
        assert_eq!(p.token, TokenSelector::Label("t".to_owned()));
        let StoreConfig::Sqlite {
            path,
            secret_cache_bytes,
        } = c.store
        else {
            panic!("the default store is SQLite");
        };
        assert_eq!(path, PathBuf::from("/etc/custodian/custodian.db"));
        assert_eq!(secret_cache_bytes, 16 << 20);
    }

    #[test]
    fn the_rewrap_batch_follows_the_pause_unless_set() {
        let batch = |keys: &str| {
            parse(&format!("{MINIMAL}\n[keys]\n{keys}\n")).map(|c| c.keys.rewrap_batch_size)
        };
        assert_eq!(batch("").unwrap(), 100, "the default throttle");
        assert_eq!(batch("rewrap_pause_ms = 5").unwrap(), 100);
        assert_eq!(
            batch("rewrap_pause_ms = 0").unwrap(),
            500,
            "the throttle off"
        );
        assert_eq!(
            batch("rewrap_pause_ms = 0\nrewrap_batch_size = 100").unwrap(),
            100,
            "a set size is kept"
        );
        assert_eq!(batch("rewrap_batch_size = 7").unwrap(), 7);
        for bad in ["rewrap_batch_size = 0", "rewrap_batch_size = 10001"] {
            assert_eq!(field_of(batch(bad).unwrap_err()), "keys.rewrap_batch_size");
        }
    }

    #[test]
    fn a_postgres_store_keeps_its_settings_and_no_password_value() {
        let c = parse(
            "[store]\nkind = \"postgres\"\nurl = \"postgres://custodian@db:5432/custodian\"\n\
             password_file = \"db-password\"\nsslmode = \"verify-full\"\nca_file = \"ca.pem\"\n\
             pool_size = 32\nconnect_timeout = \"2s\"\n\
             [backend]\ntoken_label = \"t\"\nuser_pin_env = \"PIN\"\n",
        )
        .unwrap();
        let StoreConfig::Postgres { settings, password } = c.store else {
            panic!("kind = postgres");
        };
        assert_eq!(settings.url, "postgres://custodian@db:5432/custodian");
        assert_eq!(settings.pool_size, 32);
        assert_eq!(settings.connect_timeout, Duration::from_secs(2));
        assert!(
            settings.password.is_none(),
            "read at start-up, not at parse time"
        );
        assert!(matches!(settings.sslmode, SslMode::VerifyFull { .. }));
        assert!(matches!(password, Some(SecretSource::File(_))));
    }

    #[test]
    fn fixtures_fail_with_the_expected_field() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/config");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let expected = text
                .lines()
                .find_map(|l| l.strip_prefix("# expect: "))
                .unwrap_or_else(|| panic!("{} lacks an '# expect:' line", path.display()));
            let got = match parse(&text) {
                Ok(_) => "ok".to_owned(),
                Err(ConfigError::Invalid { field, .. }) => field.to_owned(),
                Err(ConfigError::Load(e)) => format!("load: {}", e.path.join(".")),
                Err(other) => format!("other: {other}"),
            };
            assert_eq!(got, expected, "fixture {}", path.display());
            seen += 1;
        }
        assert!(seen >= 5, "only {seen} fixtures found");
    }

    #[test]
    fn a_pin_in_the_toml_is_an_unknown_field() {
        let err = parse("[backend]\ntoken_label = \"t\"\nuser_pin = \"1234\"\n").unwrap_err();
        assert!(matches!(err, ConfigError::Load(_)));
    }

    #[test]
    fn both_token_selectors_is_invalid() {
        let err =
            parse("[backend]\ntoken_label = \"t\"\ntoken_serial = \"s\"\nuser_pin_env = \"P\"\n")
                .unwrap_err();
        assert_eq!(field_of(err), "backend.token_label");
    }

    #[test]
    fn pin_file_is_read_without_trailing_newline_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pin");
        std::fs::write(&path, "987654\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let pin = PinSource::File(path).read().unwrap();
        use secrecy::ExposeSecret;
        assert_eq!(pin.expose_secret(), "987654");
        assert!(!format!("{pin:?}").contains("987654"));
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(PinSource::File(empty).read().is_err());
        assert!(PinSource::File(dir.path().join("missing")).read().is_err());
    }

    #[test]
    fn a_pin_file_group_or_others_may_access_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pin");
        std::fs::write(&path, "987654\n").unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = PinSource::File(path.clone())
                .read()
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("{mode:04o}")), "{err}");
            assert!(err.contains("chmod 600"), "{err}");
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(!err.contains("987654"), "{err}");
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            assert!(
                PinSource::File(path.clone()).read().is_ok(),
                "mode {mode:o}"
            );
        }
    }
}
