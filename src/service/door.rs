//! The service's callable surfaces: what a front door may reach, and what background workers
//! may reach.
//!
//! A front door (the native API today; Vault- and AWS-compatible doors later) holds only a
//! [`FrontDoor`]. For each request it opens a [`RequestScope`], turns what the client sent into
//! a [`Credential`], and asks [`FrontDoor::authenticate`] for an [`Authorized`] handle: the only
//! way to reach an operation, each of which authorises every resource it touches before it
//! touches anything. The scope builds the request's audit record from what the service noted
//! (principal, decisions, keys used, contexts) and the typed outcome, and appends it, durable
//! before the door answers. The door maps typed results to its wire format and nothing more:
//! it never sees the device or the store.
//!
//! Background workers hold an [`Internal`] handle, made once by the application; a front door
//! cannot make one (it has no [`KeyService`]).

use std::net::IpAddr;
use std::sync::Arc;

use time::OffsetDateTime;

use super::{
    AuthFailure, DataKey, DataKeyLen, KeyPage, KeyPlacement, KeyService, Opened, PlaintextCopy,
    Readiness, Sealing, ServiceError,
};
use crate::audit::note::{self, Note};
use crate::audit::record::format_time;
use crate::audit::{AuditArchive, AuditEntry, AuditError, AuditFilter, AuditRecord, Outcome};
use crate::domain::job::{JobEvent, JobState};
use crate::domain::secret::{HumanDuration, SecretPath, SecretRecord};
use crate::domain::{
    AccessKeyInfo, Alias, Key, KeyName, KeyRef, PolicyRecord, PrincipalRecord, TokenInfo,
};
use crate::format::EncryptionContext;
use crate::policy::{self, Action, Principal};
use crate::secret::{BearerToken, SecretBytes};
use crate::store::{NewSecretVersion, StoreError};

use super::access_keys::MintedAccessKey;
use super::audit::ExportPlan;
use super::identity::{MintedToken, PrincipalRequest};
use super::lifecycle::{KeyPatch, Reencrypted, VersionAction, VersionUsage};
use super::rewrap::JobStatus;
use super::secrets::{MetadataRequest, SecretPage, SecretValue, Versions, Written};
use super::sigv4::SignedRequest;
use crate::api_types::database::{
    CreateDbConnectionRequest, DbConnection, DbCreds, DbLease, DbRole, PutDbRoleRequest,
    RotatedRole, StaticCreds,
};
use crate::audit::custody::SignedReport;

/// What a client presented to prove who it is, as its front door read it.
#[derive(Debug)]
pub enum Credential {
    /// Nothing.
    None,
    /// A header that should carry a bearer token but does not hold one.
    Malformed,
    /// A bearer token (`Authorization: Bearer …`).
    Bearer(BearerToken),
    /// A client certificate the TLS layer verified, naming exactly one principal.
    Certificate {
        /// The principal it names.
        principal: String,
        /// The first 16 hex digits of its SHA-256 (public; for logs and audit).
        fingerprint: String,
    },
    /// A client certificate the TLS layer verified but that names no principal unambiguously.
    RefusedCertificate(String),
    /// An AWS SigV4 signature (the AWS KMS door): verified by the service, which alone can
    /// open the access key's secret.
    AccessKey(Box<SignedRequest>),
    /// A SigV4 `Authorization` header that cannot be checked.
    MalformedSignature,
}

/// What a front door knows of a request before the service sees it (the facts its audit record
/// starts from).
pub use crate::audit::note::RequestFacts as RequestMeta;

/// How a request ended, as its front door answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    /// The typed outcome (from the service error, or the door's own rejection).
    pub outcome: Outcome,
    /// The wire status sent.
    pub status: u16,
    /// The stable error code, on failure.
    pub error_code: Option<String>,
}

/// The surface a front door holds.
#[derive(Clone)]
pub struct FrontDoor {
    service: Arc<KeyService>,
}

impl FrontDoor {
    /// The front door of `service`.
    pub fn new(service: Arc<KeyService>) -> Self {
        Self { service }
    }

    /// Opens the audit scope of one request.
    pub fn request(&self, meta: RequestMeta) -> RequestScope {
        RequestScope {
            service: Arc::clone(&self.service),
            note: Note::new(meta),
        }
    }

