"""ECDSA P-256 signing keys, by reference: a PEM file, `env://VAR`, or `awskms://...`.

Contract: `Signer.sign(message)` returns an ASN.1 DER ECDSA signature over SHA-256(message), the
form cosign, sigstore and containers/image verify; `Verifier.verify(message, signature)` checks
one. `key_id` is `sha256:<hex>` of the public key's DER SubjectPublicKeyInfo, so the same key
has the same id whether it lives in a file or in KMS. Key material is never logged, tagged or
put in an error message; messages name the reference (`env://VAR`, a path, a KMS key id).

KMS (`awskms://[ENDPOINT]/KEY`, cosign's form, KEY = key id, ARN or `alias/NAME`): the private
key never leaves KMS. A message of at most 4096 bytes is sent as `MessageType=RAW` (KMS hashes
it); a longer one as its SHA-256 with `MessageType=DIGEST`. Both yield the same signature
format. The public key comes from `kms:GetPublicKey`.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mlflow_ztml.errors import SigningError

if TYPE_CHECKING:
    from mlflow_ztml.config import Settings, SigningConfig

KMS_PREFIX = "awskms://"
ENV_PREFIX = "env://"
KMS_RAW_MESSAGE_LIMIT = 4096
PRIVATE_KEY_FILE = "ztml.key"
PUBLIC_KEY_FILE = "ztml.pub"
_ARN_REGION = re.compile(r"^arn:aws[a-z-]*:kms:([a-z0-9-]+):")


class Signer(Protocol):
    """Signs bytes with one P-256 key."""

    key_id: str
    reference: str

    def sign(self, message: bytes) -> bytes: ...

    def public_key_pem(self) -> bytes: ...


def key_id_of(public_key: ec.EllipticCurvePublicKey) -> str:
    """`sha256:<hex>` of the DER SubjectPublicKeyInfo."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


def _require_p256(key: Any, reference: str) -> None:
    curve = getattr(key, "curve", None)
    if not isinstance(curve, ec.SECP256R1):
        raise SigningError(
            f"key {reference} is not an ECDSA P-256 key (found {type(key).__name__}"
            f"{' on ' + curve.name if curve is not None else ''}); ztml signs with P-256 only: "
            "make one with `ztml keys generate`"
        )


@dataclass
class Verifier:
    """Verifies signatures made by one P-256 public key."""

    public_key: ec.EllipticCurvePublicKey
    reference: str

    @property
    def key_id(self) -> str:
        return key_id_of(self.public_key)

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            self.public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            return False
        return True

    def public_key_pem(self) -> bytes:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


@dataclass
class LocalSigner:
    """A private key held in memory (from a PEM file or an environment variable)."""

    private_key: ec.EllipticCurvePrivateKey
    reference: str

    @property
    def key_id(self) -> str:
        return key_id_of(self.private_key.public_key())

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message, ec.ECDSA(hashes.SHA256()))

    def public_key_pem(self) -> bytes:
        return Verifier(self.private_key.public_key(), self.reference).public_key_pem()

    def verifier(self) -> Verifier:
        return Verifier(self.private_key.public_key(), self.reference)


@dataclass(frozen=True)
class KmsReference:
    """A parsed `awskms://[ENDPOINT]/KEY` reference."""

    endpoint: str | None
    key: str

    @classmethod
    def parse(cls, reference: str) -> KmsReference:
        rest = reference[len(KMS_PREFIX) :]
        endpoint, sep, key = rest.partition("/")
        if not sep or not key:
            raise SigningError(
                f"invalid KMS key reference {reference!r}: expected "
                "awskms:///KEY-ID, awskms:///arn:aws:kms:REGION:ACCOUNT:key/ID, "
                "awskms:///alias/NAME or awskms://HOST:PORT/KEY-ID"
            )
        return cls(endpoint=endpoint or None, key=key)

    def region(self, override: str | None) -> str | None:
        if override:
            return override
        match = _ARN_REGION.match(self.key)
        return match.group(1) if match else None


class KmsSigner:
    """A P-256 key in AWS KMS (KeySpec ECC_NIST_P256, KeyUsage SIGN_VERIFY)."""

    def __init__(self, reference: str, region: str | None = None, client: Any = None) -> None:
        self.reference = reference
        self._ref = KmsReference.parse(reference)
        self._client = client or _kms_client(self._ref, region)
        self._public_key: ec.EllipticCurvePublicKey | None = None

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return getattr(self._client, operation)(KeyId=self._ref.key, **kwargs)
        except Exception as exc:  # botocore ClientError, endpoint/credential errors
            raise SigningError(
                f"KMS {operation} with key {self._ref.key} failed: {_kms_reason(exc)}"
            ) from None

    def public_key(self) -> ec.EllipticCurvePublicKey:
        if self._public_key is None:
            answer = self._call("get_public_key")
            key = serialization.load_der_public_key(answer["PublicKey"])
            _require_p256(key, self.reference)
            if answer.get("KeyUsage") not in (None, "SIGN_VERIFY"):
                raise SigningError(
                    f"KMS key {self._ref.key} has KeyUsage {answer['KeyUsage']}; "
                    "signing needs SIGN_VERIFY"
                )
            self._public_key = key  # type: ignore[assignment]
        return self._public_key  # type: ignore[return-value]

    @property
    def key_id(self) -> str:
        return key_id_of(self.public_key())

    def sign(self, message: bytes) -> bytes:
        if len(message) <= KMS_RAW_MESSAGE_LIMIT:
            answer = self._call(
                "sign", Message=message, MessageType="RAW", SigningAlgorithm="ECDSA_SHA_256"
            )
        else:
            answer = self._call(
                "sign",
                Message=hashlib.sha256(message).digest(),
                MessageType="DIGEST",
                SigningAlgorithm="ECDSA_SHA_256",
            )
        return bytes(answer["Signature"])

    def public_key_pem(self) -> bytes:
        return Verifier(self.public_key(), self.reference).public_key_pem()

    def verifier(self) -> Verifier:
        return Verifier(self.public_key(), self.reference)


