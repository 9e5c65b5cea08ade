//! The secrets tables: records, versions, pruning, destruction and due rotations.
//!
//! A write locks the secret's row (creating it when absent) before it reads the current version,
//! so version numbers are allocated one writer at a time; then it locks the key's row
//! `FOR SHARE` (see `keys::require_version`). A secret's first version is tried first as one
//! statement (`insert_first`), which takes the key's row first; decision 0018 says why that
//! order is safe.

use time::OffsetDateTime;
use tokio_postgres::Row;

use super::error::Error;
use super::{corrupt, from_millis, millis, parse_time, time_text, to_u32, Db};
use crate::domain::secret::{
    CustomMetadata, GenerateSpec, HumanDuration, SecretPath, SecretRecord, SecretVersionInfo,
    SecretVersionState,
};
use crate::domain::{KeyId, KeyState, KeyVersion, VersionState};
use crate::store::{
    MetadataUpdate, NewSecretVersion, SealedSecret, SecretForRead, StaleKind, StoreError, VersionOp,
};

/// A secret's columns (`s.`) then one version's (`v.`, NULL for a secret with none).
const SECRET_WITH_VERSIONS: &str = "s.path, s.key_id, s.current_version, s.max_versions, \
     s.expires_after_s, s.custom, s.generate, s.next_rotation_at, s.created_at, s.updated_at, \
     v.version, v.state, v.created_at, v.deleted_at, v.destroyed_at, v.key_id, v.key_version";

fn opt_time(t: Option<String>, column: &'static str) -> Result<Option<OffsetDateTime>, Error> {
    Ok(t.map(|t| parse_time(&t, column)).transpose()?)
}

fn version_of(r: &Row) -> Result<Option<SecretVersionInfo>, Error> {
    let Some(version) = r.try_get::<_, Option<i64>>(10)? else {
        return Ok(None);
    };
    Ok(Some(SecretVersionInfo {
        version: to_u32(version, "secret_versions.version")?,
        state: SecretVersionState::parse(r.try_get(11)?).ok_or(corrupt("secret_versions.state"))?,
        created_at: parse_time(r.try_get(12)?, "secret_versions.created_at")?,
        deleted_at: opt_time(r.try_get(13)?, "secret_versions.deleted_at")?,
        destroyed_at: opt_time(r.try_get(14)?, "secret_versions.destroyed_at")?,
        key_id: r
            .try_get::<_, Option<&str>>(15)?
            .map(|k| {
                k.parse::<KeyId>()
                    .map_err(|_| corrupt("secret_versions.key_id"))
            })
            .transpose()?,
        key_version: r
            .try_get::<_, Option<i64>>(16)?
            .map(|v| {
                KeyVersion::new(to_u32(v, "secret_versions.key_version")?)
                    .ok_or(corrupt("secret_versions.key_version"))
            })
            .transpose()?,
    }))
}

fn record_of(r: &Row) -> Result<SecretRecord, Error> {
    Ok(SecretRecord {
        path: SecretPath::from_stored(r.try_get::<_, String>(0)?)
            .map_err(|_| corrupt("secrets.path"))?,
        key_id: r
            .try_get::<_, &str>(1)?
            .parse()
            .map_err(|_| corrupt("secrets.key_id"))?,
        current_version: to_u32(r.try_get(2)?, "secrets.current_version")?,
        max_versions: to_u32(r.try_get(3)?, "secrets.max_versions")?,
        expires_after: r
            .try_get::<_, Option<i64>>(4)?
            .map(|s| {
                u64::try_from(s)
                    .map(|s| HumanDuration(std::time::Duration::from_secs(s)))
                    .map_err(|_| corrupt("secrets.expires_after_s"))
            })
            .transpose()?,
        custom: serde_json::from_str::<CustomMetadata>(r.try_get(5)?)
            .map_err(|_| corrupt("secrets.custom"))?,
        generate: r
            .try_get::<_, Option<&str>>(6)?
            .map(|g| {
                serde_json::from_str::<GenerateSpec>(g).map_err(|_| corrupt("secrets.generate"))
            })
            .transpose()?,
        next_rotation_at: r
            .try_get::<_, Option<i64>>(7)?
            .map(|t| from_millis(t, "secrets.next_rotation_at"))
            .transpose()?,
        created_at: parse_time(r.try_get(8)?, "secrets.created_at")?,
        updated_at: parse_time(r.try_get(9)?, "secrets.updated_at")?,
        versions: Vec::new(),
    })
}

