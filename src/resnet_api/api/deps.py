"""Annotated dependency aliases for routes, and the capped upload reader."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Literal, Protocol, TypeVar

from fastapi import Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData
from starlette.datastructures import UploadFile as StarletteUploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from resnet_api.api.errors import MAX_REPORTED_ERRORS, capped_errors
from resnet_api.api.schemas import BatchJSONRead, ImageJSON, UndecodedImage
from resnet_api.inference.classifiers import ClassifierRegistry
from resnet_api.inference.errors import ClientDisconnected, InvalidImage, NotReady, PayloadTooLarge, TooManyFiles
from resnet_api.inference.service import InferenceService
from resnet_api.settings import Settings


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_service(request: Request) -> InferenceService:
    """The service, for a request accepted now: 503 `not_ready` while the model loads and once draining began.

    New requests are refused here, where they enter; the service itself keeps running the images of requests
    accepted before the drain (see `InferenceService.drain`).
    """
    service: InferenceService | None = getattr(request.app.state, "service", None)
    if service is None:
        raise NotReady("the model is still loading: retry shortly")
    if request.app.state.draining:
        raise NotReady(SHUTTING_DOWN)
    return service


SHUTTING_DOWN = "the service is shutting down: retry shortly (another replica will answer)"


T = TypeVar("T")

SettingsDep = Annotated[Settings, Depends(get_settings)]
ServiceDep = Annotated[InferenceService, Depends(get_service)]


async def read_upload(upload: StarletteUploadFile, max_bytes: int) -> bytes:
    """Read at most `max_bytes + 1` bytes, so an oversized file is refused without reading it all."""
    return check_size(await upload.read(max_bytes + 1), upload.filename, max_bytes)


def check_size(data: bytes, name: str | None, max_bytes: int) -> bytes:
    if len(data) > max_bytes:
        raise too_large(name, max_bytes)
    return data


def too_large(name: str | None, max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"{name or 'file'} is larger than the {max_bytes}-byte upload limit (RESNET_API_MAX_UPLOAD_BYTES)"
    )


# --- one route, two request bodies: multipart or base64 JSON (issue 7) ---


class ImageSource(Protocol):
    """One image of a request, from a multipart part or a JSON field; `read` applies the upload limit."""

    @property
    def filename(self) -> str | None: ...

    async def read(self, max_bytes: int) -> bytes: ...


@dataclass(frozen=True)
class UploadSource:
    upload: StarletteUploadFile

    @property
    def filename(self) -> str | None:
        return self.upload.filename

    async def read(self, max_bytes: int) -> bytes:
        return await read_upload(self.upload, max_bytes)


@dataclass(frozen=True)
class DecodedSource:
    data: bytes | UndecodedImage
    filename: str | None

    async def read(self, max_bytes: int) -> bytes:
        if isinstance(self.data, UndecodedImage):
            raise InvalidImage(f"{self.filename or 'the image'} is {self.data.reason}: send the file's bytes in base64")
        return check_size(self.data, self.filename, max_bytes)


BodyModel = TypeVar("BodyModel", bound=BaseModel)


def request_kind(request: Request, *, raw: bool = False) -> Literal["multipart", "json", "raw"]:
    """Which of the documented bodies this is, from Content-Type; anything else is a 415. With `raw` (routes of
    one image), the body may also be the image file itself: `application/octet-stream` or any `image/*` type."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type in ("multipart/form-data", ""):  # no Content-Type: nothing sent, the 422 names the missing field
        return "multipart"
    if media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json")):
        return "json"
    if raw and (media_type == "application/octet-stream" or media_type.startswith("image/")):
        return "raw"
    bodies = (
        "multipart/form-data with the image file, application/json with the image in base64, or the image file "
        "itself as the body (Content-Type image/jpeg, image/png, ... or application/octet-stream)"
        if raw
        else "multipart/form-data with the image files, or application/json with base64-encoded images"
    )
    raise HTTPException(415, f"Content-Type {media_type} is not accepted: send {bodies}")


async def read_raw_body(request: Request, max_bytes: int) -> bytes:
    """The body as the image's bytes, read as it streams in: past `max_bytes` it is refused without the rest."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise too_large("the image", max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)  # empty: a 400 `invalid_image` from decoding, as an empty multipart file gets


JSON_ON_LOOP_BYTES = 64 * 1024
"""Bodies up to this size are validated on the event loop; larger ones (base64 images: decoding 100 MB took
0.6 s, stalling every other request and the probes) on a worker thread."""


async def parse_json(request: Request, model: type[BodyModel]) -> BodyModel:
    """Validate the body against `model`; errors become the same 422 problem as FastAPI's own validation."""
    body = await request.body()
    try:
        if len(body) <= JSON_ON_LOOP_BYTES:
            return model.model_validate_json(body)
        return await asyncio.to_thread(model.model_validate_json, body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)[:MAX_REPORTED_ERRORS]
        located = [{**e, "loc": ("body", *e["loc"])} for e in errors]
        raise RequestValidationError(capped_errors(located, exc.error_count())) from None


