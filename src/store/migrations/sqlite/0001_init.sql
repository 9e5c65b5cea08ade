-- Keys, their versions, aliases, bearer tokens and the readiness heartbeat.
CREATE TABLE keys (
    id                     TEXT PRIMARY KEY,
    name                   TEXT NOT NULL UNIQUE,
    description            TEXT NOT NULL,
    state                  TEXT NOT NULL
        CHECK (state IN ('enabled', 'disabled', 'pending_deletion', 'destroyed')),
    backend                TEXT NOT NULL,
    mode                   TEXT NOT NULL,
    primary_version        INTEGER NOT NULL CHECK (primary_version >= 1),
    min_decryption_version INTEGER NOT NULL DEFAULT 1 CHECK (min_decryption_version >= 1),
    rotation_period_s      INTEGER CHECK (rotation_period_s > 0),
    next_rotation_at       INTEGER, -- unix milliseconds
    deletion_date          INTEGER, -- unix milliseconds, while pending_deletion
    deletion_blocked       TEXT,    -- why a due deletion was refused
    created_at             TEXT NOT NULL,
    updated_at             TEXT NOT NULL
) STRICT;

CREATE TABLE key_versions (
    key_id         TEXT NOT NULL REFERENCES keys (id),
    version        INTEGER NOT NULL CHECK (version >= 1),
    state          TEXT NOT NULL CHECK (state IN ('primary', 'active', 'disabled', 'destroyed')),
    algorithm      TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    destroyed_at   TEXT,
    -- Wraps reserved under this version (blocks are reserved before use, so this is an upper
    -- bound of the wraps done: the GCM nonce budget is never overrun, even across crashes).
    wraps_reserved INTEGER NOT NULL DEFAULT 0 CHECK (wraps_reserved >= 0),
    -- The device object: present, to be destroyed (state destroyed, device call pending), gone.
    device_object  TEXT NOT NULL DEFAULT 'present'
        CHECK (device_object IN ('present', 'destroy_pending', 'destroyed')),
    PRIMARY KEY (key_id, version)
) STRICT;

CREATE INDEX keys_by_next_rotation ON keys (next_rotation_at) WHERE next_rotation_at IS NOT NULL;
CREATE INDEX keys_by_deletion_date ON keys (deletion_date) WHERE deletion_date IS NOT NULL;

CREATE TABLE aliases (
    name       TEXT PRIMARY KEY,
    key_id     TEXT NOT NULL REFERENCES keys (id),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
) STRICT;

CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    principal   TEXT NOT NULL,
    secret_hash BLOB NOT NULL CHECK (length(secret_hash) = 32),
    description TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT,
    revoked_at  TEXT
) STRICT;

CREATE INDEX tokens_by_principal ON tokens (principal);

-- Principals: named identities with attributes and attached policies (JSON arrays/maps).
CREATE TABLE principals (
    name       TEXT PRIMARY KEY,
    attributes TEXT NOT NULL,
    policies   TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
) STRICT;

-- Policy documents, versioned: `policies` holds the current version, `policy_versions` every one.
CREATE TABLE policies (
    name       TEXT PRIMARY KEY,
    version    INTEGER NOT NULL CHECK (version >= 1),
    document   TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
) STRICT;

CREATE TABLE policy_versions (
    name       TEXT NOT NULL,
    version    INTEGER NOT NULL CHECK (version >= 1),
    document   TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (name, version)
) STRICT;

CREATE TABLE heartbeat (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    checked_at TEXT NOT NULL
) STRICT;
