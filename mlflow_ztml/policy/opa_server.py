"""Rego evaluation by an OPA server over its REST API (through `opa-python-client`).

Two modes (`policy.opa_mode`):
- `load`: ztml owns the policies. Before the first decision it pushes every module of its
  bundle (`PUT /v1/policies/ztml/<path>`) and the data (`PUT /v1/data/<key>`, i.e.
  `/v1/data/ztml`), then queries. If the server later answers "undefined" for a package
  (restarted, say), it pushes again once and retries.
- `query`: the server's operator owns the policies (a bundle server, say); ztml only asks
  `POST /v1/data/<package path>` with `{"input": ...}`.

Fail closed: a connection error, a timeout, an HTTP error, a policy the server will not
compile, or an undefined package is a Decision with `allow=False` carrying the error.
`decide` never raises. The client is shared between threads; pushing happens under a lock.
"""

from __future__ import annotations

import threading
from typing import Any, Literal
from urllib.parse import urlsplit

import requests
from opa_client import OpaClient
from opa_client.errors import RegoParseError

from mlflow_ztml.errors import ConfigError, PolicyError
from mlflow_ztml.policy.bundle import PolicyBundle
from mlflow_ztml.policy.engine import Decision, check_package, decision_from_document
from mlflow_ztml.redact import clip

POLICY_ID_PREFIX = "ztml/"
OpaMode = Literal["load", "query"]


def client_for(url: str, *, timeout: float, retries: int = 1) -> OpaClient:
    """An OpaClient for `http[s]://host[:port]`; ConfigError for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"policy.opa_url must look like http://HOST:PORT, got {url!r}")
    if parts.path not in ("", "/"):
        raise ConfigError(
            f"policy.opa_url must not have a path (OPA serves /v1 at its root): {url!r}"
        )
    port = parts.port or (443 if parts.scheme == "https" else 8181)
    return OpaClient(
        host=parts.hostname,
        port=port,
        ssl=parts.scheme == "https",
        timeout=timeout,
        retries=retries,
    )


class OpaServerEngine:
    """`PolicyEngine` asking an OPA server. `bundle` is required in `load` mode."""

    name = "opa"

    def __init__(
        self,
        url: str,
        *,
        mode: OpaMode = "load",
        timeout: float = 5.0,
        bundle: PolicyBundle | None = None,
        retries: int = 1,
    ) -> None:
        if mode == "load" and bundle is None:
            raise ConfigError("the OPA engine in load mode needs policies to load")
        self.url = url
        self.mode = mode
        self._bundle = bundle
        self._client = client_for(url, timeout=timeout, retries=retries)
        self._loaded = False
        self._lock = threading.Lock()

    def decide(self, package: str, input: dict[str, Any]) -> Decision:
        """Ask the server for `data.<package>` on `input`; any failure is a deny."""
        try:
            check_package(package)
            if self.mode == "load":
                self.load()
            document = self._query(package, input)
            if document is None and self.mode == "load":
                self.load(force=True)
                document = self._query(package, input)
        except PolicyError as exc:
            return Decision.failed(self.name, package, str(exc))
        if document is None:
            return Decision.failed(
                self.name, package, f"policy package {package} is not defined on {self.url}"
            )
        return decision_from_document(document, engine=self.name, package=package)

    def load(self, *, force: bool = False) -> None:
        """Push the bundle's modules and data to the server (once, unless `force`)."""
        if self._bundle is None:
            return
        with self._lock:
            if self._loaded and not force:
                return
            self._push_modules(self._bundle.modules)
            for key, value in self._bundle.data.items():
                self._call(f"PUT /v1/data/{key}", self._client.update_or_create_data, value, key)
            self._loaded = True

    def _push_modules(self, modules: dict[str, str]) -> None:
        # OPA compiles each module against those already loaded, so a module that calls a
        # helper package pushed later fails at first; push what fails again until no
        # progress is made, then report the first real error.
        pending = dict(sorted(modules.items()))
        while pending:
            errors: dict[str, PolicyError] = {}
            for module_id, source in pending.items():
                try:
                    self._call(
                        f"PUT /v1/policies/{POLICY_ID_PREFIX}{module_id}",
                        self._client.update_policy_from_string,
                        source,
                        POLICY_ID_PREFIX + module_id,
                        rego_compat=False,
                    )
                except PolicyError as exc:
                    errors[module_id] = exc
            if len(errors) == len(pending):
                raise next(iter(errors.values()))
            pending = {module_id: pending[module_id] for module_id in errors}

    def _query(self, package: str, input: dict[str, Any]) -> Any:
        path = package.replace(".", "/")
        response = self._call(
            f"POST /v1/data/{path}", self._client.query_rule, input_data=input, package_path=package
        )
        if not isinstance(response, dict):
            raise PolicyError(f"OPA at {self.url} answered POST /v1/data/{path} with non-JSON")
        return response.get("result")

    def _call(self, what: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one client call, turning every way it can fail into a PolicyError."""
        try:
            return function(*args, **kwargs)
        except requests.HTTPError as exc:
            raise PolicyError(f"OPA at {self.url}: {what} failed: {_http_error(exc)}") from exc
        except requests.ConnectionError as exc:
            raise PolicyError(f"cannot reach OPA at {self.url} ({what}): {exc}") from exc
        except requests.Timeout as exc:
            raise PolicyError(f"OPA at {self.url} timed out ({what}): {exc}") from exc
        except RegoParseError as exc:
            raise PolicyError(f"OPA at {self.url} rejected {what}: {_rego_error(exc)}") from exc
        except Exception as exc:  # opa_client raises plain Exceptions with expression/message
            message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            raise PolicyError(f"OPA at {self.url}: {what} failed: {message}") from exc


def _http_error(exc: requests.HTTPError) -> str:
    response = exc.response
    if response is None:
        return str(exc)
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {clip(response.text, 500)}"
    message = body.get("message", "") if isinstance(body, dict) else ""
    details = (
        "; ".join(str(error.get("message", error)) for error in (body.get("errors") or []) if error)
        if isinstance(body, dict)
        else ""
    )
    return f"HTTP {response.status_code}: {message}{': ' + details if details else ''}"


def _rego_error(exc: RegoParseError) -> str:
    details = "; ".join(
        f"{e.get('location', {}).get('file', '')}:{e.get('location', {}).get('row', '')}: "
        f"{e.get('message', '')}"
        if isinstance(e, dict)
        else str(e)
        for e in exc.errors
    )
    return f"{exc.message}{': ' + details if details else ''}"
