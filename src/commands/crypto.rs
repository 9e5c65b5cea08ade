//! `custodian datakey`, `encrypt`, `decrypt` and `reencrypt`: the cryptographic operations
//! under a key. Payloads and blobs travel through stdin and stdout, never through arguments.

use clap::Args;

use custodian::cli::client::{context_json, Reencrypt};

use super::{Conn, ContextArgs, KEY_HELP};

/// `datakey`'s arguments.
#[derive(Args)]
pub struct DatakeyArgs {
    #[arg(help = KEY_HELP)]
    key: String,
    /// Data key length: 16, 24 or 32.
    #[arg(long, default_value_t = 32)]
    bytes: u32,
    /// Return only the wrapped copy.
    #[arg(long)]
    no_plaintext: bool,
    #[command(flatten)]
    context: ContextArgs,
    #[command(flatten)]
    conn: Conn,
}

/// `encrypt`'s arguments.
#[derive(Args)]
pub struct EncryptArgs {
    #[arg(help = KEY_HELP)]
    key: String,
    /// Write the blob as base64 text instead of raw bytes.
    #[arg(long)]
    base64: bool,
    #[command(flatten)]
    context: ContextArgs,
    #[command(flatten)]
    conn: Conn,
}

/// `decrypt`'s arguments.
#[derive(Args)]
pub struct DecryptArgs {
    /// Read the blob as base64 text instead of raw bytes.
    #[arg(long)]
    base64: bool,
    #[command(flatten)]
    context: ContextArgs,
    #[command(flatten)]
    conn: Conn,
}

/// `reencrypt`'s arguments.
#[derive(Args)]
pub struct ReencryptArgs {
    /// Read and write blobs as base64 text instead of raw bytes.
    #[arg(long)]
    base64: bool,
    #[command(flatten)]
    context: ContextArgs,
    /// Key (id, name or alias/NAME) to seal the new blob under; default: the blob's key.
    #[arg(long, value_name = "KEY")]
    destination_key: Option<String>,
    /// Context pair for the new blob, repeatable; default: the same context as the input.
    #[arg(long = "destination-context", value_name = "KEY=VALUE")]
    destination_context: Vec<String>,
    /// Seal the new blob with the empty context.
    #[arg(long, conflicts_with = "destination_context")]
    empty_destination_context: bool,
    #[command(flatten)]
    conn: Conn,
}

/// Runs `datakey`: prints the data key as JSON.
pub async fn datakey(args: DatakeyArgs) -> anyhow::Result<()> {
    let DatakeyArgs {
        key,
        bytes,
        no_plaintext,
        context,
        conn,
    } = args;
    let mut stdout = std::io::stdout().lock();
    Ok(conn
        .client()?
        .datakey(
            &key,
            bytes,
            !no_plaintext,
            context_json(&context.pairs)?,
            &mut stdout,
        )
        .await?)
}

/// Runs `encrypt`: stdin to a blob on stdout.
pub async fn encrypt(args: EncryptArgs) -> anyhow::Result<()> {
    let EncryptArgs {
        key,
        base64,
        context,
        conn,
    } = args;
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    Ok(conn
        .client()?
        .encrypt(
            &key,
            context_json(&context.pairs)?,
            &mut stdin,
            base64,
            &mut stdout,
        )
        .await?)
}

/// Runs `decrypt`: a blob on stdin to the plaintext on stdout.
pub async fn decrypt(args: DecryptArgs) -> anyhow::Result<()> {
    let DecryptArgs {
        base64,
        context,
        conn,
    } = args;
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    Ok(conn
        .client()?
        .decrypt(
            context_json(&context.pairs)?,
            &mut stdin,
            base64,
            &mut stdout,
        )
        .await?)
}

/// Runs `reencrypt`: a blob on stdin to a new blob on stdout.
pub async fn reencrypt(args: ReencryptArgs) -> anyhow::Result<()> {
    let ReencryptArgs {
        base64,
        context,
        destination_key,
        destination_context,
        empty_destination_context,
        conn,
    } = args;
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    let destination_context = if empty_destination_context {
        Some(serde_json::json!({}))
    } else if destination_context.is_empty() {
        None
    } else {
        Some(context_json(&destination_context)?)
    };
    let request = Reencrypt {
        context: context_json(&context.pairs)?,
        destination_key,
        destination_context,
    };
    Ok(conn
        .client()?
        .reencrypt(&request, &mut stdin, base64, &mut stdout)
        .await?)
}
