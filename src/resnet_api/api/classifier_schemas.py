"""Request and response bodies of the custom-classifier routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


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


class ClassifierOut(BaseModel):
    id: str = Field(examples=["3f2a9c1b7d4e5f60"])
    name: str = Field(examples=["fruit"])
    labels: list[LabelCount] = Field(description="In the order of `index` in predictions")
    examples: int = Field(description="All examples the head was trained on")
    accuracy: AccuracyOut
    created_at: datetime
    updated_at: datetime
    revision: int = Field(description="1 at creation, +1 at each retraining")
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
    classifiers: list[ClassifierOut]
    skipped: list[SkippedOut] = Field(description="Stored classifiers that could not be loaded at start-up, and why")
    limits: LimitsOut
