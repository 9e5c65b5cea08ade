-- Database credentials (issue 24). Each row keeps its record as a JSON document (`doc`), with
-- the columns queries select and order by beside it; times are unix milliseconds. Passwords are
-- not here: the admin password and static roles' passwords are secret versions under the
-- reserved path root `custodian:db/` (a data key each, wrapped by the device).
CREATE TABLE db_connections (
    name TEXT PRIMARY KEY,
    doc  TEXT NOT NULL
) STRICT;

-- `revision` fences every change: a write names the revision it read.
CREATE TABLE db_roles (
    name             TEXT PRIMARY KEY,
    connection       TEXT NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('static', 'dynamic')),
    next_rotation_at INTEGER,
    revision         INTEGER NOT NULL CHECK (revision >= 1),
    doc              TEXT NOT NULL
) STRICT;

CREATE INDEX db_roles_by_connection ON db_roles (connection);
CREATE INDEX db_roles_due ON db_roles (next_rotation_at) WHERE next_rotation_at IS NOT NULL;

-- A lease ends once: `revoked_at` is set by the one write that finds it unset.
CREATE TABLE db_leases (
    id            TEXT PRIMARY KEY,
    role          TEXT NOT NULL,
    credential_id TEXT NOT NULL,
    expires_at    INTEGER NOT NULL,
    retry_at      INTEGER,
    revoked_at    INTEGER,
    doc           TEXT NOT NULL
) STRICT;

CREATE INDEX db_leases_by_role ON db_leases (role);
CREATE INDEX db_leases_by_credential ON db_leases (credential_id);
CREATE INDEX db_leases_live ON db_leases (expires_at) WHERE revoked_at IS NULL;
