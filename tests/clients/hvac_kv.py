"""Drives Custodian's Vault-compatible KV v2 door with the real hvac client.

Run by tests/it/vault.rs with VAULT_ADDR and VAULT_TOKEN set; prints one line per passed check
and "ALL PASSED" at the end; any failed check raises.
"""
import os

import hvac
from hvac import exceptions

client = hvac.Client(url=os.environ["VAULT_ADDR"], token=os.environ["VAULT_TOKEN"])
kv = client.secrets.kv.v2


def passed(what):
    print(f"ok: {what}", flush=True)


def expect(exc, fn, what):
    try:
        fn()
    except exc as e:
        passed(f"{what} -> {type(e).__name__}")
        return e
    raise AssertionError(f"{what}: expected {exc.__name__}")


# Write, read, versions.
w1 = kv.create_or_update_secret(path="app/db", secret={"user": "app", "password": "s3cr3t-1"})
assert w1["data"]["version"] == 1, w1
w2 = kv.create_or_update_secret(path="app/db", secret={"user": "app", "password": "s3cr3t-2"})
assert w2["data"]["version"] == 2
r = kv.read_secret_version(path="app/db", raise_on_deleted_version=True)
assert r["data"]["data"] == {"user": "app", "password": "s3cr3t-2"}, r
assert r["data"]["metadata"]["version"] == 2
r1 = kv.read_secret_version(path="app/db", version=1, raise_on_deleted_version=True)
assert r1["data"]["data"]["password"] == "s3cr3t-1"
passed("write two versions, read latest and version 1")

# Check-and-set.
kv.create_or_update_secret(path="app/db", secret={"password": "s3cr3t-3"}, cas=2)
expect(exceptions.InvalidRequest,
       lambda: kv.create_or_update_secret(path="app/db", secret={"password": "x"}, cas=2),
       "a stale cas is refused (400)")
expect(exceptions.InvalidRequest,
       lambda: kv.create_or_update_secret(path="app/new", secret={"password": "x"}, cas=1),
       "cas=1 on a path with no version is refused")
kv.create_or_update_secret(path="app/new", secret={"k": "v"}, cas=0)
passed("cas=0 creates, cas=current writes")

# Soft delete, read answers 404 with metadata, undelete, destroy.
kv.delete_secret_versions(path="app/db", versions=[1])
expect(exceptions.InvalidPath,
       lambda: kv.read_secret_version(path="app/db", version=1, raise_on_deleted_version=True),
       "a soft-deleted version reads 404")
deleted = kv.read_secret_version(path="app/db", version=1, raise_on_deleted_version=False)
assert deleted["data"]["data"] is None and deleted["data"]["metadata"]["deletion_time"], deleted
passed("the 404 of a soft-deleted version still holds its metadata")
kv.undelete_secret_versions(path="app/db", versions=[1])
assert kv.read_secret_version(path="app/db", version=1, raise_on_deleted_version=True)["data"]["data"]["password"] == "s3cr3t-1"
passed("undelete restores version 1")
kv.destroy_secret_versions(path="app/db", versions=[1])
meta = kv.read_secret_metadata(path="app/db")["data"]
assert meta["versions"]["1"]["destroyed"] is True and meta["current_version"] == 3, meta
expect(exceptions.InvalidPath,
       lambda: kv.read_secret_version(path="app/db", version=1, raise_on_deleted_version=True),
       "a destroyed version reads 404")
passed("destroy version 1; metadata shows it destroyed")
kv.delete_latest_version_of_secret(path="app/new")
expect(exceptions.InvalidPath,
       lambda: kv.read_secret_version(path="app/new", raise_on_deleted_version=True),
       "delete_latest_version_of_secret soft-deletes")

# Metadata: update, custom metadata, list.
kv.update_metadata(path="app/db", max_versions=5, custom_metadata={"owner": "billing"})
meta = kv.read_secret_metadata(path="app/db")["data"]
assert meta["max_versions"] == 5 and meta["custom_metadata"] == {"owner": "billing"}, meta
passed("update_metadata: max_versions and custom_metadata")
expect(exceptions.InvalidRequest,
       lambda: kv.update_metadata(path="app/db", cas_required=True),
       "cas_required is refused rather than ignored")
kv.create_or_update_secret(path="app/nested/deep", secret={"a": "b"})
keys = kv.list_secrets(path="app")["data"]["keys"]
assert keys == ["db", "nested/", "new"], keys
root = kv.list_secrets(path="")["data"]["keys"]
assert root == ["app/"], root
passed("list_secrets (LIST): one level, folders end in /")
expect(exceptions.InvalidPath, lambda: kv.list_secrets(path="nothing-here"), "an empty list is 404")

# delete_metadata_and_all_versions: every version destroyed.
kv.delete_metadata_and_all_versions(path="app/nested/deep")
expect(exceptions.InvalidPath,
       lambda: kv.read_secret_version(path="app/nested/deep", raise_on_deleted_version=True),
       "after delete_metadata_and_all_versions nothing reads")

# A missing secret is 404; a bad token 403.
expect(exceptions.InvalidPath, lambda: kv.read_secret_version(path="no/such", raise_on_deleted_version=True),
       "a missing secret is 404")
bad = hvac.Client(url=os.environ["VAULT_ADDR"], token="cust_bad.token")
expect(exceptions.Forbidden, lambda: bad.secrets.kv.v2.read_secret_version(path="app/db", raise_on_deleted_version=True),
       "a bad token is 403")
print("ALL PASSED", flush=True)
