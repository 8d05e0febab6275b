"""What is served, without importing torch: names, sizes, labels, weight file locations and checksums.

A process serving an ONNX backend from a cached model file needs only this module, not torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path

IMAGENET_WEIGHTS_NAME = "IMAGENET1K_V1"
IMAGENET_WEIGHTS_FILE = "resnet18-f37072fd.pth"
IMAGENET_WEIGHTS_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
IMAGENET_WEIGHTS_SHA256_PREFIX = "f37072fd"
MODEL_NAME = "resnet18"
EMBEDDING_DIM = 512
NUM_CLASSES = 1000


def load_labels() -> list[str]:
    """The 1000 ImageNet class names in torchvision's order."""
    text = resources.files("resnet_api.inference").joinpath("imagenet_labels.json").read_text("utf-8")
    labels: list[str] = json.loads(text)
    return labels


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def torch_hub_checkpoints_dir() -> Path:
    """torch.hub's default checkpoints dir, computed the way torch does but without importing it."""
    cache = os.getenv("XDG_CACHE_HOME", "~/.cache")
    torch_home = os.getenv("TORCH_HOME", os.path.join(cache, "torch"))
    return Path(os.path.expanduser(torch_home)) / "hub" / "checkpoints"


def weights_id_for(path: Path, sha256: str) -> str:
    """How a weights file is named in responses: the official file by its torchvision name."""
    return IMAGENET_WEIGHTS_NAME if sha256.startswith(IMAGENET_WEIGHTS_SHA256_PREFIX) else path.name


def locate_weights_file(spec: str, weights_dir: Path | None) -> Path | None:
    """The existing file the `weights` setting points at, or None (random weights, or not there yet)."""
    if spec == "random":
        return None
    path = (weights_dir or torch_hub_checkpoints_dir()) / IMAGENET_WEIGHTS_FILE if spec == "imagenet" else Path(spec)
    path = path.expanduser()
    return path if path.is_file() else None
