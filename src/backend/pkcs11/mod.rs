//! The PKCS#11 backend (cryptoki): SoftHSM2 in development, a vendor HSM in production.
//!
//! - One module instance ([`device::Device`]) per process at a time, replaced as a whole when it
//!   must be re-initialised.
//! - A bounded session pool: a semaphore with one permit per session bounds the device calls in
//!   flight; each call runs on the blocking pool with a session taken from the instance.
//! - Root key handles are indexed once when the instance opens and cached; the request path
//!   never calls `C_FindObjects` for a key this instance has seen.
//! - Errors are classified by [`error::classify`]; fatal ones mark the backend down (503) and
//!   wake a supervisor that re-opens the module with exponential back-off.

pub mod custody;
pub mod device;
pub mod encrypt;
pub mod error;
pub mod lifecycle;
pub mod provision;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use tokio::sync::{Notify, Semaphore};
use zeroize::Zeroizing;

use crate::backend::lane::{DeviceLane, Expect};
use crate::backend::{
    AuditSigner, BackendError, DeviceDescription, DeviceHealth, KeyBackend, ObjectFacts, Reseal,
    Resealed, Sealed,
};
use crate::config::{Pkcs11Config, RandomSource};
use crate::domain::{BackendKind, RootKeyRef};
use crate::format::blob::GCM_IV_LEN;
use crate::secret::{Pin, SecretBytes};
use crate::telemetry::run_blocking;

pub use device::{Device, TokenFacts, NO_TOKEN, TOKEN_UNREADABLE};
use encrypt::GcmError;
use error::Class;

/// How long a request waits for a free session before it is answered `503 busy`.
const SESSION_WAIT: Duration = Duration::from_secs(10);
/// How long the supervisor waits for in-flight calls to finish before finalising a dead module.
const DRAIN_WAIT: Duration = Duration::from_secs(10);

