//! Database credentials (issue 24): connections to target databases, static roles whose
//! password Custodian rotates *in the database*, and dynamic roles whose users live under
//! leases. Every operation is authorised (`db:admin`, `db:rotate`, `db:creds` on
//! `db/<connection>/<role>`; connections are `db/<connection>`), announced before it changes
//! anything, and named in its audit record by connection, role, database user and lease —
//! never by a password.
//!
//! Passwords (the admin's and static roles') are secret versions under the reserved root
//! `custodian:db/` (a data key each from the device, wrapped under the connection's key; see
//! `SecretPath::internal`), so they are stored, counted as references to key versions and
//! re-wrapped exactly like secrets, and no request can name them.
//!
//! A static rotation goes: write the new version → record it as the role's `pending` version
//! → set it in the database → make it `current`. Whatever finds a `pending` version (a read,
//! the next rotation, the background duty) sets it in the database again and completes the
//! step before anything else, so after a crash at any point the password handed out is one
//! the database accepts. Every role write names the revision it read, so two nodes (or two
//! requests) never complete a step twice.
//!
//! A lease is recorded before its user is created and revoked by the one write that finds it
//! unrevoked, after the revocation statements ran; a user that is already gone counts as
//! revoked, so a revocation interrupted anywhere is simply run again.

use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::{KeyService, ServiceError};
use crate::api_types::database::{
    CreateDbConnectionRequest, DbConnection, DbCreds, DbLease, DbRole, PutDbRoleRequest,
    RotatedRole, StaticCreds,
};
use crate::audit::note;
use crate::database::{self, DatabaseError, DatabasePlugin, NewUser, Target};
use crate::domain::secret::{HumanDuration, SecretPath};
use crate::domain::{KeyName, KeyRef};
use crate::policy::{Action, Principal, Resource};
use crate::secret::SecretBytes;
use crate::store::database::{
    DbConnectionRecord, DbLeaseFilter, DbLeaseRecord, DbRoleRecord, DynamicSpec, OnTokenRevoke,
    RoleSpec, StaticSpec, StaticState,
};
use crate::store::StoreError;

/// How long connecting to a target database may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most statements in one template list, and the longest statement.
const MAX_STATEMENTS: usize = 16;
const MAX_STATEMENT_BYTES: usize = 4096;
/// A dynamic role's TTLs when its definition gives none.
const DEFAULT_TTL: Duration = Duration::from_secs(3600);
const DEFAULT_MAX_TTL: Duration = Duration::from_secs(86_400);
/// Attempts at a role write before giving up on a busy role.
const MAX_ATTEMPTS: usize = 8;
/// Most due rotations or leases one background pass handles.
const BATCH: u32 = 100;
/// The prefix of lease ids.
pub const LEASE_PREFIX: &str = "dbl_";
const LEASE_RANDOM_CHARS: usize = 26;
/// How long after a static role's creation the background duty retries a first rotation that
/// did not complete (the request itself normally completes it at once).
const FIRST_ROTATION_GRACE: Duration = Duration::from_secs(30);
/// The renewal statement when a role gives none.
const DEFAULT_RENEW: &str = "ALTER ROLE {{name}} VALID UNTIL {{expiration}}";

/// Whether `id` has the shape of a lease id.
pub fn is_lease_id(id: &str) -> bool {
    id.len() == LEASE_PREFIX.len() + LEASE_RANDOM_CHARS
        && id.starts_with(LEASE_PREFIX)
        && id[LEASE_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
}

fn random_failed(e: getrandom::Error) -> ServiceError {
    ServiceError::Backend(crate::backend::BackendError::Device(Box::new(e)))
}

fn role_resource(connection: &str, role: &str) -> Resource {
    Resource::named("db", format!("{connection}/{role}"))
}

fn connection_resource(connection: &str) -> Resource {
    Resource::named("db", connection)
}

fn admin_path(connection: &str) -> Result<SecretPath, ServiceError> {
    SecretPath::internal(&format!("{connection}/admin")).map_err(ServiceError::InvalidSecretPath)
}

fn role_path(connection: &str, role: &str) -> Result<SecretPath, ServiceError> {
    SecretPath::internal(&format!("{connection}/roles/{role}"))
        .map_err(ServiceError::InvalidSecretPath)
}

fn secs(d: Duration) -> u64 {
    d.as_secs()
}

/// Seconds from `now` to `t`, zero when `t` has passed.
fn seconds_until(t: OffsetDateTime, now: OffsetDateTime) -> u64 {
    u64::try_from((t - now).whole_seconds()).unwrap_or(0)
}

/// How long to wait before retrying after `failures` failures in a row: a second per failure,
/// at most 30.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(u64::from(failures.clamp(1, 30)))
}

fn note_role(connection: &str, role: &str) {
    note::detail("db_connection", connection);
    note::detail("db_role", role);
}

fn connection_view(c: &DbConnectionRecord) -> DbConnection {
    DbConnection {
        name: c.name.clone(),
        plugin: c.plugin.clone(),
        url: c.url.clone(),
        admin_user: c.admin_user.clone(),
        sslmode: c.sslmode.clone(),
        created_at: c.created_at,
    }
}

