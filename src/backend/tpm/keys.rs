//! Key templates, version-key creation, blob (un)marshalling, loading, and the pure read-back
//! of a version key's attributes from its public area.

use sha2::{Digest as _, Sha256};
use tss_esapi::attributes::{ObjectAttributes, ObjectAttributesBuilder};
use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    Digest, EccPoint, HmacScheme, KeyedHashScheme, Private, Public, PublicBuffer, PublicBuilder,
    PublicEccParametersBuilder, PublicKeyedHashParameters, SymmetricDefinitionObject,
};
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::Context;

use super::error::{classify, Stage};
use super::TpmKeyBlob;
use crate::backend::BackendError;

/// `TPM_ALG_SHA256`, the first two bytes of a SHA-256 Name.
const ALG_SHA256: u16 = 0x000B;

/// What a version key's public area says about it (read back without a TPM call).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TpmObjectInfo {
    /// `fixedTPM`: the key can't be duplicated to another TPM.
    pub fixed_tpm: bool,
    /// `fixedParent`: the key can't be re-parented.
    pub fixed_parent: bool,
    /// `sensitiveDataOrigin`: the TPM generated the secret.
    pub sensitive_data_origin: bool,
    /// `userWithAuth`: usable with its (empty) auth value.
    pub user_with_auth: bool,
    /// `sign`: usable for HMAC/signing.
    pub sign: bool,
    /// `decrypt`.
    pub decrypt: bool,
    /// `restricted`.
    pub restricted: bool,
    /// The object type, e.g. `keyedhash`.
    pub key_type: &'static str,
    /// The HMAC hash, e.g. `sha256` (keyed-hash objects only).
    pub scheme_hash: Option<&'static str>,
    /// The object's Name in hex: `nameAlg` (SHA-256) ‖ SHA-256(marshalled TPMT_PUBLIC).
    pub name_hex: String,
}

/// The storage primary: ECC P-256, restricted decrypt, AES-128-CFB, under the owner seed.
///
/// Deterministic (empty unique field, no auth, no policy), so recreating it after a restart
/// yields the same key and existing blobs load again. Attributes follow the TCG SRK template:
/// fixedTPM, fixedParent, sensitiveDataOrigin, userWithAuth, noDA, restricted, decrypt.
///
/// # Errors
/// `Invariant` if the template can't be built (it is constant).
pub fn storage_primary_template() -> Result<Public, BackendError> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_restricted(true)
        .with_decrypt(true)
        .build()
        .map_err(|_| BackendError::Invariant("storage primary attributes"))?;
    let parameters = PublicEccParametersBuilder::new_restricted_decryption_key(
        SymmetricDefinitionObject::AES_128_CFB,
        EccCurve::NistP256,
    )
    .build()
    .map_err(|_| BackendError::Invariant("storage primary parameters"))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(parameters)
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
        .map_err(|_| BackendError::Invariant("storage primary template"))
}

/// Checks that the object persisted at `handle` was made from [`storage_primary_template`].
///
/// # Errors
/// `Open` naming the handle when it holds something else (refuse to start rather than use an
/// unknown parent).
pub fn check_storage_primary(public: &Public, handle: u32) -> Result<(), BackendError> {
    let template = storage_primary_template()?;
    let same = match (public, &template) {
        (
            Public::Ecc {
                object_attributes: a,
                name_hashing_algorithm: h,
                parameters: p,
                ..
            },
            Public::Ecc {
                object_attributes: ta,
                name_hashing_algorithm: th,
                parameters: tp,
                ..
            },
        ) => a == ta && h == th && p == tp,
        _ => false,
    };
    if same {
        Ok(())
    } else {
        Err(BackendError::Open(format!(
            "persistent handle {handle:#x} holds an object that is not Custodian's storage primary"
        )))
    }
}

/// The attributes of a version key: fixedTPM, fixedParent, sensitiveDataOrigin, userWithAuth,
/// sign; not decrypt, not restricted; no duplication (fixedTPM/fixedParent forbid it).
fn version_key_attributes() -> Result<ObjectAttributes, BackendError> {
    ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_sign_encrypt(true)
        .with_decrypt(false)
        .with_restricted(false)
        .build()
        .map_err(|_| BackendError::Invariant("version key attributes"))
}

