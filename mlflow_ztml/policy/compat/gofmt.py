"""`sprintf` as OPA answers it: Go's fmt.Sprintf over the arguments OPA builds.

OPA (topdown/strings.go) hands Go's fmt one argument per array element: a number as an
`int64` when it is integral and fits, as a `*big.Int` when it is a bigger integer, else as a
`float64`; a string as a Go string; anything else as its printed form (`ast.Term.String`,
see values.term_string). Go's verbs then decide the text, including its error notations:
`sprintf("%.2f", [1])` is `%!f(int64=01)` and `sprintf("%d", [2.5])` is `%!d(float64=2.5)`.
regorus implements its own formatter, which prints `1` and fails on the second; this module
reproduces Go's output so ztml's messages are OPA's, byte for byte.

Only the pure function `sprintf(format, args)` is public. It never raises for a format or
argument problem (Go never does: it writes the `%!` notation); it raises TypeError only for
operand types OPA itself rejects (a non-string format, a non-array argument list).
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass, field
from typing import Any

from mlflow_ztml.policy.compat.values import (
    INT64_MIN,
    go_quote,
    is_go_printable,
    number_text,
    term_string,
    type_name,
)

_INT64_MAX = (1 << 63) - 1
_LDIGITS = "0123456789abcdefx"
_UDIGITS = "0123456789ABCDEFX"
_TOO_LARGE = 1_000_000


@dataclass
class _Arg:
    kind: str  # "int64", "big", "float64" or "string"
    value: Any


def _go_argument(value: Any) -> _Arg:
    """The Go value OPA passes to fmt for one element of sprintf's argument array."""
    if isinstance(value, bool) or value is None:
        return _Arg("string", term_string(value))
    if isinstance(value, int):
        if INT64_MIN <= value <= _INT64_MAX:
            return _Arg("int64", value)
        return _Arg("big", value)
    if isinstance(value, float):
        text = number_text(value)
        if "e" in text and "." not in text:
            # OPA hands a number written as 1e-07 (an exponent, no fraction digits) to fmt as
            # its text, a Go string; 3.5e-06 and 0.5 as float64 (observed with OPA 1.20).
            return _Arg("string", text)
        return _Arg("float64", value)
    if isinstance(value, str):
        return _Arg("string", value)
    return _Arg("string", term_string(value))


@dataclass
class _Flags:
    plus: bool = False
    minus: bool = False
    sharp: bool = False
    space: bool = False
    zero: bool = False
    plus_v: bool = False
    sharp_v: bool = False
    width: int = 0
    width_present: bool = False
    prec: int = 0
    prec_present: bool = False
    out: list[str] = field(default_factory=list)

    # -- padding (fmt/format.go) ---------------------------------------------------------

    def padding(self, n: int) -> str:
        if n <= 0:
            return ""
        return ("0" if self.zero and not self.minus else " ") * n

    def pad(self, text: str) -> None:
        if not self.width_present or self.width == 0:
            self.out.append(text)
            return
        width = self.width - len(text)
        if not self.minus:
            self.out.append(self.padding(width) + text)
        else:
            self.out.append(text + self.padding(width))


def sprintf(format_string: str, args: list[Any]) -> str:
    """Go's fmt.Sprintf(format_string, args...) with OPA's argument conversion."""
    if not isinstance(format_string, str):
        raise TypeError(f"sprintf: operand 1 must be string but got {type_name(format_string)}")
    if not isinstance(args, list):
        raise TypeError(f"sprintf: operand 2 must be array but got {type_name(args)}")
    return _Printer([_go_argument(a) for a in args]).do_printf(format_string)


