"""The composition root: `create_app` builds the service, routes, middleware and error handlers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from resnet_api import __version__
from resnet_api.api.classifier_schemas import CLASSIFIER_REQUEST_MODELS
from resnet_api.api.errors import UnexpectedErrors, install_error_handlers
from resnet_api.api.limits import BodyBudget, BodySizeLimit
from resnet_api.api.middleware import REQUEST_ID_HEADER, ApiKeyAuth, HeadAsGet, RequestContext
from resnet_api.api.openapi import REQUEST_MODELS, install_request_schemas
from resnet_api.api.routes import classifiers, health, model, predict, v2
from resnet_api.api.routes import metrics as metrics_route
from resnet_api.api.ui import StaticUI
from resnet_api.inference.classifiers import registry_for
from resnet_api.inference.errors import WeightsUnavailable
from resnet_api.inference.service import InferenceService, WeightsLoader, load_weights
from resnet_api.metrics import Metrics
from resnet_api.settings import Settings

log = logging.getLogger(__name__)


DESCRIPTION = """\
Classify images into the 1000 ImageNet classes with ResNet-18, on a CPU, offline.

* `POST /v1/predict` — top-k classes of one image (multipart field `file`, or JSON with base64)
* `POST /v1/predict/batch` — several images in one request (multipart field `files`, repeated, or JSON)
* `POST /v1/embed` — the 512-d feature vector of an image
* `GET /` — the Web UI (drag-and-drop, batch grid, live camera)
* `POST /v1/classifiers` — teach new classes from a few labelled photos; then `POST /v1/predict?classifier={id}`
* `/v2/...` — the Open Inference Protocol (KServe V2) for Triton and KServe clients; not in this schema
* `GET /livez`, `GET /readyz`, `GET /metrics` — for orchestrators and Prometheus

Every error is an RFC 9457 problem (`application/problem+json`) with a stable `code`.
"""


class RequestMetrics:
    """Counts and times every HTTP request by route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                elapsed = time.perf_counter() - started
                self.metrics.request_latency.labels(scope["method"], route_label(scope, self.routes)).observe(elapsed)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.requests.labels(scope["method"], route_label(scope, self.routes), str(status)).inc()


def route_label(scope: Scope, routes: Sequence[BaseRoute]) -> str:
    """The template of the route that answered (never the raw path, so the label's values stay few).

    FastAPI's router puts `scope["route"]` only for its own routes; a Mount (the Web UI, the docs' assets) or a
    plain Starlette Route (`/openapi.json`) leaves just `scope["endpoint"]`, so that is looked up among `routes`
    (every route, those of included routers too: see `create_app`). An answer given before routing (a 401 from
    the key check, a 413 from `Content-Length`) leaves neither: it counts under the route the path would have
    reached. Only a path no route takes is `unmatched`.
    """
    route = scope.get("route")
    if route is not None:
        return str(route.path)
    endpoint = scope.get("endpoint")
    for candidate in routes:
        if endpoint is None:
            hit = candidate.matches(scope)[0] is not Match.NONE  # the method may differ: a 405 is the route's too
        else:
            hit = (isinstance(candidate, Mount) and candidate.app is endpoint) or (
                isinstance(candidate, Route) and candidate.endpoint is endpoint
            )
        if hit and isinstance(candidate, Mount):
            return candidate.path_format  # "/static-offline-docs/{path}"; the UI at "/" is "/{path}"
        if hit and isinstance(candidate, Route):
            return candidate.path
    return "unmatched"


