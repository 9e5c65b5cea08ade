-- PostgreSQL dialect of sqlite/0002_secrets.sql: the same tables, columns and rules. Text keys use
-- the "C" collation so that ordering and cursors compare bytes, as SQLite does.
-- Secrets: one row per path, one row per version. A version's data key is wrapped (a ciphertext
-- blob naming key id and version); the value is AES-256-GCM ciphertext under that data key.
-- Destroying a version erases both and keeps the row as a tombstone.
CREATE TABLE secrets (
    path             TEXT COLLATE "C" PRIMARY KEY,
    key_id           TEXT NOT NULL REFERENCES keys (id),
    current_version  BIGINT NOT NULL CHECK (current_version >= 0),
    max_versions     BIGINT NOT NULL CHECK (max_versions >= 0),
    expires_after_s  BIGINT CHECK (expires_after_s > 0),
    custom           TEXT NOT NULL,
    generate         TEXT,
    next_rotation_at BIGINT, -- unix milliseconds
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);

CREATE TABLE secret_versions (
    path         TEXT COLLATE "C" NOT NULL REFERENCES secrets (path),
    version      BIGINT NOT NULL CHECK (version >= 1),
    state        TEXT NOT NULL CHECK (state IN ('live', 'deleted', 'destroyed')),
    created_at   TEXT NOT NULL,
    deleted_at   TEXT,
    destroyed_at TEXT,
    key_id       TEXT,
    key_version  BIGINT,
    wrapped_dek  BYTEA,
    ciphertext   BYTEA,
    PRIMARY KEY (path, version),
    CHECK ((state = 'destroyed') = (wrapped_dek IS NULL AND ciphertext IS NULL AND key_id IS NULL))
);

-- What each key version still wraps (for rotation and safe destruction).
CREATE INDEX secret_versions_by_key ON secret_versions (key_id, key_version)
    WHERE key_id IS NOT NULL;
-- Due rotations.
CREATE INDEX secrets_by_next_rotation ON secrets (next_rotation_at)
    WHERE next_rotation_at IS NOT NULL;
