"""Representative ModelDeployment manifests for policy tests, each with the messages it earns."""

from __future__ import annotations

import copy
from typing import Any

from mlflow_ztml.config import deep_merge
from mlflow_ztml.manifest import ModelDeployment, from_dict

PINNED = {
    "mlflow": "3.17.2",
    "scikit-learn": "1.9.1",
    "numpy": "2.4.6",
    "pandas": "3.1.1",
    "scipy": "1.17.1",
    "skops": "0.16.0",
    "cloudpickle": "3.1.3",
}


def dependency(name: str, specifier: str) -> dict[str, Any]:
    return {
        "name": name,
        "specifier": specifier,
        "pinned": specifier.startswith("==") and "*" not in specifier,
        "version": specifier.lstrip("=") if specifier.startswith("==") else None,
        "requirement": f"{name}{specifier}",
    }


def good_document() -> dict[str, Any]:
    """A full manifest that every built-in environment allows without warnings."""
    return {
        "apiVersion": "mlifecycle.io/v1",
        "kind": "ModelDeployment",
        "metadata": {"name": "credit-risk", "labels": {"team": "risk"}},
        "spec": {
            "model": {
                "name": "credit-risk",
                "version": "4",
                "uri": "models:/credit-risk/4",
                "source": "s3://approved-data-models/1/abc123/artifacts/model",
                "run_id": "abc123",
                "experiment_id": "1",
                "flavors": ["python_function", "sklearn"],
                "framework": "sklearn",
                "signature": {
                    "inputs": '[{"type": "double", "name": "income"}]',
                    "outputs": '[{"type": "long"}]',
                },
                "has_input_example": True,
                "tags": {"owner": "risk-team"},
            },
            "metrics": {"accuracy": 0.93, "f1_score": 0.91, "precision": 0.9, "roc_auc": 0.95},
            "fairness": {"demographic_parity_difference": 0.04, "equalized_odds_difference": 0.05},
            "drift": {"income": 0.02, "age": 0.05, "debt": 0.03},
            "dependencies": [dependency(name, f"=={v}") for name, v in PINNED.items()],
            "data_sources": [
                {
                    "name": "train",
                    "digest": "d41d8cd9",
                    "source": "s3://approved-data-credit/train.parquet",
                    "source_type": "s3",
                    "context": "training",
                },
                {
                    "name": "eval",
                    "digest": "0cc175b9",
                    "source": "gs://ml-datasets-credit/eval.parquet",
                    "source_type": "gcs",
                    "context": "evaluation",
                },
            ],
            "serving": {"version": "3", "metrics": {"accuracy": 0.925, "f1_score": 0.905}},
            "inference": {"replicas": 3, "cpu": "2000m", "memory": "4Gi"},
            "monitoring": {"metrics_enabled": True},
        },
    }


def manifest(spec: dict[str, Any] | None = None, *, drop: tuple[str, ...] = ()) -> ModelDeployment:
    """The good manifest with `spec` deep-merged in and the dotted `drop` paths removed."""
    document = good_document()
    document["spec"] = deep_merge(document["spec"], spec or {})
    for path in drop:
        *parents, last = path.split(".")
        node = document["spec"]
        for key in parents:
            node = node[key]
        del node[last]
    return from_dict(copy.deepcopy(document))


def with_dependencies(*extra: dict[str, Any]) -> ModelDeployment:
    document = good_document()
    document["spec"]["dependencies"] += list(extra)
    return from_dict(document)


def with_data_sources(*extra: dict[str, Any]) -> ModelDeployment:
    document = good_document()
    document["spec"]["data_sources"] += list(extra)
    return from_dict(document)


