//! The jobs table and the re-wrap batches it tracks.

use time::OffsetDateTime;
use tokio_postgres::Row;

use super::error::Error;
use super::{big, corrupt, millis, parse_time, time_text, to_u32, to_u64, Db};
use crate::domain::job::{Job, JobEvent, JobKind, JobState};
use crate::domain::secret::SecretPath;
use crate::domain::{KeyId, KeyVersion, VersionState};
use crate::store::{RewrapBatch, RewrapItem, RewrapShard};

const JOB_COLUMNS: &str = "id, kind, key_id, target_version, state, done, failed_items, \
                           last_error, created_at, updated_at, finished_at";

fn job_of(r: &Row) -> Result<Job, Error> {
    let finished: Option<&str> = r.try_get(10)?;
    Ok(Job {
        id: r.try_get(0)?,
        kind: match r.try_get::<_, &str>(1)? {
            "rewrap" => JobKind::Rewrap,
            _ => return Err(corrupt("jobs.kind")),
        },
        key_id: r
            .try_get::<_, &str>(2)?
            .parse()
            .map_err(|_| corrupt("jobs.key_id"))?,
        target_version: KeyVersion::new(to_u32(r.try_get(3)?, "jobs.target_version")?)
            .ok_or(corrupt("jobs.target_version"))?,
        state: JobState::parse(r.try_get(4)?).ok_or(corrupt("jobs.state"))?,
        done: to_u64(r.try_get(5)?, "jobs.done")?,
        failed_items: to_u64(r.try_get(6)?, "jobs.failed_items")?,
        last_error: r.try_get(7)?,
        created_at: parse_time(r.try_get(8)?, "jobs.created_at")?,
        updated_at: parse_time(r.try_get(9)?, "jobs.updated_at")?,
        finished_at: finished
            .map(|t| parse_time(t, "jobs.finished_at"))
            .transpose()?,
    })
}

/// Appends to a job's trail, inside the caller's transaction, which has already locked the
/// job's row (so two events never take the same number).
async fn event(
    db: &Db<'_>,
    job_id: &str,
    kind: &str,
    moved: u64,
    failed: u64,
    detail: Option<&str>,
    now: &str,
) -> Result<(), Error> {
    db.execute(
        "INSERT INTO job_events (job_id, seq, at, kind, moved, failed, detail)
         VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM job_events WHERE job_id = $1),
                 $2, $3, $4, $5, $6)",
        &[&job_id, &now, &kind, &big(moved), &big(failed), &detail],
    )
    .await?;
    Ok(())
}

/// A job's trail, oldest first.
pub(super) async fn events(db: &Db<'_>, job_id: &str) -> Result<Vec<JobEvent>, Error> {
    db.query(
        "SELECT seq, at, kind, moved, failed, detail FROM job_events WHERE job_id = $1
         ORDER BY seq",
        &[&job_id],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(JobEvent {
            seq: to_u64(r.try_get(0)?, "job_events.seq")?,
            at: parse_time(r.try_get(1)?, "job_events.at")?,
            kind: r.try_get(2)?,
            moved: to_u64(r.try_get(3)?, "job_events.moved")?,
            failed: to_u64(r.try_get(4)?, "job_events.failed")?,
            detail: r.try_get(5)?,
        })
    })
    .collect()
}

/// Inserts a job and its `started` event.
pub(super) async fn create(db: &Db<'_>, job: &Job) -> Result<(), Error> {
    db.execute(
        &format!(
            "INSERT INTO jobs ({JOB_COLUMNS}, started_at)
             VALUES ($1, 'rewrap', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ),
        &[
            &job.id,
            &job.key_id.to_string(),
            &i64::from(job.target_version.get()),
            &job.state.as_str(),
            &big(job.done),
            &big(job.failed_items),
            &job.last_error,
            &time_text(job.created_at),
            &time_text(job.updated_at),
            &job.finished_at.map(time_text),
            &millis(job.created_at),
        ],
    )
    .await?;
    let detail = format!("re-wrap to version {}", job.target_version);
    event(
        db,
        &job.id,
        "started",
        0,
        0,
        Some(&detail),
        &time_text(job.created_at),
    )
    .await
}

/// The job `id`.
pub(super) async fn get(db: &Db<'_>, id: &str) -> Result<Option<Job>, Error> {
    db.query_opt(
        &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"),
        &[&id],
    )
    .await?
    .as_ref()
    .map(job_of)
    .transpose()
}

/// Jobs, newest first.
pub(super) async fn list(
    db: &Db<'_>,
    state: Option<JobState>,
    limit: u32,
) -> Result<Vec<Job>, Error> {
    db.query(
        &format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE ($1::text IS NULL OR state = $1)
             ORDER BY started_at DESC, id LIMIT $2"
        ),
        &[&state.map(JobState::as_str), &i64::from(limit)],
    )
    .await?
    .iter()
    .map(job_of)
    .collect()
}

