//! Secrets: path-named, versioned values, each version under a fresh data key from the device
//! (see `format::secret` for the encryption). Writes are serialised per path on this node and
//! checked in the store's transaction (version number, check-and-set, rotation claim), so two
//! versions never share a number and a failed write leaves nothing behind: the device work
//! happens before the one transaction that records the version.

use std::hash::{Hash, Hasher};

use time::OffsetDateTime;

use super::noted;
use super::{KeyService, ServiceError};
use crate::backend::BackendError;
use crate::domain::secret::{
    check_custom_metadata, CustomMetadata, GenerateSpec, HumanDuration, SecretPath, SecretRecord,
    SecretVersionState,
};
use crate::domain::{Key, KeyRef};
use crate::format::blob::Header;
use crate::format::secret::{data_key_context, open_value, seal_value};
use crate::format::Blob;
use crate::policy::{Action, Principal, Resource};
use crate::secret::SecretBytes;
use crate::store::{
    MetadataUpdate, NewSecretVersion, RotationClaim, StaleKind, StoreError, VersionOp,
};

/// How often a write retries when another writer took its version number.
const MAX_WRITE_ATTEMPTS: usize = 8;

/// A written version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The path.
    pub path: SecretPath,
    /// The version written.
    pub version: u32,
    /// When.
    pub created_at: OffsetDateTime,
}

/// A read version.
#[derive(Debug)]
pub struct SecretValue {
    /// The path.
    pub path: SecretPath,
    /// The version read.
    pub version: u32,
    /// When it was written.
    pub created_at: OffsetDateTime,
    /// The value.
    pub value: SecretBytes,
}

/// What a metadata write asks for.
#[derive(Debug, Clone, Default)]
pub struct MetadataRequest {
    /// The key for a path this request creates.
    pub key: Option<KeyRef>,
    /// New `max_versions`.
    pub max_versions: Option<u32>,
    /// New `expires_after` (`Some(None)` clears).
    pub expires_after: Option<Option<HumanDuration>>,
    /// New custom metadata.
    pub custom: Option<CustomMetadata>,
    /// New generation spec (`Some(None)` clears).
    pub generate: Option<Option<GenerateSpec>>,
}

/// Which versions a delete/undelete/destroy applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Versions {
    /// The newest live version (delete) or newest deleted version (undelete).
    Latest,
    /// These.
    These(Vec<u32>),
}

/// Who a write is done for.
#[derive(Debug, Clone, Copy)]
enum Writer<'a> {
    /// A principal: the key it wraps under and any versions it destroys are authorised.
    Principal(&'a Principal),
    /// The service itself: a scheduled rotation of a generated secret, authorised when the
    /// schedule was set.
    System,
}

/// A page of secrets.
#[derive(Debug)]
pub struct SecretPage {
    /// Records, by path.
    pub secrets: Vec<SecretRecord>,
    /// Cursor for the next page.
    pub next: Option<SecretPath>,
}

/// Draws a generated value uniformly from the charset (rejection sampling over OS randomness).
///
/// # Errors
/// The OS random source failing.
pub fn generate_value(spec: &GenerateSpec) -> Result<SecretBytes, getrandom::Error> {
    let alphabet = spec.charset.alphabet();
    let n = alphabet.len();
    // The largest multiple of n that fits in a byte: bytes at or above it are rejected.
    let limit = 256 - 256 % n;
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(spec.length as usize));
    let mut buf = zeroize::Zeroizing::new([0u8; 64]);
    while out.len() < spec.length as usize {
        getrandom::getrandom(&mut buf[..])?;
        for b in buf.iter() {
            if (*b as usize) < limit && out.len() < spec.length as usize {
                out.push(alphabet[*b as usize % n]);
            }
        }
    }
    Ok(SecretBytes::new(out))
}

fn store_to_service(path: &SecretPath, e: StoreError) -> ServiceError {
    match e {
        StoreError::CheckAndSet { current } => ServiceError::CasMismatch { current },
        StoreError::NotFound => ServiceError::SecretNotFound(path.to_string()),
        other => ServiceError::Store(other),
    }
}

