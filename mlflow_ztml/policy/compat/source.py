"""What ztml does to a Rego module before regorus sees it: refuse, or rewrite arithmetic.

Two kinds of divergence cannot be fixed by an override of a builtin:

- Arithmetic operators (`+ - * / %`) are evaluated inside regorus, in IEEE doubles, where
  OPA computes exactly (integers) or at 64 bits of mantissa. Each binary arithmetic
  expression is rewritten into a call of the matching `__ztml.*` extension (numbers.py);
  `a - b` with no number literal on either side into `data.__ztml_compat.sub(a, b)`, so that
  a set difference stays regorus' own.
- Regex patterns are Go syntax in OPA: the pattern argument of regex.match, find_n,
  find_all_string_submatch_n and replace is wrapped in `__ztml.go_regex(...)` (goregex.py),
  and `glob.match(p, d, s)` becomes `regex.match(__ztml.glob_regex(p, d), s)` (goglob.py),
  so matching stays in regorus' linear-time engine.
  The rewrite keeps every line where it was (only columns move), so messages still point at
  the right line.
- Constructs regorus cannot evaluate as OPA does are refused before any evaluation, with
  one line per occurrence naming the module, the line and the construct: calls of builtins
  regorus lacks (and ztml does not provide), OPA's deprecated builtins (OPA v1 refuses them
  too), number literals a double cannot hold exactly (`123456789012345678901`,
  `0.1000000000000000001`, `1e400`), and a unary minus on anything but a number literal
  (regorus fails on it, and parses `-a + b` as `-(a + b)`).

The module is parsed by regorus itself (its AST, with byte spans), so the rewrite sees
exactly the expressions regorus will evaluate.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import regorus

from mlflow_ztml.errors import PolicyError
from mlflow_ztml.policy.compat.overrides import DEPRECATED, UNSUPPORTED
from mlflow_ztml.policy.compat.values import INT64_MIN, UINT64_MAX

COMPAT_PACKAGE = "__ztml_compat"
COMPAT_MODULE_ID = "__ztml_compat.rego"
COMPAT_MODULE = f"""package {COMPAT_PACKAGE}

import rego.v1

# a - b: numbers as OPA computes them; anything else (a set difference) as regorus does.
sub(a, b) := __ztml.sub(a, b) if {{
\tis_number(a)
\tis_number(b)
}} else := a - b
"""

ARITHMETIC = {
    "Add": ("+", "__ztml.add("),
    "Sub": ("-", f"data.{COMPAT_PACKAGE}.sub("),
    "Mul": ("*", "__ztml.mul("),
    "Div": ("/", "__ztml.div("),
    "Mod": ("%", "__ztml.rem("),
}


class RegoDivergenceError(PolicyError):
    """A policy uses a construct the in-process engine cannot evaluate as OPA does."""


@dataclass(frozen=True)
class Finding:
    """One refused construct: where it is and why."""

    module: str
    line: int
    construct: str
    reason: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line}: {self.construct}: {self.reason}"


def lift_length_limits(engine: regorus.Engine) -> None:
    """OPA has no limit on a policy's line width or size; regorus refuses lines over 1024
    columns by default. Policies are trusted configuration: allow what OPA allows, within
    bounds that still stop a runaway file."""
    engine.set_policy_length_config(max_col=1 << 20, max_file_bytes=64 << 20, max_lines=1 << 22)


def _parse(module_id: str, source: str) -> dict[str, Any]:
    engine = regorus.Engine()
    lift_length_limits(engine)
    try:
        engine.add_policy(module_id, source)
        documents = json.loads(engine.get_ast_as_json())
    except Exception as exc:  # regorus raises RuntimeError/ValueError for parse errors
        from mlflow_ztml.policy.regorus import clean_error

        raise PolicyError(f"cannot parse policy {module_id}: {clean_error(exc)}") from exc
    return documents[0]["ast"]


_KINDS = ("Call", "UnaryExpr", "Number", "ArithExpr")


def _collect(node: Any, kinds: tuple[str, ...] = _KINDS) -> dict[str, list[Any]]:
    """Every node of each of `kinds` in the AST, in one pass (the AST of a large policy has
    tens of thousands of nodes: one walk instead of one per kind)."""
    found: dict[str, list[Any]] = {kind: [] for kind in kinds}
    stack = [node]
    pop, push, extend = stack.pop, stack.append, stack.extend
    while stack:
        item = pop()
        if type(item) is dict:
            for key, value in item.items():
                bucket = found.get(key)
                if bucket is not None:
                    bucket.append(value)
                if type(value) is dict or type(value) is list:
                    push(value)
        elif type(item) is list:
            extend(item)
    return found


def _ref_path(node: Any) -> list[str] | None:
    """['crypto', 'sha256'] for a `crypto.sha256` reference; None for anything else."""
    if not isinstance(node, dict) or len(node) != 1:
        return None
    kind, body = next(iter(node.items()))
    if kind == "Var":
        return [body["value"]]
    if kind == "RefDot":
        base = _ref_path(body["refr"])
        return None if base is None else [*base, body["field"][1]]
    return None


def _root_name(node: Any) -> str | None:
    while isinstance(node, dict) and len(node) == 1:
        kind, body = next(iter(node.items()))
        if kind == "Var":
            return body["value"]
        node = body.get("refr")
    return None


def _local_names(ast: dict[str, Any], source: bytes) -> set[str]:
    """Names that resolve to the module's own rules or imports, not to builtins."""
    names = {"data", "input"}
    for rule in ast.get("rules", []):
        kind, body = next(iter(rule.items()))
        head = body if kind == "Default" else next(iter(body["head"].values()))
        root = _root_name(head.get("refr"))
        if root:
            names.add(root)
    for imported in ast.get("imports", []):
        alias = imported.get("as")
        if alias:
            names.add(source[alias["start"] : alias["end"]].decode())
        else:
            path = _ref_path(imported.get("refr"))
            if path:
                names.add(path[-1])
    return names


