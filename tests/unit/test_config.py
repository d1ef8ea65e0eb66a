from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from berth.config import load_spec, parse_spec_text
from berth.config.units import format_duration, parse_duration, parse_quantity
from berth.errors import ConfigError

MINIMAL = """\
- name: iris
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
"""


def parse(text: str):
    return parse_spec_text(text, Path("/tmp/berth.yaml"))


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value.problems


def test_cortex_defaults() -> None:
    api = parse(MINIMAL).apis[0]
    assert api.endpoint == "/iris"
    assert api.compute.cpu == pytest.approx(0.2)
    assert api.compute.mem is None
    scaling = api.autoscaling
    assert (scaling.min_replicas, scaling.max_replicas, scaling.init_replicas) == (1, 100, 1)
    assert scaling.target_replica_concurrency == 1
    assert scaling.max_replica_concurrency == 1024
    assert scaling.window == 60
    assert scaling.downscale_stabilization_period == 300
    assert scaling.upscale_stabilization_period == 60
    assert (scaling.max_downscale_factor, scaling.max_upscale_factor) == (0.75, 1.5)
    assert (scaling.downscale_tolerance, scaling.upscale_tolerance) == (0.05, 0.05)
    assert (api.update_strategy.max_surge, api.update_strategy.max_unavailable) == ("25%", "25%")
    assert api.predictor.processes_per_replica == 1 and api.predictor.threads_per_process == 1


def test_target_defaults_to_processes_times_threads() -> None:
    text = MINIMAL + "    processes_per_replica: 2\n    threads_per_process: 3\n"
    assert parse(text).apis[0].autoscaling.target_replica_concurrency == 6


def test_init_replicas_defaults_to_min() -> None:
    text = MINIMAL + "  autoscaling:\n    min_replicas: 3\n"
    assert parse(text).apis[0].init_replicas == 3


def test_models_are_frozen() -> None:
    api = parse(MINIMAL).apis[0]
    with pytest.raises(Exception, match="frozen"):
        api.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("  autoscaling:\n    window: 15s\n", "berth.yaml:7:5: autoscaling.window: must be a multiple of 10s (got 15s)"),
        ("  autoscaling:\n    min_replicas: 3\n    max_replicas: 2\n",
         "autoscaling: min_replicas (3) must not exceed max_replicas (2)"),
        ("  autoscaling:\n    init_replicas: 9\n    max_replicas: 2\n", "init_replicas (9) must lie between"),
        ("  autoscalling:\n    window: 10s\n", "berth.yaml:6:3: autoscalling: unknown field (did you mean 'autoscaling'?)"),
        ("  compute:\n    cpu: lots\n", "compute.cpu: expected a quantity such as 500m, 2 or 1Gi (got 'lots')"),
        ("  compute:\n    cpu: 10m\n", "compute.cpu: must be at least 20m"),
        ("  update_strategy:\n    max_surge: 0\n    max_unavailable: 0%\n",
         "update_strategy: max_surge and max_unavailable must not both be 0"),
        ("  update_strategy:\n    max_surge: lots\n", "expected an integer or a percentage"),
        ("  networking:\n    endpoint: /a b\n", "networking.endpoint: expected a URL path"),
        ("  networking:\n    endpoint: /_berth/x\n", "reserved for berth"),
        ("  autoscaling:\n    target_replica_concurrency: 2000\n", "must not exceed max_replica_concurrency (1024)"),
    ],
)
def test_bad_fields_are_reported_with_position(extra: str, expected: str) -> None:
    assert any(expected in problem for problem in problems(MINIMAL + extra)), problems(MINIMAL + extra)


def test_every_problem_is_reported_at_once() -> None:
    text = MINIMAL.replace("iris", "Iris!") + "  autoscaling:\n    window: 15s\n  compute:\n    gpu: -1\n"
    found = problems(text)
    assert len(found) == 3
    assert found[0].startswith("berth.yaml:1:3: name:")


def test_misspelled_nested_field_suggests_the_right_one() -> None:
    text = MINIMAL + "    threads_per_proces: 4\n"
    assert problems(text) == [
        "berth.yaml:6:5: predictor.threads_per_proces: unknown field (did you mean 'threads_per_process'?)"
    ]


def test_missing_required_fields() -> None:
    found = problems("- name: a\n  kind: RealtimeAPI\n")
    assert found == ["berth.yaml:1:3: predictor: required field is missing"]


def test_malformed_yaml_points_at_the_problem() -> None:
    found = problems("- name: a\n  kind: [RealtimeAPI\n")
    assert len(found) == 1 and found[0].startswith("berth.yaml:3:1: invalid YAML")


