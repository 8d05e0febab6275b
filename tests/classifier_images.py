"""Labelled images that are separable by construction: each label is a colour, each image a noisy texture of it."""

from __future__ import annotations

import numpy as np
from PIL import Image

from imagegen import encode

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (200, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 60, 200),
}


def colour_image(label: str, seed: int, *, width: int = 128, height: int = 96, fmt: str = "PNG") -> bytes:
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 30.0, size=(height // 4, width // 4, 3))
    pixels = np.clip(np.array(COLOURS[label], dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB").resize((width, height), Image.Resampling.BILINEAR)
    return encode(image, fmt)


def training_set(per_label: int, *, seed: int = 0, labels: tuple[str, ...] = tuple(COLOURS)) -> list[tuple[str, bytes]]:
    """(label, image) pairs; different seeds give disjoint images."""
    return [
        (label, colour_image(label, seed * 10_000 + 100 * li + i))
        for li, label in enumerate(labels)
        for i in range(per_label)
    ]
