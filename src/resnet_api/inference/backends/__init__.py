"""Model backends: the same ResNet-18 run by torch, ONNX Runtime (fp32 or int8) or OpenVINO.

Every backend takes a float32 batch (N, 3, 224, 224) and returns the 512-d pooled features and the
1000 softmax probabilities, so classification and embeddings work the same on all of them.
`open_backend` builds the one the `backend` setting names; only the `torch` backend, and the first
ONNX export, import torch.
"""

from __future__ import annotations

from resnet_api.inference.backends.base import BACKEND_NAMES, Backend, BackendName, WeightsInfo
from resnet_api.inference.backends.loader import on_passing_thread, open_backend

__all__ = ["BACKEND_NAMES", "Backend", "BackendName", "WeightsInfo", "on_passing_thread", "open_backend"]
