"""Register the controller's webhook in MLflow and send MLflow's test delivery to it.

MLflow keeps webhooks in its database (SQL backends only) and signs every delivery with the
secret given here. `register` is idempotent: a webhook with the same name is updated (URL,
events, secret, re-activated), so running it again after rotating the secret or moving the
controller is the way to update MLflow's side.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel

from mlflow_ztml.controller.events import SUBSCRIBED_EVENTS
from mlflow_ztml.errors import ConfigError, ZtmlError
from mlflow_ztml.registry import translate_errors

WEBHOOK_PATH = "/webhooks/mlflow"


class WebhookNotFoundError(ZtmlError):
    """No webhook with that name is registered in MLflow (run `ztml webhook register`)."""


class Registration(BaseModel):
    webhook_id: str
    name: str
    url: str
    events: list[str]
    created: bool


class DeliveryCheck(BaseModel):
    webhook_id: str
    url: str
    event: str
    success: bool
    status: int | None = None
    body: str | None = None
    error: str | None = None


def normalise_url(url: str) -> str:
    """Accept the controller's base URL too: `http://host:8080` -> `.../webhooks/mlflow`."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"webhook URL {url!r} must be an absolute http(s) URL")
    path = parts.path if parts.path not in ("", "/") else WEBHOOK_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def find(client: Any, name: str) -> Any | None:
    with translate_errors("listing MLflow webhooks"):
        token = None
        while True:
            page = client.list_webhooks(max_results=100, page_token=token)
            for webhook in page:
                if webhook.name == name:
                    return webhook
            token = page.token
            if not token:
                return None


def register(client: Any, url: str, secret: str, name: str) -> Registration:
    """Create the webhook, or update the one named `name`; returns what MLflow now holds."""
    if not secret:
        raise ConfigError(
            "no webhook secret: set ZTML_WEBHOOK_SECRET (the controller verifies with the same)"
        )
    url = normalise_url(url)
    existing = find(client, name)
    description = "ztml registry controller: aliases, stages and ztml.deploy tags -> deployments"
    with translate_errors(f"registering webhook {name}"):
        if existing is None:
            webhook = client.create_webhook(
                name=name,
                url=url,
                events=list(SUBSCRIBED_EVENTS),
                description=description,
                secret=secret,
                status="ACTIVE",
            )
        else:
            webhook = client.update_webhook(
                existing.webhook_id,
                url=url,
                events=list(SUBSCRIBED_EVENTS),
                description=description,
                secret=secret,
                status="ACTIVE",
            )
    return Registration(
        webhook_id=webhook.webhook_id,
        name=webhook.name,
        url=webhook.url,
        events=[str(e) for e in webhook.events],
        created=existing is None,
    )


def send_test(client: Any, name: str, event: str | None = None) -> DeliveryCheck:
    """Ask MLflow to send its example payload to the registered URL, signed like the real
    thing; success means the controller verified the signature and answered 2xx."""
    webhook = find(client, name)
    if webhook is None:
        raise WebhookNotFoundError(
            f"no MLflow webhook named {name!r}; run `ztml webhook register --url URL` first"
        )
    chosen = event or "model_version_alias.created"
    with translate_errors(f"testing webhook {name}"):
        result = client.test_webhook(webhook.webhook_id, event=chosen)
    return DeliveryCheck(
        webhook_id=webhook.webhook_id,
        url=webhook.url,
        event=chosen,
        success=bool(result.success),
        status=result.response_status,
        body=result.response_body,
        error=result.error_message,
    )
