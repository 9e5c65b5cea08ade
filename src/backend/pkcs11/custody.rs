//! Custody evidence from the token: object attributes read back at report time, the token's own
//! description, and the audit signing key (ECDSA P-256, generated in the token, non-extractable).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use cryptoki::error::Error as CkError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{OpFailure, Pkcs11Backend, RequestErrors};
use crate::audit::signature::{raw_to_der, PublicKey};
use crate::backend::{AuditSigner, BackendError, ObjectFacts};

/// `CKA_ID` of the audit signing key pair.
pub const SIGNING_KEY_ID: &[u8] = b"custodian:audit-signing:v1";
/// `CKA_LABEL` of the audit signing key pair.
pub const SIGNING_KEY_LABEL: &str = "custodian:audit-signing";
/// DER of the OID of P-256 (prime256v1), the `CKA_EC_PARAMS` of the signing key.
const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// The boolean custody attributes and the value invariant 1 requires of each.
const REQUIRED_FLAGS: &[(AttributeType, &str, bool)] = &[
    (AttributeType::Token, "CKA_TOKEN", true),
    (AttributeType::Private, "CKA_PRIVATE", true),
    (AttributeType::Sensitive, "CKA_SENSITIVE", true),
    (AttributeType::AlwaysSensitive, "CKA_ALWAYS_SENSITIVE", true),
    (AttributeType::Extractable, "CKA_EXTRACTABLE", false),
    (
        AttributeType::NeverExtractable,
        "CKA_NEVER_EXTRACTABLE",
        true,
    ),
    (AttributeType::Local, "CKA_LOCAL", true),
];

/// Reads `handle`'s custody attributes and judges them against invariant 1. An attribute the
/// token does not report counts as a weakness (cryptoki omits refused attributes silently).
pub fn read_facts(
    session: &Session,
    handle: ObjectHandle,
    objects: usize,
    expected: (KeyType, u64),
) -> Result<ObjectFacts, CkError> {
    let mut wanted: Vec<AttributeType> = REQUIRED_FLAGS.iter().map(|(t, _, _)| *t).collect();
    wanted.push(AttributeType::KeyType);
    let mut attrs = session.get_attributes(handle, &wanted)?;
    // Key length: CKA_VALUE_LEN for secret keys, CKA_EC_PARAMS for EC keys.
    let extra = if expected.0 == KeyType::EC {
        AttributeType::EcParams
    } else {
        AttributeType::ValueLen
    };
    attrs.extend(session.get_attributes(handle, &[extra])?);
    let mut facts = ObjectFacts {
        attributes: BTreeMap::new(),
        key_type: "not reported".to_owned(),
        key_bits: 0,
        objects,
        weaknesses: Vec::new(),
        attestation: None,
    };
    let mut flags: BTreeMap<&str, bool> = BTreeMap::new();
    for attr in attrs {
        let named = |t: AttributeType| REQUIRED_FLAGS.iter().find(|(a, _, _)| *a == t);
        match attr {
            Attribute::Token(v)
            | Attribute::Private(v)
            | Attribute::Sensitive(v)
            | Attribute::AlwaysSensitive(v)
            | Attribute::Extractable(v)
            | Attribute::NeverExtractable(v)
            | Attribute::Local(v) => {
                if let Some((_, name, _)) = named(attr.attribute_type()) {
                    flags.insert(name, v);
                }
            }
            Attribute::KeyType(k) => facts.key_type = k.to_string(),
            Attribute::ValueLen(n) => facts.key_bits = u64::from(n) * 8,
            Attribute::EcParams(p) if p == P256_OID => facts.key_bits = 256,
            _ => {}
        }
    }
    for (_, name, required) in REQUIRED_FLAGS {
        match flags.get(name) {
            Some(v) => {
                facts.attributes.insert((*name).to_owned(), Value::Bool(*v));
                if v != required {
                    facts.weaknesses.push(format!("{name} is {v}"));
                }
            }
            None => facts.weaknesses.push(format!("{name} not reported")),
        }
    }
    if facts.key_type != expected.0.to_string() {
        facts.weaknesses.push(format!(
            "key type is {}, expected {}",
            facts.key_type, expected.0
        ));
    }
    if facts.key_bits != expected.1 {
        facts.weaknesses.push(format!(
            "key size is {} bits, expected {}",
            facts.key_bits, expected.1
        ));
    }
    if objects > 1 {
        facts
            .weaknesses
            .push(format!("{objects} device objects share this id"));
    }
    facts.attributes.insert(
        "CKA_KEY_TYPE".to_owned(),
        Value::String(facts.key_type.clone()),
    );
    Ok(facts)
}

/// Finds every token object of `class` with `id`, without the handle cache.
pub fn find_all(
    session: &Session,
    class: ObjectClass,
    id: &[u8],
) -> Result<Vec<ObjectHandle>, CkError> {
    session.find_objects(&[
        Attribute::Class(class),
        Attribute::Token(true),
        Attribute::Id(id.to_vec()),
    ])
}

