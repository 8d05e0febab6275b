"""The registry with a fake embedder: fast tests of limits, concurrency and persistence rules."""

import asyncio
import logging
from pathlib import Path

import numpy as np
import pytest

from resnet_api.inference.classifiers import BackboneRef, ClassifierRegistry, ClassifierStore, Example, Limits
from resnet_api.inference.errors import (
    BackboneMismatch,
    ClassifierChanged,
    ClassifierNotFound,
    InvalidImage,
    InvalidTrainingSet,
    LimitExceeded,
    StorageFailed,
    TooManyFiles,
)
from resnet_api.inference.service import Embedding, ImageMeta, Timings

BACKBONE = BackboneRef(name="resnet18", weights="test", weights_sha256="ab" * 32)
OTHER = BackboneRef(name="resnet18", weights="other", weights_sha256="cd" * 32)
LIMITS = Limits(max_classifiers=3, max_labels=4, max_images_per_request=30, max_examples=40)
CENTRES = {name: np.random.default_rng(i).normal(size=512) for i, name in enumerate(["a", "b", "c", "d", "e"])}


class FakeEmbedder:
    """b"<label>:<seed>" -> a point near that label's centre; counts how many embeds run at once."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.inflight = 0
        self.max_inflight = 0
        self.calls = 0

    async def embed(self, data: bytes, *, normalize: bool = True) -> Embedding:
        self.calls += 1
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            await asyncio.sleep(self.delay)
            if data == b"bad":
                raise InvalidImage("truncated")
            label, seed = data.decode().split(":")
            v = CENTRES[label] + np.random.default_rng(int(seed)).normal(scale=0.5, size=512)
            v /= np.linalg.norm(v)
            return Embedding(v.tolist(), True, ImageMeta(8, 8, "PNG"), Timings(0, 0, 0, 0, 1))
        finally:
            self.inflight -= 1


def examples(labels: str = "abc", per_label: int = 4, seed: int = 0) -> list[Example]:
    return [Example(label, f"{label}:{seed * 1000 + i}".encode()) for label in labels for i in range(per_label)]


async def open_registry(
    root: Path, embedder: FakeEmbedder | None = None, backbone: BackboneRef = BACKBONE, inflight: int = 4
) -> ClassifierRegistry:
    registry = ClassifierRegistry(
        embedder or FakeEmbedder(), backbone, ClassifierStore(root), LIMITS, embed_inflight=inflight
    )
    await registry.open()
    return registry


async def test_create_classify_and_reload(tmp_path: Path) -> None:
    registry = await open_registry(tmp_path)
    item = await registry.create("  letters ", examples())
    assert item.manifest.name == "letters"
    assert item.labels == ["a", "b", "c"]
    assert item.manifest.counts == [4, 4, 4]
    assert item.manifest.accuracy.accuracy == 1.0
    assert item.manifest.accuracy.method == "leave-one-out"
    held_out = [(label, f"{label}:{500 + i}".encode()) for label in "abc" for i in range(3)]
    answers = [await registry.classify(item.id, data, top_k=2) for _, data in held_out]
    assert [a.predictions[0].label for a in answers] == [label for label, _ in held_out]
    assert all(len(a.predictions) == 2 for a in answers)
    await registry.close()

    reopened = await open_registry(tmp_path)
    assert [c.id for c in reopened.all()] == [item.id]
    again = [await reopened.classify(item.id, data, top_k=2) for _, data in held_out]
    assert [[p.score for p in a.predictions] for a in again] == [[p.score for p in a.predictions] for a in answers]
    await reopened.close()


async def test_add_examples_adds_a_label_and_retrains(tmp_path: Path) -> None:
    registry = await open_registry(tmp_path)
    item = await registry.create("letters", examples("ab"))
    updated = await registry.add_examples(item.id, examples("bd", per_label=3, seed=1))
    assert updated.labels == ["a", "b", "d"]
    assert updated.manifest.counts == [4, 7, 3]
    assert updated.manifest.revision == 2
    assert updated.manifest.created_at == item.manifest.created_at
    answer = await registry.classify(item.id, b"d:900")
    assert answer.predictions[0].label == "d"
    assert sorted(p.name for p in (tmp_path / item.id).iterdir()) == ["head-2.npz", "manifest.json"]
    await registry.close()


@pytest.mark.parametrize(
    ("batch", "error", "message"),
    [
        (examples("a"), InvalidTrainingSet, "at least two labels"),
        ([], InvalidTrainingSet, "no images"),
        ([Example(" a", b"a:1"), Example("b", b"b:1")], InvalidTrainingSet, "surrounding spaces"),
        (examples("abcde", per_label=1), LimitExceeded, "at most 4"),
        (examples("ab", per_label=16), TooManyFiles, "at most 30 per request"),
        ([*examples("ab"), Example("a", b"bad", "broken.png")], InvalidImage, "broken.png (label 'a'): truncated"),
    ],
)
async def test_bad_training_sets_are_refused(
    tmp_path: Path, batch: list[Example], error: type[Exception], message: str
) -> None:
    registry = await open_registry(tmp_path)
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        await registry.create("x", batch)
    assert registry.all() == []
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []
    await registry.close()


async def test_examples_per_classifier_are_capped(tmp_path: Path) -> None:
    registry = await open_registry(tmp_path)
    item = await registry.create("x", examples("ab", per_label=15))
    with pytest.raises(LimitExceeded, match="at most 40 examples"):
        await registry.add_examples(item.id, examples("ab", per_label=6, seed=1))
    await registry.close()


async def test_concurrent_creates_never_exceed_the_limit(tmp_path: Path) -> None:
    embedder = FakeEmbedder(delay=0.01)
    registry = await open_registry(tmp_path, embedder)
    results = await asyncio.gather(
        *(registry.create(f"c{i}", examples(seed=i)) for i in range(6)), return_exceptions=True
    )
    created = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, LimitExceeded)]
    assert len(created) == LIMITS.max_classifiers
    assert len(refused) == 6 - LIMITS.max_classifiers
    assert len(registry.all()) == LIMITS.max_classifiers
    assert len({c.id for c in created}) == LIMITS.max_classifiers
    assert len(list(tmp_path.iterdir())) == LIMITS.max_classifiers
    await registry.close()


async def test_training_keeps_few_images_in_the_model_queue(tmp_path: Path) -> None:
    embedder = FakeEmbedder(delay=0.005)
    registry = await open_registry(tmp_path, embedder, inflight=2)
    await asyncio.gather(registry.create("one", examples(per_label=5)), registry.create("two", examples(seed=1)))
    assert embedder.calls == 27
    assert embedder.max_inflight == 2  # across both trainings together
    await registry.close()


async def test_retrains_of_one_classifier_are_serialised(tmp_path: Path) -> None:
    registry = await open_registry(tmp_path, FakeEmbedder(delay=0.005))
    item = await registry.create("x", examples("ab"))
    await asyncio.gather(*(registry.add_examples(item.id, examples("ab", per_label=1, seed=s)) for s in range(1, 5)))
    final = registry.get(item.id)
    assert final.manifest.revision == 5
    assert final.manifest.counts == [8, 8]  # no retrain lost another's examples
    await registry.close()


async def test_requests_for_unknown_ids_leave_no_per_classifier_state(tmp_path: Path) -> None:
    """Anyone may send DELETE or add-examples for made-up ids: each gets a 404, and memory must not grow with them."""
    registry = await open_registry(tmp_path)
    item = await registry.create("x", examples("ab"))
    await registry.add_examples(item.id, examples("ab", per_label=1, seed=1))
    for i in range(200):
        with pytest.raises(ClassifierNotFound):
            await registry.delete(f"nope{i}")
        with pytest.raises(ClassifierNotFound):
            await registry.add_examples(f"nope{i}", examples("ab", per_label=1))
    assert set(registry._id_locks) <= {item.id}  # the per-id locks (private): only real classifiers have one
    await registry.close()


async def test_delete_waits_for_a_retrain_then_removes_everything(tmp_path: Path) -> None:
    registry = await open_registry(tmp_path, FakeEmbedder(delay=0.01))
    item = await registry.create("x", examples("ab"))
    retrain = asyncio.create_task(registry.add_examples(item.id, examples("ab", seed=1)))
    await asyncio.sleep(0)
    await registry.delete(item.id)
    assert (await retrain).manifest.revision == 2  # the retrain finished first
    assert registry.all() == []
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ClassifierNotFound):
        await registry.classify(item.id, b"a:1")
    with pytest.raises(ClassifierNotFound):
        await registry.delete(item.id)
    await registry.close()


async def test_classifier_from_other_weights_is_listed_but_refuses_to_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = await open_registry(tmp_path)
    item = await registry.create("x", examples("ab"))
    await registry.close()

    with caplog.at_level(logging.WARNING):
        other = await open_registry(tmp_path, backbone=OTHER)
    assert "refuses to classify" in caplog.text
    assert other.get(item.id).compatible is False
    with pytest.raises(BackboneMismatch, match="trained on weights test"):
        await other.classify(item.id, b"a:1")
    with pytest.raises(BackboneMismatch):
        await other.add_examples(item.id, examples("ab", seed=1))
    await other.delete(item.id)
    assert other.all() == []
    await other.close()


def test_the_classifier_package_does_not_import_fastapi() -> None:
    import subprocess
    import sys

    code = "import sys, resnet_api.inference.classifiers; assert 'fastapi' not in sys.modules and 'starlette' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_a_cancelled_create_still_finishes_so_memory_and_disk_agree(tmp_path: Path) -> None:
    registry = await open_registry(tmp_path, FakeEmbedder(delay=0.01))
    caller = asyncio.create_task(registry.create("x", examples("ab")))
    await asyncio.sleep(0.02)  # mid-embedding
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await registry.close()  # waits for writes in progress
    assert [c.manifest.name for c in registry.all()] == ["x"]
    assert [p.name for p in tmp_path.iterdir()] == [registry.all()[0].id]


async def test_an_unwritable_data_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    registry = await open_registry(blocker / "classifiers")
    with pytest.raises(StorageFailed, match="set RESNET_API_DATA_DIR to a writable directory"):
        await registry.create("x", examples("ab"))
    assert registry.all() == []
    await registry.close()


async def test_a_replica_that_lost_a_race_answers_409_and_takes_the_winner_s_classifier(tmp_path: Path) -> None:
    a = await open_registry(tmp_path)
    item = await a.create("letters", examples("ab"))
    b = await open_registry(tmp_path)  # a second replica on the same volume, started after the create
    winner = await a.add_examples(item.id, examples("c", seed=1))
    with pytest.raises(ClassifierChanged):
        await b.add_examples(item.id, examples("d", seed=2))  # B's copy is revision 1: it would drop "c"
    assert b.get(item.id).manifest == winner.manifest  # reloaded: a retry on B builds on A's revision
    assert (await b.add_examples(item.id, examples("d", seed=2))).manifest.labels == ["a", "b", "c", "d"]
    b_copy = b.get(item.id).manifest.revision  # B wrote revision 3 itself: A's copy is revision 2
    assert b_copy == 3
    await b.delete(item.id)
    with pytest.raises(ClassifierChanged, match="deleted it"):
        await a.add_examples(item.id, examples("a", seed=3))  # would bring the deleted classifier back
    with pytest.raises(ClassifierNotFound):  # A learnt of the delete
        a.get(item.id)
    assert list(tmp_path.iterdir()) == []
    await a.close()
    await b.close()
