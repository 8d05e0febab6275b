"""Images made by the tests themselves (no binaries in the repo)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def formula_array(width: int, height: int) -> np.ndarray:
    """The reference file's image formula: pixel (x, y) = ((7x + 3y) % 256, (x*x + y) % 256, (x ^ y) % 256)."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([(7 * x + 3 * y) % 256, (x * x + y) % 256, (x ^ y) % 256], axis=-1).astype(np.uint8)


def formula_image(width: int, height: int) -> Image.Image:
    return Image.fromarray(formula_array(width, height), "RGB")


def encode(image: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def photo_like(width: int = 320, height: int = 240, seed: int = 0, fmt: str = "JPEG") -> bytes:
    """A deterministic, textured image: different seeds give different predictions."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(base, "RGB").resize((width, height), Image.Resampling.BICUBIC)
    return encode(image, fmt)
