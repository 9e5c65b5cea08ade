//! Offline checks of the TPM attestations in a custody report: for every key version whose
//! `device_object.attestation` is present, the `TPM2_Certify` statement is verified with
//! [`verify_certification`] (signature by the attestation key, `TPM_GENERATED_VALUE`, certify
//! type, qualifying data, certified Name = Name of the given public area), the certified Name
//! must be the `attributes.name` the report states for that version, and the certified public
//! area itself must carry the custody attributes (fixedTPM, fixedParent, sensitiveDataOrigin;
//! not decrypt).
//!
//! # What this does not prove
//!
//! The attestation key (AK) is trusted as given in the report unless the auditor passes a
//! trusted copy (`custody verify --attestation-key PEM`), which every statement must then be
//! signed by. Tying the AK to a genuine TPM through its endorsement key (EK) certificate chain
//! is out of scope: Custodian does not check EK certificates.

use std::fmt;

use serde_json::Value;

use crate::audit::signature::PublicKey;
use crate::backend::tpm::keys::parse_public;
use crate::backend::tpm::{verify_certification, Certification, CertifyError};

/// The sentence every verification output carries about the trust placed in the AK.
pub const AK_TRUST_NOTE: &str = "the attestation key is trusted as given in the report unless \
     it is compared with a trusted copy (--attestation-key); the TPM's endorsement key \
     certificate chain is not checked (out of scope)";

/// Why one attestation does not verify.
#[derive(Debug, thiserror::Error)]
pub enum AttestationError {
    /// A field of the attestation object is missing or not what it must be (hex, PEM).
    #[error("attestation field `{0}` is missing or malformed")]
    Field(&'static str),
    /// The statement itself does not verify.
    #[error("{0}")]
    Certify(CertifyError),
    /// The certified Name is not the Name the report states for the version.
    #[error("the certified Name {certified} is not the reported attributes.name {reported}")]
    NameNotReported {
        /// The Name in the statement (hex).
        certified: String,
        /// `device_object.attributes.name` (or `absent`).
        reported: String,
    },
    /// The certified public area lacks a custody attribute (or has `decrypt`).
    #[error("the certified key's public area has {0}")]
    CertifiedAttributes(String),
    /// The statement is signed by another key than the trusted AK.
    #[error("signed by attestation key {0}, not the trusted one")]
    UntrustedKey(String),
    /// The version has a device object in the TPM but the report carries no statement for it.
    #[error("the version's key is reported in the TPM but carries no attestation")]
    Missing,
}

/// The result of checking one version's attestation.
#[derive(Debug)]
pub struct AttestationCheck {
    /// Key name.
    pub key_name: String,
    /// Key id.
    pub key_id: String,
    /// Version number.
    pub version: u64,
    /// `backend/mode` of the key, as the report states them.
    pub placement: String,
    /// Fingerprint (hex SHA-256 of the SPKI DER) of the AK that signed, when readable.
    pub attestation_key: Option<String>,
    /// Verified, or why not.
    pub outcome: Result<(), AttestationError>,
}

impl AttestationCheck {
    /// `key NAME (ID) vN`.
    pub fn subject(&self) -> String {
        format!("key {} ({}) v{}", self.key_name, self.key_id, self.version)
    }
}

impl fmt::Display for AttestationCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Ok(()) => write!(
                f,
                "{} [{}]: TPM attestation verified (AK {})",
                self.subject(),
                self.placement,
                self.attestation_key.as_deref().unwrap_or("?")
            ),
            Err(e) => write!(
                f,
                "{} [{}]: TPM attestation FAILED: {e}",
                self.subject(),
                self.placement
            ),
        }
    }
}

