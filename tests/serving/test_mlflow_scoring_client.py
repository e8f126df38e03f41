"""MLflow 3.17's own `ScoringServerClient` (what MLflow tooling uses to wait for and call a
scoring server) against a real `python -m serving`, with its default settings; and the content
types MLflow's `/invocations` reads (Parquet included). Predictions are compared with the same
model loaded in-process."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np
import pandas as pd
import pytest
from mlflow.pyfunc.scoring_server import CONTENT_TYPE_PARQUET
from mlflow.pyfunc.scoring_server.client import ScoringServerClient

if TYPE_CHECKING:
    from conftest import Server

pytestmark = pytest.mark.slow


def scoring_client(server: Server) -> ScoringServerClient:
    return ScoringServerClient("127.0.0.1", server.port)


def frame(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "a": np.linspace(-1.0, 2.0, n),
            "b": np.linspace(3.0, -2.0, n),
            "c": np.arange(n, dtype=np.int64) % 3,
        }
    )


@pytest.fixture(scope="module")
def sk_model(model_dirs: dict[str, Path]):
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(str(model_dirs["sk"]))


def test_ping_version_and_wait(sk_server: Server) -> None:
    client = scoring_client(sk_server)
    client.wait_server_ready(timeout=10)
    client.ping()
    assert client.get_version() == metadata.version("mlflow")


def test_invoke_matches_in_process(sk_server: Server, sk_model) -> None:
    data = frame()
    response = scoring_client(sk_server).invoke(data)
    got = np.asarray(response.get_predictions(predictions_format="ndarray")).reshape(-1)
    np.testing.assert_array_equal(got, sk_model.predict(data))


def test_invoke_tensor_model(torch_server: Server, model_dirs: dict[str, Path]) -> None:
    import mlflow.pyfunc

    x = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    response = scoring_client(torch_server).invoke(x)
    got = np.asarray(response.get_predictions(predictions_format="ndarray"))
    expected = mlflow.pyfunc.load_model(str(model_dirs["torch"])).predict(x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_invocations_parquet(sk_server: Server, sk_model) -> None:
    data = frame(4)
    res = httpx.post(
        sk_server.url + "/invocations",
        content=data.to_parquet(),
        headers={"content-type": CONTENT_TYPE_PARQUET},
    )
    assert res.status_code == 200, res.text
    assert res.json()["predictions"] == sk_model.predict(data).tolist()


def test_invocations_parquet_garbage_is_refused(sk_server: Server) -> None:
    res = httpx.post(
        sk_server.url + "/invocations",
        content=b"not parquet",
        headers={"content-type": CONTENT_TYPE_PARQUET},
    )
    assert res.status_code == 422 and "Parquet" in res.json()["message"]


def test_wait_server_ready_reports_a_failed_start(
    tmp_path: Path, model_dirs: dict[str, Path]
) -> None:
    """A model that never loads: /ping never says 200 and the server exits non-zero, which
    MLflow's wait_server_ready reports as the process' exit instead of waiting out its timeout."""
    from tests.serving.conftest import Server as ServerProcess

    server = ServerProcess("broken", str(tmp_path / "missing-model"), tmp_path)
    try:
        with pytest.raises(RuntimeError, match=r"returncode"):
            scoring_client(server).wait_server_ready(timeout=60, scoring_server_proc=server.proc)
    finally:
        server.stop()


def test_ping_is_503_while_loading() -> None:
    """Before the model is loaded and warm, /ping says 503 (MLflow says 404: ztml keeps 404 for
    "no such thing"), so ScoringServerClient.ping fails and wait_server_ready keeps polling."""
    from starlette.testclient import TestClient

    from serving.app import create_app
    from serving.config import Settings

    client = TestClient(create_app(Settings(model_uri="unused")))  # no lifespan: never loads
    res = client.get("/ping")
    assert res.status_code == 503 and res.text == "\n"
    assert client.get("/version").status_code == 200