fn role_view(r: &DbRoleRecord) -> DbRole {
    let mut view = DbRole {
        name: r.name.clone(),
        connection: r.connection.clone(),
        kind: r.spec.kind().to_owned(),
        username: None,
        rotation_period_seconds: None,
        overlap_seconds: None,
        current_version: None,
        pending_version: None,
        last_rotated_at: None,
        next_rotation_at: None,
        creation_statements: Vec::new(),
        revocation_statements: Vec::new(),
        renew_statements: Vec::new(),
        default_ttl_seconds: None,
        max_ttl_seconds: None,
        on_token_revoke: None,
    };
    match &r.spec {
        RoleSpec::Static(s) => {
            view.username = Some(s.username.clone());
            view.rotation_period_seconds = s.rotation_period_secs;
            view.overlap_seconds = Some(s.overlap_secs);
            view.current_version = r.state.current;
            view.pending_version = r.state.pending;
            view.last_rotated_at = r.state.last_rotated_at;
            view.next_rotation_at = r.next_rotation_at;
        }
        RoleSpec::Dynamic(d) => {
            view.creation_statements = d.creation.clone();
            view.revocation_statements = d.revocation.clone();
            view.renew_statements = d.renew.clone();
            view.default_ttl_seconds = Some(d.default_ttl_secs);
            view.max_ttl_seconds = Some(d.max_ttl_secs);
            view.on_token_revoke = Some(
                match d.on_token_revoke {
                    OnTokenRevoke::Revoke => "revoke",
                    OnTokenRevoke::Keep => "keep",
                }
                .to_owned(),
            );
        }
    }
    view
}

fn lease_view(l: &DbLeaseRecord, now: OffsetDateTime) -> DbLease {
    DbLease {
        id: l.id.clone(),
        role: l.role.clone(),
        connection: l.connection.clone(),
        username: l.username.clone(),
        ttl_seconds: if l.revoked_at.is_some() {
            0
        } else {
            seconds_until(l.expires_at, now)
        },
        max_ttl_seconds: seconds_until(l.max_expires_at, l.created_at),
        created_at: l.created_at,
        expires_at: l.expires_at,
        max_expires_at: l.max_expires_at,
        revoked_at: l.revoked_at,
    }
}

/// Checks a template list: at most [`MAX_STATEMENTS`] statements of at most
/// [`MAX_STATEMENT_BYTES`], known placeholders only.
fn check_statements(what: &str, statements: &[String]) -> Result<(), ServiceError> {
    if statements.len() > MAX_STATEMENTS {
        return Err(ServiceError::InvalidDbRole(format!(
            "{what}: at most {MAX_STATEMENTS} statements"
        )));
    }
    for s in statements {
        if s.trim().is_empty() || s.len() > MAX_STATEMENT_BYTES {
            return Err(ServiceError::InvalidDbRole(format!(
                "{what}: each statement is 1 to {MAX_STATEMENT_BYTES} bytes"
            )));
        }
        if s.contains('\0') {
            return Err(ServiceError::InvalidDbRole(format!(
                "{what}: a statement contains a NUL character"
            )));
        }
        crate::database::postgres::format_string(s)
            .map_err(|m| ServiceError::InvalidDbRole(format!("{what}: {m}")))?;
    }
    Ok(())
}

/// The settings of a role as requested, checked.
fn role_spec(req: &PutDbRoleRequest, min_period: Duration) -> Result<RoleSpec, ServiceError> {
    let invalid = |m: &str| ServiceError::InvalidDbRole(m.to_owned());
    match req.kind.as_str() {
        "static" => {
            if !req.creation_statements.is_empty()
                || !req.revocation_statements.is_empty()
                || !req.renew_statements.is_empty()
                || req.default_ttl.is_some()
                || req.max_ttl.is_some()
                || req.on_token_revoke.is_some()
            {
                return Err(invalid(
                    "a static role takes username, rotation_period and overlap only",
                ));
            }
            let username = req
                .username
                .clone()
                .ok_or_else(|| invalid("a static role needs username"))?;
            if username.is_empty() || username.len() > 63 || username.contains('\0') {
                return Err(invalid("username is 1 to 63 bytes without NUL"));
            }
            if let Some(p) = req.rotation_period {
                if p.0 < min_period {
                    return Err(invalid(
                        "rotation_period is shorter than secrets.min_rotate_every (1h unless configured)",
                    ));
                }
            }
            Ok(RoleSpec::Static(StaticSpec {
                username,
                rotation_period_secs: req.rotation_period.map(|p| secs(p.0)),
                overlap_secs: req.overlap.map_or(0, |o| secs(o.0)),
            }))
        }
        "dynamic" => {
            if req.username.is_some() || req.rotation_period.is_some() || req.overlap.is_some() {
                return Err(invalid(
                    "a dynamic role takes no username, rotation_period or overlap",
                ));
            }
            if req.creation_statements.is_empty() {
                return Err(invalid("a dynamic role needs creation_statements"));
            }
            if !req
                .creation_statements
                .iter()
                .any(|s| s.contains("{{name}}"))
            {
                return Err(invalid("creation_statements must use {{name}}"));
            }
            check_statements("creation_statements", &req.creation_statements)?;
            check_statements("revocation_statements", &req.revocation_statements)?;
            check_statements("renew_statements", &req.renew_statements)?;
            let default_ttl = req.default_ttl.map_or(DEFAULT_TTL, |d| d.0);
            let max_ttl = req
                .max_ttl
                .map_or(DEFAULT_MAX_TTL.max(default_ttl), |d| d.0);
            if default_ttl > max_ttl {
                return Err(invalid("default_ttl is longer than max_ttl"));
            }
            let on_token_revoke = match req.on_token_revoke.as_deref() {
                None | Some("revoke") => OnTokenRevoke::Revoke,
                Some("keep") => OnTokenRevoke::Keep,
                Some(_) => return Err(invalid("on_token_revoke is revoke or keep")),
            };
            Ok(RoleSpec::Dynamic(DynamicSpec {
                creation: req.creation_statements.clone(),
                revocation: req.revocation_statements.clone(),
                renew: req.renew_statements.clone(),
                default_ttl_secs: secs(default_ttl),
                max_ttl_secs: secs(max_ttl),
                on_token_revoke,
            }))
        }
        _ => Err(invalid("kind is static or dynamic")),
    }
}

/// What a static rotation is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Finish a pending rotation, if there is one; otherwise nothing.
    CompletePending,
    /// Finish a pending rotation if there is one, else rotate.
    Rotate,
}

