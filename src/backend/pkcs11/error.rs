//! Classification of PKCS#11 return values.
//!
//! # Policy
//!
//! Every `CKR_*` a call returns falls into one of three classes:
//!
//! - **Fatal**: the module, token or session is gone (`CKR_DEVICE_REMOVED`,
//!   `CKR_TOKEN_NOT_PRESENT`, `CKR_SESSION_HANDLE_INVALID`, `CKR_USER_NOT_LOGGED_IN`, …). The
//!   backend marks itself unavailable, answers `503`, and a supervisor re-initialises the module
//!   with back-off.
//! - **Ambiguous**: `CKR_GENERAL_ERROR`, `CKR_FUNCTION_FAILED`, `CKR_DEVICE_ERROR`. SoftHSM2
//!   returns `CKR_GENERAL_ERROR` for a failed GCM tag check, so on its own it is *not* evidence
//!   of a dead device: the backend confirms device health with a cheap call first, and only if
//!   that fails too treats the error as fatal. A client sending tampered blobs can therefore
//!   never make the service re-initialise or report not-ready.
//! - **Request**: everything else (`CKR_ENCRYPTED_DATA_INVALID`, `CKR_DATA_LEN_RANGE`, …) is
//!   about this one operation and maps to a per-request error.
//! - **Stale handle**: `CKR_OBJECT_HANDLE_INVALID`, `CKR_KEY_HANDLE_INVALID`. Handles are cached
//!   per module instance (a re-initialisation starts a new cache), so an invalid one means the
//!   object is gone: another process sharing the token (another node) destroyed it. The
//!   operation is run once more after the cache is dropped, which finds the object again by
//!   `CKA_ID` or answers as for a missing root key; the module is not re-initialised.

use cryptoki::context::Function;
use cryptoki::error::{Error as CkError, RvError};

/// How the backend reacts to an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Re-initialise the module; report not-ready until it is back.
    Fatal,
    /// Confirm device health before deciding.
    Ambiguous,
    /// This request failed; the device is fine.
    Request,
    /// A cached object handle no longer names an object: find it again by `CKA_ID`.
    StaleHandle,
}

/// The class of a cryptoki error (see the module docs for the policy).
pub fn classify(err: &CkError) -> Class {
    match err {
        CkError::Pkcs11(rv, _) => classify_rv(*rv),
        // Library loading and FFI-level failures mean the module itself is unusable.
        CkError::LibraryLoading(_) | CkError::NullFunctionPointer | CkError::MissingSymbol(_) => {
            Class::Fatal
        }
        _ => Class::Request,
    }
}

/// The class of a return value.
pub fn classify_rv(rv: RvError) -> Class {
    use RvError::*;
    match rv {
        DeviceRemoved
        | TokenNotPresent
        | TokenNotRecognized
        | SessionHandleInvalid
        | SessionClosed
        | CryptokiNotInitialized
        | UserNotLoggedIn
        | SlotIdInvalid
        | DeviceMemory
        | HostMemory
        | PinExpired
        | PinLocked => Class::Fatal,
        ObjectHandleInvalid | KeyHandleInvalid => Class::StaleHandle,
        GeneralError | FunctionFailed | DeviceError => Class::Ambiguous,
        _ => Class::Request,
    }
}

/// The failing function of a cryptoki error, for logs.
pub fn function_of(err: &CkError) -> Option<Function> {
    match err {
        CkError::Pkcs11(_, f) => Some(*f),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcm_tag_failures_are_ambiguous_not_fatal() {
        let tag_failure = CkError::Pkcs11(RvError::GeneralError, Function::Decrypt);
        assert_eq!(classify(&tag_failure), Class::Ambiguous);
        assert_eq!(classify_rv(RvError::EncryptedDataInvalid), Class::Request);
    }

    #[test]
    fn lost_devices_are_fatal() {
        for rv in [
            RvError::DeviceRemoved,
            RvError::TokenNotPresent,
            RvError::SessionHandleInvalid,
            RvError::UserNotLoggedIn,
            RvError::CryptokiNotInitialized,
        ] {
            assert_eq!(classify_rv(rv), Class::Fatal, "{rv:?}");
        }
    }

    #[test]
    fn bad_input_is_per_request() {
        for rv in [
            RvError::DataLenRange,
            RvError::MechanismParamInvalid,
            RvError::ArgumentsBad,
        ] {
            assert_eq!(classify_rv(rv), Class::Request, "{rv:?}");
        }
    }
}
