"""Latency of one 640x480 JPEG through each interop path, sequential requests to a running server.

Usage: .venv/bin/python scripts/interop_latency.py http://127.0.0.1:8000 [REQUESTS]
(needs the test extra: tritonclient[http]).
"""

from __future__ import annotations

import base64
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import tritonclient.http as triton

sys.path.insert(0, "tests")
from imagegen import photo_like
from resnet_api.inference.preprocess import decode, to_array

url = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 20
img = photo_like(640, 480, seed=7)
tensor = to_array(decode(img, max_pixels=10**8).image)[None]
http = httpx.Client(base_url=url, timeout=60)
tc = triton.InferenceServerClient(url.split("//")[1])


def timeit(name: str, fn: Callable[[], Any]) -> None:
    fn()  # warm
    xs = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        xs.append((time.perf_counter() - t) * 1000)
    print(f"{name:<40} median {statistics.median(xs):7.1f} ms  p90 {sorted(xs)[int(n * 0.9) - 1]:7.1f} ms")


timeit("/v1/predict multipart", lambda: http.post("/v1/predict", files={"file": ("a.jpg", img)}).raise_for_status())
timeit(
    "/v1/predict JSON base64",
    lambda: http.post("/v1/predict", json={"image": base64.b64encode(img).decode()}).raise_for_status(),
)
b = triton.InferInput("image", [1], "BYTES").set_data_from_numpy(np.array([img], dtype=np.object_))
timeit("/v2 infer BYTES (binary, tritonclient)", lambda: tc.infer("resnet18", [b]))
fb = triton.InferInput("tensor", [1, 3, 224, 224], "FP32").set_data_from_numpy(tensor, binary_data=True)
timeit("/v2 infer FP32 binary (tritonclient)", lambda: tc.infer("resnet18", [fb]))
fj = triton.InferInput("tensor", [1, 3, 224, 224], "FP32").set_data_from_numpy(tensor, binary_data=False)
out = [triton.InferRequestedOutput("probabilities", binary_data=False)]
timeit("/v2 infer FP32 JSON (tritonclient)", lambda: tc.infer("resnet18", [fj], outputs=out))
