"""The `ztml` command: argument parsing and output only; the work lives in the modules.

Exit codes: 0 success / allowed, 1 a policy denied, 2 usage, configuration or infrastructure
errors (MLflow unreachable, unreadable manifest, ...), each with a message saying what to fix.

Output rules: an expected error is one line on stderr (`error: ...`), or, under
`--format json`, one JSON object on stdout (`{"error": ..., "error_type": ..., "exit_code":
...}`) with the same exit code; every line printed is redacted (`mlflow_ztml.redact`); log
lines go through a redacting handler (`mlflow_ztml.logs`); MLflow's deprecation warnings and
log chatter are hidden. Without MLFLOW_TRACKING_URI (or mlflow.tracking_uri), ztml says which
local store it uses, or refuses when there is none (`mlflow_ztml.store`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from mlflow_ztml import __version__, logs
from mlflow_ztml.errors import ZtmlError
from mlflow_ztml.redact import clip, redact, redact_data

if TYPE_CHECKING:
    from mlflow_ztml.config import Settings

# Import discipline (tests/test_cli_imports.py): importing this module and `ztml --help` load
# click, the standard library and ztml's light modules only. Each command imports what it
# needs inside its function, and never mlflow, torch, docker, kubernetes or pandas unless
# the work it was asked to do needs them: `ztml gate -f FILE` and `ztml status` answer in a
# fraction of a second because of it.

EXIT_DENIED = 1
EXIT_ERROR = 2
_FORMAT_KEY = "ztml.format"


def _echo(message: str = "", err: bool = False, nl: bool = True) -> None:
    """click.echo, redacted: nothing the CLI prints carries a credential."""
    click.echo(redact(message), err=err, nl=nl)


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(redact_data(data), indent=2))


def _json_requested() -> bool:
    """Whether the running command was given `--format json` (errors are then JSON too)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return False
    return ctx.params.get("fmt") == "json" or ctx.meta.get(_FORMAT_KEY) == "json"


def _fail(error: Exception | str, code: int = EXIT_ERROR) -> NoReturn:
    """Report an expected error (one line on stderr, or JSON on stdout) and exit with `code`."""
    text = error.format_message() if isinstance(error, click.ClickException) else str(error)
    message = redact(text)
    if _json_requested():
        kind = type(error).__name__ if isinstance(error, Exception) else "Error"
        click.echo(json.dumps({"error": message, "error_type": kind, "exit_code": code}, indent=2))
    else:
        click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _settings(need_registry: bool = True) -> Settings:
    """Settings with the MLflow store resolved (`store.use`): said on stderr when it is the
    implicit local default, an error when a command needs a registry and there is none."""
    from mlflow_ztml import store
    from mlflow_ztml.config import load_settings

    try:
        settings = load_settings()
        notice = store.use(settings, need_registry).notice_once()
    except ZtmlError as exc:
        _fail(exc)
    if notice:
        click.echo(notice, err=True)
    return settings


def _format_in(args: list[str]) -> str | None:
    for index, arg in enumerate(args):
        if arg == "--format" and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith("--format="):
            return arg.split("=", 1)[1]
    return None


