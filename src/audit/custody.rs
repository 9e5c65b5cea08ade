//! The signed custody report envelope: the report's JSON text exactly as signed, the
//! signature, and offline verification.
//!
//! The payload is kept as a string so the signed bytes survive any JSON tooling: an auditor
//! extracts it with `jq -j .payload` and checks the signature with OpenSSL (`docs/audit.md`).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::signature::{PublicKey, SignatureError, ALGORITHM};

/// The format name inside every report payload.
pub const FORMAT: &str = "custodian-custody-report/v1";

/// A signed report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReport {
    /// The report, as the JSON text that was signed.
    pub payload: String,
    /// [`ALGORITHM`].
    pub algorithm: String,
    /// Fingerprint of the signing key.
    pub key_fingerprint: String,
    /// Base64 DER signature over the payload's UTF-8 bytes.
    pub signature: String,
}

/// Why a signed report did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// The signature is missing, malformed or wrong.
    #[error("signature: {0}")]
    Signature(#[from] SignatureError),
    /// The signature is fine but the payload is not a custody report.
    #[error("the payload is not a custody report: {0}")]
    Payload(String),
    /// The report names another signing key.
    #[error("the report names signing key {0}, not the given public key")]
    OtherKey(String),
}

impl SignedReport {
    /// Checks the signature under `key` and returns the parsed payload.
    ///
    /// # Errors
    /// [`ReportError`].
    pub fn verify(&self, key: &PublicKey) -> Result<serde_json::Value, ReportError> {
        if self.algorithm != ALGORITHM {
            return Err(SignatureError::Algorithm(self.algorithm.clone()).into());
        }
        if self.key_fingerprint != key.fingerprint() {
            return Err(ReportError::OtherKey(self.key_fingerprint.clone()));
        }
        let sig = STANDARD
            .decode(&self.signature)
            .map_err(|_| SignatureError::Encoding)?;
        key.verify(self.payload.as_bytes(), &sig)?;
        let value: serde_json::Value =
            serde_json::from_str(&self.payload).map_err(|e| ReportError::Payload(e.to_string()))?;
        if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            return Err(ReportError::Payload("unknown format".into()));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer as _;
    use p256::ecdsa::{Signature, SigningKey};

    fn signed(payload: &str) -> (SignedReport, PublicKey) {
        let sk = SigningKey::from_slice(&[4u8; 32]).expect("scalar");
        let pk = PublicKey::from_sec1(&sk.verifying_key().to_encoded_point(false).to_bytes())
            .expect("point");
        let sig: Signature = sk.sign(payload.as_bytes());
        (
            SignedReport {
                payload: payload.to_owned(),
                algorithm: ALGORITHM.into(),
                key_fingerprint: pk.fingerprint(),
                signature: STANDARD.encode(sig.to_der().as_bytes()),
            },
            pk,
        )
    }

    #[test]
    fn verifies_and_catches_edits() {
        let (r, pk) = signed(r#"{"format":"custodian-custody-report/v1","keys":[]}"#);
        assert!(r.verify(&pk).is_ok());
        let mut t = r.clone();
        t.payload = t.payload.replace("[]", "[1]");
        assert!(matches!(
            t.verify(&pk),
            Err(ReportError::Signature(SignatureError::Mismatch))
        ));
        let mut other = r.clone();
        other.key_fingerprint = "00".into();
        assert!(matches!(other.verify(&pk), Err(ReportError::OtherKey(_))));
        let (wrong_format, pk2) = signed(r#"{"format":"x"}"#);
        assert!(matches!(
            wrong_format.verify(&pk2),
            Err(ReportError::Payload(_))
        ));
    }
}
