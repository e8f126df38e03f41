"""Client mistakes are 4xx naming the field, never 500; values are never silently changed.

Against real servers: the session's `sk` server (a: double, b: double, c: long; no params), a
`typed` server (conftest: when datetime, n integer (int32), f float (float32); params alpha
double, tags string list) and a `binary` server (blob binary, with an input example whose base64
MLflow wrote with line breaks).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serving.conftest import TYPED_BLOB, Server, wait_ready

pytestmark = pytest.mark.slow
ROW = {"a": 1.0, "b": 2.0, "c": 3}


@pytest.fixture(scope="module")
def typed_servers(model_dirs: dict[str, Path], tmp_path_factory) -> Iterator[dict[str, Server]]:
    """Both started at once; each test fails on its own server only."""
    tmp = tmp_path_factory.mktemp("typed")
    servers = {
        name: Server(name, str(model_dirs[name]), tmp, {"SERVING_MAX_BATCH_DELAY_MS": "0"})
        for name in ("typed", "binary")
    }
    try:
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(scope="module")
def typed_server(typed_servers: dict[str, Server]) -> Server:
    wait_ready([typed_servers["typed"]])
    return typed_servers["typed"]


@pytest.fixture(scope="module")
def binary_server(typed_servers: dict[str, Server]) -> Server:
    wait_ready([typed_servers["binary"]])  # the old server failed its warm-up (base64 "\n")
    return typed_servers["binary"]


def post(server: Server, path: str, body: object) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=30)


def assert_refused(res: httpx.Response, field: str, *words: str, status: int = 422) -> None:
    assert res.status_code == status, res.text
    body = res.json()
    message = body.get("message") or body.get("error")
    assert body["field"] == field, body
    for word in words:
        assert word in message, (word, message)


def v2_inputs(**columns: tuple[object, object, list]) -> dict:
    """`name=(datatype, shape, data)` -> an OIP v2 infer body."""
    return {
        "inputs": [
            {"name": name, "datatype": datatype, "shape": shape, "data": data}
            for name, (datatype, shape, data) in columns.items()
        ]
    }


def sk_v2(**overrides: tuple[object, object, list]) -> dict:
    """A v2 body for the sk model (a, b: FP64, c: INT64, one row), some inputs replaced."""
    columns = {"a": ("FP64", [1], [1.0]), "b": ("FP64", [1], [2.0]), "c": ("INT64", [1], [3])}
    return v2_inputs(**{**columns, **overrides})


# ---------------------------------------------------------------------- wrong JSON types -> 422
@pytest.mark.parametrize("datatype", [["FP64"], {"t": "FP64"}, 64, None, "FLOAT"])
def test_v2_datatype_of_the_wrong_type(sk_server: Server, datatype) -> None:
    """A list or object as datatype was a 500 (TypeError: unhashable) in the old server."""
    res = post(sk_server, "/v2/models/iris/infer", sk_v2(a=(datatype, [1], [1.0])))
    assert_refused(res, "a", "datatype must be one of")


@pytest.mark.parametrize("shape", [[True], "1", [1.0], {"n": 1}, [-1], None, [[1]]])
def test_v2_shape_of_the_wrong_type(sk_server: Server, shape) -> None:
    """[true] as shape was a 500 (TypeError) in the old server."""
    res = post(sk_server, "/v2/models/iris/infer", sk_v2(a=("FP64", shape, [1.0])))
    assert_refused(res, "a", "shape must be a list")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/invocations", {"dataframe_records": [{**ROW, "a": None}]}),
        ("/invocations", {"dataframe_split": {"columns": list(ROW), "data": [[None, 2, 3]]}}),
        ("/predict", {"inputs": {"a": [1.0, None], "b": [1.0, 2.0], "c": [1, 2]}}),
        ("/v2/models/iris/infer", sk_v2(a=("BYTES", [1], [None]))),
    ],
)
def test_null_in_a_required_column(sk_server: Server, path: str, body: dict) -> None:
    """The old server sent NaN to the model (500: "Input X contains NaN")."""
    assert_refused(post(sk_server, path, body), "a", "a value is required")


@pytest.mark.parametrize(
    ("csv", "field"), [("a,b,c\n,2.0,3\n", "a"), ("a,b,c\n1.0,2.0,\n1.0,2.0,3\n", "c")]
)
def test_empty_csv_cell_in_a_required_column(sk_server: Server, csv: str, field: str) -> None:
    res = httpx.post(
        sk_server.url + "/invocations", content=csv, headers={"content-type": "text/csv"}
    )
    assert_refused(res, field, "a value is required", "row 0")


@pytest.mark.parametrize("params", [[1], "alpha", 3, True])
def test_params_that_are_not_an_object(sk_server: Server, params) -> None:
    """`parameters: [1]` was silently dropped on v2 by the old server."""
    res = post(sk_server, "/invocations", {"dataframe_records": [ROW], "params": params})
    assert_refused(res, "params", "params must be an object")
    res = post(sk_server, "/v2/models/iris/infer", {**sk_v2(), "parameters": params})
    assert_refused(res, "parameters", "parameters must be an object")


def test_params_nested_too_deep(sk_server: Server, typed_server: Server) -> None:
    deep: object = 1.0
    for _ in range(40):
        deep = [deep]
    res = post(sk_server, "/invocations", {"dataframe_records": [ROW], "params": {"p": deep}})
    assert_refused(res, "params.p", "nested more than 32 levels")
    res = post(typed_server, "/invocations", typed_body(params={"tags": deep}))
    assert_refused(res, "params.tags", "nested more than 32 levels")  # the old server: 500


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({"alpha": "abc"}, "params.alpha", ["expected a double value", "str 'abc'"]),
        ({"alpha": True}, "params.alpha", ["expected a double value"]),
        ({"alpha": [[1]]}, "params.alpha", ["expected a double value"]),
        ({"tags": "a"}, "params.tags", ["expected a list of string values"]),
        ({"tags": ["a", 1]}, "params.tags", ["expected a list of string values"]),
    ],
)
def test_params_of_the_wrong_type(typed_server: Server, params, field, words) -> None:
    """The old server answered 500 (MLflow's MlflowException from inside the model call)."""
    assert_refused(post(typed_server, "/invocations", typed_body(params=params)), field, *words)


def test_v2_parameters_are_checked_too(typed_server: Server) -> None:
    url = "/v2/models/typed/infer"
    res = post(typed_server, url, {**typed_v2(), "parameters": {"alpha": "x"}})
    assert_refused(res, "parameters.alpha", "expected a double value")
    ok = post(typed_server, url, {**typed_v2(), "parameters": {"alpha": 4}})
    assert ok.status_code == 200, ok.text
    assert {o["name"]: o["data"] for o in ok.json()["outputs"]}["alpha"] == [4.0]


# ---------------------------------------------------------------------- values never changed
V2_LIMITS = [
    ("INT8", -128, 127),
    ("INT16", -(2**15), 2**15 - 1),
    ("INT32", -(2**31), 2**31 - 1),
    ("INT64", -(2**63), 2**63 - 1),
    ("UINT8", 0, 255),
    ("UINT16", 0, 2**16 - 1),
    ("UINT32", 0, 2**32 - 1),
    ("UINT64", 0, 2**64 - 1),
]


@pytest.mark.parametrize(("datatype", "low", "high"), V2_LIMITS)
def test_v2_integers_outside_the_datatype_range(sk_server: Server, datatype, low, high) -> None:
    """INT8 300 became 44 and UINT8 -1 became 255 in the old server, answered with 200."""
    width = datatype.lower()
    for value in (low - 1, high + 1):
        res = post(sk_server, "/v2/models/iris/infer", sk_v2(c=(datatype, [1], [value])))
        # beyond 64 bits JSON parsers hand over a float: the message then shows the float
        shown = [str(value)] if "64" not in datatype else []
        assert_refused(res, "c", f"out of range for {width}", f"{low} to {high}", *shown)
    if high < 2**63:  # the limits themselves pass unchanged (c is a long column)
        body = sk_v2(
            a=("FP64", [2], [1.0, 1.0]), b=("FP64", [2], [2.0, 2.0]), c=(datatype, [2], [low, high])
        )
        assert post(sk_server, "/v2/models/iris/infer", body).status_code == 200


@pytest.mark.parametrize(
    ("datatype", "value", "words"),
    [
        ("FP16", 70000.0, ["out of range for float16", "65504"]),
        ("FP32", 1e39, ["out of range for float32", "3.40282e+38"]),
    ],
)
def test_v2_floats_that_overflow_the_datatype(sk_server: Server, datatype, value, words) -> None:
    """FP16 70000 became inf in the old server."""
    res = post(sk_server, "/v2/models/iris/infer", sk_v2(a=(datatype, [1], [value])))
    assert_refused(res, "a", *words)


def test_v2_bool_is_true_false_or_0_1(sk_server: Server) -> None:
    res = post(sk_server, "/v2/models/iris/infer", sk_v2(c=("BOOL", [1], [2])))
    assert_refused(res, "c", "out of range for bool")


@pytest.mark.parametrize(
    ("column", "value", "words"),
    [
        ("when", "1500-01-01", ["'1500-01-01'", "1677-09-21", "2262-04-11"]),
        ("when", "2262-04-12", ["out of range for datetime64[ns]"]),
        ("n", 2**31, ["2147483648", "-2147483648 to 2147483647"]),
        ("n", 3e9, ["out of range for int32"]),
        ("f", 1e39, ["out of range for float32"]),
    ],
)
def test_column_values_outside_the_model_dtype(typed_server: Server, column, value, words) -> None:
    """1500-01-01 reached the model as 2084-07-20; 3e9 as int32 and 1e39 as float32 were
    garbage and inf."""
    res = post(typed_server, "/invocations", typed_body(**{column: value}))
    assert_refused(res, column, f"column '{column}' row 0", *words)


def test_in_range_values_reach_the_model_unchanged(typed_server: Server) -> None:
    body = typed_body(when="1700-01-01T00:00:00.123456789", n=-(2**31), f=1.5)
    res = post(typed_server, "/invocations", body)
    assert res.status_code == 200, res.text
    out = res.json()["predictions"][0]
    assert out["when"] == "1700-01-01T00:00:00.123456789"
    assert (out["n"], out["f"]) == (-(2**31), 1.5)


# ---------------------------------------------------------------------- MLflow's base64 form
def test_binary_column_with_mlflow_base64_example(binary_server: Server) -> None:
    """The model starts (its example warms it up) and its example, as MLflow wrote it, scores."""
    info = httpx.get(binary_server.url + "/model/info", timeout=30).json()
    example = info["input_example"]
    assert "\n" in example["dataframe_split"]["data"][0][0]  # base64.encodebytes: line breaks
    res = post(binary_server, "/invocations", example)
    assert res.status_code == 200, res.text
    assert [p["blob_len"] for p in res.json()["predictions"]] == [len(TYPED_BLOB), 2]
    lines = base64.encodebytes(TYPED_BLOB).decode()
    for blob, size in ((lines, len(TYPED_BLOB)), (base64.b64encode(b"xyz").decode(), 3)):
        res = post(binary_server, "/predict", {"inputs": [{"blob": blob}]})
        assert res.json()["predictions"] == [{"alpha": 1.0, "blob_len": size}], res.text
    res = post(binary_server, "/predict", {"inputs": [{"blob": "not base64!"}]})
    assert_refused(res, "blob", "base64")


def test_binary_v2_bytes(binary_server: Server) -> None:
    body = v2_inputs(blob=("BYTES", [1], [base64.encodebytes(b"abcd").decode()]))
    res = post(binary_server, "/v2/models/binary/infer", body)
    assert res.status_code == 200, res.text
    assert {o["name"]: o["data"] for o in res.json()["outputs"]}["blob_len"] == [4]


# ---------------------------------------------------------------------- bounded errors
def test_unknown_columns_are_named_boundedly(sk_server: Server) -> None:
    record = {**ROW, **{f"extra{i}": 0 for i in range(100_000)}}
    res = post(sk_server, "/invocations", {"dataframe_records": [record]})
    assert_refused(res, "extra0", "unknown column(s) 'extra0'", "... and 99990 more")
    assert len(res.content) < 2000
    res = post(sk_server, "/predict", {"inputs": [ROW], **{f"k{i}": 1 for i in range(5000)}})
    assert res.status_code == 422 and "... and 4990 more" in res.json()["message"]
    assert len(res.content) < 2000


# ---------------------------------------------------------------------- helpers
def typed_body(params: dict | None = None, **row: object) -> dict:
    record = {
        "when": "2024-01-02T03:04:05",
        "n": 7,
        "f": 0.25,
        **row,
    }
    body: dict = {"dataframe_records": [record]}
    if params is not None:
        body["params"] = params
    return body


def typed_v2() -> dict:
    return v2_inputs(
        when=("BYTES", [1], ["2024-01-02T03:04:05"]),
        n=("INT32", [1], [1]),
        f=("FP32", [1], [0.5]),
    )
