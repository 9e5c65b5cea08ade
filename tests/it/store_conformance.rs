//! One conformance suite for the store traits (`KeyStore`, `IdentityStore`, `SecretStore`,
//! `JobStore`, `AuditStore`, through `Store`), written once against `&dyn Store` and run against
//! every implementation: SQLite now, PostgreSQL next (it adds a [`Harness`] and one
//! `conformance!` line). Real databases in temporary directories; no mocks.
//!
//! Every case that shows a rule holding has a twin that shows the rule refusing, and that the
//! refusal changed nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use custodian::audit::{AuditArchive, AuditEntry, AuditRecord, Outcome};
use custodian::domain::job::{Job, JobKind, JobState};
use custodian::domain::secret::{SecretPath, SecretVersionState};
use custodian::domain::{
    AccessKeyRecord, Algorithm, BackendKind, Key, KeyId, KeyName, KeyRef, KeyState, KeyVersion,
    KeyVersionRecord, PrincipalRecord, RootKeyRef, RootMaterial, TokenRecord, VersionState,
    WrapMode,
};
use custodian::store::database::{
    DbConnectionRecord, DbLeaseFilter, DbLeaseRecord, DbRoleRecord, DynamicSpec, OnTokenRevoke,
    RoleSpec, StaticSpec, StaticState,
};
use custodian::store::postgres::{PostgresSettings, PostgresStore};
use custodian::store::sqlite::SqliteStore;
use custodian::store::{
    NewSecretVersion, RewrapBatch, RewrapShard, RewrapWrite, SealedSecret, StaleKind, Store,
    StoreError, VersionOp, VersionWrite,
};
use time::OffsetDateTime;
use tokio::sync::Barrier;

// --- what an implementation provides to the suite ---

/// A fresh, empty database of one implementation, and the means to stage what an older or a
/// newer binary would have left in it.
#[async_trait]
pub trait Harness: Send + Sync + Sized + 'static {
    /// A new, empty database (nothing opened yet).
    async fn create() -> Self;
    /// Opens the database as the server does (migrating it to the newest schema).
    async fn open(&self) -> Result<Arc<dyn Store>, StoreError>;
    /// Opens it migrated only up to `version`, as an older binary would have left it.
    async fn open_at_schema(&self, version: u32) -> Result<Arc<dyn Store>, StoreError>;
    /// The schema version the database records.
    async fn schema_version(&self) -> u32;
    /// Records `version` as applied, as a newer binary's migration would have.
    async fn record_schema(&self, version: u32);
    /// The newest schema version this binary knows.
    fn latest_schema() -> u32;
}

/// SQLite: a database file in its own temporary directory.
pub struct Sqlite {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

#[async_trait]
impl Harness for Sqlite {
    async fn create() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("custodian.db");
        Self { _dir: dir, path }
    }

    async fn open(&self) -> Result<Arc<dyn Store>, StoreError> {
        Ok(Arc::new(SqliteStore::open(&self.path).await?))
    }

    async fn open_at_schema(&self, version: u32) -> Result<Arc<dyn Store>, StoreError> {
        Ok(Arc::new(
            SqliteStore::open_at_schema(&self.path, version).await?,
        ))
    }

    async fn schema_version(&self) -> u32 {
        let conn = rusqlite::Connection::open(&self.path).unwrap();
        conn.query_row("SELECT MAX(version) FROM schema_migrations", [], |r| {
            r.get(0)
        })
        .unwrap()
    }

    async fn record_schema(&self, version: u32) {
        let conn = rusqlite::Connection::open(&self.path).unwrap();
        conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at)
             VALUES (?1, 'from_a_newer_binary', '2099-01-01T00:00:00Z')",
            [version],
        )
        .unwrap();
    }

    fn latest_schema() -> u32 {
        SqliteStore::latest_schema()
    }
}

