"""`ZtmlDeploymentClient`: MLflow's `BaseDeploymentClient` contract on top of the ztml pipeline."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click
import requests
from mlflow.deployments import BaseDeploymentClient, PredictionsResponse
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
)
from pydantic import ValidationError

from mlflow_ztml import logs, names
from mlflow_ztml.errors import ModelNotFoundError, ZtmlError
from mlflow_ztml.options import DeployOptions
from mlflow_ztml.redact import clip, redact
from mlflow_ztml.verify import request_body

if TYPE_CHECKING:
    from mlflow_ztml.config import Settings
    from mlflow_ztml.notify import Notifier
    from mlflow_ztml.pipeline import Outcome, Pipeline
    from mlflow_ztml.runtimes.base import DeploymentStatus

# mlflow loads this module for any `-t ztml` command, `help` included: the deploy pipeline
# (policy engine, evidence, notifications, ...) is imported by the operations that deploy or
# delete, not by get/list/predict, which only read the runtime's state.

CONFIG_OPTIONS: dict[str, str] = {
    "env": "target environment (also given as the target, ztml:/ENV); default: local",
    "runtime": "process | docker | kubernetes; default: the environment's runtime",
    "replicas": "number of replicas (integer >= 1); default: the environment's preset",
    "cpu": "CPU per replica, Kubernetes quantity (e.g. 500m, 2)",
    "memory": "memory per replica, Kubernetes quantity (e.g. 512Mi, 4Gi)",
    "gpu": "GPUs per replica (integer >= 0)",
    "port": "fixed local port for the process/docker runtimes; default: a free port",
    "max_batch_size": "dynamic batching: most rows merged into one model call",
    "max_batch_delay_ms": "dynamic batching: longest wait for more rows (0 turns batching off)",
    "ready_timeout_seconds": "how long a new version may take to become ready (default 120)",
    "response_format": "/predict answers: ztml (default) | mlifecycle (the published contract)",
}


def target_help() -> str:
    options = "\n".join(f"    {key:<22} {text}" for key, text in CONFIG_OPTIONS.items())
    return (
        "ztml: governed, verified deployments of MLflow registered models.\n\n"
        "Target URI: `ztml` (the default environment, local) or `ztml:/ENV` (an environment\n"
        "declared in ztml.yaml: local, staging, production, ...).\n\n"
        "Each create/update reads the version's evidence from MLflow, judges it with the\n"
        "governance policy (a deny fails the command and lists every reason), deploys it,\n"
        "verifies /ready and one /predict with the model's input example, rolls back on\n"
        "failure, and writes ztml.<env>.* tags plus an audit run back to MLflow.\n\n"
        "Model URIs: models:/NAME/VERSION or models:/NAME@ALIAS.\n\n"
        f"Options (-C key=value):\n{options}\n\n"
        "Example:\n"
        "    mlflow deployments create -t ztml:/staging --name credit -m models:/credit/3 "
        "-C replicas=2\n"
        "    mlflow deployments predict -t ztml:/staging --name credit -I input.json\n\n"
        "input.json: rows ([{...}, ...]) or one of MLflow's scoring formats\n"
        '({"dataframe_split": ...}, dataframe_records, inputs, instances).\n'
    )


def run_local(
    name: str, model_uri: str, flavor: str | None = None, config: dict | None = None
) -> None:
    """Deploy to the `local` environment on the process runtime and print the endpoint."""
    config = {**(config or {}), "runtime": "process"}
    client = ZtmlDeploymentClient("ztml:/local")
    result = client.create_deployment(name, model_uri, flavor, config)
    print(f"{name} is serving at {result['endpoint']}")


def _environment_of(target_uri: str) -> str | None:
    _, _, path = target_uri.partition(":")
    return path.strip("/") or None


class ZtmlDeploymentError(MlflowException, click.ClickException):
    """An expected failure (a deny, a bad option, a missing deployment): a message, not a bug.

    It is both things its two audiences catch: an `MlflowException` (with an error code) for
    MLflow's Python API, and a `click.ClickException` for `mlflow deployments ...`, whose
    commands catch nothing themselves, so click prints `Error: <message>` and exits 1 with no
    traceback. Anything else that escapes the plugin is a bug and keeps its traceback.
    """

    exit_code = 1

    def __init__(self, message: str, error_code: int = INVALID_PARAMETER_VALUE) -> None:
        super().__init__(message, error_code=error_code)


def _fail(message: str, code: int = INVALID_PARAMETER_VALUE) -> ZtmlDeploymentError:
    return ZtmlDeploymentError(redact(message), code)


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _clean(method: _Method) -> _Method:
    """For each public operation: MLflow's deprecation warnings and log chatter hidden, log
    lines redacted, and a ZtmlError raised anywhere below becomes a one-line error."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with logs.quiet():
            try:
                return method(*args, **kwargs)
            except ZtmlDeploymentError:
                raise
            except ModelNotFoundError as exc:
                raise _fail(str(exc), RESOURCE_DOES_NOT_EXIST) from None
            except ZtmlError as exc:
                raise _fail(str(exc)) from None

    return wrapper  # type: ignore[return-value]