impl KeyService {
    fn path_lock(&self, path: &SecretPath) -> &tokio::sync::Mutex<()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        path.hash(&mut h);
        let i = (h.finish() % self.path_locks.len() as u64) as usize;
        &self.path_locks[i]
    }

    /// The key a write under `path` uses: the one named, else the secret's, else the default.
    /// For a principal, `secret:use-key` on that key is authorised first; an unknown named key
    /// is reported as not found only to a principal allowed to use it.
    async fn secret_key(
        &self,
        writer: Writer<'_>,
        named: Option<&KeyRef>,
        record: Option<&SecretRecord>,
    ) -> Result<std::sync::Arc<Key>, ServiceError> {
        let (r, is_default) = match (named, record) {
            (Some(r), _) => (r.clone(), false),
            (None, Some(rec)) => (KeyRef::Id(rec.key_id), false),
            (None, None) => {
                let default = self.secrets.default_key.clone();
                (default.ok_or(ServiceError::KeyRequired)?, true)
            }
        };
        let found = match writer {
            Writer::Principal(p) => {
                match self.resolve_with(p, Action::SecretUseKey, &r, None).await {
                    Ok(key) => Some(key),
                    Err(ServiceError::KeyNotFound(_)) => None,
                    Err(e) => return Err(e),
                }
            }
            Writer::System => self.lookup_key(&r).await?,
        };
        match found {
            Some(key) => Ok(key),
            // A configured default that does not exist is the operator's problem, not the caller's.
            None if is_default => Err(ServiceError::DefaultKeyMissing(r.to_string())),
            None => Err(ServiceError::KeyNotFound(r.to_string())),
        }
    }

    /// Authorises `secret:destroy` on `path` for a principal whose request would destroy
    /// versions: when keeping `adding` more versions would leave more than `max_versions` (0 =
    /// unlimited) that are not destroyed, the oldest are destroyed by the same transaction.
    async fn authorize_pruning(
        &self,
        writer: Writer<'_>,
        path: &SecretPath,
        record: Option<&SecretRecord>,
        max_versions: u32,
        adding: usize,
    ) -> Result<(), ServiceError> {
        let Writer::Principal(p) = writer else {
            return Ok(());
        };
        let kept = record.map_or(0, |r| {
            r.versions
                .iter()
                .filter(|v| v.state != SecretVersionState::Destroyed)
                .count()
        });
        if max_versions > 0 && kept + adding > max_versions as usize {
            self.authorize(p, Action::SecretDestroy, &Resource::secret(path), None)
                .await?;
        }
        Ok(())
    }

    /// Writes a new version of `path` with `value` (check-and-set when `cas` is given).
    ///
    /// # Errors
    /// `Forbidden`, `ValueTooLarge`, `CasMismatch`, `KeyRequired`, `KeyNotFound`,
    /// `KeyDisabled`, `WriteConflict`, `Backend`, `Store`.
    #[tracing::instrument(skip_all, fields(op = "secret_put", path = %path))]
    pub async fn put_secret(
        &self,
        p: &Principal,
        path: &SecretPath,
        value: SecretBytes,
        key: Option<&KeyRef>,
        cas: Option<u32>,
    ) -> Result<Written, ServiceError> {
        self.authorize(p, Action::SecretWrite, &Resource::secret(path), None)
            .await?;
        if value.len() > self.secrets.max_value_bytes {
            return Err(ServiceError::ValueTooLarge {
                got: value.len(),
                limit: self.secrets.max_value_bytes,
            });
        }
        let _serialised = self.path_lock(path).lock().await;
        self.write_version_serialised(Writer::Principal(p), path, &value, key, cas, None)
            .await?
            .ok_or(ServiceError::WriteConflict)
    }

    /// Writes a version of one of Custodian's own paths (`custodian:db/…`, a database password)
    /// as the service, sealed under `key` by the same path as every secret version: a data key
    /// of its own from the device, wrapped under the key's primary version. The caller has
    /// authorised its use of the key. Returns the version written.
    ///
    /// # Errors
    /// `KeyNotFound`, `KeyDisabled`, `WriteConflict`, `Backend`, `Store`.
    pub(super) async fn write_internal_secret(
        &self,
        path: &SecretPath,
        value: &SecretBytes,
        key: crate::domain::KeyId,
    ) -> Result<u32, ServiceError> {
        debug_assert!(path.is_internal());
        let _serialised = self.path_lock(path).lock().await;
        let written = self
            .write_version_serialised(
                Writer::System,
                path,
                value,
                Some(&KeyRef::Id(key)),
                None,
                None,
            )
            .await?
            .ok_or(ServiceError::WriteConflict)?;
        Ok(written.version)
    }

    /// Reads `version` of one of Custodian's own paths.
    ///
    /// # Errors
    /// `SecretNotFound`, `SecretVersionDestroyed`, `SecretIntegrity`, `Backend`, `Store`.
    pub(super) async fn read_internal_secret(
        &self,
        path: &SecretPath,
        version: u32,
    ) -> Result<SecretBytes, ServiceError> {
        let (_, data) = self
            .store
            .secret_for_read(path, Some(version))
            .await?
            .ok_or_else(|| ServiceError::SecretNotFound(path.to_string()))?;
        let sealed = match data {
            Some((n, sealed)) if n == version => sealed,
            _ => return Err(ServiceError::SecretVersionDestroyed(version)),
        };
        self.open_secret(path, version, &sealed.wrapped_dek, &sealed.ciphertext)
            .await
    }

    /// The one write path, for a caller that holds the path's lock. Before any device work,
    /// a principal's use of the key and any destruction of old versions are authorised.
    /// `Ok(None)` only when a rotation claim was already taken.
    async fn write_version_serialised(
        &self,
        writer: Writer<'_>,
        path: &SecretPath,
        value: &SecretBytes,
        key: Option<&KeyRef>,
        cas: Option<u32>,
        rotation: Option<RotationClaim>,
    ) -> Result<Option<Written>, ServiceError> {
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let record = self.store.secret(path).await?;
            let current = record.as_ref().map_or(0, |r| r.current_version);
            if let Some(cas) = cas {
                if cas != current {
                    return Err(ServiceError::CasMismatch { current });
                }
            }
            let key = self.secret_key(writer, key, record.as_ref()).await?;
            let max_versions = record
                .as_ref()
                .map_or(self.secrets.default_max_versions, |r| r.max_versions);
            self.authorize_pruning(writer, path, record.as_ref(), max_versions, 1)
                .await?;
            let version = current + 1;
            crate::audit::note::detail("secret_version", version.to_string());
            // Sealing changes nothing stored: the version is announced with its write below.
            let (wrapped_dek, ciphertext) = self.seal_secret(&key, path, version, value).await?;
            let created_at = crate::clock::now();
            let new = NewSecretVersion {
                path: path.clone(),
                version,
                cas,
                key_id: key.id,
                key_version: key.primary_version,
                wrapped_dek,
                ciphertext,
                created_at,
                default_max_versions: self.secrets.default_max_versions,
                rotation,
            };
            match self.changing_with_version(&new).await? {
                Ok(pruned) => {
                    if !pruned.is_empty() {
                        let listed: Vec<String> = pruned.iter().map(u32::to_string).collect();
                        crate::audit::note::detail("versions_destroyed", listed.join(","));
                        tracing::info!(path = %path, ?pruned, "versions beyond max_versions destroyed");
                    }
                    return Ok(Some(Written {
                        path: path.clone(),
                        version,
                        created_at,
                    }));
                }
                Err(StoreError::Stale {
                    what: StaleKind::RotationSchedule,
                }) => return Ok(None),
                // The key changed under us (rotated, disabled, version retired): read it again
                // from the store, so the next attempt uses what is true now.
                Err(StoreError::Stale {
                    what: StaleKind::KeyVersion,
                }) => {
                    self.fresh_key(key.id).await?;
                    continue;
                }
                Err(StoreError::Stale { .. }) => continue,
                Err(e) => return Err(store_to_service(path, e)),
            }
        }
        Err(ServiceError::WriteConflict)
    }

    /// Fresh data key from the device, wrapped under `key`'s primary version and bound to the
    /// path and version; the value encrypted under it. The plaintext data key is dropped
    /// (zeroised) on return.
    async fn seal_secret(
        &self,
        key: &Key,
        path: &SecretPath,
        version: u32,
        value: &SecretBytes,
    ) -> Result<(Vec<u8>, Vec<u8>), ServiceError> {
        let header = super::usable_header(key)?;
        self.charge_wrap(key).await?;
        let context = data_key_context(path, version)
            .map_err(|_| ServiceError::InvalidMetadata("secret path too long for a context"))?;
        let (dek, sealed) = self
            .serving_backend(key)
            .await?
            .generate_and_seal(noted(&key.primary_root()), header.aad(&context), 32)
            .await?;
        let ciphertext = seal_value(dek.expose_secret(), path, version, value.expose_secret())
            .map_err(|e| ServiceError::Backend(BackendError::Device(Box::new(e))))?;
        Ok((super::seal_result(header, sealed).ciphertext, ciphertext))
    }

    /// Reads the latest live version, or `version`.
    ///
    /// # Errors
    /// `Forbidden`, `SecretNotFound`, `SecretVersionNotFound`, `SecretVersionDeleted`,
    /// `SecretVersionDestroyed`, `SecretVersionExpired`, `KeyDisabled`, `SecretIntegrity`,
    /// `Backend`, `Store`.
    #[tracing::instrument(skip_all, fields(op = "secret_get", path = %path))]
    pub async fn get_secret(
        &self,
        p: &Principal,
        path: &SecretPath,
        version: Option<u32>,
    ) -> Result<SecretValue, ServiceError> {
        self.authorize(p, Action::SecretRead, &Resource::secret(path), None)
            .await?;
        let (record, data) = self
            .store
            .secret_for_read(path, version)
            .await?
            .ok_or_else(|| ServiceError::SecretNotFound(path.to_string()))?;
        let v = match version {
            Some(n) => {
                let v = record
                    .version(n)
                    .ok_or(ServiceError::SecretVersionNotFound(n))?;
                match v.state {
                    SecretVersionState::Live => v,
                    SecretVersionState::Deleted => {
                        return Err(ServiceError::SecretVersionDeleted(n))
                    }
                    SecretVersionState::Destroyed => {
                        return Err(ServiceError::SecretVersionDestroyed(n))
                    }
                }
            }
            None => record
                .latest_live()
                .ok_or_else(|| ServiceError::SecretNotFound(path.to_string()))?,
        };
        if record.is_expired(v, crate::clock::now()) {
            return Err(ServiceError::SecretVersionExpired(v.version));
        }
        let sealed = match data {
            Some((n, sealed)) if n == v.version => sealed,
            _ => return Err(ServiceError::SecretVersionDestroyed(v.version)),
        };
        let value = self
            .open_secret(path, v.version, &sealed.wrapped_dek, &sealed.ciphertext)
            .await
            .inspect_err(|e| {
                if matches!(e, ServiceError::SecretIntegrity { .. }) {
                    // What the store kept may be rows changed behind its back: read them anew.
                    self.store.forget_read(path);
                }
            })?;
        Ok(SecretValue {
            path: path.clone(),
            version: v.version,
            created_at: v.created_at,
            value,
        })
    }

    async fn open_secret(
        &self,
        path: &SecretPath,
        version: u32,
        wrapped: &[u8],
        ciphertext: &[u8],
    ) -> Result<SecretBytes, ServiceError> {
        let integrity = || ServiceError::SecretIntegrity {
            path: path.to_string(),
            version,
        };
        let blob = Blob::parse(wrapped).map_err(|_| integrity())?;
        let key = self
            .lookup_key(&KeyRef::Id(blob.key_id))
            .await?
            .ok_or_else(integrity)?;
        match super::check_unwrap(&key, blob.key_version) {
            Err(ServiceError::CiphertextKeyNotFound) => return Err(integrity()),
            other => other?,
        }
        let context = data_key_context(path, version).map_err(|_| integrity())?;
        let header = Header {
            algorithm: blob.algorithm,
            key_id: blob.key_id,
            key_version: blob.key_version,
        };
        let aad = header.aad(&context);
        let dek = match self.open_blob(&key, blob, aad).await {
            Ok(dek) => dek,
            Err(ServiceError::DecryptionFailed) => return Err(integrity()),
            Err(e) => return Err(e),
        };
        let value =
            open_value(dek.expose_secret(), path, version, ciphertext).map_err(|_| integrity())?;
        Ok(SecretBytes::new(value))
    }

    /// Secrets whose path starts with `prefix`, by path.
    ///
    /// # Errors
    /// `Forbidden`, `Store`.
    #[tracing::instrument(skip_all, fields(op = "secret_list"))]
    pub async fn list_secrets(
        &self,
        p: &Principal,
        prefix: &str,
        after: Option<SecretPath>,
        limit: u32,
    ) -> Result<SecretPage, ServiceError> {
        let filter = self.item_filter(p, Action::SecretList, "secret").await?;
        let store = &self.store;
        let (secrets, next) = super::filtered_page(
            limit,
            after,
            |after: Option<SecretPath>, n| async move {
                store.list_secrets(prefix, after.as_ref(), n).await
            },
            |s: &SecretRecord| s.path.clone(),
            // Custodian's own paths (database passwords) are never listed.
            |s: &SecretRecord| !s.path.is_internal() && filter.allows(&Resource::secret(&s.path)),
        )
        .await?;
        Ok(SecretPage { secrets, next })
    }

    /// The metadata and version history of `path`.
    ///
    /// # Errors
    /// `Forbidden`, `SecretNotFound`, `Store`.
    pub async fn secret_metadata(
        &self,
        p: &Principal,
        path: &SecretPath,
    ) -> Result<SecretRecord, ServiceError> {
        self.authorize(p, Action::SecretRead, &Resource::secret(path), None)
            .await?;
        self.store
            .secret(path)
            .await?
            .ok_or_else(|| ServiceError::SecretNotFound(path.to_string()))
    }

    /// Creates or updates metadata. Setting `generate` on a secret without versions writes the
    /// first generated version at once; on one with versions it schedules the next rotation.
    ///
    /// # Errors
    /// `Forbidden`, `InvalidMetadata`, `KeyRequired`, `KeyNotFound`, `Backend`, `Store`.
    #[tracing::instrument(skip_all, fields(op = "secret_metadata_put", path = %path))]
    pub async fn put_secret_metadata(
        &self,
        p: &Principal,
        path: &SecretPath,
        req: MetadataRequest,
    ) -> Result<SecretRecord, ServiceError> {
        self.authorize(p, Action::SecretWrite, &Resource::secret(path), None)
            .await?;
        if let Some(custom) = &req.custom {
            check_custom_metadata(custom).map_err(ServiceError::InvalidMetadata)?;
        }
        if let Some(Some(g)) = &req.generate {
            if g.length == 0 || g.length > GenerateSpec::MAX_LENGTH {
                return Err(ServiceError::InvalidMetadata(
                    "generate.length must be 1 to 4096",
                ));
            }
            if g.length as usize > self.secrets.max_value_bytes {
                return Err(ServiceError::InvalidMetadata(
                    "generate.length exceeds secrets.max_value_bytes",
                ));
            }
        }
        if let Some(Some(g)) = &req.generate {
            if g.rotate_every.0 < self.secrets.min_rotate_every {
                return Err(ServiceError::InvalidMetadata(
                    "generate.rotate_every is shorter than secrets.min_rotate_every (1h unless configured)",
                ));
            }
        }
        let _serialised = self.path_lock(path).lock().await;
        let existing = self.store.secret(path).await?;
        let current_version = existing.as_ref().map_or(0, |r| r.current_version);
        let stored_max = existing
            .as_ref()
            .map_or(self.secrets.default_max_versions, |r| r.max_versions);
        let generated = match &req.generate {
            Some(g) => g.is_some(),
            None => existing.as_ref().is_some_and(|r| r.generate.is_some()),
        };
        let mut max_versions = req.max_versions;
        if generated {
            // Generated secrets grow in the background: their history is always bounded.
            let cap = self.secrets.max_generated_versions;
            match req.max_versions {
                Some(m) if m == 0 || m > cap => {
                    return Err(ServiceError::InvalidMetadata(
                        "a generated secret's max_versions must be 1 to secrets.max_generated_versions (100 unless configured)",
                    ))
                }
                Some(_) => {}
                None if stored_max == 0 || stored_max > cap => max_versions = Some(cap),
                None => {}
            }
        }
        self.authorize_pruning(
            Writer::Principal(p),
            path,
            existing.as_ref(),
            max_versions.unwrap_or(stored_max),
            0,
        )
        .await?;
        // The key is used when it is named (it becomes the secret's key) or when this request
        // writes the first generated version under it; otherwise it is only looked up.
        let writes_first = current_version == 0 && matches!(req.generate, Some(Some(_)));
        let writer = if req.key.is_some() || writes_first {
            Writer::Principal(p)
        } else {
            Writer::System
        };
        let key = self
            .secret_key(writer, req.key.as_ref(), existing.as_ref())
            .await?;
        // A named key becomes the secret's key for later writes, on a new or an existing path.
        let key_change = req.key.as_ref().map(|_| key.id);
        let now = crate::clock::now();
        let generate = req.generate.clone().map(|g| {
            let next = g.as_ref().map(|g| now + g.rotate_every.0);
            (g, next)
        });
        let update = MetadataUpdate {
            key_id: key_change,
            max_versions,
            expires_after: req.expires_after,
            custom: req.custom,
            generate,
        };
        self.changing().await?;
        let record = self
            .store
            .put_secret_metadata(
                path,
                key.id,
                self.secrets.default_max_versions,
                &update,
                now,
            )
            .await?;
        if record.current_version == 0 {
            if let Some(Some(_)) = &req.generate {
                // Still under the path's lock: two metadata writes cannot both make version 1.
                self.rotate_serialised(Writer::Principal(p), path, None)
                    .await?;
                return self
                    .store
                    .secret(path)
                    .await?
                    .ok_or_else(|| ServiceError::SecretNotFound(path.to_string()));
            }
        }
        Ok(record)
    }

    /// Writes a fresh generated version now.
    ///
    /// # Errors
    /// `Forbidden`, `SecretNotFound`, `NotGenerated`, and the errors of a write.
    pub async fn rotate_secret(
        &self,
        p: &Principal,
        path: &SecretPath,
    ) -> Result<Written, ServiceError> {
        self.authorize(p, Action::SecretWrite, &Resource::secret(path), None)
            .await?;
        let _serialised = self.path_lock(path).lock().await;
        self.rotate_serialised(Writer::Principal(p), path, None)
            .await?
            .ok_or(ServiceError::WriteConflict)
    }

    /// Rotates a generated secret. With `expected` (the worker's claim on the schedule it saw),
    /// the rotation is recorded only if nobody rotated since: `Ok(None)` then.
    ///
    /// # Errors
    /// `SecretNotFound`, `NotGenerated`, and the errors of a write.
    pub async fn rotate_generated(
        &self,
        path: &SecretPath,
        expected: Option<Option<OffsetDateTime>>,
    ) -> Result<Option<Written>, ServiceError> {
        let _serialised = self.path_lock(path).lock().await;
        self.rotate_serialised(Writer::System, path, expected).await
    }

    /// [`KeyService::rotate_generated`] for a caller that holds the path's lock.
    async fn rotate_serialised(
        &self,
        writer: Writer<'_>,
        path: &SecretPath,
        expected: Option<Option<OffsetDateTime>>,
    ) -> Result<Option<Written>, ServiceError> {
        let record = self
            .store
            .secret(path)
            .await?
            .ok_or_else(|| ServiceError::SecretNotFound(path.to_string()))?;
        let spec = record
            .generate
            .clone()
            .ok_or_else(|| ServiceError::NotGenerated(path.to_string()))?;
        let value = generate_value(&spec)
            .map_err(|e| ServiceError::Backend(BackendError::Device(Box::new(e))))?;
        let claim = RotationClaim {
            expected,
            next: crate::clock::now() + spec.rotate_every.0,
        };
        let written = self
            .write_version_serialised(writer, path, &value, None, None, Some(claim))
            .await?;
        if let Some(w) = &written {
            tracing::info!(path = %path, version = w.version, "generated secret rotated");
        }
        Ok(written)
    }

    /// Generated secrets due for rotation at `now`, with the schedule each was seen at.
    ///
    /// # Errors
    /// `Store`.
    pub async fn due_secret_rotations(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<(SecretPath, OffsetDateTime)>, ServiceError> {
        Ok(self.store.due_rotations(now, limit).await?)
    }

    /// Soft-deletes versions (default: the newest live one).
    ///
    /// # Errors
    /// `Forbidden`, `SecretNotFound`, `SecretVersionNotFound`, `Store`.
    pub async fn delete_secret_versions(
        &self,
        p: &Principal,
        path: &SecretPath,
        which: Versions,
    ) -> Result<Vec<u32>, ServiceError> {
        self.authorize(p, Action::SecretDelete, &Resource::secret(path), None)
            .await?;
        self.change_versions(path, which, VersionOp::Delete).await
    }

    /// Restores soft-deleted versions (default: the newest deleted one).
    ///
    /// # Errors
    /// As [`KeyService::delete_secret_versions`]; a destroyed version is `SecretVersionDestroyed`.
    pub async fn undelete_secret_versions(
        &self,
        p: &Principal,
        path: &SecretPath,
        which: Versions,
    ) -> Result<Vec<u32>, ServiceError> {
        self.authorize(p, Action::SecretDelete, &Resource::secret(path), None)
            .await?;
        self.change_versions(path, which, VersionOp::Undelete).await
    }

    /// Destroys versions for good: ciphertext and wrapped data key erased.
    ///
    /// # Errors
    /// `Forbidden`, `SecretNotFound`, `SecretVersionNotFound`, `Store`.
    pub async fn destroy_secret_versions(
        &self,
        p: &Principal,
        path: &SecretPath,
        versions: Vec<u32>,
    ) -> Result<Vec<u32>, ServiceError> {
        self.authorize(p, Action::SecretDestroy, &Resource::secret(path), None)
            .await?;
        self.change_versions(path, Versions::These(versions), VersionOp::Destroy)
            .await
    }

    async fn change_versions(
        &self,
        path: &SecretPath,
        which: Versions,
        op: VersionOp,
    ) -> Result<Vec<u32>, ServiceError> {
        let _serialised = self.path_lock(path).lock().await;
        let record = self
            .store
            .secret(path)
            .await?
            .ok_or_else(|| ServiceError::SecretNotFound(path.to_string()))?;
        let versions = match which {
            Versions::These(v) => {
                for n in &v {
                    let info = record
                        .version(*n)
                        .ok_or(ServiceError::SecretVersionNotFound(*n))?;
                    if op == VersionOp::Undelete && info.state == SecretVersionState::Destroyed {
                        return Err(ServiceError::SecretVersionDestroyed(*n));
                    }
                }
                v
            }
            Versions::Latest => {
                let wanted = match op {
                    VersionOp::Undelete => SecretVersionState::Deleted,
                    _ => SecretVersionState::Live,
                };
                let v = record
                    .versions
                    .iter()
                    .rev()
                    .find(|v| v.state == wanted)
                    .ok_or(ServiceError::NoVersionToChange(match op {
                        VersionOp::Undelete => "no deleted version to undelete",
                        _ => "no live version to delete",
                    }))?;
                vec![v.version]
            }
        };
        self.changing().await?;
        let changed = self
            .store
            .update_secret_versions(path, &versions, op, crate::clock::now())
            .await
            .map_err(|e| store_to_service(path, e))?;
        tracing::info!(path = %path, ?op, ?changed, "secret versions changed");
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::secret::Charset;

    #[test]
    fn generated_values_have_the_length_and_alphabet() {
        for charset in [
            Charset::Alphanumeric,
            Charset::Hex,
            Charset::Base64,
            Charset::Printable,
        ] {
            let spec = GenerateSpec {
                length: 300,
                charset,
                rotate_every: HumanDuration::parse("1h").unwrap(),
            };
            let v = generate_value(&spec).unwrap();
            assert_eq!(v.len(), 300);
            let alphabet = charset.alphabet();
            assert!(v.expose_secret().iter().all(|b| alphabet.contains(b)));
            // 300 draws from ≥ 16 symbols use more than one symbol.
            assert!(v.expose_secret().iter().any(|b| *b != v.expose_secret()[0]));
        }
    }
}
