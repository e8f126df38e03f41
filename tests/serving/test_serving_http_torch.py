"""PyTorch fast path over HTTP: every format, v2 tensors, validation, dynamic batching."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httpx
import numpy as np
import pytest

if TYPE_CHECKING:
    from conftest import Server

pytestmark = pytest.mark.slow


def post(server: Server, path: str, body: object) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=30)


def rows(n: int, seed: float) -> list[list[float]]:
    """Distinguishable rows: row i of request `seed` is [seed, i, seed*i/10, -i]."""
    return [[seed, float(i), seed * i / 10, -float(i)] for i in range(n)]


def test_ready_and_info(torch_server: Server) -> None:
    assert httpx.get(torch_server.url + "/ready").json() == {"status": "ready"}
    info = httpx.get(torch_server.url + "/model/info").json()
    assert info["predictor"] == "TorchPredictor"
    assert info["device"] == "cpu"
    assert set(info["flavors"]) == {"python_function", "pytorch"}
    assert info["signature"]["inputs"][0]["tensor-spec"]["shape"] == [-1, 4]
    assert len(info["input_example"]["inputs"]) == 3
    assert info["version"] == "local" and info["name"] == "torch"


@pytest.mark.parametrize("key", ["inputs", "instances"])
def test_formats_agree(torch_server: Server, key: str) -> None:
    data = rows(3, 1.5)
    predict = post(torch_server, "/predict", {"inputs": data}).json()["predictions"]
    inv = post(torch_server, "/invocations", {key: data})
    assert inv.status_code == 200
    assert np.allclose(inv.json()["predictions"], predict, atol=1e-6)
    assert np.asarray(predict).shape == (3, 2)


def test_v2_tensor_infer(torch_server: Server) -> None:
    data = rows(2, 0.5)
    flat = [v for row in data for v in row]
    body = {
        "id": "req-1",
        "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": flat}],
    }
    res = post(torch_server, "/v2/models/torch/infer", body)
    assert res.status_code == 200, res.text
    out = res.json()
    assert out["model_name"] == "torch" and out["id"] == "req-1"
    (tensor,) = out["outputs"]
    assert tensor["shape"] == [2, 2] and tensor["datatype"] == "FP32"
    expected = post(torch_server, "/predict", {"inputs": data}).json()["predictions"]
    assert np.allclose(np.reshape(tensor["data"], (2, 2)), expected, atol=1e-6)
    meta = httpx.get(torch_server.url + "/v2/models/torch").json()
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}]
    two = {"inputs": [body["inputs"][0], {**body["inputs"][0], "name": "y"}]}
    assert post(torch_server, "/v2/models/torch/infer", two).status_code == 422


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"inputs": [[1.0, 2.0, 3.0]]}, "expected shape (-1, 4), got (1, 3)"),
        ({"inputs": [1.0, 2.0, 3.0, 4.0]}, "wrap a single row in a list"),
        ({"inputs": [["a", "b", "c", "d"]]}, "expected float32 values"),
        ({"inputs": [[1.0, 2.0, 3.0, 4.0], [1.0]]}, "ragged or mixed"),
        ({"inputs": []}, "inputs"),
        ({"inputs": [[1, 2, 3, 4]], "instances": [[1, 2, 3, 4]]}, "exactly one of"),
    ],
)
def test_tensor_validation(torch_server: Server, body: object, needle: str) -> None:
    res = post(torch_server, "/predict", body)
    assert res.status_code == 422, res.text
    assert needle in res.json()["message"]
    assert res.json()["request_id"] == res.headers["x-request-id"]


def test_concurrent_mixed_sizes_get_their_own_rows(torch_server: Server, read_metric) -> None:
    """50 concurrent requests of 1..7 rows: each answer is exactly its own rows, in order."""
    requests = [rows(1 + i % 7, float(i + 1)) for i in range(50)]
    # ground truth: each request alone, one after the other
    expected = [
        post(torch_server, "/predict", {"inputs": r}).json()["predictions"] for r in requests
    ]
    before = httpx.get(torch_server.url + "/metrics").text

    async def fire() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=torch_server.url, limits=limits) as client:
            return await asyncio.gather(
                *(client.post("/predict", json={"inputs": r}, timeout=30) for r in requests)
            )

    answers = asyncio.run(fire())
    after = httpx.get(torch_server.url + "/metrics").text
    for req, want, res in zip(requests, expected, answers, strict=True):
        assert res.status_code == 200, res.text
        got = res.json()["predictions"]
        assert len(got) == len(req)
        assert np.allclose(got, want, rtol=1e-5, atol=1e-5)
    calls = read_metric(after, "inference_batch_size_count") - read_metric(
        before, "inference_batch_size_count"
    )
    batched_rows = read_metric(after, "inference_batch_size_sum") - read_metric(
        before, "inference_batch_size_sum"
    )
    assert batched_rows == sum(len(r) for r in requests)
    assert calls < len(requests), "no two requests were ever merged into one model call"
    assert read_metric(after, "inference_batch_size_bucket", le="1.0") < read_metric(
        after, "inference_batch_size_count"
    )


def test_batches_respect_max_batch_size(torch_server: Server, read_metric) -> None:
    """One request larger than max_batch_size (32) runs alone; smaller ones never exceed it."""
    big = rows(40, 9.0)
    res = post(torch_server, "/predict", {"inputs": big})
    assert res.status_code == 200 and len(res.json()["predictions"]) == 40
    text = httpx.get(torch_server.url + "/metrics").text
    over = read_metric(text, "inference_batch_size_count") - read_metric(
        text, "inference_batch_size_bucket", le="32.0"
    )
    assert over == 1  # only the 40-row request itself
