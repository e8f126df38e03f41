"""Verify MLflow webhook signatures (MLflow 3.x, Standard Webhooks style).

MLflow signs `f"{delivery_id}.{timestamp}.{raw_body}"` with HMAC-SHA256 under the webhook's
secret and sends `X-MLflow-Signature: v1,<base64 digest>`, `X-MLflow-Timestamp` (unix seconds)
and `X-MLflow-Delivery-Id`. Its retries (429/5xx, exponential backoff) resend the *same* id,
timestamp and signature, so the timestamp tolerance must cover the whole retry window, and
duplicates are expected: they are the caller's job (see `app.DeliveryCache`).

Several secrets may be valid at once (rotation: the new one and the previous one), and the
header may carry several space-separated signatures (Standard Webhooks); any match is enough.
Every comparison is constant-time (`hmac.compare_digest`).
"""

from __future__ import annotations

import base64
import hmac
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from mlflow_ztml import signing
from mlflow_ztml.errors import ConfigError, ZtmlError

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
SIGNATURE_VERSION = signing.SIGNATURE_VERSION
SECRET_ENV = "ZTML_WEBHOOK_SECRET"  # noqa: S105 - a variable name, not a secret
PREVIOUS_SECRET_ENV = "ZTML_WEBHOOK_PREVIOUS_SECRET"  # noqa: S105

RejectReason = Literal[
    "missing_signature",
    "missing_delivery_id",
    "missing_timestamp",
    "malformed_timestamp",
    "stale_timestamp",
    "malformed_signature",
    "bad_signature",
    "no_secret_configured",
]


class SignatureError(ZtmlError):
    """A delivery failed verification; `reason` is a short, stable label (metrics, 401 body)."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(message)
        self.reason: RejectReason = reason


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The `X-MLflow-Signature` value MLflow would send (used by tests and the benchmark)."""
    return signing.sign(secret, delivery_id, timestamp, body)


def verify(
    secrets: Sequence[str],
    *,
    delivery_id: str | None,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    tolerance_seconds: float,
    now: float | None = None,
) -> None:
    """Return when the delivery is authentic and fresh; raise SignatureError otherwise.

    The checks run cheapest first, and the HMAC is computed only for well-formed, fresh
    requests, so a flood of junk costs little.
    """
    if not secrets:
        raise SignatureError(
            "no_secret_configured",
            f"the controller has no webhook secret; set {SECRET_ENV} and register the webhook",
        )
    if not signature:
        raise SignatureError("missing_signature", f"no {SIGNATURE_HEADER} header")
    if not delivery_id:
        raise SignatureError("missing_delivery_id", f"no {DELIVERY_ID_HEADER} header")
    if not timestamp:
        raise SignatureError("missing_timestamp", f"no {TIMESTAMP_HEADER} header")
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise SignatureError(
            "malformed_timestamp", f"{TIMESTAMP_HEADER} is not unix seconds"
        ) from None
    skew = (time.time() if now is None else now) - sent_at
    if abs(skew) > tolerance_seconds:
        raise SignatureError(
            "stale_timestamp",
            f"timestamp is {skew:+.0f} s away from now (tolerance {tolerance_seconds:.0f} s)",
        )
    candidates: list[bytes] = []
    for part in signature.split():
        version, _, value = part.partition(",")
        if version != SIGNATURE_VERSION or not value:
            continue
        try:
            candidates.append(base64.b64decode(value, validate=True))
        except ValueError:
            continue
    if not candidates:
        raise SignatureError(
            "malformed_signature", f"{SIGNATURE_HEADER} holds no '{SIGNATURE_VERSION},<base64>'"
        )
    matched = False
    for secret in secrets:
        expected = signing.digest(secret, delivery_id, timestamp, body)
        for candidate in candidates:
            # No early exit: every pair is compared so timing says nothing about which matched.
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError("bad_signature", "signature does not match any configured secret")


def secrets_from_env(environ: dict[str, str] | None = None) -> list[str]:
    """The accepted secrets, current first: `ZTML_WEBHOOK_SECRET` then the previous one.

    Each may instead name a file (`ZTML_WEBHOOK_SECRET_FILE`, a mounted Kubernetes secret);
    never the configuration file, which is often committed.
    """
    env = os.environ if environ is None else environ
    found: list[str] = []
    for name in (SECRET_ENV, PREVIOUS_SECRET_ENV):
        value = env.get(name)
        path = env.get(f"{name}_FILE")
        if not value and path:
            try:
                value = Path(path).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"{name}_FILE={path} cannot be read: {exc}") from None
        if value and value not in found:
            found.append(value)
    return found
