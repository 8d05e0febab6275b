from __future__ import annotations

import io

import numpy as np
from PIL import Image

from imagegen import encode, photo_like
from resnet_api.inference import preprocess
from resnet_api.settings import Settings


def large_photo(width: int = 3000, height: int = 2000, seed: int = 0) -> bytes:
    """A textured photo-like JPEG at camera size: smooth colour fields plus sensor-like noise."""
    rng = np.random.default_rng(seed)
    base = Image.open(io.BytesIO(photo_like(width // 8, height // 8, seed=seed))).resize(
        (width, height), Image.Resampling.BICUBIC
    )
    pixels = np.clip(np.asarray(base, dtype=np.float32) + rng.normal(0, 6, (height, width, 3)), 0, 255)
    return encode(Image.fromarray(pixels.astype(np.uint8), "RGB"), "JPEG", quality=90)


def test_draft_decodes_large_jpeg_at_reduced_scale_keeping_256() -> None:
    data = large_photo()
    exact = preprocess.decode(data, max_pixels=10**8)
    fast = preprocess.decode(data, max_pixels=10**8, draft=True)
    assert exact.image.size == (3000, 2000)
    assert fast.image.size == (750, 500)  # 1/4 scale: 1/8 would leave the shorter side at 250 < 256
    assert (fast.width, fast.height, fast.format) == (3000, 2000, "JPEG")  # the upload's own size is reported
    # The model input barely changes: normalised inputs differ by ~0.01 on average (they span about 4.5).
    diff = np.abs(preprocess.to_array(exact.image) - preprocess.to_array(fast.image))
    assert diff.mean() < 0.05


def test_draft_never_goes_below_256_on_the_shorter_side() -> None:
    data = large_photo(1000, 520, seed=1)
    fast = preprocess.decode(data, max_pixels=10**8, draft=True)
    assert fast.image.size == (500, 260)
    small = photo_like(320, 240)
    assert preprocess.decode(small, max_pixels=10**8, draft=True).image.size == (320, 240)


def test_draft_leaves_other_formats_alone() -> None:
    png = encode(Image.fromarray(np.zeros((600, 900, 3), np.uint8)), "PNG")
    assert preprocess.decode(png, max_pixels=10**8, draft=True).image.size == (900, 600)


def test_draft_is_on_by_default() -> None:
    assert Settings(weights="random").jpeg_draft is True
