//! A PKCS#11 module for the fault tests (`tests/it/faults.rs`): it loads the module named by
//! `SLOW_PKCS11_MODULE` (SoftHSM2) and forwards every call to it, but first sleeps before each
//! cryptographic call (encrypt, decrypt, wrap, unwrap, sign, random) for the number of
//! milliseconds written in the file named by `SLOW_PKCS11_DELAY_FILE` (read on every call, so a
//! test slows the device down and speeds it up again while the server runs). A slow network HSM
//! behaves like this; nothing in it is meant for production.
//!
//! Only `C_GetFunctionList` is exported: the function list handed out is the real module's,
//! with the slowed entries replaced.

#![allow(non_snake_case, unsafe_code)]

use std::sync::OnceLock;
use std::time::Duration;

use cryptoki_sys::{
    CKR_FUNCTION_NOT_SUPPORTED, CKR_GENERAL_ERROR, CK_ATTRIBUTE, CK_BYTE, CK_FUNCTION_LIST,
    CK_MECHANISM, CK_OBJECT_HANDLE, CK_RV, CK_SESSION_HANDLE, CK_ULONG,
};

/// The real module (kept loaded for the life of the process) and the list handed out.
struct Loaded {
    _library: libloading::Library,
    real: CK_FUNCTION_LIST,
    slowed: CK_FUNCTION_LIST,
}

// The function lists hold plain function pointers and are never written after start-up.
unsafe impl Sync for Loaded {}
unsafe impl Send for Loaded {}

static LOADED: OnceLock<Option<Loaded>> = OnceLock::new();

fn real() -> Option<&'static CK_FUNCTION_LIST> {
    LOADED.get().and_then(Option::as_ref).map(|l| &l.real)
}

/// Sleeps for the delay the test wrote (none when the file is missing or not a number).
fn pause() {
    let Some(file) = std::env::var_os("SLOW_PKCS11_DELAY_FILE") else {
        return;
    };
    let ms = std::fs::read_to_string(file)
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .unwrap_or(0);
    if ms > 0 {
        std::thread::sleep(Duration::from_millis(ms));
    }
}

macro_rules! slowed {
    ($name:ident ( $($arg:ident : $ty:ty),* )) => {
        unsafe extern "C" fn $name($($arg: $ty),*) -> CK_RV {
            pause();
            match real().and_then(|r| r.$name) {
                // SAFETY: the real module's entry, called with the caller's arguments unchanged.
                Some(f) => unsafe { f($($arg),*) },
                None => CKR_FUNCTION_NOT_SUPPORTED,
            }
        }
    };
}

slowed!(C_Encrypt(s: CK_SESSION_HANDLE, d: *mut CK_BYTE, dl: CK_ULONG, o: *mut CK_BYTE, ol: *mut CK_ULONG));
slowed!(C_Decrypt(s: CK_SESSION_HANDLE, d: *mut CK_BYTE, dl: CK_ULONG, o: *mut CK_BYTE, ol: *mut CK_ULONG));
slowed!(C_Sign(s: CK_SESSION_HANDLE, d: *mut CK_BYTE, dl: CK_ULONG, o: *mut CK_BYTE, ol: *mut CK_ULONG));
slowed!(C_GenerateRandom(s: CK_SESSION_HANDLE, o: *mut CK_BYTE, ol: CK_ULONG));
slowed!(C_WrapKey(s: CK_SESSION_HANDLE, m: *mut CK_MECHANISM, w: CK_OBJECT_HANDLE, k: CK_OBJECT_HANDLE, o: *mut CK_BYTE, ol: *mut CK_ULONG));
slowed!(C_UnwrapKey(s: CK_SESSION_HANDLE, m: *mut CK_MECHANISM, w: CK_OBJECT_HANDLE, d: *mut CK_BYTE, dl: CK_ULONG, t: *mut CK_ATTRIBUTE, tl: CK_ULONG, k: *mut CK_OBJECT_HANDLE));

fn load() -> Option<Loaded> {
    let path = std::env::var_os("SLOW_PKCS11_MODULE")?;
    // SAFETY: loading the PKCS#11 module the test named; its initialisers are the module's own.
    let library = unsafe { libloading::Library::new(path) }.ok()?;
    let mut list: *mut CK_FUNCTION_LIST = std::ptr::null_mut();
    {
        // SAFETY: `C_GetFunctionList` has this signature in every PKCS#11 module.
        let get: libloading::Symbol<'_, unsafe extern "C" fn(*mut *mut CK_FUNCTION_LIST) -> CK_RV> =
            unsafe { library.get(b"C_GetFunctionList\0") }.ok()?;
        // SAFETY: the module fills in a pointer to its static function list.
        if unsafe { get(&mut list) } != 0 || list.is_null() {
            return None;
        }
    }
    // SAFETY: checked non-null above; the list lives as long as the library, which we keep.
    let real = unsafe { *list };
    let mut slowed = real;
    slowed.C_Encrypt = Some(C_Encrypt);
    slowed.C_Decrypt = Some(C_Decrypt);
    slowed.C_Sign = Some(C_Sign);
    slowed.C_GenerateRandom = Some(C_GenerateRandom);
    slowed.C_WrapKey = Some(C_WrapKey);
    slowed.C_UnwrapKey = Some(C_UnwrapKey);
    Some(Loaded {
        _library: library,
        real,
        slowed,
    })
}

/// The module's one export: the real module's function list with the slowed entries.
///
/// # Safety
/// `list` must point to writable memory for one pointer, as PKCS#11 requires.
#[no_mangle]
pub unsafe extern "C" fn C_GetFunctionList(list: *mut *mut CK_FUNCTION_LIST) -> CK_RV {
    match LOADED.get_or_init(load) {
        Some(loaded) if !list.is_null() => {
            // SAFETY: the caller gave a writable pointer; PKCS#11 callers never write through
            // the list they get.
            unsafe { *list = std::ptr::from_ref(&loaded.slowed).cast_mut() };
            0
        }
        _ => CKR_GENERAL_ERROR,
    }
}
