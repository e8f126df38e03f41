"""The `ztml` command: argument parsing and output only; the work lives in the modules.

Exit codes: 0 success / allowed, 1 a policy denied, 2 usage, configuration or infrastructure
errors (MLflow unreachable, unreadable manifest, ...), each with a message saying what to fix.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from mlflow_ztml import __version__
from mlflow_ztml.config import Settings, load_settings
from mlflow_ztml.errors import ZtmlError

EXIT_DENIED = 1
EXIT_ERROR = 2


def _fail(error: ZtmlError | str) -> NoReturn:
    click.echo(f"error: {error}", err=True)
    sys.exit(EXIT_ERROR)


def _settings() -> Settings:
    try:
        return load_settings()
    except ZtmlError as exc:
        _fail(exc)


class _ZtmlGroup(click.Group):
    """Turns any ZtmlError escaping a command into `error: ...` and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ZtmlError as exc:
            _fail(exc)


@click.group(cls=_ZtmlGroup)
@click.version_option(__version__, prog_name="ztml")
def main() -> None:
    """ztml: zero-touch ML deployment for MLflow.

    Reads a model version's evidence from MLflow, gates it with Rego policies and (with the
    deploy commands) runs it as a verified inference service. Configuration: ztml.yaml
    (ZTML_CONFIG) and ZTML_* environment variables; MLflow from MLFLOW_TRACKING_URI.
    """


def _load_manifest(settings: Settings, model_uri: str | None, manifest_file: Path | None, env: str):
    from mlflow_ztml import evidence, manifest
    from mlflow_ztml.registry import Registry

    if (model_uri is None) == (manifest_file is None):
        raise click.UsageError("give exactly one of MODEL_URI or -f/--manifest FILE")
    if manifest_file is not None:
        return manifest.load(manifest_file)
    return evidence.build(Registry(settings), settings, model_uri, env)


@main.command("manifest")
@click.argument("model_uri")
@click.option("--env", "env", default=None, help="Target environment (default: local).")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the manifest here instead of stdout.",
)
def manifest_command(model_uri: str, env: str | None, output: Path | None) -> None:
    """Print the ModelDeployment manifest built from MLflow for MODEL_URI.

    MODEL_URI is models:/NAME/VERSION or models:/NAME@ALIAS.
    """
    settings = _settings()
    env = env or settings.default_environment
    document = _load_manifest(settings, model_uri, None, env).to_yaml()
    if output is None:
        click.echo(document, nl=False)
    else:
        output.write_text(document, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)


@main.command("gate")
@click.argument("model_uri", required=False)
@click.option(
    "-f",
    "--manifest",
    "manifest_file",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Judge a ModelDeployment YAML file instead of a registered model.",
)
@click.option("--env", "env", default=None, help="Target environment (default: local).")
@click.option(
    "--baseline",
    default=None,
    help="Version to compare against for regression rules (default: the version "
    "tagged as deployed in ENV).",
)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def gate_command(
    model_uri: str | None,
    manifest_file: Path | None,
    env: str | None,
    baseline: str | None,
    fmt: str,
) -> None:
    """Judge a model version (or a manifest) with the governance policy.

    Exit 0 when allowed, 1 when denied, 2 when the gate could not run.
    """
    from mlflow_ztml import evidence, gate
    from mlflow_ztml.policy.engine import make_engine
    from mlflow_ztml.registry import Registry

    settings = _settings()
    env = env or settings.default_environment
    settings.environment(env)
    if baseline is not None and model_uri is not None:
        document = evidence.build(Registry(settings), settings, model_uri, env, baseline)
    else:
        document = _load_manifest(settings, model_uri, manifest_file, env)
    decision = gate.evaluate(document, env, make_engine(settings))
    subject = model_uri or str(manifest_file)
    if fmt == "json":
        payload = {"subject": subject, "environment": env, **decision.model_dump()}
        click.echo(json.dumps(payload, indent=2))
    else:
        verdict = "ALLOW" if decision.allow else "DENY"
        click.echo(f"{verdict} {subject} for {env} (engine: {decision.engine})")
        for message in decision.deny:
            click.echo(f"  deny: {message}")
        for message in decision.warn:
            click.echo(f"  warn: {message}")
    if decision.error is not None:
        sys.exit(EXIT_ERROR)
    sys.exit(0 if decision.allow else EXIT_DENIED)


