//! The keys, key_versions and aliases tables.

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};
use time::OffsetDateTime;

use super::error::Error;
use super::{from_millis, millis, parse_time, time_text};
use crate::domain::secret::HumanDuration;
use crate::domain::{
    Algorithm, Alias, BackendKind, Key, KeyId, KeyName, KeyRef, KeyState, KeyVersion,
    KeyVersionRecord, RootKeyRef, VersionState, WrapMode,
};
use crate::store::codec::marked_after;
use crate::store::{KeyUpdate, RotationClaim, StaleKind, StoreError};

fn corrupt(column: &'static str) -> Error {
    StoreError::Corrupt { column }.into()
}

fn algorithm_name(a: Algorithm) -> &'static str {
    a.as_str()
}

fn parse_algorithm(s: &str) -> Result<Algorithm, Error> {
    Algorithm::parse(s).ok_or(corrupt("key_versions.algorithm"))
}

/// A `keys` row before its versions are attached.
struct KeyRow {
    id: String,
    name: String,
    description: String,
    state: String,
    backend: String,
    mode: String,
    primary_version: u32,
    min_decryption_version: u32,
    rotation_period_s: Option<i64>,
    next_rotation_at: Option<i64>,
    deletion_date: Option<i64>,
    deletion_blocked: Option<String>,
    created_at: String,
    updated_at: String,
}

const KEY_COLUMNS: &str = "id, name, description, state, backend, mode, primary_version, \
     min_decryption_version, rotation_period_s, next_rotation_at, deletion_date, \
     deletion_blocked, created_at, updated_at";

fn key_row(r: &Row<'_>) -> rusqlite::Result<KeyRow> {
    Ok(KeyRow {
        id: r.get(0)?,
        name: r.get(1)?,
        description: r.get(2)?,
        state: r.get(3)?,
        backend: r.get(4)?,
        mode: r.get(5)?,
        primary_version: r.get(6)?,
        min_decryption_version: r.get(7)?,
        rotation_period_s: r.get(8)?,
        next_rotation_at: r.get(9)?,
        deletion_date: r.get(10)?,
        deletion_blocked: r.get(11)?,
        created_at: r.get(12)?,
        updated_at: r.get(13)?,
    })
}

fn version(n: u32, column: &'static str) -> Result<KeyVersion, Error> {
    KeyVersion::new(n).ok_or(corrupt(column))
}

