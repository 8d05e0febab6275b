"""Overload behaviour without a server process: deadlines, skipped work, the admission bound."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from imagegen import photo_like
from resnet_api.app import create_app
from resnet_api.inference.batcher import MicroBatcher
from resnet_api.inference.errors import DeadlineExceeded
from resnet_api.settings import Settings


class BlockingModel:
    """A fake model whose first batch blocks until released; records every batch it ran."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.batches: list[list[str]] = []

    def __call__(self, items: Sequence[str], threads: int) -> list[str]:
        self.batches.append(list(items))
        self.release.wait(10)
        return [item.upper() for item in items]


async def _wait_until(predicate: object, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.005)


async def test_expired_item_is_answered_and_never_run() -> None:
    model = BlockingModel()
    batcher: MicroBatcher[str, str] = MicroBatcher(model, max_batch_size=1, max_wait_s=0, max_queue_size=8)
    batcher.start()
    first = asyncio.create_task(batcher.submit("a"))
    await _wait_until(lambda: model.batches)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(DeadlineExceeded):
        await batcher.submit("late", timeout_s=0.2)
    assert 0.15 <= loop.time() - started < 2.0  # answered at its deadline, not when the model got free
    model.release.set()
    assert (await first).value == "A"
    assert (await batcher.submit("b", timeout_s=5)).value == "B"
    await batcher.stop()
    assert model.batches == [["a"], ["b"]]  # "late" never reached the model


async def test_cancelled_caller_is_skipped() -> None:
    model = BlockingModel()
    batcher: MicroBatcher[str, str] = MicroBatcher(model, max_batch_size=4, max_wait_s=0, max_queue_size=8)
    batcher.start()
    first = asyncio.create_task(batcher.submit("a"))
    await _wait_until(lambda: model.batches)
    gone = asyncio.create_task(batcher.submit("gone", timeout_s=30))
    kept = asyncio.create_task(batcher.submit("kept"))
    await _wait_until(lambda: batcher.depth == 2)
    gone.cancel()  # what a client disconnect does to its request
    model.release.set()
    assert (await first).value == "A"
    assert (await kept).value == "KEPT"
    await batcher.stop()
    assert model.batches == [["a"], ["kept"]]


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=60) as client:
            yield app, client


def _settings(weights_file: Path, **overrides: object) -> Settings:
    base: dict[str, object] = {
        "weights": str(weights_file),
        "allow_download": False,
        "torch_threads": 1,
        "decode_workers": 2,
        "max_batch_size": 1,
        "max_batch_wait_ms": 0.0,
    }
    return Settings(**{**base, **overrides})  # type: ignore[arg-type]


async def _post_many(client: httpx.AsyncClient, n: int) -> list[httpx.Response]:
    image = photo_like(320, 240, seed=3)
    return await asyncio.gather(
        *(client.post("/v1/predict", files={"file": (f"{i}.jpg", image, "image/jpeg")}) for i in range(n))
    )


async def test_beyond_the_admission_bound_requests_get_503_at_once(weights_file: Path) -> None:
    async with running_app(_settings(weights_file, max_queue_size=2)) as (app, client):
        responses = await _post_many(client, 16)
        statuses = [r.status_code for r in responses]
        assert set(statuses) <= {200, 503}
        assert statuses.count(200) >= 2
        assert statuses.count(503) >= 1
        for r in responses:
            if r.status_code == 503:
                assert r.json()["code"] == "overloaded"
                assert r.headers["Retry-After"] == "1"
        assert app.state.service.admitted == 0
        # Refused requests were refused before decoding: only the admitted ones cost a decode.
        metrics = app.state.service.metrics.render().decode()
        decoded = re.search(r"^resnet_api_preprocess_seconds_count (\S+)$", metrics, re.MULTILINE)
        assert decoded is not None
        assert float(decoded.group(1)) == statuses.count(200)


async def test_requests_past_their_deadline_get_503_and_are_not_run(weights_file: Path) -> None:
    async with running_app(_settings(weights_file, request_deadline_ms=10.0)) as (app, client):
        service = app.state.service
        responses = await _post_many(client, 12)
        codes = [r.json().get("code") if r.status_code != 200 else "ok" for r in responses]
        assert set(codes) <= {"ok", "deadline_exceeded"}
        assert "deadline_exceeded" in codes
        assert all(r.headers.get("Retry-After") for r in responses if r.status_code == 503)
        # Dropped before inference: the model ran at most one batch per 200 (batches of one).
        assert service.batches_run <= codes.count("ok") + 2  # + warm-up batches


async def test_work_for_a_disconnected_client_is_skipped(weights_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with running_app(_settings(weights_file)) as (app, _client):
        service = app.state.service
        batches_before = service.batches_run
        # The image's decode waits until the answer is out: otherwise, on a loaded machine, a fast decode could
        # reach the queue and the model before the disconnect is read, and the test would depend on that race.
        answered = threading.Event()
        decode = service._decode

        def decode_after_the_answer(data: bytes) -> object:
            answered.wait(10)
            return decode(data)

        monkeypatch.setattr(service, "_decode", decode_after_the_answer)
        boundary = "b0undary"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
                "Content-Type: image/jpeg\r\n\r\n"
            ).encode()
            + photo_like(320, 240)
            + f"\r\n--{boundary}--\r\n".encode()
        )
        messages = [{"type": "http.request", "body": body, "more_body": False}, {"type": "http.disconnect"}]
        sent: list[dict[str, object]] = []

        async def receive() -> dict[str, object]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/predict",
            "raw_path": b"/v1/predict",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"testserver"),
                (b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
            ],
            "client": ("127.0.0.1", 5000),
            "server": ("testserver", 80),
            "state": {},
        }
        await app(scope, receive, send)  # type: ignore[arg-type]
        answered.set()
        await asyncio.sleep(0.3)  # anything that had been queued would have run by now
        assert sent[0]["status"] == 499
        assert service.batches_run == batches_before
        assert service.admitted == 0
        assert 'resnet_api_images_total{outcome="cancelled"} 1.0' in service.metrics.render().decode()
