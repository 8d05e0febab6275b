"""The one table from errors to HTTP answers, and the handlers that render RFC 9457 problem details."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from resnet_api.api.schemas import Problem
from resnet_api.inference.errors import (
    BackboneMismatch,
    ClassifierChanged,
    ClassifierNotFound,
    ClientDisconnected,
    DeadlineExceeded,
    ImageTooLarge,
    InferenceError,
    InvalidImage,
    InvalidTensor,
    InvalidTrainingSet,
    LimitExceeded,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    UnsupportedImage,
    WeightsUnavailable,
)

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://resnet-api.dev/problems/"

# Domain error -> HTTP status. Subclasses not listed fall back to their nearest listed base.
STATUS: dict[type[InferenceError], int] = {
    InvalidImage: 400,
    InvalidTensor: 400,
    UnsupportedImage: 415,
    ImageTooLarge: 413,
    PayloadTooLarge: 413,
    Overloaded: 503,
    DeadlineExceeded: 503,
    NotReady: 503,
    ClientDisconnected: 499,  # nginx's "client closed request": logged and counted, never seen by the client
    WeightsUnavailable: 503,
    ClassifierNotFound: 404,
    BackboneMismatch: 409,
    ClassifierChanged: 409,
    LimitExceeded: 422,
    InvalidTrainingSet: 422,
    InferenceError: 500,
}
RETRY_STATUSES = frozenset({503})

# Starlette/FastAPI HTTP errors -> stable codes. FastAPI answers 400 only when the multipart body is malformed
# or over the form limits (RESNET_API_MAX_FORM_FIELDS, RESNET_API_MAX_FORM_PART_BYTES); the file limit is a 413
# `too_many_files` from `deps.read_form`.
HTTP_CODES = {
    400: "invalid_form",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    503: "overloaded",  # request bodies over RESNET_API_MAX_INFLIGHT_REQUEST_BYTES (limits.BodyBudget)
}

# For OpenAPI: the error answers each kind of route can give.
PROBLEM_CONTENT = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}


ERROR_DESCRIPTIONS = {
    400: "Corrupt or truncated image, or a malformed multipart body (`invalid_form`)",
    401: "Missing or invalid API key (only when API keys are configured)",
    404: "No such custom classifier",
    408: "The request body arrived too slowly",
    409: "The custom classifier was trained on other backbone weights (`backbone_mismatch`), or another replica "
    "changed it since this one read it (`classifier_changed`: retry, this replica has reloaded it)",
    413: "File or request too large, or too many pixels",
    415: "Not an image, an unsupported format, or a request body that is neither multipart nor JSON",
    422: "Invalid parameters, missing file, malformed JSON body, or a limit reached",
    500: "A custom classifier's files could not be written (`storage_failed`)",
    503: "Overloaded or not ready: retry after the Retry-After header",
}
# One example body per status, so generated clients and the docs show what each error looks like.
ERROR_EXAMPLES: dict[int, tuple[str, str, str]] = {
    400: ("invalid_image", "Invalid image", "corrupt or truncated PNG image: image file is truncated"),
    401: ("unauthorized", "Unauthorized", "a valid API key is required: send it as `Authorization: Bearer <key>`"),
    404: (
        "classifier_not_found",
        "Classifier not found",
        "no classifier with id 'x': list them with GET /v1/classifiers",
    ),
    408: ("request_timeout", "Request timeout", "the request body was not received within 60 s"),
    409: (
        "backbone_mismatch",
        "Classifier trained on other weights",
        "classifier 'x' was trained on weights IMAGENET1K_V1 but the service runs random-seed0: restart with those weights",
    ),
    413: ("payload_too_large", "Payload too large", "cat.jpg is larger than the 20971520-byte upload limit"),
    415: (
        "unsupported_media_type",
        "Unsupported image type",
        "not a recognised image: send a JPEG, PNG, GIF, WebP or BMP file",
    ),
    422: ("validation_error", "Invalid request", "query.top_k: Input should be less than or equal to 1000"),
    500: (
        "storage_failed",
        "Storage failed",
        "could not write classifier files under /var/lib/resnet-api: set RESNET_API_DATA_DIR to a writable directory",
    ),
    503: ("overloaded", "Service overloaded", "the queue is full (128 images waiting): retry shortly"),
}


def _example(status: int) -> dict[str, Any]:
    code, title, detail = ERROR_EXAMPLES[status]
    instance = {404: "/v1/classifiers/x", 500: "/v1/classifiers"}.get(status, "/v1/predict")
    example = {"type": PROBLEM_TYPE_BASE + code, "title": title, "status": status, "detail": detail, "code": code}
    return {**example, "instance": instance}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these statuses: the Problem schema, a description and an example each."""
    return {
        s: {
            "model": Problem,
            "description": ERROR_DESCRIPTIONS[s],
            "content": {PROBLEM_MEDIA_TYPE: {**PROBLEM_CONTENT[PROBLEM_MEDIA_TYPE], "example": _example(s)}},
        }
        for s in statuses
    }


