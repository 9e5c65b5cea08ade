//! The keys, key_versions and aliases tables.
//!
//! A key is read with its versions in one statement (one snapshot). Changes lock the key's row
//! first (`FOR UPDATE`), which stands in for SQLite's one-writer-at-a-time transactions.

use time::OffsetDateTime;
use tokio_postgres::Row;

use super::error::Error;
use super::{big, corrupt, from_millis, millis, parse_time, time_text, to_u32, to_u64, Db};
use crate::domain::secret::HumanDuration;
use crate::domain::{
    Algorithm, Alias, BackendKind, Key, KeyId, KeyName, KeyRef, KeyState, KeyVersion,
    KeyVersionRecord, RootKeyRef, RootMaterial, VersionState, WrapMode,
};
use crate::store::codec::marked_after;
use crate::store::{KeyUpdate, RotationClaim, StaleKind, StoreError};

/// A key's columns (`k.`) then its versions' (`v.`), one row per version.
const KEY_WITH_VERSIONS: &str = "k.id, k.name, k.description, k.state, k.backend, k.mode, \
     k.primary_version, k.min_decryption_version, k.rotation_period_s, k.next_rotation_at, \
     k.deletion_date, k.deletion_blocked, k.created_at, k.updated_at, \
     v.version, v.state, v.algorithm, v.created_at, v.destroyed_at, v.wraps_reserved, \
     v.device_blob, v.wrapped_kek";

fn version(n: i64, column: &'static str) -> Result<KeyVersion, Error> {
    KeyVersion::new(to_u32(n, column)?).ok_or(corrupt(column))
}

fn duration(s: Option<i64>, column: &'static str) -> Result<Option<HumanDuration>, Error> {
    s.map(|s| to_u64(s, column).map(|s| HumanDuration(std::time::Duration::from_secs(s))))
        .transpose()
}

fn instant(t: Option<i64>, column: &'static str) -> Result<Option<OffsetDateTime>, Error> {
    Ok(t.map(|t| from_millis(t, column)).transpose()?)
}

fn version_of(r: &Row) -> Result<KeyVersionRecord, Error> {
    let destroyed_at: Option<String> = r.try_get(18)?;
    Ok(KeyVersionRecord {
        version: version(r.try_get(14)?, "key_versions.version")?,
        state: VersionState::parse(r.try_get(15)?).ok_or(corrupt("key_versions.state"))?,
        algorithm: Algorithm::parse(r.try_get(16)?).ok_or(corrupt("key_versions.algorithm"))?,
        created_at: parse_time(r.try_get(17)?, "key_versions.created_at")?,
        destroyed_at: destroyed_at
            .map(|t| parse_time(&t, "key_versions.destroyed_at"))
            .transpose()?,
        wraps_reserved: to_u64(r.try_get(19)?, "key_versions.wraps_reserved")?,
        material: RootMaterial {
            device_blob: r.try_get::<_, Option<Vec<u8>>>(20)?.map(Into::into),
            wrapped_kek: r.try_get::<_, Option<Vec<u8>>>(21)?.map(Into::into),
        },
    })
}

fn key_of(r: &Row) -> Result<Key, Error> {
    Ok(Key {
        id: r
            .try_get::<_, &str>(0)?
            .parse::<KeyId>()
            .map_err(|_| corrupt("keys.id"))?,
        name: KeyName::try_from(r.try_get::<_, String>(1)?).map_err(|_| corrupt("keys.name"))?,
        description: r.try_get(2)?,
        state: KeyState::parse(r.try_get(3)?).ok_or(corrupt("keys.state"))?,
        backend: BackendKind::parse(r.try_get(4)?).ok_or(corrupt("keys.backend"))?,
        mode: WrapMode::parse(r.try_get(5)?).ok_or(corrupt("keys.mode"))?,
        primary_version: version(r.try_get(6)?, "keys.primary_version")?,
        min_decryption_version: version(r.try_get(7)?, "keys.min_decryption_version")?,
        rotation_period: duration(r.try_get(8)?, "keys.rotation_period_s")?,
        next_rotation_at: instant(r.try_get(9)?, "keys.next_rotation_at")?,
        deletion_date: instant(r.try_get(10)?, "keys.deletion_date")?,
        deletion_blocked: r.try_get(11)?,
        created_at: parse_time(r.try_get(12)?, "keys.created_at")?,
        updated_at: parse_time(r.try_get(13)?, "keys.updated_at")?,
        versions: Vec::new(),
    })
}

