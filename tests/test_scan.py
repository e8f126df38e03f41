"""The scan stage: real trivy on real images (secrets, image config, Dockerfile, SBOM), an
unavailable vulnerability database reported as such, and the `ztml.scan` policy judging it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlflow_ztml.config import ScanConfig, Settings
from mlflow_ztml.errors import ScanError
from mlflow_ztml.policy.engine import make_engine
from mlflow_ztml.scan import (
    Finding,
    Scanner,
    ScanReport,
    _trivy_error,
    _vulnerability,
    evaluate,
    find_trivy,
)
from tests.docker_support import PLANTED_SECRET, built, docker_env


@pytest.fixture(scope="module")
def engine():
    return make_engine(Settings())


# --------------------------------------------------------------------------- units


def test_counts_fixable_and_summary() -> None:
    report = ScanReport(
        image="x",
        vulnerability_db="available",
        vulnerabilities=[
            _vulnerability(
                {"Target": "python-pkg"},
                {
                    "VulnerabilityID": "CVE-1",
                    "Severity": "CRITICAL",
                    "PkgName": "a",
                    "InstalledVersion": "1",
                    "FixedVersion": "2",
                },
            ),
            _vulnerability({}, {"VulnerabilityID": "CVE-2", "Severity": "HIGH", "PkgName": "b"}),
        ],
        secrets=[Finding(kind="secret", id="aws-access-key-id", severity="CRITICAL")],
    ).recount()
    assert report.counts["vulnerability"]["CRITICAL"] == 1
    assert report.counts["vulnerability"]["HIGH"] == 1
    assert report.counts["secret"]["CRITICAL"] == 1
    assert report.fixable == {"CRITICAL": 1, "HIGH": 0, "MEDIUM": 0, "LOW": 0, "UNKNOWN": 0}
    assert report.vulnerabilities[1].fix_available is False
    assert "vulns C/H/M/L=1/1/0/0 (fixable C/H=1/0) secrets=1" in report.summary()
    assert report.metrics()["scan_vulnerability_critical"] == 1
    assert report.metrics()["scan_secrets"] == 1


def test_fixable_critical_is_denied_everywhere(engine) -> None:
    report = ScanReport(
        image="x",
        vulnerability_db="available",
        scanners=dict.fromkeys(("vulnerability", "secret", "misconfiguration", "sbom"), "ok"),
        vulnerabilities=[
            Finding(
                kind="vulnerability",
                id="CVE-2025-1",
                severity="CRITICAL",
                package="openssl",
                installed_version="3.0.1",
                fixed_version="3.0.2",
                fix_available=True,
            )
        ],
    ).recount()
    for env in ("local", "staging", "production"):
        decision = evaluate(report, env, engine)
        assert not decision.allow
        assert decision.deny == [
            f"CVE-2025-1 (CRITICAL) in openssl 3.0.1 is fixed in 3.0.2; {env} does not accept "
            "fixable CRITICAL vulnerabilities"
        ]


def test_disabled_scanning_is_reported_not_clean(tmp_path: Path, engine) -> None:
    result = Scanner(ScanConfig(enabled=False), tmp_path).scan_image("any")
    assert result.report.vulnerability_db == "disabled"
    assert set(result.report.scanners.values()) == {"disabled"}
    assert not evaluate(result.report, "production", engine).allow
    assert evaluate(result.report, "local", engine).allow


def test_missing_trivy_is_a_scan_error(tmp_path: Path) -> None:
    with pytest.raises(ScanError, match="not an executable"):
        find_trivy(str(tmp_path / "no-trivy"))


def test_trivy_errors_are_short_and_scrubbed() -> None:
    stderr = (
        "2026-11-26T13:42:41Z\tINFO\t[vulndb] Need to update DB\n"
        "2026-11-26T13:42:41Z\tFATAL\tFatal error\tDB error: failed to download "
        "from https://user:hunter2@mirror.example/v2/\n\t* lookup mirror.example: no such host\n"
    )
    text = _trivy_error(stderr)
    assert text.startswith("Fatal error DB error: failed to download")
    assert "no such host" in text
    assert "hunter2" not in text and "INFO" not in text


# --------------------------------------------------------------------------- real trivy


@pytest.fixture(scope="module")
def images(request: pytest.FixtureRequest):
    docker_env()  # skip (no engine configured) before starting an MLflow server for nothing
    return built(request.getfixturevalue("mlflow_server").url)


@pytest.fixture(scope="module")
def clean_scan(images):
    image = images.image("v1")
    return Scanner(images.settings().scan, images.home).scan_image(
        image.reference, dockerfile=image.dockerfile
    )


@pytest.mark.slow
def test_clean_image_scan_is_complete_and_honest(clean_scan) -> None:
    report = clean_scan.report
    assert report.scanner_version
    assert report.scanners["secret"] == "ok"
    assert report.scanners["misconfiguration"] == "ok"
    assert report.scanners["sbom"] == "ok"
    assert report.secrets == []
    assert report.packages > 50
    # No trivy database on this machine: said so, with trivy's reason, never "clean".
    assert report.vulnerability_db == "unavailable"
    assert report.scanners["vulnerability"] == "unavailable"
    assert report.vulnerability_db_detail
    assert report.image_id and report.image_id.startswith("sha256:")
    sbom = json.loads(clean_scan.sbom)
    assert sbom["bomFormat"] == "CycloneDX"
    names = {c.get("name") for c in sbom["components"]}
    assert {"scikit-learn", "mlflow-skinny", "numpy"} <= names


@pytest.mark.slow
def test_image_passes_trivy_config(clean_scan) -> None:
    """The serving Dockerfile and the image config have no HIGH/CRITICAL misconfiguration."""
    serious = [
        f"{m.id} {m.severity} {m.title} ({m.source})"
        for m in clean_scan.report.misconfigurations
        if m.severity in ("HIGH", "CRITICAL")
    ]
    assert serious == []
    assert clean_scan.report.errors == []


@pytest.mark.slow
def test_unavailable_database_is_decided_per_environment(clean_scan, engine) -> None:
    local = evaluate(clean_scan.report, "local", engine)
    assert local.allow
    assert any("vulnerability database is unavailable" in w for w in local.warn)
    production = evaluate(clean_scan.report, "production", engine)
    assert not production.allow
    assert len(production.deny) == 1
    assert "vulnerability database is unavailable" in production.deny[0]
    assert "production requires a vulnerability scan" in production.deny[0]


@pytest.mark.slow
def test_planted_secret_is_found_and_denied(images, engine) -> None:
    image = images.image("secret")
    result = Scanner(images.settings().scan, images.home).scan_image(image.reference)
    report = result.report
    rules = {s.id for s in report.secrets}
    assert "aws-access-key-id" in rules
    locations = [s.location or "" for s in report.secrets]
    assert all("deploy-credentials.ini" in loc for loc in locations), locations
    assert report.counts["secret"]["CRITICAL"] >= 1
    # The secret itself never reaches the report (nor, through it, MLflow).
    dumped = report.model_dump_json()
    for value in ("AKIA2E0A8F3B244C9986", PLANTED_SECRET.split(" = ")[-1].strip()):
        assert value not in dumped
    for env in ("local", "staging", "production"):
        decision = evaluate(report, env, engine)
        assert not decision.allow
        assert any(
            m.startswith("secret aws-access-key-id (AWS Access Key ID) in ") for m in decision.deny
        )
