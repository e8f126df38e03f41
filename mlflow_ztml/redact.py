"""Text that leaves the control plane: credentials redacted, length bounded at a word boundary.

Every boundary where ztml writes text someone else reads (log handlers, CLI messages, the
controller's `/status`, MLflow tags and audit runs, notifications, plugin errors) goes through
`redact()`; anything bounded in length goes through `clip()`. One implementation, so a new
secret shape is taught once and every boundary learns it.

What `redact()` removes (the value, never the surrounding text, so messages stay readable):

- URL user info: `scheme://user:pass@host` -> `scheme://user:***@host`,
  `scheme://token@host` -> `scheme://***@host`;
- secret query or fragment parameters: `?token=`, `access_token=`, `api_key=`, `sig=`,
  `signature=`, `X-Amz-Signature=`, `X-Amz-Credential=`, `password=`, ... -> `token=***`;
- `Authorization: Bearer ...` / `Basic ...` and a bare `Bearer <token>`;
- `key=value` / `key: value` / `"key": "value"` where the key names a secret (`password`,
  `api_key`, `MLFLOW_TRACKING_TOKEN`, `aws_secret_access_key`, ...); quoting is kept, so JSON
  stays JSON.

`redact()` is idempotent; `redact_data()` applies it to every string inside JSON-like data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
ELLIPSIS = "..."

_URL_USERINFO = re.compile(
    r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)"  # userinfo stops at path, query, quotes, space
    r"(?P<userinfo>[^/\s?#\"'<>]+)@"
)
# names of query/fragment parameters whose value is a credential
_CREDENTIAL_PARAMS = (
    r"[\w.-]*?(?:token|secret|password|passwd|signature|credential|api[_-]?key|apikey"
    r"|access[_-]?key|private[_-]?key|session[_-]?key)|sig|key|pwd|auth|code"
)
_QUERY_SECRET = re.compile(
    rf"(?i)(?P<lead>[?&;#](?:{_CREDENTIAL_PARAMS})=)(?P<value>[^&#;,()\[\]{{}}\s\"'<>]+)"
)
_AUTHORIZATION = re.compile(
    r"(?i)(?P<key>\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)"
    r"(?:(?P<scheme>bearer|basic|token|digest|negotiate|aws4-hmac-sha256)\s+)?"
    r"(?P<value>[^\s\"',;]+)"
)
_BEARER = re.compile(r"(?i)(?P<lead>\bbearer\s+)(?P<value>[A-Za-z0-9._~+/=-]+)")
_CREDENTIAL_KEYS = (
    r"[\w.-]*?(?:api[_-]?key|apikey|token|secret|password|passwd"
    r"|access[_-]?key|private[_-]?key)"
)
_SECRET_ASSIGNMENT = re.compile(
    rf"(?i)(?P<key>\b{_CREDENTIAL_KEYS})(?P<sep>[\"']?\s*[:=]\s*)"
    r"(?:(?P<quote>[\"'])(?P<quoted>[^\"'\n]*)(?P=quote)|(?P<bare>[^\s\"',;&()\[\]{}]+))"
)


def _userinfo(match: re.Match[str]) -> str:
    user, colon, _password = match["userinfo"].partition(":")
    if colon and user:
        return f"{match['scheme']}{user}:{MASK}@"
    return f"{match['scheme']}{MASK}@"


def _assignment(match: re.Match[str]) -> str:
    if match["quote"] is not None:
        return f"{match['key']}{match['sep']}{match['quote']}{MASK}{match['quote']}"
    return f"{match['key']}{match['sep']}{MASK}"


def _authorization(match: re.Match[str]) -> str:
    scheme = f"{match['scheme']} " if match["scheme"] else ""
    return f"{match['key']}{scheme}{MASK}"


def redact(text: str) -> str:
    """`text` with every credential replaced by `***` (see the module docstring for what)."""
    if not text:
        return text
    text = _URL_USERINFO.sub(_userinfo, text)
    text = _QUERY_SECRET.sub(rf"\g<lead>{MASK}", text)
    text = _AUTHORIZATION.sub(_authorization, text)
    text = _BEARER.sub(rf"\g<lead>{MASK}", text)
    return _SECRET_ASSIGNMENT.sub(_assignment, text)


def redact_data(value: Any) -> Any:
    """A copy of JSON-like data (dicts, lists, tuples, scalars) with every string redacted.

    Values under keys that name a secret (`password`, `token`, ...) are masked whole.
    """
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {
            key: MASK
            if isinstance(key, str) and isinstance(item, str) and item and _is_secret_key(key)
            else redact_data(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_data(item) for item in value]
    return value


_CREDENTIAL_KEY_ONLY = re.compile(rf"(?i)^{_CREDENTIAL_KEYS}$")


def _is_secret_key(key: str) -> bool:
    return bool(_CREDENTIAL_KEY_ONLY.match(key))


def clip(text: str, limit: int, suffix: str = ELLIPSIS) -> str:
    """`text` cut to at most `limit` characters at a word boundary, ending with `suffix`.

    Never cuts inside a word: the cut goes back to the last whitespace (or, failing that within
    the last third, to the last punctuation) before the limit. Text within the limit is
    returned unchanged.
    """
    if limit <= 0:
        return ""
    if len(text) <= limit:
        return text
    room = max(limit - len(suffix), 0)
    if room == 0:
        return suffix[:limit]
    head = text[: room + 1]  # one more character: is the cut right before a space?
    if head[-1].isspace():
        return head[:-1].rstrip() + suffix
    head = head[:-1]
    floor = room * 2 // 3
    cut = max(head.rfind(" "), head.rfind("\n"), head.rfind("\t"))
    if cut < floor:
        punctuation = max(head.rfind(c) for c in ",;:/)]}.")
        cut = punctuation + 1 if punctuation >= floor else -1
    if cut <= 0:
        cut = room  # one long token (a digest, a path): nothing better than a hard cut
    return head[:cut].rstrip() + suffix


def safe(text: object, limit: int | None = None) -> str:
    """`str(text)` redacted and, with `limit`, clipped: what every error path shows."""
    cleaned = redact(str(text))
    return cleaned if limit is None else clip(cleaned, limit)


def public_url(url: str | None) -> str | None:
    """`url` fit to be shown as a link to anyone: http(s) only, without user info, query or
    fragment (the places a tracking URI carries credentials); None when it is not such a URL.

    Links must work, so `redact()`'s `user:***@host` is no answer here: the credentials go.
    """
    if not url or not url.startswith(("http://", "https://")):
        return None
    try:
        parts = urlsplit(url.rstrip("/"))
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = host + (f":{port}" if port else "")
    return urlunsplit(parts._replace(netloc=netloc, query="", fragment="")).rstrip("/")
