"""Go's regular expressions (RE2 syntax) evaluated by regorus' Rust regex engine.

OPA compiles patterns with Go's regexp; regorus with Rust's regex crate. Both are linear-time
engines with leftmost-first semantics and nearly the same syntax, but they disagree on
meaning in places: Go's `\\d \\w \\s \\b` are ASCII-only (Rust's are Unicode: `\\d` matches
"٣" in regorus, not in OPA), Go has `\\Q...\\E`, Go treats `\\<` as `<` (Rust: a word start),
Go rejects `a**` and `a*+`, Go's `{` is a literal when it does not start a repetition.

`translate` parses a pattern with Go's grammar (raising GoRegexError where Go's regexp does)
and writes the equivalent Rust pattern; the regex builtins then run it through regorus' own
implementation (native.py). `split` additionally follows Go's rules for empty matches.
"""

from __future__ import annotations

import functools
from typing import Any

from mlflow_ztml.policy.compat import native
from mlflow_ztml.policy.compat.values import type_name

_ASCII_CLASSES = {
    "d": "0-9",
    "s": r"\x{09}\x{0A}\x{0C}\x{0D}\x{20}",
    "w": "0-9A-Za-z_",
}
_POSIX = {
    "alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph", "lower",
    "print", "punct", "space", "upper", "word", "xdigit",
}  # fmt: skip
_MAX_REPEAT = 1000


class GoRegexError(ValueError):
    """A pattern Go's regexp refuses: OPA reports it as an error, so does ztml."""


def _lit(char: str) -> str:
    """A literal character in a form Rust reads the same way inside and outside classes."""
    if char.isascii() and not char.isalnum():
        return f"\\x{{{ord(char):02X}}}"
    return char


def _is_hex(text: str) -> bool:
    return bool(text) and all(c in "0123456789abcdefABCDEF" for c in text)