/// Folds rows of [`KEY_WITH_VERSIONS`] (ordered by key, then version) into keys.
fn keys_of(rows: &[Row]) -> Result<Vec<Key>, Error> {
    let mut keys: Vec<Key> = Vec::new();
    for r in rows {
        let id: &str = r.try_get(0)?;
        let same = keys.last().is_some_and(|k| k.id.to_string() == id);
        if !same {
            keys.push(key_of(r)?);
        }
        if let Some(k) = keys.last_mut() {
            k.versions.push(version_of(r)?);
        }
    }
    Ok(keys)
}

/// The key `id` with its versions; with `lock`, its row locked `FOR UPDATE` first.
async fn by_id(db: &Db<'_>, id: KeyId, lock: bool) -> Result<Option<Key>, Error> {
    let idt = id.to_string();
    if lock
        && db
            .query_opt("SELECT 1 FROM keys WHERE id = $1 FOR UPDATE", &[&idt])
            .await?
            .is_none()
    {
        return Ok(None);
    }
    let rows = db
        .query(
            &format!(
                "SELECT {KEY_WITH_VERSIONS} FROM keys k JOIN key_versions v ON v.key_id = k.id
                 WHERE k.id = $1 ORDER BY v.version"
            ),
            &[&idt],
        )
        .await?;
    Ok(keys_of(&rows)?.pop())
}

/// The key `id`, its row locked for the rest of the transaction.
async fn locked(db: &Db<'_>, id: KeyId) -> Result<Key, Error> {
    by_id(db, id, true)
        .await?
        .ok_or(StoreError::NotFound.into())
}

/// Inserts a key and its versions.
pub(super) async fn insert(db: &Db<'_>, key: &Key) -> Result<(), Error> {
    db.execute(
        "INSERT INTO keys (id, name, description, state, backend, mode, primary_version,
             min_decryption_version, rotation_period_s, next_rotation_at, deletion_date,
             deletion_blocked, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        &[
            &key.id.to_string(),
            &key.name.as_str(),
            &key.description,
            &key.state.as_str(),
            &key.backend.as_str(),
            &key.mode.as_str(),
            &i64::from(key.primary_version.get()),
            &i64::from(key.min_decryption_version.get()),
            &key.rotation_period.map(secs),
            &key.next_rotation_at.map(millis),
            &key.deletion_date.map(millis),
            &key.deletion_blocked,
            &time_text(key.created_at),
            &time_text(key.updated_at),
        ],
    )
    .await?;
    for v in &key.versions {
        insert_version(db, key.id, v).await?;
    }
    Ok(())
}

fn secs(d: HumanDuration) -> i64 {
    big(d.0.as_secs())
}

async fn insert_version(db: &Db<'_>, id: KeyId, v: &KeyVersionRecord) -> Result<(), Error> {
    db.execute(
        "INSERT INTO key_versions (key_id, version, state, algorithm, created_at, device_blob,
                                   wrapped_kek)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &id.to_string(),
            &i64::from(v.version.get()),
            &v.state.as_str(),
            &v.algorithm.as_str(),
            &time_text(v.created_at),
            &v.material.device_blob.as_deref(),
            &v.material.wrapped_kek.as_deref(),
        ],
    )
    .await?;
    Ok(())
}

