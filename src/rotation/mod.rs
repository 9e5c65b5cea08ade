//! Background lifecycle work, supervised beside the API:
//!
//! - [`run`]: every tick, rotates generated secrets and keys whose schedule is due (and keys
//!   whose wrap budget asked for it), destroys keys whose deletion date has passed, and retries
//!   device destructions that did not complete. Schedules live in the database, so they survive
//!   restarts; each rotation is recorded together with its new version in one transaction that
//!   checks the schedule it saw, so a rotation never runs twice (across restarts, or across
//!   nodes sharing one database).
//! - [`run_database`]: every tick, rotates static database roles whose schedule (or retry) is
//!   due, finishing any rotation left pending, and revokes database leases that have ended. A
//!   revocation is recorded by the one write that finds the lease unrevoked, so it is done once
//!   whichever node runs it.
//! - [`run_rewrap`]: works through running re-wrap jobs batch by batch, pausing between batches
//!   so foreground requests keep their latency.
//!
//! On a database several nodes share, each duty runs on the one node that holds its lease
//! ([`LIFECYCLE_LEASE`], [`REWRAP_LEASE`], [`DATABASE_LEASE`]; timed by the database's clock),
//! except that a TPM key's rotations, deletion and device destructions run on the node whose
//! TPM holds it. The lease is not the
//! only guard: every effect is still fenced by the conditional write described above, so a
//! node that lost its lease while paused cannot apply a rotation or a batch twice.

use std::time::Duration;

use crate::service::rewrap::Progress;
use crate::service::{Internal, KeyService};

/// Most due secrets handled per tick.
const BATCH: u32 = 100;
/// The lease of the lifecycle duties (rotations, deletions, device destructions).
pub const LIFECYCLE_LEASE: &str = "lifecycle";
/// The prefix of the re-wrap leases, one per part of a job (`rewrap/<job>/0` … `/7`;
/// [`crate::service::rewrap::shard_lease`]).
pub const REWRAP_LEASE: &str = "rewrap";
/// The lease of the database-credential duties (static role rotations, lease revocations).
pub const DATABASE_LEASE: &str = "database";

/// How long a duty lease lasts: three of the duty's intervals (at least 3 s), so a holder that
/// renews every interval keeps it through a missed renewal, and a node that died is replaced
/// within that time.
fn lease_ttl(interval: Duration) -> Duration {
    (interval * 3).max(Duration::from_secs(3))
}

/// Runs the lifecycle duties every `interval`, until the task is aborted.
pub async fn run(internal: Internal, secrets_interval: Duration, keys_interval: Duration) {
    let service = internal.service();
    let interval = secrets_interval.min(keys_interval);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let holder = service
            .holds_lease(LIFECYCLE_LEASE, lease_ttl(interval))
            .await;
        if holder {
            rotate_due_secrets(service).await;
        }
        // Every node looks: the keys in its own TPM are its duty whoever holds the lease (the
        // holder finds this node's other wrap-budget crossings in the database).
        let now = crate::clock::now();
        if let Err(e) = service.run_due_key_rotations(now, holder).await {
            tracing::error!(error = %e, "listing due key rotations failed");
        }
        if let Err(e) = service.run_due_deletions(now, holder).await {
            tracing::error!(error = %e, "listing due key deletions failed");
        }
        if let Err(e) = service.retry_device_destroys(holder).await {
            tracing::error!(error = %e, "listing pending device destructions failed");
        }
    }
}

async fn rotate_due_secrets(service: &KeyService) {
    let due = match service
        .due_secret_rotations(crate::clock::now(), BATCH)
        .await
    {
        Ok(due) => due,
        Err(e) => {
            tracing::error!(error = %e, "listing due secret rotations failed");
            return;
        }
    };
    for (path, seen) in due {
        let resource = format!("secret/{path}");
        let unit = service.rotate_generated(&path, Some(Some(seen)));
        match service
            .in_background("secret-rotation", "secret:rotate", &resource, unit)
            .await
        {
            Ok(Some(_)) => {}
            Ok(None) => tracing::debug!(path = %path, "rotation already done elsewhere"),
            Err(e) => tracing::error!(path = %path, error = %e, "scheduled secret rotation failed"),
        }
    }
}

/// Runs the database-credential duties every `interval` on the node holding
/// [`DATABASE_LEASE`], until the task is aborted.
pub async fn run_database(internal: Internal, interval: Duration) {
    let service = internal.service();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if !service
            .holds_lease(DATABASE_LEASE, lease_ttl(interval))
            .await
        {
            continue;
        }
        service.run_database_duties(crate::clock::now()).await;
    }
}

/// Works through running re-wrap jobs, one batch at a time with `pause` between batches, each
/// batch from the part of the job whose lease this node holds (several nodes work on one job
/// at once, each on its own part); when there is nothing to do, starts at once on a job this
/// node starts and checks for jobs started elsewhere every `idle`.
pub async fn run_rewrap(internal: Internal, pause: Duration, idle: Duration) {
    let service = internal.service();
    loop {
        let jobs = match service.running_jobs().await {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::error!(error = %e, "listing re-wrap jobs failed");
                Vec::new()
            }
        };
        if jobs.is_empty() {
            service.wait_for_rewrap_job(idle).await;
            continue;
        }
        let mut worked = false;
        for job in jobs {
            let resource = format!("job/{}", job.id);
            // A settled part costs one query: take the next at once (at most every part).
            loop {
                let Some(shard) = service.claim_rewrap_shard(&job, lease_ttl(idle)).await else {
                    // Every part settled here or held by another node: end the job if nothing
                    // is left, or nothing another node could still move.
                    let unit = service.finish_rewrap_job(&job);
                    if let Err(e) = service
                        .in_background("rewrap", "key:rewrap-batch", &resource, unit)
                        .await
                    {
                        tracing::warn!(job_id = %job.id, error = %e, "ending a re-wrap job failed; retrying later");
                    }
                    break;
                };
                let unit = service.rewrap_batch(&job, shard);
                match service
                    .in_background("rewrap", "key:rewrap-batch", &resource, unit)
                    .await
                {
                    Ok(Progress::Settled) => service.settle_rewrap_shard(&job.id, shard),
                    Ok(Progress::More | Progress::Finished) => {
                        worked = true;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(job_id = %job.id, error = %e, "re-wrap batch failed; retrying later");
                        tokio::time::sleep(idle).await;
                        break;
                    }
                }
            }
        }
        // Nothing this node could take: every part is held elsewhere or settled here.
        if worked && pause.is_zero() {
            // The timer counts in whole milliseconds and rounds up: `sleep(0)` waited about a
            // millisecond per batch, a tenth of an unthrottled cached job. Yielding lets the
            // runtime's other tasks run first all the same.
            tokio::task::yield_now().await;
        } else if worked {
            tokio::time::sleep(pause).await;
        } else {
            service.wait_for_rewrap_job(idle).await;
        }
    }
}