/// Whether the module instance is usable.
enum State {
    Up(Arc<Device>),
    Down { reason: &'static str },
}

struct Inner {
    config: Pkcs11Config,
    pin: Pin,
    permits: Arc<Semaphore>,
    state: RwLock<State>,
    /// Generation of the next instance to open.
    next_generation: AtomicU64,
    reinitialisations: AtomicU64,
    wake: Notify,
    /// Session waits, for metrics: operations that found every session busy, the nanoseconds
    /// they waited, and the waits that ran out.
    waits: AtomicU64,
    wait_nanos: AtomicU64,
    wait_timeouts: AtomicU64,
    /// The threads the device calls run on, as many as there are sessions (decision 0029).
    lane: DeviceLane,
}

/// A failure inside an operation, before classification.
enum OpFailure {
    /// The module said no; classified by [`error::classify`].
    Module(CkError),
    /// Already a backend error (e.g. a missing root key).
    Backend(BackendError),
}

impl From<CkError> for OpFailure {
    fn from(e: CkError) -> Self {
        Self::Module(e)
    }
}

impl From<GcmError> for OpFailure {
    fn from(e: GcmError) -> Self {
        match e {
            GcmError::Device(e) => Self::Module(e),
            other @ GcmError::OutputLength { .. } => {
                Self::Backend(BackendError::Device(Box::new(other)))
            }
        }
    }
}

impl From<BackendError> for OpFailure {
    fn from(e: BackendError) -> Self {
        Self::Backend(e)
    }
}

/// How a per-request module error reads to the caller of one operation.
#[derive(Clone, Copy)]
enum RequestErrors {
    /// Any per-request failure is a device failure.
    DeviceFault,
    /// A per-request failure of a decrypt is an authentication failure of the ciphertext.
    Authentication,
}

/// The PKCS#11 backend.
#[derive(Clone)]
pub struct Pkcs11Backend {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pkcs11Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Backend")
            .field("module", &self.inner.config.module)
            .field("token", &self.inner.config.token)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Backend {
    /// Opens the token (refusing to start when it or the configured mechanism is missing) and
    /// starts the re-initialisation supervisor.
    ///
    /// # Errors
    /// `Open` naming the failing step, `MissingMechanism` naming the mechanism.
    pub async fn start(config: Pkcs11Config) -> Result<Self, BackendError> {
        let pin = config
            .pin
            .read()
            .map_err(|e| BackendError::Open(e.to_string()))?;
        let (cfg, p) = (config.clone(), pin.clone());
        let device = run_blocking(move || Device::open(&cfg, &p, 0))
            .await
            .map_err(|e| BackendError::Device(Box::new(e)))??;
        let inner = Arc::new(Inner {
            permits: Arc::new(Semaphore::new(config.sessions.get())),
            lane: DeviceLane::new("custodian-p11", config.sessions.get()),
            config,
            pin,
            state: RwLock::new(State::Up(Arc::new(device))),
            next_generation: AtomicU64::new(1),
            reinitialisations: AtomicU64::new(0),
            wake: Notify::new(),
            waits: AtomicU64::new(0),
            wait_nanos: AtomicU64::new(0),
            wait_timeouts: AtomicU64::new(0),
        });
        tokio::spawn(supervise(Arc::clone(&inner)));
        Ok(Self { inner })
    }

    /// Non-secret facts about the token in use, if it is up.
    pub fn token_facts(&self) -> Option<TokenFacts> {
        match &*self.inner.state.read().ok()? {
            State::Up(d) => Some(d.token.clone()),
            State::Down { .. } => None,
        }
    }

    fn current(&self) -> Result<Arc<Device>, BackendError> {
        let state = self
            .inner
            .state
            .read()
            .map_err(|_| BackendError::Invariant("backend state lock poisoned"))?;
        match &*state {
            State::Up(d) => Ok(Arc::clone(d)),
            State::Down { .. } => Err(BackendError::Unavailable),
        }
    }

    /// Waits up to [`SESSION_WAIT`] for a session permit, counting the wait for metrics.
    async fn wait_for_session(&self) -> Result<tokio::sync::OwnedSemaphorePermit, BackendError> {
        let started = std::time::Instant::now();
        let waited = tokio::time::timeout(
            SESSION_WAIT,
            Arc::clone(&self.inner.permits).acquire_owned(),
        )
        .await;
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.inner.waits.fetch_add(1, Ordering::Relaxed);
        self.inner.wait_nanos.fetch_add(nanos, Ordering::Relaxed);
        match waited {
            Ok(permit) => permit.map_err(|_| BackendError::Unavailable),
            Err(_) => {
                self.inner.wait_timeouts.fetch_add(1, Ordering::Relaxed);
                Err(BackendError::Busy)
            }
        }
    }

    /// Runs `op` (one or two device operations) with a pooled session on the device lane, then
    /// classifies any failure.
    async fn with_session<T, F>(&self, errors: RequestErrors, op: F) -> Result<T, BackendError>
    where
        T: Send + 'static,
        F: Fn(&Device, &Session) -> Result<T, OpFailure> + Send + 'static,
    {
        self.with_session_as(Expect::Short, errors, op).await
    }

    /// [`Pkcs11Backend::with_session`] for a call expected to take as long as `expect` says.
    async fn with_session_as<T, F>(
        &self,
        expect: Expect,
        errors: RequestErrors,
        op: F,
    ) -> Result<T, BackendError>
    where
        T: Send + 'static,
        F: Fn(&Device, &Session) -> Result<T, OpFailure> + Send + 'static,
    {
        // Fail fast while down, without queueing for a permit.
        self.current()?;
        let permit = match Arc::clone(&self.inner.permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => self.wait_for_session().await?,
        };
        let device = self.current()?;
        let inner = Arc::clone(&self.inner);
        self.inner.lane.run_as(expect, move || {
            let session = device.take_session()?;
            let mut result = op(&device, &session);
            if matches!(&result, Err(OpFailure::Module(e)) if error::classify(e) == Class::StaleHandle)
            {
                // Another node destroyed an object whose handle was cached: find it again.
                tracing::info!("a cached PKCS#11 object handle went stale; finding the object again by CKA_ID");
                device.forget_all();
                result = op(&device, &session);
            }
            if matches!(&result, Err(OpFailure::Backend(BackendError::RootKeyMissing(_)))) {
                // Not found by CKA_ID: either another node destroyed it, or the token itself went
                // away (a call that finds the cache just emptied by another lands here without a
                // stale handle of its own). Only a healthy device makes it the former.
                if let Err(probe) = device.confirm_health() {
                    tracing::error!(error = %probe, "the token is gone; re-initialising");
                    device.return_session(session);
                    mark_down(&inner, device.generation, "device_error");
                    drop(permit);
                    return Err(BackendError::Unavailable);
                }
            }
            device.return_session(session);
            let result =
                result.map_err(|failure| classify_failure(&inner, &device, failure, errors));
            drop(permit);
            result
        })
        .await
        .map_err(|e| BackendError::Device(Box::new(e)))?
    }
}

/// Decides what a failed operation means for the caller and for the device.
fn classify_failure(
    inner: &Inner,
    device: &Device,
    failure: OpFailure,
    errors: RequestErrors,
) -> BackendError {
    let e = match failure {
        OpFailure::Backend(e) => return e,
        OpFailure::Module(e) => e,
    };
    let function = error::function_of(&e);
    let class = match error::classify(&e) {
        Class::Ambiguous => match device.confirm_health() {
            Ok(()) => Class::Request,
            Err(probe) => {
                tracing::warn!(error = %e, probe = %probe, "device health probe failed after an ambiguous error");
                Class::Fatal
            }
        },
        other => other,
    };
    match class {
        Class::Fatal => {
            tracing::error!(error = %e, ?function, generation = device.generation, "PKCS#11 module failed; re-initialising");
            mark_down(inner, device.generation, "device_error");
            BackendError::Unavailable
        }
        Class::Request | Class::Ambiguous | Class::StaleHandle => match errors {
            RequestErrors::Authentication => BackendError::AuthenticationFailed,
            RequestErrors::DeviceFault => BackendError::Device(Box::new(e)),
        },
    }
}

/// Marks instance `generation` down and wakes the supervisor; a report about an instance that
/// was already replaced is ignored.
fn mark_down(inner: &Inner, generation: u64, reason: &'static str) {
    let Ok(mut state) = inner.state.write() else {
        return;
    };
    if let State::Up(d) = &*state {
        if d.generation == generation {
            *state = State::Down { reason };
            inner.wake.notify_one();
        }
    }
}

/// Re-opens the module after a fatal error, with exponential back-off, until it is back.
async fn supervise(inner: Arc<Inner>) {
    loop {
        inner.wake.notified().await;
        // Wait until every in-flight call has returned its session before finalising.
        let all = u32::try_from(inner.config.sessions.get()).unwrap_or(u32::MAX);
        let drained = tokio::time::timeout(
            DRAIN_WAIT,
            Arc::clone(&inner.permits).acquire_many_owned(all),
        )
        .await;
        let old = match inner.state.write() {
            Ok(mut state) => match std::mem::replace(
                &mut *state,
                State::Down {
                    reason: "reinitialising",
                },
            ) {
                State::Up(d) => Some(d),
                State::Down { .. } => None,
            },
            Err(_) => None,
        };
        match old.map(Arc::try_unwrap) {
            Some(Ok(device)) => run_blocking(move || device.shut_down()).await.unwrap_or(()),
            Some(Err(_)) => tracing::warn!(
                "a call still holds the failed module instance; re-initialising anyway"
            ),
            None => {}
        }
        let mut backoff = inner.config.reinit_backoff_initial;
        loop {
            let generation = inner.next_generation.fetch_add(1, Ordering::Relaxed);
            let (cfg, pin) = (inner.config.clone(), inner.pin.clone());
            let opened = run_blocking(move || Device::open(&cfg, &pin, generation)).await;
            match opened {
                Ok(Ok(device)) => {
                    if let Ok(mut state) = inner.state.write() {
                        *state = State::Up(Arc::new(device));
                    }
                    inner.reinitialisations.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(generation, "PKCS#11 module re-initialised");
                    break;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "PKCS#11 re-initialisation failed")
                }
                Err(e) => tracing::warn!(error = %e, "PKCS#11 re-initialisation task failed"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(inner.config.reinit_backoff_max);
        }
        drop(drained);
    }
}

/// The cached handle of `root`, or `RootKeyMissing`.
fn root_handle(
    device: &Device,
    session: &Session,
    root: &RootKeyRef,
) -> Result<ObjectHandle, OpFailure> {
    device.handle(session, root)?.ok_or_else(|| {
        // The store says this version exists; the token does not have it. An operator must look.
        tracing::error!(label = %root.label(), "custody anomaly: root key missing from the token");
        OpFailure::Backend(BackendError::RootKeyMissing(root.label()))
    })
}

/// What one item's failure inside a many-item operation means: `Ok` with the item's own error
/// when the device is fine (the others go on), `Err` with the failure when the whole operation
/// must stop for [`Pkcs11Backend::with_session`] to handle (a dead module, a stale handle).
fn item_failure(
    device: &Device,
    failure: OpFailure,
    errors: RequestErrors,
) -> Result<BackendError, OpFailure> {
    let e = match failure {
        OpFailure::Backend(e) => return Ok(e),
        OpFailure::Module(e) => e,
    };
    let request = match error::classify(&e) {
        Class::Request => true,
        Class::Ambiguous => device.confirm_health().is_ok(),
        Class::Fatal | Class::StaleHandle => false,
    };
    if !request {
        return Err(OpFailure::Module(e));
    }
    Ok(match errors {
        RequestErrors::Authentication => BackendError::AuthenticationFailed,
        RequestErrors::DeviceFault => BackendError::Device(Box::new(e)),
    })
}

/// Opens `item` under `from` and seals what it holds under `to` with a fresh IV, in `session`.
fn reseal_one(
    device: &Device,
    session: &Session,
    (from, to): (ObjectHandle, ObjectHandle),
    iv_source: RandomSource,
    item: &Reseal,
) -> Result<Result<Sealed, BackendError>, OpFailure> {
    let plaintext =
        match encrypt::gcm_open(session, from, item.iv, &item.open_aad, &item.ciphertext) {
            Ok(p) => p,
            Err(e) => {
                return item_failure(device, e.into(), RequestErrors::Authentication).map(Err)
            }
        };
    let sealed = fresh_iv(iv_source, session).and_then(|iv| {
        let ciphertext = encrypt::gcm_seal_with_iv(session, to, iv, &item.seal_aad, &plaintext)?;
        Ok(Sealed { iv, ciphertext })
    });
    match sealed {
        Ok(s) => Ok(Ok(s)),
        Err(f) => item_failure(device, f, RequestErrors::DeviceFault).map(Err),
    }
}

/// The most random bytes one [`KeyBackend::random`] call may ask of the token.
pub const MAX_RANDOM: usize = 128 * 1024;

/// A fresh IV from the configured source.
fn fresh_iv(source: RandomSource, session: &Session) -> Result<[u8; GCM_IV_LEN], OpFailure> {
    let mut iv = [0u8; GCM_IV_LEN];
    fill_random(source, session, &mut iv)?;
    Ok(iv)
}

fn fill_random(source: RandomSource, session: &Session, buf: &mut [u8]) -> Result<(), OpFailure> {
    match source {
        RandomSource::DeviceRng => session.generate_random_slice(buf)?,
        RandomSource::Host => getrandom::getrandom(buf)
            .map_err(|e| OpFailure::Backend(BackendError::Device(Box::new(e))))?,
    }
    Ok(())
}

#[async_trait]
impl KeyBackend for Pkcs11Backend {
    fn kind(&self) -> BackendKind {
        BackendKind::Pkcs11
    }

    fn algorithm(&self) -> crate::domain::Algorithm {
        crate::domain::Algorithm::Aes256GcmDevice
    }

    async fn create_root_key(
        &self,
        root: &RootKeyRef,
    ) -> Result<crate::domain::RootMaterial, BackendError> {
        let root = root.clone();
        self.with_session(RequestErrors::DeviceFault, move |device, session| {
            let handle = lifecycle::generate_root_key(session, &root)?;
            // From here on, any failure destroys the new object again: nothing half-made stays.
            let verdict = match lifecycle::read_custody_attributes(session, handle) {
                Ok(attrs) if attrs.satisfies_custody() => Ok(()),
                Ok(_) => Err(OpFailure::Backend(BackendError::Invariant(
                    "the token created a root key without the custody attributes",
                ))),
                Err(e) => Err(OpFailure::Module(e)),
            };
            if let Err(failure) = verdict {
                if let Err(e) = session.destroy_object(handle) {
                    tracing::error!(label = %root.label(), error = %e, "could not destroy a root key that failed its read-back: orphaned device object");
                }
                return Err(failure);
            }
            device.remember(&root, handle);
            tracing::info!(label = %root.label(), "root key generated in the token");
            Ok(crate::domain::RootMaterial::default())
        })
        .await
    }

    async fn destroy_root_key(&self, root: &RootKeyRef) -> Result<(), BackendError> {
        let root = root.clone();
        self.with_session(RequestErrors::DeviceFault, move |device, session| {
            let handle = root_handle(device, session, &root)?;
            session.destroy_object(handle)?;
            device.forget(&root);
            tracing::info!(label = %root.label(), "root key destroyed in the token");
            Ok(())
        })
        .await
    }

    async fn seal(
        &self,
        root: &RootKeyRef,
        aad: Vec<u8>,
        plaintext: SecretBytes,
    ) -> Result<Sealed, BackendError> {
        let root = root.clone();
        let iv_source = self.inner.config.iv_source;
        self.with_session(RequestErrors::DeviceFault, move |device, session| {
            let handle = root_handle(device, session, &root)?;
            let iv = fresh_iv(iv_source, session)?;
            let ciphertext =
                encrypt::gcm_seal_with_iv(session, handle, iv, &aad, plaintext.expose_secret())?;
            Ok(Sealed { iv, ciphertext })
        })
        .await
    }

    async fn generate_and_seal(
        &self,
        root: &RootKeyRef,
        aad: Vec<u8>,
        len: usize,
    ) -> Result<(SecretBytes, Sealed), BackendError> {
        let root = root.clone();
        let (iv_source, key_source) = (
            self.inner.config.iv_source,
            self.inner.config.data_key_source,
        );
        self.with_session(RequestErrors::DeviceFault, move |device, session| {
            let handle = root_handle(device, session, &root)?;
            let mut data_key = Zeroizing::new(vec![0u8; len]);
            fill_random(key_source, session, &mut data_key)?;
            let iv = fresh_iv(iv_source, session)?;
            let ciphertext = encrypt::gcm_seal_with_iv(session, handle, iv, &aad, &data_key)?;
            Ok((SecretBytes::new(data_key), Sealed { iv, ciphertext }))
        })
        .await
    }

    async fn open(
        &self,
        root: &RootKeyRef,
        iv: [u8; 12],
        aad: Vec<u8>,
        ciphertext: Vec<u8>,
    ) -> Result<SecretBytes, BackendError> {
        let root = root.clone();
        self.with_session(RequestErrors::Authentication, move |device, session| {
            let handle = root_handle(device, session, &root)?;
            let plaintext = encrypt::gcm_open(session, handle, iv, &aad, &ciphertext)?;
            Ok(SecretBytes::new(plaintext))
        })
        .await
    }

    /// One session for every item: one hand-off to the device lane for the lot, as a long call
    /// (no short call waits for it).
    async fn reseal(&self, from: &RootKeyRef, to: &RootKeyRef, items: Vec<Reseal>) -> Resealed {
        let (from, to) = (from.clone(), to.clone());
        let iv_source = self.inner.config.iv_source;
        let expect = if items.len() > 1 {
            Expect::Long
        } else {
            Expect::Short
        };
        self.with_session_as(
            expect,
            RequestErrors::DeviceFault,
            move |device, session| {
                let handles = (
                    root_handle(device, session, &from)?,
                    root_handle(device, session, &to)?,
                );
                items
                    .iter()
                    .map(|item| reseal_one(device, session, handles, iv_source, item))
                    .collect()
            },
        )
        .await
    }

    async fn audit_signer(&self) -> Result<Arc<dyn AuditSigner>, BackendError> {
        let signer: Arc<dyn AuditSigner> = custody::Pkcs11Signer::open(self.clone()).await?;
        Ok(signer)
    }

    async fn random(&self, n: usize) -> Result<SecretBytes, BackendError> {
        if n > MAX_RANDOM {
            return Err(BackendError::Invariant("random request above MAX_RANDOM"));
        }
        self.with_session(RequestErrors::DeviceFault, move |_, session| {
            let mut bytes = Zeroizing::new(vec![0u8; n]);
            session.generate_random_slice(&mut bytes)?;
            Ok(SecretBytes::new(bytes))
        })
        .await
    }

    async fn describe(&self) -> Result<DeviceDescription, BackendError> {
        self.with_session(RequestErrors::DeviceFault, |device, _| {
            let info = device.ctx.get_token_info(device.slot)?;
            Ok(DeviceDescription {
                backend: BackendKind::Pkcs11,
                label: info.label().trim_end().to_owned(),
                manufacturer: info.manufacturer_id().trim_end().to_owned(),
                model: info.model().trim_end().to_owned(),
                serial: info.serial_number().trim_end().to_owned(),
                firmware: info.firmware_version().to_string(),
                hardware: info.hardware_version().to_string(),
            })
        })
        .await
    }

    async fn inspect_root_key(
        &self,
        root: &RootKeyRef,
    ) -> Result<Option<ObjectFacts>, BackendError> {
        let id = root.device_id();
        self.with_session(RequestErrors::DeviceFault, move |_, session| {
            let found = custody::find_all(session, cryptoki::object::ObjectClass::SECRET_KEY, &id)?;
            match found.first() {
                None => Ok(None),
                Some(h) => Ok(Some(custody::read_facts(
                    session,
                    *h,
                    found.len(),
                    (cryptoki::object::KeyType::AES, 256),
                )?)),
            }
        })
        .await
    }

    async fn usage(&self) -> crate::backend::DeviceUsage {
        let capacity = self.inner.config.sessions.get() as u64;
        let available = self.inner.permits.available_permits() as u64;
        crate::backend::DeviceUsage {
            sessions: Some(crate::backend::SessionUsage {
                capacity,
                in_use: capacity.saturating_sub(available),
                waits: self.inner.waits.load(Ordering::Relaxed),
                wait_seconds: self.inner.wait_nanos.load(Ordering::Relaxed) as f64 / 1e9,
                timeouts: self.inner.wait_timeouts.load(Ordering::Relaxed),
            }),
            kek_cache: None,
        }
    }

    async fn health(&self) -> DeviceHealth {
        let reinitialisations = self.inner.reinitialisations.load(Ordering::Relaxed);
        let down = |reason| DeviceHealth {
            usable: false,
            reinitialisations,
            reason: Some(reason),
        };
        match self.inner.state.read().as_deref() {
            Ok(State::Down { reason }) => return down(reason),
            Ok(State::Up(_)) => {}
            Err(_) => return down("state_lock_poisoned"),
        }
        // Every session busy means the device is serving requests: do not queue behind them.
        if self.inner.permits.available_permits() == 0 {
            return DeviceHealth {
                usable: true,
                reinitialisations,
                reason: None,
            };
        }
        let probe = self
            .with_session(RequestErrors::DeviceFault, |device, session| {
                let info = session.get_session_info()?;
                if !matches!(
                    info.session_state(),
                    cryptoki::session::SessionState::RwUser
                ) {
                    return Err(CkError::Pkcs11(
                        RvError::UserNotLoggedIn,
                        cryptoki::context::Function::GetSessionInfo,
                    )
                    .into());
                }
                device.ctx.get_token_info(device.slot)?;
                Ok(())
            })
            .await;
        match probe {
            Ok(()) => DeviceHealth {
                usable: true,
                reinitialisations,
                reason: None,
            },
            // Every session busy means the device is serving requests.
            Err(BackendError::Busy) => DeviceHealth {
                usable: true,
                reinitialisations,
                reason: None,
            },
            Err(_) => down("device_error"),
        }
    }
}
