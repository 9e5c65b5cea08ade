//! Classification of tss-esapi errors into [`BackendError`].
//!
//! # Policy
//!
//! [`classify`] is the one place where a `tss_esapi::Error` becomes a [`BackendError`]. A TSS
//! return code carries a *layer* (bits 16–23: 0 = the TPM itself, 7 = ESAPI, 8 = SAPI, 9 = the
//! marshalling library, 10 = the TCTI) and a code. The classes are:
//!
//! - **Device down → [`BackendError::Unavailable`] (503).** Anything from the TCTI layer
//!   (connection refused, I/O error, broken socket), the ESAPI/SAPI "I/O error", "no connection",
//!   "try again" and "malformed response" codes, and TPM responses that say the TPM itself must
//!   be restarted (`TPM_RC_INITIALIZE`, `TPM_RC_FAILURE`, `TPM_RC_REBOOT`). Also
//!   `TPM_RC_REFERENCE_H0..H6` ("handle not loaded"): the owner flushes everything it loads
//!   before returning, so the only handle it relies on across calls is the storage primary, and
//!   when that is gone the TPM was reset behind our back (the swtpm TCTI opens a connection per
//!   command, so a restarted swtpm shows no I/O error). The context owner drops its ESAPI
//!   context on this class and reconnects (with back-off) on the next call.
//! - **A key blob that does not load → [`BackendError::KeyBlobRejected`] naming the key.** Only
//!   while loading or parsing a stored blob ([`Stage::LoadBlob`]): `TPM_RC_INTEGRITY` (tampered
//!   blob, or one sealed under another TPM's or another parent's seed), `TPM_RC_SIZE`,
//!   `TPM_RC_VALUE`, `TPM_RC_KEY`, `TPM_RC_TYPE`, `TPM_RC_ATTRIBUTES`, `TPM_RC_HASH`,
//!   `TPM_RC_SENSITIVE`, `TPM_RC_BINDING`, `TPM_RC_KEY_SIZE`, `TPM_RC_SCHEME`, and any
//!   unmarshalling failure of the bytes themselves. This is about one stored object, never
//!   evidence that the device is gone: a caller presenting a bad blob can't make the service
//!   reconnect or report not-ready.
//! - **Everything else → [`BackendError::Device`]** with the TSS error kept as the source: the
//!   TPM refused this request for a reason that is not the caller's (including
//!   `TPM_RC_OBJECT_MEMORY`, which would mean a slot leaked — a bug the tests guard against).

use tss_esapi::constants::response_code::{Tss2ResponseCode, Tss2ResponseCodeKind};
use tss_esapi::Error as TssError;

use crate::backend::BackendError;

/// TSS layer numbers (TSS 2.0 Overview, "Response Code Layers").
const LAYER_TPM: u32 = 0;
const LAYER_ESAPI: u32 = 7;
const LAYER_SAPI: u32 = 8;
const LAYER_MU: u32 = 9;
const LAYER_TCTI: u32 = 10;

/// TSS base response codes that mean "the transport failed".
const BASE_RC_TRY_AGAIN: u32 = 9;
const BASE_RC_IO_ERROR: u32 = 10;
const BASE_RC_NO_CONNECTION: u32 = 15;
const BASE_RC_MALFORMED_RESPONSE: u32 = 18;

/// What the failing call was doing; decides whether a refusal names a key blob.
#[derive(Debug, Clone, Copy)]
pub enum Stage<'a> {
    /// Parsing or loading the stored blob of the key named by the label.
    LoadBlob {
        /// A non-secret label naming the key version (e.g. `key-id/v3`).
        label: &'a str,
    },
    /// Any other device call.
    Other,
}

/// The raw 32-bit TSS return code, if the error carries one.
fn raw_rc(err: &TssError) -> Option<u32> {
    match err {
        TssError::Tss2Error(Tss2ResponseCode::FormatZero(rc)) => Some(rc.0),
        TssError::Tss2Error(Tss2ResponseCode::FormatOne(rc)) => Some(rc.0),
        TssError::Tss2Error(Tss2ResponseCode::Success) | TssError::WrapperError(_) => None,
    }
}

/// The TPM response kind, only when the TPM itself (layer 0) produced the code.
pub fn tpm_kind(err: &TssError) -> Option<Tss2ResponseCodeKind> {
    match (err, raw_rc(err)) {
        (TssError::Tss2Error(rc), Some(raw)) if (raw >> 16) & 0xff == LAYER_TPM => rc.kind(),
        _ => None,
    }
}