/// Instantiates every case for one implementation.
macro_rules! conformance {
    ($module:ident, $harness:ty) => {
        mod $module {
            use super::*;

            #[tokio::test]
            async fn versions_written_at_once_are_answered_each_on_its_own() {
                super::versions_written_at_once_are_answered_each_on_its_own::<$harness>().await;
            }
            #[tokio::test]
            async fn versions_written_with_their_records_share_one_commit() {
                super::versions_written_with_their_records_share_one_commit::<$harness>().await;
            }
            #[tokio::test]
            async fn rewrap_batches_written_with_their_records_share_one_commit() {
                super::rewrap_batches_written_with_their_records_share_one_commit::<$harness>()
                    .await;
            }
            #[tokio::test]
            async fn first_version_needs_a_usable_key() {
                super::first_version_needs_a_usable_key::<$harness>().await;
            }
            #[tokio::test]
            async fn key_names_are_unique() {
                super::key_names_are_unique::<$harness>().await;
            }
            #[tokio::test]
            async fn alias_names_are_unique() {
                super::alias_names_are_unique::<$harness>().await;
            }
            #[tokio::test]
            async fn principal_names_are_unique() {
                super::principal_names_are_unique::<$harness>().await;
            }
            #[tokio::test]
            async fn token_ids_are_unique() {
                super::token_ids_are_unique::<$harness>().await;
            }
            #[tokio::test]
            async fn a_policy_written_again_after_a_delete_continues_its_history() {
                super::a_policy_written_again_after_a_delete_continues_its_history::<$harness>()
                    .await;
            }
            #[tokio::test]
            async fn access_keys_are_unique_revocable_and_referenced() {
                super::access_keys_are_unique_revocable_and_referenced::<$harness>().await;
            }
            #[tokio::test]
            async fn db_connections_and_roles_are_unique_and_fenced() {
                super::db_connections_and_roles_are_unique_and_fenced::<$harness>().await;
            }
            #[tokio::test]
            async fn a_db_lease_is_revoked_once() {
                super::a_db_lease_is_revoked_once::<$harness>().await;
            }
            #[tokio::test]
            async fn secret_check_and_set() {
                super::secret_check_and_set::<$harness>().await;
            }
            #[tokio::test]
            async fn a_lease_has_one_holder_until_it_expires() {
                super::a_lease_has_one_holder_until_it_expires::<$harness>().await;
            }
            #[tokio::test]
            async fn only_long_expired_leases_are_removed() {
                super::only_long_expired_leases_are_removed::<$harness>().await;
            }
            #[tokio::test]
            async fn tpm_keys_are_listed_by_their_node() {
                super::tpm_keys_are_listed_by_their_node::<$harness>().await;
            }
            #[tokio::test]
            async fn a_read_gets_the_record_and_the_wanted_data() {
                super::a_read_gets_the_record_and_the_wanted_data::<$harness>().await;
            }
            #[tokio::test]
            async fn pruning_keeps_a_bounded_number_of_tombstones() {
                super::pruning_keeps_a_bounded_number_of_tombstones::<$harness>().await;
            }
            #[tokio::test]
            async fn secret_version_numbers_are_checked() {
                super::secret_version_numbers_are_checked::<$harness>().await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_version_allocation() {
                super::concurrent_version_allocation::<$harness>().await;
            }
            #[tokio::test]
            async fn rewrap_batch_commits_rows_and_progress_together() {
                super::rewrap_batch_commits_rows_and_progress_together::<$harness>().await;
            }
            #[tokio::test]
            async fn rewrap_parts_split_the_candidates() {
                super::rewrap_parts_split_the_candidates::<$harness>().await;
            }
            #[tokio::test]
            async fn destroy_refused_while_references_exist() {
                super::destroy_refused_while_references_exist::<$harness>().await;
            }
            #[tokio::test]
            async fn audit_append_range_tail() {
                super::audit_append_range_tail::<$harness>().await;
            }
            #[tokio::test]
            async fn audit_rechecks_hashes_match_the_records() {
                super::audit_rechecks_hashes_match_the_records::<$harness>().await;
            }
            #[tokio::test]
            async fn audit_archive_checks_the_head() {
                super::audit_archive_checks_the_head::<$harness>().await;
            }
            #[tokio::test]
            async fn migrates_an_empty_database() {
                super::migrates_an_empty_database::<$harness>().await;
            }
            #[tokio::test]
            async fn migrates_from_the_previous_schema() {
                super::migrates_from_the_previous_schema::<$harness>().await;
            }
            #[tokio::test]
            async fn refuses_a_newer_schema() {
                super::refuses_a_newer_schema::<$harness>().await;
            }
        }
    };
}

conformance!(sqlite, Sqlite);
conformance!(postgres, Postgres);

/// PostgreSQL: a fresh database on the test cluster (`common::postgres`).
pub struct Postgres {
    name: String,
    settings: PostgresSettings,
}

#[async_trait]
impl Harness for Postgres {
    async fn create() -> Self {
        let (name, settings) = crate::common::postgres::fresh_database().await;
        Self { name, settings }
    }

    async fn open(&self) -> Result<Arc<dyn Store>, StoreError> {
        Ok(Arc::new(PostgresStore::open(&self.settings).await?))
    }

    async fn open_at_schema(&self, version: u32) -> Result<Arc<dyn Store>, StoreError> {
        Ok(Arc::new(
            PostgresStore::open_at_schema(&self.settings, version).await?,
        ))
    }

    async fn schema_version(&self) -> u32 {
        let db = crate::common::postgres::admin(Some(&self.name)).await;
        let v: i64 = db
            .query_one("SELECT MAX(version) FROM schema_migrations", &[])
            .await
            .unwrap()
            .get(0);
        u32::try_from(v).unwrap()
    }

    async fn record_schema(&self, version: u32) {
        let db = crate::common::postgres::admin(Some(&self.name)).await;
        db.execute(
            "INSERT INTO schema_migrations (version, name, applied_at)
             VALUES ($1, 'from_a_newer_binary', '2099-01-01T00:00:00Z')",
            &[&i64::from(version)],
        )
        .await
        .unwrap();
    }

    fn latest_schema() -> u32 {
        PostgresStore::latest_schema()
    }
}

// --- fixtures ---

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn name(s: &str) -> KeyName {
    KeyName::try_from(s.to_owned()).unwrap()
}

fn path(s: &str) -> SecretPath {
    SecretPath::try_from(s.to_owned()).unwrap()
}

fn version(n: u32) -> KeyVersion {
    KeyVersion::new(n).unwrap()
}

fn version_record(n: u32, state: VersionState) -> KeyVersionRecord {
    KeyVersionRecord {
        version: version(n),
        state,
        algorithm: Algorithm::Aes256GcmDevice,
        created_at: now(),
        destroyed_at: None,
        wraps_reserved: 0,
        material: RootMaterial::default(),
    }
}

fn new_key(key_name: &str) -> Key {
    let t = now();
    Key {
        id: KeyId::generate(),
        name: name(key_name),
        description: String::new(),
        state: KeyState::Enabled,
        backend: BackendKind::Pkcs11,
        mode: WrapMode::Direct,
        created_at: t,
        primary_version: KeyVersion::FIRST,
        min_decryption_version: KeyVersion::FIRST,
        rotation_period: None,
        next_rotation_at: None,
        deletion_date: None,
        deletion_blocked: None,
        updated_at: t,
        versions: vec![version_record(1, VersionState::Primary)],
    }
}

async fn stored_key(store: &dyn Store, key_name: &str) -> Key {
    let key = new_key(key_name);
    store.insert_key(&key).await.unwrap();
    key
}

/// Rotates `key` from `from` to `from + 1`.
async fn rotate(store: &dyn Store, key: &Key, from: u32) -> Key {
    store
        .add_key_version(
            key.id,
            &version_record(from + 1, VersionState::Primary),
            version(from),
            None,
        )
        .await
        .unwrap()
}

fn secret_version(
    key: &Key,
    secret: &str,
    number: u32,
    cas: Option<u32>,
    key_version: u32,
) -> NewSecretVersion {
    NewSecretVersion {
        path: path(secret),
        version: number,
        cas,
        key_id: key.id,
        key_version: version(key_version),
        wrapped_dek: format!("dek {secret} {number}").into_bytes(),
        ciphertext: format!("ciphertext {secret} {number}").into_bytes(),
        created_at: now(),
        default_max_versions: 0,
        rotation: None,
    }
}

fn principal(principal_name: &str, attribute: &str) -> PrincipalRecord {
    PrincipalRecord {
        name: name(principal_name),
        attributes: BTreeMap::from([("team".to_owned(), attribute.to_owned())]),
        policies: Vec::new(),
        created_at: now(),
        updated_at: now(),
    }
}

fn token(id: &str, principal_name: &str) -> TokenRecord {
    TokenRecord {
        id: id.to_owned(),
        principal: principal_name.to_owned(),
        secret_hash: [7; 32],
        description: String::new(),
        created_at: now(),
        expires_at: None,
        revoked_at: None,
    }
}

/// A key with a version-1 secret per name, rotated to version 2, a re-wrap job to version 2
/// and the job's candidates (all of them, checked).
async fn rewrap_started(
    store: &dyn Store,
    secrets: &[&str],
) -> (Key, Job, Vec<custodian::store::RewrapItem>) {
    let key = stored_key(store, "k").await;
    for secret in secrets {
        store
            .insert_secret_version(&secret_version(&key, secret, 1, None, 1))
            .await
            .unwrap();
    }
    rotate(store, &key, 1).await;
    let (job, items) = rewrap_started_on(store, &key).await;
    assert_eq!(items.len(), secrets.len());
    (key, job, items)
}

/// A re-wrap job to version 2 of `key`, started, and its first ten candidates.
async fn rewrap_started_on(
    store: &dyn Store,
    key: &Key,
) -> (Job, Vec<custodian::store::RewrapItem>) {
    let job = rewrap_job(key, 2);
    store.create_job(&job).await.unwrap();
    let items = store
        .rewrap_candidates(key.id, version(2), RewrapShard::ALL, None, 10)
        .await
        .unwrap();
    (job, items)
}

fn rewrap_job(key: &Key, target: u32) -> Job {
    Job {
        id: format!("job-{}", KeyId::generate()),
        kind: JobKind::Rewrap,
        key_id: key.id,
        target_version: version(target),
        state: JobState::Running,
        done: 0,
        failed_items: 0,
        last_error: None,
        created_at: now(),
        updated_at: now(),
        finished_at: None,
    }
}

fn entry(request_id: &str) -> AuditEntry {
    AuditEntry {
        time: "2025-01-01T12:00:00.000000Z".to_owned(),
        node: "conformance".to_owned(),
        request_id: request_id.to_owned(),
        method: "POST".to_owned(),
        route: "/v1/keys".to_owned(),
        principal: Some("admin".to_owned()),
        credential: None,
        source: None,
        action: Some("key:create".to_owned()),
        resource: None,
        key_id: None,
        key_version: None,
        other_keys: Vec::new(),
        outcome: Outcome::Success,
        status: 201,
        error_code: None,
        context_digest: None,
        context_keys: Vec::new(),
        details: BTreeMap::from([("count".to_owned(), "1".to_owned())]),
    }
}

/// `n` records chained after `prev` from sequence `first`.
/// `append_with` on the blocking pool (the appender blocks), which must succeed; the appender
/// and the changes with their answers come back.
async fn append_riding(
    mut appender: Box<dyn custodian::store::AuditAppender>,
    records: Vec<AuditRecord>,
    mut versions: Vec<VersionWrite>,
    mut rewraps: Vec<RewrapWrite>,
) -> (
    Box<dyn custodian::store::AuditAppender>,
    Vec<VersionWrite>,
    Vec<RewrapWrite>,
) {
    tokio::task::spawn_blocking(move || {
        appender
            .append_with(&records, &mut versions, &mut rewraps)
            .unwrap();
        (appender, versions, rewraps)
    })
    .await
    .unwrap()
}

/// Every answer is `Unavailable` (a store whose audit writer does not write changes).
fn assert_all_unavailable<T: std::fmt::Debug>(answers: &[Result<T, StoreError>]) {
    for answer in answers {
        assert!(
            matches!(answer, Err(StoreError::Unavailable(_))),
            "{answer:?}"
        );
    }
}

fn chain(first: u64, n: u64, mut prev: [u8; 32]) -> Vec<AuditRecord> {
    (first..first + n)
        .map(|sequence| {
            let r = AuditRecord::chain(sequence, entry(&format!("req-{sequence}")), &prev);
            prev = r.hash_bytes().unwrap();
            r
        })
        .collect()
}

fn assert_conflict(result: Result<impl std::fmt::Debug, StoreError>, rule: &str) {
    match result {
        Err(StoreError::Conflict { constraint }) => assert_eq!(constraint, rule),
        other => panic!("expected Conflict {{ {rule} }}, got {other:?}"),
    }
}

fn assert_stale(result: Result<impl std::fmt::Debug, StoreError>, kind: StaleKind) {
    match result {
        Err(StoreError::Stale { what }) => assert_eq!(what, kind),
        other => panic!("expected Stale {{ {kind:?} }}, got {other:?}"),
    }
}

// --- the cases ---

/// A second key with a taken name is refused naming `keys.name`, and nothing of it is stored;
/// a different name is accepted.
async fn key_names_are_unique<H: Harness>() {
    let h = H::create().await;
    let store = h.open().await.unwrap();
    let first = stored_key(&*store, "orders").await;

    let twin = new_key("orders");
    assert_conflict(store.insert_key(&twin).await, "keys.name");
    assert_eq!(store.key(&KeyRef::Id(twin.id)).await.unwrap(), None);
    let by_name = store.key(&KeyRef::Name(name("orders"))).await.unwrap();
    assert_eq!(by_name.map(|k| k.id), Some(first.id));

    stored_key(&*store, "billing").await;
    assert_eq!(store.list_keys(None, 10).await.unwrap().len(), 2);
}

/// Creating an existing alias is refused naming `aliases.name` and leaves it pointing where it
/// did; re-pointing an existing alias is accepted; re-pointing a missing one is `NotFound`.
async fn alias_names_are_unique<H: Harness>() {
    let h = H::create().await;
    let store = h.open().await.unwrap();
    let a = stored_key(&*store, "a").await;
    let b = stored_key(&*store, "b").await;
    let alias = name("current");

    store.put_alias(&alias, a.id, true, now()).await.unwrap();
    assert_conflict(
        store.put_alias(&alias, b.id, true, now()).await,
        "aliases.name",
    );
    assert_eq!(store.alias(&alias).await.unwrap().unwrap().key_id, a.id);

    store.put_alias(&alias, b.id, false, now()).await.unwrap();
    assert_eq!(store.alias(&alias).await.unwrap().unwrap().key_id, b.id);
    assert!(matches!(
        store.put_alias(&name("missing"), a.id, false, now()).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.list_aliases().await.unwrap().len(), 1);
}

/// Creating a principal twice is refused naming `principals.name` and keeps the first record;
/// replacing it is accepted.
async fn principal_names_are_unique<H: Harness>() {
    let h = H::create().await;
    let store = h.open().await.unwrap();
    store
        .put_principal(&principal("app", "first"), true)
        .await
        .unwrap();

    assert_conflict(
        store.put_principal(&principal("app", "second"), true).await,
        "principals.name",
    );
    let kept = store.principal("app").await.unwrap().unwrap();
    assert_eq!(kept.attributes["team"], "first");

    store
        .put_principal(&principal("app", "second"), false)
        .await
        .unwrap();
    let replaced = store.principal("app").await.unwrap().unwrap();
    assert_eq!(replaced.attributes["team"], "second");
    assert_eq!(store.list_principals().await.unwrap().len(), 1);
}

/// A policy deleted and written again under its name takes the version after its last one
/// (the history stays; its version numbers are not reused), on both the new and the built-in
/// (`only_if_absent`) path.
async fn a_policy_written_again_after_a_delete_continues_its_history<H: Harness>() {
    let h = H::create().await;
    let store = h.open().await.unwrap();
    let doc = |n: u32| serde_json::json!({ "statements": [], "n": n });
    for n in 1..=2 {
        let written = store.put_policy(&name("ops"), &doc(n), false, now()).await;
        assert_eq!(written.unwrap().version, n);
    }
    assert!(store.delete_policy("ops").await.unwrap());
    assert!(store.policy("ops").await.unwrap().is_none());

    let again = store.put_policy(&name("ops"), &doc(3), false, now()).await;
    assert_eq!(again.unwrap().version, 3);
    let read = store.policy("ops").await.unwrap().unwrap();
    assert_eq!(
        (read.version, read.document["n"].clone()),
        (3, serde_json::json!(3))
    );
    assert_eq!(
        store
            .put_policy(&name("ops"), &doc(4), false, now())
            .await
            .unwrap()
            .version,
        4
    );

    assert!(store.delete_policy("ops").await.unwrap());
    let installed = store.put_policy(&name("ops"), &doc(5), true, now()).await;
    assert_eq!(installed.unwrap().version, 5);
    // A name never used starts at 1.
    let fresh = store.put_policy(&name("new"), &doc(1), false, now()).await;
    assert_eq!(fresh.unwrap().version, 1);
}

/// A token id collision is refused naming `tokens.id` and stores nothing; another id is stored.
async fn token_ids_are_unique<H: Harness>() {
    let h = H::create().await;
    let store = h.open().await.unwrap();
    store.insert_token(&token("t1", "app")).await.unwrap();

    assert_conflict(store.insert_token(&token("t1", "other")).await, "tokens.id");
    assert_eq!(store.token_count().await.unwrap(), 1);
    assert_eq!(store.token("t1").await.unwrap().unwrap().principal, "app");

    store.insert_token(&token("t2", "other")).await.unwrap();
    assert_eq!(store.token_count().await.unwrap(), 2);
}

fn access_key(id: &str, principal_name: &str, key: &Key) -> AccessKeyRecord {
    AccessKeyRecord {
        id: id.to_owned(),
        principal: principal_name.to_owned(),
        description: "d".to_owned(),
        sealed_secret: format!("sealed {id}").into_bytes(),
        key_id: key.id,
        key_version: version(1),
        created_at: now(),
        expires_at: Some(now() + time::Duration::days(1)),
        revoked_at: None,
    }
}

/// Access keys: an id collision is refused naming `access_keys.id` and stores nothing; records
/// come back as stored, listed newest first and by principal; revocation keeps its first time;
/// deleting the principal revokes them; an access key not revoked counts as a reference to the
/// key version that sealed it, so the version cannot be destroyed under it; a re-wrap moves a
/// live one to another version only from the bytes it holds.
async fn access_keys_are_unique_revocable_and_referenced<H: Harness>() {
    let h = H::create().await;
    let store = h.open().await.unwrap();
    let key = stored_key(&*store, "sealing").await;
    let a1 = access_key("CKIAAAAAAAAAAAAAAAA1", "app", &key);
    store.insert_access_key(&a1).await.unwrap();
    assert_conflict(
        store
            .insert_access_key(&access_key("CKIAAAAAAAAAAAAAAAA1", "other", &key))
            .await,
        "access_keys.id",
    );
    let got = store.access_key(&a1.id).await.unwrap().unwrap();
    assert_eq!(got, a1);
    assert!(store
        .access_key("CKIAAAAAAAAAAAAAAAA9")
        .await
        .unwrap()
        .is_none());
    let a2 = access_key("CKIAAAAAAAAAAAAAAAA2", "other", &key);
    store.insert_access_key(&a2).await.unwrap();
    assert_eq!(store.list_access_keys(None).await.unwrap().len(), 2);
    let of_app = store.list_access_keys(Some("app")).await.unwrap();
    assert_eq!(of_app, vec![a1.clone()]);

    // Two access keys reference version 1: it cannot be destroyed.
    rotate(&*store, &key, 1).await;
    let refs = store.references(key.id).await.unwrap();
    assert_eq!(refs[0], (version(1), 2), "{refs:?}");
    let refused = store
        .destroy_versions(key.id, &[version(1)], false, now())
        .await;
    assert!(
        matches!(refused, Err(StoreError::InUse { count: 2 })),
        "{refused:?}"
    );
    // A re-wrap moves a2 to version 2, only from the bytes it holds and once; then only a1
    // holds version 1.
    let reseal = |old: &'static [u8], new: &'static [u8]| {
        let store = &store;
        let id = a2.id.clone();
        async move {
            store
                .reseal_access_key(&id, old, new, version(2))
                .await
                .unwrap()
        }
    };
    assert!(!reseal(b"not these bytes", b"moved").await);
    assert!(reseal(b"sealed CKIAAAAAAAAAAAAAAAA2", b"moved").await);
    assert!(!reseal(b"sealed CKIAAAAAAAAAAAAAAAA2", b"again").await);
    let moved = store.access_key(&a2.id).await.unwrap().unwrap();
    assert_eq!(moved.sealed_secret, b"moved".to_vec());
    assert_eq!(moved.key_version, version(2));
    assert_eq!(store.references(key.id).await.unwrap()[0], (version(1), 1));

    // Revocation: the first time stays; an unknown id is false.
    let first = now();
    assert!(store.revoke_access_key(&a1.id, first).await.unwrap());
    assert!(store
        .revoke_access_key(&a1.id, first + time::Duration::hours(1))
        .await
        .unwrap());
    assert_eq!(
        store.access_key(&a1.id).await.unwrap().unwrap().revoked_at,
        Some(first)
    );
    assert!(!store
        .revoke_access_key("CKIAAAAAAAAAAAAAAAA9", first)
        .await
        .unwrap());
    // A revoked access key is not moved.
    assert!(!store
        .reseal_access_key(&a1.id, &a1.sealed_secret, b"moved", version(2))
        .await
        .unwrap());
    // Deleting the principal revokes its access keys in the same transaction.
    store
        .put_principal(&principal("other", "t"), true)
        .await
        .unwrap();
    assert!(store.delete_principal("other", first).await.unwrap());
    assert!(store
        .access_key(&a2.id)
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_some());
    // No access key holds version 1 any more: it can be destroyed.
    assert_eq!(store.references(key.id).await.unwrap()[0], (version(1), 0));
    let destroyed = store
        .destroy_versions(key.id, &[version(1)], false, now())
        .await
        .unwrap();
    assert_eq!(
        destroyed.version(version(1)).unwrap().state,
        VersionState::Destroyed
    );
}

/// Check-and-set: `cas = 0` creates, `cas = current` writes; a `cas` that is not the current
/// version fails `CheckAndSet { current }` and writes nothing.
async fn secret_check_and_set<H: Harness>() {
    let h = H::create().await;
    let store = h.open().await.unwrap();
    let key = stored_key(&*store, "k").await;

    store
        .insert_secret_version(&secret_version(&key, "app/db", 1, Some(0), 1))
        .await
        .unwrap();
    let refused = store
        .insert_secret_version(&secret_version(&key, "app/db", 2, Some(0), 1))
        .await;
    assert!(
        matches!(refused, Err(StoreError::CheckAndSet { current: 1 })),
        "{refused:?}"
    );
    let record = store.secret(&path("app/db")).await.unwrap().unwrap();
    assert_eq!(record.current_version, 1);
    assert_eq!(
        store.secret_version_data(&path("app/db"), 2).await.unwrap(),
        None
    );

    store
        .insert_secret_version(&secret_version(&key, "app/db", 2, Some(1), 1))
        .await
        .unwrap();
    let record = store.secret(&path("app/db")).await.unwrap().unwrap();
    assert_eq!(record.current_version, 2);
}

/// A duty lease has one holder: it renews its own, another node cannot take it until it has
/// expired (by the database's clock), then can; leases of different duties are independent.
/// A TPM key's node is recorded once and read back; a node lists its TPM keys by name, not
/// another node's, and not destroyed ones.
async fn tpm_keys_are_listed_by_their_node<H: Harness>() {
    let h = H::create().await;
    let store = h.open().await.unwrap();
    let (b, a, other, gone) = (
        stored_key(&*store, "b-key").await,
        stored_key(&*store, "a-key").await,
        stored_key(&*store, "elsewhere").await,
        stored_key(&*store, "gone").await,
    );
    assert_eq!(store.tpm_key_node(a.id).await.unwrap(), None);
    for k in [&b, &a, &gone] {
        store.set_tpm_key_node(k.id, "node-1").await.unwrap();
    }
    store.set_tpm_key_node(other.id, "node-2").await.unwrap();
    // Idempotent.
    store.set_tpm_key_node(a.id, "node-1").await.unwrap();
    assert_eq!(
        store.tpm_key_node(a.id).await.unwrap().as_deref(),
        Some("node-1")
    );
    let destroy = custodian::store::KeyUpdate {
        state: Some(KeyState::Destroyed),
        ..Default::default()
    };
    store.update_key(gone.id, &destroy, now()).await.unwrap();
    assert_eq!(
        store.tpm_keys_on_node("node-1", 10).await.unwrap(),
        ["a-key", "b-key"]
    );
    assert_eq!(
        store.tpm_keys_on_node("node-1", 1).await.unwrap(),
        ["a-key"]
    );
    assert_eq!(
        store.tpm_keys_on_node("node-2", 10).await.unwrap(),
        ["elsewhere"]
    );
    assert!(store
        .tpm_keys_on_node("node-3", 10)
        .await
        .unwrap()
        .is_empty());
}

async fn a_lease_has_one_holder_until_it_expires<H: Harness>() {
    let h = H::create().await;
    let store = h.open().await.unwrap();
    let (short, long) = (
        std::time::Duration::from_millis(600),
        std::time::Duration::from_secs(60),
    );
    assert!(store.acquire_lease("lifecycle", "a", short).await.unwrap());
    assert!(store.acquire_lease("lifecycle", "a", short).await.unwrap());
    assert!(!store.acquire_lease("lifecycle", "b", long).await.unwrap());
    assert!(store.acquire_lease("rewrap", "b", long).await.unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    assert!(store.acquire_lease("lifecycle", "b", long).await.unwrap());
    assert!(!store.acquire_lease("lifecycle", "a", short).await.unwrap());
    assert!(!store.acquire_lease("rewrap", "a", long).await.unwrap());
}

/// Removing expired leases takes only those expired longer than asked, counts them, and
/// leaves every held lease with its holder; a removed lease is free to take.
async fn only_long_expired_leases_are_removed<H: Harness>() {
    let h = H::create().await;
    let store = h.open().await.unwrap();
    let (short, long) = (
        std::time::Duration::from_millis(300),
        std::time::Duration::from_secs(60),
    );
    assert!(store
        .acquire_lease("rewrap/j1/0", "a", short)
        .await
        .unwrap());
    assert!(store.acquire_lease("rewrap/j1/1", "a", long).await.unwrap());
    assert!(store.acquire_lease("lifecycle", "a", long).await.unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    // Expired for about 600 ms: not yet an hour.
    let hour = std::time::Duration::from_secs(3600);
    assert_eq!(store.remove_expired_leases(hour).await.unwrap(), 0);
    let tenth = std::time::Duration::from_millis(100);
    assert_eq!(store.remove_expired_leases(tenth).await.unwrap(), 1);
    assert_eq!(store.remove_expired_leases(tenth).await.unwrap(), 0);
    // The held ones keep their holder; the removed one is free.
    assert!(!store.acquire_lease("rewrap/j1/1", "b", long).await.unwrap());
    assert!(!store.acquire_lease("lifecycle", "b", long).await.unwrap());
    assert!(store.acquire_lease("rewrap/j1/0", "b", long).await.unwrap());
}

fn db_connection(conn_name: &str, key: &Key) -> DbConnectionRecord {
    DbConnectionRecord {
        name: conn_name.to_owned(),
        plugin: "postgresql".into(),
        url: "postgres://db:5432/app".into(),
        admin_user: "admin".into(),
        sslmode: "disable".into(),
        ca_pem: None,
        key_id: key.id,
        admin_version: 1,
        created_at: now(),
    }
}

fn db_role(
    role_name: &str,
    conn: &str,
    spec: RoleSpec,
    next: Option<OffsetDateTime>,
) -> DbRoleRecord {
    DbRoleRecord {
        name: role_name.to_owned(),
        connection: conn.to_owned(),
        spec,
        state: StaticState::default(),
        next_rotation_at: next,
        revision: 1,
        created_at: now(),
        updated_at: now(),
    }
}

fn static_spec() -> RoleSpec {
    RoleSpec::Static(StaticSpec {
        username: "app".into(),
        rotation_period_secs: Some(3600),
        overlap_secs: 0,
    })
}

fn dynamic_spec() -> RoleSpec {
    RoleSpec::Dynamic(DynamicSpec {
        creation: vec!["CREATE ROLE {{name}}".into()],
        revocation: Vec::new(),
        renew: Vec::new(),
        default_ttl_secs: 60,
        max_ttl_secs: 600,
        on_token_revoke: OnTokenRevoke::Revoke,
    })
}

/// Connection and role names are unique; a role write names the revision it read, and a write
/// that read an older revision changes nothing; only static roles fall due, when their time has
/// come.
async fn db_connections_and_roles_are_unique_and_fenced<H: Harness>() {
    let h = H::create().await;
    let store = h.open().await.unwrap();
    let key = stored_key(&*store, "db-key").await;
    let conn = db_connection("orders", &key);
    store.insert_db_connection(&conn).await.unwrap();
    assert_conflict(
        store.insert_db_connection(&conn).await,
        "db_connections.name",
    );
    assert_eq!(
        store.db_connection("orders").await.unwrap(),
        Some(conn.clone())
    );
    assert_eq!(store.db_connection("nope").await.unwrap(), None);
    store
        .insert_db_connection(&db_connection("billing", &key))
        .await
        .unwrap();
    let names: Vec<String> = store
        .list_db_connections()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["billing", "orders"]);

    let past = now() - time::Duration::minutes(1);
    let future = now() + time::Duration::hours(1);
    let due = db_role("due", "orders", static_spec(), Some(past));
    assert!(store.put_db_role(&due, None).await.unwrap());
    assert_conflict(store.put_db_role(&due, None).await, "db_roles.name");
    let later = db_role("later", "orders", static_spec(), Some(future));
    assert!(store.put_db_role(&later, None).await.unwrap());
    // A dynamic role never falls due, whatever its record says.
    let dynamic = db_role("dyn", "billing", dynamic_spec(), Some(past));
    assert!(store.put_db_role(&dynamic, None).await.unwrap());
    let due_now: Vec<String> = store
        .due_db_rotations(now(), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(due_now, ["due"]);

    // Fenced writes: revision 1 → 2 succeeds; a second writer that also read 1 changes nothing.
    let mut first = due.clone();
    first.state.pending = Some(7);
    first.next_rotation_at = None;
    first.revision = 2;
    assert!(store.put_db_role(&first, Some(1)).await.unwrap());
    let mut second = due.clone();
    second.state.current = Some(9);
    second.revision = 2;
    assert!(!store.put_db_role(&second, Some(1)).await.unwrap());
    assert_eq!(store.db_role("due").await.unwrap(), Some(first));
    assert!(store.due_db_rotations(now(), 10).await.unwrap().is_empty());
    assert!(!store
        .put_db_role(&db_role("missing", "orders", static_spec(), None), Some(1))
        .await
        .unwrap());

    let of_orders: Vec<String> = store
        .list_db_roles(Some("orders"))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(of_orders, ["due", "later"]);
    assert_eq!(store.list_db_roles(None).await.unwrap().len(), 3);
    assert!(store.delete_db_role("later").await.unwrap());
    assert!(!store.delete_db_role("later").await.unwrap());
    assert!(store.delete_db_connection("billing").await.unwrap());
    assert!(!store.delete_db_connection("billing").await.unwrap());
    assert_eq!(store.db_role("later").await.unwrap(), None);
}

fn db_lease(id: &str, credential: &str, expires_at: OffsetDateTime) -> DbLeaseRecord {
    DbLeaseRecord {
        id: id.to_owned(),
        role: "reader".into(),
        connection: "orders".into(),
        username: format!("c_reader_{id}"),
        principal: "app".into(),
        credential_id: credential.to_owned(),
        created_at: now(),
        expires_at,
        max_expires_at: expires_at + time::Duration::hours(1),
        retry_at: None,
        failures: 0,
        revoked_at: None,
    }
}

/// Lease ids are unique; a lease is revoked by exactly one write (a second revocation, or a
/// renewal after it, changes nothing); listings find due, live, per-token leases, and a lease
/// waiting for a retry is not due before its retry time.
async fn a_db_lease_is_revoked_once<H: Harness>() {
    let h = H::create().await;
    let store = h.open().await.unwrap();
    let past = now() - time::Duration::seconds(5);
    let future = now() + time::Duration::hours(1);
    let ended = db_lease("dbl_a", "tok-1", past);
    store.insert_db_lease(&ended).await.unwrap();
    assert_conflict(store.insert_db_lease(&ended).await, "db_leases.id");
    let running = db_lease("dbl_b", "tok-1", future);
    store.insert_db_lease(&running).await.unwrap();
    let mut waiting = db_lease("dbl_c", "tok-2", past);
    waiting.retry_at = Some(future);
    store.insert_db_lease(&waiting).await.unwrap();

    let ids = |v: Vec<DbLeaseRecord>| v.into_iter().map(|l| l.id).collect::<Vec<_>>();
    let due = DbLeaseFilter {
        due_at: Some(now()),
        limit: 10,
        ..DbLeaseFilter::default()
    };
    assert_eq!(ids(store.list_db_leases(&due).await.unwrap()), ["dbl_a"]);
    let of_token = DbLeaseFilter {
        credential_id: Some("tok-1"),
        live: true,
        limit: 10,
        ..DbLeaseFilter::default()
    };
    assert_eq!(
        ids(store.list_db_leases(&of_token).await.unwrap()),
        ["dbl_a", "dbl_b"]
    );

    // A renewal rewrites a live lease.
    let mut renewed = running.clone();
    renewed.expires_at = future + time::Duration::minutes(5);
    assert!(store.update_db_lease(&renewed).await.unwrap());
    assert_eq!(
        store.db_lease("dbl_b").await.unwrap(),
        Some(renewed.clone())
    );

    // Two revocations of one lease: one wins, the other changes nothing.
    let mut one = ended.clone();
    one.revoked_at = Some(now());
    let mut other = ended.clone();
    other.revoked_at = Some(now() + time::Duration::seconds(1));
    assert!(store.update_db_lease(&one).await.unwrap());
    assert!(!store.update_db_lease(&other).await.unwrap());
    assert_eq!(store.db_lease("dbl_a").await.unwrap(), Some(one.clone()));
    let mut late_renewal = ended.clone();
    late_renewal.expires_at = future;
    assert!(!store.update_db_lease(&late_renewal).await.unwrap());
    assert!(store.list_db_leases(&due).await.unwrap().is_empty());
    assert_eq!(
        ids(store.list_db_leases(&of_token).await.unwrap()),
        ["dbl_b"]
    );
    let all_of_role = DbLeaseFilter {
        role: Some("reader"),
        limit: 10,
        ..DbLeaseFilter::default()
    };
    assert_eq!(store.list_db_leases(&all_of_role).await.unwrap().len(), 3);
    assert_eq!(store.db_lease("dbl_none").await.unwrap(), None);
}

/// `secret_for_read` returns the record with the sealed data of the version asked for, or of the
/// latest live one: skipping deleted versions, nothing for a destroyed one or a secret with no
/// live version, `None` for a path that does not exist.
async fn a_read_gets_the_record_and_the_wanted_data<H: Harness>() {
    let h = H::create().await;
    let store = h.open().await.unwrap();
    let key = stored_key(store.as_ref(), "reads").await;
    let p = path("app/read");
    assert!(store.secret_for_read(&p, None).await.unwrap().is_none());
    for n in 1..=3 {
        store
            .insert_secret_version(&secret_version(&key, "app/read", n, None, 1))
            .await
            .unwrap();
    }
    let sealed = |n: u32| SealedSecret {
        wrapped_dek: format!("dek app/read {n}").into_bytes(),
        ciphertext: format!("ciphertext app/read {n}").into_bytes(),
    };
    let read = |version: Option<u32>| {
        let store = Arc::clone(&store);
        let p = p.clone();
        async move { store.secret_for_read(&p, version).await.unwrap().unwrap() }
    };
    let (record, data) = read(None).await;
    assert_eq!(record.current_version, 3);
    assert_eq!(record.versions.len(), 3);
    assert_eq!(data, Some((3, sealed(3))));
    assert_eq!(read(Some(1)).await.1, Some((1, sealed(1))));
    assert_eq!(read(Some(9)).await.1, None);

    // The latest deleted: the latest live is 2. Version 2 destroyed too: 1.
    let now = now();
    store
        .update_secret_versions(&p, &[3], VersionOp::Delete, now)
        .await
        .unwrap();
    assert_eq!(read(None).await.1, Some((2, sealed(2))));
    // A deleted version's data is still there for the caller to refuse.
    assert_eq!(read(Some(3)).await.1, Some((3, sealed(3))));
    store
        .update_secret_versions(&p, &[2], VersionOp::Destroy, now)
        .await
        .unwrap();
    assert_eq!(read(None).await.1, Some((1, sealed(1))));
    assert_eq!(read(Some(2)).await.1, None);
    store
        .update_secret_versions(&p, &[1], VersionOp::Delete, now)
        .await
        .unwrap();
    let (record, data) = read(None).await;
    assert_eq!(record.versions.len(), 3);
    assert_eq!(data, None);
}

/// A secret written many times under `max_versions`: the versions beyond it are destroyed,
/// the newest `KEPT_TOMBSTONES` of them stay listed as destroyed and older ones are removed, so
/// the rows of one path stay bounded however long it is written.
async fn pruning_keeps_a_bounded_number_of_tombstones<H: Harness>() {
    let h = H::create().await;
    let store = h.open().await.unwrap();
    let key = stored_key(store.as_ref(), "churn").await;
    let p = path("app/churn");
    let kept = custodian::store::KEPT_TOMBSTONES;
    let writes = kept + 40;
    for n in 1..=writes {
        let mut v = secret_version(&key, "app/churn", n, None, 1);
        v.default_max_versions = 3;
        let pruned = store.insert_secret_version(&v).await.unwrap();
        assert_eq!(pruned, if n > 3 { vec![n - 3] } else { vec![] });
    }
    let (record, data) = store.secret_for_read(&p, None).await.unwrap().unwrap();
    assert_eq!(record.current_version, writes);
    assert_eq!(data.map(|d| d.0), Some(writes));
    let listed: Vec<(u32, SecretVersionState)> = record
        .versions
        .iter()
        .map(|v| (v.version, v.state))
        .collect();
    let first_listed = writes - 3 - kept + 1;
    let expected: Vec<(u32, SecretVersionState)> = (first_listed..=writes)
        .map(|n| {
            let state = if n + 3 > writes {
                SecretVersionState::Live
            } else {
                SecretVersionState::Destroyed
            };
            (n, state)
        })
        .collect();
    assert_eq!(listed, expected);
    // A removed version is no longer there; a listed tombstone has no data either.
    assert_eq!(
        store
            .secret_for_read(&p, Some(first_listed - 1))
            .await
            .unwrap()
            .unwrap()
            .1,
        None
    );
    assert_eq!(
        store
            .secret_for_read(&p, Some(first_listed))
            .await
            .unwrap()
            .unwrap()
            .1,
        None
    );
}

/// The version a writer names must be the current one plus one: a number already taken or one
/// that skips ahead fails `Stale { SecretVersion }` and writes nothing; a data key wrapped under
/// a version that can no longer wrap fails `Stale { KeyVersion }`.
async fn secret_version_numbers_are_checked<H: Harness>() {
    let h = H::create().await;
    let store = h.open().await.unwrap();
    let key = stored_key(&*store, "k").await;

    store
        .insert_secret_version(&secret_version(&key, "s", 1, None, 1))
        .await
        .unwrap();
    assert_stale(
        store
            .insert_secret_version(&secret_version(&key, "s", 1, None, 1))
            .await,
        StaleKind::SecretVersion,
    );
    assert_stale(
        store
            .insert_secret_version(&secret_version(&key, "s", 3, None, 1))
            .await,
        StaleKind::SecretVersion,
    );
    assert_stale(
        store
            .insert_secret_version(&secret_version(&key, "s", 2, None, 9))
            .await,
        StaleKind::KeyVersion,
    );
    let record = store.secret(&path("s")).await.unwrap().unwrap();
    assert_eq!(record.current_version, 1);
    assert_eq!(record.versions.len(), 1);

    store
        .insert_secret_version(&secret_version(&key, "s", 2, None, 1))
        .await
        .unwrap();
    assert_eq!(
        store
            .secret(&path("s"))
            .await
            .unwrap()
            .unwrap()
            .current_version,
        2
    );
}

/// A secret's first version (the write PostgreSQL does in one statement) is stored only under
/// an enabled key's primary or active version; refused, it leaves no record behind, so the
/// path is still absent. A record made by a metadata write first keeps its settings.
async fn first_version_needs_a_usable_key<H: Harness>() {
    let h = H::create().await;
    let store = h.open().await.unwrap();
    let key = stored_key(&*store, "k").await;
    let first = |secret: &str, key_version: u32| {
        let mut v = secret_version(&key, secret, 1, Some(0), key_version);
        v.default_max_versions = 7;
        v
    };

    assert_stale(
        store
            .insert_secret_version(&first("no-such-version", 9))
            .await,
        StaleKind::KeyVersion,
    );
    assert_eq!(store.secret(&path("no-such-version")).await.unwrap(), None);

    let state = |state| custodian::store::KeyUpdate {
        state: Some(state),
        ..Default::default()
    };
    store
        .update_key(key.id, &state(KeyState::Disabled), now())
        .await
        .unwrap();
    assert_stale(
        store.insert_secret_version(&first("disabled-key", 1)).await,
        StaleKind::KeyVersion,
    );
    assert_eq!(store.secret(&path("disabled-key")).await.unwrap(), None);
    store
        .update_key(key.id, &state(KeyState::Enabled), now())
        .await
        .unwrap();

    // Version 1 is active after a rotation: still usable; disabled: not.
    rotate(&*store, &key, 1).await;
    assert!(store
        .insert_secret_version(&first("under-active", 1))
        .await
        .unwrap()
        .is_empty());
    store
        .set_version_state(
            key.id,
            version(1),
            &[VersionState::Active],
            VersionState::Disabled,
            now(),
        )
        .await
        .unwrap();
    assert_stale(
        store
            .insert_secret_version(&first("under-disabled", 1))
            .await,
        StaleKind::KeyVersion,
    );
    assert_eq!(store.secret(&path("under-disabled")).await.unwrap(), None);

    let written = store.secret(&path("under-active")).await.unwrap().unwrap();
    assert_eq!(
        (
            written.current_version,
            written.max_versions,
            written.key_id
        ),
        (1, 7, key.id)
    );
    assert_eq!(written.versions.len(), 1);
    assert_eq!(written.versions[0].state, SecretVersionState::Live);
    assert_eq!(
        written.versions[0].key_version.map(KeyVersion::get),
        Some(1)
    );
    let data = store
        .secret_version_data(&path("under-active"), 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(data.ciphertext, b"ciphertext under-active 1");

    // A record that exists without versions: its first version keeps the record's settings.
    let update = custodian::store::MetadataUpdate {
        max_versions: Some(3),
        ..Default::default()
    };
    store
        .put_secret_metadata(&path("described"), key.id, 7, &update, now())
        .await
        .unwrap();
    store
        .insert_secret_version(&first("described", 2))
        .await
        .unwrap();
    let described = store.secret(&path("described")).await.unwrap().unwrap();
    assert_eq!((described.current_version, described.max_versions), (1, 3));
}

/// Many writers allocate versions of one path at once. In each round every writer reads the
/// current version, waits for the others, then writes current + 1: exactly one wins, every
/// other loses with the typed error (`Stale { SecretVersion }`, or `CheckAndSet { current }`
/// for writers that asked for check-and-set). After all rounds the versions are 1..=rounds,
/// each written once, without gaps.
async fn concurrent_version_allocation<H: Harness>() {
    const WRITERS: usize = 8;
    const ROUNDS: u32 = 6;
    let h = H::create().await;
    let store = h.open().await.unwrap();
    let key = stored_key(&*store, "k").await;
    let barrier = Arc::new(Barrier::new(WRITERS));

    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let (store, key, barrier) = (Arc::clone(&store), key.clone(), Arc::clone(&barrier));
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for round in 1..=ROUNDS {
                let current = store
                    .secret(&path("shared"))
                    .await
                    .unwrap()
                    .map_or(0, |s| s.current_version);
                assert_eq!(current, round - 1, "writer {writer} saw a gap or a double");
                let cas = (writer % 2 == 0).then_some(current);
                let mut v = secret_version(&key, "shared", current + 1, cas, 1);
                v.ciphertext = format!("writer {writer} round {round}").into_bytes();
                barrier.wait().await;
                let result = store.insert_secret_version(&v).await;
                outcomes.push((round, cas.is_some(), result));
                // Everyone has written (or lost) before anyone reads for the next round.
                barrier.wait().await;
            }
            outcomes
        }));
    }
    let mut winners = vec![Vec::new(); ROUNDS as usize];
    for (writer, task) in tasks.into_iter().enumerate() {
        for (round, with_cas, result) in task.await.unwrap() {
            match result {
                Ok(_) => winners[(round - 1) as usize].push(writer),
                Err(StoreError::Stale {
                    what: StaleKind::SecretVersion,
                }) if !with_cas => {}
                Err(StoreError::CheckAndSet { current }) if with_cas => {
                    assert_eq!(current, round, "the loser is told the version that won");
                }
                other => panic!("writer {writer} round {round}: {other:?}"),
            }
        }
    }
    for (round, w) in winners.iter().enumerate() {
        assert_eq!(w.len(), 1, "round {}: winners {w:?}", round + 1);
    }
    let record = store.secret(&path("shared")).await.unwrap().unwrap();
    assert_eq!(record.current_version, ROUNDS);
    let numbers: Vec<u32> = record.versions.iter().map(|v| v.version).collect();
    assert_eq!(numbers, (1..=ROUNDS).collect::<Vec<_>>());
    for (round, w) in winners.iter().enumerate() {
        let number = u32::try_from(round + 1).unwrap();
        let data = store
            .secret_version_data(&path("shared"), number)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            data.ciphertext,
            format!("writer {} round {number}", w[0]).into_bytes()
        );
    }
}

