"""Probes for container orchestrators."""

from __future__ import annotations

from fastapi import APIRouter, Request

from resnet_api.api.errors import error_responses
from resnet_api.api.schemas import HealthResponse
from resnet_api.inference.errors import NotReady

router = APIRouter(tags=["health"])


@router.get("/livez", operation_id="livez", summary="The process is alive", response_model=HealthResponse)
async def livez() -> HealthResponse:
    return HealthResponse(status="ok")


@router.get(
    "/readyz",
    operation_id="readyz",
    summary="The model is loaded, warmed and accepting work",
    response_model=HealthResponse,
    responses=error_responses(503),
)
async def readyz(request: Request) -> HealthResponse:
    service = getattr(request.app.state, "service", None)
    if service is None or not service.is_ready or request.app.state.draining:
        raise NotReady("the model is loading or the service is shutting down")
    return HealthResponse(status="ready")
