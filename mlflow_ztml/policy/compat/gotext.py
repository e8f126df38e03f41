"""Go's string functions where regorus (Rust) answers differently: case mapping, counting,
replacing, semantic versions, resource units and RFC 3339 timestamps, as OPA implements them.

Each function takes and returns plain Python values and raises ValueError with OPA's wording
where OPA reports a builtin error.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

from mlflow_ztml.policy.compat.numbers import round_to_bits, to_rego
from mlflow_ztml.policy.compat.values import type_name

# -- case mapping: Go maps each rune on its own (unicode.ToUpper/ToLower, simple mappings) ----


def go_upper(text: str) -> str:
    """strings.ToUpper: per-rune simple mapping (no ß -> SS, no ﬁ -> FI)."""
    if text.isascii():  # ASCII maps one to one, as Go's does
        return text.upper()
    out = []
    for char in text:
        mapped = char.upper()
        if len(mapped) != 1:
            titled = char.title()
            mapped = titled if len(titled) == 1 else char
        out.append(mapped)
    return "".join(out)


def go_lower(text: str) -> str:
    """strings.ToLower: per-rune simple mapping (U+0130 -> i, a final capital sigma -> U+03C3)."""
    if text.isascii():  # ASCII maps one to one, as Go's does
        return text.lower()
    out = []
    for char in text:
        mapped = char.lower()
        if len(mapped) != 1:
            mapped = "i" if char == "\u0130" else char
        out.append(mapped)
    return "".join(out)


def go_count(text: str, substring: str) -> int:
    """strings.Count: non-overlapping occurrences; an empty substring counts runes + 1."""
    if substring == "":
        return len(text) + 1
    return text.count(substring)


def go_indexof(text: str, substring: str) -> int:
    """OPA's indexof: rune index of the first occurrence; an empty search is an error."""
    if substring == "":
        raise ValueError("indexof: empty search character")
    return text.find(substring)


def go_replace_n(patterns: Any, text: Any) -> str:
    """strings.replace_n: one pass of Go's strings.NewReplacer over keys sorted as OPA sorts.

    At each position the first pattern (in sorted-key order) that matches is replaced and
    the scan continues after it; replaced text is never matched again.
    """
    if not isinstance(patterns, dict):
        raise ValueError(
            f"strings.replace_n: operand 1 must be object but got {type_name(patterns)}"
        )
    if not isinstance(text, str):
        raise ValueError(f"strings.replace_n: operand 2 must be string but got {type_name(text)}")
    pairs = []
    for key in sorted(patterns, key=_string_sort_key):
        if not isinstance(key, str):
            raise ValueError("strings.replace_n: operand 1 non-string key found in pattern object")
        value = patterns[key]
        if not isinstance(value, str):
            raise ValueError(
                "strings.replace_n: operand 1 non-string value found in pattern object"
            )
        pairs.append((key, value))
    return _go_replacer(pairs, text)


def _string_sort_key(key: Any) -> tuple[int, Any]:
    return (0, key) if isinstance(key, str) else (1, str(key))


def _go_replacer(pairs: list[tuple[str, str]], text: str) -> str:
    """Go's genericReplacer: at each position the earliest pair whose old string matches
    wins; an empty old string matches everywhere, but not twice in a row."""
    out: list[str] = []
    last = index = 0
    previous_empty = False
    while index <= len(text):
        match = None
        for old, new in pairs:
            if old == "":
                if not previous_empty:
                    match = (old, new)
                    break
            elif text.startswith(old, index):
                match = (old, new)
                break
        previous_empty = match is not None and match[0] == ""
        if match is not None:
            out.append(text[last:index])
            out.append(match[1])
            index += len(match[0])
            last = index
            continue
        index += 1
    if last != len(text):
        out.append(text[last:])
    return "".join(out)


# -- semantic versions: OPA's internal/semver ------------------------------------------------

_META = re.compile(r"[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*")
_GO_INT = re.compile(r"[+-]?[0-9]+")
_INT64_MAX = (1 << 63) - 1


def _cut(text: str, separator: str) -> tuple[str, str]:
    before, _, after = text.partition(separator)
    return before, after


def _parse_int64(text: str) -> int:
    if not _GO_INT.fullmatch(text):
        raise ValueError(f'strconv.ParseInt: parsing "{text}": invalid syntax')
    value = int(text)
    if not -_INT64_MAX - 1 <= value <= _INT64_MAX:
        raise ValueError(f'strconv.ParseInt: parsing "{text}": value out of range')
    return value


