"""Make regorus answer what OPA answers (see docs/rego-divergences.md for every case).

ztml evaluates Rego in-process with regorus, and OPA is the reference: a policy author
must never get two answers. Where regorus 0.13 and OPA disagree, this package either
- overrides the builtin with OPA's behaviour (overrides.py, installed as regorus extensions,
  which regorus consults before its own builtins: the policy text stays as written),
- rewrites the construct before evaluation (source.py: arithmetic operators), or
- refuses the policy with a message naming the file, the line and the construct
  (source.py: builtins regorus lacks, literals a double cannot hold; check_input: integers
  beyond 64 bits in the input), so the gate fails closed instead of guessing.
regorus' own limit on a policy's line width (1024 columns), which OPA does not have, is
lifted.

Public API: `prepare_modules` (modules as regorus should see them, or RegoDivergenceError),
`install` (the overrides and the compat module on one engine), `check_input`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import regorus

from mlflow_ztml.errors import PolicyError
from mlflow_ztml.policy.compat import cache, goglob, goregex
from mlflow_ztml.policy.compat.numbers import arith
from mlflow_ztml.policy.compat.overrides import OVERRIDES
from mlflow_ztml.policy.compat.source import (
    COMPAT_MODULE,
    COMPAT_MODULE_ID,
    RegoDivergenceError,
    lift_length_limits,
    rewrite,
)
from mlflow_ztml.policy.compat.values import INT64_MIN, UINT64_MAX

__all__ = [
    "COMPAT_MODULE_ID",
    "RegoDivergenceError",
    "check_input",
    "install",
    "prepare_modules",
]

_ARITHMETIC_EXTENSIONS: dict[str, tuple[int, Callable[..., Any]]] = {
    "__ztml.add": (2, lambda a, b: arith("+", a, b)),
    "__ztml.sub": (2, lambda a, b: arith("-", a, b)),
    "__ztml.mul": (2, lambda a, b: arith("*", a, b)),
    "__ztml.div": (2, lambda a, b: arith("/", a, b)),
    "__ztml.rem": (2, lambda a, b: arith("%", a, b)),
    "__ztml.go_regex": (1, goregex.pattern_for_regorus),
    "__ztml.glob_regex": (2, goglob.glob_regex),
}


def prepare_modules(modules: Mapping[str, str], cache_dir: Path | None = None) -> dict[str, str]:
    """Every module rewritten for regorus (kept in `cache_dir` across processes, when given:
    cache.py). Raises RegoDivergenceError listing every refused construct of every module,
    PolicyError naming a module that does not parse."""
    prepared: dict[str, str] = {}
    refusals: list[str] = []
    for module_id, source in modules.items():
        try:
            prepared[module_id] = cache.cached(
                cache_dir, module_id, source, lambda m=module_id, s=source: rewrite(m, s)
            )
        except RegoDivergenceError as exc:
            refusals.append(str(exc))
    if refusals:
        raise RegoDivergenceError("\n".join(refusals))
    return prepared


def _extension(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        try:
            return function(*args)
        except (ValueError, TypeError, ArithmeticError) as exc:
            raise ValueError(str(exc) or type(exc).__name__) from None

    call.__name__ = name.replace(".", "_")
    return call


def install(engine: regorus.Engine) -> None:
    """Register OPA's behaviour on `engine` (before its policies are added)."""
    lift_length_limits(engine)
    for name, (arity, function) in {**OVERRIDES, **_ARITHMETIC_EXTENSIONS}.items():
        engine.add_extension(name, arity, _extension(name, function))
    engine.add_policy(COMPAT_MODULE_ID, COMPAT_MODULE)


_FLOAT_INTEGRAL_LIMIT = float(1 << 63)
# What such a number looks like in json.dumps' text: an integer beyond 64 bits has 19 digits
# or more, a double of 2**63 or more is written with an exponent (repr: from 1e16 on).
_SUSPECT_TEXT = re.compile(r"[0-9]{19}|[eE]\+")


def check_input(value: Any, path: str = "input", payload: str | None = None) -> None:
    """Refuse an input regorus cannot hold as OPA does: integers beyond 64 bits, and
    integral doubles beyond them (1e21), which regorus cannot hand to a builtin.

    `payload`, the input's json.dumps text when the caller has it, skips the walk when the
    text holds nothing that could be such a number (the common case)."""
    if payload is not None and not _SUSPECT_TEXT.search(payload):
        return
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, bool):
            continue
        if isinstance(item, int):
            if not INT64_MIN <= item <= UINT64_MAX:
                raise PolicyError(
                    f"{where} is the integer {item}, beyond 64 bits: regorus would round it "
                    "(OPA keeps it exact); send it as a string"
                )
        elif isinstance(item, float):
            if item.is_integer() and abs(item) >= _FLOAT_INTEGRAL_LIMIT:
                raise PolicyError(
                    f"{where} is the number {item!r}, an integral value beyond 64 bits that "
                    "regorus cannot evaluate as OPA does; send it as a string"
                )
        elif isinstance(item, dict):
            stack.extend((child, f"{where}.{key}") for key, child in item.items())
        elif isinstance(item, list | tuple):
            stack.extend((child, f"{where}[{index}]") for index, child in enumerate(item))
