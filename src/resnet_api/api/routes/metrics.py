"""Prometheus scrape endpoint: a plain route, so scrapers get a 200 and no redirect."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from resnet_api.metrics import CONTENT_TYPE, Metrics

router = APIRouter(tags=["monitoring"])


@router.get(
    "/metrics",
    operation_id="metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}, "description": "Prometheus text format"}
    },
)
async def metrics(request: Request) -> Response:
    registry: Metrics = request.app.state.metrics
    service = getattr(request.app.state, "service", None)
    if service is not None:
        registry.queue_depth.set(service.queue_depth)
    return Response(registry.render(), media_type=CONTENT_TYPE)
