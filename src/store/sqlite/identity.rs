//! Tokens, principals and policies.

use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use time::OffsetDateTime;

use super::error::Error;
use super::{parse_time, time_text};
use crate::domain::{
    AccessKeyRecord, KeyId, KeyName, KeyVersion, PolicyRecord, PrincipalRecord, TokenRecord,
};
use crate::store::StoreError;

fn corrupt(column: &'static str) -> Error {
    StoreError::Corrupt { column }.into()
}

const TOKEN_COLUMNS: &str =
    "id, principal, secret_hash, description, created_at, expires_at, revoked_at";

type TokenRow = (
    String,
    String,
    Vec<u8>,
    String,
    String,
    Option<String>,
    Option<String>,
);

fn token_row(r: &Row<'_>) -> rusqlite::Result<TokenRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn token_of(row: TokenRow) -> Result<TokenRecord, Error> {
    let (id, principal, hash, description, created_at, expires_at, revoked_at) = row;
    let opt = |t: Option<String>, c| t.map(|t| parse_time(&t, c)).transpose();
    Ok(TokenRecord {
        id,
        principal,
        secret_hash: hash.try_into().map_err(|_| corrupt("tokens.secret_hash"))?,
        description,
        created_at: parse_time(&created_at, "tokens.created_at")?,
        expires_at: opt(expires_at, "tokens.expires_at")?,
        revoked_at: opt(revoked_at, "tokens.revoked_at")?,
    })
}

/// Inserts a token.
pub(super) fn insert_token(conn: &mut Connection, t: &TokenRecord) -> Result<(), Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let taken: Option<i64> = tx
        .query_row("SELECT 1 FROM tokens WHERE id = ?1", [&t.id], |r| r.get(0))
        .optional()?;
    if taken.is_some() {
        return Err(StoreError::Conflict {
            constraint: "tokens.id".into(),
        }
        .into());
    }
    tx.execute(
        &format!("INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
        params![
            t.id,
            t.principal,
            &t.secret_hash[..],
            t.description,
            time_text(t.created_at),
            t.expires_at.map(time_text),
            t.revoked_at.map(time_text),
        ],
    )?;
    tx.commit()?;
    Ok(())
}

/// The token `id`.
pub(super) fn token(conn: &Connection, id: &str) -> Result<Option<TokenRecord>, Error> {
    conn.prepare_cached(&format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = ?1"))?
        .query_row([id], token_row)
        .optional()?
        .map(token_of)
        .transpose()
}

/// Tokens, newest first, of one principal or all.
pub(super) fn list_tokens(
    conn: &Connection,
    principal: Option<&str>,
) -> Result<Vec<TokenRecord>, Error> {
    let rows = conn
        .prepare_cached(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE (?1 IS NULL OR principal = ?1) ORDER BY created_at DESC, id LIMIT 10000"
        ))?
        .query_map([principal], token_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter().map(token_of).collect()
}

/// Revokes a token; false when there is none. Revoking twice keeps the first time.
pub(super) fn revoke_token(
    conn: &Connection,
    id: &str,
    now: OffsetDateTime,
) -> Result<bool, Error> {
    let exists: Option<i64> = conn
        .query_row("SELECT 1 FROM tokens WHERE id = ?1", [id], |r| r.get(0))
        .optional()?;
    if exists.is_none() {
        return Ok(false);
    }
    conn.execute(
        "UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
        params![id, time_text(now)],
    )?;
    Ok(true)
}

/// How many tokens exist.
pub(super) fn token_count(conn: &Connection) -> Result<u64, Error> {
    Ok(conn.query_row("SELECT COUNT(*) FROM tokens", [], |r| r.get(0))?)
}

type PrincipalRow = (String, String, String, String, String);

fn principal_of(row: PrincipalRow) -> Result<PrincipalRecord, Error> {
    let (name, attributes, policies, created, updated) = row;
    let policies: Vec<String> =
        serde_json::from_str(&policies).map_err(|_| corrupt("principals.policies"))?;
    Ok(PrincipalRecord {
        name: KeyName::try_from(name).map_err(|_| corrupt("principals.name"))?,
        attributes: serde_json::from_str(&attributes)
            .map_err(|_| corrupt("principals.attributes"))?,
        policies: policies
            .into_iter()
            .map(|p| KeyName::try_from(p).map_err(|_| corrupt("principals.policies")))
            .collect::<Result<_, _>>()?,
        created_at: parse_time(&created, "principals.created_at")?,
        updated_at: parse_time(&updated, "principals.updated_at")?,
    })
}

/// The principal `name`.
pub(super) fn principal(conn: &Connection, name: &str) -> Result<Option<PrincipalRecord>, Error> {
    conn.prepare_cached(
        "SELECT name, attributes, policies, created_at, updated_at FROM principals WHERE name = ?1",
    )?
    .query_row([name], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })
    .optional()?
    .map(principal_of)
    .transpose()
}

