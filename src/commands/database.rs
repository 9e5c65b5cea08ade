//! `custodian db …`: database credentials (docs/database-credentials.md). Connections and roles
//! for operators; static passwords and dynamic credentials for applications. Passwords are read
//! from files (never arguments) and printed only by the two commands that hand one out, as
//! `PGUSER=…`/`PGPASSWORD=…` lines on stdout with the metadata on stderr.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use custodian::api_types::database::{CreateDbConnectionRequest, PutDbRoleRequest};
use custodian::cli::client::read_value_file;
use custodian::domain::secret::HumanDuration;
use zeroize::Zeroizing;

use super::{print_json, Conn};

/// `db …`.
#[derive(Subcommand)]
pub enum DbCommand {
    /// Target databases and the admin Custodian changes them as.
    #[command(subcommand)]
    Connections(ConnectionsCommand),
    /// Static roles (an existing database role whose password Custodian rotates) and dynamic
    /// roles (SQL templates that create a user per request).
    #[command(subcommand)]
    Roles(RolesCommand),
    /// Print a static role's current password as PGUSER=/PGPASSWORD= lines on stdout (its
    /// version and rotation time as JSON on stderr).
    StaticCreds {
        /// The role.
        role: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Rotate a static role's password now (in the database, then in Custodian).
    Rotate {
        /// The role.
        role: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Create a database user of a dynamic role: PGUSER=/PGPASSWORD= lines on stdout, the lease
    /// as JSON on stderr.
    Creds {
        /// The role.
        role: String,
        /// The lease's TTL, e.g. 15m (default: the role's default_ttl).
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Renew or revoke a lease.
    #[command(subcommand)]
    Leases(LeasesCommand),
}

/// `db connections …`.
#[derive(Subcommand)]
pub enum ConnectionsCommand {
    /// Create a connection: Custodian logs in as the admin and checks that it may manage roles
    /// before storing anything. The admin password is read from a file and never shown again.
    Create {
        /// The connection's name.
        name: String,
        /// postgres://host:port/dbname (no user, no password).
        #[arg(long)]
        url: String,
        /// The admin role.
        #[arg(long)]
        admin_user: String,
        /// File holding the admin's password (a trailing newline is dropped).
        #[arg(long)]
        admin_password_file: PathBuf,
        /// disable, require or verify-full.
        #[arg(long, default_value = "disable")]
        sslmode: String,
        /// PEM file of the CA that issues the database's certificate (verify-full).
        #[arg(long)]
        db_ca_file: Option<PathBuf>,
        /// The key that seals the passwords (default: secrets.default_key).
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print the connections as JSON (never a password).
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete a connection no role names.
    Delete {
        /// The connection.
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
}

/// `db roles …`.
#[derive(Subcommand)]
pub enum RolesCommand {
    /// Create or change a role. Static: --username (and --rotation-period, --overlap); its first
    /// password is set at once. Dynamic: one --creation-statement or more, with {{name}},
    /// {{password}} and {{expiration}} placeholders (quoted by the database: write no quotes
    /// around them).
    Put(Box<RolePut>),
    /// Print the roles as JSON.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete a role without live leases.
    Delete {
        /// The role.
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
}

/// `db roles put …`.
#[derive(clap::Args)]
pub struct RolePut {
    /// The role's name.
    name: String,
    /// Its connection.
    #[arg(long)]
    connection: String,
    /// static or dynamic.
    #[arg(long)]
    kind: String,
    /// Static: the existing database role.
    #[arg(long)]
    username: Option<String>,
    /// Static: rotation period, e.g. 30d.
    #[arg(long, value_name = "DURATION")]
    rotation_period: Option<String>,
    /// Static: how long the previous password stays readable, e.g. 1h.
    #[arg(long, value_name = "DURATION")]
    overlap: Option<String>,
    /// Dynamic: a creation statement (repeat for several).
    #[arg(long = "creation-statement")]
    creation: Vec<String>,
    /// Dynamic: a revocation statement (repeat; default: end sessions, DROP OWNED, DROP
    /// ROLE).
    #[arg(long = "revocation-statement")]
    revocation: Vec<String>,
    /// Dynamic: a renewal statement (repeat; default: ALTER ROLE … VALID UNTIL).
    #[arg(long = "renew-statement")]
    renew: Vec<String>,
    /// Dynamic: default lease TTL (default 1h).
    #[arg(long, value_name = "DURATION")]
    default_ttl: Option<String>,
    /// Dynamic: longest lease, renewals included (default 24h).
    #[arg(long, value_name = "DURATION")]
    max_ttl: Option<String>,
    /// Dynamic: revoke (default) or keep leases when their token is revoked.
    #[arg(long)]
    on_token_revoke: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

/// `db leases …`.
#[derive(Subcommand)]
pub enum LeasesCommand {
    /// Renew a lease to now + --increment (default: the role's default_ttl); prints the lease.
    Renew {
        /// The lease id (dbl_…).
        id: String,
        /// e.g. 15m.
        #[arg(long, value_name = "DURATION")]
        increment: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Revoke a lease now: its user is removed from the database.
    Revoke {
        /// The lease id (dbl_…).
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
}

fn duration(flag: &str, text: Option<String>) -> anyhow::Result<Option<HumanDuration>> {
    text.map(|t| HumanDuration::parse(&t).with_context(|| format!("--{flag} {t:?}")))
        .transpose()
}

/// `PGUSER=` and `PGPASSWORD=` on stdout, `meta` as JSON on stderr.
fn print_login(user: &str, password: &str, meta: &impl serde::Serialize) -> anyhow::Result<()> {
    let stdout = &mut std::io::stdout().lock();
    writeln!(stdout, "PGUSER={user}\nPGPASSWORD={password}").context("writing to stdout")?;
    stdout.flush().context("writing to stdout")?;
    writeln!(
        std::io::stderr().lock(),
        "{}",
        serde_json::to_string_pretty(meta)?
    )
    .context("writing to stderr")?;
    Ok(())
}

/// Runs `db …`.
pub async fn run(command: DbCommand) -> anyhow::Result<()> {
    match command {
        DbCommand::Connections(c) => connections(c).await,
        DbCommand::Roles(c) => roles(c).await,
        DbCommand::StaticCreds { role, conn } => {
            let creds = conn.client()?.api().static_db_creds(&role).await?;
            print_login(
                &creds.username,
                &creds.password,
                &serde_json::json!({ "role": creds.role, "connection": creds.connection,
                    "version": creds.version, "ttl_seconds": creds.ttl_seconds }),
            )
        }
        DbCommand::Rotate { role, conn } => {
            let rotated = conn.client()?.api().rotate_db_role(&role).await?;
            print_json(&serde_json::to_value(rotated)?)
        }
        DbCommand::Creds { role, ttl, conn } => {
            let creds = conn.client()?.api().db_creds(&role, ttl.as_deref()).await?;
            print_login(&creds.username, &creds.password, &creds.lease)
        }
        DbCommand::Leases(LeasesCommand::Renew {
            id,
            increment,
            conn,
        }) => {
            let lease = conn
                .client()?
                .api()
                .renew_db_lease(&id, increment.as_deref())
                .await?;
            print_json(&serde_json::to_value(lease)?)
        }
        DbCommand::Leases(LeasesCommand::Revoke { id, conn }) => {
            conn.client()?.api().revoke_db_lease(&id).await?;
            Ok(())
        }
    }
}

async fn connections(command: ConnectionsCommand) -> anyhow::Result<()> {
    match command {
        ConnectionsCommand::Create {
            name,
            url,
            admin_user,
            admin_password_file,
            sslmode,
            db_ca_file,
            key,
            conn,
        } => {
            let raw = read_value_file(&admin_password_file)?;
            let text = std::str::from_utf8(&raw).context("the admin password file is not UTF-8")?;
            let password = Zeroizing::new(
                text.strip_suffix('\n')
                    .map(|t| t.strip_suffix('\r').unwrap_or(t))
                    .unwrap_or(text)
                    .to_owned(),
            );
            let ca_pem = db_ca_file
                .map(|p| {
                    std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
                })
                .transpose()?;
            let request = CreateDbConnectionRequest {
                name,
                plugin: "postgresql".to_owned(),
                url,
                admin_user,
                admin_password: (*password).clone(),
                sslmode,
                ca_pem,
                key,
            };
            let created = conn.client()?.api().create_db_connection(&request).await;
            // The request's copy of the password is zeroised here, whatever the answer.
            let mut request = request;
            zeroize::Zeroize::zeroize(&mut request.admin_password);
            print_json(&serde_json::to_value(created?)?)
        }
        ConnectionsCommand::List { conn } => print_json(&serde_json::to_value(
            conn.client()?.api().db_connections().await?,
        )?),
        ConnectionsCommand::Delete { name, conn } => {
            conn.client()?.api().delete_db_connection(&name).await?;
            Ok(())
        }
    }
}

async fn roles(command: RolesCommand) -> anyhow::Result<()> {
    match command {
        RolesCommand::Put(put) => {
            let RolePut {
                name,
                connection,
                kind,
                username,
                rotation_period,
                overlap,
                creation,
                revocation,
                renew,
                default_ttl,
                max_ttl,
                on_token_revoke,
                conn,
            } = *put;
            let role = PutDbRoleRequest {
                connection,
                kind,
                username,
                rotation_period: duration("rotation-period", rotation_period)?,
                overlap: duration("overlap", overlap)?,
                creation_statements: creation,
                revocation_statements: revocation,
                renew_statements: renew,
                default_ttl: duration("default-ttl", default_ttl)?,
                max_ttl: duration("max-ttl", max_ttl)?,
                on_token_revoke,
            };
            print_json(&serde_json::to_value(
                conn.client()?.api().put_db_role(&name, &role).await?,
            )?)
        }
        RolesCommand::List { conn } => print_json(&serde_json::to_value(
            conn.client()?.api().db_roles().await?,
        )?),
        RolesCommand::Delete { name, conn } => {
            conn.client()?.api().delete_db_role(&name).await?;
            Ok(())
        }
    }
}
