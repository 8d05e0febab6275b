"""Admission control for request bodies (`limits.BodyBudget`): one byte budget shared by every body in flight.

Driven at the ASGI level, so a test decides when each body arrives, sees whether the server read it at all, and
sees the headers a server would act on (`Connection: close`).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from imagegen import photo_like
from resnet_api.api.limits import JSON_BODY_WEIGHT, BodyBudget
from resnet_api.app import create_app
from resnet_api.metrics import Metrics
from resnet_api.settings import Settings

MAX_REQUEST = 64 * 1024
BUDGET = 128 * 1024
GAUGE = "resnet_api_inflight_request_bytes"


def json_batch(size: int) -> bytes:
    """A valid JSON batch of one photo, padded with trailing spaces to `size` bytes."""
    body = json.dumps({"images": [{"image": base64.b64encode(photo_like(seed=3)).decode()}]}).encode()
    assert len(body) <= size
    return body + b" " * (size - len(body))


def padded_jpeg(size: int) -> bytes:
    """A JPEG padded with zeros to `size` bytes (the decoder stops at its end marker)."""
    image = photo_like(seed=4)
    return image + b"\0" * (size - len(image))


class Body:
    """The receive() of one request: its body in `chunks`, each given once `gate` is set; then a disconnect
    if `disconnect` (at once, or after the body), else nothing more until the request is cancelled."""

    def __init__(
        self, chunks: list[bytes], *, gate: asyncio.Event | None = None, disconnect: int | None = None
    ) -> None:
        self.chunks = chunks
        self.gate = gate
        self.disconnect = disconnect  # index of the chunk replaced by http.disconnect
        self.reads = 0

    async def __call__(self) -> Message:
        index = self.reads
        self.reads += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.disconnect is not None and index >= self.disconnect:
            return {"type": "http.disconnect"}
        if index < len(self.chunks):
            return {"type": "http.request", "body": self.chunks[index], "more_body": index < len(self.chunks) - 1}
        await asyncio.Event().wait()  # after the body: the client neither sends nor leaves
        raise AssertionError("unreachable")


class Answer:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        return int(next(m for m in self.messages if m["type"] == "http.response.start")["status"])

    @property
    def headers(self) -> dict[str, str]:
        start = next(m for m in self.messages if m["type"] == "http.response.start")
        return {k.decode().lower(): v.decode() for k, v in start["headers"]}

    def json(self) -> Any:
        return json.loads(b"".join(m.get("body", b"") for m in self.messages if m["type"] == "http.response.body"))


def scope_for(path: str, content_type: str, length: int | None) -> Scope:
    headers = [(b"host", b"testserver"), (b"content-type", content_type.encode())]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    else:
        headers.append((b"transfer-encoding", b"chunked"))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


async def call(
    app: Any, path: str, content_type: str, body: Body, *, chunked: bool = False
) -> tuple[Answer, asyncio.Task[None]]:
    """Start a request; the answer fills in as the app sends it."""
    answer = Answer()
    length = None if chunked else sum(map(len, body.chunks))
    task = asyncio.create_task(app(scope_for(path, content_type, length), body, answer))
    await asyncio.sleep(0.01)  # let it reach its first read
    return answer, task


def reserved(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value(GAUGE)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def budget_app(settings: Settings, metrics: Metrics) -> AsyncIterator[FastAPI]:
    limited = settings.model_copy(
        update={"max_request_bytes": MAX_REQUEST, "max_inflight_request_bytes": BUDGET, "retry_after_seconds": 7}
    )
    application = create_app(limited, metrics=metrics)
    async with LifespanManager(application, startup_timeout=60, shutdown_timeout=60) as manager:
        yield manager.app  # type: ignore[misc]


def assert_overloaded(answer: Answer) -> None:
    assert answer.status == 503
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["retry-after"] == "7"
    assert answer.headers["connection"] == "close"  # its body was not read: the connection cannot be reused
    problem = answer.json()
    assert (problem["code"], problem["title"], problem["status"]) == ("overloaded", "Service overloaded", 503)
    assert "RESNET_API_MAX_INFLIGHT_REQUEST_BYTES" in problem["detail"]


async def test_a_body_that_does_not_fit_is_refused_unread_while_another_is_in_flight(
    budget_app: FastAPI, metrics: Metrics
) -> None:
    gate = asyncio.Event()
    first = Body([json_batch(30_000)], gate=gate)  # JSON: holds 3 x 30,000 of the 131,072 bytes until it ends
    first_answer, first_task = await call(budget_app, "/v1/predict/batch", "application/json", first)
    assert reserved(metrics) == JSON_BODY_WEIGHT * 30_000

    second = Body([padded_jpeg(50_000)])  # 90,000 + 50,000 > 131,072
    second_answer, second_task = await call(budget_app, "/v1/predict", "image/jpeg", second)
    await second_task
    assert_overloaded(second_answer)
    assert second.reads == 0  # refused before a byte of its body was read
    assert reserved(metrics) == JSON_BODY_WEIGHT * 30_000

    gate.set()
    await first_task
    assert first_answer.status == 200, first_answer.json()
    assert reserved(metrics) == 0

    again_answer, again_task = await call(budget_app, "/v1/predict", "image/jpeg", Body([padded_jpeg(50_000)]))
    await again_task
    assert again_answer.status == 200, again_answer.json()  # room again: the same request now runs
    assert reserved(metrics) == 0


async def test_a_lone_request_runs_even_when_its_weight_passes_the_budget(
    budget_app: FastAPI, metrics: Metrics
) -> None:
    size = MAX_REQUEST - 1000  # under the request limit; 3x is over the budget
    assert JSON_BODY_WEIGHT * size > BUDGET
    answer, task = await call(budget_app, "/v1/predict/batch", "application/json", Body([json_batch(size)]))
    await task
    assert answer.status == 200, answer.json()
    assert reserved(metrics) == 0


async def test_a_body_over_the_request_limit_gets_413_not_a_503_to_retry(budget_app: FastAPI) -> None:
    gate = asyncio.Event()
    _, holder = await call(budget_app, "/v1/predict/batch", "application/json", Body([json_batch(40_000)], gate=gate))
    answer, task = await call(budget_app, "/v1/predict", "image/jpeg", Body([padded_jpeg(MAX_REQUEST + 1)]))
    await task
    assert answer.status == 413
    assert answer.json()["code"] == "payload_too_large"
    gate.set()
    await holder


async def test_a_chunked_body_is_counted_as_it_streams_in_and_cut_off_when_it_passes(
    budget_app: FastAPI, metrics: Metrics
) -> None:
    gate = asyncio.Event()
    _, holder = await call(budget_app, "/v1/predict/batch", "application/json", Body([json_batch(30_000)], gate=gate))
    chunks = [padded_jpeg(60_000)[i : i + 10_000] for i in range(0, 60_000, 10_000)]
    body = Body(chunks)
    answer, task = await call(budget_app, "/v1/predict", "image/jpeg", body, chunked=True)
    await task
    assert_overloaded(answer)
    # 90,000 held; 10,000 a chunk: the fifth would make 140,000 > 131,072, so it is the last one read.
    assert body.reads == 5
    assert reserved(metrics) == JSON_BODY_WEIGHT * 30_000  # the refused body's 40,000 were given back
    gate.set()
    await holder
    assert reserved(metrics) == 0

    alone = Body(chunks)  # alone, the same body streams in whole and runs
    answer, task = await call(budget_app, "/v1/predict", "image/jpeg", alone, chunked=True)
    await task
    assert answer.status == 200, answer.json()
    assert reserved(metrics) == 0


async def test_the_open_inference_protocol_gets_its_own_error_shape(budget_app: FastAPI) -> None:
    gate = asyncio.Event()
    _, holder = await call(budget_app, "/v1/predict/batch", "application/json", Body([json_batch(40_000)], gate=gate))
    body = Body([b"{" + b" " * 20_000 + b"}"])
    answer, task = await call(budget_app, "/v2/models/resnet18/infer", "application/json", body)
    await task
    assert answer.status == 503
    assert answer.headers["retry-after"] == "7"
    assert answer.headers["connection"] == "close"
    assert "RESNET_API_MAX_INFLIGHT_REQUEST_BYTES" in answer.json()["error"]
    assert body.reads == 0
    gate.set()
    await holder


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (Body([b'{"images": "not a list"}']), "application/json", 422),  # an error answer
        (Body([b"{" + b" " * 5000, b"}"], disconnect=1), "application/json", 499),  # the client leaves mid-body
        (Body([json_batch(25_000)], disconnect=1), "application/json", None),  # ... or while its answer is made
    ],
    ids=["error", "disconnect-mid-body", "disconnect-during-work"],
)
async def test_the_budget_is_released_however_the_request_ends(
    budget_app: FastAPI, metrics: Metrics, body: Body, content_type: str, status: int | None
) -> None:
    answer, task = await call(budget_app, "/v1/predict/batch", content_type, body, chunked=status == 499)
    await task
    if status is None:  # the work was skipped: the client is gone, so no answer at all, or a 499
        assert not answer.messages or answer.status == 499
    else:
        assert answer.status == status
    assert reserved(metrics) == 0


async def test_the_budget_is_released_when_the_app_fails_or_the_request_is_cancelled(metrics: Metrics) -> None:
    go = asyncio.Event()

    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await go.wait()
        raise RuntimeError("boom")

    async def stuck(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await asyncio.Event().wait()

    for app, outcome in ((failing, RuntimeError), (stuck, asyncio.CancelledError)):
        budget = BodyBudget(app, budget_bytes=BUDGET, retry_after_s=1, metrics=metrics)
        for chunked in (False, True):
            go.clear()
            _, task = await call(budget, "/v1/predict", "image/jpeg", Body([b"x" * 1000]), chunked=chunked)
            assert budget.reserved == 1000
            if outcome is asyncio.CancelledError:
                task.cancel()
            go.set()
            with pytest.raises(outcome):
                await task
            assert budget.reserved == 0
            assert reserved(metrics) == 0