fn load(conn: &Connection, row: KeyRow) -> Result<Key, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT version, state, algorithm, created_at, destroyed_at, wraps_reserved,
                device_blob, wrapped_kek
         FROM key_versions WHERE key_id = ?1 ORDER BY version",
    )?;
    let versions = stmt
        .query_map([&row.id], |r| {
            Ok((
                (
                    r.get::<_, u32>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, i64>(5)?,
                ),
                (
                    r.get::<_, Option<Vec<u8>>>(6)?,
                    r.get::<_, Option<Vec<u8>>>(7)?,
                ),
            ))
        })?
        .map(|v| {
            let ((n, state, algorithm, created_at, destroyed_at, wraps), (blob, kek)) = v?;
            Ok(KeyVersionRecord {
                version: version(n, "key_versions.version")?,
                state: VersionState::parse(&state).ok_or(corrupt("key_versions.state"))?,
                algorithm: parse_algorithm(&algorithm)?,
                created_at: parse_time(&created_at, "key_versions.created_at")?,
                destroyed_at: destroyed_at
                    .map(|t| parse_time(&t, "key_versions.destroyed_at"))
                    .transpose()?,
                wraps_reserved: u64::try_from(wraps)
                    .map_err(|_| corrupt("key_versions.wraps_reserved"))?,
                material: crate::domain::RootMaterial {
                    device_blob: blob.map(Into::into),
                    wrapped_kek: kek.map(Into::into),
                },
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(Key {
        id: row.id.parse::<KeyId>().map_err(|_| corrupt("keys.id"))?,
        name: KeyName::try_from(row.name).map_err(|_| corrupt("keys.name"))?,
        description: row.description,
        state: KeyState::parse(&row.state).ok_or(corrupt("keys.state"))?,
        backend: BackendKind::parse(&row.backend).ok_or(corrupt("keys.backend"))?,
        mode: WrapMode::parse(&row.mode).ok_or(corrupt("keys.mode"))?,
        created_at: parse_time(&row.created_at, "keys.created_at")?,
        updated_at: parse_time(&row.updated_at, "keys.updated_at")?,
        primary_version: version(row.primary_version, "keys.primary_version")?,
        min_decryption_version: version(row.min_decryption_version, "keys.min_decryption_version")?,
        rotation_period: row
            .rotation_period_s
            .map(|s| {
                u64::try_from(s)
                    .map(|s| HumanDuration(std::time::Duration::from_secs(s)))
                    .map_err(|_| corrupt("keys.rotation_period_s"))
            })
            .transpose()?,
        next_rotation_at: row
            .next_rotation_at
            .map(|t| from_millis(t, "keys.next_rotation_at"))
            .transpose()?,
        deletion_date: row
            .deletion_date
            .map(|t| from_millis(t, "keys.deletion_date"))
            .transpose()?,
        deletion_blocked: row.deletion_blocked,
        versions,
    })
}

fn by_id(conn: &Connection, id: &str) -> Result<Option<Key>, Error> {
    let row = conn
        .prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM keys WHERE id = ?1"))?
        .query_row([id], key_row)
        .optional()?;
    row.map(|row| load(conn, row)).transpose()
}

fn must(conn: &Connection, id: KeyId) -> Result<Key, Error> {
    by_id(conn, &id.to_string())?.ok_or(StoreError::NotFound.into())
}

/// Inserts a key and its versions.
pub(super) fn insert(conn: &mut Connection, key: &Key) -> Result<(), Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let taken: Option<i64> = tx
        .query_row(
            "SELECT 1 FROM keys WHERE name = ?1",
            [key.name.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    if taken.is_some() {
        return Err(StoreError::Conflict {
            constraint: "keys.name".into(),
        }
        .into());
    }
    tx.execute(
        &format!(
            "INSERT INTO keys ({KEY_COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
        ),
        params![
            key.id.to_string(),
            key.name.as_str(),
            key.description,
            key.state.as_str(),
            key.backend.as_str(),
            key.mode.as_str(),
            key.primary_version.get(),
            key.min_decryption_version.get(),
            key.rotation_period.map(secs),
            key.next_rotation_at.map(millis),
            key.deletion_date.map(millis),
            key.deletion_blocked,
            time_text(key.created_at),
            time_text(key.updated_at),
        ],
    )?;
    for v in &key.versions {
        insert_version(&tx, key.id, v)?;
    }
    tx.commit()?;
    Ok(())
}

fn secs(d: HumanDuration) -> i64 {
    i64::try_from(d.0.as_secs()).unwrap_or(i64::MAX)
}

fn insert_version(tx: &Transaction<'_>, id: KeyId, v: &KeyVersionRecord) -> Result<(), Error> {
    tx.execute(
        "INSERT INTO key_versions (key_id, version, state, algorithm, created_at, device_blob,
                                   wrapped_kek)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            id.to_string(),
            v.version.get(),
            v.state.as_str(),
            algorithm_name(v.algorithm),
            time_text(v.created_at),
            v.material.device_blob.as_deref(),
            v.material.wrapped_kek.as_deref(),
        ],
    )?;
    Ok(())
}

/// The key `r` names (an alias is followed).
pub(super) fn get(conn: &Connection, r: &KeyRef) -> Result<Option<Key>, Error> {
    let (column, value) = match r {
        KeyRef::Id(id) => ("id", id.to_string()),
        KeyRef::Name(name) => ("name", name.as_str().to_owned()),
        KeyRef::Alias(alias) => {
            let target: Option<String> = conn
                .prepare_cached("SELECT key_id FROM aliases WHERE name = ?1")?
                .query_row([alias.as_str()], |r| r.get(0))
                .optional()?;
            match target {
                Some(id) => ("id", id),
                None => return Ok(None),
            }
        }
    };
    let row = conn
        .prepare_cached(&format!(
            "SELECT {KEY_COLUMNS} FROM keys WHERE {column} = ?1"
        ))?
        .query_row([&value], key_row)
        .optional()?;
    row.map(|row| load(conn, row)).transpose()
}

/// A page of keys by name.
pub(super) fn list(
    conn: &Connection,
    after: Option<&KeyName>,
    limit: u32,
) -> Result<Vec<Key>, Error> {
    let rows = conn
        .prepare_cached(&format!(
            "SELECT {KEY_COLUMNS} FROM keys WHERE name > ?1 ORDER BY name LIMIT ?2"
        ))?
        .query_map(
            params![after.map(KeyName::as_str).unwrap_or(""), limit],
            key_row,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter().map(|row| load(conn, row)).collect()
}

/// Applies a [`KeyUpdate`].
pub(super) fn update(
    conn: &mut Connection,
    id: KeyId,
    u: &KeyUpdate,
    now: OffsetDateTime,
) -> Result<Key, Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let key = must(&tx, id)?;
    if let Some(expected) = u.expected_state {
        if key.state != expected {
            return Err(StoreError::Stale {
                what: StaleKind::KeyState,
            }
            .into());
        }
    }
    let idt = id.to_string();
    if let Some(state) = u.state {
        tx.execute(
            "UPDATE keys SET state = ?2 WHERE id = ?1",
            params![idt, state.as_str()],
        )?;
    }
    if let Some(d) = &u.description {
        tx.execute(
            "UPDATE keys SET description = ?2 WHERE id = ?1",
            params![idt, d],
        )?;
    }
    if let Some((period, next)) = u.rotation {
        tx.execute(
            "UPDATE keys SET rotation_period_s = ?2, next_rotation_at = ?3 WHERE id = ?1",
            params![idt, period.map(secs), next.map(millis)],
        )?;
    }
    if let Some(v) = u.min_decryption_version {
        tx.execute(
            "UPDATE keys SET min_decryption_version = ?2 WHERE id = ?1",
            params![idt, v.get()],
        )?;
    }
    if let Some(date) = u.deletion_date {
        tx.execute(
            "UPDATE keys SET deletion_date = ?2 WHERE id = ?1",
            params![idt, date.map(millis)],
        )?;
    }
    if let Some(reason) = &u.deletion_blocked {
        tx.execute(
            "UPDATE keys SET deletion_blocked = ?2 WHERE id = ?1",
            params![idt, reason],
        )?;
    }
    tx.execute(
        "UPDATE keys SET updated_at = ?2 WHERE id = ?1",
        params![idt, time_text(now)],
    )?;
    let key = must(&tx, id)?;
    tx.commit()?;
    Ok(key)
}

/// Records a new primary version (see the trait docs).
pub(super) fn add_version(
    conn: &mut Connection,
    id: KeyId,
    record: &KeyVersionRecord,
    expected_primary: KeyVersion,
    schedule: Option<RotationClaim>,
) -> Result<Key, Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let key = must(&tx, id)?;
    if key.primary_version != expected_primary {
        return Err(StoreError::Stale {
            what: StaleKind::PrimaryVersion,
        }
        .into());
    }
    if let Some(claim) = schedule {
        if let Some(expected) = claim.expected {
            if key.next_rotation_at.map(millis) != expected.map(millis) {
                return Err(StoreError::Stale {
                    what: StaleKind::RotationSchedule,
                }
                .into());
            }
        }
    }
    let idt = id.to_string();
    tx.execute(
        "UPDATE key_versions SET state = 'active' WHERE key_id = ?1 AND state = 'primary'",
        [&idt],
    )?;
    insert_version(&tx, id, record)?;
    tx.execute(
        "UPDATE keys SET primary_version = ?2, updated_at = ?3 WHERE id = ?1",
        params![idt, record.version.get(), time_text(record.created_at)],
    )?;
    if let Some(claim) = schedule {
        tx.execute(
            "UPDATE keys SET next_rotation_at = ?2 WHERE id = ?1",
            params![idt, millis(claim.next)],
        )?;
    }
    let key = must(&tx, id)?;
    tx.commit()?;
    Ok(key)
}

/// Moves a version between states.
pub(super) fn set_version_state(
    conn: &mut Connection,
    id: KeyId,
    v: KeyVersion,
    from: &[VersionState],
    to: VersionState,
    now: OffsetDateTime,
) -> Result<Key, Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let key = must(&tx, id)?;
    let current = key.version(v).ok_or(StoreError::NotFound)?;
    if !from.contains(&current.state) {
        return Err(StoreError::Stale {
            what: StaleKind::VersionState,
        }
        .into());
    }
    let idt = id.to_string();
    tx.execute(
        "UPDATE key_versions SET state = ?3 WHERE key_id = ?1 AND version = ?2",
        params![idt, v.get(), to.as_str()],
    )?;
    tx.execute(
        "UPDATE keys SET updated_at = ?2 WHERE id = ?1",
        params![idt, time_text(now)],
    )?;
    let key = must(&tx, id)?;
    tx.commit()?;
    Ok(key)
}