/// Stored data keys not yet under `target`.
pub(super) async fn candidates(
    db: &Db<'_>,
    key_id: KeyId,
    target: KeyVersion,
    shard: RewrapShard,
    after: Option<&(SecretPath, u32)>,
    limit: u32,
) -> Result<Vec<RewrapItem>, Error> {
    // A pass starts without a cursor. Once a job has moved everything, each part's pass that
    // finds nothing left and the job's last check would each walk every row of the key to
    // return none; two seeks in `secret_versions_by_key` (the rows with a data key) answer that.
    if after.is_none() {
        let any: bool = db
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM secret_versions WHERE key_id = $1 AND key_version < $2)
                     OR EXISTS (SELECT 1 FROM secret_versions WHERE key_id = $1 AND key_version > $2)",
                &[&key_id.to_string(), &i64::from(target.get())],
            )
            .await?
            .try_get(0)?;
        if !any {
            return Ok(Vec::new());
        }
    }
    let (after_path, after_version) = after.map_or(("", 0), |(p, v)| (p.as_str(), *v));
    // The part of a path: its `hashtext` (stable across nodes and restarts) made non-negative,
    // modulo the number of parts.
    db.query(
        "SELECT path, version, key_version, wrapped_dek FROM secret_versions
         WHERE key_id = $1 AND key_version != $2 AND wrapped_dek IS NOT NULL
           AND (path, version) > ($3, $4)
           AND (hashtext(path)::bigint & 2147483647) % $6 = $7
         ORDER BY path, version LIMIT $5",
        &[
            &key_id.to_string(),
            &i64::from(target.get()),
            &after_path,
            &i64::from(after_version),
            &i64::from(limit),
            &i64::from(shard.of.max(1)),
            &i64::from(shard.index),
        ],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(RewrapItem {
            path: SecretPath::from_stored(r.try_get::<_, String>(0)?)
                .map_err(|_| corrupt("secret_versions.path"))?,
            version: to_u32(r.try_get(1)?, "secret_versions.version")?,
            key_version: KeyVersion::new(to_u32(r.try_get(2)?, "secret_versions.key_version")?)
                .ok_or(corrupt("secret_versions.key_version"))?,
            wrapped_dek: r.try_get(3)?,
        })
    })
    .collect()
}

/// Commits one re-wrap batch (see the trait docs).
pub(super) async fn apply(db: &Db<'_>, batch: &RewrapBatch) -> Result<u64, Error> {
    let RewrapBatch {
        job_id,
        key_id,
        target,
        items,
        failed,
        last_error,
        now,
    } = batch;
    super::keys::require_version(db, *key_id, *target, &[VersionState::Primary]).await?;
    let mut from: Vec<u32> = items.iter().map(|(i, _)| i.key_version.get()).collect();
    from.sort_unstable();
    from.dedup();
    // One statement for the whole batch, one round trip (`unnest` turns the arrays back into
    // rows). A row is replaced only if it still holds exactly what was re-wrapped: a concurrent
    // write, destroy or an earlier run of this batch makes its update a no-op, never a lost
    // value.
    let paths: Vec<&str> = items.iter().map(|(i, _)| i.path.as_str()).collect();
    let versions: Vec<i64> = items.iter().map(|(i, _)| i64::from(i.version)).collect();
    let old_versions: Vec<i64> = items
        .iter()
        .map(|(i, _)| i64::from(i.key_version.get()))
        .collect();
    let new_blobs: Vec<&[u8]> = items.iter().map(|(_, b)| b.as_slice()).collect();
    let old_blobs: Vec<&[u8]> = items
        .iter()
        .map(|(i, _)| i.wrapped_dek.as_slice())
        .collect();
    let changed = if items.is_empty() {
        0
    } else {
        db.execute(
            "UPDATE secret_versions AS s SET wrapped_dek = u.new_dek, key_version = $6
                 FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bytea[], $5::bytea[])
                   AS u (path, version, key_version, new_dek, old_dek)
                 WHERE s.path = u.path AND s.version = u.version
                   AND s.key_version = u.key_version AND s.wrapped_dek = u.old_dek",
            &[
                &paths,
                &versions,
                &old_versions,
                &new_blobs,
                &old_blobs,
                &i64::from(target.get()),
            ],
        )
        .await?
    };
    let now = time_text(*now);
    // Locks the job's row, so the event below takes the next number alone.
    db.execute(
        "UPDATE jobs SET done = done + $2, failed_items = failed_items + $3,
             last_error = COALESCE($4, last_error), updated_at = $5 WHERE id = $1",
        &[job_id, &big(changed), &big(*failed), last_error, &now],
    )
    .await?;
    let detail = format!("from versions {from:?} to {target}");
    event(db, job_id, "batch", changed, *failed, Some(&detail), &now).await?;
    Ok(changed)
}

/// Ends a job and records why in its trail.
pub(super) async fn finish(
    db: &Db<'_>,
    id: &str,
    state: JobState,
    error: Option<&str>,
    now: OffsetDateTime,
) -> Result<(), Error> {
    let now = time_text(now);
    db.execute(
        "UPDATE jobs SET state = $2, last_error = COALESCE($3, last_error), updated_at = $4,
             finished_at = $4 WHERE id = $1",
        &[&id, &state.as_str(), &error, &now],
    )
    .await?;
    event(db, id, state.as_str(), 0, 0, error, &now).await
}
