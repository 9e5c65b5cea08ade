//! The configuration as read from TOML and `CUSTODIAN__SECTION__KEY` environment overrides,
//! before validation. Every field has a default; unknown fields are errors.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// `[server]`
    pub server: RawServer,
    /// `[store]`
    pub store: RawStore,
    /// `[backend]`
    pub backend: RawBackend,
    /// `[log]`
    pub log: RawLog,
    /// `[secrets]`
    pub secrets: RawSecrets,
    /// `[keys]`
    pub keys: RawKeys,
    /// `[audit]`
    pub audit: RawAudit,
    /// `[tpm]`
    pub tpm: RawTpm,
    /// `[vault]`
    pub vault: RawVault,
    /// `[aws]`
    pub aws: RawAws,
}

/// `[aws]`: the AWS KMS-compatible front door.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAws {
    /// The partition in key ARNs (`aws`, `aws-cn`, `aws-us-gov`, …).
    pub partition: String,
    /// The region in key ARNs; clients must sign for it.
    pub region: String,
    /// The 12-digit account in key ARNs.
    pub account: String,
    /// The key (name or id) access keys' secrets are sealed under when a request names none.
    pub access_key_key: Option<String>,
}

impl Default for RawAws {
    fn default() -> Self {
        Self {
            partition: "aws".to_owned(),
            region: "us-east-1".to_owned(),
            account: "000000000000".to_owned(),
            access_key_key: None,
        }
    }
}

/// `[vault]`: the Vault-compatible front door (docs/compat.md).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawVault {
    /// Serve it (default true).
    pub enabled: bool,
    /// Transit's mount path (default `transit`).
    pub transit_mount: String,
    /// KV version 2's mount path (default `secret`).
    pub kv_mount: String,
}

impl Default for RawVault {
    fn default() -> Self {
        Self {
            enabled: true,
            transit_mount: "transit".to_owned(),
            kv_mount: "secret".to_owned(),
        }
    }
}

/// `[tpm]`: a TPM 2.0 for keys created with `backend = "tpm"`. Absent `tcti`: no TPM.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTpm {
    /// TCTI: `device:/dev/tpmrm0` on a real machine, `swtpm:host=127.0.0.1,port=2321` for swtpm.
    pub tcti: Option<String>,
    /// Environment variable holding the owner hierarchy's auth value (if one is set).
    pub owner_auth_env: Option<String>,
    /// File holding the owner auth value.
    pub owner_auth_file: Option<PathBuf>,
    /// Persistent handle to keep the storage primary at (e.g. `0x81000001`); default: none
    /// (the primary is recreated from the owner seed, which gives the same key).
    pub primary_handle: Option<String>,
}

/// `[audit]`
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAudit {
    /// This node's name in audit records (default: the host name).
    pub node: Option<String>,
    /// Longest time between signed checkpoints while records arrive (a duration such as `60s`).
    pub checkpoint_interval: String,
    /// A checkpoint is also signed whenever this many records are not yet covered by one.
    pub checkpoint_records: u64,
    /// An export signs a new checkpoint only when no export signed one within this interval
    /// (a duration such as `60s`; `0s`: every export signs one when records followed the last).
    pub export_checkpoint_interval: String,
}

impl Default for RawAudit {
    fn default() -> Self {
        Self {
            node: None,
            checkpoint_interval: "60s".to_owned(),
            checkpoint_records: 1000,
            export_checkpoint_interval: "60s".to_owned(),
        }
    }
}