    /// Authenticates `credential`: the handle through which every operation of the request is
    /// reached. The principal is noted for the request's audit record.
    ///
    /// # Errors
    /// `Unauthenticated`, `CertificateRefused`; `Store` when the token cannot be looked up.
    pub async fn authenticate(
        &self,
        credential: &Credential,
        source: Option<IpAddr>,
    ) -> Result<Authorized, ServiceError> {
        let mut principal = match credential {
            Credential::None => return Err(ServiceError::Unauthenticated(AuthFailure::Missing)),
            Credential::Malformed => {
                return Err(ServiceError::Unauthenticated(AuthFailure::Invalid))
            }
            Credential::RefusedCertificate(reason) => {
                return Err(ServiceError::CertificateRefused(reason.clone()))
            }
            Credential::MalformedSignature => {
                return Err(ServiceError::Unauthenticated(
                    AuthFailure::MalformedSignature,
                ))
            }
            Credential::Bearer(token) => self.service.authenticate(token.expose_secret()).await?,
            Credential::AccessKey(request) => self.service.authenticate_access_key(request).await?,
            Credential::Certificate {
                principal,
                fingerprint,
            } => Principal {
                name: principal.clone(),
                credential_id: format!("cert:{fingerprint}"),
                source: None,
            },
        };
        principal.source = source;
        note::principal(&principal.name, &principal.credential_id);
        Ok(Authorized(Arc::new(Handle {
            service: Arc::clone(&self.service),
            principal,
        })))
    }

    /// Device and database readiness (public; coalesced, see [`KeyService::readiness`]).
    pub async fn readiness(&self) -> Readiness {
        self.service.readiness().await
    }

    /// Appends one record standing for `count` requests from `source` that the door refused
    /// without recording each (its unauthenticated-request throttle): route `(throttled)`,
    /// outcome `unauthenticated`, status 429, `error_code`, and the details `count`,
    /// `first_seen`, `last_seen` and `window_seconds`.
    ///
    /// # Errors
    /// The audit log refusing the record.
    pub async fn record_throttled(
        &self,
        throttled: &Throttled,
        error_code: &str,
    ) -> Result<u64, AuditError> {
        let details = std::collections::BTreeMap::from([
            ("count".to_owned(), throttled.count.to_string()),
            ("first_seen".to_owned(), format_time(throttled.first_seen)),
            ("last_seen".to_owned(), format_time(throttled.last_seen)),
            (
                "window_seconds".to_owned(),
                throttled.window_seconds.to_string(),
            ),
        ]);
        let log = self.service.audit();
        let entry = AuditEntry {
            time: format_time(crate::clock::now()),
            node: log.node().to_owned(),
            request_id: uuid::Uuid::new_v4().to_string(),
            method: "*".to_owned(),
            route: "(throttled)".to_owned(),
            principal: None,
            credential: None,
            source: throttled.source.clone(),
            action: None,
            resource: None,
            key_id: None,
            key_version: None,
            other_keys: Vec::new(),
            outcome: Outcome::Unauthenticated,
            status: 429,
            error_code: Some(error_code.to_owned()),
            context_digest: None,
            context_keys: Vec::new(),
            details,
        };
        log.append(entry).await
    }
}

/// Requests a front door refused without recording each, from one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttled {
    /// The source address (`(many)` for an aggregate of several).
    pub source: Option<String>,
    /// How many.
    pub count: u64,
    /// The first one.
    pub first_seen: OffsetDateTime,
    /// The last one.
    pub last_seen: OffsetDateTime,
    /// The throttle's window, in seconds.
    pub window_seconds: u64,
}

/// One request's audit scope: what the service notes while the request runs, and the record
/// it becomes.
pub struct RequestScope {
    service: Arc<KeyService>,
    note: Note,
}

impl RequestScope {
    /// Runs the request's work inside this scope, so the service's notes reach its record.
    pub async fn run<F: std::future::Future>(&self, work: F) -> F::Output {
        note::scope(self.note.clone(), work).await
    }

    /// Whether the request authenticated a principal.
    pub fn authenticated(&self) -> bool {
        self.note.has_principal()
    }

    /// Builds the request's record from what was noted and how it `ended`, and appends it:
    /// durable when this returns `Ok`. The door must not answer the request otherwise.
    ///
    /// # Errors
    /// The audit log refusing the record.
    pub async fn finish(self, ended: Ending) -> Result<u64, AuditError> {
        let log = self.service.audit();
        let entry = entry_of(self.note.snapshot(), log.node(), ended);
        log.append(entry).await
    }
}

