"""In-process checks of pieces that are awkward to reach over HTTP: settings precedence and the
PyTorch fast path on an exported model whose batch dimension is frozen at 1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from serving.config import load_settings
from serving.data import Tensors


def test_flags_override_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVING_MODEL_URI", "models:/from-env/1")
    monkeypatch.setenv("SERVING_MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("SERVING_MAX_BATCH_DELAY_MS", "0")
    monkeypatch.setenv("SERVING_API_KEY", "hunter2-key")
    settings = load_settings(["--max-batch-size", "16"])
    assert settings.model_uri == "models:/from-env/1"
    assert settings.max_batch_size == 16
    assert settings.batching is False
    assert settings.api_key.get_secret_value() == "hunter2-key"
    assert "hunter2" not in repr(settings)  # the key never shows up in logs or reprs


def test_invalid_settings_name_the_option(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        load_settings(["--model-uri", "x", "--max-batch-size", "0"])
    assert exc.value.code == 2
    assert "max_batch_size" in capsys.readouterr().err


@pytest.mark.slow
def test_frozen_batch_dimension_falls_back_to_rows(tmp_path: Path) -> None:
    """Saved with a 1-row example, torch.export freezes batch=1: batches are fed row by row."""
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    from serving.predictors import TorchPredictor

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    one = np.ones((1, 3), dtype=np.float32)
    with torch.no_grad():
        out = net(torch.from_numpy(one)).numpy()
    mlflow.pytorch.save_model(
        net,
        tmp_path / "m",
        signature=infer_signature(one, out),
        input_example=one,
        pip_requirements=["mlflow==3.17.2"],
    )
    predictor = TorchPredictor.load(str(tmp_path / "m"), "cpu", np.dtype(np.float32))
    rows = np.arange(15, dtype=np.float32).reshape(5, 3)
    got = predictor.predict(Tensors({None: rows}, 5))
    with torch.no_grad():
        want = net(torch.from_numpy(rows)).numpy()
    assert got.shape == (5, 2)
    assert np.allclose(got, want, atol=1e-5)
    assert predictor.per_row is True
    assert np.allclose(predictor.predict(Tensors({None: rows[:2]}, 2)), want[:2], atol=1e-5)
