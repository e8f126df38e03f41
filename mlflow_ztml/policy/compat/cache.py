"""Rewritten modules kept on disk, so a short-lived process (`ztml gate -f`) does not parse
and rewrite the same policies again (about a third of that command's CPU time).

The rewrite (source.py) is a pure function of the module's id and text, of ztml's compat code
and of the regorus build that parses it; each entry is named by the SHA-256 of all four, so an
edited policy, another ztml or another regorus never reads a stale entry. Like Python's own
__pycache__, the directory is trusted as much as the rest of ZTML_HOME (the runtimes' state
lives there too): it is created private to the user (0700). Any I/O problem only means the
rewrite is computed again; refused modules are never stored.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import regorus

# The files whose code decides what a rewrite produces.
_CODE = ("source.py", "overrides.py", "values.py", "cache.py")


@functools.cache
def _code_version() -> bytes:
    digest = hashlib.sha256()
    here = Path(__file__).parent
    for name in _CODE:
        digest.update((here / name).read_bytes())
    library = Path(regorus.__file__).parent
    for path in sorted(library.glob("*.so")) + sorted(library.glob("*.pyd")):
        status = path.stat()
        digest.update(f"{path.name}:{status.st_size}:{status.st_mtime_ns}".encode())
    return digest.digest()


def entry(directory: Path, module_id: str, source: str) -> Path:
    """Where the rewrite of (module_id, source) is kept under `directory`."""
    digest = hashlib.sha256(_code_version())
    digest.update(module_id.encode("utf-8") + b"\0" + source.encode("utf-8"))
    return directory / f"{digest.hexdigest()}.rego"


def cached(directory: Path | None, module_id: str, source: str, compute: Callable[[], str]) -> str:
    """`compute()` (the rewrite of module_id/source), read from `directory` when kept there,
    stored there otherwise. `directory` None: no disk at all."""
    if directory is None:
        return compute()
    path = entry(directory, module_id, source)
    with contextlib.suppress(OSError, UnicodeDecodeError):
        return path.read_text(encoding="utf-8")
    result = compute()
    with contextlib.suppress(OSError):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=directory, suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(result)
            os.replace(temporary, path)  # atomic: a reader never sees half an entry
        finally:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
    return result
