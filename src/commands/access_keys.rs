//! `custodian access-keys …`: create, list and revoke the AWS SigV4 access keys of principals
//! (credentials for the AWS KMS-compatible door, docs/compat.md).

use std::io::Write as _;

use anyhow::Context as _;
use clap::Subcommand;

use super::{print_json, Conn};

/// `access-keys …`.
#[derive(Subcommand)]
pub enum AccessKeysCommand {
    /// Create an access key for a principal. Its id and secret are printed once, on stdout, as
    /// `AWS_ACCESS_KEY_ID=…` and `AWS_SECRET_ACCESS_KEY=…` lines; its metadata goes to stderr
    /// as JSON. The secret cannot be shown again.
    Create {
        /// The principal the access key authenticates.
        #[arg(long)]
        principal: String,
        /// The key (name, id or alias/NAME) that seals the secret (default: [aws]
        /// access_key_key, else secrets.default_key).
        #[arg(long)]
        key: Option<String>,
        /// Lifetime, e.g. 90d, 12h (default: no expiry).
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
        /// Free text (at most 1024 bytes).
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print access key metadata as JSON (never a secret).
    List {
        /// Only this principal's access keys.
        #[arg(long)]
        principal: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Revoke an access key by id: requests signed with it are refused at once. Prints nothing.
    Revoke {
        /// Access key id (CKIA…).
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
}

/// Runs `access-keys …`; a created access key goes to `stdout`.
pub async fn run(command: AccessKeysCommand) -> anyhow::Result<()> {
    match command {
        AccessKeysCommand::Create {
            principal,
            key,
            ttl,
            description,
            conn,
        } => {
            let minted = conn
                .client()?
                .create_access_key(&principal, key.as_deref(), ttl.as_deref(), &description)
                .await?;
            let stdout = &mut std::io::stdout().lock();
            writeln!(
                stdout,
                "AWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY={}",
                minted.id,
                minted.secret.expose_secret()
            )
            .context("writing to stdout")?;
            stdout.flush().context("writing to stdout")?;
            let mut err = std::io::stderr().lock();
            writeln!(err, "{}", serde_json::to_string_pretty(&minted.info)?)
                .context("writing to stderr")?;
            Ok(())
        }
        AccessKeysCommand::List { principal, conn } => print_json(
            &conn
                .client()?
                .list_access_keys(principal.as_deref())
                .await?,
        ),
        AccessKeysCommand::Revoke { id, conn } => Ok(conn.client()?.revoke_access_key(&id).await?),
    }
}