/// Folds rows of [`SECRET_WITH_VERSIONS`] (ordered by path, then version) into records.
fn records_of(rows: &[Row]) -> Result<Vec<SecretRecord>, Error> {
    let mut out: Vec<SecretRecord> = Vec::new();
    for r in rows {
        let path: &str = r.try_get(0)?;
        if out.last().is_none_or(|s| s.path.as_str() != path) {
            out.push(record_of(r)?);
        }
        if let (Some(s), Some(v)) = (out.last_mut(), version_of(r)?) {
            s.versions.push(v);
        }
    }
    Ok(out)
}

/// The record at `path`.
pub(super) async fn get(db: &Db<'_>, path: &SecretPath) -> Result<Option<SecretRecord>, Error> {
    let rows = db
        .query(
            &format!(
                "SELECT {SECRET_WITH_VERSIONS} FROM secrets s
                 LEFT JOIN secret_versions v ON v.path = s.path
                 WHERE s.path = $1 ORDER BY v.version"
            ),
            &[&path.as_str()],
        )
        .await?;
    Ok(records_of(&rows)?.pop())
}

/// The record at `path` and, in the same statement, the sealed data of `version` (or of the
/// latest live version): the columns are filled on that version's row only.
pub(super) async fn get_for_read(
    db: &Db<'_>,
    path: &SecretPath,
    version: Option<u32>,
) -> Result<Option<SecretForRead>, Error> {
    let rows = db
        .query(
            &format!(
                "WITH wanted AS (SELECT COALESCE($2, (SELECT max(version) FROM secret_versions
                                                      WHERE path = $1 AND state = 'live')) AS n)
                 SELECT {SECRET_WITH_VERSIONS},
                        CASE WHEN v.version = wanted.n THEN v.wrapped_dek END,
                        CASE WHEN v.version = wanted.n THEN v.ciphertext END
                 FROM secrets s CROSS JOIN wanted
                 LEFT JOIN secret_versions v ON v.path = s.path
                 WHERE s.path = $1 ORDER BY v.version"
            ),
            &[&path.as_str(), &version.map(i64::from)],
        )
        .await?;
    let mut data = None;
    for r in &rows {
        if let (Some(wrapped_dek), Some(ciphertext), Some(v)) = (
            r.try_get::<_, Option<Vec<u8>>>(17)?,
            r.try_get::<_, Option<Vec<u8>>>(18)?,
            version_of(r)?,
        ) {
            data = Some((
                v.version,
                SealedSecret {
                    wrapped_dek,
                    ciphertext,
                },
            ));
        }
    }
    Ok(records_of(&rows)?.pop().map(|record| (record, data)))
}

/// A page of records.
pub(super) async fn list(
    db: &Db<'_>,
    prefix: &str,
    after: Option<&SecretPath>,
    limit: u32,
) -> Result<Vec<SecretRecord>, Error> {
    // `left` rather than LIKE: a prefix may contain `_` or `%`, which LIKE treats as wildcards.
    let rows = db
        .query(
            &format!(
                "WITH page AS (SELECT * FROM secrets
                               WHERE left(path, length($1)) = $1 AND path > $2
                               ORDER BY path LIMIT $3)
                 SELECT {SECRET_WITH_VERSIONS} FROM page s
                 LEFT JOIN secret_versions v ON v.path = s.path
                 ORDER BY s.path, v.version"
            ),
            &[
                &prefix,
                &after.map_or("", SecretPath::as_str),
                &i64::from(limit),
            ],
        )
        .await?;
    records_of(&rows)
}

/// The wrapped data key and ciphertext of one version.
pub(super) async fn data(
    db: &Db<'_>,
    path: &SecretPath,
    version: u32,
) -> Result<Option<SealedSecret>, Error> {
    db.query_opt(
        "SELECT wrapped_dek, ciphertext FROM secret_versions
         WHERE path = $1 AND version = $2 AND wrapped_dek IS NOT NULL AND ciphertext IS NOT NULL",
        &[&path.as_str(), &i64::from(version)],
    )
    .await?
    .map(|r| {
        Ok(SealedSecret {
            wrapped_dek: r.try_get(0)?,
            ciphertext: r.try_get(1)?,
        })
    })
    .transpose()
}