class _Printer:
    def __init__(self, args: list[_Arg]) -> None:
        self.args = args
        self.out: list[str] = []
        self.f = _Flags(out=self.out)
        self.reordered = False
        self.good_arg_num = True

    # -- doPrintf (fmt/print.go) -----------------------------------------------------------

    def do_printf(self, fmt: str) -> str:
        end = len(fmt)
        arg_num = 0
        after_index = False
        i = 0
        while i < end:
            self.good_arg_num = True
            last = i
            while i < end and fmt[i] != "%":
                i += 1
            if i > last:
                self.out.append(fmt[last:i])
            if i >= end:
                break
            i += 1
            self.f = _Flags(out=self.out)
            simple = False
            while i < end:
                c = fmt[i]
                if c == "#":
                    self.f.sharp = True
                elif c == "0":
                    self.f.zero = True
                elif c == "+":
                    self.f.plus = True
                elif c == "-":
                    self.f.minus = True
                elif c == " ":
                    self.f.space = True
                else:
                    if "a" <= c <= "z" and arg_num < len(self.args):
                        if c == "v":
                            self.f.sharp_v, self.f.sharp = self.f.sharp, False
                            self.f.plus_v, self.f.plus = self.f.plus, False
                        self.print_arg(self.args[arg_num], c)
                        arg_num += 1
                        i += 1
                        simple = True
                    break
                i += 1
            if simple:
                continue

            arg_num, i, after_index = self.arg_number(arg_num, fmt, i)
            if i < end and fmt[i] == "*":
                i += 1
                self.f.width, self.f.width_present, arg_num = self.int_from_arg(arg_num)
                if not self.f.width_present:
                    self.out.append("%!(BADWIDTH)")
                if self.f.width < 0:
                    self.f.width = -self.f.width
                    self.f.minus = True
                    self.f.zero = False
                after_index = False
            else:
                self.f.width, self.f.width_present, i = _parsenum(fmt, i, end)
                if after_index and self.f.width_present:
                    self.good_arg_num = False

            if i + 1 < end and fmt[i] == ".":
                i += 1
                if after_index:
                    self.good_arg_num = False
                arg_num, i, after_index = self.arg_number(arg_num, fmt, i)
                if i < end and fmt[i] == "*":
                    i += 1
                    self.f.prec, self.f.prec_present, arg_num = self.int_from_arg(arg_num)
                    if self.f.prec < 0:
                        self.f.prec, self.f.prec_present = 0, False
                    if not self.f.prec_present:
                        self.out.append("%!(BADPREC)")
                    after_index = False
                else:
                    self.f.prec, self.f.prec_present, i = _parsenum(fmt, i, end)
                    if not self.f.prec_present:
                        self.f.prec, self.f.prec_present = 0, True

            if not after_index:
                arg_num, i, after_index = self.arg_number(arg_num, fmt, i)

            if i >= end:
                self.out.append("%!(NOVERB)")
                break

            verb = fmt[i]
            i += 1
            if verb == "%":
                self.out.append("%")
            elif not self.good_arg_num:
                self.out.append(f"%!{verb}(BADINDEX)")
            elif arg_num >= len(self.args):
                self.out.append(f"%!{verb}(MISSING)")
            else:
                if verb == "v":
                    self.f.sharp_v, self.f.sharp = self.f.sharp, False
                    self.f.plus_v, self.f.plus = self.f.plus, False
                self.print_arg(self.args[arg_num], verb)
                arg_num += 1

        if not self.reordered and arg_num < len(self.args):
            self.f = _Flags(out=self.out)
            self.out.append("%!(EXTRA ")
            for index, arg in enumerate(self.args[arg_num:]):
                if index:
                    self.out.append(", ")
                self.out.append(("*big.Int" if arg.kind == "big" else arg.kind) + "=")
                self.print_arg(arg, "v")
            self.out.append(")")
        return "".join(self.out)

    def arg_number(self, arg_num: int, fmt: str, i: int) -> tuple[int, int, bool]:
        if len(fmt) <= i or fmt[i] != "[":
            return arg_num, i, False
        self.reordered = True
        index, width, ok = _parse_arg_number(fmt[i:])
        if ok and 0 <= index < len(self.args):
            return index, i + width, True
        self.good_arg_num = False
        return arg_num, i + width, ok

    def int_from_arg(self, arg_num: int) -> tuple[int, bool, int]:
        if arg_num < len(self.args):
            arg = self.args[arg_num]
            if arg.kind == "int64" and -_TOO_LARGE <= arg.value <= _TOO_LARGE:
                return arg.value, True, arg_num + 1
            return 0, False, arg_num + 1
        return 0, False, arg_num

    # -- printArg ----------------------------------------------------------------------------

    def print_arg(self, arg: _Arg, verb: str) -> None:
        if verb == "T":
            self.f.pad(self.truncate("*big.Int" if arg.kind == "big" else arg.kind))
            return
        if arg.kind == "int64":
            self.fmt_integer(arg, verb)
        elif arg.kind == "big":
            self.fmt_big(arg.value, verb)
        elif arg.kind == "float64":
            self.fmt_float_verb(arg, verb)
        else:
            self.fmt_string(arg, verb)

    def bad_verb(self, arg: _Arg, verb: str) -> None:
        self.out.append(f"%!{verb}({arg.kind}=")
        self.print_arg(arg, "v")
        self.out.append(")")

    # -- integers -----------------------------------------------------------------------

    def fmt_integer(self, arg: _Arg, verb: str) -> None:
        value = arg.value
        if verb in ("v", "d"):
            self.f.pad(_integer_text(self.f, value, 10, verb, _LDIGITS))
        elif verb == "b":
            self.f.pad(_integer_text(self.f, value, 2, verb, _LDIGITS))
        elif verb in ("o", "O"):
            self.f.pad(_integer_text(self.f, value, 8, verb, _LDIGITS))
        elif verb == "x":
            self.f.pad(_integer_text(self.f, value, 16, verb, _LDIGITS))
        elif verb == "X":
            self.f.pad(_integer_text(self.f, value, 16, verb, _UDIGITS))
        elif verb == "c":
            self.f.pad(_rune(value))
        elif verb == "q":
            self.f.pad(_quote_rune(_rune(value), ascii_only=self.f.plus))
        elif verb == "U":
            self.fmt_unicode(value)
        else:
            self.bad_verb(arg, verb)

    def fmt_unicode(self, value: int) -> None:
        u = value & 0xFFFFFFFFFFFFFFFF
        digits = f"{u:X}"
        prec = max(4, self.f.prec) if self.f.prec_present else 4
        text = "U+" + digits.rjust(prec, "0")
        if self.f.sharp and u <= 0x10FFFF and is_go_printable(_rune(u)):
            text += f" '{_rune(u)}'"
        zero, self.f.zero = self.f.zero, False
        self.f.pad(text)
        self.f.zero = zero

    def fmt_big(self, value: int, verb: str) -> None:
        """*big.Int implements fmt.Formatter (math/big/intconv.go)."""
        bases = {"b": 2, "o": 8, "O": 8, "d": 10, "s": 10, "v": 10, "x": 16, "X": 16}
        if verb not in bases:
            self.out.append(f"%!{verb}(big.Int={value})")
            return
        base = bases[verb]
        plus = self.f.plus or self.f.plus_v  # fmt.State.Flag reports %+v and %#v too
        sign = "-" if value < 0 else "+" if plus else " " if self.f.space else ""
        prefix = ""
        if self.f.sharp or self.f.sharp_v:
            prefix = {"b": "0b", "o": "0", "x": "0x", "X": "0X"}.get(verb, "")
        if verb == "O":
            prefix = "0o"
        digits = _to_base(abs(value), base)
        if verb == "X":
            digits = digits.upper()
        left = zeros = right = 0
        if self.f.prec_present:
            if len(digits) < self.f.prec:
                zeros = self.f.prec - len(digits)
            elif digits == "0" and self.f.prec == 0:
                return
        length = len(sign) + len(prefix) + zeros + len(digits)
        if self.f.width_present and length < self.f.width:
            d = self.f.width - length
            if self.f.minus:
                right = d
            elif self.f.zero and not self.f.prec_present:
                zeros = d
            else:
                left = d
        self.out.append(" " * left + sign + prefix + "0" * zeros + digits + " " * right)

    # -- strings --------------------------------------------------------------------------

    def fmt_string(self, arg: _Arg, verb: str) -> None:
        text: str = arg.value
        if verb == "v":
            if self.f.sharp_v:
                self.fmt_q(text)
            else:
                self.f.pad(self.truncate(text))
        elif verb == "s":
            self.f.pad(self.truncate(text))
        elif verb in ("x", "X"):
            self.fmt_sx(text, _LDIGITS if verb == "x" else _UDIGITS)
        elif verb == "q":
            self.fmt_q(text)
        else:
            self.bad_verb(arg, verb)

    def truncate(self, text: str) -> str:
        if self.f.prec_present:
            return text[: self.f.prec]
        return text

    def fmt_q(self, text: str) -> None:
        text = self.truncate(text)
        if self.f.sharp and _can_backquote(text):
            self.f.pad("`" + text + "`")
        else:
            self.f.pad(go_quote(text, ascii_only=self.f.plus))

    def fmt_sx(self, text: str, digits: str) -> None:
        data = text.encode("utf-8")
        length = len(data)
        if self.f.prec_present and self.f.prec < length:
            length = self.f.prec
        width = 2 * length
        if width > 0:
            if self.f.space:
                if self.f.sharp:
                    width *= 2
                width += length - 1
            elif self.f.sharp:
                width += 2
        else:
            if self.f.width_present:
                self.out.append(self.f.padding(self.f.width))
            return
        if self.f.width_present and self.f.width > width and not self.f.minus:
            self.out.append(self.f.padding(self.f.width - width))
        parts = []
        if self.f.sharp:
            parts.append("0" + digits[16])
        for index in range(length):
            if self.f.space and index > 0:
                parts.append(" ")
                if self.f.sharp:
                    parts.append("0" + digits[16])
            byte = data[index]
            parts.append(digits[byte >> 4] + digits[byte & 0xF])
        self.out.append("".join(parts))
        if self.f.width_present and self.f.width > width and self.f.minus:
            self.out.append(self.f.padding(self.f.width - width))

    # -- floats ---------------------------------------------------------------------------

    def fmt_float_verb(self, arg: _Arg, verb: str) -> None:
        if verb == "v":
            self.fmt_float(arg.value, "g", -1)
        elif verb in ("b", "g", "G", "x", "X"):
            self.fmt_float(arg.value, verb, -1)
        elif verb in ("f", "e", "E", "F"):
            self.fmt_float(arg.value, "f" if verb == "F" else verb, 6)
        else:
            self.bad_verb(arg, verb)

    def fmt_float(self, value: float, verb: str, prec: int) -> None:
        f = self.f
        if f.prec_present:
            prec = f.prec
        num = format_float(value, verb, prec)
        if num[0] in "+-":
            sign, body = num[0], num[1:]
        else:
            sign, body = "+", num
        if f.space and sign == "+" and not f.plus:
            sign = " "
        if f.sharp and verb != "b":
            body = _sharp_float(body, verb, prec)
        if f.plus or sign != "+":
            if f.zero and not f.minus and f.width_present and f.width > len(body) + 1:
                self.out.append(sign + f.padding(f.width - len(body) - 1) + body)
                return
            f.pad(sign + body)
            return
        f.pad(body)


