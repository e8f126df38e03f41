"""Helpers shared by the pipeline, runtime and plugin tests."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import requests

from mlflow_ztml.config import load_settings
from mlflow_ztml.runtimes import get_runtime


def process_runtime():
    return get_runtime("process", load_settings())


@dataclass
class TrafficLoop:
    """Sends /predict requests until stopped, re-resolving the endpoint before each request,
    as a client of the deployment name (the plugin's predict) does."""

    name: str
    body: dict
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> TrafficLoop:
        runtime = process_runtime()

        def loop() -> None:
            while not self._stop.is_set():
                status = runtime.get(self.name)
                try:
                    response = requests.post(
                        f"{status.endpoint}/predict", json=self.body, timeout=10
                    )
                    if response.status_code == 200:
                        self.ok += 1
                    else:
                        self.failures.append(f"{response.status_code}: {response.text[:200]}")
                except requests.RequestException as exc:
                    self.failures.append(repr(exc))
                time.sleep(0.01)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=15)
