"""Auth, request ids, body limit, model errors (isolated per caller), timeouts; on the `echo`
pyfunc model (y = 2x, raises for x == -1, sleeps `sleep` seconds) with an API key set."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httpx
import pytest

API_KEY = "s3cret-key"  # the echo server's key (conftest.API_KEY)

if TYPE_CHECKING:
    from conftest import Server

pytestmark = pytest.mark.slow
AUTH = {"X-API-Key": API_KEY}


def post(server: Server, body: object, headers: dict | None = None, path: str = "/predict"):
    return httpx.post(server.url + path, json=body, headers=headers or AUTH, timeout=30)


def test_api_key(echo_server: Server) -> None:
    body = {"inputs": [{"x": 1.0}]}
    res = httpx.post(echo_server.url + "/predict", json=body)
    assert res.status_code == 401 and "X-API-Key" in res.json()["message"]
    assert res.headers["www-authenticate"].startswith("Bearer")
    assert post(echo_server, body, {"X-API-Key": API_KEY + "x"}).status_code == 401
    assert post(echo_server, body, {"Authorization": f"Bearer {API_KEY}"}).status_code == 200
    assert post(echo_server, body).json()["predictions"] == [{"y": 2.0, "x": 1.0}]
    assert httpx.get(echo_server.url + "/model/info").status_code == 401
    assert httpx.get(echo_server.url + "/v2/models/echo").status_code == 401
    for open_path in ("/health", "/ready", "/v2/health/live", "/v2/health/ready", "/metrics"):
        assert httpx.get(echo_server.url + open_path).status_code == 200, open_path


def test_request_id(echo_server: Server) -> None:
    res = post(echo_server, {"inputs": [{"x": 1.0}]}, {**AUTH, "X-Request-ID": "abc-123"})
    assert res.headers["x-request-id"] == "abc-123" and res.json()["request_id"] == "abc-123"
    res = post(echo_server, {"inputs": [{"x": 1.0}]}, {**AUTH, "X-Request-ID": "bad id\t!"})
    assert res.headers["x-request-id"] != "bad id\t!" and len(res.headers["x-request-id"]) == 32
    assert httpx.get(echo_server.url + "/health").headers["x-request-id"]


def test_body_limit(echo_server: Server) -> None:
    big = {"inputs": [{"x": float(i)} for i in range(400)]}  # > 4096 bytes
    res = post(echo_server, big)
    assert res.status_code == 413 and "SERVING_MAX_BODY_BYTES" in res.json()["message"]

    def chunks():  # no Content-Length: the limit must hold while streaming too
        for _ in range(10):
            yield b" " * 1000

    res = httpx.post(
        echo_server.url + "/predict",
        content=chunks(),
        headers={**AUTH, "content-type": "application/json"},
    )
    assert res.status_code == 413


def test_model_error_is_500_and_server_keeps_serving(echo_server: Server, read_metric) -> None:
    before = httpx.get(echo_server.url + "/metrics").text
    res = post(echo_server, {"inputs": [{"x": -1.0}]}, {**AUTH, "X-Request-ID": "boom-1"})
    assert res.status_code == 500
    assert res.json()["request_id"] == "boom-1"
    assert "x = -1 is not allowed" in res.json()["message"]
    assert post(echo_server, {"inputs": [{"x": 3.0}]}).json()["predictions"][0]["y"] == 6.0
    after = httpx.get(echo_server.url + "/metrics").text
    assert (
        read_metric(after, "inference_errors_total", kind="model")
        - read_metric(before, "inference_errors_total", kind="model")
        == 1
    )
    assert "boom-1" in echo_server.log()  # the traceback is logged with the request id


def test_bad_request_in_a_batch_fails_alone(echo_server: Server) -> None:
    """Batched with healthy neighbours, a failing request gets 500 and they still get 200."""
    xs = [float(i) for i in range(1, 21)]
    xs[7] = -1.0

    async def fire():
        async with httpx.AsyncClient(base_url=echo_server.url, headers=AUTH) as client:
            return await asyncio.gather(
                *(client.post("/predict", json={"inputs": {"x": [x]}}, timeout=30) for x in xs)
            )

    for x, res in zip(xs, asyncio.run(fire()), strict=True):
        if x == -1.0:
            assert res.status_code == 500
        else:
            assert res.status_code == 200, res.text
            assert res.json()["predictions"] == [{"y": 2 * x, "x": x}]


def test_timeout_is_504(echo_server: Server) -> None:
    res = post(echo_server, {"inputs": [{"x": 1.0, "sleep": 2.5}]})
    assert res.status_code == 504 and "SERVING_REQUEST_TIMEOUT_SECONDS" in res.json()["message"]
    ok = post(echo_server, {"inputs": [{"x": 1.0}]})  # waits for the sleeping call, then runs
    assert ok.status_code == 200


def test_dataframe_output_formats(echo_server: Server) -> None:
    res = post(
        echo_server,
        {"dataframe_split": {"columns": ["x"], "data": [[1.5], [2.0]]}},
        path="/invocations",
    )
    assert res.json() == {"predictions": [{"y": 3.0, "x": 1.5}, {"y": 4.0, "x": 2.0}]}
    body = {"inputs": [{"name": "x", "shape": [2], "datatype": "FP64", "data": [1.0, 2.0]}]}
    out = post(echo_server, body, path="/v2/models/echo/infer").json()["outputs"]
    assert {o["name"]: o["data"] for o in out} == {"y": [2.0, 4.0], "x": [1.0, 2.0]}
    assert post(echo_server, {"inputs": [{"sleep": 0.0}]}).status_code == 422  # x required