/// Many versions written at once (what a store may commit together): each good one is written
/// and reads back as written; each bad one (a check-and-set that does not hold, a version
/// number already taken) gets its own error and leaves nothing, and takes none of the others
/// down with it.
async fn versions_written_at_once_are_answered_each_on_its_own<H: Harness>() {
    const WRITERS: u32 = 48;
    let h = H::create().await;
    let store = h.open().await.unwrap();
    let key = stored_key(&*store, "k").await;
    store
        .insert_secret_version(&secret_version(&key, "taken", 1, None, 1))
        .await
        .unwrap();
    let barrier = Arc::new(Barrier::new(WRITERS as usize));
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let (store, key, barrier) = (Arc::clone(&store), key.clone(), Arc::clone(&barrier));
        tasks.push(tokio::spawn(async move {
            let v = match writer % 4 {
                // A check-and-set on a path that does not exist yet names version 0.
                1 => secret_version(&key, &format!("bad-cas/{writer}"), 1, Some(5), 1),
                // Version 1 of `taken` exists: a second version 1 is stale.
                2 => secret_version(&key, "taken", 1, None, 1),
                _ => secret_version(&key, &format!("good/{writer}"), 1, Some(0), 1),
            };
            barrier.wait().await;
            (writer, store.insert_secret_version(&v).await)
        }));
    }
    for task in tasks {
        let (writer, result) = task.await.unwrap();
        match (writer % 4, result) {
            (1, Err(StoreError::CheckAndSet { current: 0 })) => {
                let written = store
                    .secret(&path(&format!("bad-cas/{writer}")))
                    .await
                    .unwrap();
                assert!(written.is_none(), "writer {writer}: {written:?}");
            }
            (
                2,
                Err(StoreError::Stale {
                    what: StaleKind::SecretVersion,
                }),
            ) => {}
            (0 | 3, Ok(pruned)) => {
                assert!(pruned.is_empty());
                let secret = path(&format!("good/{writer}"));
                let record = store.secret(&secret).await.unwrap().unwrap();
                assert_eq!(record.current_version, 1);
                let data = store
                    .secret_version_data(&secret, 1)
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(
                    data.ciphertext,
                    format!("ciphertext good/{writer} 1").into_bytes()
                );
            }
            (_, other) => panic!("writer {writer}: {other:?}"),
        }
    }
    let taken = store.secret(&path("taken")).await.unwrap().unwrap();
    assert_eq!(taken.current_version, 1);
    assert_eq!(taken.versions.len(), 1);
}

