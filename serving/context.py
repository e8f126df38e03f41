"""Per-request state shared by the HTTP layer and the runner."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class RequestContext:
    """`request_id` echoes/creates X-Request-ID; `announced` tracks the batcher's arrival hint."""

    request_id: str
    announced: bool = False