def status_for(exc: InferenceError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def problem(status: int, code: str, title: str, detail: str, instance: str, **extra: Any) -> Problem:
    return Problem(
        type=PROBLEM_TYPE_BASE + code, title=title, status=status, detail=detail, code=code, instance=instance, **extra
    )


def http_problem(status: int, detail: str, instance: str) -> Problem:
    """The problem for a Starlette/FastAPI HTTP error, or a middleware's refusal: a 503 reads as a full queue's."""
    code = HTTP_CODES.get(status, "http_error")
    title = Overloaded.title if code == Overloaded.code else code.replace("_", " ").capitalize()
    return problem(status, code, title, detail, instance)


def problem_for(exc: InferenceError, instance: str) -> Problem:
    return problem(status_for(exc), exc.code, exc.title, exc.detail, instance)


def problem_response(body: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        jsonable_encoder(body, exclude_none=True),
        status_code=body.status,
        headers=headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )


def retry_headers(request: Request, status: int) -> dict[str, str] | None:
    if status not in RETRY_STATUSES:
        return None
    return {"Retry-After": str(request.app.state.settings.retry_after_seconds)}


async def _inference_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InferenceError)
    body = problem_for(exc, request.url.path)
    return problem_response(body, retry_headers(request, body.status))


MAX_REPORTED_ERRORS = 20
"""A 422 lists at most this many errors, then how many more there were: a body of 200,000 unknown keys made
200,000 errors, and copying each into the answer twice took seconds on the event loop and a 27 MB answer."""


def capped_errors(errors: Sequence[Any], total: int | None = None) -> list[dict[str, Any]]:
    """The first `MAX_REPORTED_ERRORS` of `errors` (`loc`, `msg`, `type` only), and one entry counting the rest."""
    if errors and errors[-1].get("type") == "too_many_errors":  # capped already, where the body was parsed
        return list(errors)
    total = len(errors) if total is None else total
    shown = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in errors[:MAX_REPORTED_ERRORS]]
    if total > len(shown):
        more = total - len(shown)
        shown.append({"loc": ["body"], "msg": f"and {more} more errors, not listed", "type": "too_many_errors"})
    return shown


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = capped_errors(exc.errors())
    summary = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
    body = problem(
        422, "validation_error", "Invalid request", summary or "invalid request", request.url.path, errors=errors
    )
    return problem_response(body)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers) if exc.headers else {}
    if exc.status_code == 405:
        # Starlette names only the first route matching the path; a path with GET and POST routes has both.
        headers["Allow"] = ", ".join(_allowed_methods(request))
    if _is_v2(request):  # raised by routing (404, 405) before a /v2 route runs, so its own handling never saw it
        message = V2_NOT_OFFERED.format(path=request.url.path) if exc.status_code == 404 else str(exc.detail)
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=headers or None)
    return problem_response(http_problem(exc.status_code, str(exc.detail), request.url.path), headers or None)


V2_NOT_OFFERED = "{path} is not offered: this server implements health, server and model metadata, and infer"


def _is_v2(request: Request) -> bool:
    """The Open Inference Protocol's paths, whose errors are `{"error": "..."}` (see routes/v2.py)."""
    path = request.url.path
    return path == "/v2" or path.startswith("/v2/")


def _allowed_methods(request: Request) -> list[str]:
    """Methods some route fully matches for this path (asks the router, so nested routers count too)."""
    allowed = []
    for method in ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"):
        # HEAD is answered wherever GET is (middleware.HeadAsGet), which the routes themselves do not know.
        scope = {**request.scope, "method": "GET" if method == "HEAD" else method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


async def _client_gone(request: Request, exc: Exception) -> JSONResponse:
    """The client closed the connection while its body was still coming in: 499, as when it leaves during the work.

    Starlette raises `ClientDisconnect` from reading the body; unhandled, it was logged with a traceback and
    counted as a 500, which a 5xx alert would take for a server fault.
    """
    assert isinstance(exc, ClientDisconnect)
    gone = ClientDisconnected("the client closed the connection while sending its request; nothing was done")
    return await _inference_error(request, gone)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s", request.url.path, exc_info=exc)
    if _is_v2(request):  # a fault in a /v2 route: still the protocol's shape
        return JSONResponse({"error": "the server failed; it keeps serving"}, status_code=500)
    body = problem(
        500, "internal_error", "Internal server error", "the server failed; it keeps serving", request.url.path
    )
    return problem_response(body)


class UnexpectedErrors:
    """Answers an unexpected exception with `_unexpected_error`'s 500 from inside the app's middleware.

    Starlette runs an `Exception` handler in its outermost layer, outside every middleware the app adds: that 500
    would lack the request id (and CORS headers), and the exception, re-raised after it, makes uvicorn close the
    connection. Added innermost, this makes the 500 one more answer and the connection stays open. The handler
    installed below still answers faults in the middleware itself.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracking)
        except Exception as exc:
            if started:  # too late for another answer
                raise
            response = await _unexpected_error(Request(scope), exc)
            await response(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(InferenceError, _inference_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
