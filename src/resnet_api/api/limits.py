"""ASGI middleware that refuses request bodies over a byte limit, too slow, or over the shared in-flight budget."""

from __future__ import annotations

import asyncio
import time

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from resnet_api.api.errors import http_problem, problem_response
from resnet_api.metrics import Metrics


class BodyTooLarge(HTTPException):
    """An HTTPException so that FastAPI's body parsing re-raises it instead of turning it into a 400."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"the request body is larger than {max_bytes} bytes (RESNET_API_MAX_REQUEST_BYTES)")


class BodyTimeout(HTTPException):
    """The client took longer than allowed to send its body (a slow or stalled upload)."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(
            408, f"the request body was not received within {timeout_s:g} s (RESNET_API_BODY_TIMEOUT_SECONDS)"
        )


class BodySizeLimit:
    """413 from the Content-Length header at once, or as soon as a (chunked) body passes the limit;
    408 when the whole body has not arrived within `timeout_s` of the first read."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self._reject(scope, receive, send, BodyTooLarge(self.max_bytes))
                    return
        seen = 0
        body_done = False
        deadline: float | None = None
        started = False
        refused = False  # the body was cut off: whoever answers, the connection must close after the answer

        async def limited_receive() -> Message:
            nonlocal seen, body_done, deadline, refused
            if body_done or self.timeout_s is None:
                message = await receive()  # after the body, receive() only reports a disconnect: no timeout
            else:
                if deadline is None:
                    deadline = time.monotonic() + self.timeout_s
                try:
                    message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.0))
                except TimeoutError:
                    refused = True
                    raise BodyTimeout(self.timeout_s) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    refused = True
                    raise BodyTooLarge(self.max_bytes)
                body_done = not message.get("more_body", False)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if refused:  # answered by the app's error handler: still, do not read (or wait for) the rest
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except (BodyTooLarge, BodyTimeout) as exc:
            if not started:
                await self._reject(scope, receive, send, exc)

    @staticmethod
    async def _reject(scope: Scope, receive: Receive, send: Send, exc: HTTPException) -> None:
        await reject(scope, receive, send, exc)


async def reject(scope: Scope, receive: Receive, send: Send, exc: HTTPException) -> None:
    """Answer `exc` before (or instead of) reading the rest of the body, and close the connection, not drain it."""
    headers = {**(exc.headers or {}), "Connection": "close"}
    if str(scope.get("path", "")).startswith("/v2"):  # the Open Inference Protocol has its own error shape
        response: Response = JSONResponse({"error": exc.detail}, exc.status_code, headers)
    else:
        response = problem_response(http_problem(exc.status_code, exc.detail, scope["path"]), headers)
    await response(scope, receive, send)


JSON_BODY_WEIGHT = 3
"""A JSON body counts this many times its size against the in-flight budget: while it is parsed the server holds
the raw body, the parsed base64 text and the decoded bytes (measured: 4 concurrent 60 MB JSON batches grew the
server's peak RSS by 628 MiB, 2.7x their size; multipart bodies are spooled to files, and count once)."""


class BodyBudgetExceeded(HTTPException):
    """An HTTPException (as `BodyTooLarge`) so that FastAPI's body parsing re-raises it instead of a 400."""

    def __init__(self, need: int, held: int, budget: int, retry_after_s: int) -> None:
        super().__init__(
            503,
            f"request bodies in flight hold {held} of the {budget} bytes the server takes at once "
            f"(RESNET_API_MAX_INFLIGHT_REQUEST_BYTES); this one needs {need} more "
            f"(JSON counts {JSON_BODY_WEIGHT}x its size): retry shortly",
            headers={"Retry-After": str(retry_after_s)},
        )


class BodyBudget:
    """Admission control for request bodies: every body in flight holds its bytes of one shared budget.

    A body with `Content-Length` reserves its size (times `JSON_BODY_WEIGHT` for JSON) before the app runs, and is
    refused at once, unread, with 503 `overloaded` and Retry-After (as a full queue) when the budget lacks room;
    a chunked body reserves as it streams in and is cut off the same way. A request is always admitted when no
    other body is in flight, so one larger than the budget (a weighted JSON one) still runs alone. The bytes are
    released when the request ends, however it ends.
    """

    def __init__(self, app: ASGIApp, budget_bytes: int, retry_after_s: int, metrics: Metrics | None = None) -> None:
        self.app = app
        self.budget = budget_bytes
        self.retry_after_s = retry_after_s
        self.metrics = metrics
        self.reserved = 0

    def _fits(self, need: int, own: int) -> bool:
        return self.reserved == own or self.reserved + need <= self.budget  # alone, or room left

    def _hold(self, nbytes: int) -> None:
        self.reserved += nbytes
        if self.metrics is not None:
            self.metrics.inflight_request_bytes.set(self.reserved)

    def _refusal(self, need: int, own: int) -> BodyBudgetExceeded:
        return BodyBudgetExceeded(need, self.reserved - own, self.budget, self.retry_after_s)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared: int | None = None
        weight = 1
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = max(int(value), 0)
                except ValueError:
                    declared = None
            elif name == b"content-type":
                media_type = value.split(b";", 1)[0].strip().lower()
                if media_type == b"application/json" or (
                    media_type.startswith(b"application/") and media_type.endswith(b"+json")
                ):
                    weight = JSON_BODY_WEIGHT
        held = 0
        refused = False  # the body was cut off: the answer closes the connection

        async def counting_receive() -> Message:
            nonlocal held, refused
            message = await receive()
            if message["type"] == "http.request" and message.get("body"):
                need = len(message["body"]) * weight
                if not self._fits(need, held):
                    refused = True
                    raise self._refusal(need, held)
                self._hold(need)
                held += need
            return message

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and refused:
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        try:
            if declared is not None:  # the whole body at once, before any of it is read
                need = declared * weight
                if not self._fits(need, 0):
                    await reject(scope, receive, send, self._refusal(need, 0))
                    return
                self._hold(need)
                held = need
                await self.app(scope, receive, send)
            else:  # chunked: as it streams in
                await self.app(scope, counting_receive, closing_send)
        finally:
            self._hold(-held)