def semver_parse(version: str) -> tuple[int, int, int, str]:
    """(major, minor, patch, pre-release) or ValueError, exactly as OPA's semver.Parse."""
    version = version.removeprefix("v")
    version, metadata = _cut(version, "+")
    if metadata and not _META.fullmatch(metadata):
        raise ValueError(f"invalid metadata identifier: {metadata}")
    version, pre = _cut(version, "-")
    if pre and not _META.fullmatch(pre):
        raise ValueError(f"invalid pre-release identifier: {pre}")
    if version.count(".") != 2:
        raise ValueError(f"{version} should contain major, minor, and patch versions")
    major, rest = _cut(version, ".")
    minor, patch = _cut(rest, ".")
    return _parse_int64(major), _parse_int64(minor), _parse_int64(patch), pre


def semver_is_valid(version: Any) -> bool:
    if not isinstance(version, str):
        return False
    try:
        semver_parse(version)
    except ValueError:
        return False
    return True


def semver_compare(a: Any, b: Any) -> int:
    for position, operand in ((1, a), (2, b)):
        if not isinstance(operand, str):
            raise ValueError(
                f"semver.compare: operand {position} must be string but got {type_name(operand)}"
            )
    try:
        left = semver_parse(a)
    except ValueError:
        raise ValueError(f"semver.compare: operand 1: string {a} is not a valid SemVer") from None
    try:
        right = semver_parse(b)
    except ValueError:
        raise ValueError(f"semver.compare: operand 2: string {b} is not a valid SemVer") from None
    for x, y in zip(left[:3], right[:3], strict=True):
        if x != y:
            return 1 if x > y else -1
    return _compare_pre(left[3], right[3])


def _atoi(text: str) -> int:
    value = int(text)
    return value if value <= _INT64_MAX else 0


def _compare_pre(a: str, b: str) -> int:
    if a == b:
        return 0
    if a == "":
        return 1
    if b == "":
        return -1
    left, after_a = _cut(a, ".")
    right, after_b = _cut(b, ".")
    while True:
        if left == "" and right != "":
            return -1
        if left != "" and right == "":
            return 1
        left_int, right_int = left.isdigit() and left.isascii(), right.isdigit() and right.isascii()
        if left_int and not right_int:
            return -1
        if right_int and not left_int:
            return 1
        if left_int and right_int:
            x, y = _atoi(left), _atoi(right)
            if x != y:
                return 1 if x > y else -1
        elif left != right:
            return 1 if left > right else -1
        if after_a and not after_b:
            return 1
        if after_b and not after_a:
            return -1
        left, after_a = _cut(after_a, ".")
        right, after_b = _cut(after_b, ".")
        if left == "" and right == "" and not after_a and not after_b:
            # Different texts, equal identifiers ("1" and "01"): OPA never returns here
            # (it loops forever), so the gate must not get an answer either.
            raise ValueError(
                "semver.compare: pre-release identifiers differ only in leading zeros; "
                "OPA does not terminate on this comparison"
            )


# -- resource units: OPA's units.parse and units.parse_bytes ---------------------------------

_BYTE_UNITS = {
    "": 1,
    "kb": 1000, "k": 1000, "kib": 1 << 10, "ki": 1 << 10,
    "mb": 1000**2, "m": 1000**2, "mib": 1 << 20, "mi": 1 << 20,
    "gb": 1000**3, "g": 1000**3, "gib": 1 << 30, "gi": 1 << 30,
    "tb": 1000**4, "t": 1000**4, "tib": 1 << 40, "ti": 1 << 40,
    "pb": 1000**5, "p": 1000**5, "pib": 1 << 50, "pi": 1 << 50,
    "eb": 1000**6, "e": 1000**6, "eib": 1 << 60, "ei": 1 << 60,
}  # fmt: skip

_SI_POWERS = ((1, "kK"), (2, "M"), (3, "gG"), (4, "tT"), (5, "pP"), (6, "eE"))
_BINARY_POWERS = (
    (1, ("ki", "Ki")),
    (2, ("mi", "Mi")),
    (3, ("gi", "Gi")),
    (4, ("ti", "Ti")),
    (5, ("pi", "Pi")),
    (6, ("ei", "Ei")),
)
_SI_UNITS: dict[str, Fraction] = {
    "m": Fraction(0.001),  # OPA multiplies by the double nearest 0.001, exactly
    "": Fraction(1),
    **{unit: Fraction(1000**power) for power, units in _SI_POWERS for unit in units},
    **{unit: Fraction(1 << (10 * power)) for power, units in _BINARY_POWERS for unit in units},
}

