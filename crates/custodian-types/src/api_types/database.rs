//! Database credentials (issue 24): the bodies of `/v1/db/…`. A connection names a target
//! database and the admin Custodian changes it as; a role is either *static* (Custodian owns the
//! password of an existing database role and rotates it in the database) or *dynamic* (each
//! request creates a fresh database user under a lease). Passwords appear only in the answers
//! that hand one out, never in a connection's or a role's description.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use zeroize::Zeroizing;

use super::{described_ref, schema_fns, string_enum};
use crate::domain::secret::HumanDuration;

/// `POST /v1/db/connections` body. `S` is the admin password: the server reads it into a
/// zeroising secret, the client sends the text it read from a file.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(bound = "", description = "`POST /v1/db/connections` body.")]
pub struct CreateDbConnectionRequest<S = secrecy::SecretString> {
    /// The connection's name (key name rules).
    #[schema(schema_with = db_connection_name_schema)]
    pub name: String,
    /// The database kind; only `postgresql` today.
    #[serde(default = "postgresql")]
    #[schema(schema_with = db_plugin_schema)]
    pub plugin: String,
    /// `postgres://host:port/dbname` (no user, no password: those are separate fields).
    #[schema(max_length = 1024)]
    pub url: String,
    /// The admin role Custodian connects as (needs `CREATEROLE`, or to be superuser).
    #[schema(max_length = 63)]
    pub admin_user: String,
    /// The admin's password, stored sealed like a secret and never returned.
    #[schema(value_type = String, max_length = 1024)]
    pub admin_password: S,
    /// TLS: `disable`, `require` (encrypted, certificate not checked) or `verify-full` (needs
    /// `ca_pem`).
    #[serde(default = "disable")]
    #[schema(schema_with = db_sslmode_schema)]
    pub sslmode: String,
    /// PEM of the CA(s) that issue the database server's certificate (`verify-full`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 65536)]
    pub ca_pem: Option<String>,
    /// The Custodian key (name, id or `alias/…`) whose data keys seal the passwords of this
    /// connection; absent: `secrets.default_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

fn postgresql() -> String {
    "postgresql".to_owned()
}

fn disable() -> String {
    "disable".to_owned()
}

impl CreateDbConnectionRequest {
    /// Every field, for the server's `unknown_field` check.
    pub const FIELDS: &'static [&'static str] = &[
        "name",
        "plugin",
        "url",
        "admin_user",
        "admin_password",
        "sslmode",
        "ca_pem",
        "key",
    ];
}

impl<S> fmt::Debug for CreateDbConnectionRequest<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateDbConnectionRequest")
            .field("name", &self.name)
            .field("plugin", &self.plugin)
            .field("url", &self.url)
            .field("admin_user", &self.admin_user)
            .field("admin_password", &"[REDACTED]")
            .field("sslmode", &self.sslmode)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// A connection as the API shows it: never the admin password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DbConnection {
    /// Its name.
    pub name: String,
    /// The database kind (`postgresql`).
    pub plugin: String,
    /// Where it connects.
    pub url: String,
    /// The admin role.
    pub admin_user: String,
    /// The TLS mode.
    pub sslmode: String,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

/// `GET /v1/db/connections` response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DbConnectionList {
    /// The connections the caller may administer, by name.
    pub connections: Vec<DbConnection>,
}

