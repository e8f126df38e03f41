"""Representative ModelDeployment manifests for policy tests, each with the messages it earns.

Also manifests in the published mlifecycle.io/v1 format (requirement strings, training facts
inside `metrics`, `demographic_parity`, ...): written here in the spirit of the published
project's examples (a valid one and one per kind of defect), not copied from it.
"""

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
            "serving": {
                "version": "3",
                "metrics": {"accuracy": 0.925, "f1_score": 0.905},
                "latency_p99_ms": 40,
            },
            "training": {"samples": 250000},
            "inference": {
                "replicas": 3,
                "resources": {
                    "requests": {"cpu": "2000m", "memory": "4Gi"},
                    "limits": {"cpu": "2000m", "memory": "4Gi"},
                },
                "autoscaling": {"minReplicas": 3, "maxReplicas": 10},
                "latency_p99_ms": 45,
            },
            "monitoring": {
                "enabled": True,
                "metrics_enabled": True,
                "drift_detection": {"enabled": True, "schedule": "0 */6 * * *"},
                "alerting": {"enabled": True, "channels": ["pagerduty"]},
            },
            "explainability": {"method": "shap", "enabled": True},
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
    "no-experiment": (
        manifest(drop=("model.experiment_id",)),
        "staging",
        [
            "model experiment_id is absent; staging requires the MLflow experiment that "
            "trained the model (set spec.model.experiment_id)"
        ],
        [],
    ),
    "no-limits": (
        manifest(drop=("inference.resources.limits",)),
        "production",
        [
            "inference resources lack limits.cpu, limits.memory; production requires cpu and "
            "memory requests and limits (set spec.inference.resources)"
        ],
        [],
    ),
    "monitoring-off": (
        manifest({"monitoring": {"enabled": False}}),
        "production",
        [
            "monitoring is not enabled (spec.monitoring.enabled is false); production requires "
            "continuous monitoring (set spec.monitoring.enabled: true)"
        ],
        [],
    ),
    "recommendations": (
        manifest(drop=("inference.autoscaling", "monitoring.drift_detection", "explainability")),
        "staging",
        [],
        [
            "inference autoscaling is absent; staging recommends it (set "
            "spec.inference.autoscaling with minReplicas and maxReplicas)",
            "monitoring has no drift detection (spec.monitoring.drift_detection is absent); "
            "staging recommends it",
            "no explainability method recorded (spec.explainability.method is absent); staging "
            "recommends one (e.g. shap, lime, feature importance)",
        ],
    ),
    "few-samples": (
        manifest({"training": {"samples": 60}}),
        "production",
        ["training sample count 60 is below the minimum 100 for production; train on more data"],
        [],
    ),
    "some-samples": (
        manifest({"training": {"samples": 600}}),
        "staging",
        [],
        [
            "training sample count 600 is below the recommended 1000 for staging; consider "
            "training on more data"
        ],
    ),
    "slower": (
        manifest({"inference": {"latency_p99_ms": 90}}),
        "production",
        [],
        [
            "p99 latency 90.0000 ms is 2.2500 times the serving version 3 (40.0000 ms) in "
            "production; the maximum ratio is 1.5000 (make the model faster or raise "
            "governance.max_latency_ratio)"
        ],
    ),
    "vulnerable-pin": (
        with_dependencies(dependency("torch", "==1.8.0")),
        "production",
        [],
        [
            "dependency torch==1.8.0 admits 1.8.0, a known-vulnerable version (torch==1.8.0) in "
            "production; require a fixed version and confirm with a vulnerability scanner"
        ],
    ),
    "fairness-and-drift-metadata": (
        manifest(
            {
                "fairness": {"evaluation_date": "2026-01-02", "protected_attributes": ["age"]},
                "drift": {"reference_dataset": "2025-12-baseline", "monitored_features": ["age"]},
            }
        ),
        "production",
        [],
        [],
    ),
}


# --- the published format ------------------------------------------------------------------

PUBLISHED_SOURCE = "transactions-prod"


