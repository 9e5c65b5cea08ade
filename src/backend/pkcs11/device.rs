//! One live instance of the PKCS#11 module: the context, the token's slot, the session pool and
//! the cache of object handles. The backend replaces the whole instance when it re-initialises.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::MechanismType;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;

use crate::backend::BackendError;
use crate::config::{Pkcs11Config, TokenSelector, WrapMechanism};
use crate::domain::RootKeyRef;
use crate::secret::Pin;

/// Non-secret facts about the token, read at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFacts {
    /// `CKA_LABEL` of the token.
    pub label: String,
    /// Manufacturer id.
    pub manufacturer: String,
    /// Model.
    pub model: String,
    /// Serial number.
    pub serial: String,
}

/// A live module instance.
pub struct Device {
    pub(super) ctx: Pkcs11,
    pub(super) slot: Slot,
    pub(super) token: TokenFacts,
    /// Idle sessions. The backend's semaphore guarantees one is here for every permit holder.
    sessions: Mutex<Vec<Session>>,
    /// `CKA_ID` → handle of every root key this instance has seen. Handles are valid for every
    /// session of this instance and are dropped with it.
    handles: RwLock<HashMap<Vec<u8>, ObjectHandle>>,
    /// Which instance this is (0 for the first); errors name it so a stale report about an
    /// instance that was already replaced is ignored.
    pub(super) generation: u64,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("slot", &self.slot.id())
            .field("token", &self.token)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// Mechanisms the configured wrapping needs, with the names used in errors.
fn required_mechanisms(m: WrapMechanism) -> &'static [(MechanismType, &'static str)] {
    match m {
        WrapMechanism::AesGcm => &[
            (MechanismType::AES_KEY_GEN, "CKM_AES_KEY_GEN"),
            (MechanismType::AES_GCM, "CKM_AES_GCM"),
        ],
    }
}

/// How an open that found no matching token begins (start-up retries on it).
pub const NO_TOKEN: &str = "no initialised token matches";

/// How an open begins whose reading of the token list, or whose login, failed with
/// `CKR_GENERAL_ERROR`: SoftHSM2 answers so while another process rewrites the token's file
/// (start-up retries on it, as on [`NO_TOKEN`]; it is not a wrong PIN, so retrying it cannot
/// lock the token).
pub const TOKEN_UNREADABLE: &str = "the token could not be read";

fn open_error(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Open(format!("{what}: {e}"))
}

/// An error reading the slot and token list or logging in: [`TOKEN_UNREADABLE`] for
/// `CKR_GENERAL_ERROR`.
fn list_error(what: &str, e: CkError) -> BackendError {
    match e {
        CkError::Pkcs11(RvError::GeneralError, _) => {
            BackendError::Open(format!("{TOKEN_UNREADABLE} ({what}: {e})"))
        }
        e => open_error(what, e),
    }
}

