"""The controller's status page (`GET /`): what `/status` says, as a page a person reads.

Contract:
- built only from `controller.status()` after `redact_data` (the same data as `/status`), so the
  page can never show more than the JSON does;
- every value is HTML-escaped (model names, reasons and error texts come from MLflow users and
  tools); link targets (`mlflow_ztml.links`: names percent-quoted) are built on
  `status["mlflow_ui"]`, which `links.ui_base` has already stripped of user info, query and
  fragment, and escaped again as attributes;
- no script at all: the Content-Security-Policy allows only the page's own inline stylesheet
  (by hash), so even a missed escape cannot run code; the page reloads itself with
  `<meta http-equiv="refresh">`;
- read-only: no forms, no buttons that change anything.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from html import escape
from typing import Any

from mlflow_ztml.links import run_url, version_url

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1b1f23}
h1{font-size:1.4rem;margin:0 0 .3rem}h2{font-size:1.1rem;margin:1.6rem 0 .4rem}
table{border-collapse:collapse;width:100%}th,td{text-align:left;vertical-align:top;
padding:.3rem .6rem;border-bottom:1px solid #d0d7de}th{background:#f6f8fa}
.meta{color:#57606a}.none{color:#57606a;font-style:italic}ol{margin:0;padding-left:1.3rem}
.st{font-weight:600}.deployed{color:#1a7f37}.rejected,.failed,.rolled_back,.error{color:#cf222e}
.deploying,.retrying,.queued{color:#9a6700}code{font-size:.9em}
""".strip()
_CSS_HASH = base64.b64encode(hashlib.sha256(_CSS.encode()).digest()).decode()

CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src 'sha256-{_CSS_HASH}'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def e(value: object) -> str:
    """Escaped text for element content and quoted attributes."""
    return escape("" if value is None else str(value), quote=True)


def when(timestamp: float | None) -> str:
    """`2026-12-02 04:02:09Z` (UTC, like the MLflow tags), or an empty string."""
    if not timestamp:
        return ""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def link(url: str | None, text: str) -> str:
    """An anchor when there is a target, else the (escaped) text alone."""
    if url is None:
        return e(text)
    return f'<a href="{e(url)}" rel="noreferrer">{e(text)}</a>'


def status_word(report: Mapping[str, Any], queue_state: Mapping[str, Any] | None) -> str:
    """One word for a key, in the vocabulary of the `ztml.<env>` tags. A deploy in progress
    (a report with action `deploy` and no outcome yet) and a retry in backoff come first: they
    are newer than any finished reconcile; a quick re-check keeps the last finished word."""
    action, outcome = report.get("action"), report.get("outcome")
    state = (queue_state or {}).get("state")
    if action == "deploy" and outcome is None and not report.get("error"):
        return "deploying"
    if state == "waiting":
        return "retrying"
    if not report:
        return "queued" if state == "ready" else "checking"
    if action == "not_managed":
        return "not managed"
    if action == "error":
        return "error"
    if outcome in ("rejected", "failed", "rolled_back", "deleted"):
        return str(outcome)
    if report.get("serving_version"):
        return "deployed"
    return "not deployed"


def _idle(report: Mapping[str, Any], queue_state: Mapping[str, Any] | None) -> bool:
    """Nothing wanted, nothing serving, nothing wrong, nothing pending: not worth a row."""
    return (
        queue_state is None
        and report.get("action") == "in_sync"
        and not report.get("desired_version")
        and not report.get("serving_version")
        and not report.get("error")
        and not report.get("conflicts")
    )


def _split_key(key: str) -> tuple[str, str]:
    model, _, environment = key.rpartition("/")
    return model, environment


def _reasons(items: Iterable[str]) -> str:
    items = list(items)
    if not items:
        return ""
    return "<ol>" + "".join(f"<li>{e(item)}</li>" for item in items) + "</ol>"


