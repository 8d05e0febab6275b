"""Classifiers on disk: one directory per classifier holding a JSON manifest and a versioned `.npz` head.

    <data_dir>/classifiers/<id>/manifest.json      labels, counts, times, backbone, head file name + sha256
    <data_dir>/classifiers/<id>/head-<rev>.npz      mean, scale, weight, bias + the examples' features

Every file is written atomically (temporary file, fsync, rename, fsync of the directory). The manifest
is written last and names its head file by revision, so a crash at any point leaves either the old or
the new classifier, never a mix. Example images are never stored, only their 512-d features.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from resnet_api.inference.classifiers.head import AccuracyEstimate, LinearHead
from resnet_api.inference.errors import ClassifierChanged

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_ARRAYS = ("mean", "scale", "weight", "bias", "features", "targets")


class BackboneRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    weights: str
    weights_sha256: str = Field(min_length=1)


class AccuracyRecord(BaseModel):
    accuracy: float = Field(ge=0.0, le=1.0)
    method: str
    evaluated: int = Field(ge=0)


class Manifest(BaseModel):
    """What `manifest.json` holds; validated on load, so a hand-edited or truncated file is refused."""

    format: int = FORMAT_VERSION
    id: str = Field(pattern=r"^[a-z0-9-]{1,64}$")
    name: str
    labels: list[str] = Field(min_length=2)
    counts: list[int]
    created_at: datetime
    updated_at: datetime
    revision: int = Field(ge=1)
    backbone: BackboneRef
    head_file: str = Field(pattern=r"^head-[0-9]+\.npz$")
    head_sha256: str = Field(min_length=64, max_length=64)
    accuracy: AccuracyRecord
    l2: float


@dataclass(frozen=True)
class StoredClassifier:
    manifest: Manifest
    head: LinearHead
    features: np.ndarray  # (N, D) float32, L2-normalised embeddings of the examples
    targets: np.ndarray  # (N,) int64 label indices

    @property
    def accuracy(self) -> AccuracyEstimate:
        a = self.manifest.accuracy
        return AccuracyEstimate(a.accuracy, a.method, a.evaluated)


@dataclass(frozen=True)
class Skipped:
    """A stored classifier that could not be loaded, and why."""

    path: str
    reason: str


class CorruptClassifier(Exception):
    pass


def encode_head(head: LinearHead, features: np.ndarray, targets: np.ndarray) -> bytes:
    """The head file's bytes (numpy `.npz`, loaded back with `allow_pickle=False`)."""
    buf = io.BytesIO()
    np.savez(
        buf, mean=head.mean, scale=head.scale, weight=head.weight, bias=head.bias, features=features, targets=targets
    )
    return buf.getvalue()


