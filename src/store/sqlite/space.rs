//! What the SQLite store does when its disk fills up (`docs/store.md#a-full-disk`).
//!
//! Every request, reads included, writes an audit record before it is answered, so a disk with
//! no byte left would stop reads as well as writes. The store keeps a *reserve*: a file of
//! [`RESERVE_BYTES`] zeros beside the database, written at start-up. The first time SQLite
//! reports the disk full, the store
//!
//! 1. deletes the reserve, so audit records have room again (an audit append that failed for
//!    want of room is tried once more in it: see [`Space::released_since`]), and
//! 2. turns the request connection read-only (`PRAGMA query_only`): every write through it
//!    fails as [`StoreError::Full`] (503 `storage_full`) before touching the disk, so the freed
//!    room goes to audit records only. Reads and their audit records keep working until the
//!    reserve is used up; after that the audit writer fails and requests fail closed
//!    (`audit_unavailable`).
//!
//! While low, each call checks the free space (at most once per [`RECHECK`]); when at least
//! twice the reserve is free again, the reserve is written back and writes resume — no restart.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::error::{code, Error};
use crate::store::StoreError;

/// The size of the reserve file: room for several thousand audit records.
pub const RESERVE_BYTES: u64 = 8 * 1024 * 1024;
/// How often, at most, a low store looks at the free space again.
const RECHECK: Duration = Duration::from_secs(1);

/// The reserve and the low-space state, shared by the request connection and the audit writer.
#[derive(Debug)]
pub(super) struct Space {
    reserve: PathBuf,
    low: AtomicBool,
    /// Whether the request connection is read-only now (changed only under its mutex).
    read_only: AtomicBool,
    /// How many times the reserve was released (see [`Space::released_since`]).
    releases: AtomicU64,
    checked: Mutex<Instant>,
}

impl Space {
    /// Writes the reserve beside `db` if it is not there already. A disk too full for it
    /// starts the store low.
    pub(super) fn open(db: &Path) -> Self {
        let mut name = db.file_name().unwrap_or_default().to_owned();
        name.push("-reserve");
        let space = Self {
            reserve: db.with_file_name(name),
            low: AtomicBool::new(false),
            read_only: AtomicBool::new(false),
            releases: AtomicU64::new(0),
            checked: Mutex::new(Instant::now()),
        };
        if let Err(e) = space.write_reserve() {
            tracing::error!(error = %e, file = %space.reserve.display(),
                "no room for the disk reserve: writes are refused until space is freed");
            space.low.store(true, Ordering::SeqCst);
        }
        space
    }

    fn write_reserve(&self) -> std::io::Result<()> {
        if std::fs::metadata(&self.reserve).is_ok_and(|m| m.len() == RESERVE_BYTES) {
            return Ok(());
        }
        let written = (|| {
            let mut file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(0o600)
                .open(&self.reserve)?;
            let block = vec![0u8; 64 * 1024];
            let mut left = RESERVE_BYTES;
            while left > 0 {
                let n = usize::try_from(left.min(block.len() as u64)).unwrap_or(block.len());
                file.write_all(block.get(..n).unwrap_or(&block))?;
                left -= n as u64;
            }
            file.sync_all()
        })();
        if written.is_err() {
            // A partial reserve holds space without promising it: give it back.
            let _ = std::fs::remove_file(&self.reserve);
        }
        written
    }

    /// The disk filled up: free the reserve for audit records and refuse writes.
    pub(super) fn filled(&self) {
        if !self.low.swap(true, Ordering::SeqCst) {
            let freed = std::fs::remove_file(&self.reserve);
            self.releases.fetch_add(1, Ordering::SeqCst);
            tracing::error!(freed = freed.is_ok(),
                "the database's disk is full: writes are refused; reads and their audit records use the reserve");
        }
    }

