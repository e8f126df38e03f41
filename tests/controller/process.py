"""A real `ztml controller` process and the MLflow server settings webhooks need, shared by
the controller's end-to-end tests and benchmarks/controller_bench.py."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
from cryptography.fernet import Fernet
from prometheus_client.parser import text_string_to_metric_families

from tests.controller.helpers import SECRET
from tests.mlflow_server import free_port

# What `mlflow server` needs to deliver webhooks to a loopback receiver (ENVIRONMENT.md).
WEBHOOK_ENV = {
    "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
    "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
    "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    "MLFLOW_WEBHOOK_CACHE_TTL": "1",
}


class ControllerProcess:
    """`python -m mlflow_ztml.cli controller` in its own process group, on a fixed port so a
    restarted controller keeps the webhook URL."""

    def __init__(self, home: Path, tracking_uri: str) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = home / "controller.log"
        self.env = {
            **os.environ,
            "ZTML_HOME": str(home / "ztml-home"),
            "ZTML_CONFIG": str(home / "ztml.yaml"),
            "MLFLOW_TRACKING_URI": tracking_uri,
            "ZTML_WEBHOOK_SECRET": SECRET,
            "PYTHONUNBUFFERED": "1",
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> ControllerProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow_ztml.cli",
                "controller",
                "--port",
                str(self.port),
                "--log-level",
                "info",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.home,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"controller exited:\n{self.log()[-3000:]}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.2)
        raise RuntimeError(f"controller not ready in {timeout} s:\n{self.log()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no clean-up, no lease release, no draining (a crashed pod)."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metric(self, name: str, **labels: str) -> float:
        text = requests.get(f"{self.url}/metrics", timeout=5).text
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    total += sample.value
        return total
