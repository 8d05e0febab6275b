"""Decoding and the eval transform against torchvision's outputs."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from imagegen import encode, formula_image
from resnet_api.inference.errors import ImageTooLarge, InvalidImage, UnsupportedImage
from resnet_api.inference.preprocess import (
    ALPHA_BACKGROUND,
    MAX_JPEG_SCANS,
    MAX_PNG_CHUNKS,
    center_crop_box,
    decode,
    resized_size,
    to_array,
)

REFERENCE = Path(__file__).parents[1] / "fixtures" / "torchvision_resnet18.json"
MAX_PIXELS = 50_000_000


@pytest.fixture(scope="module")
def cases() -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(REFERENCE.read_text())["preprocessing"]
    return data


def test_eval_transform_matches_torchvision(cases: list[dict[str, Any]]) -> None:
    assert len(cases) >= 5
    for case in cases:
        array = to_array(formula_image(case["width"], case["height"]))
        assert array.shape == (3, 224, 224)
        assert array.dtype == np.float32
        flat = array.ravel()
        np.testing.assert_allclose(flat[case["positions"]], case["values"], atol=1e-5, rtol=0)
        np.testing.assert_allclose(array.reshape(3, -1).sum(axis=1), case["channel_sums"], rtol=1e-5, atol=1e-2)


def test_resize_and_crop_follow_torchvision_rounding() -> None:
    assert resized_size(640, 480) == (341, 256)
    assert resized_size(300, 500) == (256, 426)
    assert resized_size(257, 256) == (257, 256)
    assert center_crop_box(257, 256) == (16, 16, 240, 240)  # round(16.5) == 16, round-half-even
    assert center_crop_box(256, 426) == (16, 101, 240, 325)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "BMP"])
def test_accepted_formats_decode_by_content(fmt: str) -> None:
    data = encode(formula_image(300, 200), fmt)
    decoded = decode(data, max_pixels=MAX_PIXELS)
    assert (decoded.width, decoded.height, decoded.format) == (300, 200, fmt)
    assert decoded.image.mode == "RGB"


def test_tiff_is_unsupported() -> None:
    with pytest.raises(UnsupportedImage):
        decode(encode(formula_image(32, 32), "TIFF"), max_pixels=MAX_PIXELS)


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"GIF89a"])
def test_garbage_is_rejected_cleanly(data: bytes) -> None:
    with pytest.raises((UnsupportedImage, InvalidImage)):
        decode(data, max_pixels=MAX_PIXELS)


def test_truncated_jpeg_is_invalid() -> None:
    data = encode(formula_image(400, 300), "JPEG")
    with pytest.raises(InvalidImage, match="truncated"):
        decode(data[: len(data) // 2], max_pixels=MAX_PIXELS)


def test_pixel_limit_is_checked_before_decoding() -> None:
    data = encode(Image.new("L", (2000, 2000)), "PNG")
    with pytest.raises(ImageTooLarge, match="2000x2000"):
        decode(data, max_pixels=1_000_000)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def huge_png(width: int, height: int) -> bytes:
    """A 1-bit grey PNG header declaring width x height, with a few rows of data: opens, never fully decodes."""

    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + png_chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + png_chunk(b"IEND", b"")


def test_the_pixel_limit_is_the_setting_not_pillows_own_guard(recwarn: pytest.WarningsRecorder) -> None:
    """Pillow's fixed guard (a warning above 89 MP, an error above 179 MP) must not cap a limit set up to 1e9."""
    over_pillows_error = huge_png(14_000, 14_000)  # 196 MP
    with pytest.raises(ImageTooLarge, match="14000x14000 = 196000000 pixels; the limit is 100000000"):
        decode(over_pillows_error, max_pixels=100_000_000)
    with pytest.raises(InvalidImage, match="corrupt or truncated PNG"):  # within the limit: decoding is reached
        decode(over_pillows_error, max_pixels=200_000_000)
    with pytest.raises(InvalidImage, match="corrupt or truncated PNG"):
        decode(huge_png(10_000, 10_000), max_pixels=150_000_000)  # 100 MP: Pillow only warned here
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_alpha_is_composited_over_white() -> None:
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))  # fully transparent red
    decoded = decode(encode(rgba, "PNG"), max_pixels=MAX_PIXELS)
    assert decoded.image.getpixel((5, 5)) == (255, 255, 255)


