//! Background rotation. Today: generated secrets whose `next_rotation_at` has passed. The
//! schedule lives in the database, so it survives restarts; each rotation is recorded together
//! with its new version in one transaction that checks the schedule it saw, so a rotation never
//! runs twice (across restarts, or across nodes sharing one database).

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use crate::service::KeyService;

/// Most due secrets handled per tick.
const BATCH: u32 = 100;

/// Rotates due generated secrets every `interval`, until the task is aborted.
pub async fn run(service: Arc<KeyService>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let due = match service
            .due_secret_rotations(OffsetDateTime::now_utc(), BATCH)
            .await
        {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(error = %e, "listing due secret rotations failed");
                continue;
            }
        };
        for (path, seen) in due {
            match service.rotate_generated(&path, Some(Some(seen))).await {
                Ok(Some(_)) => {}
                Ok(None) => tracing::debug!(path = %path, "rotation already done elsewhere"),
                Err(e) => {
                    tracing::error!(path = %path, error = %e, "scheduled secret rotation failed")
                }
            }
        }
    }
}
