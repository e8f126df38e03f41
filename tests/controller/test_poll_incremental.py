"""The incremental poll against a real `mlflow server`: between full listings (start, resync)
the poll reads only models whose `last_updated_timestamp` moved, like an informer's watch.

No model is deployed here: the poll's result (the keys whose desired version is not running)
is the observable, driven one poll at a time instead of by the controller's threads."""

from __future__ import annotations

import uuid
from pathlib import Path

import mlflow
import pytest

from mlflow_ztml.config import load_settings
from mlflow_ztml.controller import desired
from mlflow_ztml.controller.desired import Key
from mlflow_ztml.controller.manager import Controller
from tests.controller.helpers import SECRET, counting

# margin 0: the test's models are all seconds old, inside any real margin
CONFIG = (
    "controller:\n  aliases: {inc: local}\n  stages: {Staging: local}\n  models: all\n"
    "  resync_interval_seconds: 3600\n  watermark_margin_seconds: 0\n"
)


@pytest.fixture
def world(ztml_env, tmp_path: Path):
    (tmp_path / "ztml.yaml").write_text(CONFIG)
    client = mlflow.MlflowClient(ztml_env.url)
    prefix = f"inc{uuid.uuid4().hex[:6]}"

    def model(suffix: str) -> str:
        name = f"{prefix}-{suffix}"
        client.create_registered_model(name)
        client.create_model_version(name, "s3://ztml-tests/no-artifacts")  # never read
        return name

    return (
        ztml_env.url,
        client,
        model,
        lambda secrets=(SECRET,): Controller(load_settings(), secrets=list(secrets)),
    )


def _full(controller: Controller) -> bool:
    return controller.status()["last_poll"]["full"]


def test_an_idle_poll_costs_one_request_however_many_models(world, monkeypatch) -> None:
    url, _client, model, make = world
    monkeypatch.setattr(desired, "_PAGE", 10)  # a full listing: one request per 10 models
    controller = make()
    model("first")
    controller.poll_once()
    assert _full(controller)
    with counting(url) as few:
        controller.poll_once()
    assert not _full(controller)
    for index in range(30):
        model(f"more{index}")
    controller.request_resync()
    with counting(url) as full:
        controller.poll_once()
    assert _full(controller)
    with counting(url) as many:
        controller.poll_once()
    listings = [r for r in many if "registered-models/search" in r]
    assert listings == [r for r in few if "registered-models/search" in r]
    assert len(listings) == 1 and len(many) == len(few), (few, many)
    assert len([r for r in full if "registered-models/search" in r]) >= 4


def test_a_stage_transition_is_seen_by_the_next_incremental_poll(world) -> None:
    _url, client, model, make = world
    controller = make()
    name = model("stage")
    assert Key(name, "local") not in controller.poll_once()
    assert Key(name, "local") not in controller.poll_once()
    client.transition_model_version_stage(name, "1", "Staging")
    assert Key(name, "local") in controller.poll_once()
    assert not _full(controller)


def test_an_alias_without_webhook_waits_for_the_resync_and_so_does_a_deletion(world) -> None:
    _url, client, model, make = world
    controller = make()
    name, other = model("alias"), model("read")
    controller.poll_once()
    client.set_registered_model_alias(name, "inc", "1")  # no timestamp moves
    assert Key(name, "local") not in controller.poll_once()
    controller.config.resync_interval_seconds = 1e-6  # the resync is due
    assert Key(name, "local") in controller.poll_once()
    assert _full(controller)
    controller.config.resync_interval_seconds = 3600

    # a worker's read (what a webhook triggers) refreshes what the poll knows
    client.set_registered_model_alias(other, "inc", "1")
    controller.reconciler.view.snapshot(other)
    assert Key(other, "local") in controller.poll_once()

    client.delete_registered_model(name)
    assert Key(name, "local") in controller.poll_once()  # incremental: not seen yet
    assert not _full(controller)
    controller.request_resync()
    keys = controller.poll_once()
    assert Key(name, "local") not in keys and Key(other, "local") in keys


def test_without_a_webhook_secret_every_poll_is_full(world) -> None:
    _url, client, model, make = world
    controller = make(secrets=())
    name = model("polling")
    controller.poll_once()
    client.set_registered_model_alias(name, "inc", "1")
    assert Key(name, "local") in controller.poll_once()
    assert _full(controller)


def test_the_watermark_trails_the_newest_timestamp_until_the_margin_has_passed() -> None:
    """Pure arithmetic on MLflow's timestamps (ms) and the monotonic times they were seen: a
    write stamped just before the newest one seen may commit late, so the cutoff stays
    `watermark_margin_seconds` behind it until that long has passed since it was seen."""
    from types import SimpleNamespace

    from mlflow_ztml.config import ControllerConfig

    view = desired.RegistryView(
        SimpleNamespace(client=None),  # type: ignore[arg-type]
        ControllerConfig(watermark_margin_seconds=30),
    )
    assert view._watermark(1000.0) == 0  # nothing listed yet: everything
    view._marks.extend([(1000.0, 5_000_000), (1010.0, 5_020_000)])
    assert view._watermark(1015.0) == 5_020_000 - 30_000  # nothing settled yet
    assert view._watermark(1031.0) == 5_000_000  # the first mark has settled
    assert view._watermark(1045.0) == 5_020_000  # and the second: the oldest is dropped
    assert list(view._marks) == [(1010.0, 5_020_000)]
