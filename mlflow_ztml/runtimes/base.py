"""The runtime contract: what the pipeline asks of `process`, `docker` and `kubernetes`.

A runtime owns starting, switching and stopping; the pipeline owns deciding. `deploy` is
idempotent (the same spec twice is a no-op) and safe: the candidate is started next to what
serves now, `verify` is called on it, and only when verify passes does the runtime switch and
retire the old one. When verify raises, the candidate is removed and the old one keeps serving.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Literal, Protocol

from pydantic import BaseModel, Field

# `unknown`: the runtime's own record of the deployment cannot be read (a corrupt state file);
# that one deployment says so instead of failing every listing.
State = Literal["running", "starting", "failed", "stopped", "unknown"]


class DeploymentSpec(BaseModel):
    """Everything a runtime needs to run one model version as one named deployment."""

    name: str
    environment: str
    model_name: str
    model_version: str
    model_uri: str
    tracking_uri: str | None = None
    registry_uri: str | None = None
    image: str | None = None
    replicas: int = 1
    cpu: str = "500m"
    memory: str = "512Mi"
    gpu: int = 0
    max_batch_size: int = 32
    max_batch_delay_ms: float = 2.0
    # /predict answers: ztml's own, or the published mlifecycle contract (serving/published.py)
    response_format: Literal["ztml", "mlifecycle"] = "ztml"
    port: int | None = None
    env: dict[str, str] = Field(default_factory=dict)
    ready_timeout_seconds: float = 120.0
    # The model files' model-signing bundle and the PEM key that verifies it (signed when the
    # gate allowed the version); runtimes ship both beside the model and serving verifies.
    # Not part of the fingerprint (ECDSA signatures differ per signing): the key id is, in
    # `env` (SERVING_REQUIRE_MODEL_SIGNATURE and the key's id travel there).
    model_signature: str | None = Field(default=None, repr=False)
    model_public_key: str | None = Field(default=None, repr=False)

    def fingerprint(self) -> str:
        """Identifies 'the same version with the same settings' for idempotent deploys."""
        material = self.model_dump(
            exclude={
                "ready_timeout_seconds",
                "tracking_uri",
                "registry_uri",
                "model_signature",
                "model_public_key",
            }
        )
        if material["response_format"] == "ztml":  # the default: fingerprints made before the
            del material["response_format"]  # option existed still say "unchanged"
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


class DeploymentStatus(BaseModel):
    """What a runtime reports about one deployment; `get`/`list` rebuild it from real state."""

    name: str
    runtime: str
    state: State
    environment: str
    model_name: str
    model_version: str
    model_uri: str
    endpoint: str | None = None
    fingerprint: str | None = None
    started_at: float | None = None
    detail: str | None = None


Verifier = Callable[[DeploymentStatus], None]


class Runtime(Protocol):
    name: str

    def deploy(self, spec: DeploymentSpec, verify: Verifier) -> tuple[DeploymentStatus, bool]:
        """Run `spec`; returns the status and whether anything changed (False: no-op)."""
        ...

    def get(self, name: str) -> DeploymentStatus | None: ...

    def list(self) -> list[DeploymentStatus]: ...

    def delete(self, name: str) -> None: ...

    def endpoint(self, name: str) -> str | None: ...
