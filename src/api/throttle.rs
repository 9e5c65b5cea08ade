//! Slowing down brute force: a source address that fails authentication [`MAX_FAILURES`] times
//! within [`WINDOW`] is answered `429 too_many_auth_failures` (with `Retry-After`) on every
//! authenticated route until the window ends, without looking at the token it sends. Tokens
//! carry 256 random bits, so this is about noise and log volume, not about guessing odds.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed per source address and window.
pub const MAX_FAILURES: u32 = 20;
/// The counting window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Most sources tracked; the table is emptied when it would grow past this.
const MAX_SOURCES: usize = 100_000;

/// Failed authentications per source address.
#[derive(Debug, Default)]
pub struct AuthThrottle {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl AuthThrottle {
    /// Seconds until `source` may try again, when it is over the limit now.
    pub fn blocked_for(&self, source: IpAddr) -> Option<u64> {
        let map = self.failures.lock().ok()?;
        let (count, since) = map.get(&source)?;
        let elapsed = since.elapsed();
        (*count >= MAX_FAILURES && elapsed < WINDOW).then(|| (WINDOW - elapsed).as_secs().max(1))
    }

    /// Counts a failed authentication from `source`.
    pub fn record_failure(&self, source: IpAddr) {
        if let Ok(mut map) = self.failures.lock() {
            if map.len() >= MAX_SOURCES {
                map.clear();
            }
            let entry = map.entry(source).or_insert((0, Instant::now()));
            if entry.1.elapsed() >= WINDOW {
                *entry = (0, Instant::now());
            }
            entry.0 = entry.0.saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_per_source() {
        let t = AuthThrottle::default();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..MAX_FAILURES - 1 {
            t.record_failure(a);
        }
        assert_eq!(t.blocked_for(a), None);
        t.record_failure(a);
        assert!(t.blocked_for(a).is_some_and(|s| s <= 60));
        assert_eq!(t.blocked_for(b), None);
    }
}
