//! AES-256-GCM seal and open with a root key, through `C_Encrypt`/`C_Decrypt`.
//!
//! SoftHSM2 accepts any IV length and any tag length, even zero, and never generates the IV
//! itself: we always supply a 96-bit IV and a 128-bit tag, and check the output length.

use cryptoki::error::Error as CkError;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use zeroize::Zeroizing;

use crate::format::blob::{GCM_IV_LEN, GCM_TAG_LEN};

/// GCM tag length in bits, as the mechanism parameter wants it.
const TAG_BITS: u64 = (GCM_TAG_LEN * 8) as u64;

/// Why a GCM call failed.
#[derive(Debug, thiserror::Error)]
pub enum GcmError {
    /// The module returned an error.
    #[error(transparent)]
    Device(#[from] CkError),
    /// The module returned output of the wrong length (e.g. a short tag): never trusted.
    #[error("the module returned {got} bytes where {want} were expected")]
    OutputLength {
        /// Bytes returned.
        got: usize,
        /// Bytes expected.
        want: usize,
    },
}

/// Encrypts `plaintext` under `key` with the given IV and AAD; returns ciphertext ‖ tag.
///
/// Public so that the format test vectors can drive exactly this code with a known session key
/// and a fixed IV.
///
/// # Errors
/// [`GcmError`] from the module or when the output length is not plaintext + 16.
pub fn gcm_seal_with_iv(
    session: &Session,
    key: ObjectHandle,
    iv: [u8; GCM_IV_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, GcmError> {
    let mut iv = iv;
    let params = GcmParams::new(&mut iv, aad, TAG_BITS.into())?;
    let out = session.encrypt(&Mechanism::AesGcm(params), key, plaintext)?;
    let want = plaintext.len() + GCM_TAG_LEN;
    if out.len() != want {
        return Err(GcmError::OutputLength {
            got: out.len(),
            want,
        });
    }
    Ok(out)
}

/// Decrypts ciphertext ‖ tag under `key`; the plaintext goes straight into zeroising memory.
///
/// # Errors
/// [`GcmError`]; a failed tag check is a module error (`CKR_GENERAL_ERROR` on SoftHSM2,
/// `CKR_ENCRYPTED_DATA_INVALID` elsewhere).
pub fn gcm_open(
    session: &Session,
    key: ObjectHandle,
    iv: [u8; GCM_IV_LEN],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, GcmError> {
    let mut iv = iv;
    let params = GcmParams::new(&mut iv, aad, TAG_BITS.into())?;
    let out = Zeroizing::new(session.decrypt(&Mechanism::AesGcm(params), key, ciphertext)?);
    let want = ciphertext.len().saturating_sub(GCM_TAG_LEN);
    if out.len() != want {
        return Err(GcmError::OutputLength {
            got: out.len(),
            want,
        });
    }
    Ok(out)
}