/// `PUT /v1/db/roles/{name}` body: a static role names `username`; a dynamic role gives
/// `creation_statements` (and may give the others).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(description = "`PUT /v1/db/roles/{name}` body.")]
pub struct PutDbRoleRequest {
    /// The connection the role belongs to (it cannot change later).
    pub connection: String,
    /// `static` or `dynamic`.
    #[schema(schema_with = db_role_kind_schema)]
    pub kind: String,
    /// Static: the existing database role whose password Custodian owns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 63)]
    pub username: Option<String>,
    /// Static: how often the password is rotated (at least `secrets.min_rotate_every`);
    /// absent: only on demand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = db_optional_duration_schema)]
    pub rotation_period: Option<HumanDuration>,
    /// Static: how long the previous password stays readable (by version) after a rotation;
    /// absent: not at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = db_optional_duration_schema)]
    pub overlap: Option<HumanDuration>,
    /// Dynamic: SQL run (in one transaction) to create the user, with `{{name}}`,
    /// `{{password}}` and `{{expiration}}` placeholders (each replaced by a quoted identifier
    /// or literal: write no quotes around them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 16)]
    pub creation_statements: Vec<String>,
    /// Dynamic: SQL run to remove the user (`{{name}}`); absent: the user's sessions are ended
    /// and it is dropped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 16)]
    pub revocation_statements: Vec<String>,
    /// Dynamic: SQL run when a lease is renewed (`{{name}}`, `{{expiration}}`); absent: the
    /// user's `VALID UNTIL` moves to the new expiry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 16)]
    pub renew_statements: Vec<String>,
    /// Dynamic: a lease's TTL when the request names none (default 1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = db_optional_duration_schema)]
    pub default_ttl: Option<HumanDuration>,
    /// Dynamic: the longest a lease can live, renewals included (default 24h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = db_optional_duration_schema)]
    pub max_ttl: Option<HumanDuration>,
    /// Dynamic: whether revoking the token that created a lease revokes the lease (`revoke`,
    /// the default) or leaves it to expire (`keep`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = db_on_token_revoke_schema)]
    pub on_token_revoke: Option<String>,
}

impl PutDbRoleRequest {
    /// Every field, for the server's `unknown_field` check.
    pub const FIELDS: &'static [&'static str] = &[
        "connection",
        "kind",
        "username",
        "rotation_period",
        "overlap",
        "creation_statements",
        "revocation_statements",
        "renew_statements",
        "default_ttl",
        "max_ttl",
        "on_token_revoke",
    ];
}

/// A role as the API shows it (never a password).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DbRole {
    /// Its name.
    pub name: String,
    /// Its connection.
    pub connection: String,
    /// `static` or `dynamic`.
    pub kind: String,
    /// Static: the database role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Static: rotation period in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_period_seconds: Option<u64>,
    /// Static: overlap in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap_seconds: Option<u64>,
    /// Static: the version of the password Custodian gives out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<u32>,
    /// Static: a rotation that has not yet been confirmed applied in the database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_version: Option<u32>,
    /// Static: when the password last changed in the database.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_rotated_at: Option<OffsetDateTime>,
    /// Static: when the next scheduled rotation (or retry) runs.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_rotation_at: Option<OffsetDateTime>,
    /// Dynamic: the creation statements.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub creation_statements: Vec<String>,
    /// Dynamic: the revocation statements.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revocation_statements: Vec<String>,
    /// Dynamic: the renewal statements.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub renew_statements: Vec<String>,
    /// Dynamic: default TTL in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_ttl_seconds: Option<u64>,
    /// Dynamic: max TTL in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ttl_seconds: Option<u64>,
    /// Dynamic: `revoke` or `keep`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_token_revoke: Option<String>,
}

/// `GET /v1/db/roles` response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DbRoleList {
    /// The roles the caller may administer, by name.
    pub roles: Vec<DbRole>,
}

/// `GET /v1/db/static-creds/{name}` query: `?version=`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticCredsQuery {
    /// A version other than the current one (the previous one, within its overlap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
}

/// `GET /v1/db/static-creds/{name}` response.
///
/// # Security
/// `Debug` never shows the password.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct StaticCreds {
    /// The role.
    pub role: String,
    /// Its connection.
    pub connection: String,
    /// The database user to log in as.
    pub username: String,
    /// Its password.
    #[schema(value_type = String)]
    pub password: Zeroizing<String>,
    /// The password's version (each rotation adds one).
    pub version: u32,
    /// Whether it is the current password (`false`: the previous one, inside its overlap).
    pub current: bool,
    /// When the password last changed in the database.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub rotated_at: Option<OffsetDateTime>,
    /// Seconds until the next scheduled rotation, if one is scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

impl fmt::Debug for StaticCreds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticCreds")
            .field("role", &self.role)
            .field("username", &self.username)
            .field("password", &"[REDACTED]")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// `POST /v1/db/rotate-role/{name}` response: the version now current.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RotatedRole {
    /// The role.
    pub role: String,
    /// The password version now current.
    pub version: u32,
}

/// `POST /v1/db/creds/{name}` body (optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(description = "`POST /v1/db/creds/{name}` body (optional).")]
pub struct DbCredsRequest {
    /// The lease's TTL (at most the role's `max_ttl`); absent: the role's `default_ttl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = db_optional_duration_schema)]
    pub ttl: Option<HumanDuration>,
}

