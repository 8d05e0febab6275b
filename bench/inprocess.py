"""The server's work on images, run in this process: what the bench's ceiling, `latency_split.py` and
`thread_layouts.py` time without HTTP."""

from __future__ import annotations

from pathlib import Path

from resnet_api.inference import preprocess
from resnet_api.inference.backends import Backend, on_passing_thread, open_backend
from resnet_api.inference.backends.loader import default_weights_file
from resnet_api.inference.model import load_state_dict_file
from resnet_api.settings import Settings


def load_backend(settings: Settings, weights: Path) -> Backend:
    """The backend `settings` name, loaded on a thread that ends, as the server does, so no OpenMP team outlives
    the load."""
    return on_passing_thread(
        lambda: open_backend(
            settings, lambda: load_state_dict_file(weights), weights_file=default_weights_file(settings)
        )[0]
    )


def decode_and_run(backend: Backend, data: bytes, n: int, *, draft: bool, threads: int | None = None) -> None:
    """`n` copies of one encoded image the server's own way: decoded to uint8 crops, normalised as one batch, run."""
    pixels = [preprocess.to_pixels(preprocess.decode(data, max_pixels=10**9, draft=draft).image) for _ in range(n)]
    backend.run(preprocess.model_batch(pixels), threads)
