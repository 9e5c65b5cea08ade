//! Tokens, principals and policies.
//!
//! Creating is one INSERT (a second creator fails on the primary key: `Conflict`), replacing is
//! one UPDATE (nothing to replace: `NotFound`); a new policy version locks the policy's row.

use time::OffsetDateTime;
use tokio_postgres::Row;

use super::error::Error;
use super::{corrupt, parse_time, time_text, to_u32, to_u64, Db};
use crate::domain::{
    AccessKeyRecord, KeyId, KeyName, KeyVersion, PolicyRecord, PrincipalRecord, TokenRecord,
};
use crate::store::StoreError;

const TOKEN_COLUMNS: &str =
    "id, principal, secret_hash, description, created_at, expires_at, revoked_at";

fn token_of(r: &Row) -> Result<TokenRecord, Error> {
    let opt = |t: Option<&str>, c| t.map(|t| parse_time(t, c)).transpose();
    Ok(TokenRecord {
        id: r.try_get(0)?,
        principal: r.try_get(1)?,
        secret_hash: r
            .try_get::<_, Vec<u8>>(2)?
            .try_into()
            .map_err(|_| corrupt("tokens.secret_hash"))?,
        description: r.try_get(3)?,
        created_at: parse_time(r.try_get(4)?, "tokens.created_at")?,
        expires_at: opt(r.try_get(5)?, "tokens.expires_at")?,
        revoked_at: opt(r.try_get(6)?, "tokens.revoked_at")?,
    })
}

/// Inserts a token.
pub(super) async fn insert_token(db: &Db<'_>, t: &TokenRecord) -> Result<(), Error> {
    db.execute(
        &format!("INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"),
        &[
            &t.id,
            &t.principal,
            &&t.secret_hash[..],
            &t.description,
            &time_text(t.created_at),
            &t.expires_at.map(time_text),
            &t.revoked_at.map(time_text),
        ],
    )
    .await?;
    Ok(())
}

/// The token `id`.
pub(super) async fn token(db: &Db<'_>, id: &str) -> Result<Option<TokenRecord>, Error> {
    db.query_opt(
        &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = $1"),
        &[&id],
    )
    .await?
    .as_ref()
    .map(token_of)
    .transpose()
}

/// Tokens, newest first, of one principal or all.
pub(super) async fn list_tokens(
    db: &Db<'_>,
    principal: Option<&str>,
) -> Result<Vec<TokenRecord>, Error> {
    db.query(
        &format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE ($1::text IS NULL OR principal = $1)
             ORDER BY created_at DESC, id LIMIT 10000"
        ),
        &[&principal],
    )
    .await?
    .iter()
    .map(token_of)
    .collect()
}

/// Revokes a token; false when there is none. Revoking twice keeps the first time.
pub(super) async fn revoke_token(
    db: &Db<'_>,
    id: &str,
    now: OffsetDateTime,
) -> Result<bool, Error> {
    Ok(db
        .execute(
            "UPDATE tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
            &[&id, &time_text(now)],
        )
        .await?
        > 0)
}

/// How many tokens exist.
pub(super) async fn token_count(db: &Db<'_>) -> Result<u64, Error> {
    let row = db.query_one("SELECT COUNT(*) FROM tokens", &[]).await?;
    to_u64(row.try_get(0)?, "tokens.count")
}

const PRINCIPAL_COLUMNS: &str = "name, attributes, policies, created_at, updated_at";

fn principal_of(r: &Row) -> Result<PrincipalRecord, Error> {
    let policies: Vec<String> =
        serde_json::from_str(r.try_get(2)?).map_err(|_| corrupt("principals.policies"))?;
    Ok(PrincipalRecord {
        name: KeyName::try_from(r.try_get::<_, String>(0)?)
            .map_err(|_| corrupt("principals.name"))?,
        attributes: serde_json::from_str(r.try_get(1)?)
            .map_err(|_| corrupt("principals.attributes"))?,
        policies: policies
            .into_iter()
            .map(|p| KeyName::try_from(p).map_err(|_| corrupt("principals.policies")))
            .collect::<Result<_, _>>()?,
        created_at: parse_time(r.try_get(3)?, "principals.created_at")?,
        updated_at: parse_time(r.try_get(4)?, "principals.updated_at")?,
    })
}

/// The principal `name`.
pub(super) async fn principal(db: &Db<'_>, name: &str) -> Result<Option<PrincipalRecord>, Error> {
    db.query_opt(
        &format!("SELECT {PRINCIPAL_COLUMNS} FROM principals WHERE name = $1"),
        &[&name],
    )
    .await?
    .as_ref()
    .map(principal_of)
    .transpose()
}

