//! [`KeyService`]: where the backend, the store and policy meet. Every operation takes the
//! authenticated [`Principal`] and asks [`policy::authorize`] before it touches anything.

pub mod access_keys;
pub mod audit;
pub mod auth;
pub mod coherence;
pub mod custody;
pub mod database;
pub mod door;
mod error;
pub mod identity;
pub mod lifecycle;
pub mod metrics;
pub mod random;
pub mod rewrap;
pub mod secrets;
pub mod sigv4;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

/// A device's health, as readiness reports it.
pub use crate::backend::DeviceHealth;
pub use door::{Authorized, Credential, Ending, FrontDoor, Internal, RequestMeta, Throttled};
pub use error::{AuthFailure, ErrorKind, ServiceError};

use crate::backend::{BackendError, KeyBackend, Sealed};
use crate::config::{KeysConfig, SecretsConfig};
use crate::domain::{
    BackendKind, Key, KeyId, KeyName, KeyRef, KeyState, KeyVersion, KeyVersionRecord, RootKeyRef,
    RootMaterial, VersionState, WrapMode,
};
use crate::format::blob::{Header, MAX_PLAINTEXT_LEN};
use crate::format::{Blob, EncryptionContext};
use crate::policy::{self, Action, Principal, Resource};
use crate::secret::{BearerToken, SecretBytes};
use crate::store::{Store, StoreError};

/// Allowed data key lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKeyLen {
    /// AES-128
    Bytes16,
    /// AES-192
    Bytes24,
    /// AES-256 (the default)
    Bytes32,
}

impl DataKeyLen {
    /// The length for `n` bytes, if allowed.
    pub fn from_bytes(n: u64) -> Option<Self> {
        match n {
            16 => Some(Self::Bytes16),
            24 => Some(Self::Bytes24),
            32 => Some(Self::Bytes32),
            _ => None,
        }
    }

    /// Number of bytes.
    pub fn bytes(self) -> usize {
        match self {
            Self::Bytes16 => 16,
            Self::Bytes24 => 24,
            Self::Bytes32 => 32,
        }
    }
}

/// Whether a data key request returns the plaintext copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaintextCopy {
    /// Return it (needs `datakey:generate-plaintext`).
    Include,
    /// Wrapped copy only (needs `datakey:generate`).
    Omit,
}

/// A sealed result: who sealed it and the blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealing {
    /// The key.
    pub key_id: KeyId,
    /// The key version.
    pub key_version: KeyVersion,
    /// The serialised blob.
    pub ciphertext: Vec<u8>,
}

/// A fresh data key.
#[derive(Debug)]
pub struct DataKey {
    /// The wrapped copy.
    pub sealed: Sealing,
    /// The plaintext copy, when asked for.
    pub plaintext: Option<SecretBytes>,
}

/// An opened blob.
#[derive(Debug)]
pub struct Opened {
    /// The key that had sealed it.
    pub key_id: KeyId,
    /// Its version.
    pub key_version: KeyVersion,
    /// The plaintext.
    pub plaintext: SecretBytes,
}

/// One page of keys.
#[derive(Debug)]
pub struct KeyPage {
    /// Keys on this page, by name.
    pub keys: Vec<Key>,
    /// Cursor for the next page, if there is one.
    pub next: Option<KeyName>,
}

/// Most TPM keys readiness lists.
const READINESS_TPM_KEYS: u32 = 1000;

/// Readiness of the service's dependencies.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Readiness {
    /// The PKCS#11 token's state.
    pub device: DeviceHealth,
    /// The TPM's state, when one is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpm: Option<DeviceHealth>,
    /// The TPM keys this node serves (their versions are in this node's TPM), by name, when a
    /// TPM is configured; other nodes answer `key_on_other_node` for them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpm_keys: Option<Vec<String>>,
    /// Key versions whose stored device material was refused (named; other keys still work).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rejected_key_blobs: Vec<String>,
    /// True when the database accepted a write just now.
    pub store_writable: bool,
    /// The audit log: writable, and its stored chain intact.
    pub audit: crate::audit::AuditStatus,
}

impl Readiness {
    /// True when every dependency is usable.
    pub fn is_ready(&self) -> bool {
        self.device.usable
            && self.tpm.as_ref().is_none_or(|t| t.usable)
            && self.store_writable
            && self.audit.is_ready()
    }
}

/// Where a new key lives: which device, which wrapping mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPlacement {
    /// The device.
    pub backend: BackendKind,
    /// The wrapping mode.
    pub mode: WrapMode,
}

