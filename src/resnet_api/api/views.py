"""Domain results -> response models."""

from __future__ import annotations

from resnet_api.api.schemas import ImageInfo, ModelRef, PredictionItem, TimingsOut
from resnet_api.inference.service import UNTRAINED_WARNING, ImageMeta, InferenceService, Prediction, Timings


def model_ref(service: InferenceService) -> ModelRef:
    d = service.description
    return ModelRef(name=d.name, weights=d.weights, untrained=d.untrained)


def warning(service: InferenceService) -> str | None:
    return UNTRAINED_WARNING if service.description.untrained else None


def predictions(items: list[Prediction]) -> list[PredictionItem]:
    return [PredictionItem(index=p.index, label=p.label, score=p.score) for p in items]


def image_info(meta: ImageMeta) -> ImageInfo:
    return ImageInfo(width=meta.width, height=meta.height, format=meta.format)


def timings(t: Timings) -> TimingsOut:
    return TimingsOut(
        decode_ms=t.decode_ms,
        queue_ms=t.queue_ms,
        inference_ms=t.inference_ms,
        total_ms=t.total_ms,
        batch_size=t.batch_size,
        cached=t.cached,
    )
