"""The CLI starts without loading what only some commands need: every `berth get` pays for its imports."""

import subprocess
import sys

import pytest

# The spec models (pydantic), requirement parsing (packaging) and project scanning (pathspec) load for
# deploy, validate and build; a command that reads no spec file starts in about half the time without them.
HEAVY = ("pydantic", "berth.config.schema", "berth.config.loader", "packaging.markers", "pathspec")


def test_the_cli_imports_none_of_the_spec_machinery() -> None:
    code = ("import sys, berth.cli.main; "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "", f"importing the CLI loads {loaded}: import them inside the commands that use them"


def test_the_config_package_still_offers_its_names() -> None:
    import berth.config
    from berth.config import API, RealtimeAPI, SpecFile, load_spec, parse_spec_text, schema

    assert (API, RealtimeAPI) == (schema.API, schema.RealtimeAPI) and SpecFile.__name__ == "SpecFile"
    assert callable(load_spec) and callable(parse_spec_text)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        berth.config.nothing  # noqa: B018
