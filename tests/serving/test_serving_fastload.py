"""Cold start: the MLmodel file, PyTorch and scikit-learn models load without MLflow.

Real models (the session's `model_dirs`, saved by MLflow 3.17.2) and real libraries; each
server-side load runs in a fresh interpreter so "nothing imported until needed" is observable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from serving import mlmodel
from serving.signature import InputSchema

REPO = Path(__file__).resolve().parents[2]

_LOAD = """
import json, sys
from serving.config import Settings
from serving.model import load
from serving import v1
m = load(Settings(model_uri=sys.argv[1]))
inp, params = v1.decode(m.input_example, m.schema)
out = m.predictor.predict(inp, params)
print(json.dumps({
    "predictor": type(m.predictor).__name__,
    "out": getattr(out, "tolist", lambda: out)(),
    "imported": sorted(set(sys.modules) & {"mlflow", "torch", "torch._dynamo", "sympy"}),
}))
"""


def _load_in_fresh_process(model: Path, **env: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _LOAD, str(model)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", ["sk", "torch", "echo", "gate", "typed", "binary"])
def test_mlmodel_read_matches_mlflow(model_dirs: dict[str, Path], name: str) -> None:
    """Signature, schemas, flavors and input example info read without MLflow = MLflow's."""
    from mlflow.models import Model

    ours = mlmodel.read(model_dirs[name])
    theirs = Model.load(str(model_dirs[name]))
    sig = theirs.signature
    assert ours.input_schema() == InputSchema.from_mlflow(sig.inputs, sig.params)
    assert ours.output_schema() == InputSchema.from_mlflow(sig.outputs)
    raw = sig.to_dict()
    assert ours.signature == {k: json.loads(v) if isinstance(v, str) else v for k, v in raw.items()}
    assert ours.flavors == theirs.flavors
    assert ours.saved_input_example_info == theirs.saved_input_example_info
    assert ours.run_id == theirs.run_id


def test_mlmodel_read_refuses_a_broken_file(tmp_path: Path) -> None:
    from serving.errors import ModelLoadError

    (tmp_path / "MLmodel").write_text("- just\n- a list\n")
    with pytest.raises(ModelLoadError, match="not a YAML mapping"):
        mlmodel.read(tmp_path)
    with pytest.raises(ModelLoadError, match="cannot read"):
        mlmodel.read(tmp_path / "missing")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "predictor", "absent"),
    [
        ("sk", "SklearnPredictor", {"mlflow", "torch"}),
        ("torch", "TorchPredictor", {"mlflow", "torch._dynamo", "sympy"}),
    ],
)
def test_direct_flavor_load_skips_mlflow(
    model_dirs: dict[str, Path], name: str, predictor: str, absent: set[str]
) -> None:
    """The model loads and answers its own example as MLflow's pyfunc does, and neither MLflow
    nor (for scikit-learn) torch nor (for the exported MLP) torch.export's compiler stack is
    imported on the way."""
    import mlflow.pyfunc
    import pandas as pd

    got = _load_in_fresh_process(model_dirs[name])
    assert got["predictor"] == predictor
    assert not absent & set(got["imported"]), got["imported"]
    example = json.loads((model_dirs[name] / "serving_input_example.json").read_text())
    if name == "sk":
        split = example["dataframe_split"]
        data = pd.DataFrame(split["data"], columns=split["columns"])
    else:
        data = np.asarray(example["inputs"], dtype=np.float32)
    want = mlflow.pyfunc.load_model(str(model_dirs[name])).predict(data)
    assert np.allclose(np.asarray(got["out"]), np.asarray(want), atol=1e-6)


@pytest.mark.slow
def test_pickle_flag_off_leaves_the_load_to_mlflow(model_dirs: dict[str, Path]) -> None:
    """MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false: MLflow's loader decides, with its checks (it
    verifies the .pt2 archive is pickle-free, and refuses the skops file)."""
    got = _load_in_fresh_process(model_dirs["torch"], MLFLOW_ALLOW_PICKLE_DESERIALIZATION="false")
    assert got["predictor"] == "TorchPredictor" and "mlflow" in got["imported"]
    proc = subprocess.run(
        [sys.executable, "-c", _LOAD, str(model_dirs["sk"])],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "0"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode != 0
    assert "MLFLOW_ALLOW_PICKLE_DESERIALIZATION" in proc.stderr


@pytest.mark.slow
def test_pruned_estimator_walk_keeps_skops_trusted_types() -> None:
    """skops' default trusted estimator types are the same with the pruned walk, which
    does not import torch."""
    code = (
        "import sys\n"
        "from serving.flavors import import_skops_io\n"
        "import_skops_io()\n"
        "from skops.io import _trusted_types as tt\n"
        "assert 'torch' not in sys.modules, 'the pruned walk imported torch'\n"
        "from sklearn.utils import all_estimators\n"
        "full = sorted(tt.get_type_name(c) for _, c in all_estimators()\n"
        "              if tt.get_type_name(c).startswith('sklearn.'))\n"
        "assert sorted(tt.SKLEARN_ESTIMATOR_TYPE_NAMES) == full, 'trusted types differ'\n"
        "assert len(full) > 100\n"
        "import sklearn.utils.discovery as d, pkgutil\n"
        "assert d.pkgutil is pkgutil, 'discovery left patched'\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


class _Conv(torch.nn.Module):
    """Conv1d over the row seen as a 1-channel signal, then a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(1, 4, 3)
        self.head = torch.nn.Linear(4 * 6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.head(torch.relu(self.conv(x.unsqueeze(1))).flatten(1)), dim=-1)


class _Reshape(torch.nn.Module):
    """Reshapes by the batch size: the graph carries symbolic sizes (not interpreted)."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.reshape(x.shape[0], 2, 4).reshape(x.shape[0], 8))


def _export(net: torch.nn.Module, path: Path) -> None:
    from torch.export import Dim

    example = (torch.randn(3, 8),)
    program = torch.export.export(net.eval(), example, dynamic_shapes=({0: Dim("batch")},))
    torch.export.save(program, str(path))


def test_exported_graph_matches_torch_export_load(tmp_path: Path) -> None:
    """serving.exported gives torch.export.load's outputs, bit for bit, for MLP (with batch
    norm, dropout, GELU, sigmoid) and conv graphs at several batch sizes, without importing
    torch._dynamo; a graph with symbolic sizes is refused (the caller then uses torch)."""
    from serving import exported

    torch.manual_seed(0)
    nets = {
        "mlp": torch.nn.Sequential(
            torch.nn.Linear(8, 16),
            torch.nn.BatchNorm1d(16),
            torch.nn.Dropout(0.3),
            torch.nn.GELU(),
            torch.nn.Linear(16, 1),
            torch.nn.Sigmoid(),
        ),
        "conv": _Conv(),
    }
    graphs = {}
    for name, net in nets.items():
        _export(net, tmp_path / f"{name}.pt2")
        graphs[name] = exported.load(tmp_path / f"{name}.pt2")
    _export(_Reshape(), tmp_path / "reshape.pt2")
    with pytest.raises(exported.Unsupported, match="sym_int"):
        exported.load(tmp_path / "reshape.pt2")
    (tmp_path / "junk.pt2").write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip
    with pytest.raises(exported.Unsupported):
        exported.load(tmp_path / "junk.pt2")
    for name, graph in graphs.items():
        reference = torch.export.load(str(tmp_path / f"{name}.pt2")).module()
        for rows in (1, 2, 7):
            x = torch.randn(rows, 8)
            with torch.inference_mode():
                assert torch.equal(graph(x), reference(x)), (name, rows)