/// The version key template: a KeyedHash HMAC-SHA256 key.
fn version_key_template() -> Result<Public, BackendError> {
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::KeyedHash)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(version_key_attributes()?)
        .with_keyed_hash_parameters(PublicKeyedHashParameters::new(
            KeyedHashScheme::HMAC_SHA_256,
        ))
        .with_keyed_hash_unique_identifier(Digest::default())
        .build()
        .map_err(|_| BackendError::Invariant("version key template"))
}

/// Creates a version key under the primary and returns its marshalled blob.
///
/// Nothing stays loaded: `TPM2_Create` returns the blob without loading it.
///
/// # Errors
/// Classified TSS errors.
pub fn create_version_key(
    ctx: &mut Context,
    primary: KeyHandle,
) -> Result<TpmKeyBlob, BackendError> {
    let template = version_key_template()?;
    let created = ctx
        .execute_with_session(Some(AuthSession::Password), |ctx| {
            ctx.create(primary, template, None, None, None, None)
        })
        .map_err(|e| classify(e, Stage::Other))?;
    let public = PublicBuffer::try_from(created.out_public)
        .and_then(|b| b.marshall())
        .map_err(|e| classify(e, Stage::Other))?;
    Ok(TpmKeyBlob {
        public,
        private: tpm2b(created.out_private.value())?,
    })
}

/// Marshals a TPM2B: a big-endian `u16` size, then the bytes (TPM 2.0 Part 2, 10.4).
fn tpm2b(bytes: &[u8]) -> Result<Vec<u8>, BackendError> {
    let size = u16::try_from(bytes.len()).map_err(|_| BackendError::Invariant("TPM2B too long"))?;
    let mut out = Vec::with_capacity(bytes.len() + 2);
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(out)
}

/// Unmarshals a TPM2B exactly (no trailing bytes); `None` when malformed.
fn untpm2b(bytes: &[u8]) -> Option<&[u8]> {
    let (size, rest) = bytes.split_first_chunk::<2>()?;
    (usize::from(u16::from_be_bytes(*size)) == rest.len()).then_some(rest)
}

/// Parses a marshalled TPM2B_PUBLIC.
///
/// # Errors
/// The tss-esapi error when malformed.
pub fn parse_public(bytes: &[u8]) -> Result<Public, tss_esapi::Error> {
    PublicBuffer::unmarshall(bytes).and_then(Public::try_from)
}

/// Parses a blob into its public and private parts, naming `label` if it is malformed.
fn parse_blob(blob: &TpmKeyBlob, label: &str) -> Result<(Public, Private), BackendError> {
    let rejected = || BackendError::KeyBlobRejected(label.to_owned());
    let public = parse_public(&blob.public).map_err(|e| classify(e, Stage::LoadBlob { label }))?;
    let private = untpm2b(&blob.private)
        .and_then(|b| Private::try_from(b.to_vec()).ok())
        .ok_or_else(rejected)?;
    Ok((public, private))
}

/// Loads `blob` under the primary; the caller flushes it.
///
/// # Errors
/// `KeyBlobRejected(label)` when the TPM refuses the blob; classified TSS errors.
pub fn load(
    ctx: &mut Context,
    primary: KeyHandle,
    blob: &TpmKeyBlob,
    label: &str,
) -> Result<KeyHandle, BackendError> {
    let (public, private) = parse_blob(blob, label)?;
    ctx.execute_with_session(Some(AuthSession::Password), |ctx| {
        ctx.load(primary, private, public)
    })
    .map_err(|e| classify(e, Stage::LoadBlob { label }))
}

/// Loads `blob` under the primary, runs `f` with its handle, and flushes it again whatever
/// `f` returned.
///
/// # Errors
/// `KeyBlobRejected(label)` when the TPM refuses the blob; the errors of `f`; classified TSS
/// errors of the flush (reported only when `f` succeeded).
pub fn with_loaded<T>(
    ctx: &mut Context,
    primary: KeyHandle,
    blob: &TpmKeyBlob,
    label: &str,
    f: impl FnOnce(&mut Context, KeyHandle) -> Result<T, BackendError>,
) -> Result<T, BackendError> {
    let handle = load(ctx, primary, blob, label)?;
    let result = f(ctx, handle);
    let flushed = ctx
        .flush_context(handle.into())
        .map_err(|e| classify(e, Stage::Other));
    let value = result?;
    flushed?;
    Ok(value)
}

