//! The `custodian` binary's command tree: one file per subcommand group, each holding that
//! group's clap definitions and the code that runs them.
//!
//! These modules belong to the binary, not to the library: they parse arguments, call the
//! library (`custodian::cli` for the API client, token provisioning and the offline checks;
//! `custodian::app` for the server) and print. Like `main.rs`, they report errors as
//! `anyhow::Error`; every typed error they pass on comes from the library.
//!
//! | File | Subcommands |
//! |---|---|
//! | `serve.rs` | `serve` |
//! | `token.rs` | `token init` (PKCS#11 token provisioning) |
//! | `keys.rs` | `keys …` (lifecycle, versions, re-wrap) |
//! | `aliases.rs` | `aliases …` |
//! | `jobs.rs` | `jobs …` (`jobs watch`: `progress.rs` draws the bar or the lines) |
//! | `crypto.rs` | `datakey`, `encrypt`, `decrypt`, `reencrypt` |
//! | `files.rs` | `encrypt-file`, `decrypt-file` (streaming envelope encryption) |
//! | `secrets.rs` | `secrets …` |
//! | `principals.rs` | `principals …` |
//! | `policies.rs` | `policies …` |
//! | `tokens.rs` | `tokens …` (bearer tokens) |
//! | `access_keys.rs` | `access-keys …` (AWS SigV4 access keys) |
//! | `database.rs` | `db …` (database connections, roles, credentials, leases) |
//! | `login.rs` | `login` |
//! | `audit.rs` | `audit …` |
//! | `custody.rs` | `custody …` |
//! | `store.rs` | `store migrate` (SQLite to PostgreSQL, offline) |
//! | `generate.rs` | `completions bash\|zsh\|fish`, `man` (from this command tree) |

use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;

use custodian::cli::audit::PendingFile;
use custodian::cli::client::{load_token, Client, ClientError};

pub mod access_keys;
pub mod aliases;
pub mod audit;
pub mod crypto;
pub mod custody;
pub mod database;
pub mod files;
pub mod generate;
pub mod jobs;
pub mod keys;
pub mod login;
pub mod policies;
pub mod principals;
pub mod progress;
pub mod secrets;
pub mod serve;
pub mod store;
pub mod token;
pub mod tokens;

/// A key named on the command line.
pub const KEY_HELP: &str = "Key id, name, or alias/NAME";

/// Where the server is and how to authenticate. The token comes from CUSTODIAN_TOKEN, else the
/// token file, else the file `custodian login` wrote.
#[derive(Args)]
pub struct Conn {
    /// Server URL.
    #[arg(long, env = "CUSTODIAN_ADDR", default_value = "http://127.0.0.1:8200")]
    addr: String,
    /// File holding the bearer token, used when CUSTODIAN_TOKEN is not set (default: the file
    /// `custodian login` wrote, ~/.config/custodian/token).
    #[arg(long, env = "CUSTODIAN_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// PEM file of the CA that issued the server's certificate (for https:// addresses).
    #[arg(long, env = "CUSTODIAN_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// PEM file holding a client certificate and its private key, presented to a server that
    /// maps certificates to principals (mTLS). With it, no bearer token is needed.
    #[arg(long, env = "CUSTODIAN_CLIENT_IDENTITY")]
    client_identity: Option<PathBuf>,
}

impl Conn {
    /// A client for the server, with the token found as described on [`Conn`] and the TLS
    /// files given.
    pub fn client(&self) -> anyhow::Result<Client> {
        let mut builder = custodian_client::Client::builder(&self.addr);
        if let Some(path) = &self.ca_file {
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            builder = builder.ca_certificate_pem(&pem)?;
        }
        match load_token(self.token_file.as_deref()) {
            Ok(token) => builder = builder.bearer_token(token),
            // A client certificate is a credential of its own.
            Err(ClientError::NoToken) if self.client_identity.is_some() => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(path) = &self.client_identity {
            let pem = zeroize::Zeroizing::new(
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
            );
            builder = builder.client_identity_pem(&pem)?;
        }
        Ok(Client::new(builder.build()?))
    }
}

/// `--context KEY=VALUE`, repeatable.
#[derive(Args)]
pub struct ContextArgs {
    /// Encryption context pair, repeatable: --context tenant=acme --context app=billing.
    #[arg(long = "context", value_name = "KEY=VALUE")]
    pub pairs: Vec<String>,
}

/// Runs a client command to completion on a single-threaded runtime: one request at a time,
/// and the stdin/stdout locks the commands hold stay on one thread.
pub fn block_on<F: Future<Output = anyhow::Result<()>>>(command: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(command)
}

/// Writes `v` as pretty JSON to stdout. A closed pipe (`… | head`) is an error, not a panic as
/// with `println!`.
pub fn print_json(v: &serde_json::Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string_pretty(v)?).context("writing to stdout")?;
    out.flush().context("writing to stdout")?;
    Ok(())
}

/// Writes `bytes` to `out` (replacing it once complete) or to stdout.
pub fn write_output(
    out: Option<&Path>,
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
