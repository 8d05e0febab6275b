"""How much JPEG draft decoding changes results: top-1 agreement with the exact path, and the time saved.

Usage: .venv/bin/python bench/draft_agreement.py [N]   (N generated large photos, default 12; seeded random weights)
"""

from __future__ import annotations

import io
import sys
import time

import numpy as np
from PIL import Image

from resnet_api.inference import preprocess
from resnet_api.inference.backends.torch_backend import TorchBackend
from resnet_api.inference.model import random_weights


def large_photo(seed: int, width: int, height: int) -> bytes:
    """Smooth colour fields upscaled to camera size plus sensor-like noise, saved as JPEG quality 90."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(height // 64 + 1, width // 64 + 1, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(coarse, "RGB").resize((width, height), Image.Resampling.BICUBIC), np.float32)
    pixels = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 12
    backend = TorchBackend(random_weights(0), threads=2)
    agree, exact_s, draft_s, diffs = 0, 0.0, 0.0, []
    for i in range(count):
        data = large_photo(i, *((3000, 2000) if i % 2 == 0 else (1600, 1200)))
        t = time.perf_counter()
        exact = preprocess.to_array(preprocess.decode(data, max_pixels=10**9).image)
        exact_s += time.perf_counter() - t
        t = time.perf_counter()
        fast = preprocess.to_array(preprocess.decode(data, max_pixels=10**9, draft=True).image)
        draft_s += time.perf_counter() - t
        _, p_exact = backend.run(exact[None])
        _, p_fast = backend.run(fast[None])
        agree += int(p_exact.argmax() == p_fast.argmax())
        diffs.append(float(np.abs(exact - fast).mean()))
    print(
        f"top-1 agreement {agree}/{count}; decode+preprocess exact {1000 * exact_s / count:.1f} ms, "
        f"draft {1000 * draft_s / count:.1f} ms; mean |input difference| {np.mean(diffs):.4f}"
    )


if __name__ == "__main__":
    main()
