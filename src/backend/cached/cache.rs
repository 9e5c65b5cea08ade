//! [`KekCache`]: unwrapped version-KEKs held for at most a TTL, at most `capacity` of them,
//! with one device unwrap per miss however many requests miss together.
//!
//! # Lifetimes
//!
//! The cache holds each KEK in an `Arc`. Removing an entry — by expiry, [`KekCache::sweep`],
//! LRU eviction, [`KekCache::invalidate`] or [`KekCache::clear`] — drops the cache's `Arc`; the
//! [`VersionKek`] zeroises when the *last* `Arc` drops. A request in flight keeps the `Arc` it
//! was handed until it finishes, so a KEK can outlive its TTL by the length of the longest
//! request that took it before expiry. Callers should not hold the `Arc` beyond one request.
//!
//! # Single flight
//!
//! Each entry is a `tokio::sync::OnceCell`. The first request that misses inserts the cell and
//! runs its `unwrap` future inside `get_or_try_init`; concurrent requests for the same key find
//! the same cell and wait on it instead of calling the device. A failed unwrap leaves the cell
//! empty — nothing is cached — and the next waiter (or the next request) runs its own unwrap:
//! a failure is not fanned out to waiters, each request gets a fresh attempt.
//!
//! The map lock (a `tokio::sync::Mutex`) is held only for map bookkeeping, never across the
//! device call or across a KEK's drop.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, OnceCell};
use tokio::time::Instant;

use super::kek::VersionKek;

/// How long and how many version-KEKs a [`KekCache`] holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KekCacheConfig {
    /// The longest an unwrapped KEK is served after the device unwrapped it. A zero TTL serves
    /// nothing from the cache (every request unwraps; concurrent misses still share one unwrap).
    pub ttl: Duration,
    /// The most KEKs held; beyond it the least recently used is dropped.
    pub capacity: NonZeroUsize,
}

/// A snapshot of a [`KekCache`]'s counters (monotonic since the cache was built).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KekCacheMetrics {
    /// Requests served from a fresh entry.
    pub hits: u64,
    /// Requests that found no fresh entry (including those that waited on another's unwrap).
    pub misses: u64,
    /// Device unwraps started (successful or not).
    pub unwraps: u64,
    /// Entries dropped to stay within capacity.
    pub evictions: u64,
    /// Entries dropped because they were older than the TTL (on access or by `sweep`).
    pub expirations: u64,
}

/// A cache of unwrapped version-KEKs keyed by version identity `K` (e.g. `(KeyId, KeyVersion)`).
///
/// # Security
/// Every KEK in here is plaintext key material in process memory (locked and zeroising, see
/// [`VersionKek`]). The TTL bounds how long after its unwrap a KEK is served; a periodic task
/// should call [`KekCache::sweep`] so that idle KEKs are dropped, not just left unserved.
pub struct KekCache<K> {
    config: KekCacheConfig,
    state: Mutex<State<K>>,
    counters: Counters,
}

impl<K: Eq + Hash + Clone> KekCache<K> {
    /// An empty cache.
    pub fn new(config: KekCacheConfig) -> Self {
        Self {
            config,
            state: Mutex::new(State {
                slots: HashMap::new(),
                recency: BTreeMap::new(),
                tick: 0,
            }),
            counters: Counters::default(),
        }
    }

    /// The configuration this cache was built with.
    pub fn config(&self) -> KekCacheConfig {
        self.config
    }