impl Device {
    /// Loads and initialises the module, finds the token, probes its mechanisms, logs in and
    /// fills the session pool. Blocking.
    ///
    /// # Errors
    /// `Open` naming the step that failed; `MissingMechanism` naming the mechanism.
    pub fn open(config: &Pkcs11Config, pin: &Pin, generation: u64) -> Result<Self, BackendError> {
        let ctx = Pkcs11::new(&config.module)
            .map_err(|e| open_error(&format!("loading {}", config.module.display()), e))?;
        // A stale call may still hold a previous instance (the supervisor re-initialises anyway
        // after a bounded wait); then the library is already initialised and must not be
        // finalised under it.
        let initialised_here =
            match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
                Ok(()) => true,
                Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => false,
                Err(e) => return Err(open_error("C_Initialize", e)),
            };
        let result = Self::open_initialised(ctx.clone(), config, pin, generation);
        if result.is_err() && initialised_here {
            // Leave the library as we found it so the next attempt starts clean.
            let _ = ctx.finalize();
        }
        result
    }

    fn open_initialised(
        ctx: Pkcs11,
        config: &Pkcs11Config,
        pin: &Pin,
        generation: u64,
    ) -> Result<Self, BackendError> {
        let (slot, token) = find_token(&ctx, &config.token)?;
        // The mechanism list is what the token offers (a token may still answer
        // C_GetMechanismInfo for a mechanism it has disabled); the info gives the usable flags.
        let offered = ctx
            .get_mechanism_list(slot)
            .map_err(|e| open_error("C_GetMechanismList", e))?;
        for (mechanism, name) in required_mechanisms(config.mechanism) {
            if !offered.contains(mechanism) {
                return Err(BackendError::MissingMechanism(name));
            }
            let info = ctx
                .get_mechanism_info(slot, *mechanism)
                .map_err(|e| open_error("C_GetMechanismInfo", e))?;
            let usable = if *mechanism == MechanismType::AES_GCM {
                info.encrypt() && info.decrypt()
            } else {
                info.generate()
            };
            if !usable {
                return Err(BackendError::MissingMechanism(name));
            }
        }

        let mut sessions = Vec::with_capacity(config.sessions.get());
        for _ in 0..config.sessions.get() {
            sessions.push(
                ctx.open_rw_session(slot)
                    .map_err(|e| open_error("C_OpenSession", e))?,
            );
        }
        let first = sessions
            .first()
            .ok_or(BackendError::Invariant("session pool is empty"))?;
        // Login is per application and token: one login covers every session of the pool.
        login(first, pin).map_err(|e| list_error("C_Login", e))?;
        let handles = index_root_keys(first).map_err(|e| open_error("indexing root keys", e))?;
        tracing::info!(
            token = %token.label,
            serial = %token.serial,
            sessions = sessions.len(),
            root_keys = handles.len(),
            generation,
            "PKCS#11 token opened"
        );
        Ok(Self {
            ctx,
            slot,
            token,
            sessions: Mutex::new(sessions),
            handles: RwLock::new(handles),
            generation,
        })
    }

    /// Takes an idle session. The caller holds a pool permit, so one is always there.
    pub(super) fn take_session(&self) -> Result<Session, BackendError> {
        let mut idle = self
            .sessions
            .lock()
            .map_err(|_| BackendError::Invariant("session pool lock poisoned"))?;
        idle.pop()
            .ok_or(BackendError::Invariant("permit held but no idle session"))
    }

    /// Returns a session to the pool.
    pub(super) fn return_session(&self, session: Session) {
        if let Ok(mut idle) = self.sessions.lock() {
            idle.push(session);
        }
    }

    /// The cached handle of `root`, finding it on the device when this instance has not seen it
    /// (a key created by another node; steady state never searches).
    pub(super) fn handle(
        &self,
        session: &Session,
        root: &RootKeyRef,
    ) -> Result<Option<ObjectHandle>, CkError> {
        let id = root.device_id();
        if let Ok(cache) = self.handles.read() {
            if let Some(h) = cache.get(&id) {
                return Ok(Some(*h));
            }
        }
        let found = session.find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Token(true),
            Attribute::Id(id.clone()),
        ])?;
        let handle = found.first().copied();
        if let Some(h) = handle {
            self.remember(root, h);
        }
        Ok(handle)
    }

    /// Caches the handle of a root key this instance just created or found.
    pub(super) fn remember(&self, root: &RootKeyRef, handle: ObjectHandle) {
        if let Ok(mut cache) = self.handles.write() {
            cache.insert(root.device_id(), handle);
        }
    }

    /// Drops every cached handle (one of them named an object another process destroyed).
    pub(super) fn forget_all(&self) {
        if let Ok(mut cache) = self.handles.write() {
            cache.clear();
        }
    }

    /// Drops the cached handle of a destroyed root key.
    pub(super) fn forget(&self, root: &RootKeyRef) {
        if let Ok(mut cache) = self.handles.write() {
            cache.remove(&root.device_id());
        }
    }

    /// A cheap health probe on a fresh session: the token answers and we are still logged in.
    pub(super) fn confirm_health(&self) -> Result<(), CkError> {
        self.ctx.get_token_info(self.slot)?;
        let session = self.ctx.open_ro_session(self.slot)?;
        let info = session.get_session_info()?;
        match info.session_state() {
            SessionState::RoUser | SessionState::RwUser => Ok(()),
            _ => Err(CkError::Pkcs11(
                RvError::UserNotLoggedIn,
                cryptoki::context::Function::GetSessionInfo,
            )),
        }
    }

    /// Closes every idle session and finalises the module. The caller guarantees no session is
    /// checked out (it holds every pool permit).
    pub(super) fn shut_down(self) {
        let Self { ctx, sessions, .. } = self;
        if let Ok(mut idle) = sessions.lock() {
            idle.clear();
        }
        if let Err(e) = ctx.finalize() {
            tracing::warn!(error = %e, "C_Finalize failed while replacing the module instance");
        }
    }
}

