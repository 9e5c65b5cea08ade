//! Data keys and the typed cryptographic calls: `datakey`, `decrypt`, `encrypt`, and the
//! streaming file encryptor and decryptor built on them.

use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use reqwest::Method;
use zeroize::Zeroizing;

use custodian_types::api_types::crypto::{
    DataKeyRequest, DataKeyResponse, DecryptRequest, DecryptResponse, EncryptRequest,
    EncryptResponse,
};
use custodian_types::domain::{KeyId, KeyVersion};
use custodian_types::format::EncryptionContext;
use custodian_types::secret::SecretBytes;

use crate::client::{key_url, Client, Retry};
use crate::error::Error;
use crate::stream::{Decryptor, Encryptor, Header, DATA_KEY_LEN};

/// A data key from the server: the plaintext copy (zeroised on drop, redacted in `Debug`, no
/// `Clone`) and the wrapped copy (a Custodian blob naming the key and version that wrapped it).
pub struct DataKey {
    key_id: KeyId,
    key_version: KeyVersion,
    wrapped: Vec<u8>,
    plaintext: SecretBytes,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("key_id", &self.key_id.to_string())
            .field("key_version", &self.key_version.get())
            .field("wrapped_len", &self.wrapped.len())
            .field("plaintext", &self.plaintext)
            .finish()
    }
}

impl DataKey {
    /// The key that wrapped it.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The key version that wrapped it.
    pub fn key_version(&self) -> KeyVersion {
        self.key_version
    }

    /// The wrapped copy (a Custodian blob), to store beside the data.
    pub fn wrapped(&self) -> &[u8] {
        &self.wrapped
    }

    /// The plaintext copy.
    ///
    /// # Security
    /// Use it and let it go; never log or store it.
    pub fn plaintext(&self) -> &SecretBytes {
        &self.plaintext
    }

    /// A fixed key for unit tests (all bytes `n`, a syntactically valid wrapped blob).
    #[cfg(test)]
    pub(crate) fn for_tests(n: u8) -> Self {
        let blob = crate::stream::tests::test_blob();
        Self {
            key_id: KeyId::from_bytes([n; 16]),
            key_version: KeyVersion::FIRST,
            wrapped: blob,
            plaintext: SecretBytes::copy_from(&[n; DATA_KEY_LEN]),
        }
    }
}

/// Decodes standard base64 into a zeroising buffer.
fn decode_secret(text: &str, what: &'static str) -> Result<Zeroizing<Vec<u8>>, Error> {
    STANDARD
        .decode(text.as_bytes())
        .map(Zeroizing::new)
        .map_err(|_| Error::BadBase64(what))
}

/// How [`Client::file_encryptor`] frames a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    /// Plaintext bytes per frame (default 64 KiB).
    pub frame_size: u32,
    /// The plaintext's length, when known: a data-key cache is used only then (a cached key
    /// must be charged for what it encrypts before it encrypts it).
    pub plaintext_len: Option<u64>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            frame_size: crate::stream::DEFAULT_FRAME_SIZE,
            plaintext_len: None,
        }
    }
}

impl Client {
    /// `POST /v1/keys/{key}/datakey`: a fresh 256-bit data key under `key` (id, name or
    /// `alias/NAME`) bound to `context`, plaintext and wrapped.
    ///
    /// # Errors
    /// [`Error`]; [`Error::UnexpectedAnswer`] when the server's key is not 32 bytes.
    pub async fn generate_data_key(
        &self,
        key: &str,
        context: &EncryptionContext,
    ) -> Result<DataKey, Error> {
        let body = DataKeyRequest {
            context,
            bytes: Some(DATA_KEY_LEN as u64),
            plaintext: Some(true),
        };
        let path = format!("{}/datakey", key_url(key)?);
        let r: DataKeyResponse = self.call(Method::POST, &path, &body, Retry::Safe).await?;
        let plaintext = r
            .plaintext
            .as_deref()
            .ok_or(Error::UnexpectedAnswer("no plaintext data key"))?;
        let plaintext = decode_secret(plaintext, "plaintext")?;
        if plaintext.len() != DATA_KEY_LEN {
            return Err(Error::UnexpectedAnswer("a data key of the wrong length"));
        }
        Ok(DataKey {
            key_id: r.key_id,
            key_version: r.key_version,
            wrapped: STANDARD
                .decode(r.ciphertext.as_bytes())
                .map_err(|_| Error::BadBase64("ciphertext"))?,
            plaintext: SecretBytes::new(plaintext),
        })
    }

