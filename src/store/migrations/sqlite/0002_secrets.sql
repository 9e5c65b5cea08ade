-- Secrets: one row per path, one row per version. A version's data key is wrapped (a ciphertext
-- blob naming key id and version); the value is AES-256-GCM ciphertext under that data key.
-- Destroying a version erases both and keeps the row as a tombstone.
CREATE TABLE secrets (
    path             TEXT PRIMARY KEY,
    key_id           TEXT NOT NULL REFERENCES keys (id),
    current_version  INTEGER NOT NULL CHECK (current_version >= 0),
    max_versions     INTEGER NOT NULL CHECK (max_versions >= 0),
    expires_after_s  INTEGER CHECK (expires_after_s > 0),
    custom           TEXT NOT NULL,
    generate         TEXT,
    next_rotation_at INTEGER, -- unix milliseconds
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
) STRICT;

CREATE TABLE secret_versions (
    path         TEXT NOT NULL REFERENCES secrets (path),
    version      INTEGER NOT NULL CHECK (version >= 1),
    state        TEXT NOT NULL CHECK (state IN ('live', 'deleted', 'destroyed')),
    created_at   TEXT NOT NULL,
    deleted_at   TEXT,
    destroyed_at TEXT,
    key_id       TEXT,
    key_version  INTEGER,
    wrapped_dek  BLOB,
    ciphertext   BLOB,
    PRIMARY KEY (path, version),
    CHECK ((state = 'destroyed') = (wrapped_dek IS NULL AND ciphertext IS NULL AND key_id IS NULL))
) STRICT;

-- What each key version still wraps (for rotation and safe destruction).
CREATE INDEX secret_versions_by_key ON secret_versions (key_id, key_version)
    WHERE key_id IS NOT NULL;
-- Due rotations.
CREATE INDEX secrets_by_next_rotation ON secrets (next_rotation_at)
    WHERE next_rotation_at IS NOT NULL;