/// Checks every attestation in a custody report payload. Versions without a device object
/// (destroyed, or missing — already an anomaly of the report) and versions of keys on devices
/// that offer no attestation are skipped; a TPM version whose key is reported present
/// (`objects` ≥ 1) without a statement fails with [`AttestationError::Missing`].
///
/// With `trusted`, every statement must be signed by that attestation key.
pub fn check_attestations(payload: &Value, trusted: Option<&PublicKey>) -> Vec<AttestationCheck> {
    let mut checks = Vec::new();
    for key in payload["keys"].as_array().into_iter().flatten() {
        for v in key["versions"].as_array().into_iter().flatten() {
            let object = &v["device_object"];
            if object.is_null() {
                continue;
            }
            let attestation = &object["attestation"];
            let outcome = if attestation.is_null() {
                let present = object["objects"].as_u64().unwrap_or(0) >= 1;
                if key["backend"] == "tpm" && present {
                    Err(AttestationError::Missing)
                } else {
                    continue;
                }
            } else {
                Ok(())
            };
            let mut check = AttestationCheck {
                key_name: text(&key["name"]),
                key_id: text(&key["key_id"]),
                version: v["version"].as_u64().unwrap_or(0),
                placement: format!("{}/{}", text(&key["backend"]), text(&key["mode"])),
                attestation_key: attestation["attestation_key"]
                    .as_str()
                    .and_then(|pem| PublicKey::from_pem(pem).ok())
                    .map(|k| k.fingerprint()),
                outcome,
            };
            if check.outcome.is_ok() {
                check.outcome = check_one(attestation, &object["attributes"]["name"], trusted);
            }
            checks.push(check);
        }
    }
    checks
}

/// Checks one attestation object against the version's reported Name.
///
/// # Errors
/// The first [`AttestationError`] found.
pub fn check_one(
    attestation: &Value,
    reported_name: &Value,
    trusted: Option<&PublicKey>,
) -> Result<(), AttestationError> {
    let hex_field = |name: &'static str| -> Result<Vec<u8>, AttestationError> {
        attestation[name]
            .as_str()
            .and_then(|s| hex::decode(s).ok())
            .ok_or(AttestationError::Field(name))
    };
    let pem = attestation["attestation_key"]
        .as_str()
        .ok_or(AttestationError::Field("attestation_key"))?;
    let cert = Certification {
        attest: hex_field("attest")?,
        signature_der: hex_field("signature")?,
        attestation_key_pem: pem.to_owned(),
        key_name: hex_field("key_name")?,
    };
    let key_public = hex_field("key_public")?;
    let qualifying_data = hex_field("qualifying_data")?;
    if let Some(trusted) = trusted {
        let given =
            PublicKey::from_pem(pem).map_err(|_| AttestationError::Field("attestation_key"))?;
        if given.fingerprint() != trusted.fingerprint() {
            return Err(AttestationError::UntrustedKey(given.fingerprint()));
        }
    }
    verify_certification(&cert, &key_public, &qualifying_data)
        .map_err(AttestationError::Certify)?;
    let certified = hex::encode(&cert.key_name);
    match reported_name.as_str() {
        Some(reported) if reported.eq_ignore_ascii_case(&certified) => {}
        other => {
            return Err(AttestationError::NameNotReported {
                certified,
                reported: other.unwrap_or("absent").to_owned(),
            })
        }
    }
    // The Name covers the public area, so its attributes are what the TPM holds.
    let public = parse_public(&key_public)
        .map_err(|_| AttestationError::Certify(CertifyError::KeyPublic))?;
    let a = public.object_attributes();
    let mut lacking = Vec::new();
    for (name, value, required) in [
        ("fixedTPM", a.fixed_tpm(), true),
        ("fixedParent", a.fixed_parent(), true),
        ("sensitiveDataOrigin", a.sensitive_data_origin(), true),
        ("decrypt", a.decrypt(), false),
    ] {
        if value != required {
            lacking.push(format!("{name} {value}"));
        }
    }
    if !lacking.is_empty() {
        return Err(AttestationError::CertifiedAttributes(lacking.join(", ")));
    }
    Ok(())
}

/// The verdict of all checks of one report: counts and the failures.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AttestationTally {
    /// Statements that verified.
    pub verified: usize,
    /// Statements that did not (or are missing).
    pub failed: usize,
}

/// Counts `checks`.
pub fn tally(checks: &[AttestationCheck]) -> AttestationTally {
    let failed = checks.iter().filter(|c| c.outcome.is_err()).count();
    AttestationTally {
        verified: checks.len() - failed,
        failed,
    }
}

