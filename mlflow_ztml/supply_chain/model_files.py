"""Model-file signatures: OpenSSF `model-signing` bundles over a model version's artifact files.

When the governance gate allows a version, the pipeline signs the files the registry holds for
it (every file of the MLflow model directory: MLmodel, weights, requirements, input example)
with the configured key (`signing.key`: a PEM file, `env://VAR` or `awskms://...`, see
`keys`). The result is model-signing's own format, a sigstore bundle (`model.sig`) holding a
DSSE-signed in-toto statement that lists every file with its SHA-256, signed with model-signing's
elliptic-curve key method, so `model_signing verify key --public_key model-signing.pub
--signature model.sig MODEL_DIR` checks ztml's work without ztml.

Contract:
- `sign_directory` never changes the model directory; the signature and the public key travel
  beside it (`SIGNATURE_FILE`, `PUBLIC_KEY_FILE`): the process runtime writes them next to its
  downloaded copy, the image build into `/opt/model-signature/`, and serving verifies
  (`serving/integrity.py`) before it loads anything.
- Every file counts, git metadata included: an extra, missing or changed file fails verification.
- ECDSA signatures are randomised, so signing the same files twice would give two bundles (two
  different images for one version). A bundle is therefore cached per key and statement under
  `$ZTML_HOME/model-signatures/`: the same files signed with the same key give the same bytes.
- Whether an environment requires signed models is configuration: `require_signed_models` on the
  environment, by default true exactly when its policy profile is `production`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from mlflow_ztml.errors import SigningError
from mlflow_ztml.supply_chain.keys import Signer, load_signer

if TYPE_CHECKING:
    from mlflow_ztml.config import Settings
    from mlflow_ztml.registry import Registry

SIGNATURE_FILE = "model.sig"
PUBLIC_KEY_FILE = "model-signing.pub"
IMAGE_SIGNATURE_DIR = "/opt/model-signature"
AUDIT_DIR = "model-signature"
REQUIRE_ENV = "SERVING_REQUIRE_MODEL_SIGNATURE"
KEY_ID_ENV = "SERVING_MODEL_PUBLIC_KEY_ID"


class ModelSignature(BaseModel):
    """One model version's signature: the bundle, the key that verifies it, and what it covers."""

    bundle: str  # model-signing's sigstore bundle (JSON)
    public_key_pem: str
    key_id: str  # sha256:<hex> of the public key's DER (as `keys.key_id_of`)
    digest: str  # sha256:<hex> of the bundle bytes
    model_digest: str  # model-signing's subject digest over every file's digest
    files: int

    def write(self, directory: Path) -> tuple[Path, Path]:
        """Write `model.sig` and `model-signing.pub` into `directory`; return both paths."""
        directory.mkdir(parents=True, exist_ok=True)
        signature, public_key = directory / SIGNATURE_FILE, directory / PUBLIC_KEY_FILE
        signature.write_text(self.bundle, encoding="utf-8")
        public_key.write_text(self.public_key_pem, encoding="utf-8")
        return signature, public_key

    def summary(self) -> dict[str, Any]:
        """What the audit run and the tags carry (no key material beyond the public key id)."""
        return {
            "format": "model-signing/v1.1 sigstore bundle (elliptic-curve key)",
            "key_id": self.key_id,
            "signature_digest": self.digest,
            "model_digest": self.model_digest,
            "files": self.files,
        }


def hashing_config() -> Any:
    """model-signing's file-by-file SHA-256 serialisation with nothing ignored (its default
    would skip git metadata): signing and verification must use the same one."""
    from model_signing import hashing

    return hashing.Config().set_ignored_paths(paths=[], ignore_git_paths=False)


class _KeyAdapter:
    """Gives model-signing's elliptic-curve signer a key that may live in KMS: it needs only
    `public_key()` and `sign(data, ECDSA(SHA-256))`, which `keys.Signer` provides."""

    def __init__(self, signer: Signer) -> None:
        from cryptography.hazmat.primitives import serialization

        self._signer = signer
        self._public = serialization.load_pem_public_key(signer.public_key_pem())

    def public_key(self) -> Any:
        return self._public

    def sign(self, data: bytes, _algorithm: Any) -> bytes:
        return self._signer.sign(data)  # P-256 keys only: always ECDSA over SHA-256


def _ec_signer(signer: Signer) -> Any:
    """model-signing's own elliptic-curve key signer (`use_elliptic_key_signer`), holding our
    key instead of a PEM path so KMS and `env://` keys sign the same format. model-signing is
    pinned (1.1.1); its signer keeps the key in `_private_key`."""
    from model_signing._signing import sign_ec_key

    ec_signer = sign_ec_key.Signer.__new__(sign_ec_key.Signer)
    ec_signer._private_key = _KeyAdapter(signer)
    return ec_signer


def _statement(model_dir: Path) -> tuple[Any, bytes, int]:
    from google.protobuf import json_format
    from model_signing._signing import signing

    manifest = hashing_config().hash(model_dir)
    payload = signing.Payload(manifest)
    raw = json_format.MessageToJson(payload.statement.pb).encode("utf-8")
    return payload, raw, len(list(manifest.resource_descriptors()))


def _cached(cache: Path | None) -> str | None:
    if cache is None or not cache.is_file():
        return None
    try:
        return cache.read_text(encoding="utf-8")
    except OSError:
        return None


