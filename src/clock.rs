//! Wall-clock time for everything the service dates: token expiry, rotation schedules,
//! deletion dates, secret expiry, audit record times, lease ends it computes itself.
//!
//! Release builds read the system clock and nothing else. Debug builds — the binary the test
//! suite drives — can add an offset, so a black-box test can jump the service's clock forward
//! and back the way an operator's NTP correction or a mis-set host clock would, without
//! touching the host's clock (see `docs/decisions/0023-test-clock.md`):
//!
//! - `CUSTODIAN_TEST_CLOCK_OFFSET_FILE` names a file holding a signed number of seconds;
//! - it is read once when the server starts and then every [`POLL`], so a test rewrites the
//!   file and waits for the next poll.
//!
//! Monotonic time (`Instant`: timeouts, throttles, caches, metrics) is deliberately not
//! affected: a real wall-clock jump does not move it either.

use time::OffsetDateTime;

/// The current wall-clock time as the service sees it.
#[must_use]
pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc() + test_offset::get()
}

/// Starts following the test offset file, when one is named (debug builds only; a release
/// build ignores the variable and says so once).
pub fn follow_test_offset() {
    test_offset::follow();
}

#[cfg(debug_assertions)]
mod test_offset {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Once;
    use std::time::Duration;

    /// The environment variable naming the offset file.
    pub const VAR: &str = "CUSTODIAN_TEST_CLOCK_OFFSET_FILE";
    /// How often the file is read again.
    pub const POLL: Duration = Duration::from_millis(50);

    static OFFSET_SECONDS: AtomicI64 = AtomicI64::new(0);
    static FOLLOW: Once = Once::new();

    pub fn get() -> time::Duration {
        time::Duration::seconds(OFFSET_SECONDS.load(Ordering::Relaxed))
    }

    /// Reads the offset file; a missing or unparsable file leaves the offset unchanged (the
    /// test is rewriting it).
    fn read(path: &std::path::Path) {
        let Ok(text) = std::fs::read_to_string(path) else {
            return;
        };
        if let Ok(seconds) = text.trim().parse::<i64>() {
            let before = OFFSET_SECONDS.swap(seconds, Ordering::Relaxed);
            if before != seconds {
                tracing::warn!(offset_seconds = seconds, "test clock offset changed");
            }
        }
    }

    pub fn follow() {
        let Some(path) = std::env::var_os(VAR).map(std::path::PathBuf::from) else {
            return;
        };
        FOLLOW.call_once(|| {
            tracing::warn!(
                file = %path.display(),
                "debug build: the service clock follows a test offset file"
            );
            read(&path);
            let spawned = std::thread::Builder::new()
                .name("test-clock".into())
                .spawn(move || loop {
                    std::thread::sleep(POLL);
                    read(&path);
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "the test clock thread did not start");
            }
        });
    }
}

#[cfg(not(debug_assertions))]
mod test_offset {
    pub fn get() -> time::Duration {
        time::Duration::ZERO
    }

    pub fn follow() {
        if std::env::var_os("CUSTODIAN_TEST_CLOCK_OFFSET_FILE").is_some() {
            tracing::warn!("CUSTODIAN_TEST_CLOCK_OFFSET_FILE is ignored by release builds");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_offset_the_clock_is_the_system_clock() {
        let before = OffsetDateTime::now_utc();
        let seen = now();
        let after = OffsetDateTime::now_utc();
        assert!(before <= seen && seen <= after, "{before} {seen} {after}");
    }
}