@pytest.mark.parametrize("text", ["", "just a string\n", "- 3\n"])
def test_not_a_list_of_apis(text: str) -> None:
    assert problems(text)


def test_unsupported_kinds_and_types_say_so() -> None:
    assert "not supported yet" in problems(MINIMAL.replace("RealtimeAPI", "BatchAPI"))[0]
    assert "not supported" in problems(MINIMAL.replace("type: python", "type: tensorflow"))[0]


def test_duplicate_names_and_endpoints_in_one_file() -> None:
    other = MINIMAL.replace("name: iris", "name: other") + "  networking:\n    endpoint: iris\n"
    found = problems(MINIMAL + other)
    assert any("/iris is also the endpoint of 'iris'" in p for p in found)
    assert any("defined twice" in p for p in problems(MINIMAL + MINIMAL))


def test_cortex_fields_that_do_nothing_locally_are_ignored_with_a_warning() -> None:
    text = MINIMAL + "    image: quay.io/cortexlabs/python-predictor-cpu:0.25.0\n  networking:\n    api_gateway: public\n"
    spec = parse(text)
    assert len(spec.warnings) == 2
    assert "berth.yaml:6:5: predictor.image: ignored locally" in spec.warnings[0]
    assert spec.apis[0].endpoint == "/iris"


def test_cortex_yaml_is_found_and_loads(tmp_path: Path) -> None:
    (tmp_path / "cortex.yaml").write_text(MINIMAL + "  compute:\n    cpu: 1\n    mem: 200Mi\n")
    (tmp_path / "predictor.py").write_text("class PythonPredictor:\n    pass\n")
    spec = load_spec(tmp_path)
    assert spec.path.name == "cortex.yaml"
    assert spec.apis[0].compute.mem == 200 * 2**20


def test_missing_predictor_file(tmp_path: Path) -> None:
    (tmp_path / "berth.yaml").write_text(MINIMAL)
    with pytest.raises(ConfigError) as info:
        load_spec(tmp_path)
    assert "berth.yaml:5:5: predictor.path: file not found" in info.value.problems[0]


def test_predictor_without_the_class_lists_the_classes_found(tmp_path: Path) -> None:
    (tmp_path / "berth.yaml").write_text(MINIMAL)
    (tmp_path / "predictor.py").write_text("class Predictor:\n    pass\nclass Helper:\n    pass\n")
    with pytest.raises(ConfigError) as info:
        load_spec(tmp_path)
    assert "defines no class PythonPredictor (classes found: Predictor, Helper)" in info.value.problems[0]


def test_predictor_syntax_error_is_reported(tmp_path: Path) -> None:
    (tmp_path / "berth.yaml").write_text(MINIMAL)
    (tmp_path / "predictor.py").write_text("class PythonPredictor:\n    def predict(self\n")
    with pytest.raises(ConfigError) as info:
        load_spec(tmp_path)
    assert "syntax error in the predictor" in info.value.problems[0]


def test_folder_without_spec(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no berth.yaml \(or cortex.yaml\)"):
        load_spec(tmp_path)


@pytest.mark.parametrize(("text", "seconds"), [("10ms", 0.01), ("10s", 10), ("5m", 300), ("1h", 3600), (30, 30)])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("text", "value"), [("200m", 0.2), ("2", 2), ("1Gi", 2**30), ("500Mi", 500 * 2**20),
                                             ("1G", 10**9), (1.5, 1.5)])
def test_quantities(text: object, value: float) -> None:
    assert parse_quantity(text) == pytest.approx(value)


