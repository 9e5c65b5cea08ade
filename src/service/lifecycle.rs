//! Key lifecycle: rotation (on demand, on a schedule, and when a version's wrap budget runs
//! low), key and version states, deletion, aliases and re-encryption.
//!
//! Every change to one key is serialised on this node by a per-key lock and checked again in
//! the store's transaction (expected state, expected primary version, schedule claim), so two
//! nodes sharing a database cannot both apply a transition or both run a scheduled rotation.
//! Rotation follows the create/rollback protocol: device object first, then the record; if the
//! record fails, the new device object is destroyed again.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use time::OffsetDateTime;

use super::{check_state, check_unwrap, usable_header, KeyService, Sealing, ServiceError};
use crate::backend::BackendError;
use crate::config::MAX_WRAPS_PER_VERSION;
use crate::domain::secret::HumanDuration;
use crate::domain::{
    Alias, Key, KeyId, KeyName, KeyRef, KeyState, KeyVersion, KeyVersionRecord, RootKeyRef,
    VersionState,
};
use crate::format::{Blob, EncryptionContext};
use crate::policy::{Action, Principal, Resource};
use crate::store::{KeyUpdate, RotationClaim, StaleKind, StoreError};

/// Shortest and longest pending-deletion window, in days.
pub const PENDING_DAYS: std::ops::RangeInclusive<u32> = 7..=30;
/// Pending-deletion window when none is given.
pub const DEFAULT_PENDING_DAYS: u32 = 30;
/// How long a device destruction is left to the request (or deletion) that marked it before
/// the lifecycle worker retries it: twice the default request deadline. A slower device than
/// that costs at most a second attempt, which finds the object gone and is harmless.
pub const DEVICE_DESTROY_GRACE: time::Duration = time::Duration::seconds(60);

/// What a PATCH of a key asks for.
#[derive(Debug, Clone, Default)]
pub struct KeyPatch {
    /// New description.
    pub description: Option<String>,
    /// New rotation period (`Some(None)` turns scheduled rotation off).
    pub rotation_period: Option<Option<HumanDuration>>,
    /// New `min_decryption_version`.
    pub min_decryption_version: Option<u32>,
}

/// A key version with the number of stored data keys it still wraps.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VersionUsage {
    /// The version record.
    #[serde(flatten)]
    pub record: KeyVersionRecord,
    /// Stored wrapped data keys (secret versions) and access keys not revoked under this
    /// version.
    pub stored_data_keys: u64,
}

/// A re-encrypted blob.
#[derive(Debug)]
pub struct Reencrypted {
    /// The new blob.
    pub sealed: Sealing,
    /// The key that had sealed the input.
    pub source_key_id: KeyId,
    /// Its version.
    pub source_key_version: KeyVersion,
}

fn stale_to_conflict(e: StoreError) -> ServiceError {
    match e {
        StoreError::Stale { .. } => ServiceError::ConcurrentChange,
        StoreError::InUse { count } => ServiceError::KeyVersionInUse { count },
        other => ServiceError::Store(other),
    }
}

