"""examples/pytorch-classifier in-process: its spec, its predictor on the sample, and batches through the replica app."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import httpx
import pytest

from berth.config.loader import load_spec
from berth.runtime import predictor as loader
from berth.runtime.app import ReplicaApp, ReplicaSettings

torch = pytest.importorskip("torch")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pytorch-classifier"
SAMPLE = json.loads((EXAMPLE / "sample.json").read_text())
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# The answer the example's README gives for sample.json (a 2).
EXPECTED = {"label": 2, "confidence": 1.0, "device": DEVICE}


def _images(count: int) -> list[dict[str, list[int]]]:
    """Held-out digits as the build script splits them (scikit-learn's bundled set: no download)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    _, test_x, _, _ = train_test_split(digits.data, digits.target, test_size=0.2, random_state=0)
    return [{"image": [int(v) for v in row]} for row in test_x[:count]]


def test_the_spec_batches_on_the_server_and_the_requirements_name_torch() -> None:
    (api,) = load_spec(EXAMPLE).apis
    assert api.name == "pytorch-classifier" and api.predictor.type == "python"
    assert api.predictor.server_side_batching is not None and api.predictor.server_side_batching.max_batch_size >= 8
    requirements = [line.strip() for line in (EXAMPLE / "requirements.txt").read_text().splitlines()
                    if line.strip() and not line.startswith("#")]
    assert [re.split(r"[<>=!~ ;\[]", line)[0] for line in requirements] == ["torch"]
    assert (EXAMPLE / "model.pt").stat().st_size < 64 * 1024  # a few KB, committed


def test_the_readme_gives_the_expected_answer() -> None:
    assert '{"label":2,"confidence":1.0,"device":"cpu"}' in (EXAMPLE / "README.md").read_text()


def _predictor(**config: object) -> object:
    (api,) = load_spec(EXAMPLE).apis
    cls = loader.load_class(EXAMPLE / "predictor.py", EXAMPLE, api.predictor.class_name)
    return loader.construct(cls, {**api.predictor.config, **config})


def test_the_predictor_answers_the_sample_and_a_batch_item_by_item() -> None:
    predictor = _predictor()
    assert predictor.device.type == DEVICE  # type: ignore[attr-defined]
    assert predictor.predict([SAMPLE]) == [EXPECTED]  # type: ignore[attr-defined]
    assert predictor.predict(SAMPLE) == EXPECTED  # without server-side batching: one payload, one answer
    images = _images(12)
    alone = [predictor.predict([image])[0] for image in images]  # type: ignore[attr-defined]
    together = predictor.predict(images)  # type: ignore[attr-defined]
    assert [a["label"] for a in together] == [a["label"] for a in alone]
    assert all(abs(a["confidence"] - b["confidence"]) <= 0.001 for a, b in zip(alone, together, strict=True))
    assert len({a["label"] for a in alone}) > 3  # a real classifier, not a constant


def test_a_bad_item_fails_alone() -> None:
    predictor = _predictor()
    answers = predictor.predict([SAMPLE, {"image": [1, 2]}, {"pixels": []}, "text", SAMPLE])  # type: ignore[attr-defined]
    assert answers[0] == answers[4] == EXPECTED
    assert [getattr(a, "status_code", 200) for a in answers] == [200, 400, 400, 400, 200]
    assert b"64 numbers" in answers[1].body


def test_config_device_cpu_stays_on_the_cpu() -> None:
    assert _predictor(device="cpu").predict([SAMPLE]) == [{**EXPECTED, "device": "cpu"}]  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_concurrent_requests_are_batched_and_each_gets_its_own_answer() -> None:
    (api,) = load_spec(EXAMPLE).apis
    app = ReplicaApp(ReplicaSettings(api=api, project=EXAMPLE))
    await app.load()
    assert app.ready and app.batcher is not None
    images = _images(16)
    expected = app.instance.predict(images)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://replica") as client:
        sample = await client.post("/", json=SAMPLE)
        assert sample.status_code == 200 and sample.json() == EXPECTED
        responses = await asyncio.gather(*(client.post("/", json=image) for image in images),
                                         client.post("/", json={"image": "nope"}))
    assert [r.status_code for r in responses] == [200] * 16 + [400]
    assert [r.json()["label"] for r in responses[:16]] == [e["label"] for e in expected]
    sizes = app.metrics.stats()["batch_size"]
    assert sizes["count"] < 18  # 18 requests in fewer predict calls: batches formed
