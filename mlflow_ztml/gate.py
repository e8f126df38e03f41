"""The governance gate: may this ModelDeployment run in this environment?

One function of its inputs: it builds the policy input envelope
`{"environment": ENV, "manifest": <manifest dict>, "requirements": <report>}` and asks the
engine for the `ztml.governance` package. Missing evidence is absent from the manifest dict
(never 0), so the policy can deny "no fairness evaluation recorded". `requirements` is the
`RequirementsReport` (mlflow_ztml/requirements.py): whether the place the model runs can install
and load it; the caller computes it (it reads the model and the package indexes) and the policy
decides on its findings like on any other evidence. Like every engine call it fails closed:
whatever goes wrong comes back as a denying Decision, never as an exception.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from mlflow_ztml.errors import PolicyError
from mlflow_ztml.manifest import ModelDeployment
from mlflow_ztml.policy.engine import Decision, PolicyEngine, RuleCheck, parse_checks

if TYPE_CHECKING:  # the gate itself needs only the report's policy_input()
    from mlflow_ztml.requirements import RequirementsReport

GOVERNANCE_PACKAGE = "ztml.governance"
log = logging.getLogger(__name__)


def policy_input(
    manifest: ModelDeployment,
    environment: str,
    requirements: RequirementsReport | None = None,
) -> dict[str, Any]:
    """The document the governance policy sees as `input`."""
    document: dict[str, Any] = {"environment": environment, "manifest": manifest.policy_input()}
    if requirements is not None:
        document["requirements"] = requirements.policy_input()
    return document


def evaluate(
    manifest: ModelDeployment,
    environment: str,
    engine: PolicyEngine,
    requirements: RequirementsReport | None = None,
    *,
    explain: bool = False,
) -> Decision:
    """The governance decision for `manifest` in `environment` (a deny on any error).

    With `explain`, the decision also lists every rule with its observed value, threshold and
    result (`Decision.checks`, the policy's `checks`): for people (the audit report, `ztml
    gate`). Deciding alone never evaluates them, so the hot path stays as cheap as it was.
    """
    try:
        document = policy_input(manifest, environment, requirements)
    except Exception as exc:  # a manifest that cannot be serialised is still a deny
        return Decision.failed(engine.name, GOVERNANCE_PACKAGE, f"cannot build policy input: {exc}")
    decision = engine.decide(GOVERNANCE_PACKAGE, document)
    if explain and not decision.checks and decision.error is None:
        decision.checks = _checks(engine, document)
    return decision


def _checks(engine: PolicyEngine, document: dict[str, Any]) -> list[RuleCheck]:
    """The policy's `checks` from an engine that answers queries (regorus); an engine that
    answers whole package documents (OPA) already put them in its Decision."""
    query = getattr(engine, "evaluate", None)
    if query is None:
        return []
    try:
        return parse_checks(query(f"data.{GOVERNANCE_PACKAGE}.checks", document))
    except PolicyError as exc:  # an explanation that cannot be computed is not a deny
        log.warning("policy checks not evaluated: %s", exc)
        return []
