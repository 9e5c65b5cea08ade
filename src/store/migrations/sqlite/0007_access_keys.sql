-- AWS SigV4 access keys (issue 16), a credential kind of a principal beside bearer tokens. The
-- secret access key is needed to verify signatures, so it cannot be stored as a hash: it is
-- stored sealed under a Custodian key (a ciphertext blob bound to the access key id), and
-- (key_id, key_version) name the version that sealed it. An access key that is not revoked
-- counts as a reference to that version, so the version cannot be destroyed under it.
CREATE TABLE access_keys (
    id            TEXT PRIMARY KEY,
    principal     TEXT NOT NULL,
    description   TEXT NOT NULL,
    sealed_secret BLOB NOT NULL,
    key_id        TEXT NOT NULL REFERENCES keys (id),
    key_version   INTEGER NOT NULL CHECK (key_version >= 1),
    created_at    TEXT NOT NULL,
    expires_at    TEXT,
    revoked_at    TEXT
) STRICT;

CREATE INDEX access_keys_by_principal ON access_keys (principal);
CREATE INDEX access_keys_by_key ON access_keys (key_id, key_version);
