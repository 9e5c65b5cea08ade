//! `custodian aliases …`: re-pointable names for keys, usable as alias/NAME wherever a key is
//! named.

use clap::Subcommand;

use super::{print_json, Conn};

/// `aliases …`.
#[derive(Subcommand)]
pub enum AliasesCommand {
    /// Create alias NAME pointing at KEY; prints the alias as JSON.
    Create {
        /// Alias name: letters, digits, '-', '_', '.' (used as alias/NAME).
        name: String,
        /// Key id or name it points at (not another alias).
        key: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Point an existing alias at another key; prints the alias as JSON.
    Repoint {
        /// Alias name.
        name: String,
        /// Key id or name it points at from now on.
        key: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print one alias as JSON.
    Show {
        /// Alias name.
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print every alias as JSON.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete an alias (the key is untouched); prints nothing.
    Delete {
        /// Alias name.
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
}

/// Runs `aliases …`.
pub async fn run(command: AliasesCommand) -> anyhow::Result<()> {
    match command {
        AliasesCommand::Create { name, key, conn } => {
            print_json(&conn.client()?.create_alias(&name, &key).await?)
        }
        AliasesCommand::Repoint { name, key, conn } => {
            print_json(&conn.client()?.repoint_alias(&name, &key).await?)
        }
        AliasesCommand::Show { name, conn } => print_json(&conn.client()?.show_alias(&name).await?),
        AliasesCommand::List { conn } => print_json(&conn.client()?.list_aliases().await?),
        AliasesCommand::Delete { name, conn } => Ok(conn.client()?.delete_alias(&name).await?),
    }
}
