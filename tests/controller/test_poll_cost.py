"""What a poll costs MLflow once versions were rejected: a real `mlflow server`, the real
pipeline and gate, the controller's own poll and reconcile (driven here one cycle at a time
instead of by its threads, so every MLflow request of a cycle can be counted).

A rejected version's judgement lives in its tag `ztml.<env>.rejected_fingerprint`; the poll
checks all of them in bulk, so its request count does not grow with the number of rejected
keys, a restart re-judges nothing, and a change to the evidence is judged again."""

from __future__ import annotations

import uuid
from pathlib import Path

import mlflow
import pytest

from mlflow_ztml.config import load_settings
from mlflow_ztml.controller.desired import Key
from mlflow_ztml.controller.manager import Controller
from tests.controller.helpers import counting
from tests.models import GOOD_METRICS, register_sklearn

PREFIX = f"cost{uuid.uuid4().hex[:4]}"
BAD = {**GOOD_METRICS, "accuracy": 0.6}
CONFIG = "controller:\n  aliases: {bench: local}\n  stages: {}\n  models: all\n"


def cycle(controller: Controller) -> list[Key]:
    """One poll and the reconciles it queued, as the controller's threads would run them."""
    queued = controller.poll_once()
    while (key := controller.queue.get(timeout=0)) is not None:
        controller.reconciler.reconcile(key)
        controller.queue.done(key)
    return queued


def audit_runs(url: str) -> int:
    client = mlflow.MlflowClient(url)
    experiment = client.get_experiment_by_name("ztml-deployments")
    return len(client.search_runs([experiment.experiment_id], max_results=1000))


def rejected(url: str, name: str) -> str:
    version = register_sklearn(url, name, metrics=BAD)
    mlflow.MlflowClient(url).set_registered_model_alias(name, "bench", version)
    return version


@pytest.fixture
def world(ztml_env, tmp_path: Path):
    (tmp_path / "ztml.yaml").write_text(CONFIG)
    return ztml_env.url, lambda: Controller(load_settings(), secrets=[])


def test_rejected_keys_cost_the_poll_nothing_per_key_and_survive_a_restart(world) -> None:
    url, make = world
    controller = make()
    first = f"{PREFIX}-a"
    version = rejected(url, first)
    assert cycle(controller) == [Key(first, "local")]
    report = controller.reconciler.reports()[f"{first}/local"]
    assert (report["action"], report["outcome"]) == ("deploy", "rejected")

    with counting(url) as one_rejected:
        assert cycle(controller) == []  # judged on this evidence: not queued again

    rejected(url, f"{PREFIX}-b")
    assert cycle(controller) == [Key(f"{PREFIX}-b", "local")]
    with counting(url) as two_rejected:  # before: 5 more requests per rejected key
        assert cycle(controller) == []
    assert len(two_rejected) == len(one_rejected), (one_rejected, two_rejected)

    runs = audit_runs(url)
    restarted = make()  # nothing in memory: the judgement is read back from the tags
    with counting(url) as after_restart:
        assert cycle(restarted) == []
    assert audit_runs(url) == runs  # no pipeline attempt, no new audit run
    assert len(after_restart) == len(one_rejected)

    # A metric logged to the run fires no webhook: the poll sees it and judges again.
    client = mlflow.MlflowClient(url)
    run_id = client.get_model_version(first, version).run_id
    client.log_metric(run_id, "accuracy", 0.61)
    assert cycle(restarted) == [Key(first, "local")]
    assert audit_runs(url) == runs + 1
    assert restarted.reconciler.reports()[f"{first}/local"]["outcome"] == "rejected"
    assert cycle(restarted) == []  # and the new judgement holds again
