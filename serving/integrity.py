"""Model-file integrity: check the model directory against its model-signing signature before
anything in it is loaded (unpickled, imported, mapped).

The control plane signs a version's files with OpenSSF model-signing when the governance gate
allows it and ships the bundle and the public key beside the model (`SERVING_MODEL_SIGNATURE`,
`SERVING_MODEL_PUBLIC_KEY`; the image sets both when it carries a signature). Here the files are
hashed and compared with model-signing's own verifier, with the same serialisation the signer
used (every file, none ignored). Any difference refuses the start with a `ModelLoadError` that
names the file: a changed file, an extra file, a missing file, or a signature made by another
key. `SERVING_REQUIRE_MODEL_SIGNATURE` (set by ztml where the environment requires signed
models, production by default) refuses a model that comes without a signature at all.
A key beside the files proves nothing by itself (whoever can change the files can re-sign them
and swap the key): `SERVING_MODEL_PUBLIC_KEY_ID`, set by the runtime from the control plane's
key, names the only key trusted, and a required signature without it is refused.

`import serving.integrity` is cheap; model-signing and its sigstore dependencies load only
inside `check`, so an unsigned model's cold start pays for none of this.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from serving.errors import ModelLoadError

log = logging.getLogger("serving.integrity")

_CHANGED = re.compile(r"Hash mismatch for '([^']+)'")
_EXTRA = re.compile(r"Extra files found in model '[^']*': ([^'\"\]]+)")
_MISSING = re.compile(r"Missing files in model '[^']*': ([^'\"\]]+)")


def wanted(settings: Any) -> bool:
    """Whether the settings ask for a check (so the loader imports this module at all)."""
    return bool(
        settings.model_signature or settings.model_public_key or settings.require_model_signature
    )


def _hashing_config() -> Any:
    from model_signing import hashing

    return hashing.Config().set_ignored_paths(paths=[], ignore_git_paths=False)


def _explain(message: str) -> str:
    """model-signing's mismatch report (reprs of digests) as the file names that differ."""
    message = message.replace("\\", "")  # the list's repr escapes quotes inside its items
    parts = []
    for label, pattern in (("changed", _CHANGED), ("extra", _EXTRA), ("missing", _MISSING)):
        found = [n.strip() for hit in pattern.findall(message) for n in hit.split(",")]
        if found:
            parts.append(f"{label}: {', '.join(sorted(found))}")
    return "; ".join(parts) or message


def verify(model_dir: Path, signature: Path, public_key: Path) -> None:
    """Raise ModelLoadError unless every file under `model_dir` is exactly what `signature`
    lists, signed by `public_key`."""
    for what, path in (("signature", signature), ("public key", public_key)):
        if not path.is_file():
            raise ModelLoadError(f"model {what} {path} does not exist")
    try:
        from model_signing import verifying
    except ImportError as exc:
        raise ModelLoadError(
            f"a model signature is configured but model-signing cannot be imported ({exc}); "
            "install serving/requirements.txt"
        ) from None
    try:
        config = verifying.Config().use_elliptic_key_verifier(public_key=public_key)
    except Exception as exc:
        raise ModelLoadError(f"model public key {public_key} is not usable: {exc}") from None
    try:
        config.set_hashing_config(_hashing_config()).verify(model_dir, signature)
    except ValueError as exc:
        text = str(exc)
        if text.startswith("Signature mismatch"):
            raise ModelLoadError(
                f"model files in {model_dir} do not match their signature ({_explain(text)})"
            ) from None
        raise ModelLoadError(
            f"model signature {signature} does not verify with {public_key}: {text}"
        ) from None
    except Exception as exc:  # an unreadable bundle, a bad ECDSA signature
        raise ModelLoadError(
            f"model signature {signature} does not verify with {public_key}: "
            f"{type(exc).__name__}: {exc}"
        ) from None


def key_id(public_key: Path) -> str:
    """`sha256:<hex>` of the PEM key's DER SubjectPublicKeyInfo (the control plane's key id)."""
    import hashlib

    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_public_key(public_key.read_bytes())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"model public key {public_key} is not usable: {exc}") from None
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


def _check_key_id(public_key: Path, pinned: str) -> None:
    found = key_id(public_key)
    if found != pinned.strip():
        raise ModelLoadError(
            f"model public key {public_key} is not the trusted key: its id is {found}, "
            f"SERVING_MODEL_PUBLIC_KEY_ID says {pinned.strip()}"
        )


def check(settings: Any, model_dir: Path) -> None:
    """Verify `model_dir` as the settings ask; raise ModelLoadError on any failure."""
    signature, public_key = settings.model_signature, settings.model_public_key
    if not signature and not public_key:
        raise ModelLoadError(
            "this environment requires signed model files (SERVING_REQUIRE_MODEL_SIGNATURE) "
            "and the model comes without a signature (SERVING_MODEL_SIGNATURE)"
        )
    if not signature or not public_key:
        missing = "SERVING_MODEL_PUBLIC_KEY" if signature else "SERVING_MODEL_SIGNATURE"
        raise ModelLoadError(f"a model signature needs both files: {missing} is not set")
    pinned = getattr(settings, "model_public_key_id", None)
    if pinned:
        _check_key_id(Path(public_key), pinned)
    elif settings.require_model_signature:
        raise ModelLoadError(
            "signed model files are required and no trusted key id is set "
            "(SERVING_MODEL_PUBLIC_KEY_ID): a key shipped beside the model proves nothing alone"
        )
    verify(model_dir, Path(signature), Path(public_key))
    log.info("model files match their signature", extra={"signature": signature})