impl KeyService {
    /// The plugin for `connection`, logged in as its admin.
    async fn plugin_for(
        &self,
        connection: &DbConnectionRecord,
    ) -> Result<Box<dyn DatabasePlugin>, ServiceError> {
        let password = self
            .read_internal_secret(&admin_path(&connection.name)?, connection.admin_version)
            .await?;
        let text = std::str::from_utf8(password.expose_secret()).map_err(|_| {
            ServiceError::Backend(crate::backend::BackendError::Invariant(
                "a stored admin password is not UTF-8",
            ))
        })?;
        let target = Target {
            url: connection.url.clone(),
            admin_user: connection.admin_user.clone(),
            admin_password: SecretString::from(text.to_owned()),
            sslmode: connection.sslmode.clone(),
            ca_pem: connection.ca_pem.clone(),
            connect_timeout: CONNECT_TIMEOUT,
        };
        database::plugin(&connection.plugin, target).map_err(ServiceError::Database)
    }

    /// Authorises `db:admin` on the connection `name` for `p`, and notes it for the record.
    async fn authorize_connection(
        &self,
        p: &Principal,
        name: &KeyName,
    ) -> Result<(), ServiceError> {
        self.authorize(
            p,
            Action::DbAdmin,
            &connection_resource(name.as_str()),
            None,
        )
        .await?;
        note::detail("db_connection", name.as_str());
        Ok(())
    }

    async fn connection_record(&self, name: &str) -> Result<DbConnectionRecord, ServiceError> {
        self.store
            .db_connection(name)
            .await?
            .ok_or_else(|| ServiceError::DbConnectionNotFound(name.to_owned()))
    }

    /// The role `name`, authorised as `action` for `p` (an unknown role is reported only to a
    /// principal allowed `action` on every role).
    async fn authorized_role(
        &self,
        p: &Principal,
        action: Action,
        name: &KeyName,
    ) -> Result<DbRoleRecord, ServiceError> {
        let Some(role) = self.store.db_role(name.as_str()).await? else {
            self.authorize(p, action, &Resource::all("db"), None)
                .await?;
            return Err(ServiceError::DbRoleNotFound(name.to_string()));
        };
        self.authorize(
            p,
            action,
            &role_resource(&role.connection, &role.name),
            None,
        )
        .await?;
        note_role(&role.connection, &role.name);
        Ok(role)
    }

    /// Creates a connection after checking the admin's login and privileges.
    ///
    /// # Errors
    /// `Forbidden`, `InvalidDbConnection`, `DbConnectionExists`, `KeyRequired`, `KeyNotFound`,
    /// `DefaultKeyMissing`, `Database` (`LoginFailed`, `Privileges`, `Unavailable`), `Backend`,
    /// `Store`.
    #[tracing::instrument(skip_all, fields(op = "db_connection_create"))]
    pub async fn create_db_connection(
        &self,
        p: &Principal,
        req: CreateDbConnectionRequest,
    ) -> Result<DbConnection, ServiceError> {
        let name = KeyName::try_from(req.name)
            .map_err(|e| ServiceError::InvalidDbConnection(format!("name: {e}")))?;
        self.authorize_connection(p, &name).await?;
        let invalid = |m: &str| ServiceError::InvalidDbConnection(m.to_owned());
        if !database::PLUGINS.contains(&req.plugin.as_str()) {
            return Err(invalid("plugin must be postgresql"));
        }
        if req.url.is_empty() || req.url.len() > 1024 {
            return Err(invalid("url is 1 to 1024 bytes"));
        }
        if req.admin_user.is_empty() || req.admin_user.len() > 63 || req.admin_user.contains('\0') {
            return Err(invalid("admin_user is 1 to 63 bytes without NUL"));
        }
        let password = req.admin_password.expose_secret();
        if password.is_empty() || password.len() > 1024 {
            return Err(invalid("admin_password is 1 to 1024 bytes"));
        }
        if req.ca_pem.as_ref().is_some_and(|c| c.len() > 65_536) {
            return Err(invalid("ca_pem is at most 64 KiB"));
        }
        let named = req
            .key
            .as_deref()
            .map(|k| {
                k.parse::<KeyRef>()
                    .map_err(|e| ServiceError::InvalidDbConnection(format!("key: {e}")))
            })
            .transpose()?;
        let key = self
            .sealing_key(p, named.as_ref(), self.secrets.default_key.clone())
            .await?;
        if self.store.db_connection(name.as_str()).await?.is_some() {
            return Err(ServiceError::DbConnectionExists(name.to_string()));
        }
        let target = Target {
            url: req.url.clone(),
            admin_user: req.admin_user.clone(),
            admin_password: req.admin_password.clone(),
            sslmode: req.sslmode.clone(),
            ca_pem: req.ca_pem.clone(),
            connect_timeout: CONNECT_TIMEOUT,
        };
        let plugin = database::plugin(&req.plugin, target).map_err(|e| match e {
            DatabaseError::Settings(m) => ServiceError::InvalidDbConnection(m),
            other => ServiceError::Database(other),
        })?;
        plugin.verify().await?;
        self.changing().await?;
        let admin_version = self
            .write_internal_secret(
                &admin_path(name.as_str())?,
                &SecretBytes::copy_from(password.as_bytes()),
                key.id,
            )
            .await?;
        let record = DbConnectionRecord {
            name: name.to_string(),
            plugin: req.plugin,
            url: req.url,
            admin_user: req.admin_user,
            sslmode: req.sslmode,
            ca_pem: req.ca_pem,
            key_id: key.id,
            admin_version,
            created_at: crate::clock::now(),
        };
        match self.store.insert_db_connection(&record).await {
            Err(StoreError::Conflict { .. }) => {
                return Err(ServiceError::DbConnectionExists(record.name))
            }
            other => other?,
        }
        tracing::info!(db_connection = %record.name, "database connection created");
        Ok(connection_view(&record))
    }

