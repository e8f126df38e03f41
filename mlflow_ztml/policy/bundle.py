"""Policy bundles: the Rego modules and the data document an engine evaluates.

Where things come from:
- Rego modules: every `*.rego` under the policy directory (`policy.policy_dir`, else the
  policies shipped inside the package as `mlflow_ztml.default_policies`). `*_test.rego`
  files are tests: `run_policy_tests` loads them, engines never do.
- Data: the policy directory's `data.json`, shaped `{"ztml": {"environments": {PROFILE: {...}}}}`.
  The built-in profiles are `local`, `staging` and `production`. Because the file sits at
  the directory's root with that shape, the directory is also a valid OPA bundle
  (`opa run -s policies/`, `opa test policies/`) and loads at the same data paths.

How the data for a Settings is built (`build_data`), for each configured environment NAME:
1. start from the profile `settings.policy_profile(NAME)` of data.json (an unknown profile is
   a PolicyError: no environment is silently judged by nothing),
2. deep-merge `settings.environments[NAME].policy` over it (ztml.yaml:
   `environments: {production: {policy: {governance: {min_accuracy: 0.9}}}}`),
3. deep-merge each of `settings.policy.data_files` in order over the whole `ztml` document.
   A data file is JSON or YAML shaped `{"environments": {NAME: {...}}}` (or the same under a
   top-level `ztml:` key), so it can tighten one environment or add another.
Other top-level keys of data.json's `ztml` document are kept as they are.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mlflow_ztml.config import deep_merge
from mlflow_ztml.errors import PolicyError

if TYPE_CHECKING:
    from mlflow_ztml.config import Settings

DATA_FILE = "data.json"
TEST_SUFFIX = "_test.rego"
DEFAULT_POLICY_PACKAGE = "mlflow_ztml.default_policies"


@dataclass(frozen=True)
class PolicyBundle:
    """What an engine loads: `modules` (module id -> Rego source) and the `data` document.

    Module ids are paths relative to the policy directory (`governance/governance.rego`),
    so error messages point at the file to fix.
    """

    modules: dict[str, str]
    data: dict[str, Any]
    source: Path | None = None


def default_policy_dir() -> Path:
    """The policies shipped with ztml: the installed package, else the source checkout's."""
    try:
        located = Path(str(resources.files(DEFAULT_POLICY_PACKAGE)))
    except ModuleNotFoundError:
        located = None
    if located is not None and (located / DATA_FILE).is_file():
        return located
    return Path(__file__).resolve().parents[2] / "policies"


def read_modules(policy_dir: Path, *, tests: bool = False) -> dict[str, str]:
    """Every Rego module under `policy_dir` (tests only when `tests`), by relative path."""
    if not policy_dir.is_dir():
        raise PolicyError(f"policy directory {policy_dir} does not exist")
    modules: dict[str, str] = {}
    for path in sorted(policy_dir.rglob("*.rego")):
        if path.name.endswith(TEST_SUFFIX) != tests:
            continue
        try:
            modules[path.relative_to(policy_dir).as_posix()] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError(f"cannot read policy {path}: {exc}") from exc
    return modules


def read_default_data(policy_dir: Path) -> dict[str, Any]:
    """The `ztml` document of `policy_dir/data.json`, or of the shipped policies' data.json."""
    path = policy_dir / DATA_FILE
    if not path.is_file():
        path = default_policy_dir() / DATA_FILE
    document = _read_document(path)
    ztml = document.get("ztml") if isinstance(document, dict) else None
    if not isinstance(ztml, dict) or not isinstance(ztml.get("environments"), dict):
        raise PolicyError(f"{path} must be shaped {{'ztml': {{'environments': {{...}}}}}}")
    return ztml


def read_data_file(path: Path) -> dict[str, Any]:
    """A user data file as a `ztml` document: `{"environments": ...}` or `{"ztml": {...}}`."""
    document = _read_document(path)
    if not isinstance(document, dict):
        raise PolicyError(f"policy data file {path} must hold a mapping")
    if "ztml" in document:
        document = document["ztml"]
    if not isinstance(document, dict) or not isinstance(document.get("environments", {}), dict):
        raise PolicyError(f"policy data file {path}: 'environments' must be a mapping")
    return document


def build_data(settings: Settings, policy_dir: Path | None = None) -> dict[str, Any]:
    """The full data document (`{"ztml": {...}}`) for every environment `settings` declares."""
    policy_dir = policy_dir or settings.policy.policy_dir or default_policy_dir()
    defaults = read_default_data(Path(policy_dir))
    profiles: dict[str, Any] = defaults["environments"]
    ztml = {key: copy.deepcopy(value) for key, value in defaults.items() if key != "environments"}
    environments: dict[str, Any] = {}
    for name, environment in settings.environments.items():
        profile = settings.policy_profile(name)
        if profile not in profiles:
            known = ", ".join(sorted(profiles))
            raise PolicyError(
                f"environment {name} uses policy profile {profile!r}, which the policy data "
                f"does not define (known profiles: {known})"
            )
        environments[name] = deep_merge(copy.deepcopy(profiles[profile]), environment.policy)
    ztml["environments"] = environments
    for path in settings.policy.data_files:
        ztml = deep_merge(ztml, read_data_file(Path(path)))
    return {"ztml": ztml}


def load_bundle(settings: Settings | None = None, policy_dir: Path | None = None) -> PolicyBundle:
    """The modules and data an engine needs for `settings` (built-in defaults when None).

    Without settings, the data is data.json's profiles as they are (one environment per
    profile), which is what Rego tests and `opa run -s policies/` see too.
    """
    if policy_dir is None and settings is not None:
        policy_dir = settings.policy.policy_dir
    policy_dir = Path(policy_dir) if policy_dir is not None else default_policy_dir()
    modules = read_modules(policy_dir)
    if not modules:
        raise PolicyError(f"policy directory {policy_dir} holds no .rego policies")
    if settings is None:
        data = {"ztml": read_default_data(policy_dir)}
    else:
        data = build_data(settings, policy_dir)
    return PolicyBundle(modules=modules, data=data, source=policy_dir)


def _read_document(path: Path) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"cannot read policy data {path}: {exc}") from exc
    try:
        if Path(path).suffix.lower() == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise PolicyError(f"policy data {path} is not valid JSON/YAML: {exc}") from exc
