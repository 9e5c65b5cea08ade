//! The `custodian` binary: the server (`serve`), token provisioning (`token init`) and client
//! subcommands for every API call. Secrets (PINs, tokens, plaintext) never come from argv.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use custodian::app::App;
use custodian::cli::client::{context_json, load_token, Client};
use custodian::config::{BackendConfig, Config};

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
    /// Manage keys (create, list, show).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Generate a data key under KEY; prints JSON with the wrapped copy and (unless
    /// --no-plaintext) the plaintext copy, both base64.
    Datakey {
        /// Key id or name.
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
        /// Key id or name.
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

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key; its version-1 root key is generated inside the device.
    Create {
        /// Unique name: letters, digits, '-', '_', '.'.
        name: String,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
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
    /// Show one key by id or name.
    Show {
        /// Key id or name.
        key: String,
        #[command(flatten)]
        conn: Conn,
    },
}

/// Where the server is and how to authenticate. The token comes from CUSTODIAN_TOKEN or a file.
#[derive(Args)]
struct Conn {
    /// Server URL.
    #[arg(long, env = "CUSTODIAN_ADDR", default_value = "http://127.0.0.1:8200")]
    addr: String,
    /// File holding the bearer token (otherwise CUSTODIAN_TOKEN is used).
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

fn print_json(v: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

async fn client_command(command: Command) -> anyhow::Result<()> {
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    match command {
        Command::Keys(KeysCommand::Create {
            name,
            description,
            conn,
        }) => print_json(&conn.client()?.create_key(&name, &description).await?),
        Command::Keys(KeysCommand::List { limit, after, conn }) => {
            print_json(&conn.client()?.list_keys(limit, after.as_deref()).await?)
        }
        Command::Keys(KeysCommand::Show { key, conn }) => {
            print_json(&conn.client()?.show_key(&key).await?)
        }
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
        Command::Serve { .. } | Command::Token(_) => Ok(()),
    }
}

fn serve(config: Option<PathBuf>, check_config: bool) -> anyhow::Result<()> {
    let config = Config::load(config.as_deref())?;
    if check_config {
        println!("configuration is valid");
        return Ok(());
    }
    custodian::telemetry::init(&config.log);
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
            let BackendConfig::Pkcs11(p) = &config.backend;
            let outcome = custodian::cli::provision::run(p, &so_pin_file)?;
            println!("token: {outcome:?}");
            Ok(())
        }
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
