"""The published mlifecycle /predict contract (`SERVING_RESPONSE_FORMAT=mlifecycle`).

Real `python -m serving` processes with real models: the scikit-learn classifier of conftest
(columns a, b: double, c: long), its PyTorch MLP (logits, tensor (-1, 4)) and a scikit-learn
regressor. The first group of tests makes the observations the published inference service's own
tests make (health, ready, predict shape, batch limits, non-numeric features, request id, model
info); the rest pin down what the published service leaves open (labels and probabilities equal
the model's own, logits, regressors, the other input formats, the limits' messages).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from serving.config import load_settings
from serving.errors import ModelError
from serving.published import probabilities, shape_predictions
from tests.serving.conftest import Server, running

pytestmark = pytest.mark.slow

MLIFECYCLE = {"SERVING_RESPONSE_FORMAT": "mlifecycle"}
ROWS = [[1.0, 2.0, 3.0], [-4.0, -1.5, 0.0], [0.5, 0.5, 1.0]]


@pytest.fixture(scope="module")
def regressor_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LinearRegression on the same three columns as conftest's classifier."""
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {"a": rng.normal(size=30), "b": rng.normal(size=30), "c": rng.integers(0, 5, 30)}
    )
    model = LinearRegression().fit(frame, 2 * frame["a"] - frame["b"] + 0.5 * frame["c"])
    path = tmp_path_factory.mktemp("published") / "reg"
    mlflow.sklearn.save_model(
        model,
        path,
        signature=infer_signature(frame, model.predict(frame)),
        input_example=frame.head(2),
        pip_requirements=["mlflow==3.17.2"],
    )
    return path


@pytest.fixture(scope="module")
def published(
    model_dirs: dict[str, Path], regressor_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Server]]:
    tmp = tmp_path_factory.mktemp("published-logs")
    specs = {
        "clf": (
            model_dirs["sk"],
            {**MLIFECYCLE, "SERVING_MODEL_NAME": "iris", "SERVING_MODEL_VERSION": "7"},
        ),
        "torch": (
            model_dirs["torch"],
            {**MLIFECYCLE, "SERVING_MAX_INSTANCES": "5", "SERVING_MAX_BATCH_DELAY_MS": "5"},
        ),
        "reg": (regressor_dir, MLIFECYCLE),
    }
    with running(specs, tmp) as started:
        yield started


@pytest.fixture(scope="module")
def clf(published: dict[str, Server]) -> Server:
    return published["clf"]


def post(server: Server, body: object) -> httpx.Response:
    return httpx.post(server.url + "/predict", json=body, timeout=30)


def detail(response: httpx.Response) -> str:
    assert response.status_code == 422, response.text
    return response.json()["message"]


