"""The builtin overrides ztml installs on every regorus engine, by Rego name.

Each entry replaces (or, where regorus lacks it, provides) one builtin with OPA's behaviour,
as a regorus extension: regorus looks an extension up before its own builtin of the same
name, so the policy text stays as written and errors keep pointing at the policy's line.

Fail closed: an override raises where OPA reports a builtin error (regorus then fails the
evaluation with the message), never returns a made-up value.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from typing import Any

from mlflow_ztml.policy.compat import goencoding, goglob, goregex, gotext, jsonpaths
from mlflow_ztml.policy.compat.gofmt import sprintf
from mlflow_ztml.policy.compat.numbers import arith, total
from mlflow_ztml.policy.compat.values import compare, is_number, sorted_values, type_name

_INT64_MAX = (1 << 63) - 1


def _sort(values: Any) -> list[Any]:
    if not isinstance(values, list | set | frozenset):
        raise ValueError(
            f"sort: operand 1 must be one of {{array, set}} but got {type_name(values)}"
        )
    return sorted_values(values)


def _int_operand(name: str, value: Any, position: int) -> int:
    if not is_number(value):
        raise ValueError(f"{name}: operand {position} must be number but got {type_name(value)}")
    if isinstance(value, float):
        raise ValueError(
            f"{name}: operand {position} must be integer number but got floating-point number"
        )
    return value


def _array_slice(array: Any, start: Any, stop: Any) -> list[Any]:
    name = "array.slice"
    if not isinstance(array, list):
        raise ValueError(f"{name}: operand 1 must be array but got {type_name(array)}")
    begin = _int_operand(name, start, 2)
    end = _int_operand(name, stop, 3)
    end = 0 if end < 0 else min(end, len(array))
    begin = 0 if begin < 0 else min(begin, end)
    return array[begin:end]


def _array_flatten(array: Any) -> list[Any]:
    if not isinstance(array, list):
        raise ValueError(f"array.flatten: operand 1 must be array but got {type_name(array)}")
    out: list[Any] = []
    for item in array:  # one level, as OPA does
        out.extend(item if isinstance(item, list) else [item])
    return out


def _digest(name: str, algorithm: str) -> Callable[[Any], str]:
    def digest(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"{name}: operand 1 must be string but got {type_name(value)}")
        return hashlib.new(algorithm, value.encode("utf-8")).hexdigest()

    return digest


def _hmac(name: str, algorithm: str) -> Callable[[Any, Any], str]:
    def digest(value: Any, key: Any) -> str:
        for position, operand in ((1, value), (2, key)):
            if not isinstance(operand, str):
                raise ValueError(
                    f"{name}: operand {position} must be string but got {type_name(operand)}"
                )
        return hmac.new(key.encode("utf-8"), value.encode("utf-8"), algorithm).hexdigest()

    return digest


def _hmac_equal(a: Any, b: Any) -> bool:
    for position, operand in ((1, a), (2, b)):
        if not isinstance(operand, str):
            raise ValueError(
                f"crypto.hmac.equal: operand {position} must be string but got {type_name(operand)}"
            )
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def _minus(a: Any, b: Any) -> Any:
    if isinstance(a, set) and isinstance(b, set):
        return a - b
    return arith("-", a, b)


def _set_op(name: str, op: Callable[[set[Any], set[Any]], set[Any]]) -> Callable[[Any, Any], Any]:
    def apply(a: Any, b: Any) -> Any:
        for position, operand in ((1, a), (2, b)):
            if not isinstance(operand, set):
                raise ValueError(
                    f"{name}: operand {position} must be set but got {type_name(operand)}"
                )
        return op(a, b)

    return apply


def _comparison(test: Callable[[int], bool]) -> Callable[[Any, Any], bool]:
    return lambda a, b: test(compare(a, b))


# -- time.parse_duration_ns: Go's time.ParseDuration plus OPA's d, w and y units -------------

_DURATION_UNITS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,
    "\u03bcs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
    "d": 24 * 3600 * 1_000_000_000,
    "w": 7 * 24 * 3600 * 1_000_000_000,
    "y": 365 * 24 * 3600 * 1_000_000_000,
}
_SEGMENT = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")


def _parse_duration_ns(value: Any) -> int:
    name = "time.parse_duration_ns"
    if not isinstance(value, str):
        raise ValueError(f"{name}: operand 1 must be string but got {type_name(value)}")
    original = value
    invalid = ValueError(f'{name}: time: invalid duration "{original}"')
    text = value
    negative = False
    if text and text[0] in "+-":
        negative = text[0] == "-"
        text = text[1:]
    if text == "0":
        return 0
    if text == "":
        raise invalid
    total_ns = 0
    while text:
        if not (text[0] == "." or (text[0].isascii() and text[0].isdigit())):
            raise invalid
        match = _SEGMENT.match(text)
        assert match is not None  # the pattern matches any text
        whole, fraction, unit = match.group(1), match.group(2), match.group(3)
        if whole == "" and not fraction:
            raise invalid
        if unit == "":
            raise ValueError(f'{name}: time: missing unit in duration "{original}"')
        if unit not in _DURATION_UNITS:
            raise ValueError(f'{name}: time: unknown unit "{unit}" in duration "{original}"')
        text = text[match.end() :]
        scale = _DURATION_UNITS[unit]
        amount = int(whole or "0")
        if amount > (1 << 63) // scale:
            raise invalid
        amount *= scale
        if fraction:
            digits = fraction[:18]
            amount += int(float(int(digits)) * (scale / 10 ** len(digits)))
            if amount > 1 << 63:
                raise invalid
        total_ns += amount
        if total_ns > 1 << 63:
            raise invalid
    if negative:
        return -total_ns
    if total_ns > _INT64_MAX:
        raise invalid
    return total_ns


OVERRIDES: dict[str, tuple[int, Callable[..., Any]]] = {
    # json paths and patches
    "json.remove": (2, jsonpaths.json_remove),
    "json.filter": (2, jsonpaths.json_filter),
    "json.patch": (2, jsonpaths.json_patch),
    "json.marshal": (1, goencoding.json_marshal),
    "json.marshal_with_options": (2, goencoding.json_marshal_with_options),
    "yaml.unmarshal": (1, goencoding.yaml_unmarshal),
    # formatting and strings
    "sprintf": (2, sprintf),
    "upper": (1, lambda s: gotext.go_upper(_string("upper", s))),
    "lower": (1, lambda s: gotext.go_lower(_string("lower", s))),
    "strings.count": (
        2,
        lambda s, sub: gotext.go_count(_string("strings.count", s), _string("strings.count", sub)),
    ),
    "indexof": (
        2,
        lambda s, sub: gotext.go_indexof(_string("indexof", s), _string("indexof", sub)),
    ),
    "strings.replace_n": (2, gotext.go_replace_n),
    # glob and regex
    "glob.match": (3, goglob.glob_match),
    "glob.quote_meta": (1, goglob.quote_meta),
    "regex.is_valid": (1, goregex.regex_is_valid),
    "regex.split": (2, goregex.regex_split),
    # numbers
    "sum": (1, lambda values: total("sum", values, "+")),
    "product": (1, lambda values: total("product", values, "*")),
    "plus": (2, lambda a, b: arith("+", a, b)),
    "minus": (2, _minus),
    "mul": (2, lambda a, b: arith("*", a, b)),
    "div": (2, lambda a, b: arith("/", a, b)),
    "rem": (2, lambda a, b: arith("%", a, b)),
    "units.parse": (1, gotext.units_parse),
    "units.parse_bytes": (1, gotext.units_parse_bytes),
    # versions and time
    "semver.is_valid": (1, gotext.semver_is_valid),
    "semver.compare": (2, gotext.semver_compare),
    "time.parse_rfc3339_ns": (1, gotext.parse_rfc3339_ns),
    "time.parse_duration_ns": (1, _parse_duration_ns),
    # collections and ordering
    "sort": (1, _sort),
    "array.slice": (3, _array_slice),
    "array.flatten": (1, _array_flatten),
    "and": (2, _set_op("and", lambda a, b: a & b)),
    "or": (2, _set_op("or", lambda a, b: a | b)),
    "lt": (2, _comparison(lambda c: c < 0)),
    "lte": (2, _comparison(lambda c: c <= 0)),
    "gt": (2, _comparison(lambda c: c > 0)),
    "gte": (2, _comparison(lambda c: c >= 0)),
    "equal": (2, _comparison(lambda c: c == 0)),
    "neq": (2, _comparison(lambda c: c != 0)),
    # hashes regorus does not build with
    "crypto.md5": (1, _digest("crypto.md5", "md5")),
    "crypto.sha1": (1, _digest("crypto.sha1", "sha1")),
    "crypto.sha256": (1, _digest("crypto.sha256", "sha256")),
    "crypto.hmac.md5": (2, _hmac("crypto.hmac.md5", "md5")),
    "crypto.hmac.sha1": (2, _hmac("crypto.hmac.sha1", "sha1")),
    "crypto.hmac.sha256": (2, _hmac("crypto.hmac.sha256", "sha256")),
    "crypto.hmac.sha512": (2, _hmac("crypto.hmac.sha512", "sha512")),
    "crypto.hmac.equal": (2, _hmac_equal),
}


def _string(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name}: operand must be string but got {type_name(value)}")
    return value


# Builtins OPA has that neither regorus nor ztml implements the way OPA does: a policy that
# calls one is refused before evaluation (the message names the file and line).
UNSUPPORTED: frozenset[str] = frozenset(
    {
        "crypto.parse_private_keys",
        "crypto.x509.parse_and_verify_certificates",
        "crypto.x509.parse_and_verify_certificates_with_options",
        "crypto.x509.parse_certificate_request",
        "crypto.x509.parse_certificates",
        "crypto.x509.parse_keypair",
        "crypto.x509.parse_rsa_private_key",
        "graphql.is_valid",
        "graphql.parse",
        "graphql.parse_and_verify",
        "graphql.parse_query",
        "graphql.parse_schema",
        "graphql.schema_is_valid",
        "http.send",
        "io.jwt.decode",
        "io.jwt.decode_verify",
        "io.jwt.encode_sign",
        "io.jwt.encode_sign_raw",
        "io.jwt.verify_eddsa",
        "io.jwt.verify_es256",
        "io.jwt.verify_es384",
        "io.jwt.verify_es512",
        "io.jwt.verify_hs256",
        "io.jwt.verify_hs384",
        "io.jwt.verify_hs512",
        "io.jwt.verify_ps256",
        "io.jwt.verify_ps384",
        "io.jwt.verify_ps512",
        "io.jwt.verify_rs256",
        "io.jwt.verify_rs384",
        "io.jwt.verify_rs512",
        "net.cidr_contains_matches",
        "net.cidr_intersects",
        "net.cidr_merge",
        "net.lookup_ip_addr",
        "providers.aws.sign_req",
        "regex.globs_match",
        "regex.template_match",
        "rego.metadata.chain",
        "rego.metadata.rule",
        "rego.parse_module",
        "strings.render_template",
    }
)

# OPA v1 refuses these at compile time (deprecated built-ins); so does ztml.
DEPRECATED: frozenset[str] = frozenset(
    {
        "all",
        "any",
        "cast_array",
        "cast_boolean",
        "cast_null",
        "cast_object",
        "cast_set",
        "cast_string",
        "net.cidr_overlap",
        "re_match",
        "set_diff",
    }
)
