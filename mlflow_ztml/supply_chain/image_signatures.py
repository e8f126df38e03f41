"""Image signatures in the sigstore/cosign format ("simple signing"), stored beside the image.

What is signed is cosign's simple-signing payload, which binds the repository to the manifest
digest:

    {"critical": {"identity": {"docker-reference": "HOST/REPO"},
                  "image": {"docker-manifest-digest": "sha256:..."},
                  "type": "cosign container image signature"},
     "optional": {"io.mlifecycle.ztml/key-id": "sha256:..."}}

It is stored as one layer (media type `application/vnd.dev.cosign.simplesigning.v1+json`, the
base64 DER ECDSA signature in the `dev.cosignproject.cosign/signature` annotation) of the OCI
manifest tagged `sha256-<hex>.sig` in the image's repository. That is what `cosign verify
--key`, containers/image (`skopeo`, `podman`: `sigstoreSigned` policies), Kyverno and sigstore
policy-controller read. Several signatures may share the manifest (cosign appends too).

A signature says nothing about a tag: pushing another image under the same tag changes the
digest the tag resolves to, and that digest has no signature.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Literal

from mlflow_ztml.errors import SigningError
from mlflow_ztml.supply_chain.keys import Signer, Verifier
from mlflow_ztml.supply_chain.registry_client import (
    ImageReference,
    Layer,
    RegistryClient,
    read_attachment,
    write_attachment,
)

SIGNATURE_SUFFIX = "sig"
SIMPLE_SIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
SIGNATURE_TYPE = "cosign container image signature"
KEY_ID_OPTIONAL = "io.mlifecycle.ztml/key-id"
MAX_SIGNATURE_LAYERS = 64


def simple_signing_payload(image: ImageReference, key_id: str | None = None) -> bytes:
    assert image.digest, "a signature binds a digest"
    payload: dict[str, Any] = {
        "critical": {
            "identity": {"docker-reference": image.name},
            "image": {"docker-manifest-digest": image.digest},
            "type": SIGNATURE_TYPE,
        },
        "optional": {KEY_ID_OPTIONAL: key_id} if key_id else None,
    }
    return json.dumps(payload, separators=(",", ":")).encode()


@dataclass(frozen=True)
class SignatureRecord:
    """What one signing did: the digest signed, the key, and where the signature lives."""

    image: str
    digest: str
    key_id: str
    signature_tag: str
    added: bool

    def tag_value(self) -> str:
        """The `ztml.<env>.signature` tag: key id and digest (no signature bytes)."""
        return f"key={self.key_id} digest={self.digest}"


def sign_image(client: RegistryClient, image: ImageReference, signer: Signer) -> SignatureRecord:
    """Sign `image` (resolved to its digest) with `signer` and store the signature.

    Idempotent: when the `.sig` manifest already holds a signature of this key over this
    payload, nothing is written (`added` False).
    """
    image = client.resolve(image)
    verifier = Verifier(_public_key(signer), signer.reference)
    payload = simple_signing_payload(image, signer.key_id)
    existing = read_attachment(client, image, SIGNATURE_SUFFIX)
    tag = f"{image.digest.replace(':', '-')}.{SIGNATURE_SUFFIX}"  # type: ignore[union-attr]
    for found in _signatures(client, image, existing):
        if found.payload == payload and verifier.verify(found.payload, found.signature):
            return SignatureRecord(str(image), image.digest, signer.key_id, tag, False)  # type: ignore[arg-type]
    signature = signer.sign(payload)
    layer = Layer(
        data=payload,
        media_type=SIMPLE_SIGNING_MEDIA_TYPE,
        annotations={SIGNATURE_ANNOTATION: base64.b64encode(signature).decode()},
    )
    write_attachment(client, image, SIGNATURE_SUFFIX, [layer], existing)
    return SignatureRecord(str(image), image.digest, signer.key_id, tag, True)  # type: ignore[arg-type]


def _public_key(signer: Signer) -> Any:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    return load_pem_public_key(signer.public_key_pem())


@dataclass(frozen=True)
class FoundSignature:
    payload: bytes
    signature: bytes


def _signatures(
    client: RegistryClient, image: ImageReference, layers: list[dict[str, Any]]
) -> list[FoundSignature]:
    found = []
    for descriptor in layers[:MAX_SIGNATURE_LAYERS]:
        if descriptor.get("mediaType") != SIMPLE_SIGNING_MEDIA_TYPE:
            continue
        encoded = (descriptor.get("annotations") or {}).get(SIGNATURE_ANNOTATION, "")
        try:
            signature = base64.b64decode(encoded, validate=True)
        except ValueError:
            continue
        payload = client.get_blob(image.repository, descriptor["digest"], max_bytes=2**20)
        found.append(FoundSignature(payload, signature))
    return found


SignatureState = Literal["verified", "missing", "invalid"]


@dataclass(frozen=True)
class SignatureCheck:
    """The verdict on one image's signatures: `verified`, `missing` or `invalid`, and why."""

    state: SignatureState
    detail: str
    digest: str
    key_id: str | None = None


def verify_image_signature(
    client: RegistryClient, image: ImageReference, verifier: Verifier
) -> SignatureCheck:
    """Whether some signature in `image`'s `.sig` manifest verifies with `verifier` and its
    payload names this repository and this digest (cosign's and containers/image's check).

    `image` must carry the digest to check (a tag is resolved first by the caller, so what is
    checked is what would run).
    """
    assert image.digest, "verify a digest"
    found = _signatures(client, image, read_attachment(client, image, SIGNATURE_SUFFIX))
    if not found:
        return SignatureCheck(
            "missing", f"{image.name}@{image.digest} has no signature", image.digest
        )
    problems = []
    for candidate in found:
        if not verifier.verify(candidate.payload, candidate.signature):
            problems.append("signed by another key or altered")
            continue
        problem = _payload_problem(candidate.payload, image)
        if problem:
            problems.append(problem)
            continue
        return SignatureCheck(
            "verified",
            f"signed by key {verifier.key_id}",
            image.digest,
            verifier.key_id,
        )
    summary = "; ".join(sorted(set(problems)))
    return SignatureCheck(
        "invalid",
        f"none of the {len(found)} signature(s) of {image.name}@{image.digest} verifies with "
        f"key {verifier.key_id} ({summary})",
        image.digest,
    )


def _payload_problem(payload: bytes, image: ImageReference) -> str | None:
    try:
        critical = json.loads(payload)["critical"]
        digest = critical["image"]["docker-manifest-digest"]
        reference = critical["identity"]["docker-reference"]
        kind = critical["type"]
    except (ValueError, KeyError, TypeError):
        return "signature payload is not a simple-signing document"
    if kind != SIGNATURE_TYPE:
        return f"signature payload type is {kind!r}"
    if digest != image.digest:
        return f"signature is for digest {digest}"
    try:
        signed_name = ImageReference.parse(str(reference)).name
    except SigningError:
        signed_name = str(reference)
    if signed_name != image.name:
        return f"signature is for repository {reference}"
    return None


def check_reference(reference: str) -> ImageReference:
    """Parse an image reference for signing, with the reason when it cannot be signed."""
    if reference.startswith("sha256:"):
        raise SigningError(
            f"image {reference} exists only in the local engine: signatures live in a "
            "registry (set build.registry and build.push)"
        )
    return ImageReference.parse(reference)