fn reference_count(conn: &Connection, id: KeyId, v: KeyVersion) -> Result<u64, Error> {
    let n: i64 = conn.query_row(
        "SELECT (SELECT COUNT(*) FROM secret_versions WHERE key_id = ?1 AND key_version = ?2)
              + (SELECT COUNT(*) FROM access_keys
                 WHERE key_id = ?1 AND key_version = ?2 AND revoked_at IS NULL)",
        params![id.to_string(), v.get()],
        |r| r.get(0),
    )?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Marks versions destroyed (see the trait docs).
pub(super) fn destroy_versions(
    conn: &mut Connection,
    id: KeyId,
    versions: &[KeyVersion],
    whole_key: bool,
    now: OffsetDateTime,
) -> Result<Key, Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let key = must(&tx, id)?;
    let mut in_use = 0;
    for v in versions {
        let record = key.version(*v).ok_or(StoreError::NotFound)?;
        if record.state == VersionState::Primary && !whole_key {
            return Err(StoreError::Stale {
                what: StaleKind::PrimaryVersion,
            }
            .into());
        }
        in_use += reference_count(&tx, id, *v)?;
    }
    if in_use > 0 {
        return Err(StoreError::InUse { count: in_use }.into());
    }
    let idt = id.to_string();
    let now_text = time_text(now);
    for v in versions {
        tx.execute(
            "UPDATE key_versions SET state = 'destroyed', destroyed_at = ?3,
                 device_object = CASE device_object WHEN 'present' THEN 'destroy_pending'
                                                    ELSE device_object END
             WHERE key_id = ?1 AND version = ?2 AND state != 'destroyed'",
            params![idt, v.get(), now_text],
        )?;
    }
    if whole_key {
        tx.execute(
            "UPDATE keys SET state = 'destroyed', deletion_date = NULL, deletion_blocked = NULL,
                 next_rotation_at = NULL WHERE id = ?1",
            [&idt],
        )?;
        tx.execute("DELETE FROM aliases WHERE key_id = ?1", [&idt])?;
    }
    tx.execute(
        "UPDATE keys SET updated_at = ?2 WHERE id = ?1",
        params![idt, now_text],
    )?;
    let key = must(&tx, id)?;
    tx.commit()?;
    Ok(key)
}

