"""ASGI middleware for every request: request ids with a JSON access log line, API-key checks, and HEAD."""

from __future__ import annotations

import hmac
import logging
import re
import time
import uuid
from collections.abc import Iterable

from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from resnet_api.api.errors import problem, problem_response

access_log = logging.getLogger("resnet_api.access")

REQUEST_ID_HEADER = "X-Request-ID"
# A client's id is reused only if it is short and harmless in logs and headers; otherwise a fresh one is made.
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:+=/-]{1,128}")
PROBES = frozenset({"/livez", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"})


def request_id_of(scope: Scope) -> str | None:
    state = scope.get("state") or {}
    value = state.get("request_id")
    return value if isinstance(value, str) else None


class RequestContext:
    """Gives every request an id (the client's `X-Request-ID` when sane), echoes it, and logs one JSON line."""

    def __init__(self, app: ASGIApp, *, log_requests: bool = True) -> None:
        self.app = app
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = _header(scope, b"x-request-id")
        request_id = sent if sent is not None and _SAFE_REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        response_bytes = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_bytes
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode("ascii")))
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                response_bytes += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if self.log_requests:
                client = scope.get("client")
                access_log.info(
                    "%s %s %d",
                    scope["method"],
                    scope["path"],
                    status,
                    extra={
                        "request_id": request_id,
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                        "response_bytes": response_bytes,
                        "client": f"{client[0]}:{client[1]}" if client else None,
                        "user_agent": _header(scope, b"user-agent"),
                    },
                )


class HeadAsGet:
    """Answers `HEAD` wherever `GET` is answered (RFC 9110 9.3.2): the same status and headers, no body.

    FastAPI's routes answer only the methods they declare, so without this `HEAD /metrics` or `HEAD /v1/model`
    would be 405 while uptime checkers and load balancers probe with `HEAD`. The request goes down as `GET`
    (in a copy of the scope: the server keeps its own `HEAD`, so it still sends no body) and the body is
    dropped on the way back; `Content-Length` stays the one `GET` would send. The metrics outside label the
    request by matching its path against the routes (`app.route_label`), as for answers given before routing.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        as_get = {**scope, "method": "GET"}

        async def send_without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app(as_get, receive, send_without_body)


class ApiKeyAuth:
    """When keys are configured, `/v1/*` and `/v2/*` (and, if asked, the probes) need one: `Bearer` or `X-API-Key`.

    The check runs before the body is read, so unauthenticated clients cannot make the server parse uploads.
    """

    def __init__(self, app: ASGIApp, *, keys: Iterable[str], protect_probes: bool) -> None:
        self.app = app
        self.keys = [key.encode() for key in keys]
        self.protect_probes = protect_probes

    def _protected(self, path: str) -> bool:
        if path in PROBES:
            return self.protect_probes
        return path.startswith(("/v1/", "/v2"))

    def _valid(self, candidate: str | None) -> bool:
        if candidate is None:
            return False
        given = candidate.encode()
        matched = False
        for key in self.keys:  # no early exit: the time taken does not depend on which key matched
            matched |= hmac.compare_digest(given, key)
        return matched

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or not self._protected(scope["path"]):
            await self.app(scope, receive, send)
            return
        if self._valid(_presented_key(scope)):
            await self.app(scope, receive, send)
            return
        detail = "a valid API key is required: send it as `Authorization: Bearer <key>` or `X-API-Key: <key>`"
        headers = {"WWW-Authenticate": 'Bearer realm="resnet-api"'}
        if scope["path"].startswith("/v2"):  # the Open Inference Protocol has its own error shape
            response: Response = JSONResponse({"error": detail}, 401, headers)
        else:
            response = problem_response(problem(401, "unauthorized", "Unauthorized", detail, scope["path"]), headers)
        await response(scope, receive, send)


def _presented_key(scope: Scope) -> str | None:
    api_key = _header(scope, b"x-api-key")
    if api_key:
        return api_key.strip()
    authorization = _header(scope, b"authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None
