-- A re-wrap job walks a key's stored data keys in (path, version) order from a cursor, a batch
-- at a time. With only `secret_versions_by_key` (key_id, key_version) every batch read and
-- sorted all of the key's rows to find the next hundred, so a job over n rows made about
-- n²/batch row reads (5 ms per batch at 7,500 rows, 49 ms at 107,000 on SQLite). This index
-- serves the walk as a range scan from the cursor. `key_version` is left out so that moving a
-- row does not rewrite its entry here; rows already moved are skipped by reading them, which a
-- pass does at most once per row.
CREATE INDEX secret_versions_rewrap_walk ON secret_versions (key_id, path, version)
    WHERE key_id IS NOT NULL;