/// The Name of an object: `nameAlg` ‖ H_nameAlg(marshalled TPMT_PUBLIC). Only SHA-256.
///
/// # Errors
/// The tss-esapi error when the public area can't be marshalled; `None`-like `Invariant` when
/// the name algorithm is not SHA-256.
pub fn name_of(public: &Public) -> Result<Vec<u8>, NameError> {
    if public.name_hashing_algorithm() != HashingAlgorithm::Sha256 {
        return Err(NameError::UnsupportedNameAlg);
    }
    let tpmt = public.marshall().map_err(NameError::Marshal)?;
    let mut name = ALG_SHA256.to_be_bytes().to_vec();
    name.extend_from_slice(&Sha256::digest(&tpmt));
    Ok(name)
}

/// Why a Name could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum NameError {
    /// The object's name algorithm is not SHA-256.
    #[error("the object's name algorithm is not SHA-256")]
    UnsupportedNameAlg,
    /// The public area could not be marshalled.
    #[error("cannot marshal the public area")]
    Marshal(#[source] tss_esapi::Error),
}

/// Reads a version key's attributes from its public area (pure: no TPM call).
///
/// # Errors
/// `KeyBlobRejected(label)` when the public area is malformed.
pub fn object_info(blob: &TpmKeyBlob, label: &str) -> Result<TpmObjectInfo, BackendError> {
    let public = parse_public(&blob.public).map_err(|e| classify(e, Stage::LoadBlob { label }))?;
    let a = public.object_attributes();
    let (key_type, scheme_hash) = match &public {
        Public::KeyedHash { parameters, .. } => {
            // tss-esapi 7 exposes no getter for the scheme; compare with the HMAC schemes.
            let hash = [
                HashingAlgorithm::Sha1,
                HashingAlgorithm::Sha256,
                HashingAlgorithm::Sha384,
                HashingAlgorithm::Sha512,
            ]
            .into_iter()
            .find(|alg| {
                *parameters
                    == PublicKeyedHashParameters::new(KeyedHashScheme::Hmac {
                        hmac_scheme: HmacScheme::new(*alg),
                    })
            })
            .map(hash_name);
            ("keyedhash", hash)
        }
        Public::Rsa { .. } => ("rsa", None),
        Public::Ecc { .. } => ("ecc", None),
        Public::SymCipher { .. } => ("symcipher", None),
    };
    let name = name_of(&public).map_err(|_| BackendError::KeyBlobRejected(label.to_owned()))?;
    Ok(TpmObjectInfo {
        fixed_tpm: a.fixed_tpm(),
        fixed_parent: a.fixed_parent(),
        sensitive_data_origin: a.sensitive_data_origin(),
        user_with_auth: a.user_with_auth(),
        sign: a.sign_encrypt(),
        decrypt: a.decrypt(),
        restricted: a.restricted(),
        key_type,
        scheme_hash,
        name_hex: hex::encode(name),
    })
}

fn hash_name(alg: HashingAlgorithm) -> &'static str {
    match alg {
        HashingAlgorithm::Sha1 => "sha1",
        HashingAlgorithm::Sha256 => "sha256",
        HashingAlgorithm::Sha384 => "sha384",
        HashingAlgorithm::Sha512 => "sha512",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tpm2b_round_trips_and_rejects_bad_sizes() {
        let m = tpm2b(b"abc").unwrap();
        assert_eq!(m, [0, 3, b'a', b'b', b'c']);
        assert_eq!(untpm2b(&m), Some(&b"abc"[..]));
        assert_eq!(untpm2b(&[0, 4, 1, 2, 3]), None);
        assert_eq!(untpm2b(&[0]), None);
    }

    #[test]
    fn version_key_template_has_the_required_attributes() {
        let blob = TpmKeyBlob {
            public: PublicBuffer::try_from(version_key_template().unwrap())
                .unwrap()
                .marshall()
                .unwrap(),
            private: vec![0, 0],
        };
        let info = object_info(&blob, "t").unwrap();
        assert!(info.fixed_tpm && info.fixed_parent && info.sensitive_data_origin);
        assert!(info.user_with_auth && info.sign);
        assert!(!info.decrypt && !info.restricted);
        assert_eq!(info.key_type, "keyedhash");
        assert_eq!(info.scheme_hash, Some("sha256"));
        assert!(info.name_hex.starts_with("000b"));
    }
}
