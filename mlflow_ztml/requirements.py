"""Can the place a model will run install and load it? Answered at plan/gate time, before any build.

Two kinds of model otherwise fail late: one whose requirements pip cannot satisfy from the
build's indexes (a `torch==2.13.0+cpu` pin that MLflow's requirement inference copied from the
logging machine, a package or version that does not exist) fails minutes into the image build;
one whose requirements lack what its flavor loads with (`skops` for a sklearn model saved with
`serialization_format: skops`) builds, and its container then exits at start.

Facts here, decisions in Rego: this module computes a `RequirementsReport` and the gate hands it
to the governance policy as `input.requirements`; `policies/governance` turns each finding into
a deny or a warning per environment (`enforcement`). Every finding's message names the fix.

What is checked depends on where the model runs:
- image runtimes (docker, kubernetes) install the model's requirements.txt with pip from the
  build's indexes. Each requirement is looked up on those indexes through the simple API
  (PEP 691 JSON, PEP 503 HTML as fallback); a requirement is satisfiable when some index lists a
  version its specifier accepts. The flavor's packages (`build.requirements_check.
  flavor_packages`) must be among the requirements or what they and the serving image install.
- the `process` runtime loads the model in the Python that runs ztml, whose packages are not
  installed from the requirements: the flavor's modules must be importable there.

Lookups are bounded (`request_timeout_seconds` each, `timeout_seconds` for the whole check, a
few in parallel) and cached in the `IndexClient` of one run. An index that cannot be reached is
a finding (`requirements_index_unreachable`) naming the requirements left unverified, never an
"ok"; a check that cannot run at all is a `requirements_unchecked` finding.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import sys
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, Field

from mlflow_ztml.config import BuildConfig, FlavorPackage, RequirementsCheckConfig, Settings
from mlflow_ztml.errors import ZtmlError
from mlflow_ztml.package_index import (
    PYPI_LABEL,
    IndexClient,
    IndexSource,
    ProjectPage,
    build_sources,
    version_key,
)
from mlflow_ztml.redact import safe

if TYPE_CHECKING:
    from mlflow_ztml.manifest import ModelDeployment
    from mlflow_ztml.registry import Registry

IMAGE_RUNTIMES = ("docker", "kubernetes")
UNSATISFIABLE = "requirements_unsatisfiable"
FLAVOR_PACKAGE = "requirements_flavor_package"
INDEX_UNREACHABLE = "requirements_index_unreachable"
UNCHECKED = "requirements_unchecked"
EXTRA_INDEX_KEY = "build.pip_extra_index_url"
# The serving image's Dockerfile installs `mlflow` as `mlflow-skinny` at the same version.
_INSTALLED_AS = {"mlflow": "mlflow-skinny"}


class Finding(BaseModel):
    """One reason the model may not install or load; `message` names the fix."""

    check: str
    message: str
    requirement: str | None = None
    package: str | None = None


class RequirementsReport(BaseModel):
    """What the check found; `policy_input()` is `input.requirements` of the governance gate."""

    runtime: str
    target: Literal["image", "local"]
    status: Literal["checked", "incomplete", "disabled", "failed"] = "checked"
    sources: list[IndexSource] = Field(default_factory=list)
    verified: list[str] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list)
    seconds: float = 0.0

    def policy_input(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class ModelNeeds(BaseModel):
    """What the check reads about one model: its MLmodel flavors (with their configuration)
    and its requirements.txt (`None`: the model was logged without one)."""

    flavors: dict[str, dict[str, Any]] = Field(default_factory=dict)
    requirements: list[str] | None = None
    pip_options: list[str] = Field(default_factory=list)

    @classmethod
    def parse(cls, flavors: dict[str, Any], requirements_text: str | None) -> ModelNeeds:
        lines: list[str] | None = None
        options: list[str] = []
        if requirements_text is not None:
            lines = []
            for line in _logical_lines(requirements_text):
                (options if line.startswith("-") else lines).append(line)
        return cls(
            flavors={name: dict(config or {}) for name, config in (flavors or {}).items()},
            requirements=lines,
            pip_options=options,
        )


# --------------------------------------------------------------------------- entry points


def for_model(
    registry: Registry,
    settings: Settings,
    model_uri: str,
    runtime: str,
    client: IndexClient | None = None,
) -> RequirementsReport:
    """The report for a registered model (reads its MLmodel and requirements.txt). Never raises:
    what prevents the check is itself a `requirements_unchecked` finding."""
    try:
        info = registry.model_info(model_uri)
        text = registry.requirements(model_uri)
    except ZtmlError as exc:
        return _failed(
            runtime, f"cannot read the MLmodel or requirements.txt of {model_uri}: {exc}"
        )
    flavors = dict(getattr(info, "flavors", None) or {})
    return check(ModelNeeds.parse(flavors, text), runtime, settings, client)


def for_manifest(
    manifest: ModelDeployment, settings: Settings, runtime: str, client: IndexClient | None = None
) -> RequirementsReport:
    """The report for a hand-written manifest: its dependencies and flavor names (a manifest
    carries no flavor configuration, so rules with `when` conditions cannot apply)."""
    spec = manifest.spec
    dependencies = spec.dependencies
    needs = ModelNeeds(
        flavors={name: {} for name in spec.model.flavors},
        requirements=None if dependencies is None else [d.requirement for d in dependencies],
    )
    return check(needs, runtime, settings, client)


def check(
    needs: ModelNeeds, runtime: str, settings: Settings, client: IndexClient | None = None
) -> RequirementsReport:
    """Judge `needs` for `runtime`; never raises (an unexpected error is an unchecked finding)."""
    started = time.monotonic()
    config = settings.build
    target: Literal["image", "local"] = "image" if runtime in IMAGE_RUNTIMES else "local"
    report = RequirementsReport(runtime=runtime, target=target)
    try:
        if not config.requirements_check.enabled:
            report.status = "disabled"
            report.findings.append(
                Finding(
                    check=UNCHECKED,
                    message="the model's requirements were not checked "
                    "(build.requirements_check.enabled is false in ztml.yaml): a requirement "
                    "that cannot be installed or loaded is found only when the model starts",
                )
            )
        elif target == "local":
            report.findings.extend(
                _local_findings(needs, config.requirements_check.flavor_packages)
            )
        else:
            _image_findings(needs, config, report, client)
    except Exception as exc:  # fail closed: the policy decides on an unchecked model
        report.status = "failed"
        report.findings.append(
            Finding(
                check=UNCHECKED,
                message=f"the model's requirements could not be checked ({type(exc).__name__}: "
                f"{safe(exc, 300)})",
            )
        )
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _failed(runtime: str, reason: str) -> RequirementsReport:
    return RequirementsReport(
        runtime=runtime,
        target="image" if runtime in IMAGE_RUNTIMES else "local",
        status="failed",
        findings=[
            Finding(check=UNCHECKED, message=f"requirements not checked: {safe(reason, 500)}")
        ],
    )


# --------------------------------------------------------------------------- flavors


def flavor_needs(
    flavors: dict[str, dict[str, Any]], rules: Iterable[FlavorPackage]
) -> list[tuple[FlavorPackage, str]]:
    """The rules that apply to these flavors, each with how it applies ("sklearn
    (serialization_format skops)"), one per package."""
    matched: dict[str, tuple[FlavorPackage, str]] = {}
    for rule in rules:
        if rule.flavor not in flavors:
            continue
        config = flavors[rule.flavor]
        if all(
            key in config and re.fullmatch(pattern, str(config[key]))
            for key, pattern in rule.when.items()
        ):
            detail = ", ".join(f"{key} {config[key]}" for key in rule.when)
            why = f"{rule.flavor} ({detail})" if detail else rule.flavor
            matched.setdefault(canonicalize_name(rule.package), (rule, why))
    return list(matched.values())


def _local_findings(needs: ModelNeeds, rules: list[FlavorPackage]) -> list[Finding]:
    findings: list[Finding] = []
    for rule, why in flavor_needs(needs.flavors, rules):
        if _importable(rule.module):
            continue
        findings.append(
            Finding(
                check=FLAVOR_PACKAGE,
                package=rule.package,
                message=f"model flavor {why} loads with {rule.package} (import {rule.module}), "
                f"which the Python that runs process deployments ({sys.executable}) cannot "
                f"import: install it there (pip install {rule.package}), or deploy with an "
                "image runtime (docker, kubernetes), which installs the model's requirements",
            )
        )
    return findings


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _flavor_findings(needs: ModelNeeds, rules: list[FlavorPackage]) -> list[Finding]:
    """Image runtimes: the packages the flavor loads with must be installed by the image."""
    installed = _installed_by_image(needs.requirements or [])
    findings: list[Finding] = []
    for rule, why in flavor_needs(needs.flavors, rules):
        names = {canonicalize_name(n) for n in (rule.package, *rule.alternatives)}
        if names & installed:
            continue
        example = _pinned_example(rule.package)
        findings.append(
            Finding(
                check=FLAVOR_PACKAGE,
                package=rule.package,
                message=f"model flavor {why} loads with {rule.package}, which the model's "
                f"requirements do not include, so its container would fail at start: add "
                f"{rule.package} to the model's requirements (log it with pip_requirements "
                f"including {example!r}, or extra_pip_requirements=[{example!r}])",
            )
        )
    return findings


def _pinned_example(package: str) -> str:
    try:
        return f"{package}=={importlib.metadata.version(package)}"
    except importlib.metadata.PackageNotFoundError:
        return package


def _installed_by_image(requirements: list[str]) -> set[str]:
    """Names the image installs: the model's requirements, the serving package's own, and what
    those depend on (as far as the distributions installed here declare it)."""
    roots: list[str] = []
    for line in [*requirements, *_serving_requirements()]:
        name = _requirement_name(line)
        if name:
            roots.append(_INSTALLED_AS.get(name, name))  # full mlflow is never installed
    seen: set[str] = set()
    while roots:
        name = roots.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            declared = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for line in declared:
            try:
                dependency = Requirement(line)
            except InvalidRequirement:
                continue
            if dependency.marker is None or dependency.marker.evaluate({"extra": ""}):
                roots.append(canonicalize_name(dependency.name))
    return seen


def _serving_requirements() -> list[str]:
    """The serving package's own requirements.txt (what every image installs first)."""
    spec = importlib.util.find_spec("serving")
    if spec is not None and spec.origin:
        path = Path(spec.origin).parent / "requirements.txt"
        if path.is_file():
            return path.read_text(encoding="utf-8").splitlines()
    return ["mlflow-skinny"]


def _requirement_name(line: str) -> str | None:
    line = line.split(" #", 1)[0].strip()
    if not line or line.startswith(("#", "-")):
        return None
    try:
        return canonicalize_name(Requirement(line).name)
    except InvalidRequirement:
        return None


# --------------------------------------------------------------------------- requirements


class _Wanted(BaseModel):
    line: str
    name: str
    project: str
    specifier: str
    local_label: str | None = None


def _image_findings(
    needs: ModelNeeds, config: BuildConfig, report: RequirementsReport, client: IndexClient | None
) -> None:
    if needs.requirements is None:
        report.findings.append(
            Finding(
                check=UNSATISFIABLE,
                message="the model has no requirements.txt, so the image cannot install what it "
                "needs: log the model with pip_requirements (MLflow writes requirements.txt)",
            )
        )
        return
    settings = config.requirements_check
    report.findings.extend(_flavor_findings(needs, settings.flavor_packages))
    report.sources = build_sources(config, needs.pip_options)
    wanted: list[_Wanted] = []
    for line in needs.requirements:
        try:
            requirement = Requirement(line)
        except InvalidRequirement as exc:
            report.findings.append(
                Finding(
                    check=UNSATISFIABLE,
                    requirement=line,
                    message=f"requirement {line!r} is not valid for pip ({exc}): correct it in "
                    "the model's requirements (log the model with pip_requirements)",
                )
            )
            continue
        if requirement.url:
            continue  # a direct reference: not looked up on an index
        name = canonicalize_name(requirement.name)
        labels = [s.version.split("+", 1)[1] for s in requirement.specifier if "+" in s.version]
        wanted.append(
            _Wanted(
                line=line,
                name=name,
                project=_INSTALLED_AS.get(name, name),
                specifier=str(requirement.specifier),
                local_label=labels[0] if labels else None,
            )
        )
    if not report.sources:
        report.findings.append(
            Finding(
                check=UNSATISFIABLE,
                message="the build has no package index (--no-index in the model's requirements "
                "and no build.pip_find_links): pip cannot install the model's requirements",
            )
        )
        return
    only_pypi = all(s.label == PYPI_LABEL for s in report.sources)
    lookups = [w for w in wanted if not (w.local_label and only_pypi)]
    pages = _lookup_all(lookups, report.sources, settings, client)
    unverified: dict[int, list[str]] = {}
    for want in wanted:
        if want.local_label and only_pypi:
            # PyPI refuses uploads with local version labels: no request can find one there.
            report.findings.append(_local_label_finding(want, report.sources))
            continue
        _judge(want, report, pages, unverified)
    for index, names in unverified.items():
        source = report.sources[index]
        report.findings.append(
            Finding(
                check=INDEX_UNREACHABLE,
                message=f"package index {source.label} could not be reached ({source.error}); "
                f"{len(names)} requirement(s) not verified ({', '.join(sorted(names)[:8])}"
                f"{', ...' if len(names) > 8 else ''}): make the index reachable from ztml, "
                "or the image build may fail installing them",
            )
        )
    if unverified:
        report.status = "incomplete"


def _lookup_all(
    wanted: list[_Wanted],
    sources: list[IndexSource],
    settings: RequirementsCheckConfig,
    client: IndexClient | None,
) -> dict[tuple[int, str], ProjectPage]:
    """Every (source, project) page, in parallel, within the check's time budget; a page that
    did not arrive in time counts as unreachable."""
    client = client or IndexClient(settings.request_timeout_seconds)
    keys = sorted({(i, w.project) for w in wanted for i in range(len(sources))})
    pages: dict[tuple[int, str], ProjectPage] = {}
    if not keys:
        return pages
    pool = ThreadPoolExecutor(
        max_workers=min(settings.max_parallel_requests, len(keys)),
        thread_name_prefix="ztml-index",
    )
    futures: dict[Future[ProjectPage], tuple[int, str]] = {
        pool.submit(client.project, sources[i], project): (i, project) for i, project in keys
    }
    try:
        wait(futures, timeout=settings.timeout_seconds)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    for future, key in futures.items():
        if future.done() and not future.cancelled() and future.exception() is None:
            pages[key] = future.result()
        else:
            pages[key] = ProjectPage(
                state="unreachable",
                error=f"no answer within the check's {settings.timeout_seconds:g} s",
            )
    for (index, _project), page in pages.items():
        source = sources[index]
        if page.state == "unreachable":
            source.state = "unreachable"
            source.error = source.error or page.error
        elif source.state == "unused":
            source.state = "reachable"
    return pages


def _judge(
    want: _Wanted,
    report: RequirementsReport,
    pages: dict[tuple[int, str], ProjectPage],
    unverified: dict[int, list[str]],
) -> None:
    specifier = SpecifierSet(want.specifier)
    listed: list[str] = []
    unreachable: list[int] = []
    for index in range(len(report.sources)):
        page = pages.get((index, want.project))
        if page is None or page.state == "unreachable":
            unreachable.append(index)
            continue
        for version in page.versions:
            try:
                if specifier.contains(Version(version), prereleases=True):
                    report.verified.append(want.line)
                    return
            except InvalidVersion:
                continue
        if page.state == "found":
            listed.extend(page.versions)
    if unreachable:
        for index in unreachable:
            unverified.setdefault(index, []).append(want.line)
        return
    report.findings.append(_unsatisfiable(want, report.sources, listed))


def _names(sources: list[IndexSource]) -> str:
    labels = ", ".join(s.label for s in sources)
    return f"index ({labels})" if len(sources) == 1 else f"indexes ({labels})"


def _installed_as(want: _Wanted) -> str:
    return f" (installed as {want.project})" if want.project != want.name else ""


def _local_label_finding(want: _Wanted, sources: list[IndexSource]) -> Finding:
    public = want.specifier.split("+", 1)[0]
    serves = "does" if len(sources) == 1 else "do"
    return Finding(
        check=UNSATISFIABLE,
        requirement=want.line,
        package=want.name,
        message=f"requirement {want.line} has a local version label (+{want.local_label}) "
        f"that the configured {_names(sources)} {serves} not serve: add an index that has it "
        f"to {EXTRA_INDEX_KEY} (ztml.yaml), or log the model with "
        f"pip_requirements=['{want.name}{public}']",
    )


def _unsatisfiable(want: _Wanted, sources: list[IndexSource], listed: list[str]) -> Finding:
    if want.local_label:
        return _local_label_finding(want, sources)
    if not listed:
        message = (
            f"requirement {want.line}{_installed_as(want)}: no package {want.project} on the "
            f"configured {_names(sources)}: correct the name in the model's requirements, or "
            f"add an index that serves it to {EXTRA_INDEX_KEY} (ztml.yaml)"
        )
    else:
        newest = sorted(set(listed), key=version_key)[-1]
        message = (
            f"requirement {want.line}{_installed_as(want)}: the configured {_names(sources)} "
            f"{'lists' if len(sources) == 1 else 'list'} {want.project} but no version "
            f"matching {want.specifier} (newest: {newest}): "
            f"log the model with a version that exists (pip_requirements=['{want.name}=="
            f"{newest}']), or add an index that serves it to {EXTRA_INDEX_KEY} (ztml.yaml)"
        )
    return Finding(check=UNSATISFIABLE, requirement=want.line, package=want.name, message=message)


# --------------------------------------------------------------------------- build output

_NO_DISTRIBUTION = re.compile(r"No matching distribution found for (?P<requirement>\S+)")


def install_failure_hint(output: str) -> str | None:
    """A fix for pip's "No matching distribution" in build output, or None for other errors."""
    match = _NO_DISTRIBUTION.search(output)
    if not match:
        return None
    requirement = match["requirement"]
    if "+" in requirement:
        public = requirement.split("+", 1)[0]
        return (
            f"hint: {requirement} has a local version label that the build's indexes do not "
            f"serve: add an index that has it to {EXTRA_INDEX_KEY}, or log the model with "
            f"pip_requirements=['{public}']"
        )
    return (
        f"hint: no index the build uses has {requirement}: correct the model's requirements or "
        f"add an index that serves it to {EXTRA_INDEX_KEY} (`ztml plan` checks requirements "
        "before a build)"
    )


def _logical_lines(text: str) -> list[str]:
    """requirements.txt lines with comments, blanks and line continuations resolved."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw if not raw.lstrip().startswith("#") else ""
        line = re.split(r"\s+#", line, maxsplit=1)[0].rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line:
            lines.append(line)
    if pending.strip():
        lines.append(pending.strip())
    return lines
