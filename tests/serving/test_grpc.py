"""The Open Inference Protocol over gRPC (`python -m serving --grpc-port`), tested with clients
other projects wrote, at their defaults: NVIDIA's `tritonclient.grpc` (`set_data_from_numpy`,
which sends `raw_input_contents`) and a client built from our own `.proto`
(`serving/grpc/predict_v2.proto`, typed `contents`). Real servers, real models; predictions are
compared with the same MLflow models loaded in-process.

The `.proto` client runs in a subprocess: tritonclient registers the same `inference.*` message
names in protobuf's default descriptor pool, and a process can hold only one of the two.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.mlflow_server import free_port
from tests.serving.conftest import API_KEY, REPO, Server, metric, running, wait_ready

grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

pytestmark = pytest.mark.slow
SERVICE = "/inference.GRPCInferenceService/"


class GrpcServer(Server):
    """A `python -m serving` subprocess that also serves gRPC; `target` is host:port."""

    def __init__(self, name: str, model_uri: str, tmp: Path, env: dict[str, str]) -> None:
        self.grpc_port = free_port()
        self.target = f"127.0.0.1:{self.grpc_port}"
        super().__init__(name, model_uri, tmp, {**env, "SERVING_GRPC_PORT": str(self.grpc_port)})


@pytest.fixture(scope="module")
def grpc_servers(model_dirs: dict[str, Path], tmp_path_factory) -> Iterator[dict[str, GrpcServer]]:
    """`mlp`: the torch MLP (tensor (-1, 4)), batching 32 rows / 20 ms; `echo`: the echo pyfunc
    (columns x, sleep; outputs y, x) behind an API key, with the access log on."""
    tmp = tmp_path_factory.mktemp("grpc-logs")
    specs = {
        "mlp": (
            model_dirs["torch"],
            {
                "SERVING_MODEL_NAME": "mlp",
                "SERVING_MODEL_VERSION": "3",
                "SERVING_MAX_BATCH_SIZE": "32",
                "SERVING_MAX_BATCH_DELAY_MS": "20",
            },
        ),
        "echo": (
            model_dirs["echo"],
            {"SERVING_MODEL_NAME": "echo", "SERVING_API_KEY": API_KEY, "SERVING_ACCESS_LOG": "1"},
        ),
    }
    with running(specs, tmp, GrpcServer) as started:
        yield started


@pytest.fixture(scope="module")
def mlp(grpc_servers: dict[str, GrpcServer]) -> GrpcServer:
    return grpc_servers["mlp"]


@pytest.fixture(scope="module")
def echo(grpc_servers: dict[str, GrpcServer]) -> GrpcServer:
    return grpc_servers["echo"]


@pytest.fixture(scope="module")
def in_process(model_dirs: dict[str, Path]):
    """`in_process(name, data)`: the same MLflow model's prediction, loaded in this process."""
    import mlflow.pyfunc

    cache: dict[str, object] = {}

    def predict(name: str, data):
        if name not in cache:
            cache[name] = mlflow.pyfunc.load_model(str(model_dirs[name]))
        return cache[name].predict(data)  # type: ignore[attr-defined]

    return predict


def _input(name: str, array: np.ndarray, datatype: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)  # the client's default: raw_input_contents
    return tensor


def _grpc_error(call) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value


# ---------------------------------------------------------------------------- tritonclient
def test_tritonclient_health_and_metadata(mlp: GrpcServer) -> None:
    client = grpcclient.InferenceServerClient(mlp.target)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("mlp")
    assert client.is_model_ready("mlp", "3")
    server = client.get_server_metadata(as_json=True)
    assert server["name"] == "ztml-serving"
    meta = client.get_model_metadata("mlp", as_json=True)
    assert meta["name"] == "mlp" and meta["versions"] == ["3"]
    assert meta["platform"] == "mlflow_pytorch"
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": ["-1", "4"]}]
    error = _grpc_error(lambda: client.get_model_metadata("other"))
    assert error.status() == "StatusCode.NOT_FOUND"
    assert "'other' is not served here" in error.message()


