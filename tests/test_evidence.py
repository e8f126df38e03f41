"""Evidence read from a real `mlflow server` into the manifest."""

from __future__ import annotations

import mlflow
import pytest

from mlflow_ztml import evidence, manifest, requirements
from mlflow_ztml.config import load_settings
from mlflow_ztml.errors import ConfigError, ModelNotFoundError, RegistryUnavailableError
from mlflow_ztml.registry import Registry, add_run, facts_of_version
from tests.controller.helpers import counting
from tests.mlflow_server import free_port
from tests.models import GOOD_METRICS, TRAINING_ROWS, register_sklearn, training_frame


def test_full_evidence_from_metrics_tags_requirements_and_datasets(ztml_env) -> None:
    version = register_sklearn(
        ztml_env.url,
        "evidence-full",
        metrics={**GOOD_METRICS, "val_loss": 0.3},
        run_tags={"fairness.equalized_odds": "0.07", "drift.feature_age": "0.12"},
        version_tags={"owner": "risk-team", "drift.feature_income": "0.2"},
    )
    settings = load_settings()
    registry = Registry(settings)
    document = evidence.build(registry, settings, f"models:/evidence-full/{version}", "staging")
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
    assert spec.fairness is not None and spec.fairness.scores() == {
        "demographic_parity_difference": 0.04,
        "equalized_odds_difference": 0.05,  # the run metric wins over the run tag
    }
    assert spec.drift is not None
    assert spec.drift.scores() == {"psi": 0.02, "feature_age": 0.12, "feature_income": 0.2}
    deps = {d.name: d for d in spec.dependencies}
    assert deps["scikit-learn"].pinned and deps["scikit-learn"].version == "1.9.1"
    assert deps["mlflow"].version == mlflow.__version__
    [source] = spec.data_sources
    assert source.source == "s3://approved-data-credit/train.parquet"
    assert source.digest and source.context == "training"
    assert spec.inference.replicas == 2  # staging preset
    # The training dataset's profiled row count.
    assert spec.training is not None and spec.training.samples == TRAINING_ROWS
    # The staging preset's size, as requests and limits (what the runtimes apply).
    assert spec.inference.resources is not None
    assert spec.inference.resources.model_dump() == {
        "requests": {"cpu": "1000m", "memory": "1Gi"},
        "limits": {"cpu": "1000m", "memory": "1Gi"},
    }
    assert spec.monitoring is not None and spec.monitoring.enabled is True
    # What the gate judged is what ztml manifest prints and the audit run stores.
    assert manifest.from_yaml(document.to_yaml()) == document

    # A version's files never change: the gate's requirements check (which reads the MLmodel
    # and requirements.txt as the evidence did) costs MLflow nothing more.
    with counting(ztml_env.url) as seen:
        requirements.for_model(registry, settings, f"models:/evidence-full/{version}", "process")
    assert seen == []
    # The controller's poll reads runs in bulk: the same evidence `resolve` reads one by one
    # (the rejected fingerprint is compared across both).
    facts = registry.resolve(f"models:/evidence-full/{version}")
    bulk = facts_of_version(registry.client.get_model_version("evidence-full", version))
    add_run(bulk, registry.runs([facts.run_id])[facts.run_id])
    assert (bulk.run_metrics, bulk.run_tags, bulk.datasets, bulk.experiment_id) == (
        facts.run_metrics,
        facts.run_tags,
        facts.datasets,
        facts.experiment_id,
    )


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
    for missing in ("fairness", "drift", "data_sources", "serving", "training"):
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
    assert document.spec.fairness is not None
    assert document.spec.fairness.scores() == {"demographic_parity_difference": 0.02}


