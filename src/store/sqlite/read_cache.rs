//! Secret reads kept in memory between writes (decision 0028).
//!
//! A secret `GET` of the newest version reads the secret's record and that version's sealed
//! data (wrapped data key, ciphertext) on a reader connection: one hand-off to the blocking pool
//! and back, which on these machines costs more than the SQL. This cache keeps what that read
//! returned, per path, so a repeated read goes straight to the device call that opens it. It
//! holds only what the database holds (sealed data, never a plaintext or a data key), bounded
//! in bytes.
//!
//! Correctness rests on one rule: every change to a secret's rows on this store forgets the
//! path after its transaction committed ([`ReadCache::forget`]), and a read result is kept only
//! if nothing was forgotten while it was being read ([`ReadCache::ticket`]). A read that began
//! before a change and finished after it is therefore never kept, and a read that began after
//! it sees the committed rows. Only the node's own connections write the file (SQLite serves
//! one node); PostgreSQL stores, which other nodes write, do not use it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use zeroize::Zeroize;

use crate::domain::secret::SecretPath;
use crate::store::SecretForRead;

/// Bytes counted for an entry besides its sealed data: the record's fields and the map's own.
const ENTRY_OVERHEAD: usize = 256;
/// Bytes counted for each version in an entry's record.
const VERSION_OVERHEAD: usize = 96;
/// The largest share of the budget one entry may take: a few large values cannot push out
/// everything else at once.
const MAX_ENTRY_SHARE: usize = 16;

/// The newest-version reads of secrets, by path.
#[derive(Debug)]
pub(super) struct ReadCache {
    inner: Mutex<Inner>,
    /// Most bytes held (0: nothing is kept).
    budget: AtomicUsize,
}

#[derive(Debug, Default)]
struct Inner {
    /// Moves with every [`ReadCache::forget`] and every start over.
    generation: u64,
    /// Bytes counted for the entries held.
    bytes: usize,
    entries: HashMap<SecretPath, Entry>,
}

impl Inner {
    /// Drops every entry.
    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Drops every entry; reads under way are not kept either.
    fn start_over(&mut self) {
        self.clear();
        self.generation += 1;
    }
}

/// One kept read; its sealed bytes are overwritten when it is dropped.
#[derive(Debug)]
struct Entry {
    read: SecretForRead,
    bytes: usize,
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some((_, sealed)) = &mut self.read.1 {
            sealed.wrapped_dek.zeroize();
            sealed.ciphertext.zeroize();
        }
    }
}

/// The generation a read began in.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ticket(u64);

impl ReadCache {
    /// A cache holding at most `budget` bytes (0 turns it off).
    pub(super) fn new(budget: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            budget: AtomicUsize::new(budget),
        }
    }

    /// Holds at most `budget` bytes from now on, starting over from nothing. The store and its
    /// audit appender share one cache, so it is resized in place, never replaced.
    pub(super) fn set_budget(&self, budget: usize) {
        let mut inner = self.lock();
        self.budget.store(budget, Ordering::Relaxed);
        inner.start_over();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock means a panic while the map was changed: start over from nothing,
        // and keep reads again from then on.
        self.inner.lock().unwrap_or_else(|p| {
            let mut inner = p.into_inner();
            inner.start_over();
            self.inner.clear_poison();
            inner
        })
    }

    /// The kept read of `path`, if there is one.
    pub(super) fn get(&self, path: &SecretPath) -> Option<SecretForRead> {
        if self.budget.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.lock().entries.get(path).map(|e| e.read.clone())
    }

    /// Taken before a read whose result may be kept.
    pub(super) fn ticket(&self) -> Ticket {
        Ticket(self.lock().generation)
    }

    /// Keeps `read` as `path`'s newest-version read, unless something was forgotten since `t`
    /// was taken or it does not fit. When the budget is full, everything held is dropped first.
    pub(super) fn keep(&self, t: Ticket, path: &SecretPath, read: &SecretForRead) {
        let bytes = size(path, read);
        let mut inner = self.lock();
        let budget = self.budget.load(Ordering::Relaxed);
        if inner.generation != t.0 || bytes > budget / MAX_ENTRY_SHARE {
            return;
        }
        if inner.bytes + bytes > budget {
            // Nothing was forgotten: reads under way are still current and may be kept.
            inner.clear();
        }
        let entry = Entry {
            read: read.clone(),
            bytes,
        };
        if let Some(old) = inner.entries.insert(path.clone(), entry) {
            inner.bytes -= old.bytes;
        }
        inner.bytes += bytes;
    }

    /// Forgets `paths` once a change to their rows committed (or may have): reads under way
    /// are not kept either.
    pub(super) fn forget<'a>(&self, paths: impl IntoIterator<Item = &'a SecretPath>) {
        let mut inner = self.lock();
        inner.generation += 1;
        for path in paths {
            if let Some(old) = inner.entries.remove(path) {
                inner.bytes -= old.bytes;
            }
        }
    }

    /// Entries and bytes held (for tests).
    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.entries.len(), inner.bytes)
    }
}

