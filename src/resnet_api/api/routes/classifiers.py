"""Custom classifiers: create from labelled examples, list, inspect, retrain with more examples, delete."""

from __future__ import annotations

import functools
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Annotated, Protocol

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import FormData

from resnet_api.api.classifier_schemas import (
    AccuracyOut,
    BackboneOut,
    ClassifierJSON,
    ClassifierList,
    ClassifierOut,
    ClassifierUpload,
    ExamplesJSON,
    ExamplesUpload,
    LabelCount,
    LimitsOut,
    SkippedOut,
    TrainingOut,
)
from resnet_api.api.deps import (
    ClassifiersDep,
    DecodedSource,
    SettingsDep,
    form_uploads,
    parse_json,
    read_form,
    request_kind,
)
from resnet_api.api.errors import error_responses
from resnet_api.api.openapi import alternative_bodies
from resnet_api.inference.classifiers import Classifier, ClassifierRegistry, Example
from resnet_api.inference.errors import InvalidTrainingSet, TooManyFiles
from resnet_api.inference.service import Classification, InferenceService
from resnet_api.settings import Settings

router = APIRouter(prefix="/v1/classifiers", tags=["classifiers"])

L2 = Annotated[
    float | None,
    Query(
        gt=0.0,
        le=100.0,
        description="L2 regularisation of the head: larger is smoother, for noisy examples (default 0.01 at "
        "creation; a retrain keeps the classifier's own)",
    ),
]
ClassifierParam = Annotated[
    str | None,
    Query(description="Id of a custom classifier: answer with its labels instead of ImageNet's"),
]


class ClassifyFn(Protocol):
    def __call__(self, data: bytes, *, top_k: int, min_score: float | None) -> Awaitable[Classification]: ...


def classify_with(service: InferenceService, registry: ClassifierRegistry, classifier_id: str | None) -> ClassifyFn:
    """ImageNet's classifier, or the custom one named (404/409 raised here, before any image work)."""
    if classifier_id is None:
        return service.classify
    registry.usable(classifier_id)

    def run(data: bytes, *, top_k: int, min_score: float | None) -> Awaitable[Classification]:
        return registry.classify(classifier_id, data, top_k=top_k, min_score=min_score)

    return run


@router.post(
    "",
    operation_id="create_classifier",
    summary="Teach a new classifier from labelled example images",
    description=(
        "Send multipart `name`, then `files` and `labels` repeated in the same order, or JSON with base64 images "
        "grouped by label (at least two labels). The images are "
        "embedded with the frozen ResNet-18 and a regularised logistic-regression head is trained on the CPU; the "
        "answer carries a cross-validated accuracy estimate. Only the 512-d features are kept, never the images. "
        "Then classify with `POST /v1/predict?classifier={id}`."
    ),
    status_code=201,
    response_model=ClassifierOut,
    responses=error_responses(400, 401, 408, 413, 415, 422, 500, 503),
    openapi_extra=alternative_bodies(ClassifierUpload, ClassifierJSON),
)
async def create_classifier(
    response: Response,
    registry: ClassifiersDep,
    body: Annotated[TrainingBody, Depends(classifier_body)],
    l2: L2 = None,
) -> ClassifierOut:
    item = await registry.create(body.name or "", body.examples, l2=l2)
    response.headers["Location"] = f"{router.prefix}/{item.id}"
    return classifier_out(item)


@router.get(
    "",
    operation_id="list_classifiers",
    summary="All custom classifiers",
    response_model=ClassifierList,
    responses=error_responses(401, 503),
)
async def list_classifiers(registry: ClassifiersDep) -> ClassifierList:
    limits = registry.limits
    return ClassifierList(
        classifiers=[classifier_out(c) for c in registry.all()],
        skipped=[SkippedOut(path=s.path, reason=s.reason) for s in registry.skipped],
        limits=LimitsOut(
            max_classifiers=limits.max_classifiers,
            max_labels=limits.max_labels,
            max_images_per_request=limits.max_images_per_request,
            max_examples=limits.max_examples,
        ),
    )


@router.get(
    "/{classifier_id}",
    operation_id="get_classifier",
    summary="One custom classifier",
    response_model=ClassifierOut,
    responses=error_responses(401, 404, 422, 503),
)
async def get_classifier(classifier_id: str, registry: ClassifiersDep) -> ClassifierOut:
    return classifier_out(registry.get(classifier_id))


