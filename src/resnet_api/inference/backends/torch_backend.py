"""The reference backend: ResNet-18 with batch norm folded into the convolutions, channels-last, fp32.

Folding removes a memory pass per layer and stays within 1e-6 of the unfolded model. Where PyTorch has
oneDNN (every x86 build), the folded model runs as `PrepackedResNet18`: the same oneDNN convolutions eager
torch calls, with weights reordered once instead of on every call, bit-identical to the folded module.
TorchScript freezing also folds, but specialises on input shapes, and the micro-batcher's varying batch sizes
make it re-optimise (a single image took up to a second after a batch of 16 in our runs); `torch.compile`
gets its speed from the same prepacking at 30 s of compilation per batch size and 150 MB more memory.
"""

from __future__ import annotations

import functools
import threading
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

from resnet_api.inference.model import BasicBlock, LoadedWeights, ResNet18, build_model, in_chunks


class FeaturesAndProbabilities(nn.Module):
    """ResNet-18 with two outputs: pooled features and softmax probabilities (also the ONNX export's graph).

    What `PrepackedResNet18` computes, and what serves when it cannot. Serving passes `stem_chunk` (see
    `ResNet18.features`) for a smaller memory peak; the export leaves it unset, so its graph has no
    batch-size-dependent split.
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
    runtime = "torch"
    precision = "fp32"

    def __init__(self, weights: LoadedWeights, *, threads: int, fold_bn: bool = True) -> None:
        self._threads = threads
        model = build_model(weights)
        if fold_bn:
            fold_batch_norm(model)
        self._module: Callable[[Tensor], tuple[Tensor, Tensor]]
        self.prepacked = fold_bn and prepacking_available()
        """Whether forwards run as `PrepackedResNet18` (else the module, as eager torch runs it)."""
        if self.prepacked:
            self._module = PrepackedResNet18(model, stem_chunk=SERVING_STEM_CHUNK)
        else:
            module = FeaturesAndProbabilities(model, stem_chunk=SERVING_STEM_CHUNK).eval()
            self._module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # not in the stubs

    @property
    def warm_every_batch_size(self) -> bool:
        return self.prepacked  # the first batch of a size packs weights

    def run(self, batch: np.ndarray, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        threads = threads or self._threads
        if torch.get_num_threads() != threads:  # per calling thread: each model thread leads its own OpenMP team
            torch.set_num_threads(threads)
        x = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            features, probabilities = self._module(x)
        return features.numpy(), probabilities.numpy()


PREPACKING_OPERATORS = (
    "_reorder_convolution_weight",
    "_convolution_pointwise",
    "_convolution_pointwise_",
    "_get_mkldnn_serialized_md",
    "_nbytes",
)


def prepacking_available() -> bool:
    """oneDNN and every operator `PrepackedResNet18` calls (Inductor's own; present in every x86 build of torch)."""
    onednn: bool = torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
    return onednn and all(hasattr(torch.ops.mkldnn, name) for name in PREPACKING_OPERATORS)


class PrepackedResNet18:
    """`FeaturesAndProbabilities` of a batch-norm-folded ResNet-18 on oneDNN's fused convolutions, weights prepacked.

    Eager torch hands oneDNN plain OIHW weights, and oneDNN reorders them into its blocked layout on every call:
    44 MB of weights per forward, measured at 40 % of a lone image's time at 2 threads (69 -> 36 ms summed over
    the 20 convolutions; 10-25 % at batches of 2-16). Here each weight is reordered once per layout. oneDNN picks
    the layout from the input shape and the calling thread's thread count (on the 2-core AVX2 machine: one for a
    lone image at 2 threads, another for everything else), so layouts are made on first use of a (shape,
    threads) pair, on the thread that needs them, and shared by oneDNN's memory descriptor: memory holds each
    distinct layout once and no plain copy. At most `max_layouts` per convolution (a CPU whose oneDNN wanted one
    per batch size would otherwise hold the weights many times over): past that, a call gets the first layout and
    oneDNN reorders it on the fly, as eager torch does. Convolution + bias + ReLU, and convolution + bias +
    residual add + ReLU, run as one primitive each (what Inductor emits for this model); results are
    bit-identical to the module.
    """

    def __init__(self, model: ResNet18, *, stem_chunk: int | None, max_layouts: int = 2) -> None:
        convs: list[nn.Conv2d] = [model.conv1]
        self._blocks: list[tuple[int, int, int | None]] = []  # conv1, conv2, downsample: indices into convs
        for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
            for block in layer:
                assert isinstance(block, BasicBlock)
                assert isinstance(block.bn1, nn.Identity), "fold the batch norms first"
                down = block.downsample[0] if isinstance(block.downsample, nn.Sequential) else None
                assert down is None or isinstance(down, nn.Conv2d)
                self._blocks.append((len(convs), len(convs) + 1, None if down is None else len(convs) + 2))
                convs += [block.conv1, block.conv2] if down is None else [block.conv1, block.conv2, down]
        self._geometry = [(list(c.padding), list(c.stride), list(c.dilation), c.groups) for c in convs]
        self._biases = [c.bias.detach() if c.bias is not None else None for c in convs]
        self._sources: list[Tensor] = [c.weight.detach().contiguous() for c in convs]  # plain until first packed
        self._packed: dict[tuple[int, torch.Size, int], Tensor] = {}  # (conv, input shape, threads) -> weight
        self._layouts: dict[tuple[int, bytes], Tensor] = {}  # (conv, oneDNN memory descriptor) -> weight
        self._lock = threading.Lock()
        self._max_layouts = max_layouts
        self._fc = model.fc
        self._stem_chunk = stem_chunk

    @property
    def layouts(self) -> int:
        """Prepacked weights held (each distinct layout of each convolution once)."""
        return len(self._layouts)

    @property
    def weight_bytes(self) -> int:
        """Bytes of convolution weights held: each distinct layout once, plus plain weights not yet packed."""
        plain = sum(w.numel() * w.element_size() for w in self._sources if not w.is_mkldnn)
        return plain + sum(int(torch.ops.mkldnn._nbytes(w)) for w in self._layouts.values())

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]:
        threads = torch.get_num_threads()
        y = in_chunks(functools.partial(self._stem, threads=threads), x, self._stem_chunk)
        for conv1, conv2, down in self._blocks:
            identity = y if down is None else self._conv(down, y, threads, "none")
            out = self._conv(conv1, y, threads, "relu")
            y = torch.ops.mkldnn._convolution_pointwise_.binary(  # identity += conv2(out), then ReLU, in place
                identity, out, self._weight(conv2, out, threads), self._biases[conv2], *self._geometry[conv2],
                "add", None, "relu", [], "",
            )  # fmt: skip
        features = torch.flatten(F.adaptive_avg_pool2d(y, 1), 1)
        return features, torch.softmax(self._fc(features), dim=1)

    def _stem(self, x: Tensor, threads: int) -> Tensor:
        return F.max_pool2d(self._conv(0, x, threads, "relu"), kernel_size=3, stride=2, padding=1)

    def _conv(self, index: int, x: Tensor, threads: int, activation: str) -> Tensor:
        weight = self._weight(index, x, threads)
        result: Tensor = torch.ops.mkldnn._convolution_pointwise(
            x, weight, self._biases[index], *self._geometry[index], activation, [], ""
        )
        return result

    def _weight(self, index: int, x: Tensor, threads: int) -> Tensor:
        key = (index, x.shape, threads)
        weight = self._packed.get(key)
        if weight is None:
            with self._lock:
                weight = self._packed.get(key)
                if weight is None:
                    weight = self._pack(key)
        return weight

    def _pack(self, key: tuple[int, torch.Size, int]) -> Tensor:
        index, shape, _ = key
        source = self._sources[index]
        plain = source.to_dense() if source.is_mkldnn else source
        packed = torch.ops.mkldnn._reorder_convolution_weight(plain, *self._geometry[index], list(shape))
        layout = bytes(torch.ops.mkldnn._get_mkldnn_serialized_md(packed).numpy())
        held = [w for (conv, _), w in self._layouts.items() if conv == index]
        if (index, layout) in self._layouts or len(held) < self._max_layouts:
            packed = self._layouts.setdefault((index, layout), packed)
        else:
            packed = held[0]  # correct in any layout; only the reorder is back
        self._sources[index] = packed  # the plain copy goes: later layouts are made from this one
        self._packed[key] = packed
        return packed


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