def test_palette_with_transparency_is_composited() -> None:
    p = Image.new("P", (10, 10), 0)
    p.putpalette([0, 0, 0, 10, 200, 30] + [0] * (256 * 3 - 6))
    p.putpixel((0, 0), 1)
    decoded = decode(encode(p, "PNG", transparency=0), max_pixels=MAX_PIXELS)
    assert decoded.image.getpixel((5, 5)) == (255, 255, 255)
    assert decoded.image.getpixel((0, 0)) == (10, 200, 30)


def test_16bit_grey_is_scaled_not_clipped() -> None:
    grey16 = Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16))
    decoded = decode(encode(grey16, "PNG"), max_pixels=MAX_PIXELS)
    assert decoded.image.getpixel((1, 1)) == (128, 128, 128)


def png16(values: np.ndarray, transparent: int | None = None) -> bytes:
    """A 16-bit greyscale PNG, optionally with a tRNS chunk naming one grey value transparent."""

    height, width = values.shape
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in values)
    trns = png_chunk(b"tRNS", struct.pack(">H", transparent)) if transparent is not None else b""
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + trns + png_chunk(b"IDAT", zlib.compress(rows)) + png_chunk(b"IEND", b"")


def test_16bit_grey_scales_the_same_whatever_its_brightest_pixel() -> None:
    dark = decode(png16(np.array([[0, 100, 200, 255]], dtype=np.uint16)), max_pixels=MAX_PIXELS)
    one_more = decode(png16(np.array([[0, 100, 200, 256]], dtype=np.uint16)), max_pixels=MAX_PIXELS)
    assert np.asarray(dark.image)[0, :, 0].tolist() == [0, 0, 1, 1]  # was [0, 100, 200, 255]: read as 8-bit
    assert np.asarray(one_more.image)[0, :, 0].tolist() == [0, 0, 1, 1]


def test_16bit_grey_with_a_transparent_value_is_composited_not_clipped() -> None:
    values = np.array([[1000, 30000, 65535, 5]], dtype=np.uint16)
    decoded = decode(png16(values, transparent=5), max_pixels=MAX_PIXELS)
    assert np.asarray(decoded.image)[0].tolist() == [[4] * 3, [117] * 3, [255] * 3, list(ALPHA_BACKGROUND)]


