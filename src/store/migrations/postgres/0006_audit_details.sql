-- PostgreSQL dialect of sqlite/0006_audit_details.sql: the same tables, columns and rules. Text keys use
-- the "C" collation so that ordering and cursors compare bytes, as SQLite does.
-- Named facts an audit record carries beyond its fixed fields (issue 12): the destination
-- context of a re-encryption, the count of an aggregate of throttled requests. A JSON object
-- of strings; '{}' for records written before (their hashes bind no details).
ALTER TABLE audit_records ADD COLUMN details TEXT NOT NULL DEFAULT '{}';
