"""Where the image build's pip finds packages, and what those places list.

`build_sources()` names the indexes and find-links pages the build uses (ztml.yaml's `build.pip_*`
and the index options in a model's requirements.txt); `IndexClient` asks one of them which
versions of a project it serves, through the simple repository API: PEP 691 JSON when the index
speaks it, PEP 503 HTML otherwise (both http(s) and file:// indexes; a find-links page or
directory is one listing filtered by project). Answers are cached for the client's lifetime, so
one client per run sees one state of the index; every request has a timeout. What a source
could not answer is a `ProjectPage(state="unreachable")` with the reason, never an empty "ok".
"""

from __future__ import annotations

import json
import re
import threading
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urljoin, urlsplit

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, Field, PrivateAttr

from mlflow_ztml.config import BuildConfig
from mlflow_ztml.redact import redact, safe

if TYPE_CHECKING:  # imported where an index is asked: `ztml gate -f` never pays for it
    import requests

_SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
_ACCEPT = f"{_SIMPLE_JSON}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"
PYPI_LABEL = "PyPI"


class IndexSource(BaseModel):
    """A place pip looks for distributions: an index (simple API) or a find-links page."""

    url: str = Field(description="credentials redacted")
    kind: Literal["index", "find_links"] = "index"
    label: str
    state: Literal["reachable", "unreachable", "unused"] = "unused"
    error: str | None = None
    # The URL as configured, credentials included: used to fetch, never reported.
    _address: str = PrivateAttr(default="")

    @property
    def address(self) -> str:
        return self._address or self.url


def pip_default_index() -> str | None:
    """The index pip uses when none is configured (pip's own constant), or None without pip."""
    try:
        from pip._internal.models.index import PyPI  # optional; pip is internal API here

        return str(PyPI.simple_url)
    except Exception:
        return None


def build_sources(config: BuildConfig, pip_options: list[str]) -> list[IndexSource]:
    """Where the image build's pip looks: the configured indexes and find-links, plus index
    options written into the model's requirements.txt (pip honours those too)."""
    options = _parse_options(pip_options)
    default = config.requirements_check.default_index_url or pip_default_index()
    primary = options["index_url"] or config.pip_index_url or default
    if primary is None:
        raise ValueError(
            "cannot tell which index pip uses by default (pip is not installed here): set "
            "build.pip_index_url or build.requirements_check.default_index_url"
        )
    indexes: list[str] = []
    if not options["no_index"]:
        indexes = [primary, *(config.pip_extra_index_url or "").split(), *options["extra"]]
    links = [*(config.pip_find_links or "").split(), *options["find_links"]]
    sources: list[IndexSource] = []
    kinds: list[tuple[str, Literal["index", "find_links"]]] = [
        *((url, "index") for url in indexes),
        *((url, "find_links") for url in links),
    ]
    for url, kind in kinds:
        if any(s.address == url and s.kind == kind for s in sources):
            continue
        source = IndexSource(url=redact(url), kind=kind, label=_label(url, kind))
        source._address = url
        sources.append(source)
    return sources


def _label(url: str, kind: str) -> str:
    pypi = pip_default_index()
    if kind == "index" and pypi and url.rstrip("/") == pypi.rstrip("/"):
        return PYPI_LABEL
    shown = redact(url)
    return f"find-links {shown}" if kind == "find_links" else shown