    /// The connections `p` may administer.
    ///
    /// # Errors
    /// `Store`.
    pub async fn db_connections(&self, p: &Principal) -> Result<Vec<DbConnection>, ServiceError> {
        let filter = self.item_filter(p, Action::DbAdmin, "db").await?;
        Ok(self
            .store
            .list_db_connections()
            .await?
            .iter()
            .filter(|c| filter.allows(&connection_resource(&c.name)))
            .map(connection_view)
            .collect())
    }

    /// One connection.
    ///
    /// # Errors
    /// `Forbidden`, `DbConnectionNotFound`, `Store`.
    pub async fn db_connection(
        &self,
        p: &Principal,
        name: &KeyName,
    ) -> Result<DbConnection, ServiceError> {
        self.authorize_connection(p, name).await?;
        Ok(connection_view(
            &self.connection_record(name.as_str()).await?,
        ))
    }

    /// Deletes a connection no role names, and destroys its stored admin password.
    ///
    /// # Errors
    /// `Forbidden`, `DbConnectionNotFound`, `DbConnectionInUse`, `Store`.
    pub async fn delete_db_connection(
        &self,
        p: &Principal,
        name: &KeyName,
    ) -> Result<(), ServiceError> {
        self.authorize_connection(p, name).await?;
        let record = self.connection_record(name.as_str()).await?;
        if !self
            .store
            .list_db_roles(Some(name.as_str()))
            .await?
            .is_empty()
        {
            return Err(ServiceError::DbConnectionInUse(name.to_string()));
        }
        self.changing().await?;
        self.store.delete_db_connection(name.as_str()).await?;
        self.destroy_internal(&admin_path(&record.name)?).await;
        tracing::info!(db_connection = %name, "database connection deleted");
        Ok(())
    }