/// Versions the audit writer writes with its records (`AuditAppender::append_with`, where the
/// store offers it): each is decided on its own as `insert_secret_version` decides it, the
/// records are committed with the versions that passed, and a batch whose records are refused
/// writes no version at all (the announcement and its version are durable together or not at
/// all). A store that does not offer it writes the records and answers every version
/// `Unavailable`, writing none.
async fn versions_written_with_their_records_share_one_commit<H: Harness>() {
    let h = H::create().await;
    let store = h.open().await.unwrap();
    let key = stored_key(&*store, "k").await;
    store
        .insert_secret_version(&secret_version(&key, "taken", 1, None, 1))
        .await
        .unwrap();
    let appender = store.audit_appender().await.unwrap();
    let writes = appender.writes_versions();
    let records = chain(1, 3, [0; 32]);
    let version = |secret: &str, cas| VersionWrite {
        version: secret_version(&key, secret, 1, cas, 1),
        result: None,
    };
    let versions = vec![
        version("good/1", Some(0)),
        version("bad-cas", Some(5)),
        version("taken", None),
    ];
    let (mut appender, versions, _) =
        append_riding(appender, records.clone(), versions, Vec::new()).await;
    assert_eq!(store.audit_range(0, 10, 100).await.unwrap(), records);
    let answers: Vec<_> = versions.into_iter().map(|v| v.result.unwrap()).collect();
    if !writes {
        assert_all_unavailable(&answers);
        assert!(store.secret(&path("good/1")).await.unwrap().is_none());
        return;
    }
    let mut answers = answers.into_iter();
    assert_eq!(answers.next().unwrap().unwrap(), Vec::<u32>::new());
    assert!(matches!(
        answers.next().unwrap(),
        Err(StoreError::CheckAndSet { current: 0 })
    ));
    assert_stale(answers.next().unwrap(), StaleKind::SecretVersion);
    let data = store
        .secret_version_data(&path("good/1"), 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(data.ciphertext, b"ciphertext good/1 1".to_vec());
    assert!(store.secret(&path("bad-cas")).await.unwrap().is_none());
    assert_eq!(
        store
            .secret(&path("taken"))
            .await
            .unwrap()
            .unwrap()
            .versions
            .len(),
        1
    );

    // Records 3 (a repeat) and 4 are refused: the version that passed its checks in the same
    // transaction is not written either.
    let mut overlap = chain(4, 1, records[2].hash_bytes().unwrap());
    overlap.insert(0, records[2].clone());
    let mut versions = vec![version("good/2", None)];
    let result =
        tokio::task::spawn_blocking(move || appender.append_with(&overlap, &mut versions, &mut []))
            .await
            .unwrap();
    assert_conflict(result, "audit_records.sequence");
    assert!(store.secret(&path("good/2")).await.unwrap().is_none());
    assert_eq!(store.audit_range(0, 10, 100).await.unwrap().len(), 3);
}

/// Re-wrap batches the audit writer applies with its records (`AuditAppender::append_with`,
/// where the store offers it): each is applied on its own as `apply_rewrap` applies it (a batch
/// whose target is no longer the primary answers `Stale` and moves nothing), the records are
/// committed with the batches that passed, and a batch whose records are refused moves no row
/// (the announcement and its batch are durable together or not at all). A store that does not
/// offer it writes the records and answers every batch `Unavailable`, moving nothing.
async fn rewrap_batches_written_with_their_records_share_one_commit<H: Harness>() {
    let h = H::create().await;
    let store = h.open().await.unwrap();
    let (key, job, items) = rewrap_started(&*store, &["a", "b"]).await;
    let events_before = store.job_events(&job.id).await.unwrap().len();
    let batch = |item: &custodian::store::RewrapItem, target: u32| RewrapWrite {
        batch: RewrapBatch {
            job_id: job.id.clone(),
            key_id: key.id,
            target: version(target),
            items: vec![(item.clone(), format!("moved {}", item.path).into_bytes())],
            failed: 0,
            last_error: None,
            now: now(),
        },
        result: None,
    };
    let appender = store.audit_appender().await.unwrap();
    let writes = appender.writes_versions();
    let records = chain(1, 2, [0; 32]);
    // The first item to the primary; the second to a version that is not the primary.
    let rewraps = vec![batch(&items[0], 2), batch(&items[1], 1)];
    let (mut appender, _, rewraps) =
        append_riding(appender, records.clone(), Vec::new(), rewraps).await;
    assert_eq!(store.audit_range(0, 10, 100).await.unwrap(), records);
    let answers: Vec<_> = rewraps.into_iter().map(|r| r.result.unwrap()).collect();
    if !writes {
        assert_all_unavailable(&answers);
        assert_eq!(
            store.references(key.id).await.unwrap(),
            vec![(version(1), 2), (version(2), 0)]
        );
        assert_eq!(store.job(&job.id).await.unwrap().unwrap().done, 0);
        return;
    }
    let mut answers = answers.into_iter();
    assert_eq!(answers.next().unwrap().unwrap(), 1);
    assert_stale(answers.next().unwrap(), StaleKind::KeyVersion);
    assert_eq!(
        store.references(key.id).await.unwrap(),
        vec![(version(1), 1), (version(2), 1)]
    );
    let moved = store.secret_version_data(&items[0].path, 1).await.unwrap();
    assert_eq!(
        moved.unwrap().wrapped_dek,
        format!("moved {}", items[0].path).into_bytes()
    );
    assert_eq!(store.job(&job.id).await.unwrap().unwrap().done, 1);
    assert_eq!(
        store.job_events(&job.id).await.unwrap().len(),
        events_before + 1
    );

    // Records 2 (a repeat) and 3 are refused: the batch that passed its checks in the same
    // transaction moves nothing either.
    let mut overlap = chain(3, 1, records[1].hash_bytes().unwrap());
    overlap.insert(0, records[1].clone());
    let mut rewraps = vec![batch(&items[1], 2)];
    let result =
        tokio::task::spawn_blocking(move || appender.append_with(&overlap, &mut [], &mut rewraps))
            .await
            .unwrap();
    assert_conflict(result, "audit_records.sequence");
    assert_eq!(
        store.references(key.id).await.unwrap(),
        vec![(version(1), 1), (version(2), 1)]
    );
    assert_eq!(store.job(&job.id).await.unwrap().unwrap().done, 1);
    assert_eq!(store.audit_range(0, 10, 100).await.unwrap().len(), 2);
}

/// A re-wrap batch moves its rows, advances the job's `done` and adds a `batch` event in one
/// transaction; a row that changed since it was read is left alone and not counted. A batch
/// whose target is no longer the primary fails `Stale { KeyVersion }` and changes neither rows,
/// nor progress, nor the trail.
async fn rewrap_batch_commits_rows_and_progress_together<H: Harness>() {
    let h = H::create().await;
    let store = h.open().await.unwrap();
    let (key, job, items) = rewrap_started(&*store, &["a", "b", "c"]).await;
    let events_before = store.job_events(&job.id).await.unwrap().len();

    // The negative twin first: a target that is not the primary version.
    let stale = RewrapBatch {
        job_id: job.id.clone(),
        key_id: key.id,
        target: version(1),
        items: items
            .iter()
            .map(|i| (i.clone(), b"moved to 1".to_vec()))
            .collect(),
        failed: 0,
        last_error: None,
        now: now(),
    };
    assert_stale(store.apply_rewrap(&stale).await, StaleKind::KeyVersion);
    assert_eq!(store.job(&job.id).await.unwrap().unwrap().done, 0);
    assert_eq!(
        store.job_events(&job.id).await.unwrap().len(),
        events_before
    );
    assert_eq!(
        store.references(key.id).await.unwrap(),
        vec![(version(1), 3), (version(2), 0)]
    );

    // Two current items and one whose wrapped key changed after it was read.
    let mut changed = items[2].clone();
    changed.wrapped_dek = b"not what is stored".to_vec();
    let batch = RewrapBatch {
        job_id: job.id.clone(),
        key_id: key.id,
        target: version(2),
        items: vec![
            (items[0].clone(), b"moved a".to_vec()),
            (items[1].clone(), b"moved b".to_vec()),
            (changed, b"moved c".to_vec()),
        ],
        failed: 1,
        last_error: Some("one item failed".to_owned()),
        now: now(),
    };
    assert_eq!(store.apply_rewrap(&batch).await.unwrap(), 2);
    let job_now = store.job(&job.id).await.unwrap().unwrap();
    assert_eq!((job_now.done, job_now.failed_items), (2, 1));
    let events = store.job_events(&job.id).await.unwrap();
    assert_eq!(events.len(), events_before + 1);
    let last = events.last().unwrap();
    assert_eq!(
        (last.kind.as_str(), last.moved, last.failed),
        ("batch", 2, 1)
    );
    assert_eq!(
        store.references(key.id).await.unwrap(),
        vec![(version(1), 1), (version(2), 2)]
    );
    let a = store.secret_version_data(&items[0].path, 1).await.unwrap();
    assert_eq!(a.unwrap().wrapped_dek, b"moved a");
    let c = store.secret_version_data(&items[2].path, 1).await.unwrap();
    assert_eq!(c.unwrap().wrapped_dek, items[2].wrapped_dek);
}

/// A version that wraps stored data keys cannot be destroyed: `InUse { count }`, and it stays
/// as it was with no device destruction pending. Once its data keys are re-wrapped it can.
/// The primary version cannot be destroyed on its own (`Stale { PrimaryVersion }`).
/// The parts of a split are disjoint, together hold every candidate, each in (path, version)
/// order and paged by its cursor; an item stays in its part.
async fn rewrap_parts_split_the_candidates<H: Harness>() {
    let h = H::create().await;
    let store = h.open().await.unwrap();
    let key = stored_key(&*store, "k").await;
    for i in 0..60 {
        for v in 1..=2 {
            store
                .insert_secret_version(&secret_version(&key, &format!("s/{i}"), v, None, 1))
                .await
                .unwrap();
        }
    }
    rotate(&*store, &key, 1).await;
    let all = store
        .rewrap_candidates(key.id, version(2), RewrapShard::ALL, None, 1000)
        .await
        .unwrap();
    assert_eq!(all.len(), 120);
    let of = 8;
    let mut union = Vec::new();
    for index in 0..of {
        let part = RewrapShard { index, of };
        let whole = store
            .rewrap_candidates(key.id, version(2), part, None, 1000)
            .await
            .unwrap();
        // Paged by the cursor, three at a time: the same items.
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .rewrap_candidates(key.id, version(2), part, after.as_ref(), 3)
                .await
                .unwrap();
            let Some(last) = page.last() else { break };
            after = Some((last.path.clone(), last.version));
            paged.extend(page);
        }
        assert_eq!(paged, whole, "part {index}");
        // Both versions of a secret fall in the same part.
        for item in &whole {
            assert!(whole
                .iter()
                .any(|o| o.path == item.path && o.version != item.version));
        }
        union.extend(whole);
    }
    union.sort_by(|a, b| (a.path.as_str(), a.version).cmp(&(b.path.as_str(), b.version)));
    assert_eq!(
        union, all,
        "the parts are disjoint and hold every candidate"
    );
    // Out of range: nothing.
    assert!(store
        .rewrap_candidates(
            key.id,
            version(2),
            RewrapShard { index: of, of },
            None,
            1000
        )
        .await
        .unwrap()
        .is_empty());
}

