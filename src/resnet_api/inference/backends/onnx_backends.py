"""ONNX Runtime (fp32 or int8 graphs) and OpenVINO, both from the exported ONNX file; no torch here."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np

OpenVinoPrecision = Literal["fp32", "bf16"]


class OnnxRuntimeBackend:
    runtime = "onnxruntime"
    warm_every_batch_size = False

    def __init__(self, path: Path, *, threads: int, name: str = "onnxruntime", precision: str = "fp32") -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.enable_cpu_mem_arena = False
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No busy-waiting between batches: the decode threads need those cores, and idle CPU stays at zero.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.name = name
        self.precision = precision

    def run(self, batch: np.ndarray, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        features, probabilities = self._session.run(
            ["features", "probabilities"], {"input": np.ascontiguousarray(batch)}
        )
        return np.asarray(features), np.asarray(probabilities)


class OpenVinoBackend:
    runtime = "openvino"
    warm_every_batch_size = False

    def __init__(
        self, path: Path, *, threads: int, precision: OpenVinoPrecision, name: str = "openvino", quantized: bool = False
    ) -> None:
        """`quantized`: `path` is the int8 QDQ graph, whose convolutions OpenVINO runs in u8/i8 itself (its
        precision hint then covers only the layers left in floating point)."""
        import openvino as ov

        core = ov.Core()
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
        }
        self._compiled = core.compile_model(str(path), "CPU", config)
        self._request = self._compiled.create_infer_request()
        # What the CPU plugin really runs (bf16 falls back to f32 on CPUs without bf16 support).
        actual = str(self._compiled.get_property("INFERENCE_PRECISION_HINT")).lower()
        self.name = name
        self.precision = "int8" if quantized else "bf16" if "bf" in actual else "fp32"  # "<Type: 'bfloat16'>"

    def run(self, batch: np.ndarray, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        result = self._request.infer({0: np.ascontiguousarray(batch)})
        return np.array(result[0]), np.array(result[1])
