"""The inference chart's admission policy (values `admissionPolicy`), rendered with the real Helm
engine and validated against the custom resource's own published schema.

No admission controller can run here (no cluster), so what is checked is what the cluster
would receive: a Kyverno `ClusterPolicy` (kyverno.io/v1) or a sigstore policy-controller
`ClusterImagePolicy` (policy.sigstore.dev/v1beta1) that the CRD's openAPIV3Schema accepts with
unknown fields forbidden (kubectl's strict field validation), carrying the signing public key
and covering the release's image; the rest of the release still passes the deployment policy
and trivy.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mlflow_ztml.policy.bundle import load_bundle
from mlflow_ztml.policy.regorus import RegorusEngine
from tests.helm.conftest import (
    IMAGE,
    INFERENCE,
    MODEL,
    REGISTRY,
    helm,
    render,
    trivy_findings,
    validate,
    write_objects,
)

HERE = Path(__file__).resolve().parent
SCHEMAS = {
    "ClusterPolicy": HERE / "kyverno-clusterpolicy-v1.schema.json",
    "ClusterImagePolicy": HERE / "sigstore-clusterimagepolicy-v1beta1.schema.json",
}
ENGINES = {"kyverno": "ClusterPolicy", "sigstore": "ClusterImagePolicy"}
DECISION_TYPE = "https://mlifecycle.io/ztml/decision/v1"


def _public_key() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


PUBLIC_KEY = _public_key()


def _strict(schema: Any) -> Any:
    """The CRD schema with unknown fields forbidden wherever it lists the properties (the API
    server prunes or, with strict field validation, rejects them)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        open_ended = "additionalProperties" in out or out.get(
            "x-kubernetes-preserve-unknown-fields"
        )
        if "properties" in out and not open_ended:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def schema_errors(obj: dict[str, Any]) -> list[str]:
    schema = json.loads(SCHEMAS[obj["kind"]].read_text())
    schema.pop("$comment")
    for field in ("apiVersion", "kind"):  # every object has them, whether the CRD lists them
        schema["properties"].setdefault(field, {"type": "string"})
    schema["properties"].setdefault("metadata", {"type": "object"})
    validator = jsonschema.Draft7Validator(_strict(schema))
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)
    ]


def chart_values(**policy: Any) -> dict[str, Any]:
    return {
        "preset": "production",
        "environment": "production",
        "image": IMAGE,
        "model": MODEL,
        "admissionPolicy": {"enabled": True, "publicKey": PUBLIC_KEY, **policy},
    }


def policies(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in SCHEMAS]


def test_off_by_default() -> None:
    assert policies(render(INFERENCE, {"image": IMAGE, "model": MODEL})) == []


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("attestations", [[], [DECISION_TYPE]])
def test_the_policy_validates_against_its_crd_schema(engine: str, attestations: list) -> None:
    objects = render(INFERENCE, chart_values(engine=engine, attestations=attestations))
    [policy] = policies(objects)
    assert policy["kind"] == ENGINES[engine]
    assert schema_errors(policy) == []
    assert validate([o for o in objects if o is not policy]) == []


def test_the_strict_schema_catches_a_misspelt_field() -> None:
    """The check above has teeth: one unknown field (what a template typo makes) fails."""
    [policy] = policies(render(INFERENCE, chart_values(engine="kyverno")))
    broken = copy.deepcopy(policy)
    broken["spec"]["rules"][0]["verifyImages"][0]["attestor"] = []
    assert any("attestor" in error for error in schema_errors(broken))
    broken = copy.deepcopy(policy)
    broken["spec"]["rules"][0]["verifyImages"][0]["failureAction"] = "Deny"
    assert schema_errors(broken)


def test_kyverno_policy_checks_the_release_image_with_the_key() -> None:
    [policy] = policies(
        render(INFERENCE, chart_values(engine="kyverno", attestations=[DECISION_TYPE]))
    )
    assert policy["metadata"]["name"] == "ztml-models-credit-risk-prod"
    rule = policy["spec"]["rules"][0]
    resources = rule["match"]["any"][0]["resources"]
    assert resources["kinds"] == ["Pod"] and resources["namespaces"] == ["models"]
    assert resources["selector"]["matchLabels"]["app.kubernetes.io/instance"] == "credit-risk-prod"
    [verify] = rule["verifyImages"]
    assert verify["imageReferences"] == [f"{IMAGE['repository']}*"]
    assert verify["failureAction"] == "Enforce" and verify["required"] is True
    key = verify["attestors"][0]["entries"][0]["keys"]
    assert key["publicKeys"] == PUBLIC_KEY.strip()
    assert key["rekor"] == {"ignoreTlog": True}
    [attestation] = verify["attestations"]
    assert attestation["type"] == DECISION_TYPE
    assert attestation["attestors"][0]["entries"][0]["keys"]["publicKeys"] == PUBLIC_KEY.strip()


def test_sigstore_policy_checks_the_release_image_with_the_key() -> None:
    images = [f"{REGISTRY}/ztml-models/**"]
    [policy] = policies(
        render(
            INFERENCE,
            chart_values(engine="sigstore", images=images, attestations=[DECISION_TYPE]),
        )
    )
    assert policy["spec"]["images"] == [{"glob": images[0]}]
    [authority] = policy["spec"]["authorities"]
    assert authority["key"]["data"] == PUBLIC_KEY.strip()
    assert "ctlog" not in authority  # key-signed: no transparency log
    assert authority["attestations"] == [
        {"name": "ztml-attestation-0", "predicateType": DECISION_TYPE}
    ]


def test_enabled_without_a_key_fails_with_the_value_name() -> None:
    values = chart_values()
    values["admissionPolicy"]["publicKey"] = ""
    with helm.Chart.load(INFERENCE) as chart, pytest.raises(helm.HelmError) as caught:
        chart.render(values, name="credit-risk-prod", namespace="models", is_install=True)
    assert "admissionPolicy.publicKey is required" in str(caught.value)


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        ({"engine": "gatekeeper"}, "/admissionPolicy/engine"),
        ({"publicKey": "not a key"}, "/admissionPolicy/publicKey"),
        ({"failureAction": "Deny"}, "/admissionPolicy/failureAction"),
    ],
)
def test_a_wrong_value_is_a_schema_error_naming_it(policy: dict[str, Any], field: str) -> None:
    with helm.Chart.load(INFERENCE) as chart, pytest.raises(helm.HelmValuesError) as caught:
        chart.render(chart_values(**policy), name="credit-risk-prod", namespace="models")
    assert field in str(caught.value)


def test_the_release_with_the_policy_passes_the_deployment_policy_and_trivy(
    tmp_path: Path,
) -> None:
    bundle = load_bundle()
    for environment in bundle.data["ztml"]["environments"].values():
        environment["deployment"]["approved_registries"] = [REGISTRY]
    engine = RegorusEngine.from_bundle(bundle)
    for name in ENGINES:
        objects = render(INFERENCE, chart_values(engine=name, attestations=[DECISION_TYPE]))
        decision = engine.decide(
            "ztml.deployment", {"environment": "production", "objects": objects}
        )
        assert decision.allow, decision.deny
        write_objects(tmp_path, objects, name)
    findings = trivy_findings(tmp_path)
    assert findings == [], [f"{f['target']}: {f['ID']} {f['Title']}" for f in findings]
