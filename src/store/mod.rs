//! Metadata storage: one trait, [`Store`]; SQLite now, PostgreSQL when several nodes share work.
//!
//! Nothing secret is stored unwrapped: keys are device references, tokens are hashes.
//! Migrations are versioned and run at start-up ([`migrations`]).

pub mod migrations;
pub mod sqlite;

use async_trait::async_trait;

use time::OffsetDateTime;

use crate::audit::{AuditArchive, AuditFilter, AuditRecord, Checkpoint};
use crate::domain::job::{Job, JobEvent, JobState};
use crate::domain::secret::{
    CustomMetadata, GenerateSpec, HumanDuration, SecretPath, SecretRecord,
};
use crate::domain::{
    Alias, Key, KeyId, KeyName, KeyRef, KeyState, KeyVersion, KeyVersionRecord, PolicyRecord,
    PrincipalRecord, RootKeyRef, TokenRecord, VersionState,
};

/// Why a store operation failed, grouped by who is at fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    // --- the caller ---
    /// A uniqueness rule was broken; names the rule (e.g. `keys.name`).
    #[error("{constraint} already exists")]
    Conflict {
        /// The rule that was broken.
        constraint: &'static str,
    },

    /// Check-and-set failed: the current version is not the one the caller named.
    #[error("check-and-set failed: the current version is {current}")]
    CheckAndSet {
        /// The current version.
        current: u32,
    },
    /// Another writer got there first (the version number or the rotation was taken).
    #[error("a concurrent write changed {what}")]
    Stale {
        /// What changed.
        what: &'static str,
    },
    /// The named item does not exist.
    #[error("no such item")]
    NotFound,
    /// Stored data still references the key version(s) to be destroyed.
    #[error("{count} stored data keys still reference it")]
    InUse {
        /// How many stored wrapped data keys reference it.
        count: u64,
    },

    // --- a dependency ---
    /// The database refused or is unreachable.
    #[error("database error")]
    Database(#[from] rusqlite::Error),
    /// The database file could not be prepared.
    #[error("database file: {0}")]
    Io(#[from] std::io::Error),
    /// The blocking task running the query did not finish.
    #[error(transparent)]
    Blocking(#[from] crate::telemetry::BlockingError),

    // --- a bug (or tampering with the database) ---
    /// A stored value does not parse.
    #[error("stored value in {column} is invalid")]
    Corrupt {
        /// Table and column.
        column: &'static str,
    },
    /// A migration failed; names its version.
    #[error("migration {version} failed")]
    Migration {
        /// Migration version.
        version: u32,
        /// Cause.
        #[source]
        source: rusqlite::Error,
    },
}

/// The audit writer's own connection: every call blocks; one thread owns it.
pub trait AuditAppender: Send {
    /// Appends chained records in one transaction (group commit), durable on return.
    ///
    /// # Errors
    /// Database errors.
    fn append(&mut self, records: &[AuditRecord]) -> Result<(), StoreError>;

    /// Stores a signed checkpoint.
    ///
    /// # Errors
    /// Database errors.
    fn insert_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<(), StoreError>;

    /// Records with `after < sequence <= until`, in order, at most `limit`.
    ///
    /// # Errors
    /// Database errors; `Corrupt` for unreadable rows.
    fn range(&mut self, after: u64, until: u64, limit: u32)
        -> Result<Vec<AuditRecord>, StoreError>;

    /// The chain's tail.
    ///
    /// # Errors
    /// Database errors; `Corrupt` for unreadable rows.
    fn tail(&mut self) -> Result<AuditTail, StoreError>;
}

/// Where the stored audit chain ends.
#[derive(Debug, Clone, Default)]
pub struct AuditTail {
    /// Sequence and hex hash of the last record.
    pub last: Option<(u64, String)>,
    /// The last checkpoint.
    pub checkpoint: Option<Checkpoint>,
    /// The last archive.
    pub archive: Option<AuditArchive>,
}

/// The stored, encrypted form of one secret version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSecret {
    /// The wrapped data key (a ciphertext blob).
    pub wrapped_dek: Vec<u8>,
    /// IV ‖ ciphertext ‖ tag of the value.
    pub ciphertext: Vec<u8>,
}

/// A version to record, with the conditions under which it may be recorded.
#[derive(Debug, Clone)]
pub struct NewSecretVersion {
    /// The secret.
    pub path: SecretPath,
    /// Its number: the current version the writer saw, plus one. Recording fails `Stale` when
    /// the current version has moved on.
    pub version: u32,
    /// Check-and-set: record only if the current version equals this (0 = absent).
    pub cas: Option<u32>,
    /// The key that wrapped the data key (also the secret's key when the path is new).
    pub key_id: KeyId,
    /// The key version that wrapped the data key.
    pub key_version: KeyVersion,
    /// The wrapped data key (a ciphertext blob).
    pub wrapped_dek: Vec<u8>,
    /// The value's ciphertext: IV ‖ ciphertext ‖ tag.
    pub ciphertext: Vec<u8>,
    /// When it was written.
    pub created_at: OffsetDateTime,
    /// `max_versions` for a path created by this write.
    pub default_max_versions: u32,
    /// For generated secrets: the rotation this write performs.
    pub rotation: Option<RotationClaim>,
}

/// A rotation recorded together with the version it wrote, exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationClaim {
    /// The `next_rotation_at` the writer saw; recording fails `Stale` when it changed (another
    /// node or an earlier run already rotated). `None` skips the check (rotate now).
    pub expected: Option<Option<OffsetDateTime>>,
    /// The new `next_rotation_at`.
    pub next: OffsetDateTime,
}

