"""Tiny OCI images pushed straight through the distribution API (no engine, no build).

Signature and attestation checks only need an image *in a registry*; building a serving image
takes minutes, pushing one of these takes milliseconds. Each is a real, valid image (an OCI
config and one gzipped tar layer holding one file) that skopeo copies like any other.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile

from mlflow_ztml.supply_chain.registry_client import (
    OCI_MANIFEST,
    ImageReference,
    RegistryClient,
    digest_of,
)


def _layer(content: bytes) -> tuple[bytes, str]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = len(content)
        info.mtime = 0
        tar.addfile(info, io.BytesIO(content))
    plain = raw.getvalue()
    return gzip.compress(plain, mtime=0), "sha256:" + hashlib.sha256(plain).hexdigest()


def push_tiny_image(registry: str, repository: str, tag: str, content: bytes) -> ImageReference:
    """Push a one-file image to `registry/repository:tag`; return it with its digest."""
    client = RegistryClient(registry)
    layer, diff_id = _layer(content)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    ).encode()
    client.put_blob(repository, layer)
    client.put_blob(repository, config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "size": len(config),
            "digest": digest_of(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "size": len(layer),
                "digest": digest_of(layer),
            }
        ],
    }
    digest = client.put_manifest(repository, tag, manifest)
    return ImageReference(registry, repository, tag, digest)
