"""Seldon MLServer 1.7.1 as a client of `python -m serving`: its codecs and `mlserver infer`.

MLServer cannot be installed beside the dev stack (`pip install mlserver==1.7.1` downgrades
fastapi, starlette and protobuf), so it lives in its own venv (tests/serving/peers.py), made once
by pip and cached under
`~/.cache/ztml-test-peers/mlserver-1.7.1` (`ZTML_TEST_PEERS` moves the root), keyed by the
version and reused while healthy. Its python runs a small script (`CODEC_SCRIPT`) that builds
requests with `mlserver.codecs`, POSTs them and decodes the answers with the same codecs, and its
`mlserver infer` CLI runs with its default settings against our HTTP port. Results are compared
with the same models loaded in-process by `mlflow.pyfunc`.

A venv that cannot be made fails the test. The one exception: outside CI, when pip itself reports
that the package index is unreachable, the test skips saying so. CI is recognised by `CI` or by
`ZTML_TEST_REGISTRY` (which `.ci/run` always exports through `docker-up`).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest

from tests.serving.conftest import API_KEY, running
from tests.serving.peers import peer_env, peer_venv

if TYPE_CHECKING:
    from tests.serving.conftest import Server

pytestmark = pytest.mark.slow

MLSERVER_VERSION = "1.7.1"

CODEC_SCRIPT = r'''
"""Runs in MLServer's venv: stdin = cases as JSON, stdout = decoded answers as JSON."""
import json
import sys
import urllib.request

import numpy as np
import pandas as pd
from mlserver.codecs import NumpyCodec, NumpyRequestCodec, PandasCodec
from mlserver.types import InferenceRequest, InferenceResponse, Parameters


def post(url, headers, request):
    body = request.model_dump_json(exclude_none=True).encode()
    req = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json", **headers}
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return resp.status, resp.headers.get("Content-Type"), resp.read()


def plain(value):
    arr = np.asarray(value)
    values = arr.tolist()
    if arr.dtype == object:
        flat = [v.decode() if isinstance(v, bytes) else v for v in arr.ravel().tolist()]
        values = np.asarray(flat, dtype=object).reshape(arr.shape).tolist()
    return {"dtype": str(arr.dtype), "shape": list(arr.shape), "values": values}


results = {}
for case in json.load(sys.stdin):
    url = case["url"]
    if case["codec"] == "pandas":
        columns = case["frame"].items()
        frame = pd.DataFrame({c: pd.Series(v, dtype=case["dtypes"][c]) for c, v in columns})
        request = PandasCodec.encode_request(frame)
    elif case["codec"] == "numpy_request":
        request = NumpyRequestCodec.encode_request(np.asarray(case["array"], case["dtype"]))
    else:  # numpy inputs by hand, with named outputs
        dt = case["dtype"]
        request = InferenceRequest(
            inputs=[NumpyCodec.encode_input(case["input"], np.asarray(case["array"], dt))],
            outputs=[{"name": name} for name in case["outputs"]],
        )
    if case.get("parameters"):
        request.parameters = Parameters(**request.parameters.model_dump(), **case["parameters"])
    request = InferenceRequest.model_validate(request.model_dump())  # what a user would send
    status, content_type, raw = post(url, case.get("headers", {}), request)
    response = InferenceResponse.model_validate_json(raw)
    out = {
        "status": status,
        "content_type": content_type,
        "model_name": response.model_name,
        "outputs": {o.name: plain(NumpyCodec.decode_output(o)) for o in response.outputs},
    }
    if case["codec"] == "pandas":
        frame = PandasCodec.decode_response(response)
        out["frame"] = {c: plain(frame[c].to_numpy()) for c in frame.columns}
    if case["codec"] == "numpy_request":
        out["array"] = plain(NumpyRequestCodec.decode_response(response))
    results[case["name"]] = out
