"""SIGTERM against the real server process: readiness fails at once, accepted work finishes, exit 0 in time."""

from __future__ import annotations

import asyncio
import re
import signal
import time

import httpx

from imagegen import photo_like
from reliability.conftest import ServerFactory

IN_FLIGHT = 10
DRAIN_S = 1.5
GRACE_S = 30


async def _images_done(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics")).text
    match = re.search(r'^resnet_api_images_total\{outcome="ok"\} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_sigterm_drains_and_exits_zero(server_factory: ServerFactory) -> None:
    server = server_factory(
        max_batch_size=1, max_queue_size=64, shutdown_drain_seconds=DRAIN_S, shutdown_grace_seconds=GRACE_S
    )
    image = photo_like(320, 240, seed=5)
    limits = httpx.Limits(max_connections=IN_FLIGHT + 4)
    async with (
        httpx.AsyncClient(base_url=server.base_url, timeout=60, limits=limits) as client,
        httpx.AsyncClient(base_url=server.base_url, timeout=10) as probe,
    ):
        baseline = await _images_done(probe)

        async def one(i: int) -> tuple[float, httpx.Response | BaseException]:
            try:
                r: httpx.Response | BaseException = await client.post(
                    "/v1/predict", files={"file": (f"{i}.jpg", image, "image/jpeg")}
                )
            except httpx.HTTPError as exc:
                r = exc
            return time.monotonic(), r

        tasks = [asyncio.create_task(one(i)) for i in range(IN_FLIGHT)]
        # Wait until the model has started on them, so most are still queued when the signal comes.
        async with asyncio.timeout(60):
            while await _images_done(probe) < baseline + 1:
                await asyncio.sleep(0.02)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)

        # During the drain: readiness fails and new work is refused with a retryable 503.
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as fresh:
            ready = await fresh.get("/readyz")
            refused = await fresh.post("/v1/predict", files={"file": ("new.jpg", image, "image/jpeg")})
            alive = await fresh.get("/livez")
        assert ready.status_code == 503
        assert ready.json()["code"] == "not_ready"
        assert refused.status_code == 503
        assert refused.json()["code"] == "not_ready"
        assert refused.headers["Retry-After"] == "1"
        assert alive.status_code == 200

        results = await asyncio.gather(*tasks)

    returncode = await asyncio.to_thread(server.process.wait, DRAIN_S + GRACE_S + 20)
    exited_after = time.monotonic() - signalled
    errors = [r for _, r in results if isinstance(r, BaseException)]
    assert not errors, f"accepted requests lost on shutdown: {errors!r}"
    statuses = [r.status_code for _, r in results if isinstance(r, httpx.Response)]
    assert statuses == [200] * IN_FLIGHT, statuses
    finished_after_signal = [t for t, _ in results if t > signalled]
    assert finished_after_signal, "no request was still in flight at SIGTERM: the test proves nothing"
    assert returncode == 0, server.log()[-3000:]
    assert exited_after < DRAIN_S + GRACE_S
    print(
        f"\nshutdown: {len(finished_after_signal)}/{IN_FLIGHT} requests answered 200 after SIGTERM; "
        f"exit 0 after {exited_after:.1f} s (drain {DRAIN_S} s)"
    )
