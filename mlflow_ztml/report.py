"""The decision report: one self-contained HTML page per pipeline attempt (`report.html`).

Logged into the attempt's audit run, where MLflow's artifact viewer renders it: the model
version, the outcome, every governance rule with the observed value, the threshold and its
result (the policy's `checks`), the deny and warning messages, the image scan summary, the stage
timings and links into the MLflow UI (the version, the audit run, the run that trained the model).

Safe to open whatever the names: every value is HTML-escaped (a model, a metric or a message
named `<script>` is text), the page loads nothing (no script, no external style, image or font;
a Content-Security-Policy says so to the browser), and links are http(s) addresses without
credentials (`links`). Rendering is a pure function of its inputs (`render`); `for_attempt`
gathers them from the pipeline's outcome and the audit run's documents.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, ValidationError

from mlflow_ztml import __version__, links
from mlflow_ztml.policy.engine import Decision, RuleCheck

if TYPE_CHECKING:
    from mlflow_ztml.pipeline import Outcome
    from mlflow_ztml.scan import ScanReport

REPORT_FILE = "report.html"
SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN")
_RESULT_ORDER = {"deny": 0, "warn": 1, "pass": 2, "off": 3}
_RESULT_LABEL = {"pass": "pass", "warn": "warn", "deny": "DENY", "off": "not enforced"}
_TALLY_LABEL = {"deny": "denied", "warn": "warned", "pass": "passed", "off": "not enforced"}


class ReportLinks(BaseModel):
    """MLflow UI addresses the report points to (None: no UI address known)."""

    version: str | None = None
    audit_run: str | None = None
    report: str | None = None
    source_run: str | None = None

    def shown(self) -> dict[str, str]:
        """The links an outcome carries, by the label a person reads (`Outcome.links`)."""
        labelled = (
            ("model version", self.version),
            ("audit run", self.audit_run),
            ("report", self.report),
        )
        return {label: url for label, url in labelled if url}


class ReportInput(BaseModel):
    """Everything one report shows; built by `for_attempt`, rendered by `render`."""

    outcome: Any  # pipeline.Outcome (typed loosely: pipeline imports this module)
    governance: Decision | None = None
    scan: Any = None  # scan.ScanReport, when the image was scanned
    scan_decision: Decision | None = None
    deployment_decision: Decision | None = None
    links: ReportLinks = Field(default_factory=ReportLinks)
    generated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


def attempt_links(outcome: Outcome, ui: str | None) -> ReportLinks:
    """The UI links of one attempt: its version, its audit run and report, the training run."""
    model = (outcome.manifest or {}).get("spec", {}).get("model", {})
    experiment, run = outcome.audit_experiment_id, outcome.audit_run_id
    return ReportLinks(
        version=links.version_url(ui, outcome.model_name, outcome.model_version),
        audit_run=links.run_url(ui, experiment, run),
        report=links.artifact_url(ui, experiment, run, REPORT_FILE),
        source_run=links.run_url(ui, _text(model.get("experiment_id")), model.get("run_id")),
    )


def for_attempt(outcome: Outcome, documents: Mapping[str, Any], ui: str | None) -> ReportInput:
    """The report's input from the outcome and the JSON documents the audit run logged
    (`decision.json`, `scan-report.json`, ...). A document of the wrong shape is left out:
    the report explains what happened, it must not fail the attempt's record."""
    from mlflow_ztml.scan import ScanReport

    return ReportInput(
        outcome=outcome,
        governance=_parsed(Decision, documents.get("decision.json")),
        scan=_parsed(ScanReport, documents.get("scan-report.json")),
        scan_decision=_parsed(Decision, documents.get("scan-decision.json")),
        deployment_decision=_parsed(Decision, documents.get("deployment-decision.json")),
        links=attempt_links(outcome, ui),
    )


def _parsed(model: type[BaseModel], document: Any) -> Any:
    if document is None:
        return None
    try:
        return model.model_validate(document)
    except ValidationError:
        return None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


