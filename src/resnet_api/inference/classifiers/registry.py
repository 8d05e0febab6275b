"""The custom classifiers of one service: create, retrain, delete, classify; safe under concurrent requests.

Costs and bounds:
- Example images are embedded through the service's shared micro-batcher, at most `embed_inflight`
  at a time across all trainings, so a prediction waits behind at most that many training images.
- Head fits run on one dedicated thread (`resnet-train`), one at a time, never on the event loop.
- Reads (list, get, classify) take no lock: a classifier is an immutable snapshot replaced on retrain.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from resnet_api.inference.classifiers.head import DEFAULT_L2, LinearHead, estimate_accuracy, train_head
from resnet_api.inference.classifiers.store import (
    AccuracyRecord,
    BackboneRef,
    ClassifierStore,
    CorruptClassifier,
    Manifest,
    Skipped,
    StoredClassifier,
    encode_head,
)
from resnet_api.inference.errors import (
    BackboneMismatch,
    ClassifierChanged,
    ClassifierNotFound,
    InferenceError,
    InvalidTrainingSet,
    LimitExceeded,
    StorageFailed,
    TooManyFiles,
)
from resnet_api.inference.service import Classification, Embedding, ModelDescription, Prediction
from resnet_api.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_NAME_CHARS = 100


class Embedder(Protocol):
    async def embed(self, data: bytes, *, normalize: bool = True) -> Embedding: ...


@dataclass(frozen=True)
class Example:
    label: str
    data: bytes
    filename: str | None = None


@dataclass(frozen=True)
class Limits:
    max_classifiers: int
    max_labels: int
    max_images_per_request: int
    max_examples: int


@dataclass(frozen=True)
class TrainingReport:
    images: int
    embed_ms: float
    train_ms: float


@dataclass(frozen=True)
class Classifier:
    """An immutable snapshot; retraining replaces it."""

    stored: StoredClassifier
    compatible: bool
    last_training: TrainingReport | None = None

    @property
    def manifest(self) -> Manifest:
        return self.stored.manifest

    @property
    def id(self) -> str:
        return self.stored.manifest.id

    @property
    def labels(self) -> list[str]:
        return self.stored.manifest.labels


class ClassifierRegistry:
    def __init__(
        self,
        embedder: Embedder,
        backbone: BackboneRef,
        store: ClassifierStore,
        limits: Limits,
        *,
        embed_inflight: int = 2,
        l2: float = DEFAULT_L2,
    ) -> None:
        self.backbone = backbone
        self.limits = limits
        self.skipped: list[Skipped] = []
        self._embedder = embedder
        self._store = store
        self._l2 = l2
        self._items: dict[str, Classifier] = {}
        self._lock = asyncio.Lock()  # membership of _items and the create reservations
        self._reserved = 0
        self._id_locks: dict[str, asyncio.Lock] = {}  # one writer per classifier (retrain, delete)
        self._embed_slots = asyncio.Semaphore(embed_inflight)
        self._trainer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="resnet-train")
        self._writes: set[asyncio.Future[Any]] = set()

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        """Load what the store holds; corrupt entries are logged and listed in `skipped`, never fatal."""
        stored, self.skipped = await asyncio.to_thread(self._store.load_all)
        for item in stored:
            self._items[item.manifest.id] = self._loaded(item)
        log.info("custom classifiers: %d loaded, %d skipped", len(self._items), len(self.skipped))

    def _loaded(self, item: StoredClassifier) -> Classifier:
        compatible = item.manifest.backbone.weights_sha256 == self.backbone.weights_sha256
        if not compatible:
            log.warning(
                "classifier %s (%s) was trained on weights %s (sha256 %s…), not the ones running (%s…): "
                "it is listed but refuses to classify",
                item.manifest.id,
                item.manifest.name,
                item.manifest.backbone.weights,
                item.manifest.backbone.weights_sha256[:12],
                self.backbone.weights_sha256[:12],
            )
        return Classifier(item, compatible)

    async def _reload(self, classifier_id: str) -> None:
        """After `ClassifierChanged`: take what another replica stored, or its delete, as this one's copy."""
        try:
            stored: StoredClassifier | None = await asyncio.to_thread(
                self._store.load, self._store.root / classifier_id
            )
        except CorruptClassifier:
            stored = None  # deleted (or unreadable, which a restart would skip as well)
        async with self._lock:
            if stored is None:
                self._items.pop(classifier_id, None)
            else:
                self._items[classifier_id] = self._loaded(stored)
        log.warning("classifier %s was changed by another replica: reloaded from %s", classifier_id, self._store.root)

    async def close(self) -> None:
        """Let writes in progress finish (they may need the model: close before stopping the service), then stop."""
        await asyncio.gather(*self._writes, return_exceptions=True)
        await asyncio.to_thread(self._trainer.shutdown, wait=True)

    # -- reads -----------------------------------------------------------------------------------

    def all(self) -> list[Classifier]:
        return sorted(self._items.values(), key=lambda c: (c.manifest.created_at, c.id))

    def get(self, classifier_id: str) -> Classifier:
        item = self._items.get(classifier_id)
        if item is None:
            raise ClassifierNotFound(f"no classifier with id {classifier_id!r}: list them with GET /v1/classifiers")
        return item

    def usable(self, classifier_id: str) -> Classifier:
        """The classifier, if it may run on this backbone."""
        item = self.get(classifier_id)
        if not item.compatible:
            b = item.manifest.backbone
            raise BackboneMismatch(
                f"classifier {classifier_id!r} was trained on weights {b.weights} (sha256 {b.weights_sha256[:12]}…) "
                f"but the service runs {self.backbone.weights} (sha256 {self.backbone.weights_sha256[:12]}…): "
                "restart with those weights, or delete it and train it again"
            )
        return item

    async def classify(
        self, classifier_id: str, data: bytes, *, top_k: int = 3, min_score: float | None = None
    ) -> Classification:
        item = self.usable(classifier_id)
        embedding = await self._embedder.embed(data, normalize=True)
        probs = item.stored.head.probabilities(np.asarray([embedding.vector], dtype=np.float32))[0]
        order = np.argsort(-probs, kind="stable")[: min(top_k, len(probs))]
        predictions = [Prediction(int(i), item.labels[int(i)], float(probs[i])) for i in order]
        if min_score is not None:
            predictions = [p for p in predictions if p.score >= min_score]
        return Classification(predictions, embedding.image, embedding.timings)

    # -- writes ----------------------------------------------------------------------------------

    async def create(self, name: str, examples: Sequence[Example], *, l2: float | None = None) -> Classifier:
        """Train a new classifier; `l2` is the head's regularisation strength (default: the registry's)."""
        name = _check_name(name)
        labels = self._check_examples(examples, existing=[], existing_count=0)
        return await self._complete(self._create(name, labels, examples, self._l2 if l2 is None else l2))

    async def add_examples(
        self, classifier_id: str, examples: Sequence[Example], *, l2: float | None = None
    ) -> Classifier:
        """Add examples (to known or new labels) and retrain on all of them (`l2`: default, the classifier's)."""
        return await self._complete(self._add_examples(classifier_id, examples, l2))

    async def delete(self, classifier_id: str) -> None:
        await self._complete(self._delete(classifier_id))

    # -- internals -------------------------------------------------------------------------------

    async def _complete(self, work: Coroutine[Any, Any, T]) -> T:
        """Run a write to its end even if the caller is cancelled (client gone, shutdown): memory and disk agree."""
        task = asyncio.ensure_future(work)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        return await asyncio.shield(task)

    async def _create(self, name: str, labels: list[str], examples: Sequence[Example], l2: float) -> Classifier:
        async with self._lock:
            if len(self._items) + self._reserved >= self.limits.max_classifiers:
                raise LimitExceeded(
                    f"there are already {self.limits.max_classifiers} classifiers "
                    "(RESNET_API_MAX_CLASSIFIERS): delete one first"
                )
            self._reserved += 1  # a slot, so concurrent creates cannot pass the limit while they train
        try:
            classifier_id = uuid.uuid4().hex[:16]
            now = datetime.now(UTC)
            item = await self._train(
                classifier_id, name, labels, examples, previous=None, created_at=now, revision=1, l2=l2
            )
            async with self._lock:
                self._items[classifier_id] = item
        finally:
            async with self._lock:
                self._reserved -= 1
        log.info("classifier %s (%s) created: labels=%s", item.id, name, labels)
        return item

    async def _add_examples(self, classifier_id: str, examples: Sequence[Example], l2: float | None) -> Classifier:
        self.usable(classifier_id)  # an unknown id gets its 404 before a lock is made for it (and kept)
        async with self._id_lock(classifier_id):
            current = self.usable(classifier_id)
            m = current.manifest
            labels = self._check_examples(examples, existing=m.labels, existing_count=sum(m.counts))
            try:
                item = await self._train(
                    classifier_id,
                    m.name,
                    labels,
                    examples,
                    previous=current,
                    created_at=m.created_at,
                    revision=m.revision + 1,
                    l2=m.l2 if l2 is None else l2,
                )
            except ClassifierChanged:
                await self._reload(classifier_id)
                raise
            async with self._lock:
                self._items[classifier_id] = item
        log.info(
            "classifier %s retrained: revision %d, %d examples", classifier_id, m.revision + 1, item.stored.targets.size
        )
        return item

    async def _delete(self, classifier_id: str) -> None:
        self.get(classifier_id)  # as above: requests for ids that never existed leave nothing behind
        async with self._id_lock(classifier_id):
            self.get(classifier_id)
            await asyncio.to_thread(self._store.delete, classifier_id)
            async with self._lock:
                self._items.pop(classifier_id, None)
                self._id_locks.pop(classifier_id, None)
        log.info("classifier %s deleted", classifier_id)

    def _id_lock(self, classifier_id: str) -> asyncio.Lock:
        return self._id_locks.setdefault(classifier_id, asyncio.Lock())

    def _check_examples(self, examples: Sequence[Example], *, existing: list[str], existing_count: int) -> list[str]:
        """The label list after adding these examples (existing labels first, new ones in order of appearance)."""
        lim = self.limits
        if not examples:
            raise InvalidTrainingSet("no images sent: send at least one image per label")
        if len(examples) > lim.max_images_per_request:
            raise TooManyFiles(
                f"{len(examples)} images sent; at most {lim.max_images_per_request} per request "
                "(RESNET_API_MAX_CLASSIFIER_IMAGES): add the rest with POST /v1/classifiers/{id}/examples"
            )
        if existing_count + len(examples) > lim.max_examples:
            raise LimitExceeded(
                f"a classifier holds at most {lim.max_examples} examples (RESNET_API_MAX_CLASSIFIER_EXAMPLES); "
                f"this one would have {existing_count + len(examples)}"
            )
        labels = list(existing)
        for ex in examples:
            if ex.label != ex.label.strip() or not 1 <= len(ex.label) <= MAX_NAME_CHARS:
                raise InvalidTrainingSet(
                    f"label {ex.label!r} must be 1 to {MAX_NAME_CHARS} characters without surrounding spaces"
                )
            if ex.label not in labels:
                labels.append(ex.label)
        if len(labels) < 2:
            raise InvalidTrainingSet(f"only one label ({labels[0]!r}): a classifier needs at least two labels")
        if len(labels) > lim.max_labels:
            raise LimitExceeded(
                f"{len(labels)} labels; a classifier has at most {lim.max_labels} (RESNET_API_MAX_CLASSIFIER_LABELS)"
            )
        return labels

    async def _train(
        self,
        classifier_id: str,
        name: str,
        labels: list[str],
        examples: Sequence[Example],
        *,
        previous: Classifier | None,
        created_at: datetime,
        revision: int,
        l2: float,
    ) -> Classifier:
        started = time.perf_counter()
        vectors = await self._embed_all(examples)
        embed_s = time.perf_counter() - started
        index = {label: i for i, label in enumerate(labels)}
        features = np.asarray(vectors, dtype=np.float32)
        targets = np.asarray([index[ex.label] for ex in examples], dtype=np.int64)
        if previous is not None:
            features = np.concatenate([previous.stored.features, features])
            targets = np.concatenate([previous.stored.targets, targets])
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        stored = await loop.run_in_executor(
            self._trainer, self._fit_and_save, classifier_id, name, labels, features, targets, created_at, revision, l2
        )
        report = TrainingReport(
            len(examples), round(embed_s * 1000, 3), round((time.perf_counter() - started) * 1000, 3)
        )
        return Classifier(stored, compatible=True, last_training=report)

    def _fit_and_save(
        self,
        classifier_id: str,
        name: str,
        labels: list[str],
        features: np.ndarray,
        targets: np.ndarray,
        created_at: datetime,
        revision: int,
        l2: float,
    ) -> StoredClassifier:
        """Runs on the training thread: fit, estimate accuracy, write atomically."""
        head: LinearHead = train_head(features, targets, len(labels), l2=l2)
        accuracy = estimate_accuracy(features, targets, len(labels), head, l2=l2)
        data = encode_head(head, features, targets)
        manifest = Manifest(
            id=classifier_id,
            name=name,
            labels=labels,
            counts=np.bincount(targets, minlength=len(labels)).tolist(),
            created_at=created_at,
            updated_at=datetime.now(UTC),
            revision=revision,
            backbone=self.backbone,
            head_file=f"head-{revision}.npz",
            head_sha256=hashlib.sha256(data).hexdigest(),
            accuracy=AccuracyRecord(accuracy=accuracy.accuracy, method=accuracy.method, evaluated=accuracy.evaluated),
            l2=l2,
        )
        try:
            self._store.save(manifest, data)
        except OSError as exc:
            raise StorageFailed(
                f"cannot write classifier files under {self._store.root}: {exc.strerror or exc}; "
                "set RESNET_API_DATA_DIR to a writable directory"
            ) from exc
        return StoredClassifier(manifest, head, features, targets)

    async def _embed_all(self, examples: Sequence[Example]) -> list[list[float]]:
        async def one(ex: Example) -> list[float]:
            async with self._embed_slots:
                try:
                    return (await self._embedder.embed(ex.data, normalize=True)).vector
                except InferenceError as exc:
                    raise type(exc)(f"{ex.filename or 'image'} (label {ex.label!r}): {exc.detail}") from exc

        results = await asyncio.gather(*(one(ex) for ex in examples), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [r for r in results if not isinstance(r, BaseException)]


def _check_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= MAX_NAME_CHARS:
        raise InvalidTrainingSet(f"the classifier name must be 1 to {MAX_NAME_CHARS} characters")
    return name


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "resnet-api"


def registry_for(settings: Settings, embedder: Embedder, description: ModelDescription) -> ClassifierRegistry:
    """The registry the settings describe, for the backbone the service runs (call `open()` next)."""
    root = (settings.data_dir or default_data_dir()) / "classifiers"
    backbone = BackboneRef(
        name=description.name, weights=description.weights, weights_sha256=description.weights_sha256
    )
    limits = Limits(
        max_classifiers=settings.max_classifiers,
        max_labels=settings.max_classifier_labels,
        max_images_per_request=settings.max_classifier_images,
        max_examples=settings.max_classifier_examples,
    )
    return ClassifierRegistry(
        embedder, backbone, ClassifierStore(root), limits, embed_inflight=settings.classifier_embed_inflight
    )
