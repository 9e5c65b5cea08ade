//! `custodian serve`: load and validate the configuration, set up tracing, harden the process,
//! then run the server until a signal.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use custodian::app::App;
use custodian::config::Config;

/// `serve`'s options.
#[derive(Args)]
pub struct ServeArgs {
    /// Configuration file (TOML); `CUSTODIAN__SECTION__KEY` variables override it.
    #[arg(long, env = "CUSTODIAN_CONFIG")]
    config: Option<PathBuf>,
    /// Validate the configuration and exit.
    #[arg(long)]
    check_config: bool,
}

/// Runs `serve`.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref())?;
    if args.check_config {
        println!("configuration is valid");
        return Ok(());
    }
    custodian::telemetry::init(&config.log);
    // Before the PIN is read or a key touched: no core dump may hold them.
    custodian::process::harden(config.server.core_dumps)?;
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