async fn destroy_refused_while_references_exist<H: Harness>() {
    let h = H::create().await;
    let store = h.open().await.unwrap();
    let key = stored_key(&*store, "k").await;
    for secret in ["x", "y"] {
        store
            .insert_secret_version(&secret_version(&key, secret, 1, None, 1))
            .await
            .unwrap();
    }
    rotate(&*store, &key, 1).await;

    let refused = store
        .destroy_versions(key.id, &[version(1)], false, now())
        .await;
    assert!(
        matches!(refused, Err(StoreError::InUse { count: 2 })),
        "{refused:?}"
    );
    let kept = store.key(&KeyRef::Id(key.id)).await.unwrap().unwrap();
    assert_eq!(
        kept.version(version(1)).unwrap().state,
        VersionState::Active
    );
    assert!(store
        .pending_device_destroys(now() + time::Duration::hours(1))
        .await
        .unwrap()
        .is_empty());
    assert_stale(
        store
            .destroy_versions(key.id, &[version(2)], false, now())
            .await,
        StaleKind::PrimaryVersion,
    );

    let (job, items) = rewrap_started_on(&*store, &key).await;
    let batch = RewrapBatch {
        job_id: job.id.clone(),
        key_id: key.id,
        target: version(2),
        items: items.into_iter().map(|i| (i, b"moved".to_vec())).collect(),
        failed: 0,
        last_error: None,
        now: now(),
    };
    assert_eq!(store.apply_rewrap(&batch).await.unwrap(), 2);

    let destroyed = store
        .destroy_versions(key.id, &[version(1)], false, now())
        .await
        .unwrap();
    assert_eq!(
        destroyed.version(version(1)).unwrap().state,
        VersionState::Destroyed
    );
    let marked = now();
    let pending = store
        .pending_device_destroys(marked + time::Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(pending, vec![RootKeyRef::bare(key.id, version(1))]);
    // Marked after the cut-off: still the marking request's to carry out.
    let early = store
        .pending_device_destroys(marked - time::Duration::seconds(60))
        .await
        .unwrap();
    assert!(early.is_empty(), "{early:?}");
}

/// Appended records come back from `range` in order and bounded by `after`, `until` and
/// `limit`, and the tail names the last one. A batch that reuses a stored sequence is refused
/// (`Conflict { audit_records.sequence }`) as a whole: none of it is stored.
/// The chain's re-check reads each record's stored hashes and the hash its stored fields give
/// (`range_hashes`, hashed from the row's columns where the store can): the same as the records
/// read whole give, for records with every optional field, escapes, empty values and none.
async fn audit_rechecks_hashes_match_the_records<H: Harness>() {
    use custodian::audit::record::StoredHashes;
    let h = H::create().await;
    let store = h.open().await.unwrap();
    let full = AuditEntry {
        credential: Some("token:1".to_owned()),
        source: Some("10.0.0.1".to_owned()),
        resource: Some("key/k \"é\"".to_owned()),
        key_id: Some("0194".to_owned()),
        key_version: Some(4_000_000_000),
        other_keys: vec!["a".to_owned(), "b\\c".to_owned(), String::new()],
        error_code: Some("x".to_owned()),
        context_digest: Some("ab".repeat(32)),
        context_keys: vec!["app".to_owned(), "line\nbreak".to_owned()],
        details: BTreeMap::from([
            ("z".to_owned(), "1".to_owned()),
            ("a".to_owned(), "quote \" here".to_owned()),
            ("m".to_owned(), String::new()),
        ]),
        ..entry("full")
    };
    let bare = AuditEntry {
        principal: None,
        action: None,
        outcome: Outcome::Unauthenticated,
        status: 401,
        details: BTreeMap::new(),
        ..entry("bare")
    };
    let mut prev = [0; 32];
    let records: Vec<AuditRecord> = [bare, full, entry("plain")]
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let r = AuditRecord::chain(i as u64 + 1, e, &prev);
            prev = r.hash_bytes().unwrap();
            r
        })
        .collect();
    let appender = store.audit_appender().await.unwrap();
    let (whole, hashed) = tokio::task::spawn_blocking(move || {
        let mut appender = appender;
        appender.append(&records).unwrap();
        let whole: Vec<StoredHashes> = appender
            .range(0, 10, 10)
            .unwrap()
            .iter()
            .map(StoredHashes::of)
            .collect();
        (whole, appender.range_hashes(0, 10, 10).unwrap())
    })
    .await
    .unwrap();
    assert_eq!(whole.len(), 3);
    assert!(whole
        .iter()
        .all(|r| r.hash.is_some() && r.recomputed == r.hash));
    assert_eq!(hashed, whole);
}

