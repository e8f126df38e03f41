"""OPA's arithmetic, for regorus: `+ - * / %`, `sum` and `product` computed as OPA does.

OPA keeps a number as its decimal text and computes integers exactly (big.Int) and anything
else with big.Float at 64 bits of mantissa, rounding to nearest-even; regorus computes in
IEEE doubles (53 bits). So `0.1 + 0.2 == 0.3` is true in OPA and false in regorus, and
`0.32 - 0.02 > 0.3` is false in OPA and true in regorus. Here each operand is read back
from the text OPA would hold (Python's shortest repr, which is what `json.dumps` writes),
rounded to 64 bits, combined, rounded to 64 bits, and the result handed to regorus as the
double nearest to it.

Fail closed: a result regorus cannot hold (an integer beyond 64 bits, which it would
silently round) raises ArithmeticError with a message naming the value.
"""

from __future__ import annotations

import functools
import math
from decimal import Decimal
from fractions import Fraction
from typing import Any

from mlflow_ztml.policy.compat.values import INT64_MIN, UINT64_MAX, is_number, type_name

MANTISSA_BITS = 64


class RegoTypeError(TypeError):
    """An operand of the wrong type: OPA reports it as an error too."""


@functools.lru_cache(maxsize=4096)
def _exact_float(number: float) -> Fraction:
    # The decimal text OPA parses (Python's shortest repr, as json.dumps wrote it), exactly.
    return round_to_bits(Fraction(*Decimal(repr(number)).as_integer_ratio()))


def _exact(number: int | float) -> Fraction:
    if isinstance(number, int):
        return round_to_bits(Fraction(number))
    return _exact_float(number)


def round_to_bits(value: Fraction, bits: int = MANTISSA_BITS) -> Fraction:
    """`value` rounded to `bits` significant bits, ties to even (big.Float's default)."""
    numerator, denominator = value.numerator, value.denominator
    if numerator == 0:
        return value
    negative = numerator < 0
    numerator = abs(numerator)
    # Find `shift` so that q = numerator * 2**shift // denominator has exactly `bits` bits.
    shift = bits - (numerator.bit_length() - denominator.bit_length())
    while True:
        if shift >= 0:
            q, r = divmod(numerator << shift, denominator)
            scale_den = denominator
        else:
            scale_den = denominator << -shift
            q, r = divmod(numerator, scale_den)
        if q >= 1 << bits:
            shift -= 1
        elif q < 1 << (bits - 1):
            shift += 1
        else:
            break
    twice = 2 * r
    if twice > scale_den or (twice == scale_den and q & 1):
        q += 1
    if negative:
        q = -q
    return Fraction(q, 1 << shift) if shift >= 0 else Fraction(q << -shift)


def to_rego(value: Fraction) -> int | float:
    """A result as regorus should hold it: an int when integral and in 64 bits, else a float."""
    if value.denominator == 1:
        integer = value.numerator
        if INT64_MIN <= integer <= UINT64_MAX:
            return integer
        raise ArithmeticError(
            f"the result {integer} exceeds 64 bits: regorus would round it, OPA keeps it exact"
        )
    numerator, denominator = value.numerator, value.denominator
    if denominator & (denominator - 1) == 0 and abs(numerator) < 1 << 64:
        # value = numerator / 2**k: float(numerator) rounds once, ldexp scales exactly.
        return math.ldexp(float(numerator), 1 - denominator.bit_length())
    return float(value)


def _check_int_range(integer: int) -> int:
    if not INT64_MIN <= integer <= UINT64_MAX:
        raise ArithmeticError(
            f"the result {integer} exceeds 64 bits: regorus would round it, OPA keeps it exact"
        )
    return integer


def _operands(name: str, a: Any, b: Any) -> None:
    for position, operand in ((1, a), (2, b)):
        if not is_number(operand):
            raise RegoTypeError(
                f"{name}: operand {position} must be number but got {type_name(operand)}"
            )


def arith(op: str, a: Any, b: Any) -> int | float:
    """`a op b` as OPA computes it; op is one of + - * / %."""
    name = _NAMES[op]
    _operands(name, a, b)
    if isinstance(a, int) and isinstance(b, int):
        if op == "+":
            return _check_int_range(a + b)
        if op == "-":
            return _check_int_range(a - b)
        if op == "*":
            return _check_int_range(a * b)
        if op == "%":
            if b == 0:
                raise ZeroDivisionError("modulo by zero")
            remainder = abs(a) % abs(b)  # Go's % truncates: the sign follows the dividend
            return -remainder if a < 0 else remainder
        if b == 0:
            raise ZeroDivisionError("divide by zero")
        if a != 0 and a % b == 0:
            return _check_int_range(a // b)
    elif op == "%":
        raise ArithmeticError("modulo on floating-point number")
    x, y = _exact(a), _exact(b)
    if op == "+":
        result = x + y
    elif op == "-":
        result = x - y
    elif op == "*":
        result = x * y
    else:
        if y == 0:
            raise ZeroDivisionError("divide by zero")
        result = x / y
    return to_rego(round_to_bits(result))


_NAMES = {"+": "plus", "-": "minus", "*": "mul", "/": "div", "%": "rem"}


def total(name: str, values: Any, op: str) -> int | float:
    """`sum` (op "+") or `product` (op "*") of an array or set of numbers, as OPA folds them."""
    if not isinstance(values, list | set | frozenset | tuple):
        raise RegoTypeError(
            f"{name}: operand 1 must be one of {{array, set}} but got {type_name(values)}"
        )
    items = list(values)
    for item in items:
        if not is_number(item):
            raise RegoTypeError(f"{name}: operand 1 must be array of numbers")
    if op == "+":
        result: int | float = 0
        for item in items:
            result = arith("+", result, item)
        return result
    # OPA's product folds into a big.Float made by NewFloat(1): 53 bits, operands at 64.
    if all(isinstance(item, int) for item in items):
        product = 1
        for item in items:
            product *= item
        return _check_int_range(product)
    accumulator = Fraction(1)
    for item in items:
        accumulator = round_to_bits(accumulator * _exact(item), 53)
    return to_rego(accumulator)