/// Finds the one slot whose token matches the selector.
fn find_token(ctx: &Pkcs11, selector: &TokenSelector) -> Result<(Slot, TokenFacts), BackendError> {
    let slots = ctx
        .get_slots_with_initialized_token()
        .map_err(|e| list_error("C_GetSlotList", e))?;
    let mut matches = Vec::new();
    for slot in slots {
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| list_error("C_GetTokenInfo", e))?;
        let facts = TokenFacts {
            label: info.label().trim_end().to_owned(),
            manufacturer: info.manufacturer_id().trim_end().to_owned(),
            model: info.model().trim_end().to_owned(),
            serial: info.serial_number().trim_end().to_owned(),
        };
        let hit = match selector {
            TokenSelector::Label(l) => facts.label == *l,
            TokenSelector::Serial(s) => facts.serial == *s,
        };
        if hit {
            matches.push((slot, facts));
        }
    }
    match matches.len() {
        1 => matches
            .pop()
            .ok_or(BackendError::Invariant("one match vanished")),
        0 => Err(BackendError::Open(format!("{NO_TOKEN} {selector:?}"))),
        n => Err(BackendError::Open(format!(
            "{n} tokens match {selector:?}; select by serial"
        ))),
    }
}

/// Reads the `CKA_ID` of every secret-key token object and keeps the ones that are ours.
fn index_root_keys(session: &Session) -> Result<HashMap<Vec<u8>, ObjectHandle>, CkError> {
    let objects = session.find_objects(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(true),
    ])?;
    let mut index = HashMap::new();
    for handle in objects {
        let attrs = session.get_attributes(handle, &[AttributeType::Id])?;
        for attr in attrs {
            if let Attribute::Id(id) = attr {
                if RootKeyRef::from_device_id(&id).is_some() {
                    index.insert(id, handle);
                }
            }
        }
    }
    Ok(index)
}

/// Logs in on `session` as the user.
///
/// # Errors
/// The cryptoki error, except that an existing login is success.
pub fn login(session: &Session, pin: &Pin) -> Result<(), CkError> {
    match session.login(UserType::User, Some(pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use cryptoki::context::Function;

    use super::*;

    #[test]
    fn a_general_error_reading_the_token_or_logging_in_is_retried_at_start_up_and_a_wrong_pin_is_not(
    ) {
        let open = |e| match list_error("C_GetTokenInfo", e) {
            BackendError::Open(m) => m,
            other => panic!("{other:?}"),
        };
        let busy = open(CkError::Pkcs11(
            RvError::GeneralError,
            Function::GetTokenInfo,
        ));
        assert!(busy.starts_with(TOKEN_UNREADABLE), "{busy}");
        let login = open(CkError::Pkcs11(RvError::GeneralError, Function::Login));
        assert!(login.starts_with(TOKEN_UNREADABLE), "{login}");
        let other = open(CkError::Pkcs11(RvError::PinIncorrect, Function::Login));
        assert!(
            !other.starts_with(TOKEN_UNREADABLE) && !other.starts_with(NO_TOKEN),
            "{other}"
        );
    }
}
