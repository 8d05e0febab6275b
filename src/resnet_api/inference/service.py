"""The singleton inference service: owns the model, the decode pool and the micro-batcher."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from resnet_api import __version__
from resnet_api.inference import memory, preprocess
from resnet_api.inference.backends import Backend, on_passing_thread, open_backend
from resnet_api.inference.backends.loader import default_weights_file
from resnet_api.inference.batcher import BatchResult, BatchStats, MicroBatcher
from resnet_api.inference.cache import LruCache, content_key
from resnet_api.inference.catalog import EMBEDDING_DIM, MODEL_NAME, load_labels
from resnet_api.inference.errors import DeadlineExceeded, InferenceError, InvalidTensor, NotReady, Overloaded
from resnet_api.metrics import Metrics
from resnet_api.settings import Settings

if TYPE_CHECKING:  # torch is imported only by backends that need it
    from resnet_api.inference.model import LoadedWeights

log = logging.getLogger(__name__)

UNTRAINED_WARNING = (
    "UNTRAINED WEIGHTS: this server runs random weights, so its predictions are meaningless. "
    "Set RESNET_API_WEIGHTS=imagenet with the official file in place for real predictions."
)

WeightsLoader = Callable[[Settings], "LoadedWeights"]


def load_weights(settings: Settings) -> LoadedWeights:
    """The default weights loader: what the `weights` setting names."""
    from resnet_api.inference.model import resolve_weights

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
    cached: bool = False


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
    runtime: str
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
        self._backend: Backend | None = None
        self._decoding = 0  # requests between upload and queue: the adaptive batch wait waits only for them
        self.cache: LruCache[tuple[ImageMeta, ModelOutput]] = LruCache(
            settings.cache_max_entries, settings.cache_max_bytes, _cached_size
        )
        self._cache_context = ""
        self._description: ModelDescription | None = None
        self._warm_up_photo = preprocess.warm_up_jpeg()
        self._blank_crop = np.zeros((preprocess.CROP, preprocess.CROP, 3), dtype=np.uint8)  # warm-up batches
        self._decode_pool = ThreadPoolExecutor(max_workers=settings.decode_workers, thread_name_prefix="resnet-decode")
        self._batcher: MicroBatcher[np.ndarray, ModelOutput] = MicroBatcher(
            self._forward,
            max_batch_size=batch_size_cap(settings),
            max_wait_s=settings.max_batch_wait_ms / 1000.0,
            max_queue_size=settings.max_queue_size,
            threads=settings.torch_threads,
            parallel=parallel_batches(settings),
            on_batch=self._observe_batch,
            more_coming=self._more_coming if settings.adaptive_batch_wait else None,
            on_idle=self._tidy_when_idle if settings.release_memory and settings.idle_release_s > 0 else None,
            idle_after_s=settings.idle_release_s,
            # After the idle trim (`_tidy_when_idle`), the heap a lone image's forward uses is faulted back in at
            # once, not by the next request (`bench/idle_faults.py`: 2360 page faults, about 13 ms here, -> 80-540).
            after_idle=[self._blank_crop] if settings.warmup else (),
        )
        self.batches_run = 0
        self._admitted = 0
        self._draining = False

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def is_ready(self) -> bool:
        """Loaded and taking new requests: what readiness reports; false from `drain()` on."""
        return self.accepting and not self._draining

    @property
    def accepting(self) -> bool:
        """Loaded and not stopped: work runs, including the rest of requests accepted before a drain."""
        return self._backend is not None and self._batcher.accepting

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
        memory.limit_malloc_arenas(self.settings.malloc_arenas)  # before the model and decode threads allocate
        if self.settings.backend == "torch":
            configure_torch_threads(self.settings)
        elif self.settings.parallel_batches > 1:
            log.warning(
                "RESNET_API_PARALLEL_BATCHES applies to the torch backend only; %s runs one batch at a time",
                self.settings.backend,
            )
        # The default loader's file can be located without torch, which lets ONNX backends skip torch entirely.
        weights_file = default_weights_file(self.settings) if self._weights_loader is load_weights else None
        # On a thread that then ends, so no OpenMP team outlives the load (see `on_passing_thread`).
        backend, weights = await asyncio.to_thread(
            on_passing_thread,
            functools.partial(
                open_backend, self.settings, lambda: self._weights_loader(self.settings), weights_file=weights_file
            ),
        )
        self._backend = backend
        self._cache_context = f"{weights.sha256}:{backend.name}:{backend.precision}:draft={self.settings.jpeg_draft}"
        self._description = ModelDescription(
            name=MODEL_NAME,
            weights=weights.weights_id,
            weights_sha256=weights.sha256,
            weights_source=weights.source,
            untrained=weights.untrained,
            backend=backend.name,
            runtime=backend.runtime,
            precision=backend.precision,
            num_classes=len(self.labels),
            embedding_dim=EMBEDDING_DIM,
            version=__version__,
        )
        if weights.untrained:
            bar = "!" * 78
            log.warning("\n%s\n!! %s\n%s", bar, UNTRAINED_WARNING, bar)
        if self.settings.release_memory:
            # Before the warm-up: library code that ran only at import and loading leaves memory, and the code
            # requests run is paged back in by the warm-up, not by the first requests (75-130 ms slower).
            await asyncio.to_thread(memory.page_out_shared_libraries)
        if self.settings.warmup:
            await self._warm_up(backend)
        if self.settings.release_memory:
            await asyncio.to_thread(memory.release_free_memory)  # what the weights' loading and warm-up left
        self.metrics.model_info.info(
            {
                "name": MODEL_NAME,
                "weights": weights.weights_id,
                "backend": backend.name,
                "runtime": backend.runtime,
                "precision": backend.precision,
                "untrained": str(weights.untrained).lower(),
                "version": __version__,
            }
        )
        self._batcher.start()
        self.metrics.ready.set(1)
        log.info(
            "model ready: %s weights=%s backend=%s (%s, %s) threads=%d parallel_batches=%d batch<=%d wait<=%.1fms",
            MODEL_NAME,
            weights.weights_id,
            backend.name,
            backend.runtime,
            backend.precision,
            self.settings.torch_threads,
            parallel_batches(self.settings),
            batch_size_cap(self.settings),
            self.settings.max_batch_wait_ms,
        )

    def _tidy_when_idle(self) -> None:
        """Give freed memory back once the server is idle; then decode an image, as the next request will."""
        memory.release_free_memory()
        if self.settings.warmup:
            self._decode(self._warm_up_photo)

    async def _warm_up(self, backend: Backend) -> None:
        """Run every batch size a first batch costs extra for, and decode an image.

        Decoding is warmed too: the first image would otherwise load Pillow's format plugins and page the codecs
        back in (about 15 ms more).
        """
        cap = batch_size_cap(self.settings)
        for size in range(1, cap + 1) if backend.warm_every_batch_size else sorted({1, cap}):
            await self._batcher.warm_up([self._blank_crop] * size)
        # On a passing thread, not on the decode threads: starting those before any request raised ONNX Runtime's
        # peak memory under load (to 274-384 MB in 3 of 4 runs, 188-270 without; likely other malloc arenas).
        await asyncio.to_thread(on_passing_thread, functools.partial(self._decode, self._warm_up_photo))

    @property
    def admitted(self) -> int:
        """Images accepted and not yet answered (decoding, queued or running)."""
        return self._admitted

    def drain(self) -> None:
        """Readiness fails at once, and the API refuses new requests (`api.deps`); the images of requests already
        accepted still run, those not yet admitted too (a batch's later items, a classifier's examples), until
        `stop()`. Signal-safe."""
        self._draining = True
        self.metrics.ready.set(0)

    async def stop(self) -> None:
        """Stop accepting, answer everything accepted, then release the threads."""
        self.drain()
        await self._batcher.stop()
        self._decode_pool.shutdown(wait=True)

    # -- requests --------------------------------------------------------------------------------

    async def classify(self, data: bytes, *, top_k: int = 3, min_score: float | None = None) -> Classification:
        started = time.perf_counter()
        meta, output, timings = await self._infer(data, started)
        probs = output.probabilities
        k = min(top_k, probs.shape[0])
        top = np.argpartition(-probs, k - 1)[:k]
        top = top[np.argsort(-probs[top], kind="stable")]
        predictions = [Prediction(int(i), self.labels[int(i)], float(probs[i])) for i in top]
        if min_score is not None:
            predictions = [p for p in predictions if p.score >= min_score]
        return Classification(predictions, meta, timings)

    async def embed(self, data: bytes, *, normalize: bool = True) -> Embedding:
        started = time.perf_counter()
        meta, output, timings = await self._infer(data, started)
        vector = output.features.astype(np.float64)
        if normalize:
            norm = float(np.linalg.norm(vector))
            vector = vector / norm if norm > 0 else vector
        return Embedding(vector.tolist(), normalize, meta, timings)

    async def infer_images(self, images: Sequence[bytes]) -> list[ModelOutput]:
        """Raw model outputs for encoded images; each goes through the shared batcher like `classify`."""

        async def one(data: bytes) -> ModelOutput:
            with self._admit() as deadline:
                _, array, _ = await self._preprocess(data, deadline)
                return (await self._submit(array, deadline)).value

        return await _all_or_first_error([one(d) for d in images])

    async def infer_arrays(self, arrays: Sequence[np.ndarray]) -> list[ModelOutput]:
        """Raw model outputs for already preprocessed 3x224x224 float32 arrays, through the shared batcher."""
        if not self.accepting:
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
            with self._admit() as deadline:
                return (await self._submit(np.ascontiguousarray(array), deadline)).value

        return await _all_or_first_error([one(a) for a in arrays])

    # -- internals -------------------------------------------------------------------------------

    async def _infer(self, data: bytes, started: float) -> tuple[ImageMeta, ModelOutput, Timings]:
        """Decode, batch and run one image, or answer from the result cache."""
        key = ""
        if self.cache.enabled:
            if not self.accepting:
                raise NotReady("the model is not ready: retry shortly")
            key = content_key(data, self._cache_context)
            hit = self.cache.get(key)
            self._observe_cache(hit is not None)
            if hit is not None:
                self.metrics.images.labels(outcome="ok").inc()
                total_ms = round((time.perf_counter() - started) * 1000, 3)
                return hit[0], hit[1], Timings(0.0, 0.0, 0.0, total_ms, 0, cached=True)
        with self._admit() as deadline:
            meta, array, decode_s = await self._preprocess(data, deadline)
            result = await self._submit(array, deadline)
        if key:
            self.cache.put(key, (meta, result.value))
            self.metrics.cache_bytes.set(self.cache.bytes)
            self.metrics.cache_entries.set(len(self.cache))
        return meta, result.value, self._timings(started, decode_s, result)

    def refused(self, error: InferenceError) -> None:
        """Count an image refused before it reached the service: a batch entry over the upload limit, say."""
        self.metrics.images.labels(outcome=error.code).inc()

    def _observe_cache(self, hit: bool) -> None:
        (self.metrics.cache_hits if hit else self.metrics.cache_misses).inc()

    def _more_coming(self) -> int:
        return self._decoding

    def check_room(self, images: int) -> None:
        """Refuse a request of several images at once (`Overloaded`) unless all of them fit in the service now.

        A batch admitted image by image would have its tail refused one by one inside a 200, where clients and
        proxies that retry a 503 do not look. Only a check: concurrent requests can still take the room first.
        """
        if not self.accepting:
            raise NotReady("the service is not ready or is shutting down: retry shortly")
        limit = self.settings.max_queue_size
        if self._admitted + images > limit:
            self.metrics.images.labels(outcome=Overloaded.code).inc(images)
            brings = f" and this request brings {images}" if images > 1 else ""
            raise Overloaded(
                f"{self._admitted} images are already being served{brings} (RESNET_API_MAX_QUEUE_SIZE {limit}): "
                "retry shortly"
            )

    @contextlib.contextmanager
    def _admit(self) -> Iterator[float]:
        """Bound the images in the service (decoding, queued, running); yields the image's deadline."""
        self.check_room(1)
        self._admitted += 1
        try:
            yield time.perf_counter() + self.settings.request_deadline_ms / 1000.0
        except asyncio.CancelledError:
            self.metrics.images.labels(outcome="cancelled").inc()
            raise
        finally:
            self._admitted -= 1

    async def _preprocess(self, data: bytes, deadline: float) -> tuple[ImageMeta, np.ndarray, float]:
        """Decode on a decode thread; an image still waiting for one (or decoding) at its deadline is answered
        `DeadlineExceeded` then, and its decode is cancelled if it has not started."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        self._decoding += 1  # the adaptive batch wait waits only while some image is here
        try:
            decoding = loop.run_in_executor(self._decode_pool, self._decode, data)
            try:
                decoded, array = await asyncio.wait_for(decoding, max(deadline - started, 0.0))
            except TimeoutError:
                raise DeadlineExceeded(
                    f"the image waited {self.settings.request_deadline_ms:.0f} ms without being decoded "
                    "(RESNET_API_REQUEST_DEADLINE_MS)"
                ) from None
        except InferenceError as exc:
            self.metrics.images.labels(outcome=exc.code).inc()
            raise
        finally:
            self._decoding -= 1
        elapsed = time.perf_counter() - started
        self.metrics.preprocess_latency.observe(elapsed)
        return ImageMeta(decoded.width, decoded.height, decoded.format), array, elapsed

    def _decode(self, data: bytes) -> tuple[preprocess.DecodedImage, np.ndarray]:
        decoded = preprocess.decode(data, max_pixels=self.settings.max_image_pixels, draft=self.settings.jpeg_draft)
        return decoded, preprocess.to_pixels(decoded.image)  # normalised per batch, on the model thread

    async def _submit(self, array: np.ndarray, deadline: float) -> BatchResult[ModelOutput]:
        try:
            result = await self._batcher.submit(array, timeout_s=deadline - time.perf_counter())
        except InferenceError as exc:
            self.metrics.images.labels(outcome=exc.code).inc()
            raise
        except Exception:  # the model failed on its batch: answered as a 500 `internal_error`
            self.metrics.images.labels(outcome="internal_error").inc()
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

    def _forward(self, arrays: Sequence[np.ndarray], threads: int) -> list[ModelOutput]:
        """Runs on a model thread only, with `threads` intra-op threads (see `parallel_batches`)."""
        assert self._backend is not None
        feats, probs = self._backend.run(preprocess.model_batch(arrays), threads)
        return [ModelOutput(feats[i].copy(), probs[i].copy()) for i in range(len(arrays))]

    def _observe_batch(self, stats: BatchStats) -> None:
        self.batches_run += 1
        self.metrics.batch_size.observe(stats.size)
        self.metrics.inference_latency.observe(stats.inference_s)
        for wait in stats.queue_waits_s:
            self.metrics.queue_wait.observe(wait)
        self.metrics.queue_depth.set(self._batcher.depth)


def _cached_size(entry: tuple[ImageMeta, ModelOutput]) -> int:
    return entry[1].features.nbytes + entry[1].probabilities.nbytes + 256  # plus keys and object overhead


async def _all_or_first_error(calls: Sequence[Coroutine[Any, Any, ModelOutput]]) -> list[ModelOutput]:
    """Run all, let every one finish (no orphaned futures), then raise the first error if any failed."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [r for r in results if isinstance(r, ModelOutput)]