/// A change to a secret's metadata; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct MetadataUpdate {
    /// New key for later writes.
    pub key_id: Option<KeyId>,
    /// New `max_versions` (0 = unlimited).
    pub max_versions: Option<u32>,
    /// New `expires_after` (`Some(None)` clears it).
    pub expires_after: Option<Option<HumanDuration>>,
    /// New custom metadata (replaces the old).
    pub custom: Option<CustomMetadata>,
    /// New generation spec (`Some(None)` clears it) and the `next_rotation_at` that goes with it.
    pub generate: Option<(Option<GenerateSpec>, Option<OffsetDateTime>)>,
}

/// A change to a key; `None` leaves a field as it is. Applied only while the key is in
/// `expected_state` (when given), so concurrent transitions cannot both succeed.
#[derive(Debug, Clone, Default)]
pub struct KeyUpdate {
    /// The state the change was decided on; `Stale` if the key has moved on.
    pub expected_state: Option<KeyState>,
    /// New state.
    pub state: Option<KeyState>,
    /// New description.
    pub description: Option<String>,
    /// New rotation period and the `next_rotation_at` that goes with it.
    pub rotation: Option<(Option<HumanDuration>, Option<OffsetDateTime>)>,
    /// New `min_decryption_version`.
    pub min_decryption_version: Option<KeyVersion>,
    /// New deletion date (`Some(None)` clears it).
    pub deletion_date: Option<Option<OffsetDateTime>>,
    /// New reason a deletion is blocked (`Some(None)` clears it).
    pub deletion_blocked: Option<Option<String>>,
}

/// A stored wrapped data key that a re-wrap job must move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewrapItem {
    /// The secret.
    pub path: SecretPath,
    /// The secret version.
    pub version: u32,
    /// The key version that wraps it now.
    pub key_version: KeyVersion,
    /// The wrapped data key now.
    pub wrapped_dek: Vec<u8>,
}

/// One committed step of a re-wrap job.
#[derive(Debug, Clone)]
pub struct RewrapBatch {
    /// The job.
    pub job_id: String,
    /// The key whose stored data keys move.
    pub key_id: KeyId,
    /// The version they move to (must still be the enabled primary).
    pub target: KeyVersion,
    /// Each item with its new wrapped data key.
    pub items: Vec<(RewrapItem, Vec<u8>)>,
    /// Items that failed in this batch (left where they were).
    pub failed: u64,
    /// The last failure, for the job record.
    pub last_error: Option<String>,
    /// When.
    pub now: OffsetDateTime,
}

/// What to do to secret versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionOp {
    /// Live → deleted.
    Delete,
    /// Deleted → live.
    Undelete,
    /// Live or deleted → destroyed: ciphertext and wrapped data key erased.
    Destroy,
}

