-- PostgreSQL dialect of sqlite/0001_init.sql: the same tables, columns and rules. Text keys use
-- the "C" collation so that ordering and cursors compare bytes, as SQLite does.
-- Keys, their versions, aliases, bearer tokens and the readiness heartbeat.
CREATE TABLE keys (
    id                     TEXT COLLATE "C" PRIMARY KEY,
    name                   TEXT COLLATE "C" NOT NULL UNIQUE,
    description            TEXT NOT NULL,
    state                  TEXT NOT NULL
        CHECK (state IN ('enabled', 'disabled', 'pending_deletion', 'destroyed')),
    backend                TEXT NOT NULL,
    mode                   TEXT NOT NULL,
    primary_version        BIGINT NOT NULL CHECK (primary_version >= 1),
    min_decryption_version BIGINT NOT NULL DEFAULT 1 CHECK (min_decryption_version >= 1),
    rotation_period_s      BIGINT CHECK (rotation_period_s > 0),
    next_rotation_at       BIGINT, -- unix milliseconds
    deletion_date          BIGINT, -- unix milliseconds, while pending_deletion
    deletion_blocked       TEXT,    -- why a due deletion was refused
    created_at             TEXT NOT NULL,
    updated_at             TEXT NOT NULL
);

CREATE TABLE key_versions (
    key_id         TEXT NOT NULL REFERENCES keys (id),
    version        BIGINT NOT NULL CHECK (version >= 1),
    state          TEXT NOT NULL CHECK (state IN ('primary', 'active', 'disabled', 'destroyed')),
    algorithm      TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    destroyed_at   TEXT,
    -- Wraps reserved under this version (blocks are reserved before use, so this is an upper
    -- bound of the wraps done: the GCM nonce budget is never overrun, even across crashes).
    wraps_reserved BIGINT NOT NULL DEFAULT 0 CHECK (wraps_reserved >= 0),
    -- The device object: present, to be destroyed (state destroyed, device call pending), gone.
    device_object  TEXT NOT NULL DEFAULT 'present'
        CHECK (device_object IN ('present', 'destroy_pending', 'destroyed')),
    PRIMARY KEY (key_id, version)
);

CREATE INDEX keys_by_next_rotation ON keys (next_rotation_at) WHERE next_rotation_at IS NOT NULL;
CREATE INDEX keys_by_deletion_date ON keys (deletion_date) WHERE deletion_date IS NOT NULL;

CREATE TABLE aliases (
    name       TEXT COLLATE "C" PRIMARY KEY,
    key_id     TEXT NOT NULL REFERENCES keys (id),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE tokens (
    id          TEXT COLLATE "C" PRIMARY KEY,
    principal   TEXT NOT NULL,
    secret_hash BYTEA NOT NULL CHECK (octet_length(secret_hash) = 32),
    description TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT,
    revoked_at  TEXT
);

CREATE INDEX tokens_by_principal ON tokens (principal);

-- Principals: named identities with attributes and attached policies (JSON arrays/maps).
CREATE TABLE principals (
    name       TEXT COLLATE "C" PRIMARY KEY,
    attributes TEXT NOT NULL,
    policies   TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- Policy documents, versioned: `policies` holds the current version, `policy_versions` every one.
CREATE TABLE policies (
    name       TEXT COLLATE "C" PRIMARY KEY,
    version    BIGINT NOT NULL CHECK (version >= 1),
    document   TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE policy_versions (
    name       TEXT COLLATE "C" NOT NULL,
    version    BIGINT NOT NULL CHECK (version >= 1),
    document   TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE heartbeat (
    id         BIGINT PRIMARY KEY CHECK (id = 1),
    checked_at TEXT NOT NULL
);