def _progress(stage: str) -> None:
    print(f"ztml: {stage}...", file=sys.stderr, flush=True)


class ZtmlDeploymentClient(BaseDeploymentClient):
    """Deployments in one ztml environment (chosen by the target URI)."""

    def __init__(self, target_uri: str) -> None:
        super().__init__(target_uri)
        self.target_environment = _environment_of(target_uri)

    def _settings(self) -> Settings:
        from mlflow_ztml import store
        from mlflow_ztml.config import load_settings

        try:
            settings = load_settings()
            notice = store.use(settings).notice_once()
        except ZtmlError as exc:
            raise _fail(str(exc)) from None
        if notice:
            print(notice, file=sys.stderr, flush=True)
        return settings

    def _environment(self, settings: Settings, config: dict[str, Any]) -> str:
        from_config = config.get("env")
        if from_config and self.target_environment and from_config != self.target_environment:
            raise _fail(
                f"-C env={from_config} contradicts the target ztml:/{self.target_environment}"
            )
        env = from_config or self.target_environment or settings.default_environment
        try:
            settings.environment(env)
        except ZtmlError as exc:
            raise _fail(str(exc)) from None
        return env

    def _options(self, name: str, config: dict[str, Any] | None) -> tuple[str, DeployOptions]:
        _check_name(name, strict=False)
        config = dict(config or {})
        unknown = sorted(set(config) - set(CONFIG_OPTIONS))
        if unknown:
            raise _fail(
                f"unknown -C option(s) {', '.join(unknown)}; known: {', '.join(CONFIG_OPTIONS)}"
            )
        settings = self._settings()
        env = self._environment(settings, config)
        config.pop("env", None)
        try:
            return env, DeployOptions(name=name, **config)
        except ValidationError as exc:
            problems = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors())
            raise _fail(f"invalid -C option: {problems}") from None

    def _pipeline(self, notifier: Notifier | None = None) -> Pipeline:
        from mlflow_ztml.pipeline import Pipeline

        return Pipeline(self._settings(), progress=_progress, notifier=notifier)

    def _deploy(self, name: str, model_uri: str, config: dict | None) -> dict[str, Any]:
        from mlflow_ztml.notify import Notifier

        env, options = self._options(name, config)
        notifier = Notifier(self._settings())
        try:
            outcome = self._pipeline(notifier).run(model_uri, env, options)
        except ModelNotFoundError as exc:
            raise _fail(str(exc), RESOURCE_DOES_NOT_EXIST) from None
        except ZtmlError as exc:
            raise _fail(str(exc)) from None
        finally:
            notifier.flush(notifier.flush_timeout(env))
        return _result(outcome)

    @_clean
    def create_deployment(
        self,
        name: str,
        model_uri: str,
        flavor: str | None = None,
        config: dict | None = None,
        endpoint: str | None = None,
    ) -> dict[str, Any]:
        _check_flavor(flavor)
        _check_name(name, strict=True)
        existing = self._status(name, config)
        if existing is not None and existing.state == "running":
            requested = _requested_version(model_uri)
            if requested is not None and requested != (
                existing.model_name,
                existing.model_version,
            ):
                raise _fail(
                    f"deployment {name!r} already serves {existing.model_name} "
                    f"v{existing.model_version}; use `mlflow deployments update` to change it",
                    RESOURCE_ALREADY_EXISTS,
                )
        return self._deploy(name, model_uri, config)

    @_clean
    def update_deployment(
        self,
        name: str,
        model_uri: str | None = None,
        flavor: str | None = None,
        config: dict | None = None,
        endpoint: str | None = None,
    ) -> dict[str, Any]:
        _check_flavor(flavor)
        existing = self._status(name, config)
        if existing is None:
            raise _fail(f"no deployment named {name!r} to update", RESOURCE_DOES_NOT_EXIST)
        return self._deploy(name, model_uri or existing.model_uri, config)

    @_clean
    def delete_deployment(
        self, name: str, config: dict | None = None, endpoint: str | None = None
    ) -> None:
        env, options = self._options(name, config)
        try:
            self._pipeline().delete(name, env, options.runtime)
        except ZtmlError as exc:
            raise _fail(str(exc), RESOURCE_DOES_NOT_EXIST) from None

    @_clean
    def list_deployments(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        from mlflow_ztml import status as deployment_status

        settings = self._settings()
        env = self._environment(settings, {})
        runtime = deployment_status.runtime_for(settings, env)
        return [_describe(s) for s in runtime.list() if s.environment == env]

    @_clean
    def get_deployment(self, name: str, endpoint: str | None = None) -> dict[str, Any]:
        status = self._status(name, None)
        if status is None:
            raise _fail(f"no deployment named {name!r}", RESOURCE_DOES_NOT_EXIST)
        return _describe(status)

    @_clean
    def predict(
        self, deployment_name: str | None = None, inputs: Any = None, endpoint: str | None = None
    ) -> PredictionsResponse:
        status = self._status(deployment_name or "", None)
        if status is None or not status.endpoint:
            raise _fail(f"no deployment named {deployment_name!r}", RESOURCE_DOES_NOT_EXIST)
        if status.state != "running":
            raise _fail(f"deployment {deployment_name!r} is {status.state}: {status.detail}")
        endpoint_url = status.endpoint
        body = _request_body(inputs, lambda: _input_names(endpoint_url))
        try:
            response = requests.post(f"{endpoint_url}/predict", json=body, timeout=60)
        except requests.RequestException as exc:
            raise _fail(f"cannot reach {endpoint_url}: {exc}") from None
        if response.status_code != 200:
            raise _fail(f"prediction failed ({response.status_code}): {_served_error(response)}")
        return PredictionsResponse(response.json())

    def explain(self, deployment_name: str | None = None, df: Any = None, endpoint: Any = None):
        raise _fail("ztml deployments do not support explain")

    def create_endpoint(self, name: str, config: dict | None = None) -> dict:
        raise _fail("ztml has no endpoints separate from deployments; use create_deployment")

    def update_endpoint(self, endpoint: str, config: dict | None = None) -> dict:
        raise _fail("ztml has no endpoints separate from deployments; use update_deployment")

    def delete_endpoint(self, endpoint: str) -> None:
        raise _fail("ztml has no endpoints separate from deployments; use delete_deployment")

    def list_endpoints(self) -> list:
        raise _fail("ztml has no endpoints separate from deployments; use list_deployments")

    def get_endpoint(self, endpoint: str) -> dict:
        raise _fail("ztml has no endpoints separate from deployments; use get_deployment")

    def _status(self, name: str, config: dict | None) -> DeploymentStatus | None:
        from mlflow_ztml import status as deployment_status

        env, options = self._options(name or "x", config)
        try:
            runtime = deployment_status.runtime_for(self._settings(), env, options.runtime)
            return runtime.get(name)
        except ZtmlError as exc:
            raise _fail(str(exc)) from None


def _check_name(name: str, strict: bool) -> None:
    """A new deployment's name must be a valid one (names.validate); an existing one is looked
    up only when it cannot leave the runtime's directory (names.check_lookup)."""
    try:
        (names.validate if strict else names.check_lookup)(name)
    except ZtmlError as exc:
        raise _fail(str(exc)) from None


def _check_flavor(flavor: str | None) -> None:
    if flavor not in (None, "python_function", "pyfunc"):
        raise _fail(f"ztml serves the python_function flavor; got --flavor {flavor}")


def _requested_version(model_uri: str) -> tuple[str, str] | None:
    """(name, version) when the URI pins a version; aliases and stages resolve later."""
    from mlflow_ztml.registry import ModelUri

    try:
        ref = ModelUri.parse(model_uri)
    except ModelNotFoundError:
        return None  # the pipeline reports the malformed URI
    return (ref.name, ref.version) if ref.version else None


def _describe(status: DeploymentStatus) -> dict[str, Any]:
    return {"flavor": "python_function", **status.model_dump()}


def _result(outcome: Outcome) -> dict[str, Any]:
    if outcome.status == "rejected":
        deny = outcome.decision.deny if outcome.decision else []
        reasons = "\n".join(f"  {i}. {m}" for i, m in enumerate(deny, start=1))
        raise _fail(
            f"ztml rejected {outcome.model_name} v{outcome.model_version} for "
            f"{outcome.environment} (policy deny):\n{reasons}\n"
            f"audit run: {outcome.audit_run_id}"
        )
    if outcome.status in ("failed", "rolled_back"):
        kept = (
            f"; v{outcome.previous_version} keeps serving"
            if outcome.status == "rolled_back"
            else ""
        )
        raise _fail(
            f"ztml could not deploy {outcome.model_name} v{outcome.model_version} to "
            f"{outcome.environment} ({outcome.status}{kept}): {outcome.error}"
        )
    for warning in outcome.warnings:
        print(f"ztml: warning: {warning}", file=sys.stderr)
    verb = "already serving" if outcome.status == "unchanged" else "deployed"
    print(
        f"ztml: {outcome.model_name} v{outcome.model_version} {verb} in {outcome.environment} "
        f"as {outcome.deployment}: {outcome.endpoint}"
    )
    return {
        "name": outcome.deployment,
        "flavor": "python_function",
        "endpoint": outcome.endpoint,
        "status": outcome.status,
        "model_version": outcome.model_version,
        "environment": outcome.environment,
        "audit_run_id": outcome.audit_run_id,
    }


SCORING_KEYS = ("dataframe_split", "dataframe_records", "inputs", "instances")


def _request_body(
    inputs: Any, input_names: Callable[[], set[str]] = lambda: set()
) -> dict[str, Any]:
    """A DataFrame (what `mlflow deployments predict -I` gives) or JSON-able data -> /predict.

    `mlflow deployments predict -I file.json` reads the file with `pandas.read_json`, so a file
    already in one of MLflow's scoring formats (`{"dataframe_split": ...}`, `dataframe_records`,
    `inputs`, `instances`) arrives as a one-column frame named after the key. That frame is
    turned back into the request the user wrote, unless the model really has an input of that
    name (`input_names`, read from the deployment's signature only in that ambiguous case).
    """
    import pandas as pd  # comes with mlflow

    if isinstance(inputs, pd.DataFrame):
        wrapped = _scoring_request(inputs)
        if wrapped is not None and not set(wrapped) & input_names():
            return wrapped
        frame = inputs.astype(object).where(inputs.notna(), None)  # JSON null, not NaN
        if all(isinstance(c, str) for c in frame.columns):
            return {"inputs": frame.to_dict(orient="records")}
        return {"inputs": frame.to_numpy().tolist()}
    return request_body(inputs)


def _scoring_request(frame: Any) -> dict[str, Any] | None:
    """The scoring request `pandas.read_json` flattened into `frame`, or None if it is not one.

    A JSON list under the key becomes a frame with a 0..n-1 index; a JSON object (the
    `dataframe_split` parts, or columnar `inputs`) keeps its keys as the index.
    """
    import pandas as pd

    if len(frame.columns) != 1 or frame.columns[0] not in SCORING_KEYS:
        return None
    key = frame.columns[0]
    column = frame[key].astype(object)
    values = column.where(column.notna(), None)  # JSON null, not NaN
    index = list(frame.index)
    if isinstance(frame.index, pd.RangeIndex) or index == list(range(len(index))):
        return {key: values.tolist()}
    return {key: {str(label): value for label, value in values.items()}}


def _served_error(response: requests.Response) -> str:
    """The serving error's own message (its JSON `message`), else the body, clipped."""
    try:
        message = response.json().get("message")
    except (ValueError, AttributeError):
        message = None
    return clip(str(message) if message else response.text, 1000)


def _input_names(endpoint: str) -> set[str]:
    """Names of the served model's signature inputs (empty when it has none or cannot say)."""
    try:
        info = requests.get(f"{endpoint}/model/info", timeout=10).json()
        inputs = (info.get("signature") or {}).get("inputs") or []
        return {str(spec["name"]) for spec in inputs if isinstance(spec, dict) and "name" in spec}
    except (requests.RequestException, ValueError, AttributeError, TypeError):
        return set()
