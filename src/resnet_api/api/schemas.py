"""Request and response bodies; every route declares one of these."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema
from pydantic.config import JsonDict
from pydantic.json_schema import SkipJsonSchema

# Fragments shared by the response examples below.
EXAMPLE_MODEL: JsonDict = {"name": "resnet18", "weights": "IMAGENET1K_V1", "untrained": False}
EXAMPLE_IMAGE: JsonDict = {"width": 640, "height": 480, "format": "JPEG"}
EXAMPLE_TIMINGS: JsonDict = {"decode_ms": 4.1, "queue_ms": 0.3, "inference_ms": 14.8, "total_ms": 19.6, "batch_size": 1}


class Problem(BaseModel):
    """RFC 9457 problem details: the one error shape of the whole API."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "https://resnet-api.dev/problems/unsupported_media_type",
                    "title": "Unsupported image type",
                    "status": 415,
                    "detail": "not a recognised image: send a JPEG, PNG, GIF, WebP or BMP file",
                    "code": "unsupported_media_type",
                    "instance": "/v1/predict",
                }
            ]
        }
    )

    type: str = Field(description="URI naming the kind of problem")
    title: str = Field(description="Short summary of the kind of problem")
    status: int = Field(description="HTTP status code")
    detail: str = Field(description="What went wrong with this request and what to do about it")
    code: str = Field(description="Stable machine-readable error code")
    instance: str = Field(description="The request path")
    # Absent, never null, when there is nothing to list: in problem+json bodies and in batch items alike.
    errors: list[dict[str, object]] | SkipJsonSchema[None] = Field(
        default=None, exclude_if=lambda value: value is None, description="Validation errors, for 422"
    )


class ModelRef(BaseModel):
    name: str = Field(examples=["resnet18"])
    weights: str = Field(description="Weights id", examples=["IMAGENET1K_V1"])
    untrained: bool = Field(description="True when the weights are random: predictions are meaningless")


class PredictionItem(BaseModel):
    index: int = Field(
        ge=0,
        description="ImageNet class index (0..999), or the label's position in a custom classifier",
        examples=[281],
    )
    label: str = Field(examples=["tabby"])
    score: float = Field(ge=0.0, le=1.0, description="Softmax probability", examples=[0.62])


class ImageInfo(BaseModel):
    width: int = Field(examples=[640], description="Of the upload as shown: after its EXIF orientation, at full size")
    height: int = Field(examples=[480], description="Of the upload as shown: after its EXIF orientation, at full size")
    format: str = Field(examples=["JPEG"])


class TimingsOut(BaseModel):
    decode_ms: float = Field(description="Decode and preprocessing")
    queue_ms: float = Field(description="Waiting for the model")
    inference_ms: float = Field(description="Forward pass of the batch this image ran in")
    total_ms: float = Field(description="All server-side work for this image")
    batch_size: int = Field(description="Images in the forward pass this image ran in (0 when cached)")
    cached: bool = Field(default=False, description="Answered from the result cache: no decode and no model run")


class PredictResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "predictions": [
                        {"index": 281, "label": "tabby", "score": 0.62},
                        {"index": 282, "label": "tiger cat", "score": 0.21},
                        {"index": 285, "label": "Egyptian cat", "score": 0.09},
                    ],
                    "model": EXAMPLE_MODEL,
                    "image": EXAMPLE_IMAGE,
                    "timings": EXAMPLE_TIMINGS,
                    "warning": None,
                }
            ]
        }
    )

    predictions: list[PredictionItem]
    model: ModelRef
    image: ImageInfo
    timings: TimingsOut
    warning: str | None = Field(default=None, description="Set when the weights are untrained")
    classifier: str | None = Field(default=None, description="The custom classifier that answered; null for ImageNet")


class BatchItem(BaseModel):
    index: int = Field(description="Position of the file in the request")
    filename: str | None = None
    ok: bool
    predictions: list[PredictionItem] | None = None
    image: ImageInfo | None = None
    timings: TimingsOut | None = None
    error: Problem | None = Field(default=None, description="Why this file failed; the others are unaffected")


class BatchResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "results": [
                        {
                            "index": 0,
                            "filename": "cat.jpg",
                            "ok": True,
                            "predictions": [{"index": 281, "label": "tabby", "score": 0.62}],
                            "image": EXAMPLE_IMAGE,
                            "timings": {**EXAMPLE_TIMINGS, "batch_size": 2},
                        },
                        {
                            "index": 1,
                            "filename": "notes.txt",
                            "ok": False,
                            "error": {
                                "type": "https://resnet-api.dev/problems/unsupported_media_type",
                                "title": "Unsupported image type",
                                "status": 415,
                                "detail": "not a recognised image: send a JPEG, PNG, GIF, WebP or BMP file",
                                "code": "unsupported_media_type",
                            },
                        },
                    ],
                    "model": EXAMPLE_MODEL,
                    "total_ms": 21.7,
                }
            ]
        }
    )

    results: list[BatchItem]
    model: ModelRef
    total_ms: float
    warning: str | None = None
    classifier: str | None = Field(default=None, description="The custom classifier that answered; null for ImageNet")


class EmbedResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "embedding": [0.0132, 0.0871, 0.0, 0.0415],
                    "dim": 512,
                    "normalized": True,
                    "model": EXAMPLE_MODEL,
                    "image": EXAMPLE_IMAGE,
                    "timings": EXAMPLE_TIMINGS,
                }
            ]
        }
    )

    embedding: list[float] = Field(description="512-d pooled ResNet-18 features (input of the final layer)")
    dim: int = Field(examples=[512])
    normalized: bool = Field(description="True when L2-normalised")
    model: ModelRef
    image: ImageInfo
    timings: TimingsOut
    warning: str | None = None


class LabelsResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"count": 1000, "labels": ["tench", "goldfish", "great white shark"]}]}
    )

    count: int = Field(examples=[1000])
    labels: list[str] = Field(description="Class names; a prediction's index points into this list")


class ThreadsInfo(BaseModel):
    torch_intra_op: int
    torch_inter_op: int
    decode_workers: int


class BatchingInfo(BaseModel):
    max_batch_size: int = Field(description="Most images in the model at once (RESNET_API_MAX_BATCH_SIZE)")
    parallel_batches: int = Field(description="Batches that run at once, each on its own model thread")
    images_per_batch: int = Field(description="Most images in one batch: max_batch_size split between the batches")
    max_batch_wait_ms: float
    max_queue_size: int


class ModelInfo(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "resnet18",
                    "weights": "IMAGENET1K_V1",
                    "weights_sha256": "f37072fd47e89c7e827621d6eb2ab6b0bb6a3fb5d2f1f0a6d1e3b4e6c2f3a1b0",
                    "untrained": False,
                    "backend": "torch",
                    "runtime": "torch",
                    "precision": "fp32",
                    "num_classes": 1000,
                    "embedding_dim": 512,
                    "threads": {"torch_intra_op": 2, "torch_inter_op": 1, "decode_workers": 2},
                    "batching": {
                        "max_batch_size": 8,
                        "parallel_batches": 2,
                        "images_per_batch": 4,
                        "max_batch_wait_ms": 2.0,
                        "max_queue_size": 128,
                    },
                    "version": "0.1.0",
                }
            ]
        }
    )

    name: str = Field(examples=["resnet18"])
    weights: str = Field(examples=["IMAGENET1K_V1"])
    weights_sha256: str
    untrained: bool
    backend: str = Field(examples=["torch"])
    runtime: str = Field(
        examples=["torch"],
        description="What runs the model: torch, onnxruntime or openvino (the int8 backend runs on either of the last two)",
    )
    precision: str = Field(examples=["fp32"])
    num_classes: int = Field(examples=[1000])
    embedding_dim: int = Field(examples=[512])
    threads: ThreadsInfo
    batching: BatchingInfo
    version: str
    warning: str | None = None


class HealthResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})

    status: str = Field(examples=["ok"])


# --- request bodies: multipart and JSON alternatives (issue 7) ---