def _kms_reason(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error", {})
        return f"{error.get('Code', type(exc).__name__)}: {error.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"


def _kms_client(ref: KmsReference, region: str | None) -> Any:
    try:
        import boto3
    except ImportError as exc:  # pragma: no cover - boto3 ships with the aws extra
        raise SigningError("awskms:// keys need boto3 (pip install 'mlflow-ztml[docker]')") from exc
    kwargs: dict[str, Any] = {}
    resolved = ref.region(region)
    if resolved:
        kwargs["region_name"] = resolved
    if ref.endpoint:
        scheme = "" if "://" in ref.endpoint else "https://"
        if ref.endpoint.startswith(("localhost", "127.0.0.1")):
            scheme = "http://"
        kwargs["endpoint_url"] = scheme + ref.endpoint
    return boto3.client("kms", **kwargs)


def _read_reference(reference: str, what: str) -> bytes:
    """The PEM bytes a file or `env://VAR` reference names."""
    if reference.startswith(ENV_PREFIX):
        var = reference[len(ENV_PREFIX) :]
        value = os.environ.get(var)
        if not value:
            raise SigningError(f"{what} {reference}: environment variable {var} is not set")
        return value.encode()
    path = Path(reference).expanduser()
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SigningError(f"{what} {reference}: cannot read it ({exc.strerror})") from None


def _passphrase(config: SigningConfig | None) -> bytes | None:
    if config is None or not config.passphrase_env:
        return None
    value = os.environ.get(config.passphrase_env)
    if value is None:
        raise SigningError(
            f"signing.passphrase_env names {config.passphrase_env}, which is not set"
        )
    return value.encode()


def signer_from_reference(
    reference: str, config: SigningConfig | None = None, kms_client: Any = None
) -> Signer:
    """A Signer for one private key reference."""
    if reference.startswith(KMS_PREFIX):
        return KmsSigner(reference, config.kms_region if config else None, kms_client)
    pem = _read_reference(reference, "signing key")
    try:
        key = serialization.load_pem_private_key(pem, password=_passphrase(config))
    except TypeError:
        raise SigningError(
            f"signing key {reference} is encrypted: set signing.passphrase_env to the name of "
            "the environment variable holding its passphrase"
        ) from None
    except ValueError:
        raise SigningError(
            f"signing key {reference} is not a readable PEM private key (or its passphrase "
            "is wrong)"
        ) from None
    _require_p256(key, reference)
    return LocalSigner(key, reference)  # type: ignore[arg-type]


def verifier_from_reference(
    reference: str, config: SigningConfig | None = None, kms_client: Any = None
) -> Verifier:
    """A Verifier for a public key reference (or a private one: its public half)."""
    if reference.startswith(KMS_PREFIX):
        return KmsSigner(reference, config.kms_region if config else None, kms_client).verifier()
    pem = _read_reference(reference, "verification key")
    if b"PRIVATE KEY" in pem:
        signer = signer_from_reference(reference, config)
        return Verifier(serialization.load_pem_public_key(signer.public_key_pem()), reference)  # type: ignore[arg-type]
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise SigningError(
            f"verification key {reference} is not a readable PEM public key"
        ) from None
    _require_p256(key, reference)
    return Verifier(key, reference)  # type: ignore[arg-type]


def load_signer(settings: Settings, kms_client: Any = None) -> Signer | None:
    """The configured signer (`signing.key`), or None when signing is off or no key is set."""
    config = settings.signing
    if not config.enabled or not config.key:
        return None
    return signer_from_reference(config.key, config, kms_client)


def load_verifier(settings: Settings, kms_client: Any = None) -> Verifier | None:
    """The configured verification key: `signing.public_key`, else `signing.key`'s public half;
    None when neither is set (then nothing can verify and the policy decides)."""
    config = settings.signing
    reference = config.public_key or config.key
    if not reference:
        return None
    return verifier_from_reference(reference, config, kms_client)


@dataclass(frozen=True)
class GeneratedKeys:
    private_key: Path
    public_key: Path
    key_id: str


def generate_key_pair(
    out_dir: Path, passphrase: bytes | None = None, force: bool = False
) -> GeneratedKeys:
    """Write `ztml.key` (PKCS#8 PEM, mode 0600) and `ztml.pub` into `out_dir`.

    Refuses to overwrite an existing key unless `force`: replacing a signing key silently
    would make every image signed with the old one unverifiable.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    private_path, public_path = out_dir / PRIVATE_KEY_FILE, out_dir / PUBLIC_KEY_FILE
    if not force and (private_path.exists() or public_path.exists()):
        raise SigningError(
            f"{private_path} or {public_path} already exists; pass --force to replace it "
            "(images signed with the old key then no longer verify)"
        )
    key = ec.generate_private_key(ec.SECP256R1())
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
    fd = os.open(private_path, flags, 0o600)
    os.fchmod(fd, stat.S_IRUSR | stat.S_IWUSR)  # --force over a looser file: private first
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_pem)
    public_path.write_bytes(LocalSigner(key, str(private_path)).public_key_pem())
    return GeneratedKeys(private_path, public_path, key_id_of(key.public_key()))