/// The key `r` names (an alias is followed).
pub(super) async fn get(db: &Db<'_>, r: &KeyRef) -> Result<Option<Key>, Error> {
    let (condition, value) = match r {
        KeyRef::Id(id) => ("k.id = $1", id.to_string()),
        KeyRef::Name(name) => ("k.name = $1", name.as_str().to_owned()),
        KeyRef::Alias(alias) => (
            "k.id = (SELECT key_id FROM aliases WHERE name = $1)",
            alias.as_str().to_owned(),
        ),
    };
    let rows = db
        .query(
            &format!(
                "SELECT {KEY_WITH_VERSIONS} FROM keys k JOIN key_versions v ON v.key_id = k.id
                 WHERE {condition} ORDER BY v.version"
            ),
            &[&value],
        )
        .await?;
    Ok(keys_of(&rows)?.pop())
}

/// A page of keys by name.
pub(super) async fn list(
    db: &Db<'_>,
    after: Option<&KeyName>,
    limit: u32,
) -> Result<Vec<Key>, Error> {
    let rows = db
        .query(
            &format!(
                "WITH page AS (SELECT * FROM keys WHERE name > $1 ORDER BY name LIMIT $2)
                 SELECT {KEY_WITH_VERSIONS} FROM page k JOIN key_versions v ON v.key_id = k.id
                 ORDER BY k.name, v.version"
            ),
            &[&after.map_or("", KeyName::as_str), &i64::from(limit)],
        )
        .await?;
    keys_of(&rows)
}

/// Applies a [`KeyUpdate`].
pub(super) async fn update(
    db: &Db<'_>,
    id: KeyId,
    u: &KeyUpdate,
    now: OffsetDateTime,
) -> Result<Key, Error> {
    let key = locked(db, id).await?;
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
        db.execute(
            "UPDATE keys SET state = $2 WHERE id = $1",
            &[&idt, &state.as_str()],
        )
        .await?;
    }
    if let Some(d) = &u.description {
        db.execute("UPDATE keys SET description = $2 WHERE id = $1", &[&idt, d])
            .await?;
    }
    if let Some((period, next)) = u.rotation {
        db.execute(
            "UPDATE keys SET rotation_period_s = $2, next_rotation_at = $3 WHERE id = $1",
            &[&idt, &period.map(secs), &next.map(millis)],
        )
        .await?;
    }
    if let Some(v) = u.min_decryption_version {
        db.execute(
            "UPDATE keys SET min_decryption_version = $2 WHERE id = $1",
            &[&idt, &i64::from(v.get())],
        )
        .await?;
    }
    if let Some(date) = u.deletion_date {
        db.execute(
            "UPDATE keys SET deletion_date = $2 WHERE id = $1",
            &[&idt, &date.map(millis)],
        )
        .await?;
    }
    if let Some(reason) = &u.deletion_blocked {
        db.execute(
            "UPDATE keys SET deletion_blocked = $2 WHERE id = $1",
            &[&idt, reason],
        )
        .await?;
    }
    db.execute(
        "UPDATE keys SET updated_at = $2 WHERE id = $1",
        &[&idt, &time_text(now)],
    )
    .await?;
    locked(db, id).await
}

/// Records a new primary version (see the trait docs).
pub(super) async fn add_version(
    db: &Db<'_>,
    id: KeyId,
    record: &KeyVersionRecord,
    expected_primary: KeyVersion,
    schedule: Option<RotationClaim>,
) -> Result<Key, Error> {
    let key = locked(db, id).await?;
    if key.primary_version != expected_primary {
        return Err(StoreError::Stale {
            what: StaleKind::PrimaryVersion,
        }
        .into());
    }
    if let Some(expected) = schedule.and_then(|c| c.expected) {
        if key.next_rotation_at.map(millis) != expected.map(millis) {
            return Err(StoreError::Stale {
                what: StaleKind::RotationSchedule,
            }
            .into());
        }
    }
    let idt = id.to_string();
    db.execute(
        "UPDATE key_versions SET state = 'active' WHERE key_id = $1 AND state = 'primary'",
        &[&idt],
    )
    .await?;
    insert_version(db, id, record).await?;
    db.execute(
        "UPDATE keys SET primary_version = $2, updated_at = $3 WHERE id = $1",
        &[
            &idt,
            &i64::from(record.version.get()),
            &time_text(record.created_at),
        ],
    )
    .await?;
    if let Some(claim) = schedule {
        db.execute(
            "UPDATE keys SET next_rotation_at = $2 WHERE id = $1",
            &[&idt, &millis(claim.next)],
        )
        .await?;
    }
    locked(db, id).await
}

