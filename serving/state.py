"""What the protocol front ends (REST in `app.py`, gRPC in `grpc/`) share about one server:
its settings, metrics, runner and model, its lifecycle status, and the API-key check.

Kept apart from the HTTP layer so the data plane and gRPC never import `app`.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from starlette.datastructures import Headers

from serving.config import Settings
from serving.errors import Unauthorized
from serving.metrics import Metrics
from serving.model import ServedModel
from serving.runner import Runner


class ServerState:
    """What the handlers share: settings, metrics, the runner and (once loaded) the model."""

    def __init__(self, settings: Settings, on_fatal: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.runner = Runner(
            self.metrics,
            max_batch_size=settings.max_batch_size,
            max_delay_ms=settings.max_batch_delay_ms,
            batching=settings.batching,
        )
        self.model: ServedModel | None = None
        self.model_ref: dict[str, str] = {}
        # loading -> ready -> stopping (SIGTERM: drain), loading -> stopping, or loading -> failed
        self.status = "loading"
        self.error: str | None = None
        self.on_fatal = on_fatal
        key = settings.api_key.get_secret_value() if settings.api_key else None
        self.api_key = key.encode() if key else None

    @property
    def ready(self) -> bool:
        """What /ready says: take new traffic (false as soon as a drain starts)."""
        return self.status == "ready"

    @property
    def answering(self) -> bool:
        """Prediction requests are answered: ready, or draining with the model loaded."""
        return self.model is not None and self.status in ("ready", "stopping")


def check_api_key(headers: Headers, key: bytes) -> None:
    supplied = headers.get("x-api-key")
    if supplied is None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            supplied = token.strip()
    if supplied is None or not hmac.compare_digest(supplied.encode(), key):
        raise Unauthorized(
            "missing or wrong API key: send it as the X-API-Key header "
            "or as Authorization: Bearer <key>"
        )
