"""The binary tensor data codec of the Open Inference Protocol, without HTTP."""

from __future__ import annotations

import gzip
import zlib

import numpy as np
import pytest

from resnet_api.api.v2_codec import (
    ProtocolError,
    decode_bytes_elements,
    decompress,
    encode_bytes_elements,
    numeric_tensor,
    split_body,
    take_binary,
)


def test_bytes_elements_round_trip_like_tritonclient() -> None:
    from tritonclient.utils import serialize_byte_tensor

    items = [b"", b"\x00\xff jpeg", "é".encode() * 300]
    encoded = encode_bytes_elements(items)
    assert encoded == serialize_byte_tensor(np.array(items, dtype=np.object_)).item()
    assert decode_bytes_elements(encoded) == items
    with pytest.raises(ProtocolError, match="past the end"):
        decode_bytes_elements(encoded[:-1])


def test_binary_pieces_follow_input_order() -> None:
    assert take_binary(b"aabbb", [2, None, 3]) == [b"aa", None, b"bbb"]
    with pytest.raises(ProtocolError, match="not claimed"):
        take_binary(b"aabbbc", [2, 3])
    assert split_body(b"{}xyz", "2") == (b"{}", b"xyz")
    with pytest.raises(ProtocolError):
        split_body(b"{}", "3")


def test_numeric_tensor_from_json_nested_flat_and_binary() -> None:
    values = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    assert np.array_equal(numeric_tensor("FP32", [1, 2, 3], values.tolist(), None), values)
    assert np.array_equal(numeric_tensor("FP32", [1, 2, 3], values.ravel().tolist(), None), values)
    assert np.array_equal(numeric_tensor("FP32", [1, 2, 3], None, values.astype("<f4").tobytes()), values)
    with pytest.raises(ProtocolError, match="not a FP32 tensor"):
        numeric_tensor("FP32", [1], ["x"], None)
    with pytest.raises(ProtocolError, match="not a FP32 tensor"):  # JSON integers have no bound: 400, not 500
        numeric_tensor("FP32", [2], [10**400, 0], None)


def test_decompression_is_capped() -> None:
    assert decompress(gzip.compress(b"hello"), "gzip", 10) == b"hello"
    assert decompress(zlib.compress(b"hello"), "deflate", 10) == b"hello"
    with pytest.raises(ProtocolError) as bomb:
        decompress(gzip.compress(b"\0" * 10_000_000), "gzip", 1000)
    assert bomb.value.status == 413
    with pytest.raises(ProtocolError) as unknown:
        decompress(b"x", "br", 10)
    assert unknown.value.status == 415