/// Every principal, by name.
pub(super) fn list_principals(conn: &Connection) -> Result<Vec<PrincipalRecord>, Error> {
    let rows = conn
        .prepare_cached("SELECT name, attributes, policies, created_at, updated_at FROM principals ORDER BY name LIMIT 10000")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter().map(principal_of).collect()
}

/// Creates (`create_only`) or replaces a principal.
pub(super) fn put_principal(
    conn: &mut Connection,
    p: &PrincipalRecord,
    create_only: bool,
) -> Result<PrincipalRecord, Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let existing = principal(&tx, p.name.as_str())?;
    match (&existing, create_only) {
        (Some(_), true) => {
            return Err(StoreError::Conflict {
                constraint: "principals.name".into(),
            }
            .into())
        }
        (None, false) => return Err(StoreError::NotFound.into()),
        _ => {}
    }
    let attributes =
        serde_json::to_string(&p.attributes).map_err(|_| corrupt("principals.attributes"))?;
    let policies =
        serde_json::to_string(&p.policies.iter().map(KeyName::as_str).collect::<Vec<_>>())
            .map_err(|_| corrupt("principals.policies"))?;
    let created = existing.map_or(p.created_at, |e| e.created_at);
    tx.execute(
        "INSERT INTO principals (name, attributes, policies, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (name) DO UPDATE SET attributes = excluded.attributes, policies = excluded.policies,
             updated_at = excluded.updated_at",
        params![p.name.as_str(), attributes, policies, time_text(created), time_text(p.updated_at)],
    )?;
    let out = principal(&tx, p.name.as_str())?.ok_or(StoreError::NotFound)?;
    tx.commit()?;
    Ok(out)
}

/// Deletes a principal and revokes its tokens; false when there was none.
pub(super) fn delete_principal(
    conn: &mut Connection,
    name: &str,
    now: OffsetDateTime,
) -> Result<bool, Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let n = tx.execute("DELETE FROM principals WHERE name = ?1", [name])?;
    tx.execute(
        "UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?2) WHERE principal = ?1",
        params![name, time_text(now)],
    )?;
    tx.execute(
        "UPDATE access_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE principal = ?1",
        params![name, time_text(now)],
    )?;
    tx.commit()?;
    Ok(n > 0)
}

type PolicyRow = (String, u32, String, String, String);

fn policy_of(row: PolicyRow) -> Result<PolicyRecord, Error> {
    let (name, version, document, created, updated) = row;
    Ok(PolicyRecord {
        name: KeyName::try_from(name).map_err(|_| corrupt("policies.name"))?,
        version,
        document: serde_json::from_str(&document).map_err(|_| corrupt("policies.document"))?,
        created_at: parse_time(&created, "policies.created_at")?,
        updated_at: parse_time(&updated, "policies.updated_at")?,
    })
}

/// The policy `name` (current version).
pub(super) fn policy(conn: &Connection, name: &str) -> Result<Option<PolicyRecord>, Error> {
    conn.prepare_cached(
        "SELECT name, version, document, created_at, updated_at FROM policies WHERE name = ?1",
    )?
    .query_row([name], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })
    .optional()?
    .map(policy_of)
    .transpose()
}

/// Every policy, by name.
pub(super) fn list_policies(conn: &Connection) -> Result<Vec<PolicyRecord>, Error> {
    let rows = conn
        .prepare_cached("SELECT name, version, document, created_at, updated_at FROM policies ORDER BY name LIMIT 10000")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter().map(policy_of).collect()
}

/// Writes a new version of a policy (version 1 when new); `only_if_absent` leaves an existing
/// one untouched and returns it (used to install the built-in roles).
pub(super) fn put_policy(
    conn: &mut Connection,
    name: &KeyName,
    document: &serde_json::Value,
    only_if_absent: bool,
    now: OffsetDateTime,
) -> Result<PolicyRecord, Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let existing = policy(&tx, name.as_str())?;
    if let (Some(e), true) = (&existing, only_if_absent) {
        return Ok(e.clone());
    }
    let version = match &existing {
        Some(e) => e.version + 1,
        // New, or written again after a delete: the history (kept in `policy_versions`) goes on
        // from its last version rather than colliding with it.
        None => tx.query_row(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM policy_versions WHERE name = ?1",
            [name.as_str()],
            |r| r.get(0),
        )?,
    };
    let created = existing.map_or(now, |e| e.created_at);
    let text = serde_json::to_string(document).map_err(|_| corrupt("policies.document"))?;
    tx.execute(
        "INSERT INTO policies (name, version, document, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (name) DO UPDATE SET version = excluded.version, document = excluded.document,
             updated_at = excluded.updated_at",
        params![name.as_str(), version, text, time_text(created), time_text(now)],
    )?;
    tx.execute(
        "INSERT INTO policy_versions (name, version, document, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![name.as_str(), version, text, time_text(now)],
    )?;
    let out = policy(&tx, name.as_str())?.ok_or(StoreError::NotFound)?;
    tx.commit()?;
    Ok(out)
}