/// Erases versions: state destroyed, ciphertext and wrapped data key gone from the live row.
/// (The old row version stays in the table's pages until vacuumed: see docs/store.md.)
async fn destroy(db: &Db<'_>, path: &str, versions: &[u32], now: &str) -> Result<Vec<u32>, Error> {
    let mut changed = Vec::new();
    for v in versions {
        let n = db
            .execute(
                "UPDATE secret_versions SET state = 'destroyed', destroyed_at = $3,
                     wrapped_dek = NULL, ciphertext = NULL, key_id = NULL, key_version = NULL
                 WHERE path = $1 AND version = $2 AND state != 'destroyed'",
                &[&path, &i64::from(*v), &now],
            )
            .await?;
        if n > 0 {
            changed.push(*v);
        }
    }
    Ok(changed)
}

/// Destroys the oldest versions beyond `max_versions` (0 = unlimited).
async fn prune(db: &Db<'_>, path: &str, max_versions: u32, now: &str) -> Result<Vec<u32>, Error> {
    if max_versions == 0 {
        return Ok(Vec::new());
    }
    let kept = db
        .query(
            "SELECT version FROM secret_versions WHERE path = $1 AND state != 'destroyed'
             ORDER BY version",
            &[&path],
        )
        .await?
        .iter()
        .map(|r| to_u32(r.try_get(0)?, "secret_versions.version"))
        .collect::<Result<Vec<_>, _>>()?;
    let excess = kept.len().saturating_sub(max_versions as usize);
    let pruned = destroy(db, path, kept.get(..excess).unwrap_or(&[]), now).await?;
    if let Some(&oldest_kept) = kept.get(excess) {
        db.execute(
            "DELETE FROM secret_versions WHERE path = $1 AND state = 'destroyed'
               AND version < $2 AND version < (SELECT version FROM secret_versions
                 WHERE path = $1 AND state = 'destroyed' AND version < $2
                 ORDER BY version DESC LIMIT 1 OFFSET $3)",
            &[
                &path,
                &i64::from(oldest_kept),
                &i64::from(crate::store::KEPT_TOMBSTONES - 1),
            ],
        )
        .await?;
    }
    Ok(pruned)
}

/// The secret row's `(current_version, max_versions, next_rotation_at)`, locked for the rest of
/// the transaction; `None` when there is no secret at `path`.
async fn lock(db: &Db<'_>, path: &str) -> Result<Option<(u32, u32, Option<i64>)>, Error> {
    db.query_opt(
        "SELECT current_version, max_versions, next_rotation_at FROM secrets
         WHERE path = $1 FOR UPDATE",
        &[&path],
    )
    .await?
    .map(|r| {
        Ok((
            to_u32(r.try_get(0)?, "secrets.current_version")?,
            to_u32(r.try_get(1)?, "secrets.max_versions")?,
            r.try_get(2)?,
        ))
    })
    .transpose()
}

/// Creates the secret's row unless it exists (a concurrent creator's row counts: this waits for
/// it and then does nothing); true when this call created it.
async fn create_if_absent(
    db: &Db<'_>,
    path: &str,
    key_id: KeyId,
    max_versions: u32,
    now: &str,
) -> Result<bool, Error> {
    Ok(db
        .execute(
            "INSERT INTO secrets (path, key_id, current_version, max_versions, expires_after_s,
                                  custom, generate, next_rotation_at, created_at, updated_at)
             VALUES ($1, $2, 0, $3, NULL, '{}', NULL, NULL, $4, $4)
             ON CONFLICT (path) DO NOTHING",
            &[&path, &key_id.to_string(), &i64::from(max_versions), &now],
        )
        .await?
        > 0)
}

/// Whether `v` may try [`insert_first`]: a secret's first version with no check-and-set other
/// than "absent" and no rotation claim (a first version never prunes: see
/// `store::pruning_may_apply`).
pub(super) fn may_insert_first(v: &NewSecretVersion) -> bool {
    v.version == 1 && v.cas.is_none_or(|c| c == 0) && v.rotation.is_none()
}

