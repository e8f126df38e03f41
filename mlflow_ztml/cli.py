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