/// Moves a version between states.
pub(super) async fn set_version_state(
    db: &Db<'_>,
    id: KeyId,
    v: KeyVersion,
    from: &[VersionState],
    to: VersionState,
    now: OffsetDateTime,
) -> Result<Key, Error> {
    let key = locked(db, id).await?;
    let current = key.version(v).ok_or(StoreError::NotFound)?;
    if !from.contains(&current.state) {
        return Err(StoreError::Stale {
            what: StaleKind::VersionState,
        }
        .into());
    }
    let idt = id.to_string();
    db.execute(
        "UPDATE key_versions SET state = $3 WHERE key_id = $1 AND version = $2",
        &[&idt, &i64::from(v.get()), &to.as_str()],
    )
    .await?;
    db.execute(
        "UPDATE keys SET updated_at = $2 WHERE id = $1",
        &[&idt, &time_text(now)],
    )
    .await?;
    locked(db, id).await
}

async fn reference_count(db: &Db<'_>, id: KeyId, v: KeyVersion) -> Result<u64, Error> {
    let row = db
        .query_one(
            "SELECT (SELECT COUNT(*) FROM secret_versions WHERE key_id = $1 AND key_version = $2)
                  + (SELECT COUNT(*) FROM access_keys
                     WHERE key_id = $1 AND key_version = $2 AND revoked_at IS NULL)",
            &[&id.to_string(), &i64::from(v.get())],
        )
        .await?;
    to_u64(row.try_get(0)?, "secret_versions.count")
}

/// Marks versions destroyed (see the trait docs). The key's row is locked before the references
/// are counted: a write storing data under one of these versions either committed before (and
/// is counted) or waits for this transaction and then finds the version destroyed.
pub(super) async fn destroy_versions(
    db: &Db<'_>,
    id: KeyId,
    versions: &[KeyVersion],
    whole_key: bool,
    now: OffsetDateTime,
) -> Result<Key, Error> {
    let key = locked(db, id).await?;
    let mut in_use = 0;
    for v in versions {
        let record = key.version(*v).ok_or(StoreError::NotFound)?;
        if record.state == VersionState::Primary && !whole_key {
            return Err(StoreError::Stale {
                what: StaleKind::PrimaryVersion,
            }
            .into());
        }
        in_use += reference_count(db, id, *v).await?;
    }
    if in_use > 0 {
        return Err(StoreError::InUse { count: in_use }.into());
    }
    let idt = id.to_string();
    let now_text = time_text(now);
    for v in versions {
        db.execute(
            "UPDATE key_versions SET state = 'destroyed', destroyed_at = $3,
                 device_object = CASE device_object WHEN 'present' THEN 'destroy_pending'
                                                    ELSE device_object END
             WHERE key_id = $1 AND version = $2 AND state != 'destroyed'",
            &[&idt, &i64::from(v.get()), &now_text],
        )
        .await?;
    }
    if whole_key {
        db.execute(
            "UPDATE keys SET state = 'destroyed', deletion_date = NULL, deletion_blocked = NULL,
                 next_rotation_at = NULL WHERE id = $1",
            &[&idt],
        )
        .await?;
        db.execute("DELETE FROM aliases WHERE key_id = $1", &[&idt])
            .await?;
    }
    db.execute(
        "UPDATE keys SET updated_at = $2 WHERE id = $1",
        &[&idt, &now_text],
    )
    .await?;
    locked(db, id).await
}

/// Records a device object as gone, and erases what the store kept beside it.
pub(super) async fn mark_device_destroyed(db: &Db<'_>, root: &RootKeyRef) -> Result<(), Error> {
    db.execute(
        "UPDATE key_versions SET device_object = 'destroyed', device_blob = NULL, wrapped_kek = NULL
         WHERE key_id = $1 AND version = $2",
        &[&root.key_id.to_string(), &i64::from(root.version.get())],
    )
    .await?;
    Ok(())
}