# --- text, for terminals (`ztml gate`, `ztml deploy`) ---------------------------------------


def ordered(checks: Iterable[RuleCheck]) -> list[RuleCheck]:
    """Denies first, then warnings, passes and rules not enforced; by id within each."""
    return sorted(checks, key=lambda c: (_RESULT_ORDER[c.result], c.id))


def tally(checks: Iterable[RuleCheck]) -> str:
    """`25 passed, 2 not enforced`: how many rules ended how (denied first)."""
    results = [c.result for c in checks]
    return ", ".join(
        f"{results.count(result)} {_TALLY_LABEL[result]}"
        for result in _RESULT_ORDER
        if result in results
    )


def rules_text(checks: Iterable[RuleCheck], indent: str = "    ") -> list[str]:
    """One aligned line per rule: result, title, observed value, threshold."""
    rows = [(c.result, c.title, c.observed, c.threshold) for c in ordered(checks)]
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return [
        indent
        + "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
        + "  "
        + row[3]
        for row in rows
    ]


def evidence_summary(document: Mapping[str, Any], limit: int = 6) -> list[str]:
    """A manifest's evidence in a few lines (`ztml manifest --summary`): metrics, fairness,
    drift, lineage, training, dependencies, signature. `document` is the manifest as a dict
    (ModelDeployment.to_dict()); evidence never recorded reads "none recorded"."""
    spec = document.get("spec") or {}
    model = spec.get("model") or {}
    framework = model.get("framework") or "unknown framework"
    head = f"{model.get('name', '?')} v{model.get('version') or '?'} ({framework}"
    if model.get("run_id"):
        head += f", run {model['run_id']}"
    rows = [
        ("metrics", _scores(spec.get("metrics"), limit)),
        ("fairness", _scores(spec.get("fairness"), limit)),
        ("drift", _drift(spec.get("drift"))),
        ("lineage", _sources(spec.get("data_sources") or [], limit)),
        ("training", _samples(spec.get("training"))),
        ("dependencies", _dependencies(spec.get("dependencies"), limit)),
        ("signature", _signature(model)),
    ]
    width = max(len(label) for label, _ in rows)
    return [head + ")"] + [f"  {label.ljust(width)}  {text}" for label, text in rows]


def _number(value: float) -> str:
    return f"{value:.4f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)


def _numbers(section: Any) -> dict[str, float]:
    if not isinstance(section, Mapping):
        return {}
    return {
        str(k): v
        for k, v in section.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def _more(items: list[str], limit: int) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", +{len(items) - limit} more" if len(items) > limit else "")


def _scores(section: Any, limit: int) -> str:
    values = _numbers(section)
    if not values:
        return "none recorded"
    return _more([f"{k} {_number(v)}" for k, v in sorted(values.items())], limit)


def _drift(section: Any) -> str:
    values = _numbers(section)
    if not values:
        return "none recorded"
    top = max(values, key=lambda k: values[k])
    count = f"{len(values)} value" + ("" if len(values) == 1 else "s")
    return f"{count}, max {top} {_number(values[top])}"


def _sources(sources: list[Any], limit: int) -> str:
    labels = []
    for source in sources:
        if isinstance(source, Mapping):
            name, where = source.get("name"), source.get("source")
            labels.append(f"{name} ({where})" if name and where else str(name or where or "?"))
    return _more(labels, limit) if labels else "no data sources declared"


def _samples(training: Any) -> str:
    samples = training.get("samples") if isinstance(training, Mapping) else None
    return f"{_number(samples)} samples" if samples is not None else "no sample count recorded"


def _dependencies(dependencies: Any, limit: int) -> str:
    if not isinstance(dependencies, list) or not dependencies:
        return "none recorded"
    items = [d for d in dependencies if isinstance(d, Mapping)]
    pinned = sum(bool(d.get("pinned")) for d in items)
    names = [str(d.get("requirement") or d.get("name")) for d in items]
    return f"{len(items)} ({pinned} pinned): {_more(names, limit)}"


