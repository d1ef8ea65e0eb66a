"""The ONNX example through the real daemon; the inference protocol spoken by tritonclient."""

import json

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from tests.process.harness import EXAMPLES, Berth

SAMPLE = json.loads((EXAMPLES / "onnx-classifier" / "sample.json").read_text())


@pytest.fixture
def onnx_api(berth: Berth) -> Berth:
    berth.run("deploy", str(EXAMPLES / "onnx-classifier"), "--wait")
    return berth


def test_the_onnx_example_answers_with_its_expected_label(onnx_api: Berth) -> None:
    url = f"{onnx_api.base_url}/onnx-classifier"
    answer = httpx.post(url, json=SAMPLE).json()
    assert answer["label"] == [2] and len(answer["probabilities"][0]) == 10
    single = httpx.post(url, json={"input": SAMPLE["input"][0]}).json()  # batch dimension added
    assert single["label"] == [2]
    wrong = httpx.post(url, json={"input": [1, 2, 3]})
    assert wrong.status_code == 400 and "must have shape ['?', 64]" in wrong.json()["error"]
    missing = httpx.post(f"{url}?model=nope", json=SAMPLE)
    assert missing.status_code == 404 and missing.json()["available"] == ["onnx-classifier"]


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_speaks_the_inference_protocol(onnx_api: Berth, binary: bool) -> None:
    client = triton.InferenceServerClient(url=f"127.0.0.1:{onnx_api.port}/onnx-classifier")
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("onnx-classifier")
        metadata = client.get_model_metadata("onnx-classifier")
        assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
        assert {o["name"] for o in metadata["outputs"]} == {"label", "probabilities"}
        images = np.asarray(SAMPLE["input"] * 3, dtype=np.float32)
        infer_input = triton.InferInput("input", list(images.shape), "FP32")
        infer_input.set_data_from_numpy(images, binary_data=binary)
        outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name in ("label", "probabilities")]
        result = client.infer("onnx-classifier", [infer_input], outputs=outputs)
        assert result.as_numpy("label").tolist() == [2, 2, 2]
        assert result.as_numpy("probabilities").shape == (3, 10)
        with pytest.raises(triton.InferenceServerException):
            client.get_model_metadata("nope")
    finally:
        client.close()
