//! How a secret version is encrypted.
//!
//! - A fresh 256-bit data key per version, drawn and wrapped by the device under the secret's
//!   key (a ciphertext blob, [`super::Blob`]) with the reserved encryption context
//!   `{"custodian:secret_path": path, "custodian:secret_version": "N"}`. Callers cannot send
//!   `custodian:` context keys, so `/v1/decrypt` can never unwrap a secret's data key.
//! - The value is AES-256-GCM encrypted in software under that data key, with a random 96-bit
//!   IV and AAD = `"custodian/secret/v1" ‖ 0x00 ‖ u32 BE len(path) ‖ path ‖ u32 BE version`.
//!   Stored as IV ‖ ciphertext ‖ tag. Moving a row to another path or version fails both checks.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroizing;

use super::context::{ContextError, EncryptionContext};
use crate::domain::secret::SecretPath;

/// The reserved context key naming the secret path.
pub const CONTEXT_PATH: &str = "custodian:secret_path";
/// The reserved context key naming the secret version.
pub const CONTEXT_VERSION: &str = "custodian:secret_version";
const AAD_LABEL: &[u8] = b"custodian/secret/v1\0";
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// The data key's encryption context for `path`, `version`.
///
/// # Errors
/// Never for a valid path (bounded well below the context limits); typed for completeness.
pub fn data_key_context(
    path: &SecretPath,
    version: u32,
) -> Result<EncryptionContext, ContextError> {
    EncryptionContext::from_pairs([
        (CONTEXT_PATH.to_owned(), path.as_str().to_owned()),
        (CONTEXT_VERSION.to_owned(), version.to_string()),
    ])
}

/// The value's AAD.
pub fn value_aad(path: &SecretPath, version: u32) -> Vec<u8> {
    let p = path.as_str().as_bytes();
    let mut aad = Vec::with_capacity(AAD_LABEL.len() + 8 + p.len());
    aad.extend_from_slice(AAD_LABEL);
    aad.extend_from_slice(&u32::try_from(p.len()).unwrap_or(u32::MAX).to_be_bytes());
    aad.extend_from_slice(p);
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

/// Why a value could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    /// The data key is not 32 bytes.
    #[error("a secret data key has 32 bytes")]
    KeyLength,
    /// The OS random source failed.
    #[error("random source: {0}")]
    Random(#[from] getrandom::Error),
    /// Authentication failed (or the stored bytes are malformed).
    #[error("the stored secret value failed authentication")]
    Integrity,
}

/// Encrypts `value` under `data_key` for `path`, `version`: IV ‖ ciphertext ‖ tag.
///
/// # Errors
/// [`ValueError`].
pub fn seal_value(
    data_key: &[u8],
    path: &SecretPath,
    version: u32,
    value: &[u8],
) -> Result<Vec<u8>, ValueError> {
    let cipher = Aes256Gcm::new_from_slice(data_key).map_err(|_| ValueError::KeyLength)?;
    let mut iv = [0u8; IV_LEN];
    getrandom::getrandom(&mut iv)?;
    let aad = value_aad(path, version);
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&iv),
            Payload {
                msg: value,
                aad: &aad,
            },
        )
        .map_err(|_| ValueError::Integrity)?;
    let mut out = Vec::with_capacity(IV_LEN + ct.len());
    out.extend_from_slice(&iv);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Decrypts what [`seal_value`] produced, into zeroising memory.
///
/// # Errors
/// [`ValueError::Integrity`] for any change, including the path or version.
pub fn open_value(
    data_key: &[u8],
    path: &SecretPath,
    version: u32,
    stored: &[u8],
) -> Result<Zeroizing<Vec<u8>>, ValueError> {
    let cipher = Aes256Gcm::new_from_slice(data_key).map_err(|_| ValueError::KeyLength)?;
    if stored.len() < IV_LEN + TAG_LEN {
        return Err(ValueError::Integrity);
    }
    let (iv, ct) = stored.split_at(IV_LEN);
    let aad = value_aad(path, version);
    cipher
        .decrypt(Nonce::from_slice(iv), Payload { msg: ct, aad: &aad })
        .map(Zeroizing::new)
        .map_err(|_| ValueError::Integrity)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(s: &str) -> SecretPath {
        SecretPath::try_from(s.to_owned()).unwrap()
    }

    #[test]
    fn values_round_trip_and_are_bound_to_path_and_version() {
        let key = [7u8; 32];
        let p = path("team/app/db");
        let sealed = seal_value(&key, &p, 3, b"hunter2").unwrap();
        assert_eq!(&open_value(&key, &p, 3, &sealed).unwrap()[..], b"hunter2");
        assert!(open_value(&key, &p, 4, &sealed).is_err());
        assert!(open_value(&key, &path("team/app/dc"), 3, &sealed).is_err());
        assert!(open_value(&[8u8; 32], &p, 3, &sealed).is_err());
        let mut bad = sealed.clone();
        bad[IV_LEN] ^= 1;
        assert!(open_value(&key, &p, 3, &bad).is_err());
        assert!(open_value(&key, &p, 3, &sealed[..IV_LEN + TAG_LEN - 1]).is_err());
        assert!(seal_value(&[0u8; 16], &p, 1, b"x").is_err());
    }

    #[test]
    fn aad_is_length_prefixed() {
        // "a/b" v1 and "a" with a version whose bytes spell "/b" must differ.
        assert_ne!(
            value_aad(&path("a/b"), 1),
            value_aad(&path("a"), 0x2f62_0000)
        );
        assert!(value_aad(&path("x"), 1).starts_with(b"custodian/secret/v1\0"));
    }

    #[test]
    fn data_key_contexts_use_reserved_keys() {
        let c = data_key_context(&path("a/b"), 2).unwrap();
        let pairs: Vec<_> = c.pairs().collect();
        assert_eq!(pairs, vec![(CONTEXT_PATH, "a/b"), (CONTEXT_VERSION, "2")]);
    }
}