/// Every principal, by name.
pub(super) async fn list_principals(db: &Db<'_>) -> Result<Vec<PrincipalRecord>, Error> {
    db.query(
        &format!("SELECT {PRINCIPAL_COLUMNS} FROM principals ORDER BY name LIMIT 10000"),
        &[],
    )
    .await?
    .iter()
    .map(principal_of)
    .collect()
}

/// Creates (`create_only`) or replaces a principal; replacing keeps its creation time.
pub(super) async fn put_principal(
    db: &Db<'_>,
    p: &PrincipalRecord,
    create_only: bool,
) -> Result<PrincipalRecord, Error> {
    let attributes =
        serde_json::to_string(&p.attributes).map_err(|_| corrupt("principals.attributes"))?;
    let policies =
        serde_json::to_string(&p.policies.iter().map(KeyName::as_str).collect::<Vec<_>>())
            .map_err(|_| corrupt("principals.policies"))?;
    let (name, created, updated) = (
        p.name.as_str(),
        time_text(p.created_at),
        time_text(p.updated_at),
    );
    let row = if create_only {
        db.query_opt(
            &format!(
                "INSERT INTO principals ({PRINCIPAL_COLUMNS}) VALUES ($1, $2, $3, $4, $5)
                 RETURNING {PRINCIPAL_COLUMNS}"
            ),
            &[&name, &attributes, &policies, &created, &updated],
        )
        .await?
    } else {
        db.query_opt(
            &format!(
                "UPDATE principals SET attributes = $2, policies = $3, updated_at = $4
                 WHERE name = $1 RETURNING {PRINCIPAL_COLUMNS}"
            ),
            &[&name, &attributes, &policies, &updated],
        )
        .await?
    };
    row.as_ref()
        .map(principal_of)
        .transpose()?
        .ok_or(StoreError::NotFound.into())
}

/// Deletes a principal and revokes its tokens; false when there was none.
pub(super) async fn delete_principal(
    db: &Db<'_>,
    name: &str,
    now: OffsetDateTime,
) -> Result<bool, Error> {
    let n = db
        .execute("DELETE FROM principals WHERE name = $1", &[&name])
        .await?;
    db.execute(
        "UPDATE tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE principal = $1",
        &[&name, &time_text(now)],
    )
    .await?;
    db.execute(
        "UPDATE access_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE principal = $1",
        &[&name, &time_text(now)],
    )
    .await?;
    Ok(n > 0)
}

const POLICY_COLUMNS: &str = "name, version, document, created_at, updated_at";

fn policy_of(r: &Row) -> Result<PolicyRecord, Error> {
    Ok(PolicyRecord {
        name: KeyName::try_from(r.try_get::<_, String>(0)?)
            .map_err(|_| corrupt("policies.name"))?,
        version: to_u32(r.try_get(1)?, "policies.version")?,
        document: serde_json::from_str(r.try_get(2)?).map_err(|_| corrupt("policies.document"))?,
        created_at: parse_time(r.try_get(3)?, "policies.created_at")?,
        updated_at: parse_time(r.try_get(4)?, "policies.updated_at")?,
    })
}

/// The policy `name` (current version); with `lock`, its row locked for the transaction.
async fn policy_row(db: &Db<'_>, name: &str, lock: bool) -> Result<Option<PolicyRecord>, Error> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    db.query_opt(
        &format!("SELECT {POLICY_COLUMNS} FROM policies WHERE name = $1{lock}"),
        &[&name],
    )
    .await?
    .as_ref()
    .map(policy_of)
    .transpose()
}

/// The policy `name` (current version).
pub(super) async fn policy(db: &Db<'_>, name: &str) -> Result<Option<PolicyRecord>, Error> {
    policy_row(db, name, false).await
}

/// Every policy, by name.
pub(super) async fn list_policies(db: &Db<'_>) -> Result<Vec<PolicyRecord>, Error> {
    db.query(
        &format!("SELECT {POLICY_COLUMNS} FROM policies ORDER BY name LIMIT 10000"),
        &[],
    )
    .await?
    .iter()
    .map(policy_of)
    .collect()
}

/// Writes a new version of a policy (version 1 when new); `only_if_absent` leaves an existing
/// one untouched and returns it (used to install the built-in roles, which several nodes may do
/// at once: the first creates it, the others wait and find it).
pub(super) async fn put_policy(
    db: &Db<'_>,
    name: &KeyName,
    document: &serde_json::Value,
    only_if_absent: bool,
    now: OffsetDateTime,
) -> Result<PolicyRecord, Error> {
    let text = serde_json::to_string(document).map_err(|_| corrupt("policies.document"))?;
    let now = time_text(now);
    let n = name.as_str();
    // New, or written again after a delete: the history (kept in `policy_versions`) goes on
    // from its last version rather than colliding with it.
    let created = db
        .execute(
            "INSERT INTO policies (name, version, document, created_at, updated_at)
             SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, $3
               FROM policy_versions WHERE name = $1
             ON CONFLICT (name) DO NOTHING",
            &[&n, &text, &now],
        )
        .await?
        > 0;
    let existing = policy_row(db, n, true).await?.ok_or(StoreError::NotFound)?;
    let version = if created {
        existing.version
    } else if only_if_absent {
        return Ok(existing);
    } else {
        let version = existing.version + 1;
        db.execute(
            "UPDATE policies SET version = $2, document = $3, updated_at = $4 WHERE name = $1",
            &[&n, &i64::from(version), &text, &now],
        )
        .await?;
        version
    };
    db.execute(
        "INSERT INTO policy_versions (name, version, document, created_at) VALUES ($1, $2, $3, $4)",
        &[&n, &i64::from(version), &text, &now],
    )
    .await?;
    policy_row(db, n, false)
        .await?
        .ok_or(StoreError::NotFound.into())
}

