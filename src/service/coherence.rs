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

impl KeyService {
    /// Whether this node holds (took or renewed) the lease of background duty `duty` for `ttl`
    /// (see [`crate::store::Store::acquire_lease`]): on a shared database one node at a time
    /// runs each duty, and a node that stops renewing is replaced once `ttl` has passed. A
    /// database error counts as not holding it.
    pub async fn holds_lease(&self, duty: &str, ttl: std::time::Duration) -> bool {
        match self.store.acquire_lease(duty, &self.instance, ttl).await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(duty, error = %e, "could not take or renew a duty lease");
                false
            }
        }
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
    fn a_shared_store_is_untrusted_until_watched() {
        let c = Coherence::new(true);
        assert!(!c.trusted());
        assert!(!c.may_cache(c.ticket()));
        c.trusted.store(true, Ordering::Release);
        assert!(c.may_cache(c.ticket()));
    }
}
