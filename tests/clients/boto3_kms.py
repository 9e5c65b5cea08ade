"""Drives Custodian's AWS KMS door with the real boto3 (pinned in scripts/lib.sh PY_CLIENTS).

Environment: KMS_ENDPOINT, AWS_REGION, ADMIN_KEY_ID/ADMIN_SECRET (an access key of a principal
allowed everything), LIMITED_KEY_ID/LIMITED_SECRET (a principal whose policy lacks `decrypt`).
Every operation of the door, each with a negative twin; prints ALL PASSED at the end.
"""

import base64
import datetime
import json
import os
import sys
import uuid
from unittest import mock

import boto3
import botocore
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

ENDPOINT = os.environ["KMS_ENDPOINT"]
REGION = os.environ["AWS_REGION"]
ACCOUNT = "000000000000"


def client(key_id, secret, region=REGION):
    return boto3.client(
        "kms",
        endpoint_url=ENDPOINT,
        region_name=region,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


admin = client(os.environ["ADMIN_KEY_ID"], os.environ["ADMIN_SECRET"])
limited = client(os.environ["LIMITED_KEY_ID"], os.environ["LIMITED_SECRET"])


def fails(code, fn, *args, **kwargs):
    """Runs fn and asserts it fails with AWS error type `code`; returns the error."""
    try:
        fn(*args, **kwargs)
    except ClientError as e:
        got = e.response["Error"]["Code"]
        assert got == code, f"expected {code}, got {got}: {e.response}"
        status = e.response["ResponseMetadata"]["HTTPStatusCode"]
        assert status == 400, f"{code} answered {status}"
        return e
    raise AssertionError(f"expected {code}, the call succeeded")


def arn(key_id):
    return f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{key_id}"


print("boto3", boto3.__version__, "botocore", botocore.__version__)

# --- CreateKey, DescribeKey (by id, ARN, alias, alias ARN), aliases, ListKeys ---
created = admin.create_key(Description="boto3 test key")["KeyMetadata"]
key_id = created["KeyId"]
key_arn = created["Arn"]
assert key_arn == arn(key_id), created
assert created["KeyState"] == "Enabled" and created["Enabled"] is True, created
assert created["KeySpec"] == "SYMMETRIC_DEFAULT" and created["KeyUsage"] == "ENCRYPT_DECRYPT"
assert created["Description"] == "boto3 test key"
other_id = admin.create_key()["KeyMetadata"]["KeyId"]
fails("UnsupportedOperationException", admin.create_key, KeySpec="RSA_2048")

alias = f"alias/boto-{uuid.uuid4().hex[:8]}"
admin.create_alias(AliasName=alias, TargetKeyId=key_id)
fails("AlreadyExistsException", admin.create_alias, AliasName=alias, TargetKeyId=other_id)
fails("ValidationException", admin.create_alias, AliasName="alias/aws/mine", TargetKeyId=key_id)
alias_arn = f"arn:aws:kms:{REGION}:{ACCOUNT}:{alias}"
for name in [key_id, key_arn, alias, alias_arn]:
    meta = admin.describe_key(KeyId=name)["KeyMetadata"]
    assert meta["KeyId"] == key_id and meta["Arn"] == key_arn, (name, meta)
fails("NotFoundException", admin.describe_key, KeyId=str(uuid.uuid4()))
fails("NotFoundException", admin.describe_key, KeyId="alias/no-such-alias")
fails("NotFoundException", admin.describe_key, KeyId=key_arn.replace(ACCOUNT, "111111111111"))

aliases = admin.list_aliases()["Aliases"]
mine = [a for a in aliases if a["AliasName"] == alias]
assert mine and mine[0]["TargetKeyId"] == key_id and mine[0]["AliasArn"] == alias_arn, aliases
assert [a["AliasName"] for a in admin.list_aliases(KeyId=key_id)["Aliases"]] == [alias]
assert admin.list_aliases(KeyId=other_id)["Aliases"] == []

listed, marker = [], None
while True:
    page = admin.list_keys(Limit=1, **({"Marker": marker} if marker else {}))
    listed += page["Keys"]
    if not page["Truncated"]:
        break
    marker = page["NextMarker"]
assert {"KeyId": key_id, "KeyArn": key_arn} in listed, listed
assert any(k["KeyId"] == other_id for k in listed)
fails("ValidationException", admin.list_keys, Limit=1001)

# --- Encrypt / Decrypt, with the negative twins ---
ctx = {"tenant": "acme", "purpose": "boto3"}
enc = admin.encrypt(KeyId=alias, Plaintext=b"attack at dawn", EncryptionContext=ctx)
assert enc["KeyId"] == key_arn and enc["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT", enc
blob = enc["CiphertextBlob"]
dec = admin.decrypt(CiphertextBlob=blob, EncryptionContext=ctx)
assert dec["Plaintext"] == b"attack at dawn" and dec["KeyId"] == key_arn, dec
# Decrypt returns exactly the ARN the ciphertext names, whatever KeyId the request used.
for name in [key_id, key_arn, alias]:
    assert admin.decrypt(CiphertextBlob=blob, EncryptionContext=ctx, KeyId=name)["KeyId"] == key_arn
fails("IncorrectKeyException", admin.decrypt, CiphertextBlob=blob, EncryptionContext=ctx, KeyId=other_id)
fails("IncorrectKeyException", admin.decrypt, CiphertextBlob=blob, EncryptionContext=ctx, KeyId="alias/no-such-alias")
# Wrong encryption context: one value changed, one pair missing, none at all, and the
# ambiguous split {"ab": "c"} vs {"a": "bc"}.
fails("InvalidCiphertextException", admin.decrypt, CiphertextBlob=blob,
      EncryptionContext={"tenant": "acme", "purpose": "other"})
fails("InvalidCiphertextException", admin.decrypt, CiphertextBlob=blob, EncryptionContext={"tenant": "acme"})
fails("InvalidCiphertextException", admin.decrypt, CiphertextBlob=blob)
split = admin.encrypt(KeyId=key_id, Plaintext=b"x", EncryptionContext={"ab": "c"})["CiphertextBlob"]
fails("InvalidCiphertextException", admin.decrypt, CiphertextBlob=split, EncryptionContext={"a": "bc"})
# Tampered ciphertext: every region of the blob (header, IV, ciphertext, tag).
for i in [0, 8, len(blob) // 2, len(blob) - 1]:
    bad = bytearray(blob)
    bad[i] ^= 0x01
    fails("InvalidCiphertextException", admin.decrypt, CiphertextBlob=bytes(bad), EncryptionContext=ctx)
fails("InvalidCiphertextException", admin.decrypt, CiphertextBlob=blob[:-1], EncryptionContext=ctx)
fails("ValidationException", admin.encrypt, KeyId=key_id, Plaintext=b"x" * 4097)
fails("InvalidKeyUsageException", admin.encrypt, KeyId=key_id, Plaintext=b"x", EncryptionAlgorithm="RSAES_OAEP_SHA_256")
fails("NotFoundException", admin.encrypt, KeyId=str(uuid.uuid4()), Plaintext=b"x")
# Reserved context keys are refused.
fails("SerializationException", admin.encrypt, KeyId=key_id, Plaintext=b"x",
      EncryptionContext={"custodian:secret_path": "a"})

# --- GenerateDataKey (NumberOfBytes and KeySpec) and WithoutPlaintext ---
dk = admin.generate_data_key(KeyId=key_arn, NumberOfBytes=32, EncryptionContext=ctx)
assert len(dk["Plaintext"]) == 32 and dk["KeyId"] == key_arn, dk
assert admin.decrypt(CiphertextBlob=dk["CiphertextBlob"], EncryptionContext=ctx)["Plaintext"] == dk["Plaintext"]
dk128 = admin.generate_data_key(KeyId=key_id, KeySpec="AES_128")
assert len(dk128["Plaintext"]) == 16
assert admin.decrypt(CiphertextBlob=dk128["CiphertextBlob"])["Plaintext"] == dk128["Plaintext"]
wrapped = admin.generate_data_key_without_plaintext(KeyId=key_id, KeySpec="AES_256", EncryptionContext=ctx)
assert "Plaintext" not in wrapped and wrapped["KeyId"] == key_arn, wrapped
assert len(admin.decrypt(CiphertextBlob=wrapped["CiphertextBlob"], EncryptionContext=ctx)["Plaintext"]) == 32
fails("ValidationException", admin.generate_data_key, KeyId=key_id, NumberOfBytes=64)
fails("ValidationException", admin.generate_data_key, KeyId=key_id)
fails("InvalidCiphertextException", admin.decrypt, CiphertextBlob=dk["CiphertextBlob"], EncryptionContext={"tenant": "acme"})

# --- ReEncrypt to another key and context ---
re = admin.re_encrypt(CiphertextBlob=blob, SourceEncryptionContext=ctx, DestinationKeyId=other_id,
                      DestinationEncryptionContext={"moved": "yes"})
assert re["SourceKeyId"] == key_arn and re["KeyId"] == arn(other_id), re
assert admin.decrypt(CiphertextBlob=re["CiphertextBlob"], EncryptionContext={"moved": "yes"})["Plaintext"] == b"attack at dawn"
fails("InvalidCiphertextException", admin.decrypt, CiphertextBlob=re["CiphertextBlob"], EncryptionContext=ctx)
fails("InvalidCiphertextException", admin.re_encrypt, CiphertextBlob=blob, SourceEncryptionContext={"tenant": "x"},
      DestinationKeyId=other_id)
fails("IncorrectKeyException", admin.re_encrypt, CiphertextBlob=blob, SourceEncryptionContext=ctx,
      SourceKeyId=other_id, DestinationKeyId=other_id)

# --- DisableKey / EnableKey ---
admin.disable_key(KeyId=key_id)
assert admin.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Disabled"
fails("DisabledException", admin.encrypt, KeyId=key_id, Plaintext=b"x")
fails("DisabledException", admin.decrypt, CiphertextBlob=blob, EncryptionContext=ctx)
admin.enable_key(KeyId=key_id)
assert admin.decrypt(CiphertextBlob=blob, EncryptionContext=ctx)["Plaintext"] == b"attack at dawn"

# --- Rotation: EnableKeyRotation, GetKeyRotationStatus, RotateKeyOnDemand, DisableKeyRotation ---
assert admin.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"] is False
admin.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=180)
status = admin.get_key_rotation_status(KeyId=key_id)
assert status["KeyRotationEnabled"] is True and status["RotationPeriodInDays"] == 180, status
assert admin.rotate_key_on_demand(KeyId=key_id)["KeyId"] == key_arn
# The old ciphertext still opens; new ones are under the new version.
assert admin.decrypt(CiphertextBlob=blob, EncryptionContext=ctx)["Plaintext"] == b"attack at dawn"
new_blob = admin.encrypt(KeyId=key_id, Plaintext=b"after rotation")["CiphertextBlob"]
assert admin.decrypt(CiphertextBlob=new_blob)["Plaintext"] == b"after rotation"
admin.disable_key_rotation(KeyId=key_id)
assert admin.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"] is False

# --- ScheduleKeyDeletion / CancelKeyDeletion ---
sched = admin.schedule_key_deletion(KeyId=other_id, PendingWindowInDays=7)
assert sched["KeyId"] == arn(other_id) and sched["KeyState"] == "PendingDeletion", sched
assert "DeletionDate" in sched
fails("KMSInvalidStateException", admin.encrypt, KeyId=other_id, Plaintext=b"x")
assert admin.cancel_key_deletion(KeyId=other_id)["KeyId"] == arn(other_id)
if admin.describe_key(KeyId=other_id)["KeyMetadata"]["KeyState"] == "Disabled":
    admin.enable_key(KeyId=other_id)
assert admin.describe_key(KeyId=other_id)["KeyMetadata"]["KeyState"] == "Enabled"
admin.encrypt(KeyId=other_id, Plaintext=b"x")

# --- GenerateRandom: the HSM's bytes, AWS's bounds ---
rnd = admin.generate_random(NumberOfBytes=64)["Plaintext"]
assert len(rnd) == 64 and rnd != admin.generate_random(NumberOfBytes=64)["Plaintext"]
assert len(admin.generate_random(NumberOfBytes=1024)["Plaintext"]) == 1024
fails("ValidationException", admin.generate_random, NumberOfBytes=8, CustomKeyStoreId="cks-1234567890abcdef0")

# --- Denied action: a principal whose policy lacks decrypt ---
lim = limited.encrypt(KeyId=key_id, Plaintext=b"for the limited one", EncryptionContext=ctx)
assert lim["KeyId"] == key_arn
e = fails("AccessDeniedException", limited.decrypt, CiphertextBlob=lim["CiphertextBlob"], EncryptionContext=ctx)
assert "decrypt" in e.response["Error"]["Message"], e.response
fails("AccessDeniedException", limited.create_key)
fails("AccessDeniedException", limited.generate_random, NumberOfBytes=8)

# --- Authentication failures ---
wrong_secret = client(os.environ["ADMIN_KEY_ID"], "x" * 40)
fails("InvalidSignatureException", wrong_secret.list_keys)
unknown = client("CKIA" + "A" * 16, os.environ["ADMIN_SECRET"])
fails("UnrecognizedClientException", unknown.list_keys)
not_ours = client("AKIAIOSFODNN7EXAMPLE", os.environ["ADMIN_SECRET"])
fails("UnrecognizedClientException", not_ours.list_keys)
other_region = client(os.environ["ADMIN_KEY_ID"], os.environ["ADMIN_SECRET"], region="eu-west-1")
fails("InvalidSignatureException", other_region.list_keys)


def raw_call(target, body, signed_at=None, key_id=None, secret=None, tamper_body=False):
    """A request signed by botocore's SigV4Auth, optionally dated `signed_at`."""
    data = json.dumps(body).encode()
    req = AWSRequest(method="POST", url=ENDPOINT + "/", data=data, headers={
        "X-Amz-Target": "TrentService." + target,
        "Content-Type": "application/x-amz-json-1.1",
    })
    creds = Credentials(key_id or os.environ["ADMIN_KEY_ID"], secret or os.environ["ADMIN_SECRET"])
    if signed_at is None:
        SigV4Auth(creds, "kms", REGION).add_auth(req)
    else:
        with mock.patch("botocore.auth.get_current_datetime", return_value=signed_at):
            SigV4Auth(creds, "kms", REGION).add_auth(req)
    if tamper_body:
        req.data = data.replace(b"}", b' }')
    prepared = req.prepare()
    session = botocore.httpsession.URLLib3Session()
    res = session.send(prepared)
    return res.status_code, json.loads(res.content or b"{}")


now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
status, body = raw_call("ListKeys", {}, signed_at=now)
assert status == 200 and "Keys" in body, (status, body)
# Expired: signed 20 minutes ago (and 20 minutes ahead).
for skew in [-20, 20]:
    status, body = raw_call("ListKeys", {}, signed_at=now + datetime.timedelta(minutes=skew))
    assert status == 400 and body["__type"] == "InvalidSignatureException", (skew, status, body)
# A body changed after signing.
status, body = raw_call("ListKeys", {"Limit": 5}, tamper_body=True)
assert status == 400 and body["__type"] == "InvalidSignatureException", (status, body)
# No signature at all; a malformed one.
res = botocore.httpsession.URLLib3Session().send(AWSRequest(
    method="POST", url=ENDPOINT + "/", data=b"{}",
    headers={"X-Amz-Target": "TrentService.ListKeys", "Content-Type": "application/x-amz-json-1.1"}).prepare())
assert res.status_code == 400 and json.loads(res.content)["__type"] == "MissingAuthenticationTokenException", res.content
res = botocore.httpsession.URLLib3Session().send(AWSRequest(
    method="POST", url=ENDPOINT + "/", data=b"{}",
    headers={"X-Amz-Target": "TrentService.ListKeys", "Content-Type": "application/x-amz-json-1.1",
             "Authorization": "AWS4-HMAC-SHA256 Credential=nope"}).prepare())
assert res.status_code == 400 and json.loads(res.content)["__type"] == "IncompleteSignatureException", res.content
# Out-of-range values botocore itself would refuse before sending: the door refuses them too.
for target, body in [
    ("EnableKeyRotation", {"KeyId": key_id, "RotationPeriodInDays": 10}),
    ("ScheduleKeyDeletion", {"KeyId": key_id, "PendingWindowInDays": 3}),
    ("GenerateDataKey", {"KeyId": key_id, "NumberOfBytes": 0}),
    ("GenerateRandom", {"NumberOfBytes": 0}),
    ("GenerateRandom", {"NumberOfBytes": 1025}),
    ("GenerateRandom", {}),
]:
    status, body = raw_call(target, body)
    assert status == 400 and body["__type"] == "ValidationException", (target, status, body)
assert admin.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"
# An operation the door does not serve.
status, body = raw_call("CreateGrant", {})
assert status == 400 and body["__type"] == "UnknownOperationException", (status, body)

print(json.dumps({"key_arn": key_arn}))
print("ALL PASSED")
sys.stdout.flush()
