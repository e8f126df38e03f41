"""`python -m serving --model-uri URI [--host H] [--port P] ...` (flags or SERVING_* env vars).

Runs one uvicorn worker (scale with replicas: the model and its memory are per process) with
uvloop/httptools when installed. SIGTERM stops accepting connections and drains in-flight
requests for up to the request timeout before exiting. Exit code 1 when the model cannot be
loaded or warmed up, so orchestrators see a failed start instead of a never-ready pod.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Sequence

import uvicorn

from serving import logs
from serving.app import create_app
from serving.config import load_settings

log = logging.getLogger("serving")


class _Server(uvicorn.Server):
    """uvicorn server that marks the app as stopping (/ready -> 503) as soon as a signal comes
    and, after a graceful drain on SIGTERM, exits 0 instead of re-raising the signal."""

    state = None

    def handle_exit(self, sig: int, frame: object) -> None:
        if self.state is not None and self.state.status == "ready":
            self.state.status = "stopping"
        super().handle_exit(sig, frame)  # type: ignore[arg-type]
        captured = getattr(self, "_captured_signals", None)
        if sig == signal.SIGTERM and captured and captured[-1] == sig:
            captured.pop()


def main(argv: Sequence[str] | None = None) -> int:
    settings = load_settings(argv)
    logs.configure(settings.log_level)
    server: _Server | None = None

    def fatal() -> None:
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_fatal=fatal)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        log_level=settings.log_level,
        access_log=False,  # our own JSON access log (SERVING_ACCESS_LOG) carries request ids
        server_header=False,
        proxy_headers=False,
        lifespan="on",
        backlog=2048,
        timeout_keep_alive=75,  # longer than common load-balancer idle timeouts (60 s)
        timeout_graceful_shutdown=int(settings.request_timeout_seconds) + 5,
    )
    server = _Server(config)
    server.state = app.state.serving
    log.info(
        "starting",
        extra={
            "model_uri": settings.model_uri,
            "host": settings.host,
            "port": settings.port,
            "batching": settings.batching,
            "max_batch_size": settings.max_batch_size,
            "max_batch_delay_ms": settings.max_batch_delay_ms,
        },
    )
    server.run()
    return 1 if app.state.serving.status == "failed" else 0


if __name__ == "__main__":
    sys.exit(main())
