//! [`TpmBackend`]: the TPM behind the [`KeyBackend`] trait, in direct mode.
//!
//! Each key version is an HMAC-SHA256 key made inside the TPM (fixedTPM, fixedParent,
//! sensitiveDataOrigin); the store keeps its blobs, which load only in this TPM. The TPM has no
//! authenticated encryption and no key-wrap command, so a wrap is: a fresh 96-bit nonce; a
//! single-use wrapping key `K = TPM2_HMAC(version key, "custodian/tpm-wrap/v1" ‖ nonce ‖
//! SHA-256(header ‖ canonical context))`; the payload wrapped with RFC 5649 KWP under `K` in
//! software. `K` exists only for the one call and only the TPM can derive it, so the root stays in
//! the TPM; a changed header or context gives another `K` and fails KWP's integrity check
//! (`docs/tpm.md`).

use std::sync::Arc;

use aes_kw::KekAes256;
use async_trait::async_trait;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{TpmDevice, TpmKeyBlob};
use crate::backend::{
    BackendError, DeviceDescription, DeviceHealth, KeyBackend, ObjectFacts, Sealed,
};
use crate::domain::{Algorithm, BackendKind, RootKeyRef, RootMaterial};
use crate::format::blob::GCM_IV_LEN;
use crate::secret::SecretBytes;

/// Domain separation of the wrapping-key derivation.
const WRAP_LABEL: &[u8] = b"custodian/tpm-wrap/v1";

/// The TPM in direct mode.
#[derive(Clone)]
pub struct TpmBackend {
    device: Arc<TpmDevice>,
    rejected: Arc<Rejections>,
}

/// Labels of key versions whose blob the device refused, until it accepts them again.
#[derive(Debug, Default)]
pub struct Rejections(std::sync::Mutex<std::collections::BTreeSet<String>>);

impl Rejections {
    /// Records the outcome of a device call on `label`'s stored material.
    pub fn track<T>(&self, label: &str, r: Result<T, BackendError>) -> Result<T, BackendError> {
        if let Ok(mut set) = self.0.lock() {
            match &r {
                Err(BackendError::KeyBlobRejected(_)) => {
                    set.insert(label.to_owned());
                }
                Ok(_) => {
                    set.remove(label);
                }
                Err(_) => {}
            }
        }
        r
    }

    /// The labels now refused.
    pub fn labels(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

impl std::fmt::Debug for TpmBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TpmBackend").finish_non_exhaustive()
    }
}

/// Stored form of a version key: u32 BE length of the public part, public, private.
pub fn encode_blob(blob: &TpmKeyBlob) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + blob.public.len() + blob.private.len());
    let len = u32::try_from(blob.public.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&blob.public);
    out.extend_from_slice(&blob.private);
    out
}

/// Parses [`encode_blob`]'s output; `None` when it is not one.
pub fn decode_blob(bytes: &[u8]) -> Option<TpmKeyBlob> {
    let len: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    let len = usize::try_from(u32::from_be_bytes(len)).ok()?;
    let public = bytes.get(4..4 + len)?.to_vec();
    let private = bytes.get(4 + len..)?.to_vec();
    if public.is_empty() || private.is_empty() {
        return None;
    }
    Some(TpmKeyBlob { public, private })
}

impl TpmBackend {
    /// The backend over an opened device.
    pub fn new(device: TpmDevice) -> Self {
        Self {
            device: Arc::new(device),
            rejected: Arc::default(),
        }
    }

    fn blob(root: &RootKeyRef) -> Result<TpmKeyBlob, BackendError> {
        root.material
            .device_blob
            .as_deref()
            .and_then(decode_blob)
            .ok_or_else(|| BackendError::KeyBlobRejected(root.label()))
    }

