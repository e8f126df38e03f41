"""The governance gate: may this ModelDeployment run in this environment?

One function of its inputs: it builds the policy input envelope
`{"environment": ENV, "manifest": <manifest dict>}` and asks the engine for the
`ztml.governance` package. Missing evidence is absent from the manifest dict (never 0), so
the policy can deny "no fairness evaluation recorded". Like every engine call it fails
closed: whatever goes wrong comes back as a denying Decision, never as an exception.
"""

from __future__ import annotations

from typing import Any

from mlflow_ztml.manifest import ModelDeployment
from mlflow_ztml.policy.engine import Decision, PolicyEngine

GOVERNANCE_PACKAGE = "ztml.governance"


def policy_input(manifest: ModelDeployment, environment: str) -> dict[str, Any]:
    """The document the governance policy sees as `input`."""
    return {"environment": environment, "manifest": manifest.policy_input()}


def evaluate(manifest: ModelDeployment, environment: str, engine: PolicyEngine) -> Decision:
    """The governance decision for `manifest` in `environment` (a deny on any error)."""
    try:
        document = policy_input(manifest, environment)
    except Exception as exc:  # a manifest that cannot be serialised is still a deny
        return Decision.failed(engine.name, GOVERNANCE_PACKAGE, f"cannot build policy input: {exc}")
    return engine.decide(GOVERNANCE_PACKAGE, document)
