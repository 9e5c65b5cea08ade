//! `custodian audit …`: read, export, verify and archive the audit log. `audit verify` runs
//! offline (no server, no token, no runtime).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;

use custodian::cli::audit::{self as audit_cli, PendingFile};
use custodian::cli::client::AuditQuery;

use super::{block_on, print_json, write_output, Conn};

/// `audit …`.
#[derive(Subcommand)]
pub enum AuditCommand {
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

/// Runs `audit …`: `verify` offline without a runtime, the rest against the server.
pub fn run(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Verify { file, public_key } => verify(&file, &public_key),
        command => block_on(online(command)),
    }
}

async fn online(command: AuditCommand) -> anyhow::Result<()> {
    let stdout = &mut std::io::stdout().lock();
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
                    let (file, s) = audit_cli::export(&client, after, until, file).await?;
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
                    audit_cli::export(&client, after, until, &mut *stdout).await?;
                }
            }
            Ok(())
        }
        AuditCommand::PublicKey { out, conn } => {
            let pem = conn.client()?.audit_public_key().await?;
            write_output(out.as_deref(), pem.as_bytes(), stdout)
        }
        AuditCommand::Archive { through, out, conn } => {
            let archived = audit_cli::archive(&conn.client()?, through, &out).await?;
            eprintln!(
                "records through {} archived; {} holds them: keep it",
                archived.through,
                out.display()
            );
            print_json(&serde_json::to_value(&archived)?)
        }
        // Offline; handled in `run` without a runtime.
        AuditCommand::Verify { .. } => Ok(()),
    }
}

/// `audit verify`: no server, no token, no runtime.
fn verify(file: &Path, public_key: &Path) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let key = audit_cli::read_public_key(public_key)?;
    let intact = audit_cli::verify_export_file(file, &key)?;
    writeln!(out, "{intact}").context("writing to stdout")?;
    out.flush().context("writing to stdout")?;
    Ok(())
}