/// Bytes counted for keeping `read` as `path`'s.
fn size(path: &SecretPath, (record, sealed): &SecretForRead) -> usize {
    let sealed = sealed
        .as_ref()
        .map_or(0, |(_, s)| s.wrapped_dek.len() + s.ciphertext.len());
    let custom: usize = record.custom.iter().map(|(k, v)| k.len() + v.len()).sum();
    ENTRY_OVERHEAD
        + 2 * path.as_str().len()
        + sealed
        + custom
        + record.versions.len() * VERSION_OVERHEAD
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;
    use crate::domain::secret::{CustomMetadata, SecretRecord};
    use crate::domain::KeyId;
    use crate::store::SealedSecret;

    fn path(p: &str) -> SecretPath {
        SecretPath::try_from(p.to_owned()).unwrap()
    }

    fn read(p: &str, value_len: usize) -> SecretForRead {
        let record = SecretRecord {
            path: path(p),
            key_id: KeyId::from_bytes([1; 16]),
            current_version: 1,
            max_versions: 10,
            expires_after: None,
            custom: CustomMetadata::default(),
            generate: None,
            next_rotation_at: None,
            created_at: OffsetDateTime::UNIX_EPOCH,
            updated_at: OffsetDateTime::UNIX_EPOCH,
            versions: Vec::new(),
        };
        let sealed = SealedSecret {
            wrapped_dek: vec![7; 60],
            ciphertext: vec![9; value_len],
        };
        (record, Some((1, sealed)))
    }

    #[test]
    fn a_read_is_kept_and_forgotten_with_its_path() {
        let cache = ReadCache::new(1 << 20);
        let (a, b) = (path("team/a"), path("team/b"));
        cache.keep(cache.ticket(), &a, &read("team/a", 32));
        cache.keep(cache.ticket(), &b, &read("team/b", 32));
        assert_eq!(cache.get(&a), Some(read("team/a", 32)));
        cache.forget([&a]);
        assert_eq!(cache.get(&a), None);
        assert_eq!(cache.get(&b), Some(read("team/b", 32)));
        assert_eq!(cache.held().0, 1);
    }

    #[test]
    fn a_read_that_overlapped_a_change_is_not_kept() {
        let cache = ReadCache::new(1 << 20);
        let (a, b) = (path("team/a"), path("team/b"));
        // The read began, then any path changed and was forgotten, then the read finished.
        let t = cache.ticket();
        cache.forget([&b]);
        cache.keep(t, &a, &read("team/a", 32));
        assert_eq!(cache.get(&a), None);
        // A read that began after the change is kept.
        cache.keep(cache.ticket(), &a, &read("team/a", 32));
        assert!(cache.get(&a).is_some());
    }

    #[test]
    fn the_budget_bounds_what_is_held() {
        let one = size(&path("p/0000"), &read("p/0000", 1000));
        let cache = ReadCache::new(one * 20);
        for i in 0..100 {
            let p = format!("p/{i:04}");
            cache.keep(cache.ticket(), &path(&p), &read(&p, 1000));
            let (_, bytes) = cache.held();
            assert!(bytes <= one * 20, "{bytes} bytes held after {i}");
        }
        // The newest is always there: a full cache starts over before it keeps one more.
        assert!(cache.get(&path("p/0099")).is_some());
        // An entry over a sixteenth of the budget is not kept.
        cache.keep(cache.ticket(), &path("big/x"), &read("big/x", one * 2));
        assert_eq!(cache.get(&path("big/x")), None);
    }

    #[test]
    fn a_budget_of_zero_keeps_nothing() {
        let cache = ReadCache::new(0);
        let a = path("team/a");
        cache.keep(cache.ticket(), &a, &read("team/a", 32));
        assert_eq!(cache.get(&a), None);
        assert_eq!(cache.held(), (0, 0));
    }

    #[test]
    fn a_panic_under_the_lock_starts_over_and_reads_are_kept_again() {
        let cache = std::sync::Arc::new(ReadCache::new(1 << 20));
        let a = path("team/a");
        cache.keep(cache.ticket(), &a, &read("team/a", 32));
        let held = std::sync::Arc::clone(&cache);
        let panicked = std::thread::spawn(move || {
            let _inner = held.inner.lock();
            panic!("poisons the lock");
        })
        .join();
        assert!(panicked.is_err());
        assert_eq!(cache.get(&a), None, "everything held is dropped");
        cache.keep(cache.ticket(), &a, &read("team/a", 32));
        assert!(cache.get(&a).is_some(), "and reads are kept again");
    }

    #[test]
    fn a_new_budget_starts_over_and_drops_reads_under_way() {
        let cache = ReadCache::new(1 << 20);
        let (a, b) = (path("team/a"), path("team/b"));
        cache.keep(cache.ticket(), &a, &read("team/a", 32));
        let t = cache.ticket();
        cache.set_budget(0);
        assert_eq!(cache.get(&a), None);
        assert_eq!(cache.held(), (0, 0));
        cache.set_budget(1 << 20);
        cache.keep(t, &b, &read("team/b", 32));
        assert_eq!(
            cache.get(&b),
            None,
            "a read begun before the resize is not kept"
        );
        cache.keep(cache.ticket(), &b, &read("team/b", 32));
        assert!(cache.get(&b).is_some());
    }
}