async fn audit_append_range_tail<H: Harness>() {
    let h = H::create().await;
    let store = h.open().await.unwrap();
    assert!(store.audit_tail().await.unwrap().last.is_none());

    let records = chain(1, 5, [0; 32]);
    let mut appender = store.audit_appender().await.unwrap();
    let batch = records.clone();
    let mut appender = tokio::task::spawn_blocking(move || {
        appender.append(&batch).unwrap();
        appender
    })
    .await
    .unwrap();

    assert_eq!(store.audit_range(0, 5, 100).await.unwrap(), records);
    assert_eq!(store.audit_range(1, 3, 100).await.unwrap(), records[1..3]);
    assert_eq!(store.audit_range(0, 5, 2).await.unwrap(), records[..2]);
    assert!(store.audit_range(5, 10, 100).await.unwrap().is_empty());
    let tail = store.audit_tail().await.unwrap();
    assert_eq!(tail.last, Some((5, records[4].hash.clone())));

    // Records 5 (a repeat) and 6: refused together.
    let mut overlap = chain(6, 1, records[4].hash_bytes().unwrap());
    overlap.insert(0, records[4].clone());
    let result = tokio::task::spawn_blocking(move || appender.append(&overlap))
        .await
        .unwrap();
    assert_conflict(result, "audit_records.sequence");
    assert_eq!(
        store.audit_tail().await.unwrap().last,
        Some((5, records[4].hash.clone()))
    );
    assert_eq!(store.audit_range(0, 10, 100).await.unwrap().len(), 5);
}

