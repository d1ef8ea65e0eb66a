"""Remote models: `s3://bucket/prefix` mirrored once into a content cache under BERTH_HOME.

The cache key is the URI and every object's ETag, so replicas of every API share one download and a
changed object is fetched again. boto3 honours AWS_ENDPOINT_URL (MinIO and other S3-compatible
stores) and the usual credential chain; with no credentials at all, requests go unsigned (public
buckets).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from berth.runtime.models import ModelNotFound

SCHEME = "s3://"


class RemoteModelError(RuntimeError):
    """A remote model could not be fetched; the replica fails to start with this message."""


def is_remote(path: str) -> bool:
    return "://" in path


def localize(uri: str, cache_root: Path, client: Any = None) -> Path:
    """The local path of a remote model file or folder, downloading it on first use."""
    if not uri.startswith(SCHEME):
        raise RemoteModelError(f"{uri}: only s3:// model URIs are supported")
    bucket, _, prefix = uri[len(SCHEME):].partition("/")
    s3 = client or _client()
    objects = _list(s3, bucket, prefix.rstrip("/"), uri)
    digest = hashlib.sha256("\n".join([uri, *(f"{key} {etag}" for key, etag in objects)]).encode()).hexdigest()[:24]
    target = cache_root / digest
    single = len(objects) == 1 and objects[0][0] == prefix
    local = target / Path(prefix).name if single else target
    if target.is_dir():
        return local
    cache_root.mkdir(parents=True, exist_ok=True)
    with (cache_root / f"{digest}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one download however many replicas start at once
        if not target.is_dir():
            _download(s3, bucket, prefix.rstrip("/"), objects, target, single)
    return local


def _client() -> Any:
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    session = boto3.session.Session()
    config = Config(signature_version=UNSIGNED) if session.get_credentials() is None else None
    return session.client("s3", config=config)


def _list(s3: Any, bucket: str, prefix: str, uri: str) -> list[tuple[str, str]]:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        objects = [(item["Key"], item["ETag"]) for page in pages for item in page.get("Contents", [])
                   if not item["Key"].endswith("/")]
    except (BotoCoreError, ClientError) as exc:
        raise RemoteModelError(f"cannot list {uri}: {exc}") from exc
    exact = [o for o in objects if o[0] == prefix]
    nested = [o for o in objects if o[0].startswith(prefix + "/")] if prefix else objects
    found = exact or nested
    if not found:
        raise ModelNotFound(f"no model at {uri}", [])
    return sorted(found)


def _download(s3: Any, bucket: str, prefix: str, objects: list[tuple[str, str]], target: Path, single: bool) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
    try:
        for key, _ in objects:
            relative = Path(key).name if single else Path(key[len(prefix):].lstrip("/"))
            destination = staging / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, key, str(destination))
        os.replace(staging, target)
    except (BotoCoreError, ClientError, OSError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise RemoteModelError(f"cannot download s3://{bucket}/{prefix}: {exc}") from exc
