"""Request and response bodies of the custom-classifier routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from resnet_api.api.schemas import EXAMPLE_PNG_BASE64, ImageJSON


class LabelCount(BaseModel):
    label: str = Field(examples=["apple"])
    examples: int = Field(ge=0, description="Example images this label was trained on", examples=[6])


class AccuracyOut(BaseModel):
    accuracy: float = Field(ge=0.0, le=1.0, description="Share of examples a head that did not see them got right")
    method: str = Field(description="`leave-one-out` (up to 60 examples) or `5-fold`", examples=["leave-one-out"])
    evaluated: int = Field(description="Examples evaluated")


class BackboneOut(BaseModel):
    name: str = Field(examples=["resnet18"])
    weights: str = Field(description="Weights id the features came from", examples=["IMAGENET1K_V1"])
    weights_sha256: str


class TrainingOut(BaseModel):
    images: int = Field(description="Images embedded by this request")
    embed_ms: float = Field(description="Embedding them through the shared model")
    train_ms: float = Field(description="Fitting the head and estimating its accuracy (off the event loop)")


_EXAMPLE_CLASSIFIER: dict[str, JsonValue] = {
    "id": "3f2a9c1b7d4e5f60",
    "name": "fruit",
    "labels": [{"label": "orange", "examples": 6}, {"label": "lemon", "examples": 5}],
    "examples": 11,
    "accuracy": {"accuracy": 0.909, "method": "leave-one-out", "evaluated": 11},
    "created_at": "2026-11-25T10:00:00Z",
    "updated_at": "2026-11-25T10:00:00Z",
    "revision": 1,
    "l2": 0.01,
    "backbone": {"name": "resnet18", "weights": "IMAGENET1K_V1", "weights_sha256": "f37072fd" + "0" * 56},
    "compatible": True,
    "training": {"images": 11, "embed_ms": 412.0, "train_ms": 95.0},
}


class ClassifierOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE_CLASSIFIER]})

    id: str = Field(examples=["3f2a9c1b7d4e5f60"])
    name: str = Field(examples=["fruit"])
    labels: list[LabelCount] = Field(description="In the order of `index` in predictions")
    examples: int = Field(description="All examples the head was trained on")
    accuracy: AccuracyOut
    created_at: datetime
    updated_at: datetime
    revision: int = Field(description="1 at creation, +1 at each retraining")
    l2: float = Field(description="L2 regularisation strength the head was trained with")
    backbone: BackboneOut
    compatible: bool = Field(description="False when trained on other weights than the running ones: it refuses to run")
    training: TrainingOut | None = Field(
        default=None, description="Cost of the last training, when it happened in this process"
    )


class SkippedOut(BaseModel):
    path: str
    reason: str


class LimitsOut(BaseModel):
    max_classifiers: int
    max_labels: int
    max_images_per_request: int
    max_examples: int


class ClassifierList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "classifiers": [_EXAMPLE_CLASSIFIER],
                    "skipped": [{"path": "/data/classifiers/9a1b", "reason": "manifest.json is not a valid manifest"}],
                    "limits": {
                        "max_classifiers": 50,
                        "max_labels": 20,
                        "max_images_per_request": 200,
                        "max_examples": 1000,
                    },
                }
            ]
        }
    )

    classifiers: list[ClassifierOut]
    skipped: list[SkippedOut] = Field(description="Stored classifiers that could not be loaded at start-up, and why")
    limits: LimitsOut


# --- request bodies: multipart (files + one label per file) or JSON (base64 images grouped by label) ---


class ClassifierUpload(BaseModel):
    """Multipart body: `name`, then `labels` and `files` repeated in the same order (label i names file i)."""

    name: str = Field(description="A name for people")
    labels: list[str] = Field(description="One label per file, in the same order as `files`")
    files: list[bytes] = Field(description="The example images")


class ExamplesUpload(BaseModel):
    """Multipart body: `labels` and `files` repeated in the same order."""

    labels: list[str] = Field(description="One label per file, in the same order as `files`")
    files: list[bytes] = Field(description="The example images")


class LabelImagesJSON(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str = Field(description="The label these images show")
    images: list[ImageJSON] = Field(min_length=1, description="Its example images, base64-encoded")


_EXAMPLE_GROUPS: list[JsonValue] = [
    {"label": "orange", "images": [{"image": EXAMPLE_PNG_BASE64, "filename": "orange1.png"}]},
    {"label": "lemon", "images": [{"image": EXAMPLE_PNG_BASE64, "filename": "lemon1.png"}]},
]


class ClassifierJSON(BaseModel):
    """JSON body: the name and the example images grouped by label."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"name": "fruit", "labels": _EXAMPLE_GROUPS}]}
    )

    name: str = Field(description="A name for people")
    labels: list[LabelImagesJSON] = Field(description="At least two labels, each with its images")


class ExamplesJSON(BaseModel):
    """JSON body: more example images grouped by label (known or new labels)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"labels": _EXAMPLE_GROUPS[:1]}]})

    labels: list[LabelImagesJSON] = Field(description="Labels, each with its new images")


CLASSIFIER_REQUEST_MODELS = (ClassifierUpload, ExamplesUpload, ClassifierJSON, ExamplesJSON)