/// Deletes a policy (its history stays in `policy_versions`); false when there was none.
pub(super) async fn delete_policy(db: &Db<'_>, name: &str) -> Result<bool, Error> {
    Ok(db
        .execute("DELETE FROM policies WHERE name = $1", &[&name])
        .await?
        > 0)
}

const ACCESS_KEY_COLUMNS: &str = "id, principal, description, sealed_secret, key_id, key_version, \
     created_at, expires_at, revoked_at";

fn access_key_of(r: &Row) -> Result<AccessKeyRecord, Error> {
    let opt = |t: Option<&str>, c| t.map(|t| parse_time(t, c)).transpose();
    Ok(AccessKeyRecord {
        id: r.try_get(0)?,
        principal: r.try_get(1)?,
        description: r.try_get(2)?,
        sealed_secret: r.try_get(3)?,
        key_id: r
            .try_get::<_, &str>(4)?
            .parse::<KeyId>()
            .map_err(|_| corrupt("access_keys.key_id"))?,
        key_version: KeyVersion::new(to_u32(r.try_get(5)?, "access_keys.key_version")?)
            .ok_or_else(|| corrupt("access_keys.key_version"))?,
        created_at: parse_time(r.try_get(6)?, "access_keys.created_at")?,
        expires_at: opt(r.try_get(7)?, "access_keys.expires_at")?,
        revoked_at: opt(r.try_get(8)?, "access_keys.revoked_at")?,
    })
}

/// Inserts an access key.
pub(super) async fn insert_access_key(db: &Db<'_>, a: &AccessKeyRecord) -> Result<(), Error> {
    db.execute(
        &format!(
            "INSERT INTO access_keys ({ACCESS_KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ),
        &[
            &a.id,
            &a.principal,
            &a.description,
            &a.sealed_secret,
            &a.key_id.to_string(),
            &i64::from(a.key_version.get()),
            &time_text(a.created_at),
            &a.expires_at.map(time_text),
            &a.revoked_at.map(time_text),
        ],
    )
    .await?;
    Ok(())
}

/// The access key `id`.
pub(super) async fn access_key(db: &Db<'_>, id: &str) -> Result<Option<AccessKeyRecord>, Error> {
    db.query_opt(
        &format!("SELECT {ACCESS_KEY_COLUMNS} FROM access_keys WHERE id = $1"),
        &[&id],
    )
    .await?
    .as_ref()
    .map(access_key_of)
    .transpose()
}

/// Access keys, newest first, of one principal or all.
pub(super) async fn list_access_keys(
    db: &Db<'_>,
    principal: Option<&str>,
) -> Result<Vec<AccessKeyRecord>, Error> {
    db.query(
        &format!(
            "SELECT {ACCESS_KEY_COLUMNS} FROM access_keys WHERE ($1::text IS NULL OR principal = $1)
             ORDER BY created_at DESC, id LIMIT 10000"
        ),
        &[&principal],
    )
    .await?
    .iter()
    .map(access_key_of)
    .collect()
}

/// Revokes an access key; false when there is none. Revoking twice keeps the first time.
pub(super) async fn revoke_access_key(
    db: &Db<'_>,
    id: &str,
    now: OffsetDateTime,
) -> Result<bool, Error> {
    Ok(db
        .execute(
            "UPDATE access_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
            &[&id, &time_text(now)],
        )
        .await?
        > 0)
}

/// Replaces a live access key's sealed secret if the row still holds `old` (see the trait).
pub(super) async fn reseal_access_key(
    db: &Db<'_>,
    id: &str,
    old: &[u8],
    sealed: &[u8],
    key_version: KeyVersion,
) -> Result<bool, Error> {
    Ok(db
        .execute(
            "UPDATE access_keys SET sealed_secret = $3, key_version = $4
             WHERE id = $1 AND sealed_secret = $2 AND revoked_at IS NULL",
            &[&id, &old, &sealed, &i64::from(key_version.get())],
        )
        .await?
        > 0)
}
