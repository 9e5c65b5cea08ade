//! Database credentials' rows (see `store::database`): each record a JSON document beside the
//! columns queries use.

use time::OffsetDateTime;

use super::error::Error;
use super::Db;
use crate::store::codec::millis;
use crate::store::database::{
    decode, encode, next_rotation_millis, revision_column, DbConnectionRecord, DbLeaseFilter,
    DbLeaseRecord, DbRoleRecord,
};

fn doc<T: serde::Serialize>(value: &T) -> Result<String, Error> {
    Ok(encode(value)?)
}

fn parse<T: serde::de::DeserializeOwned>(
    row: &tokio_postgres::Row,
    column: &'static str,
) -> Result<T, Error> {
    let text: String = row.try_get(0)?;
    Ok(decode(&text, column)?)
}

pub(super) async fn insert_connection(db: &Db<'_>, c: &DbConnectionRecord) -> Result<(), Error> {
    db.execute(
        "INSERT INTO db_connections (name, doc) VALUES ($1, $2)",
        &[&c.name, &doc(c)?],
    )
    .await?;
    Ok(())
}

pub(super) async fn connection(
    db: &Db<'_>,
    name: &str,
) -> Result<Option<DbConnectionRecord>, Error> {
    db.query_opt("SELECT doc FROM db_connections WHERE name = $1", &[&name])
        .await?
        .map(|r| parse(&r, "db_connections.doc"))
        .transpose()
}

pub(super) async fn connections(db: &Db<'_>) -> Result<Vec<DbConnectionRecord>, Error> {
    db.query(
        "SELECT doc FROM db_connections ORDER BY name LIMIT 10000",
        &[],
    )
    .await?
    .iter()
    .map(|r| parse(r, "db_connections.doc"))
    .collect()
}

pub(super) async fn delete_connection(db: &Db<'_>, name: &str) -> Result<bool, Error> {
    Ok(db
        .execute("DELETE FROM db_connections WHERE name = $1", &[&name])
        .await?
        > 0)
}

pub(super) async fn put_role(
    db: &Db<'_>,
    role: &DbRoleRecord,
    expected: Option<u64>,
) -> Result<bool, Error> {
    let text = doc(role)?;
    let next = next_rotation_millis(role);
    let rev = revision_column(role.revision);
    let n = match expected {
        None => {
            db.execute(
                "INSERT INTO db_roles (name, connection, kind, next_rotation_at, revision, doc)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &role.name,
                    &role.connection,
                    &role.spec.kind(),
                    &next,
                    &rev,
                    &text,
                ],
            )
            .await?
        }
        Some(seen) => {
            db.execute(
                "UPDATE db_roles SET connection = $2, kind = $3, next_rotation_at = $4,
                     revision = $5, doc = $6
                 WHERE name = $1 AND revision = $7",
                &[
                    &role.name,
                    &role.connection,
                    &role.spec.kind(),
                    &next,
                    &rev,
                    &text,
                    &revision_column(seen),
                ],
            )
            .await?
        }
    };
    Ok(n > 0)
}

pub(super) async fn role(db: &Db<'_>, name: &str) -> Result<Option<DbRoleRecord>, Error> {
    db.query_opt("SELECT doc FROM db_roles WHERE name = $1", &[&name])
        .await?
        .map(|r| parse(&r, "db_roles.doc"))
        .transpose()
}

pub(super) async fn roles(
    db: &Db<'_>,
    connection: Option<&str>,
) -> Result<Vec<DbRoleRecord>, Error> {
    db.query(
        "SELECT doc FROM db_roles WHERE ($1::text IS NULL OR connection = $1)
         ORDER BY name LIMIT 10000",
        &[&connection],
    )
    .await?
    .iter()
    .map(|r| parse(r, "db_roles.doc"))
    .collect()
}

pub(super) async fn delete_role(db: &Db<'_>, name: &str) -> Result<bool, Error> {
    Ok(db
        .execute("DELETE FROM db_roles WHERE name = $1", &[&name])
        .await?
        > 0)
}

pub(super) async fn due_rotations(
    db: &Db<'_>,
    now: OffsetDateTime,
    limit: u32,
) -> Result<Vec<DbRoleRecord>, Error> {
    db.query(
        "SELECT doc FROM db_roles
         WHERE next_rotation_at IS NOT NULL AND next_rotation_at <= $1
         ORDER BY next_rotation_at, name LIMIT $2",
        &[&millis(now), &i64::from(limit)],
    )
    .await?
    .iter()
    .map(|r| parse(r, "db_roles.doc"))
    .collect()
}

pub(super) async fn insert_lease(db: &Db<'_>, lease: &DbLeaseRecord) -> Result<(), Error> {
    db.execute(
        "INSERT INTO db_leases (id, role, credential_id, expires_at, retry_at, revoked_at, doc)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &lease.id,
            &lease.role,
            &lease.credential_id,
            &millis(lease.expires_at),
            &lease.retry_at.map(millis),
            &lease.revoked_at.map(millis),
            &doc(lease)?,
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn lease(db: &Db<'_>, id: &str) -> Result<Option<DbLeaseRecord>, Error> {
    db.query_opt("SELECT doc FROM db_leases WHERE id = $1", &[&id])
        .await?
        .map(|r| parse(&r, "db_leases.doc"))
        .transpose()
}

pub(super) async fn update_lease(db: &Db<'_>, lease: &DbLeaseRecord) -> Result<bool, Error> {
    Ok(db
        .execute(
            "UPDATE db_leases SET expires_at = $2, retry_at = $3, revoked_at = $4, doc = $5
             WHERE id = $1 AND revoked_at IS NULL",
            &[
                &lease.id,
                &millis(lease.expires_at),
                &lease.retry_at.map(millis),
                &lease.revoked_at.map(millis),
                &doc(lease)?,
            ],
        )
        .await?
        > 0)
}

pub(super) async fn leases(
    db: &Db<'_>,
    filter: &DbLeaseFilter<'_>,
) -> Result<Vec<DbLeaseRecord>, Error> {
    let due = filter.due_at.map(millis);
    let live = filter.live || due.is_some();
    db.query(
        "SELECT doc FROM db_leases
         WHERE ($1::text IS NULL OR role = $1) AND ($2::text IS NULL OR credential_id = $2)
           AND (NOT $3 OR revoked_at IS NULL)
           AND ($4::bigint IS NULL OR (expires_at <= $4 AND (retry_at IS NULL OR retry_at <= $4)))
         ORDER BY expires_at, id LIMIT $5",
        &[
            &filter.role,
            &filter.credential_id,
            &live,
            &due,
            &i64::from(filter.limit),
        ],
    )
    .await?
    .iter()
    .map(|r| parse(r, "db_leases.doc"))
    .collect()
}