@pytest.mark.parametrize("bad", ["10", "ten seconds", "-5s", True, None, "5d"])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["ms", "s", "m", "h"]))
def test_duration_format_round_trips(amount: int, unit: str) -> None:
    seconds = parse_duration(f"{amount}{unit}")
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("  autoscaling:\n    min_replicas: 3\n    max_replicas: 2\n    mystery: 1\n",
         ["berth.yaml:9:5: autoscaling.mystery: unknown field (expected one of: "
          + "min_replicas, max_replicas, init_replicas, target_replica_concurrency, max_replica_concurrency, "
          + "window, downscale_stabilization_period, upscale_stabilization_period, max_downscale_factor, "
          + "max_upscale_factor, downscale_tolerance, upscale_tolerance, scale_from_zero_queue, "
          + "scale_from_zero_timeout)",
          "berth.yaml:7:5: autoscaling: min_replicas (3) must not exceed max_replicas (2)"]),
        ("  autoscalling: {}\n  autoscaling:\n    min_replicas: 3\n    max_replicas: 2\n",
         ["berth.yaml:8:5: autoscaling: min_replicas (3) must not exceed max_replicas (2)",
          "berth.yaml:6:3: autoscalling: unknown field (did you mean 'autoscaling'?)"]),
        ("  autoscaling:\n    window: 15s\n    min_replicas: 3\n    max_replicas: 2\n"
         "    target_replica_concurrency: 2000\n",
         ["berth.yaml:7:5: autoscaling.window: must be a multiple of 10s (got 15s)",
          "berth.yaml:8:5: autoscaling: min_replicas (3) must not exceed max_replicas (2)",
          "berth.yaml:10:5: autoscaling: target_replica_concurrency (2000) must not exceed "
          "max_replica_concurrency (1024)"]),
        ("    processes_per_replica: 2\n    threads_per_process: 600\n    threads_per_proces: 1\n"
         "  update_strategy:\n    max_surge: 0\n    max_unavailable: 0%\n",
         ["berth.yaml:8:5: predictor.threads_per_proces: unknown field (did you mean 'threads_per_process'?)",
          "berth.yaml:10:5: update_strategy: max_surge and max_unavailable must not both be 0",
          "berth.yaml:1:3: autoscaling: the default target_replica_concurrency (processes x threads = 1200) "
          "exceeds max_replica_concurrency (1024)"]),
        ("    models: {path: a.onnx, dir: models, cache_size: 2}\n  networking:\n    timeout: 0s\n",
         ["berth.yaml:6:14: predictor.models: give exactly one of path, paths or dir (got path, dir)",
          "berth.yaml:6:41: predictor.models: cache_size and disk_cache_size go together (Cortex's rule)",
          "berth.yaml:8:5: networking.timeout: must be greater than 0s (got 0s)"]),
    ],
    ids=["unknown-field-and-bounds", "unknown-top-level-and-bounds", "invalid-field-and-two-rules",
         "rules-at-three-levels", "nested-model-rules"],
)
def test_cross_field_rules_are_reported_with_the_field_errors(extra: str, expected: list[str]) -> None:
    assert problems(MINIMAL + extra) == expected


@pytest.mark.parametrize(
    "extra",
    [
        "  autoscaling:\n    min_replicas: 300\n    max_replicas: many\n",  # not "300 > default 100"
        "  autoscaling:\n    init_replicas: 5\n    max_replicas: -1\n",
        "    processes_per_replica: 0\n    threads_per_process: 2000\n",
    ],
)
def test_a_rule_over_an_invalid_field_is_not_reported(extra: str) -> None:
    assert len(problems(MINIMAL + extra)) == 1, problems(MINIMAL + extra)


def test_the_schema_alone_still_refuses_cross_field_problems() -> None:
    from pydantic import ValidationError

    from berth.config.schema import Autoscaling

    with pytest.raises(ValidationError, match=r"min_replicas \(3\) must not exceed max_replicas \(2\); "
                                              r"init_replicas \(3\) must lie between"):
        Autoscaling.model_validate({"min_replicas": 3, "max_replicas": 2, "init_replicas": 3})


def test_missing_predictor_file_is_reported_with_field_errors(tmp_path: Path) -> None:
    (tmp_path / "berth.yaml").write_text(MINIMAL.replace("iris", "Iris") + "  autoscaling:\n    min_replicas: 3\n"
                                         "    max_replicas: 2\n    bogus: 1\n")
    with pytest.raises(ConfigError) as info:
        load_spec(tmp_path)
    assert [p.split(": ")[1] for p in info.value.problems] == ["name", "autoscaling.bogus", "autoscaling",
                                                              "predictor.path"]
    assert info.value.problems[-1].startswith("berth.yaml:5:5: predictor.path: file not found")


def test_symlinks_leaving_the_project_are_reported_with_spec_errors(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "berth.yaml").write_text(MINIMAL + "  autoscaling:\n    window: 15s\n")
    (project / "predictor.py").write_text("class PythonPredictor:\n    pass\n")
    (project / "weights").symlink_to(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_spec(project)
    window, link = info.value.problems
    assert window.startswith("berth.yaml:7:5: autoscaling.window")
    assert link.startswith(f"weights: symlink to {tmp_path} leaves the project folder {project}")


def test_networking_timeout() -> None:
    assert parse(MINIMAL).apis[0].networking.timeout == 600.0
    text = MINIMAL + "  networking:\n    timeout: 90s\n"
    assert parse(text).apis[0].networking.timeout == 90.0
    assert parse(MINIMAL + "  networking:\n    timeout: 2.5\n").apis[0].networking.timeout == 2.5
    assert problems(MINIMAL + "  networking:\n    timeout: soon\n") == [
        "berth.yaml:7:5: networking.timeout: expected a duration such as 10ms, 10s or 5m (got 'soon')"]