def atomic_write(path: Path, data: bytes) -> None:
    """1. write a temporary file beside `path`; 2. fsync it; 3. rename over `path`; 4. fsync the directory."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ClassifierStore:
    """Reads and writes classifiers under `root`; blocking file IO, so call it from a worker thread.

    Processes sharing `root` (replicas on one volume) write one at a time, under an exclusive `flock` on the
    directory `root` itself, and a write checks the revision on disk first: a process whose copy is out of date
    gets `ClassifierChanged` instead of overwriting, or bringing back, what another one wrote or deleted.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released when the descriptor is closed
            yield
        finally:
            os.close(fd)

    def revision_on_disk(self, classifier_id: str) -> int | None:
        """The revision the stored manifest names; None when the classifier is not stored, 0 if unreadable."""
        folder = self.root / classifier_id
        if not folder.is_dir():
            return None
        try:
            return int(json.loads((folder / MANIFEST).read_bytes())["revision"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0

    def save(self, manifest: Manifest, head_data: bytes) -> None:
        """Write revision `manifest.revision`, which must follow the one on disk (`ClassifierChanged` if not).

        A new classifier is written in a hidden directory renamed into place, so it appears whole or not at all;
        a retrain writes the head file named by the manifest, then the manifest, then drops older head files.
        """
        if hashlib.sha256(head_data).hexdigest() != manifest.head_sha256:
            raise ValueError("the manifest's head_sha256 does not match the head being saved")
        with self._writing():
            on_disk = self.revision_on_disk(manifest.id)
            expected = None if manifest.revision == 1 else manifest.revision - 1
            if on_disk != expected:
                state = "deleted it" if on_disk is None else f"saved revision {on_disk}"
                raise ClassifierChanged(
                    f"another replica {state} of classifier {manifest.id} since this one read revision "
                    f"{manifest.revision - 1}; this one has reloaded it: retry"
                )
            folder = self.root / manifest.id
            if manifest.revision > 1:
                atomic_write(folder / manifest.head_file, head_data)
                atomic_write(folder / MANIFEST, manifest.model_dump_json(indent=2).encode())
                for old in folder.glob("head-*.npz"):  # earlier revisions, no longer named by the manifest
                    if old.name != manifest.head_file:
                        old.unlink(missing_ok=True)
                return
            staging = self.root / f".creating-{manifest.id}-{uuid.uuid4().hex}"
            try:
                staging.mkdir()
                atomic_write(staging / manifest.head_file, head_data)
                atomic_write(staging / MANIFEST, manifest.model_dump_json(indent=2).encode())
                os.replace(staging, folder)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            fsync_dir(self.root)

    def delete(self, classifier_id: str) -> None:
        """Rename the directory away first (atomic), then remove it; already gone is fine."""
        with self._writing():
            folder = self.root / classifier_id
            if not folder.exists():
                return
            trash = self.root / f".deleted-{classifier_id}-{uuid.uuid4().hex}"
            os.replace(folder, trash)
            fsync_dir(self.root)
        shutil.rmtree(trash, ignore_errors=True)

    def load_all(self) -> tuple[list[StoredClassifier], list[Skipped]]:
        """Every readable classifier, and a report for each one that is corrupt or partial (never raises)."""
        loaded: list[StoredClassifier] = []
        skipped: list[Skipped] = []
        if not self.root.is_dir():
            return loaded, skipped
        self._remove_leftovers()
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith("."):
                continue
            try:
                loaded.append(self.load(entry))
            except CorruptClassifier as exc:
                log.warning("skipping stored classifier %s: %s", entry, exc)
                skipped.append(Skipped(str(entry), str(exc)))
        return loaded, skipped

    def _remove_leftovers(self) -> None:
        """What writes interrupted by a crash left: deletes, creates and temporary files before their rename.

        Under the write lock, so a replica starting up never removes the files another one is writing.
        """
        try:
            with self._writing():
                for entry in self.root.iterdir():
                    if entry.name.startswith((".deleted-", ".creating-")):
                        shutil.rmtree(entry, ignore_errors=True)
                    elif entry.is_dir() and not entry.name.startswith("."):
                        for tmp in entry.glob(".*.tmp"):
                            tmp.unlink(missing_ok=True)
        except OSError as exc:  # a read-only data directory: nothing to clean, and nothing can be written
            log.warning("could not clean up %s: %s", self.root, exc)

    def load(self, folder: Path) -> StoredClassifier:
        try:
            raw = (folder / MANIFEST).read_bytes()
        except OSError as exc:
            raise CorruptClassifier(f"no readable {MANIFEST} ({exc.strerror or exc})") from exc
        try:
            manifest = Manifest.model_validate(json.loads(raw))
        except (ValueError, ValidationError) as exc:
            raise CorruptClassifier(f"{MANIFEST} is not a valid manifest: {_short(exc)}") from exc
        if manifest.format != FORMAT_VERSION:
            raise CorruptClassifier(f"format {manifest.format} is not supported (expected {FORMAT_VERSION})")
        if manifest.id != folder.name:
            raise CorruptClassifier(f"manifest id {manifest.id!r} does not match its directory name")
        try:
            data = (folder / manifest.head_file).read_bytes()
        except OSError as exc:
            raise CorruptClassifier(f"head file {manifest.head_file} unreadable ({exc.strerror or exc})") from exc
        if hashlib.sha256(data).hexdigest() != manifest.head_sha256:
            raise CorruptClassifier(f"head file {manifest.head_file} does not match the sha256 in the manifest")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in _ARRAYS}
        except (OSError, ValueError, KeyError) as exc:
            raise CorruptClassifier(f"head file {manifest.head_file} unreadable: {_short(exc)}") from exc
        head = LinearHead(arrays["mean"], arrays["scale"], arrays["weight"], arrays["bias"])
        _check_shapes(manifest, head, arrays["features"], arrays["targets"])
        return StoredClassifier(manifest, head, arrays["features"], arrays["targets"])


def _check_shapes(m: Manifest, head: LinearHead, features: np.ndarray, targets: np.ndarray) -> None:
    labels, dim = len(m.labels), head.mean.shape[0] if head.mean.ndim == 1 else -1
    try:
        counts = np.bincount(targets.astype(np.int64), minlength=labels)
    except (TypeError, ValueError) as exc:
        raise CorruptClassifier("head targets are not label indices") from exc
    ok = (
        head.scale.shape == (dim,)
        and head.weight.shape == (labels, dim)
        and head.bias.shape == (labels,)
        and features.ndim == 2
        and features.shape[1] == dim
        and targets.shape == (features.shape[0],)
        and len(m.counts) == labels
        and np.array_equal(counts, np.array(m.counts))
    )
    if not ok:
        raise CorruptClassifier("head arrays do not agree with the manifest's labels and counts")


def _short(exc: Exception) -> str:
    with contextlib.suppress(Exception):
        return str(exc).splitlines()[0][:200]
    return type(exc).__name__
