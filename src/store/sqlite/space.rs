//! What the SQLite store does when its disk fills up (`docs/store.md#a-full-disk`).
//!
//! Every request, reads included, writes an audit record before it is answered, so a disk with
//! no byte left would stop reads as well as writes. The store keeps a *reserve*: a file of
//! [`RESERVE_BYTES`] zeros beside the database, written at start-up. The first time SQLite
//! reports the disk full, the store
//!
//! 1. deletes the reserve, so audit records have room again, and
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
use std::sync::atomic::{AtomicBool, Ordering};
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

    /// After an audit writer call: a full disk turns the store low (the record itself failed;
    /// the writer's caller fails closed).
    pub(super) fn after_audit<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if matches!(result, Err(StoreError::Full(_))) {
            self.filled();
        }
        result
    }
}