json.dump(results, sys.stdout)
'''


# ---------------------------------------------------------------------------- the peer venv
@pytest.fixture(scope="session")
def mlserver_venv() -> Path:
    """The cached venv with mlserver==1.7.1 (tests/serving/peers.py)."""
    return peer_venv(
        f"mlserver-{MLSERVER_VERSION}",
        f"mlserver=={MLSERVER_VERSION}",
        imports=("mlserver.codecs",),
    )


# ---------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def in_process(model_dirs: dict[str, Path]):
    import mlflow.pyfunc

    return {n: mlflow.pyfunc.load_model(str(model_dirs[n])) for n in ("sk", "torch", "echo")}


def sk_frame(n: int = 5) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "a": np.linspace(-1.0, 2.0, n),
            "b": np.linspace(3.0, -2.0, n),
            "c": np.arange(n, dtype=np.int64) % 3,
        }
    )


def torch_rows() -> np.ndarray:
    return np.random.default_rng(3).normal(size=(4, 4)).astype(np.float32)


def infer_url(server: Server, model: str) -> str:
    return f"{server.url}/v2/models/{model}/infer"


def model_name(server: Server) -> str:
    import httpx

    answer = httpx.get(server.url + "/model/info", headers={"X-API-Key": API_KEY}, timeout=10)
    answer.raise_for_status()
    return answer.json()["name"]


def run_codecs(venv: Path, cases: list[dict]) -> dict:
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", CODEC_SCRIPT],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        env=peer_env(),
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"MLServer codec script failed:\n{done.stderr[-4000:]}"
    return json.loads(done.stdout)


def frame_case(name: str, url: str, frame: pd.DataFrame, **extra: object) -> dict:
    """Strings travel as `object` columns: MLServer 1.7.1's codecs know no pandas 3 `str` dtype."""
    columns = {c: frame[c].tolist() for c in frame.columns}
    dtypes = {c: "object" if frame[c].dtype.kind in "OT" else str(frame[c].dtype) for c in frame}
    return {
        "name": name,
        "url": url,
        "codec": "pandas",
        "frame": columns,
        "dtypes": dtypes,
        **extra,
    }


# ---------------------------------------------------------------------------- (a) codecs
def test_mlserver_codecs_round_trip(
    mlserver_venv: Path,
    sk_server: Server,
    torch_server: Server,
    echo_server: Server,
    in_process: dict,
) -> None:
    """Requests built by MLServer's codecs, answers decoded by them, equal to in-process."""
    frame = sk_frame()
    rows = torch_rows()
    sk_name, torch_name, echo_name = (model_name(s) for s in (sk_server, torch_server, echo_server))
    echo_frame = pd.DataFrame({"x": [0.5, 1.5, -3.0]})
    cases = [
        frame_case("sk_pandas", infer_url(sk_server, sk_name), frame),
        frame_case(
            "echo_pandas",
            infer_url(echo_server, echo_name),
            echo_frame,
            headers={"X-API-Key": API_KEY},
        ),
        {
            "name": "torch_numpy_request",
            "url": infer_url(torch_server, torch_name),
            "codec": "numpy_request",
            "array": rows.tolist(),
            "dtype": "float32",
        },
        {
            "name": "torch_numpy_named_output",
            "url": infer_url(torch_server, torch_name),
            "codec": "numpy_input",
            "input": "input-0",
            "array": rows.tolist(),
            "dtype": "float32",
            "outputs": ["output-0"],
        },
    ]
    got = run_codecs(mlserver_venv, cases)

    sk = got["sk_pandas"]
    assert sk["status"] == 200 and sk["model_name"] == sk_name
    want_sk = np.asarray(in_process["sk"].predict(frame))
    (sk_out,) = sk["outputs"].values()
    assert sk_out["shape"] == [len(frame)]
    np.testing.assert_array_equal(np.asarray(sk_out["values"]), want_sk)
    (sk_col,) = sk["frame"].values()
    np.testing.assert_array_equal(np.asarray(sk_col["values"]), want_sk)

    echo = got["echo_pandas"]
    want_echo = in_process["echo"].predict(echo_frame)
    assert list(echo["frame"]) == list(want_echo.columns) == ["y", "x"]
    for column in want_echo.columns:
        assert echo["frame"][column]["dtype"] == "float64"
        np.testing.assert_array_equal(echo["frame"][column]["values"], want_echo[column])

    want_torch = np.asarray(in_process["torch"].predict(rows))
    array = got["torch_numpy_request"]["array"]
    assert array["dtype"] == "float32" and array["shape"] == list(want_torch.shape)
    np.testing.assert_allclose(array["values"], want_torch, rtol=1e-5, atol=1e-6)
    named = got["torch_numpy_named_output"]["outputs"]
    assert list(named) == ["output-0"]
    np.testing.assert_allclose(named["output-0"]["values"], want_torch, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def typed_server(model_dirs: dict[str, Path], tmp_path_factory) -> Iterator[Server]:
    """The `typed` model (datetime, INT32 and FP32 columns; params alpha, tags)."""
    specs = {"typed": (model_dirs["typed"], {"SERVING_MAX_BATCH_DELAY_MS": "0"})}
    with running(specs, tmp_path_factory.mktemp("mlserver-peer")) as started:
        yield started["typed"]


def test_mlserver_codecs_strings_and_parameters(
    mlserver_venv: Path, typed_server: Server, model_dirs: dict[str, Path]
) -> None:
    """PandasCodec's BYTES column (`content_type: str`), INT32 and FP32 columns, and request
    parameters beside MLServer's own `content_type: pd`: the model gets `alpha`, and MLServer's
    reserved parameter is the protocol's, never a model parameter."""
    import mlflow.pyfunc

    frame = pd.DataFrame(
        {
            "when": pd.Series(["2024-01-02T03:04:05", "1999-12-31T23:59:59"], dtype=object),
            "n": np.array([7, -2], dtype=np.int32),
            "f": np.array([0.25, 1.5], dtype=np.float32),
        }
    )
    name = model_name(typed_server)
    got = run_codecs(
        mlserver_venv,
        [frame_case("typed", infer_url(typed_server, name), frame, parameters={"alpha": 3.5})],
    )["typed"]
    model = mlflow.pyfunc.load_model(str(model_dirs["typed"]))
    want = model.predict(frame.assign(when=pd.to_datetime(frame["when"])), params={"alpha": 3.5})
    assert got["status"] == 200
    assert list(got["frame"]) == list(want.columns)
    assert got["frame"]["when"]["values"] == list(want["when"])
    assert got["frame"]["alpha"]["values"] == [3.5, 3.5]
    assert got["frame"]["n"]["values"] == [7, -2]
    assert got["frame"]["f"]["values"] == [0.25, 1.5]
    # MLflow logs each parameter it does not know: `content_type` must never reach the model
    assert "content_type" not in typed_server.log()


# ---------------------------------------------------------------------------- (b) mlserver infer
def run_mlserver_infer(venv: Path, server: Server, model: str, requests: list[dict], tmp: Path):
    """`mlserver infer` with its defaults (REST, JSON, 10 workers, batch size 1, 3 retries)."""
    source = tmp / f"{model}-in.jsonl"
    target = tmp / f"{model}-out.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in requests))
    done = subprocess.run(
        [
            str(venv / "bin" / "mlserver"),
            "infer",
            "--url",
            server.url.removeprefix("http://"),
            "--model-name",
            model,
            "--input-data-path",
            str(source),
            "--output-data-path",
            str(target),
            "-H",
            f"X-API-Key: {API_KEY}",
        ],
        capture_output=True,
        text=True,
        env=peer_env(),
        timeout=300,
        check=False,
    )
    said = done.stdout + done.stderr
    assert done.returncode == 0, f"mlserver infer failed:\n{said[-4000:]}"
    lines = [json.loads(line) for line in target.read_text().splitlines() if line.strip()]
    assert len(lines) == len(requests), said[-4000:]
    # answers come back in completion order; batch_index says which input line each answers
    return {line["parameters"]["batch_index"]: line for line in lines}


def column_request(frame: pd.DataFrame, request_id: str) -> dict:
    datatypes = {"float64": "FP64", "int64": "INT64"}
    return {
        "id": request_id,
        "inputs": [
            {
                "name": c,
                "shape": [len(frame)],
                "datatype": datatypes[str(frame[c].dtype)],
                "data": frame[c].tolist(),
            }
            for c in frame.columns
        ],
    }


def test_mlserver_infer_cli(
    mlserver_venv: Path,
    sk_server: Server,
    torch_server: Server,
    in_process: dict,
    tmp_path: Path,
) -> None:
    """`mlserver infer` (tritonclient.http.aio underneath) reads v2 requests, one per line, and
    writes the answers; column inputs (sklearn) and a tensor input (torch)."""
    frames = [sk_frame(3), sk_frame(5), sk_frame(2).assign(c=np.array([4, 1]))]
    sk_name = model_name(sk_server)
    wrong = column_request(sk_frame(2).rename(columns={"c": "cc"}), "sk-wrong")
    answers = run_mlserver_infer(
        mlserver_venv,
        sk_server,
        sk_name,
        [*(column_request(f, f"sk-{i}") for i, f in enumerate(frames)), wrong],
        tmp_path,
    )
    # our 4xx is the protocol's {"error": ...}: the client reports its message, per line
    assert "cc" in answers[len(frames)]["error"]["msg"]
    for index, frame in enumerate(frames):
        answer = answers[index]
        assert "error" not in answer, answer
        assert answer["model_name"] == sk_name
        (output,) = answer["outputs"]
        # MLServer re-encodes what tritonclient decoded with its NumpyCodec: [N] becomes [N, 1]
        assert output["shape"] == [len(frame), 1]
        want = np.asarray(in_process["sk"].predict(frame))
        np.testing.assert_array_equal(np.asarray(output["data"]).reshape(want.shape), want)

    batches = [torch_rows(), torch_rows()[:1] * 2]
    torch_name = model_name(torch_server)
    answers = run_mlserver_infer(
        mlserver_venv,
        torch_server,
        torch_name,
        [
            {
                "inputs": [
                    {
                        "name": "input-0",
                        "shape": list(b.shape),
                        "datatype": "FP32",
                        "data": b.ravel().tolist(),
                    }
                ]
            }
            for b in batches
        ],
        tmp_path,
    )
    for index, rows in enumerate(batches):
        assert "error" not in answers[index], answers[index]
        (output,) = answers[index]["outputs"]
        want = np.asarray(in_process["torch"].predict(rows))
        assert output["datatype"] == "FP32" and output["shape"] == list(want.shape)
        np.testing.assert_allclose(
            np.asarray(output["data"]).reshape(want.shape), want, rtol=1e-5, atol=1e-6
        )
