//! `custodian store …`: offline maintenance of the metadata store. `store migrate` moves an
//! install from its SQLite file into an empty PostgreSQL database (docs/upgrade-sqlite-to-postgres.md).

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};

use custodian::config::SecretSource;
use custodian::store::migrate;
use custodian::store::postgres::{PostgresSettings, SslMode};

use super::block_on;

/// `store …`.
#[derive(Subcommand)]
pub enum StoreCommand {
    /// Copy everything from a SQLite database into a new, empty PostgreSQL database: keys and
    /// their versions, aliases, principals, policies (with their history), tokens, secrets
    /// (every version), jobs and the whole audit chain with its checkpoints and archives. The
    /// server must be stopped: a SQLite file another process has open is refused. The target
    /// must hold no data. The copy is one transaction, checked (row counts and contents per
    /// table, the audit chain's head) before it commits; prints rows per table.
    Migrate(MigrateArgs),
}

/// `store migrate`'s options. The password never comes from an argument.
#[derive(Args)]
pub struct MigrateArgs {
    /// The SQLite database file (the `[store] path` of the configuration).
    #[arg(long, value_name = "PATH")]
    from: PathBuf,
    /// The PostgreSQL database, postgres://user@host:port/dbname, without a password.
    #[arg(long, value_name = "URL")]
    to: String,
    /// File holding the target's password (mode 0600; trailing newline ignored).
    #[arg(long, value_name = "FILE", conflicts_with = "to_password_env")]
    to_password_file: Option<PathBuf>,
    /// Environment variable holding the target's password.
    #[arg(long, value_name = "VAR")]
    to_password_env: Option<String>,
    /// TLS to the target, as `[store] sslmode`.
    #[arg(
        long,
        value_name = "MODE",
        default_value = "disable",
        value_parser = ["disable", "require", "verify-full"]
    )]
    to_sslmode: String,
    /// PEM file of the CA that issues the target server's certificate (with verify-full).
    #[arg(long, value_name = "PEM")]
    to_ca_file: Option<PathBuf>,
}

/// Runs `store …`.
pub fn run(command: StoreCommand) -> anyhow::Result<()> {
    match command {
        StoreCommand::Migrate(args) => block_on(migrate_cmd(args)),
    }
}

async fn migrate_cmd(args: MigrateArgs) -> anyhow::Result<()> {
    let sslmode = match (args.to_sslmode.as_str(), args.to_ca_file) {
        ("verify-full", Some(ca_file)) => SslMode::VerifyFull { ca_file },
        ("verify-full", None) => bail!("--to-sslmode verify-full needs --to-ca-file"),
        (_, Some(_)) => bail!("--to-ca-file is only used with --to-sslmode verify-full"),
        ("require", None) => SslMode::Require,
        _ => SslMode::Disable,
    };
    let password = match (args.to_password_file, args.to_password_env) {
        (Some(path), _) => Some(SecretSource::File(path).read("--to-password-file")?),
        (None, Some(var)) => Some(SecretSource::Env(var).read("--to-password-env")?),
        (None, None) => None,
    };
    let mut settings = PostgresSettings::new(args.to);
    settings.password = password;
    settings.sslmode = sslmode;
    settings.pool_size = 1;
    let report = migrate::sqlite_to_postgres(&args.from, &settings)
        .await
        .with_context(|| format!("migrating {} to PostgreSQL", args.from.display()))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{report}").context("writing to stdout")?;
    out.flush().context("writing to stdout")?;
    Ok(())
}
