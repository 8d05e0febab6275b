"""The singleton inference service: owns the model, the decode pool and the micro-batcher."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from resnet_api import __version__
from resnet_api.inference import preprocess
from resnet_api.inference.batcher import BatchResult, BatchStats, MicroBatcher
from resnet_api.inference.errors import InferenceError, InvalidTensor, NotReady
from resnet_api.inference.model import (
    EMBEDDING_DIM,
    MODEL_NAME,
    LoadedWeights,
    ResNet18,
    build_model,
    load_labels,
    resolve_weights,
)
from resnet_api.metrics import Metrics
from resnet_api.settings import Settings

log = logging.getLogger(__name__)

UNTRAINED_WARNING = (
    "UNTRAINED WEIGHTS: this server runs random weights, so its predictions are meaningless. "
    "Set RESNET_API_WEIGHTS=imagenet with the official file in place for real predictions."
)

WeightsLoader = Callable[[Settings], LoadedWeights]


def load_weights(settings: Settings) -> LoadedWeights:
    """The default weights loader: what the `weights` setting names."""
    return resolve_weights(
        settings.weights,
        weights_dir=settings.weights_dir,
        allow_download=settings.allow_download,
        seed=settings.random_seed,
        fallback_to_random=settings.fallback_to_random,
        url=settings.weights_url,
    )


@dataclass(frozen=True)
class ModelOutput:
    features: np.ndarray  # (512,) pooled features
    probabilities: np.ndarray  # (1000,) softmax


@dataclass(frozen=True)
class Prediction:
    index: int
    label: str
    score: float


@dataclass(frozen=True)
class ImageMeta:
    width: int
    height: int
    format: str


@dataclass(frozen=True)
class Timings:
    decode_ms: float
    queue_ms: float
    inference_ms: float
    total_ms: float
    batch_size: int


@dataclass(frozen=True)
class Classification:
    predictions: list[Prediction]
    image: ImageMeta
    timings: Timings


@dataclass(frozen=True)
class Embedding:
    vector: list[float]
    normalized: bool
    image: ImageMeta
    timings: Timings


@dataclass(frozen=True)
class ModelDescription:
    name: str
    weights: str
    weights_sha256: str
    weights_source: str
    untrained: bool
    backend: str
    precision: str
    num_classes: int
    embedding_dim: int
    version: str


class InferenceService:
    """Create once per process (the app's lifespan does), `await start()`, then classify and embed."""

    def __init__(
        self, settings: Settings, *, weights_loader: WeightsLoader = load_weights, metrics: Metrics | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.labels = load_labels()
        self._weights_loader = weights_loader
        self._model: ResNet18 | None = None
        self._description: ModelDescription | None = None
        self._decode_pool = ThreadPoolExecutor(max_workers=settings.decode_workers, thread_name_prefix="resnet-decode")
        self._batcher: MicroBatcher[np.ndarray, ModelOutput] = MicroBatcher(
            self._forward,
            max_batch_size=settings.max_batch_size,
            max_wait_s=settings.max_batch_wait_ms / 1000.0,
            max_queue_size=settings.max_queue_size,
            on_batch=self._observe_batch,
            initializer=self._init_model_thread,
        )
        self.batches_run = 0

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def is_ready(self) -> bool:
        return self._model is not None and self._batcher.accepting

    @property
    def description(self) -> ModelDescription:
        if self._description is None:
            raise NotReady("the model is still loading")
        return self._description

    @property
    def queue_depth(self) -> int:
        return self._batcher.depth

    async def start(self) -> None:
        """Load the weights, build and warm the model, then start taking work."""
        configure_torch_threads(self.settings)
        weights = await asyncio.to_thread(self._weights_loader, self.settings)
        self._model = await asyncio.to_thread(_prepare, build_model(weights))
        self._description = ModelDescription(
            name=MODEL_NAME,
            weights=weights.weights_id,
            weights_sha256=weights.sha256,
            weights_source=weights.source,
            untrained=weights.untrained,
            backend="torch",
            precision="fp32",
            num_classes=len(self.labels),
            embedding_dim=EMBEDDING_DIM,
            version=__version__,
        )
        if weights.untrained:
            bar = "!" * 78
            log.warning("\n%s\n!! %s\n%s", bar, UNTRAINED_WARNING, bar)
        if self.settings.warmup:
            sample = np.zeros((3, preprocess.CROP, preprocess.CROP), dtype=np.float32)
            for size in sorted({1, self.settings.max_batch_size}):
                await self._batcher.run_now([sample] * size)
        self.metrics.model_info.info(
            {
                "name": MODEL_NAME,
                "weights": weights.weights_id,
                "backend": "torch",
                "precision": "fp32",
                "untrained": str(weights.untrained).lower(),
                "version": __version__,
            }
        )
        self._batcher.start()
        self.metrics.ready.set(1)
        log.info(
            "model ready: %s weights=%s threads=%d batch<=%d wait<=%.1fms",
            MODEL_NAME,
            weights.weights_id,
            self.settings.torch_threads,
            self.settings.max_batch_size,
            self.settings.max_batch_wait_ms,
        )

    async def stop(self) -> None:
        """Stop accepting, answer everything accepted, then release the threads."""
        self.metrics.ready.set(0)
        await self._batcher.stop()
        self._decode_pool.shutdown(wait=True)

    # -- requests --------------------------------------------------------------------------------

    async def classify(self, data: bytes, *, top_k: int = 3, min_score: float | None = None) -> Classification:
        started = time.perf_counter()
        meta, array, decode_s = await self._preprocess(data)
        result = await self._submit(array)
        probs = result.value.probabilities
        k = min(top_k, probs.shape[0])
        top = np.argpartition(-probs, k - 1)[:k]
        top = top[np.argsort(-probs[top], kind="stable")]
        predictions = [Prediction(int(i), self.labels[int(i)], float(probs[i])) for i in top]
        if min_score is not None:
            predictions = [p for p in predictions if p.score >= min_score]
        return Classification(predictions, meta, self._timings(started, decode_s, result))

    async def embed(self, data: bytes, *, normalize: bool = True) -> Embedding:
        started = time.perf_counter()
        meta, array, decode_s = await self._preprocess(data)
        result = await self._submit(array)
        vector = result.value.features.astype(np.float64)
        if normalize:
            norm = float(np.linalg.norm(vector))
            vector = vector / norm if norm > 0 else vector
        return Embedding(vector.tolist(), normalize, meta, self._timings(started, decode_s, result))

    async def infer_images(self, images: Sequence[bytes]) -> list[ModelOutput]:
        """Raw model outputs for encoded images; each goes through the shared batcher like `classify`."""

        async def one(data: bytes) -> ModelOutput:
            _, array, _ = await self._preprocess(data)
            return (await self._submit(array)).value

        return await _all_or_first_error([one(d) for d in images])

    async def infer_arrays(self, arrays: Sequence[np.ndarray]) -> list[ModelOutput]:
        """Raw model outputs for already preprocessed 3x224x224 float32 arrays, through the shared batcher."""
        if not self.is_ready:
            raise NotReady("the model is not ready: retry shortly")
        expected = (3, preprocess.CROP, preprocess.CROP)
        for i, array in enumerate(arrays):
            if array.shape != expected or array.dtype != np.float32:
                raise InvalidTensor(
                    f"item {i} is {array.dtype}{list(array.shape)}; the model takes float32{list(expected)}"
                )
            if not np.isfinite(array).all():
                raise InvalidTensor(f"item {i} holds NaN or infinite values")

        async def one(array: np.ndarray) -> ModelOutput:
            return (await self._submit(np.ascontiguousarray(array))).value

        return await _all_or_first_error([one(a) for a in arrays])

    # -- internals -------------------------------------------------------------------------------

    async def _preprocess(self, data: bytes) -> tuple[ImageMeta, np.ndarray, float]:
        if not self.is_ready:
            raise NotReady("the model is not ready: retry shortly")
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            decoded, array = await loop.run_in_executor(self._decode_pool, self._decode, data)
        except InferenceError as exc:
            self.metrics.images.labels(outcome=exc.code).inc()
            raise
        elapsed = time.perf_counter() - started
        self.metrics.preprocess_latency.observe(elapsed)
        return ImageMeta(decoded.width, decoded.height, decoded.format), array, elapsed

    def _decode(self, data: bytes) -> tuple[preprocess.DecodedImage, np.ndarray]:
        decoded = preprocess.decode(data, max_pixels=self.settings.max_image_pixels)
        return decoded, preprocess.to_array(decoded.image)

    async def _submit(self, array: np.ndarray) -> BatchResult[ModelOutput]:
        try:
            result = await self._batcher.submit(array)
        except InferenceError as exc:
            self.metrics.images.labels(outcome=exc.code).inc()
            raise
        finally:
            self.metrics.queue_depth.set(self._batcher.depth)
        self.metrics.images.labels(outcome="ok").inc()
        return result

    @staticmethod
    def _timings(started: float, decode_s: float, result: BatchResult[ModelOutput]) -> Timings:
        return Timings(
            decode_ms=round(decode_s * 1000, 3),
            queue_ms=round(result.queue_s * 1000, 3),
            inference_ms=round(result.inference_s * 1000, 3),
            total_ms=round((time.perf_counter() - started) * 1000, 3),
            batch_size=result.batch_size,
        )

    def _init_model_thread(self) -> None:
        torch.set_num_threads(self.settings.torch_threads)

    def _forward(self, arrays: Sequence[np.ndarray]) -> list[ModelOutput]:
        """Runs on the model thread only."""
        assert self._model is not None
        batch = torch.from_numpy(np.stack(arrays)).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            features = self._model.features(batch)
            probs = torch.softmax(self._model.fc(features), dim=1)
        feats, p = features.numpy(), probs.numpy()
        return [ModelOutput(feats[i].copy(), p[i].copy()) for i in range(len(arrays))]

    def _observe_batch(self, stats: BatchStats) -> None:
        self.batches_run += 1
        self.metrics.batch_size.observe(stats.size)
        self.metrics.inference_latency.observe(stats.inference_s)
        for wait in stats.queue_waits_s:
            self.metrics.queue_wait.observe(wait)
        self.metrics.queue_depth.set(self._batcher.depth)


async def _all_or_first_error(calls: Sequence[Coroutine[Any, Any, ModelOutput]]) -> list[ModelOutput]:
    """Run all, let every one finish (no orphaned futures), then raise the first error if any failed."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [r for r in results if isinstance(r, ModelOutput)]


def _prepare(model: ResNet18) -> ResNet18:
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing from torch's stubs
    return model.eval()


def configure_torch_threads(settings: Settings) -> None:
    """Process-wide torch thread counts; inter-op can only be set before any parallel work."""
    torch.set_num_threads(settings.torch_threads)
    try:
        torch.set_num_interop_threads(settings.torch_interop_threads)
    except RuntimeError:
        log.debug("inter-op threads already fixed for this process")