def _number_finding(module_id: str, text: str, line: int) -> Finding | None:
    try:
        exact = Decimal(text)
    except InvalidOperation:
        return None
    if "." not in text and "e" not in text.lower():
        if INT64_MIN <= int(exact) <= UINT64_MAX:
            return None
        reason = "an integer beyond 64 bits, which regorus rounds to a double (OPA keeps it exact)"
        return Finding(module_id, line, f"number {text}", reason)
    double = float(text)
    if double in (float("inf"), float("-inf")):
        return Finding(module_id, line, f"number {text}", "beyond the range of a double")
    if double.is_integer() and abs(double) >= 2.0**63:
        reason = "an integral value beyond 64 bits, which regorus cannot hand to a builtin"
        return Finding(module_id, line, f"number {text}", reason)
    if Decimal(repr(double)) != exact:
        reason = (
            f"regorus holds it as the double {double!r}; OPA keeps the exact value, so "
            "comparisons may differ (write it with at most 17 significant digits)"
        )
        return Finding(module_id, line, f"number {text}", reason)
    return None


def _operator_offset(source: bytes, start: int, end: int, operator: str) -> int:
    """The byte offset of the binary operator between two operands (skips parens, comments)."""
    index = start
    while index < end:
        char = chr(source[index])
        if char == "#":
            newline = source.find(b"\n", index, end)
            index = end if newline < 0 else newline + 1
            continue
        if char == operator:
            return index
        index += 1
    raise PolicyError(f"cannot locate the operator {operator!r} between bytes {start} and {end}")


@functools.lru_cache(maxsize=256)
def rewrite(module_id: str, source: str) -> str:
    """The module as ztml hands it to regorus. Raises RegoDivergenceError listing every
    refused construct, PolicyError when it does not parse.

    Cached: every thread prepares its own regorus engine from the same modules."""
    ast = _parse(module_id, source)
    data = source.encode("utf-8")
    findings: list[Finding] = []
    local = _local_names(ast, data)
    nodes = _collect(ast)
    for call in nodes["Call"]:
        path = _ref_path(call["fcn"])
        if path is None or path[0] in local:
            continue
        name = ".".join(path)
        line = call["span"]["line"]
        if name in UNSUPPORTED:
            reason = (
                "regorus does not implement it as OPA does; evaluate this policy with OPA "
                "(policy.engine: opa)"
            )
            findings.append(Finding(module_id, line, f"{name}(...)", reason))
        elif name in DEPRECATED:
            findings.append(
                Finding(module_id, line, f"{name}(...)", "a deprecated built-in OPA v1 refuses")
            )
    for unary in nodes["UnaryExpr"]:
        reason = (
            "regorus cannot negate an expression (and reads `-a + b` as `-(a + b)`); write `0 - a`"
        )
        findings.append(Finding(module_id, unary["span"]["line"], "unary minus", reason))
    for number in nodes["Number"]:
        span = number["span"]
        text = data[span["start"] : span["end"]].decode()
        finding = _number_finding(module_id, text, span["line"])
        if finding is not None:
            findings.append(finding)
    if findings:
        findings.sort(key=lambda f: (f.module, f.line, f.construct))
        listing = "\n  ".join(str(f) for f in findings)
        raise RegoDivergenceError(
            f"{module_id} uses constructs the in-process engine cannot evaluate as OPA "
            f"does:\n  {listing}"
        )
    edits = _arithmetic_edits(nodes["ArithExpr"], data) + _call_edits(nodes["Call"], data, local)
    return _apply(data, edits) if edits else source


