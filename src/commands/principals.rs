//! `custodian principals …`: named identities with attributes and attached policies.

use clap::{ArgGroup, Subcommand};

use custodian::cli::client::PrincipalChange;

use super::{print_json, Conn};

/// `principals …`.
#[derive(Subcommand)]
pub enum PrincipalsCommand {
    /// Create a principal; prints it as JSON.
    Create {
        /// Unique name: letters, digits, '-', '_', '.'.
        name: String,
        /// Attribute, repeatable: --attr tenant=acme --attr team=billing. Policy conditions
        /// refer to them as ${principal.<name>}.
        #[arg(long = "attr", value_name = "KEY=VALUE")]
        attrs: Vec<String>,
        /// Policy to attach, repeatable; each must exist.
        #[arg(long = "policy", value_name = "POLICY")]
        policies: Vec<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print every principal as JSON.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Print one principal as JSON.
    Show {
        /// Principal name.
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Replace a principal's attributes and/or attached policies. --attr pairs (or
    /// --clear-attrs) replace every attribute; --policy names (or --clear-policies) replace the
    /// whole list; what is not mentioned stays. Prints the principal as JSON.
    #[command(group(ArgGroup::new("change").required(true).multiple(true)))]
    Update {
        /// Principal name.
        name: String,
        /// Attribute, repeatable; together they become the principal's attributes.
        #[arg(
            long = "attr",
            value_name = "KEY=VALUE",
            group = "change",
            conflicts_with = "clear_attrs"
        )]
        attrs: Vec<String>,
        /// Remove every attribute.
        #[arg(long, group = "change")]
        clear_attrs: bool,
        /// Policy, repeatable; together they become the attached list.
        #[arg(
            long = "policy",
            value_name = "POLICY",
            group = "change",
            conflicts_with = "clear_policies"
        )]
        policies: Vec<String>,
        /// Detach every policy (the principal is then denied everything).
        #[arg(long, group = "change")]
        clear_policies: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete a principal and revoke its tokens; prints nothing.
    Delete {
        /// Principal name.
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
}

/// Runs `principals …`.
pub async fn run(command: PrincipalsCommand) -> anyhow::Result<()> {
    match command {
        PrincipalsCommand::Create {
            name,
            attrs,
            policies,
            conn,
        } => print_json(
            &conn
                .client()?
                .create_principal(&name, &attrs, &policies)
                .await?,
        ),
        PrincipalsCommand::List { conn } => print_json(&conn.client()?.list_principals().await?),
        PrincipalsCommand::Show { name, conn } => {
            print_json(&conn.client()?.show_principal(&name).await?)
        }
        PrincipalsCommand::Update {
            name,
            attrs,
            clear_attrs,
            policies,
            clear_policies,
            conn,
        } => {
            // clap keeps --attr apart from --clear-attrs, and --policy from --clear-policies.
            let change = PrincipalChange {
                attributes: (clear_attrs || !attrs.is_empty()).then_some(attrs),
                policies: (clear_policies || !policies.is_empty()).then_some(policies),
            };
            print_json(&conn.client()?.update_principal(&name, &change).await?)
        }
        PrincipalsCommand::Delete { name, conn } => {
            Ok(conn.client()?.delete_principal(&name).await?)
        }
    }
}