def test_training_samples_come_from_the_largest_training_dataset(ztml_env) -> None:
    version = register_sklearn(
        ztml_env.url,
        "evidence-samples",
        metrics=GOOD_METRICS,
        data_sources=("s3://approved-data-credit/a.parquet", "s3://approved-data-credit/b.pq"),
    )
    mlflow.set_tracking_uri(ztml_env.url)
    run_id = mlflow.MlflowClient().get_model_version("evidence-samples", version).run_id
    frame, _ = training_frame(rows=TRAINING_ROWS + 250)
    bigger = mlflow.data.from_pandas(frame, source="s3://approved-data-credit/c.pq", name="big")
    held_out = mlflow.data.from_pandas(
        training_frame(rows=TRAINING_ROWS + 900)[0],
        source="s3://approved-data-credit/d.pq",
        name="eval",
    )
    with mlflow.start_run(run_id=run_id):
        mlflow.log_input(bigger, context="training")
        mlflow.log_input(held_out, context="evaluation")  # not training data
    settings = load_settings()
    document = evidence.build(
        Registry(settings), settings, f"models:/evidence-samples/{version}", "local"
    )
    assert document.spec.training == manifest.Training(samples=TRAINING_ROWS + 250)


def test_fairness_and_drift_metadata_come_from_tags(ztml_env) -> None:
    version = register_sklearn(
        ztml_env.url,
        "evidence-metadata",
        metrics=GOOD_METRICS,
        run_tags={
            "fairness.evaluation_date": "2025-03-02",
            "fairness.protected_attributes": "gender, region",
            "drift.reference_dataset": "2025-02-baseline",
        },
        version_tags={"drift.monitored_features": '["tenure", "spend"]'},
    )
    settings = load_settings()
    spec = evidence.build(
        Registry(settings), settings, f"models:/evidence-metadata/{version}", "local"
    ).spec
    assert spec.fairness is not None and spec.drift is not None
    assert spec.fairness.evaluation_date == "2025-03-02"
    assert spec.fairness.protected_attributes == ["gender", "region"]
    assert spec.drift.reference_dataset == "2025-02-baseline"
    assert spec.drift.monitored_features == ["tenure", "spend"]
    assert spec.drift.scores() == {"psi": 0.02}  # metadata is never a score


def test_resources_and_monitoring_come_from_the_environment(ztml_env, tmp_path) -> None:
    version = register_sklearn(ztml_env.url, "evidence-env", metrics=GOOD_METRICS)
    (tmp_path / "ztml.yaml").write_text(
        "environments:\n"
        "  qa:\n"
        "    inference: {resources: {cpu: 750m, memory: 3Gi}}\n"
        "    notifications:\n"
        "      - {kind: slack, url_env: QA_SLACK_URL}\n"
        "      - {kind: webhook, url_env: QA_HOOK_URL}\n"
        "  audit:\n"
        "    monitoring:\n"
        "      enabled: false\n"
        "      drift_detection: {enabled: true, schedule: '0 3 * * *', threshold: 0.2}\n"
    )
    settings = load_settings()
    uri = f"models:/evidence-env/{version}"
    qa = evidence.build(Registry(settings), settings, uri, "qa").spec
    assert qa.inference.requested("cpu") == "750m" and qa.inference.requested("memory") == "3Gi"
    assert qa.inference.resources is not None and qa.inference.resources.limits is not None
    assert qa.inference.resources.limits.memory == "3Gi"
    assert qa.monitoring is not None and qa.monitoring.enabled is True
    assert qa.monitoring.alerting == manifest.Alerting(enabled=True, channels=["slack", "webhook"])
    audit = evidence.build(Registry(settings), settings, uri, "audit").spec
    assert audit.monitoring is not None
    assert audit.monitoring.enabled is False  # declared, not overridden
    assert audit.monitoring.drift_detection == manifest.DriftDetection(
        enabled=True, schedule="0 3 * * *", threshold=0.2
    )
    assert audit.monitoring.alerting is None  # no notifications, nothing declared


def test_an_environment_with_a_malformed_monitoring_section_is_a_config_error(
    ztml_env, tmp_path
) -> None:
    (tmp_path / "ztml.yaml").write_text(
        "environments:\n  qa:\n    monitoring: {alerting: {channels: slack}}\n"
    )
    with pytest.raises(ConfigError, match=r"environments\.qa\.monitoring\.alerting\.channels"):
        load_settings()


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
