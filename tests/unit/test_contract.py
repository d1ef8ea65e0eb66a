"""The replica process contract: what one side writes, the other reads back unchanged."""

from pathlib import Path

import pytest

from berth.runtime.contract import Failure, ReplicaArgs, clear_failure, read_failure, write_failure

ARGS = [
    ReplicaArgs(spec=Path("/run/r/spec.json"), project=Path("/p"), socket_dir=Path("/run/r")),
    ReplicaArgs(spec=Path("s.json"), project=Path("p"), socket_dir=Path("d"), port=8080, host="0.0.0.0",
                model_cache=Path("/m"), replica_id="echo-1", process_index=3),
]


@pytest.mark.parametrize("args", ARGS)
def test_argv_round_trips(args: ReplicaArgs) -> None:
    assert ReplicaArgs.parse(args.to_argv()) == args


def test_a_sibling_differs_only_in_its_index() -> None:
    command = ARGS[1].for_process(1).command("python")
    assert command[:3] == ["python", "-m", "berth.runtime"]
    assert ReplicaArgs.parse(command[3:]) == ReplicaArgs(**{**ARGS[1].__dict__, "process_index": 1})


def test_the_failure_file(tmp_path: Path) -> None:
    assert read_failure(tmp_path) is None
    write_failure(tmp_path, Failure("ValueError: no", "Traceback ..."))
    assert read_failure(tmp_path) == Failure("ValueError: no", "Traceback ...")
    clear_failure(tmp_path)
    assert read_failure(tmp_path) is None
    assert list(tmp_path.iterdir()) == []
