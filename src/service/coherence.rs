//! Cache coherence across nodes that share one database.
//!
//! Each node caches keys, principals-with-policies and token records. On a store that other
//! nodes share (PostgreSQL), the store reports what any node changed as it commits
//! ([`crate::store::Store::watch`]: `LISTEN`/`NOTIFY` from triggers on the cached tables), and
//! the node drops those entries at once, so a key disabled or a token revoked on one node is
//! refused by every other node within the notification's delivery time (milliseconds). While the
//! watch is not connected the caches are not trusted at all (every read goes to the database),
//! and its reconnection drops everything: a change missed while it was away is never served
//! from a cache. A read that was under way when a change arrived is not cached (the generation
//! moved), so a stale row cannot slip into the cache after its invalidation.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::KeyService;
use crate::store::Change;

/// Whether the caches may be used, and a generation that moves with every change.
#[derive(Debug)]
pub struct Coherence {
    trusted: AtomicBool,
    generation: AtomicU64,
}

/// The generation a read began in (see [`Coherence::may_cache`]).
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

impl Coherence {
    /// For a store other nodes share: untrusted until the watch connects.
    pub fn new(shared: bool) -> Self {
        Self {
            trusted: AtomicBool::new(!shared),
            generation: AtomicU64::new(0),
        }
    }

    /// Whether cached entries may be served now.
    pub fn trusted(&self) -> bool {
        self.trusted.load(Ordering::Acquire)
    }

    /// Taken before a read whose result may be cached.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.generation.load(Ordering::Acquire))
    }

    /// Whether a read begun at `t` may be cached: nothing changed since, and the caches are
    /// trusted.
    pub fn may_cache(&self, t: Ticket) -> bool {
        self.trusted() && self.generation.load(Ordering::Acquire) == t.0
    }

    fn moved(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

impl KeyService {
    /// Applies a change reported by the store's watch to this node's caches.
    pub(crate) fn apply_change(&self, change: &Change) {
        self.coherence.moved();
        match change {
            Change::Key(id) => {
                if let Ok(mut cache) = self.keys.write() {
                    if let Some((key, _)) = cache.by_id.remove(id) {
                        cache.by_name.remove(key.name.as_str());
                    }
                }
            }
            Change::Identity => {
                self.forget_subjects();
                self.auth.forget_all();
            }
            Change::Resync | Change::Lost => {
                if let Ok(mut cache) = self.keys.write() {
                    cache.by_id.clear();
                    cache.by_name.clear();
                }
                self.forget_subjects();
                self.auth.forget_all();
                self.coherence
                    .trusted
                    .store(matches!(change, Change::Resync), Ordering::Release);
                tracing::info!(
                    watching = matches!(change, Change::Resync),
                    "cache coherence: caches dropped"
                );
            }
        }
    }
}

/// The duty leases this node took or renewed lately, so that a duty asked about many times a
/// second (a re-wrap part, once per batch) is not renewed in the database each time.
///
/// A lease taken or renewed with `ttl` runs in the database until at least `ttl` after the
/// request was sent (the database sets its expiry when it runs the statement, which is later).
/// Within the first third of that span the node still holds it for at least two thirds of `ttl`
/// more, so it answers "held" without asking; after that it renews. A duty asked about once per
/// interval (the lifecycle and database duties: `ttl` is three intervals) renews every time,
/// as before.
#[derive(Debug, Default)]
pub(crate) struct LeaseMemo {
    /// Duty → when its last successful take or renewal was sent, and the `ttl` it asked for.
    renewed: std::sync::Mutex<std::collections::HashMap<String, (Instant, Duration)>>,
}

impl LeaseMemo {
    /// Whether `duty` was taken or renewed for `ttl` less than a third of `ttl` before `now`.
    fn fresh(&self, duty: &str, ttl: Duration, now: Instant) -> bool {
        self.renewed.lock().is_ok_and(|m| {
            m.get(duty).is_some_and(|&(sent, asked)| {
                asked == ttl && now.saturating_duration_since(sent) < ttl / 3
            })
        })
    }

    /// Notes the answer of a take or renewal of `duty` for `ttl` sent at `sent`: remembered if
    /// held, forgotten otherwise. Entries past their own `ttl` go at the same time.
    fn answered(&self, duty: &str, ttl: Duration, sent: Instant, held: bool) {
        if let Ok(mut m) = self.renewed.lock() {
            m.retain(|_, &mut (at, asked)| sent.saturating_duration_since(at) < asked);
            if held {
                m.insert(duty.to_owned(), (sent, ttl));
            } else {
                m.remove(duty);
            }
        }
    }
}

impl KeyService {
    /// Whether this node holds (took or renewed) the lease of background duty `duty` for `ttl`
    /// (see [`crate::store::Store::acquire_lease`]): on a shared database one node at a time
    /// runs each duty, and a node that stops renewing is replaced once `ttl` has passed. A
    /// database error counts as not holding it. A lease renewed less than a third of `ttl` ago
    /// is held without asking the database again ([`LeaseMemo`]).
    pub async fn holds_lease(&self, duty: &str, ttl: Duration) -> bool {
        let sent = Instant::now();
        if self.leases.fresh(duty, ttl, sent) {
            return true;
        }
        let held = match self.store.acquire_lease(duty, &self.instance, ttl).await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(duty, error = %e, "could not take or renew a duty lease");
                false
            }
        };
        self.leases.answered(duty, ttl, sent, held);
        held
    }
}

