"""The contract every gate shares: a `PolicyEngine` answers a `Decision` for a package.

Each Rego package (`ztml.governance`, `ztml.scan`, `ztml.deployment`) defines `deny` and `warn`
(sets of messages) and `allow`. The policy input is an envelope
`{"environment": ENV, <subject>: ...}` (`manifest` for governance, `report` for scan, `objects`
for deployment); thresholds live in `data.ztml.environments[ENV]`.

Fail closed: an engine that cannot compile, load or reach its policies returns a Decision with
`allow=False` and the error as a deny message, never raises past `decide()` and never allows.
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, Field


class Decision(BaseModel):
    """What every gate returns. `allow` is true only when the package allowed and denied nothing."""

    allow: bool
    deny: list[str] = Field(default_factory=list)
    warn: list[str] = Field(default_factory=list)
    engine: str
    package: str
    error: str | None = None

    @classmethod
    def failed(cls, engine: str, package: str, error: str) -> Decision:
        """A deny carrying an infrastructure error (fail closed)."""
        return cls(
            allow=False,
            deny=[f"policy engine error: {error}"],
            engine=engine,
            package=package,
            error=error,
        )


class PolicyEngine(Protocol):
    name: str

    def decide(self, package: str, input: dict[str, Any]) -> Decision: ...
