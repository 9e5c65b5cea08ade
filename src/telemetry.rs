//! Tracing set-up and the one helper through which blocking device and database calls leave
//! the async runtime.

use tracing::Span;
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::{LogConfig, LogFormat};

/// Directives appended to every filter.
const MUTED: &str = "cryptoki::mechanism=off";

/// Installs the global subscriber: text or JSON lines on stderr, filtered by `RUST_LOG` or the
/// configured directive.
pub fn init(config: &LogConfig) {
    // cryptoki logs an error for every vendor mechanism it has no name for while converting
    // C_GetMechanismList output; that is noise, not a fault, so its mechanism module is muted.
    let directive = std::env::var("RUST_LOG").unwrap_or_else(|_| config.filter.clone());
    let filter = EnvFilter::try_new(format!("{directive},{MUTED}"))
        .unwrap_or_else(|_| EnvFilter::new(format!("info,{MUTED}")));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // `try_init` fails only when a subscriber is already installed (tests); keep that one.
    let _ = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Why a blocking call did not produce a value.
#[derive(Debug, thiserror::Error)]
#[error("blocking task did not complete: {0}")]
pub struct BlockingError(#[from] tokio::task::JoinError);

/// Runs `f` on tokio's blocking pool inside the caller's span.
///
/// # Errors
/// [`BlockingError`] when the task panicked or was cancelled at shutdown.
pub async fn run_blocking<F, T>(f: F) -> Result<T, BlockingError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let span = Span::current();
    Ok(tokio::task::spawn_blocking(move || span.in_scope(f)).await?)
}