    /// While low, looks at the free space (at most once per [`RECHECK`]) and, when twice the
    /// reserve is free, writes the reserve back and lets writes through again.
    fn recover(&self) {
        if !self.low.load(Ordering::SeqCst) {
            return;
        }
        {
            let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
            if checked.elapsed() < RECHECK {
                return;
            }
            *checked = Instant::now();
        }
        let dir = self
            .reserve
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let free = match rustix::fs::statvfs(dir) {
            Ok(s) => s.f_bavail.saturating_mul(s.f_frsize),
            Err(e) => {
                tracing::warn!(error = %e, "free space of the database's disk unknown");
                return;
            }
        };
        if free < 2 * RESERVE_BYTES {
            return;
        }
        match self.write_reserve() {
            Ok(()) => {
                self.low.store(false, Ordering::SeqCst);
                tracing::warn!("space returned on the database's disk: writes accepted again");
            }
            Err(e) => tracing::warn!(error = %e, "the disk reserve could not be written back yet"),
        }
    }

    /// Whether writes are refused now (the disk is low), after looking again at the free space
    /// when it is due ([`RECHECK`]). For the audit writer, which writes secret versions in its
    /// own transactions ([`crate::store::AuditAppender::append_with`]).
    pub(super) fn is_low(&self) -> bool {
        self.recover();
        self.low.load(Ordering::SeqCst)
    }

    /// Before a call on the request connection: recovers if it can, then makes the
    /// connection read-only while low and writable otherwise.
    pub(super) fn prepare(&self, conn: &Connection) -> Result<(), Error> {
        self.recover();
        let low = self.low.load(Ordering::SeqCst);
        if self.read_only.load(Ordering::SeqCst) != low {
            conn.pragma_update(None, "query_only", low)?;
            self.read_only.store(low, Ordering::SeqCst);
        }
        Ok(())
    }

    /// After a call: a full disk turns the store low; a write refused by the read-only
    /// connection is reported as the full disk it is.
    pub(super) fn after<T>(&self, result: Result<T, Error>) -> Result<T, StoreError> {
        let refused = matches!(&result, Err(Error::Sql(e))
            if code(e) == Some(rusqlite::ffi::ErrorCode::ReadOnly)
                && self.read_only.load(Ordering::SeqCst));
        match result.map_err(Error::into_store) {
            Err(StoreError::Unavailable(e)) if refused => Err(StoreError::Full(e)),
            Err(e @ StoreError::Full(_)) => {
                self.filled();
                Err(e)
            }
            other => other,
        }
    }

    /// A mark to hand to [`Space::released_since`], taken before an audit writer call.
    pub(super) fn mark(&self) -> u64 {
        self.releases.load(Ordering::SeqCst)
    }

    /// After an audit writer call that began at `mark`: a full disk turns the store low.
    /// Returns whether the reserve was released since `mark` (by this failure or by a change
    /// that failed meanwhile): then the record has room it did not have, and is worth one more
    /// try. An audit record is never what a full disk takes first: if a request's final
    /// record were refused after its change committed, the change would stand while its
    /// caller was told it failed.
    pub(super) fn released_since<T>(&self, mark: u64, result: &Result<T, StoreError>) -> bool {
        if !matches!(result, Err(StoreError::Full(_))) {
            return false;
        }
        self.filled();
        self.mark() != mark
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> Result<(), StoreError> {
        Err(StoreError::Full("disk full".into()))
    }

    #[test]
    fn an_audit_write_is_retried_only_when_the_reserve_was_released_since_it_began() {
        let dir = tempfile::tempdir().unwrap();
        let space = Space::open(&dir.path().join("custodian.db"));
        assert_eq!(
            std::fs::metadata(&space.reserve).unwrap().len(),
            RESERVE_BYTES
        );

        // Anything but a full disk is not retried and leaves the reserve.
        let mark = space.mark();
        assert!(!space.released_since(mark, &Ok(())));
        assert!(!space.released_since(mark, &Err::<(), _>(StoreError::Unavailable("busy".into()))));
        assert!(space.reserve.exists());

        // The first full disk releases the reserve: the write has room now.
        assert!(space.released_since(mark, &full()));
        assert!(!space.reserve.exists());
        assert!(space.low.load(Ordering::SeqCst));

        // A write that began after the release already had that room: not retried.
        let later = space.mark();
        assert!(!space.released_since(later, &full()));

        // A write that began before a release made by someone else is retried.
        space.low.store(false, Ordering::SeqCst);
        let before = space.mark();
        space.filled();
        assert!(space.released_since(before, &full()));
    }
}