class _Translator:
    def __init__(self, pattern: str) -> None:
        self.src = pattern
        self.pos = 0
        self.out: list[str] = []
        self.names: set[str] = set()
        self.depth = 0
        # What the last emitted item was: "start" (nothing to repeat), "atom", "repeat".
        self.last = "start"
        # Go's U flag (ungreedy) per open group: repetitions are emitted with explicit
        # greediness, and a flag group waits until after a repetition that follows it
        # (Rust refuses `a(?i)*`, Go repeats the `a`).
        self.ungreedy = [False]
        self.pending_flags = ""
        # Where the last repeatable item starts in `out`, the open groups' starts, and
        # whether a flag group separates a repetition from the next operator (Go then
        # repeats the repetition: `a*(?i)*` is `(?:a*)*`).
        self.atom_at = 0
        self.group_starts: list[int] = []
        self.flags_after_repeat = False

    def emit(self, text: str) -> int:
        if self.pending_flags:
            self.out.append(self.pending_flags)
            self.pending_flags = ""
        self.out.append(text)
        self.flags_after_repeat = False
        self.atom_at = len(self.out) - 1
        return self.atom_at

    def error(self, message: str) -> GoRegexError:
        return GoRegexError(f"error parsing regexp: {message}")

    def peek(self, offset: int = 0) -> str:
        index = self.pos + offset
        return self.src[index] if index < len(self.src) else ""

    def run(self) -> str:
        while self.pos < len(self.src):
            char = self.src[self.pos]
            if char == "(":
                self.group()
            elif char == ")":
                if self.depth == 0:
                    raise self.error(f"unexpected ): `{self.src}`")
                self.depth -= 1
                self.ungreedy.pop()
                self.pos += 1
                start = self.group_starts.pop()
                self.emit(")")
                self.atom_at = start
                self.last = "atom"
            elif char == "|":
                self.pos += 1
                self.emit("|")
                self.last = "start"
            elif char in "*+?":
                self.repeat(char)
            elif char == "{":
                self.brace()
            elif char == "[":
                self.emit(self.char_class())
                self.last = "atom"
            elif char == "\\":
                self.escape()
            elif char in "^$.":
                self.pos += 1
                self.emit(char)
                self.last = "atom"
            else:
                self.pos += 1
                self.emit(_lit(char))
                self.last = "atom"
        if self.depth:
            raise self.error(f"missing closing ): `{self.src}`")
        self.emit("")
        return "".join(self.out)

    def group(self) -> None:
        if self.peek(1) != "?":
            self.pos += 1
            self.depth += 1
            self.ungreedy.append(self.ungreedy[-1])
            self.group_starts.append(self.emit("("))
            self.last = "start"
            return
        rest = self.src[self.pos :]
        for prefix in ("(?P<", "(?<"):
            if rest.startswith(prefix):
                end = rest.find(">")
                if end < 0:
                    raise self.error(f"invalid named capture: `{rest}`")
                name = rest[len(prefix) : end]
                if not name or not all(c.isascii() and (c.isalnum() or c == "_") for c in name):
                    raise self.error(f"invalid named capture: `{rest[: end + 1]}`")
                if name in self.names:
                    raise self.error(f"duplicate capture group name: `{rest[: end + 1]}`")
                self.names.add(name)
                self.pos += end + 1
                self.depth += 1
                self.ungreedy.append(self.ungreedy[-1])
                self.group_starts.append(self.emit(f"(?P<{name}>"))
                self.last = "start"
                return
        # Flags: (?flags) or (?flags:re), flags from i m s U with one optional '-'.
        index = 2
        sign = 1
        saw_flag = False
        flags = []
        while index < len(rest):
            char = rest[index]
            index += 1
            if char in "imsU":
                flags.append(char)
                saw_flag = True
            elif char == "-":
                if sign < 0:
                    break
                sign = -1
                flags.append("-")
                saw_flag = False
            elif char in ":)":
                if sign < 0 and not saw_flag:
                    break
                self.pos += index
                ungreedy = self.ungreedy[-1]
                if "U" in flags:
                    ungreedy = flags.index("U") < flags.index("-") if "-" in flags else True
                text = "".join(f for f in flags if f != "U").rstrip("-")
                if char == ":":
                    self.depth += 1
                    self.ungreedy.append(ungreedy)
                    self.group_starts.append(self.emit(f"(?{text}:"))
                    self.last = "start"
                else:
                    self.ungreedy[-1] = ungreedy
                    if text:
                        self.pending_flags += f"(?{text})"
                    if self.last == "repeat":
                        self.flags_after_repeat = True
                return
            else:
                break
        raise self.error(f"invalid or unsupported Perl syntax: `{rest[:index]}`")

    def repeat(self, op: str) -> None:
        start = self.pos
        self.pos += 1
        lazy = self.peek() == "?"
        if lazy:
            self.pos += 1
        if self.last == "start":
            raise self.error(
                f"missing argument to repetition operator: `{self.src[start : self.pos]}`"
            )
        self.check_nesting(self.src[start : self.pos])
        self.out.append(op + ("?" if lazy != self.ungreedy[-1] else ""))
        self.last = "repeat"

    def check_nesting(self, text: str) -> None:
        if self.last != "repeat":
            return
        if not self.flags_after_repeat:
            raise self.error(f"invalid nested repetition operator: `{text}`")
        # Go repeats the repetition itself: group it so Rust does not read a lazy `?`.
        self.out[self.atom_at :] = ["(?:" + "".join(self.out[self.atom_at :]) + ")"]
        self.flags_after_repeat = False

    def brace(self) -> None:
        rest = self.src[self.pos :]
        close = rest.find("}")
        body = rest[1:close] if close > 0 else None
        parsed = _parse_repeat(body) if body is not None else None
        if parsed is None or body is None:  # not a repetition: a literal brace
            self.pos += 1
            self.emit(_lit("{"))
            self.last = "atom"
            return
        low, high = parsed
        start = self.pos
        self.pos += close + 1
        lazy = self.peek() == "?"
        if lazy:
            self.pos += 1
        text = self.src[start : self.pos]
        if self.last == "start":
            raise self.error(f"missing argument to repetition operator: `{text}`")
        self.check_nesting(text)
        if low > _MAX_REPEAT or (high is not None and (high > _MAX_REPEAT or high < low)):
            raise self.error(f"invalid repeat count: `{text}`")
        counted = "{" + body + "}"
        self.out.append(counted + ("?" if lazy != self.ungreedy[-1] else ""))
        self.last = "repeat"

    def escape(self) -> None:
        start = self.pos
        previous = self.last
        self.pos += 1
        if self.pos >= len(self.src):
            raise self.error("trailing backslash at end of expression: ``")
        char = self.src[self.pos]
        self.pos += 1
        self.last = "atom"
        if char == "A":
            self.emit(r"\A")
        elif char == "z":
            self.emit(r"\z")
        elif char in "bB":
            self.emit(rf"(?-u:\{char})")
        elif char == "Q":
            # Go: the quoted text is a run of literals (a following `*` repeats its last one).
            end = self.src.find(r"\E", self.pos)
            literal = self.src[self.pos :] if end < 0 else self.src[self.pos : end]
            self.pos = len(self.src) if end < 0 else end + 2
            for c in literal:
                self.emit(_lit(c))
            if not literal:
                self.last = previous
        elif char.lower() in _ASCII_CLASSES:
            body = _ASCII_CLASSES[char.lower()]
            self.emit(f"[^{body}]" if char.isupper() else f"[{body}]")
        elif char in "pP":
            self.emit(self.unicode_class(char, start))
        else:
            self.pos = start
            self.emit(_lit(self.literal_escape()))

    def literal_escape(self) -> str:
        """A single-character escape (outside or inside a class); returns the character."""
        start = self.pos
        self.pos += 1
        char = self.src[self.pos] if self.pos < len(self.src) else ""
        self.pos += 1
        if char == "":
            raise self.error("trailing backslash at end of expression: ``")
        if char in "1234567" and not ("0" <= self.peek() <= "7"):
            raise self.error(f"invalid escape sequence: `{self.src[start : self.pos]}`")
        if char in "01234567":
            digits = char
            while len(digits) < 3 and "0" <= self.peek() <= "7":
                digits += self.peek()
                self.pos += 1
            return chr(int(digits, 8))
        if char == "x":
            if self.peek() == "{":
                end = self.src.find("}", self.pos)
                hexdigits = self.src[self.pos + 1 : end] if end > 0 else ""
                if end < 0 or not _is_hex(hexdigits) or int(hexdigits, 16) > 0x10FFFF:
                    raise self.error(f"invalid escape sequence: `{self.src[start : end + 1]}`")
                self.pos = end + 1
                return chr(int(hexdigits, 16))
            hexdigits = self.src[self.pos : self.pos + 2]
            if len(hexdigits) < 2 or not _is_hex(hexdigits):
                raise self.error(f"invalid escape sequence: `{self.src[start : self.pos + 2]}`")
            self.pos += 2
            return chr(int(hexdigits, 16))
        simple = {"a": "\a", "f": "\f", "t": "\t", "n": "\n", "r": "\r", "v": "\v"}
        if char in simple:
            return simple[char]
        if char.isascii() and not char.isalnum():
            return char
        raise self.error(f"invalid escape sequence: `{self.src[start : self.pos]}`")

    def unicode_class(self, char: str, start: int) -> str:
        if self.peek() == "{":
            end = self.src.find("}", self.pos)
            if end < 0:
                raise self.error(f"invalid character class range: `{self.src[start:]}`")
            name = self.src[self.pos + 1 : end]
            self.pos = end + 1
        else:
            name = self.peek()
            if not name:
                raise self.error(f"invalid character class range: `{self.src[start:]}`")
            self.pos += 1
        negate = char == "P"
        if name.startswith("^"):
            negate, name = not negate, name[1:]
        if not name or not all(c.isascii() and (c.isalnum() or c == "_") for c in name):
            raise self.error(f"invalid character class range: `{self.src[start : self.pos]}`")
        return ("\\P" if negate else "\\p") + "{" + name + "}"

    def char_class(self) -> str:
        start = self.pos
        self.pos += 1
        parts: list[str] = []
        negate = False
        if self.peek() == "^":
            negate = True
            self.pos += 1
        first = True
        while self.pos < len(self.src) and (self.src[self.pos] != "]" or first):
            first = False
            rest = self.src[self.pos :]
            if rest.startswith("[:"):
                end = rest.find(":]")
                if end > 0:
                    name = rest[2:end]
                    negated = name.startswith("^")
                    if negated:
                        name = name[1:]
                    if name not in _POSIX:
                        raise self.error(f"invalid character class range: `{rest[: end + 2]}`")
                    parts.append(f"[[:{'^' if negated else ''}{name}:]]")
                    self.pos += end + 2
                    continue
            if rest.startswith("\\") and len(rest) > 1:
                letter = rest[1]
                if letter.lower() in _ASCII_CLASSES:
                    body = _ASCII_CLASSES[letter.lower()]
                    parts.append(f"[^{body}]" if letter.isupper() else body)
                    self.pos += 2
                    continue
                if letter in "pP":
                    self.pos += 2
                    parts.append(self.unicode_class(letter, self.pos - 2))
                    continue
            low = self.class_char()
            if self.peek() == "-" and self.peek(1) not in ("]", ""):
                self.pos += 1
                high = self.class_char()
                if high < low:
                    raise self.error(
                        f"invalid character class range: `{self.src[start : self.pos]}`"
                    )
                parts.append(f"{_lit(low)}-{_lit(high)}")
            else:
                parts.append(_lit(low))
        if self.pos >= len(self.src):
            raise self.error(f"missing closing ]: `{self.src[start:]}`")
        self.pos += 1
        return "[" + ("^" if negate else "") + "".join(parts) + "]"

    def class_char(self) -> str:
        if self.peek() == "\\":
            if self.peek(1) in ("b", "B", "A", "z", "Q", "E"):
                raise self.error(f"invalid escape sequence: `{self.src[self.pos : self.pos + 2]}`")
            return self.literal_escape()
        char = self.src[self.pos]
        self.pos += 1
        return char


