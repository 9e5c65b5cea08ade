//! `custodian jobs …`: follow background jobs (re-wrap of stored data keys after a rotation).

use std::io::IsTerminal as _;

use clap::Subcommand;

use super::progress::{fail_if_failed, follow, PollInterval, Stream};
use super::{print_json, Conn};
use custodian::cli::client::LineWatcher;
use custodian::domain::job::JobState;

/// `jobs …`.
#[derive(Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first, as JSON.
    List {
        /// Only jobs in this state.
        #[arg(long, value_parser = ["running", "completed", "failed"])]
        state: Option<String>,
        /// At most N jobs (1 to 1000; default 100).
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print one job with its progress as JSON. With --watch, show a live progress line on
    /// stderr until the job is no longer running, then print the final job; a job that failed
    /// makes the command fail.
    Show {
        /// Job id.
        id: String,
        /// Follow the job until it completes or fails.
        #[arg(long)]
        watch: bool,
        /// With --watch.
        #[command(flatten)]
        interval: PollInterval,
        #[command(flatten)]
        conn: Conn,
    },
    /// Follow a job until it completes or fails: a progress bar with rate and ETA on a
    /// terminal, a plain line per change otherwise (both on stdout), then a closing line. Exits
    /// non-zero if the job fails.
    Watch {
        /// Job id.
        id: String,
        #[command(flatten)]
        interval: PollInterval,
        #[command(flatten)]
        conn: Conn,
    },
}

/// Runs `jobs …`.
pub async fn run(command: JobsCommand) -> anyhow::Result<()> {
    match command {
        JobsCommand::List { state, limit, conn } => {
            print_json(&conn.client()?.list_jobs(state.as_deref(), limit).await?)
        }
        JobsCommand::Show {
            id,
            watch: false,
            conn,
            ..
        } => print_json(&serde_json::to_value(conn.client()?.job(&id).await?)?),
        JobsCommand::Show {
            id,
            watch: true,
            interval,
            conn,
        } => {
            let client = conn.client()?;
            let stderr = std::io::stderr();
            let redraw = stderr.is_terminal();
            let job = client
                .watch_job(
                    &id,
                    interval.duration(),
                    &mut LineWatcher::new(stderr.lock(), redraw),
                )
                .await?;
            print_json(&serde_json::to_value(&job)?)?;
            if job.state == JobState::Failed {
                let why = job.last_error.as_deref().unwrap_or("no error recorded");
                anyhow::bail!("job {id} failed: {why}");
            }
            Ok(())
        }
        JobsCommand::Watch { id, interval, conn } => {
            let client = conn.client()?;
            let job = follow(&client, &id, interval.duration(), Stream::Stdout).await?;
            fail_if_failed(&job)
        }
    }
}
