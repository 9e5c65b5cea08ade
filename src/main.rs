//! The `custodian` binary: the server (`serve`), token provisioning (`token init`) and client
//! subcommands for every API call, `login`, and the offline `audit verify` and `custody verify`.
//! Secrets (PINs, tokens, plaintext, secret values) never come from argv.

use std::io::{IsTerminal as _, Write as _};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{ArgGroup, Args, Parser, Subcommand};

use custodian::app::App;
use custodian::cli::audit::{self, PendingFile};
use custodian::cli::client::{
    check_policy_name, context_json, load_token, login_token_path, read_policy, read_policy_file,
    read_token_line, read_value, read_value_file, store_token, AuditQuery, Client, ClientError,
    Explain, GenerateChange, KeyAction, KeyChange, KeyPlacementArgs, MetadataChange,
    PrincipalChange, Reencrypt, TokenCheck, VersionAction, TOKEN_ENV,
};
use custodian::config::{BackendConfig, Config};
use custodian::domain::{BackendKind, WrapMode};

#[derive(Parser)]
#[command(
    name = "custodian",
    version,
    about = "A key management service whose master keys live in an HSM or a TPM"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// Configuration file (TOML); `CUSTODIAN__SECTION__KEY` variables override it.
        #[arg(long, env = "CUSTODIAN_CONFIG")]
        config: Option<PathBuf>,
        /// Validate the configuration and exit.
        #[arg(long)]
        check_config: bool,
    },
    /// Provision the PKCS#11 token named in the configuration.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage keys: create, list, show, rotate, update, disable/enable, schedule or cancel
    /// deletion, versions.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Generate a data key under KEY; prints JSON with the wrapped copy and (unless
    /// --no-plaintext) the plaintext copy, both base64.
    Datakey {
        #[arg(help = KEY_HELP)]
        key: String,
        /// Data key length: 16, 24 or 32.
        #[arg(long, default_value_t = 32)]
        bytes: u32,
        /// Return only the wrapped copy.
        #[arg(long)]
        no_plaintext: bool,
        #[command(flatten)]
        context: ContextArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Encrypt stdin (at most 4096 bytes) under KEY; writes the ciphertext blob to stdout.
    Encrypt {
        #[arg(help = KEY_HELP)]
        key: String,
        /// Write the blob as base64 text instead of raw bytes.
        #[arg(long)]
        base64: bool,
        #[command(flatten)]
        context: ContextArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Decrypt a ciphertext blob read from stdin; writes the plaintext to stdout. The blob
    /// names its key; the context must match the one used to encrypt.
    Decrypt {
        /// Read the blob as base64 text instead of raw bytes.
        #[arg(long)]
        base64: bool,
        #[command(flatten)]
        context: ContextArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Store and read versioned secrets by path (e.g. team/app/db-password). Values come from
    /// stdin or a file, never from an argument.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Re-encrypt a ciphertext blob read from stdin under a key's primary version (default: the
    /// blob's own key); writes the new blob to stdout, raw or base64 like the input. The
    /// plaintext never leaves the server.
    Reencrypt {
        /// Read and write blobs as base64 text instead of raw bytes.
        #[arg(long)]
        base64: bool,
        #[command(flatten)]
        context: ContextArgs,
        /// Key (id, name or alias/NAME) to seal the new blob under; default: the blob's key.
        #[arg(long, value_name = "KEY")]
        destination_key: Option<String>,
        /// Context pair for the new blob, repeatable; default: the same context as the input.
        #[arg(long = "destination-context", value_name = "KEY=VALUE")]
        destination_context: Vec<String>,
        /// Seal the new blob with the empty context.
        #[arg(long, conflicts_with = "destination_context")]
        empty_destination_context: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Manage aliases: re-pointable names for keys, usable as alias/NAME wherever a key is
    /// named.
    #[command(subcommand)]
    Aliases(AliasesCommand),
    /// Follow background jobs (re-wrap of stored data keys after a rotation).
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Manage principals: named identities with attributes and attached policies.
    #[command(subcommand)]
    Principals(PrincipalsCommand),
    /// Manage policy documents and ask which decision a request would get (see docs/policy.md).
    #[command(subcommand)]
    Policies(PoliciesCommand),
    /// Mint, list and revoke bearer tokens of principals (API credentials; `token init` is the
    /// PKCS#11 token).
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Read, export, verify and archive the audit log: one hash-chained record per API
    /// request, with checkpoints signed by a key generated in the device (docs/audit.md).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Fetch or verify the signed custody report: every key version's root key as the device
    /// reports it, with anomalies flagged (docs/audit.md).
    #[command(subcommand)]
    Custody(CustodyCommand),
    /// Store a bearer token for later commands. The token is read from stdin, never from an
    /// argument, checked against the server (GET /v1/keys?limit=1: a 401 fails, a 403 only
    /// means the principal may not list keys) and written with mode 0600 to
    /// ~/.config/custodian/token, or to the file that --token-file or CUSTODIAN_TOKEN_FILE
    /// names. Other commands use it when CUSTODIAN_TOKEN and --token-file are not given.
    Login {
        /// Server URL.
        #[arg(long, env = "CUSTODIAN_ADDR", default_value = "http://127.0.0.1:8200")]
        addr: String,
        /// Where to store the token (default: ~/.config/custodian/token).
        #[arg(long, env = "CUSTODIAN_TOKEN_FILE")]
        token_file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Initialise the token labelled backend.token_label in a free slot, unless it exists.
    /// PIN files that do not exist are generated (mode 0600).
    Init {
        /// Configuration file naming the module, label and user PIN file.
        #[arg(long, env = "CUSTODIAN_CONFIG")]
        config: Option<PathBuf>,
        /// File holding the SO PIN (generated if absent).
        #[arg(long)]
        so_pin_file: PathBuf,
    },
}

/// A key named on the command line.
const KEY_HELP: &str = "Key id, name, or alias/NAME";

/// `keys create --backend`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum BackendArg {
    /// A PKCS#11 token (the HSM).
    Pkcs11,
    /// The TPM 2.0 configured in [tpm].
    Tpm,
}

/// `keys create --mode`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum ModeArg {
    /// The device wraps and unwraps every data key.
    Direct,
    /// The device wraps a version-KEK; data keys are wrapped under it in software.
    Cached,
}

impl From<BackendArg> for BackendKind {
    fn from(b: BackendArg) -> Self {
        match b {
            BackendArg::Pkcs11 => Self::Pkcs11,
            BackendArg::Tpm => Self::Tpm,
        }
    }
}

impl From<ModeArg> for WrapMode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Direct => Self::Direct,
            ModeArg::Cached => Self::Cached,
        }
    }
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key; its version-1 root key is generated inside the device.
    Create {
        /// Unique name: letters, digits, '-', '_', '.'.
        name: String,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
        /// The device that holds the key's root keys (server default: pkcs11). tpm needs a
        /// [tpm] section on the server.
        #[arg(long, value_enum)]
        backend: Option<BackendArg>,
        /// How data keys are wrapped: direct (the device wraps each one) or cached (the device
        /// wraps a version-KEK that wraps data keys in software for at most the KEK cache TTL).
        /// Server default: direct on pkcs11, cached on tpm.
        #[arg(long, value_enum)]
        mode: Option<ModeArg>,
        #[command(flatten)]
        conn: Conn,
    },
    /// List keys by name.
    List {
        /// Page size (1 to 1000).
        #[arg(long)]
        limit: Option<u32>,
        /// Start after this key name (the `next` of the previous page).
        #[arg(long)]
        after: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show one key as JSON.
    Show {
        #[arg(help = KEY_HELP)]
        key: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Rotate now: a new root key in the device becomes the primary version; older versions
    /// still decrypt. Starts a re-wrap job unless the server's keys.rewrap_after_rotation is
    /// off. Prints the key as JSON.
    Rotate {
        #[arg(help = KEY_HELP)]
        key: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Change a key's description, rotation period or minimum decryption version; options left
    /// out stay as they are. Prints the key as JSON.
    #[command(group(ArgGroup::new("change").required(true).multiple(true)))]
    Update {
        #[arg(help = KEY_HELP)]
        key: String,
        /// New description (at most 1024 bytes).
        #[arg(long, group = "change")]
        description: Option<String>,
        /// Rotate automatically this often, e.g. 90d, 12h (at least the server's
        /// keys.min_rotation_period, 1h by default).
        #[arg(
            long,
            value_name = "DURATION",
            group = "change",
            conflicts_with = "no_rotation"
        )]
        rotation_period: Option<String>,
        /// Turn scheduled rotation off.
        #[arg(long, group = "change")]
        no_rotation: bool,
        /// Versions below N no longer decrypt (1 to the primary version).
        #[arg(long, value_name = "N", group = "change")]
        min_decryption_version: Option<u32>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Disable a key: it neither wraps nor unwraps until enabled. Disabling a disabled key
    /// changes nothing. Prints the key as JSON.
    Disable {
        #[arg(help = KEY_HELP)]
        key: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Enable a disabled key. Enabling an enabled key changes nothing. Prints the key as JSON.
    Enable {
        #[arg(help = KEY_HELP)]
        key: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Schedule an enabled or disabled key for destruction after a waiting period; it is
    /// unusable meanwhile. Prints the key (with deletion_date) as JSON.
    ScheduleDeletion {
        #[arg(help = KEY_HELP)]
        key: String,
        /// Days until destruction: 7 to 30 (default 30).
        #[arg(long, value_name = "N")]
        pending_days: Option<u32>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Cancel a scheduled deletion; the key becomes disabled (enable it to use it again).
    /// Prints the key as JSON.
    CancelDeletion {
        #[arg(help = KEY_HELP)]
        key: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print a key's versions with their states and the stored data keys each still wraps, as
    /// JSON.
    Versions {
        #[arg(help = KEY_HELP)]
        key: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Disable, enable or destroy one version of a key.
    #[command(subcommand)]
    Version(VersionCommand),
    /// Start a job that re-wraps every stored data key of the key under its primary version
    /// (or return the one already running); prints the job as JSON.
    Rewrap {
        #[arg(help = KEY_HELP)]
        key: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
enum VersionCommand {
    /// Disable an active version: data it wrapped no longer decrypts until it is enabled.
    /// Prints the key as JSON.
    Disable {
        #[arg(help = KEY_HELP)]
        key: String,
        /// Version number (not the primary version).
        version: u32,
        #[command(flatten)]
        conn: Conn,
    },
    /// Enable a disabled version again. Prints the key as JSON.
    Enable {
        #[arg(help = KEY_HELP)]
        key: String,
        /// Version number.
        version: u32,
        #[command(flatten)]
        conn: Conn,
    },
    /// Destroy a version's root key in the device, for good: data it wrapped can never be
    /// decrypted again. Refused while stored data keys still use it (re-wrap them first) and
    /// for the primary version. Prints the key as JSON.
    Destroy {
        #[arg(help = KEY_HELP)]
        key: String,
        /// Version number (not the primary version).
        version: u32,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
enum AliasesCommand {
    /// Create alias NAME pointing at KEY; prints the alias as JSON.
    Create {
        /// Alias name: letters, digits, '-', '_', '.' (used as alias/NAME).
        name: String,
        /// Key id or name it points at (not another alias).
        key: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Point an existing alias at another key; prints the alias as JSON.
    Repoint {
        /// Alias name.
        name: String,
        /// Key id or name it points at from now on.
        key: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print one alias as JSON.
    Show {
        /// Alias name.
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print every alias as JSON.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete an alias (the key is untouched); prints nothing.
    Delete {
        /// Alias name.
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
enum JobsCommand {
    /// List jobs, newest first, as JSON.
    List {
        /// Only jobs in this state.
        #[arg(long, value_parser = ["running", "completed", "failed"])]
        state: Option<String>,
        /// At most N jobs (1 to 1000; default 100).
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print one job with its progress as JSON. With --watch, show a live progress line on
    /// stderr until the job is no longer running, then print the final job; a job that failed
    /// makes the command fail.
    Show {
        /// Job id.
        id: String,
        /// Follow the job until it completes or fails.
        #[arg(long)]
        watch: bool,
        /// Milliseconds between polls with --watch (100 to 60000).
        #[arg(
            long,
            value_name = "MS",
            default_value_t = 1000,
            value_parser = clap::value_parser!(u64).range(100..=60_000)
        )]
        interval_ms: u64,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
enum PrincipalsCommand {
    /// Create a principal; prints it as JSON.
    Create {
        /// Unique name: letters, digits, '-', '_', '.'.
        name: String,
        /// Attribute, repeatable: --attr tenant=acme --attr team=billing. Policy conditions
        /// refer to them as ${principal.<name>}.
        #[arg(long = "attr", value_name = "KEY=VALUE")]
        attrs: Vec<String>,
        /// Policy to attach, repeatable; each must exist.
        #[arg(long = "policy", value_name = "POLICY")]
        policies: Vec<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print every principal as JSON.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Print one principal as JSON.
    Show {
        /// Principal name.
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Replace a principal's attributes and/or attached policies. --attr pairs (or
    /// --clear-attrs) replace every attribute; --policy names (or --clear-policies) replace the
    /// whole list; what is not mentioned stays. Prints the principal as JSON.
    #[command(group(ArgGroup::new("change").required(true).multiple(true)))]
    Update {
        /// Principal name.
        name: String,
        /// Attribute, repeatable; together they become the principal's attributes.
        #[arg(
            long = "attr",
            value_name = "KEY=VALUE",
            group = "change",
            conflicts_with = "clear_attrs"
        )]
        attrs: Vec<String>,
        /// Remove every attribute.
        #[arg(long, group = "change")]
        clear_attrs: bool,
        /// Policy, repeatable; together they become the attached list.
        #[arg(
            long = "policy",
            value_name = "POLICY",
            group = "change",
            conflicts_with = "clear_policies"
        )]
        policies: Vec<String>,
        /// Detach every policy (the principal is then denied everything).
        #[arg(long, group = "change")]
        clear_policies: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete a principal and revoke its tokens; prints nothing.
    Delete {
        /// Principal name.
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
enum PoliciesCommand {
    /// Write a policy document, read from --file or stdin (JSON). Every write is a new version;
    /// an invalid document is refused with the JSON path at fault. Prints the policy as JSON.
    Put {
        /// Policy name: letters, digits, '-', '_', '.' (not "explain").
        name: String,
        /// Read the document from this file instead of stdin.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print every policy (current versions) as JSON.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Print one policy as JSON.
    Show {
        /// Policy name.
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete a policy; principals it is attached to lose what it granted (and what it denied).
    /// Prints nothing.
    Delete {
        /// Policy name.
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print, as JSON, the decision PRINCIPAL would get for ACTION on RESOURCE and the
    /// statement that made it, evaluated as enforcement would.
    Explain {
        /// The principal asked about.
        #[arg(long)]
        principal: String,
        /// Action, e.g. datakey:generate (vocabulary in docs/policy.md).
        #[arg(long)]
        action: String,
        /// Resource: key/NAME-OR-ID, key/alias/NAME, alias/NAME, secret/PATH, policy/NAME,
        /// principal/NAME.
        #[arg(long)]
        resource: String,
        #[command(flatten)]
        context: ContextArgs,
        /// Source address of the imagined request (source_cidr conditions are false without
        /// one).
        #[arg(long, value_name = "IP")]
        source: Option<IpAddr>,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
enum TokensCommand {
    /// Mint a bearer token for a principal. The token is printed once, alone, on stdout; its
    /// metadata goes to stderr as JSON. It cannot be shown again.
    Create {
        /// The principal the token authenticates.
        #[arg(long)]
        principal: String,
        /// Lifetime, e.g. 30d, 12h, 1h30m (default: no expiry).
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
        /// Free text (at most 1024 bytes).
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print token metadata as JSON (never the token text).
    List {
        /// Only this principal's tokens.
        #[arg(long)]
        principal: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Revoke a token by id: refused at once by this server, by other nodes within 5 s. Prints
    /// nothing.
    Revoke {
        /// Token id (16 hex digits: the part after cst_).
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Print one page of audit records as JSON, oldest first, with `next_after` unless it is
    /// the last page. Needs audit:read.
    Events {
        /// Records after this sequence number (the `next_after` of the previous page).
        #[arg(long, value_name = "N")]
        after: Option<u64>,
        /// Page size (1 to 1000; default 100).
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// Only requests of this principal.
        #[arg(long)]
        principal: Option<String>,
        /// Only requests that used this key, by id (records name keys by id).
        #[arg(long, value_name = "KEY_ID")]
        key: Option<String>,
        /// Only requests for this policy action, e.g. decrypt, key:rotate.
        #[arg(long)]
        action: Option<String>,
        /// Only requests with this outcome.
        #[arg(
            long,
            value_parser = ["success", "denied", "unauthenticated", "rejected", "failed"]
        )]
        outcome: Option<String>,
        /// Only records at or after this time (RFC 3339, e.g. 2026-11-27T00:00:00Z).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only records before this time (RFC 3339).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Download the export (JSON Lines: a header, the records, the signed checkpoints), streamed
    /// to --out or stdout. Without --until the server signs a checkpoint over everything
    /// written so far, so the export ends on one. Needs audit:read.
    Export {
        /// Start after this sequence number (default: where the stored log starts).
        #[arg(long, value_name = "N")]
        after: Option<u64>,
        /// Stop at the last checkpoint at or before N.
        #[arg(long, value_name = "N")]
        until: Option<u64>,
        /// Write here (mode 0600; moved into place only once complete) instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print the audit signing public key (PEM). Compare its fingerprint with one obtained
    /// out-of-band before trusting it for verification. Needs audit:read.
    PublicKey {
        /// Write here instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Archive the oldest records: download their export into FILE (which must not exist),
    /// verify it, then ask the server to remove them, naming the SHA-256 of the file. Prints
    /// the archive record as JSON. Needs audit:read and audit:archive.
    Archive {
        /// The checkpoint sequence to archive through (default: a checkpoint the server signs
        /// now over everything written).
        #[arg(long, value_name = "N")]
        through: Option<u64>,
        /// The archive file to write; keep it: it is the only copy of those records.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        conn: Conn,
    },
    /// Verify an export offline (no server, no token): every record hash, every link, every
    /// checkpoint signature, and that it ends on a checkpoint. Prints "N records, M
    /// checkpoints, intact", or fails naming the first bad or missing sequence number.
    Verify {
        /// The export file.
        file: PathBuf,
        /// The audit signing public key (PEM), obtained out-of-band.
        #[arg(long, value_name = "PEM")]
        public_key: PathBuf,
    },
}

#[derive(Subcommand)]
enum CustodyCommand {
    /// Fetch the signed custody report. json (default) writes the signed envelope exactly as
    /// received, to keep and verify later; md renders it as Markdown tables. Needs
    /// custody:read.
    Report {
        /// Output format.
        #[arg(long, value_parser = ["json", "md"], default_value = "json")]
        format: String,
        /// Write here instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Verify a saved report envelope offline (no server, no token): its signature, then every
    /// TPM attestation in it (TPM2_Certify by the TPM's attestation key, the certified Name
    /// against the version's reported Name and the custody attributes). Prints the summary,
    /// the anomalies and each attestation's result, ending with "signature valid; N TPM
    /// attestations verified; M anomalies". Fails on a bad signature or any failed
    /// attestation. The attestation key is trusted as given unless --attestation-key pins it;
    /// the TPM's endorsement key certificate chain is not checked.
    Verify {
        /// The report envelope (`custody report --format json`).
        file: PathBuf,
        /// The audit signing public key (PEM), obtained out-of-band.
        #[arg(long, value_name = "PEM")]
        public_key: PathBuf,
        /// A trusted copy of the TPM's attestation key (PEM); every attestation must be signed
        /// by it.
        #[arg(long, value_name = "PEM")]
        attestation_key: Option<PathBuf>,
    },
}

/// A secret path: segments of `A-Z a-z 0-9 - _ .` joined by `/`.
const PATH_HELP: &str = "Secret path: up to 16 segments of letters, digits, '-', '_' and '.', \
     joined by '/' (at most 512 bytes; no '.' or '..' segment; the last segment is not \
     metadata, undelete, destroy or rotate)";

#[derive(Subcommand)]
enum SecretsCommand {
    /// Write a new version of a secret. The value is read from stdin (or --file) byte for
    /// byte, a trailing newline included; it is never taken from an argument. Prints the
    /// version written as JSON.
    Put {
        #[arg(help = PATH_HELP)]
        path: String,
        /// Read the value from this file instead of stdin.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// Key (id or name) that wraps this version's data key; default: the secret's key,
        /// else the server's secrets.default_key.
        #[arg(long)]
        key: Option<String>,
        /// Check-and-set: write only if the secret's current version is N (0: only if the
        /// secret has no version yet). A mismatch fails with cas_mismatch.
        #[arg(long, value_name = "N")]
        cas: Option<u32>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Read a secret: writes the raw value bytes to stdout, and nothing else. Default: the
    /// newest live version.
    Get {
        #[arg(help = PATH_HELP)]
        path: String,
        /// Read this version instead of the newest live one.
        #[arg(long, value_name = "N")]
        version: Option<u32>,
        #[command(flatten)]
        conn: Conn,
    },
    /// List secrets by path; prints their metadata as JSON (never values).
    List {
        /// Only paths that start with this text (a plain string prefix, not a glob).
        #[arg(long)]
        prefix: Option<String>,
        /// Page size (1 to 1000; default 100).
        #[arg(long)]
        limit: Option<u32>,
        /// Start after this path (the `next` of the previous page).
        #[arg(long, value_name = "PATH")]
        after: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Soft-delete versions (restorable with undelete). Default: the newest live version.
    /// Prints the versions changed as JSON.
    Delete {
        #[arg(help = PATH_HELP)]
        path: String,
        /// Versions to delete, comma-separated: --versions 1,3.
        #[arg(long, value_name = "N[,N...]", value_delimiter = ',')]
        versions: Vec<u32>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Restore soft-deleted versions. Default: the newest deleted version. Prints the versions
    /// changed as JSON.
    Undelete {
        #[arg(help = PATH_HELP)]
        path: String,
        /// Versions to restore, comma-separated: --versions 1,3.
        #[arg(long, value_name = "N[,N...]", value_delimiter = ',')]
        versions: Vec<u32>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Destroy versions for good: their ciphertext and wrapped data key are erased and cannot
    /// be restored. Prints the versions changed as JSON.
    Destroy {
        #[arg(help = PATH_HELP)]
        path: String,
        /// Versions to destroy, comma-separated: --versions 1,3 (required).
        #[arg(long, value_name = "N[,N...]", value_delimiter = ',', required = true)]
        versions: Vec<u32>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show or change a secret's metadata and version history.
    #[command(subcommand)]
    Metadata(MetadataCommand),
    /// Write a fresh generated version of a generated secret now; prints the version as JSON.
    Rotate {
        #[arg(help = PATH_HELP)]
        path: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
enum MetadataCommand {
    /// Print a secret's metadata and every version's state as JSON.
    Get {
        #[arg(help = PATH_HELP)]
        path: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Change metadata (creating the path if absent); options left out stay as they are.
    /// Prints the metadata as JSON. Turning on generation for a secret without versions
    /// writes version 1 at once.
    Set {
        #[arg(help = PATH_HELP)]
        path: String,
        /// Key (id or name) for a path this call creates (the server ignores it for an existing
        /// path).
        #[arg(long)]
        key: Option<String>,
        /// Versions kept; older ones are destroyed (0 = unlimited).
        #[arg(long, value_name = "N")]
        max_versions: Option<u32>,
        /// Versions older than this are no longer returned: e.g. 90d, 12h, 1h30m, 45s.
        #[arg(long, value_name = "DURATION", conflicts_with = "no_expiry")]
        expires_after: Option<String>,
        /// Remove the expiry.
        #[arg(long)]
        no_expiry: bool,
        /// Custom metadata pair, repeatable: --custom owner=team-a --custom env=prod. Replaces
        /// every existing pair.
        #[arg(long = "custom", value_name = "KEY=VALUE")]
        custom: Vec<String>,
        /// Generate values of N characters (1 to 4096); needs --generate-charset and
        /// --rotate-every.
        #[arg(
            long,
            value_name = "N",
            requires_all = ["generate_charset", "rotate_every"],
            conflicts_with = "no_generate"
        )]
        generate_length: Option<u32>,
        /// Alphabet of generated values.
        #[arg(
            long,
            value_name = "CHARSET",
            value_parser = ["alphanumeric", "hex", "base64", "printable"],
            requires_all = ["generate_length", "rotate_every"],
            conflicts_with = "no_generate"
        )]
        generate_charset: Option<String>,
        /// Interval between automatic rotations (at least 1s): e.g. 30d, 12h.
        #[arg(
            long,
            value_name = "DURATION",
            requires_all = ["generate_length", "generate_charset"],
            conflicts_with = "no_generate"
        )]
        rotate_every: Option<String>,
        /// Stop generating and rotating (existing versions stay).
        #[arg(long)]
        no_generate: bool,
        #[command(flatten)]
        conn: Conn,
    },
}

/// Where the server is and how to authenticate. The token comes from CUSTODIAN_TOKEN, else the
/// token file, else the file `custodian login` wrote.
#[derive(Args)]
struct Conn {
    /// Server URL.
    #[arg(long, env = "CUSTODIAN_ADDR", default_value = "http://127.0.0.1:8200")]
    addr: String,
    /// File holding the bearer token, used when CUSTODIAN_TOKEN is not set (default: the file
    /// `custodian login` wrote, ~/.config/custodian/token).
    #[arg(long, env = "CUSTODIAN_TOKEN_FILE")]
    token_file: Option<PathBuf>,
}

#[derive(Args)]
struct ContextArgs {
    /// Encryption context pair, repeatable: --context tenant=acme --context app=billing.
    #[arg(long = "context", value_name = "KEY=VALUE")]
    pairs: Vec<String>,
}

impl Conn {
    fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::new(
            &self.addr,
            load_token(self.token_file.as_deref())?,
        ))
    }
}

/// Writes `v` as pretty JSON to stdout. A closed pipe (`… | head`) is an error, not a panic as
/// with `println!`.
fn print_json(v: &serde_json::Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string_pretty(v)?).context("writing to stdout")?;
    out.flush().context("writing to stdout")?;
    Ok(())
}

async fn client_command(command: Command) -> anyhow::Result<()> {
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    match command {
        Command::Datakey {
            key,
            bytes,
            no_plaintext,
            context,
            conn,
        } => Ok(conn
            .client()?
            .datakey(
                &key,
                bytes,
                !no_plaintext,
                context_json(&context.pairs)?,
                &mut stdout,
            )
            .await?),
        Command::Encrypt {
            key,
            base64,
            context,
            conn,
        } => Ok(conn
            .client()?
            .encrypt(
                &key,
                context_json(&context.pairs)?,
                &mut stdin,
                base64,
                &mut stdout,
            )
            .await?),
        Command::Decrypt {
            base64,
            context,
            conn,
        } => Ok(conn
            .client()?
            .decrypt(
                context_json(&context.pairs)?,
                &mut stdin,
                base64,
                &mut stdout,
            )
            .await?),
        Command::Secrets(command) => secrets_command(command, &mut stdin, &mut stdout).await,
        Command::Keys(command) => keys_command(command).await,
        Command::Reencrypt {
            base64,
            context,
            destination_key,
            destination_context,
            empty_destination_context,
            conn,
        } => {
            let destination_context = if empty_destination_context {
                Some(serde_json::json!({}))
            } else if destination_context.is_empty() {
                None
            } else {
                Some(context_json(&destination_context)?)
            };
            let request = Reencrypt {
                context: context_json(&context.pairs)?,
                destination_key,
                destination_context,
            };
            Ok(conn
                .client()?
                .reencrypt(&request, &mut stdin, base64, &mut stdout)
                .await?)
        }
        Command::Aliases(command) => aliases_command(command).await,
        Command::Jobs(command) => jobs_command(command).await,
        Command::Principals(command) => principals_command(command).await,
        Command::Policies(command) => policies_command(command, &mut stdin).await,
        Command::Tokens(command) => tokens_command(command, &mut stdout).await,
        Command::Audit(command) => audit_command(command, &mut stdout).await,
        Command::Custody(command) => custody_command(command, &mut stdout).await,
        Command::Login { addr, token_file } => login(&addr, token_file, &mut stdin).await,
        Command::Serve { .. } | Command::Token(_) => Ok(()),
    }
}

/// Writes `bytes` to `out` (replacing it once complete) or to stdout.
fn write_output(
    out: Option<&std::path::Path>,
    bytes: &[u8],
    stdout: &mut std::io::StdoutLock<'_>,
) -> anyhow::Result<()> {
    match out {
        Some(path) => {
            let mut file = PendingFile::create(path)?;
            file.write_all(bytes)
                .with_context(|| format!("writing {}", path.display()))?;
            file.commit(false)?;
        }
        None => {
            stdout.write_all(bytes).context("writing to stdout")?;
            stdout.flush().context("writing to stdout")?;
        }
    }
    Ok(())
}

async fn audit_command(
    command: AuditCommand,
    stdout: &mut std::io::StdoutLock<'_>,
) -> anyhow::Result<()> {
    match command {
        AuditCommand::Events {
            after,
            limit,
            principal,
            key,
            action,
            outcome,
            since,
            until,
            conn,
        } => {
            let query = AuditQuery {
                after,
                limit,
                principal,
                key,
                action,
                outcome,
                since,
                until,
            };
            print_json(&conn.client()?.audit_events(&query).await?)
        }
        AuditCommand::Export {
            after,
            until,
            out,
            conn,
        } => {
            let client = conn.client()?;
            match out {
                Some(path) => {
                    let file = PendingFile::create(&path)?;
                    let (file, s) = audit::export(&client, after, until, file).await?;
                    file.commit(false)?;
                    let end = s
                        .last_checkpoint
                        .map_or_else(|| "no records".to_owned(), |c| format!("checkpoint {c}"));
                    eprintln!(
                        "wrote {}: {} records, {} checkpoints, through {end}; sha256 {}",
                        path.display(),
                        s.records,
                        s.checkpoints,
                        s.sha256
                    );
                }
                None => {
                    audit::export(&client, after, until, &mut *stdout).await?;
                }
            }
            Ok(())
        }
        AuditCommand::PublicKey { out, conn } => {
            let pem = conn.client()?.audit_public_key().await?;
            write_output(out.as_deref(), pem.as_bytes(), stdout)
        }
        AuditCommand::Archive { through, out, conn } => {
            let archived = audit::archive(&conn.client()?, through, &out).await?;
            eprintln!(
                "records through {} archived; {} holds them: keep it",
                archived["through"],
                out.display()
            );
            print_json(&archived)
        }
        // Offline; handled in `run` without a runtime.
        AuditCommand::Verify { .. } => Ok(()),
    }
}

async fn custody_command(
    command: CustodyCommand,
    stdout: &mut std::io::StdoutLock<'_>,
) -> anyhow::Result<()> {
    match command {
        CustodyCommand::Report { format, out, conn } => {
            let envelope = conn.client()?.custody_report().await?;
            if format == "md" {
                let report = audit::parse_report(&envelope, "the server's answer")?;
                let md = audit::render_markdown(&report)?;
                write_output(out.as_deref(), md.as_bytes(), stdout)
            } else {
                // As received: the payload is the signed text.
                write_output(out.as_deref(), &envelope, stdout)
            }
        }
        // Offline; handled in `run` without a runtime.
        CustodyCommand::Verify { .. } => Ok(()),
    }
}

/// `audit verify` and `custody verify`: no server, no token, no runtime.
fn offline_verify(command: Command) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        Command::Audit(AuditCommand::Verify { file, public_key }) => {
            let key = audit::read_public_key(&public_key)?;
            let intact = audit::verify_export_file(&file, &key)?;
            writeln!(out, "{intact}").context("writing to stdout")?;
        }
        Command::Custody(CustodyCommand::Verify {
            file,
            public_key,
            attestation_key,
        }) => {
            let key = audit::read_public_key(&public_key)?;
            let ak = attestation_key
                .as_deref()
                .map(audit::read_public_key)
                .transpose()?;
            let verdict = audit::verify_report_file(&file, &key, ak.as_ref())?;
            write!(out, "{}", verdict.text).context("writing to stdout")?;
            out.flush().context("writing to stdout")?;
            if let Some(first) = verdict.attestation_failures.first() {
                anyhow::bail!(
                    "attestation_failed: {} of {} TPM attestations do not verify; first: {first}",
                    verdict.attestation_failures.len(),
                    verdict.attestations_verified + verdict.attestation_failures.len(),
                );
            }
        }
        _ => {}
    }
    out.flush().context("writing to stdout")?;
    Ok(())
}

async fn principals_command(command: PrincipalsCommand) -> anyhow::Result<()> {
    match command {
        PrincipalsCommand::Create {
            name,
            attrs,
            policies,
            conn,
        } => print_json(
            &conn
                .client()?
                .create_principal(&name, &attrs, &policies)
                .await?,
        ),
        PrincipalsCommand::List { conn } => print_json(&conn.client()?.list_principals().await?),
        PrincipalsCommand::Show { name, conn } => {
            print_json(&conn.client()?.show_principal(&name).await?)
        }
        PrincipalsCommand::Update {
            name,
            attrs,
            clear_attrs,
            policies,
            clear_policies,
            conn,
        } => {
            // clap keeps --attr apart from --clear-attrs, and --policy from --clear-policies.
            let change = PrincipalChange {
                attributes: (clear_attrs || !attrs.is_empty()).then_some(attrs),
                policies: (clear_policies || !policies.is_empty()).then_some(policies),
            };
            print_json(&conn.client()?.update_principal(&name, &change).await?)
        }
        PrincipalsCommand::Delete { name, conn } => {
            Ok(conn.client()?.delete_principal(&name).await?)
        }
    }
}

async fn policies_command(
    command: PoliciesCommand,
    stdin: &mut std::io::StdinLock<'_>,
) -> anyhow::Result<()> {
    match command {
        PoliciesCommand::Put { name, file, conn } => {
            let client = conn.client()?;
            // Before waiting for a document on stdin.
            check_policy_name(&name)?;
            let document = match file {
                Some(f) => read_policy_file(&f)?,
                None => {
                    if stdin.is_terminal() {
                        eprintln!("reading the policy document from stdin; end it with Ctrl-D");
                    }
                    read_policy(stdin)?
                }
            };
            print_json(&client.put_policy(&name, document).await?)
        }
        PoliciesCommand::List { conn } => print_json(&conn.client()?.list_policies().await?),
        PoliciesCommand::Show { name, conn } => {
            print_json(&conn.client()?.show_policy(&name).await?)
        }
        PoliciesCommand::Delete { name, conn } => Ok(conn.client()?.delete_policy(&name).await?),
        PoliciesCommand::Explain {
            principal,
            action,
            resource,
            context,
            source,
            conn,
        } => {
            let question = Explain {
                principal,
                action,
                resource,
                // No --context: a request without an encryption context.
                context: (!context.pairs.is_empty())
                    .then(|| context_json(&context.pairs))
                    .transpose()?,
                source,
            };
            print_json(&conn.client()?.explain(&question).await?)
        }
    }
}

async fn tokens_command(
    command: TokensCommand,
    stdout: &mut std::io::StdoutLock<'_>,
) -> anyhow::Result<()> {
    match command {
        TokensCommand::Create {
            principal,
            ttl,
            description,
            conn,
        } => {
            let minted = conn
                .client()?
                .create_token(&principal, ttl.as_deref(), &description)
                .await?;
            // The token alone on stdout, so `… | custodian login` or `> file` captures just it.
            writeln!(stdout, "{}", minted.token.expose_secret()).context("writing to stdout")?;
            stdout.flush().context("writing to stdout")?;
            let mut err = std::io::stderr().lock();
            writeln!(err, "{}", serde_json::to_string_pretty(&minted.info)?)
                .context("writing to stderr")?;
            Ok(())
        }
        TokensCommand::List { principal, conn } => {
            print_json(&conn.client()?.list_tokens(principal.as_deref()).await?)
        }
        TokensCommand::Revoke { id, conn } => Ok(conn.client()?.revoke_token(&id).await?),
    }
}

/// Turns terminal echo off (`stty -echo`) while a token is typed or pasted, and back on when
/// dropped. Without `stty` the input stays visible; nothing else changes.
struct EchoOff {
    active: bool,
}

impl EchoOff {
    fn new() -> Self {
        let active = std::process::Command::new("stty")
            .arg("-echo")
            .stdin(std::process::Stdio::inherit())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        Self { active }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if self.active {
            let _ = std::process::Command::new("stty")
                .arg("echo")
                .stdin(std::process::Stdio::inherit())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// `custodian login`: reads a token from stdin, checks it, stores it with mode 0600.
async fn login(
    addr: &str,
    token_file: Option<PathBuf>,
    stdin: &mut std::io::StdinLock<'_>,
) -> anyhow::Result<()> {
    let path = match token_file {
        Some(p) => p,
        None => login_token_path().ok_or(ClientError::NoHome)?,
    };
    let token = if stdin.is_terminal() {
        eprint!("bearer token (input hidden; end with Enter): ");
        let _ = std::io::stderr().flush();
        let echo = EchoOff::new();
        let read = read_token_line(stdin);
        drop(echo);
        eprintln!();
        read?
    } else {
        read_token_line(stdin)?
    };
    let client = Client::new(addr, token);
    let check = client.check_token().await?;
    store_token(&path, client.token())?;
    eprintln!(
        "token accepted by {addr}; stored in {} (mode 0600)",
        path.display()
    );
    if check == TokenCheck::KeyReadDenied {
        eprintln!(
            "note: its principal may not list keys (403); that is its policy, not a login failure"
        );
    }
    if std::env::var_os(TOKEN_ENV).is_some_and(|v| !v.is_empty()) {
        eprintln!("note: {TOKEN_ENV} is set and takes precedence over the stored token");
    }
    Ok(())
}

/// `custodian keys …`: every subcommand prints the API's answer as JSON.
async fn keys_command(command: KeysCommand) -> anyhow::Result<()> {
    let answer = match command {
        KeysCommand::Create {
            name,
            description,
            backend,
            mode,
            conn,
        } => {
            let placement = KeyPlacementArgs {
                backend: backend.map(Into::into),
                mode: mode.map(Into::into),
            };
            conn.client()?
                .create_key(&name, &description, &placement)
                .await?
        }
        KeysCommand::List { limit, after, conn } => {
            conn.client()?.list_keys(limit, after.as_deref()).await?
        }
        KeysCommand::Show { key, conn } => conn.client()?.show_key(&key).await?,
        KeysCommand::Rotate { key, conn } => {
            conn.client()?.key_action(&key, KeyAction::Rotate).await?
        }
        KeysCommand::Update {
            key,
            description,
            rotation_period,
            no_rotation,
            min_decryption_version,
            conn,
        } => {
            let change = KeyChange {
                description,
                // clap keeps --rotation-period and --no-rotation apart.
                rotation_period: match (rotation_period, no_rotation) {
                    (Some(p), _) => Some(Some(p)),
                    (None, true) => Some(None),
                    (None, false) => None,
                },
                min_decryption_version,
            };
            conn.client()?.update_key(&key, &change).await?
        }
        KeysCommand::Disable { key, conn } => {
            conn.client()?.key_action(&key, KeyAction::Disable).await?
        }
        KeysCommand::Enable { key, conn } => {
            conn.client()?.key_action(&key, KeyAction::Enable).await?
        }
        KeysCommand::ScheduleDeletion {
            key,
            pending_days,
            conn,
        } => {
            conn.client()?
                .schedule_key_deletion(&key, pending_days)
                .await?
        }
        KeysCommand::CancelDeletion { key, conn } => {
            conn.client()?
                .key_action(&key, KeyAction::CancelDeletion)
                .await?
        }
        KeysCommand::Versions { key, conn } => conn.client()?.key_versions(&key).await?,
        KeysCommand::Version(command) => {
            let (key, version, action, conn) = match command {
                VersionCommand::Disable { key, version, conn } => {
                    (key, version, VersionAction::Disable, conn)
                }
                VersionCommand::Enable { key, version, conn } => {
                    (key, version, VersionAction::Enable, conn)
                }
                VersionCommand::Destroy { key, version, conn } => {
                    (key, version, VersionAction::Destroy, conn)
                }
            };
            conn.client()?.version_action(&key, version, action).await?
        }
        KeysCommand::Rewrap { key, conn } => {
            conn.client()?.key_action(&key, KeyAction::Rewrap).await?
        }
    };
    print_json(&answer)
}

async fn aliases_command(command: AliasesCommand) -> anyhow::Result<()> {
    match command {
        AliasesCommand::Create { name, key, conn } => {
            print_json(&conn.client()?.create_alias(&name, &key).await?)
        }
        AliasesCommand::Repoint { name, key, conn } => {
            print_json(&conn.client()?.repoint_alias(&name, &key).await?)
        }
        AliasesCommand::Show { name, conn } => print_json(&conn.client()?.show_alias(&name).await?),
        AliasesCommand::List { conn } => print_json(&conn.client()?.list_aliases().await?),
        AliasesCommand::Delete { name, conn } => Ok(conn.client()?.delete_alias(&name).await?),
    }
}

async fn jobs_command(command: JobsCommand) -> anyhow::Result<()> {
    match command {
        JobsCommand::List { state, limit, conn } => {
            print_json(&conn.client()?.list_jobs(state.as_deref(), limit).await?)
        }
        JobsCommand::Show {
            id,
            watch: false,
            conn,
            ..
        } => print_json(&conn.client()?.job(&id).await?),
        JobsCommand::Show {
            id,
            watch: true,
            interval_ms,
            conn,
        } => {
            let client = conn.client()?;
            let stderr = std::io::stderr();
            let redraw = stderr.is_terminal();
            let job = client
                .watch_job(
                    &id,
                    std::time::Duration::from_millis(interval_ms),
                    &mut stderr.lock(),
                    redraw,
                )
                .await?;
            print_json(&job)?;
            if job["state"] == "failed" {
                let why = job["last_error"].as_str().unwrap_or("no error recorded");
                anyhow::bail!("job {id} failed: {why}");
            }
            Ok(())
        }
    }
}

async fn secrets_command(
    command: SecretsCommand,
    stdin: &mut std::io::StdinLock<'_>,
    stdout: &mut std::io::StdoutLock<'_>,
) -> anyhow::Result<()> {
    match command {
        SecretsCommand::Put {
            path,
            file,
            key,
            cas,
            conn,
        } => {
            let client = conn.client()?;
            let value = match file {
                Some(f) => read_value_file(&f)?,
                None => {
                    if stdin.is_terminal() {
                        eprintln!("reading the secret value from stdin; end it with Ctrl-D");
                    }
                    read_value(stdin)?
                }
            };
            print_json(
                &client
                    .put_secret(&path, &value, key.as_deref(), cas)
                    .await?,
            )
        }
        SecretsCommand::Get {
            path,
            version,
            conn,
        } => Ok(conn.client()?.get_secret(&path, version, stdout).await?),
        SecretsCommand::List {
            prefix,
            limit,
            after,
            conn,
        } => print_json(
            &conn
                .client()?
                .list_secrets(prefix.as_deref(), limit, after.as_deref())
                .await?,
        ),
        SecretsCommand::Delete {
            path,
            versions,
            conn,
        } => print_json(&conn.client()?.delete_secret(&path, &versions).await?),
        SecretsCommand::Undelete {
            path,
            versions,
            conn,
        } => print_json(&conn.client()?.undelete_secret(&path, &versions).await?),
        SecretsCommand::Destroy {
            path,
            versions,
            conn,
        } => print_json(&conn.client()?.destroy_secret(&path, &versions).await?),
        SecretsCommand::Metadata(MetadataCommand::Get { path, conn }) => {
            print_json(&conn.client()?.secret_metadata(&path).await?)
        }
        SecretsCommand::Metadata(MetadataCommand::Set {
            path,
            key,
            max_versions,
            expires_after,
            no_expiry,
            custom,
            generate_length,
            generate_charset,
            rotate_every,
            no_generate,
            conn,
        }) => {
            let generate = match (generate_length, generate_charset, rotate_every) {
                (Some(length), Some(charset), Some(rotate_every)) => Some(Some(GenerateChange {
                    length,
                    charset,
                    rotate_every,
                })),
                // clap makes the three flags all-or-none and exclusive of --no-generate.
                _ if no_generate => Some(None),
                _ => None,
            };
            let change = MetadataChange {
                key,
                max_versions,
                expires_after: match (expires_after, no_expiry) {
                    (Some(d), _) => Some(Some(d)),
                    (None, true) => Some(None),
                    (None, false) => None,
                },
                custom: (!custom.is_empty()).then_some(custom),
                generate,
            };
            print_json(&conn.client()?.set_secret_metadata(&path, &change).await?)
        }
        SecretsCommand::Rotate { path, conn } => {
            print_json(&conn.client()?.rotate_secret(&path).await?)
        }
    }
}

fn serve(config: Option<PathBuf>, check_config: bool) -> anyhow::Result<()> {
    let config = Config::load(config.as_deref())?;
    if check_config {
        println!("configuration is valid");
        return Ok(());
    }
    custodian::telemetry::init(&config.log);
    // Before the PIN is read or a key touched: no core dump may hold them.
    custodian::process::harden(config.server.core_dumps)?;
    if is_root() {
        tracing::warn!("running as root: run Custodian as an unprivileged user in production");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let app = App::build(&config).await?;
        app.run().await
    })?;
    Ok(())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            config,
            check_config,
        } => serve(config, check_config),
        Command::Token(TokenCommand::Init {
            config,
            so_pin_file,
        }) => {
            let config = Config::load(config.as_deref())?;
            custodian::process::harden(config.server.core_dumps)?;
            let BackendConfig::Pkcs11(p) = &config.backend;
            let outcome = custodian::cli::provision::run(p, &so_pin_file)?;
            println!("token: {outcome:?}");
            Ok(())
        }
        command @ (Command::Audit(AuditCommand::Verify { .. })
        | Command::Custody(CustodyCommand::Verify { .. })) => offline_verify(command),
        command => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(client_command(command))
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
