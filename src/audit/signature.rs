//! Signatures made by the device-resident audit signing key (ECDSA P-256 over SHA-256, DER
//! encoded) and their offline verification with a PEM public key. Used for checkpoints and for
//! the custody report; verification needs no server and no database.

use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::{DecodePublicKey, EncodePublicKey};
use sha2::{Digest, Sha256};

/// The algorithm name written next to every signature.
pub const ALGORITHM: &str = "ecdsa-p256-sha256";

/// Why a signature or public key was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The PEM is not a P-256 public key.
    #[error("not a P-256 public key in PEM (SubjectPublicKeyInfo)")]
    PublicKey,
    /// The signature is not DER-encoded ECDSA.
    #[error("the signature is not a DER-encoded ECDSA signature")]
    Encoding,
    /// The algorithm named is not the one this build verifies.
    #[error("unsupported signature algorithm {0:?}")]
    Algorithm(String),
    /// The signature does not verify under the key.
    #[error("the signature does not verify")]
    Mismatch,
}

/// A P-256 public key for verification.
#[derive(Debug, Clone)]
pub struct PublicKey {
    key: VerifyingKey,
}

impl PublicKey {
    /// Parses a PEM `PUBLIC KEY` (SubjectPublicKeyInfo).
    ///
    /// # Errors
    /// `PublicKey` when it is anything else.
    pub fn from_pem(pem: &str) -> Result<Self, SignatureError> {
        let key =
            VerifyingKey::from_public_key_pem(pem.trim()).map_err(|_| SignatureError::PublicKey)?;
        Ok(Self { key })
    }

    /// The key from an uncompressed or compressed SEC1 point.
    ///
    /// # Errors
    /// `PublicKey` when it is not a point on P-256.
    pub fn from_sec1(point: &[u8]) -> Result<Self, SignatureError> {
        let key = VerifyingKey::from_sec1_bytes(point).map_err(|_| SignatureError::PublicKey)?;
        Ok(Self { key })
    }

    /// PEM `PUBLIC KEY`, as served at `GET /v1/audit/public-key`.
    ///
    /// # Errors
    /// `PublicKey` if encoding fails (it does not for a valid key).
    pub fn to_pem(&self) -> Result<String, SignatureError> {
        self.key
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .map_err(|_| SignatureError::PublicKey)
    }

    /// Hex SHA-256 of the DER SubjectPublicKeyInfo: how records name the key.
    pub fn fingerprint(&self) -> String {
        match self.key.to_public_key_der() {
            Ok(der) => hex::encode(Sha256::digest(der.as_bytes())),
            Err(_) => String::new(),
        }
    }

    /// Checks a DER signature over `message` (hashed with SHA-256).
    ///
    /// # Errors
    /// `Encoding` or `Mismatch`.
    pub fn verify(&self, message: &[u8], signature_der: &[u8]) -> Result<(), SignatureError> {
        let sig = Signature::from_der(signature_der).map_err(|_| SignatureError::Encoding)?;
        self.key
            .verify(message, &sig)
            .map_err(|_| SignatureError::Mismatch)
    }
}

/// A raw `r ‖ s` signature (as PKCS#11 `CKM_ECDSA` returns it) in DER, as OpenSSL expects it.
///
/// # Errors
/// `Encoding` when it is not 64 bytes of a valid signature.
pub fn raw_to_der(raw: &[u8]) -> Result<Vec<u8>, SignatureError> {
    let sig = Signature::from_slice(raw).map_err(|_| SignatureError::Encoding)?;
    Ok(sig.to_der().as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer as _;
    use p256::ecdsa::SigningKey;

    fn key() -> SigningKey {
        SigningKey::from_slice(&[7u8; 32]).expect("valid scalar")
    }

    #[test]
    fn pem_round_trip_and_verify() {
        let sk = key();
        let pk = PublicKey::from_sec1(&sk.verifying_key().to_encoded_point(false).to_bytes())
            .expect("point");
        let pem = pk.to_pem().expect("pem");
        let back = PublicKey::from_pem(&pem).expect("parse");
        assert_eq!(back.fingerprint(), pk.fingerprint());
        let sig: Signature = sk.sign(b"message");
        let der = raw_to_der(&sig.to_bytes()).expect("der");
        back.verify(b"message", &der).expect("verifies");
        assert_eq!(back.verify(b"messagE", &der), Err(SignatureError::Mismatch));
        let mut bad = der.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(back.verify(b"message", &bad).is_err());
        assert_eq!(
            back.verify(b"message", b"junk"),
            Err(SignatureError::Encoding)
        );
    }

    #[test]
    fn rejects_non_keys() {
        assert_eq!(
            PublicKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----").err(),
            Some(SignatureError::PublicKey)
        );
        assert!(raw_to_der(&[0; 10]).is_err());
    }
}
