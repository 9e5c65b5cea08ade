-- Keys, their versions, bearer tokens and the readiness heartbeat.
CREATE TABLE keys (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    description     TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('enabled', 'disabled')),
    backend         TEXT NOT NULL,
    mode            TEXT NOT NULL,
    primary_version INTEGER NOT NULL CHECK (primary_version >= 1),
    created_at      TEXT NOT NULL
) STRICT;

CREATE TABLE key_versions (
    key_id     TEXT NOT NULL REFERENCES keys (id),
    version    INTEGER NOT NULL CHECK (version >= 1),
    state      TEXT NOT NULL CHECK (state IN ('primary', 'active')),
    algorithm  TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (key_id, version)
) STRICT;

CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    principal   TEXT NOT NULL,
    secret_hash BLOB NOT NULL CHECK (length(secret_hash) = 32),
    description TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT
) STRICT;

CREATE TABLE heartbeat (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    checked_at TEXT NOT NULL
) STRICT;