/// Records a device object as gone.
pub(super) fn mark_device_destroyed(conn: &Connection, root: &RootKeyRef) -> Result<(), Error> {
    conn.execute(
        // The stored material goes with the device object: a TPM key blob or a wrapped KEK is
        // what would let the device use the key again (secure_delete overwrites the bytes).
        "UPDATE key_versions SET device_object = 'destroyed', device_blob = NULL, wrapped_kek = NULL
         WHERE key_id = ?1 AND version = ?2",
        params![root.key_id.to_string(), root.version.get()],
    )?;
    Ok(())
}

/// Device objects whose destruction is pending, marked at or before `marked_before`.
pub(super) fn pending_device_destroys(
    conn: &Connection,
    marked_before: OffsetDateTime,
) -> Result<Vec<RootKeyRef>, Error> {
    let rows = conn
        .prepare_cached(
            "SELECT key_id, version, destroyed_at FROM key_versions
             WHERE device_object = 'destroy_pending'",
        )?
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut out = Vec::new();
    for (id, v, marked) in rows {
        if marked_after(marked.as_deref(), marked_before)? {
            continue;
        }
        out.push(RootKeyRef::bare(
            id.parse().map_err(|_| corrupt("key_versions.key_id"))?,
            version(v, "key_versions.version")?,
        ));
    }
    Ok(out)
}

/// Stored data keys per version.
pub(super) fn references(conn: &Connection, id: KeyId) -> Result<Vec<(KeyVersion, u64)>, Error> {
    let key = must(conn, id)?;
    key.versions
        .iter()
        .map(|v| Ok((v.version, reference_count(conn, id, v.version)?)))
        .collect()
}

/// Reserves wraps.
pub(super) fn reserve_wraps(conn: &Connection, root: &RootKeyRef, n: u64) -> Result<u64, Error> {
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    let total: i64 = conn.query_row(
        "UPDATE key_versions SET wraps_reserved = wraps_reserved + ?3
         WHERE key_id = ?1 AND version = ?2 RETURNING wraps_reserved",
        params![root.key_id.to_string(), root.version.get(), n],
        |r| r.get(0),
    )?;
    Ok(u64::try_from(total).unwrap_or(0))
}

