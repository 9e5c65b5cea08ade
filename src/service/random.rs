//! Random bytes for callers: AWS `GenerateRandom` and Vault's `transit/random`.
//!
//! The bytes come from the HSM's generator (`C_GenerateRandom` on the PKCS#11 token) unless the
//! caller asks for the host's (`getrandom`) or for both XORed together, which is as strong as
//! the stronger of the two. Each source is its own resource (`random/device`, `random/host`,
//! `random/mixed`), so a policy can insist on the device.

use super::{KeyService, ServiceError};
use crate::audit::note;
use crate::backend::BackendError;
use crate::policy::{Action, Principal, Resource};
use crate::secret::SecretBytes;

/// The most bytes one request may ask for (OpenBao's limit, 128 KiB).
pub const MAX_RANDOM_BYTES: usize = 128 * 1024;

/// Where random bytes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntropySource {
    /// The HSM's generator.
    Device,
    /// The operating system's CSPRNG.
    Host,
    /// Both, XORed.
    Mixed,
}

impl EntropySource {
    /// The source's name in resources (`random/<name>`) and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Device => "device",
            Self::Host => "host",
            Self::Mixed => "mixed",
        }
    }
}

impl KeyService {
    /// `n` random bytes (1 to [`MAX_RANDOM_BYTES`]) from `source`.
    ///
    /// # Errors
    /// `Forbidden`, `InvalidRandomLength`, `Backend`.
    #[tracing::instrument(skip_all, fields(op = "random", bytes = n, source = source.as_str()))]
    pub async fn random(
        &self,
        p: &Principal,
        n: usize,
        source: EntropySource,
    ) -> Result<SecretBytes, ServiceError> {
        let resource = Resource::named("random", source.as_str());
        self.authorize(p, Action::Random, &resource, None).await?;
        if n == 0 || n > MAX_RANDOM_BYTES {
            return Err(ServiceError::InvalidRandomLength {
                got: n,
                limit: MAX_RANDOM_BYTES,
            });
        }
        note::detail("bytes", n.to_string());
        match source {
            EntropySource::Device => Ok(self.backends.signing().random(n).await?),
            EntropySource::Host => host_random(n),
            EntropySource::Mixed => {
                let device = self.backends.signing().random(n).await?;
                let host = host_random(n)?;
                let mixed = device
                    .expose_secret()
                    .iter()
                    .zip(host.expose_secret())
                    .map(|(d, h)| d ^ h)
                    .collect::<Vec<u8>>();
                Ok(SecretBytes::new(zeroize::Zeroizing::new(mixed)))
            }
        }
    }
}

/// `n` bytes from the operating system's CSPRNG.
fn host_random(n: usize) -> Result<SecretBytes, ServiceError> {
    let mut bytes = zeroize::Zeroizing::new(vec![0u8; n]);
    getrandom::getrandom(&mut bytes)
        .map_err(|e| ServiceError::Backend(BackendError::Device(Box::new(e))))?;
    Ok(SecretBytes::new(bytes))
}
