"""What a person sees on a version: the headline tag, ordered writes, no empty or stale tags.

Every test talks to the session's real `mlflow server` through the real `Registry` wrapper;
the writes are recorded by wrapping the MLflow client's two tag calls (each is one REST request
and one webhook delivery), so the sequence asserted is the one MLflow received.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import mlflow
import pytest

from mlflow_ztml.config import load_settings
from mlflow_ztml.pipeline import DeployOptions, Pipeline
from mlflow_ztml.record import STATUSES, TAG_VALUE_LIMIT, VersionRecorder
from mlflow_ztml.registry import Registry
from mlflow_ztml.status_line import HEADLINE_LIMIT, IN_PROGRESS
from tests.models import GOOD_METRICS, register_sklearn

ENV = "local"
P = f"ztml.{ENV}."
HEAD = f"ztml.{ENV}"
WHEN = r"\d{4}-\d\d-\d\d \d\d:\d\dZ"
Op = tuple[str, str, str | None]  # ("set" | "delete", key, value)


def record_writes(registry: Registry) -> list[Op]:
    """Wrap the client's tag calls on this registry: every request lands in the list, in order."""
    ops: list[Op] = []
    client = registry.client
    set_tag, delete_tag = client.set_model_version_tag, client.delete_model_version_tag

    def setter(name: str, version: str, key: str, value: Any) -> None:
        ops.append(("set", key, value))
        set_tag(name, version, key, value)

    def deleter(name: str, version: str, key: str) -> None:
        ops.append(("delete", key, None))
        delete_tag(name, version, key)

    client.set_model_version_tag = setter  # type: ignore[method-assign]
    client.delete_model_version_tag = deleter  # type: ignore[method-assign]
    return ops


def steps(ops: list[Op]) -> list[str | set[str]]:
    """The writes as MLflow received them, details between two ordered writes as one set (the
    registry may write those concurrently); `status`, the verdict and the headline stand alone."""
    out: list[str | set[str]] = []
    for kind, key, _ in ops:
        assert kind == "set", (kind, key)
        name = key.removeprefix(P)
        if name in ("status", "decision", "scan_decision", HEAD):
            out.append(name)
        elif out and isinstance(out[-1], set):
            out[-1].add(name)
        else:
            out.append({name})
    return out


def replay(start: dict[str, str], ops: list[Op]) -> dict[str, str]:
    """Apply `ops` one by one, checking after each what a reader could see at that moment."""
    state = dict(start)
    for kind, key, value in ops:
        if kind == "set":
            assert value != "", f"{key} written empty"
            state[key] = value  # type: ignore[assignment]
        else:
            state.pop(key, None)
        status, decision = state.get(P + "status"), state.get(P + "decision")
        if decision == "deny":
            assert status == "rejected", f"decision=deny beside status={status} after {key}"
        if status in ("pending", "gating"):
            assert decision is None, f"decision={decision} beside status={status} after {key}"
        headline = state.get(HEAD)
        if headline is not None:
            assert headline.split(" ", 1)[0] in STATUSES, headline
    return state


@pytest.fixture
def registry(ztml_env) -> Registry:
    return Registry(load_settings())


@pytest.fixture
def version(ztml_env) -> Iterator[tuple[str, str]]:
    """A registered version with no model files (never read): the recorder only writes tags."""
    client = mlflow.MlflowClient(ztml_env.url)
    name = f"rec-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    yield name, str(client.create_model_version(name, "s3://ztml-tests/no-model").version)


def _tags(registry: Registry, name: str, version: str) -> dict[str, str]:
    return registry.version_tags(name, version)


def test_a_deploy_writes_details_then_status_then_verdict_then_headline(registry, version) -> None:
    name, v = version
    ops = record_writes(registry)
    tags = VersionRecorder(registry, name, v, ENV)
    tags.set("gating", deployment="rec-local", audit_run="abc123")
    tags.note(decision="allow", warnings=["w1", "w2", "w3"])
    tags.set("deploying")
    tags.set("verifying")
    tags.set("deployed", endpoint="http://127.0.0.1:5555", deployment="rec-local")

    assert steps(ops) == [
        {"deployment", "audit_run"},
        "status",
        HEAD,
        {"warnings"},
        "status",
        "decision",  # the verdict follows `deploying`: never beside `gating`
        HEAD,
        "status",
        HEAD,
        {"endpoint", "updated_at"},  # before `deployed`: whoever waits for it finds them
        "status",
        HEAD,
    ]
    final = replay({}, ops)
    assert final == _tags(registry, name, v)
    assert re.fullmatch(
        rf"deployed v{v} · allow · 3 warnings · http://127\.0\.0\.1:5555 · {WHEN}", final[HEAD]
    )
    first = next(op[2] for op in ops if op[1] == HEAD)
    assert re.fullmatch(rf"gating v{v} · since \d\d:\d\dZ", first or "")