/// Archiving removes the records through `through` only when `head` is the stored hash of
/// record `through`; a wrong head is `Stale { AuditHead }` and removes nothing.
async fn audit_archive_checks_the_head<H: Harness>() {
    let h = H::create().await;
    let store = h.open().await.unwrap();
    let records = chain(1, 4, [0; 32]);
    let mut appender = store.audit_appender().await.unwrap();
    let batch = records.clone();
    tokio::task::spawn_blocking(move || appender.append(&batch).unwrap())
        .await
        .unwrap();
    let archive = |head: &str| AuditArchive {
        through: 2,
        head: head.to_owned(),
        export_sha256: "00".repeat(32),
        archived_at: "2025-01-01T12:00:00.000000Z".to_owned(),
        principal: "admin".to_owned(),
        request_id: "req-archive".to_owned(),
    };

    assert_stale(
        store.archive_audit(&archive(&records[0].hash)).await,
        StaleKind::AuditHead,
    );
    assert_eq!(store.audit_range(0, 4, 100).await.unwrap(), records);

    store
        .archive_audit(&archive(&records[1].hash))
        .await
        .unwrap();
    assert_eq!(store.audit_range(0, 4, 100).await.unwrap(), records[2..]);
    let tail = store.audit_tail().await.unwrap();
    assert_eq!(tail.archive.map(|a| a.through), Some(2));
    assert_eq!(tail.last, Some((4, records[3].hash.clone())));
}