def create_app(
    settings: Settings | None = None,
    *,
    weights_loader: WeightsLoader = load_weights,
    metrics: Metrics | None = None,
    load_in_background: bool = False,
) -> FastAPI:
    """The application. With `load_in_background` (what `resnet-api serve` does) the start-up returns at once, so
    the server listens while the model loads: `/livez` and `/metrics` answer, `/readyz` and the API say 503
    `not_ready` until it is ready, and a failed load sets `app.state.load_failed` for the server to stop on.
    Without it the start-up is the load, as in-process users (tests, `asgi-lifespan`) expect."""
    settings = settings or Settings()
    metrics = metrics or Metrics()

    async def open_service() -> None:
        service = InferenceService(settings, weights_loader=weights_loader, metrics=metrics)
        await service.start()
        registry = registry_for(settings, service, service.description)
        try:
            await registry.open()
        except BaseException:
            await service.stop()  # its threads would outlive the failed start-up
            raise
        app.state.classifiers = registry
        app.state.service = service  # last: requests see the service only with its classifiers
        if app.state.draining:  # SIGTERM arrived while the model was loading
            service.drain()

    async def open_service_or_report() -> None:
        try:
            await open_service()
        except WeightsUnavailable as exc:  # a setting to fix, whose message names the fixes: no traceback
            log.error("the model could not be loaded, the server stops: %s", exc)
            app.state.load_failed = True
        except Exception:
            log.exception("the model could not be loaded: the server stops")
            app.state.load_failed = True

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(open_service_or_report()) if load_in_background else None
        if loading is None:
            await open_service()
        try:
            yield
        finally:
            if loading is not None:
                await loading  # stopped while loading: let it finish, then close what it opened
            # 1. classifier writes in progress finish (they need the model); 2. readiness fails at once;
            # 3. accepted work finishes; 4. threads are released.
            registry, service = app.state.classifiers, app.state.service
            if registry is not None:
                await registry.close()
            if service is not None:
                await service.stop()
            app.state.service = None
            app.state.classifiers = None

    # Swagger UI at /docs and ReDoc at /redoc from files in the fastapi-offline package (mounted at
    # /static-offline-docs), where FastAPI's own pages would load them from a CDN: they work offline.
    app = FastAPIOffline(
        title="resnet-api",
        version=__version__,
        summary="ImageNet classification with ResNet-18 on CPUs",
        description=DESCRIPTION,
        lifespan=lifespan,
        license_info={"name": "MIT", "identifier": "MIT"},
        form_limits={
            "max_files": settings.max_batch_files,
            "max_fields": settings.max_form_fields,
            "max_part_size": settings.max_form_part_bytes,
        },
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.service = None
    app.state.draining = False
    app.state.classifiers = None
    app.state.load_failed = False
    install_error_handlers(app)
    routers = (predict.router, model.router, health.router, metrics_route.router, v2.router, classifiers.router)
    for router in routers:
        app.include_router(router)
    install_request_schemas(app, (*REQUEST_MODELS, *CLASSIFIER_REQUEST_MODELS))
    # Last, so API routes win; a Mount is not an APIRoute, so the UI stays out of the OpenAPI schema.
    app.router.routes.append(StaticUI())
    # Listed innermost first: the request id wraps everything, so even a 401 or 413 carries it.
    app.add_middleware(UnexpectedErrors)  # its 500 goes out through every layer below, request id included
    app.add_middleware(HeadAsGet)  # inside the metrics and access log, which record the HEAD
    # Inside the size limit: a body over RESNET_API_MAX_REQUEST_BYTES gets its 413, never a 503 to retry.
    app.add_middleware(
        BodyBudget,
        budget_bytes=settings.max_inflight_request_bytes,
        retry_after_s=settings.retry_after_seconds,
        metrics=metrics,
    )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes, timeout_s=settings.body_timeout_seconds)
    app.add_middleware(ApiKeyAuth, keys=settings.all_api_keys(), protect_probes=settings.protect_probes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "HEAD", "POST", "DELETE"],  # DELETE: /v1/classifiers/{id}
            allow_headers=["Authorization", "X-API-Key", "Content-Type", REQUEST_ID_HEADER],
            expose_headers=[REQUEST_ID_HEADER, "Retry-After"],
            max_age=600,
        )
    # The app's router holds included routers as opaque wrappers (FastAPI 0.165): the metrics label looks through
    # the app's own routes and mounts, and the routes of each router included above.
    labelled = [r for r in app.router.routes if isinstance(r, Route | Mount)] + [r for x in routers for r in x.routes]
    app.add_middleware(RequestMetrics, metrics=metrics, routes=labelled)
    app.add_middleware(RequestContext, log_requests=settings.access_log)
    return app


def begin_draining(app: FastAPI) -> None:
    """Called from the SIGTERM handler: readiness fails and new work gets 503 at once; admitted work finishes."""
    app.state.draining = True
    service: InferenceService | None = app.state.service
    if service is not None:
        service.drain()
