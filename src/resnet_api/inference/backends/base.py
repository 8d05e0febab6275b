"""The backend contract."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, get_args

import numpy as np

BackendName = Literal["torch", "onnxruntime", "openvino", "int8"]
BACKEND_NAMES: tuple[str, ...] = get_args(BackendName)


class Backend(Protocol):
    """One loaded model. `run` is called from the model threads only (several at once only for `torch`)."""

    @property
    def name(self) -> str: ...

    @property
    def runtime(self) -> str:
        """What runs the graph: `torch`, `onnxruntime` or `openvino` (`int8` runs on either of the last two)."""
        ...

    @property
    def precision(self) -> str: ...

    @property
    def warm_every_batch_size(self) -> bool:
        """Whether the first batch of each size costs extra (`torch` prepacks weights per shape, about 100 ms),
        so warm-up runs every size; ONNX Runtime and OpenVINO measured no such cost (0-20 ms, in the noise)."""
        ...

    def run(self, batch: np.ndarray, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3, 224, 224) float32 -> features (N, 512) and probabilities (N, 1000), float32.

        `threads`: intra-op threads for this call, where the runtime can change them per call (`torch`); the
        ONNX runtimes size their pools at load time and ignore it (`parallel_batches` runs them one at a time).
        """
        ...


@dataclass(frozen=True)
class WeightsInfo:
    """Where the weights came from, known without loading them into torch."""

    weights_id: str
    sha256: str
    untrained: bool
    source: str