impl KeyPlacement {
    /// The defaults: PKCS#11 keys wrap directly, TPM keys cached (DESIGN.md).
    pub fn default_for(backend: BackendKind) -> Self {
        let mode = match backend {
            BackendKind::Pkcs11 => WrapMode::Direct,
            BackendKind::Tpm => WrapMode::Cached,
        };
        Self { backend, mode }
    }
}

impl KeyService {
    /// The backend that serves `key`'s mode on its device.
    ///
    /// # Errors
    /// `Backend(NotConfigured)` for a TPM key on a node without a TPM.
    pub(crate) fn backend_of(&self, key: &Key) -> Result<&Arc<dyn KeyBackend>, ServiceError> {
        Ok(self.backends.get(key.backend, key.mode)?)
    }

    /// The backend that serves `key` on this node: as [`KeyService::backend_of`], and for a TPM
    /// key, only on the node whose TPM holds it (recorded when the key was made; keys made
    /// before that was recorded are served by any node with a TPM).
    ///
    /// # Errors
    /// `KeyOnOtherNode` naming that node; those of `backend_of`; `Store`.
    pub(crate) async fn serving_backend(
        &self,
        key: &Key,
    ) -> Result<&Arc<dyn KeyBackend>, ServiceError> {
        if key.backend == BackendKind::Tpm {
            if let Some(node) = self.tpm_key_node(key.id).await? {
                if node != self.audit.node() {
                    return Err(ServiceError::KeyOnOtherNode { node });
                }
            }
        }
        self.backend_of(key)
    }

    /// The node whose TPM holds TPM key `id` (cached: it never changes).
    async fn tpm_key_node(&self, id: KeyId) -> Result<Option<String>, ServiceError> {
        if let Some(node) = self.tpm_nodes.read().ok().and_then(|m| m.get(&id).cloned()) {
            return Ok(Some(node));
        }
        let node = self.store.tpm_key_node(id).await?;
        if let (Some(n), Ok(mut m)) = (&node, self.tpm_nodes.write()) {
            m.insert(id, n.clone());
        }
        Ok(node)
    }

    /// Opens a blob of `key` (whose version state the caller has checked): the blob's algorithm
    /// must be the one its version seals with, then the version's backend opens it.
    ///
    /// # Errors
    /// `DecryptionFailed` for another algorithm or a failed integrity check; `Backend`.
    pub(crate) async fn open_blob(
        &self,
        key: &Key,
        blob: Blob,
        aad: Vec<u8>,
    ) -> Result<crate::secret::SecretBytes, ServiceError> {
        let expected = key.version(blob.key_version).map(|v| v.algorithm);
        if expected != Some(blob.algorithm) {
            return Err(ServiceError::DecryptionFailed);
        }
        let root = key.root(blob.key_version);
        Ok(self
            .serving_backend(key)
            .await?
            .open(noted(&root), blob.iv, aad, blob.ciphertext)
            .await?)
    }
}

/// Notes that a request uses the key version `root` (for its audit record), and passes it on.
pub(crate) fn noted(root: &RootKeyRef) -> &RootKeyRef {
    crate::audit::note::key_used(&root.key_id, root.version);
    root
}

/// Key metadata cached per node. This node replaces an entry whenever it changes the key; a
/// change made by another node sharing the database drops the entry as soon as the store
/// reports it ([`coherence`]), and no entry is trusted longer than [`KEY_CACHE_TTL`].
#[derive(Default)]
struct KeyCache {
    by_id: HashMap<KeyId, (Arc<Key>, Instant)>,
    by_name: HashMap<String, KeyId>,
}

/// How long a cached key is trusted (see [`KeyCache`]).
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(5);

