"""Soak: resident memory stays flat over many requests (short in CI; RESNET_API_SOAK_REQUESTS=5000 for longer)."""

from __future__ import annotations

import asyncio
import os
import time

import httpx
import pytest

from imagegen import photo_like
from reliability.conftest import ServerProcess

WARMUP_REQUESTS = 40
SOAK_REQUESTS = int(os.environ.get("RESNET_API_SOAK_REQUESTS", "150"))
SOAK_TIME_LIMIT_S = float(os.environ.get("RESNET_API_SOAK_SECONDS", "90"))
CONCURRENCY = 4
# The promise the README states: after warm-up, RSS grows by less than this, however many requests follow.
RSS_GROWTH_LIMIT = 48 * 1024 * 1024
IMAGES = [photo_like(320 + 16 * i, 240 + 8 * i, seed=i, fmt=fmt) for i, fmt in enumerate(["JPEG", "PNG", "WEBP"] * 2)]


async def _drive(client: httpx.AsyncClient, count: int, stop_at: float) -> tuple[int, int]:
    """`count` requests mixing predict, embed, a small batch and a bad file; returns (done, non-200 surprises)."""
    done = surprises = 0
    lock = asyncio.Lock()

    async def worker(w: int) -> None:
        nonlocal done, surprises
        while time.monotonic() < stop_at:
            async with lock:
                if done >= count:
                    return
                i = done
                done += 1
            image = IMAGES[i % len(IMAGES)]
            kind = i % 10
            if kind == 7:
                r = await client.post("/v1/embed", files={"file": ("a", image, "application/octet-stream")})
            elif kind == 8:
                files = [("files", (f"{j}", IMAGES[j], "image/jpeg")) for j in range(3)]
                r = await client.post("/v1/predict/batch", files=files)
            elif kind == 9:
                r = await client.post(
                    "/v1/predict", files={"file": ("bad.jpg", image[: len(image) // 2], "image/jpeg")}
                )
                surprises += r.status_code != 400
                continue
            else:
                r = await client.post("/v1/predict", files={"file": ("a", image, "image/jpeg")})
            surprises += r.status_code != 200

    await asyncio.gather(*(worker(w) for w in range(CONCURRENCY)))
    return done, surprises


@pytest.mark.slow
async def test_memory_stays_flat(shared_server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=shared_server.base_url, timeout=60) as client:
        done, surprises = await _drive(client, WARMUP_REQUESTS, time.monotonic() + 60)
        assert surprises == 0
        rss_warm = shared_server.rss_bytes()
        started = time.monotonic()
        done, surprises = await _drive(client, SOAK_REQUESTS, started + SOAK_TIME_LIMIT_S)
        elapsed = time.monotonic() - started
        rss_after = shared_server.rss_bytes()
    assert surprises == 0
    assert done >= min(SOAK_REQUESTS, 100), f"only {done} requests in {elapsed:.0f} s"
    growth = rss_after - rss_warm
    print(
        f"\nsoak: {done} requests in {elapsed:.1f} s; RSS after warm-up {rss_warm / 2**20:.1f} MiB, "
        f"after soak {rss_after / 2**20:.1f} MiB (growth {growth / 2**20:+.1f} MiB, limit {RSS_GROWTH_LIMIT / 2**20:.0f})"
    )
    assert growth < RSS_GROWTH_LIMIT