def _parse_repeat(body: str) -> tuple[int, int | None] | None:
    """`n`, `n,` or `n,m` (Go: a repetition), else None (Go: a literal brace)."""
    low_text, comma, high_text = body.partition(",")
    if not low_text.isdigit() or not low_text.isascii():
        return None
    if not comma:
        return int(low_text), int(low_text)
    if high_text == "":
        return int(low_text), None
    if not high_text.isdigit() or not high_text.isascii():
        return None
    return int(low_text), int(high_text)


@functools.lru_cache(maxsize=512)
def translate(pattern: str) -> str:
    """The Rust pattern that matches what Go's regexp matches for `pattern`."""
    return _Translator(pattern).run()


def _pattern(name: str, value: Any, position: int) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name}: operand {position} must be string but got {type_name(value)}")
    try:
        return translate(value)
    except GoRegexError as exc:
        raise ValueError(f"{name}: {exc}") from None


def _string(name: str, value: Any, position: int) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name}: operand {position} must be string but got {type_name(value)}")
    return value


def pattern_for_regorus(pattern: Any) -> Any:
    """The Rust pattern for a Go pattern (what the rewritten regex calls pass to regorus).

    A non-string is passed through untouched so that regorus reports the type error."""
    if not isinstance(pattern, str):
        return pattern
    try:
        return translate(pattern)
    except GoRegexError as exc:
        raise ValueError(str(exc)) from None


def regex_is_valid(pattern: Any) -> bool:
    if not isinstance(pattern, str):
        return False
    try:
        rust = translate(pattern)
    except GoRegexError:
        return False
    return bool(native.call("regex_is_valid", rust))


def regex_split(pattern: Any, value: Any) -> list[str]:
    """Go's Regexp.Split(s, -1), from the matches Rust finds (the same ones Go finds)."""
    rust = _pattern("regex.split", pattern, 1)
    text = _string("regex.split", value, 2)
    if pattern and text == "":
        return [""]
    pieces = native.call("regex_split", rust, text) or []
    found = native.call("regex_find_n", rust, text, -1) or []
    spans = []
    position = 0
    for piece, match in zip(pieces, found, strict=False):
        begin = position + len(piece)
        spans.append((begin, begin + len(match)))
        position = begin + len(match)
    out: list[str] = []
    begin = end = 0
    for match_start, match_end in spans:
        end = match_start
        if match_end != 0:
            out.append(text[begin:end])
        begin = match_end
    if end != len(text):
        out.append(text[begin:])
    return out