def published_valid() -> dict[str, Any]:
    """A complete published-format manifest that passes every published rule."""
    document = published_base()
    document["metadata"]["labels"] = {
        "app": "loan-default",
        "version": "v3.2.0",
        "team": "credit-ml",
        "environment": "staging",
    }
    spec = document["spec"]
    spec["model"]["description"] = "Probability of default for consumer loans"
    spec["metrics"].update(
        auc_roc=0.95,
        training_date="2026-03-01",
        training_duration_hours=2.5,
        training_samples=820000,
    )
    spec["fairness"].update(evaluation_date="2026-03-02", protected_attributes=["age_band"])
    spec["drift"].update(
        reference_dataset="2026-02-baseline",
        monitored_features=["income", "loan_amount"],
        last_evaluated="2026-03-02",
    )
    spec["dependencies"] += ["torchvision>=0.16.0", "fastapi>=0.110.0", "uvicorn>=0.27.0"]
    spec["data_sources"][0].update(version="2026-02", description="Repayment history")
    spec["data_sources"].append(
        {
            "source": "s3://approved-data-loans/features/",
            "version": "v5",
            "approved": True,
            "description": "Feature store snapshot",
        }
    )
    spec["inference"].update(
        healthCheck={"path": "/health", "port": 8080, "initialDelaySeconds": 20},
        readinessCheck={"path": "/ready", "port": 8080, "periodSeconds": 5},
    )
    spec["monitoring"] = {
        "enabled": True,
        "drift_detection": {"enabled": True, "schedule": "0 */4 * * *", "threshold": 0.25},
        "alerting": {
            "enabled": True,
            "channels": ["email"],
            "rules": [{"name": "slow", "condition": "latency_p99 > 300ms", "severity": "warning"}],
        },
    }
    spec["explainability"] = {"method": "shap", "enabled": True, "feature_importance": ["income"]}
    spec["observability"] = {
        "metrics": {"enabled": True, "port": 8080, "path": "/metrics"},
        "logging": {"level": "INFO", "format": "json"},
        "tracing": {"enabled": False, "samplingRate": 0.05},
    }
    spec["rollback"] = {
        "enabled": True,
        "previousVersion": "3.1.0",
        "triggers": [{"type": "latency_p99", "threshold": "300ms", "window": "10m"}],
    }
    return document


def published_base() -> dict[str, Any]:
    """The sections every published example has; the invalid ones stop here."""
    return {
        "apiVersion": "mlifecycle.io/v1",
        "kind": "ModelDeployment",
        "metadata": {"name": "loan-default", "namespace": "credit"},
        "spec": {
            "model": {
                "name": "loan-default",
                "version": "3.2.0",
                "uri": "s3://approved-data-loans/models/loan-default/3.2.0",
                "framework": "pytorch",
                "experiment_id": "exp-loans-2026-007",
            },
            "metrics": {"accuracy": 0.93, "f1_score": 0.88, "precision": 0.9, "recall": 0.86},
            "fairness": {"demographic_parity": 0.03, "equalized_odds": 0.04},
            "drift": {"score": 0.06},
            "dependencies": ["torch>=2.1.0", "numpy>=1.26.0", "pandas>=2.1.0"],
            "data_sources": [{"source": PUBLISHED_SOURCE, "approved": True}],
            "inference": {
                "replicas": 2,
                "resources": {
                    "requests": {"cpu": "250m", "memory": "512Mi"},
                    "limits": {"cpu": "1", "memory": "2Gi"},
                },
                "autoscaling": {"minReplicas": 2, "maxReplicas": 6},
            },
        },
    }


def _published_defect(**spec: Any) -> dict[str, Any]:
    document = published_base()
    for key, value in spec.items():
        if value is None:
            del document["spec"][key]
        else:
            document["spec"][key] = value
    return document


# name -> (document, the deny messages that are its own reason, formatted with the environment)
PUBLISHED_INVALID: dict[str, tuple[dict[str, Any], list[str]]] = {
    "no-metrics": (
        _published_defect(metrics=None),
        [
            "no accuracy metric logged for the model; {env} requires accuracy of at least 0.8500",
            "no f1_score metric logged for the model; {env} requires f1_score of at least 0.8000",
        ],
    ),
    "below-accuracy": (
        _published_defect(metrics={"accuracy": 0.7, "f1_score": 0.66, "recall": 0.6}),
        [
            "accuracy 0.7000 is below the minimum 0.8500 for {env}",
            "f1_score 0.6600 is below the minimum 0.8000 for {env}",
        ],
    ),
    "drift": (
        _published_defect(
            drift={"score": 0.41, "reference_dataset": "2025-09-baseline", "monitored_features": []}
        ),
        ["drift score 0.4100 exceeds the maximum 0.3000 for {env}"],
    ),
    "bias": (
        _published_defect(
            fairness={
                "demographic_parity": 0.17,
                "equalized_odds": 0.14,
                "evaluation_date": "2026-03-02",
                "protected_attributes": ["age_band"],
            }
        ),
        [
            "demographic_parity_difference 0.1700 exceeds the maximum 0.1000 for {env}",
            "equalized_odds_difference 0.1400 exceeds the maximum 0.1000 for {env}",
        ],
    ),
}