/// Device objects whose destruction is pending, marked at or before `marked_before`.
pub(super) async fn pending_device_destroys(
    db: &Db<'_>,
    marked_before: OffsetDateTime,
) -> Result<Vec<RootKeyRef>, Error> {
    let rows = db
        .query(
            "SELECT key_id, version, destroyed_at FROM key_versions
             WHERE device_object = 'destroy_pending' ORDER BY key_id, version",
            &[],
        )
        .await?;
    let mut out = Vec::new();
    for r in &rows {
        if marked_after(r.try_get(2)?, marked_before)? {
            continue;
        }
        out.push(RootKeyRef::bare(
            r.try_get::<_, &str>(0)?
                .parse()
                .map_err(|_| corrupt("key_versions.key_id"))?,
            version(r.try_get(1)?, "key_versions.version")?,
        ));
    }
    Ok(out)
}

/// Stored data keys per version.
pub(super) async fn references(db: &Db<'_>, id: KeyId) -> Result<Vec<(KeyVersion, u64)>, Error> {
    let rows = db
        .query(
            "SELECT v.version, (SELECT COUNT(*) FROM secret_versions s
                                WHERE s.key_id = v.key_id AND s.key_version = v.version)
                             + (SELECT COUNT(*) FROM access_keys a
                                WHERE a.key_id = v.key_id AND a.key_version = v.version
                                  AND a.revoked_at IS NULL)
             FROM key_versions v WHERE v.key_id = $1 ORDER BY v.version",
            &[&id.to_string()],
        )
        .await?;
    if rows.is_empty() {
        return Err(StoreError::NotFound.into());
    }
    rows.iter()
        .map(|r| {
            Ok((
                version(r.try_get(0)?, "key_versions.version")?,
                to_u64(r.try_get(1)?, "secret_versions.count")?,
            ))
        })
        .collect()
}

/// Reserves wraps (one atomic statement).
pub(super) async fn reserve_wraps(db: &Db<'_>, root: &RootKeyRef, n: u64) -> Result<u64, Error> {
    let row = db
        .query_opt(
            "UPDATE key_versions SET wraps_reserved = wraps_reserved + $3
             WHERE key_id = $1 AND version = $2 RETURNING wraps_reserved",
            &[
                &root.key_id.to_string(),
                &i64::from(root.version.get()),
                &big(n),
            ],
        )
        .await?
        .ok_or(StoreError::NotFound)?;
    to_u64(row.try_get(0)?, "key_versions.wraps_reserved")
}

/// Enabled keys with a due rotation.
pub(super) async fn due_rotations(
    db: &Db<'_>,
    now: OffsetDateTime,
    limit: u32,
) -> Result<Vec<(KeyId, OffsetDateTime)>, Error> {
    let rows = db
        .query(
            "SELECT id, next_rotation_at FROM keys
             WHERE state = 'enabled' AND next_rotation_at IS NOT NULL AND next_rotation_at <= $1
             ORDER BY next_rotation_at LIMIT $2",
            &[&millis(now), &i64::from(limit)],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get::<_, &str>(0)?
                    .parse()
                    .map_err(|_| corrupt("keys.id"))?,
                from_millis(r.try_get(1)?, "keys.next_rotation_at")?,
            ))
        })
        .collect()
}

/// Keys whose deletion date has passed.
pub(super) async fn due_deletions(
    db: &Db<'_>,
    now: OffsetDateTime,
    limit: u32,
) -> Result<Vec<KeyId>, Error> {
    let rows = db
        .query(
            "SELECT id FROM keys WHERE state = 'pending_deletion' AND deletion_date <= $1
             ORDER BY deletion_date LIMIT $2",
            &[&millis(now), &i64::from(limit)],
        )
        .await?;
    rows.iter()
        .map(|r| {
            r.try_get::<_, &str>(0)?
                .parse()
                .map_err(|_| corrupt("keys.id"))
        })
        .collect()
}

const ALIAS_COLUMNS: &str = "name, key_id, created_at, updated_at";

