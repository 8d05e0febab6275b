import hashlib
import json
import threading
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from resnet_api.inference.classifiers.head import train_head
from resnet_api.inference.classifiers.store import (
    MANIFEST,
    AccuracyRecord,
    BackboneRef,
    ClassifierStore,
    Manifest,
    atomic_write,
    encode_head,
)
from resnet_api.inference.errors import ClassifierChanged

BACKBONE = BackboneRef(name="resnet18", weights="test", weights_sha256="ab" * 32)


def save(store: ClassifierStore, classifier_id: str, revision: int = 1, seed: int = 0) -> Manifest:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(6, 8)).astype(np.float32)
    targets = np.array([0, 0, 0, 1, 1, 1])
    head = train_head(features, targets, 2)
    data = encode_head(head, features, targets)
    now = datetime.now(UTC)
    manifest = Manifest(
        id=classifier_id,
        name="test",
        labels=["a", "b"],
        counts=[3, 3],
        created_at=now,
        updated_at=now,
        revision=revision,
        backbone=BACKBONE,
        head_file=f"head-{revision}.npz",
        head_sha256=hashlib.sha256(data).hexdigest(),
        accuracy=AccuracyRecord(accuracy=1.0, method="leave-one-out", evaluated=6),
        l2=0.01,
    )
    store.save(manifest, data)
    return manifest


def test_round_trip(tmp_path: Path) -> None:
    store = ClassifierStore(tmp_path)
    manifest = save(store, "one")
    loaded, skipped = store.load_all()
    assert skipped == []
    assert [c.manifest for c in loaded] == [manifest]
    assert loaded[0].features.shape == (6, 8)
    assert loaded[0].head.weight.shape == (2, 8)


def test_atomic_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    atomic_write(target, b"old")
    with pytest.raises(TypeError):
        atomic_write(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_a_new_revision_replaces_the_old_head_file(tmp_path: Path) -> None:
    store = ClassifierStore(tmp_path)
    save(store, "one", revision=1, seed=1)
    save(store, "one", revision=2, seed=2)
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["head-2.npz", MANIFEST]
    loaded, _ = store.load_all()
    assert loaded[0].manifest.revision == 2


def test_crash_between_head_and_manifest_keeps_the_previous_revision(tmp_path: Path) -> None:
    store = ClassifierStore(tmp_path)
    save(store, "one", revision=1)
    (tmp_path / "one" / "head-2.npz").write_bytes(b"half-written new head")  # new head, manifest never renamed
    (tmp_path / "one" / f".{MANIFEST}.1234.tmp").write_bytes(b'{"trunc')
    loaded, skipped = store.load_all()
    assert skipped == []
    assert loaded[0].manifest.revision == 1
    assert not list((tmp_path / "one").glob(".*.tmp"))  # leftovers cleaned


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda d: (d / MANIFEST).write_text("{not json"), "not a valid manifest"),
        (lambda d: (d / MANIFEST).unlink(), "no readable manifest.json"),
        (lambda d: (d / "head-1.npz").write_bytes(b"garbage"), "does not match the sha256"),
        (lambda d: (d / "head-1.npz").unlink(), "unreadable"),
        (
            lambda d: (d / MANIFEST).write_text(
                json.dumps({**json.loads((d / MANIFEST).read_text()), "counts": [5, 1]})
            ),
            "do not agree",
        ),
        (lambda d: (d / MANIFEST).write_text(json.dumps({**json.loads((d / MANIFEST).read_text()), "id": "zz"})), "id"),
    ],
)
def test_corrupt_classifiers_are_reported_and_skipped(tmp_path: Path, damage: object, reason: str) -> None:
    store = ClassifierStore(tmp_path)
    save(store, "bad")
    save(store, "good")
    damage(tmp_path / "bad")  # type: ignore[operator]
    loaded, skipped = store.load_all()
    assert [c.manifest.id for c in loaded] == ["good"]
    assert len(skipped) == 1
    assert skipped[0].path == str(tmp_path / "bad")
    assert reason in skipped[0].reason


def test_delete_removes_the_directory(tmp_path: Path) -> None:
    store = ClassifierStore(tmp_path)
    save(store, "one")
    store.delete("one")
    assert list(tmp_path.iterdir()) == []
    assert store.load_all() == ([], [])


def test_an_interrupted_delete_is_finished_at_load(tmp_path: Path) -> None:
    store = ClassifierStore(tmp_path)
    save(store, "one")
    (tmp_path / "one").rename(tmp_path / ".deleted-one-123")
    assert store.load_all() == ([], [])
    assert list(tmp_path.iterdir()) == []


def test_missing_root_is_empty(tmp_path: Path) -> None:
    assert ClassifierStore(tmp_path / "nope").load_all() == ([], [])


# ---------- replicas sharing one data directory ----------


def test_a_replica_with_an_old_copy_cannot_overwrite_or_revive_another_s_write(tmp_path: Path) -> None:
    a, b = ClassifierStore(tmp_path), ClassifierStore(tmp_path)  # two processes on one volume
    save(a, "one")
    kept = save(a, "one", revision=2, seed=1)  # A retrains; B still holds revision 1
    with pytest.raises(ClassifierChanged, match="saved revision 2"):
        save(b, "one", revision=2, seed=2)
    assert [c.manifest for c in b.load_all()[0]] == [kept]  # A's retrain is what stays
    a.delete("one")
    with pytest.raises(ClassifierChanged, match="deleted it"):
        save(b, "one", revision=2, seed=3)
    assert list(tmp_path.iterdir()) == []  # the delete stays a delete


def test_a_create_appears_whole_and_an_interrupted_one_leaves_nothing(tmp_path: Path) -> None:
    store = ClassifierStore(tmp_path)
    save(store, "one")
    assert [p.name for p in tmp_path.iterdir()] == ["one"]  # written aside, then renamed into place
    crashed = tmp_path / ".creating-two-123"  # what a crash between its files leaves
    crashed.mkdir()
    (crashed / "head-1.npz").write_bytes(b"partial")
    loaded, skipped = store.load_all()
    assert ([c.manifest.id for c in loaded], skipped) == (["one"], [])  # not a "corrupt" entry forever
    assert [p.name for p in tmp_path.iterdir()] == ["one"]


def test_a_replica_starting_up_waits_for_a_write_before_cleaning_up(tmp_path: Path) -> None:
    writer, starting = ClassifierStore(tmp_path), ClassifierStore(tmp_path)
    save(writer, "one")
    in_flight = tmp_path / "one" / f".{MANIFEST}.abc.tmp"  # the writer's file before its rename
    holding, release = threading.Event(), threading.Event()

    def write() -> None:
        with writer._writing():
            in_flight.write_bytes(b"{")
            holding.set()
            release.wait(10)
            in_flight.unlink()

    thread = threading.Thread(target=write)
    thread.start()
    assert holding.wait(10)
    loading = threading.Thread(target=starting.load_all)
    loading.start()
    loading.join(0.3)
    assert loading.is_alive()  # waits for the lock instead of deleting the file being written
    assert in_flight.exists()
    release.set()
    thread.join(10)
    loading.join(10)
    assert not loading.is_alive()
