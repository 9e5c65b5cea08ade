//! Database credentials' rows (see `store::database`): each record a JSON document beside the
//! columns queries use.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension as _};
use time::OffsetDateTime;

use super::error::Error;
use super::{millis, SqliteStore};
use crate::store::database::{
    decode, encode, next_rotation_millis, revision_column, DatabaseStore, DbConnectionRecord,
    DbLeaseFilter, DbLeaseRecord, DbRoleRecord,
};
use crate::store::StoreError;

fn doc<T: serde::Serialize>(value: &T) -> Result<String, Error> {
    Ok(encode(value)?)
}

fn parse<T: serde::de::DeserializeOwned>(text: &str, column: &'static str) -> Result<T, Error> {
    Ok(decode(text, column)?)
}

fn docs<T: serde::de::DeserializeOwned>(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
    column: &'static str,
) -> Result<Vec<T>, Error> {
    let rows = conn
        .prepare_cached(sql)?
        .query_map(args, |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.iter().map(|t| parse(t, column)).collect()
}

fn one<T: serde::de::DeserializeOwned>(
    conn: &Connection,
    sql: &str,
    key: &str,
    column: &'static str,
) -> Result<Option<T>, Error> {
    conn.prepare_cached(sql)?
        .query_row([key], |r| r.get::<_, String>(0))
        .optional()?
        .map(|t| parse(&t, column))
        .transpose()
}

/// Deletes the row of `table` whose `column` is `key`; false when there was none.
fn delete_row(conn: &Connection, table: &str, column: &str, key: &str) -> Result<bool, Error> {
    Ok(conn.execute(&format!("DELETE FROM {table} WHERE {column} = ?1"), [key])? > 0)
}

#[async_trait]
impl DatabaseStore for SqliteStore {
    async fn insert_db_connection(&self, c: &DbConnectionRecord) -> Result<(), StoreError> {
        let c = c.clone();
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT INTO db_connections (name, doc) VALUES (?1, ?2)",
                params![c.name, doc(&c)?],
            )?;
            Ok(())
        })
        .await
    }

    async fn db_connection(&self, name: &str) -> Result<Option<DbConnectionRecord>, StoreError> {
        let name = name.to_owned();
        self.with_conn(move |conn| {
            one(
                conn,
                "SELECT doc FROM db_connections WHERE name = ?1",
                &name,
                "db_connections.doc",
            )
        })
        .await
    }

    async fn list_db_connections(&self) -> Result<Vec<DbConnectionRecord>, StoreError> {
        self.with_conn(|conn| {
            docs(
                conn,
                "SELECT doc FROM db_connections ORDER BY name LIMIT 10000",
                [],
                "db_connections.doc",
            )
        })
        .await
    }

    async fn delete_db_connection(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.with_conn(move |conn| delete_row(conn, "db_connections", "name", &name))
            .await
    }

    async fn put_db_role(
        &self,
        role: &DbRoleRecord,
        expected: Option<u64>,
    ) -> Result<bool, StoreError> {
        let role = role.clone();
        self.with_conn(move |conn| {
            let text = doc(&role)?;
            let n = match expected {
                None => conn.execute(
                    "INSERT INTO db_roles (name, connection, kind, next_rotation_at, revision, doc)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        role.name,
                        role.connection,
                        role.spec.kind(),
                        next_rotation_millis(&role),
                        revision_column(role.revision),
                        text
                    ],
                )?,
                Some(seen) => conn.execute(
                    "UPDATE db_roles SET connection = ?2, kind = ?3, next_rotation_at = ?4,
                         revision = ?5, doc = ?6
                     WHERE name = ?1 AND revision = ?7",
                    params![
                        role.name,
                        role.connection,
                        role.spec.kind(),
                        next_rotation_millis(&role),
                        revision_column(role.revision),
                        text,
                        revision_column(seen)
                    ],
                )?,
            };
            Ok(n > 0)
        })
        .await
    }

    async fn db_role(&self, name: &str) -> Result<Option<DbRoleRecord>, StoreError> {
        let name = name.to_owned();
        self.with_conn(move |conn| {
            one(
                conn,
                "SELECT doc FROM db_roles WHERE name = ?1",
                &name,
                "db_roles.doc",
            )
        })
        .await
    }

    async fn list_db_roles(
        &self,
        connection: Option<&str>,
    ) -> Result<Vec<DbRoleRecord>, StoreError> {
        let connection = connection.map(str::to_owned);
        self.with_conn(move |conn| {
            docs(
                conn,
                "SELECT doc FROM db_roles WHERE (?1 IS NULL OR connection = ?1)
                 ORDER BY name LIMIT 10000",
                [connection],
                "db_roles.doc",
            )
        })
        .await
    }

    async fn delete_db_role(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.with_conn(move |conn| delete_row(conn, "db_roles", "name", &name))
            .await
    }

    async fn due_db_rotations(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<DbRoleRecord>, StoreError> {
        self.with_conn(move |conn| {
            docs(
                conn,
                "SELECT doc FROM db_roles
                 WHERE next_rotation_at IS NOT NULL AND next_rotation_at <= ?1
                 ORDER BY next_rotation_at, name LIMIT ?2",
                params![millis(now), limit],
                "db_roles.doc",
            )
        })
        .await
    }

    async fn insert_db_lease(&self, lease: &DbLeaseRecord) -> Result<(), StoreError> {
        let lease = lease.clone();
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT INTO db_leases (id, role, credential_id, expires_at, retry_at, revoked_at, doc)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    lease.id,
                    lease.role,
                    lease.credential_id,
                    millis(lease.expires_at),
                    lease.retry_at.map(millis),
                    lease.revoked_at.map(millis),
                    doc(&lease)?
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn db_lease(&self, id: &str) -> Result<Option<DbLeaseRecord>, StoreError> {
        let id = id.to_owned();
        self.with_conn(move |conn| {
            one(
                conn,
                "SELECT doc FROM db_leases WHERE id = ?1",
                &id,
                "db_leases.doc",
            )
        })
        .await
    }

    async fn update_db_lease(&self, lease: &DbLeaseRecord) -> Result<bool, StoreError> {
        let lease = lease.clone();
        self.with_conn(move |conn| {
            Ok(conn.execute(
                "UPDATE db_leases SET expires_at = ?2, retry_at = ?3, revoked_at = ?4, doc = ?5
                 WHERE id = ?1 AND revoked_at IS NULL",
                params![
                    lease.id,
                    millis(lease.expires_at),
                    lease.retry_at.map(millis),
                    lease.revoked_at.map(millis),
                    doc(&lease)?
                ],
            )? > 0)
        })
        .await
    }

    async fn list_db_leases(
        &self,
        filter: &DbLeaseFilter<'_>,
    ) -> Result<Vec<DbLeaseRecord>, StoreError> {
        let role = filter.role.map(str::to_owned);
        let credential = filter.credential_id.map(str::to_owned);
        let due = filter.due_at.map(millis);
        let live = filter.live || due.is_some();
        let limit = filter.limit;
        self.with_conn(move |conn| {
            docs(
                conn,
                "SELECT doc FROM db_leases
                 WHERE (?1 IS NULL OR role = ?1) AND (?2 IS NULL OR credential_id = ?2)
                   AND (?3 = 0 OR revoked_at IS NULL)
                   AND (?4 IS NULL OR (expires_at <= ?4 AND (retry_at IS NULL OR retry_at <= ?4)))
                 ORDER BY expires_at, id LIMIT ?5",
                params![role, credential, i64::from(live), due, limit],
                "db_leases.doc",
            )
        })
        .await
    }
}
