"""The headline of a deployment: one sentence per environment that a person reads at a glance.

MLflow shows a version's tags sorted by key, so the headline lives under `ztml.<env>` (no
trailing dot): it sorts before every `ztml.<env>.*` detail tag. Its shape is fixed, because
people (and the browser tests) read it: the status word first, then ` v<version>`, then parts
joined by ` · `:

    deployed v7 · allow · 3 warnings · http://127.0.0.1:8123 · 2026-12-02 04:02Z
    rejected v8 · 6 violations: 1) accuracy 0.69 < 0.85; 2) f1 0.57 < 0.80; ...
    gating v8 · since 04:01Z
    rolled_back v9 · verification failed: /predict answered 500 · 2026-12-02 04:05Z
    superseded v7 · by v8 · 2026-12-02 04:06Z

A pure function of the detail values: `VersionRecorder` computes it after every change and
writes it last, only when its text changed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from mlflow_ztml.redact import clip

SEPARATOR = " · "
# MLflow 3.17 accepts 100,000 characters in a model-version tag value
# (MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH); a headline is meant to be read in one line of the UI.
HEADLINE_LIMIT = 400
ITEM_LIMIT = 60  # one violation in the headline; the full text is in the `violations` tag
ERROR_LIMIT = 160
IN_PROGRESS = ("pending", "gating", "building", "scanning", "deploying", "verifying")

# Rego messages say "accuracy 0.69 is below the minimum 0.85 for production"; a headline says
# "accuracy 0.69 < 0.85". Unmatched messages are only clipped.
_NUM = r"(-?\d+(?:\.\d+)?)"
_SHORTER: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(rf"^(.+?) {_NUM} is below the minimum {_NUM}( for \S+)?$"), "{0} {1} < {2}"),
    (re.compile(rf"^(.+?) {_NUM} is above the maximum {_NUM}( for \S+)?$"), "{0} {1} > {2}"),
    (re.compile(rf"^(.+?) {_NUM} exceeds the maximum {_NUM}( for \S+)?$"), "{0} {1} > {2}"),
    (
        re.compile(rf"^(.+?) {_NUM} is {_NUM} below the serving version (\S+) \({_NUM}\)"),
        "{0} {1} is {2} below v{3} ({4})",
    ),
)


def short_item(text: str, limit: int = ITEM_LIMIT) -> str:
    """One violation or warning in a few words: known phrasings condensed, others clipped."""
    line = " ".join(text.split())
    for pattern, template in _SHORTER:
        match = pattern.match(line)
        if match:
            line = template.format(*(_number(g or "") for g in match.groups()))
            break
    return clip(line, limit)


def _number(text: str) -> str:
    """`0.8500` -> `0.85` (Rego's formatting pads); anything else unchanged."""
    if re.fullmatch(r"-?\d+\.\d+", text):
        return text.rstrip("0").rstrip(".")
    return text


def numbered(items: Sequence[str]) -> str:
    """`1) first\n2) second`: the full list, as the `violations` detail tag holds it."""
    return "\n".join(f"{n}) {item}" for n, item in enumerate(items, 1))


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def headline(
    status: str,
    version: str,
    at: datetime,
    *,
    decision: str | None = None,
    warnings: Sequence[str] = (),
    violations: Sequence[str] = (),
    endpoint: str | None = None,
    error: str | None = None,
    superseded_by: str | None = None,
) -> str:
    """The sentence for `status` of `version`; `at` is when that status began (UTC)."""
    parts = [f"{status} v{version}"]
    when = at.strftime("%Y-%m-%d %H:%MZ")
    if status in IN_PROGRESS:
        parts.append(at.strftime("since %H:%MZ"))
    elif status == "rejected":
        parts.append(
            _violations(violations, HEADLINE_LIMIT - len(parts[0])) if violations else when
        )
    elif status == "deployed":
        counted = plural(len(warnings), "warning") if warnings else ""
        parts += [decision or "", counted, endpoint or "", when]
    elif status == "superseded":
        parts += [f"by v{superseded_by}" if superseded_by else "", when]
    else:  # failed, rolled_back, deleted
        parts += [short_item(error, ERROR_LIMIT) if error else "", when]
    return clip(SEPARATOR.join(p for p in parts if p), HEADLINE_LIMIT, suffix="; ...")


def _violations(violations: Sequence[str], room: int) -> str:
    """`6 violations: 1) a; 2) b; ...`: as many numbered short items as fit in `room`."""
    text = f"{plural(len(violations), 'violation')}:"
    for n, violation in enumerate(violations, 1):
        item = f" {n}) {short_item(violation)}" + (";" if n < len(violations) else "")
        if len(text) + len(item) + len(SEPARATOR) + 4 > room:
            return text + " ..."
        text += item
    return text