/// `[server]`
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    /// Address and port to listen on.
    pub listen: String,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Requests that take longer are answered 503.
    pub request_timeout_ms: u64,
    /// Time a connection has to deliver a complete request head (and, for HTTPS, finish the
    /// handshake), in milliseconds.
    pub header_read_timeout_ms: u64,
    /// A connection with no request in flight for this long is closed, in milliseconds.
    pub idle_timeout_ms: u64,
    /// Most connections open at once (lowered to fit the open-file limit).
    pub max_connections: usize,
    /// Most connections open at once from one source address (IPv6: one /64).
    pub max_connections_per_source: usize,
    /// Leave core dumps as the environment sets them (debugging only).
    pub dangerous_allow_core_dumps: bool,
    /// `[server.tls]`: serve HTTPS (and accept client certificates) when present.
    pub tls: Option<RawTls>,
    /// Unauthenticated requests per source and minute that get an audit record each; more are
    /// answered 429 and counted into one aggregate record per source.
    pub anonymous_requests_per_minute: u32,
    /// How often the aggregate records of throttled requests are written (a duration).
    pub anonymous_flush_interval: String,
    /// Most sources tracked by that throttle; further sources share one `(many)` budget.
    pub anonymous_max_sources: usize,
    /// Failed authentications per source address (and per token id) and minute before further
    /// failures are answered 429.
    pub auth_failures_per_minute: u32,
}

/// `[server.tls]`
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// Server certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Server private key (PEM).
    pub key_file: PathBuf,
    /// CA whose client certificates authenticate principals (PEM); none: no client certificates.
    pub client_ca_file: Option<PathBuf>,
    /// `optional` (default) or `required`.
    #[serde(default = "default_client_auth")]
    pub client_auth: String,
    /// Which subject alternative name of a client certificate names the principal: `uri`
    /// (default: `custodian:principal:<name>`) or `dns`.
    #[serde(default = "default_identity")]
    pub identity: String,
}

fn default_client_auth() -> String {
    "optional".to_owned()
}

fn default_identity() -> String {
    "uri".to_owned()
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8200".to_owned(),
            max_body_bytes: 64 * 1024,
            request_timeout_ms: 30_000,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            max_connections: 1024,
            max_connections_per_source: 64,
            dangerous_allow_core_dumps: false,
            tls: None,
            anonymous_requests_per_minute: 60,
            anonymous_flush_interval: "60s".to_owned(),
            anonymous_max_sources: 10_000,
            auth_failures_per_minute: 20,
        }
    }
}

/// `[store]`
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    /// `sqlite` (embedded, the default) or `postgres`.
    pub kind: String,
    /// SQLite: the database file; created with mode 0600.
    pub path: PathBuf,
    /// PostgreSQL: `postgres://user@host:port/dbname`, without a password.
    pub url: Option<String>,
    /// PostgreSQL: a file holding the password (mode 0600).
    pub password_file: Option<PathBuf>,
    /// PostgreSQL: an environment variable holding the password.
    pub password_env: Option<String>,
    /// PostgreSQL: most pooled connections.
    pub pool_size: usize,
    /// PostgreSQL: how long to wait for a connection, e.g. `5s`.
    pub connect_timeout: String,
    /// PostgreSQL: `disable`, `require` or `verify-full`.
    pub sslmode: String,
    /// PostgreSQL with `sslmode = "verify-full"`: PEM file of the server certificate's CA.
    pub ca_file: Option<PathBuf>,
    /// SQLite: most bytes of secret reads kept in memory (0: none; default 16 MiB).
    pub secret_cache_bytes: Option<usize>,
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            kind: "sqlite".to_owned(),
            path: PathBuf::from("custodian.db"),
            url: None,
            password_file: None,
            password_env: None,
            pool_size: 16,
            connect_timeout: "5s".to_owned(),
            sslmode: "disable".to_owned(),
            ca_file: None,
            secret_cache_bytes: None,
        }
    }
}

/// `[backend]`
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBackend {
    /// `pkcs11` (the only kind in this build).
    pub kind: String,
    /// Path of the PKCS#11 module.
    pub module: PathBuf,
    /// Token label to use. Exactly one of `token_label` and `token_serial` is set.
    pub token_label: Option<String>,
    /// Token serial number to use.
    pub token_serial: Option<String>,
    /// Environment variable holding the user PIN.
    pub user_pin_env: Option<String>,
    /// File holding the user PIN (trailing newline ignored).
    pub user_pin_file: Option<PathBuf>,
    /// Sessions in the pool: the most device operations in flight at once.
    pub sessions: usize,
    /// Mechanism the device wraps data keys with: `aes-gcm`.
    pub wrap_mechanism: String,
    /// Where GCM IVs come from: `host` (the OS CSPRNG) or `device-rng` (`C_GenerateRandom`).
    pub iv_source: String,
    /// Where data keys come from: `device-rng` (`C_GenerateRandom`) or `host`.
    pub data_key_source: String,
    /// First wait before re-initialising a module that failed, in milliseconds.
    pub reinit_backoff_initial_ms: u64,
    /// Longest wait between re-initialisation attempts, in milliseconds.
    pub reinit_backoff_max_ms: u64,
}