def test_tritonclient_infer_matches_in_process(mlp: GrpcServer, in_process) -> None:
    x = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    client = grpcclient.InferenceServerClient(mlp.target)
    result = client.infer("mlp", [_input("input-0", x, "FP32")], request_id="req-1")
    got = result.as_numpy("output-0")
    assert got.dtype == np.float32 and got.shape == (5, 2)
    np.testing.assert_allclose(got, in_process("torch", x), rtol=1e-5, atol=1e-6)
    response = result.get_response(as_json=True)
    assert response["model_name"] == "mlp" and response["model_version"] == "3"
    assert response["id"] == "req-1"
    # and the same answer as this server's REST endpoint gives
    rest = httpx.post(
        f"{mlp.url}/v2/models/mlp/infer",
        json={
            "inputs": [
                {"name": "input-0", "shape": [5, 4], "datatype": "FP32", "data": x.ravel().tolist()}
            ]
        },
        timeout=10,
    ).json()
    np.testing.assert_allclose(got.ravel(), rest["outputs"][0]["data"], rtol=1e-6)


def test_columns_api_key_and_requested_outputs(echo: GrpcServer, in_process) -> None:
    import pandas as pd

    x = np.array([1.5, -2.0, 4.0])
    client = grpcclient.InferenceServerClient(echo.target)
    bearer = {"authorization": f"Bearer {API_KEY}"}
    result = client.infer(
        "echo",
        [_input("x", x, "FP64")],
        outputs=[grpcclient.InferRequestedOutput("y")],
        headers=bearer,
    )
    expected = in_process("echo", pd.DataFrame({"x": x}))
    np.testing.assert_array_equal(result.as_numpy("y"), expected["y"].to_numpy())
    assert result.as_numpy("x") is None  # only the output asked for
    both = client.infer("echo", [_input("x", x, "FP64")], headers={"x-api-key": API_KEY})
    np.testing.assert_array_equal(both.as_numpy("x"), x)
    error = _grpc_error(
        lambda: client.infer(
            "echo",
            [_input("x", x, "FP64")],
            outputs=[grpcclient.InferRequestedOutput("nope")],
            headers=bearer,
        )
    )
    assert error.status() == "StatusCode.INVALID_ARGUMENT" and "'nope'" in error.message()


def test_a_wrong_or_missing_key_is_unauthenticated(echo: GrpcServer) -> None:
    client = grpcclient.InferenceServerClient(echo.target)
    x = np.array([1.0])
    for headers in (None, {"x-api-key": "wrong"}, {"authorization": "Bearer wrong"}):
        error = _grpc_error(
            lambda h=headers: client.infer("echo", [_input("x", x, "FP64")], headers=h)
        )
        assert error.status() == "StatusCode.UNAUTHENTICATED", headers
        assert "API key" in error.message()
        error = _grpc_error(lambda h=headers: client.get_model_metadata("echo", headers=h))
        assert error.status() == "StatusCode.UNAUTHENTICATED"
    assert client.is_server_live() and client.is_server_ready()  # probes stay open


def test_signature_errors_are_invalid_argument_naming_the_field(
    mlp: GrpcServer, echo: GrpcServer
) -> None:
    client = grpcclient.InferenceServerClient(echo.target)
    key = {"x-api-key": API_KEY}
    text = np.array([b"abc"], dtype=np.object_)
    error = _grpc_error(lambda: client.infer("echo", [_input("x", text, "BYTES")], headers=key))
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert "'x'" in error.message()
    missing = _grpc_error(
        lambda: client.infer("echo", [_input("sleep", np.array([0.0]), "FP64")], headers=key)
    )
    assert missing.status() == "StatusCode.INVALID_ARGUMENT" and "x" in missing.message()
    wide = np.zeros((2, 5), dtype=np.float32)
    shape = _grpc_error(
        lambda: grpcclient.InferenceServerClient(mlp.target).infer(
            "mlp", [_input("input-0", wide, "FP32")]
        )
    )
    assert shape.status() == "StatusCode.INVALID_ARGUMENT"
    assert "input-0" in shape.message() and "4" in shape.message()
    failing = _grpc_error(
        lambda: client.infer("echo", [_input("x", np.array([-1.0]), "FP64")], headers=key)
    )
    assert failing.status() == "StatusCode.INTERNAL" and "not allowed" in failing.message()


