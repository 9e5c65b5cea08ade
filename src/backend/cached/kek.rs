//! [`VersionKek`]: a key version's 256-bit key-encryption key, held in locked memory while it is
//! in plaintext and zeroised when it drops.
//!
//! # Memory locking
//!
//! The 32 bytes live in their own heap allocation (a stable address for the value's lifetime),
//! and the page(s) under it are locked with `mlock` through `region::lock`, a safe API, before
//! the key is copied in. `mlock` does not nest: one `munlock` unlocks a page however many
//! times it was locked. Small allocations share pages, so two KEKs (or a KEK and anything else
//! locked the same way) may sit on one page; the locks are therefore counted per page in a
//! process-wide registry (`PageLocks`) and a page is unlocked only when its last user drops.
//!
//! If locking fails — typically `RLIMIT_MEMLOCK` is too low and the process lacks
//! `CAP_IPC_LOCK` — the KEK is still created, unlocked: one `warn` is logged per process and
//! [`VersionKek::memory_lock`] says [`MemoryLock::Unlocked`]. Refusing to work would turn a
//! hardening measure into an outage; operators who need the guarantee raise the limit (each
//! cached KEK needs at most two pages) and can watch for the warning.
//!
//! Locking keeps the pages out of swap. It does not keep them out of core dumps or away from a
//! process that can read this one's memory; see the module docs of `backend::cached`.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of a version-KEK in bytes (AES-256 / HKDF-SHA256 input keying material).
pub const KEK_LEN: usize = 32;

/// Whether a [`VersionKek`]'s memory is locked against swapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryLock {
    /// Every page under the key is locked (`mlock`).
    Locked,
    /// Locking failed (e.g. `RLIMIT_MEMLOCK`); the key is in ordinary memory.
    Unlocked,
}

/// Why a [`VersionKek`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KekError {
    /// The unwrapped key material is not [`KEK_LEN`] bytes long.
    #[error("a version-KEK is {KEK_LEN} bytes, not {0}")]
    Length(usize),
}

/// A key version's plaintext key-encryption key: 32 bytes in locked, zeroising memory.
///
/// No `Clone`, no `Serialize`, and a `Debug` that prints nothing of the key. Share it through
/// an `Arc` (as [`super::KekCache`] does); the bytes are zeroised when the last `Arc` drops.
///
/// # Security
/// The bytes come from the device that unwrapped them; [`VersionKek::from_slice`] copies them
/// into memory that was locked first, so they never sit in an unlocked page of ours (the
/// caller's source buffer is the caller's to zeroise).
pub struct VersionKek {
    /// Boxed so the address that was locked stays the address of the key.
    bytes: Box<[u8; KEK_LEN]>,
    /// Released after `Drop::drop` has zeroised `bytes` (fields drop after the body runs).
    lock: PageLockSet,
    #[cfg(test)]
    drop_observer: Option<DropObserver>,
}

/// Test hook: sees the key buffer after it was zeroised and before it is freed.
#[cfg(test)]
pub(crate) type DropObserver = Box<dyn Fn(&[u8; KEK_LEN]) + Send + Sync>;

impl VersionKek {
    /// Copies `bytes` (the device's unwrap output) into a freshly locked buffer.
    ///
    /// # Errors
    /// [`KekError::Length`] when `bytes` is not [`KEK_LEN`] bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KekError> {
        if bytes.len() != KEK_LEN {
            return Err(KekError::Length(bytes.len()));
        }
        let mut buf = Box::new([0u8; KEK_LEN]);
        let lock = PageLockSet::acquire(buf.as_ptr() as usize, KEK_LEN);
        buf.copy_from_slice(bytes);
        Ok(Self {
            bytes: buf,
            lock,
            #[cfg(test)]
            drop_observer: None,
        })
    }

    /// The key bytes. Use them for one derivation and do not copy them anywhere that does not
    /// zeroise.
    pub fn expose_secret(&self) -> &[u8; KEK_LEN] {
        &self.bytes
    }

    /// Whether the key's memory is locked against swapping.
    pub fn memory_lock(&self) -> MemoryLock {
        self.lock.state()
    }

    /// Installs a hook that sees the buffer right after zeroisation, before it is freed.
    #[cfg(test)]
    pub(crate) fn set_drop_observer(&mut self, observer: DropObserver) {
        self.drop_observer = Some(observer);
    }
}

impl Drop for VersionKek {
    fn drop(&mut self) {
        self.bytes.zeroize();
        #[cfg(test)]
        if let Some(observer) = self.drop_observer.take() {
            observer(&self.bytes);
        }
        // `self.lock` drops next (unlocking the pages, now holding zeros), then `self.bytes`
        // is freed.
    }
}

impl ZeroizeOnDrop for VersionKek {}

impl fmt::Debug for VersionKek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VersionKek")
            .field("bytes", &"[REDACTED; 32 bytes]")
            .field("memory_lock", &self.memory_lock())
            .finish()
    }
}

/// The pages one KEK holds locked, released (count-wise) on drop.
struct PageLockSet {
    /// Page addresses this value counted in the registry; empty when locking failed.
    pages: Vec<usize>,
    state: MemoryLock,
}

impl PageLockSet {
    fn acquire(addr: usize, len: usize) -> Self {
        let registry = PageLocks::global();
        let page = registry.page_size;
        let first = addr - addr % page;
        let last = (addr + len - 1) - (addr + len - 1) % page;
        let mut pages = Vec::with_capacity(2);
        let mut state = MemoryLock::Locked;
        let mut p = first;
        while p <= last {
            match registry.retain(p) {
                Ok(()) => pages.push(p),
                Err(err) => {
                    state = MemoryLock::Unlocked;
                    warn_once(&err);
                    break;
                }
            }
            p += page;
        }
        if state == MemoryLock::Unlocked {
            // Keep the accounting simple: a KEK is either wholly locked or holds no page.
            for p in pages.drain(..) {
                registry.release(p);
            }
        }
        Self { pages, state }
    }

