"""The decision report (`report.html` in each attempt's audit run) and the rules `ztml gate`
shows: a real `mlflow server`, the real Rego engine, a real pipeline attempt."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime

import mlflow
import pytest
from click.testing import CliRunner

from mlflow_ztml import gate, report
from mlflow_ztml.cli import main
from mlflow_ztml.config import load_settings
from mlflow_ztml.pipeline import DeployOptions, Outcome, Pipeline
from mlflow_ztml.policy.bundle import load_bundle
from mlflow_ztml.policy.regorus import RegorusEngine
from tests.models import GOOD_METRICS, register_sklearn
from tests.policy.manifests import manifest

HOSTILE = "<script>alert(1)</script>"
# Anything that would make the page load or run something.
ACTIVE = re.compile(r"<script|<link|<img|<iframe|<object|\bsrc=|\bon\w+=|javascript:", re.I)


def _cells(page: str) -> str:
    """The page's text as a person reads it (tags dropped, entities decoded)."""
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def test_a_rejected_attempt_logs_a_report_with_every_rule_and_escapes_hostile_names(
    ztml_env,
) -> None:
    name = "report-bad"
    version = register_sklearn(
        ztml_env.url,
        name,
        metrics={**GOOD_METRICS, "accuracy": 0.61},
        data_sources=(f"s3://elsewhere/{HOSTILE}.parquet",),
    )
    outcome = Pipeline(load_settings()).run(f"models:/{name}/{version}", "local", DeployOptions())
    assert outcome.status == "rejected"

    page = mlflow.artifacts.load_text(f"runs:/{outcome.audit_run_id}/report.html")
    assert not ACTIVE.search(page), ACTIVE.search(page)
    assert html.escape(HOSTILE) in page  # the data source shows, as text
    assert "default-src 'none'" in page  # and the browser is told to load nothing

    checks = outcome.decision.checks
    assert {c.id for c in checks} >= {"metrics.accuracy", "metrics.f1_score", "drift", "lineage"}
    text = _cells(page)
    for check in checks:  # every rule, with its observed value and threshold
        assert check.observed in text and check.threshold in text, check
    accuracy = next(c for c in checks if c.id == "metrics.accuracy")
    assert (accuracy.observed, accuracy.threshold, accuracy.result) == (
        "0.6100",
        ">= 0.8500",
        "deny",
    )
    row = re.search(r"<tr>(?:(?!</tr>).)*metrics\.accuracy(?:(?!</tr>).)*</tr>", page).group(0)
    assert "DENY" in row and "0.6100" in row and "&gt;= 0.8500" in row
    assert "accuracy 0.6100 is below the minimum 0.8500 for local" in text  # the deny message
    assert "skipped: the process runtime runs no image" in text
    assert re.search(r"evidence \s*\d+\.\d\d s", text) and "gate" in text  # stage timings

    # Links into the MLflow UI, and the version carries the audit run's address.
    run_url = (
        f"{ztml_env.url}/#/experiments/{outcome.audit_experiment_id}/runs/{outcome.audit_run_id}"
    )
    assert outcome.links["audit run"] == run_url
    assert outcome.links["model version"] == f"{ztml_env.url}/#/models/{name}/versions/{version}"
    assert outcome.links["report"] == f"{run_url}/artifactPath/report.html"
    assert f'href="{run_url}"' in page
    assert f'href="{outcome.links["model version"]}"' in page
    tags = mlflow.MlflowClient(ztml_env.url).get_model_version(name, version).tags
    assert tags["ztml.local.audit_url"] == run_url


@pytest.fixture(scope="module")
def engine() -> RegorusEngine:
    return RegorusEngine.from_bundle(load_bundle())


def test_an_allowed_report_lists_every_rule_passed_and_escapes_a_hostile_model_name(
    engine,
) -> None:
    decision = gate.evaluate(manifest(), "production", engine, explain=True)
    assert decision.allow and decision.checks
    outcome = Outcome(
        status="deployed",
        model_name=f"credit{HOSTILE}",
        model_version="4",
        environment="production",
        deployment="credit-production",
        runtime="process",
        decision=decision,
        endpoint="http://127.0.0.1:8123",
        audit_run_id="abc",
        audit_experiment_id="7",
        stage_seconds={"evidence": 0.5, "gate": 0.25, "deploy": 3.0},
        stages_skipped=["build", "scan"],
        manifest=manifest().to_dict(),
    )
    ui = "https://ui.example.test"
    page = report.render(
        report.ReportInput(
            outcome=outcome,
            governance=decision,
            links=report.attempt_links(outcome, ui),
            generated_at=datetime(2026, 12, 2, 4, 2, tzinfo=UTC),
        )
    )
    assert not ACTIVE.search(page)
    assert "credit&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "/#/models/credit%3Cscript%3Ealert%281%29%3C%2Fscript%3E/versions/4" in page
    text = _cells(page)
    assert f"Governance rules ({len(decision.checks)} checked:" in text
    assert all(c.result in ("pass", "off") for c in decision.checks)
    assert text.count(" pass ") >= sum(c.result == "pass" for c in decision.checks)
    for check in decision.checks:
        assert check.title in text and check.observed in text
    assert "total 3.75 s" in re.sub(r"\s+", " ", text)


def test_links_never_carry_credentials_from_the_tracking_uri(monkeypatch, tmp_path) -> None:
    from mlflow_ztml import links

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://alice:s3cret@mlflow.example.test/?token=x")
    monkeypatch.setenv("ZTML_HOME", str(tmp_path))
    monkeypatch.delenv("ZTML_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    ui = links.ui_base(load_settings())
    assert ui == "https://mlflow.example.test"
    assert links.run_url(ui, "1", "r") == "https://mlflow.example.test/#/experiments/1/runs/r"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    assert links.ui_base(load_settings()) is None  # a database store has no UI address


def test_gate_lists_every_rule_with_values_on_an_allow(tmp_path) -> None:
    path = tmp_path / "manifest.yaml"
    path.write_text(manifest().to_yaml(), encoding="utf-8")
    result = CliRunner().invoke(main, ["gate", "-f", str(path), "--env", "production"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ALLOW ")
    assert re.search(r"pass\s+minimum accuracy\s+0\.9300\s+>= 0\.8500", result.output)
    assert re.search(r"pass\s+feature drift\s+max age 0\.0500", result.output)
    assert "rules: 26 passed, 2 not enforced" in result.output
    assert re.search(r"off\s+semantic version\s+4\s+MAJOR.MINOR.PATCH", result.output)


def test_manifest_summary_shows_the_evidence_in_a_few_lines(tmp_path) -> None:
    path = tmp_path / "manifest.yaml"
    path.write_text(manifest().to_yaml(), encoding="utf-8")
    out = tmp_path / "full.yaml"
    result = CliRunner().invoke(main, ["manifest", "-f", str(path), "--summary", "-o", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "credit-risk v4 (sklearn, run abc123)"
    assert [line.split()[0] for line in lines[1:]] == [
        "metrics",
        "fairness",
        "drift",
        "lineage",
        "training",
        "dependencies",
        "signature",
    ]
    assert "accuracy 0.93, f1_score 0.91" in lines[1]
    assert "3 values, max age 0.05" in lines[3]
    assert "7 (7 pinned): mlflow==3.17.2" in lines[6]
    assert out.read_text(encoding="utf-8").startswith("apiVersion: mlifecycle.io/v1")