@main.group("policy")
def policy_group() -> None:
    """Work with the Rego policies."""


@policy_group.command("test")
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
def policy_test_command(directory: Path | None) -> None:
    """Run the Rego tests (test_* rules in *_test.rego) in DIRECTORY (default: shipped policies)."""
    from mlflow_ztml.policy.testing import run_policy_tests

    results = run_policy_tests(directory)
    if not results:
        _fail(f"no Rego tests found in {directory or 'the shipped policies'}")
    failed = 0
    for result in results:
        status = "PASS" if result.passed else "FAIL"
        line = f"{status} data.{result.package}.{result.name}"
        if result.error:
            line += f": {result.error}"
        click.echo(line)
        failed += not result.passed
    click.echo(f"{len(results) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


def _progress(stage: str) -> None:
    click.echo(f"  ... {stage}", err=True)


def _deploy_options(name: str | None, runtime: str | None, **values: Any):
    from mlflow_ztml.pipeline import DeployOptions

    return DeployOptions(
        name=name, runtime=runtime, **{k: v for k, v in values.items() if v is not None}
    )


_option_name = click.option("--name", default=None, help="Deployment name (default: MODEL-ENV).")
_option_env = click.option(
    "--env", "env", default=None, help="Target environment (default: local)."
)
_option_runtime = click.option(
    "--runtime",
    type=click.Choice(["process", "docker", "kubernetes"]),
    default=None,
    help="Override the environment's runtime.",
)


@main.command("deploy")
@click.argument("model_uri")
@_option_env
@_option_runtime
@_option_name
@click.option("--replicas", type=int, default=None)
@click.option("--port", type=int, default=None, help="Fixed local port (process runtime).")
@click.option("--ready-timeout", "ready_timeout_seconds", type=float, default=None)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def deploy_command(
    model_uri: str,
    env: str | None,
    runtime: str | None,
    name: str | None,
    replicas: int | None,
    port: int | None,
    ready_timeout_seconds: float | None,
    fmt: str,
) -> None:
    """Gate, deploy and verify MODEL_URI in ENV; write the outcome back to MLflow.

    Exit 0 when deployed (or already deployed), 1 when the policy rejected it, 2 when the
    deployment failed or rolled back (the previous version keeps serving).
    """
    from mlflow_ztml.notify import Notifier
    from mlflow_ztml.pipeline import Pipeline

    settings = _settings()
    env = env or settings.default_environment
    options = _deploy_options(
        name, runtime, replicas=replicas, port=port, ready_timeout_seconds=ready_timeout_seconds
    )
    notifier = Notifier(settings)
    outcome = Pipeline(settings, progress=_progress, notifier=notifier).run(model_uri, env, options)
    notifier.flush(notifier.flush_timeout(env))
    if fmt == "json":
        click.echo(outcome.model_dump_json(indent=2, exclude={"manifest"}))
    else:
        _print_outcome(outcome)
    if outcome.status == "rejected":
        sys.exit(EXIT_DENIED)
    if outcome.status in ("failed", "rolled_back"):
        sys.exit(EXIT_ERROR)


def _print_outcome(outcome: Any) -> None:
    head = f"{outcome.status.upper()} {outcome.model_name} v{outcome.model_version}"
    click.echo(
        f"{head} -> {outcome.environment} ({outcome.runtime}, deployment {outcome.deployment})"
    )
    if outcome.decision is not None:
        for message in outcome.decision.deny:
            click.echo(f"  deny: {message}")
    for message in outcome.warnings:
        click.echo(f"  warn: {message}")
    if outcome.error:
        click.echo(f"  error: {outcome.error}")
    if outcome.status == "rolled_back" and outcome.previous_version:
        click.echo(f"  v{outcome.previous_version} keeps serving")
    if outcome.endpoint:
        click.echo(f"  endpoint: {outcome.endpoint}")
    if outcome.stage_seconds:
        timings = ", ".join(f"{k} {v:.2f}s" for k, v in outcome.stage_seconds.items())
        click.echo(f"  stages: {timings}")
    if outcome.audit_run_id:
        click.echo(f"  audit run: {outcome.audit_run_id}")


@main.command("plan")
@click.argument("model_uri")
@_option_env
@_option_runtime
@_option_name
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def plan_command(
    model_uri: str, env: str | None, runtime: str | None, name: str | None, fmt: str
) -> None:
    """Show what `ztml deploy` would do, with no side effects (nothing started, no tags).

    Exit 0 when the gate would allow, 1 when it would deny.
    """
    import yaml

    from mlflow_ztml.pipeline import Pipeline

    settings = _settings()
    env = env or settings.default_environment
    outcome = Pipeline(settings).plan(model_uri, env, _deploy_options(name, runtime))
    if fmt == "json":
        click.echo(outcome.model_dump_json(indent=2))
    else:
        decision = outcome.decision
        verdict = "would deploy" if decision and decision.allow else "would be REJECTED"
        click.echo(f"{outcome.model_name} v{outcome.model_version} -> {env}: {verdict}")
        click.echo(f"  deployment: {outcome.deployment} (runtime {outcome.runtime})")
        if outcome.previous_version:
            click.echo(f"  replaces: v{outcome.previous_version}")
        if outcome.stages_skipped:
            click.echo(f"  skipped stages: {', '.join(outcome.stages_skipped)} (no image needed)")
        for message in decision.deny if decision else []:
            click.echo(f"  deny: {message}")
        for message in [*(decision.warn if decision else []), *outcome.warnings]:
            click.echo(f"  warn: {message}")
        click.echo("manifest:")
        click.echo(yaml.safe_dump(outcome.manifest, sort_keys=False))
    sys.exit(0 if outcome.decision and outcome.decision.allow else EXIT_DENIED)


@main.command("status")
@click.argument("name", required=False)
@_option_env
@_option_runtime
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def status_command(name: str | None, env: str | None, runtime: str | None, fmt: str) -> None:
    """List deployments (or show NAME) as the runtime reports them."""
    from mlflow_ztml.pipeline import DeployOptions, Pipeline

    settings = _settings()
    env = env or settings.default_environment
    target = Pipeline(settings).runtime_for(env, DeployOptions(runtime=runtime))
    if name:
        status = target.get(name)
        if status is None:
            _fail(f"no deployment named {name!r} in the {target.name} runtime")
        statuses = [status]
    else:
        statuses = target.list()
    if fmt == "json":
        click.echo(json.dumps([s.model_dump() for s in statuses], indent=2))
        return
    if not statuses:
        click.echo(f"no deployments in the {target.name} runtime")
    for status in statuses:
        click.echo(
            f"{status.name:<30} {status.state:<8} {status.model_name} v{status.model_version} "
            f"[{status.environment}] {status.endpoint or ''}"
        )
        if status.detail:
            click.echo(f"  {status.detail}")


@main.command("delete")
@click.argument("name")
@_option_env
@_option_runtime
def delete_command(name: str, env: str | None, runtime: str | None) -> None:
    """Stop and remove deployment NAME; its version is tagged `deleted` in MLflow."""
    from mlflow_ztml.pipeline import Pipeline

    settings = _settings()
    Pipeline(settings).delete(name, env or settings.default_environment, runtime)
    click.echo(f"deleted {name}")


@main.group("notify")
def notify_group() -> None:
    """Notification targets (environments.<env>.notifications in ztml.yaml)."""


@notify_group.command("test")
@_option_env
def notify_test_command(env: str | None) -> None:
    """Send a test event to every notification target of ENV and report each delivery.

    Exit 0 when every target accepted it, 1 when any failed, 2 when ENV has no targets.
    """
    from mlflow_ztml.notify import DeploymentEvent, Notifier, event_links

    settings = _settings()
    env = env or settings.default_environment
    notifier = Notifier(settings)
    if not notifier.targets(env):
        _fail(
            f"environment {env!r} has no notification targets; add environments.{env}.notifications"
        )
    event = DeploymentEvent(
        model="ztml-test", version="0", env=env, status="deployed", decision="allow", test=True
    )
    event_links(settings, event, None)
    failed = 0
    for label, delivered, problem in notifier.send_now(event):
        click.echo(f"{'OK  ' if delivered else 'FAIL'} {label}: {problem}")
        failed += not delivered
    sys.exit(1 if failed else 0)


@main.command("controller")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, type=int, show_default=True)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def controller_command(host: str, port: int, log_level: str) -> None:
    """Run the registry controller: MLflow webhooks + a reconcile loop + workers.

    Aliases, legacy stages and `ztml.deploy` version tags in the registry (see `controller:`
    in ztml.yaml) decide which version runs in which environment; the controller makes it so
    and writes the outcome back as `ztml.<env>.*` tags. The webhook secret comes from
    ZTML_WEBHOOK_SECRET (ZTML_WEBHOOK_PREVIOUS_SECRET is accepted too, during rotation).
    Endpoints: POST /webhooks/mlflow, /healthz, /readyz, /metrics, /status.
    """
    import logging

    import uvicorn

    from mlflow_ztml.controller.app import create_app
    from mlflow_ztml.controller.manager import Controller

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    controller = Controller(_settings())
    uvicorn.run(
        create_app(controller),
        host=host,
        port=port,
        log_level="warning" if log_level == "info" else log_level,
        access_log=False,
    )


