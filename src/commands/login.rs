//! `custodian login`: read a bearer token from stdin (with echo off on a terminal), check it
//! against the server and store it with mode 0600 for later commands.

use std::io::IsTerminal as _;
use std::path::PathBuf;

use clap::Args;
use zeroize::Zeroizing;

use custodian::cli::client::{
    login_token_path, read_token_line, store_token, token_from_line, Client, ClientError,
    TokenCheck, TOKEN_ENV,
};
use custodian::secret::BearerToken;

/// What `login` prints (on stderr) before reading a token typed at the terminal.
const PROMPT: &str = "bearer token (input hidden; end with Enter): ";

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
        prompt_token()?
    } else {
        // Piped or redirected: no prompt, and the terminal (if any) is left alone.
        read_token_line(stdin)?
    };
    let client = Client::new(
        custodian_client::Client::builder(addr)
            .bearer_token(token)
            .build()?,
    );
    let check = client.check_token().await?;
    if let Some(token) = client.token() {
        store_token(&path, token)?;
    }
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

/// Asks for the token on stderr and reads it from the terminal with echo off. rpassword opens
/// the terminal (`/dev/tty`), turns echo off (raw mode) for the read and restores the previous
/// settings when done, on error too; Enter ends the line and is echoed as a newline.
fn prompt_token() -> anyhow::Result<BearerToken> {
    let config = rpassword::ConfigBuilder::new()
        .output_writer(std::io::stderr())
        .build();
    match rpassword::prompt_password_with_config(PROMPT, config).map(Zeroizing::new) {
        Ok(line) => Ok(token_from_line(&line)?),
        // Ctrl-D on an empty line: nothing was typed, as with an empty pipe.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            eprintln!();
            Err(ClientError::NotAToken.into())
        }
        Err(e) => Err(anyhow::Error::new(ClientError::Io(e)).context("reading the terminal")),
    }
}
