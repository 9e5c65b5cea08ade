//! AWS SigV4 access keys: a credential kind of a principal beside bearer tokens (issue 16).
//!
//! - An access key id reads `CKIA` + 16 characters of `A-Z2-7` (public, the lookup key, safe to
//!   log); its secret is 30 random bytes in base64 (40 characters, the shape AWS clients
//!   expect), shown once when minted.
//! - Verifying a signature needs the secret itself, so it cannot be stored as a hash: it is
//!   sealed by the device under a Custodian key (the one the request names, else
//!   `[aws] access_key_key`, else `secrets.default_key`) as a ciphertext blob whose encryption
//!   context is `{"custodian:access_key_id": <id>}`. Callers cannot send `custodian:` context
//!   keys, so no decrypt call can open it; only [`KeyService::authenticate_access_key`] does.
//! - Minting, listing and revoking are `principal:admin` on the principal (as tokens are), and
//!   minting also `secret:use-key` on the sealing key (as a secret write is). Revocation is
//!   immediate; a principal's deletion revokes its access keys.
//! - A signed request is checked in this order: the access key exists (`UnknownAccessKey`),
//!   its signing time is within 15 minutes of the clock (`SignatureExpired`), the signature
//!   matches in constant time (`SignatureMismatch`), and only then revocation and expiry (so
//!   nobody without the secret learns the key's state). The one exception: a revoked key whose
//!   secret no longer opens (its version destroyed; revoked keys do not hold their version) is
//!   refused as revoked, since no signature can be checked.
//! - A re-wrap job moves the live access keys sealed under the key's older versions to its
//!   primary version when it ends (naming them in its record), so retiring or destroying an old
//!   version does not lock their holders out.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use zeroize::Zeroizing;

use super::error::{AuthFailure, ServiceError};
use super::sigv4::SignedRequest;
use super::KeyService;
use crate::backend::BackendError;
use crate::domain::secret::HumanDuration;
use crate::domain::{AccessKeyInfo, AccessKeyRecord, Key, KeyName, KeyRef};
use crate::format::blob::Header;
use crate::format::{Blob, EncryptionContext};
use crate::policy::{Action, Principal, Resource};
use crate::secret::SecretBytes;
use crate::store::StoreError;

/// The prefix of every access key id.
pub const ID_PREFIX: &str = "CKIA";
/// The reserved encryption context key binding a sealed secret to its access key id.
pub const CONTEXT_ID: &str = "custodian:access_key_id";
const ID_RANDOM_CHARS: usize = 16;
const SECRET_RANDOM_BYTES: usize = 30;
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// A freshly minted access key: the secret is shown once.
#[derive(Debug)]
pub struct MintedAccessKey {
    /// The secret access key (ASCII).
    pub secret: SecretBytes,
    /// Its metadata (the id is `info.id`).
    pub info: AccessKeyInfo,
}

/// Whether `id` has the shape of an access key id this service issues.
pub fn is_access_key_id(id: &str) -> bool {
    id.len() == ID_PREFIX.len() + ID_RANDOM_CHARS
        && id.starts_with(ID_PREFIX)
        && id[ID_PREFIX.len()..].bytes().all(|b| BASE32.contains(&b))
}

fn random_id() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; ID_RANDOM_CHARS];
    getrandom::getrandom(&mut bytes)?;
    let mut id = String::from(ID_PREFIX);
    for b in bytes {
        id.push(char::from(BASE32[usize::from(b & 31)]));
    }
    Ok(id)
}

fn random_secret() -> Result<SecretBytes, getrandom::Error> {
    let mut raw = Zeroizing::new([0u8; SECRET_RANDOM_BYTES]);
    getrandom::getrandom(&mut raw[..])?;
    Ok(SecretBytes::new(Zeroizing::new(
        STANDARD.encode(&raw[..]).into_bytes(),
    )))
}

fn secret_context(id: &str) -> Result<EncryptionContext, ServiceError> {
    EncryptionContext::from_pairs([(CONTEXT_ID.to_owned(), id.to_owned())])
        .map_err(|_| ServiceError::InvalidLifecycleValue("access key id"))
}