# An edit: (offset, order, tiebreak, text, removed bytes). At one offset closing parentheses
# (order 0) come first, then opening calls (order 1, the enclosing one first), then
# replacements (order 2).
_Edit = tuple[int, int, int, bytes, int]


def _span(node: dict[str, Any]) -> dict[str, int]:
    """The byte span of an expression; a string literal's includes its quotes (regorus'
    covers only the characters between them)."""
    kind, body = next(iter(node.items()))
    span = body["span"]
    if kind in ("String", "RawString"):
        return {**span, "start": span["start"] - 1, "end": span["end"] + 1}
    return span


def _wrap(span: dict[str, int], prefix: bytes) -> list[_Edit]:
    size = span["end"] - span["start"]
    return [(span["start"], 1, -size, prefix, 0), (span["end"], 0, size, b")", 0)]


def _arithmetic_edits(arithmetic: list[Any], data: bytes) -> list[_Edit]:
    edits: list[_Edit] = []
    for node in arithmetic:
        if node.get("op") not in ARITHMETIC:
            continue
        operator, prefix = ARITHMETIC[node["op"]]
        if node["op"] == "Sub" and (_numeric(node["lhs"]) or _numeric(node["rhs"])):
            prefix = "__ztml.sub("  # a number on one side: not a set difference
        lhs_span, rhs_span = _span(node["lhs"]), _span(node["rhs"])
        op_at = _operator_offset(data, lhs_span["end"], rhs_span["start"], operator)
        edits += _wrap(node["span"], prefix.encode())
        edits.append((op_at, 2, 0, b",", 1))
    return edits


def _numeric(node: dict[str, Any]) -> bool:
    return next(iter(node)) in ("Number", "ArithExpr")


# regex builtins whose pattern (first argument) is translated from Go's syntax to Rust's,
# then evaluated by regorus' own implementation.
_GO_PATTERN_ARGUMENT = {
    "regex.match": 0,
    "regex.find_n": 0,
    "regex.find_all_string_submatch_n": 0,
    "regex.replace": 1,
}


def _call_edits(calls: list[Any], data: bytes, local: set[str]) -> list[_Edit]:
    edits: list[_Edit] = []
    for call in calls:
        path = _ref_path(call["fcn"])
        if path is None or path[0] in local:
            continue
        name = ".".join(path)
        params = call.get("params") or []
        if name in _GO_PATTERN_ARGUMENT and len(params) > _GO_PATTERN_ARGUMENT[name]:
            edits += _wrap(_span(params[_GO_PATTERN_ARGUMENT[name]]), b"__ztml.go_regex(")
        elif name == "glob.match" and len(params) == 3:
            # glob.match(p, d, s) -> regex.match(__ztml.glob_regex(p, d), s)
            fcn = _span(call["fcn"])
            edits.append((fcn["start"], 2, 0, b"regex.match", fcn["end"] - fcn["start"]))
            first, second = _span(params[0]), _span(params[1])
            span = {"start": first["start"], "end": second["end"]}
            edits += _wrap(span, b"__ztml.glob_regex(")
    return edits


def _apply(data: bytes, edits: list[_Edit]) -> str:
    edits.sort(key=lambda edit: (edit[0], edit[1], edit[2]))
    out = bytearray()
    cursor = 0
    for offset, _, _, text, removed in edits:
        out += data[cursor:offset]
        out += text
        cursor = max(cursor, offset + removed)
    out += data[cursor:]
    return out.decode("utf-8")
