"""Remote models: `s3://bucket/prefix`, fetched one version at a time into a content cache.

Mirrors live in `$BERTH_HOME/models/<digest>`, the digest covering the URI and every object's ETag,
so the replicas of every API share one download and a changed object is fetched again. boto3
honours AWS_ENDPOINT_URL (MinIO and other S3-compatible stores) and the usual credential chain;
with no credentials at all, requests go unsigned (public buckets). With `disk_cache_size`, a
process keeps at most that many of the mirrors it used, least recently used out first; a mirror
being loaded (by any process) is never removed under it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from berth.runtime.errors import ModelNotFound, RemoteModelError

SCHEME = "s3://"


class RemoteStore:
    def __init__(self, cache_root: Path, keep: int | None = None, client: Any = None) -> None:
        self.cache_root = cache_root
        self.keep = keep
        self._client = client
        self._listings: dict[str, list[tuple[str, str]]] = {}
        self.used: set[str] = set()

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = _client()
        return self._client

    def children(self, uri: str) -> list[str]:
        """Keys under `uri/`, relative to it; empty for a single object."""
        bucket_prefix = _split(uri)[1].rstrip("/")
        return [key[len(bucket_prefix):].lstrip("/") for key, _ in self._objects(uri) if key != bucket_prefix]

    @contextmanager
    def open(self, uri: str) -> Iterator[Path]:
        """The local copy of `uri` (a file for one object, else a folder), downloaded on first use."""
        bucket, prefix = _split(uri)
        objects = self._objects(uri)
        digest = hashlib.sha256("\n".join([uri, *(f"{k} {e}" for k, e in objects)]).encode()).hexdigest()[:24]
        target = self.cache_root / digest
        single = len(objects) == 1 and objects[0][0] == prefix
        self.cache_root.mkdir(parents=True, exist_ok=True)
        with (self.cache_root / f"{digest}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one download however many replicas start at once
            if not target.is_dir():
                self._download(bucket, prefix, objects, target, single)
            fcntl.flock(lock, fcntl.LOCK_SH)  # loading: nobody may evict it meanwhile
            os.utime(target)  # least recently used = oldest mtime
            self.used.add(digest)
            yield target / Path(prefix).name if single else target
        self.trim()

    def trim(self) -> None:
        if self.keep is None:
            return
        mirrors = sorted((self.cache_root / d for d in self.used if (self.cache_root / d).is_dir()),
                         key=lambda p: p.stat().st_mtime, reverse=True)
        for stale in mirrors[self.keep:]:
            with (self.cache_root / f"{stale.name}.lock").open("w") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # someone is loading it right now
                shutil.rmtree(stale, ignore_errors=True)
                self.used.discard(stale.name)

    def _objects(self, uri: str) -> list[tuple[str, str]]:
        if uri not in self._listings:
            bucket, prefix = _split(uri)
            self._listings[uri] = _list(self.client, bucket, prefix.rstrip("/"), uri)
        return self._listings[uri]

    def _download(self, bucket: str, prefix: str, objects: list[tuple[str, str]], target: Path,
                  single: bool) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=self.cache_root))
        try:
            for key, _ in objects:
                relative = Path(key).name if single else Path(key[len(prefix):].lstrip("/"))
                destination = staging / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                self.client.download_file(bucket, key, str(destination))
            os.replace(staging, target)
        except (BotoCoreError, ClientError, OSError) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise RemoteModelError(f"cannot download s3://{bucket}/{prefix}: {exc}") from exc


def _split(uri: str) -> tuple[str, str]:
    if not uri.startswith(SCHEME):
        raise RemoteModelError(f"{uri}: only s3:// model URIs are supported")
    bucket, _, prefix = uri[len(SCHEME):].partition("/")
    return bucket, prefix


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
