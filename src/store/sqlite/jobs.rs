//! The jobs table and the re-wrap batches it tracks.

use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use time::OffsetDateTime;

use super::error::Error;
use super::{millis, parse_time, time_text};
use crate::domain::job::{Job, JobEvent, JobKind, JobState};
use crate::domain::secret::SecretPath;
use crate::domain::{KeyId, KeyVersion, VersionState};
use crate::store::{RewrapBatch, RewrapItem, StoreError};

fn corrupt(column: &'static str) -> Error {
    StoreError::Corrupt { column }.into()
}

const JOB_COLUMNS: &str = "id, kind, key_id, target_version, state, done, failed_items, \
                           last_error, created_at, updated_at, finished_at";

type JobRow = (
    String,
    String,
    String,
    u32,
    String,
    i64,
    i64,
    Option<String>,
    String,
    String,
    Option<String>,
);

fn job_row(r: &Row<'_>) -> rusqlite::Result<JobRow> {
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
        r.get(9)?,
        r.get(10)?,
    ))
}

fn job_of(row: JobRow) -> Result<Job, Error> {
    let (id, kind, key_id, target, state, done, failed, last_error, created, updated, finished) =
        row;
    Ok(Job {
        id,
        kind: match kind.as_str() {
            "rewrap" => JobKind::Rewrap,
            _ => return Err(corrupt("jobs.kind")),
        },
        key_id: key_id.parse().map_err(|_| corrupt("jobs.key_id"))?,
        target_version: KeyVersion::new(target).ok_or(corrupt("jobs.target_version"))?,
        state: JobState::parse(&state).ok_or(corrupt("jobs.state"))?,
        done: u64::try_from(done).map_err(|_| corrupt("jobs.done"))?,
        failed_items: u64::try_from(failed).map_err(|_| corrupt("jobs.failed_items"))?,
        last_error,
        created_at: parse_time(&created, "jobs.created_at")?,
        updated_at: parse_time(&updated, "jobs.updated_at")?,
        finished_at: finished
            .map(|t| parse_time(&t, "jobs.finished_at"))
            .transpose()?,
    })
}

/// Appends to a job's trail (inside the caller's transaction).
fn event(
    conn: &Connection,
    job_id: &str,
    kind: &str,
    moved: u64,
    failed: u64,
    detail: Option<&str>,
    now: &str,
) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO job_events (job_id, seq, at, kind, moved, failed, detail)
         VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM job_events WHERE job_id = ?1),
                 ?2, ?3, ?4, ?5, ?6)",
        params![
            job_id,
            now,
            kind,
            i64::try_from(moved).unwrap_or(i64::MAX),
            i64::try_from(failed).unwrap_or(i64::MAX),
            detail
        ],
    )?;
    Ok(())
}

/// A job's trail, oldest first.
pub(super) fn events(conn: &Connection, job_id: &str) -> Result<Vec<JobEvent>, Error> {
    let rows = conn
        .prepare_cached(
            "SELECT seq, at, kind, moved, failed, detail FROM job_events WHERE job_id = ?1 ORDER BY seq",
        )?
        .query_map([job_id], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?, r.get::<_, i64>(4)?, r.get::<_, Option<String>>(5)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(|(seq, at, kind, moved, failed, detail)| {
            Ok(JobEvent {
                seq: u64::try_from(seq).map_err(|_| corrupt("job_events.seq"))?,
                at: parse_time(&at, "job_events.at")?,
                kind,
                moved: u64::try_from(moved).map_err(|_| corrupt("job_events.moved"))?,
                failed: u64::try_from(failed).map_err(|_| corrupt("job_events.failed"))?,
                detail,
            })
        })
        .collect()
}

/// Inserts a job and its `started` event.
pub(super) fn create(conn: &mut Connection, job: &Job) -> Result<(), Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let detail = format!("re-wrap to version {}", job.target_version);
    insert_with_event(&tx, job, &detail)?;
    tx.commit()?;
    Ok(())
}

fn insert_with_event(conn: &Connection, job: &Job, detail: &str) -> Result<(), Error> {
    conn.execute(
        &format!(
            "INSERT INTO jobs ({JOB_COLUMNS}, started_at)
             VALUES (?1, 'rewrap', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
        ),
        params![
            job.id,
            job.key_id.to_string(),
            job.target_version.get(),
            job.state.as_str(),
            i64::try_from(job.done).unwrap_or(i64::MAX),
            i64::try_from(job.failed_items).unwrap_or(i64::MAX),
            job.last_error,
            time_text(job.created_at),
            time_text(job.updated_at),
            job.finished_at.map(time_text),
            millis(job.created_at),
        ],
    )?;
    event(
        conn,
        &job.id,
        "started",
        0,
        0,
        Some(detail),
        &time_text(job.created_at),
    )
}

/// The job `id`.
pub(super) fn get(conn: &Connection, id: &str) -> Result<Option<Job>, Error> {
    conn.prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?
        .query_row([id], job_row)
        .optional()?
        .map(job_of)
        .transpose()
}

/// Jobs, newest first.
pub(super) fn list(
    conn: &Connection,
    state: Option<JobState>,
    limit: u32,
) -> Result<Vec<Job>, Error> {
    let rows = conn
        .prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE (?1 IS NULL OR state = ?1)
             ORDER BY started_at DESC, id LIMIT ?2"
        ))?
        .query_map(params![state.map(JobState::as_str), limit], job_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter().map(job_of).collect()
}

