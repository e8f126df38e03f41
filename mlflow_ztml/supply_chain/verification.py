"""Verify an image before it runs: its signature and its decision attestation, judged by policy.

`inspect_image` gathers facts (never raises for what it finds: an unsigned image is a fact,
not an error); the `ztml.signature` Rego policy (`policies/signature/signature.rego`) turns
them into deny/warn per environment, from `data.ztml.environments[ENV].signature.enforcement`.
`verify_before_start` is what the docker and kubernetes runtimes call before they start
anything: on a deny it raises `ImageVerificationDenied` (a DeploymentPolicyError, so the
pipeline records `rejected` with the reasons as tags and keeps the serving version).

What is checked is what would run: a tag is resolved to its digest in the registry first, so
an image pushed over a signed one under the same tag has a different, unsigned digest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from mlflow_ztml.errors import DeploymentPolicyError, SigningError, ZtmlError
from mlflow_ztml.supply_chain.attestations import DECISION_PREDICATE, verified_attestations
from mlflow_ztml.supply_chain.image_signatures import (
    check_reference,
    verify_image_signature,
)
from mlflow_ztml.supply_chain.keys import Verifier, load_verifier
from mlflow_ztml.supply_chain.registry_client import ImageReference, RegistryClient

if TYPE_CHECKING:
    from mlflow_ztml.config import Settings
    from mlflow_ztml.policy.engine import Decision, PolicyEngine
    from mlflow_ztml.runtimes.base import DeploymentSpec

SIGNATURE_PACKAGE = "ztml.signature"
log = logging.getLogger(__name__)

AttestationState = Literal[
    "verified", "missing", "invalid", "other_environment", "denied", "mismatch", "unchecked"
]


class ImageVerification(BaseModel):
    """The facts about one image for one environment (the `ztml.signature` policy input)."""

    image: str
    environment: str
    digest: str | None = None
    key_id: str | None = None
    verifiable: bool = False
    unverifiable_reason: str | None = None
    signature: Literal["verified", "missing", "invalid", "unchecked"] = "unchecked"
    signature_detail: str = ""
    attestation: AttestationState = "unchecked"
    attestation_detail: str = ""
    attested_environments: list[str] = Field(default_factory=list)
    decision: dict[str, Any] | None = None

    def summary(self) -> str:
        """One line for tags and CLI output."""
        if not self.verifiable:
            return f"unverified ({self.unverifiable_reason})"
        return (
            f"signature={self.signature} attestation={self.attestation} key={self.key_id} "
            f"digest={self.digest}"
        )


def registry_client(settings: Settings, host: str) -> RegistryClient:
    """A client for `host` with the build's credentials (ECR via boto3, password env var),
    else Docker's config.json."""
    from mlflow_ztml.build import registry_auth

    try:
        auth = registry_auth(host, settings.build)
    except ZtmlError as exc:
        raise SigningError(str(exc)) from None
    credentials = (auth.username, auth.password) if auth else None
    return RegistryClient(host, credentials, timeout=settings.signing.timeout_seconds)


def inspect_image(
    settings: Settings,
    image: str,
    environment: str,
    *,
    model_name: str | None = None,
    model_version: str | None = None,
    verifier: Verifier | None = None,
    client: RegistryClient | None = None,
) -> ImageVerification:
    """Check `image`'s signature and its decision attestation for `environment` (and, when
    given, for this model version). Key or registry problems become `verifiable: false`."""
    facts = ImageVerification(image=image, environment=environment)
    try:
        verifier = verifier or load_verifier(settings)
        if verifier is None:
            facts.unverifiable_reason = (
                "no verification key configured (signing.public_key or signing.key)"
            )
            return facts
        reference = check_reference(image)
        client = client or registry_client(settings, reference.host)
        reference = client.resolve(reference)
    except SigningError as exc:
        facts.unverifiable_reason = str(exc)
        return facts
    facts.verifiable, facts.digest, facts.key_id = True, reference.digest, verifier.key_id
    try:
        check = verify_image_signature(client, reference, verifier)
        facts.signature, facts.signature_detail = check.state, check.detail
        _check_decision(facts, client, reference, verifier, model_name, model_version)
    except SigningError as exc:  # the registry failed mid-way: nothing is verified
        facts.verifiable, facts.unverifiable_reason = False, str(exc)
    return facts


