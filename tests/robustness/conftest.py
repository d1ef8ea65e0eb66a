from tests.process.conftest import berth  # noqa: F401  (a real instance per test)
