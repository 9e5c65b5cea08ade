//! PostgreSQL as a target database: connections made with the store's own TLS and settings
//! code (`store::postgres`), one connection per operation (rotations and leases are rare next
//! to queries, and a connection per operation leaves no idle session holding the admin's
//! login).
//!
//! Quoting: every value put into SQL goes through the server's `format()` (`%I` for an
//! identifier, `%L` for a literal: `quote_ident` and `quote_literal` rules) with the value as a
//! bound parameter, so no text is ever spliced into a statement by Custodian. Passwords are sent
//! as SCRAM-SHA-256 verifiers computed here, so the plaintext never reaches the server, its
//! statement log or `pg_stat_activity`.

use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret as _, SecretString};
use time::format_description::well_known::Rfc3339;
use tokio_postgres::error::SqlState;

use super::{DatabaseError, DatabasePlugin, NewUser, PasswordHold, Target};
use crate::store::postgres::tls::Tls;
use crate::store::postgres::{PostgresSettings, SslMode};

/// Longest any one operation (connect and statements) may take before it counts as the
/// database being unavailable.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The placeholders of role templates and the `format()` argument each becomes.
const PLACEHOLDERS: [(&str, &str); 3] = [
    ("{{name}}", "%1$I"),
    ("{{password}}", "%2$L"),
    ("{{expiration}}", "%3$L"),
];

/// A template turned into a `format()` string: `%` doubled, each placeholder replaced by its
/// positional conversion. Text between placeholders is the admin's SQL, passed through.
///
/// # Errors
/// A `{{…}}` that is not one of the placeholders.
pub fn format_string(template: &str) -> Result<String, String> {
    let mut out = template.replace('%', "%%");
    for (placeholder, conversion) in PLACEHOLDERS {
        out = out.replace(placeholder, conversion);
    }
    if let Some(at) = out.find("{{") {
        let rest: String = out[at..].chars().take(24).collect();
        return Err(format!(
            "unknown placeholder at {rest:?} (known: {{{{name}}}}, {{{{password}}}}, {{{{expiration}}}})"
        ));
    }
    Ok(out)
}

/// The PostgreSQL plugin.
pub struct Postgres {
    pg: tokio_postgres::Config,
    tls: Tls,
}

impl Postgres {
    /// A plugin for `target`.
    ///
    /// # Errors
    /// `Settings` for a URL that does not parse or carries a user or password, an unknown
    /// `sslmode`, or a CA that does not parse.
    pub fn new(target: Target) -> Result<Self, DatabaseError> {
        let settings_error = |m: String| DatabaseError::Settings(m);
        let parsed: tokio_postgres::Config = target
            .url
            .parse()
            .map_err(|_| settings_error("not a PostgreSQL URL (postgres://host:port/db)".into()))?;
        if parsed.get_password().is_some() || parsed.get_user().is_some() {
            return Err(settings_error(
                "the URL must name neither a user nor a password (admin_user and \
                 admin_password are separate fields)"
                    .into(),
            ));
        }
        let (sslmode, tls) = match (target.sslmode.as_str(), target.ca_pem.as_deref()) {
            ("disable", None) => (SslMode::Disable, Tls::Plain),
            ("require", None) => (
                SslMode::Require,
                Tls::with_verifier(None, "ca_pem").map_err(|e| settings_error(e.to_string()))?,
            ),
            ("verify-full", Some(pem)) => (
                SslMode::Require,
                Tls::with_verifier(Some(pem.as_bytes()), "ca_pem")
                    .map_err(|e| settings_error(e.to_string()))?,
            ),
            ("verify-full", None) => {
                return Err(settings_error("sslmode verify-full needs ca_pem".into()))
            }
            ("disable" | "require", Some(_)) => {
                return Err(settings_error(
                    "ca_pem is only used with sslmode verify-full".into(),
                ))
            }
            _ => {
                return Err(settings_error(
                    "sslmode must be disable, require or verify-full".into(),
                ))
            }
        };
        let mut settings = PostgresSettings::new(target.url);
        settings.password = Some(target.admin_password);
        settings.connect_timeout = target.connect_timeout;
        settings.sslmode = sslmode;
        let mut pg = settings
            .pg_config()
            .map_err(|e| settings_error(e.to_string()))?;
        pg.user(&target.admin_user);
        Ok(Self { pg, tls })
    }

    async fn connect(&self) -> Result<tokio_postgres::Client, DatabaseError> {
        self.tls.connect(&self.pg).await.map_err(login_error)
    }

