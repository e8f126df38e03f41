"""HTTP content codings of request bodies (`Content-Encoding: gzip | deflate | identity`).

Clients compress large tensors (tritonclient's `request_compression_algorithm`, curl
`--compressed`); the server decodes them before any codec sees the body. The body-size limit
(`SERVING_MAX_BODY_BYTES`) applies to the DECODED size as well, enforced while inflating, so a
small compressed body that expands without bound (a decompression bomb) is a 413 after at most
`limit + 1` bytes of output, never an exhausted memory.

Response compression (`Accept-Encoding: gzip`) is Starlette's GZipMiddleware in `serving.app`.
"""

from __future__ import annotations

import zlib

from serving.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

# zlib window bits: gzip framing, zlib framing (HTTP's "deflate"), raw deflate (what some send)
_GZIP, _ZLIB, _RAW = 16 + zlib.MAX_WBITS, zlib.MAX_WBITS, -zlib.MAX_WBITS
_CHUNK = 64 * 1024
# responses smaller than this are sent uncompressed even when the client accepts gzip
GZIP_MINIMUM_BYTES = 1024


def decode(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """The body with its content coding(s) removed; 413 once the decoded size passes `limit`."""
    if not content_encoding:
        return body
    codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
    for coding in reversed(codings):  # applied in order, so removed in reverse
        if coding == "identity":
            continue
        if coding in ("gzip", "x-gzip"):
            body = _inflate(body, (_GZIP,), coding, limit)
        elif coding == "deflate":
            body = _inflate(body, (_ZLIB, _RAW), coding, limit)
        else:
            raise UnsupportedMediaType(
                f"Content-Encoding {coding[:40]!r} is not supported; send gzip, deflate or identity"
            )
    return body


def _inflate(body: bytes, window_bits: tuple[int, ...], coding: str, limit: int) -> bytes:
    error: zlib.error | None = None
    for wbits in window_bits:
        try:
            return _bounded(body, wbits, limit)
        except zlib.error as exc:
            error = exc
    raise BadRequest(f"the body is not valid {coding} data: {error}")


def _bounded(body: bytes, wbits: int, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits)
    out: list[bytes] = []
    size = 0
    pending = body
    while pending:
        chunk = inflater.decompress(pending, _CHUNK)
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"the decoded body exceeds the limit of {limit} bytes (SERVING_MAX_BODY_BYTES)"
            )
        out.append(chunk)
        pending = inflater.unconsumed_tail
        if inflater.eof:
            break
    if not inflater.eof:
        raise zlib.error("the compressed data is truncated")
    return b"".join(out)