/// An empty database is migrated to the newest schema and takes writes; opening it again
/// applies nothing and keeps what was written.
async fn migrates_an_empty_database<H: Harness>() {
    let h = H::create().await;
    let store = h.open().await.unwrap();
    assert_eq!(h.schema_version().await, H::latest_schema());
    store.check_writable().await.unwrap();
    let key = stored_key(&*store, "k").await;
    drop(store);

    let again = h.open().await.unwrap();
    assert_eq!(h.schema_version().await, H::latest_schema());
    assert!(again.key(&KeyRef::Id(key.id)).await.unwrap().is_some());
}

/// A database an older binary left at the previous schema, with data in it, reaches the newest
/// schema when opened: the data survive and what the last migration added works (duty leases)
/// beside what earlier ones did (access keys, audit records with details). Before the upgrade,
/// that same write is refused.
async fn migrates_from_the_previous_schema<H: Harness>() {
    let h = H::create().await;
    let previous = H::latest_schema() - 1;
    let old = h.open_at_schema(previous).await.unwrap();
    assert_eq!(h.schema_version().await, previous);
    let key = stored_key(&*old, "written-before").await;
    let ak = access_key("CKIAAAAAAAAAAAAAAAA1", "app", &key);
    old.insert_access_key(&ak).await.unwrap();
    let ttl = std::time::Duration::from_secs(30);
    old.insert_db_connection(&db_connection("before-upgrade", &key))
        .await
        .unwrap();
    for secret in ["b", "a", "c"] {
        old.insert_secret_version(&secret_version(&key, secret, 1, None, 1))
            .await
            .unwrap();
    }
    drop(old);

    let store = h.open().await.unwrap();
    assert_eq!(h.schema_version().await, H::latest_schema());
    let kept = store.key(&KeyRef::Id(key.id)).await.unwrap().unwrap();
    assert_eq!(kept.name, name("written-before"));
    assert_eq!(store.access_key(&ak.id).await.unwrap().unwrap(), ak);
    assert_eq!(
        store.list_db_connections().await.unwrap().len(),
        1,
        "the connection written at schema {previous}"
    );
    // Schema 10 indexes the re-wrap walk: rows written before it are walked in order.
    rotate(&*store, &key, 1).await;
    let walked: Vec<String> = store
        .rewrap_candidates(key.id, version(2), RewrapShard::ALL, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.path.to_string())
        .collect();
    assert_eq!(
        walked,
        [path("a"), path("b"), path("c")].map(|p| p.to_string())
    );
    assert!(store
        .acquire_lease("lifecycle", "node-a", ttl)
        .await
        .unwrap());
    store
        .insert_db_connection(&db_connection("after-upgrade", &key))
        .await
        .unwrap();
    let records = chain(1, 2, [0; 32]);
    let mut appender = store.audit_appender().await.unwrap();
    let batch = records.clone();
    tokio::task::spawn_blocking(move || appender.append(&batch).unwrap())
        .await
        .unwrap();
    let back = store.audit_range(0, 2, 10).await.unwrap();
    assert_eq!(back, records);
    assert_eq!(back[0].entry.details["count"], "1");
}

/// A database a newer binary migrated past the newest schema this one knows is refused, naming
/// both versions, and left as it was; the newest known version itself opens.
async fn refuses_a_newer_schema<H: Harness>() {
    let h = H::create().await;
    drop(h.open().await.unwrap());
    let newer = H::latest_schema() + 1;
    h.record_schema(newer).await;

    match h.open().await {
        Err(e @ StoreError::SchemaTooNew { found, supported }) => {
            assert_eq!((found, supported), (newer, H::latest_schema()));
            let message = e.to_string();
            assert!(message.contains(&newer.to_string()), "{message}");
            assert!(
                message.contains(&H::latest_schema().to_string()),
                "{message}"
            );
        }
        Err(other) => panic!("expected SchemaTooNew, got {other:?}"),
        Ok(_) => panic!("a database from a newer binary was opened"),
    }
    assert_eq!(h.schema_version().await, newer);

    let current = H::create().await;
    drop(current.open().await.unwrap());
    assert!(current.open().await.is_ok());
}
