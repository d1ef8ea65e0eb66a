from collections.abc import Iterator

import pytest

from tests.process.harness import Berth


@pytest.fixture
def berth() -> Iterator[Berth]:
    instance = Berth()
    try:
        yield instance
    finally:
        instance.cleanup()
        assert not instance.processes(), "a berth process outlived its test"
