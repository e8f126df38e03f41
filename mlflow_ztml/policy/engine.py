"""The contract every gate shares: a `PolicyEngine` answers a `Decision` for a package.

Each Rego package (`ztml.governance`, `ztml.scan`, `ztml.deployment`) defines `deny` and `warn`
(sets of messages) and `allow`. The policy input is an envelope
`{"environment": ENV, <subject>: ...}` (`manifest` for governance, `report` for scan, `objects`
for deployment); thresholds live in `data.ztml.environments[ENV]`.

Fail closed: an engine that cannot compile, load or reach its policies returns a Decision with
`allow=False` and the error as a deny message, never raises past `decide()` and never allows.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, Field, ValidationError

from mlflow_ztml.errors import ConfigError, PolicyError

if TYPE_CHECKING:
    from mlflow_ztml.config import Settings

log = logging.getLogger(__name__)


class RuleCheck(BaseModel):
    """One rule as a person reads it (a package's `checks`): what was observed against which
    threshold, and the result: pass, warn, deny or off (not enforced in this environment)."""

    id: str
    title: str
    observed: str
    threshold: str
    result: Literal["pass", "warn", "deny", "off"]


class Decision(BaseModel):
    """What every gate returns. `allow` is true only when the package allowed and denied nothing.

    `checks` lists every rule with its observed value when the package defines them and the
    caller asked (gate.evaluate(explain=True)); it explains the decision, never changes it.
    """

    allow: bool
    deny: list[str] = Field(default_factory=list)
    warn: list[str] = Field(default_factory=list)
    engine: str
    package: str
    error: str | None = None
    checks: list[RuleCheck] = Field(default_factory=list)

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
    """Decides `package` on `input`. Thread-safe; never raises: errors become denies."""

    name: str

    def decide(self, package: str, input: dict[str, Any]) -> Decision: ...


# A Rego package path such as `ztml.governance`: dot-separated identifiers, nothing else, so a
# package name can never smuggle a query or a URL path into an engine.
_PACKAGE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def check_package(package: str) -> None:
    """Raise PolicyError unless `package` is a plain Rego package path."""
    if not isinstance(package, str) or not _PACKAGE.match(package):
        raise PolicyError(
            f"invalid policy package name {package!r} (expected e.g. ztml.governance)"
        )


def decision_from_document(document: Any, *, engine: str, package: str) -> Decision:
    """Turn the value of `data.<package>` into a Decision, failing closed on any surprise.

    The package must define `deny` (a set of strings) and `allow` (a boolean); `warn` is
    optional. `allow` is true only when the package says `allow = true` and `deny` is empty;
    an `allow = false` with no deny message still denies, with a message saying so.
    """
    if not isinstance(document, dict) or not document:
        return Decision.failed(engine, package, f"policy package {package} is not defined")
    try:
        deny = _messages(document, "deny", package, required=True)
        warn = _messages(document, "warn", package, required=False)
    except PolicyError as exc:
        return Decision.failed(engine, package, str(exc))
    allowed = document.get("allow")
    if not isinstance(allowed, bool):
        return Decision.failed(
            engine, package, f"policy package {package} does not define a boolean allow"
        )
    if not allowed and not deny:
        deny = [f"policy package {package} did not allow and gave no reason"]
    return Decision(
        allow=allowed and not deny,
        deny=deny,
        warn=warn,
        engine=engine,
        package=package,
        checks=parse_checks(document.get("checks")),
    )


def parse_checks(value: Any) -> list[RuleCheck]:
    """A package's `checks` in a stable order (by id), or [] when it defines none.

    Checks only explain a decision: a malformed one is dropped (and logged), never a deny.
    """
    if not isinstance(value, list | tuple):
        return []
    checks: list[RuleCheck] = []
    for item in value:
        try:
            checks.append(RuleCheck.model_validate(item))
        except ValidationError as exc:
            log.warning("policy check dropped, not of the expected shape: %s", exc)
    return sorted(checks, key=lambda check: check.id)


def _messages(document: dict[str, Any], rule: str, package: str, *, required: bool) -> list[str]:
    value = document.get(rule)
    if value is None:
        if required:
            raise PolicyError(f"policy package {package} does not define {rule}")
        return []
    if not isinstance(value, list | set | tuple) or not all(isinstance(m, str) for m in value):
        raise PolicyError(f"policy package {package}: {rule} must be a set of strings")
    return sorted(set(value))


def make_engine(settings: Settings) -> PolicyEngine:
    """The engine `settings.policy` asks for, loaded with the policies and data it names.

    Never raises for a policy problem (unreadable policy dir, bad data file, unknown profile):
    it returns an engine whose every decision is a deny carrying that error (fail closed).
    A malformed `policy.opa_url` is a ConfigError, since no decision could ever be made.
    """
    from mlflow_ztml.policy.bundle import load_bundle

    config = settings.policy
    if config.engine == "opa":  # the OPA client (and aiohttp) only when OPA is asked for
        from mlflow_ztml.policy.opa_server import OpaServerEngine

        if not config.opa_url:
            raise ConfigError("policy.engine is 'opa' but policy.opa_url is not set")
        if config.opa_mode == "query":
            return OpaServerEngine(config.opa_url, mode="query", timeout=config.opa_timeout_seconds)
    try:
        bundle = load_bundle(settings)
    except PolicyError as exc:
        return UnavailableEngine("opa" if config.engine == "opa" else "regorus", str(exc))
    if config.engine == "opa":
        return OpaServerEngine(
            config.opa_url or "", mode="load", timeout=config.opa_timeout_seconds, bundle=bundle
        )
    from mlflow_ztml.policy.regorus import RegorusEngine

    return RegorusEngine.from_bundle(
        bundle,
        cache_size=config.decision_cache_size,
        rewrite_cache=settings.home / "cache" / "rego",
    )


class UnavailableEngine:
    """An engine that could not be set up: every decision is a deny carrying why."""

    def __init__(self, name: str, error: str) -> None:
        self.name = name
        self.error = error

    def decide(self, package: str, input: dict[str, Any]) -> Decision:
        return Decision.failed(self.name, package, self.error)