    /// The KEK for `key`: from the cache when an entry is younger than the TTL, else from
    /// `unwrap` (the device call that unwraps the stored wrapped KEK), which is then cached.
    ///
    /// Concurrent calls for the same `key` that miss together run one `unwrap`; the rest wait
    /// for it. Expiry never fails a request: an expired entry is unwrapped again.
    ///
    /// # Errors
    /// The error of `unwrap`, which is not cached.
    pub async fn get_or_unwrap<F, Fut, E>(&self, key: K, unwrap: F) -> Result<Arc<VersionKek>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<VersionKek, E>>,
    {
        let now = Instant::now();
        let (cell, dropped) = {
            let mut state = self.state.lock().await;
            let found = match state.slots.get(&key) {
                None => Found::Absent,
                Some(slot) => match slot.cell.get() {
                    Some(loaded) if self.is_fresh(loaded, now) => {
                        Found::Fresh(Arc::clone(&loaded.kek))
                    }
                    Some(_) => Found::Expired,
                    None => Found::InFlight(Arc::clone(&slot.cell)),
                },
            };
            let mut dropped = Vec::new();
            let cell = match found {
                Found::Fresh(kek) => {
                    state.touch(&key);
                    self.counters.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(kek);
                }
                Found::InFlight(cell) => {
                    state.touch(&key);
                    cell
                }
                Found::Expired | Found::Absent => {
                    if matches!(found, Found::Expired) {
                        dropped.extend(state.remove(&key));
                        self.counters.expirations.fetch_add(1, Ordering::Relaxed);
                    }
                    let cell = Arc::new(OnceCell::new());
                    state.insert(key, Arc::clone(&cell));
                    while state.slots.len() > self.config.capacity.get() {
                        match state.pop_least_recent() {
                            Some(slot) => {
                                dropped.push(slot);
                                self.counters.evictions.fetch_add(1, Ordering::Relaxed);
                            }
                            None => break,
                        }
                    }
                    cell
                }
            };
            self.counters.misses.fetch_add(1, Ordering::Relaxed);
            (cell, dropped)
        };
        // Dropped KEKs zeroise (and unlock their pages) here, outside the map lock.
        drop(dropped);

        let loaded = cell
            .get_or_try_init(|| async {
                self.counters.unwraps.fetch_add(1, Ordering::Relaxed);
                let kek = unwrap().await?;
                Ok(Loaded {
                    kek: Arc::new(kek),
                    loaded_at: Instant::now(),
                })
            })
            .await?;
        Ok(Arc::clone(&loaded.kek))
    }

    /// Drops every entry older than the TTL and returns the keys it dropped. Meant for a
    /// periodic task, so that idle KEKs leave memory instead of waiting for their next use.
    pub async fn sweep(&self) -> Vec<K> {
        let now = Instant::now();
        let dropped: Vec<(K, Slot)> = {
            let mut state = self.state.lock().await;
            let expired: Vec<K> = state
                .slots
                .iter()
                .filter(|(_, slot)| {
                    slot.cell
                        .get()
                        .is_some_and(|loaded| !self.is_fresh(loaded, now))
                })
                .map(|(key, _)| key.clone())
                .collect();
            expired
                .into_iter()
                .filter_map(|key| state.remove(&key).map(|slot| (key, slot)))
                .collect()
        };
        let n = dropped.len();
        self.counters
            .expirations
            .fetch_add(n as u64, Ordering::Relaxed);
        // The slots (and with their last user, the KEKs) are dropped here.
        dropped.into_iter().map(|(key, _)| key).collect()
    }

    /// Drops the entry for `key`, if any (e.g. when its version is disabled or destroyed). An
    /// unwrap in flight for it still answers its waiters but is not cached.
    pub async fn invalidate(&self, key: &K) {
        let dropped = self.state.lock().await.remove(key);
        drop(dropped);
    }

    /// Drops every entry.
    pub async fn clear(&self) {
        let dropped = {
            let mut state = self.state.lock().await;
            state.recency.clear();
            std::mem::take(&mut state.slots)
        };
        drop(dropped);
    }

    /// How many entries the cache holds (fresh, expired-but-not-swept, or in flight).
    pub async fn len(&self) -> usize {
        self.state.lock().await.slots.len()
    }

    /// True when the cache holds no entry.
    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }

    /// The counters so far.
    pub fn metrics(&self) -> KekCacheMetrics {
        KekCacheMetrics {
            hits: self.counters.hits.load(Ordering::Relaxed),
            misses: self.counters.misses.load(Ordering::Relaxed),
            unwraps: self.counters.unwraps.load(Ordering::Relaxed),
            evictions: self.counters.evictions.load(Ordering::Relaxed),
            expirations: self.counters.expirations.load(Ordering::Relaxed),
        }
    }

    fn is_fresh(&self, loaded: &Loaded, now: Instant) -> bool {
        now.saturating_duration_since(loaded.loaded_at) < self.config.ttl
    }
}

impl<K> std::fmt::Debug for KekCache<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KekCache")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What a lookup found, decided under the lock before acting on it.
enum Found {
    Fresh(Arc<VersionKek>),
    Expired,
    InFlight(Arc<OnceCell<Loaded>>),
    Absent,
}

