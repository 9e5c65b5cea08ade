//! Metadata storage, split by concern into one trait each — [`KeyStore`], [`IdentityStore`],
//! [`SecretStore`], [`JobStore`], [`AuditStore`], [`database::DatabaseStore`] — and [`Store`], which is all of them and what
//! the service holds (`Arc<dyn Store>`). SQLite now ([`sqlite`]); PostgreSQL when several nodes
//! share work.
//!
//! Nothing secret is stored unwrapped: keys are device references, tokens are hashes.
//! Migrations are versioned and run at start-up ([`migrations`]).
//! An install moves from SQLite to PostgreSQL, table by table, with [`migrate`].
//!
//! The surface is database-neutral: no driver type appears in a signature or in [`StoreError`].
//! Each implementation maps its driver's errors in one function (SQLite:
//! `sqlite::error::map`): a broken uniqueness rule becomes [`StoreError::Conflict`] naming the
//! rule, everything else the database says becomes [`StoreError::Unavailable`] with the driver's
//! error kept as its source. Lost races are reported by the store's own checks as
//! [`StoreError::Stale`] with a [`StaleKind`] the service matches as a value.
//!
//! Every implementation passes one conformance suite, written against these traits:
//! `tests/it/store_conformance.rs`.

mod codec;
pub mod database;
pub mod migrate;
pub mod migrations;
pub mod postgres;
pub mod sqlite;

use std::borrow::Cow;

use async_trait::async_trait;

use time::OffsetDateTime;

use crate::audit::record::StoredHashes;
use crate::audit::{AuditArchive, AuditFilter, AuditRecord, Checkpoint};
use crate::domain::job::{Job, JobEvent, JobState};
use crate::domain::secret::{
    CustomMetadata, GenerateSpec, HumanDuration, SecretPath, SecretRecord,
};
use crate::domain::{
    AccessKeyRecord, Alias, Key, KeyId, KeyName, KeyRef, KeyState, KeyVersion, KeyVersionRecord,
    PolicyRecord, PrincipalRecord, RootKeyRef, TokenRecord, VersionState,
};

/// Why a store operation failed, grouped by who is at fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    // --- the caller ---
    /// A uniqueness rule was broken; names the rule as `table.column` (e.g. `keys.name`).
    #[error("{constraint} already exists")]
    Conflict {
        /// The rule that was broken.
        constraint: Cow<'static, str>,
    },

    /// Check-and-set failed: the current version is not the one the caller named.
    #[error("check-and-set failed: the current version is {current}")]
    CheckAndSet {
        /// The current version.
        current: u32,
    },
    /// Another writer got there first: the state the write was decided on has changed.
    #[error("a concurrent write changed {what}")]
    Stale {
        /// What changed.
        what: StaleKind,
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
    /// The database refused or is unreachable (busy, locked, disk full, connection lost, or a
    /// rule the implementation has no neutral name for). The driver's error is the source, so
    /// logs still show it.
    #[error("database error")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The database's disk is full: the write was not made. Reads keep working (see
    /// `docs/store.md#a-full-disk`); writes resume once space returns.
    #[error("the database's disk is full")]
    Full(#[source] Box<dyn std::error::Error + Send + Sync>),
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
        /// Cause (the driver's error).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The database was migrated by a newer binary: its schema is past the newest migration
    /// this binary knows, so it refuses to touch it rather than misread it.
    #[error(
        "the database schema is at version {found}, newer than version {supported}, the newest \
         this binary knows; run the newer binary (or restore a backup from before the upgrade)"
    )]
    SchemaTooNew {
        /// The version recorded in the database.
        found: u32,
        /// The newest version this binary knows.
        supported: u32,
    },
}

/// What a concurrent writer changed, when a write fails [`StoreError::Stale`]. The service
/// decides by kind (a lost scheduled rotation is not an error; a retired key version means
/// reading the key again); the text is the one the error message shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StaleKind {
    /// The key is no longer in the state a [`KeyUpdate`] was decided on.
    KeyState,
    /// The key's primary version moved on (another rotation won), or a version to destroy is
    /// the primary.
    PrimaryVersion,
    /// A scheduled rotation (of a key or a generated secret) was already claimed: the
    /// `next_rotation_at` the writer saw has changed.
    RotationSchedule,
    /// A key version is not in one of the states the caller expected.
    VersionState,
    /// A key version named for wrapping is no longer usable for it: the key is not enabled, or
    /// the version left the expected states (a re-wrap target no longer primary).
    KeyVersion,
    /// A secret's version number was taken: the current version is no longer the one the writer
    /// read.
    SecretVersion,
    /// The audit record an archive ends at no longer carries the hash the archive names.
    AuditHead,
}