@router.post(
    "/{classifier_id}/examples",
    operation_id="add_classifier_examples",
    summary="Add examples (to existing or new labels) and retrain",
    response_model=ClassifierOut,
    responses=error_responses(400, 401, 404, 408, 409, 413, 415, 422, 500, 503),
    openapi_extra=alternative_bodies(ExamplesUpload, ExamplesJSON),
)
async def add_examples(
    classifier_id: str,
    registry: ClassifiersDep,
    body: Annotated[TrainingBody, Depends(examples_body)],
    l2: L2 = None,
) -> ClassifierOut:
    return classifier_out(await registry.add_examples(classifier_id, body.examples, l2=l2))


@router.delete(
    "/{classifier_id}",
    operation_id="delete_classifier",
    summary="Delete a custom classifier and its files",
    status_code=204,
    response_class=Response,
    responses=error_responses(401, 404, 422, 500, 503),
)
async def delete_classifier(classifier_id: str, registry: ClassifiersDep) -> Response:
    await registry.delete(classifier_id)
    return Response(status_code=204)


@dataclass(frozen=True)
class TrainingBody:
    name: str | None
    examples: list[Example]


async def classifier_body(request: Request, settings: SettingsDep) -> TrainingBody:
    """`name` plus examples, from multipart (`labels[i]` names `files[i]`) or JSON (images grouped by label)."""
    return await _training_body(request, settings, ClassifierJSON, with_name=True)


async def examples_body(request: Request, settings: SettingsDep) -> TrainingBody:
    return await _training_body(request, settings, ExamplesJSON, with_name=False)


async def _training_body(
    request: Request, settings: Settings, model: type[ClassifierJSON | ExamplesJSON], *, with_name: bool
) -> TrainingBody:
    limit = settings.max_upload_bytes
    if request_kind(request) == "json":
        body = await parse_json(request, model)
        pairs = [
            (group.label, DecodedSource(item.image, item.filename)) for group in body.labels for item in group.images
        ]
        _check_count(len(pairs), settings)
        examples = [Example(label, await src.read(limit), src.filename) for label, src in pairs]
        return TrainingBody(body.name if isinstance(body, ClassifierJSON) else None, examples)
    form = await read_form(
        request,
        settings,
        max_files=settings.max_classifier_images,
        text_fields_per_file=1,
        too_many=functools.partial(_too_many, settings=settings),
    )
    try:
        name = _text_fields(form, "name")[0] if with_name else None
        files = form_uploads(form, "files")
        _check_count(len(files), settings)
        labels = _text_fields(form, "labels")
        if len(labels) != len(files):
            raise InvalidTrainingSet(f"{len(files)} files but {len(labels)} labels: send one `labels` field per file")
        examples = [
            Example(label, await src.read(limit), src.filename) for label, src in zip(labels, files, strict=True)
        ]
    finally:
        await form.close()
    return TrainingBody(name, examples)


def _text_fields(form: FormData, field: str) -> list[str]:
    values = form.getlist(field)
    if not values or not all(isinstance(v, str) for v in values):
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body", field), "msg": "Field required (as text, not a file)"}]
        )
    return [v for v in values if isinstance(v, str)]


def _check_count(count: int, settings: Settings) -> None:
    if count > settings.max_classifier_images:
        raise _too_many(str(count), settings)


def _too_many(sent: str, settings: Settings) -> TooManyFiles:
    return TooManyFiles(
        f"{sent} images sent; at most {settings.max_classifier_images} per request "
        "(RESNET_API_MAX_CLASSIFIER_IMAGES): add the rest with POST /v1/classifiers/{id}/examples"
    )


def classifier_out(item: Classifier) -> ClassifierOut:
    m = item.manifest
    t = item.last_training
    return ClassifierOut(
        id=m.id,
        name=m.name,
        labels=[LabelCount(label=label, examples=n) for label, n in zip(m.labels, m.counts, strict=True)],
        examples=sum(m.counts),
        accuracy=AccuracyOut(accuracy=m.accuracy.accuracy, method=m.accuracy.method, evaluated=m.accuracy.evaluated),
        created_at=m.created_at,
        updated_at=m.updated_at,
        revision=m.revision,
        l2=m.l2,
        backbone=BackboneOut(
            name=m.backbone.name, weights=m.backbone.weights, weights_sha256=m.backbone.weights_sha256
        ),
        compatible=item.compatible,
        training=TrainingOut(images=t.images, embed_ms=t.embed_ms, train_ms=t.train_ms) if t else None,
    )
