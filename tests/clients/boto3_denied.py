"""Every AWS KMS operation the door serves, by an access key whose principal may do none of
them (tests/it/authz.rs): each answers AccessDeniedException, the lists answer empty. KEY_ID
names a key, BLOB (base64) a ciphertext of it, ALIAS an alias of it. Prints ALL PASSED."""

import base64
import os

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

kms = boto3.client(
    "kms",
    endpoint_url=os.environ["KMS_ENDPOINT"],
    region_name=os.environ["AWS_REGION"],
    aws_access_key_id=os.environ["NOBODY_KEY_ID"],
    aws_secret_access_key=os.environ["NOBODY_SECRET"],
    config=Config(retries={"max_attempts": 1, "mode": "standard"}),
)
key = os.environ["KEY_ID"]
alias = os.environ["ALIAS"]
blob = base64.b64decode(os.environ["BLOB"])

calls = {
    "Encrypt": lambda: kms.encrypt(KeyId=key, Plaintext=b"x"),
    "Encrypt (alias)": lambda: kms.encrypt(KeyId=alias, Plaintext=b"x"),
    "Decrypt": lambda: kms.decrypt(CiphertextBlob=blob),
    "Decrypt (KeyId)": lambda: kms.decrypt(CiphertextBlob=blob, KeyId=key),
    "GenerateDataKey": lambda: kms.generate_data_key(KeyId=key, KeySpec="AES_256"),
    "GenerateDataKeyWithoutPlaintext": lambda: kms.generate_data_key_without_plaintext(KeyId=key, KeySpec="AES_256"),
    "ReEncrypt": lambda: kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=key),
    "CreateKey": lambda: kms.create_key(),
    "DescribeKey": lambda: kms.describe_key(KeyId=key),
    "CreateAlias": lambda: kms.create_alias(AliasName="alias/nobody", TargetKeyId=key),
    "EnableKey": lambda: kms.enable_key(KeyId=key),
    "DisableKey": lambda: kms.disable_key(KeyId=key),
    "ScheduleKeyDeletion": lambda: kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7),
    "CancelKeyDeletion": lambda: kms.cancel_key_deletion(KeyId=key),
    "EnableKeyRotation": lambda: kms.enable_key_rotation(KeyId=key),
    "DisableKeyRotation": lambda: kms.disable_key_rotation(KeyId=key),
    "GetKeyRotationStatus": lambda: kms.get_key_rotation_status(KeyId=key),
    "RotateKeyOnDemand": lambda: kms.rotate_key_on_demand(KeyId=key),
    "GenerateRandom": lambda: kms.generate_random(NumberOfBytes=8),
}
for name, call in calls.items():
    try:
        call()
    except ClientError as e:
        code = e.response["Error"]["Code"]
        assert code == "AccessDeniedException", f"{name}: {code} {e.response}"
        print(f"ok: {name} -> {code}", flush=True)
        continue
    raise AssertionError(f"{name}: succeeded for a principal with no rights")

assert kms.list_keys()["Keys"] == [], "ListKeys shows keys the caller may not read"
assert kms.list_aliases()["Aliases"] == [], "ListAliases shows aliases the caller may not read"
print("ok: ListKeys and ListAliases are empty", flush=True)
print("ALL PASSED", flush=True)
