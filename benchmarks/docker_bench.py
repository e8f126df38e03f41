"""Image build, push and docker-runtime timings, and image size against MLflow's own image.

Needs a Docker engine, a registry and a base image: run `eval "$(../shared/ci/docker-up)"`
first (or set DOCKER_HOST, ZTML_TEST_REGISTRY and ZTML_TEST_BASE_IMAGE yourself).

    .venv/bin/python benchmarks/docker_bench.py [--skip-mlflow-image] [--json out.json]

What it measures, on one real `mlflow server` and one sklearn model (pinned requirements):
- cold build: v1 with `build.no_cache` (every layer rebuilt, requirements from PyPI);
- warm build: v2, a new version with the same requirements (only the model layer is new);
- push: v1 (all layers) and v2 (the model layer; the rest already in the registry);
- create -> first /predict: the docker runtime starting v1 until its first answer;
- first pipeline deploy: v2 through the whole pipeline (replacing v1; trivy's cache is cold);
- warm redeploy: the whole pipeline for v3 (same requirements) on the docker runtime, from
  `Pipeline.run` to the first /predict on the new container (evidence, gate, build, push,
  scan, deploy, verify, switch) — target under 30 s;
- image size: ours against `mlflow models generate-dockerfile` built on the same base image
  (its FROM replaced; a venv stands in for the python image's global pip, since Debian's
  python refuses system-wide pip installs) — target at most half.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlflow_ztml.build import BuildRequest, ImageBuilder  # noqa: E402
from mlflow_ztml.config import BuildConfig, ScanConfig, Settings  # noqa: E402
from mlflow_ztml.runtimes.base import DeploymentSpec  # noqa: E402
from mlflow_ztml.runtimes.docker import DockerRuntime  # noqa: E402
from tests.docker_support import MODEL, ROW, register  # noqa: E402
from tests.mlflow_server import MlflowServer  # noqa: E402

NAME = "bench-credit"


def _env() -> tuple[str, str]:
    registry = os.environ.get("ZTML_TEST_REGISTRY")
    base = os.environ.get("ZTML_TEST_BASE_IMAGE")
    if not (os.environ.get("DOCKER_HOST") and registry and base):
        sys.exit('no Docker engine: run eval "$(../shared/ci/docker-up)" first')
    return registry, base


def _settings(home: Path, registry: str, base: str, **build: object) -> Settings:
    return Settings(
        home=home,
        build=BuildConfig(base_image=base, registry=registry, repository="ztml-bench", **build),
        scan=ScanConfig(cache_dir=Path(tempfile.gettempdir()) / "ztml-bench-trivy"),
    )


def _first_predict(endpoint: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if (
                requests.post(f"{endpoint}/predict", json={"inputs": [ROW]}, timeout=5).status_code
                == 200
            ):
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{endpoint} never answered /predict")


def _mlflow_image(model_dir: Path, base: str, work: Path) -> tuple[int | None, str]:
    """Build `mlflow models generate-dockerfile`'s image on `base`; (size, note)."""
    import docker

    out = work / "mlflow-dockerfile"
    subprocess.run(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "models",
            "generate-dockerfile",
            "-m",
            str(model_dir),
            "-d",
            str(out),
            "--env-manager",
            "local",
        ],
        check=True,
        capture_output=True,
    )
    dockerfile = out / "Dockerfile"
    text = dockerfile.read_text()
    text = re.sub(
        r"^FROM .*$",
        f"FROM {base}\nRUN python -m venv /opt/venv\nENV PATH=/opt/venv/bin:$PATH",
        text,
        count=1,
        flags=re.M,
    )
    dockerfile.write_text(text)
    client = docker.from_env(timeout=1800)
    started = time.monotonic()
    try:
        image, _ = client.images.build(path=str(out), tag="ztml-bench/mlflow-image:latest", rm=True)
    except docker.errors.BuildError as exc:
        tail = " | ".join(
            str(c.get("stream", c.get("error", ""))).strip() for c in list(exc.build_log)[-5:]
        )
        return None, f"mlflow's Dockerfile did not build here: {tail[:500]}"
    return int(image.attrs["Size"]), f"built in {time.monotonic() - started:.0f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-mlflow-image", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    registry, base = _env()
    results: dict[str, object] = {"machine": f"{os.cpu_count()} cores", "base_image": base}
    work = Path(tempfile.mkdtemp(prefix="ztml-docker-bench-"))
    server = MlflowServer(work / "mlflow").start()
    os.environ["MLFLOW_TRACKING_URI"] = server.url
    runtime = DockerRuntime(work / "docker", stop_grace_seconds=5)
    try:
        versions = [register(server.url) for _ in range(3)]

        def request(version: str) -> BuildRequest:
            return BuildRequest(model_name=MODEL, model_version=version, environment="local")

        cold = ImageBuilder(_settings(work, registry, base, no_cache=True)).build(
            request(versions[0])
        )
        warm = ImageBuilder(_settings(work, registry, base)).build(request(versions[1]))
        results["cold_build_s"] = cold.seconds["build"]
        results["cold_push_s"] = cold.seconds["push"]
        results["warm_build_s"] = warm.seconds["build"]
        results["warm_push_s"] = warm.seconds["push"]
        results["warm_context_s"] = warm.seconds["context"]
        results["layers_shared"] = sum(
            a == b for a, b in zip(cold.layers, warm.layers, strict=False)
        )
        results["layers_total"] = len(warm.layers)
        results["image_size_mb"] = round(cold.size_bytes / 1e6, 1)

        spec = DeploymentSpec(
            name=NAME,
            environment="local",
            model_name=MODEL,
            model_version=versions[0],
            model_uri=f"models:/{MODEL}/{versions[0]}",
            image=cold.reference,
            cpu="1",
            memory="1Gi",
        )
        started = time.monotonic()
        status, _ = runtime.deploy(spec, lambda s: None)
        _first_predict(status.endpoint)
        results["create_to_first_predict_s"] = round(time.monotonic() - started, 2)

        from mlflow_ztml.pipeline import DeployOptions, Pipeline

        settings = _settings(work, registry, base)
        settings.environments["local"].runtime = "docker"
        pipeline = Pipeline(settings)
        # v2 through the whole pipeline first: what served before, and trivy's layer cache.
        started = time.monotonic()
        first = pipeline.run(f"models:/{MODEL}/{versions[1]}", "local", DeployOptions(name=NAME))
        if first.status != "deployed":
            raise RuntimeError(f"pipeline: {first.status}: {first.error}")
        results["first_pipeline_deploy_s"] = round(time.monotonic() - started, 2)
        results["first_pipeline_stages_s"] = first.stage_seconds
        started = time.monotonic()
        outcome = pipeline.run(f"models:/{MODEL}/{versions[2]}", "local", DeployOptions(name=NAME))
        if outcome.status != "deployed":
            raise RuntimeError(f"pipeline: {outcome.status}: {outcome.error}")
        _first_predict(outcome.endpoint)
        results["warm_redeploy_s"] = round(time.monotonic() - started, 2)
        results["warm_redeploy_stages_s"] = outcome.stage_seconds

        if not args.skip_mlflow_image:
            import mlflow.artifacts

            model_dir = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=f"models:/{MODEL}/{versions[0]}", dst_path=str(work / "model")
                )
            )
            size, note = _mlflow_image(model_dir, base, work)
            results["mlflow_image_size_mb"] = round(size / 1e6, 1) if size else None
            results["mlflow_image_note"] = note
            if size:
                results["size_ratio"] = round(cold.size_bytes / size, 3)
    finally:
        import contextlib

        with contextlib.suppress(Exception):
            runtime.delete(NAME)
        server.stop()
    results["targets"] = {
        "warm_redeploy_under_30s": results.get("warm_redeploy_s", 1e9) < 30,  # type: ignore[operator]
        "image_at_most_half_of_mlflow": (results.get("size_ratio") or 1) <= 0.5,  # type: ignore[operator]
    }
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