/// The next stored data keys of a key (?1) not under the target version (?2) after the cursor
/// (?3, ?4), at most ?5: a range scan of `secret_versions_rewrap_walk` (migration 10).
pub(super) const CANDIDATES: &str =
    "SELECT path, version, key_version, wrapped_dek FROM secret_versions
     WHERE key_id = ?1 AND key_version != ?2 AND wrapped_dek IS NOT NULL
       AND (path, version) > (?3, ?4)
     ORDER BY path, version LIMIT ?5";

/// Whether a key (?1) still has a stored data key under a version other than ?2: two seeks in
/// `secret_versions_by_key`, which holds exactly the rows with a data key (a row loses its key
/// id when destroyed, migration 2's check).
pub(super) const ANY_LEFT: &str =
    "SELECT EXISTS (SELECT 1 FROM secret_versions WHERE key_id = ?1 AND key_version < ?2)
         OR EXISTS (SELECT 1 FROM secret_versions WHERE key_id = ?1 AND key_version > ?2)";

/// Stored data keys not yet under `target`.
pub(super) fn candidates(
    conn: &Connection,
    key_id: KeyId,
    target: KeyVersion,
    after: Option<&(SecretPath, u32)>,
    limit: u32,
) -> Result<Vec<RewrapItem>, Error> {
    // A pass starts without a cursor. Once a job has moved everything, the pass that finds
    // nothing left and the job's last check both start one, and the walk would read every row
    // of the key (the walk's index leaves `key_version` out) to return none: 18 ms at 20,000
    // rows. The probe answers that case from the other index.
    if after.is_none() {
        let any: bool = conn
            .prepare_cached(ANY_LEFT)?
            .query_row(params![key_id.to_string(), target.get()], |r| r.get(0))?;
        if !any {
            return Ok(Vec::new());
        }
    }
    let (after_path, after_version) = after.map_or(("", 0), |(p, v)| (p.as_str(), *v));
    let rows = conn
        .prepare_cached(CANDIDATES)?
        .query_map(
            params![
                key_id.to_string(),
                target.get(),
                after_path,
                after_version,
                limit
            ],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, u32>(1)?,
                    r.get::<_, u32>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                ))
            },
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(|(path, version, kv, wrapped)| {
            Ok(RewrapItem {
                path: SecretPath::from_stored(path).map_err(|_| corrupt("secret_versions.path"))?,
                version,
                key_version: KeyVersion::new(kv).ok_or(corrupt("secret_versions.key_version"))?,
                wrapped_dek: wrapped,
            })
        })
        .collect()
}

/// Commits one re-wrap batch (see the trait docs).
pub(super) fn apply(conn: &mut Connection, batch: &RewrapBatch) -> Result<u64, Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let changed = apply_in(&tx, batch)?;
    tx.commit()?;
    Ok(changed)
}

/// [`apply`] inside a transaction the caller commits (the audit writer's, with the batch's
/// announcement: [`crate::store::AuditAppender::append_with`]).
pub(super) fn apply_in(tx: &Connection, batch: &RewrapBatch) -> Result<u64, Error> {
    let RewrapBatch {
        job_id,
        key_id,
        target,
        items,
        failed,
        last_error,
        now,
    } = batch;
    let (key_id, target, failed, now) = (*key_id, *target, *failed, *now);
    super::keys::require_version(tx, key_id, target, &[VersionState::Primary])?;
    let mut changed = 0u64;
    let mut from: Vec<u32> = items.iter().map(|(i, _)| i.key_version.get()).collect();
    from.sort_unstable();
    from.dedup();
    {
        // Only if the row still holds exactly what was re-wrapped: a concurrent write, destroy
        // or an earlier run of this batch makes the update a no-op, never a lost value.
        // Prepared once per connection, not parsed again for each row.
        let mut update = tx.prepare_cached(
            "UPDATE secret_versions SET wrapped_dek = ?5, key_version = ?4
             WHERE path = ?1 AND version = ?2 AND key_version = ?3 AND wrapped_dek = ?6",
        )?;
        for (item, new_blob) in items {
            let n = update.execute(params![
                item.path.as_str(),
                item.version,
                item.key_version.get(),
                target.get(),
                new_blob,
                item.wrapped_dek
            ])?;
            changed += n as u64;
        }
    }
    tx.execute(
        "UPDATE jobs SET done = done + ?2, failed_items = failed_items + ?3,
             last_error = COALESCE(?4, last_error), updated_at = ?5 WHERE id = ?1",
        params![
            job_id,
            i64::try_from(changed).unwrap_or(i64::MAX),
            i64::try_from(failed).unwrap_or(i64::MAX),
            last_error,
            time_text(now)
        ],
    )?;
    let detail = format!("from versions {from:?} to {target}");
    event(
        tx,
        job_id,
        "batch",
        changed,
        failed,
        Some(&detail),
        &time_text(now),
    )?;
    Ok(changed)
}

/// Ends a job and records why in its trail.
pub(super) fn finish(
    conn: &mut Connection,
    id: &str,
    state: JobState,
    error: Option<String>,
    now: OffsetDateTime,
) -> Result<(), Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = time_text(now);
    event(&tx, id, state.as_str(), 0, 0, error.as_deref(), &now)?;
    tx.execute(
        "UPDATE jobs SET state = ?2, last_error = COALESCE(?3, last_error), updated_at = ?4,
             finished_at = ?4 WHERE id = ?1",
        params![id, state.as_str(), error, now],
    )?;
    tx.commit()?;
    Ok(())
}