/// The signing key pair's templates: every attribute explicit (SoftHSM defaults are generous).
fn signing_templates() -> (Vec<Attribute>, Vec<Attribute>) {
    let public = vec![
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::EC),
        Attribute::EcParams(P256_OID.to_vec()),
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::Derive(false),
        Attribute::Modifiable(false),
        Attribute::Id(SIGNING_KEY_ID.to_vec()),
        Attribute::Label(SIGNING_KEY_LABEL.as_bytes().to_vec()),
    ];
    let private = vec![
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::EC),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Modifiable(false),
        Attribute::Copyable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Id(SIGNING_KEY_ID.to_vec()),
        Attribute::Label(SIGNING_KEY_LABEL.as_bytes().to_vec()),
    ];
    (public, private)
}

/// The SEC1 point inside `CKA_EC_POINT`, which PKCS#11 wraps in a DER OCTET STRING (some
/// tokens return it bare).
fn sec1_point(raw: &[u8]) -> &[u8] {
    match raw {
        [0x04, len, rest @ ..] if usize::from(*len) == rest.len() => rest,
        _ => raw,
    }
}

/// Finds the signing key pair, generating it in the token when there is none; returns the
/// public key.
fn ensure_signing_key(session: &Session) -> Result<PublicKey, OpFailure> {
    let mut public = find_all(session, ObjectClass::PUBLIC_KEY, SIGNING_KEY_ID)?;
    let private = find_all(session, ObjectClass::PRIVATE_KEY, SIGNING_KEY_ID)?;
    if public.is_empty() && private.is_empty() {
        let (pt, st) = signing_templates();
        let (p, _) = session.generate_key_pair(&Mechanism::EccKeyPairGen, &pt, &st)?;
        tracing::info!(
            label = SIGNING_KEY_LABEL,
            "audit signing key generated in the token"
        );
        public = vec![p];
    } else if public.len() != 1 || private.len() != 1 {
        return Err(OpFailure::Backend(BackendError::Open(format!(
            "the token holds {} public and {} private objects with the audit signing key id; expected one of each",
            public.len(),
            private.len()
        ))));
    }
    let handle = public
        .first()
        .copied()
        .ok_or(BackendError::Invariant("signing public key vanished"))?;
    let attrs = session.get_attributes(handle, &[AttributeType::EcPoint])?;
    let point = attrs
        .into_iter()
        .find_map(|a| match a {
            Attribute::EcPoint(p) => Some(p),
            _ => None,
        })
        .ok_or(BackendError::Invariant(
            "the token did not report CKA_EC_POINT",
        ))?;
    PublicKey::from_sec1(sec1_point(&point))
        .map_err(|e| OpFailure::Backend(BackendError::Open(format!("audit signing key: {e}"))))
}

/// The audit signer of a PKCS#11 token.
pub struct Pkcs11Signer {
    backend: Pkcs11Backend,
    public: PublicKey,
}

impl Pkcs11Signer {
    /// Finds or generates the signing key pair in the token.
    ///
    /// # Errors
    /// Device errors; `Open` when the token holds a damaged pair.
    pub async fn open(backend: Pkcs11Backend) -> Result<Arc<Self>, BackendError> {
        let public = backend
            .with_session(RequestErrors::DeviceFault, |_, session| {
                ensure_signing_key(session)
            })
            .await?;
        Ok(Arc::new(Self { backend, public }))
    }
}

#[async_trait]
impl AuditSigner for Pkcs11Signer {
    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    async fn sign(&self, message: Vec<u8>) -> Result<Vec<u8>, BackendError> {
        let digest = Sha256::digest(&message).to_vec();
        let raw = self
            .backend
            .with_session(RequestErrors::DeviceFault, move |_, session| {
                let keys = find_all(session, ObjectClass::PRIVATE_KEY, SIGNING_KEY_ID)?;
                let key = match keys.as_slice() {
                    [k] => *k,
                    _ => {
                        return Err(OpFailure::Backend(BackendError::RootKeyMissing(
                            SIGNING_KEY_LABEL.to_owned(),
                        )))
                    }
                };
                Ok(session.sign(&Mechanism::Ecdsa, key, &digest)?)
            })
            .await?;
        let der = raw_to_der(&raw).map_err(|e| BackendError::Device(Box::new(e)))?;
        // Never hand out a signature that does not verify under the published key.
        self.public
            .verify(&message, &der)
            .map_err(|e| BackendError::Device(Box::new(e)))?;
        Ok(der)
    }

    async fn inspect(&self) -> Result<Option<ObjectFacts>, BackendError> {
        self.backend
            .with_session(RequestErrors::DeviceFault, |_, session| {
                let keys = find_all(session, ObjectClass::PRIVATE_KEY, SIGNING_KEY_ID)?;
                match keys.first() {
                    None => Ok(None),
                    Some(k) => Ok(Some(read_facts(
                        session,
                        *k,
                        keys.len(),
                        (KeyType::EC, 256),
                    )?)),
                }
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_is_unwrapped_from_its_octet_string() {
        let mut point = vec![0x04u8];
        point.extend([1u8; 64]);
        let mut wrapped = vec![0x04, 65];
        wrapped.extend(&point);
        assert_eq!(sec1_point(&wrapped), point.as_slice());
        assert_eq!(sec1_point(&point), point.as_slice());
    }

    #[test]
    fn signing_private_key_is_pinned_non_extractable() {
        let (_, private) = signing_templates();
        for required in [
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Token(true),
            Attribute::Decrypt(false),
        ] {
            assert!(private.contains(&required), "{required:?}");
        }
    }
}