/// True when the error says the transport or the device is gone (the "device down" class).
pub fn is_connection_failure(err: &TssError) -> bool {
    let Some(raw) = raw_rc(err) else {
        return false;
    };
    let layer = (raw >> 16) & 0xff;
    let base = raw & 0xffff;
    match layer {
        LAYER_TCTI => true,
        LAYER_ESAPI | LAYER_SAPI => matches!(
            base,
            BASE_RC_TRY_AGAIN
                | BASE_RC_IO_ERROR
                | BASE_RC_NO_CONNECTION
                | BASE_RC_MALFORMED_RESPONSE
        ),
        LAYER_TPM => matches!(
            tpm_kind(err),
            Some(
                Tss2ResponseCodeKind::Initialize
                    | Tss2ResponseCodeKind::Failure
                    | Tss2ResponseCodeKind::Reboot
                    | Tss2ResponseCodeKind::ReferenceH0
                    | Tss2ResponseCodeKind::ReferenceH1
                    | Tss2ResponseCodeKind::ReferenceH2
                    | Tss2ResponseCodeKind::ReferenceH3
                    | Tss2ResponseCodeKind::ReferenceH4
                    | Tss2ResponseCodeKind::ReferenceH5
                    | Tss2ResponseCodeKind::ReferenceH6
            )
        ),
        _ => false,
    }
}

/// True when a blob being loaded was refused for its content (see the module policy).
fn is_blob_refusal(err: &TssError) -> bool {
    if matches!(err, TssError::WrapperError(_)) {
        // The wrapper rejects malformed structures (bad sizes, unknown algorithms) before the
        // TPM sees them.
        return true;
    }
    if raw_rc(err).is_some_and(|raw| (raw >> 16) & 0xff == LAYER_MU) {
        return true;
    }
    matches!(
        tpm_kind(err),
        Some(
            Tss2ResponseCodeKind::Integrity
                | Tss2ResponseCodeKind::Size
                | Tss2ResponseCodeKind::Value
                | Tss2ResponseCodeKind::Key
                | Tss2ResponseCodeKind::Type
                | Tss2ResponseCodeKind::Attributes
                | Tss2ResponseCodeKind::Hash
                | Tss2ResponseCodeKind::Sensitive
                | Tss2ResponseCodeKind::Binding
                | Tss2ResponseCodeKind::KeySize
                | Tss2ResponseCodeKind::Scheme
                | Tss2ResponseCodeKind::Symmetric
                | Tss2ResponseCodeKind::Asymmetric
        )
    )
}

/// Maps a tss-esapi error to a [`BackendError`] following the module policy.
pub fn classify(err: TssError, stage: Stage<'_>) -> BackendError {
    if is_connection_failure(&err) {
        return BackendError::Unavailable;
    }
    match stage {
        Stage::LoadBlob { label } if is_blob_refusal(&err) => {
            tracing::warn!(key = label, error = %err, "the TPM refused a stored key blob");
            BackendError::KeyBlobRejected(label.to_owned())
        }
        _ => BackendError::Device(Box::new(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tss_esapi::WrapperErrorKind;

    /// Builds an error from a raw code the way tss-esapi does.
    fn rc(raw: u32) -> TssError {
        // FormatOne when bit 7 is set, FormatZero otherwise (TPM 2.0 Part 2, 6.6).
        use tss_esapi::constants::response_code::{FormatOneResponseCode, FormatZeroResponseCode};
        if raw & 0x80 != 0 {
            TssError::Tss2Error(Tss2ResponseCode::FormatOne(FormatOneResponseCode(raw)))
        } else {
            TssError::Tss2Error(Tss2ResponseCode::FormatZero(FormatZeroResponseCode(raw)))
        }
    }

    #[test]
    fn transport_failures_mean_unavailable() {
        // TSS2_TCTI_RC_IO_ERROR, TSS2_TCTI_RC_NO_CONNECTION, TSS2_ESYS_RC_IO_ERROR.
        for raw in [0x000A_000A, 0x000A_000F, 0x0007_000A] {
            assert!(matches!(
                classify(rc(raw), Stage::Other),
                BackendError::Unavailable
            ));
        }
        // TPM_RC_REFERENCE_H0: the primary vanished (TPM reset).
        assert!(matches!(
            classify(rc(0x910), Stage::Other),
            BackendError::Unavailable
        ));
        // TPM_RC_INITIALIZE: the TPM was restarted without Startup.
        assert!(matches!(
            classify(rc(0x100), Stage::Other),
            BackendError::Unavailable
        ));
    }

    #[test]
    fn a_bad_blob_names_the_key_and_is_not_fatal() {
        // TPM_RC_INTEGRITY on parameter 1 of TPM2_Load.
        let e = classify(rc(0x19F), Stage::LoadBlob { label: "k/v1" });
        assert!(matches!(e, BackendError::KeyBlobRejected(ref l) if l == "k/v1"));
        let e = classify(
            TssError::WrapperError(WrapperErrorKind::WrongParamSize),
            Stage::LoadBlob { label: "k/v2" },
        );
        assert!(matches!(e, BackendError::KeyBlobRejected(_)));
        // The same code outside a load is a device error, not a blob verdict.
        assert!(matches!(
            classify(rc(0x19F), Stage::Other),
            BackendError::Device(_)
        ));
    }

    #[test]
    fn object_memory_is_a_device_error() {
        // TPM_RC_OBJECT_MEMORY (warning 0x902).
        assert!(matches!(
            classify(rc(0x902), Stage::Other),
            BackendError::Device(_)
        ));
    }
}
