//! The one owner of the ESAPI [`Context`]: a dedicated thread fed by a bounded channel.
//!
//! # Why a dedicated thread
//!
//! - Every ESAPI call needs `&mut Context`, and the context holds raw pointers into the TSS
//!   library, so it is neither `Send` nor `Sync`: it must be created, used and dropped on one
//!   thread. A thread that owns it outright needs no lock and can't be poisoned.
//! - The TPM (swtpm, and many hardware TPMs without a resource manager) holds only 3 loaded
//!   objects. One owner serialises every operation. The storage primary takes one slot; the
//!   version key of the last HMAC stays loaded in a second, so a run of HMACs under one key
//!   version loads it once ([`Connection::hmac_key`]); every other object an operation loads is
//!   flushed before it returns, and an operation that needs two slots of its own releases the
//!   kept key first. At most three objects are ever loaded and `TPM_RC_OBJECT_MEMORY` can't
//!   happen.
//! - Callers await a oneshot reply; nothing blocks a tokio worker, and the queue is bounded
//!   ([`QUEUE_DEPTH`]) so a flood of requests is answered `Busy` instead of piling up.
//!
//! # Reconnection
//!
//! When an operation fails with a connection-class error ([`super::error::is_connection_failure`])
//! the context is dropped. The next call reconnects: a fresh TCTI, `TPM2_Startup(CLEAR)`
//! (tolerating `TPM_RC_INITIALIZE`, i.e. already started), a flush of every stale transient
//! object, and the storage primary recreated from its fixed template (the same key, since the
//! owner seed did not change). Failed reconnects back off exponentially from
//! [`RECONNECT_BACKOFF_MIN`] to [`RECONNECT_BACKOFF_MAX`]; inside the back-off window calls fail
//! fast with `Unavailable`. An operation that fails because a *previously working* connection
//! broke is retried once on a fresh connection: every operation is safe to repeat.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use tss_esapi::constants::response_code::Tss2ResponseCodeKind;
use tss_esapi::constants::{CapabilityType, StartupType};
use tss_esapi::handles::{KeyHandle, ObjectHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::resource_handles::{Hierarchy, Provision};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{Auth, CapabilityData};
use tss_esapi::{Context, TctiNameConf};
use zeroize::Zeroizing;

use super::error::{classify, tpm_kind, Stage};
use super::keys::storage_primary_template;
use super::{TpmConfig, TpmKeyBlob};
use crate::backend::BackendError;

/// Requests that may wait for the owner before callers are told `Busy`.
pub const QUEUE_DEPTH: usize = 256;
/// First delay after a failed reconnect.
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest delay between reconnect attempts.
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long a caller waits for its operation before answering `Unavailable` (a hung TPM or
/// TCTI must not hang requests). Generous: hardware TPMs take seconds for key generation.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// First handle of the transient range (TPM 2.0 Part 2, `TPM_HT_TRANSIENT`).
const TRANSIENT_FIRST: u32 = 0x8000_0000;

/// A live connection: the ESAPI context, the storage primary it loaded, and the version key
/// the last HMAC used, still loaded.
pub struct Connection {
    /// The ESAPI context; only the owner thread ever touches it.
    pub ctx: Context,
    /// The storage primary (transient, or the configured persistent handle).
    pub primary: KeyHandle,
    /// The version key of the last HMAC, kept loaded for the next ([`Connection::hmac_key`]).
    /// It takes the second of the TPM's three object slots; an operation that needs two slots
    /// of its own (TPM2_Certify: the attestation key and the version key) releases it first.
    loaded: Option<(TpmKeyBlob, KeyHandle)>,
    /// Version keys loaded for HMACs since start-up (shared with [`ContextHandle::loads`]).
    loads: Arc<AtomicU64>,
}

impl Connection {
    /// The handle of the version key in `blob`: the one still loaded when it is the same key,
    /// else the blob loaded now in place of the one before (flushed).
    ///
    /// # Errors
    /// `KeyBlobRejected(label)` when the TPM refuses the blob; classified TSS errors.
    pub fn hmac_key(&mut self, blob: &TpmKeyBlob, label: &str) -> Result<KeyHandle, BackendError> {
        if let Some((held, handle)) = &self.loaded {
            if held == blob {
                return Ok(*handle);
            }
        }
        // Another key is kept: flush it first, so the primary and one key are all that is
        // loaded.
        self.release_loaded()?;
        let handle = super::keys::load(&mut self.ctx, self.primary, blob, label)?;
        self.loads.fetch_add(1, Ordering::Relaxed);
        self.loaded = Some((blob.clone(), handle));
        Ok(handle)
    }

    /// Whether the version key in `blob` is the one kept loaded.
    pub fn holds(&self, blob: &TpmKeyBlob) -> bool {
        matches!(&self.loaded, Some((held, _)) if held == blob)
    }

    /// Flushes the kept version key if it is the one in `blob`.
    ///
    /// # Errors
    /// Classified TSS errors of the flush.
    pub fn release_if(&mut self, blob: &TpmKeyBlob) -> Result<(), BackendError> {
        if self.holds(blob) {
            self.release_loaded()
        } else {
            Ok(())
        }
    }

    /// Flushes the kept version key, if any, freeing its slot.
    ///
    /// # Errors
    /// Classified TSS errors of the flush.
    pub fn release_loaded(&mut self) -> Result<(), BackendError> {
        match self.loaded.take() {
            Some((_, handle)) => self
                .ctx
                .flush_context(handle.into())
                .map_err(|e| classify(e, Stage::Other)),
            None => Ok(()),
        }
    }
}

/// A unit of work for the owner. It receives the live connection (or the reason there is none).
type Job = Box<dyn FnOnce(&mut Owner) + Send>;

/// What the owner thread keeps between jobs.
pub struct Owner {
    tcti: TctiNameConf,
    owner_auth: Option<Zeroizing<Vec<u8>>>,
    persistent: Option<u32>,
    conn: Option<Connection>,
    failures: u32,
    next_attempt: Option<Instant>,
    reconnects: Arc<AtomicU64>,
    loads: Arc<AtomicU64>,
}

/// The caller's side: a sender into the owner's queue.
pub struct ContextHandle {
    tx: SyncSender<Job>,
    reconnects: Arc<AtomicU64>,
    loads: Arc<AtomicU64>,
}

impl ContextHandle {
    /// Starts the owner thread and connects once; fails if the first connection fails.
    ///
    /// # Errors
    /// `Open` for a malformed TCTI string or when the thread can't start; the classified error
    /// of the first connection otherwise (`Unavailable` when the device can't be reached).
    pub fn spawn(config: &TpmConfig) -> Result<Self, BackendError> {
        let tcti = TctiNameConf::from_str(&config.tcti)
            .map_err(|e| BackendError::Open(format!("invalid TCTI {:?}: {e}", config.tcti)))?;
        let owner_auth = config
            .owner_auth
            .as_ref()
            .map(|a| Zeroizing::new(a.expose_secret().as_bytes().to_vec()));
        let reconnects = Arc::new(AtomicU64::new(0));
        let loads = Arc::new(AtomicU64::new(0));
        let mut owner = Owner {
            tcti,
            owner_auth,
            persistent: config.primary_persistent_handle,
            conn: None,
            failures: 0,
            next_attempt: None,
            reconnects: Arc::clone(&reconnects),
            loads: Arc::clone(&loads),
        };
        let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE_DEPTH);
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), BackendError>>();
        std::thread::Builder::new()
            .name("tpm-owner".to_owned())
            .spawn(move || {
                let first = owner.connect().map(|_| ());
                let ok = first.is_ok();
                let _ = ready_tx.send(first);
                if ok {
                    owner.serve(rx);
                }
            })
            .map_err(|e| BackendError::Open(format!("cannot start the TPM owner thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self {
                tx,
                reconnects,
                loads,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(BackendError::Invariant(
                "the TPM owner thread ended before reporting",
            )),
        }
    }

    /// How many times a version key was loaded for an HMAC (not found still loaded).
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// How many times the owner reconnected after losing the device.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// Runs `op` on the owner with a live connection and awaits its result.
    ///
    /// `op` may run twice (see the module docs), so it must be safe to repeat.
    ///
    /// # Errors
    /// `Busy` when the queue is full; `Unavailable` when the device can't be reached or the
    /// operation takes longer than [`CALL_TIMEOUT`]; whatever `op` returns.
    pub async fn call<T, F>(&self, mut op: F) -> Result<T, BackendError>
    where
        T: Send + 'static,
        F: FnMut(&mut Connection) -> Result<T, BackendError> + Send + 'static,
    {
        let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |owner: &mut Owner| {
            let result = owner.run(&mut op);
            // The caller may have gone away (cancelled request); nothing to do then.
            let _ = reply_tx.send(result);
        });
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(BackendError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(BackendError::Unavailable),
        }
        match tokio::time::timeout(CALL_TIMEOUT, reply_rx).await {
            Ok(reply) => reply.unwrap_or(Err(BackendError::Unavailable)),
            Err(_) => {
                tracing::error!(backend = "tpm", "TPM operation timed out");
                Err(BackendError::Unavailable)
            }
        }
    }
}

impl Owner {
    /// Runs jobs until every sender is gone, then drops the context (closing the TCTI).
    fn serve(mut self, rx: Receiver<Job>) {
        while let Ok(job) = rx.recv() {
            job(&mut self);
        }
        tracing::debug!(backend = "tpm", "TPM owner thread stopping");
    }

    /// Runs `op`, retrying once on a fresh connection if a working one broke under it.
    fn run<T>(
        &mut self,
        op: &mut dyn FnMut(&mut Connection) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        let had_connection = self.conn.is_some();
        match self.attempt(op) {
            Err(BackendError::Unavailable) if had_connection => {
                tracing::warn!(backend = "tpm", "TPM connection lost; reconnecting once");
                self.attempt(op)
            }
            other => other,
        }
    }

    fn attempt<T>(
        &mut self,
        op: &mut dyn FnMut(&mut Connection) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        let conn = self.connect()?;
        let result = op(conn);
        if matches!(result, Err(BackendError::Unavailable)) {
            // Dropping the context closes the TCTI; stale transient objects are flushed on the
            // next connect.
            self.conn = None;
        }
        result
    }

    /// The live connection, connecting first if there is none (subject to back-off).
    fn connect(&mut self) -> Result<&mut Connection, BackendError> {
        if self.conn.is_none() {
            if let Some(at) = self.next_attempt {
                if Instant::now() < at {
                    return Err(BackendError::Unavailable);
                }
            }
            match self.open_connection() {
                Ok(conn) => {
                    if self.failures > 0 || self.next_attempt.is_some() {
                        self.reconnects.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(backend = "tpm", "TPM connection re-established");
                    }
                    self.failures = 0;
                    self.next_attempt = None;
                    self.conn = Some(conn);
                }
                Err(e) => {
                    let shift = self.failures.min(16);
                    let delay = RECONNECT_BACKOFF_MIN
                        .saturating_mul(1u32 << shift)
                        .min(RECONNECT_BACKOFF_MAX);
                    self.failures = self.failures.saturating_add(1);
                    self.next_attempt = Some(Instant::now() + delay);
                    tracing::warn!(backend = "tpm", error = %e, retry_in_ms = delay.as_millis() as u64,
                        "cannot connect to the TPM");
                    return Err(e);
                }
            }
        }
        self.conn.as_mut().ok_or(BackendError::Invariant(
            "TPM connection missing after connect",
        ))
    }

    /// Connects, starts the TPM if needed, clears stale transients, and makes the primary.
    fn open_connection(&mut self) -> Result<Connection, BackendError> {
        let mut ctx = Context::new(self.tcti.clone()).map_err(|e| classify(e, Stage::Other))?;
        match ctx.startup(StartupType::Clear) {
            Ok(()) => {}
            // TPM_RC_INITIALIZE: Startup was already run (e.g. swtpm --flags startup-clear).
            Err(e) if tpm_kind(&e) == Some(Tss2ResponseCodeKind::Initialize) => {}
            Err(e) => return Err(classify(e, Stage::Other)),
        }
        flush_transients(&mut ctx)?;
        if let Some(auth) = &self.owner_auth {
            let auth = Auth::try_from(auth.to_vec()).map_err(|_| {
                BackendError::Open("the owner auth value is longer than the TPM allows".to_owned())
            })?;
            ctx.tr_set_auth(ObjectHandle::Owner, auth)
                .map_err(|e| classify(e, Stage::Other))?;
        }
        let primary = match self.persistent {
            None => create_primary(&mut ctx)?,
            Some(handle) => persistent_primary(&mut ctx, handle)?,
        };
        Ok(Connection {
            ctx,
            primary,
            loaded: None,
            loads: Arc::clone(&self.loads),
        })
    }
}

/// Flushes every transient object left in the TPM (by an earlier connection of ours).
///
/// Without a resource manager, transient objects outlive the connection that loaded them; this
/// owner is the only user of the TPM, so anything transient at connect time is a leftover.
/// With `/dev/tpmrm0` the list is empty: the kernel's resource manager virtualises handles.
fn flush_transients(ctx: &mut Context) -> Result<(), BackendError> {
    let (data, _more) = ctx
        .get_capability(CapabilityType::Handles, TRANSIENT_FIRST, 64)
        .map_err(|e| classify(e, Stage::Other))?;
    let CapabilityData::Handles(handles) = data else {
        return Ok(());
    };
    for handle in handles.iter() {
        if let TpmHandle::Transient(_) = handle {
            let object = ctx
                .tr_from_tpm_public(*handle)
                .map_err(|e| classify(e, Stage::Other))?;
            ctx.flush_context(object)
                .map_err(|e| classify(e, Stage::Other))?;
            tracing::debug!(backend = "tpm", "flushed a stale transient object");
        }
    }
    Ok(())
}

/// Creates the storage primary from its fixed template under the owner hierarchy.
fn create_primary(ctx: &mut Context) -> Result<KeyHandle, BackendError> {
    let template = storage_primary_template()?;
    let created = ctx
        .execute_with_session(Some(AuthSession::Password), |ctx| {
            ctx.create_primary(Hierarchy::Owner, template, None, None, None, None)
        })
        .map_err(|e| classify(e, Stage::Other))?;
    Ok(created.key_handle)
}

/// Uses the storage primary persisted at `handle`, persisting it there first if absent.
fn persistent_primary(ctx: &mut Context, handle: u32) -> Result<KeyHandle, BackendError> {
    let tpm_handle = PersistentTpmHandle::new(handle)
        .map_err(|_| BackendError::Open(format!("{handle:#x} is not a persistent handle")))?;
    if let Ok(object) = ctx.tr_from_tpm_public(TpmHandle::Persistent(tpm_handle)) {
        let (public, _, _) = ctx
            .read_public(object.into())
            .map_err(|e| classify(e, Stage::Other))?;
        super::keys::check_storage_primary(&public, handle)?;
        return Ok(object.into());
    }
    let transient = create_primary(ctx)?;
    let persisted = ctx
        .execute_with_session(Some(AuthSession::Password), |ctx| {
            ctx.evict_control(
                Provision::Owner,
                transient.into(),
                Persistent::Persistent(tpm_handle),
            )
        })
        .map_err(|e| classify(e, Stage::Other));
    ctx.flush_context(transient.into())
        .map_err(|e| classify(e, Stage::Other))?;
    let persisted = persisted?;
    tracing::info!(backend = "tpm", handle = %format!("{handle:#x}"), "storage primary persisted");
    Ok(persisted.into())
}
