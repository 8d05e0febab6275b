"""Annotated dependency aliases for routes, and the capped upload reader."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Annotated, TypeVar

from fastapi import Depends, File, Request, UploadFile

from resnet_api.inference.errors import ClientDisconnected, NotReady, PayloadTooLarge
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


T = TypeVar("T")

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


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Run `work`, but cancel it as soon as the client disconnects, so nobody runs the model for no one.

    Once the body has been read, `receive()` returns only when the client goes away (`http.disconnect`).
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise ClientDisconnected("the client closed the connection before its answer was ready; the work was skipped")
    finally:
        for pending in (task, watcher):
            pending.cancel()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
