-- PostgreSQL dialect of sqlite/0009_database_credentials.sql: the same tables, columns and
-- rules. Text keys use the "C" collation so that ordering compares bytes, as SQLite does.
-- Database credentials (issue 24). Each row keeps its record as a JSON document (`doc`), with
-- the columns queries select and order by beside it; times are unix milliseconds. Passwords are
-- not here: the admin password and static roles' passwords are secret versions under the
-- reserved path root `custodian:db/` (a data key each, wrapped by the device).
CREATE TABLE db_connections (
    name TEXT COLLATE "C" PRIMARY KEY,
    doc  TEXT NOT NULL
);

-- `revision` fences every change: a write names the revision it read.
CREATE TABLE db_roles (
    name             TEXT COLLATE "C" PRIMARY KEY,
    connection       TEXT COLLATE "C" NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('static', 'dynamic')),
    next_rotation_at BIGINT,
    revision         BIGINT NOT NULL CHECK (revision >= 1),
    doc              TEXT NOT NULL
);

CREATE INDEX db_roles_by_connection ON db_roles (connection);
CREATE INDEX db_roles_due ON db_roles (next_rotation_at) WHERE next_rotation_at IS NOT NULL;

-- A lease ends once: `revoked_at` is set by the one write that finds it unset.
CREATE TABLE db_leases (
    id            TEXT COLLATE "C" PRIMARY KEY,
    role          TEXT COLLATE "C" NOT NULL,
    credential_id TEXT NOT NULL,
    expires_at    BIGINT NOT NULL,
    retry_at      BIGINT,
    revoked_at    BIGINT,
    doc           TEXT NOT NULL
);

CREATE INDEX db_leases_by_role ON db_leases (role);
CREATE INDEX db_leases_by_credential ON db_leases (credential_id);
CREATE INDEX db_leases_live ON db_leases (expires_at) WHERE revoked_at IS NULL;
