"""The AWS Encryption SDK (pinned in scripts/lib.sh PY_CLIENTS) against Custodian's AWS KMS door:
encrypts a 10 MiB file with an AWS KMS keyring whose boto3 client points at Custodian, decrypts it
back, and fails to decrypt it with a changed encryption context: once as the SDK's own check of
the context the caller requires, once with the context in the message changed, so that it is
Custodian that refuses to unwrap the data key.

Environment: KMS_ENDPOINT, AWS_REGION, ADMIN_KEY_ID, ADMIN_SECRET, KEY_ARN, WORK_DIR.
"""

import hashlib
import os
import sys

import aws_encryption_sdk
import boto3
from aws_cryptographic_material_providers.mpl import AwsCryptographicMaterialProviders
from aws_cryptographic_material_providers.mpl.config import MaterialProvidersConfig
from aws_cryptographic_material_providers.mpl.models import CreateAwsKmsKeyringInput
from aws_encryption_sdk import CommitmentPolicy
from botocore.config import Config

KEY_ARN = os.environ["KEY_ARN"]
WORK = os.environ["WORK_DIR"]
SIZE = 10 * 1024 * 1024

kms = boto3.client(
    "kms",
    endpoint_url=os.environ["KMS_ENDPOINT"],
    region_name=os.environ["AWS_REGION"],
    aws_access_key_id=os.environ["ADMIN_KEY_ID"],
    aws_secret_access_key=os.environ["ADMIN_SECRET"],
    config=Config(retries={"max_attempts": 1, "mode": "standard"}),
)
mpl = AwsCryptographicMaterialProviders(config=MaterialProvidersConfig())
keyring = mpl.create_aws_kms_keyring(
    input=CreateAwsKmsKeyringInput(kms_key_id=KEY_ARN, kms_client=kms)
)
sdk = aws_encryption_sdk.EncryptionSDKClient(
    commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
)
context = {"tenant": "acme", "file": "ten-mebibytes"}

plain_path = os.path.join(WORK, "plain.bin")
cipher_path = os.path.join(WORK, "plain.bin.encrypted")
out_path = os.path.join(WORK, "plain.bin.decrypted")
with open(plain_path, "wb") as f:
    f.write(os.urandom(SIZE))
with open(plain_path, "rb") as f:
    want = hashlib.sha256(f.read()).hexdigest()

# Encrypt the file, streaming.
with open(plain_path, "rb") as src, open(cipher_path, "wb") as dst:
    with sdk.stream(mode="e", source=src, keyring=keyring, encryption_context=context) as enc:
        for chunk in enc:
            dst.write(chunk)
        header = enc.header
assert os.path.getsize(cipher_path) > SIZE
# The message's data key was wrapped by Custodian under the configured key ARN.
providers = {k.key_provider.key_info.decode() for k in header.encrypted_data_keys}
assert providers == {KEY_ARN}, providers

# Decrypt it back, streaming.
with open(cipher_path, "rb") as src, open(out_path, "wb") as dst:
    with sdk.stream(mode="d", source=src, keyring=keyring, encryption_context=context) as dec:
        for chunk in dec:
            dst.write(chunk)
        got_context = dec.header.encryption_context
with open(out_path, "rb") as f:
    got = hashlib.sha256(f.read()).hexdigest()
assert got == want, "the decrypted file differs"
assert got_context["tenant"] == "acme" and "aws-crypto-public-key" in got_context, got_context
print("round trip of", SIZE, "bytes: ok")

with open(cipher_path, "rb") as f:
    message = f.read()

# Negative twin 1: the caller requires another context than the message carries.
try:
    sdk.decrypt(source=message, keyring=keyring, encryption_context={"tenant": "other", "file": "ten-mebibytes"})
except Exception as e:  # the SDK's own refusal
    print("required context refused:", type(e).__name__)
else:
    raise AssertionError("decrypted with a changed required encryption context")

# Negative twin 2: the context stored in the message changed (same length, so the message still
# parses): the SDK asks Custodian to unwrap the data key under the changed context, and
# Custodian refuses (InvalidCiphertextException), so no data key and no plaintext.
changed = message.replace(b"ten-mebibytes", b"ten-mebibytez", 1)
assert changed != message
try:
    sdk.decrypt(source=changed, keyring=keyring)
except Exception as e:
    text = repr(e)
    print("changed context refused:", type(e).__name__, text[:300])
else:
    raise AssertionError("decrypted a message whose encryption context was changed")

print("ALL PASSED")
sys.stdout.flush()
