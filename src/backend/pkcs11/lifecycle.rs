//! Root key generation, read-back and destruction.

use cryptoki::error::Error as CkError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use crate::domain::RootKeyRef;

/// AES-256 key length in bytes.
const AES_256_LEN: u64 = 32;

/// The template of a root key: DESIGN.md invariant 1, every attribute set explicitly (SoftHSM
/// turns `CKA_SIGN`, `CKA_VERIFY` and `CKA_COPYABLE` on unless told otherwise).
pub fn root_key_template(root: &RootKeyRef) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(AES_256_LEN.into()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Modifiable(false),
        Attribute::Copyable(false),
        Attribute::Destroyable(true),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
        Attribute::Id(root.device_id()),
        Attribute::Label(root.label().into_bytes()),
    ]
}

/// Custody attributes of a root key as the device reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CustodyAttributes {
    /// `CKA_SENSITIVE`
    pub sensitive: bool,
    /// `CKA_ALWAYS_SENSITIVE`
    pub always_sensitive: bool,
    /// `CKA_EXTRACTABLE`
    pub extractable: bool,
    /// `CKA_NEVER_EXTRACTABLE`
    pub never_extractable: bool,
    /// `CKA_LOCAL` (generated on the device)
    pub local: bool,
    /// `CKA_TOKEN` (persistent)
    pub token: bool,
    /// `CKA_VALUE_LEN` in bytes
    pub value_len: u64,
}

impl CustodyAttributes {
    /// True when the key satisfies invariant 1. An attribute the device did not report counts
    /// as failing (cryptoki omits refused attributes and still returns Ok).
    pub fn satisfies_custody(&self) -> bool {
        self.sensitive
            && self.always_sensitive
            && !self.extractable
            && self.never_extractable
            && self.local
            && self.token
            && self.value_len == AES_256_LEN
    }
}

/// Reads the custody attributes of `handle` back from the device.
///
/// # Errors
/// The cryptoki error of `C_GetAttributeValue`.
pub fn read_custody_attributes(
    session: &Session,
    handle: ObjectHandle,
) -> Result<CustodyAttributes, CkError> {
    let attrs = session.get_attributes(
        handle,
        &[
            AttributeType::Sensitive,
            AttributeType::AlwaysSensitive,
            AttributeType::Extractable,
            AttributeType::NeverExtractable,
            AttributeType::Local,
            AttributeType::Token,
            AttributeType::ValueLen,
        ],
    )?;
    // Start from the failing value of every flag, so a missing attribute fails the check.
    let mut out = CustodyAttributes {
        extractable: true,
        ..CustodyAttributes::default()
    };
    for attr in attrs {
        match attr {
            Attribute::Sensitive(v) => out.sensitive = v,
            Attribute::AlwaysSensitive(v) => out.always_sensitive = v,
            Attribute::Extractable(v) => out.extractable = v,
            Attribute::NeverExtractable(v) => out.never_extractable = v,
            Attribute::Local(v) => out.local = v,
            Attribute::Token(v) => out.token = v,
            Attribute::ValueLen(v) => out.value_len = u64::from(v),
            _ => {}
        }
    }
    Ok(out)
}

/// Generates the root key for `root`.
///
/// # Errors
/// The cryptoki error of `C_GenerateKey`.
pub fn generate_root_key(session: &Session, root: &RootKeyRef) -> Result<ObjectHandle, CkError> {
    session.generate_key(&Mechanism::AesKeyGen, &root_key_template(root))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_pins_every_custody_attribute() {
        let root = RootKeyRef::bare(
            crate::domain::KeyId::generate(),
            crate::domain::KeyVersion::FIRST,
        );
        let t = root_key_template(&root);
        for required in [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Copyable(false),
            Attribute::Wrap(false),
            Attribute::Sign(false),
        ] {
            assert!(t.contains(&required), "template lacks {required:?}");
        }
    }

    #[test]
    fn missing_attributes_fail_custody() {
        assert!(!CustodyAttributes::default().satisfies_custody());
        let good = CustodyAttributes {
            sensitive: true,
            always_sensitive: true,
            extractable: false,
            never_extractable: true,
            local: true,
            token: true,
            value_len: 32,
        };
        assert!(good.satisfies_custody());
        assert!(!CustodyAttributes {
            extractable: true,
            ..good
        }
        .satisfies_custody());
        assert!(!CustodyAttributes {
            local: false,
            ..good
        }
        .satisfies_custody());
    }
}
