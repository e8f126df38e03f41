"""Deployment names: one rule for every runtime, checked before anything is written.

A deployment name becomes a file name (`process`), a container name (`docker`) and a Helm
release plus Kubernetes object names (`kubernetes`), so it must be a DNS-1123 label short enough
for a Helm release: 1-53 characters of `a-z`, `0-9` and `-`, starting and ending with a letter
or digit. A name a user gives (`--name`, the plugin's `--name`) is checked as is and refused with
`InvalidNameError` when it breaks the rule; a name ztml derives from a model name is made to fit:
letters are transliterated to ASCII (`modèle` -> `modele`), every other character becomes `-`,
and a name too long keeps its environment suffix and gets a short hash of the model name, so
two long model names never share a deployment by truncation.

Normalising can still map two model names onto one name (`credit_risk` and `credit.risk` are
both `credit-risk`): the pipeline refuses to let one model's deploy replace the other's
deployment (see `pipeline.Pipeline._check_owner`).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

MAX_LENGTH = 53  # Helm release names; Kubernetes labels allow 63
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_NOT_LABEL_CHAR = re.compile(r"[^a-z0-9]")
_HASH_LENGTH = 8
RULE = (
    f"a deployment name is 1-{MAX_LENGTH} characters of a-z, 0-9 and '-', starting and ending "
    "with a letter or digit (a DNS-1123 label that fits a Helm release name)"
)


def is_valid(name: str) -> bool:
    """True when `name` is a DNS-1123 label of at most MAX_LENGTH characters."""
    return len(name) <= MAX_LENGTH and bool(_LABEL.match(name))


def validate(name: str) -> str:
    """Return `name` unchanged when it is a valid deployment name; raise InvalidNameError
    (a usage error: exit 2) saying why and suggesting a valid spelling otherwise."""
    from mlflow_ztml.errors import InvalidNameError

    if is_valid(name):
        return name
    if not name:
        reason = "it is empty"
    elif len(name) > MAX_LENGTH:
        reason = f"it has {len(name)} characters"
    elif not name.isascii():
        reason = "it has non-ASCII characters"
    elif name != name.lower():
        reason = "it has upper-case letters"
    elif name[0] == "-" or name[-1] == "-":
        reason = "it starts or ends with '-'"
    else:
        bad = sorted({c for c in name if _NOT_LABEL_CHAR.match(c) and c != "-"})
        reason = f"it contains {''.join(bad)!r}"
    suggestion = model_label(name) if name.strip() else ""
    hint = f"; try --name {suggestion}" if suggestion and suggestion != name else ""
    raise InvalidNameError(f"invalid deployment name {name!r}: {reason}; {RULE}{hint}")


def _ascii_chars(text: str) -> str:
    """Lower-case ASCII label characters for `text`: accents dropped, others -> `-`."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return _NOT_LABEL_CHAR.sub("-", ascii_text.lower())


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:_HASH_LENGTH]


def model_label(model_name: str, limit: int = MAX_LENGTH) -> str:
    """A valid label (at most `limit` characters) derived from a model name.

    ASCII names that fit keep the spelling ztml always gave them (`Credit_Risk` ->
    `credit-risk`), so existing deployments keep their names. A name with nothing left after
    normalising becomes `model-<hash>`; one too long is cut and ends in `-<hash>` of the full
    name."""
    label = _ascii_chars(model_name).strip("-")
    if not label:
        return f"model-{_digest(model_name)}"[:limit]
    if len(label) > limit:
        head = label[: max(limit - _HASH_LENGTH - 1, 1)].rstrip("-") or "m"
        return f"{head}-{_digest(model_name)}"[:limit]
    return label


def default_name(model_name: str, environment: str) -> str:
    """The deployment name ztml uses for `model_name` in `environment`: `MODEL-ENV`.

    The environment suffix always survives (a long model name is shortened instead), so one
    model's deployments in two environments never share a name."""
    suffix = "-" + model_label(environment, limit=20)
    return model_label(model_name, limit=MAX_LENGTH - len(suffix)) + suffix


def check_lookup(name: str) -> str:
    """Return `name` when it may name an existing deployment (status, get, delete).

    Stricter rules came later than some deployments: a name that breaks `validate` but is a
    plain file name (no `/`, no NUL, no leading `.`, at most 253 characters) can still be looked
    up and deleted. Anything that could leave the runtime's own directory is refused."""
    from mlflow_ztml.errors import InvalidNameError

    if is_valid(name):
        return name
    unsafe = any(c in name for c in "/\\\0") or not name.isprintable()
    if not name or len(name) > 253 or name.startswith(".") or unsafe:
        raise InvalidNameError(f"invalid deployment name {name!r}: {RULE}")
    return name
