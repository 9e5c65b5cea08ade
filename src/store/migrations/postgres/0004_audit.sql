-- PostgreSQL dialect of sqlite/0004_audit.sql: the same tables, columns and rules. Text keys use
-- the "C" collation so that ordering and cursors compare bytes, as SQLite does.
-- The audit log: one row per API request, hash-chained (docs/audit.md). Rows are written only
-- by the audit writer and removed only by an archive operation, which first records what it
-- archived in audit_archives.
CREATE TABLE audit_records (
    sequence       BIGINT PRIMARY KEY CHECK (sequence >= 1),
    time           TEXT NOT NULL,
    node           TEXT NOT NULL,
    request_id     TEXT NOT NULL,
    method         TEXT NOT NULL,
    route          TEXT NOT NULL,
    principal      TEXT,
    credential     TEXT,
    source         TEXT,
    action         TEXT,
    resource       TEXT,
    key_id         TEXT,
    key_version    BIGINT,
    other_keys     TEXT NOT NULL, -- JSON array of strings
    outcome        TEXT NOT NULL,
    status         BIGINT NOT NULL,
    error_code     TEXT,
    context_digest TEXT,
    context_keys   TEXT NOT NULL, -- JSON array of strings
    prev_hash      TEXT NOT NULL,
    hash           TEXT NOT NULL
);

-- No secondary indexes: every one is another B-tree page written (and fsynced) with each group
-- commit on the request path. Filtered reads (GET /v1/audit/events) walk the primary key from
-- `after` and stop at `limit` matches; exports read by sequence anyway (docs/audit.md).

-- Signed checkpoints: each signs the chain head at its sequence. Never deleted.
CREATE TABLE audit_checkpoints (
    sequence        BIGINT PRIMARY KEY CHECK (sequence >= 1),
    head            TEXT NOT NULL,
    time            TEXT NOT NULL,
    node            TEXT NOT NULL,
    algorithm       TEXT NOT NULL,
    key_fingerprint TEXT NOT NULL,
    signature       TEXT NOT NULL
);

-- Archive operations: records up to through_sequence were exported (the export's SHA-256) and
-- removed. Never deleted.
CREATE TABLE audit_archives (
    through_sequence BIGINT PRIMARY KEY CHECK (through_sequence >= 1),
    head             TEXT NOT NULL,
    export_sha256    TEXT NOT NULL,
    archived_at      TEXT NOT NULL,
    principal        TEXT NOT NULL,
    request_id       TEXT NOT NULL
);
