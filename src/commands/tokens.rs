//! `custodian tokens …`: mint, list and revoke the bearer tokens of principals (API
//! credentials; `token init` is the PKCS#11 token).

use std::io::Write as _;

use anyhow::Context as _;
use clap::Subcommand;

use super::{print_json, Conn};

/// `tokens …`.
#[derive(Subcommand)]
pub enum TokensCommand {
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

/// Runs `tokens …`; a minted token goes to `stdout` alone.
pub async fn run(command: TokensCommand) -> anyhow::Result<()> {
    let stdout = &mut std::io::stdout().lock();
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
