"""Build the backend the settings name, exporting and quantizing once and caching the files on disk.

Cache files are named by the weights' SHA-256, so they never serve stale weights. When the weights file
and the cached ONNX file both exist, ONNX backends start without importing torch at all.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from resnet_api.inference.backends.base import Backend, WeightsInfo
from resnet_api.inference.catalog import MODEL_NAME, locate_weights_file, sha256_file, weights_id_for
from resnet_api.settings import Settings

if TYPE_CHECKING:
    from resnet_api.inference.model import LoadedWeights

log = logging.getLogger(__name__)

LoadWeights = Callable[[], "LoadedWeights"]
T = TypeVar("T")


def on_passing_thread(work: Callable[[], T]) -> T:
    """Run `work` (loading a backend, say) on a new thread that ends as soon as it returns.

    libgomp, PyTorch's OpenMP runtime, keeps a team of worker threads for every thread that ever ran torch on
    several threads, and once the workers outnumber the cores it makes every team sleep between operators
    instead of spinning (throttled wait): a lone 2-thread forward on 2 cores took 72-76 ms instead of 62-63.
    A thread that ends takes its team with it, so loading leaves no team behind.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="resnet-load") as pool:
        return pool.submit(work).result()


def default_cache_dir() -> Path:
    return Path(os.getenv("XDG_CACHE_HOME", "~/.cache")).expanduser() / "resnet-api"


def cache_dir(settings: Settings, weights_file: Path | None) -> Path:
    """`model_cache_dir` if set, else next to the weights file if writable, else ~/.cache/resnet-api."""
    if settings.model_cache_dir is not None:
        return settings.model_cache_dir
    if weights_file is not None and os.access(weights_file.parent, os.W_OK):
        return weights_file.parent
    return default_cache_dir()


def _atomic_build(target: Path, build: Callable[[Path], None]) -> Path:
    """Build into a temporary file beside `target`, then rename: a crash never leaves half a model."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        build(Path(tmp))
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def open_backend(
    settings: Settings, load_weights: LoadWeights, *, weights_file: Path | None
) -> tuple[Backend, WeightsInfo]:
    """`weights_file` is the located file when the default loader is used (None: always load the weights)."""
    threads = settings.torch_threads
    if settings.backend == "torch":
        from resnet_api.inference.backends.torch_backend import TorchBackend

        weights = load_weights()
        return TorchBackend(weights, threads=threads, fold_bn=settings.torch_fold_bn), _info(weights)

    _require_accel(settings.backend)
    onnx_path, info = _onnx_model(settings, load_weights, weights_file)
    from resnet_api.inference.backends.onnx_backends import OnnxRuntimeBackend, OpenVinoBackend

    if settings.backend == "onnxruntime":
        return OnnxRuntimeBackend(onnx_path, threads=threads), info
    if settings.backend == "openvino":
        return OpenVinoBackend(onnx_path, threads=threads, precision=settings.openvino_precision), info
    from resnet_api.inference.backends import int8

    folder, limit = settings.calibration_dir, settings.calibration_images
    int8_path = onnx_path.with_name(f"{onnx_path.stem}-int8-{int8.calibration_key(folder, limit)}.onnx")
    if not int8_path.is_file():
        log.info("quantizing to int8 (once, cached at %s), calibrating on %s", int8_path, folder or "generated images")
        _atomic_build(int8_path, lambda tmp: int8.quantize(onnx_path, tmp, folder, limit))
    if settings.int8_runtime == "openvino":
        _require_accel("openvino")
        return OpenVinoBackend(int8_path, threads=threads, precision="fp32", name="int8", quantized=True), info
    return OnnxRuntimeBackend(int8_path, threads=threads, name="int8", precision="int8"), info


def _require_accel(backend: str) -> None:
    import importlib.util

    module = "openvino" if backend == "openvino" else "onnxruntime"
    if importlib.util.find_spec(module) is None or importlib.util.find_spec("onnx") is None:
        raise RuntimeError(
            f"backend {backend!r} needs the accel extra: pip install 'resnet-api[accel]' "
            "(with -c constraints.txt), or set RESNET_API_BACKEND=torch"
        )


def _onnx_model(settings: Settings, load_weights: LoadWeights, weights_file: Path | None) -> tuple[Path, WeightsInfo]:
    directory = cache_dir(settings, weights_file)
    if weights_file is not None:  # torch-free path: checksum the file, look for the cached export
        digest = sha256_file(weights_file)
        cached = directory / f"{MODEL_NAME}-{digest[:16]}.onnx"
        info = WeightsInfo(weights_id_for(weights_file, digest), digest, untrained=False, source=str(weights_file))
        if cached.is_file():
            return cached, info
    weights = load_weights()
    info = _info(weights)
    cached = directory / f"{MODEL_NAME}-{weights.sha256[:16]}.onnx"
    if not cached.is_file():
        from resnet_api.inference.backends.torch_backend import export_onnx

        log.info("exporting the model to ONNX (once, cached at %s)", cached)
        _atomic_build(cached, lambda tmp: export_onnx(weights, str(tmp)))
    return cached, info


def _info(weights: LoadedWeights) -> WeightsInfo:
    return WeightsInfo(weights.weights_id, weights.sha256, weights.untrained, weights.source)


def default_weights_file(settings: Settings) -> Path | None:
    return locate_weights_file(settings.weights, settings.weights_dir)
