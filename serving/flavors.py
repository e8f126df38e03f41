"""Load the PyTorch and scikit-learn flavors directly, without MLflow's pyfunc machinery.

Why: `mlflow.pyfunc.load_model` imports MLflow (1.5-4.5 s, ~100 MB) to end up calling the same
one or two library functions done here, and skops' import walks every scikit-learn module to
list its estimators, which imports torch through scikit-learn's array-API shim (~2 s, ~100 MB)
and pytest through the test packages. Both are most of a cold start.

Contract: each loader returns the loaded object, or None when the model is outside what it
handles *exactly* as MLflow would (then the caller uses MLflow's own loader, which applies its
checks and errors). Handled directly, mirroring `mlflow.pytorch._load_model` and
`mlflow.sklearn._load_model_from_local_file` of MLflow 3.17:

* PyTorch saved with `torch.export` (`data/model.pt2`): `serving.exported` runs graphs of plain
  ATen calls without torch.export's import cost; any other archive goes through
  `torch.export.load(...).module()`, as in MLflow.
* scikit-learn saved with skops (`skops.io.load(path, trusted=<the flavor's trusted types>)`,
  skops' own type check kept), pickle or cloudpickle.

Left to MLflow: pickled PyTorch modules (MLflow's pickle module), flavors with `code` paths,
and every model when `MLFLOW_ALLOW_PICKLE_DESERIALIZATION` is false: MLflow then refuses the
formats it must refuse and verifies that a `.pt2` archive is pickle-free before loading it.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import pkgutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("serving.flavors")

_TRUE = ("true", "1")
_FALSE = ("false", "0")


def pickle_allowed() -> bool:
    """`MLFLOW_ALLOW_PICKLE_DESERIALIZATION` as MLflow reads it (default true in MLflow 3.17).

    Any value MLflow would not accept as a boolean counts as false here: MLflow's loader then
    runs and reports the bad value itself.
    """
    value = os.environ.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION")
    return value is None or value.strip().lower() in _TRUE


def load_torch(model_dir: Path, flavor: dict[str, Any]) -> Any | None:
    """The `torch.export`-ed module of a pytorch-flavor model, or None (see module docstring)."""
    if flavor.get("code") or not pickle_allowed():
        return None
    data = model_dir / str(flavor.get("model_data") or "data")
    archive = data / "model.pt2"
    if not data.is_dir() or (data / "model.pth").exists() or not archive.is_file():
        return None
    from serving import exported

    try:
        return exported.load(archive)
    except exported.Unsupported as exc:
        log.info("torch.export.load for this archive (%s)", exc)
    import torch

    return torch.export.load(str(archive)).module()


def load_sklearn(model_dir: Path, flavor: dict[str, Any], pyfunc: dict[str, Any]) -> Any | None:
    """The fitted estimator of a sklearn-flavor model, or None (see module docstring)."""
    if flavor.get("code") or pyfunc.get("code") or not pickle_allowed():
        return None
    fmt = flavor.get("serialization_format", "pickle")
    name = pyfunc.get("model_path") or flavor.get("pickled_model")
    if not name or fmt not in ("skops", "pickle", "cloudpickle"):
        return None
    file = model_dir / str(name)
    if not file.is_file():
        return None
    if fmt == "skops":
        skops_io = import_skops_io()
        return skops_io.load(str(file), trusted=flavor.get("skops_trusted_types"))
    if fmt == "cloudpickle":
        import cloudpickle

        with open(file, "rb") as fh:
            return cloudpickle.load(fh)
    import pickle

    with open(file, "rb") as fh:
        return pickle.load(fh)  # noqa: S301 - MLflow loads it so too, behind the same flag


def import_skops_io() -> Any:
    """`import skops.io`, with scikit-learn's estimator discovery not descending into packages
    it ignores anyway (tests, externals, private `._` packages).

    skops builds its default trusted types at import from `sklearn.utils.all_estimators()`,
    which walks every sklearn package with `pkgutil.walk_packages`; the walk imports each
    package to list its children, including `sklearn.externals.array_api_compat.torch` (all
    of torch) and the `tests` packages (pytest), although `all_estimators` then skips every
    module under them. Pruning the walk at those packages yields the same modules, so the same
    trusted types (tests/serving/test_serving_fastload.py compares the two lists).
    """
    if "skops.io" in sys.modules:
        return sys.modules["skops.io"]
    with _pruned_estimator_walk():
        return importlib.import_module("skops.io")


@contextlib.contextmanager
def _pruned_estimator_walk() -> Iterator[None]:
    """Within the block, `sklearn.utils.discovery` walks packages through `_PrunedWalk`."""
    try:
        discovery = importlib.import_module("sklearn.utils.discovery")
    except ImportError:
        yield
        return
    if getattr(discovery, "pkgutil", None) is not pkgutil or not hasattr(
        discovery, "_MODULE_TO_IGNORE"
    ):  # another scikit-learn layout: leave its discovery alone
        yield
        return
    discovery.pkgutil = _PrunedWalk(discovery._MODULE_TO_IGNORE)
    try:
        yield
    finally:
        discovery.pkgutil = pkgutil


class _PrunedWalk:
    """Stands in for the `pkgutil` module inside `sklearn.utils.discovery` only."""

    def __init__(self, ignore: set[str]) -> None:
        self.ignore = frozenset(ignore)

    def skipped(self, name: str) -> bool:
        """`all_estimators`' own skip rule; it holds for every module below a skipped one."""
        return any(part in self.ignore for part in name.split(".")) or "._" in name

    def walk_packages(
        self, path: list[str] | None = None, prefix: str = "", onerror: Any = None
    ) -> Iterator[pkgutil.ModuleInfo]:
        for info in pkgutil.iter_modules(path, prefix):
            yield info
            if not info.ispkg or self.skipped(info.name):
                continue
            try:
                module = importlib.import_module(info.name)
            except ImportError:
                if onerror is not None:
                    onerror(info.name)
                continue
            except Exception:
                if onerror is None:
                    raise
                onerror(info.name)
                continue
            sub = getattr(module, "__path__", None)
            if sub:
                yield from self.walk_packages(sub, info.name + ".", onerror)

    def __getattr__(self, name: str) -> Any:
        return getattr(pkgutil, name)
