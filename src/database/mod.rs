//! Target databases whose credentials Custodian manages (issue 24): the [`DatabasePlugin`]
//! trait the service drives, and its PostgreSQL implementation. Another database kind is
//! another implementation of the trait; the service, the store and the API do not change.
//!
//! A plugin never sees a caller's text raw: usernames it creates come from a fixed alphabet,
//! passwords are sent as SCRAM verifiers computed here (the plaintext never reaches the
//! database's logs), and every value placed into SQL is quoted by the database's own rules.

use std::time::Duration;

use async_trait::async_trait;
use secrecy::SecretString;
use time::OffsetDateTime;

pub mod postgres;

/// The database kinds Custodian can manage.
pub const PLUGINS: &[&str] = &["postgresql"];

/// Why a database operation failed. Grouped by who is at fault.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// The database cannot be reached now (connection refused, timed out, shutting down):
    /// retry later.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The admin's login was refused (wrong password, unknown role, `pg_hba` rules).
    #[error("the database refused the admin's login: {0}")]
    LoginFailed(String),
    /// The admin may not manage roles.
    #[error("the admin role may not manage roles: {0}")]
    Privileges(String),
    /// A database role a static role names does not exist.
    #[error("no database role named {0:?}")]
    RoleMissing(String),
    /// A statement failed (a template that does not parse, a grant on a missing table); the
    /// transaction rolled back.
    #[error("a statement failed ({code}): {message}")]
    Statement {
        /// The SQLSTATE.
        code: String,
        /// The database's message (it names objects, never a password: passwords travel as
        /// quoted SCRAM verifiers).
        message: String,
    },
    /// The connection settings are unusable (a URL that does not parse, a bad CA).
    #[error("unusable connection settings: {0}")]
    Settings(String),
}

/// Where and how a plugin connects: the URL (without user or password), the admin and its
/// password, TLS.
#[derive(Clone)]
pub struct Target {
    /// `postgres://host:port/dbname`.
    pub url: String,
    /// The admin role.
    pub admin_user: String,
    /// The admin's password.
    pub admin_password: SecretString,
    /// `disable`, `require` or `verify-full`.
    pub sslmode: String,
    /// The CA for `verify-full`.
    pub ca_pem: Option<String>,
    /// How long a connection attempt may take.
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url)
            .field("admin_user", &self.admin_user)
            .field("admin_password", &"[REDACTED]")
            .field("sslmode", &self.sslmode)
            .finish_non_exhaustive()
    }
}

/// The values a dynamic role's statements are given.
pub struct NewUser<'a> {
    /// The generated username (safe alphabet).
    pub name: &'a str,
    /// Its password.
    pub password: &'a SecretString,
    /// When its login stops working (`VALID UNTIL`).
    pub expiration: OffsetDateTime,
}

/// A database kind Custodian manages credentials in.
#[async_trait]
pub trait DatabasePlugin: Send + Sync {
    /// Connects as the admin and checks that it may manage roles.
    ///
    /// # Errors
    /// `Unavailable`, `LoginFailed`, `Privileges`, `Settings`.
    async fn verify(&self) -> Result<(), DatabaseError>;

    /// Whether a database role named `username` exists.
    ///
    /// # Errors
    /// As [`DatabasePlugin::verify`].
    async fn role_exists(&self, username: &str) -> Result<bool, DatabaseError>;

    /// Takes the database-side lock on `username`'s password: while the returned hold lives,
    /// no other holder (on any node) changes that role's password. Dropping it releases the
    /// lock (so does a crash: the lock belongs to the holder's session).
    ///
    /// # Errors
    /// A connection error, or `Unavailable` when the lock is not granted in time.
    async fn lock_password(&self, username: &str) -> Result<Box<dyn PasswordHold>, DatabaseError>;

