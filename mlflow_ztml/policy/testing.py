"""Run the Rego unit tests (`test_*` rules) of a policy directory, like `opa test DIR`, under
every engine that decides ztml's gates, and report where they disagree.

Every `.rego` file of the directory (policies and `*_test.rego` alike) and the directory's
`data.json` (else the shipped profiles, under `data.ztml`) are loaded into each engine; each
rule whose name starts with `test_` is evaluated on its own. A test passes when it evaluates
to true; false or undefined is a failure; a compile or evaluation error is a failure carrying
the error. When a module does not parse, or uses a construct the in-process engine refuses
(see docs/rego-divergences.md), every test fails with that message: nothing is skipped, so a
broken policy can never make the suite look green.

Engines: `regorus` (ztml's default in-process engine, with its OPA compatibility layer) and
`opa` (OPA's own Go engine in-process, from opa-golib-python-bindings, when installed).
By default both run when `opa` is available, and a test passes only when every engine
passes it: a test one engine passes and another fails is a disagreement, reported with each
engine's result, because a policy author must never see two answers.
`ztml policy test [DIR ...]` prints these results.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow_ztml.errors import PolicyError
from mlflow_ztml.policy.bundle import default_policy_dir, read_default_data, read_modules
from mlflow_ztml.policy.regorus import clean_error, prepare

_PACKAGE = re.compile(r"^\s*package\s+([A-Za-z_][\w.]*)", re.MULTILINE)
_TEST_RULE = re.compile(r"^(test_\w+)\b", re.MULTILINE)

REGORUS = "regorus"
OPA = "opa"
ENGINE_CHOICES = ("auto", REGORUS, OPA, "both")


@dataclass(frozen=True)
class EngineVerdict:
    """One engine's result for one test."""

    engine: str
    passed: bool
    error: str | None = None

    def describe(self) -> str:
        return f"{self.engine} PASS" if self.passed else f"{self.engine} FAIL ({self.error})"


@dataclass(frozen=True)
class PolicyTestResult:
    """One Rego test: `package` + `name` (`module` it lives in), passed or why not.

    `passed` is true only when every engine passed it; `verdicts` holds each engine's
    result, `disagreement` is true when the engines did not all answer the same.
    """

    package: str
    name: str
    passed: bool
    error: str | None = None
    module: str = ""
    verdicts: tuple[EngineVerdict, ...] = field(default_factory=tuple)

    @property
    def qualified_name(self) -> str:
        return f"data.{self.package}.{self.name}"

    @property
    def disagreement(self) -> bool:
        return len({verdict.passed for verdict in self.verdicts}) > 1


def discover_tests(modules: dict[str, str]) -> list[tuple[str, str, str]]:
    """(module id, package, rule name) of every `test_*` rule, in file order, deduplicated."""
    found: list[tuple[str, str, str]] = []
    seen: set[tuple[str, str]] = set()
    for module_id, source in sorted(modules.items()):
        package = _PACKAGE.search(source)
        if package is None:
            continue
        for name in _TEST_RULE.findall(source):
            key = (package.group(1), name)
            if key not in seen:
                seen.add(key)
                found.append((module_id, package.group(1), name))
    return found


def opa_engine_available() -> bool:
    """Whether OPA's Go engine (opa-golib-python-bindings) can run in this process."""
    return _opa_unavailable_reason() is None


def _opa_unavailable_reason() -> str | None:
    try:
        import opa_bindings
    except ImportError:
        return (
            "OPA's engine is not installed (pip install --no-deps --ignore-requires-python "
            "opa-golib-python-bindings==0.4.4)"
        )
    try:  # the Go shared library loads lazily; a build for another platform fails here
        opa_bindings.OpaEngine().close()
    except OSError as exc:
        return f"OPA's engine cannot load its library: {exc}"
    return None


def select_engines(choice: str = "auto") -> tuple[str, ...]:
    """The engines for `choice` (auto: regorus, and opa when installed).

    Raises PolicyError when `choice` asks for OPA's engine and it cannot run.
    """
    if choice not in ENGINE_CHOICES:
        raise PolicyError(f"unknown engine {choice!r} (choose from {', '.join(ENGINE_CHOICES)})")
    if choice == REGORUS:
        return (REGORUS,)
    reason = _opa_unavailable_reason()
    if choice == "auto":
        return (REGORUS,) if reason else (REGORUS, OPA)
    if reason:
        raise PolicyError(reason)
    return (OPA,) if choice == OPA else (REGORUS, OPA)