def _check_decision(
    facts: ImageVerification,
    client: RegistryClient,
    reference: ImageReference,
    verifier: Verifier,
    model_name: str | None,
    model_version: str | None,
) -> None:
    scan = verified_attestations(client, reference, verifier, DECISION_PREDICATE)
    decisions = [s.predicate for s in scan.verified if isinstance(s.predicate, dict)]
    facts.attested_environments = sorted({str(d.get("environment")) for d in decisions})
    if not decisions:
        if scan.found:
            facts.attestation = "invalid"
            facts.attestation_detail = "; ".join(sorted(set(scan.problems)))
        else:
            facts.attestation = "missing"
            facts.attestation_detail = f"{reference.name}@{reference.digest} has none"
        return
    mine = [d for d in decisions if d.get("environment") == facts.environment]
    if not mine:
        facts.attestation = "other_environment"
        facts.attestation_detail = (
            f"attested for {', '.join(facts.attested_environments)}, not {facts.environment}"
        )
        return
    decision = mine[-1]
    facts.decision = decision
    if model_name and (
        decision.get("model") != model_name
        or (model_version and str(decision.get("version")) != str(model_version))
    ):
        facts.attestation = "mismatch"
        facts.attestation_detail = (
            f"attested for {decision.get('model')} v{decision.get('version')}, "
            f"not {model_name} v{model_version}"
        )
        return
    if decision.get("allow") is not True:
        facts.attestation = "denied"
        facts.attestation_detail = f"the attested decision for {facts.environment} is a deny"
        return
    facts.attestation = "verified"
    facts.attestation_detail = (
        f"{facts.environment} decision allows {decision.get('model')} v{decision.get('version')} "
        f"(policy bundle {str(decision.get('policy_bundle_digest', '?'))[:19]})"
    )


def decide(facts: ImageVerification, engine: PolicyEngine) -> Decision:
    return engine.decide(
        SIGNATURE_PACKAGE,
        {"environment": facts.environment, "verification": facts.model_dump(mode="json")},
    )


class ImageVerificationDenied(DeploymentPolicyError):
    """The `ztml.signature` policy denied starting an image; `facts` says what was found."""

    def __init__(self, message: str, decision: Decision, facts: ImageVerification) -> None:
        super().__init__(message, decision, [facts.model_dump(mode="json")])
        self.facts = facts


def verify_before_start(
    settings: Settings,
    engine: PolicyEngine,
    image: str,
    environment: str,
    model_name: str | None = None,
    model_version: str | None = None,
) -> tuple[ImageVerification, Decision]:
    """Inspect and judge `image`; raise ImageVerificationDenied on a deny (nothing may start).
    Warnings are logged and returned in the decision."""
    facts = inspect_image(
        settings, image, environment, model_name=model_name, model_version=model_version
    )
    decision = decide(facts, engine)
    if not decision.allow:
        reasons = "; ".join(decision.deny) or "denied"
        raise ImageVerificationDenied(
            f"image verification denied {image} in {environment}: {reasons}", decision, facts
        )
    for warning in decision.warn:
        log.warning("image %s in %s: %s", image, environment, warning)
    return facts, decision


def pinned(image: str, facts: ImageVerification) -> str:
    """`image` pinned to the digest that was verified: a tag may move (or name a different
    local image) between the check and the pull, a digest cannot."""
    if not facts.digest:
        return image
    return str(ImageReference.parse(image).with_digest(facts.digest))


def image_check(settings: Settings) -> Callable[[DeploymentSpec], ImageVerification]:
    """The docker runtime's check before it starts `spec.image` (the policy engine is built
    on first use, so constructing a runtime stays cheap)."""
    engines: list[PolicyEngine] = []

    def check(spec: DeploymentSpec) -> ImageVerification:
        if not engines:
            from mlflow_ztml.policy.engine import make_engine

            engines.append(make_engine(settings))
        facts, _ = verify_before_start(
            settings,
            engines[0],
            spec.image or "",
            spec.environment,
            spec.model_name,
            spec.model_version,
        )
        return facts

    return check


def image_of_version(settings: Settings, model_uri: str, environment: str) -> tuple[str, str, str]:
    """(image, model name, version) of `models:/NAME/VERSION` (or an alias) as built for
    `environment`: the `ztml.<env>.image` tag the pipeline wrote."""
    from mlflow_ztml.errors import ConfigError
    from mlflow_ztml.registry import Registry

    facts = Registry(settings).resolve(model_uri)
    image = facts.version_tags.get(f"ztml.{environment}.image")
    if not image:
        raise ConfigError(
            f"{facts.name} v{facts.version} has no image built for {environment} "
            f"(no ztml.{environment}.image tag): deploy it there with an image runtime first, "
            "or give the image reference"
        )
    return image, facts.name, facts.version


def verify_target(
    settings: Settings, target: str, environment: str, engine: PolicyEngine
) -> tuple[ImageVerification, Decision]:
    """`ztml verify`: the facts and the `ztml.signature` decision for an image reference or a
    model version URI, without raising on a deny."""
    model_name = model_version = None
    image = target
    if target.startswith("models:/"):
        image, model_name, model_version = image_of_version(settings, target, environment)
    check_reference(image)  # a reference that names no registry is a usage error, not a fact
    facts = inspect_image(
        settings, image, environment, model_name=model_name, model_version=model_version
    )
    return facts, decide(facts, engine)
