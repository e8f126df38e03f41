"""Evidence read from a real `mlflow server` into the manifest."""

from __future__ import annotations

import mlflow
import pytest

from mlflow_ztml import evidence
from mlflow_ztml.config import load_settings
from mlflow_ztml.errors import ModelNotFoundError, RegistryUnavailableError
from mlflow_ztml.registry import Registry
from tests.mlflow_server import free_port
from tests.models import GOOD_METRICS, register_sklearn


def test_full_evidence_from_metrics_tags_requirements_and_datasets(ztml_env) -> None:
    version = register_sklearn(
        ztml_env.url,
        "evidence-full",
        metrics={**GOOD_METRICS, "val_loss": 0.3},
        run_tags={"fairness.equalized_odds": "0.07", "drift.feature_age": "0.12"},
        version_tags={"owner": "risk-team", "drift.feature_income": "0.2"},
    )
    settings = load_settings()
    document = evidence.build(
        Registry(settings), settings, f"models:/evidence-full/{version}", "staging"
    )
    spec = document.spec
    assert spec.environment == "staging"
    assert spec.model.version == version
    assert spec.model.framework == "sklearn"
    assert "sklearn" in spec.model.flavors
    assert spec.model.run_id and spec.model.experiment_id
    assert spec.model.has_input_example
    assert [c["name"] for c in spec.model.signature["inputs"]] == ["income", "age", "debt"]
    assert spec.model.tags["owner"] == "risk-team"
    # f1 is mapped onto f1_score; unmapped metrics keep their own name.
    assert spec.metrics == {"accuracy": 0.93, "f1_score": 0.91, "val_loss": 0.3}
    assert spec.fairness == {
        "demographic_parity_difference": 0.04,
        "equalized_odds_difference": 0.05,  # the run metric wins over the run tag
    }
    assert spec.drift == {"psi": 0.02, "feature_age": 0.12, "feature_income": 0.2}
    deps = {d.name: d for d in spec.dependencies}
    assert deps["scikit-learn"].pinned and deps["scikit-learn"].version == "1.9.1"
    assert deps["mlflow"].version == mlflow.__version__
    [source] = spec.data_sources
    assert source.source == "s3://approved-data-credit/train.parquet"
    assert source.digest and source.context == "training"
    assert spec.inference.replicas == 2  # staging preset


def test_alias_uri_resolves_to_the_version(ztml_env) -> None:
    version = register_sklearn(ztml_env.url, "evidence-alias", metrics=GOOD_METRICS)
    mlflow.MlflowClient(ztml_env.url).set_registered_model_alias(
        "evidence-alias", "champion", version
    )
    settings = load_settings()
    document = evidence.build(
        Registry(settings), settings, "models:/evidence-alias@champion", "local"
    )
    assert document.spec.model.version == version
    assert document.spec.model.uri == f"models:/evidence-alias/{version}"
    assert "champion" in document.spec.model.aliases


def test_missing_evidence_stays_missing(ztml_env) -> None:
    version = register_sklearn(
        ztml_env.url, "evidence-bare", metrics={}, data_sources=(), signature=False
    )
    settings = load_settings()
    document = evidence.build(
        Registry(settings), settings, f"models:/evidence-bare/{version}", "local"
    )
    spec = document.policy_input()["spec"]
    assert spec["metrics"] == {}
    for missing in ("fairness", "drift", "data_sources", "serving"):
        assert missing not in spec
    assert "signature" not in spec["model"]


def test_mapping_is_configuration(ztml_env, tmp_path, monkeypatch) -> None:
    version = register_sklearn(
        ztml_env.url, "evidence-mapping", metrics={"holdout_acc": 0.97, "bias.dp": 0.02}
    )
    (tmp_path / "ztml.yaml").write_text(
        "evidence:\n  metrics: {accuracy: [holdout_acc]}\n  fairness_prefixes: ['bias.']\n"
    )
    settings = load_settings()
    document = evidence.build(
        Registry(settings), settings, f"models:/evidence-mapping/{version}", "local"
    )
    assert document.spec.metrics["accuracy"] == 0.97
    assert document.spec.fairness == {"demographic_parity_difference": 0.02}


def test_serving_version_feeds_the_regression_slot(ztml_env) -> None:
    client = mlflow.MlflowClient(ztml_env.url)
    v1 = register_sklearn(ztml_env.url, "evidence-serving", metrics=GOOD_METRICS)
    client.set_model_version_tag("evidence-serving", v1, "ztml.production.status", "deployed")
    v2 = register_sklearn(
        ztml_env.url, "evidence-serving", metrics={**GOOD_METRICS, "accuracy": 0.88}
    )
    settings = load_settings()
    document = evidence.build(
        Registry(settings), settings, f"models:/evidence-serving/{v2}", "production"
    )
    assert document.spec.serving is not None
    assert document.spec.serving.version == v1
    assert document.spec.serving.metrics["accuracy"] == 0.93
    # Nothing serves in staging: the slot stays empty.
    staging = evidence.build(
        Registry(settings), settings, f"models:/evidence-serving/{v2}", "staging"
    )
    assert staging.spec.serving is None


@pytest.mark.parametrize(
    "uri", ["models:/no-such-model/1", "models:/evidence-full/999", "models:/evidence-full@nope"]
)
def test_unknown_models_are_not_found_errors(ztml_env, uri) -> None:
    register_sklearn(ztml_env.url, "evidence-full", metrics=GOOD_METRICS)
    settings = load_settings()
    with pytest.raises(ModelNotFoundError):
        evidence.build(Registry(settings), settings, uri, "local")


def test_malformed_uri_is_a_clear_error(ztml_env) -> None:
    settings = load_settings()
    with pytest.raises(ModelNotFoundError, match="models:/NAME/VERSION"):
        evidence.build(Registry(settings), settings, "runs:/abc/model", "local")


def test_unreachable_mlflow_is_a_registry_error(monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    settings = load_settings()
    with pytest.raises(RegistryUnavailableError, match="cannot reach MLflow"):
        evidence.build(Registry(settings), settings, "models:/anything/1", "local")


def test_requirement_parsing_keeps_unpinned_and_odd_lines() -> None:
    deps = evidence.parse_requirements(
        "# comment\nnumpy>=1.20\nTorch==2.13.0+cpu\n-r other.txt\nscikit_learn==1.*\nnot a req !\n"
    )
    by_name = {d.name: d for d in deps}
    assert not by_name["numpy"].pinned and by_name["numpy"].specifier == ">=1.20"
    assert by_name["torch"].pinned and by_name["torch"].version == "2.13.0+cpu"
    assert not by_name["scikit-learn"].pinned
    assert "not a req !" in by_name
