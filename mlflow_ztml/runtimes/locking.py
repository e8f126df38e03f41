"""One deploy or delete per deployment name at a time on this machine (an flock per name).

The CLI, the plugin and the controller's workers may act on the same deployment at once; the
local runtimes serialise on a lock file next to their state.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from mlflow_ztml import names


@contextlib.contextmanager
def deployment_lock(root: Path, name: str) -> Iterator[None]:
    """Hold the lock of deployment `name` under `root`; a name that could address a file
    outside `root` (`../x`) is an InvalidNameError, never a path."""
    names.check_lookup(name)
    with open(Path(root) / f".{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
