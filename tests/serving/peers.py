"""Peer venvs: other projects' clients, each in a venv of its own, made by pip and cached.

Some clients cannot be installed beside the dev stack (MLServer 1.7.1 downgrades fastapi,
starlette and protobuf; KServe 0.21 downgrades pandas and protobuf), so each lives in a venv of
its own, made once by pip under `~/.cache/ztml-test-peers/<name>` (`ZTML_TEST_PEERS` moves the
root) and reused while healthy: made to the end (a marker file is written last) and its python
imports the pinned distribution at the pinned version. One maker at a time (a file lock), so
concurrent test sessions on one machine share the venv.

A venv that cannot be made fails the test. The one exception: outside CI, when pip itself reports
that the package index is unreachable, the test skips saying so. CI is recognised by `CI` or by
`ZTML_TEST_REGISTRY` (which `.ci/run` always exports through `docker-up`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

PEERS_ROOT = Path(
    os.environ.get("ZTML_TEST_PEERS", Path.home() / ".cache" / "ztml-test-peers")
).expanduser()
HEALTHY_MARK = ".ztml-peer-ready"  # written last: a venv without it is half-made and rebuilt
PIP_TIMEOUT_S = 900
# what pip prints when it cannot reach the index at all (not: a package or version is missing)
NO_NETWORK = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Temporary failure in name "
    r"resolution|Name or service not known|Network is unreachable|No route to host|"
    r"ConnectTimeoutError|ProxyError|Connection refused"
)
PINNED = re.compile(r"^(?P<dist>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;,]+)$")


def in_ci() -> bool:
    return bool(os.environ.get("CI") or os.environ.get("ZTML_TEST_REGISTRY"))


def peer_env() -> dict[str, str]:
    """Our environment less what would make the peer's python see the dev venv or this repo."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def peer_python(venv: Path) -> str:
    return str(venv / "bin" / "python")


def healthy(venv: Path, dist: str, version: str, imports: Sequence[str]) -> bool:
    """Made to the end, its python imports `imports`, and `dist` is installed at `version`."""
    python = venv / "bin" / "python"
    if not (venv / HEALTHY_MARK).is_file() or not python.exists():
        return False
    code = "".join(f"import {module}\n" for module in imports)
    code += f"import importlib.metadata as m\nprint(m.version({dist!r}))\n"
    probe = subprocess.run(
        [str(python), "-c", code],
        capture_output=True,
        text=True,
        env=peer_env(),
        timeout=120,
        check=False,
    )
    return probe.returncode == 0 and probe.stdout.strip() == version


def pip(venv: Path, *args: str) -> None:
    """`pip ARGS` in the peer venv; fails the test with pip's words, or skips (see module doc)."""
    done = subprocess.run(
        [peer_python(venv), "-m", "pip", *args],
        capture_output=True,
        text=True,
        env=peer_env(),
        timeout=PIP_TIMEOUT_S,
        check=False,
    )
    if done.returncode == 0:
        return
    said = (done.stdout + done.stderr)[-4000:]
    if NO_NETWORK.search(said) and not in_ci():
        pytest.skip(f"the package index is unreachable (pip: {NO_NETWORK.search(said)[0]})")
    pytest.fail(f"pip {' '.join(args)} failed in {venv} (exit {done.returncode}):\n{said}")


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """One maker at a time across concurrent test sessions on this machine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def peer_venv(name: str, requirement: str, *, imports: Sequence[str] = ()) -> Path:
    """The cached venv `PEERS_ROOT/name` with `requirement` (exactly pinned: `dist==version`),
    made (pip upgraded first) when absent or unhealthy; `imports` are modules its python must
    import for the venv to count as healthy (the distribution's top module when empty)."""
    pinned = PINNED.match(requirement)
    if pinned is None:
        raise ValueError(f"a peer requirement is pinned exactly (dist==version): {requirement!r}")
    dist, version = pinned["dist"], pinned["version"]
    modules = tuple(imports) or (dist.replace("-", "_"),)
    venv = PEERS_ROOT / name
    with locked(PEERS_ROOT / f"{name}.lock"):
        if healthy(venv, dist, version, modules):
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=peer_env())
        pip(venv, "install", "--quiet", "--upgrade", "pip")
        pip(venv, "install", "--quiet", requirement)
        seconds = time.monotonic() - started
        (venv / HEALTHY_MARK).write_text(json.dumps({"made_in_seconds": round(seconds, 1)}))
        if not healthy(venv, dist, version, modules):
            pytest.fail(f"{venv} was made but does not import {dist} {version}")
        print(f"made {venv} in {seconds:.0f} s")
    return venv
