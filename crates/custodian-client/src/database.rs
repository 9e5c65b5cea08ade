//! Database credentials (`/v1/db/…`, docs/database-credentials.md): what an application calls
//! to get the database login it uses, and what an operator calls to set connections and roles
//! up. Passwords come back in the wire types' zeroising fields, never in `Debug`.
//!
//! ```no_run
//! # async fn demo(client: custodian_client::Client) -> Result<(), custodian_client::Error> {
//! // A static role: the current password of an existing database role.
//! let creds = client.static_db_creds("orders-app").await?;
//! println!("log in as {} (version {})", creds.username, creds.version);
//! // A dynamic role: a fresh user under a lease; renew it while in use, revoke it when done.
//! let fresh = client.db_creds("orders-reader", Some("15m")).await?;
//! client.renew_db_lease(&fresh.lease.id, Some("15m")).await?;
//! client.revoke_db_lease(&fresh.lease.id).await?;
//! # Ok(())
//! # }
//! ```

use reqwest::Method;
use serde::Serialize;

use crate::client::{segment, Client, Retry};
use crate::types::api_types::database::{
    CreateDbConnectionRequest, DbConnection, DbConnectionList, DbCreds, DbLease, DbRole,
    DbRoleList, PutDbRoleRequest, RotatedRole, StaticCreds,
};
use crate::Error;

/// `{"ttl": …}` / `{"increment": …}` as the client sends them: the duration text unparsed, so
/// that the server judges it.
#[derive(Serialize)]
struct Duration<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    increment: Option<&'a str>,
}

impl Client {
    /// `POST /v1/db/connections`: the admin password (read by the caller from a file) is sent
    /// once and stored sealed; it is never returned.
    ///
    /// # Errors
    /// [`Error`].
    pub async fn create_db_connection(
        &self,
        request: &CreateDbConnectionRequest<String>,
    ) -> Result<DbConnection, Error> {
        self.call(Method::POST, "/v1/db/connections", request, Retry::Unsafe)
            .await
    }

    /// `GET /v1/db/connections`.
    ///
    /// # Errors
    /// [`Error`].
    pub async fn db_connections(&self) -> Result<DbConnectionList, Error> {
        self.get("/v1/db/connections").await
    }

    /// `DELETE /v1/db/connections/{name}`.
    ///
    /// # Errors
    /// [`Error`].
    pub async fn delete_db_connection(&self, name: &str) -> Result<(), Error> {
        let path = format!("/v1/db/connections/{}", segment("connection", name)?);
        self.execute(Method::DELETE, &path, None, Retry::Unsafe)
            .await
            .map(drop)
    }

    /// `PUT /v1/db/roles/{name}`.
    ///
    /// # Errors
    /// [`Error`].
    pub async fn put_db_role(&self, name: &str, role: &PutDbRoleRequest) -> Result<DbRole, Error> {
        let path = format!("/v1/db/roles/{}", segment("role", name)?);
        self.call(Method::PUT, &path, role, Retry::Unsafe).await
    }

    /// `GET /v1/db/roles`.
    ///
    /// # Errors
    /// [`Error`].
    pub async fn db_roles(&self) -> Result<DbRoleList, Error> {
        self.get("/v1/db/roles").await
    }

    /// `DELETE /v1/db/roles/{name}`.
    ///
    /// # Errors
    /// [`Error`].
    pub async fn delete_db_role(&self, name: &str) -> Result<(), Error> {
        let path = format!("/v1/db/roles/{}", segment("role", name)?);
        self.execute(Method::DELETE, &path, None, Retry::Unsafe)
            .await
            .map(drop)
    }

    /// `GET /v1/db/static-creds/{role}`: the current password of a static role. Read it again
    /// when a login is refused: after a rotation the database accepts only the new one.
    ///
    /// # Errors
    /// [`Error`].
    pub async fn static_db_creds(&self, role: &str) -> Result<StaticCreds, Error> {
        self.get(&format!("/v1/db/static-creds/{}", segment("role", role)?))
            .await
    }

    /// `POST /v1/db/rotate-role/{role}`.
    ///
    /// # Errors
    /// [`Error`].
    pub async fn rotate_db_role(&self, role: &str) -> Result<RotatedRole, Error> {
        let path = format!("/v1/db/rotate-role/{}", segment("role", role)?);
        self.send(Method::POST, &path, None, Retry::Unsafe).await
    }

    /// `POST /v1/db/creds/{role}`: a fresh database user under a lease of `ttl` (e.g. `15m`;
    /// default: the role's).
    ///
    /// # Errors
    /// [`Error`].
    pub async fn db_creds(&self, role: &str, ttl: Option<&str>) -> Result<DbCreds, Error> {
        let path = format!("/v1/db/creds/{}", segment("role", role)?);
        let body = Duration {
            ttl,
            increment: None,
        };
        self.call(Method::POST, &path, &body, Retry::Unsafe).await
    }

    /// `POST /v1/db/leases/{id}/renew`.
    ///
    /// # Errors
    /// [`Error`].
    pub async fn renew_db_lease(
        &self,
        id: &str,
        increment: Option<&str>,
    ) -> Result<DbLease, Error> {
        let path = format!("/v1/db/leases/{}/renew", segment("lease id", id)?);
        let body = Duration {
            ttl: None,
            increment,
        };
        self.call(Method::POST, &path, &body, Retry::Unsafe).await
    }

    /// `DELETE /v1/db/leases/{id}`: the user is revoked now.
    ///
    /// # Errors
    /// [`Error`].
    pub async fn revoke_db_lease(&self, id: &str) -> Result<(), Error> {
        let path = format!("/v1/db/leases/{}", segment("lease id", id)?);
        self.execute(Method::DELETE, &path, None, Retry::Unsafe)
            .await
            .map(drop)
    }
}
