"""MLflow webhook deliveries -> the reconcile keys they may have changed.

A delivery never says what to deploy; it only says which (model, environment) keys to look at
now rather than at the next poll. The worker then reads the registry, so a delivery that is
late, out of order or lost changes nothing but latency.

| event                          | keys queued                                            |
|--------------------------------|--------------------------------------------------------|
| model_version_alias.created    | (model, env of the alias) when the alias is mapped     |
| model_version_alias.deleted    | (model, env of the alias) when the alias is mapped     |
| model_version_tag.set/deleted  | `ztml.deploy`: every environment of the model (the old |
|                                | value is unknown); other `ztml.*` tags: ignored (the   |
|                                | controller's own writes); any other tag: every env     |
|                                | (it may be evidence that un-rejects a version)         |
| model_version.created          | every environment (the version may carry a deploy tag) |
| anything else                  | nothing (200, "ignored")                               |
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from mlflow_ztml.config import ControllerConfig
from mlflow_ztml.controller.desired import Key
from mlflow_ztml.errors import ZtmlError

SUBSCRIBED_EVENTS = (
    "model_version.created",
    "model_version_tag.set",
    "model_version_tag.deleted",
    "model_version_alias.created",
    "model_version_alias.deleted",
)
OWN_TAG_PREFIX = "ztml."


class MalformedDelivery(ZtmlError):
    """The body is not an MLflow webhook payload; `reason` labels the metric."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Delivery(BaseModel):
    """The envelope MLflow posts: `{"entity", "action", "timestamp", "data"}`."""

    model_config = ConfigDict(extra="allow")
    entity: str
    action: str
    timestamp: str | None = None
    data: dict[str, Any]

    @property
    def event(self) -> str:
        return f"{self.entity}.{self.action}"


class _ModelRef(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str


class _AliasData(_ModelRef):
    alias: str


class _TagData(_ModelRef):
    key: str


@dataclass(frozen=True)
class Routing:
    """What one delivery asks for: keys to queue, or why nothing is queued."""

    event: str
    keys: list[Key]
    ignored: str | None = None


def parse(body: bytes) -> Delivery:
    try:
        return Delivery.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        reason = "invalid_json" if first["type"] == "json_invalid" else "invalid_payload"
        where = ".".join(str(p) for p in first["loc"]) or "<body>"
        raise MalformedDelivery(reason, f"{where}: {first['msg']}") from None


def route(delivery: Delivery, config: ControllerConfig, environments: Iterable[str]) -> Routing:
    """The keys a delivery may have changed (see the module docstring for the table)."""
    event = delivery.event
    envs = sorted(set(environments))

    def every_env(name: str) -> list[Key]:
        return [Key(name, env) for env in envs]

    def ignore(reason: str) -> Routing:
        return Routing(event=event, keys=[], ignored=reason)

    try:
        if delivery.entity == "model_version_alias" and delivery.action in ("created", "deleted"):
            alias = _AliasData.model_validate(delivery.data)
            if alias.alias not in config.aliases:
                return ignore("alias_not_mapped")
            keys = [Key(alias.name, config.aliases[alias.alias])]
        elif delivery.entity == "model_version_tag" and delivery.action in ("set", "deleted"):
            tag = _TagData.model_validate(delivery.data)
            if tag.key != config.deploy_tag and tag.key.startswith(OWN_TAG_PREFIX):
                return ignore("own_tag")
            keys = every_env(tag.name)
        elif delivery.entity == "model_version" and delivery.action == "created":
            keys = every_env(_ModelRef.model_validate(delivery.data).name)
        else:
            return ignore("unsubscribed_event")
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "data." + ".".join(str(p) for p in first["loc"])
        raise MalformedDelivery("invalid_payload", f"{event}: {where}: {first['msg']}") from None
    if isinstance(config.models, list) and keys[0].model not in config.models:
        return ignore("model_not_managed")
    return Routing(event=event, keys=keys)
