"""Classification and embedding endpoints."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Query, Request

from resnet_api.api.deps import (
    ClassifiersDep,
    ImageDataDep,
    ImageSource,
    ImageSourcesDep,
    ServiceDep,
    SettingsDep,
    too_many_batch_files,
    unless_disconnected,
)
from resnet_api.api.errors import error_responses, problem_for
from resnet_api.api.openapi import alternative_bodies
from resnet_api.api.routes.classifiers import ClassifierParam, classify_with
from resnet_api.api.schemas import (
    BatchItem,
    BatchJSON,
    BatchResponse,
    BatchUpload,
    EmbedResponse,
    ImageJSON,
    ImageUpload,
    PredictResponse,
)
from resnet_api.api.views import image_info, model_ref, predictions, timings, warning
from resnet_api.inference.errors import InferenceError, TooManyFiles

router = APIRouter(prefix="/v1", tags=["inference"])

TopK = Annotated[int, Query(ge=1, le=1000, description="How many classes to return, best first")]
MinScore = Annotated[
    float | None, Query(ge=0.0, le=1.0, description="Drop predictions whose probability is below this")
]


ONE_IMAGE_BODIES = (
    'Send the image as multipart field `file`, as JSON `{"image": "<base64>"}`, or as the body itself with its '
    "type (`image/jpeg`, `image/png`, ... or `application/octet-stream`): "
    "`curl --data-binary @cat.jpg -H 'Content-Type: image/jpeg'`."
)


@router.post(
    "/predict",
    operation_id="predict",
    summary="Classify one image",
    description=ONE_IMAGE_BODIES,
    response_model=PredictResponse,
    responses=error_responses(400, 401, 404, 408, 409, 413, 415, 422, 503),
    openapi_extra=alternative_bodies(ImageUpload, ImageJSON, raw=True),
)
async def predict(
    request: Request,
    service: ServiceDep,
    classifiers: ClassifiersDep,
    data: ImageDataDep,
    top_k: TopK = 3,
    min_score: MinScore = None,
    classifier: ClassifierParam = None,
) -> PredictResponse:
    classify = classify_with(service, classifiers, classifier)
    result = await unless_disconnected(request, classify(data, top_k=top_k, min_score=min_score))
    return PredictResponse(
        predictions=predictions(result.predictions),
        model=model_ref(service),
        image=image_info(result.image),
        timings=timings(result.timings),
        warning=warning(service),
        classifier=classifier,
    )


@router.post(
    "/predict/batch",
    operation_id="predict_batch",
    summary="Classify several images in one request",
    description=(
        'Send the images as repeated multipart fields `files`, or as JSON `{"images": [{"image": "<base64>"}]}`. '
        "Results come back in the order of the images; a bad image gets its own error and the others still run. "
        "When the service has no room for all the images now, the whole request gets 503 with Retry-After."
    ),
    response_model=BatchResponse,
    responses=error_responses(400, 401, 404, 408, 409, 413, 415, 422, 503),
    openapi_extra=alternative_bodies(BatchUpload, BatchJSON),
)
async def predict_batch(
    request: Request,
    service: ServiceDep,
    classifiers: ClassifiersDep,
    settings: SettingsDep,
    files: ImageSourcesDep,
    top_k: TopK = 3,
    min_score: MinScore = None,
    classifier: ClassifierParam = None,
) -> BatchResponse:
    started = time.perf_counter()
    classify = classify_with(service, classifiers, classifier)
    if len(files) > settings.max_batch_files:
        raise too_many_batch_files(str(len(files)), settings)
    if len(files) > settings.max_queue_size:  # could never be admitted whole: not worth a retry
        raise TooManyFiles(
            f"{len(files)} files sent; this service takes at most {settings.max_queue_size} images at once "
            "(RESNET_API_MAX_QUEUE_SIZE)"
        )
    service.check_room(len(files))  # all of the batch, or a 503 with Retry-After for the whole request

    async def one(index: int, upload: ImageSource) -> BatchItem:
        try:
            try:
                data = await upload.read(settings.max_upload_bytes)
            except InferenceError as exc:
                service.refused(exc)  # never reaches the service, but is an image of this 200 all the same
                raise
            result = await classify(data, top_k=top_k, min_score=min_score)
        except InferenceError as exc:
            return BatchItem(index=index, filename=upload.filename, ok=False, error=problem_for(exc, request.url.path))
        return BatchItem(
            index=index,
            filename=upload.filename,
            ok=True,
            predictions=predictions(result.predictions),
            image=image_info(result.image),
            timings=timings(result.timings),
        )

    results = await unless_disconnected(request, asyncio.gather(*(one(i, f) for i, f in enumerate(files))))
    return BatchResponse(
        results=list(results),
        model=model_ref(service),
        total_ms=round((time.perf_counter() - started) * 1000, 3),
        warning=warning(service),
        classifier=classifier,
    )


@router.post(
    "/embed",
    operation_id="embed",
    summary="512-d feature vector of one image",
    description=(
        "The pooled ResNet-18 features (input of the final layer), for similarity search and transfer learning. "
        + ONE_IMAGE_BODIES
    ),
    response_model=EmbedResponse,
    responses=error_responses(400, 401, 408, 413, 415, 422, 503),
    openapi_extra=alternative_bodies(ImageUpload, ImageJSON, raw=True),
)
async def embed(
    request: Request,
    service: ServiceDep,
    data: ImageDataDep,
    normalize: Annotated[bool, Query(description="L2-normalise the vector")] = True,
) -> EmbedResponse:
    result = await unless_disconnected(request, service.embed(data, normalize=normalize))
    return EmbedResponse(
        embedding=result.vector,
        dim=len(result.vector),
        normalized=result.normalized,
        model=model_ref(service),
        image=image_info(result.image),
        timings=timings(result.timings),
        warning=warning(service),
    )