    /// Destroys every version of one of Custodian's own paths (best effort: a failure leaves
    /// sealed versions that nothing reads, and is logged).
    async fn destroy_internal(&self, path: &SecretPath) {
        let versions: Vec<u32> = match self.store.secret(path).await {
            Ok(Some(r)) => r.versions.iter().map(|v| v.version).collect(),
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "could not list a deleted database password's versions");
                return;
            }
        };
        if let Err(e) = self
            .store
            .update_secret_versions(
                path,
                &versions,
                crate::store::VersionOp::Destroy,
                crate::clock::now(),
            )
            .await
        {
            tracing::warn!(error = %e, "could not destroy a deleted database password's versions");
        }
    }

    /// Creates or changes a role. A new static role's first password is set at once.
    ///
    /// # Errors
    /// `Forbidden`, `InvalidDbRole`, `DbConnectionNotFound`, `DbRoleExists`, `Database`
    /// (`RoleMissing`, `Unavailable`, …), `Backend`, `Store`.
    #[tracing::instrument(skip_all, fields(op = "db_role_put", role = %name))]
    pub async fn put_db_role(
        &self,
        p: &Principal,
        name: &KeyName,
        req: PutDbRoleRequest,
    ) -> Result<DbRole, ServiceError> {
        let connection = KeyName::try_from(req.connection.clone())
            .map_err(|e| ServiceError::InvalidDbRole(format!("connection: {e}")))?;
        self.authorize(
            p,
            Action::DbAdmin,
            &role_resource(connection.as_str(), name.as_str()),
            None,
        )
        .await?;
        note_role(connection.as_str(), name.as_str());
        let spec = role_spec(&req, self.secrets.min_rotate_every)?;
        let conn = self.connection_record(connection.as_str()).await?;
        let now = crate::clock::now();
        if let Some(existing) = self.store.db_role(name.as_str()).await? {
            let same_user = match (&existing.spec, &spec) {
                (RoleSpec::Static(a), RoleSpec::Static(b)) => a.username == b.username,
                (RoleSpec::Dynamic(_), RoleSpec::Dynamic(_)) => true,
                _ => false,
            };
            if existing.connection != conn.name || !same_user {
                return Err(ServiceError::DbRoleExists(name.to_string()));
            }
            let mut updated = existing.clone();
            updated.spec = spec;
            if let RoleSpec::Static(s) = &updated.spec {
                if updated.state.pending.is_none() && updated.state.failures == 0 {
                    let from = updated.state.last_rotated_at.unwrap_or(now);
                    updated.next_rotation_at = s
                        .rotation_period_secs
                        .map(|p| from + Duration::from_secs(p));
                }
            }
            updated.revision = existing.revision + 1;
            updated.updated_at = now;
            self.changing().await?;
            if !self
                .store
                .put_db_role(&updated, Some(existing.revision))
                .await?
            {
                return Err(ServiceError::ConcurrentChange);
            }
            return Ok(role_view(&updated));
        }
        if let RoleSpec::Static(s) = &spec {
            note::detail("db_user", s.username.as_str());
            let plugin = self.plugin_for(&conn).await?;
            if !plugin.role_exists(&s.username).await? {
                return Err(ServiceError::Database(DatabaseError::RoleMissing(
                    s.username.clone(),
                )));
            }
        }
        let is_static = matches!(spec, RoleSpec::Static(_));
        let record = DbRoleRecord {
            name: name.to_string(),
            connection: conn.name.clone(),
            spec,
            state: StaticState::default(),
            // A static role's first rotation runs below; should it not complete, the
            // background duty retries it from then on.
            next_rotation_at: is_static.then(|| now + FIRST_ROTATION_GRACE),
            revision: 1,
            created_at: now,
            updated_at: now,
        };
        self.changing().await?;
        match self.store.put_db_role(&record, None).await {
            Err(StoreError::Conflict { .. }) => {
                return Err(ServiceError::DbRoleExists(record.name))
            }
            other => {
                other?;
            }
        }
        tracing::info!(db_role = %record.name, db_connection = %record.connection, kind = record.spec.kind(), "database role created");
        if is_static {
            self.rotate_static(name.as_str(), Step::Rotate).await?;
        }
        let stored = self
            .store
            .db_role(name.as_str())
            .await?
            .ok_or_else(|| ServiceError::DbRoleNotFound(name.to_string()))?;
        Ok(role_view(&stored))
    }

    /// The roles `p` may administer.
    ///
    /// # Errors
    /// `Store`.
    pub async fn db_roles(&self, p: &Principal) -> Result<Vec<DbRole>, ServiceError> {
        let filter = self.item_filter(p, Action::DbAdmin, "db").await?;
        Ok(self
            .store
            .list_db_roles(None)
            .await?
            .iter()
            .filter(|r| filter.allows(&role_resource(&r.connection, &r.name)))
            .map(role_view)
            .collect())
    }

    /// One role.
    ///
    /// # Errors
    /// `Forbidden`, `DbRoleNotFound`, `Store`.
    pub async fn db_role(&self, p: &Principal, name: &KeyName) -> Result<DbRole, ServiceError> {
        Ok(role_view(
            &self.authorized_role(p, Action::DbAdmin, name).await?,
        ))
    }

    /// Deletes a role without live leases (a static role's database role keeps its password;
    /// Custodian's copies are destroyed).
    ///
    /// # Errors
    /// `Forbidden`, `DbRoleNotFound`, `DbRoleInUse`, `Store`.
    pub async fn delete_db_role(&self, p: &Principal, name: &KeyName) -> Result<(), ServiceError> {
        let role = self.authorized_role(p, Action::DbAdmin, name).await?;
        let live = self
            .store
            .list_db_leases(&DbLeaseFilter {
                role: Some(&role.name),
                live: true,
                limit: 1,
                ..DbLeaseFilter::default()
            })
            .await?;
        if !live.is_empty() {
            return Err(ServiceError::DbRoleInUse(role.name));
        }
        self.changing().await?;
        self.store.delete_db_role(&role.name).await?;
        if matches!(role.spec, RoleSpec::Static(_)) {
            self.destroy_internal(&role_path(&role.connection, &role.name)?)
                .await;
        }
        tracing::info!(db_role = %role.name, "database role deleted");
        Ok(())
    }

    /// A static role's password: the current one, or `version` when it is the current one or
    /// the previous one within its overlap. A pending rotation is finished first; when that
    /// cannot be done now (the database is down), the current password is returned.
    ///
    /// # Errors
    /// `Forbidden`, `DbRoleNotFound`, `DbRoleKind`, `DbPasswordVersionNotFound`, `Database`
    /// (no password was ever set and the database is down), `Backend`, `Store`.
    #[tracing::instrument(skip_all, fields(op = "db_static_creds", role = %name))]
    pub async fn static_creds(
        &self,
        p: &Principal,
        name: &KeyName,
        version: Option<u32>,
    ) -> Result<StaticCreds, ServiceError> {
        let mut role = self.authorized_role(p, Action::DbCreds, name).await?;
        let RoleSpec::Static(spec) = role.spec.clone() else {
            return Err(ServiceError::DbRoleKind {
                role: role.name,
                wanted: "static",
            });
        };
        note::detail("db_user", spec.username.as_str());
        if role.state.pending.is_some() || role.state.current.is_none() {
            match self.rotate_static(&role.name, Step::CompletePending).await {
                Ok(_) => {}
                Err(e) if role.state.current.is_some() => {
                    tracing::warn!(db_role = %role.name, error = %e, "a pending rotation could not be finished; the current password is returned");
                }
                Err(e) => return Err(e),
            }
            role = self
                .store
                .db_role(&role.name)
                .await?
                .ok_or_else(|| ServiceError::DbRoleNotFound(name.to_string()))?;
        }
        let now = crate::clock::now();
        let current = role
            .state
            .current
            .ok_or(ServiceError::DbPasswordVersionNotFound(0))?;
        let chosen = match version {
            None => current,
            Some(v) if v == current => current,
            Some(v)
                if Some(v) == role.state.previous
                    && role.state.previous_until.is_some_and(|t| now < t) =>
            {
                v
            }
            Some(v) => return Err(ServiceError::DbPasswordVersionNotFound(v)),
        };
        note::detail("db_password_version", chosen.to_string());
        let password = self
            .read_internal_secret(&role_path(&role.connection, &role.name)?, chosen)
            .await?;
        Ok(StaticCreds {
            role: role.name,
            connection: role.connection,
            username: spec.username,
            password: Zeroizing::new(
                String::from_utf8_lossy(password.expose_secret()).into_owned(),
            ),
            version: chosen,
            current: chosen == current,
            rotated_at: role.state.last_rotated_at,
            ttl_seconds: role.next_rotation_at.map(|t| seconds_until(t, now)),
        })
    }

    /// Rotates a static role's password now.
    ///
    /// # Errors
    /// `Forbidden`, `DbRoleNotFound`, `DbRoleKind`, `Database` (the old password stays current
    /// and the rotation is retried in the background), `ConcurrentChange`, `Backend`, `Store`.
    #[tracing::instrument(skip_all, fields(op = "db_rotate", role = %name))]
    pub async fn rotate_db_role(
        &self,
        p: &Principal,
        name: &KeyName,
    ) -> Result<RotatedRole, ServiceError> {
        let role = self.authorized_role(p, Action::DbRotate, name).await?;
        if !matches!(role.spec, RoleSpec::Static(_)) {
            return Err(ServiceError::DbRoleKind {
                role: role.name,
                wanted: "static",
            });
        }
        let version = self.rotate_static(&role.name, Step::Rotate).await?;
        Ok(RotatedRole {
            role: role.name,
            version: version.unwrap_or(0),
        })
    }

    /// One step of a static role's rotation (module docs). Returns the version current after
    /// it (`None` when there is none yet and nothing was pending).
    async fn rotate_static(&self, name: &str, step: Step) -> Result<Option<u32>, ServiceError> {
        for _ in 0..MAX_ATTEMPTS {
            let role = self
                .store
                .db_role(name)
                .await?
                .ok_or_else(|| ServiceError::DbRoleNotFound(name.to_owned()))?;
            let RoleSpec::Static(spec) = role.spec.clone() else {
                return Err(ServiceError::DbRoleKind {
                    role: role.name,
                    wanted: "static",
                });
            };
            note_role(&role.connection, &role.name);
            note::detail("db_user", spec.username.as_str());
            let path = role_path(&role.connection, &role.name)?;
            let conn = self.connection_record(&role.connection).await?;
            let (role, pending) = match role.state.pending {
                Some(v) => (role, v),
                None if step == Step::CompletePending => return Ok(role.state.current),
                None => {
                    let password = database::generated_password().map_err(random_failed)?;
                    self.changing().await?;
                    let version = self
                        .write_internal_secret(
                            &path,
                            &SecretBytes::copy_from(password.expose_secret().as_bytes()),
                            conn.key_id,
                        )
                        .await?;
                    let mut next = role.clone();
                    next.state.pending = Some(version);
                    next.revision = role.revision + 1;
                    next.updated_at = crate::clock::now();
                    if !self.store.put_db_role(&next, Some(role.revision)).await? {
                        // Another writer moved the role on; this version is never handed out.
                        continue;
                    }
                    (next, version)
                }
            };
            note::detail("db_password_version", pending.to_string());
            self.changing().await?;
            // The password is set, and the step recorded, under the database's lock on the
            // role's password: a holder that finds the role moved on while it waited does not
            // set a password that is no longer the one to hand out.
            let hold = match self.plugin_for(&conn).await {
                Ok(plugin) => plugin
                    .lock_password(&spec.username)
                    .await
                    .map_err(ServiceError::Database),
                Err(e) => Err(e),
            };
            let applied = match hold {
                Ok(hold) => {
                    let fresh = self
                        .store
                        .db_role(name)
                        .await?
                        .ok_or_else(|| ServiceError::DbRoleNotFound(name.to_owned()))?;
                    if fresh.revision != role.revision {
                        drop(hold);
                        if fresh.state.pending.is_none() && fresh.state.current == Some(pending) {
                            // Another holder finished this very step.
                            return Ok(Some(pending));
                        }
                        continue;
                    }
                    let set = async {
                        let password = self.read_internal_secret(&path, pending).await?;
                        let text = std::str::from_utf8(password.expose_secret()).map_err(|_| {
                            ServiceError::Backend(crate::backend::BackendError::Invariant(
                                "a stored role password is not UTF-8",
                            ))
                        })?;
                        hold.set_password(&SecretString::from(text.to_owned()))
                            .await
                            .map_err(ServiceError::Database)
                    }
                    .await;
                    set.map(|()| hold)
                }
                Err(e) => Err(e),
            };
            let now = crate::clock::now();
            let mut next = role.clone();
            next.revision = role.revision + 1;
            next.updated_at = now;
            if let Err(e) = applied {
                // The old password stays current; the pending one is set again later.
                next.state.failures = role.state.failures.saturating_add(1);
                next.next_rotation_at = Some(now + backoff(next.state.failures));
                if let Err(se) = self.store.put_db_role(&next, Some(role.revision)).await {
                    tracing::warn!(db_role = %role.name, error = %se, "could not schedule a rotation retry");
                }
                tracing::warn!(db_role = %role.name, error = %e, "setting a rotated password in the database failed; retrying later");
                return Err(e);
            }
            next.state.previous = role.state.current;
            next.state.previous_until = role
                .state
                .current
                .map(|_| now + Duration::from_secs(spec.overlap_secs));
            next.state.current = Some(pending);
            next.state.pending = None;
            next.state.last_rotated_at = Some(now);
            next.state.failures = 0;
            next.next_rotation_at = spec
                .rotation_period_secs
                .map(|s| now + Duration::from_secs(s));
            let recorded = self.store.put_db_role(&next, Some(role.revision)).await;
            // Released only once the step is recorded (or not): see above.
            drop(applied);
            if recorded? {
                note::detail("db_rotated", "true");
                tracing::info!(db_role = %role.name, version = pending, "database role password rotated");
                return Ok(Some(pending));
            }
            // The role changed (its settings were written) between the check and the record:
            // look again; the pending version is set again, which changes nothing.
        }
        Err(ServiceError::ConcurrentChange)
    }

    /// Creates a database user for a dynamic role, under a lease.
    ///
    /// # Errors
    /// `Forbidden`, `DbRoleNotFound`, `DbRoleKind`, `LeaseMaxTtlExceeded`, `Database`
    /// (`Statement`, `Unavailable`), `Backend`, `Store`.
    #[tracing::instrument(skip_all, fields(op = "db_creds", role = %name))]
    pub async fn create_db_creds(
        &self,
        p: &Principal,
        name: &KeyName,
        ttl: Option<HumanDuration>,
    ) -> Result<DbCreds, ServiceError> {
        let role = self.authorized_role(p, Action::DbCreds, name).await?;
        let RoleSpec::Dynamic(spec) = &role.spec else {
            return Err(ServiceError::DbRoleKind {
                role: role.name,
                wanted: "dynamic",
            });
        };
        let ttl = ttl.map_or(spec.default_ttl_secs, |t| secs(t.0));
        if ttl > spec.max_ttl_secs {
            return Err(ServiceError::LeaseMaxTtlExceeded {
                asked: ttl,
                left: spec.max_ttl_secs,
            });
        }
        if ttl == 0 {
            return Err(ServiceError::InvalidDbRole(
                "ttl must be at least 1s".into(),
            ));
        }
        let conn = self.connection_record(&role.connection).await?;
        let plugin = self.plugin_for(&conn).await?;
        let username = database::generated_username(&role.name).map_err(random_failed)?;
        let password = database::generated_password().map_err(random_failed)?;
        let id = format!(
            "{LEASE_PREFIX}{}",
            database::random_text(LEASE_RANDOM_CHARS)
                .map_err(random_failed)?
                .as_str()
        );
        let now = crate::clock::now();
        let mut lease = DbLeaseRecord {
            id,
            role: role.name.clone(),
            connection: role.connection.clone(),
            username,
            principal: p.name.clone(),
            credential_id: p.credential_id.clone(),
            created_at: now,
            expires_at: now + Duration::from_secs(ttl),
            max_expires_at: now + Duration::from_secs(spec.max_ttl_secs),
            retry_at: None,
            failures: 0,
            revoked_at: None,
        };
        note::detail("db_user", lease.username.as_str());
        note::detail("lease_id", lease.id.as_str());
        self.changing().await?;
        // Recorded first: a user is never created that no lease will revoke.
        self.store.insert_db_lease(&lease).await?;
        let created = plugin
            .run_statements(
                &spec.creation,
                &NewUser {
                    name: &lease.username,
                    password: &password,
                    expiration: lease.expires_at,
                },
            )
            .await;
        if let Err(e) = created {
            // Whatever part of the creation took effect is revoked by the background duty.
            lease.expires_at = now;
            if let Err(se) = self.store.update_db_lease(&lease).await {
                tracing::warn!(lease_id = %lease.id, error = %se, "could not end a lease whose user was not created");
            }
            return Err(ServiceError::Database(e));
        }
        tracing::info!(lease_id = %lease.id, db_role = %role.name, db_user = %lease.username, "database credentials created");
        Ok(DbCreds {
            username: lease.username.clone(),
            password: Zeroizing::new(password.expose_secret().to_owned()),
            lease: lease_view(&lease, now),
        })
    }

    /// The lease `id`, authorised as `db:creds` on its role for `p`.
    async fn authorized_lease(
        &self,
        p: &Principal,
        id: &str,
    ) -> Result<DbLeaseRecord, ServiceError> {
        let Some(lease) = self.store.db_lease(id).await? else {
            self.authorize(p, Action::DbCreds, &Resource::all("db"), None)
                .await?;
            return Err(ServiceError::DbLeaseNotFound(id.to_owned()));
        };
        self.authorize(
            p,
            Action::DbCreds,
            &role_resource(&lease.connection, &lease.role),
            None,
        )
        .await?;
        note_role(&lease.connection, &lease.role);
        note::detail("db_user", lease.username.as_str());
        note::detail("lease_id", lease.id.as_str());
        Ok(lease)
    }

    /// Renews a lease to now + `increment` (or the role's default TTL).
    ///
    /// # Errors
    /// `Forbidden`, `DbLeaseNotFound`, `DbLeaseEnded`, `LeaseMaxTtlExceeded`, `Database`,
    /// `Store`.
    #[tracing::instrument(skip_all, fields(op = "db_lease_renew"))]
    pub async fn renew_db_lease(
        &self,
        p: &Principal,
        id: &str,
        increment: Option<HumanDuration>,
    ) -> Result<DbLease, ServiceError> {
        let mut lease = self.authorized_lease(p, id).await?;
        let now = crate::clock::now();
        if lease.revoked_at.is_some() || lease.expires_at <= now {
            return Err(ServiceError::DbLeaseEnded);
        }
        let role = self
            .store
            .db_role(&lease.role)
            .await?
            .ok_or_else(|| ServiceError::DbRoleNotFound(lease.role.clone()))?;
        let RoleSpec::Dynamic(spec) = &role.spec else {
            return Err(ServiceError::DbRoleKind {
                role: role.name,
                wanted: "dynamic",
            });
        };
        let asked = increment.map_or(spec.default_ttl_secs, |d| secs(d.0));
        let expires_at = now + Duration::from_secs(asked);
        if expires_at > lease.max_expires_at {
            return Err(ServiceError::LeaseMaxTtlExceeded {
                asked,
                left: seconds_until(lease.max_expires_at, now),
            });
        }
        let conn = self.connection_record(&lease.connection).await?;
        let plugin = self.plugin_for(&conn).await?;
        self.changing().await?;
        let renew = if spec.renew.is_empty() {
            vec![DEFAULT_RENEW.to_owned()]
        } else {
            spec.renew.clone()
        };
        let unused = SecretString::from(String::new());
        plugin
            .run_statements(
                &renew,
                &NewUser {
                    name: &lease.username,
                    password: &unused,
                    expiration: expires_at,
                },
            )
            .await?;
        lease.expires_at = expires_at;
        if !self.store.update_db_lease(&lease).await? {
            return Err(ServiceError::DbLeaseEnded);
        }
        Ok(lease_view(&lease, now))
    }

    /// Revokes a lease now (a revoked lease: nothing to do).
    ///
    /// # Errors
    /// `Forbidden`, `DbLeaseNotFound`, `Database` (the lease is then revoked by the background
    /// duty once the database is back), `Store`.
    #[tracing::instrument(skip_all, fields(op = "db_lease_revoke"))]
    pub async fn revoke_db_lease(&self, p: &Principal, id: &str) -> Result<(), ServiceError> {
        let lease = self.authorized_lease(p, id).await?;
        if lease.revoked_at.is_some() {
            return Ok(());
        }
        self.revoke_lease(lease).await
    }

    /// Runs a lease's revocation and records it, once. On failure the lease is left due, with
    /// a back-off, for the background duty.
    async fn revoke_lease(&self, mut lease: DbLeaseRecord) -> Result<(), ServiceError> {
        note_role(&lease.connection, &lease.role);
        note::detail("db_user", lease.username.as_str());
        note::detail("lease_id", lease.id.as_str());
        let statements = match self.store.db_role(&lease.role).await? {
            Some(DbRoleRecord {
                spec: RoleSpec::Dynamic(d),
                ..
            }) => d.revocation,
            _ => Vec::new(),
        };
        self.changing().await?;
        let revoked = async {
            let conn = self.connection_record(&lease.connection).await?;
            self.plugin_for(&conn)
                .await?
                .revoke(&statements, &lease.username)
                .await
                .map_err(ServiceError::Database)
        }
        .await;
        let now = crate::clock::now();
        if let Err(e) = revoked {
            lease.failures = lease.failures.saturating_add(1);
            lease.expires_at = lease.expires_at.min(now);
            lease.retry_at = Some(now + backoff(lease.failures));
            if let Err(se) = self.store.update_db_lease(&lease).await {
                tracing::warn!(lease_id = %lease.id, error = %se, "could not schedule a revocation retry");
            }
            tracing::warn!(lease_id = %lease.id, error = %e, "revoking a lease failed; retrying later");
            return Err(e);
        }
        lease.revoked_at = Some(now);
        lease.retry_at = None;
        if self.store.update_db_lease(&lease).await? {
            note::detail("lease_revoked", "true");
            tracing::info!(lease_id = %lease.id, db_user = %lease.username, "lease revoked");
        }
        Ok(())
    }

    /// Ends (makes due now) the live leases created with the token `token_id` whose role says
    /// so (`on_token_revoke = revoke`); the background duty revokes them. Returns how many.
    ///
    /// # Errors
    /// `Store`.
    pub(crate) async fn end_token_leases(&self, token_id: &str) -> Result<usize, ServiceError> {
        let leases = self
            .store
            .list_db_leases(&DbLeaseFilter {
                credential_id: Some(token_id),
                live: true,
                limit: 10_000,
                ..DbLeaseFilter::default()
            })
            .await?;
        let now = crate::clock::now();
        let mut ended = 0;
        for mut lease in leases {
            let keep = matches!(
                self.store.db_role(&lease.role).await?,
                Some(DbRoleRecord {
                    spec: RoleSpec::Dynamic(DynamicSpec {
                        on_token_revoke: OnTokenRevoke::Keep,
                        ..
                    }),
                    ..
                })
            );
            if keep || lease.expires_at <= now {
                continue;
            }
            lease.expires_at = now;
            if self.store.update_db_lease(&lease).await? {
                ended += 1;
            }
        }
        Ok(ended)
    }

    /// The background duty's pass: due static rotations (and retries), then due lease
    /// revocations, each a unit of work of its own, recorded as the system.
    pub(crate) async fn run_database_duties(&self, now: OffsetDateTime) {
        match self.store.due_db_rotations(now, BATCH).await {
            Ok(due) => {
                for role in due {
                    let resource = format!("db/{}/{}", role.connection, role.name);
                    let unit = self.rotate_static(&role.name, Step::Rotate);
                    if let Err(e) = self
                        .in_background("db-rotation", Action::DbRotate.as_str(), &resource, unit)
                        .await
                    {
                        tracing::warn!(db_role = %role.name, error = %e, "scheduled database role rotation failed; retrying later");
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "listing due database role rotations failed"),
        }
        let due = self
            .store
            .list_db_leases(&DbLeaseFilter {
                due_at: Some(now),
                limit: BATCH,
                ..DbLeaseFilter::default()
            })
            .await;
        match due {
            Ok(due) => {
                for lease in due {
                    let resource = format!("db/{}/{}", lease.connection, lease.role);
                    let id = lease.id.clone();
                    let unit = self.revoke_lease(lease);
                    if let Err(e) = self
                        .in_background("db-lease-expiry", Action::DbCreds.as_str(), &resource, unit)
                        .await
                    {
                        tracing::warn!(lease_id = %id, error = %e, "revoking an ended lease failed; retrying later");
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "listing ended database leases failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dynamic(creation: &[&str]) -> PutDbRoleRequest {
        PutDbRoleRequest {
            connection: "c".into(),
            kind: "dynamic".into(),
            username: None,
            rotation_period: None,
            overlap: None,
            creation_statements: creation.iter().map(|s| (*s).to_owned()).collect(),
            revocation_statements: Vec::new(),
            renew_statements: Vec::new(),
            default_ttl: None,
            max_ttl: None,
            on_token_revoke: None,
        }
    }

    #[test]
    fn role_definitions_are_checked() {
        let hour = Duration::from_secs(3600);
        assert!(role_spec(
            &dynamic(&["CREATE ROLE {{name}} LOGIN PASSWORD {{password}}"]),
            hour
        )
        .is_ok());
        assert!(role_spec(&dynamic(&[]), hour).is_err());
        assert!(role_spec(&dynamic(&["CREATE ROLE fixed"]), hour).is_err());
        assert!(role_spec(&dynamic(&["CREATE ROLE {{name}} {{oops}}"]), hour).is_err());
        let mut r = dynamic(&["CREATE ROLE {{name}}"]);
        r.default_ttl = Some(HumanDuration(Duration::from_secs(7200)));
        r.max_ttl = Some(HumanDuration(Duration::from_secs(3600)));
        assert!(role_spec(&r, hour).is_err());
        let mut s = dynamic(&[]);
        s.kind = "static".into();
        assert!(role_spec(&s, hour).is_err(), "static without username");
        s.username = Some("app".into());
        assert!(role_spec(&s, hour).is_ok());
        s.rotation_period = Some(HumanDuration(Duration::from_secs(60)));
        assert!(role_spec(&s, hour).is_err(), "period under the minimum");
        s.rotation_period = None;
        s.creation_statements = vec!["CREATE ROLE {{name}}".into()];
        assert!(role_spec(&s, hour).is_err(), "static with templates");
    }

    #[test]
    fn lease_ids_have_one_shape() {
        let id = format!(
            "{LEASE_PREFIX}{}",
            database::random_text(LEASE_RANDOM_CHARS).unwrap().as_str()
        );
        assert!(is_lease_id(&id), "{id}");
        assert!(!is_lease_id("dbl_"));
        assert!(!is_lease_id(&id.to_uppercase()));
        assert!(!is_lease_id(&format!("{id}a")));
    }
}