def _sharp_float(body: str, verb: str, prec: int) -> str:
    digits = 0
    if verb in ("v", "g", "G", "x"):
        digits = 6 if prec == -1 else prec
    tail = ""
    has_point = False
    saw_nonzero = False
    index = 0
    kept = []
    while index < len(body):
        char = body[index]
        if char == ".":
            has_point = True
        elif char in "pP" or (char in "eE" and verb not in ("x", "X")):
            tail = body[index:]
            break
        else:
            if char != "0":
                saw_nonzero = True
            if saw_nonzero:
                digits -= 1
        kept.append(char)
        index += 1
    text = "".join(kept)
    if not has_point:
        if text == "0":
            digits -= 1
        text += "."
    if digits > 0:
        text += "0" * digits
    return text + tail


def _integer_text(f: _Flags, value: int, base: int, verb: str, digits: str) -> str:
    """fmt.fmtInteger without the final padding (callers pad with zero turned off)."""
    negative = value < 0
    u = -value if negative else value
    prec = 0
    if f.prec_present:
        prec = f.prec
        if prec == 0 and u == 0:
            f.zero = False  # Go pads with spaces only
            return ""
    elif f.zero and not f.minus and f.width_present:
        prec = f.width
        if negative or f.plus or f.space:
            prec -= 1
    text = _to_base(u, base, digits)
    if len(text) < prec:
        text = "0" * (prec - len(text)) + text
    if f.sharp:
        if base == 2:
            text = "0b" + text
        elif base == 8 and not text.startswith("0"):
            text = "0" + text
        elif base == 16:
            text = "0" + digits[16] + text
    if verb == "O":
        text = "0o" + text
    if negative:
        text = "-" + text
    elif f.plus:
        text = "+" + text
    elif f.space:
        text = " " + text
    # Zero padding was done through `prec`: the field pads with spaces from here on.
    f.zero = False
    return text