def png_chunks(ancillary: int, idat_pieces: int = 1) -> bytes:
    """An 8x8 grey PNG with `ancillary` empty private chunks before its data, split in `idat_pieces` IDATs."""

    stream = zlib.compress(b"".join(b"\x00" + b"\x80" * 8 for _ in range(8)))
    step = max(1, -(-len(stream) // idat_pieces))
    idats = b"".join(png_chunk(b"IDAT", stream[i : i + step]) for i in range(0, len(stream), step))
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + png_chunk(b"abCd", b"") * ancillary + idats + png_chunk(b"IEND", b"")


def test_a_png_with_too_many_chunks_is_refused_before_pillow_reads_them() -> None:
    assert decode(png_chunks(MAX_PNG_CHUNKS - 2), max_pixels=MAX_PIXELS).image.getpixel((1, 1)) == (128, 128, 128)
    with pytest.raises(InvalidImage, match=f"more than {MAX_PNG_CHUNKS} chunks"):
        decode(png_chunks(MAX_PNG_CHUNKS), max_pixels=MAX_PIXELS)  # with IHDR and IEND: over the limit
    many_data_chunks = png_chunks(0, idat_pieces=60)  # image data split finely is not counted
    assert decode(many_data_chunks, max_pixels=MAX_PIXELS).image.getpixel((1, 1)) == (128, 128, 128)


def test_a_jpeg_with_too_many_scans_is_refused_before_decoding() -> None:
    photo = encode(formula_image(64, 48), "JPEG")
    assert decode(photo, max_pixels=MAX_PIXELS).width == 64
    hostile = photo + b"\xff\xda\x00\x08" * MAX_JPEG_SCANS  # each scan marker costs a pass over the image
    with pytest.raises(InvalidImage, match=f"at most {MAX_JPEG_SCANS} are decoded"):
        decode(hostile, max_pixels=MAX_PIXELS)


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when shown
    decoded = decode(encode(image, "JPEG", exif=exif.tobytes()), max_pixels=MAX_PIXELS)
    assert decoded.image.size == (20, 40)
    assert (decoded.width, decoded.height) == (20, 40)  # the size reported is the one shown, as in the preview


def test_a_rotated_photo_reports_its_shown_size_when_decoded_at_draft_scale() -> None:
    image = Image.new("RGB", (1200, 600), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90° counter-clockwise when shown
    decoded = decode(encode(image, "JPEG", exif=exif.tobytes()), max_pixels=MAX_PIXELS, draft=True)
    assert decoded.image.size == (300, 600)  # decoded at 1/2 scale (both sides still >= 256), then turned
    assert (decoded.width, decoded.height) == (600, 1200)
    flipped = Image.Exif()
    flipped[0x0112] = 3  # a half turn keeps the size
    decoded = decode(encode(image, "JPEG", exif=flipped.tobytes()), max_pixels=MAX_PIXELS, draft=True)
    assert (decoded.width, decoded.height) == (1200, 600)


def test_first_gif_frame_is_used() -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    decoded = decode(buf.getvalue(), max_pixels=MAX_PIXELS)
    r, g, _ = decoded.image.getpixel((8, 8))  # type: ignore[misc]
    assert r > 200
    assert g < 50


def test_batch_normalisation_is_torchvision_s_arithmetic_bit_for_bit() -> None:
    """The mean and std are applied a whole image row at a time: the numbers of x / 255, then (x - mean) / std,
    per channel, exactly."""
    from resnet_api.inference.preprocess import MEAN, STD, normalize_batch

    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, size=(3, 224, 224, 3), dtype=np.uint8)
    pixels[0, :2, :128] = np.arange(256, dtype=np.uint8).reshape(2, 128, 1)  # every byte value in every channel
    pixels[1] = pixels[1, :, :, ::-1]  # channels differ per image: a constant applied to the wrong channel shows
    expected = np.empty((3, 3, 224, 224), np.float32)
    for channel in range(3):
        plane = pixels[..., channel].astype(np.float32) / np.float32(255.0)
        expected[:, channel] = (plane - MEAN[channel]) / STD[channel]
    batch = normalize_batch(pixels)
    assert batch.shape == (3, 3, 224, 224)
    assert batch.dtype == np.float32
    np.testing.assert_array_equal(batch, expected)
    assert np.isclose(batch[0, 0, 1, 127], (1.0 - 0.485) / 0.229)  # byte 255 in the red channel
    narrow = normalize_batch(pixels[:, :, :200])  # any image size, not only the 224 x 224 crop
    np.testing.assert_array_equal(narrow, expected[..., :200])
    turned = normalize_batch(pixels.transpose(0, 2, 1, 3))  # any memory layout (a view that is not C-ordered)
    np.testing.assert_array_equal(turned, expected.transpose(0, 1, 3, 2))


def test_batch_normalisation_equals_the_per_image_transform() -> None:
    """The queue holds uint8 crops and the model thread normalises a whole batch: same numbers as `to_array`."""
    from resnet_api.inference.preprocess import model_batch, normalize_batch, to_pixels

    images = [formula_image(w, h) for w, h in [(320, 240), (240, 320), (451, 300)]]
    pixels = [to_pixels(image) for image in images]
    assert all(p.shape == (224, 224, 3) and p.dtype == np.uint8 for p in pixels)
    expected = np.stack([to_array(image) for image in images])
    batch = normalize_batch(np.stack(pixels))
    assert batch.shape == (3, 3, 224, 224)
    assert batch.dtype == np.float32
    np.testing.assert_array_equal(batch, expected)
    np.testing.assert_array_equal(model_batch(pixels), expected)
    mixed = model_batch([pixels[0], expected[1], pixels[2]])  # preprocessed arrays (v2 tensors) share batches
    np.testing.assert_array_equal(mixed, expected)