/// The distinct AK fingerprints that signed, in order of first appearance.
pub fn attestation_keys(checks: &[AttestationCheck]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for k in checks.iter().filter_map(|c| c.attestation_key.as_ref()) {
        if !keys.contains(k) {
            keys.push(k.clone());
        }
    }
    keys
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "?".to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use p256::ecdsa::signature::Signer as _;
    use p256::ecdsa::{Signature, SigningKey};
    use p256::pkcs8::{EncodePublicKey as _, LineEnding};
    use serde_json::json;
    use tss_esapi::attributes::ObjectAttributesBuilder;
    use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
    use tss_esapi::structures::{
        Digest, KeyedHashScheme, PublicBuffer, PublicBuilder, PublicKeyedHashParameters,
    };
    use tss_esapi::traits::Marshall as _;

    use super::*;
    use crate::backend::tpm::keys::name_of;

    /// A marshalled TPM2B_PUBLIC of an HMAC key with (or without) `fixedTPM`, and its Name.
    fn key_public(fixed_tpm: bool) -> (Vec<u8>, Vec<u8>) {
        let attributes = ObjectAttributesBuilder::new()
            .with_fixed_tpm(fixed_tpm)
            .with_fixed_parent(true)
            .with_sensitive_data_origin(true)
            .with_user_with_auth(true)
            .with_sign_encrypt(true)
            .build()
            .unwrap();
        let public = PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::KeyedHash)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attributes)
            .with_keyed_hash_parameters(PublicKeyedHashParameters::new(
                KeyedHashScheme::HMAC_SHA_256,
            ))
            .with_keyed_hash_unique_identifier(Digest::try_from(vec![7u8; 32]).unwrap())
            .build()
            .unwrap();
        let name = name_of(&public).unwrap();
        let bytes = PublicBuffer::try_from(public).unwrap().marshall().unwrap();
        (bytes, name)
    }

    fn tpm2b(b: &[u8]) -> Vec<u8> {
        let mut out = (b.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(b);
        out
    }

    /// A TPMS_ATTEST of type certify (TPM 2.0 Part 2, 10.12.12), as a TPM would marshal it.
    fn attest_bytes(name: &[u8], qualifying: &[u8]) -> Vec<u8> {
        let mut a = 0xff54_4347u32.to_be_bytes().to_vec(); // TPM_GENERATED_VALUE
        a.extend_from_slice(&0x8017u16.to_be_bytes()); // TPM_ST_ATTEST_CERTIFY
        a.extend(tpm2b(&[0x00, 0x0b, 1, 2, 3])); // qualifiedSigner
        a.extend(tpm2b(qualifying)); // extraData
        a.extend_from_slice(&[0u8; 17]); // clockInfo: clock, resetCount, restartCount, safe
        a.extend_from_slice(&[0u8; 8]); // firmwareVersion
        a.extend(tpm2b(name)); // certifyInfo.name
        a.extend(tpm2b(name)); // certifyInfo.qualifiedName
        a
    }

    fn ak() -> SigningKey {
        SigningKey::from_slice(&[9u8; 32]).unwrap()
    }

    /// A report's attestation object that verifies, and the version's reported Name (hex).
    pub(crate) fn attestation(fixed_tpm: bool) -> (Value, String) {
        let (public, name) = key_public(fixed_tpm);
        let qualifying = [0x5au8; 32];
        let attest = attest_bytes(&name, &qualifying);
        let sig: Signature = ak().sign(&attest);
        let pem = ak()
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let att = json!({
            "attest": hex::encode(&attest),
            "signature": hex::encode(sig.to_der().as_bytes()),
            "attestation_key": pem,
            "key_name": hex::encode(&name),
            "qualifying_data": hex::encode(qualifying),
            "key_public": hex::encode(&public),
        });
        (att, hex::encode(&name))
    }

    fn payload(att: &Value, name: &str) -> Value {
        json!({
            "keys": [{
                "key_id": "k-9", "name": "vault", "backend": "tpm", "mode": "direct",
                "versions": [
                    {"version": 1, "device_object": null},
                    {"version": 2, "device_object": {
                        "objects": 1, "attributes": {"name": name, "fixedTPM": true},
                        "attestation": att
                    }}
                ]
            }, {
                "key_id": "k-1", "name": "hsm", "backend": "pkcs11", "mode": "direct",
                "versions": [{"version": 1, "device_object": {"objects": 1, "attributes": {}}}]
            }]
        })
    }

    #[test]
    fn a_genuine_statement_verifies_and_names_its_signer() {
        let (att, name) = attestation(true);
        let checks = check_attestations(&payload(&att, &name), None);
        assert_eq!(
            checks.len(),
            1,
            "destroyed and PKCS#11 versions are skipped"
        );
        assert!(checks[0].outcome.is_ok(), "{}", checks[0]);
        assert_eq!(
            tally(&checks),
            AttestationTally {
                verified: 1,
                failed: 0
            }
        );
        let fp = PublicKey::from_pem(att["attestation_key"].as_str().unwrap())
            .unwrap()
            .fingerprint();
        assert_eq!(attestation_keys(&checks), vec![fp.clone()]);
        assert_eq!(
            checks[0].to_string(),
            format!("key vault (k-9) v2 [tpm/direct]: TPM attestation verified (AK {fp})")
        );
        // Pinned to the right AK: still verifies.
        let trusted = PublicKey::from_pem(att["attestation_key"].as_str().unwrap()).unwrap();
        assert!(check_attestations(&payload(&att, &name), Some(&trusted))[0]
            .outcome
            .is_ok());
    }

    #[test]
    fn a_tampered_attest_fails_naming_the_key_version() {
        let (mut att, name) = attestation(true);
        let mut bytes = hex::decode(att["attest"].as_str().unwrap()).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        att["attest"] = Value::String(hex::encode(bytes));
        let checks = check_attestations(&payload(&att, &name), None);
        assert!(matches!(
            checks[0].outcome,
            Err(AttestationError::Certify(CertifyError::BadSignature))
        ));
        let line = checks[0].to_string();
        assert!(line.starts_with("key vault (k-9) v2 [tpm/direct]: TPM attestation FAILED"));
        assert_eq!(
            tally(&checks),
            AttestationTally {
                verified: 0,
                failed: 1
            }
        );
    }

    #[test]
    fn every_other_forgery_fails() {
        let (att, name) = attestation(true);
        let fails = |att: &Value, name: &str, trusted: Option<&PublicKey>| {
            check_attestations(&payload(att, name), trusted)
                .into_iter()
                .next()
                .unwrap()
                .outcome
                .unwrap_err()
        };
        // The report states another Name for the version.
        let other = format!("000b{}", "00".repeat(32));
        assert!(matches!(
            fails(&att, &other, None),
            AttestationError::NameNotReported { .. }
        ));
        // Another qualifying data.
        let mut q = att.clone();
        q["qualifying_data"] = json!("00");
        assert!(matches!(
            fails(&q, &name, None),
            AttestationError::Certify(CertifyError::QualifyingDataMismatch)
        ));
        // Another key's public area.
        let mut p = att.clone();
        p["key_public"] = json!(hex::encode(key_public(false).0));
        assert!(matches!(
            fails(&p, &name, None),
            AttestationError::Certify(CertifyError::NameMismatch)
        ));
        // A field that is not hex.
        let mut h = att.clone();
        h["signature"] = json!("zz");
        assert!(matches!(
            fails(&h, &name, None),
            AttestationError::Field("signature")
        ));
        // Signed by an AK other than the trusted one.
        let stranger = SigningKey::from_slice(&[3u8; 32]).unwrap();
        let pem = stranger
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let trusted = PublicKey::from_pem(&pem).unwrap();
        assert!(matches!(
            fails(&att, &name, Some(&trusted)),
            AttestationError::UntrustedKey(_)
        ));
        // A genuine statement about a key without fixedTPM.
        let (weak, weak_name) = attestation(false);
        let e = fails(&weak, &weak_name, None);
        assert!(
            matches!(&e, AttestationError::CertifiedAttributes(a) if a == "fixedTPM false"),
            "{e}"
        );
        // A TPM key present in the device without a statement.
        let mut none = payload(&att, &name);
        none["keys"][0]["versions"][1]["device_object"]["attestation"] = Value::Null;
        let checks = check_attestations(&none, None);
        assert!(matches!(checks[0].outcome, Err(AttestationError::Missing)));
    }
}
