"""Credentials out of every text serving writes: logs, `/ready`, `/model/info`, error bodies.

The server cannot import the control plane, so it keeps this small copy of its rule. `redact()`
replaces the value and keeps the surrounding text (and JSON quoting) intact:

- URL user info: `scheme://user:pass@host` -> `scheme://user:***@host`, `scheme://tok@host`
  -> `scheme://***@host`;
- secret query parameters: `?token=`, `access_token=`, `sig=`, `X-Amz-Signature=`,
  `X-Amz-Credential=`, `X-Amz-Security-Token=`, `api_key=`, `password=`, ... -> `token=***`;
- `Authorization: Bearer|Basic <value>` and a bare `Bearer <token>`.

Idempotent. Used by the log formatter (every line, all loggers), every `ServingError` and
`ModelLoadError` message, the `/ready` error and the model URI in `/model/info`.
"""

from __future__ import annotations

import re

MASK = "***"

# userinfo ends at the path, query, fragment, whitespace, a quote or a JSON escape
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<info>[^/\s?#\"'<>\\]+)@")
_QUERY_SECRET = re.compile(
    r"(?i)(?P<lead>[?&;#](?:[\w.-]*?(?:token|secret|passw(?:or)?d|signature|credential"
    r"|api[_-]?key|apikey|access[_-]?key)|sig|key|pwd|auth)=)[^&#\s\"'<>\\]+"
)
_AUTHORIZATION = re.compile(
    r"(?i)(?P<lead>\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic|token)\s+)?)"
    r"[^\s\"',;\\]+"
)
_BEARER = re.compile(r"(?i)(?P<lead>\bbearer\s+)[A-Za-z0-9._~+/=-]+")


def _userinfo(match: re.Match[str]) -> str:
    user, colon, _ = match["info"].partition(":")
    return f"{match['scheme']}{user}:{MASK}@" if colon and user else f"{match['scheme']}{MASK}@"


def redact(text: str) -> str:
    """`text` with every credential it carries replaced by `***`."""
    if not text:
        return text
    text = _USERINFO.sub(_userinfo, text)
    text = _QUERY_SECRET.sub(rf"\g<lead>{MASK}", text)
    text = _AUTHORIZATION.sub(rf"\g<lead>{MASK}", text)
    return _BEARER.sub(rf"\g<lead>{MASK}", text)


def one_line(exc: BaseException) -> str:
    """`Type: message` of an exception on one line, redacted (what a failed start reports)."""
    text = " ".join(str(exc).split())
    return redact(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)