# name -> (manifest, environment, expected deny messages, expected warn messages)
CASES: dict[str, tuple[ModelDeployment, str, list[str], list[str]]] = {
    "good-production": (manifest(), "production", [], []),
    "good-local": (manifest(), "local", [], []),
    "low-accuracy": (
        manifest({"metrics": {"accuracy": 0.71}}, drop=("serving",)),
        "production",
        ["accuracy 0.7100 is below the minimum 0.8500 for production"],
        [],
    ),
    "missing-f1": (
        manifest(drop=("metrics.f1_score", "serving")),
        "staging",
        ["no f1_score metric logged for the model; staging requires f1_score of at least 0.8000"],
        [],
    ),
    "missing-fairness": (
        manifest(drop=("fairness",)),
        "production",
        [
            "no fairness evaluation recorded for the model; production requires "
            "demographic_parity_difference, equalized_odds_difference"
        ],
        [],
    ),
    "missing-fairness-local": (
        manifest(drop=("fairness",)),
        "local",
        [],
        [
            "no fairness evaluation recorded for the model; local requires "
            "demographic_parity_difference, equalized_odds_difference"
        ],
    ),
    "unfair": (
        manifest({"fairness": {"demographic_parity_difference": 0.18}}),
        "production",
        ["demographic_parity_difference 0.1800 exceeds the maximum 0.1000 for production"],
        [],
    ),
    "high-drift": (
        manifest({"drift": {"income": 0.45, "age": 0.2}}),
        "production",
        ["drift income 0.4500 exceeds the maximum 0.3000 for production"],
        ["drift age 0.2000 is above the warning threshold 0.1000 for production"],
    ),
    "unpinned-dependency": (
        with_dependencies(dependency("xgboost", ">=2.0")),
        "production",
        [
            "dependency xgboost is not pinned to an exact version (xgboost>=2.0); "
            "production requires =="
        ],
        [],
    ),
    "unpinned-dependency-staging": (
        with_dependencies(dependency("xgboost", ">=2.0")),
        "staging",
        [],
        [
            "dependency xgboost is not pinned to an exact version (xgboost>=2.0); "
            "staging requires =="
        ],
    ),
    "unlisted-dependency": (
        with_dependencies(dependency("leftpad", "==1.0.0")),
        "production",
        ["dependency leftpad (leftpad==1.0.0) is not on the dependency allowlist for production"],
        [],
    ),
    "unapproved-lineage": (
        with_data_sources({"name": "scraped", "source": "s3://random-bucket/scraped.csv"}),
        "production",
        [
            "data source scraped (s3://random-bucket/scraped.csv) is outside the approved "
            "prefixes for production: gs://ml-datasets-, s3://approved-data-"
        ],
        [],
    ),
    "no-lineage": (
        manifest(drop=("data_sources",)),
        "staging",
        [
            "no data sources declared for the model (log them with mlflow.log_input); "
            "staging requires lineage"
        ],
        [],
    ),
    "regression": (
        manifest({"metrics": {"accuracy": 0.90}, "serving": {"metrics": {"accuracy": 0.95}}}),
        "production",
        [
            "accuracy 0.9000 is 0.0500 below the serving version 3 (0.9500) in production; "
            "the maximum drop is 0.0200"
        ],
        [],
    ),
    "http-uri": (
        manifest({"model": {"uri": "http://models.example.com/credit-risk/4"}}),
        "staging",
        [
            "model uri http://models.example.com/credit-risk/4 uses an insecure scheme; staging "
            "requires https or models:/ (insecure: http://)"
        ],
        [],
    ),
    "missing-signature": (
        manifest(drop=("model.signature",)),
        "production",
        [
            "model has no signature; production requires one (log the model with a signature "
            "or an input example)"
        ],
        [],
    ),
    "missing-signature-local": (manifest(drop=("model.signature",)), "local", [], []),
    "unknown-framework": (
        manifest({"model": {"framework": "prophet"}}),
        "production",
        [
            "framework prophet is not allowed in production (allowed: catboost, keras, "
            "lightgbm, onnx, pytorch, sklearn, tensorflow, xgboost)"
        ],
        [],
    ),
}
