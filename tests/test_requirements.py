"""A model that cannot run says why before any build: requirements the build's package indexes
cannot serve, packages the flavor loads with that the target lacks, indexes that do not answer.

The indexes here are real HTTP servers speaking the simple repository API (PEP 503 HTML and
PEP 691 JSON) on loopback, holding file names only: the check reads listings, never downloads.
The models are real MLflow models in the session's `mlflow server`, judged by the real gate.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from mlflow_ztml import gate
from mlflow_ztml import requirements as req
from mlflow_ztml.cli import main
from mlflow_ztml.config import BuildConfig, FlavorPackage, RequirementsCheckConfig, Settings
from mlflow_ztml.package_index import IndexClient, build_sources
from tests.models import GOOD_METRICS, SKLEARN_REQUIREMENTS, register_sklearn

CATALOG = {
    "torch": [
        "torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl",
        "torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl",
    ],
    "mlflow-skinny": ["mlflow_skinny-3.17.2-py3-none-any.whl", "mlflow_skinny-3.17.2.tar.gz"],
    "scikit-learn": ["scikit_learn-1.8.0.tar.gz", "scikit_learn-1.9.1.tar.gz"],
    "numpy": ["numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl"],
    "pandas": ["pandas-3.1.1-cp311-cp311-manylinux_2_28_x86_64.whl"],
    "scipy": ["scipy-1.17.1-cp311-cp311-manylinux_2_28_x86_64.whl"],
    "skops": ["skops-0.16.0-py3-none-any.whl"],
    "cloudpickle": ["cloudpickle-3.1.3-py3-none-any.whl"],
}
SKOPS_FLAVOR = {"sklearn": {"serialization_format": "skops"}, "python_function": {}}
LOCAL_LABEL_FIX = (
    "requirement torch==2.13.0+cpu has a local version label (+cpu) that the configured index "
    "(PyPI) does not serve: add an index that has it to build.pip_extra_index_url (ztml.yaml), "
    "or log the model with pip_requirements=['torch==2.13.0']"
)


class _Index(BaseHTTPRequestHandler):
    """`/simple/<project>/` as HTML, as PEP 691 JSON when asked for it (`/json/...`), or after
    a delay (`/slow/...`); every request is recorded with its Authorization header."""

    catalog: dict[str, list[str]] = CATALOG
    requests: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:
        type(self).requests.append((self.path, self.headers.get("Authorization")))
        parts = [p for p in self.path.split("/") if p]
        if parts and parts[0] == "slow":
            time.sleep(3)
            parts = parts[1:]
        as_json = bool(parts) and parts[0] == "json"
        if as_json:
            parts = parts[1:]
        if len(parts) != 2 or parts[0] != "simple" or parts[1] not in self.catalog:
            self.send_response(404)
            self.end_headers()
            return
        files = self.catalog[parts[1]]
        if as_json and "application/vnd.pypi.simple.v1+json" in self.headers.get("Accept", ""):
            body = json.dumps(
                {
                    "meta": {"api-version": "1.1"},
                    "name": parts[1],
                    "files": [{"filename": f, "url": f"../../files/{f}"} for f in files],
                }
            ).encode()
            kind = "application/vnd.pypi.simple.v1+json"
        else:
            links = "".join(f'<a href="../../files/{f}#sha256=00">{f}</a><br/>\n' for f in files)
            body = f"<!DOCTYPE html><html><body>{links}</body></html>".encode()
            kind = "text/html"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def index() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def settings(**build: Any) -> Settings:
    return Settings(build=BuildConfig(**build))


def needs(requirements: list[str] | None, flavors: dict[str, Any] | None = None) -> req.ModelNeeds:
    text = None if requirements is None else "\n".join(requirements) + "\n"
    return req.ModelNeeds.parse(flavors if flavors is not None else SKOPS_FLAVOR, text)


def checks(report: req.RequirementsReport) -> list[str]:
    return [finding.check for finding in report.findings]


# --------------------------------------------------------------------------- the index check


def test_a_local_version_label_on_pypi_is_named_with_its_fix_without_asking_pypi() -> None:
    report = req.check(needs(["torch==2.13.0+cpu", "skops==0.16.0"]), "docker", settings())
    (finding,) = [f for f in report.findings if f.requirement == "torch==2.13.0+cpu"]
    assert finding.check == req.UNSATISFIABLE
    assert finding.message == LOCAL_LABEL_FIX
    (pypi,) = report.sources
    assert pypi.label == "PyPI"


def test_requirements_are_looked_up_on_the_configured_index(index: str) -> None:
    config = settings(pip_index_url=f"{index}/simple")
    report = req.check(
        needs(
            [
                *SKLEARN_REQUIREMENTS[1:],
                "torch==2.13.0+cpu",
                "torch==2.13.0+cu121",
                "scikit-learn==9.9.9",
                "leftpad-ml==0.1",
            ]
        ),
        "docker",
        config,
    )
    messages = {f.requirement: f.message for f in report.findings}
    assert set(report.verified) == {*SKLEARN_REQUIREMENTS[1:], "torch==2.13.0+cpu"}
    assert set(messages) == {"torch==2.13.0+cu121", "scikit-learn==9.9.9", "leftpad-ml==0.1"}
    assert messages["torch==2.13.0+cu121"] == (
        f"requirement torch==2.13.0+cu121 has a local version label (+cu121) that the configured "
        f"index ({index}/simple) does not serve: add an index that has it to "
        "build.pip_extra_index_url (ztml.yaml), or log the model with "
        "pip_requirements=['torch==2.13.0']"
    )
    assert "no version matching ==9.9.9 (newest: 1.9.1)" in messages["scikit-learn==9.9.9"]
    assert "pip_requirements=['scikit-learn==1.9.1']" in messages["scikit-learn==9.9.9"]
    assert "no package leftpad-ml on the configured index" in messages["leftpad-ml==0.1"]
    assert "build.pip_extra_index_url" in messages["leftpad-ml==0.1"]
    assert report.status == "checked"
    assert all(f.check == req.UNSATISFIABLE for f in report.findings)


def test_pep_691_json_listings_and_extra_indexes_are_read(index: str) -> None:
    config = settings(pip_index_url=f"{index}/json/simple", pip_extra_index_url=f"{index}/simple")
    report = req.check(needs(["torch==2.13.0+cpu", "skops==0.16.0"]), "kubernetes", config)
    assert report.findings == []
    assert sorted(report.verified) == ["skops==0.16.0", "torch==2.13.0+cpu"]
    assert [s.state for s in report.sources] == ["reachable", "reachable"]


def test_mlflow_is_checked_as_the_mlflow_skinny_the_image_installs(index: str) -> None:
    config = settings(pip_index_url=f"{index}/simple")
    ok = req.check(needs(["mlflow==3.17.2", "skops==0.16.0"]), "docker", config)
    assert ok.findings == [] and "mlflow==3.17.2" in ok.verified
    missing = req.check(needs(["mlflow==3.99.0", "skops==0.16.0"]), "docker", config)
    (finding,) = missing.findings
    assert "(installed as mlflow-skinny)" in finding.message


def test_an_index_option_inside_requirements_txt_counts(index: str) -> None:
    text = f"--extra-index-url {index}/simple\ntorch==2.13.0+cpu\nskops==0.16.0\n"
    report = req.check(req.ModelNeeds.parse(SKOPS_FLAVOR, text), "docker", settings())
    assert "torch==2.13.0+cpu" in report.verified, report.findings


def test_an_unreachable_index_is_a_finding_never_ok(index: str) -> None:
    from tests.mlflow_server import free_port

    dead = f"http://127.0.0.1:{free_port()}/simple"
    report = req.check(
        needs(["skops==0.16.0", "leftpad-ml==0.1"]),
        "docker",
        settings(pip_index_url=f"{index}/simple", pip_extra_index_url=dead),
    )
    assert report.verified == ["skops==0.16.0"]  # found on the reachable index
    (finding,) = report.findings
    assert finding.check == req.INDEX_UNREACHABLE
    assert f"package index {dead} could not be reached (connection failed" in finding.message
    assert "1 requirement(s) not verified (leftpad-ml==0.1)" in finding.message
    assert report.status == "incomplete"


def test_the_check_is_bounded_in_time(index: str) -> None:
    config = settings(
        pip_index_url=f"{index}/slow/simple",
        requirements_check=RequirementsCheckConfig(timeout_seconds=1, request_timeout_seconds=10),
    )
    started = time.monotonic()
    report = req.check(needs(["skops==0.16.0", "numpy==2.4.6"]), "docker", config)
    assert time.monotonic() - started < 2.5
    (finding,) = report.findings
    assert finding.check == req.INDEX_UNREACHABLE
    assert "no answer within the check's 1 s" in finding.message


def test_lookups_are_cached_for_one_run(index: str) -> None:
    config = settings(pip_index_url=f"{index}/simple")
    client = IndexClient()
    _Index.requests.clear()
    for _ in range(2):
        req.check(needs(["skops==0.16.0", "numpy==2.4.6"]), "docker", config, client)
    assert sorted(path for path, _ in _Index.requests) == ["/simple/numpy/", "/simple/skops/"]
    req.check(needs(["skops==0.16.0"]), "docker", config)  # a new run asks again
    assert len(_Index.requests) == 3


def test_index_credentials_are_used_but_never_reported(index: str) -> None:
    url = index.replace("http://", "http://ci:s3cr3t-token@") + "/simple"
    _Index.requests.clear()
    report = req.check(needs(["skops==0.16.0"]), "docker", settings(pip_index_url=url))
    assert report.verified == ["skops==0.16.0"]
    assert _Index.requests[0][1] is not None  # requests sent the URL's user info as Basic auth
    assert "s3cr3t-token" not in json.dumps(report.policy_input())
    assert "s3cr3t-token" not in json.dumps(
        [s.model_dump() for s in build_sources(BuildConfig(pip_index_url=url), [])]
    )


# --------------------------------------------------------------------------- flavors


def test_a_flavor_package_missing_from_the_requirements_is_named(index: str) -> None:
    config = settings(pip_index_url=f"{index}/simple")
    report = req.check(needs(["scikit-learn==1.9.1", "numpy==2.4.6"]), "docker", config)
    (finding,) = report.findings
    assert finding.check == req.FLAVOR_PACKAGE and finding.package == "skops"
    assert finding.message.startswith(
        "model flavor sklearn (serialization_format skops) loads with skops, which the model's "
        "requirements do not include"
    )
    assert "add skops to the model's requirements" in finding.message
    pickled = req.check(
        needs(["scikit-learn==1.9.1"], {"sklearn": {"serialization_format": "pickle"}}),
        "docker",
        config,
    )
    assert pickled.findings == []


def test_what_the_serving_image_installs_anyway_counts() -> None:
    # mlflow.pytorch's pickle module is cloudpickle, which mlflow-skinny (in every image)
    # depends on: no finding although the model's requirements do not list it.
    flavors = {
        "pytorch": {},
        "python_function": {"pickle_module_name": "mlflow.pytorch.pickle_module"},
    }
    rules = [
        rule for rule, _ in req.flavor_needs(flavors, RequirementsCheckConfig().flavor_packages)
    ]
    assert {r.package for r in rules} == {"torch", "cloudpickle"}
    config = settings(requirements_check=RequirementsCheckConfig(enabled=True))
    report = req.check(needs([], flavors), "docker", config)
    assert [f.package for f in report.findings] == ["torch"]


def test_process_runtime_checks_what_this_python_can_import() -> None:
    assert req.check(needs(["scikit-learn==1.9.1"]), "process", settings()).findings == []
    rules = RequirementsCheckConfig(
        flavor_packages=[
            FlavorPackage(flavor="sklearn", package="ztml-absent-pkg", module="ztml_absent_mod")
        ]
    )
    report = req.check(needs(["torch==2.13.0+cpu"]), "process", settings(requirements_check=rules))
    (finding,) = report.findings  # the process runtime installs nothing: no index finding
    assert finding.check == req.FLAVOR_PACKAGE
    assert "loads with ztml-absent-pkg (import ztml_absent_mod)" in finding.message
    assert "pip install ztml-absent-pkg" in finding.message and report.target == "local"


def test_a_disabled_or_impossible_check_is_stated() -> None:
    off = req.check(needs(["x==1"]), "docker", settings(requirements_check={"enabled": False}))
    assert (off.status, checks(off)) == ("disabled", [req.UNCHECKED])
    none = req.check(needs(None), "docker", settings())
    assert "has no requirements.txt" in none.findings[0].message


def test_pip_failures_in_build_output_get_the_fix() -> None:
    output = "ERROR: No matching distribution found for torch==2.13.0+cpu\n"
    hint = req.install_failure_hint(output)
    assert hint is not None and "pip_requirements=['torch==2.13.0']" in hint
    assert req.install_failure_hint("ERROR: something else") is None


# --------------------------------------------------------------------------- through the gate


def _gate(uri: str, env: str = "local") -> dict[str, Any]:
    result = CliRunner().invoke(main, ["gate", uri, "--env", env, "--format", "json"])
    assert result.exit_code in (0, 1), result.output
    payload = json.loads(result.output)
    assert payload["allow"] is (result.exit_code == 0)
    return payload


def _docker_config(**build: Any) -> None:
    config = {"environments": {"local": {"runtime": "docker"}}, "build": build}
    Path("ztml.yaml").write_text(yaml.safe_dump(config))  # ztml_env chdir'ed to a tmp dir


def test_gate_denies_a_local_version_label_with_the_fix(ztml_env) -> None:
    _docker_config()
    version = register_sklearn(
        ztml_env.url,
        "req-cpu-label",
        metrics=GOOD_METRICS,
        requirements=[*SKLEARN_REQUIREMENTS, "torch==2.13.0+cpu"],
    )
    payload = _gate(f"models:/req-cpu-label/{version}")
    assert LOCAL_LABEL_FIX in payload["deny"]


def test_gate_denies_a_skops_model_without_skops_and_passes_a_good_one(ztml_env, index) -> None:
    _docker_config(pip_index_url=f"{index}/simple")  # every version the models pin is there
    without = [r for r in SKLEARN_REQUIREMENTS if not r.startswith("skops")]
    bad = register_sklearn(ztml_env.url, "req-no-skops", metrics=GOOD_METRICS, requirements=without)
    payload = _gate(f"models:/req-no-skops/{bad}")
    (message,) = [m for m in payload["deny"] if "skops" in m]
    assert message.startswith("model flavor sklearn (serialization_format skops) loads with skops")

    good = register_sklearn(ztml_env.url, "req-good", metrics=GOOD_METRICS)
    payload = _gate(f"models:/req-good/{good}")
    assert payload["allow"] is True, payload["deny"]
    assert not [w for w in payload["warn"] if "requirement" in w]


def test_gate_on_the_process_runtime_checks_local_imports(ztml_env) -> None:
    rule = {"flavor": "sklearn", "package": "ztml-absent-pkg", "module": "ztml_absent_mod"}
    config = {"build": {"requirements_check": {"flavor_packages": [rule]}}}
    Path("ztml.yaml").write_text(yaml.safe_dump(config))
    version = register_sklearn(ztml_env.url, "req-process", metrics=GOOD_METRICS)
    payload = _gate(f"models:/req-process/{version}")
    assert any("(import ztml_absent_mod)" in m for m in payload["deny"]), payload["deny"]


def test_the_policy_input_carries_the_report() -> None:
    from tests.policy.manifests import manifest

    report = req.check(needs(["torch==2.13.0+cpu"], flavors={}), "docker", settings())
    document = gate.policy_input(manifest(), "local", report)
    assert document["requirements"]["findings"][0]["message"] == LOCAL_LABEL_FIX
    assert "requirements" not in gate.policy_input(manifest(), "local")
