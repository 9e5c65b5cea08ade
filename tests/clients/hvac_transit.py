"""Drives Custodian's Vault-compatible Transit door with the real hvac client.

Run by tests/it/vault.rs with VAULT_ADDR and VAULT_TOKEN set. Every check that fails raises;
the script prints one line per passed check and "ALL PASSED" at the end.
"""
import base64
import os
import sys

import hvac
from hvac import exceptions

addr = os.environ["VAULT_ADDR"]
token = os.environ["VAULT_TOKEN"]
key = os.environ.get("KEY", "hvac-key")


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def passed(what: str) -> None:
    print(f"ok: {what}", flush=True)


def expect(exc, fn, what):
    try:
        fn()
    except exc as e:
        passed(f"{what} -> {type(e).__name__}: {e}")
        return e
    raise AssertionError(f"{what}: expected {exc.__name__}")


client = hvac.Client(url=addr, token=token)
transit = client.secrets.transit

# Token and health.
assert client.is_authenticated(), "the token authenticates"
passed("lookup-self with X-Vault-Token")
health = client.sys.read_health_status(method="GET")
assert health["initialized"] and not health["sealed"], health
passed("sys/health")

# Keys: create, read, list (LIST verb), rotate, config.
transit.create_key(name=key)
info = transit.read_key(name=key)["data"]
assert info["type"] == "aes256-gcm96" and info["latest_version"] == 1, info
passed("create_key + read_key")
keys = transit.list_keys()["data"]["keys"]
assert key in keys, keys
passed("list_keys (LIST)")
expect(exceptions.InvalidRequest, lambda: transit.create_key(name="rsa-key", key_type="rsa-2048"),
       "a key type other than aes256-gcm96 is refused")

# Encrypt / decrypt, with associated data as context.
ad = b64(b"tenant=42")
ct = transit.encrypt_data(name=key, plaintext=b64(b"hello vault"), associated_data=ad)["data"]["ciphertext"]
assert ct.startswith("vault:v1:"), ct
pt = transit.decrypt_data(name=key, ciphertext=ct, associated_data=ad)["data"]["plaintext"]
assert base64.b64decode(pt) == b"hello vault"
passed("encrypt + decrypt with associated_data")
expect(exceptions.InvalidRequest,
       lambda: transit.decrypt_data(name=key, ciphertext=ct, associated_data=b64(b"tenant=43")),
       "decrypt with other associated_data is refused")
expect(exceptions.InvalidRequest, lambda: transit.decrypt_data(name=key, ciphertext=ct),
       "decrypt without the associated_data is refused")
tampered = ct[:-4] + ("AAAA" if not ct.endswith("AAAA") else "BBBB")
expect(exceptions.InvalidRequest,
       lambda: transit.decrypt_data(name=key, ciphertext=tampered, associated_data=ad),
       "a tampered ciphertext is refused")
expect(exceptions.InvalidRequest,
       lambda: transit.decrypt_data(name=key, ciphertext="vault:v1:" + "A" * 8),
       "garbage ciphertext is refused")

# Batch encrypt / decrypt.
batch = [{"plaintext": b64(f"item {i}".encode()), "context": b64(f"ctx{i}".encode())} for i in range(5)]
results = transit.encrypt_data(name=key, batch_input=batch)["data"]["batch_results"]
assert len(results) == 5 and all(r["ciphertext"].startswith("vault:v1:") for r in results), results
back = transit.decrypt_data(
    name=key,
    batch_input=[{"ciphertext": r["ciphertext"], "context": b64(f"ctx{i}".encode())} for i, r in enumerate(results)],
)["data"]["batch_results"]
assert [base64.b64decode(r["plaintext"]) for r in back] == [f"item {i}".encode() for i in range(5)], back
passed("batch encrypt + decrypt (5 items, each with its own context)")

# Rotate, then rewrap keeps the context (hvac's rewrap sends `context`; Custodian keeps it
# bound to the new ciphertext).
ctx = b64(b"customer-7")
ct_ctx = transit.encrypt_data(name=key, plaintext=b64(b"hello vault"), context=ctx)["data"]["ciphertext"]
transit.rotate_key(name=key)
assert transit.read_key(name=key)["data"]["latest_version"] == 2
passed("rotate_key")
rewrapped = transit.rewrap_data(name=key, ciphertext=ct_ctx, context=ctx)["data"]["ciphertext"]
assert rewrapped.startswith("vault:v2:"), rewrapped
pt = transit.decrypt_data(name=key, ciphertext=rewrapped, context=ctx)["data"]["plaintext"]
assert base64.b64decode(pt) == b"hello vault"
passed("rewrap to v2 keeping the context")
expect(exceptions.InvalidRequest,
       lambda: transit.decrypt_data(name=key, ciphertext=rewrapped),
       "the rewrapped ciphertext without its context is refused")
expect(exceptions.InvalidRequest,
       lambda: transit.rewrap_data(name=key, ciphertext=ct_ctx, context=b64(b"customer-8")),
       "rewrap with another context is refused")

# min_decryption_version through config.
transit.update_key_configuration(name=key, min_decryption_version=2)
expect(exceptions.InvalidRequest,
       lambda: transit.decrypt_data(name=key, ciphertext=ct, associated_data=ad),
       "a v1 ciphertext below min_decryption_version is refused")

# Data keys.
dk = transit.generate_data_key(name=key, key_type="plaintext", bits=256)["data"]
assert len(base64.b64decode(dk["plaintext"])) == 32 and dk["ciphertext"].startswith("vault:v2:"), dk
opened = transit.decrypt_data(name=key, ciphertext=dk["ciphertext"])["data"]["plaintext"]
assert opened == dk["plaintext"]
passed("datakey/plaintext 256 bits, and decrypt of its ciphertext")
wrapped = transit.generate_data_key(name=key, key_type="wrapped", bits=128)["data"]
assert "plaintext" not in wrapped or wrapped["plaintext"] is None, wrapped
passed("datakey/wrapped 128 bits has no plaintext")
expect(exceptions.InvalidRequest, lambda: transit.generate_data_key(name=key, key_type="plaintext", bits=512),
       "512-bit data keys are refused")

# Another key's ciphertext under this key's name.
transit.create_key(name=key + "-other")
other = transit.encrypt_data(name=key + "-other", plaintext=b64(b"x"))["data"]["ciphertext"]
expect(exceptions.InvalidRequest, lambda: transit.decrypt_data(name=key, ciphertext=other),
       "a ciphertext of another key is refused")

# Random bytes (transit/random): the body's count and format, and a refused count.
rnd = transit.generate_random_bytes(n_bytes=16, output_format="hex")["data"]["random_bytes"]
assert len(bytes.fromhex(rnd)) == 16, rnd
rnd = transit.generate_random_bytes()["data"]["random_bytes"]
assert len(base64.b64decode(rnd)) == 32, rnd
passed("generate_random_bytes: 16 bytes in hex, 32 in base64 by default")
expect(exceptions.InvalidRequest, lambda: transit.generate_random_bytes(n_bytes=131073),
       "more random bytes than the limit are refused")

# A bad token: 403, as Vault answers.
bad = hvac.Client(url=addr, token="cust_bad.token")
expect(exceptions.Forbidden, lambda: bad.secrets.transit.read_key(name=key), "a bad token is 403")
assert not bad.is_authenticated()
passed("is_authenticated() is false for a bad token")

print("ALL PASSED", flush=True)
