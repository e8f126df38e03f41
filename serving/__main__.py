"""`python -m serving --model-uri URI [--host H] [--port P] ...` (flags or SERVING_* env vars).

Runs one uvicorn worker (scale with replicas: the model and its memory are per process) with
uvloop/httptools when installed.

SIGTERM drains: `/ready` answers 503 at once (load balancers stop sending), while every request
already received (and any that still arrives) is answered as usual, with `Connection: close` so
keep-alive clients reconnect elsewhere. The server stops listening and exits 0 once no request
has been in flight for one whole tick (0.1 s: requests read from the socket but not yet parsed
show up within it), or when `SERVING_SHUTDOWN_GRACE_SECONDS` have passed, whichever is first.
A second SIGTERM (or SIGINT) stops at once, waiting only for requests already running.

With `--grpc-port` (`SERVING_GRPC_PORT`) the Open Inference Protocol is also served over gRPC,
from this process, event loop and loaded model (`serving.grpc`). It starts once uvicorn has
started and drains with it: the drain waits until neither protocol has a call in flight, then
the gRPC server stops (running calls get what is left of the grace period) before the model and
batcher are released. A gRPC port that cannot be bound fails the start (exit 1).

Exit code 1 when the model cannot be loaded or warmed up, so orchestrators see a failed start
instead of a never-ready pod; the reason (exception type and message, redacted) is then the last
line on stderr, so a runtime that shows "last log lines" shows why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import uvicorn

from serving import logs
from serving.app import create_app
from serving.config import load_settings
from serving.redact import one_line
from serving.state import ServerState

log = logging.getLogger("serving")


class _Server(uvicorn.Server):
    """uvicorn server that drains on the first SIGTERM (see the module docstring)."""

    def __init__(
        self,
        config: uvicorn.Config,
        state: ServerState,
        grace_seconds: float,
        grpc_port: int = 0,
    ) -> None:
        super().__init__(config)
        self.state = state
        self.grace_seconds = grace_seconds
        self.grpc_port = grpc_port
        self.grpc: Any = None  # serving.grpc.server.GrpcServer once started
        self.drain_deadline: float | None = None
        self._announced = False
        self._idle_at: int | None = None  # requests seen when the last tick found none running

    def handle_exit(self, sig: int, frame: object) -> None:
        """Runs in the signal handler: only sets flags; `on_tick` does the work."""
        if self.state.status in ("ready", "loading"):
            self.state.status = "stopping"  # /ready -> 503 before anything else happens
        if sig == signal.SIGTERM and self.drain_deadline is None and not self.should_exit:
            self.drain_deadline = time.monotonic() + self.grace_seconds
            return
        super().handle_exit(sig, frame)  # type: ignore[arg-type]
        captured = self._captured_signals
        if sig == signal.SIGTERM and captured and captured[-1] == sig:
            captured.pop()  # a drained SIGTERM exits 0 instead of re-raising the signal

    async def startup(self, sockets: list | None = None) -> None:
        """uvicorn's startup, then the gRPC server on the same event loop (when a port is set)."""
        await super().startup(sockets=sockets)
        if self.should_exit or not self.grpc_port:
            return
        try:
            from serving.grpc.server import GrpcServer  # grpcio only when gRPC is asked for

            grpc_server = GrpcServer(self.state, self.config.host, self.grpc_port)
            await grpc_server.start()
        except (ImportError, RuntimeError) as exc:
            self.state.status = "failed"
            self.state.error = f"gRPC (SERVING_GRPC_PORT={self.grpc_port}): {one_line(exc)}"
            log.error("cannot serve gRPC: %s", exc)
            self.should_exit = True
            return
        self.grpc = grpc_server

    async def shutdown(self, sockets: list | None = None) -> None:
        """Stop gRPC within the grace period left, then uvicorn's shutdown (which releases the
        model and batcher, so no gRPC call may still be running by then)."""
        if self.grpc is not None:
            grace = float(self.config.timeout_graceful_shutdown or 0)
            with contextlib.suppress(asyncio.CancelledError):
                await self.grpc.stop(grace)
        await super().shutdown(sockets=sockets)

    def _grpc_calls(self) -> tuple[int, int]:
        """(in flight, received so far) on the gRPC port; zeros without gRPC."""
        plane = self.grpc.plane if self.grpc is not None else None
        return (plane.in_flight, plane.total) if plane is not None else (0, 0)

    async def on_tick(self, counter: int) -> bool:
        if await super().on_tick(counter):
            return True
        return self.drain_deadline is not None and self._drained()

    def _drained(self) -> bool:
        """True once nothing ran during a whole tick, or the grace period is over."""
        assert self.drain_deadline is not None
        grpc_running, grpc_seen = self._grpc_calls()
        running = len(self.server_state.tasks) + grpc_running
        if not self._announced:
            self._announced = True
            self.state.metrics.ready.set(0)
            log.info(
                "SIGTERM: draining",
                extra={"in_flight": running, "grace_seconds": self.grace_seconds},
            )
        left = self.drain_deadline - time.monotonic()
        if left <= 0:
            log.warning(
                "grace period over (SERVING_SHUTDOWN_GRACE_SECONDS): stopping",
                extra={"in_flight": running},
            )
            self.config.timeout_graceful_shutdown = 0
            return True
        seen = self.server_state.total_requests + grpc_seen
        if running:
            self._idle_at = None
            return False
        if self._idle_at != seen:
            self._idle_at = seen  # idle now: exit if still idle, with no new request, next tick
            return False
        log.info("drained: stopping", extra={"requests": seen})
        self.config.timeout_graceful_shutdown = max(int(left), 1)
        return True


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until stopped; 0 after a drain, 1 when the model cannot be served."""
    settings = load_settings(argv)
    logs.configure(settings.log_level)
    # A served model makes no calls home: MLflow's usage telemetry stays off unless asked for.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
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
        timeout_graceful_shutdown=max(int(settings.shutdown_grace_seconds), 1),
    )
    state: ServerState = app.state.serving
    server = _Server(config, state, settings.shutdown_grace_seconds, settings.grpc_port)
    log.info(
        "starting",
        extra={
            "model_uri": settings.model_uri,
            "host": settings.host,
            "port": settings.port,
            "grpc_port": settings.grpc_port or None,
            "batching": settings.batching,
            "max_batch_size": settings.max_batch_size,
            "max_batch_delay_ms": settings.max_batch_delay_ms,
        },
    )
    server.run()
    if state.status == "failed":
        _fail(state.error or "the model could not be loaded")
        return 1
    return 0


def _fail(reason: str) -> None:
    """The one line a runtime's "last log lines" must show: why serving did not start."""
    print(f"serving: cannot start: {reason}", file=sys.stderr, flush=True)


def _exit_past_stuck_model(code: int) -> None:
    """Exit now if a model call outlived the grace period: Python would otherwise wait for the
    inference thread at exit, and a stuck model would keep the process alive forever."""
    stuck = [t for t in threading.enumerate() if t.name.startswith("inference")]
    for thread in stuck:
        thread.join(timeout=1.0)  # an idle worker leaves at once; a busy one keeps running
    if any(t.is_alive() for t in stuck):
        if code == 0:  # after a failed start, the reason stays the last line (see `_fail`)
            log.warning("a model call is still running after the grace period: abandoned")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run(argv: Sequence[str] | None = None) -> int:
    """`main`, with an unexpected error reported as one redacted line instead of a traceback."""
    try:
        code = main(argv)
    except Exception as exc:
        logging.getLogger("serving").error("cannot start", exc_info=exc)
        _fail(one_line(exc))
        return 1
    _exit_past_stuck_model(code)
    return code


if __name__ == "__main__":
    sys.exit(run())
