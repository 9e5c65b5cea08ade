//! TPM2_HMAC with a version key.

use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::MaxBuffer;
use zeroize::Zeroizing;

use sha2::{Digest as _, Sha256};

use super::context::Connection;
use super::error::{classify, Stage};
use super::TpmKeyBlob;
use crate::backend::BackendError;

/// The longest input sent to TPM2_HMAC as is (`TPM2B_MAX_BUFFER`, 1024 bytes on swtpm and
/// most TPMs); longer inputs are hashed first (see [`hmac`]).
pub const MAX_HMAC_INPUT: usize = MaxBuffer::MAX_SIZE;

/// HMAC-SHA256 of `data` under the version key in `blob`, kept loaded on `conn` for the next
/// call ([`Connection::hmac_key`]).
///
/// Inputs of at most [`MAX_HMAC_INPUT`] bytes are MACed as they are: the result is standard
/// HMAC-SHA256(key, data). Longer inputs are first hashed with SHA-256 and the 32-byte digest is
/// MACed: the result is HMAC-SHA256(key, SHA-256(data)). tss-esapi 7 offers no HMAC sequence
/// commands, and this keeps the one-shot command. A long input and the 32-byte short input equal
/// to its digest therefore MAC alike, so callers must give inputs a fixed structure with a
/// domain-separating prefix (the wrap scheme does: label ‖ nonce ‖ digest, always 85 bytes).
///
/// # Errors
/// `KeyBlobRejected(label)` when the blob does not load; classified TSS errors otherwise.
pub fn hmac(
    conn: &mut Connection,
    blob: &TpmKeyBlob,
    label: &str,
    data: &[u8],
) -> Result<Zeroizing<[u8; 32]>, BackendError> {
    let input = if data.len() > MAX_HMAC_INPUT {
        MaxBuffer::try_from(Sha256::digest(data).to_vec())
    } else {
        MaxBuffer::try_from(data.to_vec())
    }
    .map_err(|_| BackendError::Invariant("HMAC input exceeds the TPM buffer"))?;
    let kept = conn.holds(blob);
    // A lost connection (`Unavailable`) is the owner's to handle: it drops the connection,
    // and the kept key with it, and tries once more on a fresh one.
    let lost = |e: &BackendError| matches!(e, BackendError::Unavailable);
    let digest = match mac(conn, blob, label, &input) {
        // A kept handle the TPM no longer knows (it was reset under a live connection): load
        // the key afresh and try once more. An HMAC has no side effects to repeat.
        Err(e) if kept && !lost(&e) => {
            release(conn);
            mac(conn, blob, label, &input)
        }
        other => other,
    };
    let digest = digest.inspect_err(|e| {
        if !lost(e) {
            release(conn);
        }
    })?;
    let mut out = Zeroizing::new([0u8; 32]);
    if digest.value().len() != out.len() {
        return Err(BackendError::Invariant(
            "TPM2_HMAC returned a non-SHA-256 length",
        ));
    }
    out.copy_from_slice(digest.value());
    Ok(out)
}

/// One TPM2_HMAC under the version key in `blob`, loaded or kept.
fn mac(
    conn: &mut Connection,
    blob: &TpmKeyBlob,
    label: &str,
    input: &MaxBuffer,
) -> Result<tss_esapi::structures::Digest, BackendError> {
    let key = conn.hmac_key(blob, label)?;
    conn.ctx
        .execute_with_session(Some(AuthSession::Password), |ctx| {
            ctx.hmac(key.into(), input.clone(), HashingAlgorithm::Sha256)
        })
        .map_err(|e| classify(e, Stage::Other))
}

/// Forgets the kept version key after a failure, so the next call loads it afresh.
fn release(conn: &mut Connection) {
    if let Err(e) = conn.release_loaded() {
        tracing::debug!(backend = "tpm", error = %e, "flushing the kept version key failed");
    }
}
