"""Rego values as OPA sees them: its total order, its printed form, its number texts.

A regorus extension receives Rego values as Python ones: null -> None, booleans, numbers
(an integral number arrives as `int` even when written `2.0`, any other as `float`),
strings, arrays -> list, objects -> dict, sets -> set. These helpers reproduce what OPA
(v1, `ast.Compare` and `ast.Term.String`) does with the same values, so an override can
answer exactly what OPA answers.

Contract notes:
- `compare` is OPA's order: null < booleans < numbers < strings < arrays < objects < sets;
  arrays and sets element-wise then by length, objects by their sorted (key, value) pairs.
- `term_string` is OPA's printed form (`sprintf("%v", [[x]])`, messages, `print`): strings
  quoted like Go's strconv.Quote, objects and sets sorted, the empty set as `set()`.
- `number_text` is the text OPA would hold for a number that came to it as JSON written by
  Python (`json.dumps`), which is how ztml hands every input to an engine.
"""

from __future__ import annotations

import functools
import math
import unicodedata
from typing import Any

# OPA's type ranks (ast/compare.go sortOrder), for the Python shapes regorus hands over.
_NULL, _BOOLEAN, _NUMBER, _STRING, _ARRAY, _OBJECT, _SET = range(7)

INT64_MIN = -(1 << 63)
UINT64_MAX = (1 << 64) - 1


def is_number(value: Any) -> bool:
    """A Rego number (Python bool is an int subclass, and is not one)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def type_rank(value: Any) -> int:
    if value is None:
        return _NULL
    if isinstance(value, bool):
        return _BOOLEAN
    if isinstance(value, int | float):
        return _NUMBER
    if isinstance(value, str):
        return _STRING
    if isinstance(value, list | tuple):
        return _ARRAY
    if isinstance(value, dict):
        return _OBJECT
    if isinstance(value, set | frozenset):
        return _SET
    raise TypeError(f"not a Rego value: {type(value).__name__}")


def type_name(value: Any) -> str:
    """OPA's name for the value's type, as its error messages spell it."""
    return ("null", "boolean", "number", "string", "array", "object", "set")[type_rank(value)]


def _sign(number: int) -> int:
    return (number > 0) - (number < 0)


def compare(a: Any, b: Any) -> int:
    """-1, 0 or 1: how OPA orders `a` and `b` (sort, min/max, set and object order)."""
    rank_a, rank_b = type_rank(a), type_rank(b)
    if rank_a != rank_b:
        return _sign(rank_a - rank_b)
    if rank_a == _NULL:
        return 0
    if rank_a in (_BOOLEAN, _NUMBER):
        return _sign((a > b) - (a < b)) if a != b else 0
    if rank_a == _STRING:
        # Go compares strings byte-wise in UTF-8, which orders like code points.
        return (a > b) - (a < b)
    if rank_a == _ARRAY:
        return _compare_sequences(list(a), list(b))
    if rank_a == _SET:
        return _compare_sequences(sorted_values(a), sorted_values(b))
    pairs_a = [(key, a[key]) for key in sorted_values(a.keys())]
    pairs_b = [(key, b[key]) for key in sorted_values(b.keys())]
    for (key_a, value_a), (key_b, value_b) in zip(pairs_a, pairs_b, strict=False):
        order = compare(key_a, key_b) or compare(value_a, value_b)
        if order:
            return order
    return _sign(len(pairs_a) - len(pairs_b))


def _compare_sequences(a: list[Any], b: list[Any]) -> int:
    for item_a, item_b in zip(a, b, strict=False):
        order = compare(item_a, item_b)
        if order:
            return order
    return _sign(len(a) - len(b))


def sorted_values(values: Any) -> list[Any]:
    """`values` in OPA's order."""
    return sorted(values, key=functools.cmp_to_key(compare))


def number_text(number: int | float) -> str:
    """The text of a number as OPA holds it after reading ztml's JSON (json.dumps)."""
    if isinstance(number, int):
        return str(number)
    if not math.isfinite(number):
        raise ValueError(f"{number} is not a JSON number")
    return repr(number)


def go_quote(text: str, *, ascii_only: bool = False) -> str:
    """Go's strconv.Quote (QuoteToASCII when `ascii_only`): how OPA prints a string."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif char in _GO_SHORT_ESCAPES:
            out.append(_GO_SHORT_ESCAPES[char])
        elif (code < 0x80 or not ascii_only) and is_go_printable(char):
            out.append(char)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append("\\ufffd")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


_GO_SHORT_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def is_go_printable(char: str) -> bool:
    """Go's unicode.IsPrint: letters, marks, numbers, punctuation, symbols, ASCII space."""
    if char == " ":
        return True
    return unicodedata.category(char)[0] in "LMNPS"


def term_string(value: Any) -> str:
    """OPA's printed form of a Rego value (ast.Term.String)."""
    rank = type_rank(value)
    if rank == _NULL:
        return "null"
    if rank == _BOOLEAN:
        return "true" if value else "false"
    if rank == _NUMBER:
        return number_text(value)
    if rank == _STRING:
        return go_quote(value)
    if rank == _ARRAY:
        return "[" + ", ".join(term_string(item) for item in value) + "]"
    if rank == _SET:
        if not value:
            return "set()"
        return "{" + ", ".join(term_string(item) for item in sorted_values(value)) + "}"
    keys = sorted_values(value.keys())
    return "{" + ", ".join(f"{term_string(key)}: {term_string(value[key])}" for key in keys) + "}"
