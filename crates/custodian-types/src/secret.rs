//! Types for secret values: PINs, bearer tokens, data keys and plaintext.
//!
//! None of them derives `Debug`, `Clone` or `Serialize`: `Debug` is written by hand and prints
//! only a length, copies are explicit, and bytes are reached through `expose_secret`. All of
//! them zeroise their memory on drop.

use std::fmt;

use zeroize::{Zeroize, Zeroizing};

/// A PKCS#11 user PIN (or SO PIN). Read from a file or the environment, never from argv.
pub type Pin = secrecy::SecretString;

/// Secret bytes: a data key or a decrypted payload.
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Takes ownership of `bytes`; they are zeroised when this value drops.
    pub fn new(bytes: Zeroizing<Vec<u8>>) -> Self {
        Self(bytes)
    }

    /// Copies `bytes` into a zeroising buffer.
    pub fn copy_from(bytes: &[u8]) -> Self {
        Self(Zeroizing::new(bytes.to_vec()))
    }

    /// The secret bytes.
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes([REDACTED; {} bytes])", self.0.len())
    }
}

/// A bearer token as presented by a client (`cst_<id>_<secret>`).
pub struct BearerToken(String);

impl BearerToken {
    /// Wraps the text of a presented or freshly minted token.
    pub fn new(text: String) -> Self {
        Self(text)
    }

    /// The full token text, for showing it once or sending it in a header.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl Drop for BearerToken {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken([REDACTED])")
    }
}

/// Secret text from a request body (e.g. base64 of a plaintext): zeroised on drop, redacted in
/// `Debug`, deserialised straight from a JSON string.
pub struct SecretText(Zeroizing<String>);

impl SecretText {
    /// The text.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretText([REDACTED; {} chars])", self.0.len())
    }
}

impl<'de> serde::Deserialize<'de> for SecretText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| Self(Zeroizing::new(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secret_bytes() {
        let s = SecretBytes::copy_from(b"hunter2-data-key");
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("16 bytes"));
        let t = BearerToken::new("cst_abcd_supersecret".to_owned());
        assert!(!format!("{t:?}").contains("supersecret"));
        let text: SecretText = serde_json::from_str("\"c2VjcmV0LXRleHQ=\"").unwrap();
        assert_eq!(text.expose_secret(), "c2VjcmV0LXRleHQ=");
        assert!(!format!("{text:?}").contains("c2Vj"));
        let pin = Pin::from("123456-pin".to_owned());
        assert!(!format!("{pin:?}").contains("123456"));
    }
}
