//! The `custodian` binary: the server (`serve`), token provisioning (`token init`) and client
//! subcommands for every API call, `login`, and the offline `audit verify` and `custody verify`.
//! Secrets (PINs, tokens, plaintext, secret values) never come from argv.
//!
//! This file holds the command tree's top level and the dispatch; each subcommand group lives
//! in its own file under `commands/`.

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

use commands::access_keys::AccessKeysCommand;
use commands::aliases::AliasesCommand;
use commands::audit::AuditCommand;
use commands::crypto::{DatakeyArgs, DecryptArgs, EncryptArgs, ReencryptArgs};
use commands::custody::CustodyCommand;
use commands::database::DbCommand;
use commands::files::{DecryptFileArgs, EncryptFileArgs};
use commands::generate::{CompletionsArgs, ManArgs};
use commands::jobs::JobsCommand;
use commands::keys::KeysCommand;
use commands::login::LoginArgs;
use commands::policies::PoliciesCommand;
use commands::principals::PrincipalsCommand;
use commands::secrets::SecretsCommand;
use commands::serve::ServeArgs;
use commands::store::StoreCommand;
use commands::token::TokenCommand;
use commands::tokens::TokensCommand;
use commands::{
    access_keys, aliases, audit, block_on, crypto, custody, database, files, generate, jobs, keys,
    login, policies, principals, secrets, serve, store, token, tokens,
};

mod commands;

#[derive(Parser)]
#[command(
    name = "custodian",
    version,
    about = "A key management service whose master keys live in an HSM or a TPM"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Provision the PKCS#11 token named in the configuration.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage keys: create, list, show, rotate, update, disable/enable, schedule or cancel
    /// deletion, versions.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Generate a data key under KEY; prints JSON with the wrapped copy and (unless
    /// --no-plaintext) the plaintext copy, both base64.
    Datakey(DatakeyArgs),
    /// Encrypt stdin (at most 4096 bytes) under KEY; writes the ciphertext blob to stdout.
    Encrypt(EncryptArgs),
    /// Decrypt a ciphertext blob read from stdin; writes the plaintext to stdout. The blob
    /// names its key; the context must match the one used to encrypt.
    Decrypt(DecryptArgs),
    /// Encrypt a file of any size under KEY (envelope encryption: one data key from the server,
    /// the data encrypted here in frames; docs/formats.md). IN and OUT may be - for stdin and
    /// stdout; OUT is written under a temporary name and renamed when complete.
    EncryptFile(EncryptFileArgs),
    /// Decrypt a file made by encrypt-file: the server unwraps its data key under the context
    /// stored in the file; every frame is authenticated. OUT is renamed into place only after
    /// the final frame authenticated (with - for stdout, a bad file ends in an error).
    DecryptFile(DecryptFileArgs),
    /// Store and read versioned secrets by path (e.g. team/app/db-password). Values come from
    /// stdin or a file, never from an argument.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Re-encrypt a ciphertext blob read from stdin under a key's primary version (default: the
    /// blob's own key); writes the new blob to stdout, raw or base64 like the input. The
    /// plaintext never leaves the server.
    Reencrypt(ReencryptArgs),
    /// Manage aliases: re-pointable names for keys, usable as alias/NAME wherever a key is
    /// named.
    #[command(subcommand)]
    Aliases(AliasesCommand),
    /// Follow background jobs (re-wrap of stored data keys after a rotation).
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Manage principals: named identities with attributes and attached policies.
    #[command(subcommand)]
    Principals(PrincipalsCommand),
    /// Manage policy documents and ask which decision a request would get (see docs/policy.md).
    #[command(subcommand)]
    Policies(PoliciesCommand),
    /// Mint, list and revoke bearer tokens of principals (API credentials; `token init` is the
    /// PKCS#11 token).
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Create, list and revoke AWS SigV4 access keys of principals (credentials for the AWS
    /// KMS-compatible door; see docs/compat.md).
    #[command(subcommand)]
    AccessKeys(AccessKeysCommand),
    /// Database credentials: connections, static roles rotated in the database, dynamic users
    /// under leases (see docs/database-credentials.md).
    #[command(subcommand)]
    Db(DbCommand),
    /// Read, export, verify and archive the audit log: one hash-chained record per API
    /// request, with checkpoints signed by a key generated in the device (docs/audit.md).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Fetch or verify the signed custody report: every key version's root key as the device
    /// reports it, with anomalies flagged (docs/audit.md).
    #[command(subcommand)]
    Custody(CustodyCommand),
    /// Store a bearer token for later commands. The token is read from stdin, never from an
    /// argument, checked against the server (GET /v1/keys?limit=1: a 401 fails, a 403 only
    /// means the principal may not list keys) and written with mode 0600 to
    /// ~/.config/custodian/token, or to the file that --token-file or CUSTODIAN_TOKEN_FILE
    /// names. Other commands use it when CUSTODIAN_TOKEN and --token-file are not given.
    Login(LoginArgs),
    /// Offline maintenance of the store: `store migrate` copies a SQLite install into an empty
    /// PostgreSQL database (docs/upgrade-sqlite-to-postgres.md). The server must be stopped.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Print a shell completion script (bash, zsh or fish) for this binary.
    Completions(CompletionsArgs),
    /// Print the manual page (roff), or write one page per subcommand into --out-dir.
    Man(ManArgs),
}

/// Runs one command. `serve` builds its own multi-threaded runtime; `token init` and the
/// offline `audit verify` and `custody verify` need none; client commands run on a
/// single-threaded one.
fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Token(command) => token::run(command),
        Command::Audit(command) => audit::run(command),
        Command::Custody(command) => custody::run(command),
        Command::Store(command) => store::run(command),
        Command::Keys(command) => block_on(keys::run(command)),
        Command::Datakey(args) => block_on(crypto::datakey(args)),
        Command::Encrypt(args) => block_on(crypto::encrypt(args)),
        Command::Decrypt(args) => block_on(crypto::decrypt(args)),
        Command::Reencrypt(args) => block_on(crypto::reencrypt(args)),
        Command::EncryptFile(args) => block_on(files::encrypt(args)),
        Command::DecryptFile(args) => block_on(files::decrypt(args)),
        Command::Secrets(command) => block_on(secrets::run(command)),
        Command::Aliases(command) => block_on(aliases::run(command)),
        Command::Jobs(command) => block_on(jobs::run(command)),
        Command::Principals(command) => block_on(principals::run(command)),
        Command::Policies(command) => block_on(policies::run(command)),
        Command::Tokens(command) => block_on(tokens::run(command)),
        Command::AccessKeys(command) => block_on(access_keys::run(command)),
        Command::Db(command) => block_on(database::run(command)),
        Command::Login(args) => block_on(login::run(args)),
        Command::Completions(args) => generate::completions(&args, Cli::command()),
        Command::Man(args) => generate::man(&args, Cli::command()),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