_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _split_amount(text: str, name: str) -> tuple[str, str]:
    """OPA's extractNumAndUnit over ASCII bytes."""
    first_non_num = -1
    index = 0
    data = text
    while index < len(data):
        char = data[index]
        if not (char.isascii() and char.isdigit()) and char not in ".eE+-":
            first_non_num = index
            break
        if char in "eE":
            following = data[index + 1] if index + 1 < len(data) else ""
            if index == len(data) - 1 or not (
                (following.isascii() and following.isdigit()) or following in "+-"
            ):
                first_non_num = index
                break
            if following in "+-":
                index += 1
            start = index + 1
            end = start
            while end < len(data) and data[end].isascii() and data[end].isdigit():
                end += 1
            if end - start > 6:
                raise ValueError(f"{name}: exponent too large")
        index += 1
    if first_non_num == -1:
        return data, ""
    if first_non_num == 0:
        return "", data
    return data[:first_non_num], data[first_non_num:]


def _amount(number: str, name: str, noun: str) -> Fraction:
    if not _NUMBER.fullmatch(number):
        raise ValueError(f"{name}: could not parse {noun} to a number")
    return Fraction(number)


def units_parse_bytes(value: Any) -> int | float:
    name = "units.parse_bytes"
    if not isinstance(value, str):
        raise ValueError(f"{name}: operand 1 must be string but got {type_name(value)}")
    text = value.lower().replace('"', "")
    if " " in text:
        raise ValueError(f"{name}: spaces not allowed in resource strings")
    number, unit = _split_amount(text, name)
    if number == "":
        raise ValueError(f"{name}: no byte amount provided")
    if unit not in _BYTE_UNITS:
        raise ValueError(f"{name}: byte unit {unit} not recognized")
    amount = round_to_bits(_amount(number, name, "byte amount"))
    product = round_to_bits(amount * _BYTE_UNITS[unit])
    whole = int(product)  # big.Float.Int truncates toward zero
    return to_rego(Fraction(whole))


def units_parse(value: Any) -> int | float:
    name = "units.parse"
    if not isinstance(value, str):
        raise ValueError(f"{name}: operand 1 must be string but got {type_name(value)}")
    text = value.replace('"', "")
    if " " in text:
        raise ValueError(f"{name}: spaces not allowed in resource strings")
    number, unit = _split_amount(text, name)
    if number == "":
        raise ValueError(f"{name}: no amount provided")
    if len(unit) > 1:
        unit = unit[:1] + unit[1:].lower()
    if unit not in _SI_UNITS:
        raise ValueError(f"{name}: unit {unit} not recognized")
    product = _amount(number, name, "amount") * _SI_UNITS[unit]
    if product.denominator == 1:
        return to_rego(product)
    # big.Rat.FloatString(10): ten decimals, the last rounded half away from zero.
    scaled = abs(product) * 10**10
    whole, remainder = divmod(scaled.numerator, scaled.denominator)
    if 2 * remainder >= scaled.denominator:
        whole += 1
    text_value = f"{'-' if product < 0 else ''}{whole // 10**10}.{whole % 10**10:010d}"
    return float(text_value)


# -- RFC 3339 timestamps: Go's time.Parse(time.RFC3339, ...) --------------------------------

_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:[.,]([0-9]+))?(Z|[+-][0-9]{2}:[0-9]{2})"
)
_NS_MIN = -(1 << 63)
_NS_MAX = (1 << 63) - 1


def _days_in(month: int, year: int) -> int:
    if month == 2:
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        return 29 if leap else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _days_from_civil(year: int, month: int, day: int) -> int:
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def parse_rfc3339_ns(value: Any) -> int:
    name = "time.parse_rfc3339_ns"
    if not isinstance(value, str):
        raise ValueError(f"{name}: operand 1 must be string but got {type_name(value)}")
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise ValueError(f'{name}: parsing time "{value}" as "2006-01-02T15:04:05Z07:00"')
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    checks = (
        (1 <= month <= 12, "month"),
        (1 <= day <= _days_in(month, year) if 1 <= month <= 12 else True, "day"),
        (hour <= 23, "hour"),
        (minute <= 59, "minute"),
        (second <= 59, "second"),
    )
    for ok, what in checks:
        if not ok:
            raise ValueError(f'{name}: parsing time "{value}": {what} out of range')
    fraction = (match.group(7) or "")[:9].ljust(9, "0")
    nanos = int(fraction)
    zone = match.group(8)
    offset = 0
    if zone != "Z":
        zone_hour, zone_minute = int(zone[1:3]), int(zone[4:6])
        if zone_hour > 24 or zone_minute > 60:
            raise ValueError(f'{name}: parsing time "{value}": time zone offset out of range')
        offset = (zone_hour * 60 + zone_minute) * 60 * (-1 if zone[0] == "-" else 1)
    days = _days_from_civil(year, month, day)
    seconds = days * 86400 + hour * 3600 + minute * 60 + second - offset
    total = seconds * 1_000_000_000 + nanos
    if not _NS_MIN <= total <= _NS_MAX:
        raise ValueError(f"{name}: time outside of valid range")
    return total