/// The audit record of a request (or unit of background work) from what was noted and how it
/// `ended`.
fn entry_of(noted: note::Noted, node: &str, ended: Ending) -> AuditEntry {
    let (context_digest, context_keys) = match noted.context {
        Some((d, k)) => (Some(d), k),
        None => (None, Vec::new()),
    };
    let (key_id, key_version) = match noted.key {
        Some((k, v)) => (Some(k), Some(v)),
        None => (None, None),
    };
    AuditEntry {
        time: format_time(crate::clock::now()),
        node: node.to_owned(),
        request_id: noted.request.request_id,
        method: noted.request.method,
        route: noted.request.route,
        principal: noted.principal,
        credential: noted.credential,
        source: noted.request.source.map(|s| s.to_string()),
        action: noted.action,
        resource: noted.resource,
        key_id,
        key_version,
        other_keys: noted.other_keys,
        outcome: ended.outcome,
        status: ended.status,
        error_code: ended.error_code,
        context_digest,
        context_keys,
        details: noted.details,
    }
}

/// The answer of an announcement that carried its change: on failure the request's
/// announcement is withdrawn (nothing was written) and the request fails `Audit`.
fn announced<T>(ridden: Result<T, AuditError>) -> Result<T, ServiceError> {
    ridden.map_err(|e| {
        note::withdraw_change();
        ServiceError::Audit(e)
    })
}

/// The announcement of a change: the request's record so far, with outcome `pending`.
fn pending(noted: note::Noted, node: &str) -> AuditEntry {
    entry_of(
        noted,
        node,
        Ending {
            outcome: Outcome::Pending,
            status: NO_STATUS,
            error_code: None,
        },
    )
}

/// The principal background work is recorded as.
pub const SYSTEM_PRINCIPAL: &str = "system";

/// The status recorded for background work and announcements: no wire status exists.
pub const NO_STATUS: u16 = 0;

impl KeyService {
    /// Announces, durably, that the current request (or unit of background work) is about to
    /// change stored state: a record with outcome `pending` that names who, what and where,
    /// written before the change. If it cannot be written the change is not made and the
    /// request fails (`audit_unavailable`); so no change ever stands without a record. Called
    /// once per request, after every authorisation and check and before the first effect (a
    /// device object, a stored row). Outside any request or unit of work it does nothing.
    ///
    /// # Errors
    /// `Audit` when the announcement could not be written.
    pub(crate) async fn changing(&self) -> Result<(), ServiceError> {
        let Some(noted) = note::announce_change() else {
            return Ok(());
        };
        let log = self.audit();
        match log.append(pending(noted, log.node())).await {
            Ok(_) => Ok(()),
            Err(e) => {
                note::withdraw_change();
                Err(ServiceError::Audit(e))
            }
        }
    }

    /// Announces a secret version and writes it: in one commit where the audit writer can
    /// write versions ([`crate::audit::AuditLog::append_with_version`]; SQLite), so the
    /// announcement and the version are durable together; else as [`KeyService::changing`]
    /// and then [`crate::store::SecretStore::insert_secret_version`]. Also the latter when the
    /// request announced already (a write tried again after a stale read). The outer error is
    /// the announcement's (nothing was written); the inner one is the version's own.
    ///
    /// # Errors
    /// `Audit` when the announcement could not be written.
    pub(crate) async fn changing_with_version(
        &self,
        version: &NewSecretVersion,
    ) -> Result<Result<Vec<u32>, StoreError>, ServiceError> {
        let log = self.audit();
        if log.writes_versions() {
            if let Some(noted) = note::announce_change() {
                let ridden = log
                    .append_with_version(pending(noted, log.node()), version.clone())
                    .await;
                return announced(ridden).map(|(_, written)| written);
            }
        }
        self.changing().await?;
        Ok(self.store.insert_secret_version(version).await)
    }

    /// Announces a re-wrap batch and applies it: in one commit where the audit writer can
    /// (SQLite, as [`KeyService::changing_with_version`]), else as [`KeyService::changing`] and
    /// then [`crate::store::JobStore::apply_rewrap`]. The outer error is the announcement's
    /// (nothing was written); the inner one is the batch's own.
    ///
    /// # Errors
    /// `Audit` when the announcement could not be written.
    pub(crate) async fn changing_with_rewrap(
        &self,
        batch: crate::store::RewrapBatch,
    ) -> Result<Result<u64, StoreError>, ServiceError> {
        let log = self.audit();
        if log.writes_versions() {
            if let Some(noted) = note::announce_change() {
                let ridden = log
                    .append_with_rewrap(pending(noted, log.node()), batch)
                    .await;
                return announced(ridden).map(|(_, moved)| moved);
            }
        }
        self.changing().await?;
        Ok(self.store.apply_rewrap(&batch).await)
    }

