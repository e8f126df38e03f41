"""The ModelDeployment schema: both spellings in, one canonical form out, errors in words."""

from __future__ import annotations

import copy
import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from mlflow_ztml import manifest
from mlflow_ztml.cli import main
from mlflow_ztml.errors import ManifestError

HAND_WRITTEN = """
apiVersion: mlifecycle.io/v1
kind: ModelDeployment
metadata:
  name: credit-risk
  labels: {team: risk}
spec:
  model:
    name: credit-risk
    version: "3"
    uri: models:/credit-risk/3
    framework: sklearn
    flavors: [python_function, sklearn]
    signature: {inputs: [{name: income, type: double}]}
  metrics: {accuracy: 0.91, f1_score: 0.88}
  fairness: {demographic_parity_difference: 0.03}
  drift: {psi: 0.05}
  dependencies:
    - {name: scikit-learn, specifier: "==1.9.1", pinned: true, version: 1.9.1,
       requirement: scikit-learn==1.9.1}
  data_sources:
    - {name: train, source: "s3://approved-data-credit/train.parquet"}
  inference: {replicas: 2, cpu: "1", memory: 2Gi, gpu: 1}
  monitoring: {latency_p99_ms: 50}
"""

# Our own manifest in the published mlifecycle.io/v1 shape: every kind of field that format
# has (training facts inside metrics, seed fairness names, requirement strings, Kubernetes
# resources, probes, monitoring, explainability, observability, rollback, previous_version).
PUBLISHED = """
apiVersion: mlifecycle.io/v1
kind: ModelDeployment
metadata:
  name: churn-scorer
  namespace: ml-serving
  labels: {app: churn-scorer, version: v1.4.2, team: growth, environment: staging}
spec:
  model:
    name: churn-scorer
    version: "1.4.2"
    uri: s3://approved-data-models/churn-scorer/v1.4.2
    framework: sklearn
    experiment_id: exp-churn-0042
    description: "Monthly churn propensity"
  metrics:
    accuracy: 0.91
    f1_score: 0.87
    auc_roc: 0.93
    training_date: "2025-03-01"
    training_duration_hours: 1.25
    training_samples: 48000
  fairness:
    demographic_parity: 0.04
    equalized_odds: 0.06
    evaluation_date: "2025-03-02"
    protected_attributes: [gender, region]
  drift:
    score: 0.07
    reference_dataset: "2025-02-baseline"
    monitored_features: [tenure_months, monthly_spend]
    last_evaluated: "2025-03-03"
  dependencies:
    - scikit-learn>=1.3.0
    - pandas==2.2.1
    - numpy
  data_sources:
    - source: crm-prod
      version: "2025-02"
      approved: true
      description: "CRM export"
    - source: s3://approved-data-features/churn/
      version: v7
      approved: false
  inference:
    replicas: 3
    latency_p99_ms: 42
    resources:
      requests: {cpu: "250m", memory: "512Mi"}
      limits: {cpu: "1", memory: "2Gi"}
    autoscaling: {minReplicas: 3, maxReplicas: 8, targetCPUUtilization: 65,
                  targetMemoryUtilization: 75}
    healthCheck: {path: /health, port: 8080, initialDelaySeconds: 20, periodSeconds: 15}
    readinessCheck: {path: /ready, port: 8080, initialDelaySeconds: 5, periodSeconds: 5}
  monitoring:
    enabled: true
    drift_detection: {enabled: true, schedule: "0 3 * * *", threshold: 0.25}
    alerting:
      enabled: true
      channels: [email, opsgenie]
      rules:
        - {name: errors, condition: "error_rate > 0.02", severity: critical}
  explainability:
    method: lime
    enabled: true
    feature_importance: [tenure_months, support_tickets]
  observability:
    metrics: {enabled: true, port: 9100, path: /metrics}
    logging: {level: DEBUG, format: text}
    tracing: {enabled: false, samplingRate: 0.05}
  rollback:
    enabled: true
    previousVersion: "1.4.1"
    triggers:
      - {type: error_rate, threshold: 0.02, window: 10m}
      - {type: latency_p99, threshold: 250ms, window: 5m}
  previous_version:
    version: "1.4.1"
    metrics: {accuracy: 0.9, f1_score: 0.86}
    inference: {latency_p99_ms: 40}
"""


def _published() -> dict[str, Any]:
    return yaml.safe_load(PUBLISHED)