/// An unwrapped KEK and when the device produced it.
struct Loaded {
    kek: Arc<VersionKek>,
    loaded_at: Instant,
}

/// One entry: its cell (empty while the unwrap is in flight or after it failed) and its place
/// in the recency order.
struct Slot {
    cell: Arc<OnceCell<Loaded>>,
    last_used: u64,
}

struct State<K> {
    slots: HashMap<K, Slot>,
    /// Recency order: last-use tick → key, least recent first. Ticks are unique.
    recency: BTreeMap<u64, K>,
    tick: u64,
}

impl<K: Eq + Hash + Clone> State<K> {
    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    fn insert(&mut self, key: K, cell: Arc<OnceCell<Loaded>>) {
        let tick = self.next_tick();
        self.recency.insert(tick, key.clone());
        if let Some(old) = self.slots.insert(
            key,
            Slot {
                cell,
                last_used: tick,
            },
        ) {
            self.recency.remove(&old.last_used);
        }
    }

    fn touch(&mut self, key: &K) {
        let tick = self.next_tick();
        if let Some(slot) = self.slots.get_mut(key) {
            self.recency.remove(&slot.last_used);
            slot.last_used = tick;
            self.recency.insert(tick, key.clone());
        }
    }

    fn remove(&mut self, key: &K) -> Option<Slot> {
        let slot = self.slots.remove(key)?;
        self.recency.remove(&slot.last_used);
        Some(slot)
    }

    fn pop_least_recent(&mut self) -> Option<Slot> {
        let (_, key) = self.recency.pop_first()?;
        self.slots.remove(&key)
    }
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    unwraps: AtomicU64,
    evictions: AtomicU64,
    expirations: AtomicU64,
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::backend::cached::kek::tests::observed_kek;
    use crate::backend::cached::kek::KEK_LEN;

    const TTL: Duration = Duration::from_millis(50);