def parallel_batches(settings: Settings) -> int:
    """Batches run at once. Only `torch` can set a batch's thread count per call (its OpenMP team belongs to the
    calling thread); ONNX Runtime and OpenVINO size their pools when the model loads, so they run one at a time.

    Why 2 by default: on the 2-core machine, two 1-thread forwards side by side run 33-36 img/s where one
    2-thread forward runs 26-28 (and 27.5 vs 22.7 with a decode thread competing), because the two threads of
    one forward wait for each other at every operator, and for whichever one a decode thread has preempted.
    """
    if settings.backend != "torch":
        return 1
    return min(settings.parallel_batches or 2, settings.torch_threads)


def batch_size_cap(settings: Settings) -> int:
    """Images per batch: MAX_BATCH_SIZE bounds the images in the model at once (its activation memory), so
    parallel batches share it. Two torch batches of 4 measured as fast as two of 8 (28.1 vs 29.1-29.6 img/s on
    the 451x300 photo, the same on 3000x2000) with 25-50 MB less at the peak."""
    return max(1, settings.max_batch_size // parallel_batches(settings))


def configure_torch_threads(settings: Settings) -> None:
    """Process-wide torch thread counts; inter-op can only be set before any parallel work."""
    import torch

    torch.set_num_threads(settings.torch_threads)
    try:
        torch.set_num_interop_threads(settings.torch_interop_threads)
    except RuntimeError:
        log.debug("inter-op threads already fixed for this process")