/// Deletes a policy (its history stays in `policy_versions`); false when there was none.
pub(super) fn delete_policy(conn: &Connection, name: &str) -> Result<bool, Error> {
    Ok(conn.execute("DELETE FROM policies WHERE name = ?1", [name])? > 0)
}

const ACCESS_KEY_COLUMNS: &str = "id, principal, description, sealed_secret, key_id, key_version, \
     created_at, expires_at, revoked_at";

type AccessKeyRow = (
    String,
    String,
    String,
    Vec<u8>,
    String,
    i64,
    String,
    Option<String>,
    Option<String>,
);

fn access_key_row(r: &Row<'_>) -> rusqlite::Result<AccessKeyRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
    ))
}

fn access_key_of(row: AccessKeyRow) -> Result<AccessKeyRecord, Error> {
    let (id, principal, description, sealed, key_id, version, created, expires, revoked) = row;
    let opt = |t: Option<String>, c| t.map(|t| parse_time(&t, c)).transpose();
    Ok(AccessKeyRecord {
        id,
        principal,
        description,
        sealed_secret: sealed,
        key_id: key_id
            .parse::<KeyId>()
            .map_err(|_| corrupt("access_keys.key_id"))?,
        key_version: u32::try_from(version)
            .ok()
            .and_then(KeyVersion::new)
            .ok_or_else(|| corrupt("access_keys.key_version"))?,
        created_at: parse_time(&created, "access_keys.created_at")?,
        expires_at: opt(expires, "access_keys.expires_at")?,
        revoked_at: opt(revoked, "access_keys.revoked_at")?,
    })
}

/// Inserts an access key.
pub(super) fn insert_access_key(conn: &mut Connection, a: &AccessKeyRecord) -> Result<(), Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let taken: Option<i64> = tx
        .query_row("SELECT 1 FROM access_keys WHERE id = ?1", [&a.id], |r| {
            r.get(0)
        })
        .optional()?;
    if taken.is_some() {
        return Err(StoreError::Conflict {
            constraint: "access_keys.id".into(),
        }
        .into());
    }
    tx.execute(
        &format!(
            "INSERT INTO access_keys ({ACCESS_KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
        ),
        params![
            a.id,
            a.principal,
            a.description,
            a.sealed_secret,
            a.key_id.to_string(),
            a.key_version.get(),
            time_text(a.created_at),
            a.expires_at.map(time_text),
            a.revoked_at.map(time_text),
        ],
    )?;
    tx.commit()?;
    Ok(())
}

/// The access key `id`.
pub(super) fn access_key(conn: &Connection, id: &str) -> Result<Option<AccessKeyRecord>, Error> {
    conn.prepare_cached(&format!(
        "SELECT {ACCESS_KEY_COLUMNS} FROM access_keys WHERE id = ?1"
    ))?
    .query_row([id], access_key_row)
    .optional()?
    .map(access_key_of)
    .transpose()
}

/// Access keys, newest first, of one principal or all.
pub(super) fn list_access_keys(
    conn: &Connection,
    principal: Option<&str>,
) -> Result<Vec<AccessKeyRecord>, Error> {
    let rows = conn
        .prepare_cached(&format!(
            "SELECT {ACCESS_KEY_COLUMNS} FROM access_keys WHERE (?1 IS NULL OR principal = ?1) \
             ORDER BY created_at DESC, id LIMIT 10000"
        ))?
        .query_map([principal], access_key_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter().map(access_key_of).collect()
}

/// Revokes an access key; false when there is none. Revoking twice keeps the first time.
pub(super) fn revoke_access_key(
    conn: &Connection,
    id: &str,
    now: OffsetDateTime,
) -> Result<bool, Error> {
    Ok(conn.execute(
        "UPDATE access_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
        params![id, time_text(now)],
    )? > 0)
}

/// Replaces a live access key's sealed secret if the row still holds `old` (see the trait).
pub(super) fn reseal_access_key(
    conn: &Connection,
    id: &str,
    old: &[u8],
    sealed: &[u8],
    key_version: KeyVersion,
) -> Result<bool, Error> {
    Ok(conn.execute(
        "UPDATE access_keys SET sealed_secret = ?3, key_version = ?4
         WHERE id = ?1 AND sealed_secret = ?2 AND revoked_at IS NULL",
        params![id, old, sealed, key_version.get()],
    )? > 0)
}
