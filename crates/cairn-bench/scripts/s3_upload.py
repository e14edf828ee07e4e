"""The peer of `cairn-repo-bench`: uploads every file of a folder to S3 with boto3's
managed transfer (multipart above 8 MB, 10 threads: what `aws s3 cp --recursive` does),
and prints the seconds and bytes as JSON.

    python3 s3_upload.py ENDPOINT BUCKET PREFIX FOLDER
"""
import json
import os
import sys
import time

import boto3
from boto3.s3.transfer import TransferConfig


def main():
    endpoint, bucket, prefix, folder = sys.argv[1:5]
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )
    files = []
    for root, _, names in os.walk(folder):
        for n in names:
            path = os.path.join(root, n)
            files.append((path, os.path.relpath(path, folder)))
    config = TransferConfig()
    started = time.monotonic()
    total = 0
    for path, rel in files:
        s3.upload_file(path, bucket, f"{prefix}/{rel}", Config=config)
        total += os.path.getsize(path)
    print(json.dumps({"seconds": time.monotonic() - started, "bytes": total, "files": len(files)}))


if __name__ == "__main__":
    main()
