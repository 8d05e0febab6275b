"""ASGI middleware that refuses request bodies over a byte limit, or too slow, while they stream in."""

from __future__ import annotations

import asyncio
import time

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from resnet_api.api.errors import problem, problem_response


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
        # The rest of the body is not read: close the connection instead of draining it.
        headers = {"Connection": "close"}
        if str(scope.get("path", "")).startswith("/v2"):  # the Open Inference Protocol has its own error shape
            response: Response = JSONResponse({"error": exc.detail}, exc.status_code, headers)
        else:
            code = "payload_too_large" if exc.status_code == 413 else "request_timeout"
            title = code.replace("_", " ").capitalize()
            response = problem_response(problem(exc.status_code, code, title, exc.detail, scope["path"]), headers)
        await response(scope, receive, send)
