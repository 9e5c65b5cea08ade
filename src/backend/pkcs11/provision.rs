//! Token provisioning for `custodian token init`: initialise a free slot's token with a label,
//! an SO PIN and a user PIN. PINs come from files (generated when absent, mode 0600), never
//! from the command line.

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::session::UserType;
use std::path::Path;

use crate::backend::BackendError;
use crate::secret::Pin;

/// What [`init_token`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provisioned {
    /// A token with this label already existed; nothing was changed.
    AlreadyPresent,
    /// A free slot's token was initialised.
    Initialised,
}

fn err(step: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Open(format!("{step}: {e}"))
}

/// Initialises a token labelled `label` in the first slot whose token is not initialised,
/// unless a token with that label exists already.
///
/// # Errors
/// `Open` naming the failing step (no free slot, `C_InitToken`, `C_InitPIN`, …).
pub fn init_token(
    module: &Path,
    label: &str,
    so_pin: &Pin,
    user_pin: &Pin,
) -> Result<Provisioned, BackendError> {
    let ctx = Pkcs11::new(module).map_err(|e| err(&format!("loading {}", module.display()), e))?;
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(|e| err("C_Initialize", e))?;
    let result = init_in(&ctx, label, so_pin, user_pin);
    let _ = ctx.finalize();
    result
}

fn init_in(
    ctx: &Pkcs11,
    label: &str,
    so_pin: &Pin,
    user_pin: &Pin,
) -> Result<Provisioned, BackendError> {
    for slot in ctx
        .get_slots_with_initialized_token()
        .map_err(|e| err("C_GetSlotList", e))?
    {
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| err("C_GetTokenInfo", e))?;
        if info.label().trim_end() == label {
            return Ok(Provisioned::AlreadyPresent);
        }
    }
    let mut free = None;
    for slot in ctx
        .get_slots_with_token()
        .map_err(|e| err("C_GetSlotList", e))?
    {
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| err("C_GetTokenInfo", e))?;
        if !info.token_initialized() {
            free = Some(slot);
            break;
        }
    }
    let slot = free.ok_or_else(|| err("finding a slot", "no slot has an uninitialised token"))?;
    ctx.init_token(slot, so_pin, label)
        .map_err(|e| err("C_InitToken", e))?;
    let session = ctx
        .open_rw_session(slot)
        .map_err(|e| err("C_OpenSession", e))?;
    session
        .login(UserType::So, Some(so_pin))
        .map_err(|e| err("C_Login(SO)", e))?;
    session
        .init_pin(user_pin)
        .map_err(|e| err("C_InitPIN", e))?;
    session.logout().map_err(|e| err("C_Logout", e))?;
    Ok(Provisioned::Initialised)
}
