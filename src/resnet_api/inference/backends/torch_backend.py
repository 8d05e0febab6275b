"""The reference backend: eager ResNet-18, batch norm folded into the convolutions, channels-last, fp32.

Folding removes a memory pass per layer and stays within 1e-6 of the unfolded model. TorchScript freezing
does the same fold but specialises on input shapes, and the micro-batcher's varying batch sizes make it
re-optimise (a single image took up to a second after a batch of 16 in our runs), so plain eager it is.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from resnet_api.inference.model import BasicBlock, LoadedWeights, ResNet18, build_model


class FeaturesAndProbabilities(nn.Module):
    """ResNet-18 with two outputs: pooled features and softmax probabilities (also the ONNX export's graph).

    Serving passes `stem_chunk` (see `ResNet18.features`) for a smaller memory peak; the export leaves it
    unset, so its graph has no batch-size-dependent split.
    """

    def __init__(self, model: ResNet18, *, stem_chunk: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.stem_chunk = stem_chunk

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.model.features(x, self.stem_chunk)
        return features, torch.softmax(self.model.fc(features), dim=1)


SERVING_STEM_CHUNK = 2
"""Stem images at a time when serving: at batch 8, 2 vs 8 measured 25.6 / 25.5 vs 24.0 / 24.0 img/s, about 20 MB less."""


class TorchBackend:
    name = "torch"
    precision = "fp32"

    def __init__(self, weights: LoadedWeights, *, threads: int, fold_bn: bool = True) -> None:
        self._threads = threads
        model = build_model(weights)
        if fold_bn:
            fold_batch_norm(model)
        self._module = FeaturesAndProbabilities(model, stem_chunk=SERVING_STEM_CHUNK).eval()
        self._module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing from torch's stubs

    def run(self, batch: np.ndarray, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        threads = threads or self._threads
        if torch.get_num_threads() != threads:  # per calling thread: each model thread leads its own OpenMP team
            torch.set_num_threads(threads)
        x = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            features, probabilities = self._module(x)
        return features.numpy(), probabilities.numpy()


def fold_batch_norm(model: ResNet18) -> None:
    """Replace every conv + batch norm pair by one conv with a bias (eval mode only), in place."""
    model.conv1 = fuse_conv_bn_eval(model.conv1, model.bn1)
    model.bn1 = nn.Identity()  # type: ignore[assignment]
    for block in model.modules():
        if not isinstance(block, BasicBlock):
            continue
        block.conv1 = fuse_conv_bn_eval(block.conv1, block.bn1)
        block.bn1 = nn.Identity()  # type: ignore[assignment]
        block.conv2 = fuse_conv_bn_eval(block.conv2, block.bn2)
        block.bn2 = nn.Identity()  # type: ignore[assignment]
        if isinstance(block.downsample, nn.Sequential):
            conv, bn = block.downsample[0], block.downsample[1]
            assert isinstance(conv, nn.Conv2d)
            assert isinstance(bn, nn.BatchNorm2d)
            block.downsample = nn.Sequential(fuse_conv_bn_eval(conv, bn))


def export_onnx(weights: LoadedWeights, path: str) -> None:
    """Write the two-output graph with a dynamic batch axis (TorchScript-based exporter: no extra deps)."""
    module = FeaturesAndProbabilities(build_model(weights)).eval()
    sample = torch.zeros(2, 3, 224, 224)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(
            module,
            (sample,),
            path,
            input_names=["input"],
            output_names=["features", "probabilities"],
            dynamic_axes={"input": {0: "batch"}, "features": {0: "batch"}, "probabilities": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
