//! `custodian secrets …`: versioned secrets by path. Values come from stdin or a file, never
//! from an argument, and `secrets get` writes the raw value bytes to stdout.

use std::io::IsTerminal as _;
use std::path::PathBuf;

use clap::Subcommand;

use custodian::cli::client::{read_value, read_value_file, GenerateChange, MetadataChange};

use super::{print_json, Conn};

/// A secret path: segments of `A-Z a-z 0-9 - _ .` joined by `/`.
const PATH_HELP: &str = "Secret path: up to 16 segments of letters, digits, '-', '_' and '.', \
     joined by '/' (at most 512 bytes; no '.' or '..' segment; the last segment is not \
     metadata, undelete, destroy or rotate)";

/// `secrets …`.
#[derive(Subcommand)]
pub enum SecretsCommand {
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

/// `secrets metadata …`.
#[derive(Subcommand)]
pub enum MetadataCommand {
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

/// Runs `secrets …`, reading values from `stdin` and writing them to `stdout`.
pub async fn run(command: SecretsCommand) -> anyhow::Result<()> {
    let stdin = &mut std::io::stdin().lock();
    let stdout = &mut std::io::stdout().lock();
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
