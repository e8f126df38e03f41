"""SIGTERM drains: every request received before the signal is answered, `/ready` is 503 from the
signal on, the process exits 0 once drained, or once `SERVING_SHUTDOWN_GRACE_SECONDS` are over.

Both tests run a real `python -m serving` on the `gate` model (conftest.GATE_MODEL_CODE): a row
with `hold` > 0 makes the model wait until the test creates `$GATE_DIR/release`, so requests are
provably in flight at the signal without timing anything.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serving.conftest import Server, wait_ready

pytestmark = pytest.mark.slow
QUEUED = 30  # requests waiting in the server's socket buffers when SIGTERM comes


@pytest.fixture(scope="module")
def gate_servers(model_dirs: dict[str, Path], tmp_path_factory) -> Iterator[dict[str, Server]]:
    """`inline`: the model runs on the event loop, so a held call blocks reading new requests,
    the state in which the old server answered 503 to what it had already received. `threaded`:
    the model runs on the inference thread and SIGTERM's grace period is 5 s."""
    tmp = tmp_path_factory.mktemp("drain")
    specs = {
        "inline": {"SERVING_INLINE_INFERENCE": "on", "SERVING_SHUTDOWN_GRACE_SECONDS": "60"},
        "threaded": {"SERVING_INLINE_INFERENCE": "off", "SERVING_SHUTDOWN_GRACE_SECONDS": "5"},
    }
    started = {}
    for name, env in specs.items():
        gate = tmp / f"gate-{name}"
        gate.mkdir()
        started[name] = Server(
            f"gate-{name}",
            str(model_dirs["gate"]),
            tmp,
            {**env, "GATE_DIR": str(gate), "SERVING_MAX_BATCH_DELAY_MS": "0"},
        )
        started[name].gate = gate  # type: ignore[attr-defined]
    try:
        wait_ready(list(started.values()))
        yield started
    finally:
        for server in started.values():
            server.stop()


def send_raw(port: int, method: str, path: str, body: dict | None = None) -> socket.socket:
    """Send one whole HTTP/1.1 request on a new connection and return it, unread."""
    data = json.dumps(body).encode() if body is not None else b""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    sock.sendall(head.encode() + data)
    return sock


def read_raw(sock: socket.socket) -> tuple[int | None, dict]:
    """(status, JSON body) of the answer; (None, {}) when the server dropped the connection."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except OSError:
        pass
    finally:
        sock.close()
    raw = b"".join(chunks)
    if not raw:
        return None, {}
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body.strip() else {}


def wait_for(predicate, what: str, proc) -> None:
    """Poll until `predicate()`; fail (not hang) if the server process died meanwhile."""
    for _ in range(12000):
        if predicate():
            return
        assert proc.poll() is None, f"server exited {proc.returncode} while waiting for {what}"
        threading.Event().wait(0.01)
    raise AssertionError(f"gave up waiting for {what}")


def signal_delivered(pid: int, sig: int) -> bool:
    """The kernel no longer holds `sig` pending for the process: its handler has run (Linux
    delivers a process signal to the main thread, which runs Python's handler before any more
    of the model's loop)."""
    bit = 1 << (sig - 1)
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("SigPnd", "ShdPnd") and int(value.strip(), 16) & bit:
            return False
    return True


def test_sigterm_answers_every_request_already_received(gate_servers) -> None:
    server = gate_servers["inline"]
    gate: Path = server.gate  # type: ignore[attr-defined]
    held = send_raw(server.port, "POST", "/predict", {"inputs": [{"x": 0.5, "hold": 1.0}]})
    wait_for((gate / "entered").exists, "the held call", server.proc)
    # the event loop is blocked in the model: these sit in the socket buffers, unread
    queued = [
        send_raw(server.port, "POST", "/predict", {"inputs": [{"x": float(i)}]})
        for i in range(QUEUED)
    ]
    ready = send_raw(server.port, "GET", "/ready")
    server.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: signal_delivered(server.proc.pid, signal.SIGTERM), "SIGTERM", server.proc)
    (gate / "release").touch()

    status, body = read_raw(held)
    assert (status, body["predictions"]) == (200, [{"y": 1.0}])
    answers = [read_raw(sock) for sock in queued]
    statuses = [status for status, _ in answers]
    assert statuses == [200] * QUEUED, statuses  # the old server: 503 (or a reset) for these
    assert [body["predictions"] for _, body in answers] == [[{"y": 2.0 * i}] for i in range(QUEUED)]
    status, body = read_raw(ready)
    assert (status, body["status"]) == (503, "stopping")  # load balancers stop sending at once
    assert server.proc.wait(60) == 0
    log = server.log()
    assert "SIGTERM: draining" in log and "drained: stopping" in log


def test_sigterm_grace_period_bounds_the_drain(gate_servers) -> None:
    """/ready is 503 and the server still answers while a call runs; when the call outlives
    SERVING_SHUTDOWN_GRACE_SECONDS (5 s here) the process exits 0 anyway."""
    server = gate_servers["threaded"]
    gate: Path = server.gate  # type: ignore[attr-defined]
    held = send_raw(server.port, "POST", "/predict", {"inputs": [{"x": 1.0, "hold": 1.0}]})
    wait_for((gate / "entered").exists, "the held call", server.proc)
    server.proc.send_signal(signal.SIGTERM)

    def ready_is_503() -> bool:
        res = httpx.get(server.url + "/ready", timeout=30)
        return res.status_code == 503

    wait_for(ready_is_503, "/ready 503", server.proc)
    res = httpx.get(server.url + "/ready", timeout=30)
    assert res.json()["status"] == "stopping"
    assert res.headers["connection"] == "close"  # keep-alive clients go elsewhere
    assert httpx.get(server.url + "/health", timeout=30).status_code == 200  # still answering
    assert server.proc.wait(60) == 0  # the held call never finished: the grace period ended it
    assert not (gate / "release").exists()
    status, body = read_raw(held)
    assert status == 503 and "SERVING_SHUTDOWN_GRACE_SECONDS" in body["message"]
    assert "grace period over" in server.log()
