//! The data-key cache, like the AWS Encryption SDK's caching materials manager: a data key is
//! reused for several files under the same key and context, within bounds on its age, the
//! messages (files) and the plaintext bytes it encrypts, and the number of entries. Off by
//! default: a client uses one only when given one ([`crate::ClientBuilder::data_key_cache`]).
//!
//! Reuse is safe for the streaming format because every file derives its own key from the
//! data key and a fresh random salt; the bounds limit how much one leaked data key exposes and
//! how long a key that the server has since disabled keeps encrypting. Decryption reuses
//! unwrapped keys by (wrapped key, context), bounded by age and entries.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use custodian_types::format::EncryptionContext;
use custodian_types::secret::SecretBytes;

use crate::datakey::DataKey;

/// The cache's bounds. Every bound is checked on every use; an entry past any of them is
/// dropped (and its key zeroised once the last user lets go).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// How long an entry may be used after the server issued its key.
    pub max_age: Duration,
    /// How many messages (files) one data key may encrypt.
    pub max_messages: u64,
    /// How many plaintext bytes one data key may encrypt, over all its messages.
    pub max_bytes: u64,
    /// How many entries the cache holds (encryption and decryption each); the least recently
    /// used goes first.
    pub max_entries: usize,
}

impl Default for CacheLimits {
    /// Conservative starting values (the Encryption SDK leaves the bounds to the application;
    /// so should callers): 60 s, 100 messages, 1 GiB, 100 entries.
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(60),
            max_messages: 100,
            max_bytes: 1 << 30,
            max_entries: 100,
        }
    }
}

/// A cached data key for encryption and what it has done.
struct EncryptEntry {
    key: Arc<DataKey>,
    issued: Instant,
    last_used: Instant,
    messages: u64,
    bytes: u64,
}

/// A cached unwrapped key for decryption.
struct DecryptEntry {
    key: Arc<SecretBytes>,
    issued: Instant,
    last_used: Instant,
}

/// What the bounded insert needs of an entry.
trait Aged {
    fn issued(&self) -> Instant;
    fn last_used(&self) -> Instant;
}

impl Aged for EncryptEntry {
    fn issued(&self) -> Instant {
        self.issued
    }
    fn last_used(&self) -> Instant {
        self.last_used
    }
}

impl Aged for DecryptEntry {
    fn issued(&self) -> Instant {
        self.issued
    }
    fn last_used(&self) -> Instant {
        self.last_used
    }
}

/// Inserts `entry` under `id` at `now`: expired entries go first, then, when the map is full
/// and `id` is new, the least recently used one.
fn insert_bounded<K: Eq + Hash + Clone, E: Aged>(
    map: &mut HashMap<K, E>,
    id: K,
    entry: E,
    now: Instant,
    limits: CacheLimits,
) {
    map.retain(|_, e| now.saturating_duration_since(e.issued()) < limits.max_age);
    if !map.contains_key(&id) && map.len() >= limits.max_entries {
        if let Some(lru) = map
            .iter()
            .min_by_key(|(_, e)| e.last_used())
            .map(|(k, _)| k.clone())
        {
            map.remove(&lru);
        }
    }
    map.insert(id, entry);
}

#[derive(Default)]
struct Entries {
    /// By (key as named by the caller, canonical context).
    encrypt: HashMap<(String, Vec<u8>), EncryptEntry>,
    /// By (wrapped key, canonical context).
    decrypt: HashMap<(Vec<u8>, Vec<u8>), DecryptEntry>,
}

/// A bounded data-key cache, shared by clones of a client (see the module docs).
pub struct DataKeyCache {
    limits: CacheLimits,
    entries: Mutex<Entries>,
}

impl fmt::Debug for DataKeyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (e, d) = self.len();
        f.debug_struct("DataKeyCache")
            .field("limits", &self.limits)
            .field("encrypt_entries", &e)
            .field("decrypt_entries", &d)
            .finish()
    }
}

