"""Desired state from registry facts, and which keys a delivery touches."""

from __future__ import annotations

import pytest

from mlflow_ztml.config import ControllerConfig
from mlflow_ztml.controller import events
from mlflow_ztml.controller.desired import Key, ModelSnapshot, compute_desired, is_managed

ENVS = ("local", "staging", "production")
CONFIG = ControllerConfig(
    aliases={"staging": "staging", "champion": "production", "candidate": "staging"},
    stages={"Staging": "staging", "Production": "production"},
)


def _desired(**snapshot) -> dict[str, tuple[str, str]]:
    state = compute_desired(ModelSnapshot(name="m", **snapshot), CONFIG, ENVS)
    return {env: (d.version, d.source) for env, d in state.wanted.items()}


def test_each_source_maps_to_its_environment() -> None:
    assert _desired(aliases={"champion": "3"}) == {"production": ("3", "alias")}
    assert _desired(stages={"Staging": "2"}) == {"staging": ("2", "stage")}
    assert _desired(explicit={"4": "local"}) == {"local": ("4", "tag")}
    assert _desired(explicit={"4": "local, staging"}) == {
        "local": ("4", "tag"),
        "staging": ("4", "tag"),
    }


def test_unmapped_aliases_and_stages_mean_nothing() -> None:
    assert _desired(aliases={"shadow": "1"}, stages={"Archived": "1", "None": "2"}) == {}


def test_precedence_tag_over_alias_over_stage() -> None:
    state = compute_desired(
        ModelSnapshot(
            name="m",
            explicit={"2": "staging"},
            aliases={"staging": "5"},
            stages={"Staging": "7"},
        ),
        CONFIG,
        ENVS,
    )
    assert state.wanted["staging"].version == "2"
    assert state.wanted["staging"].source == "tag"
    assert (
        "v2 (tag ztml.deploy=staging) wins over v5 (alias staging), v7 (stage Staging)"
        in (state.conflicts[0])
    )
    assert _desired(aliases={"staging": "5"}, stages={"Staging": "7"}) == {
        "staging": ("5", "alias")
    }


def test_newest_version_wins_within_a_source() -> None:
    assert _desired(aliases={"staging": "3", "candidate": "10"}) == {"staging": ("10", "alias")}
    assert _desired(explicit={"9": "local", "11": "local"}) == {"local": ("11", "tag")}


def test_agreeing_sources_are_no_conflict() -> None:
    state = compute_desired(
        ModelSnapshot(name="m", aliases={"staging": "4"}, stages={"Staging": "4"}), CONFIG, ENVS
    )
    assert state.wanted["staging"].version == "4"
    assert state.conflicts == []


def test_unknown_environment_in_a_tag_is_a_problem_not_a_crash() -> None:
    state = compute_desired(ModelSnapshot(name="m", explicit={"1": "moon"}), CONFIG, ENVS)
    assert state.wanted == {}
    assert "'moon'" in state.problems[0]


@pytest.mark.parametrize(
    ("models", "tags", "name", "managed"),
    [
        ("all", {}, "m", True),
        ("tagged", {}, "m", False),
        ("tagged", {"ztml.managed": "true"}, "m", True),
        ("tagged", {"ztml.managed": "True "}, "m", True),
        ("tagged", {"ztml.managed": "false"}, "m", False),
        (["m", "n"], {}, "m", True),
        (["n"], {}, "m", False),
    ],
)
def test_models_filter(models, tags, name, managed) -> None:
    config = ControllerConfig(models=models)
    assert is_managed(ModelSnapshot(name=name, tags=tags), config) is managed


def _route(entity: str, action: str, data: dict, config: ControllerConfig = CONFIG):
    delivery = events.Delivery(entity=entity, action=action, data=data)
    return events.route(delivery, config, ENVS)


def test_alias_events_queue_the_mapped_environment() -> None:
    for action in ("created", "deleted"):
        routing = _route("model_version_alias", action, {"name": "m", "alias": "champion"})
        assert routing.keys == [Key("m", "production")]
    assert _route("model_version_alias", "created", {"name": "m", "alias": "x"}).ignored == (
        "alias_not_mapped"
    )


def test_tag_events() -> None:
    every = [Key("m", env) for env in sorted(ENVS)]
    deploy = {"name": "m", "version": "1", "key": "ztml.deploy", "value": "staging"}
    assert _route("model_version_tag", "set", deploy).keys == every
    assert _route("model_version_tag", "deleted", deploy).keys == every
    own = {"name": "m", "version": "1", "key": "ztml.staging.status", "value": "deployed"}
    assert _route("model_version_tag", "set", own).ignored == "own_tag"
    evidence = {"name": "m", "version": "1", "key": "fairness.dp", "value": "0.01"}
    assert _route("model_version_tag", "set", evidence).keys == every


def test_version_created_queues_every_environment() -> None:
    data = {"name": "m", "version": "3", "run_id": None, "source": "models:/m-1", "tags": {}}
    assert len(_route("model_version", "created", data).keys) == 3


def test_other_events_are_ignored() -> None:
    assert _route("registered_model", "created", {"name": "m"}).ignored == "unsubscribed_event"
    assert _route("prompt", "created", {"name": "p"}).ignored == "unsubscribed_event"


def test_models_list_filters_at_the_door() -> None:
    config = CONFIG.model_copy(update={"models": ["other"]})
    routing = _route("model_version_alias", "created", {"name": "m", "alias": "staging"}, config)
    assert routing.ignored == "model_not_managed"


def test_malformed_payloads() -> None:
    with pytest.raises(events.MalformedDelivery) as err:
        events.parse(b"{not json")
    assert err.value.reason == "invalid_json"
    with pytest.raises(events.MalformedDelivery) as err:
        events.parse(b'{"entity": "model_version"}')
    assert err.value.reason == "invalid_payload"
    with pytest.raises(events.MalformedDelivery, match=r"data\.alias"):
        _route("model_version_alias", "created", {"name": "m"})
