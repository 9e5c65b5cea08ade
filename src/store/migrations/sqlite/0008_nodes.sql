-- Several nodes (docs/decisions/0022-several-nodes.md). A lease names the node that runs a
-- background duty (scheduled rotations and deletions, re-wrap batches) until `expires_at`
-- (unix milliseconds, the database's clock); another node takes it over only after it expired.
-- SQLite serves one node, but the table and its rules are the same as PostgreSQL's.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);

-- The node whose TPM holds a TPM key's versions: only that node can serve the key; another node
-- answers `key_on_other_node`, naming it. Keys of the PKCS#11 token (shared) have no row.
CREATE TABLE tpm_key_nodes (
    key_id TEXT PRIMARY KEY REFERENCES keys (id),
    node   TEXT NOT NULL
);
