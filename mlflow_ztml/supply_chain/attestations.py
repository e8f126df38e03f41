"""in-toto attestations about an image, in DSSE envelopes, stored the way cosign stores them.

Each attestation is an in-toto Statement (v1; verifiers also accept cosign's older v0.1) whose
subject is
the image's repository and manifest digest, wrapped in a DSSE envelope signed with the ztml key
over DSSE's pre-authentication encoding:

    PAE = "DSSEv1" SP len(type) SP type SP len(body) SP body, type = application/vnd.in-toto+json

Envelopes are layers (media type `application/vnd.dsse.envelope.v1+json`, annotation
`predicateType`) of the manifest tagged `sha256-<hex>.att`, which `cosign verify-attestation
--key --type URI`, Kyverno `attestations` and sigstore policy-controller read.

Predicates ztml attaches:
- `https://cyclonedx.org/bom`: the CycloneDX SBOM of the scan;
- `https://mlifecycle.io/ztml/scan-report/v1`: ztml's scan report (scan.ScanReport);
- `https://mlifecycle.io/ztml/decision/v1`: the governance decision, `{model, version,
  environment, policy_bundle_digest, allow, scan_allow, deny, warn, decided_at}`. Runtimes
  require one for their environment before they start the image.
A new attestation replaces an earlier one of the same predicate type (and, for decisions, the
same environment) so the manifest does not grow with every redeploy.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from mlflow_ztml.errors import SigningError
from mlflow_ztml.supply_chain.image_signatures import SIGNATURE_ANNOTATION
from mlflow_ztml.supply_chain.keys import Signer, Verifier
from mlflow_ztml.supply_chain.registry_client import (
    ImageReference,
    Layer,
    RegistryClient,
    read_attachment,
    write_attachment,
)

ATTESTATION_SUFFIX = "att"
DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
STATEMENT_TYPES = (STATEMENT_TYPE, "https://in-toto.io/Statement/v0.1")
PREDICATE_ANNOTATION = "predicateType"
ENVIRONMENT_ANNOTATION = "io.mlifecycle.ztml/environment"
SBOM_PREDICATE = "https://cyclonedx.org/bom"
SCAN_PREDICATE = "https://mlifecycle.io/ztml/scan-report/v1"
DECISION_PREDICATE = "https://mlifecycle.io/ztml/decision/v1"
MAX_ATTESTATION_LAYERS = 64


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what the envelope signature covers."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(body), body)


def statement(image: ImageReference, predicate_type: str, predicate: Any) -> dict[str, Any]:
    assert image.digest
    return {
        "_type": STATEMENT_TYPE,
        "predicateType": predicate_type,
        "subject": [{"name": image.name, "digest": {"sha256": image.digest.split(":", 1)[1]}}],
        "predicate": predicate,
    }


def envelope(signer: Signer, body: bytes) -> bytes:
    signature = signer.sign(pae(IN_TOTO_PAYLOAD_TYPE, body))
    document = {
        "payloadType": IN_TOTO_PAYLOAD_TYPE,
        "payload": base64.b64encode(body).decode(),
        "signatures": [{"keyid": "", "sig": base64.b64encode(signature).decode()}],
    }
    return json.dumps(document, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Attestation:
    """One predicate to attach; `environment` marks decisions (one per environment)."""

    predicate_type: str
    predicate: Any
    environment: str | None = None

    def annotations(self) -> dict[str, str]:
        annotations = {SIGNATURE_ANNOTATION: "", PREDICATE_ANNOTATION: self.predicate_type}
        if self.environment:
            annotations[ENVIRONMENT_ANNOTATION] = self.environment
        return annotations


@dataclass(frozen=True)
class AttestationRecord:
    predicate_type: str
    digest: str
    statement: dict[str, Any]


def attest_image(
    client: RegistryClient,
    image: ImageReference,
    signer: Signer,
    attestations: list[Attestation],
) -> list[AttestationRecord]:
    """Sign and attach `attestations` to `image` (resolved to its digest) in one manifest
    write. Returns each signed statement (for the audit run)."""
    image = client.resolve(image)
    existing = read_attachment(client, image, ATTESTATION_SUFFIX)
    replaced = {(a.predicate_type, a.environment) for a in attestations}
    keep = [d for d in existing if _identity(d) not in replaced]
    layers, records = [], []
    for attestation in attestations:
        document = statement(image, attestation.predicate_type, attestation.predicate)
        body = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
        layers.append(Layer(envelope(signer, body), DSSE_MEDIA_TYPE, attestation.annotations()))
        records.append(AttestationRecord(attestation.predicate_type, image.digest, document))  # type: ignore[arg-type]
    write_attachment(client, image, ATTESTATION_SUFFIX, layers, keep)
    return records


def _identity(descriptor: dict[str, Any]) -> tuple[str | None, str | None]:
    annotations = descriptor.get("annotations") or {}
    return annotations.get(PREDICATE_ANNOTATION), annotations.get(ENVIRONMENT_ANNOTATION)


@dataclass(frozen=True)
class VerifiedStatement:
    predicate_type: str
    predicate: Any


@dataclass
class AttestationScan:
    """Every attestation of one predicate type: the ones that verified, and the problems."""

    verified: list[VerifiedStatement] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    found: int = 0


def verified_attestations(
    client: RegistryClient, image: ImageReference, verifier: Verifier, predicate_type: str
) -> AttestationScan:
    """The statements of `predicate_type` attached to `image` whose envelope verifies with
    `verifier` and whose subject is this image's digest. Layers of other predicate types are
    not downloaded (SBOMs can be large)."""
    assert image.digest
    scan = AttestationScan()
    for descriptor in read_attachment(client, image, ATTESTATION_SUFFIX)[:MAX_ATTESTATION_LAYERS]:
        if descriptor.get("mediaType") != DSSE_MEDIA_TYPE:
            continue
        annotated = (descriptor.get("annotations") or {}).get(PREDICATE_ANNOTATION)
        if annotated not in (None, predicate_type):
            continue
        scan.found += 1
        try:
            data = client.get_blob(image.repository, descriptor["digest"])
            document = json.loads(data)
            body = base64.b64decode(document["payload"])
            signatures = [base64.b64decode(s["sig"]) for s in document.get("signatures", [])]
        except (SigningError, ValueError, KeyError, TypeError):
            scan.problems.append("an attestation layer is not a DSSE envelope")
            continue
        payload_type = document.get("payloadType")
        if payload_type != IN_TOTO_PAYLOAD_TYPE:
            scan.problems.append(f"attestation payload type is {payload_type!r}")
            continue
        message = pae(payload_type, body)
        if not any(verifier.verify(message, sig) for sig in signatures):
            scan.problems.append("attestation signed by another key or altered")
            continue
        try:
            content = json.loads(body)
        except ValueError:
            scan.problems.append("attestation payload is not JSON")
            continue
        problem = _statement_problem(content, image, predicate_type)
        if problem:
            scan.problems.append(problem)
            continue
        scan.verified.append(VerifiedStatement(predicate_type, content.get("predicate")))
    return scan


def _statement_problem(content: Any, image: ImageReference, predicate_type: str) -> str | None:
    if not isinstance(content, dict) or content.get("_type") not in STATEMENT_TYPES:
        return "attestation is not an in-toto statement"
    if content.get("predicateType") != predicate_type:
        return f"attestation predicate is {content.get('predicateType')}"
    hexdigest = image.digest.split(":", 1)[1]  # type: ignore[union-attr]
    subjects = content.get("subject") or []
    if not any((s.get("digest") or {}).get("sha256") == hexdigest for s in subjects):
        return "attestation is about another image digest"
    return None