def _signature(model: Mapping[str, Any]) -> str:
    if not model.get("signature"):
        return "none"
    example = "with" if model.get("has_input_example") else "without"
    return f"present, {example} an input example"


# --- rendering ------------------------------------------------------------------------------

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1f2328}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:24px 0 8px}
.sub{color:#59636e;margin:0 0 16px}
table{border-collapse:collapse;margin:4px 0} td,th{border:1px solid #d1d9e0;padding:4px 8px;
text-align:left;vertical-align:top} th{background:#f6f8fa}
td.num{text-align:right;font-variant-numeric:tabular-nums}
code{font:12px ui-monospace,Menlo,Consolas,monospace;word-break:break-all}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:600;white-space:nowrap}
.pass,.allow,.deployed,.unchanged,.planned{background:#dafbe1;color:#116329}
.warn{background:#fff8c5;color:#7d4e00}
.deny,.rejected,.failed,.rolled_back{background:#ffebe9;color:#a40e26}
.off{background:#eff2f5;color:#59636e}
ol,ul{margin:4px 0;padding-left:24px} li{margin:2px 0}
"""


def render(report: ReportInput) -> str:
    """The report as one self-contained, escaped HTML document."""
    outcome = report.outcome
    title = f"{outcome.model_name} v{outcome.model_version} \u2192 {outcome.environment}"
    generated = report.generated_at.strftime("%Y-%m-%d %H:%M:%SZ")
    body = [
        f"<h1>{_e(title)} {_badge(outcome.status, outcome.status.replace('_', ' '))}</h1>",
        f'<p class="sub">ztml decision report \u00b7 generated '
        f"{_e(generated)} \u00b7 ztml {_e(__version__)}</p>",
        _summary(report),
        _links(report.links),
        _rules(report.governance),
        _messages(report),
        _scan(report),
        _timings(outcome.stage_seconds),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>{_e(title)} \u00b7 ztml</title><style>{_STYLE}</style></head>\n<body>\n"
        + "\n".join(part for part in body if part)
        + "\n</body></html>\n"
    )


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _badge(css: str, text: str) -> str:
    return f'<span class="badge {_e(css)}">{_e(text)}</span>'


def _table(head: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    """A table of already-escaped cells."""
    header = "".join(f"<th>{_e(cell)}</th>" for cell in head)
    lines = ["<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows]
    return f"<table><tr>{header}</tr>{''.join(lines)}</table>"


def _summary(report: ReportInput) -> str:
    outcome = report.outcome
    decision = outcome.decision or report.governance
    rows: list[tuple[str, str]] = [
        ("model", f"<code>{_e(outcome.model_name)}</code> version {_e(outcome.model_version)}"),
        ("environment", _e(outcome.environment)),
        ("outcome", _badge(outcome.status, outcome.status.replace("_", " "))),
    ]
    if decision is not None:
        verdict = "allow" if decision.allow else "deny"
        rows.append(
            (
                "decision",
                f"{_badge(verdict, verdict)} by {_e(decision.package)} ({_e(decision.engine)})",
            )
        )
    rows.append(
        ("runtime", f"{_e(outcome.runtime)}, deployment <code>{_e(outcome.deployment)}</code>")
    )
    optional = (
        ("endpoint", outcome.endpoint),
        ("image", outcome.image),
        ("previous version", outcome.previous_version),
        ("error", outcome.error),
    )
    rows.extend((label, f"<code>{_e(value)}</code>") for label, value in optional if value)
    return (
        "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"
    )


def _links(found: ReportLinks) -> str:
    items = [
        ("model version in MLflow", found.version),
        ("this audit run", found.audit_run),
        ("the run that trained the model", found.source_run),
    ]
    shown = [
        f'<li>{_e(label)}: <a href="{_e(url)}" target="_blank" rel="noopener noreferrer">'
        f"{_e(url)}</a></li>"
        for label, url in items
        if url
    ]
    if not shown:
        return "<h2>Links</h2><p>No MLflow UI address is known (set mlflow.ui_url).</p>"
    return "<h2>Links</h2><ul>" + "".join(shown) + "</ul>"


def _rules(governance: Decision | None) -> str:
    if governance is None:
        return "<h2>Governance rules</h2><p>The governance gate was not reached.</p>"
    checks = ordered(governance.checks)
    if not checks:
        return (
            "<h2>Governance rules</h2><p>The policy engine listed no rules "
            "(a policy without <code>checks</code>, or an engine error).</p>"
        )
    rows = [_rule_row(check) for check in checks]
    return f"<h2>Governance rules ({len(checks)} checked: {_e(tally(checks))})</h2>" + _table(
        ("result", "rule", "observed", "threshold"), rows
    )


def _rule_row(check: RuleCheck) -> list[str]:
    return [
        _badge(check.result, _RESULT_LABEL[check.result]),
        f"{_e(check.title)}<br><code>{_e(check.id)}</code>",
        f"<code>{_e(check.observed)}</code>",
        _e(check.threshold),
    ]


def _messages(report: ReportInput) -> str:
    outcome = report.outcome
    deny = outcome.decision.deny if outcome.decision is not None else []
    parts = []
    if deny:
        parts.append(
            f"<h2>Denied ({len(deny)})</h2><ol>"
            + "".join(f"<li>{_e(message)}</li>" for message in deny)
            + "</ol>"
        )
    if outcome.warnings:
        parts.append(
            f"<h2>Warnings ({len(outcome.warnings)})</h2><ol>"
            + "".join(f"<li>{_e(message)}</li>" for message in outcome.warnings)
            + "</ol>"
        )
    return "\n".join(parts)


def _scan(report: ReportInput) -> str:
    outcome = report.outcome
    scan: ScanReport | None = report.scan
    if scan is None:
        if "scan" in outcome.stages_skipped:
            why = f"skipped: the {outcome.runtime} runtime runs no image"
        else:
            why = "not reached"
        return f"<h2>Image scan</h2><p>{_e(why)}.</p>"
    rows = []
    for kind in ("vulnerability", "misconfiguration", "secret"):
        by_severity = scan.counts.get(kind, {})
        rows.append([_e(kind)] + [f"{by_severity.get(s, 0)}" for s in SEVERITIES])
    parts = [
        "<h2>Image scan</h2>",
        f"<p><code>{_e(scan.summary())}</code></p>",
        f"<p>{_e(scan.scanner)} {_e(scan.scanner_version or '')} on <code>{_e(scan.image)}</code>, "
        f"{scan.packages} packages, vulnerability database {_e(scan.vulnerability_db)}.</p>",
        _table(("finding", *SEVERITIES), rows),
    ]
    fixable = [v for v in scan.vulnerabilities if v.fix_available][:20]
    if fixable:
        parts.append(
            _table(
                ("fixable vulnerability", "severity", "package", "installed", "fixed in"),
                (
                    [
                        f"<code>{_e(v.id)}</code>",
                        _e(v.severity),
                        _e(v.package or ""),
                        _e(v.installed_version or ""),
                        _e(v.fixed_version or ""),
                    ]
                    for v in fixable
                ),
            )
        )
    if report.scan_decision is not None:
        verdict = "allow" if report.scan_decision.allow else "deny"
        parts.append(f"<p>scan policy: {_badge(verdict, verdict)}</p>")
    return "\n".join(parts)


def _timings(seconds: Mapping[str, float]) -> str:
    if not seconds:
        return ""
    rows = [[_e(stage), f"{value:.2f} s"] for stage, value in seconds.items()]
    rows.append(["<b>total</b>", f"<b>{sum(seconds.values()):.2f} s</b>"])
    return "<h2>Stage timings</h2>" + _table(("stage", "duration"), rows)
