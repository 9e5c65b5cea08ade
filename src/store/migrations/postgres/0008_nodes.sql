-- PostgreSQL dialect of sqlite/0008_nodes.sql, plus the change feed of cache coherence
-- (docs/decisions/0022-several-nodes.md).
CREATE TABLE leases (
    name       TEXT COLLATE "C" PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- The node whose TPM holds a TPM key's versions (see the SQLite dialect).
CREATE TABLE tpm_key_nodes (
    key_id TEXT COLLATE "C" PRIMARY KEY REFERENCES keys (id),
    node   TEXT NOT NULL
);

-- Every committed change to what nodes cache is announced on the channel `custodian_changes`:
-- `key:<id>` for a key or one of its versions (not for wrap reservations, which nodes do not
-- cache), `identity` for tokens, principals and policies. NOTIFY is delivered at commit, once
-- per distinct payload per transaction; nodes drop the named cache entries when it arrives.
CREATE FUNCTION custodian_notify_key() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    id TEXT;
BEGIN
    IF TG_TABLE_NAME = 'keys' THEN
        id := CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END;
    ELSE
        id := CASE WHEN TG_OP = 'DELETE' THEN OLD.key_id ELSE NEW.key_id END;
    END IF;
    PERFORM pg_notify('custodian_changes', 'key:' || id);
    RETURN NULL;
END
$$;

CREATE FUNCTION custodian_notify_identity() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('custodian_changes', 'identity');
    RETURN NULL;
END
$$;

CREATE TRIGGER keys_changed AFTER INSERT OR UPDATE OR DELETE ON keys
    FOR EACH ROW EXECUTE FUNCTION custodian_notify_key();
CREATE TRIGGER key_versions_changed
    AFTER INSERT OR DELETE OR UPDATE OF state, algorithm, device_object, device_blob, wrapped_kek
    ON key_versions
    FOR EACH ROW EXECUTE FUNCTION custodian_notify_key();
CREATE TRIGGER tokens_changed AFTER INSERT OR UPDATE OR DELETE ON tokens
    FOR EACH STATEMENT EXECUTE FUNCTION custodian_notify_identity();
CREATE TRIGGER principals_changed AFTER INSERT OR UPDATE OR DELETE ON principals
    FOR EACH STATEMENT EXECUTE FUNCTION custodian_notify_identity();
CREATE TRIGGER policies_changed AFTER INSERT OR UPDATE OR DELETE ON policies
    FOR EACH STATEMENT EXECUTE FUNCTION custodian_notify_identity();