impl std::fmt::Display for StaleKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::KeyState => "the key state",
            Self::PrimaryVersion => "the primary version",
            Self::RotationSchedule => "the rotation schedule",
            Self::VersionState => "the version state",
            Self::KeyVersion => "the key version",
            Self::SecretVersion => "the current version",
            Self::AuditHead => "audit_records.hash",
        })
    }
}

/// The audit writer's own connection: every call blocks; one thread owns it.
pub trait AuditAppender: Send {
    /// Appends chained records in one transaction (group commit), durable on return.
    ///
    /// # Errors
    /// Database errors.
    fn append(&mut self, records: &[AuditRecord]) -> Result<(), StoreError>;

    /// Whether [`AuditAppender::append_with`] writes secret versions and re-wrap batches in the
    /// records' transaction (SQLite: the audit writer's connection is the one writer an
    /// announcement and its change can share a commit on). When false, the service announces
    /// a secret write and then writes it through [`SecretStore::insert_secret_version`], and a
    /// re-wrap batch through [`JobStore::apply_rewrap`].
    fn writes_versions(&self) -> bool {
        false
    }

    /// Appends chained records and writes `versions` and `rewraps` in the same transaction:
    /// each version is decided as [`SecretStore::insert_secret_version`] decides it, and each
    /// re-wrap batch as [`JobStore::apply_rewrap`] applies it, under a savepoint of its own,
    /// with its answer in its `result`; one that fails its checks is undone alone, and its
    /// record (an announcement) is committed all the same. `Ok` means the records and every
    /// write answered `Ok` are durable together. On `Err` nothing was written and the answers
    /// mean nothing.
    ///
    /// # Errors
    /// Database errors. Where [`AuditAppender::writes_versions`] is false, the records are
    /// appended and every write is answered `Unavailable` (the service never sends them).
    fn append_with(
        &mut self,
        records: &[AuditRecord],
        versions: &mut [VersionWrite],
        rewraps: &mut [RewrapWrite],
    ) -> Result<(), StoreError> {
        let refused = || {
            StoreError::Unavailable("this store does not write changes with audit records".into())
        };
        for v in versions.iter_mut() {
            v.result = Some(Err(refused()));
        }
        for r in rewraps.iter_mut() {
            r.result = Some(Err(refused()));
        }
        self.append(records)
    }

    /// Appends `entries` after the stored chain's end under the database's chain-head lock, in
    /// one transaction: reads the head, chains, inserts, commits. For several nodes appending at
    /// once (the writer uses it after losing a race); `Ok(None)` where the store has no such
    /// lock (SQLite: one node).
    ///
    /// # Errors
    /// Database errors; `Conflict` when a writer that did not take the lock took the numbers.
    fn append_serialized(
        &mut self,
        entries: &[crate::audit::AuditEntry],
    ) -> Result<Option<Vec<AuditRecord>>, StoreError> {
        let _ = entries;
        Ok(None)
    }

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

