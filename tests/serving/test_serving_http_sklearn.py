"""Column-based (sklearn) model over HTTP, batching off: MLflow formats, CSV, v2 columns,
signature checks, /model/info labels and metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from conftest import Server

pytestmark = pytest.mark.slow

RECORDS = [{"a": 1.0, "b": 2.0, "c": 3}, {"a": -4.0, "b": -1.5, "c": 0}]


def post(server: Server, path: str, body: object, **kw) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=30, **kw)


def test_health_ready_info(sk_server: Server) -> None:
    assert httpx.get(sk_server.url + "/health").json() == {"status": "ok"}
    assert httpx.get(sk_server.url + "/v2/health/live").json() == {"live": True}
    assert httpx.get(sk_server.url + "/v2/health/ready").status_code == 200
    info = httpx.get(sk_server.url + "/model/info").json()
    assert (info["name"], info["version"]) == ("iris", "7")
    assert info["image_digest"] == "sha256:" + "ab" * 32
    assert info["flavor"] == "sklearn" and info["predictor"] == "SklearnPredictor"
    assert [c["name"] for c in info["signature"]["inputs"]] == ["a", "b", "c"]
    assert info["input_example"]["dataframe_split"]["columns"] == ["a", "b", "c"]
    assert info["loaded_at"].endswith("+00:00")
    assert info["server"]["max_batch_delay_ms"] == 0


def test_all_formats_same_answer(sk_server: Server) -> None:
    expected = post(sk_server, "/predict", {"inputs": RECORDS}).json()
    assert expected["model"] == {"name": "iris", "version": "7"}
    preds = expected["predictions"]
    assert preds == [1, 0]
    columns = {k: [r[k] for r in RECORDS] for k in "abc"}
    split = {"columns": ["a", "b", "c"], "data": [[r[k] for k in "abc"] for r in RECORDS]}
    bodies = [
        {"inputs": columns},
        {"dataframe_split": split},
        {"dataframe_records": RECORDS},
        {"instances": RECORDS},
    ]
    for body in bodies:
        for path in ("/predict", "/invocations"):
            res = post(sk_server, path, body)
            assert res.status_code == 200, (path, body, res.text)
            assert res.json()["predictions"] == preds
    csv = "a,b,c\n1.0,2.0,3\n-4.0,-1.5,0\n"
    res = httpx.post(
        sk_server.url + "/invocations", content=csv, headers={"content-type": "text/csv"}
    )
    assert res.json() == {"predictions": preds}
    one = post(sk_server, "/predict", {"inputs": RECORDS[0]})
    assert one.json()["predictions"] == preds[:1]


def test_v2_columns(sk_server: Server) -> None:
    body = {
        "inputs": [
            {"name": "a", "shape": [2], "datatype": "FP64", "data": [1.0, -4.0]},
            {"name": "b", "shape": [2, 1], "datatype": "FP64", "data": [[2.0], [-1.5]]},
            {"name": "c", "shape": [2], "datatype": "INT64", "data": [3, 0]},
        ]
    }
    res = post(sk_server, "/v2/models/iris/infer", body)
    assert res.status_code == 200, res.text
    out = res.json()
    assert (out["model_name"], out["model_version"]) == ("iris", "7")
    assert out["outputs"][0]["data"] == [1, 0] and out["outputs"][0]["datatype"] == "INT64"
    assert post(sk_server, "/v2/models/iris/versions/7/infer", body).status_code == 200
    assert post(sk_server, "/v2/models/iris/versions/8/infer", body).status_code == 404
    missing = post(sk_server, "/v2/models/nope/infer", body)
    assert missing.status_code == 404 and "iris" in missing.json()["error"]
    bad = {"inputs": [*body["inputs"][:2], {**body["inputs"][2], "data": [3.5, 0.5]}]}
    res = post(sk_server, "/v2/models/iris/infer", bad)
    assert res.status_code == 422 and res.json()["field"] == "c"
    meta = httpx.get(sk_server.url + "/v2/models/iris").json()
    assert [i["name"] for i in meta["inputs"]] == ["a", "b", "c"]
    assert meta["inputs"][2]["datatype"] == "INT64" and meta["versions"] == ["7"]
    assert httpx.get(sk_server.url + "/v2/models/iris/ready").json()["ready"] is True
    assert httpx.get(sk_server.url + "/v2").json()["name"] == "ztml-serving"


@pytest.mark.parametrize(
    ("body", "field", "needle"),
    [
        ({"inputs": [{"a": 1.0, "b": 2.0}]}, "c", "missing required column"),
        ({"inputs": [{"a": 1.0, "b": 2.0, "c": 1, "zz": 1}]}, "zz", "unknown column"),
        ({"inputs": [{"a": "x", "b": 2.0, "c": 1}]}, "a", "expected double, got str"),
        ({"inputs": [{"a": 1.0, "b": 2.0, "c": 1.5}]}, "c", "expected long"),
        ({"inputs": [{"a": True, "b": 2.0, "c": 1}]}, "a", "expected double, got bool"),
        (
            {"dataframe_records": [{"a": 1.0, "b": 2.0, "c": 1}, {"a": 1.0, "b": 2.0}]},
            "c",
            "missing required column",
        ),
        (
            {"dataframe_split": {"columns": ["a", "b", "c"], "data": [[1.0, 2.0]]}},
            "dataframe_split.data",
            "3 values",
        ),
        ({"inputs": {"a": [1.0, 2.0], "b": [1.0], "c": [1, 2]}}, "inputs", "different lengths"),
        ({"inputs": [[1.0, 2.0, 3]]}, "inputs", "named columns"),
        ({"data": [1]}, None, "exactly one of"),
    ],
)
def test_column_validation(sk_server: Server, body: object, field: str, needle: str) -> None:
    res = post(sk_server, "/predict", body)
    assert res.status_code == 422, res.text
    payload = res.json()
    assert needle in payload["message"]
    assert payload.get("field") == field
    assert payload["error_code"] == "INVALID_PARAMETER_VALUE"


def test_bad_bodies(sk_server: Server) -> None:
    res = httpx.post(
        sk_server.url + "/predict",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert res.status_code == 400 and "not valid JSON" in res.json()["message"]
    res = httpx.post(
        sk_server.url + "/predict", content=b"a=1", headers={"content-type": "text/plain"}
    )
    assert res.status_code == 415
    res = httpx.post(
        sk_server.url + "/predict", content=b"", headers={"content-type": "application/json"}
    )
    assert res.status_code == 400
    assert httpx.get(sk_server.url + "/predict").status_code == 405


def test_metrics_move(sk_server: Server, read_metric) -> None:
    before = httpx.get(sk_server.url + "/metrics").text
    assert post(sk_server, "/predict", {"inputs": RECORDS}).status_code == 200
    assert post(sk_server, "/predict", {"inputs": [{"a": 1}]}).status_code == 422
    after = httpx.get(sk_server.url + "/metrics").text

    def delta(name: str, **labels: str) -> float:
        return read_metric(after, name, **labels) - read_metric(before, name, **labels)

    assert delta("inference_requests_total", endpoint="/predict", status="200") == 1
    assert delta("inference_requests_total", endpoint="/predict", status="422") == 1
    assert delta("inference_predictions_total") == 2
    assert delta("inference_errors_total", kind="validation") == 1
    assert delta("inference_latency_seconds_count", endpoint="/predict") == 2
    assert delta("inference_batch_size_count") == 1 and delta("inference_batch_size_sum") == 2
    assert read_metric(after, "inference_model_info", name="iris", version="7") == 1
    assert read_metric(after, "inference_model_ready") == 1
    assert "process_resident_memory_bytes" in after
