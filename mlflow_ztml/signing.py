"""The webhook signature scheme MLflow uses, which ztml also uses for its own notifications:
`v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{raw body}")>`.

Verifying MLflow's deliveries (`controller/signature.py`) and signing ztml's events
(`notify.py`) share this one definition so the two can never drift apart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

SIGNATURE_VERSION = "v1"


def signed_content(message_id: str, timestamp: str, body: bytes) -> bytes:
    return f"{message_id}.{timestamp}.".encode() + body


def digest(secret: str, message_id: str, timestamp: str, body: bytes) -> bytes:
    return hmac.new(
        secret.encode(), signed_content(message_id, timestamp, body), hashlib.sha256
    ).digest()


def sign(secret: str, message_id: str, timestamp: str, body: bytes) -> str:
    """The signature header value for one message."""
    encoded = base64.b64encode(digest(secret, message_id, timestamp, body)).decode()
    return f"{SIGNATURE_VERSION},{encoded}"
