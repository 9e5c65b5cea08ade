//! Background jobs: today, the bulk re-wrap of stored data keys to a key's primary version.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{KeyId, KeyVersion};

/// What a job does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Re-wrap every stored data key of a key to its primary version.
    Rewrap,
}

/// Where a job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Being worked on (or waiting for a worker after a restart).
    Running,
    /// Nothing left to do.
    Completed,
    /// Stopped on an error it cannot get past; `last_error` says which.
    Failed,
}

impl JobState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    /// The state a stored name names.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "running" => Some(Self::Running),
            "completed" => Some(Self::Completed),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// A job, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Job {
    /// Random id.
    pub id: String,
    /// What it does.
    pub kind: JobKind,
    /// The key whose stored data keys it moves.
    pub key_id: KeyId,
    /// The version it moves them to.
    pub target_version: KeyVersion,
    /// Where it stands.
    pub state: JobState,
    /// Items re-wrapped so far.
    pub done: u64,
    /// Items that could not be re-wrapped (left where they were).
    pub failed_items: u64,
    /// The last error, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it last made progress or changed state.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// When it completed or failed.
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub finished_at: Option<OffsetDateTime>,
}

/// One entry of a job's trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JobEvent {
    /// Order within the job, from 1.
    pub seq: u64,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// `started`, `batch`, `completed` or `failed`.
    pub kind: String,
    /// Items re-wrapped by this batch.
    pub moved: u64,
    /// Items this batch could not re-wrap.
    pub failed: u64,
    /// Versions moved from (batches), or why the job ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}