def run_policy_tests(
    policy_dir: Path | None = None, *, engines: Sequence[str] | None = None
) -> list[PolicyTestResult]:
    """Evaluate every `test_*` rule under `policy_dir` (default: the shipped policies) with
    each of `engines` (default: select_engines("auto")).

    A directory that cannot be read, or holds no tests, raises PolicyError (the CLI reports
    it as an error, not as success).
    """
    policy_dir = Path(policy_dir) if policy_dir is not None else default_policy_dir()
    engines = tuple(engines) if engines is not None else select_engines("auto")
    if not engines:
        raise PolicyError("no policy engine selected")
    modules = {**read_modules(policy_dir), **read_modules(policy_dir, tests=True)}
    tests = discover_tests(modules)
    if not tests:
        raise PolicyError(f"no Rego tests (rules named test_*) found under {policy_dir}")
    data = {"ztml": read_default_data(policy_dir)}
    runners: dict[str, Callable[..., list[EngineVerdict]]] = {
        REGORUS: _run_regorus,
        OPA: _run_opa,
    }
    per_engine = {engine: runners[engine](modules, data, tests) for engine in engines}
    results = []
    for index, (module, package, name) in enumerate(tests):
        verdicts = tuple(per_engine[engine][index] for engine in engines)
        passed = all(verdict.passed for verdict in verdicts)
        error = None if passed else _summary(verdicts)
        results.append(PolicyTestResult(package, name, passed, error, module, verdicts))
    return results


def _summary(verdicts: tuple[EngineVerdict, ...]) -> str:
    if len(verdicts) == 1:
        return verdicts[0].error or "failed"
    if len({verdict.passed for verdict in verdicts}) > 1:
        return "engines disagree: " + "; ".join(verdict.describe() for verdict in verdicts)
    errors = {verdict.error for verdict in verdicts}
    if len(errors) == 1:
        return f"{errors.pop()} (all engines)"
    return "; ".join(f"{verdict.engine}: {verdict.error}" for verdict in verdicts)


def _verdict(engine: str, value: Any) -> EngineVerdict:
    if value is True:
        return EngineVerdict(engine, True)
    outcome = "undefined" if value is None else f"{value!r}"
    return EngineVerdict(engine, False, f"test evaluated to {outcome}")


def _run_regorus(
    modules: dict[str, str], data: dict[str, Any], tests: list[tuple[str, str, str]]
) -> list[EngineVerdict]:
    try:
        engine = prepare(modules, data)
    except PolicyError as exc:
        return [EngineVerdict(REGORUS, False, str(exc)) for _ in tests]
    verdicts = []
    for _, package, name in tests:
        run = engine.clone()
        try:
            value = run.eval_rule(f"data.{package}.{name}")
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # compile/evaluation errors (and pyo3 panics) fail it
            verdicts.append(EngineVerdict(REGORUS, False, clean_error(exc)))
            continue
        verdicts.append(_verdict(REGORUS, value))
    return verdicts


def _run_opa(
    modules: dict[str, str], data: dict[str, Any], tests: list[tuple[str, str, str]]
) -> list[EngineVerdict]:
    import opa_bindings

    engine = opa_bindings.OpaEngine()
    try:
        try:
            for module_id, source in modules.items():
                engine.add_policy(module_id, source)
            engine.add_data(data)
        except opa_bindings.OpaError as exc:
            return [EngineVerdict(OPA, False, _opa_message(exc)) for _ in tests]
        batch = _opa_batch(engine, tests)
        if batch is not None:
            return batch
        verdicts = []
        for _, package, name in tests:  # one by one: some test errors, say which
            try:
                value = engine.eval_document(f"{package}.{name}")
            except opa_bindings.OpaUndefinedError:
                value = None
            except opa_bindings.OpaError as exc:
                verdicts.append(EngineVerdict(OPA, False, _opa_message(exc)))
                continue
            verdicts.append(_verdict(OPA, value))
        return verdicts
    finally:
        engine.close()


def _opa_batch(engine: Any, tests: list[tuple[str, str, str]]) -> list[EngineVerdict] | None:
    """Every test in one query (OPA prepares, i.e. compiles, once per distinct query);
    None when any test errors, so that the caller evaluates them one by one."""
    import opa_bindings

    items = ", ".join(f"[v | v := data.{package}.{name}]" for _, package, name in tests)
    try:
        rows = engine.eval_query(f"results := [{items}]")
    except opa_bindings.OpaError:
        return None
    if len(rows) != 1 or len(rows[0].get("results") or []) != len(tests):
        return None
    return [_verdict(OPA, values[0] if values else None) for values in rows[0]["results"]]


def _opa_message(exc: Exception) -> str:
    return " ".join(str(exc).split())