fn random_failed(e: getrandom::Error) -> ServiceError {
    ServiceError::Backend(BackendError::Device(Box::new(e)))
}

impl KeyService {
    /// The key something Custodian keeps sealed is sealed under: the one named, else `default`,
    /// authorised as `secret:use-key` for `p`. A `default` that does not exist is the
    /// operator's problem (`DefaultKeyMissing`), not the caller's.
    pub(super) async fn sealing_key(
        &self,
        p: &Principal,
        named: Option<&KeyRef>,
        default: Option<KeyRef>,
    ) -> Result<std::sync::Arc<Key>, ServiceError> {
        let (r, is_default) = match named {
            Some(r) => (r.clone(), false),
            None => (default.ok_or(ServiceError::KeyRequired)?, true),
        };
        match self.resolve_with(p, Action::SecretUseKey, &r, None).await {
            Err(ServiceError::KeyNotFound(_)) if is_default => {
                Err(ServiceError::DefaultKeyMissing(r.to_string()))
            }
            other => other,
        }
    }

    /// Mints an access key for `principal`, its secret sealed under `key` (or the default).
    ///
    /// # Errors
    /// `Forbidden`, `PrincipalNotFound`, `KeyRequired`, `KeyNotFound`, `DefaultKeyMissing`,
    /// `KeyDisabled`, `Backend`, `Store`.
    #[tracing::instrument(skip_all, fields(op = "access_key_create", principal = %principal))]
    pub async fn create_access_key(
        &self,
        p: &Principal,
        principal: &KeyName,
        key: Option<&KeyRef>,
        ttl: Option<HumanDuration>,
        description: String,
    ) -> Result<MintedAccessKey, ServiceError> {
        self.authorize(
            p,
            Action::PrincipalAdmin,
            &Resource::named("principal", principal.as_str()),
            None,
        )
        .await?;
        if self.store.principal(principal.as_str()).await?.is_none() {
            return Err(ServiceError::PrincipalNotFound(principal.to_string()));
        }
        let default = self
            .access_key_default
            .clone()
            .or_else(|| self.secrets.default_key.clone());
        let key = self.sealing_key(p, key, default).await?;
        let header = super::usable_header(&key)?;
        let id = random_id().map_err(random_failed)?;
        let secret = random_secret().map_err(random_failed)?;
        let context = secret_context(&id)?;
        self.changing().await?;
        let sealing = self
            .seal_under_primary(
                &key,
                header,
                &context,
                SecretBytes::copy_from(secret.expose_secret()),
            )
            .await?;
        let now = crate::clock::now();
        let record = AccessKeyRecord {
            id,
            principal: principal.to_string(),
            description,
            sealed_secret: sealing.ciphertext,
            key_id: sealing.key_id,
            key_version: sealing.key_version,
            created_at: now,
            expires_at: ttl.map(|t| now + t.0),
            revoked_at: None,
        };
        match self.store.insert_access_key(&record).await {
            Err(StoreError::Conflict { .. }) => {
                // 80 random bits collided: refuse rather than overwrite.
                return Err(ServiceError::ConcurrentChange);
            }
            other => other?,
        }
        crate::audit::note::detail("access_key_id", record.id.clone());
        tracing::info!(access_key_id = %record.id, principal = %principal, "access key minted");
        Ok(MintedAccessKey {
            secret,
            info: AccessKeyInfo::from(&record),
        })
    }

    /// Access key metadata, of one principal or all.
    ///
    /// # Errors
    /// `Forbidden`, `Store`.
    pub async fn access_keys(
        &self,
        p: &Principal,
        principal: Option<&KeyName>,
    ) -> Result<Vec<AccessKeyInfo>, ServiceError> {
        if let Some(n) = principal {
            self.authorize(
                p,
                Action::PrincipalAdmin,
                &Resource::named("principal", n.as_str()),
                None,
            )
            .await?;
        }
        let filter = self
            .item_filter(p, Action::PrincipalAdmin, "principal")
            .await?;
        let mut keys = self
            .store
            .list_access_keys(principal.map(KeyName::as_str))
            .await?;
        keys.retain(|k| filter.allows(&Resource::named("principal", k.principal.as_str())));
        Ok(keys.iter().map(AccessKeyInfo::from).collect())
    }