def _table(headers: Iterable[str], rows: list[str], empty: str) -> str:
    if not rows:
        return f'<p class="none">{e(empty)}</p>'
    head = "".join(f'<th scope="col">{e(h)}</th>' for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _deployments(status: Mapping[str, Any], ui: str | None) -> str:
    queue: Mapping[str, Any] = status.get("queue") or {}
    keys: Mapping[str, Any] = status.get("keys") or {}
    by_env: dict[str, list[tuple[str, str, Mapping[str, Any] | None]]] = {
        env: [] for env in status.get("environments") or []
    }
    for key in sorted(set(keys) | set(queue)):
        model, env = _split_key(key)
        by_env.setdefault(env, []).append((key, model, queue.get(key)))
    sections = []
    for env in sorted(by_env):
        rows = []
        for key, model, queued in by_env[env]:
            report = keys.get(key) or {}
            if _idle(report, queued):
                continue
            word = status_word(report, queued)
            serving = report.get("serving_version")
            desired = report.get("desired_version")
            state = f"{word} v{desired}" if desired and desired != serving else word
            wanted = f"v{desired} ({report.get('desired_source')})" if desired else "nothing"
            notes = list(report.get("conflicts") or [])
            if report.get("error"):
                notes.append(str(report["error"]))
            serving_cell = (
                link(version_url(ui, model, serving), f"v{serving}") if serving else "none"
            )
            rows.append(
                "<tr>"
                f'<td data-field="model">{link(version_url(ui, model, desired or serving), model)}'
                "</td>"
                f'<td data-field="status"><span class="st {e(word.replace(" ", "_"))}">'
                f"{e(state)}</span></td>"
                f'<td data-field="version">{serving_cell}</td>'
                f'<td data-field="since">{e(when(report.get("since")))}</td>'
                f'<td data-field="endpoint">{e(report.get("endpoint") or "")}</td>'
                f'<td data-field="desired">{e(wanted)}</td>'
                f'<td data-field="notes">{_reasons(notes)}</td>'
                f'<td data-field="checked">{e(when(report.get("at")))}</td>'
                "</tr>"
            )
        table = _table(
            ("model", "status", "serving", "since", "endpoint", "wanted", "notes", "checked"),
            rows,
            "nothing deployed or wanted in this environment",
        )
        sections.append(
            f'<section data-environment="{e(env)}"><h2>Environment {e(env)}</h2>{table}</section>'
        )
    return "".join(sections)


def _decisions(status: Mapping[str, Any], ui: str | None) -> str:
    rows = []
    for d in status.get("decisions") or []:
        audit = run_url(ui, d.get("audit_experiment_id"), d.get("audit_run_id"))
        version = str(d.get("version"))
        version_cell = link(version_url(ui, str(d.get("model")), version), f"v{version}")
        rows.append(
            "<tr>"
            f'<td data-field="at">{e(when(d.get("at")))}</td>'
            f'<td data-field="model">{e(d.get("model"))}</td>'
            f'<td data-field="version">{version_cell}</td>'
            f'<td data-field="environment">{e(d.get("environment"))}</td>'
            f'<td data-field="outcome" class="st {e(d.get("outcome"))}">{e(d.get("outcome"))}</td>'
            f'<td data-field="decision">{e(d.get("decision") or "no decision")}</td>'
            f'<td data-field="reasons">{_reasons(d.get("reasons") or [])}</td>'
            f'<td data-field="warnings">{_reasons(d.get("warnings") or [])}</td>'
            f'<td data-field="audit">{link(audit, "audit run") if audit else ""}</td>'
            "</tr>"
        )
    return _table(
        (
            "when",
            "model",
            "version",
            "environment",
            "outcome",
            "decision",
            "reasons",
            "warnings",
            "audit",
        ),
        rows,
        "no gate decisions since the controller started",
    )


def _queue(status: Mapping[str, Any]) -> str:
    rows = []
    for key, state in (status.get("queue") or {}).items():
        retry = state.get("retry_in")
        rows.append(
            f'<tr><td data-field="key">{e(key)}</td>'
            f'<td data-field="state">{e(state.get("state"))}</td>'
            f'<td data-field="failures">{e(state.get("failures"))}</td>'
            f'<td data-field="retry">{e(f"{retry:.0f} s" if retry is not None else "")}</td></tr>'
        )
    return _table(("key", "state", "failures", "retry in"), rows, "the queue is empty")


def _header(status: Mapping[str, Any], ui: str | None, now: float) -> str:
    poll = status.get("last_poll") or {}
    if not poll:
        polled = "no poll yet"
    elif poll.get("ok"):
        polled = f"last poll {when(poll.get('at'))}, {len(poll.get('differences') or [])} to do"
    else:
        polled = f"last poll {when(poll.get('at'))} failed: {poll.get('error')}"
    role = "leader" if status.get("leader") else "standby (another replica acts)"
    identity = f" {status['identity']}" if status.get("identity") else ""
    mlflow = link(ui, ui) if ui else "MLflow address unknown"
    return (
        "<header><h1>ztml controller</h1>"
        f'<p class="meta">{e(role + identity)} · {e(polled)} · MLflow {mlflow} · '
        f"page at {e(when(now))}</p></header>"
    )


def render(status: Mapping[str, Any], refresh_seconds: int = 10, now: float | None = None) -> str:
    """The whole page for one (already redacted) `controller.status()`."""
    ui = status.get("mlflow_ui")
    now = time.time() if now is None else now
    return (
        "<!doctype html>"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{int(refresh_seconds)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>ztml controller</title><style>{_CSS}</style></head><body>"
        f"{_header(status, ui, now)}"
        f"<main>{_deployments(status, ui)}"
        f'<section id="decisions"><h2>Last decisions</h2>{_decisions(status, ui)}</section>'
        f'<section id="queue"><h2>Queue</h2>{_queue(status)}</section></main>'
        "</body></html>"
    )