/// The service.
pub struct KeyService {
    backends: crate::backend::Backends,
    audit: Arc<crate::audit::AuditLog>,
    store: Arc<dyn Store>,
    auth: auth::Authenticator,
    keys: RwLock<KeyCache>,
    /// Whether the caches may be used (see [`coherence`]).
    coherence: Arc<coherence::Coherence>,
    /// This process among the nodes: its node name and a random suffix (duty lease holder).
    instance: String,
    /// TPM keys' owning nodes, as read from the store.
    tpm_nodes: std::sync::RwLock<HashMap<KeyId, String>>,
    secrets: SecretsConfig,
    keys_config: KeysConfig,
    /// The key access keys' secrets are sealed under when a request names none (`[aws]
    /// access_key_key`; else `secrets.default_key`).
    access_key_default: Option<KeyRef>,
    /// Wraps this node may still do under each version without another durable reservation.
    wrap_budgets: std::sync::Mutex<HashMap<(KeyId, KeyVersion), u64>>,
    /// Keys whose primary version reached `rotate_after_wraps`: the lifecycle worker rotates them.
    wanted_rotations: std::sync::Mutex<std::collections::HashSet<(KeyId, KeyVersion)>>,
    /// Principals as policy sees them, with when they were loaded.
    subjects: std::sync::RwLock<HashMap<String, (Arc<policy::Subject>, Instant)>>,
    /// Duty leases taken or renewed lately ([`KeyService::holds_lease`]).
    leases: coherence::LeaseMemo,
    /// Per running re-wrap job: its pass over the candidates on this node.
    rewrap_passes: std::sync::Mutex<HashMap<String, rewrap::RewrapPass>>,
    /// Woken when this node starts a re-wrap job, so its worker begins at once.
    rewrap_started: tokio::sync::Notify,
    /// Striped per-key locks: lifecycle changes of one key are serialised on this node.
    key_locks: Vec<tokio::sync::Mutex<()>>,
    /// Striped per-path write locks: writes to one secret path are serialised on this node.
    path_locks: Vec<tokio::sync::Mutex<()>>,
    last_readiness: tokio::sync::Mutex<Option<(Instant, Readiness)>>,
    /// The process's metrics (`GET /metrics`).
    metrics: Arc<crate::metrics::Metrics>,
}

/// How long one readiness probe answers for.
pub const READINESS_TTL: Duration = Duration::from_millis(500);

/// Most rows one list request examines. A principal allowed few items of a large collection
/// gets a shorter page and a cursor after the last row examined, rather than a scan of the
/// whole table in one request.
pub const MAX_LIST_SCAN: usize = 10_000;

/// Per-item authorisation for lists: the principal's policies loaded once, each item decided by
/// the same evaluation as a request for that item alone.
pub(crate) struct ItemFilter {
    subject: Arc<policy::Subject>,
    action: Action,
    source: Option<std::net::IpAddr>,
    now: OffsetDateTime,
}

impl ItemFilter {
    /// Whether the principal may `action` on `resource`.
    pub(crate) fn allows(&self, resource: &Resource) -> bool {
        policy::evaluate(
            &self.subject,
            &policy::Request {
                action: self.action,
                resource,
                context: None,
                source: self.source,
                now: self.now,
            },
        )
        .allowed()
    }
}

/// One page of a list filtered item by item: rows are fetched `after` the cursor in batches
/// until `limit` rows pass `keep`, the collection ends, or [`MAX_LIST_SCAN`] rows were examined.
/// The cursor returned is the last row shown when more allowed rows follow, the last row
/// examined when the scan stopped early, and `None` at the end, so pages stay full and no row
/// is skipped or shown twice.
pub(crate) async fn filtered_page<T, C, F, Fut>(
    limit: u32,
    mut after: Option<C>,
    mut fetch: F,
    cursor: impl Fn(&T) -> C,
    keep: impl Fn(&T) -> bool,
) -> Result<(Vec<T>, Option<C>), ServiceError>
where
    C: Clone,
    F: FnMut(Option<C>, u32) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<T>, StoreError>>,
{
    let limit = (limit as usize).max(1);
    let batch = u32::try_from(limit.saturating_add(1).clamp(100, 1000)).unwrap_or(1000);
    let mut out: Vec<T> = Vec::new();
    let mut scanned = 0usize;
    loop {
        let rows = fetch(after.clone(), batch).await?;
        let exhausted = rows.len() < batch as usize;
        for row in rows {
            scanned += 1;
            let at = cursor(&row);
            if keep(&row) {
                if out.len() == limit {
                    // Another allowed row follows the page: continue after the last one shown.
                    let next = out.last().map(&cursor);
                    return Ok((out, next));
                }
                out.push(row);
            }
            after = Some(at);
            if scanned >= MAX_LIST_SCAN && !exhausted {
                return Ok((out, after));
            }
        }
        if exhausted {
            return Ok((out, None));
        }
    }
}

