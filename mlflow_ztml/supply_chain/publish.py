"""Sign and attest an image that passed the gates: the pipeline's step after the scan allows.

`publish(...)` signs the image digest (cosign simple signing) and attaches three attestations
to it (the CycloneDX SBOM, the scan report, the governance decision for the environment), so
the evidence travels with the image to wherever it runs. It returns what to record: the
`signature` tag value (key id and digest, never signature bytes) and each signed in-toto
statement for the audit run.

Contract: with no signing key (`signing.key` unset or `signing.enabled: false`), or an image
that lives only in the local engine, nothing is signed and `Published.skipped` says why (the
`ztml.signature` policy then decides at start whether that image may run). With a key, any
failure raises SigningError: a run that was asked to sign never deploys an unsigned image.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mlflow_ztml.errors import SigningError
from mlflow_ztml.supply_chain.attestations import (
    DECISION_PREDICATE,
    SBOM_PREDICATE,
    SCAN_PREDICATE,
    Attestation,
    attest_image,
)
from mlflow_ztml.supply_chain.image_signatures import check_reference, sign_image
from mlflow_ztml.supply_chain.keys import load_signer
from mlflow_ztml.supply_chain.verification import registry_client

if TYPE_CHECKING:
    from mlflow_ztml.config import Settings
    from mlflow_ztml.policy.engine import Decision


@dataclass
class Published:
    """What `publish` did: `tag` for `ztml.<env>.signature`, statements for the audit run."""

    tag: str
    key_id: str | None = None
    digest: str | None = None
    skipped: str | None = None
    statements: dict[str, dict[str, Any]] = field(default_factory=dict)


def bundle_digest(settings: Settings) -> str:
    """`sha256:<hex>` of the policy bundle (modules and data) that decided: which rules and
    thresholds approved the image, recorded in its decision attestation."""
    from mlflow_ztml.policy.bundle import load_bundle

    bundle = load_bundle(settings)
    material = json.dumps(
        {"modules": bundle.modules, "data": bundle.data}, sort_keys=True, separators=(",", ":")
    )
    return "sha256:" + hashlib.sha256(material.encode()).hexdigest()


def decision_predicate(
    settings: Settings,
    model: str,
    version: str,
    environment: str,
    governance: Decision,
    scan_decision: Decision | None,
) -> dict[str, Any]:
    return {
        "model": model,
        "version": str(version),
        "environment": environment,
        "policy_bundle_digest": bundle_digest(settings),
        "allow": bool(governance.allow and (scan_decision is None or scan_decision.allow)),
        "governance_allow": governance.allow,
        "scan_allow": None if scan_decision is None else scan_decision.allow,
        "deny": list(governance.deny) + (list(scan_decision.deny) if scan_decision else []),
        "warn": list(governance.warn) + (list(scan_decision.warn) if scan_decision else []),
        "engine": governance.engine,
        "decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def publish(
    settings: Settings,
    image: str,
    *,
    model: str,
    version: str,
    environment: str,
    governance: Decision,
    scan_decision: Decision | None = None,
    scan_report: dict[str, Any] | None = None,
    sbom: str | None = None,
) -> Published:
    """Sign `image` and attach its attestations (see the module docstring)."""
    signer = load_signer(settings)
    if signer is None:
        reason = (
            "signing disabled (signing.enabled: false)"
            if not settings.signing.enabled
            else "no signing key configured (signing.key)"
        )
        return Published(tag=f"unsigned: {reason}", skipped=reason)
    if image.startswith("sha256:"):
        reason = "image not pushed to a registry (set build.registry): signatures live there"
        return Published(tag=f"unsigned: {reason}", skipped=reason)
    reference = check_reference(image)
    client = registry_client(settings, reference.host)
    record = sign_image(client, reference, signer)
    published = Published(tag=record.tag_value(), key_id=record.key_id, digest=record.digest)
    if not settings.signing.attest:
        return published
    attestations = [
        Attestation(
            DECISION_PREDICATE,
            decision_predicate(settings, model, version, environment, governance, scan_decision),
            environment,
        )
    ]
    if scan_report is not None:
        attestations.append(Attestation(SCAN_PREDICATE, scan_report))
    if sbom:
        try:
            attestations.append(Attestation(SBOM_PREDICATE, json.loads(sbom)))
        except ValueError:
            raise SigningError("the scan's SBOM is not JSON: cannot attest it") from None
    resolved = reference.with_digest(record.digest)
    for written in attest_image(client, resolved, signer, attestations):
        published.statements[_artifact_name(written.predicate_type)] = written.statement
    return published


def _artifact_name(predicate_type: str) -> str:
    return {
        DECISION_PREDICATE: "decision",
        SCAN_PREDICATE: "scan-report",
        SBOM_PREDICATE: "sbom",
    }.get(predicate_type, "attestation")