impl DataKeyCache {
    /// An empty cache with `limits`.
    pub fn new(limits: CacheLimits) -> Self {
        Self {
            limits,
            entries: Mutex::new(Entries::default()),
        }
    }

    /// The bounds.
    pub fn limits(&self) -> CacheLimits {
        self.limits
    }

    /// Entries held: (encryption, decryption).
    pub fn len(&self) -> (usize, usize) {
        let e = self.lock();
        (e.encrypt.len(), e.decrypt.len())
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }

    /// Drops every entry.
    pub fn clear(&self) {
        let mut e = self.lock();
        e.encrypt.clear();
        e.decrypt.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding the lock cannot leave an entry half-updated in a way that
        // matters: every update is a few field stores. Go on with the data.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A cached data key for one message of `bytes` plaintext bytes under `key` and
    /// `context`, counted against the entry's bounds; `None` when there is none within them
    /// (an entry past a bound is dropped).
    pub fn take_for_encryption(
        &self,
        key: &str,
        context: &EncryptionContext,
        bytes: u64,
    ) -> Option<Arc<DataKey>> {
        self.take_for_encryption_at(Instant::now(), key, context, bytes)
    }

    /// [`take_for_encryption`](Self::take_for_encryption) at `now`.
    pub(crate) fn take_for_encryption_at(
        &self,
        now: Instant,
        key: &str,
        context: &EncryptionContext,
        bytes: u64,
    ) -> Option<Arc<DataKey>> {
        let l = self.limits;
        let id = (key.to_owned(), context.canonical());
        let mut entries = self.lock();
        let e = entries.encrypt.get_mut(&id)?;
        let fresh = now.saturating_duration_since(e.issued) < l.max_age;
        let messages_left = e.messages < l.max_messages;
        let bytes_left = e.bytes.checked_add(bytes).is_some_and(|b| b <= l.max_bytes);
        if fresh && messages_left && bytes_left {
            e.messages += 1;
            e.bytes += bytes;
            e.last_used = now;
            return Some(Arc::clone(&e.key));
        }
        // Past its age or message count for good; past its bytes for this message, and a new
        // key will take its place.
        entries.encrypt.remove(&id);
        None
    }

    /// Caches a fresh data key that has just been used for one message of `bytes` bytes
    /// (counted as its first use). Not cached when that message alone breaks a bound.
    pub fn insert_for_encryption(
        &self,
        key: &str,
        context: &EncryptionContext,
        data_key: Arc<DataKey>,
        bytes: u64,
    ) {
        self.insert_for_encryption_at(Instant::now(), key, context, data_key, bytes);
    }

    /// [`insert_for_encryption`](Self::insert_for_encryption) at `now`.
    pub(crate) fn insert_for_encryption_at(
        &self,
        now: Instant,
        key: &str,
        context: &EncryptionContext,
        data_key: Arc<DataKey>,
        bytes: u64,
    ) {
        let l = self.limits;
        if l.max_entries == 0 || l.max_messages < 1 || bytes > l.max_bytes || l.max_age.is_zero() {
            return;
        }
        let id = (key.to_owned(), context.canonical());
        let entry = EncryptEntry {
            key: data_key,
            issued: now,
            last_used: now,
            messages: 1,
            bytes,
        };
        insert_bounded(&mut self.lock().encrypt, id, entry, now, l);
    }

    /// The unwrapped key of `wrapped` under `context`, when cached and younger than
    /// `max_age`.
    pub fn get_for_decryption(
        &self,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Option<Arc<SecretBytes>> {
        self.get_for_decryption_at(Instant::now(), wrapped, context)
    }

    /// [`get_for_decryption`](Self::get_for_decryption) at `now`.
    pub(crate) fn get_for_decryption_at(
        &self,
        now: Instant,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Option<Arc<SecretBytes>> {
        let id = (wrapped.to_vec(), context.canonical());
        let mut entries = self.lock();
        let e = entries.decrypt.get_mut(&id)?;
        if now.saturating_duration_since(e.issued) < self.limits.max_age {
            e.last_used = now;
            return Some(Arc::clone(&e.key));
        }
        entries.decrypt.remove(&id);
        None
    }

    /// Caches the unwrapped key of `wrapped` under `context`.
    pub fn insert_for_decryption(
        &self,
        wrapped: &[u8],
        context: &EncryptionContext,
        key: Arc<SecretBytes>,
    ) {
        self.insert_for_decryption_at(Instant::now(), wrapped, context, key);
    }

    /// [`insert_for_decryption`](Self::insert_for_decryption) at `now`.
    pub(crate) fn insert_for_decryption_at(
        &self,
        now: Instant,
        wrapped: &[u8],
        context: &EncryptionContext,
        key: Arc<SecretBytes>,
    ) {
        let l = self.limits;
        if l.max_entries == 0 || l.max_age.is_zero() {
            return;
        }
        let id = (wrapped.to_vec(), context.canonical());
        let entry = DecryptEntry {
            key,
            issued: now,
            last_used: now,
        };
        insert_bounded(&mut self.lock().decrypt, id, entry, now, l);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(v: &str) -> EncryptionContext {
        EncryptionContext::from_pairs([("tenant".to_owned(), v.to_owned())]).unwrap()
    }

    fn dk(n: u8) -> Arc<DataKey> {
        Arc::new(DataKey::for_tests(n))
    }

    fn limits() -> CacheLimits {
        CacheLimits {
            max_age: Duration::from_secs(60),
            max_messages: 3,
            max_bytes: 1000,
            max_entries: 2,
        }
    }

    #[test]
    fn a_cached_key_serves_only_its_key_and_context() {
        let c = DataKeyCache::new(limits());
        let t = Instant::now();
        assert!(c.take_for_encryption_at(t, "k", &ctx("a"), 1).is_none());
        c.insert_for_encryption_at(t, "k", &ctx("a"), dk(1), 1);
        let got = c.take_for_encryption_at(t, "k", &ctx("a"), 1).unwrap();
        assert_eq!(
            got.plaintext().expose_secret(),
            dk(1).plaintext().expose_secret()
        );
        assert!(c.take_for_encryption_at(t, "k", &ctx("b"), 1).is_none());
        assert!(c.take_for_encryption_at(t, "other", &ctx("a"), 1).is_none());
    }

    #[test]
    fn age_bounds_an_entry() {
        let c = DataKeyCache::new(limits());
        let t = Instant::now();
        c.insert_for_encryption_at(t, "k", &ctx("a"), dk(1), 1);
        let just_before = t + Duration::from_secs(59);
        assert!(c
            .take_for_encryption_at(just_before, "k", &ctx("a"), 1)
            .is_some());
        let at = t + Duration::from_secs(60);
        assert!(c.take_for_encryption_at(at, "k", &ctx("a"), 1).is_none());
        // Dropped, not kept for later.
        assert_eq!(c.len(), (0, 0));
        // Decryption entries age the same way.
        c.insert_for_decryption_at(
            t,
            b"w",
            &ctx("a"),
            Arc::new(SecretBytes::copy_from(&[7; 32])),
        );
        assert!(c
            .get_for_decryption_at(just_before, b"w", &ctx("a"))
            .is_some());
        assert!(c
            .get_for_decryption_at(just_before, b"w", &ctx("b"))
            .is_none());
        assert!(c.get_for_decryption_at(at, b"w", &ctx("a")).is_none());
        assert_eq!(c.len(), (0, 0));
    }

    #[test]
    fn messages_bound_an_entry() {
        let c = DataKeyCache::new(limits());
        let t = Instant::now();
        // The insert is message 1; two more fit under max_messages = 3.
        c.insert_for_encryption_at(t, "k", &ctx("a"), dk(1), 1);
        assert!(c.take_for_encryption_at(t, "k", &ctx("a"), 1).is_some());
        assert!(c.take_for_encryption_at(t, "k", &ctx("a"), 1).is_some());
        assert!(c.take_for_encryption_at(t, "k", &ctx("a"), 1).is_none());
        assert_eq!(c.len(), (0, 0));
    }

    #[test]
    fn bytes_bound_an_entry_and_an_oversized_message_is_not_cached() {
        let c = DataKeyCache::new(limits());
        let t = Instant::now();
        c.insert_for_encryption_at(t, "k", &ctx("a"), dk(1), 600);
        assert!(c.take_for_encryption_at(t, "k", &ctx("a"), 400).is_some());
        // 1000 used: one more byte is past the bound.
        assert!(c.take_for_encryption_at(t, "k", &ctx("a"), 1).is_none());
        c.insert_for_encryption_at(t, "k", &ctx("a"), dk(2), 1000);
        assert_eq!(c.len(), (1, 0));
        assert!(c.take_for_encryption_at(t, "k", &ctx("a"), 0).is_some());
        c.clear();
        c.insert_for_encryption_at(t, "k", &ctx("a"), dk(3), 1001);
        assert_eq!(c.len(), (0, 0));
        // Counting never overflows.
        c.insert_for_encryption_at(t, "k", &ctx("a"), dk(4), 1);
        assert!(c
            .take_for_encryption_at(t, "k", &ctx("a"), u64::MAX)
            .is_none());
    }

    #[test]
    fn entries_are_bounded_least_recently_used_first() {
        let c = DataKeyCache::new(CacheLimits {
            max_messages: 100,
            ..limits()
        });
        let t = Instant::now();
        let s = Duration::from_secs(1);
        c.insert_for_encryption_at(t, "k1", &ctx("a"), dk(1), 1);
        c.insert_for_encryption_at(t + s, "k2", &ctx("a"), dk(2), 1);
        // k1 used more recently than k2.
        assert!(c
            .take_for_encryption_at(t + 2 * s, "k1", &ctx("a"), 1)
            .is_some());
        c.insert_for_encryption_at(t + 3 * s, "k3", &ctx("a"), dk(3), 1);
        assert_eq!(c.len(), (2, 0));
        assert!(c
            .take_for_encryption_at(t + 4 * s, "k2", &ctx("a"), 1)
            .is_none());
        assert!(c
            .take_for_encryption_at(t + 4 * s, "k1", &ctx("a"), 1)
            .is_some());
        assert!(c
            .take_for_encryption_at(t + 4 * s, "k3", &ctx("a"), 1)
            .is_some());
        // Decryption entries have their own bound of the same size.
        for (i, w) in [b"w1", b"w2", b"w3"].into_iter().enumerate() {
            let at = t + s * u32::try_from(i).unwrap();
            c.insert_for_decryption_at(at, w, &ctx("a"), Arc::new(SecretBytes::copy_from(w)));
        }
        assert_eq!(c.len(), (2, 2));
        assert!(c
            .get_for_decryption_at(t + 4 * s, b"w1", &ctx("a"))
            .is_none());
        assert!(c
            .get_for_decryption_at(t + 4 * s, b"w3", &ctx("a"))
            .is_some());
    }

    #[test]
    fn zero_bounds_cache_nothing() {
        for l in [
            CacheLimits {
                max_entries: 0,
                ..limits()
            },
            CacheLimits {
                max_messages: 0,
                ..limits()
            },
            CacheLimits {
                max_age: Duration::ZERO,
                ..limits()
            },
            CacheLimits {
                max_bytes: 0,
                ..limits()
            },
        ] {
            let c = DataKeyCache::new(l);
            c.insert_for_encryption_at(Instant::now(), "k", &ctx("a"), dk(1), 1);
            assert!(
                c.take_for_encryption_at(Instant::now(), "k", &ctx("a"), 1)
                    .is_none(),
                "{l:?}"
            );
        }
    }

    #[test]
    fn debug_shows_counts_not_keys() {
        let c = DataKeyCache::new(limits());
        c.insert_for_encryption_at(Instant::now(), "k", &ctx("a"), dk(0xab), 1);
        let text = format!("{c:?}");
        assert!(text.contains("encrypt_entries: 1"), "{text}");
        assert!(
            !text.contains("171") && !text.to_lowercase().contains("abab"),
            "{text}"
        );
    }
}
