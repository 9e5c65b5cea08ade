-- PostgreSQL dialect of sqlite/0005_device_material.sql: the same tables, columns and rules. Text keys use
-- the "C" collation so that ordering and cursors compare bytes, as SQLite does.
-- What the store keeps beside a root key (issue 7): a TPM version key's blobs (marshalled
-- public ‖ private; they load only in the TPM that made them) and, in cached mode, the
-- version-KEK sealed by the root key. Both are erased when the device object is destroyed.
ALTER TABLE key_versions ADD COLUMN device_blob BYTEA;
ALTER TABLE key_versions ADD COLUMN wrapped_kek BYTEA;