@main.group("webhook")
def webhook_group() -> None:
    """Register the controller's webhook in MLflow and test it."""


_option_webhook_name = click.option(
    "--name", default=None, help="Webhook name in MLflow (default: controller.webhook_name)."
)


@webhook_group.command("register")
@click.option(
    "--url",
    required=True,
    help="Where MLflow should post, e.g. https://ztml.example.com/webhooks/mlflow "
    "(a bare base URL gets /webhooks/mlflow appended).",
)
@_option_webhook_name
def webhook_register_command(url: str, name: str | None) -> None:
    """Create or update the MLflow webhook (events and secret) that feeds the controller.

    The secret is ZTML_WEBHOOK_SECRET, the same one the controller verifies with.
    """
    from mlflow_ztml.controller import signature, webhooks
    from mlflow_ztml.registry import Registry

    settings = _settings()
    secrets = signature.secrets_from_env()
    result = webhooks.register(
        Registry(settings).client,
        url,
        secrets[0] if secrets else "",
        name or settings.controller.webhook_name,
    )
    verb = "created" if result.created else "updated"
    click.echo(f"{verb} webhook {result.name} ({result.webhook_id}) -> {result.url}")
    click.echo(f"  events: {', '.join(result.events)}")


@webhook_group.command("test")
@_option_webhook_name
@click.option(
    "--event",
    default=None,
    help="Event to simulate (default: model_version_alias.created).",
)
def webhook_test_command(name: str | None, event: str | None) -> None:
    """Ask MLflow to send its signed test delivery to the registered URL and show the answer.

    Exit 0 when the controller accepted it, 2 otherwise.
    """
    from mlflow_ztml.controller import webhooks
    from mlflow_ztml.registry import Registry

    settings = _settings()
    result = webhooks.send_test(
        Registry(settings).client, name or settings.controller.webhook_name, event
    )
    verdict = "OK" if result.success else "FAILED"
    click.echo(f"{verdict} {result.event} -> {result.url} (HTTP {result.status or '-'})")
    if result.body:
        click.echo(f"  response: {result.body[:500]}")
    if result.error:
        click.echo(f"  error: {result.error}")
    if not result.success:
        sys.exit(EXIT_ERROR)


if __name__ == "__main__":
    main()
