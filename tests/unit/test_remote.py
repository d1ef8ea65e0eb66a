"""Remote model sources against moto's in-process S3."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from berth.config.schema import Models
from berth.runtime.errors import ModelNotFound
from berth.runtime.models import ModelCache, sources
from berth.runtime.remote import RemoteStore

boto3 = pytest.importorskip("boto3", reason="remote models need berth[s3]")
moto = pytest.importorskip("moto", reason="moto is a test dependency")


@pytest.fixture
def s3() -> Iterator[Any]:
    with moto.mock_aws():
        client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b")
        client.create_bucket(Bucket="zoo-bucket")
        for key in ("zoo/alpha/1/model.onnx", "zoo/alpha/2/model.onnx", "zoo/beta.onnx", "zoo/gamma/model.onnx"):
            client.put_object(Bucket="zoo-bucket", Key=key, Body=key.encode())
        yield client


def read(path: Path) -> str:
    file = path if path.is_file() else next(path.rglob("*.onnx"))
    return file.read_text()


def test_a_remote_dir_is_fetched_one_version_at_a_time(s3: Any, tmp_path: Path) -> None:
    store = RemoteStore(tmp_path / "cache", client=s3)
    cache = ModelCache(sources(Models(dir="s3://zoo-bucket/zoo"), tmp_path, "api", store), read, capacity=None)
    assert cache.names() == ["alpha", "beta", "gamma"]
    assert cache.get("alpha") == ("alpha", "2", "zoo/alpha/2/model.onnx")
    assert len(list((tmp_path / "cache").glob("*/"))) == 1  # only version 2 was downloaded
    assert cache.get("beta")[2] == "zoo/beta.onnx" and cache.get("gamma")[2] == "zoo/gamma/model.onnx"
    with pytest.raises(ModelNotFound):
        cache.get("alpha", "3")


def test_a_second_store_reuses_the_download(s3: Any, tmp_path: Path) -> None:
    for _ in range(2):
        store = RemoteStore(tmp_path / "cache", client=s3)
        ModelCache(sources(Models(path="s3://zoo-bucket/zoo/beta.onnx"), tmp_path, "api", store), read, None).get()
    assert len([p for p in (tmp_path / "cache").iterdir() if p.is_dir()]) == 1


def test_disk_cache_keeps_the_most_recently_used(s3: Any, tmp_path: Path) -> None:
    store = RemoteStore(tmp_path / "cache", keep=1, client=s3)
    cache = ModelCache(sources(Models(dir="s3://zoo-bucket/zoo"), tmp_path, "api", store), read, capacity=1)
    cache.get("alpha")
    cache.get("beta")
    mirrors = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert len(mirrors) == 1 and read(mirrors[0]) == "zoo/beta.onnx"
    assert cache.get("alpha")[2] == "zoo/alpha/2/model.onnx"  # evicted from memory and disk: fetched again


def test_nothing_at_the_uri(s3: Any, tmp_path: Path) -> None:
    store = RemoteStore(tmp_path / "cache", client=s3)
    cache = ModelCache(sources(Models(path="s3://zoo-bucket/nothing"), tmp_path, "api", store), read, None)
    with pytest.raises(ModelNotFound, match="no model at s3://zoo-bucket/nothing"):
        cache.get()