    /// What the chain's re-check before a checkpoint reads: the records with
    /// `after < sequence <= until`, in order, at most `limit`, each as its stored hashes and
    /// the hash its stored fields give ([`StoredHashes::of`] the records [`AuditAppender::range`]
    /// returns). Both stores hash their rows' columns where they lie (`codec::stored_hashes`)
    /// instead of building each record.
    ///
    /// # Errors
    /// As [`AuditAppender::range`].
    fn range_hashes(
        &mut self,
        after: u64,
        until: u64,
        limit: u32,
    ) -> Result<Vec<StoredHashes>, StoreError>;
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

/// A secret's record with the sealed data of the version a read wants (its number and bytes),
/// `None` when there is no such live version.
pub type SecretForRead = (SecretRecord, Option<(u32, SealedSecret)>);

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
    /// Its number: the current version the writer saw, plus one. Recording fails
    /// `Stale { what: SecretVersion }` when
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

/// A secret version the audit writer writes in the same commit as the records of its batch
/// ([`AuditAppender::append_with`]), and its answer.
#[derive(Debug)]
pub struct VersionWrite {
    /// The version, with the conditions under which it may be recorded.
    pub version: NewSecretVersion,
    /// Set by the appender: the versions pruning destroyed, or why this one was not written.
    pub result: Option<Result<Vec<u32>, StoreError>>,
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

/// One of the parts a re-wrap job's stored data keys are split into, so that several nodes
/// work through one job at once, each on the parts whose lease it holds (decision 0022). Which
/// part an item falls in is the store's choice, fixed for the item: PostgreSQL hashes the
/// secret's path; SQLite, never shared by several nodes, puts every item in part 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RewrapShard {
    /// This part, `0..of`.
    pub index: u32,
    /// How many parts the items are split into (at least 1).
    pub of: u32,
}

impl RewrapShard {
    /// Every item: the job as one part.
    pub const ALL: Self = Self { index: 0, of: 1 };
}

/// Destroyed versions older than every version a secret keeps that stay listed (as
/// `destroyed`, read as 410) after a pruning write; older ones are removed entirely (404), so a
/// secret written for years under `max_versions` keeps a bounded number of rows and its reads
/// and writes do not slow down (found by the soak: 1,571 rows per path after 9 minutes).
pub const KEPT_TOMBSTONES: u32 = 100;

/// Whether writing `version` of a secret that keeps `max_versions` (0: all) can leave anything
/// for pruning to do, so a store can skip its queries when it cannot. A secret has at most one
/// row per version number, so at most `version` versions are kept (none destroyed when that is
/// within `max_versions`) and at most `version - 1` are destroyed (none removed while that is
/// within [`KEPT_TOMBSTONES`]).
#[must_use]
pub fn pruning_may_apply(version: u32, max_versions: u32) -> bool {
    max_versions != 0 && (version > max_versions || version > KEPT_TOMBSTONES + 1)
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

/// A re-wrap batch the audit writer applies in the same commit as the records of its batch
/// ([`AuditAppender::append_with`]), and its answer.
#[derive(Debug)]
pub struct RewrapWrite {
    /// The batch, applied as [`JobStore::apply_rewrap`] applies it.
    pub batch: RewrapBatch,
    /// Set by the appender: the rows moved, or why nothing was written.
    pub result: Option<Result<u64, StoreError>>,
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

/// Keys, their versions and aliases, the wrap budget, and the references that guard destruction.
///
/// Contract:
/// - Key names and alias names are unique: a second one fails
///   `Conflict { constraint: "keys.name" }` / `"aliases.name"` and changes nothing.
/// - A change decided on state read earlier names that state and fails `Stale` (with the
///   [`StaleKind`] of what moved) instead of overwriting a concurrent change: of two rotations
///   from the same primary exactly one wins.
/// - A version is never marked destroyed while a stored wrapped data key references it:
///   [`KeyStore::destroy_versions`] counts and marks in one transaction and fails
///   `InUse { count }` otherwise.
/// - Two-store writes: the device object is created first and then recorded here; when
///   recording fails the caller destroys the object again.
#[async_trait]
pub trait KeyStore: Send + Sync {
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

    /// Applies `update` to key `id` (see [`KeyUpdate`]) and returns the key.
    ///
    /// # Errors
    /// `NotFound`; `Stale { what: KeyState }` when the key is no longer in `expected_state`.
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
    /// `Stale { what: PrimaryVersion }` when another rotation got there first;
    /// `Stale { what: RotationSchedule }` when the schedule claim was taken.
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
    /// `NotFound`; `Stale { what: VersionState }` when the version is not in one of `from`.
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
    /// `InUse { count }` (nothing changed); `Stale { what: PrimaryVersion }` when a version is
    /// primary (and not `whole_key`); `NotFound` when a version is not the key's.
    async fn destroy_versions(
        &self,
        id: KeyId,
        versions: &[KeyVersion],
        whole_key: bool,
        now: OffsetDateTime,
    ) -> Result<Key, StoreError>;

    /// How many stored wrapped data keys each version of `id` wraps (versions with none are
    /// listed with 0).
    ///
    /// # Errors
    /// Database errors.
    async fn references(&self, id: KeyId) -> Result<Vec<(KeyVersion, u64)>, StoreError>;

    /// Records that a version's device object is gone.
    ///
    /// # Errors
    /// Database errors.
    async fn mark_device_destroyed(&self, root: &RootKeyRef) -> Result<(), StoreError>;

    /// Device objects marked for destruction at or before `marked_before` whose destruction has
    /// not been confirmed (a version marked later may still be in the hands of the request that
    /// marked it).
    ///
    /// # Errors
    /// Database errors.
    async fn pending_device_destroys(
        &self,
        marked_before: OffsetDateTime,
    ) -> Result<Vec<RootKeyRef>, StoreError>;

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

    /// Enabled keys whose primary version has `threshold` or more wraps reserved (by any node):
    /// the wrap-budget rotations due.
    ///
    /// # Errors
    /// Database errors.
    async fn budget_rotations(
        &self,
        threshold: u64,
        limit: u32,
    ) -> Result<Vec<(KeyId, KeyVersion)>, StoreError>;

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
}

/// Principals, policies, bearer tokens (their hashes only) and access keys (their secrets
/// sealed under a Custodian key).
///
/// Contract: principal names, token ids and access key ids are unique (`Conflict { constraint:
/// "principals.name" }` / `"tokens.id"` / `"access_keys.id"`, nothing changed); deleting a
/// principal revokes its tokens and access keys in the same transaction; a revoked token or
/// access key stays revoked; an access key that is not revoked counts as a reference to the key
/// version that sealed it ([`KeyStore::references`]).
#[async_trait]
pub trait IdentityStore: Send + Sync {
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

    /// Records a new access key (its secret sealed).
    ///
    /// # Errors
    /// `Conflict { constraint: "access_keys.id" }` on an id collision.
    async fn insert_access_key(&self, key: &AccessKeyRecord) -> Result<(), StoreError>;

    /// The access key with public id `id`.
    ///
    /// # Errors
    /// Database errors; a missing access key is `Ok(None)`.
    async fn access_key(&self, id: &str) -> Result<Option<AccessKeyRecord>, StoreError>;

    /// Access keys of `principal` (or all), newest first.
    ///
    /// # Errors
    /// Database errors.
    async fn list_access_keys(
        &self,
        principal: Option<&str>,
    ) -> Result<Vec<AccessKeyRecord>, StoreError>;

    /// Revokes an access key at once; false when there is none. Revoking twice keeps the first
    /// time.
    ///
    /// # Errors
    /// Database errors.
    async fn revoke_access_key(&self, id: &str, now: OffsetDateTime) -> Result<bool, StoreError>;

    /// Replaces a live access key's sealed secret by `sealed` under version `key_version` of
    /// the same key, only if the row still holds `old` (a re-wrap); false when it does not (moved
    /// already, revoked, or gone).
    ///
    /// # Errors
    /// Database errors.
    async fn reseal_access_key(
        &self,
        id: &str,
        old: &[u8],
        sealed: &[u8],
        key_version: KeyVersion,
    ) -> Result<bool, StoreError>;
}

/// Versioned secrets: ciphertexts and wrapped data keys only, never a value or a data key.
///
/// Contract:
/// - Version numbers of a path are allocated from 1 without gaps or duplicates: the writer names
///   the number it expects (the current version it read, plus one) and loses with
///   `Stale { what: StaleKind::SecretVersion }` when another writer took it.
/// - Check-and-set fails `CheckAndSet { current }`; a claimed rotation fails
///   `Stale { what: StaleKind::RotationSchedule }`; a data key wrapped under a version that can no
///   longer wrap fails `Stale { what: StaleKind::KeyVersion }`. Nothing of a failed write is
///   stored.
/// - Every stored wrapped data key counts as a reference to its key version (see
///   [`KeyStore::references`]).
#[async_trait]
pub trait SecretStore: Send + Sync {
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

    /// The secret at `path` and the sealed data of the version a read wants: `version`, or the
    /// latest live one when `None` (`None` data when there is none, or it is destroyed). One
    /// trip to the database where the store can (PostgreSQL overrides this); by default the two
    /// reads above.
    ///
    /// # Errors
    /// Database errors; a missing secret is `Ok(None)`.
    async fn secret_for_read(
        &self,
        path: &SecretPath,
        version: Option<u32>,
    ) -> Result<Option<SecretForRead>, StoreError> {
        let Some(record) = self.secret(path).await? else {
            return Ok(None);
        };
        let wanted = version.or_else(|| record.latest_live().map(|v| v.version));
        let data = match wanted {
            Some(n) => self.secret_version_data(path, n).await?.map(|d| (n, d)),
            None => None,
        };
        Ok(Some((record, data)))
    }

    /// Drops what the store keeps in memory of `path`'s reads, if it keeps any (SQLite:
    /// decision 0028). The service calls it when the sealed data a read returned failed to
    /// open, so rows put right behind the store's back are read again from the database.
    fn forget_read(&self, path: &SecretPath) {
        let _ = path;
    }

    /// Records a version in one transaction: creates the path if needed, checks `cas`, the
    /// version number and the rotation claim, inserts, then destroys the oldest versions beyond
    /// `max_versions` and removes all but the newest [`KEPT_TOMBSTONES`] destroyed versions
    /// older than every kept one. Returns the versions that pruning destroyed.
    ///
    /// # Errors
    /// `CheckAndSet { current }`; `Stale` with `SecretVersion`, `RotationSchedule` or
    /// `KeyVersion` (see the trait); database errors. Nothing is written on error.
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
}

/// Background jobs (re-wrap) and their trail.
///
/// Contract: a re-wrap batch ([`JobStore::apply_rewrap`]) commits the new wrapped data keys, the
/// job's progress counters and its trail event in one transaction, or nothing; an item is
/// replaced only while it still holds the wrapped key the job read, so a concurrent write is
/// never overwritten; a target that is no longer the enabled primary fails the whole batch
/// `Stale { what: StaleKind::KeyVersion }`.
#[async_trait]
pub trait JobStore: Send + Sync {
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

    /// Whether the store splits a job's items into parts ([`RewrapShard`]) for several nodes to
    /// work on at once. A store only one node uses (SQLite) puts every item in part 0: its node
    /// need not take the other parts' leases and find them empty.
    fn splits_rewrap_jobs(&self) -> bool {
        true
    }

    /// Up to `limit` stored data keys of `key_id` wrapped under a version other than `target`,
    /// in part `shard` of the split, in (path, version) order, after `after` when given. The
    /// parts of one split are disjoint and together hold every candidate.
    ///
    /// # Errors
    /// Database errors.
    async fn rewrap_candidates(
        &self,
        key_id: KeyId,
        target: KeyVersion,
        shard: RewrapShard,
        after: Option<&(SecretPath, u32)>,
        limit: u32,
    ) -> Result<Vec<RewrapItem>, StoreError>;

    /// Commits one batch atomically: each item's new wrapped data key replaces the old one only
    /// if the row still holds the old one; the job's `done` and `failed_items` advance, and a
    /// `batch` event is added to its trail, in the same transaction. Returns how many rows
    /// changed.
    ///
    /// # Errors
    /// `Stale { what: KeyVersion }` when `target` is no longer the key's enabled primary version;
    /// database errors.
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
}

/// The hash-chained audit log.
///
/// Contract: one writer appends through [`AuditAppender`] in group commits, durable on return;
/// sequences are contiguous; ranges come back in sequence order; the tail names the last record,
/// checkpoint and archive; archiving removes a prefix only while the archive's head is the stored
/// hash of its last record (`Stale { what: StaleKind::AuditHead }` otherwise).
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// A dedicated connection for the audit writer, used from its own thread (blocking), so
    /// audit commits neither wait for nor hold up the connection the requests use.
    ///
    /// # Errors
    /// Database errors.
    async fn audit_appender(&self) -> Result<Box<dyn AuditAppender>, StoreError>;

    /// The audit chain's tail: the last record, the last checkpoint, the last archive.
    ///
    /// # Errors
    /// Database errors; `Corrupt` for unreadable rows.
    async fn audit_tail(&self) -> Result<AuditTail, StoreError>;

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
    /// `Stale { what: AuditHead }`, `NotFound` (no such record), database errors.
    async fn archive_audit(&self, archive: &AuditArchive) -> Result<u64, StoreError>;
}

/// All of the store: what the service holds as `Arc<dyn Store>`. One object (e.g.
/// [`sqlite::SqliteStore`]) implements every concern; readiness belongs to the whole database.
#[async_trait]
pub trait Store:
    KeyStore
    + IdentityStore
    + SecretStore
    + JobStore
    + AuditStore
    + database::DatabaseStore
    + Send
    + Sync
    + 'static
{
    /// Proves the database accepts a durable write now (readiness).
    ///
    /// # Errors
    /// Database errors.
    async fn check_writable(&self) -> Result<(), StoreError>;

    /// Takes, or renews, the lease `name` for `holder` until `ttl` from now on the database's
    /// clock: true when `holder` holds it on return. A lease held by another holder is taken
    /// over only once it has expired.
    ///
    /// # Errors
    /// Database errors.
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError>;

    /// Removes the leases that expired more than `expired_for` ago (on the database's clock);
    /// returns how many. An expired lease is free to take and a missing one is taken the same
    /// way, so no holder changes: this only keeps the table from growing by the leases of
    /// finished work (a re-wrap job leaves one per part).
    ///
    /// # Errors
    /// Database errors.
    async fn remove_expired_leases(
        &self,
        expired_for: std::time::Duration,
    ) -> Result<u64, StoreError>;

    /// Records that the TPM of `node` holds key `key`'s versions (a TPM key). Idempotent.
    ///
    /// # Errors
    /// Database errors.
    async fn set_tpm_key_node(&self, key: KeyId, node: &str) -> Result<(), StoreError>;

    /// The node whose TPM holds key `key`, if one was recorded.
    ///
    /// # Errors
    /// Database errors.
    async fn tpm_key_node(&self, key: KeyId) -> Result<Option<String>, StoreError>;

    /// The names of the keys not destroyed whose versions the TPM of `node` holds, in name
    /// order, at most `limit`.
    ///
    /// # Errors
    /// Database errors.
    async fn tpm_keys_on_node(&self, node: &str, limit: u32) -> Result<Vec<String>, StoreError>;

    /// Serialises one-time start-up work (finding or creating the audit signing key in a shared
    /// HSM, the bootstrap principal) across nodes starting at the same moment: held until the
    /// returned guard drops. `None` where no other node shares the database.
    ///
    /// # Errors
    /// Database errors.
    async fn startup_guard(&self) -> Result<Option<StartupGuard>, StoreError> {
        Ok(None)
    }

    /// Whether other nodes may share this database (their changes then reach this node only
    /// through [`Store::watch`]).
    fn shared(&self) -> bool {
        false
    }

    /// Reports committed changes to what nodes cache, for as long as the node runs (see
    /// [`Change`]). A store no other node shares reports nothing and returns.
    async fn watch(&self, changes: tokio::sync::mpsc::UnboundedSender<Change>) {
        let _ = changes;
    }

    /// How the connection pool is used now, for metrics.
    fn pool_usage(&self) -> PoolUsage;
}

/// Held while a node does its one-time start-up work (see [`Store::startup_guard`]); the lock
/// is released when this drops.
pub struct StartupGuard(pub Box<dyn std::any::Any + Send + Sync>);

impl std::fmt::Debug for StartupGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StartupGuard")
    }
}