    /// Runs one unit of background work of `worker` (a rotation, a deletion, a re-wrap batch,
    /// …) in its own audit scope, as the `system` principal, on `action` and `resource`. When
    /// the work changed something (it announced a change, or noted an event that already took
    /// effect) or failed, its record is appended
    /// with the outcome; work that found nothing to do leaves no record. A record that cannot
    /// be written is logged at `error` (the announcement before the change stands).
    pub(crate) async fn in_background<T>(
        &self,
        worker: &str,
        action: &str,
        resource: &str,
        work: impl std::future::Future<Output = Result<T, ServiceError>>,
    ) -> Result<T, ServiceError> {
        let scope = Note::new(note::RequestFacts {
            request_id: uuid::Uuid::new_v4().to_string(),
            method: "-".to_owned(),
            route: "(background)".to_owned(),
            source: None,
            front_door: None,
        });
        let result = note::scope(scope.clone(), async {
            note::principal(SYSTEM_PRINCIPAL, &format!("worker:{worker}"));
            note::authorization(action, resource, true);
            work.await
        })
        .await;
        let noted = scope.snapshot();
        if noted.change_announced || noted.happened || result.is_err() {
            let ended = match &result {
                Ok(_) => Ending {
                    outcome: Outcome::Success,
                    status: NO_STATUS,
                    error_code: None,
                },
                Err(e) => Ending {
                    outcome: e.outcome(),
                    status: NO_STATUS,
                    error_code: Some(e.code().to_owned()),
                },
            };
            let log = self.audit();
            if let Err(e) = log.append(entry_of(noted, log.node(), ended)).await {
                tracing::error!(worker, action, resource, error = %e, "background work done, but its audit record was not written (its announcement stands)");
            }
        }
        result
    }
}

/// An authenticated principal's handle on the service: every operation a front door may call,
/// each authorising every resource it touches for this principal.
/// (Shared: the handle travels in request extensions and is cloned by each extractor.)
#[derive(Clone)]
pub struct Authorized(Arc<Handle>);

struct Handle {
    service: Arc<KeyService>,
    principal: Principal,
}

impl std::fmt::Debug for Authorized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorized")
            .field("principal", &self.0.principal.name)
            .finish_non_exhaustive()
    }
}

