"""Tensors of the Open Inference Protocol: JSON data and the binary tensor data extension.

Binary layout (Triton's): the JSON header, then the raw tensors back to back in the order of the
inputs (or outputs) that carry `parameters.binary_data_size`; the HTTP header
`Inference-Header-Content-Length` gives the JSON header's length. Numbers are little-endian, row-major;
a BYTES tensor is its elements each preceded by a 4-byte little-endian length.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

HEADER_LENGTH = "Inference-Header-Content-Length"
# Numeric datatypes this service reads and writes (BYTES is handled apart).
NUMERIC = {"FP32": np.dtype("<f4")}


class ProtocolError(Exception):
    """A malformed protocol request: answered as `{"error": message}` with `status`."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def element_count(shape: Sequence[int]) -> int:
    if any(d < 0 for d in shape):
        raise ProtocolError(f"shape {list(shape)} has a negative dimension")
    return math.prod(shape)


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON header, binary tail) of a request body."""
    if header_length is None:
        return body, b""
    try:
        n = int(header_length)
    except ValueError:
        raise ProtocolError(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
    if not 0 < n <= len(body):
        raise ProtocolError(f"{HEADER_LENGTH} is {n} but the body has {len(body)} bytes")
    return body[:n], body[n:]


def take_binary(tail: bytes, sizes: Sequence[int | None]) -> list[bytes | None]:
    """Cut the binary tail into one piece per tensor that declares `binary_data_size` (None for the rest)."""
    pieces: list[bytes | None] = []
    offset = 0
    for size in sizes:
        if size is None:
            pieces.append(None)
            continue
        if size < 0 or offset + size > len(tail):
            raise ProtocolError(f"binary_data_size {size} runs past the end of the {len(tail)}-byte binary data")
        pieces.append(tail[offset : offset + size])
        offset += size
    if offset != len(tail):
        raise ProtocolError(f"{len(tail) - offset} bytes of binary data are not claimed by any input")
    return pieces


def decode_bytes_elements(raw: bytes) -> list[bytes]:
    """A binary BYTES tensor -> its elements."""
    items: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise ProtocolError("BYTES tensor data ends inside an element length")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise ProtocolError("BYTES tensor element runs past the end of its data")
        items.append(raw[offset : offset + length])
        offset += length
    return items


def encode_bytes_elements(items: Sequence[bytes]) -> bytes:
    """BYTES elements -> the binary tensor layout."""
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def numeric_tensor(datatype: str, shape: Sequence[int], data: list[Any] | None, raw: bytes | None) -> np.ndarray:
    """A numeric tensor from JSON `data` (flat or nested) or from binary data."""
    dtype = NUMERIC.get(datatype)
    if dtype is None:
        raise ProtocolError(f"datatype {datatype} is not supported here; use {', '.join(NUMERIC)}")
    count = element_count(shape)
    if raw is not None:
        if len(raw) != count * dtype.itemsize:
            raise ProtocolError(
                f"binary data is {len(raw)} bytes; shape {list(shape)} of {datatype} needs {count * dtype.itemsize}"
            )
        return np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="), copy=True).reshape(shape)
    if data is None:
        raise ProtocolError("the input has neither `data` nor binary data")
    try:
        array = np.asarray(data, dtype=dtype.newbyteorder("="))
    except (ValueError, TypeError, OverflowError) as exc:  # OverflowError: an integer beyond the type, 10**400
        raise ProtocolError(f"data is not a {datatype} tensor: {exc}") from None
    if array.size != count:
        raise ProtocolError(f"data has {array.size} elements; shape {list(shape)} needs {count}")
    return array.reshape(shape)


def decompress(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    """Undo `Content-Encoding: gzip | deflate`, refusing to inflate past `max_bytes`."""
    if encoding is None or encoding.strip().lower() in ("", "identity"):
        return body
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(encoding.strip().lower())
    if wbits is None:
        raise ProtocolError(f"Content-Encoding {encoding} is not supported; use gzip, deflate or none", 415)
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise ProtocolError(f"cannot decompress the {encoding} body: {exc}") from None
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise ProtocolError(
            f"the decompressed body is larger than {max_bytes} bytes (RESNET_API_MAX_REQUEST_BYTES)", 413
        )
    return out
