"""Typed errors of the data plane, each mapped to one HTTP status and one metrics `kind`.

Every error raised while handling a request is a `ServingError`; the HTTP layer turns it into a
JSON body carrying the request id, so a caller can quote it when asking for help. Messages are
redacted when the error is made (`serving.redact`), so no error path can echo a credential, and
lists of names in them are bounded (`preview`), so a hostile body cannot make a huge answer.
"""

from __future__ import annotations

from collections.abc import Iterable

from serving.redact import redact

PREVIEW_LIMIT = 10


def preview(names: Iterable[object], limit: int = PREVIEW_LIMIT) -> str:
    """`'a', 'b', 'c'`, or the first `limit` of them and `... and N more`: bounded in messages."""
    items = list(names)
    shown = ", ".join(repr(str(n))[:80] for n in items[:limit])
    return shown if len(items) <= limit else f"{shown} ... and {len(items) - limit} more"


class ServingError(Exception):
    """Base class: `status` is the HTTP status, `kind` the `inference_errors_total` label."""

    status: int = 500
    kind: str = "internal"
    code: str = "INTERNAL_ERROR"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        message = redact(message)
        super().__init__(message)
        self.message = message
        self.field = field if field is None else redact(field)[:200]


class BadRequest(ServingError):
    """The body is not what the endpoint reads at all (e.g. not JSON)."""

    status, kind, code = 400, "bad_request", "BAD_REQUEST"


class Unauthorized(ServingError):
    """An API key is configured and the request did not carry it."""

    status, kind, code = 401, "unauthorized", "UNAUTHENTICATED"


class NotFound(ServingError):
    """Unknown model name on the v2 protocol."""

    status, kind, code = 404, "not_found", "RESOURCE_DOES_NOT_EXIST"


class PayloadTooLarge(ServingError):
    """The body exceeds `SERVING_MAX_BODY_BYTES`."""

    status, kind, code = 413, "payload_too_large", "PAYLOAD_TOO_LARGE"


class UnsupportedMediaType(ServingError):
    """The content type is neither JSON nor (on /invocations) CSV."""

    status, kind, code = 415, "unsupported_media_type", "UNSUPPORTED_MEDIA_TYPE"


class InvalidInput(ServingError):
    """The payload does not match the model signature; `field` names the offending input."""

    status, kind, code = 422, "validation", "INVALID_PARAMETER_VALUE"


class ModelError(ServingError):
    """The model itself raised while predicting; the server keeps serving."""

    status, kind, code = 500, "model", "MODEL_ERROR"


class NotReady(ServingError):
    """The model is not loaded and warmed up yet (or the server is shutting down)."""

    status, kind, code = 503, "not_ready", "NOT_READY"


class RequestTimeout(ServingError):
    """The request took longer than `SERVING_REQUEST_TIMEOUT_SECONDS`."""

    status, kind, code = 504, "timeout", "DEADLINE_EXCEEDED"


class ModelLoadError(RuntimeError):
    """The model cannot be resolved, downloaded, loaded or warmed up: the process exits non-zero."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))
