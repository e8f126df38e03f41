"""`glob.match` and `glob.quote_meta` as OPA answers them (github.com/gobwas/glob v0.2).

regorus' glob differs: an empty delimiter list means no delimiters to it but `["."]` to OPA,
`**` after other text is not a super-wildcard to it, `[^b]` is a negation to it but the two
characters `^` and `b` to gobwas (which negates with `[!b]`), a class like `[.]` never
matches a delimiter in it but does in OPA, and quote_meta escapes only `*`.

The pattern is parsed with gobwas' grammar (errors where gobwas errors) and turned into a
Rust regex that regorus' own regex.match evaluates (linear time, no backtracking).
"""

from __future__ import annotations

import functools
from typing import Any

from mlflow_ztml.policy.compat import native
from mlflow_ztml.policy.compat.goregex import _lit
from mlflow_ztml.policy.compat.values import type_name

_SPECIALS = "*?\\[]{}"


class GlobError(ValueError):
    """A pattern gobwas/glob refuses to compile."""


def quote_meta(pattern: Any) -> str:
    if not isinstance(pattern, str):
        raise ValueError(f"glob.quote_meta: operand 1 must be string but got {type_name(pattern)}")
    return "".join("\\" + c if c in _SPECIALS else c for c in pattern)


def _tokens(pattern: str) -> list[tuple[str, Any]]:
    """gobwas' lexer: (kind, data) tokens; kinds text, any, super, single, range, open,
    separator, close."""
    out: list[tuple[str, Any]] = []
    index = 0
    depth = 0
    size = len(pattern)
    while index < size:
        char = pattern[index]
        if char == "{":
            depth += 1
            out.append(("open", None))
            index += 1
        elif char == "," and depth:
            out.append(("separator", None))
            index += 1
        elif char == "}" and depth:
            depth -= 1
            out.append(("close", None))
            index += 1
        elif char == "[":
            index = _range(pattern, index + 1, out)
        elif char == "?":
            out.append(("single", None))
            index += 1
        elif char == "*":
            if index + 1 < size and pattern[index + 1] == "*":
                out.append(("super", None))
                index += 2
            else:
                out.append(("any", None))
                index += 1
        else:
            breakers = "?*[{" + ("},]" if depth else "")
            text, index = _text(pattern, index, breakers)
            if text:
                out.append(("text", text))
    return out


def _text(pattern: str, index: int, breakers: str) -> tuple[str, int]:
    data = []
    escaped = False
    while index < len(pattern):
        char = pattern[index]
        if not escaped:
            if char == "\\":
                escaped = True
                index += 1
                continue
            if char in breakers:
                break
        escaped = False
        data.append(char)
        index += 1
    return "".join(data), index


def _range(pattern: str, index: int, out: list[tuple[str, Any]]) -> int:
    negate = False
    low = high = None
    chars = ""
    if index < len(pattern) and pattern[index] == "!":
        negate = True
        index += 1
    if index >= len(pattern):
        raise GlobError("unexpected end of input")
    if index + 1 < len(pattern) and pattern[index + 1] == "-":
        low = pattern[index]
        if index + 2 >= len(pattern):
            raise GlobError("unexpected end of input")
        high = pattern[index + 2]
        index += 3
    else:
        chars, index = _text(pattern, index, "]")
    if index >= len(pattern):
        raise GlobError("unexpected end of input")
    if pattern[index] != "]":
        raise GlobError("expected close range character")
    index += 1
    if low is not None and high is not None:
        if high < low:
            raise GlobError(f"hi character '{high}' should be greater than lo '{low}'")
        out.append(("range", (negate, f"{_lit(low)}-{_lit(high)}")))
    elif chars:
        out.append(("range", (negate, "".join(_lit(c) for c in chars))))
    else:
        raise GlobError("could not parse range")
    return index


@functools.lru_cache(maxsize=512)
def compile_glob(pattern: str, delimiters: tuple[str, ...]) -> str:
    """The anchored Rust regex matching what gobwas' glob matches."""
    separators = "".join(_lit(d) for d in delimiters)
    not_separator = f"[^{separators}]" if separators else "(?s:.)"
    regex: list[str] = []
    for kind, data in _tokens(pattern):
        if kind == "text":
            regex.append("".join(_lit(c) for c in data))
        elif kind == "any":
            regex.append(f"{not_separator}*")
        elif kind == "super":
            regex.append("(?s:.)*")
        elif kind == "single":
            regex.append(not_separator)
        elif kind == "range":
            negate, body = data
            regex.append(f"[{'^' if negate else ''}{body}]")
        elif kind == "open":
            regex.append("(?:")
        elif kind == "separator":
            regex.append("|")
        elif kind == "close":
            regex.append(")")
    opened = sum(1 for kind, _ in _tokens(pattern) if kind == "open")
    closed = sum(1 for kind, _ in _tokens(pattern) if kind == "close")
    regex.append(")" * (opened - closed))  # gobwas accepts an unclosed `{`
    return "^(?:" + "".join(regex) + ")$"


def glob_regex(pattern: Any, delimiters: Any) -> str:
    """The Rust regex for glob.match(pattern, delimiters, _) (the rewritten call's pattern)."""
    name = "glob.match"
    if not isinstance(pattern, str):
        raise ValueError(f"{name}: operand 1 must be string but got {type_name(pattern)}")
    if delimiters is None:
        runes: tuple[str, ...] = ()
    elif isinstance(delimiters, list):
        if not all(isinstance(d, str) and len(d) == 1 for d in delimiters):
            raise ValueError(f"{name}: operand 2 must be an array of single characters")
        runes = tuple(delimiters) or (".",)
    else:
        raise ValueError(
            f"{name}: operand 2 must be one of {{array, null}} but got {type_name(delimiters)}"
        )
    try:
        return compile_glob(pattern, runes)
    except GlobError as exc:
        raise ValueError(f"{name}: {exc}") from None


def glob_match(pattern: Any, delimiters: Any, value: Any) -> bool:
    """glob.match where it is not rewritten (a `with` replacement, say)."""
    regex = glob_regex(pattern, delimiters)
    if not isinstance(value, str):
        raise ValueError(f"glob.match: operand 3 must be string but got {type_name(value)}")
    return bool(native.call("regex_match", regex, value))