# ------------------------------------------------ what the published service's tests observe
def test_health_and_ready(clf: Server) -> None:
    health = httpx.get(clf.url + "/health")
    assert health.status_code == 200 and health.json()["status"] == "healthy"
    ready = httpx.get(clf.url + "/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "model": "iris", "version": "7"}


def test_predict_single_instance(clf: Server) -> None:
    res = post(clf, {"instances": [ROWS[0]]})
    assert res.status_code == 200, res.text
    data = res.json()
    assert len(data["predictions"]) == 1
    assert set(data["predictions"][0]) == {"prediction", "confidence", "probabilities"}
    assert data["inference_time_ms"] > 0
    assert data["request_id"] == res.headers["x-request-id"]
    assert (data["model_name"], data["model_version"]) == ("iris", "7")


def test_predict_multiple_instances_match_the_model(clf: Server, model_dirs) -> None:
    import mlflow.sklearn
    import pandas as pd

    res = post(clf, {"instances": ROWS})
    assert res.status_code == 200, res.text
    predictions = res.json()["predictions"]
    assert len(predictions) == 3
    model = mlflow.sklearn.load_model(str(model_dirs["sk"]))
    frame = pd.DataFrame(ROWS, columns=["a", "b", "c"]).astype({"c": "int64"})
    expected = model.predict_proba(frame)
    for item, labels, probs in zip(predictions, model.predict(frame), expected, strict=True):
        assert item["prediction"] == int(labels)
        assert item["probabilities"] == pytest.approx(probs.tolist())
        assert item["confidence"] == pytest.approx(max(probs))


def test_empty_and_invalid_bodies_are_422(clf: Server) -> None:
    assert "instances is empty" in detail(post(clf, {"instances": []}))
    assert "exactly one of the keys" in detail(post(clf, {"invalid_field": "value"}))


def test_non_numeric_features_are_422_naming_the_feature(clf: Server) -> None:
    res = post(clf, {"instances": [["invalid", 2.0, 3.0]]})
    assert detail(res) == "instances[0][0]: expected a number, got string 'invalid'"
    assert res.json()["field"] == "instances[0][0]"
    assert "instances[1][2]: expected a number, got boolean True" in detail(
        post(clf, {"instances": [ROWS[0], [1.0, 2.0, True]]})
    )
    assert "instances[0][1]: expected a number, got null" in detail(
        post(clf, {"instances": [[1.0, None, 3.0]]})
    )


def test_batch_size_limit(clf: Server) -> None:
    too_many = post(clf, {"instances": [ROWS[0]] * 101})
    assert "101 instances, more than the maximum of 100" in detail(too_many)
    assert "SERVING_MAX_INSTANCES" in detail(too_many)
    for count in (10, 100):
        res = post(clf, {"instances": [ROWS[0]] * count})
        assert res.status_code == 200, res.text
        assert len(res.json()["predictions"]) == count


def test_model_info_has_the_published_keys(clf: Server) -> None:
    info = httpx.get(clf.url + "/model/info").json()
    assert info["loaded"] is True
    assert (info["name"], info["version"], info["framework"]) == ("iris", "7", "sklearn")
    assert info["input_features"] == 3 and info["max_batch_size"] == 100
    assert info["device"] == "cpu" and info["flavor"] == "sklearn"  # ztml's keys stay


# ------------------------------------------------ what the published tests leave open
def test_wrong_feature_count_names_the_columns(clf: Server) -> None:
    message = detail(post(clf, {"instances": [[1.0, 2.0, 3.0, 4.0, 5.0]]}))
    assert message == (
        "instances: each instance has 5 features; the model takes 3, in this order: a, b, c"
    )
    assert "same number of features" in detail(post(clf, {"instances": [[1.0, 2.0, 3.0], [1.0]]}))
    assert "column 'c' row 0: expected long, got float 0.5" in detail(
        post(clf, {"instances": [[1.0, 2.0, 0.5]]})
    )


def test_other_input_formats_get_the_same_published_answer(clf: Server) -> None:
    """verify and `helm test` send the model's input example (dataframe_split): it must work."""
    expected = post(clf, {"instances": ROWS[:2]}).json()["predictions"]
    split = {"columns": ["a", "b", "c"], "data": ROWS[:2]}
    records = [dict(zip("abc", row, strict=True)) for row in ROWS[:2]]
    for body in ({"dataframe_split": split}, {"dataframe_records": records}, {"inputs": records}):
        res = post(clf, body)
        assert res.status_code == 200, (body, res.text)
        assert res.json()["predictions"] == expected
    assert "more than the maximum of 100" in detail(
        post(clf, {"dataframe_split": {"columns": ["a", "b", "c"], "data": [ROWS[0]] * 101}})
    )


def test_torch_logits_become_softmax_probabilities(published, model_dirs) -> None:
    import mlflow.pytorch
    import torch

    x = np.random.default_rng(3).normal(size=(4, 4)).astype(np.float32)
    res = post(published["torch"], {"instances": x.tolist()})
    assert res.status_code == 200, res.text
    net = mlflow.pytorch.load_model(str(model_dirs["torch"]))
    with torch.no_grad():
        expected = torch.softmax(net(torch.from_numpy(x)), dim=1).numpy()
    for item, probs in zip(res.json()["predictions"], expected, strict=True):
        assert item["prediction"] == int(probs.argmax())
        assert item["probabilities"] == pytest.approx(probs.tolist(), abs=1e-5)
        assert item["confidence"] == pytest.approx(float(probs.max()), abs=1e-5)
    assert "6 instances, more than the maximum of 5" in detail(
        post(published["torch"], {"instances": x.tolist() + x.tolist()[:2]})
    )
    assert "instances[0][3]: expected a number, got string '4'" in detail(
        post(published["torch"], {"instances": [[1.0, 2.0, 3.0, "4"]]})
    )


def test_regressor_gets_prediction_items_only(published, regressor_dir) -> None:
    import mlflow.sklearn
    import pandas as pd

    res = post(published["reg"], {"instances": ROWS})
    assert res.status_code == 200, res.text
    predictions = res.json()["predictions"]
    assert all(set(item) == {"prediction"} for item in predictions)
    model = mlflow.sklearn.load_model(str(regressor_dir))
    frame = pd.DataFrame(ROWS, columns=["a", "b", "c"]).astype({"c": "int64"})
    assert [p["prediction"] for p in predictions] == pytest.approx(model.predict(frame).tolist())
    assert httpx.get(published["reg"].url + "/health").json() == {"status": "healthy"}


# ------------------------------------------------ the setting and the shaping rules
def test_response_format_setting_is_checked(capsys) -> None:
    settings = load_settings(["--model-uri", "m", "--response-format", " MLifecycle "])
    assert settings.response_format == "mlifecycle"
    assert load_settings(["--model-uri", "m"]).response_format == "ztml"  # the default
    with pytest.raises(SystemExit) as exc:
        load_settings(["--model-uri", "m", "--response-format", "kserve"])
    assert exc.value.code == 2
    assert "must be ztml or mlifecycle, not 'kserve'" in capsys.readouterr().err


def test_scores_probabilities_and_logits() -> None:
    probs = np.array([[0.2, 0.8], [0.6, 0.4]], dtype=np.float32)
    assert probabilities(probs) == pytest.approx(probs)  # already probabilities: kept
    logits = np.array([[2.0, -1.0, 0.5]])
    softmax = np.exp(logits) / np.exp(logits).sum()
    assert probabilities(logits) == pytest.approx(softmax)
    assert probabilities(np.log(softmax)) == pytest.approx(softmax)  # log-softmax head
    items = shape_predictions(logits, "auto")
    assert items[0]["prediction"] == 0 and items[0]["confidence"] == pytest.approx(softmax.max())


def test_shaping_follows_the_task() -> None:
    multi = np.array([[1.5, 2.5], [3.0, -1.0]])
    assert shape_predictions(multi, "regression") == [
        {"prediction": [1.5, 2.5]},
        {"prediction": [3.0, -1.0]},
    ]
    assert shape_predictions(np.array([[1, 0], [0, 1]]), "auto") == [
        {"prediction": [1, 0]},
        {"prediction": [0, 1]},
    ]  # integer matrix (e.g. multi-label 0/1): not class scores
    assert shape_predictions(np.array([0.5, 1.5]), "auto") == [
        {"prediction": 0.5},
        {"prediction": 1.5},
    ]
    sigmoid = shape_predictions(np.array([[0.9], [0.2]]), "classification", ["no", "yes"])
    assert [i["prediction"] for i in sigmoid] == ["yes", "no"]
    assert sigmoid[0]["probabilities"] == pytest.approx([0.1, 0.9])
    with pytest.raises(ModelError, match="SERVING_PREDICTION_TASK=regression"):
        shape_predictions(np.array([1, 0, 2]), "classification")
