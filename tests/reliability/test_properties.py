"""Property-based tests of decode + preprocess on generated images of random size, mode and format."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from resnet_api.inference import preprocess
from resnet_api.inference.errors import ImageTooLarge, InferenceError, InvalidImage, UnsupportedImage

MAX_PIXELS = 10_000_000  # above the largest generated image (3000 x 2500)
LOW = (0.0 - preprocess.MEAN) / preprocess.STD  # what black normalises to, per channel
HIGH = (1.0 - preprocess.MEAN) / preprocess.STD

# Modes each writer accepts; the image is converted to the mode before saving.
WRITABLE = {
    "JPEG": ["L", "RGB", "CMYK"],
    "PNG": ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"],
    "GIF": ["L", "P", "RGB"],
    "WEBP": ["RGB", "RGBA"],
    "BMP": ["1", "L", "P", "RGB"],
}
PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


@dataclass(frozen=True)
class Sample:
    data: bytes = field(repr=False)
    fmt: str
    mode: str
    width: int
    height: int
    params: str
    turned: bool = False  # an EXIF orientation of 5-8: shown a quarter turn from how it is stored


@st.composite
def images(draw: st.DrawFn) -> Sample:
    fmt = draw(st.sampled_from(sorted(WRITABLE)))
    mode = draw(st.sampled_from(WRITABLE[fmt]))
    # Mostly ordinary sizes, sometimes extreme aspect ratios.
    width = draw(st.one_of(st.integers(1, 400), st.integers(1, 3000)))
    height = draw(st.one_of(st.integers(1, 400), st.sampled_from([1, 2, 3, 2500])))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (max(1, height // 16), max(1, width // 16), 3), dtype=np.uint8))
    image = small.resize((width, height), Image.Resampling.NEAREST)
    if mode == "I;16":
        image = Image.fromarray(np.asarray(image.convert("L"), dtype=np.uint16) * 257)
    elif mode == "P":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=draw(st.integers(2, 256)))
    else:
        image = image.convert(mode)
    params: dict[str, object] = {}
    if fmt == "JPEG":
        params["quality"] = draw(st.integers(5, 95))
    if fmt == "WEBP":
        params["lossless"] = draw(st.booleans())
    turned = False
    if draw(st.booleans()):
        exif = Image.Exif()
        exif[0x0112] = orientation = draw(st.integers(1, 8))
        if fmt in ("JPEG", "PNG", "WEBP"):
            params["exif"] = exif.tobytes()
            turned = orientation >= 5
    if mode == "P" and fmt == "PNG" and draw(st.booleans()):
        params["transparency"] = 0
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return Sample(buf.getvalue(), fmt, mode, width, height, ",".join(sorted(params)), turned)


def _check_array(array: np.ndarray) -> None:
    assert array.shape == (3, preprocess.CROP, preprocess.CROP)
    assert array.dtype == np.float32
    assert array.flags["C_CONTIGUOUS"]
    assert np.isfinite(array).all()
    for c in range(3):
        assert array[c].min() >= LOW[c] - 1e-4
        assert array[c].max() <= HIGH[c] + 1e-4


@PROPERTY_SETTINGS
@given(images())
def test_any_valid_image_gives_a_normalised_224_tensor(sample: Sample) -> None:
    decoded = preprocess.decode(sample.data, max_pixels=MAX_PIXELS)
    assert decoded.image.mode == "RGB"
    # the size as shown: a quarter turn swaps the stored width and height
    assert (decoded.width, decoded.height) == (
        (sample.height, sample.width) if sample.turned else (sample.width, sample.height)
    )
    assert decoded.format == sample.fmt
    _check_array(preprocess.to_array(decoded.image))


@PROPERTY_SETTINGS
@given(images(), st.data())
def test_damaged_images_fail_only_with_domain_errors(sample: Sample, data: st.DataObject) -> None:
    """Truncated or bit-flipped files either still decode to a valid tensor or raise a 4xx domain error."""
    raw = bytearray(sample.data)
    if data.draw(st.booleans(), label="truncate"):
        raw = raw[: data.draw(st.integers(0, max(0, len(raw) - 1)), label="keep")]
    else:
        for _ in range(data.draw(st.integers(1, 16), label="flips")):
            i = data.draw(st.integers(0, len(raw) - 1), label="at")
            raw[i] = data.draw(st.integers(0, 255), label="byte")
    try:
        decoded = preprocess.decode(bytes(raw), max_pixels=MAX_PIXELS)
    except (InvalidImage, UnsupportedImage, ImageTooLarge):
        return
    _check_array(preprocess.to_array(decoded.image))


@PROPERTY_SETTINGS
@given(st.binary(max_size=4096), st.sampled_from([b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM"]))
def test_random_bytes_never_raise_anything_but_domain_errors(noise: bytes, prefix: bytes) -> None:
    with pytest.raises(InferenceError) as info:
        preprocess.decode(prefix + noise, max_pixels=MAX_PIXELS)
    assert isinstance(info.value, (InvalidImage, UnsupportedImage, ImageTooLarge))