impl KeyService {
    fn key_lock(&self, id: KeyId) -> &tokio::sync::Mutex<()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut h);
        let i = (h.finish() % self.key_locks.len() as u64) as usize;
        &self.key_locks[i]
    }

    /// The key as stored now (not cached), refreshing the cache.
    pub(crate) async fn fresh_key(&self, id: KeyId) -> Result<Arc<Key>, ServiceError> {
        let key = self
            .store
            .key(&KeyRef::Id(id))
            .await?
            .ok_or_else(|| ServiceError::KeyNotFound(id.to_string()))?;
        let key = Arc::new(key);
        self.cache(&key);
        Ok(key)
    }

    fn remember(&self, key: Key) -> Key {
        let key = Arc::new(key);
        self.cache(&key);
        Key::clone(&key)
    }

    /// Accounts for one wrap under `key`'s primary version. Wraps are reserved durably in
    /// blocks before they are used, so the stored count is an upper bound of the wraps done and
    /// the GCM nonce budget is never overrun, even across crashes or several nodes. Crossing
    /// `keys.rotate_after_wraps` asks the lifecycle worker to rotate the key.
    ///
    /// # Errors
    /// `WrapLimitReached` when the version's budget is spent; `Store`.
    pub(crate) async fn charge_wrap(&self, key: &Key) -> Result<(), ServiceError> {
        let slot = (key.id, key.primary_version);
        if let Ok(mut budgets) = self.wrap_budgets.lock() {
            if let Some(left) = budgets.get_mut(&slot) {
                if *left > 0 {
                    *left -= 1;
                    return Ok(());
                }
            }
        }
        let block = self.keys_config.wrap_reservation_block;
        let total = self.store.reserve_wraps(&key.primary_root(), block).await?;
        if total >= self.keys_config.rotate_after_wraps {
            if let Ok(mut wanted) = self.wanted_rotations.lock() {
                if wanted.insert((key.id, key.primary_version)) {
                    tracing::warn!(key_id = %key.id, key_version = key.primary_version.get(), wraps_reserved = total, "wrap budget threshold reached; rotating");
                }
            }
        }
        if total > MAX_WRAPS_PER_VERSION {
            return Err(ServiceError::WrapLimitReached(key.primary_version.get()));
        }
        if let Ok(mut budgets) = self.wrap_budgets.lock() {
            *budgets.entry(slot).or_insert(0) += block - 1;
        }
        Ok(())
    }

    /// Key versions whose wrap budget asked for a rotation; the set is emptied.
    pub fn take_wanted_rotations(&self) -> Vec<(KeyId, KeyVersion)> {
        self.wanted_rotations
            .lock()
            .map(|mut w| w.drain().collect())
            .unwrap_or_default()
    }

    /// Rotates now: a new root key in the device becomes the primary version.
    ///
    /// # Errors
    /// `Forbidden`, `KeyNotFound`, `KeyDisabled`, `KeyPendingDeletion`, `KeyDestroyed`,
    /// `RotationConflict`, `Backend`, `Store`.
    #[tracing::instrument(skip_all, fields(op = "key_rotate", key = %r))]
    pub async fn rotate_key(&self, p: &Principal, r: &KeyRef) -> Result<Key, ServiceError> {
        let key = self.resolve(p, Action::KeyRotate, r).await?;
        self.rotate(key.id, Trigger::OnDemand)
            .await?
            .ok_or(ServiceError::RotationConflict)
    }

    /// Rotates `id`. A scheduled or wrap-budget rotation happens only if what triggered it still
    /// holds (the schedule the worker saw is still the key's, the version that ran low is still
    /// primary): `Ok(None)` otherwise, so no trigger ever rotates twice.
    ///
    /// # Errors
    /// As [`KeyService::rotate_key`].
    pub async fn rotate(&self, id: KeyId, trigger: Trigger) -> Result<Option<Key>, ServiceError> {
        let _serialised = self.key_lock(id).lock().await;
        let key = self.fresh_key(id).await?;
        check_state(&key)?;
        let (scheduled, reason) = match trigger {
            Trigger::OnDemand => (None, "on demand"),
            Trigger::Schedule(seen) => {
                if key.next_rotation_at != Some(seen) {
                    return Ok(None);
                }
                (Some(seen), "scheduled")
            }
            Trigger::WrapBudget(version) => {
                if key.primary_version != version {
                    return Ok(None);
                }
                (None, "wrap budget")
            }
        };
        let last = key.versions.last().map_or(0, |v| v.version.get());
        let version = KeyVersion::new(last + 1).ok_or(ServiceError::Backend(
            BackendError::Invariant("version overflow"),
        ))?;
        let backend = Arc::clone(self.serving_backend(&key).await?);
        let bare = RootKeyRef::bare(id, version);
        crate::audit::note::detail("version_created", version.get().to_string());
        self.changing().await?;
        let material = backend.create_root_key(&bare).await?;
        let root = RootKeyRef {
            material: material.clone(),
            ..bare
        };
        let now = crate::clock::now();
        let record = KeyVersionRecord {
            version,
            state: VersionState::Primary,
            algorithm: backend.algorithm(),
            created_at: now,
            destroyed_at: None,
            wraps_reserved: 0,
            material,
        };
        let claim = key.rotation_period.map(|period| RotationClaim {
            expected: scheduled.map(Some),
            next: now + period.0,
        });
        match self
            .store
            .add_key_version(id, &record, key.primary_version, claim)
            .await
        {
            Ok(key) => {
                tracing::info!(key_id = %id, key_version = version.get(), reason, "key rotated");
                let key = self.remember(key);
                if self.keys_config.rewrap_after_rotation {
                    if let Err(e) = self.start_rewrap_job(&key).await {
                        tracing::error!(key_id = %id, error = %e, "could not start the re-wrap job after rotation");
                    }
                }
                Ok(Some(key))
            }
            Err(e) => {
                match backend.destroy_root_key(&root).await {
                    Ok(()) => {
                        tracing::warn!(key_id = %id, key_version = version.get(), "rotation record failed; new root key destroyed again")
                    }
                    Err(d) => {
                        tracing::error!(label = %root.label(), error = %d, "rotation record failed and the new root key could not be destroyed: orphaned device object")
                    }
                }
                match e {
                    StoreError::Stale {
                        what: StaleKind::RotationSchedule,
                    } => Ok(None),
                    other => Err(stale_to_conflict(other)),
                }
            }
        }
    }

    /// Changes description, rotation period or `min_decryption_version`.
    ///
    /// # Errors
    /// `Forbidden`, `KeyNotFound`, `KeyDestroyed`, `InvalidLifecycleValue`, `Store`.
    #[tracing::instrument(skip_all, fields(op = "key_update", key = %r))]
    pub async fn update_key(
        &self,
        p: &Principal,
        r: &KeyRef,
        patch: KeyPatch,
    ) -> Result<Key, ServiceError> {
        let key = self.resolve(p, Action::KeyUpdate, r).await?;
        let _serialised = self.key_lock(key.id).lock().await;
        let key = self.fresh_key(key.id).await?;
        if key.state == KeyState::Destroyed {
            return Err(ServiceError::KeyDestroyed(key.id.to_string()));
        }
        let now = crate::clock::now();
        let mut update = KeyUpdate {
            expected_state: Some(key.state),
            description: patch.description,
            ..KeyUpdate::default()
        };
        if let Some(period) = patch.rotation_period {
            if let Some(p) = period {
                if p.0 < self.keys_config.min_rotation_period {
                    return Err(ServiceError::InvalidLifecycleValue("rotation_period is shorter than keys.min_rotation_period (1h unless configured)"));
                }
            }
            update.rotation = Some((period, period.map(|p| now + p.0)));
        }
        if let Some(min) = patch.min_decryption_version {
            let min = KeyVersion::new(min)
                .filter(|m| *m <= key.primary_version)
                .ok_or(ServiceError::InvalidLifecycleValue(
                    "min_decryption_version must be 1 to the primary version",
                ))?;
            update.min_decryption_version = Some(min);
        }
        self.changing().await?;
        let key = self
            .store
            .update_key(key.id, &update, now)
            .await
            .map_err(stale_to_conflict)?;
        Ok(self.remember(key))
    }

    /// Moves the key between lifecycle states (see `docs/lifecycle.md` for the diagram).
    async fn transition(
        &self,
        p: &Principal,
        r: &KeyRef,
        action: &'static str,
        policy: Action,
    ) -> Result<Key, ServiceError> {
        let key = self.resolve(p, policy, r).await?;
        let _serialised = self.key_lock(key.id).lock().await;
        let key = self.fresh_key(key.id).await?;
        let now = crate::clock::now();
        let refuse = || ServiceError::InvalidKeyState {
            key: key.id.to_string(),
            state: key.state.as_str(),
            action,
        };
        let mut update = KeyUpdate {
            expected_state: Some(key.state),
            ..KeyUpdate::default()
        };
        match (action, key.state) {
            (_, KeyState::Destroyed) => return Err(ServiceError::KeyDestroyed(key.id.to_string())),
            ("disable", KeyState::Disabled) | ("enable", KeyState::Enabled) => {
                return Ok(Key::clone(&key))
            }
            ("disable", KeyState::Enabled) => update.state = Some(KeyState::Disabled),
            ("enable", KeyState::Disabled) => update.state = Some(KeyState::Enabled),
            ("cancel deletion of", KeyState::PendingDeletion) => {
                update.state = Some(KeyState::Disabled);
                update.deletion_date = Some(None);
                update.deletion_blocked = Some(None);
            }
            _ => return Err(refuse()),
        }
        self.changing().await?;
        let key = self
            .store
            .update_key(key.id, &update, now)
            .await
            .map_err(stale_to_conflict)?;
        tracing::info!(key_id = %key.id, state = key.state.as_str(), "key state changed");
        Ok(self.remember(key))
    }

    /// `enabled → disabled` (a disabled key neither wraps nor unwraps).
    ///
    /// # Errors
    /// `Forbidden`, `KeyNotFound`, `InvalidKeyState`, `KeyDestroyed`, `Store`.
    pub async fn disable_key(&self, p: &Principal, r: &KeyRef) -> Result<Key, ServiceError> {
        self.transition(p, r, "disable", Action::KeyDisable).await
    }

    /// `disabled → enabled`.
    ///
    /// # Errors
    /// As [`KeyService::disable_key`].
    pub async fn enable_key(&self, p: &Principal, r: &KeyRef) -> Result<Key, ServiceError> {
        self.transition(p, r, "enable", Action::KeyDisable).await
    }

    /// `pending_deletion → disabled`.
    ///
    /// # Errors
    /// As [`KeyService::disable_key`].
    pub async fn cancel_key_deletion(
        &self,
        p: &Principal,
        r: &KeyRef,
    ) -> Result<Key, ServiceError> {
        self.transition(p, r, "cancel deletion of", Action::KeyDelete)
            .await
    }

    /// `enabled | disabled → pending_deletion`, destroyed after `pending_days` (7 to 30).
    ///
    /// # Errors
    /// `InvalidLifecycleValue` for a window out of range, and those of [`KeyService::disable_key`].
    pub async fn schedule_key_deletion(
        &self,
        p: &Principal,
        r: &KeyRef,
        pending_days: Option<u32>,
    ) -> Result<Key, ServiceError> {
        let days = pending_days.unwrap_or(DEFAULT_PENDING_DAYS);
        if !PENDING_DAYS.contains(&days) {
            return Err(ServiceError::InvalidLifecycleValue(
                "pending_days must be 7 to 30",
            ));
        }
        let key = self.resolve(p, Action::KeyDelete, r).await?;
        let _serialised = self.key_lock(key.id).lock().await;
        let key = self.fresh_key(key.id).await?;
        match key.state {
            KeyState::Enabled | KeyState::Disabled => {}
            KeyState::Destroyed => return Err(ServiceError::KeyDestroyed(key.id.to_string())),
            KeyState::PendingDeletion => {
                return Err(ServiceError::InvalidKeyState {
                    key: key.id.to_string(),
                    state: key.state.as_str(),
                    action: "schedule deletion of",
                })
            }
        }
        let now = crate::clock::now();
        let update = KeyUpdate {
            expected_state: Some(key.state),
            state: Some(KeyState::PendingDeletion),
            deletion_date: Some(Some(now + time::Duration::days(i64::from(days)))),
            deletion_blocked: Some(None),
            ..KeyUpdate::default()
        };
        self.changing().await?;
        let key = self
            .store
            .update_key(key.id, &update, now)
            .await
            .map_err(stale_to_conflict)?;
        tracing::info!(key_id = %key.id, pending_days = days, "key deletion scheduled");
        Ok(self.remember(key))
    }

    /// The key's versions with what each still wraps.
    ///
    /// # Errors
    /// `Forbidden`, `KeyNotFound`, `Store`.
    pub async fn key_versions(
        &self,
        p: &Principal,
        r: &KeyRef,
    ) -> Result<(Key, Vec<VersionUsage>), ServiceError> {
        let key = self.resolve(p, Action::KeyRead, r).await?;
        let key = self.fresh_key(key.id).await?;
        let refs = self.store.references(key.id).await?;
        let usage = key
            .versions
            .iter()
            .map(|v| VersionUsage {
                record: v.clone(),
                stored_data_keys: refs
                    .iter()
                    .find(|(n, _)| *n == v.version)
                    .map_or(0, |(_, c)| *c),
            })
            .collect();
        Ok((Key::clone(&key), usage))
    }

    /// Disables (`active → disabled`), enables (`disabled → active`) or destroys one version.
    ///
    /// # Errors
    /// `KeyVersionNotFound`, `PrimaryVersion`, `KeyVersionDestroyed`, `KeyVersionInUse`,
    /// `Forbidden`, `KeyNotFound`, `Backend`, `Store`.
    #[tracing::instrument(skip_all, fields(op = "key_version_change", key = %r, version, action))]
    pub async fn change_version(
        &self,
        p: &Principal,
        r: &KeyRef,
        version: u32,
        action: VersionAction,
    ) -> Result<Key, ServiceError> {
        let policy = match action {
            VersionAction::Destroy => Action::KeyDelete,
            _ => Action::KeyDisable,
        };
        let key = self.resolve(p, policy, r).await?;
        let _serialised = self.key_lock(key.id).lock().await;
        let key = self.fresh_key(key.id).await?;
        if key.state == KeyState::Destroyed {
            return Err(ServiceError::KeyDestroyed(key.id.to_string()));
        }
        let v = KeyVersion::new(version).ok_or(ServiceError::KeyVersionNotFound(version))?;
        let record = key
            .version(v)
            .ok_or(ServiceError::KeyVersionNotFound(version))?;
        match record.state {
            VersionState::Primary => return Err(ServiceError::PrimaryVersion(version)),
            VersionState::Destroyed => return Err(ServiceError::KeyVersionDestroyed(version)),
            _ => {}
        }
        let now = crate::clock::now();
        let unchanged = matches!(
            (action, record.state),
            (VersionAction::Disable, VersionState::Disabled)
                | (VersionAction::Enable, VersionState::Active)
        );
        if !unchanged {
            self.changing().await?;
        }
        let key = match action {
            VersionAction::Disable if record.state == VersionState::Disabled => Key::clone(&key),
            VersionAction::Enable if record.state == VersionState::Active => Key::clone(&key),
            VersionAction::Disable => self
                .store
                .set_version_state(
                    key.id,
                    v,
                    &[VersionState::Active],
                    VersionState::Disabled,
                    now,
                )
                .await
                .map_err(stale_to_conflict)?,
            VersionAction::Enable => self
                .store
                .set_version_state(
                    key.id,
                    v,
                    &[VersionState::Disabled],
                    VersionState::Active,
                    now,
                )
                .await
                .map_err(stale_to_conflict)?,
            VersionAction::Destroy => {
                crate::audit::note::detail("version_destroyed", version.to_string());
                let key = self
                    .store
                    .destroy_versions(key.id, &[v], false, now)
                    .await
                    .map_err(stale_to_conflict)?;
                self.destroy_device_object(&key, v).await;
                key
            }
        };
        tracing::info!(key_id = %key.id, version, ?action, "key version changed");
        Ok(self.remember(key))
    }

    /// Destroys a device object the store has marked, and records that it is gone. A failure
    /// is logged and retried by the lifecycle worker: the record already says `destroyed`, so
    /// nothing can use the version meanwhile.
    pub(crate) async fn destroy_device_object(&self, key: &Key, version: KeyVersion) {
        if let Err(e) = self.try_destroy_device_object(key, version).await {
            tracing::error!(key_id = %key.id, key_version = version.get(), error = %e, "destroying the root key in the device failed; will retry");
        }
    }

    /// [`KeyService::destroy_device_object`], reporting a failure to the caller.
    async fn try_destroy_device_object(
        &self,
        key: &Key,
        version: KeyVersion,
    ) -> Result<(), ServiceError> {
        let root = &key.root(version);
        let backend = self.serving_backend(key).await?;
        match backend.destroy_root_key(root).await {
            Ok(()) | Err(BackendError::RootKeyMissing(_)) => {
                if let Err(e) = self.store.mark_device_destroyed(root).await {
                    tracing::warn!(label = %root.label(), error = %e, "device object destroyed, but recording it failed; will retry");
                } else {
                    tracing::info!(label = %root.label(), "root key destroyed in the device");
                }
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Retries device destructions that did not complete, each recorded as background work of
    /// the lifecycle worker: those marked more than [`DEVICE_DESTROY_GRACE`] ago, so that one
    /// the marking request is still carrying out is not destroyed twice and recorded twice.
    ///
    /// # Errors
    /// `Store`.
    pub async fn retry_device_destroys(&self, holder: bool) -> Result<(), ServiceError> {
        let marked_before = crate::clock::now() - DEVICE_DESTROY_GRACE;
        for root in self.store.pending_device_destroys(marked_before).await? {
            if !self.runs_duty_of(root.key_id, holder).await? {
                continue;
            }
            let resource = format!("key/{}", root.key_id);
            let unit = async {
                let key = self.fresh_key(root.key_id).await?;
                crate::audit::note::detail("version_destroyed", root.version.get().to_string());
                self.changing().await?;
                self.try_destroy_device_object(&key, root.version).await
            };
            if let Err(e) = self
                .in_background("lifecycle", "key:destroy-device-object", &resource, unit)
                .await
            {
                tracing::error!(key_id = %root.key_id, key_version = root.version.get(), error = %e, "destroying the root key in the device failed; will retry");
            }
        }
        Ok(())
    }

    /// Destroys keys whose deletion date has passed, unless stored data still references one of
    /// their versions: then the key stays `pending_deletion` and the reason is recorded on it.
    /// Each key is one unit of background work with its own audit record.
    ///
    /// # Errors
    /// `Store`.
    pub async fn run_due_deletions(
        &self,
        now: OffsetDateTime,
        holder: bool,
    ) -> Result<(), ServiceError> {
        for id in self.store.due_key_deletions(now, 100).await? {
            if !self.runs_duty_of(id, holder).await? {
                continue;
            }
            let resource = format!("key/{id}");
            let unit = self.delete_due_key(id, now);
            if let Err(e) = self
                .in_background("lifecycle", "key:delete", &resource, unit)
                .await
            {
                tracing::error!(key_id = %id, error = %e, "key deletion failed");
            }
        }
        Ok(())
    }

    async fn delete_due_key(&self, id: KeyId, now: OffsetDateTime) -> Result<(), ServiceError> {
        let _serialised = self.key_lock(id).lock().await;
        let key = self.fresh_key(id).await?;
        if key.state != KeyState::PendingDeletion {
            return Ok(());
        }
        let live: Vec<KeyVersion> = key
            .versions
            .iter()
            .filter(|v| v.state != VersionState::Destroyed)
            .map(|v| v.version)
            .collect();
        let blocked = self.store.references(id).await?;
        let referenced: u64 = blocked
            .iter()
            .filter(|(v, _)| live.contains(v))
            .map(|(_, c)| *c)
            .sum();
        if referenced > 0 && key.deletion_blocked.is_some() {
            // Already recorded as blocked: nothing changes until the references go.
            return Ok(());
        }
        self.changing().await?;
        let listed: Vec<String> = live.iter().map(|v| v.get().to_string()).collect();
        match self.store.destroy_versions(id, &live, true, now).await {
            Ok(destroyed) => {
                crate::audit::note::detail("versions_destroyed", listed.join(","));
                tracing::info!(key_id = %id, "key destroyed on its deletion date");
                self.remember(destroyed);
                for v in live {
                    self.destroy_device_object(&key, v).await;
                }
                Ok(())
            }
            Err(StoreError::InUse { count }) => {
                crate::audit::note::detail("deletion_blocked_by", count.to_string());
                let reason = format!("{count} stored data keys still reference versions of this key; re-wrap or destroy them, then the deletion proceeds");
                tracing::warn!(key_id = %id, count, "key deletion refused: still referenced");
                let update = KeyUpdate {
                    expected_state: Some(KeyState::PendingDeletion),
                    deletion_blocked: Some(Some(reason)),
                    ..KeyUpdate::default()
                };
                let key = self.store.update_key(id, &update, now).await?;
                self.remember(key);
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Rotates enabled keys whose schedule is due, each exactly once, and keys whose primary
    /// version reached its wrap budget; each rotation is background work with its own record.
    ///
    /// # Errors
    /// `Store`.
    pub async fn run_due_key_rotations(
        &self,
        now: OffsetDateTime,
        holder: bool,
    ) -> Result<(), ServiceError> {
        for (id, seen) in self.store.due_key_rotations(now, 100).await? {
            if !self.runs_duty_of(id, holder).await? {
                continue;
            }
            let resource = format!("key/{id}");
            let unit = self.rotate(id, Trigger::Schedule(seen));
            if let Err(e) = self
                .in_background("lifecycle", "key:rotate", &resource, unit)
                .await
            {
                tracing::error!(key_id = %id, error = %e, "scheduled key rotation failed")
            }
        }
        // The versions this node saw cross their budget, and those any node's reservations took
        // past it (on a shared database another node may have reserved them; this node holds
        // the lifecycle lease). The rotation itself checks the version is still primary.
        let mut wanted = self.take_wanted_rotations();
        for due in self
            .store
            .budget_rotations(self.keys_config.rotate_after_wraps, 100)
            .await?
        {
            if !wanted.contains(&due) {
                wanted.push(due);
            }
        }
        for (id, version) in wanted {
            if !self.runs_duty_of(id, holder).await? {
                continue;
            }
            let resource = format!("key/{id}");
            let unit = self.rotate(id, Trigger::WrapBudget(version));
            if let Err(e) = self
                .in_background("lifecycle", "key:rotate", &resource, unit)
                .await
            {
                tracing::error!(key_id = %id, error = %e, "wrap-budget rotation failed");
            }
        }
        Ok(())
    }

    /// Whether this node runs the background duties (rotations, deletion) of key `id`: a TPM
    /// key's run on the node whose TPM holds its versions, whichever node holds the lifecycle
    /// lease (no other node can reach that TPM); every other key's on the lease holder. Either
    /// way each duty is still fenced by its conditional write, so it runs once.
    async fn runs_duty_of(&self, id: KeyId, holder: bool) -> Result<bool, ServiceError> {
        Ok(match self.tpm_key_node(id).await? {
            Some(owner) => owner == self.audit.node(),
            None => holder,
        })
    }

    /// Creates an alias pointing at `target`.
    ///
    /// # Errors
    /// `AliasExists`, `KeyNotFound`, `KeyDestroyed`, `Forbidden`, `Store`.
    pub async fn create_alias(
        &self,
        p: &Principal,
        name: KeyName,
        target: &KeyRef,
    ) -> Result<Alias, ServiceError> {
        self.point_alias(p, name, target, true).await
    }

    /// Re-points an existing alias at `target`.
    ///
    /// # Errors
    /// `AliasNotFound`, `KeyNotFound`, `KeyDestroyed`, `Forbidden`, `Store`.
    pub async fn repoint_alias(
        &self,
        p: &Principal,
        name: KeyName,
        target: &KeyRef,
    ) -> Result<Alias, ServiceError> {
        self.point_alias(p, name, target, false).await
    }

    async fn point_alias(
        &self,
        p: &Principal,
        name: KeyName,
        target: &KeyRef,
        create: bool,
    ) -> Result<Alias, ServiceError> {
        self.authorize(
            p,
            Action::AliasWrite,
            &Resource::named("alias", name.as_str()),
            None,
        )
        .await?;
        if matches!(target, KeyRef::Alias(_)) {
            return Err(ServiceError::InvalidLifecycleValue(
                "an alias points at a key id or name, not at another alias",
            ));
        }
        let key = self.resolve(p, Action::KeyRead, target).await?;
        if key.state == KeyState::Destroyed {
            return Err(ServiceError::KeyDestroyed(key.id.to_string()));
        }
        self.changing().await?;
        match self
            .store
            .put_alias(&name, key.id, create, crate::clock::now())
            .await
        {
            Ok(a) => {
                tracing::info!(alias = %name, key_id = %key.id, "alias set");
                Ok(a)
            }
            Err(StoreError::Conflict { .. }) => Err(ServiceError::AliasExists(name.to_string())),
            Err(StoreError::NotFound) => Err(ServiceError::AliasNotFound(name.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    /// The alias `name`.
    ///
    /// # Errors
    /// `AliasNotFound`, `Forbidden`, `Store`.
    pub async fn alias(&self, p: &Principal, name: &KeyName) -> Result<Alias, ServiceError> {
        self.authorize(
            p,
            Action::KeyRead,
            &Resource::named("alias", name.as_str()),
            None,
        )
        .await?;
        self.store
            .alias(name)
            .await?
            .ok_or_else(|| ServiceError::AliasNotFound(name.to_string()))
    }

    /// Every alias.
    ///
    /// # Errors
    /// `Forbidden`, `Store`.
    pub async fn aliases(&self, p: &Principal) -> Result<Vec<Alias>, ServiceError> {
        let filter = self.item_filter(p, Action::KeyRead, "alias").await?;
        let mut aliases = self.store.list_aliases().await?;
        aliases.retain(|a| filter.allows(&Resource::named("alias", a.name.as_str())));
        Ok(aliases)
    }

    /// Deletes an alias (the key is untouched).
    ///
    /// # Errors
    /// `AliasNotFound`, `Forbidden`, `Store`.
    pub async fn delete_alias(&self, p: &Principal, name: &KeyName) -> Result<(), ServiceError> {
        self.authorize(
            p,
            Action::AliasWrite,
            &Resource::named("alias", name.as_str()),
            None,
        )
        .await?;
        self.changing().await?;
        if self.store.delete_alias(name).await? {
            Ok(())
        } else {
            Err(ServiceError::AliasNotFound(name.to_string()))
        }
    }

    /// Re-encrypts a blob under the destination key's primary version (default: the blob's own
    /// key), with the destination context (default: the same context). The plaintext exists only
    /// in this process's zeroising memory between the two device calls; it is never returned.
    ///
    /// # Errors
    /// The errors of decrypt and encrypt.
    #[tracing::instrument(skip_all, fields(op = "reencrypt"))]
    pub async fn reencrypt(
        &self,
        p: &Principal,
        ciphertext: &[u8],
        context: &EncryptionContext,
        source_named: Option<&KeyRef>,
        destination: Option<&KeyRef>,
        destination_context: Option<&EncryptionContext>,
    ) -> Result<Reencrypted, ServiceError> {
        let blob = Blob::parse(ciphertext)?;
        let source = match self
            .resolve_with(
                p,
                Action::Reencrypt,
                &KeyRef::Id(blob.key_id),
                Some(context),
            )
            .await
        {
            Err(ServiceError::KeyNotFound(_)) => return Err(ServiceError::CiphertextKeyNotFound),
            other => other?,
        };
        self.check_named(source_named, &source).await?;
        check_unwrap(&source, blob.key_version)?;
        // The destination is authorised on its own, always: the key (the blob's own when none
        // is named) with the context the output will be bound to. Authorising only the source
        // would let a principal re-bind a blob to a context it may not encrypt under.
        let dest_context = destination_context.unwrap_or(context);
        let dest = match destination {
            Some(r) => {
                self.resolve_with(p, Action::Reencrypt, r, Some(dest_context))
                    .await?
            }
            None => {
                self.authorize(
                    p,
                    Action::Reencrypt,
                    &Resource::key(&source.id, source.name.as_str()),
                    Some(dest_context),
                )
                .await?;
                Arc::clone(&source)
            }
        };
        crate::audit::note::destination_context(dest_context);
        let header = usable_header(&dest)?;
        let source_version = blob.key_version;
        let aad = blob.header().aad(context);
        let plaintext = self.open_blob(&source, blob, aad).await?;
        let sealing = self
            .seal_under_primary(&dest, header, dest_context, plaintext)
            .await?;
        Ok(Reencrypted {
            sealed: sealing,
            source_key_id: source.id,
            source_key_version: source_version,
        })
    }
}

/// What asked for a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// An operator, now.
    OnDemand,
    /// The schedule, as the worker saw it (`next_rotation_at`).
    Schedule(OffsetDateTime),
    /// This version reached `keys.rotate_after_wraps`.
    WrapBudget(KeyVersion),
}

/// What to do to one version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionAction {
    /// `active → disabled`.
    Disable,
    /// `disabled → active`.
    Enable,
    /// `active | disabled → destroyed`, refused while stored data references it.
    Destroy,
}