impl DbCredsRequest {
    /// Every field, for the server's `unknown_field` check.
    pub const FIELDS: &'static [&'static str] = &["ttl"];
}

/// A lease on a dynamic database user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DbLease {
    /// The lease id (`dbl_` and 26 characters of `a-z2-7`).
    pub id: String,
    /// The role.
    pub role: String,
    /// Its connection.
    pub connection: String,
    /// The database user.
    pub username: String,
    /// Seconds until it ends, from when this answer was made.
    pub ttl_seconds: u64,
    /// Seconds from creation to the latest it may be renewed to.
    pub max_ttl_seconds: u64,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// When it ends (the user is revoked then).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
    /// The latest it may be renewed to.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub max_expires_at: OffsetDateTime,
    /// When it was revoked, if it was.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<OffsetDateTime>,
}

/// `POST /v1/db/creds/{name}` response: a fresh user, its password, and its lease.
///
/// # Security
/// `Debug` never shows the password.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct DbCreds {
    /// The database user to log in as.
    pub username: String,
    /// Its password.
    #[schema(value_type = String)]
    pub password: Zeroizing<String>,
    /// The lease.
    pub lease: DbLease,
}

impl fmt::Debug for DbCreds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbCreds")
            .field("username", &self.username)
            .field("password", &"[REDACTED]")
            .field("lease", &self.lease)
            .finish()
    }
}

/// `POST /v1/db/leases/{id}/renew` body (optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(description = "`POST /v1/db/leases/{id}/renew` body (optional).")]
pub struct RenewLeaseRequest {
    /// The new TTL from now; absent: the role's `default_ttl`. Past the lease's max TTL is
    /// refused (`lease_max_ttl_exceeded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = db_optional_duration_schema)]
    pub increment: Option<HumanDuration>,
}

impl RenewLeaseRequest {
    /// Every field, for the server's `unknown_field` check.
    pub const FIELDS: &'static [&'static str] = &["increment"];
}

schema_fns! {
    /// `name` of a connection.
    db_connection_name_schema => described_ref("KeyName", "The connection's name.");
    /// `plugin`.
    db_plugin_schema => string_enum(&["postgresql"], Some("postgresql"), Some("The database kind."));
    /// `sslmode`.
    db_sslmode_schema => string_enum(
        &["disable", "require", "verify-full"],
        Some("disable"),
        Some("TLS to the database."),
    );
    /// `kind`.
    db_role_kind_schema => string_enum(&["static", "dynamic"], None, Some("The role's kind."));
    /// `on_token_revoke`.
    db_on_token_revoke_schema => string_enum(
        &["revoke", "keep"],
        Some("revoke"),
        Some("What revoking the creating token does to the lease."),
    );
    /// An optional duration.
    db_optional_duration_schema => described_ref("Duration", "A duration (`90d`, `1h30m`, `45s`).");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_passwords() -> Result<(), serde_json::Error> {
        let req: CreateDbConnectionRequest<String> = serde_json::from_str(
            r#"{"name": "n", "url": "postgres://h/db", "admin_user": "a",
                "admin_password": "hunter2-admin"}"#,
        )?;
        assert!(!format!("{req:?}").contains("hunter2"));
        let creds = StaticCreds {
            role: "r".into(),
            connection: "c".into(),
            username: "u".into(),
            password: Zeroizing::new("hunter2-static".into()),
            version: 1,
            current: true,
            rotated_at: None,
            ttl_seconds: None,
        };
        assert!(!format!("{creds:?}").contains("hunter2"));
        let now = OffsetDateTime::now_utc();
        let dynamic = DbCreds {
            username: "u".into(),
            password: Zeroizing::new("hunter2-dynamic".into()),
            lease: DbLease {
                id: "dbl_x".into(),
                role: "r".into(),
                connection: "c".into(),
                username: "u".into(),
                ttl_seconds: 1,
                max_ttl_seconds: 2,
                created_at: now,
                expires_at: now,
                max_expires_at: now,
                revoked_at: None,
            },
        };
        assert!(!format!("{dynamic:?}").contains("hunter2"));
        Ok(())
    }
}