impl KeyService {
    /// A service over `backend` and `store`.
    pub fn new(
        backends: crate::backend::Backends,
        store: Arc<dyn Store>,
        audit: Arc<crate::audit::AuditLog>,
        secrets: SecretsConfig,
        keys_config: KeysConfig,
    ) -> Self {
        let coherence = Arc::new(coherence::Coherence::new(store.shared()));
        let instance = format!("{}/{}", audit.node(), uuid::Uuid::new_v4());
        Self {
            instance,
            tpm_nodes: std::sync::RwLock::new(HashMap::new()),
            audit,
            auth: auth::Authenticator::new(Arc::clone(&store), Arc::clone(&coherence)),
            backends,
            store,
            keys: RwLock::new(KeyCache::default()),
            coherence,
            secrets,
            keys_config,
            access_key_default: None,
            wrap_budgets: std::sync::Mutex::new(HashMap::new()),
            wanted_rotations: std::sync::Mutex::new(std::collections::HashSet::new()),
            leases: coherence::LeaseMemo::default(),
            rewrap_passes: std::sync::Mutex::new(HashMap::new()),
            rewrap_started: tokio::sync::Notify::new(),
            subjects: std::sync::RwLock::new(HashMap::new()),
            key_locks: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
            path_locks: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
            last_readiness: tokio::sync::Mutex::new(None),
            metrics: Arc::default(),
        }
    }

    /// Renders `metrics` at `GET /metrics` (the registry the backends, the store and the audit
    /// writer record into).
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Seals access keys' secrets under `key` when a request names none (else under
    /// `secrets.default_key`).
    #[must_use]
    pub fn with_access_key_default(mut self, key: Option<KeyRef>) -> Self {
        self.access_key_default = key;
        self
    }

    /// Periodic backend upkeep: expired cached version-KEKs leave memory (and are zeroised)
    /// even when no request touches them again.
    /// Each expiry is recorded as background work of the `kek-cache` worker: key material
    /// leaving memory matters for custody.
    pub async fn maintain_backends(&self) {
        for b in self.backends.all() {
            for (key_id, version) in b.maintain().await {
                let resource = format!("key/{key_id}");
                // Already out of memory: there is nothing to announce, only to record.
                let unit = async {
                    crate::audit::note::key_used(&key_id, version);
                    crate::audit::note::detail("kek_expired", version.get().to_string());
                    crate::audit::note::happened();
                    Ok(())
                };
                if let Err(e) = self
                    .in_background("kek-cache", "kek:expire", &resource, unit)
                    .await
                {
                    tracing::error!(key_id = %key_id, error = %e, "a version-KEK expiry could not be recorded");
                }
            }
        }
    }

    /// The audit log.
    pub fn audit(&self) -> &crate::audit::AuditLog {
        &self.audit
    }

    /// On a fresh install (no tokens at all), mints the bootstrap admin token and returns it so
    /// it can be shown once. Otherwise `None`.
    ///
    /// # Errors
    /// Store errors; the OS random source failing.
    pub async fn bootstrap(&self) -> Result<Option<BearerToken>, ServiceError> {
        self.install_built_in_policies().await?;
        if self.store.token_count().await? > 0 {
            return Ok(None);
        }
        self.ensure_bootstrap_principal().await?;
        let (token, record) = auth::mint(policy::BOOTSTRAP_ADMIN, "bootstrap admin token")
            .map_err(|e| ServiceError::Backend(BackendError::Device(Box::new(e))))?;
        self.store.insert_token(&record).await?;
        tracing::info!(token_id = %record.id, "bootstrap admin token minted");
        Ok(Some(token))
    }

    /// The principal a presented bearer token authenticates.
    ///
    /// # Errors
    /// `Unauthenticated`; `Store`.
    pub async fn authenticate(&self, presented: &str) -> Result<Principal, ServiceError> {
        self.auth.verify(presented).await
    }

    /// The one authorisation point: every operation asks here before it touches anything.
    /// Loads the principal's attributes and policies (cached for [`auth::CACHE_TTL`]) and
    /// evaluates them; anything that cannot be evaluated denies.
    ///
    /// # Errors
    /// `Forbidden`; `Store` when the principal's policies cannot be read.
    pub(crate) async fn authorize(
        &self,
        p: &Principal,
        action: Action,
        resource: &Resource,
        context: Option<&EncryptionContext>,
    ) -> Result<(), ServiceError> {
        if let Some(ctx) = context {
            crate::audit::note::context(ctx);
        }
        let decision = self.decide(p, action, resource, context).await?;
        crate::audit::note::authorization(
            action.as_str(),
            &resource.to_string(),
            decision.allowed(),
        );
        if decision.allowed() {
            return Ok(());
        }
        tracing::debug!(principal = %p.name, action = action.as_str(), resource = %resource, decided_by = ?decision.decided_by, "denied");
        Err(ServiceError::Forbidden {
            action: action.as_str(),
            resource: resource.to_string(),
        })
    }

