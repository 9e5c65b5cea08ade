//! Throttles for traffic that does not authenticate.
//!
//! - [`AuthThrottle`] slows down failed authentication. A presented credential is always
//!   verified first, so a valid token is never refused by it (a NAT gateway shares one address
//!   between good and bad clients). A *failed* attempt is answered
//!   `429 too_many_auth_failures` (with `Retry-After`) instead of 401 once its source address,
//!   or the token id it names (the public `cst_<id>_` part), has failed [`MAX_FAILURES`] times
//!   within [`WINDOW`]. Tokens carry 256 random bits, so this is about noise and log volume,
//!   not about guessing odds.
//! - [`AnonymousThrottle`] bounds the audit records that unauthenticated traffic costs: each
//!   source gets a budget of individually audited unauthenticated requests per minute; beyond
//!   it, requests are answered `429 too_many_unauthenticated_requests`, are not recorded one by
//!   one, and are counted into one aggregate record per source, written periodically
//!   ([`AnonymousThrottle::drain`]) and at shutdown.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::config::AnonymousLimit;
use crate::service::Throttled;

/// Failures allowed per source address (and per token id) and window, unless configured
/// (`server.auth_failures_per_minute`).
pub const MAX_FAILURES: u32 = 20;
/// The counting window of both throttles.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Most sources (and token ids) the failure throttle tracks.
const MAX_TRACKED: usize = 100_000;

/// The `source` of the aggregate that holds the sources over [`AnonymousLimit::max_sources`].
pub const MANY_SOURCES: &str = "(many)";

/// Seconds left in a window that started at `since`, at least 1.
fn retry_after(since: Instant) -> u64 {
    WINDOW.saturating_sub(since.elapsed()).as_secs().max(1)
}

/// Failures per key in fixed windows.
#[derive(Debug)]
struct Failures<K> {
    counts: HashMap<K, (u32, Instant)>,
}

