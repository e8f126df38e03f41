"""Run the Rego unit tests (`test_*` rules) of a policy directory, like `opa test DIR`.

Every `.rego` file of the directory (policies and `*_test.rego` alike) and the directory's
`data.json` (else the shipped profiles) are loaded into one regorus engine; each rule whose
name starts with `test_` is evaluated on its own. A test passes when it evaluates to true;
false or undefined is a failure; a compile or evaluation error is a failure carrying the
error. When a module does not parse, every test fails with that parse error (nothing is
skipped, so a broken policy can never make the suite look green).
`ztml policy test [DIR]` prints these results.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import regorus

from mlflow_ztml.errors import PolicyError
from mlflow_ztml.policy.bundle import default_policy_dir, read_default_data, read_modules
from mlflow_ztml.policy.regorus import clean_error, prepare

_PACKAGE = re.compile(r"^\s*package\s+([A-Za-z_][\w.]*)", re.MULTILINE)
_TEST_RULE = re.compile(r"^(test_\w+)\b", re.MULTILINE)


@dataclass(frozen=True)
class PolicyTestResult:
    """One Rego test: `package` + `name` (`module` it lives in), passed or why not."""

    package: str
    name: str
    passed: bool
    error: str | None = None
    module: str = ""

    @property
    def qualified_name(self) -> str:
        return f"data.{self.package}.{self.name}"


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


def run_policy_tests(policy_dir: Path | None = None) -> list[PolicyTestResult]:
    """Evaluate every `test_*` rule under `policy_dir` (default: the shipped policies).

    A directory that cannot be read, or holds no tests, raises PolicyError (the CLI reports
    it as an error, not as success).
    """
    policy_dir = Path(policy_dir) if policy_dir is not None else default_policy_dir()
    modules = {**read_modules(policy_dir), **read_modules(policy_dir, tests=True)}
    tests = discover_tests(modules)
    if not tests:
        raise PolicyError(f"no Rego tests (rules named test_*) found under {policy_dir}")
    data = {"ztml": read_default_data(policy_dir)}
    try:
        engine = prepare(modules, data)
    except PolicyError as exc:
        return [PolicyTestResult(pkg, name, False, str(exc), module) for module, pkg, name in tests]
    return [_run_one(engine, module, package, name) for module, package, name in tests]


def _run_one(engine: regorus.Engine, module: str, package: str, name: str) -> PolicyTestResult:
    run = engine.clone()
    try:
        value = run.eval_rule(f"data.{package}.{name}")
    except Exception as exc:  # compile and evaluation errors are test failures
        return PolicyTestResult(package, name, False, clean_error(exc), module)
    if value is True:
        return PolicyTestResult(package, name, True, None, module)
    outcome = "undefined" if value is None else f"{value!r}"
    return PolicyTestResult(package, name, False, f"test evaluated to {outcome}", module)