    /// A per-item filter for lists of `action` (see [`ItemFilter`]). The list itself is noted
    /// for the audit record as `action` on every resource of `kind`, allowed: what it shows is
    /// decided item by item.
    ///
    /// # Errors
    /// `Store` when the principal's policies cannot be read.
    pub(crate) async fn item_filter(
        &self,
        p: &Principal,
        action: Action,
        kind: &'static str,
    ) -> Result<ItemFilter, ServiceError> {
        crate::audit::note::authorization(action.as_str(), &format!("{kind}/*"), true);
        Ok(ItemFilter {
            subject: self.subject(&p.name).await?,
            action,
            source: p.source,
            now: crate::clock::now(),
        })
    }

    /// The decision for a request, with the statement that made it.
    ///
    /// # Errors
    /// `Store`.
    pub(crate) async fn decide(
        &self,
        p: &Principal,
        action: Action,
        resource: &Resource,
        context: Option<&EncryptionContext>,
    ) -> Result<policy::Decision, ServiceError> {
        let subject = self.subject(&p.name).await?;
        let request = policy::Request {
            action,
            resource,
            context,
            source: p.source,
            now: crate::clock::now(),
        };
        Ok(policy::evaluate(&subject, &request))
    }

    /// Creates a key with version 1: root key in the device first, then the record; if the
    /// record fails, the device object is destroyed (see `backend` module docs).
    ///
    /// # Errors
    /// `Forbidden`, `KeyNameTaken`, `Backend`, `Store`.
    #[tracing::instrument(skip_all, fields(op = "key_create", key_name = %name))]
    pub async fn create_key(
        &self,
        p: &Principal,
        name: KeyName,
        description: String,
        placement: KeyPlacement,
    ) -> Result<Key, ServiceError> {
        self.authorize(p, Action::KeyCreate, &Resource::all_keys(), None)
            .await?;
        if self.store.key(&KeyRef::Name(name.clone())).await?.is_some() {
            return Err(ServiceError::KeyNameTaken(name.to_string()));
        }
        let backend = Arc::clone(self.backends.get(placement.backend, placement.mode)?);
        let now = crate::clock::now();
        let mut key = Key {
            id: KeyId::generate(),
            name,
            description,
            state: KeyState::Enabled,
            backend: placement.backend,
            mode: placement.mode,
            created_at: now,
            updated_at: now,
            primary_version: KeyVersion::FIRST,
            min_decryption_version: KeyVersion::FIRST,
            rotation_period: None,
            next_rotation_at: None,
            deletion_date: None,
            deletion_blocked: None,
            versions: vec![KeyVersionRecord {
                version: KeyVersion::FIRST,
                state: VersionState::Primary,
                algorithm: backend.algorithm(),
                created_at: now,
                destroyed_at: None,
                wraps_reserved: 0,
                material: RootMaterial::default(),
            }],
        };
        self.changing().await?;
        let material = backend.create_root_key(&key.primary_root()).await?;
        if let Some(v) = key.versions.first_mut() {
            v.material = material;
        }
        let root = key.primary_root();
        if let Err(e) = self.store.insert_key(&key).await {
            match backend.destroy_root_key(&root).await {
                Ok(()) => {
                    tracing::warn!(key_id = %key.id, "key record failed; root key destroyed again")
                }
                Err(d) => {
                    tracing::error!(key_id = %key.id, label = %root.label(), error = %d, "key record failed and the root key could not be destroyed: orphaned device object")
                }
            }
            return Err(match e {
                StoreError::Conflict { .. } => ServiceError::KeyNameTaken(key.name.to_string()),
                other => other.into(),
            });
        }
        if key.backend == BackendKind::Tpm {
            // Only this node's TPM can load the key's versions: other nodes say so, by name.
            if let Err(e) = self.store.set_tpm_key_node(key.id, self.audit.node()).await {
                tracing::error!(key_id = %key.id, error = %e, "the TPM key's node could not be recorded; other nodes will fail to load it without naming this node");
            }
        }
        tracing::info!(key_id = %key.id, key_name = %key.name, "key created");
        let key = Arc::new(key);
        self.cache(&key);
        Ok(Key::clone(&key))
    }