    /// `format(fmt, args…)` evaluated by the server.
    async fn format(
        client: &tokio_postgres::Client,
        fmt: &str,
        args: [&str; 3],
    ) -> Result<String, DatabaseError> {
        let row = client
            .query_one(
                "SELECT format($1::text, $2::text, $3::text, $4::text)",
                &[&fmt, &args[0], &args[1], &args[2]],
            )
            .await
            .map_err(statement_error)?;
        row.try_get::<_, String>(0).map_err(statement_error)
    }

    async fn bounded<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, DatabaseError>>,
    ) -> Result<T, DatabaseError> {
        tokio::time::timeout(OPERATION_TIMEOUT, work)
            .await
            .unwrap_or_else(|_| {
                Err(DatabaseError::Unavailable(
                    "the operation timed out".to_owned(),
                ))
            })
    }

    async fn exists(
        client: &tokio_postgres::Client,
        username: &str,
    ) -> Result<bool, DatabaseError> {
        Ok(client
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&username])
            .await
            .map_err(statement_error)?
            .is_some())
    }

    /// Renders `statements` with the user's values and runs them in one transaction.
    async fn run_in_transaction(
        &self,
        statements: &[String],
        args: [&str; 3],
    ) -> Result<(), DatabaseError> {
        let mut client = self.connect().await?;
        let mut rendered = Vec::with_capacity(statements.len());
        for s in statements {
            let fmt = format_string(s).map_err(|m| DatabaseError::Statement {
                code: "22023".into(),
                message: m,
            })?;
            rendered.push(Self::format(&client, &fmt, args).await?);
        }
        let tx = client.transaction().await.map_err(statement_error)?;
        for sql in &rendered {
            tx.batch_execute(sql).await.map_err(statement_error)?;
        }
        tx.commit().await.map_err(statement_error)
    }
}

/// The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (salted, iterated): what is sent
/// instead of the password.
fn verifier(password: &SecretString) -> zeroize::Zeroizing<String> {
    zeroize::Zeroizing::new(postgres_protocol::password::scram_sha_256(
        password.expose_secret().as_bytes(),
    ))
}

fn expiration_text(t: time::OffsetDateTime) -> Result<String, DatabaseError> {
    t.format(&Rfc3339)
        .map_err(|e| DatabaseError::Settings(format!("expiration: {e}")))
}

/// Whether a server error means "not now" rather than "no".
fn is_transient(code: &SqlState) -> bool {
    let c = code.code();
    // 08: connection exception; 53: insufficient resources; 57: operator intervention
    // (shutdown, cannot connect now); 40: transaction rollback (serialization, deadlock).
    c.starts_with("08") || c.starts_with("53") || c.starts_with("57") || c.starts_with("40")
}

fn login_error(e: tokio_postgres::Error) -> DatabaseError {
    match e.as_db_error() {
        None => DatabaseError::Unavailable(e.to_string()),
        Some(db) if is_transient(db.code()) => DatabaseError::Unavailable(db.message().into()),
        Some(db) => DatabaseError::LoginFailed(db.message().into()),
    }
}

fn statement_error(e: tokio_postgres::Error) -> DatabaseError {
    match e.as_db_error() {
        None => DatabaseError::Unavailable(e.to_string()),
        Some(db) if is_transient(db.code()) => DatabaseError::Unavailable(db.message().into()),
        Some(db) => DatabaseError::Statement {
            code: db.code().code().to_owned(),
            message: db.message().to_owned(),
        },
    }
}

/// A connection holding the advisory lock on one role's password.
struct Hold {
    client: tokio_postgres::Client,
    username: String,
}

#[async_trait]
impl PasswordHold for Hold {
    async fn set_password(&self, password: &SecretString) -> Result<(), DatabaseError> {
        let set = async {
            let verifier = verifier(password);
            let sql = Postgres::format(
                &self.client,
                "ALTER ROLE %1$I WITH PASSWORD %2$L",
                [self.username.as_str(), verifier.as_str(), ""],
            )
            .await?;
            match self.client.batch_execute(&sql).await {
                Err(e) if e.code() == Some(&SqlState::UNDEFINED_OBJECT) => {
                    Err(DatabaseError::RoleMissing(self.username.clone()))
                }
                other => other.map_err(statement_error),
            }
        };
        tokio::time::timeout(OPERATION_TIMEOUT, set)
            .await
            .unwrap_or_else(|_| {
                Err(DatabaseError::Unavailable(
                    "the operation timed out".to_owned(),
                ))
            })
    }
}

