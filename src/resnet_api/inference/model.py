"""A torchvision-compatible ResNet-18 (same state_dict keys, shapes and forward), its weights and labels."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from resnet_api.inference.catalog import EMBEDDING_DIM as EMBEDDING_DIM
from resnet_api.inference.catalog import IMAGENET_WEIGHTS_FILE, IMAGENET_WEIGHTS_URL, NUM_CLASSES, weights_id_for
from resnet_api.inference.catalog import IMAGENET_WEIGHTS_NAME as IMAGENET_WEIGHTS_NAME
from resnet_api.inference.catalog import IMAGENET_WEIGHTS_SHA256_PREFIX as IMAGENET_WEIGHTS_SHA256_PREFIX
from resnet_api.inference.catalog import MODEL_NAME as MODEL_NAME
from resnet_api.inference.catalog import load_labels as load_labels
from resnet_api.inference.catalog import sha256_file as sha256_file
from resnet_api.inference.errors import WeightsUnavailable

log = logging.getLogger(__name__)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity  # in place, as torchvision does: one activation buffer fewer per block
        result: Tensor = self.relu(out)
        return result


class ResNet18(nn.Module):
    """torchvision.models.resnet18 rebuilt: `resnet18-f37072fd.pth` loads into it with strict=True."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, stride=1)
        self.layer2 = self._make_layer(128, stride=2)
        self.layer3 = self._make_layer(256, stride=2)
        self.layer4 = self._make_layer(512, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)
        # torchvision's initialisation, so `random` weights look like a freshly built torchvision model.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        first = BasicBlock(self.inplanes, planes, stride, downsample)
        self.inplanes = planes
        return nn.Sequential(first, BasicBlock(planes, planes))

    def stem(self, x: Tensor) -> Tensor:
        """7x7 convolution, batch norm, ReLU, max pool: the layers before `layer1`."""
        result: Tensor = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return result

    def features(self, x: Tensor, stem_chunk: int | None = None) -> Tensor:
        """The 512-d pooled features: the input of the final fully connected layer.

        `stem_chunk` runs the stem that many images at a time: the same numbers with a smaller peak, because
        the stem's output before pooling is the largest activation (3.2 MB per image).
        """
        x = in_chunks(self.stem, x, stem_chunk)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: Tensor) -> Tensor:
        logits: Tensor = self.fc(self.features(x))
        return logits


def in_chunks(layers: Callable[[Tensor], Tensor], x: Tensor, chunk: int | None) -> Tensor:
    """`layers(x)`, run `chunk` images at a time (all at once if None); the result stays channels-last."""
    if chunk is None or x.shape[0] <= chunk:
        return layers(x)
    parts = [layers(part) for part in torch.split(x, chunk)]
    return torch.cat(parts).contiguous(memory_format=torch.channels_last)


@dataclass(frozen=True)
class LoadedWeights:
    """A state_dict and where it came from."""

    state_dict: dict[str, Tensor]
    weights_id: str
    sha256: str
    untrained: bool
    source: str


def sha256_state_dict(state_dict: dict[str, Tensor]) -> str:
    digest = hashlib.sha256()
    for name, tensor in state_dict.items():
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def default_weights_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def random_weights(seed: int) -> LoadedWeights:
    """Seeded untrained weights: deterministic for a seed, useless for real predictions."""
    torch.manual_seed(seed)
    state = ResNet18().state_dict()
    return LoadedWeights(state, f"random-seed{seed}", sha256_state_dict(state), untrained=True, source="random")


def load_state_dict_file(path: Path) -> LoadedWeights:
    if not path.is_file():
        raise WeightsUnavailable(f"weights file not found at {path}: give an existing state_dict path")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad files
        raise WeightsUnavailable(f"cannot load weights from {path}: {exc}") from exc
    if not isinstance(state, dict):
        raise WeightsUnavailable(f"{path} does not hold a state_dict")
    digest = sha256_file(path)
    return LoadedWeights(state, weights_id_for(path, digest), digest, untrained=False, source=str(path))


def fetch_imagenet_weights(
    weights_dir: Path | None = None, *, url: str = IMAGENET_WEIGHTS_URL, progress: bool = True
) -> Path:
    """Download the official file into `weights_dir` (torch.hub checks the SHA-256 prefix in its name)."""
    target_dir = weights_dir or default_weights_dir()
    target = target_dir / IMAGENET_WEIGHTS_FILE
    if target.is_file():
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(target), hash_prefix=IMAGENET_WEIGHTS_SHA256_PREFIX, progress=progress)
    except Exception as exc:  # URLError, RuntimeError on hash mismatch, OSError...
        raise WeightsUnavailable(
            f"could not download {url} to {target} ({exc}). Fixes: run "
            f"`resnet-api weights fetch` on a machine with internet and copy the file to {target_dir}, "
            "set RESNET_API_WEIGHTS to a state_dict path, or set RESNET_API_WEIGHTS=random for an untrained demo"
        ) from exc
    return target


def resolve_weights(
    spec: str,
    *,
    weights_dir: Path | None,
    allow_download: bool,
    seed: int,
    fallback_to_random: bool = False,
    url: str = IMAGENET_WEIGHTS_URL,
) -> LoadedWeights:
    """Turn the `weights` setting into a state_dict; `imagenet` is strict unless a fallback is asked for."""
    if spec == "random":
        return random_weights(seed)
    if spec != "imagenet":
        return load_state_dict_file(Path(spec).expanduser())
    target_dir = weights_dir or default_weights_dir()
    path = target_dir / IMAGENET_WEIGHTS_FILE
    try:
        if not path.is_file():
            if not allow_download:
                raise WeightsUnavailable(
                    f"ImageNet weights not found at {path} and downloads are off. Fixes: run "
                    f"`resnet-api weights fetch` on a machine with internet and copy the file to {target_dir}, "
                    "set RESNET_API_WEIGHTS to a state_dict path, or set RESNET_API_WEIGHTS=random for an untrained demo"
                )
            path = fetch_imagenet_weights(target_dir, url=url)
        return load_state_dict_file(path)
    except WeightsUnavailable as exc:
        if not fallback_to_random:
            raise
        log.warning("%s -- falling back to UNTRAINED random weights as asked (fallback_to_random)", exc)
        return random_weights(seed)


def build_model(weights: LoadedWeights) -> ResNet18:
    model = ResNet18()
    model.load_state_dict(weights.state_dict, strict=True)
    return model.eval()
