from pathlib import Path

import pytest

from mlflow_ztml import manifest
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


def test_hand_written_manifest_round_trips_through_yaml() -> None:
    document = manifest.from_yaml(HAND_WRITTEN)
    assert document.spec.metrics["accuracy"] == 0.91
    assert document.spec.inference.gpu == 1
    again = manifest.from_yaml(document.to_yaml())
    assert again == document


def test_missing_sections_stay_missing_in_policy_input() -> None:
    document = manifest.from_yaml(HAND_WRITTEN.replace("  fairness:", "  # fairness:"))
    spec = document.policy_input()["spec"]
    assert "fairness" not in spec
    assert "serving" not in spec
    assert spec["drift"] == {"psi": 0.05}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kind: Deployment\napiVersion: apps/v1\n", "kind must be 'ModelDeployment'"),
        ("kind: ModelDeployment\napiVersion: v2\n", "apiVersion must be 'mlifecycle.io/v1'"),
        ("kind: [unclosed\n", "not valid YAML"),
        ("- just\n- a list\n", "expected a mapping"),
        (
            "apiVersion: mlifecycle.io/v1\nkind: ModelDeployment\nmetadata: {name: x}\n"
            "spec: {model: {name: x, uri: 'models:/x/1'}, metrics: {accuracy: high}}\n",
            "spec.metrics.accuracy",
        ),
        (
            "apiVersion: mlifecycle.io/v1\nkind: ModelDeployment\nmetadata: {name: x}\n"
            "spec: {model: {name: x, uri: 'models:/x/1'}, replicas: 3}\n",
            "spec.replicas",
        ),
    ],
)
def test_malformed_manifests_are_clear_errors(text: str, expected: str) -> None:
    with pytest.raises(ManifestError) as raised:
        manifest.from_yaml(text, origin="m.yaml")
    assert expected in str(raised.value)
    assert str(raised.value).startswith("m.yaml")


def test_unreadable_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ManifestError, match=r"nope\.yaml"):
        manifest.load(missing)