def form_uploads(form: FormData, field: str) -> list[UploadSource]:
    items = form.getlist(field)
    if not items:
        raise RequestValidationError([{"type": "missing", "loc": ("body", field), "msg": "Field required"}])
    if not all(isinstance(item, StarletteUploadFile) for item in items):
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body", field), "msg": "Expected a file upload, got a text field"}]
        )
    return [UploadSource(item) for item in items if isinstance(item, StarletteUploadFile)]


async def image_data(request: Request, settings: SettingsDep) -> bytes:
    """The one image of a request: multipart field `file`, JSON `{"image": "<base64>"}`, or the body itself."""
    kind = request_kind(request, raw=True)
    if kind == "raw":
        return await read_raw_body(request, settings.max_upload_bytes)
    if kind == "json":
        body = await parse_json(request, ImageJSON)
        return check_size(body.image, body.filename, settings.max_upload_bytes)
    form = await read_form(request, settings)
    try:
        uploads = form_uploads(form, "file")
        if len(uploads) > 1:  # answering for the first would leave the others unanswered without a word
            raise RequestValidationError(
                [
                    {
                        "type": "too_long",
                        "loc": ("body", "file"),
                        "msg": f"{len(uploads)} files sent in `file`: send one, or several to /v1/predict/batch as `files`",
                    }
                ]
            )
        return await uploads[0].read(settings.max_upload_bytes)
    finally:
        await form.close()


def too_many_batch_files(sent: str, settings: Settings) -> TooManyFiles:
    """The 413 for a batch over `RESNET_API_MAX_BATCH_FILES`, from the route's count or the parser's stop."""
    return TooManyFiles(
        f"{sent} files sent; at most {settings.max_batch_files} per request (RESNET_API_MAX_BATCH_FILES)"
    )


async def read_form(
    request: Request,
    settings: Settings,
    *,
    max_files: int | None = None,
    text_fields_per_file: int = 0,
    too_many: Callable[[str], TooManyFiles] | None = None,
) -> FormData:
    """The multipart form, parsed under the form limits (more gets 400 `invalid_form`, too many files 413).

    `max_files` defaults to the batch limit; `text_fields_per_file` allows that many more text fields per allowed
    file (the classifier routes send one `labels` field per file). When the parser stops at the file limit,
    `too_many("more than N")` is the 413 that names it (default: the batch limit's, `too_many_batch_files`).
    """
    files = settings.max_batch_files if max_files is None else max_files
    try:
        return await request.form(
            max_files=files,
            max_fields=settings.max_form_fields + text_fields_per_file * files,
            max_part_size=settings.max_form_part_bytes,
        )
    except StarletteHTTPException as exc:  # Starlette's parser reports its limits as a 400 with this text
        if str(exc.detail).startswith("Too many files"):
            sent = f"more than {files}"
            raise (too_many(sent) if too_many else too_many_batch_files(sent, settings)) from exc
        raise


async def image_sources(request: Request, settings: SettingsDep) -> AsyncIterator[list[ImageSource]]:
    """The images of a batch request, in order: multipart fields `files`, or JSON `{"images": [...]}`."""
    if request_kind(request) == "json":
        body = await parse_json(request, BatchJSONRead)
        yield [DecodedSource(item.image, item.filename) for item in body.images]
        return
    form = await read_form(request, settings)
    try:
        yield list(form_uploads(form, "files"))
    finally:
        await form.close()


ImageDataDep = Annotated[bytes, Depends(image_data)]
ImageSourcesDep = Annotated[list[ImageSource], Depends(image_sources)]


async def get_classifiers(request: Request) -> ClassifierRegistry:
    registry: ClassifierRegistry | None = getattr(request.app.state, "classifiers", None)
    if registry is None:
        raise NotReady("the service is still starting: retry shortly")
    if request.app.state.draining:  # as get_service: new requests are refused where they enter
        raise NotReady(SHUTTING_DOWN)
    return registry


ClassifiersDep = Annotated[ClassifierRegistry, Depends(get_classifiers)]


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
