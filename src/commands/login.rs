//! `custodian login`: read a bearer token from stdin (with echo off on a terminal), check it
//! against the server and store it with mode 0600 for later commands.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;

use clap::Args;

use custodian::cli::client::{
    login_token_path, read_token_line, store_token, Client, ClientError, TokenCheck, TOKEN_ENV,
};

/// `login`'s options.
#[derive(Args)]
pub struct LoginArgs {
    /// Server URL.
    #[arg(long, env = "CUSTODIAN_ADDR", default_value = "http://127.0.0.1:8200")]
    addr: String,
    /// Where to store the token (default: ~/.config/custodian/token).
    #[arg(long, env = "CUSTODIAN_TOKEN_FILE")]
    token_file: Option<PathBuf>,
}

/// Turns terminal echo off (`stty -echo`) while a token is typed or pasted, and back on when
/// dropped. Without `stty` the input stays visible; nothing else changes.
struct EchoOff {
    active: bool,
}

impl EchoOff {
    fn new() -> Self {
        let active = std::process::Command::new("stty")
            .arg("-echo")
            .stdin(std::process::Stdio::inherit())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        Self { active }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if self.active {
            let _ = std::process::Command::new("stty")
                .arg("echo")
                .stdin(std::process::Stdio::inherit())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// `custodian login`: reads a token from stdin, checks it, stores it with mode 0600.
pub async fn run(args: LoginArgs) -> anyhow::Result<()> {
    let LoginArgs { addr, token_file } = args;
    let addr = addr.as_str();
    let stdin = &mut std::io::stdin().lock();
    let path = match token_file {
        Some(p) => p,
        None => login_token_path().ok_or(ClientError::NoHome)?,
    };
    let token = if stdin.is_terminal() {
        eprint!("bearer token (input hidden; end with Enter): ");
        let _ = std::io::stderr().flush();
        let echo = EchoOff::new();
        let read = read_token_line(stdin);
        drop(echo);
        eprintln!();
        read?
    } else {
        read_token_line(stdin)?
    };
    let client = Client::new(addr, token);
    let check = client.check_token().await?;
    store_token(&path, client.token())?;
    eprintln!(
        "token accepted by {addr}; stored in {} (mode 0600)",
        path.display()
    );
    if check == TokenCheck::KeyReadDenied {
        eprintln!(
            "note: its principal may not list keys (403); that is its policy, not a login failure"
        );
    }
    if std::env::var_os(TOKEN_ENV).is_some_and(|v| !v.is_empty()) {
        eprintln!("note: {TOKEN_ENV} is set and takes precedence over the stored token");
    }
    Ok(())
}