fn alias_of(r: &Row) -> Result<Alias, Error> {
    Ok(Alias {
        name: KeyName::try_from(r.try_get::<_, String>(0)?).map_err(|_| corrupt("aliases.name"))?,
        key_id: r
            .try_get::<_, &str>(1)?
            .parse()
            .map_err(|_| corrupt("aliases.key_id"))?,
        created_at: parse_time(r.try_get(2)?, "aliases.created_at")?,
        updated_at: parse_time(r.try_get(3)?, "aliases.updated_at")?,
    })
}

/// The alias `name`.
pub(super) async fn alias(db: &Db<'_>, name: &KeyName) -> Result<Option<Alias>, Error> {
    db.query_opt(
        &format!("SELECT {ALIAS_COLUMNS} FROM aliases WHERE name = $1"),
        &[&name.as_str()],
    )
    .await?
    .as_ref()
    .map(alias_of)
    .transpose()
}

/// Creates or re-points an alias, each in one statement: a second creator fails on the primary
/// key (`Conflict { "aliases.name" }`), re-pointing a missing alias changes no row.
pub(super) async fn put_alias(
    db: &Db<'_>,
    name: &KeyName,
    key_id: KeyId,
    create_only: bool,
    now: OffsetDateTime,
) -> Result<Alias, Error> {
    let (name, key_id, now) = (name.as_str(), key_id.to_string(), time_text(now));
    let row = if create_only {
        db.query_opt(
            &format!(
                "INSERT INTO aliases ({ALIAS_COLUMNS}) VALUES ($1, $2, $3, $3)
                 RETURNING {ALIAS_COLUMNS}"
            ),
            &[&name, &key_id, &now],
        )
        .await?
    } else {
        db.query_opt(
            &format!(
                "UPDATE aliases SET key_id = $2, updated_at = $3 WHERE name = $1
                 RETURNING {ALIAS_COLUMNS}"
            ),
            &[&name, &key_id, &now],
        )
        .await?
    };
    row.as_ref()
        .map(alias_of)
        .transpose()?
        .ok_or(StoreError::NotFound.into())
}

/// Every alias.
pub(super) async fn list_aliases(db: &Db<'_>) -> Result<Vec<Alias>, Error> {
    db.query(
        &format!("SELECT {ALIAS_COLUMNS} FROM aliases ORDER BY name"),
        &[],
    )
    .await?
    .iter()
    .map(alias_of)
    .collect()
}

/// Deletes an alias.
pub(super) async fn delete_alias(db: &Db<'_>, name: &KeyName) -> Result<bool, Error> {
    Ok(db
        .execute("DELETE FROM aliases WHERE name = $1", &[&name.as_str()])
        .await?
        > 0)
}

/// Inside a write transaction: `Stale` unless the key is enabled and `version` is in `states`.
/// The key's row is locked `FOR SHARE` first, so a concurrent change of the key (destruction,
/// rotation) has either committed — and this read sees it — or waits until this transaction
/// ends, having seen the data it stores.
pub(super) async fn require_version(
    db: &Db<'_>,
    key_id: KeyId,
    version: KeyVersion,
    states: &[VersionState],
) -> Result<(), Error> {
    let idt = key_id.to_string();
    let key_state = db
        .query_opt("SELECT state FROM keys WHERE id = $1 FOR SHARE", &[&idt])
        .await?
        .map(|r| r.try_get::<_, String>(0))
        .transpose()?;
    let version_state = db
        .query_opt(
            "SELECT state FROM key_versions WHERE key_id = $1 AND version = $2",
            &[&idt, &i64::from(version.get())],
        )
        .await?
        .map(|r| r.try_get::<_, String>(0))
        .transpose()?;
    let usable = key_state.as_deref() == Some(KeyState::Enabled.as_str())
        && version_state
            .as_deref()
            .and_then(VersionState::parse)
            .is_some_and(|s| states.contains(&s));
    if usable {
        Ok(())
    } else {
        Err(StoreError::Stale {
            what: StaleKind::KeyVersion,
        }
        .into())
    }
}