/// Metadata storage.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Records a new key and all its versions in one transaction.
    ///
    /// # Errors
    /// `Conflict { constraint: "keys.name" }` when the name is taken.
    async fn insert_key(&self, key: &Key) -> Result<(), StoreError>;

    /// The key `r` names, with its versions.
    ///
    /// # Errors
    /// Database errors; a missing key is `Ok(None)`.
    async fn key(&self, r: &KeyRef) -> Result<Option<Key>, StoreError>;

    /// Up to `limit` keys ordered by name, starting after `after`.
    ///
    /// # Errors
    /// Database errors.
    async fn list_keys(&self, after: Option<&KeyName>, limit: u32) -> Result<Vec<Key>, StoreError>;

    /// Records a new bearer token (its hash only).
    ///
    /// # Errors
    /// `Conflict { constraint: "tokens.id" }` on an id collision.
    async fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError>;

    /// The token with public id `id`.
    ///
    /// # Errors
    /// Database errors; a missing token is `Ok(None)`.
    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError>;

    /// How many tokens exist (0 on a fresh install: time to mint the bootstrap token).
    ///
    /// # Errors
    /// Database errors.
    async fn token_count(&self) -> Result<u64, StoreError>;

    /// The secret at `path` with its version history (no ciphertexts).
    ///
    /// # Errors
    /// Database errors; a missing secret is `Ok(None)`.
    async fn secret(&self, path: &SecretPath) -> Result<Option<SecretRecord>, StoreError>;

    /// Up to `limit` secrets whose path starts with `prefix`, ordered by path, after `after`.
    ///
    /// # Errors
    /// Database errors.
    async fn list_secrets(
        &self,
        prefix: &str,
        after: Option<&SecretPath>,
        limit: u32,
    ) -> Result<Vec<SecretRecord>, StoreError>;

    /// The wrapped data key and ciphertext of one version; `None` once destroyed or absent.
    ///
    /// # Errors
    /// Database errors.
    async fn secret_version_data(
        &self,
        path: &SecretPath,
        version: u32,
    ) -> Result<Option<SealedSecret>, StoreError>;

    /// Records a version in one transaction: creates the path if needed, checks `cas`, the
    /// version number and the rotation claim, inserts, then destroys the oldest versions beyond
    /// `max_versions`. Returns the versions that pruning destroyed.
    ///
    /// # Errors
    /// `CheckAndSet { current }`, `Stale`, database errors. Nothing is written on error.
    async fn insert_secret_version(&self, v: &NewSecretVersion) -> Result<Vec<u32>, StoreError>;

    /// Creates the secret (with `key_id`, `default_max_versions`) if absent, applies `update`,
    /// prunes to the new `max_versions`; returns the record.
    ///
    /// # Errors
    /// Database errors.
    async fn put_secret_metadata(
        &self,
        path: &SecretPath,
        key_id: KeyId,
        default_max_versions: u32,
        update: &MetadataUpdate,
        now: OffsetDateTime,
    ) -> Result<SecretRecord, StoreError>;

    /// Applies `op` to `versions` of `path`; returns the versions whose state changed.
    /// Destroying erases ciphertext and wrapped data key and checkpoints the journal so the
    /// erased bytes leave the WAL file too.
    ///
    /// # Errors
    /// `NotFound` when a version does not exist; database errors.
    async fn update_secret_versions(
        &self,
        path: &SecretPath,
        versions: &[u32],
        op: VersionOp,
        now: OffsetDateTime,
    ) -> Result<Vec<u32>, StoreError>;

    /// Generated secrets whose rotation is due at `now`, with the `next_rotation_at` seen.
    ///
    /// # Errors
    /// Database errors.
    async fn due_rotations(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<(SecretPath, OffsetDateTime)>, StoreError>;

    /// Applies `update` to key `id` (see [`KeyUpdate`]) and returns the key.
    ///
    /// # Errors
    /// `NotFound`; `Stale` when the key is no longer in `expected_state`.
    async fn update_key(
        &self,
        id: KeyId,
        update: &KeyUpdate,
        now: OffsetDateTime,
    ) -> Result<Key, StoreError>;

    /// Records a new primary version: the old primary becomes active. Checks that the primary
    /// is still `expected_primary` and, for scheduled rotations, the schedule claim.
    ///
    /// # Errors
    /// `Stale` when another rotation got there first.
    async fn add_key_version(
        &self,
        id: KeyId,
        record: &KeyVersionRecord,
        expected_primary: KeyVersion,
        schedule: Option<RotationClaim>,
    ) -> Result<Key, StoreError>;

    /// Moves a version from one of `from` to `to`.
    ///
    /// # Errors
    /// `NotFound`; `Stale` when the version is not in one of `from`.
    async fn set_version_state(
        &self,
        id: KeyId,
        version: KeyVersion,
        from: &[VersionState],
        to: VersionState,
        now: OffsetDateTime,
    ) -> Result<Key, StoreError>;

    /// Marks versions destroyed (their device objects pending destruction) in one transaction,
    /// refusing while stored data references any of them. With `whole_key`, the key becomes
    /// `destroyed` too.
    ///
    /// # Errors
    /// `InUse { count }`; `Stale` when a version is primary (and not `whole_key`) or gone.
    async fn destroy_versions(
        &self,
        id: KeyId,
        versions: &[KeyVersion],
        whole_key: bool,
        now: OffsetDateTime,
    ) -> Result<Key, StoreError>;

    /// Records that a version's device object is gone.
    ///
    /// # Errors
    /// Database errors.
    async fn mark_device_destroyed(&self, root: &RootKeyRef) -> Result<(), StoreError>;

    /// Device objects marked for destruction whose destruction has not been confirmed.
    ///
    /// # Errors
    /// Database errors.
    async fn pending_device_destroys(&self) -> Result<Vec<RootKeyRef>, StoreError>;

    /// How many stored wrapped data keys each version of `id` wraps (versions with none are
    /// listed with 0).
    ///
    /// # Errors
    /// Database errors.
    async fn references(&self, id: KeyId) -> Result<Vec<(KeyVersion, u64)>, StoreError>;

    /// Reserves `n` more wraps under a version; returns the new total reserved.
    ///
    /// # Errors
    /// Database errors.
    async fn reserve_wraps(&self, root: &RootKeyRef, n: u64) -> Result<u64, StoreError>;

    /// Enabled keys whose scheduled rotation is due, with the schedule seen.
    ///
    /// # Errors
    /// Database errors.
    async fn due_key_rotations(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<(KeyId, OffsetDateTime)>, StoreError>;

    /// Keys pending deletion whose date has passed.
    ///
    /// # Errors
    /// Database errors.
    async fn due_key_deletions(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<KeyId>, StoreError>;

    /// Creates (`create_only`) or re-points an alias.
    ///
    /// # Errors
    /// `Conflict { constraint: "aliases.name" }` when creating an existing alias; `NotFound` when
    /// re-pointing a missing one.
    async fn put_alias(
        &self,
        name: &KeyName,
        key_id: KeyId,
        create_only: bool,
        now: OffsetDateTime,
    ) -> Result<Alias, StoreError>;

    /// The alias `name`.
    ///
    /// # Errors
    /// Database errors.
    async fn alias(&self, name: &KeyName) -> Result<Option<Alias>, StoreError>;

    /// Every alias, by name.
    ///
    /// # Errors
    /// Database errors.
    async fn list_aliases(&self) -> Result<Vec<Alias>, StoreError>;

    /// Deletes an alias; false when there was none.
    ///
    /// # Errors
    /// Database errors.
    async fn delete_alias(&self, name: &KeyName) -> Result<bool, StoreError>;

    /// Records a new job.
    ///
    /// # Errors
    /// Database errors.
    async fn create_job(&self, job: &Job) -> Result<(), StoreError>;

    /// The job `id`.
    ///
    /// # Errors
    /// Database errors.
    async fn job(&self, id: &str) -> Result<Option<Job>, StoreError>;

    /// Jobs, newest first; only `state` ones when given.
    ///
    /// # Errors
    /// Database errors.
    async fn list_jobs(&self, state: Option<JobState>, limit: u32) -> Result<Vec<Job>, StoreError>;

    /// Up to `limit` stored data keys of `key_id` wrapped under a version other than `target`,
    /// in (path, version) order, after `after` when given.
    ///
    /// # Errors
    /// Database errors.
    async fn rewrap_candidates(
        &self,
        key_id: KeyId,
        target: KeyVersion,
        after: Option<&(SecretPath, u32)>,
        limit: u32,
    ) -> Result<Vec<RewrapItem>, StoreError>;

    /// Commits one batch atomically: each item's new wrapped data key replaces the old one only
    /// if the row still holds the old one; the job's `done` and `failed_items` advance, and a
    /// `batch` event is added to its trail, in the same transaction. Returns how many rows
    /// changed.
    ///
    /// # Errors
    /// `Stale` when `target` is no longer the key's enabled primary version; database errors.
    /// Nothing of the batch is written on error.
    async fn apply_rewrap(&self, batch: &RewrapBatch) -> Result<u64, StoreError>;

    /// A job's trail: its start, every committed batch, its end.
    ///
    /// # Errors
    /// Database errors.
    async fn job_events(&self, id: &str) -> Result<Vec<JobEvent>, StoreError>;

    /// Ends a job.
    ///
    /// # Errors
    /// Database errors.
    async fn finish_job(
        &self,
        id: &str,
        state: JobState,
        error: Option<String>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Tokens of `principal` (or all), newest first. Metadata only is ever shown.
    ///
    /// # Errors
    /// Database errors.
    async fn list_tokens(&self, principal: Option<&str>) -> Result<Vec<TokenRecord>, StoreError>;

    /// Revokes a token at once; false when there is none.
    ///
    /// # Errors
    /// Database errors.
    async fn revoke_token(&self, id: &str, now: OffsetDateTime) -> Result<bool, StoreError>;

    /// The principal `name`.
    ///
    /// # Errors
    /// Database errors.
    async fn principal(&self, name: &str) -> Result<Option<PrincipalRecord>, StoreError>;

    /// Every principal, by name.
    ///
    /// # Errors
    /// Database errors.
    async fn list_principals(&self) -> Result<Vec<PrincipalRecord>, StoreError>;

    /// Creates (`create_only`) or replaces a principal.
    ///
    /// # Errors
    /// `Conflict { constraint: "principals.name" }`, `NotFound`.
    async fn put_principal(
        &self,
        p: &PrincipalRecord,
        create_only: bool,
    ) -> Result<PrincipalRecord, StoreError>;

    /// Deletes a principal and revokes its tokens; false when there was none.
    ///
    /// # Errors
    /// Database errors.
    async fn delete_principal(&self, name: &str, now: OffsetDateTime) -> Result<bool, StoreError>;

    /// The policy `name`.
    ///
    /// # Errors
    /// Database errors.
    async fn policy(&self, name: &str) -> Result<Option<PolicyRecord>, StoreError>;

    /// Every policy, by name.
    ///
    /// # Errors
    /// Database errors.
    async fn list_policies(&self) -> Result<Vec<PolicyRecord>, StoreError>;

    /// Writes a new version of a policy (or, with `only_if_absent`, leaves an existing one).
    ///
    /// # Errors
    /// Database errors.
    async fn put_policy(
        &self,
        name: &KeyName,
        document: &serde_json::Value,
        only_if_absent: bool,
        now: OffsetDateTime,
    ) -> Result<PolicyRecord, StoreError>;

    /// Deletes a policy; false when there was none.
    ///
    /// # Errors
    /// Database errors.
    async fn delete_policy(&self, name: &str) -> Result<bool, StoreError>;

    /// The audit chain's tail: the last record, the last checkpoint, the last archive.
    ///
    /// # Errors
    /// Database errors; `Corrupt` for unreadable rows.
    async fn audit_tail(&self) -> Result<AuditTail, StoreError>;

    /// A dedicated connection for the audit writer, used from its own thread (blocking), so
    /// audit commits neither wait for nor hold up the connection the requests use.
    ///
    /// # Errors
    /// Database errors.
    async fn audit_appender(&self) -> Result<Box<dyn AuditAppender>, StoreError>;

    /// Records with `after < sequence <= until`, in order, at most `limit`.
    ///
    /// # Errors
    /// Database errors; `Corrupt` for unreadable rows.
    async fn audit_range(
        &self,
        after: u64,
        until: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError>;

    /// Records matching `filter`, in sequence order.
    ///
    /// # Errors
    /// Database errors; `Corrupt` for unreadable rows.
    async fn audit_search(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError>;

    /// Checkpoints with `after < sequence <= until`, in order.
    ///
    /// # Errors
    /// Database errors.
    async fn audit_checkpoints(
        &self,
        after: u64,
        until: u64,
    ) -> Result<Vec<Checkpoint>, StoreError>;

    /// Removes records up to `archive.through` and records the archive, in one transaction.
    /// Fails `Stale` when `archive.head` is not the stored hash of record `through`.
    ///
    /// # Errors
    /// `Stale`, `NotFound` (no such record), database errors.
    async fn archive_audit(&self, archive: &AuditArchive) -> Result<u64, StoreError>;

    /// Proves the database accepts a durable write now (readiness).
    ///
    /// # Errors
    /// Database errors.
    async fn check_writable(&self) -> Result<(), StoreError>;
}