    /// The single-use wrapping key for (`nonce`, `aad`).
    async fn wrapping_key(
        &self,
        root: &RootKeyRef,
        nonce: &[u8; GCM_IV_LEN],
        aad: &[u8],
    ) -> Result<KekAes256, BackendError> {
        let label = root.label();
        let blob = self.rejected.track(&label, Self::blob(root))?;
        let mut input = WRAP_LABEL.to_vec();
        input.extend_from_slice(nonce);
        input.extend_from_slice(&Sha256::digest(aad));
        let k = self
            .rejected
            .track(&label, self.device.hmac(&blob, &label, &input).await)?;
        KekAes256::try_from(&k[..]).map_err(|_| BackendError::Invariant("HMAC-SHA256 is 32 bytes"))
    }
}

#[async_trait]
impl KeyBackend for TpmBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Tpm
    }

    fn algorithm(&self) -> Algorithm {
        Algorithm::Aes256KwpTpmHmac
    }

    async fn create_root_key(&self, root: &RootKeyRef) -> Result<RootMaterial, BackendError> {
        let blob = self.device.create_version_key().await?;
        let info = self.device.object_attributes(&blob, &root.label())?;
        if !(info.fixed_tpm && info.fixed_parent && info.sensitive_data_origin) || info.decrypt {
            return Err(BackendError::Invariant(
                "the TPM created a version key without the custody attributes",
            ));
        }
        tracing::info!(label = %root.label(), "version key created in the TPM");
        Ok(RootMaterial {
            device_blob: Some(encode_blob(&blob).into()),
            wrapped_kek: None,
        })
    }

    /// The key exists only as the stored blob, which the store erases when the version is
    /// destroyed; without the blob the TPM cannot use the key again. If it is the version key
    /// kept loaded after the last HMAC, it is flushed now, so nothing of it stays in the TPM.
    async fn destroy_root_key(&self, root: &RootKeyRef) -> Result<(), BackendError> {
        if let Ok(blob) = Self::blob(root) {
            self.device.unload(&blob).await?;
        }
        tracing::info!(label = %root.label(), "TPM version key retired (its blob is erased by the store)");
        Ok(())
    }

    async fn seal(
        &self,
        root: &RootKeyRef,
        aad: Vec<u8>,
        plaintext: SecretBytes,
    ) -> Result<Sealed, BackendError> {
        let mut iv = [0u8; GCM_IV_LEN];
        getrandom::getrandom(&mut iv).map_err(|e| BackendError::Device(Box::new(e)))?;
        let k = self.wrapping_key(root, &iv, &aad).await?;
        let ciphertext = k
            .wrap_with_padding_vec(plaintext.expose_secret())
            .map_err(|_| BackendError::Invariant("KWP wraps any non-empty input"))?;
        Ok(Sealed { iv, ciphertext })
    }

    async fn generate_and_seal(
        &self,
        root: &RootKeyRef,
        aad: Vec<u8>,
        len: usize,
    ) -> Result<(SecretBytes, Sealed), BackendError> {
        let key = self.device.random(len).await?;
        crate::backend::seal_drawn_key(self, root, aad, key).await
    }

    async fn open(
        &self,
        root: &RootKeyRef,
        iv: [u8; 12],
        aad: Vec<u8>,
        ciphertext: Vec<u8>,
    ) -> Result<SecretBytes, BackendError> {
        if ciphertext.len() < 16 || ciphertext.len() % 8 != 0 {
            return Err(BackendError::AuthenticationFailed);
        }
        let k = self.wrapping_key(root, &iv, &aad).await?;
        let mut out = Zeroizing::new(vec![0u8; ciphertext.len() - 8]);
        let n = k
            .unwrap_with_padding(&ciphertext, &mut out)
            .map_err(|_| BackendError::AuthenticationFailed)?
            .len();
        out.truncate(n);
        Ok(SecretBytes::new(out))
    }

    /// An open then a seal per item: each loads the version's key for one HMAC anyway.
    async fn reseal(
        &self,
        from: &RootKeyRef,
        to: &RootKeyRef,
        items: Vec<crate::backend::Reseal>,
    ) -> crate::backend::Resealed {
        crate::backend::reseal_each(self, from, to, items).await
    }

    async fn health(&self) -> DeviceHealth {
        self.device.health().await
    }

    fn rejected_key_blobs(&self) -> Vec<String> {
        self.rejected.labels()
    }

    async fn random(&self, n: usize) -> Result<SecretBytes, BackendError> {
        self.device.random(n).await
    }

    async fn describe(&self) -> Result<DeviceDescription, BackendError> {
        let info = self.device.info().await?;
        Ok(DeviceDescription {
            backend: BackendKind::Tpm,
            label: "TPM 2.0".to_owned(),
            manufacturer: info.manufacturer,
            model: info.vendor,
            serial: String::new(),
            firmware: info.firmware_version_text,
            hardware: format!("spec {}", info.spec_revision),
        })
    }

    /// The version key's attributes from its public area, and a fresh `TPM2_Certify` of it by
    /// the attestation key (qualifying data: SHA-256 of the label and the current time, so the
    /// statement is recent), which `custodian custody verify` checks offline.
    async fn inspect_root_key(
        &self,
        root: &RootKeyRef,
    ) -> Result<Option<ObjectFacts>, BackendError> {
        let Some(bytes) = root.material.device_blob.as_deref() else {
            return Ok(None);
        };
        let label = root.label();
        let Some(blob) = decode_blob(bytes) else {
            return Ok(Some(rejected(&label)));
        };
        let info = match self.device.object_attributes(&blob, &label) {
            Ok(i) => i,
            Err(BackendError::KeyBlobRejected(_)) => return Ok(Some(rejected(&label))),
            Err(e) => return Err(e),
        };
        let now = crate::audit::record::format_time(crate::clock::now());
        let qualifying = Sha256::digest(format!("{label}\n{now}").as_bytes()).to_vec();
        let certification = match self.device.certify(&blob, &label, &qualifying).await {
            Ok(c) => json!({
                "attest": hex::encode(&c.attest),
                "signature": hex::encode(&c.signature_der),
                "attestation_key": c.attestation_key_pem,
                "key_name": hex::encode(&c.key_name),
                "qualifying_data": hex::encode(&qualifying),
                "key_public": hex::encode(&blob.public),
            }),
            Err(BackendError::KeyBlobRejected(_)) => return Ok(Some(rejected(&label))),
            Err(e) => return Err(e),
        };
        let mut facts = ObjectFacts {
            attributes: Default::default(),
            key_type: format!("TPM_ALG_{}", info.key_type.to_uppercase()),
            key_bits: 256,
            objects: 1,
            weaknesses: Vec::new(),
            attestation: Some(certification),
        };
        for (name, value, required) in [
            ("fixedTPM", info.fixed_tpm, true),
            ("fixedParent", info.fixed_parent, true),
            ("sensitiveDataOrigin", info.sensitive_data_origin, true),
            ("userWithAuth", info.user_with_auth, true),
            ("sign", info.sign, true),
            ("decrypt", info.decrypt, false),
            ("restricted", info.restricted, false),
        ] {
            facts.attributes.insert(name.to_owned(), Value::Bool(value));
            if value != required {
                facts.weaknesses.push(format!("{name} is {value}"));
            }
        }
        facts
            .attributes
            .insert("name".to_owned(), Value::String(info.name_hex));
        Ok(Some(facts))
    }
}

/// The facts of a blob the TPM refuses: an anomaly, reported rather than failing the report.
fn rejected(label: &str) -> ObjectFacts {
    ObjectFacts {
        attributes: Default::default(),
        key_type: "unknown".to_owned(),
        key_bits: 0,
        objects: 0,
        weaknesses: vec![format!(
            "the stored key blob of {label} does not load in this TPM"
        )],
        attestation: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_encoding_round_trips_and_rejects_damage() {
        let b = TpmKeyBlob {
            public: vec![1, 2, 3],
            private: vec![4, 5],
        };
        assert_eq!(decode_blob(&encode_blob(&b)), Some(b));
        assert_eq!(decode_blob(&[0, 0, 0, 9, 1]), None);
        assert_eq!(decode_blob(&[0, 0, 0, 0, 1]), None);
        assert_eq!(decode_blob(&[]), None);
    }
}