impl Default for RawBackend {
    fn default() -> Self {
        Self {
            kind: "pkcs11".to_owned(),
            module: PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"),
            token_label: None,
            token_serial: None,
            user_pin_env: None,
            user_pin_file: None,
            sessions: 4,
            wrap_mechanism: "aes-gcm".to_owned(),
            iv_source: "host".to_owned(),
            data_key_source: "device-rng".to_owned(),
            reinit_backoff_initial_ms: 200,
            reinit_backoff_max_ms: 30_000,
        }
    }
}

/// `[log]`
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    /// `text` or `json`.
    pub format: String,
    /// An `EnvFilter` directive; `RUST_LOG` wins when set.
    pub filter: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: "text".to_owned(),
            filter: "info".to_owned(),
        }
    }
}

/// `[secrets]`
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSecrets {
    /// Name (or id) of the key that wraps secrets' data keys when a write names none.
    pub default_key: Option<String>,
    /// Largest secret value, in bytes.
    pub max_value_bytes: usize,
    /// `max_versions` of a new secret (0 = unlimited).
    pub default_max_versions: u32,
    /// How often the rotation worker looks for due generated secrets, in milliseconds.
    pub rotation_check_interval_ms: u64,
    /// Shortest `rotate_every` a generated secret may be given (a duration such as `1h`).
    pub min_rotate_every: String,
    /// Most versions a generated secret keeps (its `max_versions` is 1 to this).
    pub max_generated_versions: u32,
}

impl Default for RawSecrets {
    fn default() -> Self {
        Self {
            default_key: None,
            max_value_bytes: 64 * 1024,
            default_max_versions: 10,
            rotation_check_interval_ms: 1_000,
            min_rotate_every: "1h".to_owned(),
            max_generated_versions: 100,
        }
    }
}

/// `[keys]`
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawKeys {
    /// Shortest `rotation_period` a key may be given (a duration such as `1h`).
    pub min_rotation_period: String,
    /// Wraps under one version after which the key is rotated automatically.
    pub rotate_after_wraps: u64,
    /// Wraps reserved durably at a time (the most that a crash can waste).
    pub wrap_reservation_block: u64,
    /// Start a bulk re-wrap job after every rotation.
    pub rewrap_after_rotation: bool,
    /// Stored data keys re-wrapped per batch (one transaction each). Unset: the default for
    /// the pause ([`super::default_rewrap_batch_size`]).
    pub rewrap_batch_size: Option<u32>,
    /// Pause between re-wrap batches, in milliseconds (throttles the job for foreground work).
    pub rewrap_pause_ms: u64,
    /// How often scheduled rotations, due deletions and pending device destructions are handled.
    pub lifecycle_check_interval_ms: u64,
    /// Cached mode: the longest an unwrapped version-KEK is held (a duration such as `5m`).
    pub kek_cache_ttl: String,
    /// Cached mode: the most version-KEKs held at once (least recently used go first).
    pub kek_cache_capacity: usize,
}

impl Default for RawKeys {
    fn default() -> Self {
        Self {
            min_rotation_period: "1h".to_owned(),
            rotate_after_wraps: 1 << 31,
            wrap_reservation_block: 1000,
            rewrap_after_rotation: true,
            rewrap_batch_size: None,
            rewrap_pause_ms: 20,
            lifecycle_check_interval_ms: 1_000,
            kek_cache_ttl: "5m".to_owned(),
            kek_cache_capacity: 1024,
        }
    }
}
