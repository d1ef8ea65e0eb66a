"""The ONNX example through the real daemon; the inference protocol spoken by tritonclient."""

import json
import textwrap
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from tests.process.harness import EXAMPLES, Berth, free_port, write_project

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


def test_models_from_s3_are_downloaded_once_and_shared(berth: Berth, tmp_path: Path) -> None:
    boto3 = pytest.importorskip("boto3", reason="boto3 is part of berth[s3]")
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                          aws_secret_access_key="test")
        s3.create_bucket(Bucket="models")
        for version in ("1", "2"):
            s3.upload_file(str(EXAMPLES / "onnx-classifier" / "model.onnx"), "models", f"digits/{version}/model.onnx",
                           ExtraArgs={"ACL": "public-read"})  # a public bucket: anonymous reads work
        # no credentials in berth's environment: the replica reads the bucket anonymously
        berth.env = {k: v for k, v in berth.env.items() if not k.startswith("AWS_")}
        berth.env.update({"AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1"})
        spec = """
        - name: remote
          kind: RealtimeAPI
          predictor:
            type: onnx
            models: {paths: [{name: digits, path: s3://models/digits}]}
          autoscaling: {min_replicas: 2}
        """
        (tmp_path / "berth.yaml").write_text(textwrap.dedent(spec))
        berth.run("deploy", str(tmp_path), "--wait")
        answer = httpx.post(f"{berth.base_url}/remote?model=digits", json=SAMPLE).json()
        assert answer["label"] == [2]
        mirrors = [p for p in (berth.home / "models").iterdir() if p.is_dir()]
        assert len(mirrors) == 1  # two replicas, one download
        assert [p.name for p in mirrors[0].iterdir()] == ["model.onnx"]  # only the version used (latest)
        missing = write_project(tmp_path / "missing", spec.replace("s3://models/digits", "s3://models/nothing"), "")
        (missing / "predictor.py").unlink()
        failed = berth.run("deploy", str(missing), "--wait", check=False)
        assert failed.returncode == 6 and "no model at s3://models/nothing" in failed.stderr
    finally:
        server.stop()