def _parse_options(lines: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = {"index_url": None, "extra": [], "find_links": [], "no_index": False}
    names = {
        "--index-url": "index_url",
        "-i": "index_url",
        "--extra-index-url": "extra",
        "--find-links": "find_links",
        "-f": "find_links",
    }
    for line in lines:
        if line.strip() == "--no-index":
            found["no_index"] = True
            continue
        match = re.match(r"^(--[a-z-]+|-[a-z])(?:\s*=\s*|\s+)(\S+)", line.strip())
        if not match or match[1] not in names:
            continue
        key = names[match[1]]
        if key == "index_url":
            found["index_url"] = match[2]
        else:
            found[key].append(match[2])
    return found


class ProjectPage(BaseModel):
    """One project as one source lists it."""

    state: Literal["found", "missing", "unreachable"]
    versions: list[str] = Field(default_factory=list)
    error: str | None = None


class IndexClient:
    """Simple-API lookups with a per-request timeout, cached for the client's lifetime (make
    one per run: a new run sees a new index state). Thread-safe."""

    def __init__(self, request_timeout: float = 5.0, session: requests.Session | None = None):
        import requests

        self.request_timeout = request_timeout
        self._session = session or requests.Session()
        self._cache: dict[tuple[str, str, str], ProjectPage] = {}
        self._pages: dict[str, list[tuple[str, str]] | Exception] = {}
        self._lock = threading.Lock()

    def project(self, source: IndexSource, name: str) -> ProjectPage:
        key = (source.kind, source.address, name)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            return cached
        page = self._lookup(source, name)
        with self._lock:
            self._cache[key] = page
        return page

    def _lookup(self, source: IndexSource, name: str) -> ProjectPage:
        if source.kind == "find_links":
            listing = self._find_links(source.address)
            if isinstance(listing, Exception):
                return ProjectPage(state="unreachable", error=_describe(listing))
            versions = _versions(listing, name)
            return ProjectPage(state="found" if versions else "missing", versions=versions)
        url = f"{source.address.rstrip('/')}/{name}/"
        try:
            status, content_type, body = self._get(url)
        except Exception as exc:
            return ProjectPage(state="unreachable", error=_describe(exc))
        if status == 404:
            return ProjectPage(state="missing")
        if status != 200:
            return ProjectPage(state="unreachable", error=f"HTTP {status} for {redact(url)}")
        files = _parse_listing(content_type, body, url)
        return ProjectPage(state="found", versions=_versions(files, name))

    def _find_links(self, url: str) -> list[tuple[str, str]] | Exception:
        with self._lock:
            if url in self._pages:
                return self._pages[url]
        try:
            status, content_type, body = self._get(url)
            if status != 200:
                raise OSError(f"HTTP {status} for {redact(url)}")
            listing: list[tuple[str, str]] | Exception = _parse_listing(content_type, body, url)
        except Exception as exc:
            listing = exc
        with self._lock:
            self._pages[url] = listing
        return listing

    def _get(self, url: str) -> tuple[int, str, bytes]:
        """(status, content type, body); file:// URLs and plain paths are read from disk."""
        parts = urlsplit(url)
        if parts.scheme in ("http", "https"):
            response = self._session.get(
                url, headers={"Accept": _ACCEPT}, timeout=self.request_timeout
            )
            return response.status_code, response.headers.get("content-type", ""), response.content
        path = Path(unquote(parts.path) if parts.scheme == "file" else url)
        if path.is_dir() and (path / "index.html").is_file():
            path = path / "index.html"
        if path.is_dir():
            names = "".join(f'<a href="{p.name}">{p.name}</a>\n' for p in sorted(path.iterdir()))
            return 200, "text/html", names.encode()
        if not path.exists():
            return 404, "", b""
        return 200, "text/html", path.read_bytes()


def _describe(exc: Exception) -> str:
    """A short reason: urllib3's messages repeat the URL and the pool around the cause."""
    import requests

    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.ConnectionError):
        cause = re.search(r"\[Errno -?\d+\][^'\")]*|Name or service not known|SSLError", str(exc))
        return f"connection failed: {cause[0].strip() if cause else type(exc).__name__}"
    return f"{type(exc).__name__}: {safe(exc, 160)}"


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href") or ""
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append((self._href, "".join(self._text).strip()))
            self._href = None


def _parse_listing(content_type: str, body: bytes, base: str) -> list[tuple[str, str]]:
    """(filename, url) of every file a simple-API page (JSON or HTML) lists."""
    if content_type.split(";", 1)[0].strip() == _SIMPLE_JSON:
        document = json.loads(body)
        files = [(f.get("filename", ""), f.get("url", "")) for f in document.get("files", [])]
        # API 1.1 lists versions even when their files are yanked or absent.
        files += [
            (f"{document.get('name', '')}-{v}.tar.gz", "") for v in document.get("versions", [])
        ]
        return files
    parser = _Anchors()
    parser.feed(body.decode("utf-8", errors="replace"))
    files = []
    for href, text in parser.links:
        path = urlsplit(urljoin(base, href)).path
        files.append((text or unquote(path.rsplit("/", 1)[-1]), href))
    return files


def _versions(files: list[tuple[str, str]], project: str) -> list[str]:
    versions: set[str] = set()
    for filename, _url in files:
        version = _file_version(filename, project)
        if version:
            versions.add(version)
    return sorted(versions, key=version_key)


def version_key(version: str) -> Any:
    try:
        return (1, Version(version))
    except InvalidVersion:
        return (0, version)


def _file_version(filename: str, project: str) -> str | None:
    try:
        if filename.endswith(".whl"):
            name, version, _build, _tags = parse_wheel_filename(filename)
        elif filename.endswith((".tar.gz", ".zip")):
            name, version = parse_sdist_filename(filename)
        else:
            return None
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        return None
    return str(version) if canonicalize_name(name) == project else None