    /// Revokes an access key at once.
    ///
    /// # Errors
    /// `Forbidden`, `AccessKeyNotFound`, `Store`.
    pub async fn revoke_access_key(&self, p: &Principal, id: &str) -> Result<(), ServiceError> {
        let Some(key) = self.store.access_key(id).await? else {
            // Only a principal allowed to manage every principal learns that an id is unknown.
            self.authorize(p, Action::PrincipalAdmin, &Resource::all("principal"), None)
                .await?;
            return Err(ServiceError::AccessKeyNotFound(id.to_owned()));
        };
        self.authorize(
            p,
            Action::PrincipalAdmin,
            &Resource::named("principal", key.principal.as_str()),
            None,
        )
        .await?;
        self.changing().await?;
        self.store
            .revoke_access_key(id, crate::clock::now())
            .await?;
        tracing::info!(access_key_id = id, principal = %key.principal, "access key revoked");
        Ok(())
    }

    /// The principal a SigV4-signed request authenticates (module docs for the order of
    /// checks).
    ///
    /// # Errors
    /// `Unauthenticated(UnknownAccessKey | SignatureExpired | SignatureMismatch |
    /// AccessKeyRevoked | AccessKeyExpired)`; `Store`; `Backend` when the sealed secret cannot
    /// be opened.
    pub async fn authenticate_access_key(
        &self,
        request: &SignedRequest,
    ) -> Result<Principal, ServiceError> {
        let unknown = || ServiceError::Unauthenticated(AuthFailure::UnknownAccessKey);
        if !is_access_key_id(&request.access_key_id) {
            return Err(unknown());
        }
        let record = self
            .store
            .access_key(&request.access_key_id)
            .await?
            .ok_or_else(unknown)?;
        let now = crate::clock::now();
        if !request.is_fresh(now) {
            return Err(ServiceError::Unauthenticated(AuthFailure::SignatureExpired));
        }
        let secret = match self.open_access_key_secret(&record).await {
            Ok(secret) => secret,
            // A revoked access key holds no key version, so its version may have been destroyed
            // since (and a re-wrap leaves it behind): no signature can be checked any more, and
            // it is refused as what it is rather than as a key-state error.
            Err(_) if record.revoked_at.is_some() => {
                return Err(ServiceError::Unauthenticated(AuthFailure::AccessKeyRevoked));
            }
            Err(e) => return Err(e),
        };
        if !request.verify(secret.expose_secret()) {
            return Err(ServiceError::Unauthenticated(
                AuthFailure::SignatureMismatch,
            ));
        }
        if record.revoked_at.is_some() {
            return Err(ServiceError::Unauthenticated(AuthFailure::AccessKeyRevoked));
        }
        if record.expires_at.is_some_and(|t| t <= now) {
            return Err(ServiceError::Unauthenticated(AuthFailure::AccessKeyExpired));
        }
        Ok(Principal {
            name: record.principal,
            credential_id: format!("access-key:{}", record.id),
            source: None,
        })
    }