impl<K> Default for Failures<K> {
    fn default() -> Self {
        Self {
            counts: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq> Failures<K> {
    /// Seconds until `key` may fail without a 429, when it is over the limit now.
    fn blocked_for(&self, key: &K, max: u32) -> Option<u64> {
        let (count, since) = self.counts.get(key)?;
        (*count >= max && since.elapsed() < WINDOW).then(|| retry_after(*since))
    }

    fn count(&mut self, key: K) {
        if self.counts.len() >= MAX_TRACKED && !self.counts.contains_key(&key) {
            self.counts.retain(|_, (_, since)| since.elapsed() < WINDOW);
            // Still full of live entries: start over rather than grow without bound (a flood of
            // distinct sources or ids resets the counts; it cannot exhaust memory).
            if self.counts.len() >= MAX_TRACKED {
                self.counts.clear();
            }
        }
        let entry = self.counts.entry(key).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 = entry.0.saturating_add(1);
    }
}

/// Failed authentications per source address and per token id.
#[derive(Debug)]
pub struct AuthThrottle {
    max_failures: u32,
    sources: Mutex<Failures<IpAddr>>,
    token_ids: Mutex<Failures<String>>,
}

impl Default for AuthThrottle {
    /// [`MAX_FAILURES`] a minute.
    fn default() -> Self {
        Self::new(MAX_FAILURES)
    }
}

impl AuthThrottle {
    /// `max_failures` per source and per token id a minute.
    pub fn new(max_failures: u32) -> Self {
        Self {
            max_failures,
            sources: Mutex::default(),
            token_ids: Mutex::default(),
        }
    }

    /// Counts a failed authentication from `source` naming `token_id` (when the credential
    /// had a well-formed one). Returns the seconds to put in `Retry-After` when the source or
    /// the token id was already over the limit: the failure is then answered 429, not 401.
    /// Only failures are ever counted or refused; a valid credential never reaches here.
    pub fn fail(&self, source: Option<IpAddr>, token_id: Option<&str>) -> Option<u64> {
        let mut blocked = None;
        if let (Some(s), Ok(mut map)) = (source, self.sources.lock()) {
            blocked = map.blocked_for(&s, self.max_failures);
            map.count(s);
        }
        if let (Some(id), Ok(mut map)) = (token_id, self.token_ids.lock()) {
            let key = id.to_owned();
            blocked = blocked.max(map.blocked_for(&key, self.max_failures));
            map.count(key);
        }
        blocked
    }
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    count: u64,
    first_seen: OffsetDateTime,
    last_seen: OffsetDateTime,
}

impl Pending {
    fn merge(this: &mut Option<Self>, other: Self) {
        *this = Some(match *this {
            None => other,
            Some(p) => Self {
                count: p.count.saturating_add(other.count),
                first_seen: p.first_seen.min(other.first_seen),
                last_seen: p.last_seen.max(other.last_seen),
            },
        });
    }
}

#[derive(Debug)]
struct Budget {
    window_start: Instant,
    admitted: u32,
    throttled: Option<Pending>,
}

impl Budget {
    fn new() -> Self {
        Self {
            window_start: Instant::now(),
            admitted: 0,
            throttled: None,
        }
    }

    fn roll(&mut self) {
        if self.window_start.elapsed() >= WINDOW {
            self.window_start = Instant::now();
            self.admitted = 0;
        }
    }

    fn count_throttled(&mut self) {
        let now = crate::clock::now();
        Pending::merge(
            &mut self.throttled,
            Pending {
                count: 1,
                first_seen: now,
                last_seen: now,
            },
        );
    }

    /// Idle: its window is over and nothing waits to be written.
    fn idle(&self) -> bool {
        self.throttled.is_none() && self.window_start.elapsed() >= WINDOW
    }
}

#[derive(Debug)]
struct Budgets {
    sources: HashMap<Option<IpAddr>, Budget>,
    /// Shared by the sources that found the table full.
    many: Budget,
}

/// Individually audited unauthenticated requests per source ([`crate::config::AnonymousLimit`]).
#[derive(Debug)]
pub struct AnonymousThrottle {
    limit: AnonymousLimit,
    budgets: Mutex<Budgets>,
}

impl Default for AnonymousThrottle {
    fn default() -> Self {
        Self::new(AnonymousLimit::default())
    }
}

impl AnonymousThrottle {
    /// A throttle with `limit`.
    pub fn new(limit: AnonymousLimit) -> Self {
        Self {
            limit,
            budgets: Mutex::new(Budgets {
                sources: HashMap::new(),
                many: Budget::new(),
            }),
        }
    }

    /// The limit it enforces.
    pub fn limit(&self) -> AnonymousLimit {
        self.limit
    }

    /// Runs `f` on the budget of `source`: its own, or the shared `(many)` one when the table
    /// is full of sources that are still active.
    fn with_budget<T>(&self, source: Option<IpAddr>, f: impl FnOnce(&mut Budget) -> T) -> T {
        let mut guard = match self.budgets.lock() {
            Ok(g) => g,
            // Counts are plain numbers; a panic elsewhere leaves them usable.
            Err(p) => p.into_inner(),
        };
        let b = &mut *guard;
        if !b.sources.contains_key(&source) && b.sources.len() >= self.limit.max_sources.get() {
            b.sources.retain(|_, budget| !budget.idle());
        }
        let budget =
            if b.sources.contains_key(&source) || b.sources.len() < self.limit.max_sources.get() {
                b.sources.entry(source).or_insert_with(Budget::new)
            } else {
                &mut b.many
            };
        budget.roll();
        f(budget)
    }

    /// For a request that carries no credential at all, before it runs: when `source` has
    /// used its budget, counts the request as throttled and returns the seconds for
    /// `Retry-After`; otherwise `None` (nothing is counted; [`Self::admit`] decides after).
    pub fn refuse_early(&self, source: Option<IpAddr>) -> Option<u64> {
        let per_minute = self.limit.per_minute.get();
        self.with_budget(source, |b| {
            (b.admitted >= per_minute).then(|| {
                b.count_throttled();
                retry_after(b.window_start)
            })
        })
    }

    /// For a request that ended without an authenticated principal: takes one individually
    /// audited request from the budget of `source` (`None`: record it as usual), or, when the
    /// budget is used up, counts it as throttled and returns the seconds for `Retry-After`.
    pub fn admit(&self, source: Option<IpAddr>) -> Option<u64> {
        let per_minute = self.limit.per_minute.get();
        self.with_budget(source, |b| {
            if b.admitted < per_minute {
                b.admitted += 1;
                None
            } else {
                b.count_throttled();
                Some(retry_after(b.window_start))
            }
        })
    }

    /// Takes the throttled counts not yet written, one aggregate per source, and forgets
    /// sources whose window is over.
    pub fn drain(&self) -> Vec<Throttled> {
        let mut guard = match self.budgets.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let b = &mut *guard;
        let mut out = Vec::new();
        let take = |source: Option<String>, budget: &mut Budget, out: &mut Vec<Throttled>| {
            if let Some(p) = budget.throttled.take() {
                out.push(Throttled {
                    source,
                    count: p.count,
                    first_seen: p.first_seen,
                    last_seen: p.last_seen,
                    window_seconds: WINDOW.as_secs(),
                });
            }
        };
        for (source, budget) in &mut b.sources {
            take(source.map(|s| s.to_string()), budget, &mut out);
        }
        take(Some(MANY_SOURCES.to_owned()), &mut b.many, &mut out);
        b.sources.retain(|_, budget| !budget.idle());
        out
    }

    /// Puts back an aggregate that could not be written, so its count goes into the next one.
    pub fn restore(&self, a: Throttled) {
        let pending = Pending {
            count: a.count,
            first_seen: a.first_seen,
            last_seen: a.last_seen,
        };
        let mut guard = match self.budgets.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let b = &mut *guard;
        let key = match a.source.as_deref() {
            None => Some(None),
            Some(s) => s.parse::<IpAddr>().ok().map(Some),
        };
        let budget = match key {
            Some(k) if b.sources.contains_key(&k) => b.sources.get_mut(&k),
            _ => None,
        };
        match budget {
            Some(budget) => Pending::merge(&mut budget.throttled, pending),
            // Not tracked any more (or `(many)`): the shared aggregate keeps the count.
            None => Pending::merge(&mut b.many.throttled, pending),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::{NonZeroU32, NonZeroUsize};

    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn failures_are_counted_per_source_and_per_token_id() {
        let t = AuthThrottle::default();
        for _ in 0..MAX_FAILURES {
            assert_eq!(t.fail(ip("127.0.0.1"), None), None);
        }
        assert!(t.fail(ip("127.0.0.1"), None).is_some_and(|s| s <= 60));
        assert_eq!(t.fail(ip("127.0.0.2"), None), None);
        // One token id from many sources.
        for i in 0..MAX_FAILURES {
            let source = ip(&format!("10.0.0.{i}"));
            assert_eq!(t.fail(source, Some("0123456789abcdef")), None);
        }
        assert!(t.fail(ip("10.0.1.1"), Some("0123456789abcdef")).is_some());
        assert_eq!(t.fail(ip("10.0.1.1"), Some("fedcba9876543210")), None);
    }

    fn limited(per_minute: u32, max_sources: usize) -> AnonymousThrottle {
        AnonymousThrottle::new(AnonymousLimit {
            per_minute: NonZeroU32::new(per_minute).unwrap(),
            flush_interval: Duration::from_secs(1),
            max_sources: NonZeroUsize::new(max_sources).unwrap(),
        })
    }

    #[test]
    fn over_budget_requests_are_counted_and_drained_once() {
        let t = limited(3, 10);
        let a = ip("192.0.2.1");
        assert_eq!(t.refuse_early(a), None);
        for _ in 0..3 {
            assert_eq!(t.admit(a), None);
        }
        assert!(t.admit(a).is_some());
        assert!(t.refuse_early(a).is_some());
        assert_eq!(
            t.admit(ip("192.0.2.2")),
            None,
            "another source has its own budget"
        );
        let drained = t.drain();
        assert_eq!(drained.len(), 1);
        assert_eq!(drained[0].source.as_deref(), Some("192.0.2.1"));
        assert_eq!(drained[0].count, 2);
        assert!(drained[0].first_seen <= drained[0].last_seen);
        assert!(t.drain().is_empty(), "a count is written once");
        t.restore(drained[0].clone());
        assert_eq!(t.drain(), drained, "a restored count is written next time");
    }

    #[test]
    fn sources_past_the_cap_share_one_budget_and_aggregate() {
        let t = limited(1, 2);
        assert_eq!(t.admit(ip("192.0.2.1")), None);
        assert_eq!(t.admit(ip("192.0.2.2")), None);
        // The table is full of live sources: the next ones share `(many)`.
        assert_eq!(t.admit(ip("192.0.2.3")), None);
        assert!(t.admit(ip("192.0.2.4")).is_some());
        assert!(t.admit(ip("192.0.2.5")).is_some());
        let drained = t.drain();
        assert_eq!(drained.len(), 1);
        assert_eq!(drained[0].source.as_deref(), Some(MANY_SOURCES));
        assert_eq!(drained[0].count, 2);
    }
}
