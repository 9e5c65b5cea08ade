//! `completions` and `man`: shell completions (`clap_complete`) and manual pages
//! (`clap_mangen`), generated from the command tree itself, so they list exactly the
//! subcommands and options this binary accepts.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, ValueEnum};

/// A shell to complete in.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    /// Bash (source it, or install it under bash-completion's completions directory).
    Bash,
    /// Zsh (install it as `_custodian` in a directory of `$fpath`).
    Zsh,
    /// Fish (install it as `custodian.fish` under `~/.config/fish/completions`).
    Fish,
}

/// `completions SHELL`.
#[derive(Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    shell: Shell,
}

/// `man`.
#[derive(Args)]
pub struct ManArgs {
    /// Write custodian.1 and one page per subcommand (custodian-keys.1, custodian-keys-rotate.1,
    /// …) into this directory instead of printing custodian.1 to stdout.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
}

/// Writes the completion script for `args.shell` to stdout.
///
/// # Errors
/// Writing stdout.
pub fn completions(args: &CompletionsArgs, mut command: clap::Command) -> anyhow::Result<()> {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    // What `clap_complete::generate` does, with the write error returned rather than a panic
    // (a closed pipe, e.g. `| head`).
    command.set_bin_name("custodian");
    command.build();
    let mut out = std::io::stdout().lock();
    clap_complete::Generator::try_generate(&shell, &command, &mut out)?;
    out.flush()?;
    Ok(())
}

/// Writes the manual page(s).
///
/// # Errors
/// Writing stdout or the directory.
pub fn man(args: &ManArgs, command: clap::Command) -> anyhow::Result<()> {
    match &args.out_dir {
        None => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(command).render(&mut out)?;
            out.flush()?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(command, dir)
                .with_context(|| format!("writing pages into {}", dir.display()))?;
        }
    }
    Ok(())
}