# An 8x8 orange PNG: small enough for the docs, and a real image, so "Try it out" works.
EXAMPLE_PNG_BASE64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAFUlEQVR42mM8UaHBgA0wMeAAg1MCAB4nAXgllso1AAAAAElFTkSuQmCC"
)
# `data:<type>/<subtype>[;<name>=<value>]...;base64,` (RFC 2397 allows parameters such as `charset`), after any
# whitespace: the whitespace anywhere in the base64 text is dropped too.
_DATA_URL_PREFIX = re.compile(r"^\s*data:[\w.+-]+/[\w.+-]+(?:;[\w.+-]+=[^;,]*)*;base64,", re.IGNORECASE)


def _base64_text(value: object) -> str:
    """The JSON value of an `image` field; anything but a string means the body's shape is wrong."""
    if not isinstance(value, str):
        raise ValueError("expected the image as a base64 string")
    return value


def _decode_base64_text(value: str) -> bytes:
    text = "".join(_DATA_URL_PREFIX.sub("", value, count=1).split())
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not valid base64 ({exc})") from None


def _decode_base64(value: object) -> bytes:
    return _decode_base64_text(_base64_text(value))


# Decoded while the body is validated, so bad base64 is a 422 that points at the field.
# The pattern documents canonical base64 (the validator is more lenient), so schema-driven clients and
# fuzzers such as Schemathesis generate decodable strings.
BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
Base64Image = Annotated[
    bytes,
    PlainValidator(_decode_base64),
    WithJsonSchema({"type": "string", "contentEncoding": "base64", "pattern": BASE64_PATTERN}),
]


class ImageUpload(BaseModel):
    """Multipart body with one image."""

    file: bytes = Field(description="The image: JPEG, PNG, GIF (first frame), WebP or BMP")


class BatchUpload(BaseModel):
    """Multipart body with several images (repeat the `files` field)."""

    files: list[bytes] = Field(min_length=1, description="The images, in order")


class ImageJSON(BaseModel):
    """JSON body with one image, base64-encoded, for clients that handle multipart badly."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"image": EXAMPLE_PNG_BASE64, "filename": "orange.png"}]},
    )

    image: Base64Image = Field(
        description=(
            "The image file's bytes in base64 (standard alphabet; padding, line breaks and a "
            "`data:image/...;base64,` prefix are accepted). Same limits as a multipart upload."
        )
    )
    filename: str | None = Field(default=None, max_length=1024, description="Echoed back in batch results")


MAX_JSON_IMAGES = 1024
"""The most images a JSON batch may list: the upper bound of RESNET_API_MAX_BATCH_FILES."""


class BatchJSON(BaseModel):
    """JSON body with several images, each base64-encoded."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "images": [
                        {"image": EXAMPLE_PNG_BASE64, "filename": "a.png"},
                        {"image": EXAMPLE_PNG_BASE64, "filename": "b.png"},
                    ]
                }
            ]
        },
    )

    images: list[ImageJSON] = Field(
        min_length=1,
        # The upper bound of RESNET_API_MAX_BATCH_FILES (the route applies the setting): a longer list fails at
        # once with one error, where a list of a million bad items made a million errors (33 s, 3 GB).
        max_length=MAX_JSON_IMAGES,
        description="The images, in order (at least one, as for multipart; the server's batch limit applies)",
    )


@dataclass(frozen=True)
class UndecodedImage:
    """A batch entry whose `image` is a string but not base64: that entry's error, not the whole request's."""

    reason: str


def _decode_batch_entry(value: object) -> bytes | UndecodedImage:
    text = _base64_text(value)  # a wrong shape stays a 422 for the request, as a missing field is
    try:
        return _decode_base64_text(text)
    except ValueError as exc:
        return UndecodedImage(str(exc))


class BatchEntryRead(BaseModel):
    """How the server reads an entry of `BatchJSON` (whose schema documents `ImageJSON`): bad base64 in one entry
    fails that entry only, as an unreadable file does in a multipart batch, so the other images still run."""

    model_config = ConfigDict(extra="forbid")

    image: Annotated[bytes | UndecodedImage, PlainValidator(_decode_batch_entry)]
    filename: str | None = Field(default=None, max_length=1024)


class BatchJSONRead(BaseModel):
    """How the server reads `BatchJSON`: the same fields and bounds, entries as `BatchEntryRead`."""

    model_config = ConfigDict(extra="forbid")

    images: list[BatchEntryRead] = Field(min_length=1, max_length=MAX_JSON_IMAGES)