    /// `POST /v1/decrypt`: the plaintext of `blob` (a wrapped data key or a small payload),
    /// which must have been sealed with `context`.
    ///
    /// # Errors
    /// [`Error`]: `400 decryption_failed` for a changed blob or another context.
    pub async fn decrypt(
        &self,
        blob: &[u8],
        context: &EncryptionContext,
    ) -> Result<SecretBytes, Error> {
        let body = DecryptRequest {
            ciphertext: STANDARD.encode(blob),
            context,
        };
        let r: DecryptResponse = self
            .call(Method::POST, "/v1/decrypt", &body, Retry::Safe)
            .await?;
        Ok(SecretBytes::new(decode_secret(&r.plaintext, "plaintext")?))
    }

    /// `POST /v1/keys/{key}/encrypt`: a blob of `plaintext` (1 to 4096 bytes) under `key`,
    /// bound to `context`.
    ///
    /// # Errors
    /// [`Error`].
    pub async fn encrypt(
        &self,
        key: &str,
        plaintext: &[u8],
        context: &EncryptionContext,
    ) -> Result<Vec<u8>, Error> {
        let encoded = Zeroizing::new(STANDARD.encode(plaintext));
        let body = EncryptRequest {
            plaintext: encoded.as_str(),
            context,
        };
        let path = format!("{}/encrypt", key_url(key)?);
        let r: EncryptResponse = self.call(Method::POST, &path, &body, Retry::Safe).await?;
        STANDARD
            .decode(r.ciphertext.as_bytes())
            .map_err(|_| Error::BadBase64("ciphertext"))
    }

    /// A data key for one message: from the cache when one is configured, the length is known
    /// and an entry is within its bounds; else fresh from the server (and cached).
    async fn data_key_for_message(
        &self,
        key: &str,
        context: &EncryptionContext,
        plaintext_len: Option<u64>,
    ) -> Result<Arc<DataKey>, Error> {
        let cache = self.data_key_cache().zip(plaintext_len);
        if let Some((cache, len)) = cache {
            if let Some(dk) = cache.take_for_encryption(key, context, len) {
                return Ok(dk);
            }
        }
        let dk = Arc::new(self.generate_data_key(key, context).await?);
        if let Some((cache, len)) = cache {
            cache.insert_for_encryption(key, context, Arc::clone(&dk), len);
        }
        Ok(dk)
    }

    /// An encryptor for one streaming file under `key` and `context`: one data key from the
    /// server (or the cache), a fresh salt, and the header that names them.
    ///
    /// # Errors
    /// [`Error`]; [`Error::Stream`] for a frame size out of bounds.
    pub async fn file_encryptor(
        &self,
        key: &str,
        context: &EncryptionContext,
        options: StreamOptions,
    ) -> Result<Encryptor, Error> {
        let dk = self
            .data_key_for_message(key, context, options.plaintext_len)
            .await?;
        Ok(Encryptor::new(
            dk.plaintext().expose_secret(),
            dk.wrapped(),
            context,
            options.frame_size,
        )?)
    }

    /// A decryptor for the file whose `header` was read: the server unwraps its data key under
    /// the header's context (or the cache has it).
    ///
    /// # Errors
    /// [`Error`]: `400 decryption_failed` when the header's wrapped key or context was changed.
    pub async fn file_decryptor(&self, header: Header) -> Result<Decryptor, Error> {
        let cached = self
            .data_key_cache()
            .and_then(|c| c.get_for_decryption(&header.wrapped_key, &header.context));
        let key = match cached {
            Some(k) => k,
            None => {
                let k = Arc::new(self.decrypt(&header.wrapped_key, &header.context).await?);
                if let Some(c) = self.data_key_cache() {
                    c.insert_for_decryption(&header.wrapped_key, &header.context, Arc::clone(&k));
                }
                k
            }
        };
        if key.len() != DATA_KEY_LEN {
            return Err(Error::UnexpectedAnswer("a data key of the wrong length"));
        }
        Ok(Decryptor::new(key.expose_secret(), header)?)
    }
}
