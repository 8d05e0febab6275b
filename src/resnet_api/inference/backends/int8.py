"""ONNX Runtime static int8 quantization (QDQ, per-channel weights), calibrated on a folder of images.

Calibration only measures activation ranges; its images should look like what the service will see.
The default set is generated (smooth random textures): enough to run, not to be accurate on real photos.
Real deployments should point `calibration_dir` at a few hundred of their own photos.
"""

from __future__ import annotations

import hashlib
import io
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from resnet_api.inference import preprocess

log = logging.getLogger(__name__)

CALIBRATION_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"})
# Bumped when the quantization recipe changes, so cached int8 files are rebuilt.
RECIPE = "qdq-perchannel-u8s8-minmax-fp32head-v2"


def generated_calibration_images(count: int, seed: int = 0) -> list[bytes]:
    """Deterministic textured JPEGs: coarse random colour fields upsampled plus fine noise, several sizes."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(count):
        width, height = [(320, 240), (480, 360), (300, 400), (640, 427)][i % 4]
        cells = int(rng.integers(4, 24))
        coarse = rng.integers(0, 256, size=(cells, cells, 3), dtype=np.uint8)
        base = np.asarray(Image.fromarray(coarse, "RGB").resize((width, height), Image.Resampling.BICUBIC))
        noise = rng.normal(0, float(rng.uniform(2, 25)), size=base.shape)
        pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(buf, "JPEG", quality=90)
        images.append(buf.getvalue())
    return images


def calibration_files(folder: Path, limit: int) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in CALIBRATION_SUFFIXES)
    if not files:
        raise ValueError(f"no images (jpg, png, webp, bmp, gif) under calibration folder {folder}")
    return files[:limit]


def calibration_key(folder: Path | None, limit: int) -> str:
    """Names the calibration set in the int8 cache file name: file names, sizes and times, or the generated set."""
    digest = hashlib.sha256(RECIPE.encode())
    if folder is None:
        digest.update(f"generated:{limit}".encode())
    else:
        for path in calibration_files(folder, limit):
            stat = path.stat()
            digest.update(f"{path.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def calibration_arrays(folder: Path | None, limit: int) -> Iterator[np.ndarray]:
    """Each calibration image preprocessed exactly like a request (1, 3, 224, 224); unreadable files skipped."""
    blobs: Iterator[bytes] = (
        iter(generated_calibration_images(limit))
        if folder is None
        else (p.read_bytes() for p in calibration_files(folder, limit))
    )
    for data in blobs:
        try:
            decoded = preprocess.decode(data, max_pixels=100_000_000)
        except Exception as exc:  # a bad calibration file should not stop the service
            log.warning("skipping calibration image: %s", exc)
            continue
        yield preprocess.to_array(decoded.image)[None]


QUANTIZED_OPS = ["Conv", "Relu", "Add", "MaxPool"]
"""The convolutional trunk. The head (average pool, fc, softmax) stays fp32: quantized, its probabilities were
multiples of 1/255 (most of the 1000 exactly 0 or tied, summing to 0.35-1.0) and its features had 85 distinct
values, and it was no faster (0.24 vs 0.29 ms per batch of 4, beside 96-147 ms of convolutions)."""


def quantize(fp32_path: Path, out_path: Path, folder: Path | None, limit: int) -> None:
    """Static QDQ quantization: int8 weights per output channel, uint8 activations (the VNNI path), MinMax ranges."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    arrays = calibration_arrays(folder, limit)

    class Reader(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime ships no type hints
        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(arrays, None)
            return None if batch is None else {"input": batch}

    with tempfile.TemporaryDirectory(prefix="resnet-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        quantize_static(
            str(prepared),
            str(out_path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            op_types_to_quantize=QUANTIZED_OPS,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
