"""deploy/grafana/berth.json queries only metrics berth exposes; docs/metrics.md lists every one of them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from berth.config.schema import RealtimeAPI
from berth.control.apis import DeployedAPI
from berth.control.collector import ReplicaCollector, ReplicaUsage
from berth.control.fleet import Fleet
from berth.control.ledger import RequestLedger
from berth.control.metrics import BerthCollector, MetricsSources, render
from berth.control.replica import Replica
from berth.control.store import APIRecord, Store
from berth.control.usage import GPUSample
from berth.core.lifecycle import Event
from berth.observability.histogram import BATCH_SIZE_BOUNDS, BATCH_WAIT_BOUNDS, LATENCY_BOUNDS, Histogram
from berth.runtime.contract import PREDICTION_VALUE_BOUNDS

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "berth.json"
SCRAPE = REPO / "deploy" / "prometheus" / "prometheus.yml"
DOCS = REPO / "docs" / "metrics.md"
# PromQL words that look like metric names but are functions, keywords or the dashboard's variables.
NOT_METRICS = {"by", "without", "on", "ignoring", "group_left", "group_right", "le", "and", "or", "unless",
               "offset", "bool", "inf", "nan"}


def api(name: str, monitoring: dict[str, Any] | None) -> DeployedAPI:
    spec = {"name": name, "kind": "RealtimeAPI", "predictor": {"type": "python", "path": "predictor.py"},
            **({"monitoring": monitoring} if monitoring else {})}
    model = RealtimeAPI.model_validate(spec)
    record = APIRecord(name=name, endpoint=f"/{name}", spec=model.model_dump(mode="json"), version="v1",
                       snapshot="s", spec_file="berth.yaml", created_at=0.0, updated_at=0.0, requested=1)
    return DeployedAPI(record, model, Path("/nowhere"))


def reading(model_type: str) -> dict[str, Any]:
    histograms = {name: Histogram.empty(bounds) for name, bounds in
                  (("predict", LATENCY_BOUNDS), ("batch_size", BATCH_SIZE_BOUNDS), ("batch_wait", BATCH_WAIT_BOUNDS))}
    for histogram in histograms.values():
        histogram.observe(0.01)
    values = Histogram.empty(PREDICTION_VALUE_BOUNDS)
    values.observe(2.0)
    predictions = ({"model_type": "classification", "key": None, "classes": {"cat": 1}, "values": None,
                    "wrong_type": 0} if model_type == "classification" else
                   {"model_type": "regression", "key": None, "classes": None,
                    "values": {**values.as_json(), "min": 2.0, "max": 2.0}, "wrong_type": 1})
    return {"incarnation": "1-1", "process": 0, "version": "v1", "init_seconds": 1.5,
            **{name: h.as_json() for name, h in histograms.items()}, "requests": {"2XX": 1},
            "predictions": predictions}


def full_exposition(store: Store) -> str:
    """Every family with at least one sample, from the real collector classes."""
    fleet = Fleet(apis={"cls": api("cls", {"model_type": "classification"}),
                        "reg": api("reg", {"model_type": "regression"})})
    collector = ReplicaCollector(fleet, lambda: fleet.replicas, started_at=0.0)
    for name, model_type in (("cls", "classification"), ("reg", "regression")):
        replica = Replica(id=f"{name}-r", api=name, version="v1", socket_dir=Path("/nowhere"),
                          log_path=Path("/nowhere"), processes=1, created_at=0.0)
        fleet.replicas[replica.id] = replica
        collector.add_reading(replica, 0, reading(model_type))
        collector.usage[replica.id] = ReplicaUsage(name, 3.0, 2.0**20)
        collector.replica_failed(replica, Event.OUT_OF_MEMORY)
    collector.gpus = [GPUSample(0, 0.5, 2**30, 2**34)]
    ledger = RequestLedger(store)
    latency = Histogram.empty(LATENCY_BOUNDS)
    latency.observe(0.01)
    ledger.observe(0, "gw", {"cls": {"code_2xx": 1, "code_4xx": 0, "code_5xx": 0, "latency_sum": 0.01,
                                     "latency_count": 1, "codes": {"200": 1}, "latency": latency.as_json(),
                                     "refusals": {"queue-full": 1}}})
    decision = {"avg_in_flight": 1.0, "target_replica_concurrency": 1.0, "recommendation": 1, "request": 1}
    sources = MetricsSources(fleet=fleet, ledger=ledger, collector=collector, loads=lambda: ({"cls": 1}, {}),
                             decision=lambda name: decision, drift=lambda name: 0.01)
    return render(BerthCollector(sources), None)[0].decode()


@pytest.fixture
def exposition(tmp_path: Path) -> Any:
    store = Store(tmp_path / "state.db")
    store.open()
    yield full_exposition(store)
    store.close()


def expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    found += [variable["definition"] for variable in dashboard["templating"]["list"] if variable.get("definition")]
    return found


def metric_names(expression: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', '""', expression)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_strings)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_ranges))
    return {word for word in words if word.startswith("berth_") and word not in NOT_METRICS}


def test_every_metric_name_in_the_dashboard_exists_in_the_exposition(exposition: str) -> None:
    samples = {sample.name for family in text_string_to_metric_families(exposition) for sample in family.samples}
    used = set()
    for expression in expressions():
        names = metric_names(expression)
        assert names, f"no berth metric in {expression!r}"
        missing = names - samples
        assert not missing, f"{expression!r} queries {sorted(missing)}, which berth does not expose"
        used |= names
    families = {family.name for family in text_string_to_metric_families(exposition)}
    assert len(used) >= 20 and len(families) == 27


def test_the_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)) and panel["gridPos"]["w"] > 0


def test_the_scrape_example_scrapes_the_gateway_address() -> None:
    config = yaml.safe_load(SCRAPE.read_text())
    job = config["scrape_configs"][0]
    assert job["metrics_path"] == "/_berth/metrics"
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:8888"]


def test_docs_list_every_metric_family(exposition: str) -> None:
    documented = DOCS.read_text()
    for family in text_string_to_metric_families(exposition):
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"`{name}`" in documented, f"{name} is not in docs/metrics.md"
