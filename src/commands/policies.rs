//! `custodian policies …`: policy documents, and the decision a request would get.

use std::io::IsTerminal as _;
use std::net::IpAddr;
use std::path::PathBuf;

use clap::Subcommand;

use custodian::cli::client::{
    check_policy_name, context_json, read_policy, read_policy_file, Explain,
};

use super::{print_json, Conn, ContextArgs};

/// `policies …`.
#[derive(Subcommand)]
pub enum PoliciesCommand {
    /// Write a policy document, read from --file or stdin (JSON). Every write is a new version;
    /// an invalid document is refused with the JSON path at fault. Prints the policy as JSON.
    Put {
        /// Policy name: letters, digits, '-', '_', '.' (not "explain").
        name: String,
        /// Read the document from this file instead of stdin.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print every policy (current versions) as JSON.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Print one policy as JSON.
    Show {
        /// Policy name.
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete a policy; principals it is attached to lose what it granted (and what it denied).
    /// Prints nothing.
    Delete {
        /// Policy name.
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print, as JSON, the decision PRINCIPAL would get for ACTION on RESOURCE and the
    /// statement that made it, evaluated as enforcement would.
    Explain {
        /// The principal asked about.
        #[arg(long)]
        principal: String,
        /// Action, e.g. datakey:generate (vocabulary in docs/policy.md).
        #[arg(long)]
        action: String,
        /// Resource: key/NAME-OR-ID, key/alias/NAME, alias/NAME, secret/PATH, policy/NAME,
        /// principal/NAME.
        #[arg(long)]
        resource: String,
        #[command(flatten)]
        context: ContextArgs,
        /// Source address of the imagined request (source_cidr conditions are false without
        /// one).
        #[arg(long, value_name = "IP")]
        source: Option<IpAddr>,
        #[command(flatten)]
        conn: Conn,
    },
}

/// Runs `policies …`; `put` without `--file` reads the document from `stdin`.
pub async fn run(command: PoliciesCommand) -> anyhow::Result<()> {
    let stdin = &mut std::io::stdin().lock();
    match command {
        PoliciesCommand::Put { name, file, conn } => {
            let client = conn.client()?;
            // Before waiting for a document on stdin.
            check_policy_name(&name)?;
            let document = match file {
                Some(f) => read_policy_file(&f)?,
                None => {
                    if stdin.is_terminal() {
                        eprintln!("reading the policy document from stdin; end it with Ctrl-D");
                    }
                    read_policy(stdin)?
                }
            };
            print_json(&client.put_policy(&name, document).await?)
        }
        PoliciesCommand::List { conn } => print_json(&conn.client()?.list_policies().await?),
        PoliciesCommand::Show { name, conn } => {
            print_json(&conn.client()?.show_policy(&name).await?)
        }
        PoliciesCommand::Delete { name, conn } => Ok(conn.client()?.delete_policy(&name).await?),
        PoliciesCommand::Explain {
            principal,
            action,
            resource,
            context,
            source,
            conn,
        } => {
            let question = Explain {
                principal,
                action,
                resource,
                // No --context: a request without an encryption context.
                context: (!context.pairs.is_empty())
                    .then(|| context_json(&context.pairs))
                    .transpose()?,
                source,
            };
            print_json(&conn.client()?.explain(&question).await?)
        }
    }
}