/// A change to what nodes cache, as the store's watch reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The watch (re)connected: anything may have changed while it was away.
    Resync,
    /// The watch lost its connection: caches cannot be trusted until the next `Resync`.
    Lost,
    /// A key or one of its versions changed.
    Key(KeyId),
    /// Tokens, principals or policies changed.
    Identity,
}

impl Change {
    /// The change a notification's payload names (`key:<id>`, `identity`); anything else is
    /// taken as "anything may have changed".
    pub fn parse(payload: &str) -> Self {
        match payload.split_once(':') {
            Some(("key", id)) => id.parse().map_or(Self::Resync, Self::Key),
            _ if payload == "identity" => Self::Identity,
            _ => Self::Resync,
        }
    }
}

/// A store's connection pool, as metrics show it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolUsage {
    /// The most connections the pool opens.
    pub max: u64,
    /// Connections open now.
    pub open: u64,
    /// Connections checked out now.
    pub in_use: u64,
    /// Callers waiting for a connection now.
    pub waiting: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_is_skipped_only_where_it_cannot_apply() {
        // Unlimited versions: never.
        assert!(!pruning_may_apply(1, 0));
        assert!(!pruning_may_apply(10_000, 0));
        // Within max_versions and too few numbers for a tombstone to go: skipped.
        assert!(!pruning_may_apply(1, 10));
        assert!(!pruning_may_apply(10, 10));
        assert!(!pruning_may_apply(KEPT_TOMBSTONES + 1, KEPT_TOMBSTONES + 5));
        // One version more than kept: a version to destroy.
        assert!(pruning_may_apply(11, 10));
        // KEPT_TOMBSTONES + 1 destroyed versions can exist below version KEPT_TOMBSTONES + 2.
        assert!(pruning_may_apply(KEPT_TOMBSTONES + 2, 1_000));
    }
}