def _to_base(u: int, base: int, digits: str = _LDIGITS) -> str:
    if u == 0:
        return "0"
    out = []
    while u:
        u, r = divmod(u, base)
        out.append(digits[r])
    return "".join(reversed(out))


def _rune(value: int) -> str:
    if value < 0 or value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
        return "\ufffd"
    return chr(value)


def _quote_rune(char: str, *, ascii_only: bool) -> str:
    if char == "'":
        return "'\\''"
    if char == '"':
        return "'\"'"
    quoted = go_quote(char, ascii_only=ascii_only)
    return "'" + quoted[1:-1] + "'"


def _can_backquote(text: str) -> bool:
    for char in text:
        if char == "`" or char == "\ufeff":
            return False
        if (ord(char) < 0x20 and char != "\t") or char == "\x7f":
            return False
    return True


def _parsenum(s: str, start: int, end: int) -> tuple[int, bool, int]:
    if start >= end:
        return 0, False, end
    num = 0
    isnum = False
    index = start
    while index < end and "0" <= s[index] <= "9":
        if num > _TOO_LARGE or num < -_TOO_LARGE:
            return 0, False, end
        num = num * 10 + int(s[index])
        isnum = True
        index += 1
    return num, isnum, index


def _parse_arg_number(fmt: str) -> tuple[int, int, bool]:
    if len(fmt) < 3:
        return 0, 1, False
    for index in range(1, len(fmt)):
        if fmt[index] == "]":
            width, ok, new_index = _parsenum(fmt, 1, index)
            if not ok or new_index != index:
                return 0, index + 1, False
            return width - 1, index + 1, True
    return 0, 1, False


