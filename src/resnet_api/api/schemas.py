"""Request and response bodies; every route declares one of these."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


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
                }
            ]
        }
    )

    type: str = Field(description="URI naming the kind of problem")
    title: str = Field(description="Short summary of the kind of problem")
    status: int = Field(description="HTTP status code")
    detail: str = Field(description="What went wrong with this request and what to do about it")
    code: str = Field(description="Stable machine-readable error code")
    instance: str | None = Field(default=None, description="The request path")
    errors: list[dict[str, object]] | None = Field(default=None, description="Validation errors, for 422")


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
    width: int = Field(examples=[640])
    height: int = Field(examples=[480])
    format: str = Field(examples=["JPEG"])


class TimingsOut(BaseModel):
    decode_ms: float = Field(description="Decode and preprocessing")
    queue_ms: float = Field(description="Waiting for the model")
    inference_ms: float = Field(description="Forward pass of the batch this image ran in")
    total_ms: float = Field(description="All server-side work for this image")
    batch_size: int = Field(description="Images in the forward pass this image ran in")


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
                    "model": {"name": "resnet18", "weights": "IMAGENET1K_V1", "untrained": False},
                    "image": {"width": 640, "height": 480, "format": "JPEG"},
                    "timings": {
                        "decode_ms": 4.1,
                        "queue_ms": 0.3,
                        "inference_ms": 14.8,
                        "total_ms": 19.6,
                        "batch_size": 1,
                    },
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
    results: list[BatchItem]
    model: ModelRef
    total_ms: float
    warning: str | None = None
    classifier: str | None = Field(default=None, description="The custom classifier that answered; null for ImageNet")


class EmbedResponse(BaseModel):
    embedding: list[float] = Field(description="512-d pooled ResNet-18 features (input of the final layer)")
    dim: int = Field(examples=[512])
    normalized: bool = Field(description="True when L2-normalised")
    model: ModelRef
    image: ImageInfo
    timings: TimingsOut
    warning: str | None = None


class LabelsResponse(BaseModel):
    count: int = Field(examples=[1000])
    labels: list[str] = Field(description="Class names; a prediction's index points into this list")


class ThreadsInfo(BaseModel):
    torch_intra_op: int
    torch_inter_op: int
    decode_workers: int


class BatchingInfo(BaseModel):
    max_batch_size: int
    max_batch_wait_ms: float
    max_queue_size: int


class ModelInfo(BaseModel):
    name: str = Field(examples=["resnet18"])
    weights: str = Field(examples=["IMAGENET1K_V1"])
    weights_sha256: str
    untrained: bool
    backend: str = Field(examples=["torch"])
    precision: str = Field(examples=["fp32"])
    num_classes: int = Field(examples=[1000])
    embedding_dim: int = Field(examples=[512])
    threads: ThreadsInfo
    batching: BatchingInfo
    version: str
    warning: str | None = None


class HealthResponse(BaseModel):
    status: str = Field(examples=["ok"])
