//! `custodian token init`: provision the PKCS#11 token named in the configuration (not to be
//! confused with `tokens`, the API's bearer tokens).

use std::path::PathBuf;

use clap::Subcommand;

use custodian::config::{BackendConfig, Config};

/// `token …`.
#[derive(Subcommand)]
pub enum TokenCommand {
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

/// Runs `token …`; no async runtime is needed.
pub fn run(command: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::Init {
        config,
        so_pin_file,
    } = command;
    let config = Config::load(config.as_deref())?;
    custodian::process::harden(config.server.core_dumps)?;
    let BackendConfig::Pkcs11(p) = &config.backend;
    let outcome = custodian::cli::provision::run(p, &so_pin_file)?;
    println!("token: {outcome:?}");
    Ok(())
}