def test_metrics_count_grpc_calls_with_their_protocol(mlp: GrpcServer, echo: GrpcServer) -> None:
    client = grpcclient.InferenceServerClient(echo.target)
    key = {"x-api-key": API_KEY}
    client.infer("echo", [_input("x", np.array([1.0, 2.0]), "FP64")], headers=key)
    _grpc_error(
        lambda: client.infer(
            "echo", [_input("x", np.array([b"a"], dtype=object), "BYTES")], headers=key
        )
    )
    text = httpx.get(echo.url + "/metrics", timeout=5).text
    infer = SERVICE + "ModelInfer"
    assert (
        metric(text, "inference_requests_total", endpoint=infer, status="200", protocol="grpc") >= 1
    )
    assert (
        metric(text, "inference_requests_total", endpoint=infer, status="422", protocol="grpc") >= 1
    )
    assert metric(text, "inference_latency_seconds_count", endpoint=infer, protocol="grpc") >= 2
    assert metric(text, "inference_errors_total", kind="validation") >= 1
    assert metric(text, "inference_predictions_total") >= 2
    assert "/inference.GRPCInferenceService/ModelInfer" in echo.log()  # the access log


def test_grpc_and_http_requests_share_one_batcher(mlp: GrpcServer) -> None:
    before = httpx.get(mlp.url + "/metrics", timeout=5).text
    calls_before = metric(before, "inference_batch_size_count")
    x = np.ones((1, 4), dtype=np.float32)
    client = grpcclient.InferenceServerClient(mlp.target)
    body = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [1] * 4}]}

    def grpc_call(_: int) -> np.ndarray:
        return client.infer("mlp", [_input("input-0", x, "FP32")]).as_numpy("output-0")

    def http_call(_: int) -> np.ndarray:
        data = httpx.post(f"{mlp.url}/v2/models/mlp/infer", json=body, timeout=10).json()
        return np.asarray(data["outputs"][0]["data"], dtype=np.float32).reshape(1, 2)

    requests = 24
    with concurrent.futures.ThreadPoolExecutor(requests) as pool:
        futures = [pool.submit(grpc_call if i % 2 else http_call, i) for i in range(requests)]
        answers = [f.result() for f in futures]
    for answer in answers:
        np.testing.assert_allclose(answer, answers[0], rtol=1e-6)
    after = httpx.get(mlp.url + "/metrics", timeout=5).text
    calls = metric(after, "inference_batch_size_count") - calls_before
    assert (
        metric(after, "inference_batch_size_sum") - metric(before, "inference_batch_size_sum")
        == requests
    )
    assert calls < requests  # requests of both protocols were merged into shared model calls


