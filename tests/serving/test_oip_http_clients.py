"""Open Inference Protocol over HTTP, driven by clients other projects wrote, each with its
default settings, against a real `python -m serving` (fixtures in conftest.py).

- NVIDIA `tritonclient.http` (sync): binary tensor data by default (`set_data_from_numpy`,
  `binary_data_output` when no outputs are named).
- `tritonclient.http.aio`: labels every body `application/octet-stream`, JSON included.
- Binary bodies labelled `application/json` (what other v2 REST clients send): the JSON
  header + raw bytes form with `Inference-Header-Content-Length`, sent with httpx. KServe 0.21's
  own client (which labels them `application/octet-stream`) runs in its own venv in
  test_kserve_client.py, as MLServer's does in test_mlserver_client.py.

Predictions are compared with the same model loaded in-process with `mlflow.pyfunc`.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np
import pandas as pd
import pytest

if TYPE_CHECKING:
    from conftest import Server

httpclient = pytest.importorskip("tritonclient.http")
aioclient = pytest.importorskip("tritonclient.http.aio")
from tritonclient.utils import InferenceServerException  # noqa: E402

from tests.serving.conftest import API_KEY  # noqa: E402

pytestmark = pytest.mark.slow


def key() -> dict[str, str]:
    """A fresh header dict per call: tritonclient writes its own headers into the one given."""
    return {"X-API-Key": API_KEY}


def sk_frame(n: int = 5) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "a": np.linspace(-1.0, 2.0, n),
            "b": np.linspace(3.0, -2.0, n),
            "c": np.arange(n, dtype=np.int64) % 3,
        }
    )


def sk_inputs(module, frame: pd.DataFrame) -> list:
    inputs = []
    for name, datatype in (("a", "FP64"), ("b", "FP64"), ("c", "INT64")):
        inp = module.InferInput(name, [len(frame)], datatype)
        inp.set_data_from_numpy(frame[name].to_numpy())  # binary_data=True: the default
        inputs.append(inp)
    return inputs


@pytest.fixture(scope="module")
def in_process(model_dirs: dict[str, Path]):
    import mlflow.pyfunc

    return {name: mlflow.pyfunc.load_model(str(model_dirs[name])) for name in ("sk", "torch")}


def client(server: Server):
    return httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))


# ------------------------------------------------------------------ tritonclient.http (sync)
def test_triton_sync_metadata(sk_server: Server) -> None:
    c = client(sk_server)
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready("iris") and c.is_model_ready("iris", "7")
    assert "binary_tensor_data" in c.get_server_metadata()["extensions"]
    meta = c.get_model_metadata("iris", "7")
    assert meta["platform"] == "mlflow_sklearn"
    assert [i["name"] for i in meta["inputs"]] == ["a", "b", "c"]


def test_triton_sync_binary_columns(sk_server: Server, in_process) -> None:
    frame = sk_frame()
    result = client(sk_server).infer("iris", sk_inputs(httpclient, frame), model_version="7")
    expected = np.asarray(in_process["sk"].predict(frame))
    out = result.get_response()["outputs"][0]
    assert out["parameters"]["binary_data_size"] > 0 and "data" not in out  # binary answer
    np.testing.assert_array_equal(result.as_numpy(out["name"]), expected)


def test_triton_sync_binary_tensor(torch_server: Server, in_process) -> None:
    x = np.random.default_rng(0).normal(size=(7, 4)).astype(np.float32)
    meta = client(torch_server).get_model_metadata("torch")
    inp = httpclient.InferInput(meta["inputs"][0]["name"], list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client(torch_server).infer("torch", [inp])
    got = result.as_numpy(result.get_response()["outputs"][0]["name"])
    np.testing.assert_allclose(got, in_process["torch"].predict(x), rtol=1e-5, atol=1e-6)


def test_triton_sync_json_data_and_json_outputs(sk_server: Server, in_process) -> None:
    frame = sk_frame(3)
    inputs = sk_inputs(httpclient, frame)
    for inp in inputs:
        inp.set_data_from_numpy(frame[inp.name()].to_numpy(), binary_data=False)
    outputs = [httpclient.InferRequestedOutput("output-0", binary_data=False)]
    result = client(sk_server).infer("iris", inputs, outputs=outputs)
    out = result.get_response()["outputs"][0]
    assert "data" in out and "parameters" not in out
    np.testing.assert_array_equal(result.as_numpy("output-0"), in_process["sk"].predict(frame))


def test_triton_outputs_selected_and_unknown_named(echo_server: Server) -> None:
    c = client(echo_server)
    x = httpclient.InferInput("x", [3], "FP64")
    x.set_data_from_numpy(np.array([1.0, 2.5, 4.0]))
    both = c.infer("echo", [x], headers=key())
    assert [o["name"] for o in both.get_response()["outputs"]] == ["y", "x"]
    only = c.infer("echo", [x], outputs=[httpclient.InferRequestedOutput("x")], headers=key())
    assert [o["name"] for o in only.get_response()["outputs"]] == ["x"]
    np.testing.assert_array_equal(only.as_numpy("x"), [1.0, 2.5, 4.0])
    with pytest.raises(InferenceServerException) as err:
        c.infer("echo", [x], outputs=[httpclient.InferRequestedOutput("nope")], headers=key())
    assert err.value.status() == "400" and "'nope'" in err.value.message()


def test_triton_sync_bytes_tensor(echo_server: Server) -> None:
    """BYTES inputs travel as 4-byte little-endian length + bytes (the echo model takes doubles,
    so the strings are refused by the signature check, after the binary part was decoded)."""
    c = client(echo_server)
    x = httpclient.InferInput("x", [2], "BYTES")
    x.set_data_from_numpy(np.array([b"1.5", b"abc"], dtype=object))
    with pytest.raises(InferenceServerException) as err:
        c.infer("echo", [x], headers=key())
    assert err.value.status() == "422" and "x" in err.value.message()


def test_triton_sync_compression(sk_server: Server, in_process) -> None:
    frame = sk_frame(200)
    for algorithm in ("gzip", "deflate"):
        result = client(sk_server).infer(
            "iris",
            sk_inputs(httpclient, frame),
            request_compression_algorithm=algorithm,
            response_compression_algorithm=algorithm if algorithm == "gzip" else None,
        )
        got = result.as_numpy(result.get_response()["outputs"][0]["name"])
        np.testing.assert_array_equal(got, in_process["sk"].predict(frame))


# ------------------------------------------------------------------ tritonclient.http.aio
def test_triton_aio_defaults(sk_server: Server, in_process) -> None:
    frame = sk_frame(4)

    async def run() -> tuple:
        c = aioclient.InferenceServerClient(url=sk_server.url.removeprefix("http://"))
        try:
            meta = await c.get_model_metadata("iris")
            binary = await c.infer("iris", sk_inputs(aioclient, frame))
            inputs = sk_inputs(aioclient, frame)
            for inp in inputs:  # JSON data, still labelled application/octet-stream
                inp.set_data_from_numpy(frame[inp.name()].to_numpy(), binary_data=False)
            as_json = await c.infer("iris", inputs)
            return meta, binary, as_json
        finally:
            await c.close()

    meta, binary, as_json = asyncio.run(run())
    assert meta["platform"] == "mlflow_sklearn"
    expected = in_process["sk"].predict(frame)
    for result in (binary, as_json):
        np.testing.assert_array_equal(result.as_numpy("output-0"), expected)


# ------------------------------------------------------------------ KServe v2 REST wire format
def test_binary_body_labelled_json(sk_server: Server, in_process) -> None:
    """Binary tensor data (JSON header, raw little-endian bytes, the length header) under a JSON
    label: the protocol header decides, not the label."""
    frame = sk_frame(3)
    raws = [frame[n].to_numpy().astype("<f8" if n != "c" else "<i8").tobytes() for n in "abc"]
    header = {
        "id": "k-1",
        "inputs": [
            {
                "name": n,
                "shape": [3],
                "datatype": "FP64" if n != "c" else "INT64",
                "parameters": {"binary_data_size": len(r)},
            }
            for n, r in zip("abc", raws, strict=True)
        ],
    }
    head = json.dumps(header).encode()
    res = httpx.post(
        sk_server.url + "/v2/models/iris/infer",
        content=head + b"".join(raws),
        headers={
            "content-type": "application/json",
            "inference-header-content-length": str(len(head)),
        },
    )
    assert res.status_code == 200, res.text
    body = res.json()  # no binary output asked for: plain JSON
    assert body["id"] == "k-1"
    assert body["outputs"][0]["data"] == in_process["sk"].predict(frame).tolist()


def test_binary_size_mismatch_is_400(sk_server: Server) -> None:
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "a",
                    "shape": [2],
                    "datatype": "FP64",
                    "parameters": {"binary_data_size": 16},
                }
            ]
        }
    ).encode()
    res = httpx.post(
        sk_server.url + "/v2/models/iris/infer",
        content=head + b"\0" * 12,
        headers={"inference-header-content-length": str(len(head))},
    )
    assert res.status_code == 400 and "past the end" in res.json()["error"]


def test_binary_bytes_elements_decoded(echo_server: Server) -> None:
    """Numbers sent as BYTES strings: each element's 4-byte length prefix is honoured (a wrong
    one would misalign and fail); the signature then refuses strings for a double column."""
    raw = b"".join(struct.pack("<I", len(v)) + v for v in (b"1", b"22"))
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [2],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    ).encode()
    bad = struct.pack("<I", 99) + b"1"
    for blob, status in ((raw, 422), (bad, 400)):
        res = httpx.post(
            echo_server.url + "/v2/models/echo/infer",
            content=head.replace(str(len(raw)).encode(), str(len(blob)).encode()) + blob,
            headers={**key(), "inference-header-content-length": str(len(head))},
        )
        assert res.status_code == status, res.text


# ------------------------------------------------------------------ content codings, errors
def test_gzip_request_and_response(sk_server: Server) -> None:
    body = {"inputs": [{"name": n, "shape": [1], "datatype": "FP64", "data": [1.0]} for n in "ab"]}
    body["inputs"].append({"name": "c", "shape": [1], "datatype": "INT64", "data": [1]})
    raw = json.dumps(body).encode()
    for coding, packed in (("gzip", gzip.compress(raw)), ("deflate", zlib.compress(raw))):
        res = httpx.post(
            sk_server.url + "/v2/models/iris/infer",
            content=packed,
            headers={"content-type": "application/json", "content-encoding": coding},
        )
        assert res.status_code == 200, res.text
    big = httpx.get(sk_server.url + "/metrics", headers={"accept-encoding": "gzip"})
    assert big.headers.get("content-encoding") == "gzip" and "inference_" in big.text
    small = httpx.get(sk_server.url + "/health", headers={"accept-encoding": "gzip"})
    assert "content-encoding" not in small.headers  # under GZIP_MINIMUM_BYTES: not worth it


def test_decompression_bomb_is_413(echo_server: Server) -> None:
    bomb = gzip.compress(b"[" * 1_000_000)  # ~1 KB on the wire, 1 MB decoded; limit 4096
    assert len(bomb) < 4096
    res = httpx.post(
        echo_server.url + "/v2/models/echo/infer",
        content=bomb,
        headers={**key(), "content-type": "application/json", "content-encoding": "gzip"},
    )
    assert res.status_code == 413 and "decoded body" in res.json()["error"]


@pytest.mark.parametrize(
    ("method", "path", "status", "key"),
    [
        ("GET", "/v2/models/iris/nope", 404, "error"),
        ("GET", "/v2/models/iris/infer", 405, "error"),
        ("DELETE", "/v2", 405, "error"),
        ("GET", "/nope", 404, "message"),
        ("POST", "/health", 405, "message"),
    ],
)
def test_routing_errors_are_json(sk_server: Server, method, path, status, key) -> None:
    res = httpx.request(method, sk_server.url + path)
    assert res.status_code == status
    assert res.headers["content-type"].startswith("application/json")
    assert path in res.json()[key]


# ------------------------------------------------------------------ codecs, in-process
def test_content_codings_round_trip_and_bounds() -> None:
    from serving import encoding
    from serving.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

    raw = b'{"inputs": []}' * 10
    raw_deflate = zlib.compressobj(wbits=-15)
    raw_deflate_body = raw_deflate.compress(raw) + raw_deflate.flush()
    assert encoding.decode(gzip.compress(raw), "gzip", 10_000) == raw
    assert encoding.decode(zlib.compress(raw), "deflate", 10_000) == raw
    assert encoding.decode(raw_deflate_body, "deflate", 10_000) == raw  # some send raw deflate
    assert encoding.decode(gzip.compress(zlib.compress(raw)), "deflate, gzip", 10_000) == raw
    with pytest.raises(PayloadTooLarge):
        encoding.decode(gzip.compress(raw), "gzip", len(raw) - 1)
    with pytest.raises(BadRequest, match="not valid gzip"):
        encoding.decode(gzip.compress(raw)[:-12], "gzip", 10_000)  # truncated
    with pytest.raises(UnsupportedMediaType, match="'br'"):
        encoding.decode(raw, "br", 10_000)


def test_binary_tensor_codec_matches_tritonclient() -> None:
    """serving.binary writes what tritonclient reads, and reads what it writes."""
    from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

    from serving import binary

    values = np.array([b"", b"a", "\u00e9".encode(), b"x" * 300], dtype=object)
    wire = serialize_byte_tensor(values).item()  # a 0-d object array holding the bytes
    assert binary.decode_bytes(memoryview(wire), "t") == list(values)
    assert binary.encode_tensor(values, "BYTES") == wire
    back = deserialize_bytes_tensor(binary.encode_tensor(np.array(["ok", "é"]), "BYTES"))
    assert back.tolist() == [b"ok", "é".encode()]
    arr = np.arange(6, dtype=np.float16).reshape(2, 3)
    entry = {"datatype": "FP16", "shape": [2, 3]}
    decoded = binary.decode_tensor(memoryview(binary.encode_tensor(arr, "FP16")), entry, "t")
    np.testing.assert_array_equal(decoded.reshape(2, 3), arr)
    assert decoded.flags.writeable
