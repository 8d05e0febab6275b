"""How much does training a custom classifier delay other users' predictions?

Measures `/v1/predict` latency (ImageNet, one request at a time) while idle and while a classifier is
being created from IMAGES example images, for a few `classifier_embed_inflight` values. In-process
(ASGI transport), untrained seeded weights. Usage:

    .venv/bin/python bench/classifier_training_stall.py [IMAGES]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch
from asgi_lifespan import LifespanManager

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from classifier_images import colour_image, training_set
from resnet_api.app import create_app
from resnet_api.inference.model import random_weights
from resnet_api.settings import Settings


def summary(ms: list[float]) -> str:
    ms = sorted(ms)
    p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))]
    return f"n={len(ms):3d} p50={statistics.median(ms):7.1f} ms p95={p95:7.1f} ms max={ms[-1]:7.1f} ms"


async def latencies(client: httpx.AsyncClient, stop: asyncio.Event | None, n: int) -> list[float]:
    image = colour_image("red", 123_456)
    out: list[float] = []
    while (stop is None and len(out) < n) or (stop is not None and not stop.is_set()):
        started = time.perf_counter()
        r = await client.post("/v1/predict", files={"file": ("x.png", image, "image/png")})
        assert r.status_code == 200, r.text
        out.append((time.perf_counter() - started) * 1000)
    return out


async def run(inflight: int, images: int, weights: Path, data: Path) -> None:
    settings = Settings(weights=str(weights), data_dir=data / str(inflight), classifier_embed_inflight=inflight)
    app = create_app(settings)
    async with (
        LifespanManager(app, startup_timeout=120) as m,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=m.app), base_url="http://x", timeout=300) as client,
    ):
        idle = await latencies(client, None, 30)
        pairs = training_set(images // 3)
        stop = asyncio.Event()

        async def train() -> float:
            started = time.perf_counter()
            r = await client.post(
                "/v1/classifiers",
                data={"name": "bench", "labels": [label for label, _ in pairs]},
                files=[("files", (f"{i}.png", img, "image/png")) for i, (_, img) in enumerate(pairs)],
            )
            stop.set()
            assert r.status_code == 201, r.text
            return time.perf_counter() - started

        busy, took = await asyncio.gather(latencies(client, stop, 0), train())
        print(f"inflight={inflight:2d} idle:   {summary(idle)}")
        print(f"inflight={inflight:2d} during: {summary(busy)}   (training {images} images took {took:.1f} s)")


async def main() -> None:
    images = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "w.pth"
        torch.save(random_weights(seed=1).state_dict, weights)
        for inflight in (1, 2, 4):
            await run(inflight, images, weights, Path(tmp))


if __name__ == "__main__":
    asyncio.run(main())