def _canonical_path(path: tuple[Any, ...]) -> tuple[Any, ...]:
    """Where the mapping table of docs/manifest.md says a published value lives canonically."""
    moves = {
        ("spec", "metrics", "training_date"): ("spec", "training", "date"),
        ("spec", "metrics", "training_duration_hours"): ("spec", "training", "duration_hours"),
        ("spec", "metrics", "training_samples"): ("spec", "training", "samples"),
        ("spec", "fairness", "demographic_parity"): (
            "spec",
            "fairness",
            "demographic_parity_difference",
        ),
        ("spec", "fairness", "equalized_odds"): ("spec", "fairness", "equalized_odds_difference"),
        ("spec", "previous_version", "inference", "latency_p99_ms"): (
            "spec",
            "serving",
            "latency_p99_ms",
        ),
    }
    for size in range(len(path), 0, -1):
        if path[:size] in moves:
            return moves[path[:size]] + path[size:]
    if path[:2] == ("spec", "dependencies"):
        return (*path, "requirement")  # the requirement string is kept verbatim
    if path[:2] == ("spec", "previous_version"):
        return ("spec", "serving", *path[2:])
    return path


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    if isinstance(node, dict):
        return [leaf for k, v in node.items() for leaf in _leaves(v, (*path, k))]
    if isinstance(node, list) and not all(isinstance(i, str) for i in node):
        return [leaf for i, v in enumerate(node) for leaf in _leaves(v, (*path, i))]
    if isinstance(node, list) and path[:2] == ("spec", "dependencies"):
        return [((*path, i), v) for i, v in enumerate(node)]
    return [(path, node)]


