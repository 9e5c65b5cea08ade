-- PostgreSQL dialect of sqlite/0003_jobs.sql: the same tables, columns and rules. Text keys use
-- the "C" collation so that ordering and cursors compare bytes, as SQLite does.
-- Background jobs (today: bulk re-wrap of stored data keys to a key's primary version).
-- A job's progress is committed in the same transaction as each batch it re-wraps, so a crash
-- loses at most the batch in flight, which the next run redoes.
CREATE TABLE jobs (
    id             TEXT COLLATE "C" PRIMARY KEY,
    kind           TEXT NOT NULL CHECK (kind IN ('rewrap')),
    key_id         TEXT NOT NULL REFERENCES keys (id),
    target_version BIGINT NOT NULL CHECK (target_version >= 1),
    state          TEXT NOT NULL CHECK (state IN ('running', 'completed', 'failed')),
    done           BIGINT NOT NULL DEFAULT 0 CHECK (done >= 0),
    failed_items   BIGINT NOT NULL DEFAULT 0 CHECK (failed_items >= 0),
    last_error     TEXT,
    created_at     TEXT NOT NULL,
    started_at     BIGINT NOT NULL, -- unix milliseconds
    updated_at     TEXT NOT NULL,
    finished_at    TEXT
);

CREATE INDEX jobs_running ON jobs (state) WHERE state = 'running';

-- The job's own trail: one row per state change and per committed batch, written in the same
-- transaction as the change it records.
CREATE TABLE job_events (
    job_id   TEXT NOT NULL REFERENCES jobs (id),
    seq      BIGINT NOT NULL CHECK (seq >= 1),
    at       TEXT NOT NULL,
    kind     TEXT NOT NULL CHECK (kind IN ('started', 'batch', 'completed', 'failed')),
    moved    BIGINT NOT NULL DEFAULT 0 CHECK (moved >= 0),
    failed   BIGINT NOT NULL DEFAULT 0 CHECK (failed >= 0),
    detail   TEXT,
    PRIMARY KEY (job_id, seq)
);
