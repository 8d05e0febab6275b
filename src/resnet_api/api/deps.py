"""Annotated dependency aliases for routes, and the capped upload reader."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, File, Request, UploadFile

from resnet_api.inference.classifiers import ClassifierRegistry
from resnet_api.inference.errors import NotReady, PayloadTooLarge
from resnet_api.inference.service import InferenceService
from resnet_api.settings import Settings


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_service(request: Request) -> InferenceService:
    service: InferenceService | None = getattr(request.app.state, "service", None)
    if service is None:
        raise NotReady("the model is still loading: retry shortly")
    return service


SettingsDep = Annotated[Settings, Depends(get_settings)]
ServiceDep = Annotated[InferenceService, Depends(get_service)]


async def read_upload(upload: UploadFile, max_bytes: int) -> bytes:
    """Read at most `max_bytes + 1` bytes, so an oversized file is refused without reading it all."""
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        name = upload.filename or "file"
        raise PayloadTooLarge(f"{name} is larger than the {max_bytes}-byte upload limit (RESNET_API_MAX_UPLOAD_BYTES)")
    return data


async def image_upload(
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="The image: JPEG, PNG, GIF (first frame), WebP or BMP")],
) -> bytes:
    return await read_upload(file, settings.max_upload_bytes)


ImageUploadDep = Annotated[bytes, Depends(image_upload)]


async def get_classifiers(request: Request) -> ClassifierRegistry:
    registry: ClassifierRegistry | None = getattr(request.app.state, "classifiers", None)
    if registry is None:
        raise NotReady("the service is still starting: retry shortly")
    return registry


ClassifiersDep = Annotated[ClassifierRegistry, Depends(get_classifiers)]