    fn cache(capacity: usize) -> KekCache<&'static str> {
        KekCache::new(KekCacheConfig {
            ttl: TTL,
            capacity: NonZeroUsize::new(capacity).unwrap(),
        })
    }

    async fn device(byte: u8) -> Result<VersionKek, &'static str> {
        Ok(VersionKek::from_slice(&[byte; KEK_LEN]).unwrap())
    }

    /// Unwraps through `device`, counting calls in `calls`.
    async fn get(
        c: &KekCache<&'static str>,
        key: &'static str,
        calls: &AtomicUsize,
    ) -> Arc<VersionKek> {
        c.get_or_unwrap(key, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            device(key.as_bytes()[0]).await
        })
        .await
        .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn counts_hits_and_misses() {
        let (c, calls) = (cache(4), AtomicUsize::new(0));
        let a1 = get(&c, "a", &calls).await;
        let a2 = get(&c, "a", &calls).await;
        assert!(Arc::ptr_eq(&a1, &a2));
        assert_eq!(a1.expose_secret(), &[b'a'; KEK_LEN]);
        get(&c, "b", &calls).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let m = c.metrics();
        assert_eq!((m.hits, m.misses, m.unwraps, m.evictions), (1, 2, 2, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn expired_entry_is_unwrapped_again() {
        let (c, calls) = (cache(4), AtomicUsize::new(0));
        let first = get(&c, "a", &calls).await;
        tokio::time::advance(TTL - Duration::from_millis(1)).await;
        assert!(
            Arc::ptr_eq(&first, &get(&c, "a", &calls).await),
            "still fresh"
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        let second = get(&c, "a", &calls).await;
        assert!(
            !Arc::ptr_eq(&first, &second),
            "an expired KEK is never served"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(c.metrics().expirations, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_misses_share_one_unwrap() {
        let c = Arc::new(cache(4));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..32 {
            let (c, calls) = (Arc::clone(&c), Arc::clone(&calls));
            tasks.spawn(async move {
                c.get_or_unwrap("a", || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    // A slow device: every other caller arrives while this is in flight.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    device(7).await
                })
                .await
                .unwrap()
            });
        }
        let keks: Vec<_> = tasks.join_all().await;
        assert_eq!(keks.len(), 32);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "exactly one device unwrap");
        assert!(keks.iter().all(|k| Arc::ptr_eq(k, &keks[0])));
        assert_eq!(c.metrics().unwraps, 1);
    }

    #[test]
    fn concurrent_misses_share_one_unwrap_on_many_threads() {
        // The same on a multi-threaded runtime, with real time: the device call is slow enough
        // (200 ms) that all callers, spawned up front, find the flight under way.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Arc::new(cache(4));
        let joined = std::thread::spawn({
            let (c, calls) = (Arc::clone(&c), Arc::clone(&calls));
            move || {
                rt.block_on(async move {
                    let gate = Arc::new(tokio::sync::Barrier::new(32));
                    let mut tasks = tokio::task::JoinSet::new();
                    for _ in 0..32 {
                        let (c, calls, gate) =
                            (Arc::clone(&c), Arc::clone(&calls), Arc::clone(&gate));
                        tasks.spawn(async move {
                            gate.wait().await;
                            c.get_or_unwrap("a", || async move {
                                calls.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(200)).await;
                                device(7).await
                            })
                            .await
                            .is_ok()
                        });
                    }
                    tasks.join_all().await
                })
            }
        })
        .join()
        .unwrap();
        assert!(joined.iter().all(|ok| *ok));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_unwrap_is_not_cached() {
        let (c, calls) = (cache(4), AtomicUsize::new(0));
        let err = c
            .get_or_unwrap("a", || async { Err::<VersionKek, _>("device unavailable") })
            .await
            .unwrap_err();
        assert_eq!(err, "device unavailable");
        let kek = get(&c, "a", &calls).await;
        assert_eq!(kek.expose_secret(), &[b'a'; KEK_LEN]);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "the retry reached the device"
        );
        assert_eq!(c.metrics().unwraps, 2);
        assert_eq!(c.metrics().hits, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn least_recently_used_is_evicted() {
        let (c, calls) = (cache(2), AtomicUsize::new(0));
        get(&c, "a", &calls).await;
        get(&c, "b", &calls).await;
        get(&c, "a", &calls).await; // a is now more recent than b
        get(&c, "c", &calls).await; // evicts b
        assert_eq!(c.len().await, 2);
        assert_eq!(c.metrics().evictions, 1);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        get(&c, "a", &calls).await; // hit
        get(&c, "c", &calls).await; // hit
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        get(&c, "b", &calls).await; // miss: was evicted; evicts a (least recent now)
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        get(&c, "c", &calls).await; // hit
        get(&c, "a", &calls).await; // miss
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        assert_eq!(c.metrics().evictions, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn sweep_invalidate_and_clear_remove_entries() {
        let (c, calls) = (cache(8), AtomicUsize::new(0));
        get(&c, "a", &calls).await;
        tokio::time::advance(TTL).await;
        get(&c, "b", &calls).await;
        assert_eq!(c.sweep().await.len(), 1, "only a is older than the TTL");
        assert_eq!(c.len().await, 1);
        c.invalidate(&"b").await;
        assert!(c.is_empty().await);
        get(&c, "b", &calls).await;
        get(&c, "c", &calls).await;
        c.clear().await;
        assert!(c.is_empty().await);
        get(&c, "c", &calls).await;
        assert_eq!(calls.load(Ordering::SeqCst), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn expired_kek_is_zeroised_when_its_last_user_drops() {
        let c = cache(4);
        let (kek, seen) = observed_kek(&[0x3c; KEK_LEN]);
        let in_flight = c
            .get_or_unwrap("a", || async { Ok::<_, &str>(kek) })
            .await
            .unwrap();
        tokio::time::advance(TTL).await;
        assert_eq!(c.sweep().await.len(), 1);
        assert!(
            seen.lock().unwrap().is_none(),
            "a request in flight keeps its KEK"
        );
        assert_eq!(in_flight.expose_secret(), &[0x3c; KEK_LEN]);
        drop(in_flight);
        assert_eq!(seen.lock().unwrap().expect("dropped"), [0u8; KEK_LEN]);
    }

    #[tokio::test(start_paused = true)]
    async fn kek_replaced_on_expiry_is_zeroised() {
        let c = cache(4);
        let (kek, seen) = observed_kek(&[0x3c; KEK_LEN]);
        c.get_or_unwrap("a", || async { Ok::<_, &str>(kek) })
            .await
            .unwrap();
        tokio::time::advance(TTL).await;
        let calls = AtomicUsize::new(0);
        get(&c, "a", &calls).await;
        assert_eq!(seen.lock().unwrap().expect("dropped"), [0u8; KEK_LEN]);
    }
}