    /// One page of keys, ordered by name.
    ///
    /// # Errors
    /// `Forbidden`, `Store`.
    #[tracing::instrument(skip_all, fields(op = "key_list"))]
    pub async fn list_keys(
        &self,
        p: &Principal,
        after: Option<KeyName>,
        limit: u32,
    ) -> Result<KeyPage, ServiceError> {
        let filter = self.item_filter(p, Action::KeyRead, "key").await?;
        let store = &self.store;
        let (keys, next) = filtered_page(
            limit,
            after,
            |after: Option<KeyName>, n| async move { store.list_keys(after.as_ref(), n).await },
            |k: &Key| k.name.clone(),
            |k: &Key| filter.allows(&Resource::key(&k.id, k.name.as_str())),
        )
        .await?;
        Ok(KeyPage { keys, next })
    }

    /// The key `r` names.
    ///
    /// # Errors
    /// `Forbidden`, `KeyNotFound`, `Store`.
    #[tracing::instrument(skip_all, fields(op = "key_read", key = %r))]
    pub async fn key(&self, p: &Principal, r: &KeyRef) -> Result<Key, ServiceError> {
        let key = self.resolve(p, Action::KeyRead, r).await?;
        // Reads of metadata are not on the hot path: show the stored state, not the cache.
        let key = self.fresh_key(key.id).await?;
        Ok(Key::clone(&key))
    }

    /// A fresh data key under the primary version of `r`, bound to `context`.
    ///
    /// # Errors
    /// `Forbidden`, `KeyNotFound`, `KeyDisabled`, `Backend`, `Store`.
    #[tracing::instrument(skip_all, fields(op = "datakey", key = %r, bytes = len.bytes()))]
    pub async fn generate_data_key(
        &self,
        p: &Principal,
        r: &KeyRef,
        len: DataKeyLen,
        context: &EncryptionContext,
        copy: PlaintextCopy,
    ) -> Result<DataKey, ServiceError> {
        let action = match copy {
            PlaintextCopy::Include => Action::DatakeyGeneratePlaintext,
            PlaintextCopy::Omit => Action::DatakeyGenerate,
        };
        let key = self.resolve_with(p, action, r, Some(context)).await?;
        let header = usable_header(&key)?;
        self.charge_wrap(&key).await?;
        let (plaintext, sealed) = self
            .serving_backend(&key)
            .await?
            .generate_and_seal(noted(&key.primary_root()), header.aad(context), len.bytes())
            .await?;
        Ok(DataKey {
            sealed: seal_result(header, sealed),
            plaintext: match copy {
                PlaintextCopy::Include => Some(plaintext),
                PlaintextCopy::Omit => None,
            },
        })
    }