    /// Runs `statements` (creation or renewal templates) for `user` in one transaction.
    ///
    /// # Errors
    /// `Statement`, or a connection error.
    async fn run_statements(
        &self,
        statements: &[String],
        user: &NewUser<'_>,
    ) -> Result<(), DatabaseError>;

    /// Revokes `username`: runs `statements` (or the plugin's default) in one transaction when
    /// the user exists; a user that is already gone is revoked (so revocation can be retried).
    ///
    /// # Errors
    /// `Statement`, or a connection error.
    async fn revoke(&self, statements: &[String], username: &str) -> Result<(), DatabaseError>;
}

/// A held lock on one database role's password ([`DatabasePlugin::lock_password`]).
#[async_trait]
pub trait PasswordHold: Send + Sync {
    /// Sets the role's password (idempotent: setting the same password twice leaves the same
    /// state).
    ///
    /// # Errors
    /// `RoleMissing`, `Statement`, or a connection error.
    async fn set_password(&self, password: &SecretString) -> Result<(), DatabaseError>;
}

/// The plugin for `kind` connecting to `target`.
///
/// # Errors
/// `Settings` for an unknown kind or unusable settings.
pub fn plugin(kind: &str, target: Target) -> Result<Box<dyn DatabasePlugin>, DatabaseError> {
    match kind {
        "postgresql" => Ok(Box::new(postgres::Postgres::new(target)?)),
        other => Err(DatabaseError::Settings(format!(
            "unknown database kind {other:?} (known: {})",
            PLUGINS.join(", ")
        ))),
    }
}

/// The characters of generated usernames and passwords: lowercase letters and digits, safe in
/// any identifier or literal and in a URL.
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// `n` characters of [`ALPHABET`] from the OS random source.
///
/// # Errors
/// The OS random source failing.
pub fn random_text(n: usize) -> Result<zeroize::Zeroizing<String>, getrandom::Error> {
    let mut bytes = zeroize::Zeroizing::new(vec![0u8; n]);
    getrandom::getrandom(&mut bytes[..])?;
    let mut out = zeroize::Zeroizing::new(String::with_capacity(n));
    for b in bytes.iter() {
        out.push(char::from(ALPHABET[usize::from(b & 31)]));
    }
    Ok(out)
}

/// A username for a dynamic role's lease: `c_` + up to 20 characters of the role's name
/// (lowercased, anything outside `a-z0-9` dropped) + `_` + 16 random characters. At most 39
/// characters, under PostgreSQL's 63.
///
/// # Errors
/// The OS random source failing.
pub fn generated_username(role: &str) -> Result<String, getrandom::Error> {
    let stem: String = role
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        .take(20)
        .collect();
    Ok(format!("c_{stem}_{}", random_text(16)?.as_str()))
}

/// A generated password: 32 characters of [`ALPHABET`] (160 bits).
///
/// # Errors
/// The OS random source failing.
pub fn generated_password() -> Result<SecretString, getrandom::Error> {
    Ok(SecretString::from(random_text(32)?.as_str().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_use_the_safe_alphabet() {
        let name = generated_username("Orders-Read\"; DROP TABLE x; --é").unwrap();
        assert!(name.starts_with("c_ordersreaddroptablex_"), "{name}");
        assert!(name.len() <= 39, "{name}");
        assert!(name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
        let a = generated_password().unwrap();
        let b = generated_password().unwrap();
        use secrecy::ExposeSecret as _;
        assert_eq!(a.expose_secret().len(), 32);
        assert_ne!(a.expose_secret(), b.expose_secret());
    }

    #[test]
    fn a_target_hides_its_password() {
        let t = Target {
            url: "postgres://h/db".into(),
            admin_user: "a".into(),
            admin_password: SecretString::from("hunter2-target".to_owned()),
            sslmode: "disable".into(),
            ca_pem: None,
            connect_timeout: Duration::from_secs(1),
        };
        assert!(!format!("{t:?}").contains("hunter2"));
    }
}
