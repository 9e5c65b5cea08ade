//! Data keys and small-payload encryption: `POST /v1/keys/{key}/datakey`,
//! `POST /v1/keys/{key}/encrypt`, `POST /v1/decrypt`.

use axum::Json;

use super::keys::key_ref;
use super::{decode_public, decode_secret, encode, encode_secret};
use crate::api::error::ApiError;
use crate::api::extract::{ApiJson, Caller, KeyPath, RequestBody};
use crate::api_types::crypto::{
    DataKeyRequest, DataKeyResponse, DecryptRequest, DecryptResponse, EncryptRequest,
    EncryptResponse,
};
use crate::format::blob::{MAX_BLOB_LEN, MAX_PLAINTEXT_LEN};
use crate::secret::SecretBytes;
use crate::service::{DataKeyLen, PlaintextCopy, Sealing};

impl RequestBody for DataKeyRequest {
    const NULLABLE: &'static [&'static str] = &["bytes", "plaintext"];
    const FIELDS: &'static [&'static str] = DataKeyRequest::FIELDS;
    fn field_code(field: &str) -> &'static str {
        match field {
            "context" => "invalid_context",
            "bytes" => "invalid_bytes",
            _ => "invalid_field",
        }
    }
}

impl RequestBody for EncryptRequest {
    const FIELDS: &'static [&'static str] = EncryptRequest::FIELDS;
}

impl RequestBody for DecryptRequest {
    const FIELDS: &'static [&'static str] = DecryptRequest::FIELDS;
}

/// `POST /v1/keys/{key}/datakey`
pub async fn datakey(
    Caller(p): Caller,
    KeyPath(key): KeyPath,
    ApiJson(body): ApiJson<DataKeyRequest>,
) -> Result<Json<DataKeyResponse>, ApiError> {
    let r = key_ref(&key)?;
    let len = DataKeyLen::from_bytes(body.bytes.unwrap_or(32))
        .ok_or_else(|| ApiError::bad_request("invalid_bytes", "bytes must be 16, 24 or 32"))?;
    let copy = if body.plaintext.unwrap_or(true) {
        PlaintextCopy::Include
    } else {
        PlaintextCopy::Omit
    };
    let dk = p.generate_data_key(&r, len, &body.context, copy).await?;
    Ok(Json(DataKeyResponse {
        key_id: dk.sealed.key_id,
        key_version: dk.sealed.key_version,
        ciphertext: encode(&dk.sealed.ciphertext),
        plaintext: dk.plaintext.map(|p| encode_secret(p.expose_secret())),
    }))
}

/// `POST /v1/keys/{key}/encrypt`
pub async fn encrypt(
    Caller(p): Caller,
    KeyPath(key): KeyPath,
    ApiJson(body): ApiJson<EncryptRequest>,
) -> Result<Json<EncryptResponse>, ApiError> {
    let r = key_ref(&key)?;
    // Refuse oversized input before decoding it: base64 of 4096 bytes is 5464 characters.
    if body.plaintext.expose_secret().len() > MAX_PLAINTEXT_LEN.div_ceil(3) * 4 {
        return Err(ApiError::bad_request(
            "plaintext_too_large",
            format!("plaintext is over the limit of {MAX_PLAINTEXT_LEN} bytes"),
        ));
    }
    let plaintext = SecretBytes::new(decode_secret("plaintext", &body.plaintext)?);
    let sealed: Sealing = p.encrypt(&r, plaintext, &body.context).await?;
    Ok(Json(EncryptResponse {
        key_id: sealed.key_id,
        key_version: sealed.key_version,
        ciphertext: encode(&sealed.ciphertext),
    }))
}

/// `POST /v1/decrypt`
pub async fn decrypt(
    Caller(p): Caller,
    ApiJson(body): ApiJson<DecryptRequest>,
) -> Result<Json<DecryptResponse>, ApiError> {
    if body.ciphertext.len() > MAX_BLOB_LEN.div_ceil(3) * 4 {
        return Err(ApiError::bad_request(
            "malformed_ciphertext",
            "ciphertext is longer than any blob",
        ));
    }
    let blob = decode_public("ciphertext", &body.ciphertext)?;
    let opened = p.decrypt(&blob, &body.context, None).await?;
    Ok(Json(DecryptResponse {
        key_id: opened.key_id,
        key_version: opened.key_version,
        plaintext: encode_secret(opened.plaintext.expose_secret()),
    }))
}