    /// Encrypts a small payload (1 to 4096 bytes) under the primary version of `r`.
    ///
    /// # Errors
    /// `Forbidden`, `KeyNotFound`, `KeyDisabled`, `PlaintextTooLarge`, `PlaintextEmpty`,
    /// `Backend`, `Store`.
    #[tracing::instrument(skip_all, fields(op = "encrypt", key = %r))]
    pub async fn encrypt(
        &self,
        p: &Principal,
        r: &KeyRef,
        plaintext: SecretBytes,
        context: &EncryptionContext,
    ) -> Result<Sealing, ServiceError> {
        let key = self
            .resolve_with(p, Action::Encrypt, r, Some(context))
            .await?;
        if plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(ServiceError::PlaintextTooLarge {
                got: plaintext.len(),
                limit: MAX_PLAINTEXT_LEN,
            });
        }
        if plaintext.is_empty() {
            return Err(ServiceError::PlaintextEmpty);
        }
        let header = usable_header(&key)?;
        self.seal_under_primary(&key, header, context, plaintext)
            .await
    }

    /// Seals `plaintext` under `key`'s primary version (`header`, from [`usable_header`]) bound
    /// to `context`, charging the version's wrap budget and noting the key's use.
    ///
    /// # Errors
    /// `WrapLimitReached` and the like from the budget, `Backend`, `Store`.
    pub(crate) async fn seal_under_primary(
        &self,
        key: &Key,
        header: Header,
        context: &EncryptionContext,
        plaintext: SecretBytes,
    ) -> Result<Sealing, ServiceError> {
        self.charge_wrap(key).await?;
        let sealed = self
            .serving_backend(key)
            .await?
            .seal(noted(&key.primary_root()), header.aad(context), plaintext)
            .await?;
        Ok(seal_result(header, sealed))
    }

    /// Opens a blob; the blob names its key, the context must match exactly. When the caller
    /// also `named` a key (Vault's path, AWS's `KeyId`), the blob's key must be that one
    /// (`WrongKey`); checking it needs no more than `decrypt` on the blob's key.
    ///
    /// # Errors
    /// `InvalidCiphertext`, `CiphertextKeyNotFound`, `Forbidden`, `WrongKey`, `KeyDisabled`,
    /// `DecryptionFailed`, `Backend`, `Store`.
    #[tracing::instrument(skip_all, fields(op = "decrypt", key_id = tracing::field::Empty, key_version = tracing::field::Empty))]
    pub async fn decrypt(
        &self,
        p: &Principal,
        ciphertext: &[u8],
        context: &EncryptionContext,
        named: Option<&KeyRef>,
    ) -> Result<Opened, ServiceError> {
        let blob = Blob::parse(ciphertext)?;
        let span = tracing::Span::current();
        span.record("key_id", tracing::field::display(blob.key_id));
        span.record("key_version", blob.key_version.get());
        let key = match self
            .resolve_with(p, Action::Decrypt, &KeyRef::Id(blob.key_id), Some(context))
            .await
        {
            Err(ServiceError::KeyNotFound(_)) => return Err(ServiceError::CiphertextKeyNotFound),
            other => other?,
        };
        self.check_named(named, &key).await?;
        check_unwrap(&key, blob.key_version)?;
        let key_version = blob.key_version;
        let aad = blob.header().aad(context);
        let plaintext = self.open_blob(&key, blob, aad).await?;
        Ok(Opened {
            key_id: key.id,
            key_version,
            plaintext,
        })
    }

    /// Device and database readiness. The readiness route is unauthenticated, so probes are
    /// coalesced: callers within [`READINESS_TTL`] of the last probe share its result, and
    /// concurrent callers wait for one probe instead of each touching the device and the disk.
    pub async fn readiness(&self) -> Readiness {
        let mut last = self.last_readiness.lock().await;
        if let Some((at, r)) = &*last {
            if at.elapsed() < READINESS_TTL {
                return r.clone();
            }
        }
        let r = self.probe_readiness().await;
        *last = Some((Instant::now(), r.clone()));
        r
    }

    async fn probe_readiness(&self) -> Readiness {
        // The device, the TPM and the store are probed side by side: the first probe stands
        // between a starting node and its first "ready" (issue 23, target 7).
        let tpm_probe = async {
            let Some(t) = self.backends.tpm() else {
                return (None, None);
            };
            let health = t.health().await;
            let keys = match self
                .store
                .tpm_keys_on_node(self.audit.node(), READINESS_TPM_KEYS)
                .await
            {
                Ok(names) => Some(names),
                Err(e) => {
                    tracing::warn!(error = %e, "listing this node's TPM keys failed");
                    None
                }
            };
            (Some(health), keys)
        };
        let store_probe = async {
            match self.store.check_writable().await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "database is not writable");
                    false
                }
            }
        };
        let (device, (tpm, tpm_keys), store_writable) =
            tokio::join!(self.backends.signing().health(), tpm_probe, store_probe);
        let mut rejected_key_blobs: Vec<String> = self
            .backends
            .all()
            .into_iter()
            .flat_map(|b| b.rejected_key_blobs())
            .collect();
        rejected_key_blobs.sort();
        rejected_key_blobs.dedup();
        Readiness {
            device,
            tpm,
            tpm_keys,
            rejected_key_blobs,
            store_writable,
            audit: self.audit.status(),
        }
    }

    /// Finds the key `r` names and authorises `action` on it. An unknown key is reported as
    /// not found only to a principal that would have been allowed the action on it.
    pub(crate) async fn resolve(
        &self,
        p: &Principal,
        action: Action,
        r: &KeyRef,
    ) -> Result<Arc<Key>, ServiceError> {
        self.resolve_with(p, action, r, None).await
    }

    /// [`KeyService::resolve`] for actions that carry an encryption context.
    pub(crate) async fn resolve_with(
        &self,
        p: &Principal,
        action: Action,
        r: &KeyRef,
        context: Option<&EncryptionContext>,
    ) -> Result<Arc<Key>, ServiceError> {
        match self.lookup_key(r).await? {
            Some(key) => {
                let mut resource = Resource::key(&key.id, key.name.as_str());
                if let KeyRef::Alias(alias) = r {
                    resource
                        .names
                        .push(format!("{}{alias}", crate::domain::ALIAS_PREFIX));
                }
                self.authorize(p, action, &resource, context).await?;
                Ok(key)
            }
            None => {
                // Only a principal allowed the action on that name learns it does not exist.
                self.authorize(p, action, &Resource::key_ref(r), context)
                    .await?;
                Err(ServiceError::KeyNotFound(r.to_string()))
            }
        }
    }

    /// `WrongKey` unless `named` (when given) names `key`: by id or name directly, an alias by
    /// where it points now. The caller was authorised on `key`; it learns only whether the name
    /// it sent is that key.
    ///
    /// # Errors
    /// `WrongKey`; `Store` when an alias cannot be looked up.
    pub(crate) async fn check_named(
        &self,
        named: Option<&KeyRef>,
        key: &Key,
    ) -> Result<(), ServiceError> {
        let same = match named {
            None => true,
            Some(KeyRef::Id(id)) => *id == key.id,
            Some(KeyRef::Name(name)) => *name == key.name,
            Some(alias @ KeyRef::Alias(_)) => self
                .lookup_key(alias)
                .await?
                .is_some_and(|k| k.id == key.id),
        };
        if same {
            Ok(())
        } else {
            Err(ServiceError::WrongKey)
        }
    }

    /// The key `r` names, from the cache or the store. No authorisation: callers decide.
    pub(crate) async fn lookup_key(&self, r: &KeyRef) -> Result<Option<Arc<Key>>, ServiceError> {
        if let Some(k) = self.cached(r) {
            return Ok(Some(k));
        }
        let ticket = self.coherence.ticket();
        Ok(self.store.key(r).await?.map(|k| {
            let k = Arc::new(k);
            if self.coherence.may_cache(ticket) {
                self.cache(&k);
            }
            k
        }))
    }

    fn cached(&self, r: &KeyRef) -> Option<Arc<Key>> {
        if !self.coherence.trusted() {
            return None;
        }
        let cache = self.keys.read().ok()?;
        let id = match r {
            KeyRef::Id(id) => *id,
            KeyRef::Name(n) => *cache.by_name.get(n.as_str())?,
            // Aliases can be re-pointed at any time: always resolved in the store.
            KeyRef::Alias(_) => return None,
        };
        let (key, at) = cache.by_id.get(&id)?;
        (at.elapsed() < KEY_CACHE_TTL).then(|| Arc::clone(key))
    }

    pub(crate) fn cache(&self, key: &Arc<Key>) {
        if let Ok(mut cache) = self.keys.write() {
            cache.by_name.insert(key.name.as_str().to_owned(), key.id);
            cache
                .by_id
                .insert(key.id, (Arc::clone(key), Instant::now()));
        }
    }
}

