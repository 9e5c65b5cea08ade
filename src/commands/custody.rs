//! `custodian custody …`: fetch the signed custody report, or verify a saved one offline (no
//! server, no token, no runtime).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;

use custodian::cli::audit as audit_cli;

use super::{block_on, write_output, Conn};

/// `custody …`.
#[derive(Subcommand)]
pub enum CustodyCommand {
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

/// Runs `custody …`: `verify` offline without a runtime, `report` against the server.
pub fn run(command: CustodyCommand) -> anyhow::Result<()> {
    match command {
        CustodyCommand::Verify {
            file,
            public_key,
            attestation_key,
        } => verify(&file, &public_key, attestation_key.as_deref()),
        command => block_on(online(command)),
    }
}

async fn online(command: CustodyCommand) -> anyhow::Result<()> {
    let stdout = &mut std::io::stdout().lock();
    match command {
        CustodyCommand::Report { format, out, conn } => {
            let envelope = conn.client()?.custody_report().await?;
            if format == "md" {
                let report = audit_cli::parse_report(&envelope, "the server's answer")?;
                let md = audit_cli::render_markdown(&report)?;
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

/// `custody verify`: no server, no token, no runtime.
fn verify(file: &Path, public_key: &Path, attestation_key: Option<&Path>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let key = audit_cli::read_public_key(public_key)?;
    let ak = attestation_key
        .map(audit_cli::read_public_key)
        .transpose()?;
    let verdict = audit_cli::verify_report_file(file, &key, ak.as_ref())?;
    write!(out, "{}", verdict.text).context("writing to stdout")?;
    out.flush().context("writing to stdout")?;
    if let Some(first) = verdict.attestation_failures.first() {
        anyhow::bail!(
            "attestation_failed: {} of {} TPM attestations do not verify; first: {first}",
            verdict.attestation_failures.len(),
            verdict.attestations_verified + verdict.attestation_failures.len(),
        );
    }
    out.flush().context("writing to stdout")?;
    Ok(())
}
