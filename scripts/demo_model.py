"""Train a small PyTorch classifier and register it in MLflow with its evidence.

Used by `make demo`. `--quality good` logs metrics that pass the default governance policy;
`--quality poor` logs a version that the policy must reject (low accuracy, unfair, drifting).
Prints the registered version number on the last line.
"""

from __future__ import annotations

import argparse
import warnings

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.models import infer_signature
from torch import nn

FEATURES = [f"f{i}" for i in range(8)]
warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")


def make_data(seed: int = 7, rows: int = 512) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(FEATURES))).astype(np.float32)
    noise = rng.normal(scale=0.2, size=rows)
    y = (x[:, 0] + 0.5 * x[:, 1] - 0.25 * x[:, 2] + noise > 0).astype(np.int64)
    return x, y


def train(x: np.ndarray, y: np.ndarray, epochs: int) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(len(FEATURES), 16), nn.ReLU(), nn.Linear(16, 2))
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        optimiser.zero_grad()
        loss = nn.functional.cross_entropy(model(inputs), targets)
        loss.backward()
        optimiser.step()
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", default="demo-classifier")
    parser.add_argument("--quality", choices=["good", "poor"], default="good")
    args = parser.parse_args()

    x_train, y_train = make_data(seed=7)
    x, y = make_data(seed=11, rows=256)  # held-out evaluation set
    model = train(x_train, y_train, epochs=60 if args.quality == "good" else 1)
    with torch.no_grad():
        predicted = model(torch.from_numpy(x)).argmax(dim=1).numpy()
    accuracy = float((predicted == y).mean())
    positives = predicted == 1
    f1 = float(2 * (positives & (y == 1)).sum() / max(positives.sum() + (y == 1).sum(), 1))
    group = x[:, 3] > 0
    parity = float(abs(predicted[group].mean() - predicted[~group].mean()))
    if args.quality == "poor":
        parity = max(parity, 0.18)  # the poor version also failed its fairness review

    mlflow.set_experiment("demo-training")
    frame = pd.DataFrame(x_train, columns=FEATURES)
    with mlflow.start_run(run_name=f"train-{args.quality}"):
        mlflow.log_metrics(
            {
                "accuracy": accuracy,
                "f1": f1,
                "fairness.demographic_parity": parity,
                "fairness.equalized_odds": parity / 2,
                "drift.psi": 0.04 if args.quality == "good" else 0.35,
            }
        )
        dataset = mlflow.data.from_pandas(
            frame.assign(label=y_train),
            source="s3://approved-data-demo/credit/train.parquet",
            name="train",
        )
        mlflow.log_input(dataset, context="training")
        example = x[:2]
        signature = infer_signature(example, model(torch.from_numpy(example)).detach().numpy())
        info = mlflow.pytorch.log_model(
            model,
            name="model",
            signature=signature,
            input_example=example,
            pip_requirements=[
                f"mlflow=={mlflow.__version__}",
                f"torch=={torch.__version__.split('+')[0]}",
                f"numpy=={np.__version__}",
                "cloudpickle==3.1.3",
            ],
            registered_model_name=args.name,
        )
    print(f"accuracy={accuracy:.3f} f1={f1:.3f} demographic_parity={parity:.3f}")
    print(info.registered_model_version)


if __name__ == "__main__":
    main()