# -- strconv.FormatFloat --------------------------------------------------------------------

_REPR = re.compile(r"^(-?)(\d+)(?:\.(\d+))?(?:e([+-]\d+))?$")


def _shortest_digits(value: float) -> tuple[str, int]:
    """(digits, dp): the shortest round-trip digits of |value| and the decimal point position,
    as Go's (and Python's) shortest formatting computes them: value = 0.DIGITS * 10**dp."""
    text = repr(abs(value))
    match = _REPR.match(text)
    if match is None:  # pragma: no cover - repr of a finite float always matches
        raise ValueError(text)
    whole, fraction, exponent = match.group(2), match.group(3) or "", match.group(4)
    digits = (whole + fraction).lstrip("0")
    leading = len(whole + fraction) - len((whole + fraction).lstrip("0"))
    dp = len(whole) - leading + (int(exponent) if exponent else 0)
    digits = digits.rstrip("0")
    if not digits:
        return "0", 1
    return digits, dp


def format_float(value: float, verb: str, prec: int) -> str:
    """strconv.FormatFloat(value, verb, prec, 64) for finite values."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    negative = math.copysign(1.0, value) < 0
    sign = "-" if negative else ""
    magnitude = abs(value)
    if verb == "b":
        return sign + _format_b(magnitude)
    if verb in ("x", "X"):
        text = _format_x(magnitude, prec)
        return sign + (text.upper() if verb == "X" else text)
    if prec < 0:
        digits, dp = _shortest_digits(magnitude)
        if magnitude == 0:
            digits, dp = "0", 1
        if verb in ("e", "E"):
            return sign + _fmt_e(digits, dp, len(digits) - 1, verb)
        if verb == "f":
            return sign + _fmt_f(digits, dp, max(len(digits) - dp, 0))
        exp = dp - 1
        if exp < -4 or exp >= 6:
            return sign + _fmt_e(digits, dp, len(digits) - 1, "e" if verb == "g" else "E")
        return sign + _fmt_f(digits, dp, max(len(digits) - dp, 0))
    if verb in ("e", "E"):
        return sign + _exponent_fix(format(magnitude, f".{prec}e"), verb)
    if verb == "f":
        return sign + format(magnitude, f".{prec}f")
    text = format(magnitude, f".{max(prec, 1)}g")
    return sign + _exponent_fix(text, "e" if verb == "g" else "E")


def _exponent_fix(text: str, verb: str) -> str:
    return text.replace("e", verb) if verb == "E" else text


def _fmt_e(digits: str, dp: int, prec: int, verb: str) -> str:
    first = digits[0]
    rest = digits[1 : 1 + prec].ljust(prec, "0")
    exp = dp - 1 if digits != "0" else 0
    mantissa = first + ("." + rest if prec > 0 else "")
    return f"{mantissa}{verb}{'-' if exp < 0 else '+'}{abs(exp):02d}"


def _fmt_f(digits: str, dp: int, prec: int) -> str:
    text = digits[:dp].ljust(dp, "0") if dp > 0 else "0"
    if prec > 0:
        fraction = []
        for index in range(prec):
            position = dp + index
            fraction.append(digits[position] if 0 <= position < len(digits) else "0")
        text += "." + "".join(fraction)
    return text


def _format_b(magnitude: float) -> str:
    bits = struct.unpack(">Q", struct.pack(">d", magnitude))[0]
    exponent = (bits >> 52) & 0x7FF
    mantissa = bits & ((1 << 52) - 1)
    if exponent == 0:
        exponent = 1
    else:
        mantissa |= 1 << 52
    exp = exponent - 1023 - 52
    return f"{mantissa}p{'-' if exp < 0 else '+'}{abs(exp)}"


def _format_x(magnitude: float, prec: int) -> str:
    """strconv's 'x' format: 0x1.8p+01 (hex mantissa, binary exponent of two digits or more)."""
    if magnitude == 0:
        mantissa, exp = 0, 0
    else:
        fraction, exponent = math.frexp(magnitude)  # magnitude = fraction * 2**exponent
        mantissa = int(fraction * (1 << 53))  # 1.xxx with 52 fraction bits
        exp = exponent - 1
    fraction_bits = 52
    if 0 <= prec < 13:
        drop = 4 * (13 - prec)
        rest = mantissa & ((1 << drop) - 1)
        mantissa >>= drop
        half = 1 << (drop - 1)
        if rest > half or (rest == half and mantissa & 1):
            mantissa += 1
        fraction_bits = 4 * prec
        if mantissa >> (fraction_bits + 1):
            mantissa >>= 1
            exp += 1
    whole = mantissa >> fraction_bits
    fraction_part = mantissa & ((1 << fraction_bits) - 1)
    hex_digits = format(fraction_part, f"0{fraction_bits // 4}x") if fraction_bits else ""
    if prec < 0:
        hex_digits = hex_digits.rstrip("0")
    elif prec > len(hex_digits):
        hex_digits = hex_digits.ljust(prec, "0")
    text = f"0x{whole}" + ("." + hex_digits if hex_digits else "")
    return f"{text}p{'-' if exp < 0 else '+'}{abs(exp):02d}"