/// A secret's first version in one statement, which is its own transaction: the key row is
/// locked `FOR SHARE` and must be enabled with the version primary or active (as
/// `keys::require_version` checks), the secret's row is created at version 1, and the version
/// is stored. `false` when it wrote nothing: the path exists (a concurrent creator's row counts),
/// the key or its version is not usable, or the database broke a deadlock. The caller then runs
/// [`insert`], which writes or says why not.
///
/// A fresh path's write costs one round trip here instead of seven (`BEGIN`, the row, the key,
/// the version, the version's row, the row's counter, `COMMIT`).
pub(super) async fn insert_first(db: &Db<'_>, v: &NewSecretVersion) -> Result<bool, Error> {
    let usable = [
        VersionState::Primary.as_str(),
        VersionState::Active.as_str(),
    ];
    let written = db
        .execute(
            "WITH usable AS (
                 SELECT k.id FROM keys k JOIN key_versions kv ON kv.key_id = k.id
                 WHERE k.id = $1::text AND k.state = $2::text
                   AND kv.version = $3::bigint AND kv.state = ANY($4::text[])
                 FOR SHARE OF k
             ), created AS (
                 INSERT INTO secrets (path, key_id, current_version, max_versions,
                                      expires_after_s, custom, generate, next_rotation_at,
                                      created_at, updated_at)
                 SELECT $5::text, id, 1, $6::bigint, NULL, '{}', NULL, NULL, $7::text, $7::text
                 FROM usable
                 ON CONFLICT (path) DO NOTHING
                 RETURNING path
             )
             INSERT INTO secret_versions
                 (path, version, state, created_at, key_id, key_version, wrapped_dek, ciphertext)
             SELECT path, 1, 'live', $7::text, $1::text, $3::bigint, $8::bytea, $9::bytea
             FROM created",
            &[
                &v.key_id.to_string(),
                &KeyState::Enabled.as_str(),
                &i64::from(v.key_version.get()),
                &&usable[..],
                &v.path.as_str(),
                &i64::from(v.default_max_versions),
                &time_text(v.created_at),
                &v.wrapped_dek,
                &v.ciphertext,
            ],
        )
        .await;
    match written {
        Ok(n) => Ok(n == 1),
        Err(e) if e.is_retryable() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Records a version (see the trait docs).
pub(super) async fn insert(db: &Db<'_>, v: &NewSecretVersion) -> Result<Vec<u32>, Error> {
    let path = v.path.as_str();
    let now = time_text(v.created_at);
    let created = create_if_absent(db, path, v.key_id, v.default_max_versions, &now).await?;
    // A row this transaction created is locked by its insert and holds what it was given.
    let locked = if created {
        (0, v.default_max_versions, None)
    } else {
        lock(db, path).await?.ok_or(StoreError::NotFound)?
    };
    let existing = (!created).then_some(locked);
    let current = existing.map_or(0, |e| e.0);
    if let Some(cas) = v.cas {
        if cas != current {
            return Err(StoreError::CheckAndSet { current }.into());
        }
    }
    super::keys::require_version(
        db,
        v.key_id,
        v.key_version,
        &[VersionState::Primary, VersionState::Active],
    )
    .await?;
    if v.version != current + 1 {
        return Err(StoreError::Stale {
            what: StaleKind::SecretVersion,
        }
        .into());
    }
    if let Some(expected) = v.rotation.and_then(|c| c.expected) {
        let seen = existing.and_then(|e| e.2);
        if seen != expected.map(millis) {
            return Err(StoreError::Stale {
                what: StaleKind::RotationSchedule,
            }
            .into());
        }
    }
    let max_versions = locked.1;
    db.execute(
        "INSERT INTO secret_versions
             (path, version, state, created_at, key_id, key_version, wrapped_dek, ciphertext)
         VALUES ($1, $2, 'live', $3, $4, $5, $6, $7)",
        &[
            &path,
            &i64::from(v.version),
            &now,
            &v.key_id.to_string(),
            &i64::from(v.key_version.get()),
            &v.wrapped_dek,
            &v.ciphertext,
        ],
    )
    .await?;
    db.execute(
        "UPDATE secrets SET current_version = $2, updated_at = $3 WHERE path = $1",
        &[&path, &i64::from(v.version), &now],
    )
    .await?;
    if let Some(claim) = v.rotation {
        db.execute(
            "UPDATE secrets SET next_rotation_at = $2 WHERE path = $1",
            &[&path, &millis(claim.next)],
        )
        .await?;
    }
    if crate::store::pruning_may_apply(v.version, max_versions) {
        prune(db, path, max_versions, &now).await
    } else {
        Ok(Vec::new())
    }
}

/// Creates (if absent) and updates metadata (see the trait docs).
pub(super) async fn put_metadata(
    db: &Db<'_>,
    path: &SecretPath,
    key_id: KeyId,
    default_max_versions: u32,
    u: &MetadataUpdate,
    now: OffsetDateTime,
) -> Result<SecretRecord, Error> {
    let p = path.as_str();
    let now_text = time_text(now);
    create_if_absent(db, p, key_id, default_max_versions, &now_text).await?;
    lock(db, p).await?.ok_or(StoreError::NotFound)?;
    if let Some(k) = u.key_id {
        db.execute(
            "UPDATE secrets SET key_id = $2 WHERE path = $1",
            &[&p, &k.to_string()],
        )
        .await?;
    }
    if let Some(max) = u.max_versions {
        db.execute(
            "UPDATE secrets SET max_versions = $2 WHERE path = $1",
            &[&p, &i64::from(max)],
        )
        .await?;
    }
    if let Some(exp) = u.expires_after {
        let secs = exp.map(|d| i64::try_from(d.0.as_secs()).unwrap_or(i64::MAX));
        db.execute(
            "UPDATE secrets SET expires_after_s = $2 WHERE path = $1",
            &[&p, &secs],
        )
        .await?;
    }
    if let Some(custom) = &u.custom {
        let json = serde_json::to_string(custom).map_err(|_| corrupt("secrets.custom"))?;
        db.execute(
            "UPDATE secrets SET custom = $2 WHERE path = $1",
            &[&p, &json],
        )
        .await?;
    }
    if let Some((spec, next)) = &u.generate {
        let json = spec
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|_| corrupt("secrets.generate"))?;
        db.execute(
            "UPDATE secrets SET generate = $2, next_rotation_at = $3 WHERE path = $1",
            &[&p, &json, &next.map(millis)],
        )
        .await?;
    }
    db.execute(
        "UPDATE secrets SET updated_at = $2 WHERE path = $1",
        &[&p, &now_text],
    )
    .await?;
    let (_, max, _) = lock(db, p).await?.ok_or(StoreError::NotFound)?;
    prune(db, p, max, &now_text).await?;
    get(db, path).await?.ok_or(StoreError::NotFound.into())
}