#[async_trait]
impl DatabasePlugin for Postgres {
    async fn verify(&self) -> Result<(), DatabaseError> {
        self.bounded(async {
            let client = self.connect().await?;
            let row = client
                .query_opt(
                    "SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user",
                    &[],
                )
                .await
                .map_err(statement_error)?;
            match row.map(|r| r.try_get::<_, bool>(0)) {
                Some(Ok(true)) => Ok(()),
                Some(Ok(false)) | None => Err(DatabaseError::Privileges(
                    "it has neither CREATEROLE nor SUPERUSER".into(),
                )),
                Some(Err(e)) => Err(statement_error(e)),
            }
        })
        .await
    }

    async fn role_exists(&self, username: &str) -> Result<bool, DatabaseError> {
        self.bounded(async {
            let client = self.connect().await?;
            Self::exists(&client, username).await
        })
        .await
    }

    async fn lock_password(&self, username: &str) -> Result<Box<dyn PasswordHold>, DatabaseError> {
        self.bounded(async {
            let client = self.connect().await?;
            // A session-level advisory lock: released when this connection closes.
            client
                .execute(
                    "SELECT pg_advisory_lock(hashtextextended('custodian:password:' || $1, 0))",
                    &[&username],
                )
                .await
                .map_err(statement_error)?;
            Ok(Box::new(Hold {
                client,
                username: username.to_owned(),
            }) as Box<dyn PasswordHold>)
        })
        .await
    }

    async fn run_statements(
        &self,
        statements: &[String],
        user: &NewUser<'_>,
    ) -> Result<(), DatabaseError> {
        let verifier = verifier(user.password);
        let expiration = expiration_text(user.expiration)?;
        self.bounded(self.run_in_transaction(
            statements,
            [user.name, verifier.as_str(), expiration.as_str()],
        ))
        .await
    }

    async fn revoke(&self, statements: &[String], username: &str) -> Result<(), DatabaseError> {
        self.bounded(async {
            let client = self.connect().await?;
            if !Self::exists(&client, username).await? {
                return Ok(());
            }
            // End the user's sessions first, so losing the lease loses access at once; an
            // admin without the right to signal them leaves them to end by themselves.
            if let Err(e) = client
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
                    &[&username],
                )
                .await
            {
                tracing::warn!(error = %e, "could not end a revoked user's sessions");
            }
            drop(client);
            let defaults = [
                "DROP OWNED BY {{name}}".to_owned(),
                "DROP ROLE IF EXISTS {{name}}".to_owned(),
            ];
            let statements = if statements.is_empty() {
                &defaults[..]
            } else {
                statements
            };
            self.run_in_transaction(statements, [username, "", ""])
                .await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_become_format_strings() {
        assert_eq!(
            format_string(
                "CREATE ROLE {{name}} LOGIN PASSWORD {{password}} VALID UNTIL {{expiration}}"
            )
            .unwrap(),
            "CREATE ROLE %1$I LOGIN PASSWORD %2$L VALID UNTIL %3$L"
        );
        // A literal % in the admin's SQL stays a literal %.
        assert_eq!(
            format_string("SELECT '100%' -- {{name}}").unwrap(),
            "SELECT '100%%' -- %1$I"
        );
        assert!(format_string("GRANT x TO {{user}}").is_err());
        assert!(format_string("GRANT x TO {{ name }}").is_err());
    }

    #[test]
    fn urls_with_credentials_are_refused() {
        let target = |url: &str| Target {
            url: url.into(),
            admin_user: "admin".into(),
            admin_password: SecretString::from("pw".to_owned()),
            sslmode: "disable".into(),
            ca_pem: None,
            connect_timeout: Duration::from_secs(1),
        };
        assert!(Postgres::new(target("postgres://u:p@h/db")).is_err());
        assert!(Postgres::new(target("postgres://u@h/db")).is_err());
        assert!(Postgres::new(target("not a url at all ://")).is_err());
        assert!(Postgres::new(target("postgres://h:5432/db")).is_ok());
        let mut t = target("postgres://h/db");
        t.sslmode = "verify-full".into();
        assert!(Postgres::new(t).is_err());
        let verifier = verifier(&SecretString::from("hunter2".to_owned()));
        assert!(verifier.starts_with("SCRAM-SHA-256$4096:"), "{}", *verifier);
        assert!(!verifier.contains("hunter2"));
    }
}