    /// Moves the live access keys sealed under an older version of `key` to its primary
    /// version (the end of a re-wrap job: access keys are stored data keys too, and a version
    /// they still use can be neither retired nor destroyed). Each is opened, sealed again and
    /// replaced only if its row still holds the bytes opened, so two nodes ending the same job
    /// move each once. Returns the ids moved and how many could not be.
    ///
    /// # Errors
    /// `Store` when the access keys cannot be listed.
    pub(crate) async fn move_access_keys(
        &self,
        key: &Key,
    ) -> Result<(Vec<String>, u64), ServiceError> {
        let (mut moved, mut failed) = (Vec::new(), 0);
        let stale: Vec<AccessKeyRecord> = self
            .store
            .list_access_keys(None)
            .await?
            .into_iter()
            .filter(|a| {
                a.key_id == key.id && a.key_version != key.primary_version && a.revoked_at.is_none()
            })
            .collect();
        if stale.is_empty() {
            return Ok((moved, failed));
        }
        // Announced before the first change, as every change is.
        self.changing().await?;
        for record in stale {
            let result = async {
                let secret = self.open_access_key_secret(&record).await?;
                let header = super::usable_header(key)?;
                let sealing = self
                    .seal_under_primary(key, header, &secret_context(&record.id)?, secret)
                    .await?;
                Ok::<bool, ServiceError>(
                    self.store
                        .reseal_access_key(
                            &record.id,
                            &record.sealed_secret,
                            &sealing.ciphertext,
                            sealing.key_version,
                        )
                        .await?,
                )
            }
            .await;
            match result {
                Ok(true) => {
                    tracing::info!(access_key_id = %record.id, from = record.key_version.get(), "access key moved to the primary version");
                    moved.push(record.id);
                }
                // Changed meanwhile (moved by another node, or revoked): nothing to do.
                Ok(false) => {}
                Err(e) => {
                    failed += 1;
                    tracing::error!(access_key_id = %record.id, error = %e, "an access key could not be moved to the primary version");
                }
            }
        }
        Ok((moved, failed))
    }

    /// Opens the sealed secret of `record` (not noted as a key use of the request: the request
    /// did not ask for it). A record whose blob does not open is an integrity failure.
    async fn open_access_key_secret(
        &self,
        record: &AccessKeyRecord,
    ) -> Result<SecretBytes, ServiceError> {
        let integrity = |why: &'static str| {
            tracing::error!(access_key_id = %record.id, why, "stored access key secret does not open");
            ServiceError::Backend(BackendError::Invariant(
                "stored access key secret does not open",
            ))
        };
        let blob = Blob::parse(&record.sealed_secret).map_err(|_| integrity("unparsable"))?;
        if blob.key_id != record.key_id || blob.key_version != record.key_version {
            return Err(integrity("names another key"));
        }
        let key = self
            .lookup_key(&KeyRef::Id(blob.key_id))
            .await?
            .ok_or_else(|| integrity("its key is gone"))?;
        super::check_unwrap(&key, blob.key_version)?;
        if key.version(blob.key_version).map(|v| v.algorithm) != Some(blob.algorithm) {
            return Err(integrity("another algorithm"));
        }
        let header = Header {
            algorithm: blob.algorithm,
            key_id: blob.key_id,
            key_version: blob.key_version,
        };
        let aad = header.aad(&secret_context(&record.id)?);
        let root = key.root(blob.key_version);
        match self
            .serving_backend(&key)
            .await?
            .open(&root, blob.iv, aad, blob.ciphertext)
            .await
        {
            Ok(secret) => Ok(secret),
            Err(BackendError::AuthenticationFailed) => Err(integrity("failed authentication")),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_secrets_have_the_aws_shapes() {
        let id = random_id().unwrap();
        assert!(is_access_key_id(&id), "{id}");
        assert_eq!(id.len(), 20);
        assert!(!is_access_key_id(&id.to_lowercase()));
        assert!(!is_access_key_id("AKIAIOSFODNN7EXAMPLE"));
        assert!(!is_access_key_id(&id[..19]));
        let secret = random_secret().unwrap();
        assert_eq!(secret.len(), 40);
        assert_ne!(
            random_secret().unwrap().expose_secret(),
            secret.expose_secret()
        );
        let shown = format!(
            "{:?}",
            MintedAccessKey {
                secret: SecretBytes::copy_from(b"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
                info: AccessKeyInfo {
                    id: id.clone(),
                    principal: "p".into(),
                    description: String::new(),
                    key_id: crate::domain::KeyId::generate(),
                    created_at: crate::clock::now(),
                    expires_at: None,
                    revoked_at: None,
                },
            }
        );
        assert!(!shown.contains("wJalrXUtnFEMI"), "{shown}");
    }

    #[test]
    fn the_secret_context_is_reserved() {
        let ctx = secret_context("CKIAAAAAAAAAAAAAAAAA").unwrap();
        let json = serde_json::to_string(&ctx).unwrap();
        assert!(serde_json::from_str::<EncryptionContext>(&json).is_err());
    }
}
