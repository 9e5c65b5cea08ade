//! Version 1 of the native JSON API. Handlers stay thin: extract, call the service, map.

pub mod access_keys;
pub mod audit;
pub mod crypto;
pub mod database;
pub mod health;
pub mod identity;
pub mod keys;
pub mod lifecycle;
pub mod metrics;
pub mod secrets;
#[cfg(test)]
mod wire;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use zeroize::Zeroizing;

use super::error::ApiError;
use crate::secret::SecretText;

/// Decodes a standard base64 field into zeroising memory.
pub(crate) fn decode_secret(
    field: &'static str,
    text: &SecretText,
) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    STANDARD
        .decode(text.expose_secret())
        .map(Zeroizing::new)
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_base64",
                format!("field `{field}` is not valid base64"),
            )
        })
}

/// Decodes a standard base64 field that is not secret.
pub(crate) fn decode_public(field: &'static str, text: &str) -> Result<Vec<u8>, ApiError> {
    STANDARD.decode(text).map_err(|_| {
        ApiError::bad_request(
            "invalid_base64",
            format!("field `{field}` is not valid base64"),
        )
    })
}

/// Encodes bytes as standard base64.
pub(crate) fn encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Encodes secret bytes as standard base64 into zeroising memory.
pub(crate) fn encode_secret(bytes: &[u8]) -> Zeroizing<String> {
    Zeroizing::new(STANDARD.encode(bytes))
}