def _at(document: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        document = document[step]
    return document


def _error(text: str) -> str:
    with pytest.raises(ManifestError) as raised:
        manifest.from_yaml(text, origin="m.yaml")
    return str(raised.value)


def _spec(extra: str) -> str:
    return (
        "apiVersion: mlifecycle.io/v1\nkind: ModelDeployment\nmetadata: {name: x}\nspec:\n"
        "  model: {name: x, uri: 'models:/x/1'}\n" + extra
    )


# --- the canonical form -----------------------------------------------------------------------


def test_hand_written_manifest_round_trips_through_yaml() -> None:
    document = manifest.from_yaml(HAND_WRITTEN)
    assert document.spec.metrics["accuracy"] == 0.91
    assert document.spec.inference.gpu == 1
    again = manifest.from_yaml(document.to_yaml())
    assert again == document


def test_flat_cpu_and_memory_are_resource_requests() -> None:
    inference = manifest.from_yaml(HAND_WRITTEN).to_dict()["spec"]["inference"]
    assert "cpu" not in inference and "memory" not in inference
    assert inference["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}}


def test_requested_size_falls_back_to_the_limit_like_kubernetes() -> None:
    only_limits = manifest.Inference.model_validate(
        {"resources": {"limits": {"cpu": "2", "memory": "4Gi"}, "requests": {"cpu": "500m"}}}
    )
    assert only_limits.requested("cpu") == "500m"
    assert only_limits.requested("memory") == "4Gi"
    assert manifest.Inference().requested("cpu") is None


def test_missing_sections_stay_missing_in_policy_input() -> None:
    document = manifest.from_yaml(HAND_WRITTEN.replace("  fairness:", "  # fairness:"))
    spec = document.policy_input()["spec"]
    assert "fairness" not in spec
    assert "serving" not in spec
    assert "training" not in spec
    assert spec["drift"] == {"psi": 0.05}


# --- the published format -------------------------------------------------------------------


def test_published_manifest_lands_in_canonical_places() -> None:
    document = manifest.from_yaml(PUBLISHED)
    spec = document.spec
    assert spec.metrics == {"accuracy": 0.91, "f1_score": 0.87, "auc_roc": 0.93}
    assert spec.training == manifest.Training(date="2025-03-01", duration_hours=1.25, samples=48000)
    assert spec.fairness is not None and spec.fairness.scores() == {
        "demographic_parity_difference": 0.04,
        "equalized_odds_difference": 0.06,
    }
    assert spec.fairness.protected_attributes == ["gender", "region"]
    assert spec.drift is not None and spec.drift.scores() == {"score": 0.07}
    deps = {d.name: d for d in spec.dependencies or []}
    assert deps["scikit-learn"].specifier == ">=1.3.0" and not deps["scikit-learn"].pinned
    assert deps["pandas"].pinned and deps["pandas"].version == "2.2.1"
    assert deps["numpy"].specifier == "" and deps["numpy"].requirement == "numpy"
    assert [s.approved for s in spec.data_sources or []] == [True, False]
    assert spec.inference.requested("cpu") == "250m"
    assert spec.inference.autoscaling is not None
    assert spec.inference.autoscaling.max_replicas == 8
    assert spec.serving == manifest.ServingVersion(
        version="1.4.1", metrics={"accuracy": 0.9, "f1_score": 0.86}, latency_p99_ms=40
    )
    assert spec.rollback is not None and spec.rollback.triggers is not None
    assert [t.threshold for t in spec.rollback.triggers] == [0.02, "250ms"]


def test_published_to_canonical_to_yaml_parses_to_the_same_canonical_model() -> None:
    canonical = manifest.from_yaml(PUBLISHED)
    text = canonical.to_yaml()
    assert manifest.from_yaml(text) == canonical
    # The canonical document is a fixed point of the conversion.
    written = yaml.safe_load(text)
    assert manifest.to_canonical(written).document == written
    assert "previous_version" not in written["spec"]
    assert "training_samples" not in written["spec"]["metrics"]


def test_every_published_value_is_in_the_canonical_form() -> None:
    published = _published()
    canonical = manifest.from_dict(copy.deepcopy(published)).to_dict()
    leaves = _leaves(published)
    assert len(leaves) > 80  # the fixture really covers the format
    for path, value in leaves:
        assert _at(canonical, _canonical_path(path)) == value, path


def test_any_entry_point_accepts_the_published_spelling() -> None:
    direct = manifest.ModelDeployment.model_validate(_published())
    assert direct == manifest.from_yaml(PUBLISHED)


def test_published_training_sample_size_is_samples() -> None:
    document = manifest.from_yaml(_spec("  training: {sample_size: 80}\n"))
    assert document.to_dict()["spec"]["training"] == {"samples": 80}


def test_unquoted_yaml_dates_keep_their_iso_text() -> None:
    document = manifest.from_yaml(_spec("  metrics: {training_date: 2025-03-01}\n"))
    assert document.spec.training is not None
    assert document.spec.training.date == "2025-03-01"
    assert isinstance(yaml.safe_load(document.to_yaml())["spec"]["training"]["date"], str)


def test_integer_versions_and_ids_are_text() -> None:
    document = manifest.from_yaml(
        _spec("  data_sources: [{source: crm, version: 3}]\n").replace(
            "uri: 'models:/x/1'", "uri: 'models:/x/1', version: 7, experiment_id: 12"
        )
    )
    assert document.spec.model.version == "7" and document.spec.model.experiment_id == "12"
    assert document.spec.data_sources is not None
    assert document.spec.data_sources[0].version == "3"


def test_the_same_value_twice_is_accepted_once() -> None:
    document = manifest.from_yaml(
        _spec("  metrics: {training_samples: 5}\n  training: {samples: 5}\n")
    )
    assert document.spec.training == manifest.Training(samples=5)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "  metrics: {training_samples: 5}\n  training: {samples: 6}\n",
            "spec.metrics.training_samples: 5 conflicts with spec.training.samples (6)",
        ),
        (
            "  fairness: {demographic_parity: 0.1, demographic_parity_difference: 0.2}\n",
            "spec.fairness.demographic_parity: 0.1 conflicts with "
            "spec.fairness.demographic_parity_difference (0.2)",
        ),
        (
            "  inference: {cpu: '1', resources: {requests: {cpu: '2'}}}\n",
            "spec.inference.cpu: '1' conflicts with spec.inference.resources.requests.cpu ('2')",
        ),
        (
            "  previous_version: {metrics: {}}\n  serving: {version: '1'}\n",
            "give either spec.previous_version or spec.serving, not both",
        ),
    ],
)
def test_a_value_given_twice_differently_is_an_error_not_a_choice(
    extra: str, expected: str
) -> None:
    assert expected in _error(_spec(extra))