# ---------------------------------------------------------------------------- our own .proto
STUB_CLIENT = """
import json, sys
import grpc
import numpy as np
from serving.grpc import predict_v2_pb2 as pb, predict_v2_pb2_grpc as pb_grpc

stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(sys.argv[1]))
x = np.asarray(json.loads(sys.argv[2]), dtype=np.float32)
out = {"live": stub.ServerLive(pb.ServerLiveRequest()).live,
       "ready": stub.ModelReady(pb.ModelReadyRequest(name="mlp")).ready}
meta = stub.ModelMetadata(pb.ModelMetadataRequest(name="mlp"))
out["meta_inputs"] = [[t.name, t.datatype, list(t.shape)] for t in meta.inputs]
tensor = pb.ModelInferRequest.InferInputTensor(name="input-0", datatype="FP32", shape=x.shape)
tensor.contents.fp32_contents.extend(x.ravel().tolist())
typed = stub.ModelInfer(pb.ModelInferRequest(model_name="mlp", inputs=[tensor], id="typed"))
out["typed"] = {"id": typed.id, "raw": len(typed.raw_output_contents),
                "shape": list(typed.outputs[0].shape),
                "data": list(typed.outputs[0].contents.fp32_contents)}
raw_tensor = pb.ModelInferRequest.InferInputTensor(name="input-0", datatype="FP32", shape=x.shape)
raw = stub.ModelInfer(pb.ModelInferRequest(model_name="mlp", inputs=[raw_tensor],
                                           raw_input_contents=[x.astype("<f4").tobytes()]))
out["raw"] = np.frombuffer(raw.raw_output_contents[0], "<f4").tolist()
bad = pb.ModelInferRequest.InferInputTensor(name="input-0", datatype="FP32", shape=[1, 4])
bad.contents.fp32_contents.extend([1.0, 2.0])
try:
    stub.ModelInfer(pb.ModelInferRequest(model_name="mlp", inputs=[bad]))
except grpc.RpcError as err:
    out["bad"] = [err.code().name, err.details(), dict(err.trailing_metadata())]
print(json.dumps(out))
"""


def test_a_client_from_our_proto_gets_typed_and_raw_answers(mlp: GrpcServer, in_process) -> None:
    x = np.random.default_rng(2).normal(size=(3, 4)).astype(np.float32)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(STUB_CLIENT), mlp.target, json.dumps(x.tolist())],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    out = json.loads(done.stdout)
    expected = in_process("torch", x)
    assert out["live"] is True and out["ready"] is True
    assert out["meta_inputs"] == [["input-0", "FP32", [-1, 4]]]
    assert out["typed"]["id"] == "typed" and out["typed"]["raw"] == 0  # typed in, typed out
    assert out["typed"]["shape"] == [3, 2]
    np.testing.assert_allclose(out["typed"]["data"], expected.ravel(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["raw"], expected.ravel(), rtol=1e-5, atol=1e-6)
    code, details, trailing = out["bad"]
    assert code == "INVALID_ARGUMENT" and "input-0" in details
    assert trailing["x-field"] == "input-0" and trailing["x-request-id"]


# ---------------------------------------------------------------------------- lifecycle
def test_sigterm_drains_grpc_calls_with_http(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    server = GrpcServer(
        "grpc-drain",
        str(model_dirs["gate"]),
        tmp_path,
        {
            "GATE_DIR": str(gate),
            "SERVING_MODEL_NAME": "gate",
            "SERVING_MAX_BATCH_DELAY_MS": "0",
            "SERVING_INLINE_INFERENCE": "off",  # the held call must not block the event loop
        },
    )
    try:
        wait_ready([server])
        client = grpcclient.InferenceServerClient(server.target)
        inputs = [_input("x", np.array([1.0]), "FP64"), _input("hold", np.array([1.0]), "FP64")]
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            held = pool.submit(client.infer, "gate", inputs)
            deadline = time.monotonic() + 30
            while not (gate / "entered").exists():
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.01)
            server.proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            assert not client.is_server_ready()  # the drain started: probes say not ready
            late = pool.submit(client.infer, "gate", [_input("x", np.array([2.0]), "FP64")])
            time.sleep(0.3)  # it waits behind the held call, on the one inference thread
            (gate / "release").touch()
            np.testing.assert_array_equal(held.result(timeout=30).as_numpy("y"), [2.0])
            # arrived while draining, answered as usual
            np.testing.assert_array_equal(late.result(timeout=30).as_numpy("y"), [4.0])
        assert server.proc.wait(30) == 0, server.log()
    finally:
        server.stop()


def test_a_grpc_port_in_use_fails_the_start(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = Server(
            "grpc-taken", str(model_dirs["echo"]), tmp_path, {"SERVING_GRPC_PORT": str(port)}
        )
        try:
            assert server.proc.wait(120) == 1
        finally:
            server.stop()
    last = server.log_path.read_text().strip().splitlines()[-1]
    assert last.startswith("serving: cannot start: gRPC (SERVING_GRPC_PORT=")
    assert str(port) in last