def test_a_new_attempt_removes_the_old_verdict_before_its_first_status(registry, version) -> None:
    name, v = version
    old = VersionRecorder(registry, name, v, ENV)
    old.set("gating")
    old.set("rejected", decision="deny", violations=["accuracy 0.6 is below the minimum 0.85"])
    old.set("failed", error="MLflow went away")
    before = _tags(registry, name, v)
    assert before[HEAD].startswith(f"failed v{v} · MLflow went away · ")

    ops = record_writes(registry)
    VersionRecorder(registry, name, v, ENV).set("gating", audit_run="run2")
    assert {op[1] for op in ops[:3]} == {P + "decision", P + "violations", P + "error"}
    assert {op[0] for op in ops[:3]} == {"delete"}  # the old verdict goes first
    after = replay(before, ops)
    assert after == _tags(registry, name, v)
    assert not {P + "decision", P + "violations", P + "error"} & set(after)
    assert re.fullmatch(rf"gating v{v} · since \d\d:\d\dZ", after[HEAD])


def test_empty_values_are_removed_and_unchanged_ones_not_rewritten(registry, version) -> None:
    name, v = version
    tags = VersionRecorder(registry, name, v, ENV)
    tags.set("gating", error="", warnings=[], scan=None)  # nothing there: nothing to remove
    tags.set("deployed", endpoint="http://127.0.0.1:1", error="boom")
    ops = record_writes(registry)
    again = VersionRecorder(registry, name, v, ENV)  # a fresh recorder reads what is there
    again.set(None, endpoint="http://127.0.0.1:1", error="")
    assert ops == [("delete", P + "error", None)]
    current = _tags(registry, name, v)
    assert "" not in current.values()
    assert not any(k.startswith(P) and k.endswith(("warnings", "scan")) for k in current)


def test_rejected_headline_numbers_short_violations_within_the_limit(registry, version) -> None:
    name, v = version
    violations = [
        "accuracy 0.69 is below the minimum 0.85 for local",
        "f1 0.57 is below the minimum 0.8 for local",
        *[f"dependency pin{n} is not pinned to an exact version " * 20 for n in range(40)],
    ]
    tags = VersionRecorder(registry, name, v, ENV)
    tags.set("gating")
    tags.set("rejected", decision="deny", violations=violations, warnings=[])
    current = _tags(registry, name, v)
    line = current[HEAD]
    assert line.startswith(
        f"rejected v{v} · 42 violations: 1) accuracy 0.69 < 0.85; 2) f1 0.57 < 0.8; 3) "
    )
    assert line.endswith(" ...") and len(line) <= HEADLINE_LIMIT
    full = current[P + "violations"]
    assert full.startswith("1) accuracy 0.69 is below the minimum 0.85 for local\n2) f1")
    assert len(full) <= TAG_VALUE_LIMIT and "full text in the audit run" in full
    assert P + "warnings" not in current


def test_superseded_and_deleted_drop_the_endpoint_before_the_status(registry, version) -> None:
    name, v = version
    VersionRecorder(registry, name, v, ENV).set("deployed", endpoint="http://127.0.0.1:2")
    ops = record_writes(registry)
    VersionRecorder(registry, name, v, ENV).set("superseded", superseded_by="9")
    assert ops[0] == ("delete", P + "endpoint", None)
    assert [op[1] for op in ops[-2:]] == [P + "status", HEAD]
    assert re.fullmatch(rf"superseded v{v} · by v9 · {WHEN}", _tags(registry, name, v)[HEAD])
    VersionRecorder(registry, name, v, ENV).set("deleted")
    assert re.fullmatch(rf"deleted v{v} · {WHEN}", _tags(registry, name, v)[HEAD])


def test_in_progress_statuses_and_extra_fields_keep_working(registry, version) -> None:
    name, v = version
    tags = VersionRecorder(registry, name, v, ENV)
    for status in IN_PROGRESS:
        tags.set(status, signature="sha256:abc", audit_url="http://mlflow/#/runs/1")
        line = _tags(registry, name, v)[HEAD]
        assert re.fullmatch(rf"{status} v{v} · since \d\d:\d\dZ", line), line
    with pytest.raises(ValueError, match="unknown status 'done'"):
        tags.set("done")


def test_a_pipeline_rejection_is_few_ordered_writes(ztml_env) -> None:
    """The real pipeline and gate; the figures the docs quote come from here."""
    name = "rec-reject"
    bad = register_sklearn(ztml_env.url, name, metrics={**GOOD_METRICS, "accuracy": 0.6})
    pipeline = Pipeline(load_settings())
    ops = record_writes(pipeline.registry)
    outcome = pipeline.run(f"models:/{name}/{bad}", ENV, DeployOptions())
    assert outcome.status == "rejected"
    final = replay({}, ops)
    assert final == {k: v for k, v in _tags(pipeline.registry, name, bad).items() if "ztml" in k}
    assert re.fullmatch(rf"rejected v{bad} · 1 violation: 1\) accuracy 0\.6 < 0\.\d+", final[HEAD])
    # 12 before (two of them empty values); 10 now, `audit_url` included
    assert len(ops) <= 10, ops

    # the same version again: nothing new to say but the attempt (no rewrite of what holds)
    ops.clear()
    again = pipeline.run(f"models:/{name}/{bad}", ENV, DeployOptions())
    assert again.status == "rejected"
    replay(final, ops)
    assert steps([op for op in ops if op[0] == "set"])[-3:] == ["status", "decision", HEAD]