/// Delegates each listed operation to the service with this handle's principal.
macro_rules! authorized_operations {
    ($( $(#[$doc:meta])* fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty; )*) => {
        impl Authorized {
            $(
                $(#[$doc])*
                ///
                /// # Errors
                /// As the service operation of the same name.
                pub async fn $name(&self $(, $arg: $ty)*) -> Result<$ret, ServiceError> {
                    self.0.service.$name(&self.0.principal $(, $arg)*).await
                }
            )*
        }
    };
}

impl Authorized {
    /// The authenticated principal.
    pub fn principal(&self) -> &Principal {
        &self.0.principal
    }

    /// One principal's record.
    ///
    /// # Errors
    /// As [`KeyService::principal`].
    pub async fn principal_record(&self, name: &KeyName) -> Result<PrincipalRecord, ServiceError> {
        self.0.service.principal(&self.0.principal, name).await
    }

    /// Names, for the request's audit record, the operation the client asked for in its front
    /// door's terms (e.g. `Decrypt`); the door itself is named from the request's facts
    /// ([`RequestMeta::front_door`]).
    pub fn note_operation(&self, operation: &str) {
        note::detail("front_door_operation", operation);
    }

    /// The next page of an export whose plan this principal was authorised for
    /// ([`Authorized::audit_export_plan`]): records after `after` up to `until`.
    ///
    /// # Errors
    /// As [`KeyService::audit_export_page`].
    pub async fn audit_export_page(
        &self,
        after: u64,
        until: u64,
    ) -> Result<Vec<crate::audit::export::Line>, ServiceError> {
        self.0.service.audit_export_page(after, until).await
    }
}

authorized_operations! {
    /// Creates a key.
    fn create_key(&self, name: KeyName, description: String, placement: KeyPlacement) -> Key;
    /// A page of the keys the principal may read.
    fn list_keys(&self, after: Option<KeyName>, limit: u32) -> KeyPage;
    /// One key.
    fn key(&self, r: &KeyRef) -> Key;
    /// A fresh data key.
    fn generate_data_key(
        &self,
        r: &KeyRef,
        len: DataKeyLen,
        context: &EncryptionContext,
        copy: PlaintextCopy,
    ) -> DataKey;
    /// Encrypts a small payload.
    fn encrypt(&self, r: &KeyRef, plaintext: SecretBytes, context: &EncryptionContext) -> Sealing;
    /// Opens a blob (sealed by the key `named`, when given).
    fn decrypt(
        &self,
        ciphertext: &[u8],
        context: &EncryptionContext,
        named: Option<&KeyRef>,
    ) -> Opened;
    /// Re-encrypts a blob (sealed by the key `source_named`, when given).
    fn reencrypt(
        &self,
        ciphertext: &[u8],
        context: &EncryptionContext,
        source_named: Option<&KeyRef>,
        destination: Option<&KeyRef>,
        destination_context: Option<&EncryptionContext>,
    ) -> Reencrypted;
    /// Random bytes.
    fn random(&self, n: usize, source: super::random::EntropySource) -> SecretBytes;
    /// Rotates a key now.
    fn rotate_key(&self, r: &KeyRef) -> Key;
    /// Changes a key's description, rotation period or minimum decryption version.
    fn update_key(&self, r: &KeyRef, patch: KeyPatch) -> Key;
    /// Disables a key.
    fn disable_key(&self, r: &KeyRef) -> Key;
    /// Enables a key.
    fn enable_key(&self, r: &KeyRef) -> Key;
    /// Cancels a key's scheduled deletion.
    fn cancel_key_deletion(&self, r: &KeyRef) -> Key;
    /// Schedules a key's deletion.
    fn schedule_key_deletion(&self, r: &KeyRef, pending_days: Option<u32>) -> Key;
    /// A key's versions with their use.
    fn key_versions(&self, r: &KeyRef) -> (Key, Vec<VersionUsage>);
    /// Disables, enables or destroys one version.
    fn change_version(&self, r: &KeyRef, version: u32, action: VersionAction) -> Key;
    /// Creates an alias.
    fn create_alias(&self, name: KeyName, target: &KeyRef) -> Alias;
    /// Re-points an alias.
    fn repoint_alias(&self, name: KeyName, target: &KeyRef) -> Alias;
    /// One alias.
    fn alias(&self, name: &KeyName) -> Alias;
    /// The aliases the principal may read.
    fn aliases(&self) -> Vec<Alias>;
    /// Deletes an alias.
    fn delete_alias(&self, name: &KeyName) -> ();
    /// Starts a re-wrap job.
    fn start_rewrap(&self, r: &KeyRef) -> JobStatus;
    /// One job.
    fn job(&self, id: &str) -> JobStatus;
    /// One job's trail.
    fn job_events(&self, id: &str) -> Vec<JobEvent>;
    /// The jobs the principal may read.
    fn jobs(&self, state: Option<JobState>, limit: u32) -> Vec<JobStatus>;
    /// Writes a secret version.
    fn put_secret(
        &self,
        path: &SecretPath,
        value: SecretBytes,
        key: Option<&KeyRef>,
        cas: Option<u32>,
    ) -> Written;
    /// Reads a secret version.
    fn get_secret(&self, path: &SecretPath, version: Option<u32>) -> SecretValue;
    /// A page of the secrets the principal may list.
    fn list_secrets(&self, prefix: &str, after: Option<SecretPath>, limit: u32) -> SecretPage;
    /// A secret's metadata.
    fn secret_metadata(&self, path: &SecretPath) -> SecretRecord;
    /// Creates or changes a secret's metadata.
    fn put_secret_metadata(&self, path: &SecretPath, req: MetadataRequest) -> SecretRecord;
    /// Rotates a generated secret now.
    fn rotate_secret(&self, path: &SecretPath) -> Written;
    /// Soft-deletes versions.
    fn delete_secret_versions(&self, path: &SecretPath, which: Versions) -> Vec<u32>;
    /// Restores soft-deleted versions.
    fn undelete_secret_versions(&self, path: &SecretPath, which: Versions) -> Vec<u32>;
    /// Destroys versions.
    fn destroy_secret_versions(&self, path: &SecretPath, versions: Vec<u32>) -> Vec<u32>;
    /// Creates a principal.
    fn create_principal(&self, name: KeyName, req: PrincipalRequest) -> PrincipalRecord;
    /// Changes a principal.
    fn update_principal(&self, name: &KeyName, req: PrincipalRequest) -> PrincipalRecord;
    /// The principals the principal may manage.
    fn principals(&self) -> Vec<PrincipalRecord>;
    /// Deletes a principal.
    fn delete_principal(&self, name: &KeyName) -> ();
    /// Writes a policy.
    fn put_policy(&self, name: &KeyName, body: &[u8]) -> PolicyRecord;
    /// One policy.
    fn policy(&self, name: &KeyName) -> PolicyRecord;
    /// The policies the principal may read.
    fn policies(&self) -> Vec<PolicyRecord>;
    /// Deletes a policy.
    fn delete_policy(&self, name: &KeyName) -> ();
    /// Mints a token.
    fn create_token(
        &self,
        principal: &KeyName,
        ttl: Option<HumanDuration>,
        description: String,
    ) -> MintedToken;
    /// Token metadata.
    fn tokens(&self, principal: Option<&KeyName>) -> Vec<TokenInfo>;
    /// Revokes a token.
    fn revoke_token(&self, id: &str) -> ();
    /// Mints an access key.
    fn create_access_key(
        &self,
        principal: &KeyName,
        key: Option<&KeyRef>,
        ttl: Option<HumanDuration>,
        description: String,
    ) -> MintedAccessKey;
    /// Access key metadata.
    fn access_keys(&self, principal: Option<&KeyName>) -> Vec<AccessKeyInfo>;
    /// Revokes an access key.
    fn revoke_access_key(&self, id: &str) -> ();
    /// Creates a database connection.
    fn create_db_connection(&self, req: CreateDbConnectionRequest) -> DbConnection;
    /// The database connections the principal may administer.
    fn db_connections(&self) -> Vec<DbConnection>;
    /// One database connection.
    fn db_connection(&self, name: &KeyName) -> DbConnection;
    /// Deletes a database connection.
    fn delete_db_connection(&self, name: &KeyName) -> ();
    /// Creates or changes a database role.
    fn put_db_role(&self, name: &KeyName, req: PutDbRoleRequest) -> DbRole;
    /// The database roles the principal may administer.
    fn db_roles(&self) -> Vec<DbRole>;
    /// One database role.
    fn db_role(&self, name: &KeyName) -> DbRole;
    /// Deletes a database role.
    fn delete_db_role(&self, name: &KeyName) -> ();
    /// A static role's password.
    fn static_creds(&self, name: &KeyName, version: Option<u32>) -> StaticCreds;
    /// Rotates a static role's password now.
    fn rotate_db_role(&self, name: &KeyName) -> RotatedRole;
    /// Creates dynamic database credentials.
    fn create_db_creds(&self, name: &KeyName, ttl: Option<HumanDuration>) -> DbCreds;
    /// Renews a lease.
    fn renew_db_lease(&self, id: &str, increment: Option<HumanDuration>) -> DbLease;
    /// Revokes a lease.
    fn revoke_db_lease(&self, id: &str) -> ();
    /// Explains a decision.
    fn explain(
        &self,
        principal: &KeyName,
        action: Action,
        kind: &'static str,
        name: &str,
        context: Option<&EncryptionContext>,
        source: Option<IpAddr>,
    ) -> policy::Decision;
    /// Audit records.
    fn audit_events(&self, filter: &AuditFilter) -> Vec<AuditRecord>;
    /// The audit signing public key.
    fn audit_public_key(&self) -> String;
    /// What an export covers.
    fn audit_export_plan(&self, after: Option<u64>, until: Option<u64>) -> ExportPlan;
    /// Archives audit records.
    fn audit_archive(&self, through: u64, export_sha256: &str, request_id: &str) -> AuditArchive;
    /// The signed custody report.
    fn custody_report(&self) -> SignedReport;
    /// This node's metrics (OpenMetrics text).
    fn metrics_text(&self) -> String;
}

/// The background workers' handle: rotations, deletions, device-object destruction, re-wrap
/// batches and KEK upkeep, done as the service itself. Made once by the application from the
/// service; front doors never hold one.
#[derive(Clone)]
pub struct Internal {
    service: Arc<KeyService>,
}

impl Internal {
    /// The workers' handle on `service`.
    pub fn new(service: Arc<KeyService>) -> Self {
        Self { service }
    }

    /// The service, for the worker loops in `crate::rotation` and the application.
    pub fn service(&self) -> &KeyService {
        &self.service
    }
}