    fn state(&self) -> MemoryLock {
        self.state
    }
}

impl Drop for PageLockSet {
    fn drop(&mut self) {
        let registry = PageLocks::global();
        for p in self.pages.drain(..) {
            registry.release(p);
        }
    }
}

/// Process-wide count of locked pages. `mlock` state is per process, so this is one of the few
/// things that is rightly global.
struct PageLocks {
    page_size: usize,
    /// page address → (number of users, the guard that unlocks it when dropped).
    pages: Mutex<HashMap<usize, (usize, region::LockGuard)>>,
}

impl PageLocks {
    fn global() -> &'static Self {
        static REGISTRY: OnceLock<PageLocks> = OnceLock::new();
        REGISTRY.get_or_init(|| Self {
            // `region::page::size` never returns 0; `max(1)` keeps the arithmetic total anyway.
            page_size: region::page::size().max(1),
            pages: Mutex::new(HashMap::new()),
        })
    }

    /// Counts one more user of `page`, locking it if it had none.
    fn retain(&self, page: usize) -> Result<(), region::Error> {
        // A poisoned map is still a consistent count: every update below is a single insert or
        // increment that cannot panic halfway.
        let mut pages = self.pages.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((users, _)) = pages.get_mut(&page) {
            *users += 1;
            return Ok(());
        }
        let guard = region::lock(page as *const u8, 1)?;
        pages.insert(page, (1, guard));
        Ok(())
    }

    /// Counts one user less of `page`, unlocking it when none is left.
    fn release(&self, page: usize) {
        let removed = {
            let mut pages = self.pages.lock().unwrap_or_else(PoisonError::into_inner);
            match pages.get_mut(&page) {
                Some((users, _)) if *users > 1 => {
                    *users -= 1;
                    None
                }
                Some(_) => pages.remove(&page),
                None => None,
            }
        };
        // The guard's `munlock` runs here, outside the registry lock.
        drop(removed);
    }

    #[cfg(test)]
    fn users(&self, page: usize) -> usize {
        let pages = self.pages.lock().unwrap_or_else(PoisonError::into_inner);
        pages.get(&page).map_or(0, |(users, _)| *users)
    }
}

fn warn_once(err: &region::Error) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            error = %err,
            "cannot lock version-KEK memory (mlock; raise RLIMIT_MEMLOCK or grant CAP_IPC_LOCK); \
             cached KEKs will be held in unlocked memory and may reach swap"
        );
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    const KEY: [u8; KEK_LEN] = [0xA5; KEK_LEN];

    /// Returns a KEK whose buffer, as seen after zeroisation, lands in the returned slot.
    pub(crate) fn observed_kek(bytes: &[u8]) -> (VersionKek, Arc<Mutex<Option<[u8; KEK_LEN]>>>) {
        let seen = Arc::new(Mutex::new(None));
        let mut kek = VersionKek::from_slice(bytes).unwrap();
        let slot = Arc::clone(&seen);
        kek.set_drop_observer(Box::new(move |buf| {
            *slot.lock().unwrap() = Some(*buf);
        }));
        (kek, seen)
    }

    #[test]
    fn holds_the_bytes_it_was_given() {
        let kek = VersionKek::from_slice(&KEY).unwrap();
        assert_eq!(kek.expose_secret(), &KEY);
    }

    #[test]
    fn refuses_other_lengths() {
        assert_eq!(
            VersionKek::from_slice(&[1; 31]).unwrap_err(),
            KekError::Length(31)
        );
        assert_eq!(
            VersionKek::from_slice(&[1; 33]).unwrap_err(),
            KekError::Length(33)
        );
        assert_eq!(
            VersionKek::from_slice(&[]).unwrap_err(),
            KekError::Length(0)
        );
    }

    #[test]
    fn drop_zeroises_the_buffer() {
        let (kek, seen) = observed_kek(&KEY);
        assert!(seen.lock().unwrap().is_none(), "observer runs only on drop");
        drop(kek);
        let after = seen.lock().unwrap().expect("the observer ran");
        assert_eq!(
            after, [0u8; KEK_LEN],
            "the key bytes must be zero before the free"
        );
    }

    #[test]
    fn debug_shows_no_key_bytes() {
        let kek = VersionKek::from_slice(&[0x5a; KEK_LEN]).unwrap();
        let shown = format!("{kek:?}");
        assert!(shown.contains("REDACTED"));
        assert!(!shown.contains("5a") && !shown.contains("90"), "{shown}");
    }

    #[test]
    fn page_stays_counted_until_its_last_kek_drops() {
        let a = VersionKek::from_slice(&KEY).unwrap();
        if a.memory_lock() == MemoryLock::Unlocked {
            // RLIMIT_MEMLOCK too low on this machine: nothing is counted, nothing to check.
            return;
        }
        let registry = PageLocks::global();
        let page = a.lock.pages[0];
        let before = registry.users(page);
        assert!(before >= 1);
        let b = VersionKek::from_slice(&KEY).unwrap();
        let shares = b.lock.pages.contains(&page);
        drop(a);
        if shares {
            assert!(registry.users(page) >= 1, "b still holds the shared page");
        }
        drop(b);
    }
}