/// Applies `op` to versions (see the trait docs).
pub(super) async fn update_versions(
    db: &Db<'_>,
    path: &SecretPath,
    versions: &[u32],
    op: VersionOp,
    now: OffsetDateTime,
) -> Result<Vec<u32>, Error> {
    let p = path.as_str();
    let now_text = time_text(now);
    lock(db, p).await?.ok_or(StoreError::NotFound)?;
    for v in versions {
        let exists = db
            .query_opt(
                "SELECT 1 FROM secret_versions WHERE path = $1 AND version = $2",
                &[&p, &i64::from(*v)],
            )
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound.into());
        }
    }
    let changed = match op {
        VersionOp::Destroy => destroy(db, p, versions, &now_text).await?,
        VersionOp::Delete | VersionOp::Undelete => {
            let (from, to, deleted_at) = match op {
                VersionOp::Delete => ("live", "deleted", Some(now_text.as_str())),
                _ => ("deleted", "live", None),
            };
            let mut changed = Vec::new();
            for v in versions {
                let n = db
                    .execute(
                        "UPDATE secret_versions SET state = $4, deleted_at = $5
                         WHERE path = $1 AND version = $2 AND state = $3",
                        &[&p, &i64::from(*v), &from, &to, &deleted_at],
                    )
                    .await?;
                if n > 0 {
                    changed.push(*v);
                }
            }
            changed
        }
    };
    if !changed.is_empty() {
        db.execute(
            "UPDATE secrets SET updated_at = $2 WHERE path = $1",
            &[&p, &now_text],
        )
        .await?;
    }
    Ok(changed)
}

/// Due rotations.
pub(super) async fn due(
    db: &Db<'_>,
    now: OffsetDateTime,
    limit: u32,
) -> Result<Vec<(SecretPath, OffsetDateTime)>, Error> {
    db.query(
        "SELECT path, next_rotation_at FROM secrets
         WHERE next_rotation_at IS NOT NULL AND next_rotation_at <= $1
         ORDER BY next_rotation_at LIMIT $2",
        &[&millis(now), &i64::from(limit)],
    )
    .await?
    .iter()
    .map(|r| {
        Ok((
            SecretPath::from_stored(r.try_get::<_, String>(0)?)
                .map_err(|_| corrupt("secrets.path"))?,
            from_millis(r.try_get(1)?, "secrets.next_rotation_at")?,
        ))
    })
    .collect()
}