/// Enabled keys with a due rotation.
pub(super) fn due_rotations(
    conn: &Connection,
    now: OffsetDateTime,
    limit: u32,
) -> Result<Vec<(KeyId, OffsetDateTime)>, Error> {
    let rows = conn
        .prepare_cached(
            "SELECT id, next_rotation_at FROM keys
             WHERE state = 'enabled' AND next_rotation_at IS NOT NULL AND next_rotation_at <= ?1
             ORDER BY next_rotation_at LIMIT ?2",
        )?
        .query_map(params![millis(now), limit], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(|(id, t)| {
            Ok((
                id.parse().map_err(|_| corrupt("keys.id"))?,
                from_millis(t, "keys.next_rotation_at")?,
            ))
        })
        .collect()
}

/// Keys whose deletion date has passed.
pub(super) fn due_deletions(
    conn: &Connection,
    now: OffsetDateTime,
    limit: u32,
) -> Result<Vec<KeyId>, Error> {
    let rows = conn
        .prepare_cached(
            "SELECT id FROM keys WHERE state = 'pending_deletion' AND deletion_date <= ?1
             ORDER BY deletion_date LIMIT ?2",
        )?
        .query_map(params![millis(now), limit], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(|id| id.parse().map_err(|_| corrupt("keys.id")))
        .collect()
}

fn alias_row(r: &Row<'_>) -> rusqlite::Result<(String, String, String, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn alias_of(row: (String, String, String, String)) -> Result<Alias, Error> {
    Ok(Alias {
        name: KeyName::try_from(row.0).map_err(|_| corrupt("aliases.name"))?,
        key_id: row.1.parse().map_err(|_| corrupt("aliases.key_id"))?,
        created_at: parse_time(&row.2, "aliases.created_at")?,
        updated_at: parse_time(&row.3, "aliases.updated_at")?,
    })
}

/// The alias `name`.
pub(super) fn alias(conn: &Connection, name: &KeyName) -> Result<Option<Alias>, Error> {
    conn.prepare_cached("SELECT name, key_id, created_at, updated_at FROM aliases WHERE name = ?1")?
        .query_row([name.as_str()], alias_row)
        .optional()?
        .map(alias_of)
        .transpose()
}

/// Creates or re-points an alias.
pub(super) fn put_alias(
    conn: &mut Connection,
    name: &KeyName,
    key_id: KeyId,
    create_only: bool,
    now: OffsetDateTime,
) -> Result<Alias, Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let exists = alias(&tx, name)?.is_some();
    let now_text = time_text(now);
    match (exists, create_only) {
        (true, true) => {
            return Err(StoreError::Conflict {
                constraint: "aliases.name".into(),
            }
            .into())
        }
        (false, false) => return Err(StoreError::NotFound.into()),
        (false, true) => {
            tx.execute(
                "INSERT INTO aliases (name, key_id, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)",
                params![name.as_str(), key_id.to_string(), now_text],
            )?;
        }
        (true, false) => {
            tx.execute(
                "UPDATE aliases SET key_id = ?2, updated_at = ?3 WHERE name = ?1",
                params![name.as_str(), key_id.to_string(), now_text],
            )?;
        }
    }
    let a = alias(&tx, name)?.ok_or(StoreError::NotFound)?;
    tx.commit()?;
    Ok(a)
}

/// Every alias.
pub(super) fn list_aliases(conn: &Connection) -> Result<Vec<Alias>, Error> {
    let rows = conn
        .prepare_cached("SELECT name, key_id, created_at, updated_at FROM aliases ORDER BY name")?
        .query_map([], alias_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter().map(alias_of).collect()
}

/// Deletes an alias.
pub(super) fn delete_alias(conn: &Connection, name: &KeyName) -> Result<bool, Error> {
    Ok(conn.execute("DELETE FROM aliases WHERE name = ?1", [name.as_str()])? > 0)
}

/// Inside a write transaction: `Stale` unless the key is enabled and `version` is in `states`.
/// Writes that store data under a version re-check it here, so nothing lands under a version
/// that was destroyed (or stopped being primary) after the writer read the key.
pub(super) fn require_version(
    tx: &Connection,
    key_id: KeyId,
    version: KeyVersion,
    states: &[VersionState],
) -> Result<(), Error> {
    let row: Option<(String, String)> = tx
        .prepare_cached(
            "SELECT k.state, v.state FROM keys k JOIN key_versions v ON v.key_id = k.id
             WHERE k.id = ?1 AND v.version = ?2",
        )?
        .query_row(params![key_id.to_string(), version.get()], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    let usable = row.is_some_and(|(key_state, v_state)| {
        key_state == KeyState::Enabled.as_str()
            && VersionState::parse(&v_state).is_some_and(|s| states.contains(&s))
    });
    if usable {
        Ok(())
    } else {
        Err(StoreError::Stale {
            what: StaleKind::KeyVersion,
        }
        .into())
    }
}