/// The header for new blobs under `key`'s primary version, if the key may wrap.
pub(crate) fn usable_header(key: &Key) -> Result<Header, ServiceError> {
    check_state(key)?;
    let algorithm = key
        .version(key.primary_version)
        .map(|v| v.algorithm)
        .ok_or(ServiceError::Backend(BackendError::Invariant(
            "primary version has no record",
        )))?;
    Ok(Header {
        algorithm,
        key_id: key.id,
        key_version: key.primary_version,
    })
}

/// The key may wrap and unwrap: it is enabled.
fn check_state(key: &Key) -> Result<(), ServiceError> {
    let id = key.id.to_string();
    match key.state {
        KeyState::Enabled => Ok(()),
        KeyState::Disabled => Err(ServiceError::KeyDisabled(id)),
        KeyState::PendingDeletion => Err(ServiceError::KeyPendingDeletion(id)),
        KeyState::Destroyed => Err(ServiceError::KeyDestroyed(id)),
    }
}

/// `version` of `key` may unwrap: the key is enabled, the version exists, is neither disabled
/// nor destroyed, and is not below `min_decryption_version`.
pub(crate) fn check_unwrap(key: &Key, version: KeyVersion) -> Result<(), ServiceError> {
    check_state(key)?;
    let v = key
        .version(version)
        .ok_or(ServiceError::CiphertextKeyNotFound)?;
    match v.state {
        VersionState::Primary | VersionState::Active => {}
        VersionState::Disabled => return Err(ServiceError::KeyVersionDisabled(version.get())),
        VersionState::Destroyed => return Err(ServiceError::KeyVersionDestroyed(version.get())),
    }
    if version < key.min_decryption_version {
        return Err(ServiceError::KeyVersionBelowMinimum {
            version: version.get(),
            minimum: key.min_decryption_version.get(),
        });
    }
    Ok(())
}

pub(crate) fn seal_result(header: Header, sealed: Sealed) -> Sealing {
    let blob = Blob {
        algorithm: header.algorithm,
        key_id: header.key_id,
        key_version: header.key_version,
        iv: sealed.iv,
        ciphertext: sealed.ciphertext,
    };
    Sealing {
        key_id: header.key_id,
        key_version: header.key_version,
        ciphertext: blob.to_bytes(),
    }
}