/// Follows the store's change feed for as long as the node runs.
pub async fn follow(service: std::sync::Arc<KeyService>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let store = std::sync::Arc::clone(&service.store);
    let watch = tokio::spawn(async move { store.watch(tx).await });
    while let Some(change) = rx.recv().await {
        service.apply_change(&change);
    }
    watch.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_overtaken_by_a_change_is_not_cached() {
        let c = Coherence::new(false);
        let t = c.ticket();
        assert!(c.may_cache(t));
        c.moved();
        assert!(!c.may_cache(t));
        assert!(c.may_cache(c.ticket()));
    }

    #[test]
    fn a_lease_is_renewed_once_a_third_of_its_ttl_has_passed() {
        let memo = LeaseMemo::default();
        let ttl = Duration::from_secs(3);
        let t0 = Instant::now();
        assert!(
            !memo.fresh("duty", ttl, t0),
            "never taken: ask the database"
        );
        memo.answered("duty", ttl, t0, true);
        assert!(memo.fresh("duty", ttl, t0));
        assert!(memo.fresh("duty", ttl, t0 + Duration::from_millis(999)));
        assert!(!memo.fresh("duty", ttl, t0 + Duration::from_secs(1)));
        assert!(!memo.fresh("duty", ttl, t0 + Duration::from_secs(5)));
        // Another duty, or the same one asked for with another ttl, is not covered.
        assert!(!memo.fresh("other", ttl, t0));
        assert!(!memo.fresh("duty", Duration::from_secs(30), t0));
    }

    #[test]
    fn a_lease_not_held_is_asked_for_again() {
        let memo = LeaseMemo::default();
        let ttl = Duration::from_secs(3);
        let t0 = Instant::now();
        memo.answered("duty", ttl, t0, true);
        // The renewal failed (another node holds it, or the database erred): forget it.
        memo.answered("duty", ttl, t0 + Duration::from_millis(10), false);
        assert!(!memo.fresh("duty", ttl, t0 + Duration::from_millis(20)));
    }

    #[test]
    fn leases_past_their_ttl_are_dropped() {
        let memo = LeaseMemo::default();
        let t0 = Instant::now();
        memo.answered("job/a/0", Duration::from_secs(3), t0, true);
        memo.answered(
            "job/b/0",
            Duration::from_secs(3),
            t0 + Duration::from_secs(4),
            true,
        );
        let kept: Vec<String> = memo.renewed.lock().unwrap().keys().cloned().collect();
        assert_eq!(kept, vec!["job/b/0".to_owned()]);
    }

    #[test]
    fn a_shared_store_is_untrusted_until_watched() {
        let c = Coherence::new(true);
        assert!(!c.trusted());
        assert!(!c.may_cache(c.ticket()));
        c.trusted.store(true, Ordering::Release);
        assert!(c.may_cache(c.ticket()));
    }
}