class _ZtmlGroup(click.Group):
    """Turns any ZtmlError escaping a command into `error: ...` and exit code 2, and, under
    `--format json`, usage errors into JSON too (click would print usage text)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # the subcommand's own context is gone when its error reaches invoke(): remember here
        ctx.meta[_FORMAT_KEY] = _format_in(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ZtmlError as exc:
            _fail(exc)
        except click.ClickException as exc:
            if ctx.meta.get(_FORMAT_KEY) != "json":
                raise
            _fail(exc, exc.exit_code)


@click.group(cls=_ZtmlGroup)
@click.version_option(__version__, prog_name="ztml")
def main() -> None:
    """ztml: zero-touch ML deployment for MLflow.

    Reads a model version's evidence from MLflow, gates it with Rego policies and (with the
    deploy commands) runs it as a verified inference service. Configuration: ztml.yaml
    (ZTML_CONFIG) and ZTML_* environment variables; MLflow from MLFLOW_TRACKING_URI (unset:
    ./mlflow.db when it exists, said on stderr). Errors: one `error:` line, or JSON on stdout
    with --format json.
    """
    logs.configure("WARNING")


def _load_manifest(
    settings: Settings | None, model_uri: str | None, manifest_file: Path | None, env: str
):
    if (model_uri is None) == (manifest_file is None):
        raise click.UsageError("give exactly one of MODEL_URI or -f/--manifest FILE")
    if manifest_file is not None:
        from mlflow_ztml import manifest

        return manifest.load(manifest_file)
    from mlflow_ztml import evidence  # reads MLflow: imports it
    from mlflow_ztml.registry import Registry

    assert settings is not None
    return evidence.build(Registry(settings), settings, model_uri, env)


@main.command("manifest")
@click.argument("model_uri", required=False)
@click.option(
    "-f",
    "--manifest",
    "manifest_file",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Convert a hand-written ModelDeployment file (published or canonical form) instead.",
)
@click.option("--env", "env", default=None, help="Target environment (default: local).")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the manifest here instead of stdout.",
)
@click.option(
    "--summary",
    is_flag=True,
    default=False,
    help="Print a short evidence summary (metrics, fairness, drift, lineage, training, "
    "dependencies, signature) on stdout; with -o the full manifest is still written.",
)
def manifest_command(
    model_uri: str | None,
    manifest_file: Path | None,
    env: str | None,
    output: Path | None,
    summary: bool,
) -> None:
    """Print the canonical ModelDeployment manifest for MODEL_URI or a file.

    MODEL_URI is models:/NAME/VERSION or models:/NAME@ALIAS: the manifest is built from MLflow.
    With -f FILE, a document in the published mlifecycle.io/v1 form (or ztml's) is validated
    and written in the canonical form the gate judges.
    """
    settings = _settings() if manifest_file is None else None
    env = env or (settings.default_environment if settings else "local")
    loaded = _load_manifest(settings, model_uri, manifest_file, env)
    document = loaded.to_yaml()
    if summary:
        from mlflow_ztml.report import evidence_summary

        for line in evidence_summary(loaded.to_dict()):
            _echo(line)
        if output is not None:
            output.write_text(document, encoding="utf-8")
            _echo(f"wrote {output}", err=True)
        return
    if output is None:
        _echo(document, nl=False)
    else:
        output.write_text(document, encoding="utf-8")
        _echo(f"wrote {output}", err=True)


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

    The policy also judges whether the environment's runtime can install and load the model
    (its requirements on the build's package indexes, the packages its flavor loads with).
    Exit 0 when allowed, 1 when denied, 2 when the gate could not run.
    """
    from mlflow_ztml import gate, requirements
    from mlflow_ztml.policy.engine import make_engine

    settings = _settings(need_registry=model_uri is not None)
    env = env or settings.default_environment
    settings.environment(env)
    if baseline is not None and model_uri is not None:
        from mlflow_ztml import evidence
        from mlflow_ztml.registry import Registry

        document = evidence.build(Registry(settings), settings, model_uri, env, baseline)
    else:
        document = _load_manifest(settings, model_uri, manifest_file, env)
    runtime = document.spec.inference.runtime or settings.environment(env).runtime
    if model_uri is not None:  # can that runtime install and load the model?
        from mlflow_ztml.registry import Registry

        uri = document.spec.model.uri
        report = requirements.for_model(Registry(settings), settings, uri, runtime)
    else:
        report = requirements.for_manifest(document, settings, runtime)
    decision = gate.evaluate(document, env, make_engine(settings), report, explain=True)
    subject = model_uri or str(manifest_file)
    if fmt == "json":
        payload = {"subject": subject, "environment": env, **decision.model_dump()}
        _echo_json(payload)
    else:
        from mlflow_ztml.report import rules_text, tally

        verdict = "ALLOW" if decision.allow else "DENY"
        _echo(f"{verdict} {subject} for {env} (engine: {decision.engine})")
        for message in decision.deny:
            _echo(f"  deny: {message}")
        for message in decision.warn:
            _echo(f"  warn: {message}")
        if decision.checks:  # what was checked, also on an allow: value, threshold, result
            _echo(f"  rules: {tally(decision.checks)}")
            for line in rules_text(decision.checks):
                _echo(line)
    if decision.error is not None:
        sys.exit(EXIT_ERROR)
    sys.exit(0 if decision.allow else EXIT_DENIED)


@main.command("verify")
@click.argument("target")
@click.option("--env", "env", default=None, help="Environment to verify for (default: local).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def verify_command(target: str, env: str | None, fmt: str) -> None:
    """Check an image's signature and governance decision attestation.

    TARGET is an image reference (REGISTRY/REPO:TAG or REGISTRY/REPO@sha256:...) or a model
    version (models:/NAME/VERSION: the image ztml built for ENV). A tag is resolved to its
    digest first: what is checked is what would run. The key is signing.public_key (else
    signing.key's public half); the ztml.signature policy judges the result for ENV, as the
    runtimes do before they start an image. Exit 0 when allowed, 1 when denied, 2 when the
    check could not run.
    """
    from mlflow_ztml.policy.engine import make_engine
    from mlflow_ztml.supply_chain.verification import verify_target

    settings = _settings(need_registry=target.startswith("models:/"))
    env = env or settings.default_environment
    settings.environment(env)
    facts, decision = verify_target(settings, target, env, make_engine(settings))
    if fmt == "json":
        payload = {"target": target, "allow": decision.allow, **facts.model_dump(mode="json")}
        _echo_json({**payload, "deny": decision.deny, "warn": decision.warn})
    else:
        verdict = "DENY"
        if decision.allow:
            verdict = "ALLOW" if decision.warn else "VERIFIED"
        _echo(f"{verdict} {target} for {env}")
        if facts.digest:
            _echo(f"  digest:      {facts.digest}")
        if facts.key_id:
            _echo(f"  key:         {facts.key_id}")
        if facts.verifiable:
            _echo(f"  signature:   {facts.signature} ({facts.signature_detail})")
            _echo(f"  attestation: {facts.attestation} ({facts.attestation_detail})")
        for message in decision.deny:
            _echo(f"  deny: {message}")
        for message in decision.warn:
            _echo(f"  warn: {message}")
    if decision.error is not None:
        sys.exit(EXIT_ERROR)
    sys.exit(0 if decision.allow else EXIT_DENIED)


@main.group("keys")
def keys_group() -> None:
    """Signing keys for images and attestations."""


@keys_group.command("generate")
@click.option(
    "--out",
    "out_dir",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for ztml.key and ztml.pub (default: $ZTML_HOME/keys).",
)
@click.option("--force", is_flag=True, help="Replace an existing key pair.")
@click.option(
    "--passphrase-env",
    default=None,
    help="Encrypt the private key with the passphrase in this environment variable.",
)
def keys_generate_command(out_dir: Path | None, force: bool, passphrase_env: str | None) -> None:
    """Write an ECDSA P-256 key pair: ztml.key (PKCS#8 PEM, mode 0600) and ztml.pub.

    Point signing.key at ztml.key (or put its PEM in an environment variable and use
    env://VAR) and give ztml.pub to whoever verifies (signing.public_key, cosign verify --key,
    Kyverno, policy-controller). Exit 0 when written, 2 when not.
    """
    import os

    from mlflow_ztml.config import load_settings
    from mlflow_ztml.supply_chain.keys import generate_key_pair

    if out_dir is None:
        out_dir = load_settings().home / "keys"
    passphrase = None
    if passphrase_env:
        passphrase = os.environ.get(passphrase_env)
        if not passphrase:
            raise click.UsageError(f"--passphrase-env names {passphrase_env}, which is not set")
    keys = generate_key_pair(out_dir, passphrase.encode() if passphrase else None, force)
    _echo(f"private key: {keys.private_key} (keep it secret; mode 0600)")
    _echo(f"public key:  {keys.public_key}")
    _echo(f"key id:      {keys.key_id}")
    _echo(f"use it: signing: {{key: {keys.private_key}}} in ztml.yaml, or ZTML_SIGNING__KEY")


@main.group("policy")
def policy_group() -> None:
    """Work with the Rego policies."""


@policy_group.command("test")
@click.argument(
    "directories", nargs=-1, type=click.Path(file_okay=False, path_type=Path), metavar="[DIR]..."
)
@click.option(
    "--engine",
    "engine",
    type=click.Choice(["auto", "regorus", "opa", "both"]),
    default="auto",
    show_default=True,
    help="Engines to run the tests under: auto = regorus (ztml's default) and, when "
    "installed, OPA's own engine; both = require OPA's engine.",
)
def policy_test_command(directories: tuple[Path, ...], engine: str) -> None:
    """Run the Rego tests (test_* rules in *_test.rego) of each DIR (default: ztml's policies).

    With OPA's engine installed every test runs under regorus and OPA; a test the engines
    answer differently fails as a disagreement showing each engine's result.
    Exit 0 when every test passed under every engine, 1 on a failure or disagreement,
    2 when the tests could not run (no tests, unreadable directory, engine missing).
    """
    from mlflow_ztml.policy.testing import run_policy_tests, select_engines

    engines = select_engines(engine)
    failed = total = 0
    for directory in directories or (None,):
        results = run_policy_tests(directory, engines=engines)
        if len(directories) > 1:
            _echo(f"# {directory}")
        for result in results:
            status = "PASS" if result.passed else "DISAGREE" if result.disagreement else "FAIL"
            line = f"{status} data.{result.package}.{result.name}"
            if result.error:
                line += f": {result.error}"
            _echo(line)
        total += len(results)
        failed += sum(not result.passed for result in results)
    disagreed = "" if len(engines) == 1 else " (engines: " + ", ".join(engines) + ")"
    _echo(f"{total - failed} passed, {failed} failed{disagreed}")
    sys.exit(1 if failed else 0)


def _progress(stage: str) -> None:
    _echo(f"  ... {stage}", err=True)


def _deploy_options(name: str | None, runtime: str | None, **values: Any):
    """DeployOptions from the command line; a value out of range is a usage error (exit 2)."""
    from pydantic import ValidationError

    from mlflow_ztml.pipeline import DeployOptions

    try:
        return DeployOptions(
            name=name, runtime=runtime, **{k: v for k, v in values.items() if v is not None}
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"--{str(e['loc'][0]).replace('_', '-')}: {e['msg']}" if e["loc"] else e["msg"]
            for e in exc.errors()
        )
        raise click.UsageError(problems) from None


_option_name = click.option(
    "--name",
    default=None,
    help="Deployment name: 1-53 of a-z, 0-9, '-' (default: MODEL-ENV). A name that another "
    "model's deployment uses is refused.",
)
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
@click.option(
    "--response-format",
    type=click.Choice(["ztml", "mlifecycle"]),
    default=None,
    help="/predict answers: ztml (default) or the published mlifecycle contract.",
)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def deploy_command(
    model_uri: str,
    env: str | None,
    runtime: str | None,
    name: str | None,
    replicas: int | None,
    port: int | None,
    ready_timeout_seconds: float | None,
    response_format: str | None,
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
        name,
        runtime,
        replicas=replicas,
        port=port,
        ready_timeout_seconds=ready_timeout_seconds,
        response_format=response_format,
    )
    notifier = Notifier(settings)
    outcome = Pipeline(settings, progress=_progress, notifier=notifier).run(model_uri, env, options)
    notifier.flush(notifier.flush_timeout(env))
    if fmt == "json":
        _echo_json(outcome.model_dump(mode="json", exclude={"manifest"}))
    else:
        _print_outcome(outcome)
    if outcome.status == "rejected":
        sys.exit(EXIT_DENIED)
    if outcome.status in ("failed", "rolled_back"):
        sys.exit(EXIT_ERROR)


def _print_outcome(outcome: Any) -> None:
    head = f"{outcome.status.upper()} {outcome.model_name} v{outcome.model_version}"
    _echo(f"{head} -> {outcome.environment} ({outcome.runtime}, deployment {outcome.deployment})")
    if outcome.decision is not None:
        for message in outcome.decision.deny:
            _echo(f"  deny: {message}")
    for message in outcome.warnings:
        _echo(f"  warn: {message}")
    if outcome.error:
        _echo(f"  error: {outcome.error}")
    if outcome.status == "rolled_back" and outcome.previous_version:
        _echo(f"  v{outcome.previous_version} keeps serving")
    if outcome.endpoint:
        _echo(f"  endpoint: {outcome.endpoint}")
    if outcome.stage_seconds:
        timings = ", ".join(f"{k} {v:.2f}s" for k, v in outcome.stage_seconds.items())
        _echo(f"  stages: {timings}")
    if outcome.audit_run_id:
        _echo(f"  audit run: {outcome.audit_run_id}")
    for label, url in getattr(outcome, "links", {}).items():  # MLflow UI, when it has one
        _echo(f"  {label}: {url}")


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
        _echo_json(outcome.model_dump(mode="json"))
    else:
        decision = outcome.decision
        verdict = "would deploy" if decision and decision.allow else "would be REJECTED"
        _echo(f"{outcome.model_name} v{outcome.model_version} -> {env}: {verdict}")
        _echo(f"  deployment: {outcome.deployment} (runtime {outcome.runtime})")
        if outcome.previous_version:
            _echo(f"  replaces: v{outcome.previous_version}")
        if outcome.stages_skipped:
            _echo(f"  skipped stages: {', '.join(outcome.stages_skipped)} (no image needed)")
        for message in decision.deny if decision else []:
            _echo(f"  deny: {message}")
        for message in [*(decision.warn if decision else []), *outcome.warnings]:
            _echo(f"  warn: {message}")
        _echo("manifest:")
        _echo(yaml.safe_dump(outcome.manifest, sort_keys=False))
    sys.exit(0 if outcome.decision and outcome.decision.allow else EXIT_DENIED)


@main.command("status")
@click.argument("name", required=False)
@_option_env
@_option_runtime
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def status_command(name: str | None, env: str | None, runtime: str | None, fmt: str) -> None:
    """List deployments (or show NAME) as the runtime reports them.

    With --env, only that environment's deployments. A deployment found dead is marked
    `failed` in MLflow (best effort); one whose state file is unreadable shows as `unknown`.
    """
    from mlflow_ztml import status as deployment_status

    settings = _settings()
    statuses = deployment_status.find(settings, env, runtime, name)
    if any(deployment_status.needs_record(status) for status in statuses):
        from mlflow_ztml.pipeline import Pipeline  # MLflow, only to record a dead server

        Pipeline(settings).record_dead(statuses)
    if name and not statuses:
        target = deployment_status.runtime_for(
            settings, env or settings.default_environment, runtime
        )
        where = f" in {env}" if env else ""
        _fail(f"no deployment named {name!r}{where} in the {target.name} runtime")
    if fmt == "json":
        _echo_json([s.model_dump() for s in statuses])
        return
    if not statuses:
        where = f" of {env}" if env else ""
        _echo(f"no deployments{where}")
    for status in statuses:
        _echo(
            f"{status.name:<30} {status.state:<8} {status.model_name} v{status.model_version} "
            f"[{status.environment}] {status.endpoint or ''}"
        )
        if status.detail:
            _echo(f"  {status.detail}")


@main.command("delete")
@click.argument("name")
@_option_env
@_option_runtime
def delete_command(name: str, env: str | None, runtime: str | None) -> None:
    """Stop and remove deployment NAME; its version is tagged `deleted` in MLflow."""
    from mlflow_ztml.pipeline import Pipeline

    settings = _settings()
    Pipeline(settings).delete(name, env or settings.default_environment, runtime)
    _echo(f"deleted {name}")


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

    settings = _settings(need_registry=False)
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
        _echo(f"{'OK  ' if delivered else 'FAIL'} {label}: {problem}")
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
    Endpoints: POST /webhooks/mlflow, /healthz, /readyz, /metrics, /status (JSON), and / (the
    same status as a page for people).
    """
    import uvicorn

    from mlflow_ztml.controller.app import create_app
    from mlflow_ztml.controller.manager import Controller

    logs.configure(log_level.upper(), logs.LOG_FORMAT)
    controller = Controller(_settings())
    uvicorn.run(
        create_app(controller),
        host=host,
        port=port,
        log_level="warning" if log_level == "info" else log_level,
        log_config=None,  # uvicorn's loggers propagate to ztml's redacting handler
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
    _echo(f"{verb} webhook {result.name} ({result.webhook_id}) -> {result.url}")
    _echo(f"  events: {', '.join(result.events)}")


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
    _echo(f"{verdict} {result.event} -> {result.url} (HTTP {result.status or '-'})")
    if result.body:
        _echo(f"  response: {clip(result.body, 500)}")
    if result.error:
        _echo(f"  error: {result.error}")
    if not result.success:
        sys.exit(EXIT_ERROR)


if __name__ == "__main__":
    main()