# --- errors in words ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kind: Deployment\napiVersion: apps/v1\n", "kind must be 'ModelDeployment'"),
        ("kind: ModelDeployment\napiVersion: v2\n", "apiVersion must be 'mlifecycle.io/v1'"),
        ("kind: [unclosed\n", "not valid YAML"),
        ("- just\n- a list\n", "expected a mapping"),
        (
            _spec("  metrics: {accuracy: high}\n"),
            "spec.metrics.accuracy: expected a number, got the string 'high'",
        ),
        (_spec("  replicas: 3\n"), "spec.replicas: unknown field (known: environment, model,"),
        (_spec("  inference: [1]\n"), "spec.inference: expected a mapping, got a list"),
        (
            _spec("  inference: {replica: 2}\n"),
            "spec.inference.replica: unknown field (known: replicas,",
        ),
        (
            _spec("  inference: {health_check: {path: /h}}\n"),
            "spec.inference.health_check: unknown field",
        ),
        (
            _spec("  fairness: {protected_attributes: gender}\n"),
            "spec.fairness.protected_attributes: expected a list of strings, "
            "got the string 'gender'",
        ),
        (
            _spec("  fairness: {evalution_date: '2025-01-02'}\n"),
            "spec.fairness.evalution_date: expected a number, got the string '2025-01-02' "
            "(scores here are numbers; the other fields are evaluation_date, "
            "protected_attributes)",
        ),
        (
            _spec("  metrics: {training_samples: many}\n"),
            "spec.metrics.training_samples: expected a whole number, got the string 'many'",
        ),
        (_spec("  metrics: {accuracy: true}\n"), "spec.metrics.accuracy: expected a number"),
        (
            _spec("  dependencies: torch\n"),
            "spec.dependencies: expected a list of requirement strings (torch>=2.0.0) or "
            "mappings, got the string 'torch'",
        ),
        (
            _spec("  dependencies: ['torch >= = 2']\n"),
            "spec.dependencies[0]: expected a requirement such as torch>=2.0.0",
        ),
        (
            _spec("  data_sources: {source: crm}\n"),
            "spec.data_sources: expected a list of mappings, got a mapping",
        ),
        (
            _spec("  inference: {resources: {limits: {memory: lots}}}\n"),
            "spec.inference.resources.limits.memory: expected a Kubernetes quantity",
        ),
        (
            _spec("  inference: {autoscaling: {minReplicas: 5, maxReplicas: 2}}\n"),
            "spec.inference.autoscaling: minReplicas (5) is greater than maxReplicas (2)",
        ),
        (
            _spec("  inference: {readinessCheck: {port: 0}}\n"),
            "spec.inference.readinessCheck.port: must be at least 1, got 0",
        ),
        (
            _spec("  monitoring: {enabled: 'yes'}\n"),
            "spec.monitoring.enabled: expected true or false, got the string 'yes'",
        ),
        (
            _spec("  rollback: {triggers: [{type: x, threshold: soon, window: 5}]}\n"),
            "spec.rollback.triggers[0].threshold: expected a number or a duration",
        ),
        (
            _spec("  previous_version: {inference: {latency_p99_ms: fast}, extra: 1}\n"),
            "spec.previous_version.inference.latency_p99_ms: expected a number",
        ),
        (
            _spec("  previous_version: {extra: 1}\n"),
            "spec.previous_version.extra: unknown field (known: version, metrics, latency_p99_ms)",
        ),
        (_spec("  metrics: {val.acc: x}\n"), 'spec.metrics["val.acc"]: expected a number'),
        (
            _spec("  inference: {runtime: vm}\n"),
            "spec.inference.runtime: expected one of 'process', 'docker' or 'kubernetes'",
        ),
    ],
)
def test_malformed_manifests_are_clear_errors(text: str, expected: str) -> None:
    message = _error(text)
    assert expected in message
    assert message.startswith("m.yaml")
    for python_speak in ("Input should", "instance of", "dictionary", "Value error"):
        assert python_speak not in message


def test_every_problem_is_reported_at_once() -> None:
    message = _error(_spec("  metrics: {accuracy: high}\n  inference: {replicas: two}\n"))
    assert "spec.metrics.accuracy" in message and "spec.inference.replicas" in message


def test_unreadable_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ManifestError, match=r"nope\.yaml"):
        manifest.load(missing)


# --- through the CLI ------------------------------------------------------------------------


def test_gate_judges_a_published_manifest_instead_of_rejecting_its_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ZTML_CONFIG", raising=False)
    path = tmp_path / "published.yaml"
    path.write_text(PUBLISHED)
    result = CliRunner().invoke(main, ["gate", "-f", str(path), "--env", "staging"])
    assert result.exit_code in (0, 1), result.output  # a decision, not exit 2
    assert "invalid ModelDeployment" not in result.output
    broken = tmp_path / "broken.yaml"
    broken.write_text(PUBLISHED.replace("replicas: 3\n", "replicas: [3]\n"))
    result = CliRunner().invoke(main, ["gate", "-f", str(broken), "--env", "staging"])
    assert result.exit_code == 2
    assert "spec.inference.replicas: expected a whole number, got a list" in result.output


def test_dates_from_python_objects_are_text() -> None:
    training = manifest.Training.model_validate({"date": datetime.date(2025, 3, 1)})
    assert training.date == "2025-03-01"
