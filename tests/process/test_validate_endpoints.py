"""An endpoint another deployed API uses: `validate` (when the daemon runs) and `deploy` refuse it at its line."""

from pathlib import Path

from tests.process.harness import Berth, write_project

PREDICTOR = """
class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        return payload
"""


def spec(name: str, endpoint: str) -> str:
    return f"""\
    - name: {name}
      kind: RealtimeAPI
      predictor:
        type: python
        path: predictor.py
      networking:
        endpoint: {endpoint}
    """


def test_an_endpoint_a_deployed_api_uses_is_refused_with_file_and_line(berth: Berth, tmp_path: Path) -> None:
    first = write_project(tmp_path / "first", spec("first", "/iris"), PREDICTOR)
    second = write_project(tmp_path / "second", spec("second", "iris"), PREDICTOR)

    unchecked = berth.run("validate", str(second))
    assert "berth.yaml is valid: 1 API(s): second" in unchecked.stdout
    assert "endpoints not checked against deployed APIs: the berth daemon is not running" in unchecked.stderr
    assert not berth.processes(), "validate started the daemon"

    berth.run("deploy", str(first))
    clash = ("error: berth.yaml:7:5: networking.endpoint: /iris is already used by the deployed API 'first' "
             "(set networking.endpoint to another path, or delete 'first' first)")
    validated = berth.run("validate", str(second), check=False)
    assert validated.returncode == 4, validated.stderr
    assert clash in validated.stderr
    deployed = berth.run("deploy", str(second), check=False)
    assert deployed.returncode == 4, deployed.stderr
    assert clash in deployed.stderr
    assert [api["name"] for api in berth.get()] == ["first"]

    # The API that owns the endpoint may be validated and deployed again.
    assert "is valid" in berth.run("validate", str(first)).stdout
    assert "first is up to date" in berth.run("deploy", str(first)).stdout
