"""Custom classifiers: create from labelled examples, list, inspect, retrain with more examples, delete."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, Protocol

from fastapi import APIRouter, File, Form, Query, Response, UploadFile

from resnet_api.api.classifier_schemas import (
    AccuracyOut,
    BackboneOut,
    ClassifierList,
    ClassifierOut,
    LabelCount,
    LimitsOut,
    SkippedOut,
    TrainingOut,
)
from resnet_api.api.deps import ClassifiersDep, SettingsDep, read_upload
from resnet_api.api.errors import error_responses
from resnet_api.inference.classifiers import Classifier, ClassifierRegistry, Example
from resnet_api.inference.errors import InvalidTrainingSet, TooManyFiles
from resnet_api.inference.service import Classification, InferenceService
from resnet_api.settings import Settings

router = APIRouter(prefix="/v1/classifiers", tags=["classifiers"])

ClassifierParam = Annotated[
    str | None,
    Query(description="Id of a custom classifier: answer with its labels instead of ImageNet's"),
]
Files = Annotated[list[UploadFile], File(description="Example images; `labels[i]` is the label of `files[i]`")]
Labels = Annotated[list[str], Form(description="One label per file, in the same order as `files`")]


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
        "Send `name`, then `files` and `labels` repeated in the same order (at least two labels). The images are "
        "embedded with the frozen ResNet-18 and a regularised logistic-regression head is trained on the CPU; the "
        "answer carries a cross-validated accuracy estimate. Only the 512-d features are kept, never the images. "
        "Then classify with `POST /v1/predict?classifier={id}`."
    ),
    status_code=201,
    response_model=ClassifierOut,
    responses=error_responses(400, 413, 415, 422, 503),
)
async def create_classifier(
    response: Response,
    registry: ClassifiersDep,
    settings: SettingsDep,
    name: Annotated[str, Form(description="A name for people", examples=["fruit"])],
    labels: Labels,
    files: Files,
) -> ClassifierOut:
    item = await registry.create(name, await read_examples(labels, files, settings))
    response.headers["Location"] = f"{router.prefix}/{item.id}"
    return classifier_out(item)


@router.get("", operation_id="list_classifiers", summary="All custom classifiers", response_model=ClassifierList)
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
    responses=error_responses(404),
)
async def get_classifier(classifier_id: str, registry: ClassifiersDep) -> ClassifierOut:
    return classifier_out(registry.get(classifier_id))


@router.post(
    "/{classifier_id}/examples",
    operation_id="add_classifier_examples",
    summary="Add examples (to existing or new labels) and retrain",
    response_model=ClassifierOut,
    responses=error_responses(400, 404, 409, 413, 415, 422, 503),
)
async def add_examples(
    classifier_id: str, registry: ClassifiersDep, settings: SettingsDep, labels: Labels, files: Files
) -> ClassifierOut:
    return classifier_out(await registry.add_examples(classifier_id, await read_examples(labels, files, settings)))


@router.delete(
    "/{classifier_id}",
    operation_id="delete_classifier",
    summary="Delete a custom classifier and its files",
    status_code=204,
    response_class=Response,
    responses=error_responses(404),
)
async def delete_classifier(classifier_id: str, registry: ClassifiersDep) -> Response:
    await registry.delete(classifier_id)
    return Response(status_code=204)


async def read_examples(labels: list[str], files: list[UploadFile], settings: Settings) -> list[Example]:
    if len(files) > settings.max_classifier_images:
        raise TooManyFiles(
            f"{len(files)} images sent; at most {settings.max_classifier_images} per request "
            "(RESNET_API_MAX_CLASSIFIER_IMAGES): add the rest with POST /v1/classifiers/{id}/examples"
        )
    if len(labels) != len(files):
        raise InvalidTrainingSet(f"{len(files)} files but {len(labels)} labels: send one `labels` field per file")
    return [
        Example(label=label, data=await read_upload(f, settings.max_upload_bytes), filename=f.filename)
        for label, f in zip(labels, files, strict=True)
    ]


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
        backbone=BackboneOut(
            name=m.backbone.name, weights=m.backbone.weights, weights_sha256=m.backbone.weights_sha256
        ),
        compatible=item.compatible,
        training=TrainingOut(images=t.images, embed_ms=t.embed_ms, train_ms=t.train_ms) if t else None,
    )
