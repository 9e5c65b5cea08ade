"""One signed ListKeys with the access key in ADMIN_KEY_ID/ADMIN_SECRET: prints OK, or the AWS
error type (and exits 1). For the access key lifecycle tests (tests/it/aws.rs)."""

import os
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

kms = boto3.client(
    "kms",
    endpoint_url=os.environ["KMS_ENDPOINT"],
    region_name=os.environ["AWS_REGION"],
    aws_access_key_id=os.environ["ADMIN_KEY_ID"],
    aws_secret_access_key=os.environ["ADMIN_SECRET"],
    config=Config(retries={"max_attempts": 1, "mode": "standard"}),
)
try:
    kms.list_keys(Limit=1)
except ClientError as e:
    print(e.response["Error"]["Code"])
    sys.exit(1)
print("OK")
