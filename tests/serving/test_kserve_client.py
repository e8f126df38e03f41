"""KServe 0.21's v2 REST client (`kserve.InferenceRESTClient`) as a client of `python -m serving`.

KServe cannot be installed beside the dev stack (`pip install kserve==0.21.0` downgrades pandas 3
to 2 and protobuf 7 to 6), so it lives in a peer venv of its own (tests/serving/peers.py: made
once by pip, cached under `~/.cache/ztml-test-peers/kserve-0.21.0`, fails in CI when it cannot be
made). Its python runs `CLIENT_SCRIPT`: `RESTConfig(protocol="v2")` and otherwise the client's
defaults, `is_server_ready`, `is_model_ready` and `infer` with inputs set by
`InferInput.set_data_from_numpy` (binary tensor data by default: a JSON header, the raw bytes,
`Inference-Header-Content-Length`, labelled `application/octet-stream`). The answers are compared
with the same models loaded in-process by `mlflow.pyfunc`.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.serving.peers import peer_env, peer_python, peer_venv

if TYPE_CHECKING:
    from tests.serving.conftest import Server

pytestmark = pytest.mark.slow

KSERVE_VERSION = "0.21.0"

CLIENT_SCRIPT = r'''
"""Runs in KServe's venv: stdin = cases as JSON, stdout = what the client returned, as JSON."""
import asyncio
import json
import sys

import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput


def plain(output):
    arr = output.as_numpy()
    return {
        "name": output.name,
        "datatype": output.datatype,
        "shape": list(arr.shape),
        "dtype": str(arr.dtype),
        "values": arr.tolist(),
    }


async def main(cases):
    client = InferenceRESTClient(RESTConfig(protocol="v2"))  # every other setting: defaults
    results = {}
    try:
        for case in cases:
            base, model = case["base_url"], case["model"]
            inputs = []
            for spec in case["inputs"]:
                array = np.asarray(spec["values"], dtype=spec["dtype"])
                infer_input = InferInput(spec["name"], list(array.shape), spec["datatype"])
                infer_input.set_data_from_numpy(array)  # binary_data=True: the default
                inputs.append(infer_input)
            outputs = [RequestedOutput(n, {"binary_data": True}) for n in case.get("binary", [])]
            request = InferRequest(
                model, inputs, request_id=case["name"], request_outputs=outputs or None
            )
            headers = {}
            response = await client.infer(
                base, request, model_name=model, response_headers=headers
            )
            results[case["name"]] = {
                "server_ready": await client.is_server_ready(base),
                "model_ready": await client.is_model_ready(base, model),
                "unknown_model_ready": await client.is_model_ready(base, model + "-nope"),
                "model_name": response.model_name,
                "id": response.id,
                "outputs": [plain(o) for o in response.outputs],
                # the client decodes binary outputs into numpy: its headers say which came
                "binary_header": "inference-header-content-length" in headers,
            }
    finally:
        await client.close()
    return results


json.dump(asyncio.run(main(json.load(sys.stdin))), sys.stdout)
'''


@pytest.fixture(scope="session")
def kserve_venv() -> Path:
    """The cached venv with kserve==0.21.0 (its REST client pulls no ray or torch: ~40 s)."""
    return peer_venv(
        f"kserve-{KSERVE_VERSION}",
        f"kserve=={KSERVE_VERSION}",
        imports=("kserve", "kserve.protocol.infer_type"),
    )


@pytest.fixture(scope="module")
def in_process(model_dirs: dict[str, Path]):
    import mlflow.pyfunc

    return {n: mlflow.pyfunc.load_model(str(model_dirs[n])) for n in ("sk", "torch")}


def model_name(server: Server) -> str:
    answer = httpx.get(server.url + "/model/info", timeout=10)
    answer.raise_for_status()
    return answer.json()["name"]


def run_client(venv: Path, cases: list[dict]) -> dict:
    done = subprocess.run(
        [peer_python(venv), "-c", CLIENT_SCRIPT],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        env=peer_env(),
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"KServe client script failed:\n{done.stderr[-4000:]}"
    return json.loads(done.stdout)


def column(name: str, values: np.ndarray) -> dict:
    datatype = {"float64": "FP64", "int64": "INT64", "float32": "FP32"}[str(values.dtype)]
    return {
        "name": name,
        "datatype": datatype,
        "dtype": str(values.dtype),
        "values": values.tolist(),
    }


def test_kserve_rest_client_defaults(
    kserve_venv: Path, sk_server: Server, torch_server: Server, in_process: dict
) -> None:
    """Readiness, and `infer` with binary inputs (the client's default) on a column model
    (sklearn) and a tensor model (torch), JSON and binary outputs: equal to in-process."""
    frame = pd.DataFrame(
        {
            "a": np.linspace(-1.0, 2.0, 5),
            "b": np.linspace(3.0, -2.0, 5),
            "c": np.arange(5, dtype=np.int64) % 3,
        }
    )
    rows = np.random.default_rng(3).normal(size=(4, 4)).astype(np.float32)
    sk_name, torch_name = model_name(sk_server), model_name(torch_server)
    sk_inputs = [column(c, frame[c].to_numpy()) for c in frame.columns]
    torch_inputs = [column("input-0", rows)]
    got = run_client(
        kserve_venv,
        [
            {"name": "sk", "base_url": sk_server.url, "model": sk_name, "inputs": sk_inputs},
            {
                "name": "torch",
                "base_url": torch_server.url,
                "model": torch_name,
                "inputs": torch_inputs,
            },
            {
                "name": "torch_binary_out",
                "base_url": torch_server.url,
                "model": torch_name,
                "inputs": torch_inputs,
                "binary": ["output-0"],
            },
        ],
    )

    sk = got["sk"]
    assert sk["server_ready"] is True and sk["model_ready"] is True
    assert sk["unknown_model_ready"] is False
    assert sk["model_name"] == sk_name and sk["id"] == "sk"
    (sk_out,) = sk["outputs"]
    want_sk = np.asarray(in_process["sk"].predict(frame))
    assert sk_out["shape"] == list(want_sk.shape) and not sk["binary_header"]
    np.testing.assert_array_equal(np.asarray(sk_out["values"]), want_sk)

    want_torch = np.asarray(in_process["torch"].predict(rows))
    for case, binary in (("torch", False), ("torch_binary_out", True)):
        answer = got[case]
        assert answer["model_name"] == torch_name and answer["model_ready"] is True
        (out,) = answer["outputs"]
        assert out["name"] == "output-0" and answer["binary_header"] is binary
        assert out["datatype"] == "FP32" and out["dtype"] == "float32"
        assert out["shape"] == list(want_torch.shape)
        np.testing.assert_allclose(out["values"], want_torch, rtol=1e-5, atol=1e-6)
