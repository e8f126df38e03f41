"""Register small, real MLflow model versions with chosen evidence, for tests."""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

import mlflow
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

SKLEARN_REQUIREMENTS = [
    f"mlflow=={mlflow.__version__}",
    "scikit-learn==1.9.1",
    "numpy==2.4.6",
    "pandas==3.1.1",
    "scipy==1.17.1",
    "skops==0.16.0",
    "cloudpickle==3.1.3",
]
APPROVED_SOURCE = "s3://approved-data-credit/train.parquet"


# Enough rows that the logged training dataset clears the training-sample rules (deny below
# 100, warn below 1,000): evidence reads the count from the dataset's profile.
TRAINING_ROWS = 1_200


def training_frame(rows: int = TRAINING_ROWS, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.random((rows, 3)), columns=["income", "age", "debt"])
    return frame, (frame["income"] > frame["debt"]).astype(int)


def register_sklearn(
    tracking_uri: str,
    name: str,
    metrics: Mapping[str, float] | None = None,
    run_tags: Mapping[str, str] | None = None,
    version_tags: Mapping[str, str] | None = None,
    requirements: Sequence[str] | None = None,
    data_sources: Sequence[str] | None = (APPROVED_SOURCE,),
    signature: bool = True,
) -> str:
    """Log and register one version; return its version number."""
    mlflow.set_tracking_uri(tracking_uri)
    frame, labels = training_frame()
    model = LogisticRegression().fit(frame, labels)
    with mlflow.start_run():
        for key, value in (metrics or {}).items():
            mlflow.log_metric(key, value)
        for key, value in (run_tags or {}).items():
            mlflow.set_tag(key, value)
        for source in data_sources or ():
            # MLflow keeps one dataset per (name, digest) in an experiment: a distinct name per
            # source keeps each version's lineage its own.
            dataset = mlflow.data.from_pandas(
                frame.assign(label=labels),
                source=source,
                name=f"train-{zlib.crc32(source.encode())}",
            )
            mlflow.log_input(dataset, context="training")
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            input_example=frame.head(2) if signature else None,
            signature=None if signature else False,
            pip_requirements=list(requirements or SKLEARN_REQUIREMENTS),
            registered_model_name=name,
        )
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient(tracking_uri)
    for key, value in (version_tags or {}).items():
        client.set_model_version_tag(name, version, key, value)
    return version


GOOD_METRICS = {
    "accuracy": 0.93,
    "f1": 0.91,
    "fairness.demographic_parity": 0.04,
    "fairness.equalized_odds": 0.05,
    "drift.psi": 0.02,
}


BROKEN_AFTER_WARMUP = '''
import mlflow
import pandas as pd


class BrokenAfterWarmup(mlflow.pyfunc.PythonModel):
    """Answers the server's warm-up (two calls: one to warm, one timed), then fails every
    request: a model whose feature store went away between start-up and traffic."""

    def __init__(self):
        self.calls = 0

    def predict(self, context, model_input, params=None):
        self.calls += 1
        if self.calls > 2:
            raise RuntimeError("feature store unreachable")
        return pd.Series([0] * len(model_input))


mlflow.models.set_model(BrokenAfterWarmup())
'''


def register_broken_pyfunc(tracking_uri: str, name: str, code_dir) -> str:
    """A version that passes the gate and starts, but fails /predict after warm-up."""
    mlflow.set_tracking_uri(tracking_uri)
    frame, _ = training_frame()
    code = code_dir / "broken_model.py"
    code.write_text(BROKEN_AFTER_WARMUP)
    with mlflow.start_run():
        mlflow.log_metrics(GOOD_METRICS)
        dataset = mlflow.data.from_pandas(frame, source=APPROVED_SOURCE, name="train")
        mlflow.log_input(dataset, context="training")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(code),
            input_example=frame.head(2),
            pip_requirements=[f"mlflow=={mlflow.__version__}", "pandas==3.1.1"],
            registered_model_name=name,
        )
    return str(info.registered_model_version)
