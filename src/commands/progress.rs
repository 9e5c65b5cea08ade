//! Following a job on the command line: an `indicatif` progress bar with rate and ETA when the
//! output is a terminal, plain lines (one per change of the counts or state) otherwise, so logs
//! and pipes get readable text rather than control sequences.

use std::io::{IsTerminal as _, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use custodian::api_types::lifecycle::Job;
use custodian::cli::client::{progress_line, Client, JobWatcher, LineWatcher};
use custodian::domain::job::JobState;

/// `--interval-ms`: how often a job is polled.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct PollInterval {
    /// Milliseconds between polls (100 to 60000).
    #[arg(
        long = "interval-ms",
        value_name = "MS",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(100..=60_000)
    )]
    ms: u64,
}

impl PollInterval {
    /// As a duration.
    pub fn duration(self) -> Duration {
        Duration::from_millis(self.ms)
    }
}

/// Where the progress goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output (`jobs watch`: the progress is the command's output).
    Stdout,
    /// Standard error (`keys rotate --wait`: stdout carries the key's JSON).
    Stderr,
}

/// A [`JobWatcher`] drawing a bar: position = items re-wrapped, length = re-wrapped + left
/// (the server counts what is left at each poll), with the rate and ETA indicatif derives.
struct BarWatcher {
    bar: ProgressBar,
}

impl BarWatcher {
    fn new(stream: Stream) -> Self {
        let target = match stream {
            Stream::Stdout => ProgressDrawTarget::stdout(),
            Stream::Stderr => ProgressDrawTarget::stderr(),
        };
        let bar = ProgressBar::with_draw_target(None, target);
        // The template is a constant; a bad one would be a bug caught by the tests (the
        // default style is kept rather than failing the watch).
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix} [{bar:40}] {pos}/{len} re-wrapped ({percent}%) {per_sec} ETA {eta} {msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        Self { bar }
    }

    fn show(&self, job: &Job) {
        self.bar
            .set_prefix(format!("job {} {}", job.id, job.state.as_str()));
        self.bar.set_length(job.done.saturating_add(job.remaining));
        self.bar.set_position(job.done);
        if job.failed_items > 0 {
            self.bar
                .set_message(format!("{} failed attempts", job.failed_items));
        }
    }
}

impl JobWatcher for BarWatcher {
    fn progress(&mut self, job: &Job) -> std::io::Result<()> {
        self.show(job);
        Ok(())
    }

    fn finished(&mut self, job: &Job) -> std::io::Result<()> {
        self.show(job);
        self.bar.finish();
        Ok(())
    }

    fn retrying(&mut self, note: &str) -> std::io::Result<()> {
        self.bar.println(note);
        Ok(())
    }

    fn abandoned(&mut self) -> std::io::Result<()> {
        self.bar.abandon();
        Ok(())
    }
}

/// Follows job `id` until it is no longer running, polling every `interval`, with a bar on
/// `stream` when it is a terminal and plain lines otherwise; then one closing line. Returns the
/// final job, whatever its state ([`fail_if_failed`] turns a failure into an error).
///
/// # Errors
/// API errors.
pub async fn follow(
    client: &Client,
    id: &str,
    interval: Duration,
    stream: Stream,
) -> anyhow::Result<Job> {
    let terminal = match stream {
        Stream::Stdout => std::io::stdout().is_terminal(),
        Stream::Stderr => std::io::stderr().is_terminal(),
    };
    let job = if terminal {
        client
            .watch_job(id, interval, &mut BarWatcher::new(stream))
            .await?
    } else {
        match stream {
            Stream::Stdout => {
                let mut w = LineWatcher::new(std::io::stdout().lock(), false);
                client.watch_job(id, interval, &mut w).await?
            }
            Stream::Stderr => {
                let mut w = LineWatcher::new(std::io::stderr().lock(), false);
                client.watch_job(id, interval, &mut w).await?
            }
        }
    };
    if terminal {
        // The bar's last state, as a line that stays in the scrollback.
        let line = progress_line(&job);
        match stream {
            Stream::Stdout => writeln!(std::io::stdout(), "{line}")?,
            Stream::Stderr => writeln!(std::io::stderr(), "{line}")?,
        }
    }
    Ok(job)
}

/// Fails when `job` failed, naming its last error.
///
/// # Errors
/// The job failed.
pub fn fail_if_failed(job: &Job) -> anyhow::Result<()> {
    if job.state == JobState::Failed {
        let why = job.last_error.as_deref().unwrap_or("no error recorded");
        anyhow::bail!("job {} failed: {why}", job.id);
    }
    Ok(())
}