def sign_directory(
    model_dir: Path, signer: Signer, cache_dir: Path | None = None
) -> ModelSignature:
    """Sign every file under `model_dir` (unchanged); reuse the cached bundle for the same key
    and the same files. Raises SigningError when the key cannot sign."""
    model_dir = Path(model_dir)
    try:
        payload, raw, files = _statement(model_dir)
    except (OSError, ValueError) as exc:
        raise SigningError(f"cannot hash the model files in {model_dir}: {exc}") from None
    key_id = signer.key_id
    statement_digest = hashlib.sha256(raw).hexdigest()
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / key_id.replace(":", "-") / f"{statement_digest}.sig"
    bundle = _cached(cache)
    if bundle is None or _bundle_payload(bundle) != raw:
        try:
            signature = _ec_signer(signer).sign(payload)
        except SigningError:
            raise
        except Exception as exc:
            raise SigningError(
                f"signing the model files with {signer.reference} failed: {exc}"
            ) from None
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / SIGNATURE_FILE
            signature.write(path)
            bundle = path.read_text(encoding="utf-8")
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(bundle, encoding="utf-8")
    statement = json.loads(raw)
    subject = (statement.get("subject") or [{}])[0].get("digest", {})
    return ModelSignature(
        bundle=bundle,
        public_key_pem=signer.public_key_pem().decode("ascii"),
        key_id=key_id,
        digest="sha256:" + hashlib.sha256(bundle.encode("utf-8")).hexdigest(),
        model_digest="sha256:" + str(subject.get("sha256", "")),
        files=files,
    )


def _bundle_payload(bundle: str) -> bytes | None:
    try:
        envelope = json.loads(bundle)["dsseEnvelope"]
        return base64.b64decode(envelope["payload"])
    except (ValueError, KeyError, TypeError):
        return None


def verify_directory(model_dir: Path, signature: Path, public_key: Path) -> None:
    """Check `model_dir` against a model-signing bundle with model-signing's own verifier;
    raise SigningError naming what differs (a changed, extra or missing file, another key)."""
    from model_signing import verifying

    try:
        verifying.Config().use_elliptic_key_verifier(public_key=public_key).set_hashing_config(
            hashing_config()
        ).verify(model_dir, signature)
    except Exception as exc:
        raise SigningError(f"model files in {model_dir} do not match {signature}: {exc}") from None


def requires_signed_models(settings: Settings, environment: str) -> bool:
    """Whether `environment` runs only signed model files: the environment's
    `require_signed_models`, else true exactly for the `production` policy profile."""
    declared = settings.environment(environment).require_signed_models
    if declared is not None:
        return declared
    return settings.policy_profile(environment) == "production"


def sign_allowed(
    settings: Settings, registry: Registry, model_uri: str, environment: str, audit: Any
) -> ModelSignature | None:
    """The pipeline's signing step, once the governance gate allowed a version: sign its files
    with `signing.key` and record the signature in the audit run; None (recorded as unsigned)
    when no key is configured. Raises SigningError when a configured key cannot sign."""
    signature = sign_version(settings, registry, model_uri)
    if signature is None:
        audit.json(
            f"{AUDIT_DIR}/summary.json",
            {"signed": False, "required": requires_signed_models(settings, environment)},
        )
        return None
    record(audit, signature)
    return signature


def deployment_settings(
    settings: Settings, environment: str, signature: ModelSignature | None
) -> dict[str, str]:
    """What the deployment's server is told (its `SERVING_*` environment), checked before
    anything starts: an environment that requires signed models gets none unsigned
    (SigningError), and a signed or required model makes serving refuse to start without a
    matching signature."""
    required = requires_signed_models(settings, environment)
    if signature is None and required:
        raise SigningError(
            f"{environment} runs only signed model files (environments.{environment}."
            "require_signed_models) and no signing key is configured: set signing.key "
            "(a PEM file from `ztml keys generate`, env://VAR or awskms://...)"
        )
    if signature is None:
        return {REQUIRE_ENV: "true"} if required else {}
    # the trusted key travels in the environment the runtime sets, not beside the files
    return {REQUIRE_ENV: "true", KEY_ID_ENV: signature.key_id}


def sign_version(settings: Settings, registry: Registry, model_uri: str) -> ModelSignature | None:
    """Download `model_uri`'s files and sign them with `signing.key`; None when signing is off
    or no key is configured. The download is the registry's bytes, as every runtime gets them."""
    signer = load_signer(settings)
    if signer is None:
        return None
    with tempfile.TemporaryDirectory(prefix="ztml-sign-") as scratch:
        model_dir = registry.download_model(model_uri, Path(scratch) / "model")
        return sign_directory(model_dir, signer, Path(settings.home) / "model-signatures")


def record(audit: Any, signature: ModelSignature) -> None:
    """Put the signature into the audit run: the bundle and public key as artifacts (verbatim:
    redaction must not touch signature bytes; they hold no secret), the summary as
    `model-signature/summary.json`, and the digests as run tags."""
    if getattr(audit, "run_id", None) is None:
        return
    client = audit.registry.client
    client.log_text(audit.run_id, signature.bundle, f"{AUDIT_DIR}/{SIGNATURE_FILE}")
    client.log_text(audit.run_id, signature.public_key_pem, f"{AUDIT_DIR}/{PUBLIC_KEY_FILE}")
    audit.json(f"{AUDIT_DIR}/summary.json", signature.summary())
    client.set_tag(audit.run_id, "ztml.model_signature.digest", signature.digest)
    client.set_tag(audit.run_id, "ztml.model_signature.key_id", signature.key_id)
    client.set_tag(audit.run_id, "ztml.model_signature.model_digest", signature.model_digest)


def planned_settings(settings: Settings, environment: str) -> dict[str, str]:
    """What `deployment_settings` will give a deploy run, predicted without signing (for
    `plan`'s "already deployed" check): a configured key or a requirement means signed."""
    signer = load_signer(settings)  # None when signing is off or no key is configured
    if signer is not None:
        return {REQUIRE_ENV: "true", KEY_ID_ENV: signer.key_id}
    return {REQUIRE_ENV: "true"} if requires_signed_models(settings, environment) else {}
