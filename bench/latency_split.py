"""Where one client's time goes: the wire and HTTP parser, the app, and the service, per request.

Usage: .venv/bin/python bench/latency_split.py [BACKEND] [IMAGE] [REQUESTS]   (default torch 451x300 60)

Starts `python -m resnet_api serve` on 127.0.0.1 with seeded random weights and sends REQUESTS uploads of the
bench photo one after another on one keep-alive connection (after 10 unmeasured ones). For each it takes:
- the client's time, from the first byte sent to the last byte of the answer;
- the app's time, from the access log line (`duration_ms`: the outermost middleware, from the parsed request
  headers to the last byte handed to uvicorn);
- the service's time, from the response's `timings` (decode, queue, inference).
The medians: client - app is the wire and uvicorn's HTTP parsing; app - service is routing, multipart parsing,
dependencies, JSON and the middleware. After the server stops, the same photo runs REQUESTS times through the
backend in this process (decode + preprocess + forward, one after another, as the bench's single-image time),
so the one-client target (p50 within 5 ms of that time) is compared within one sitting.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

from loadgen import multipart_request, read_response
from run import SERVE_COMMAND, backend_settings, free_port, make_images, make_weights, resnet_api_env, serving


async def timed_requests(port: int, payload: bytes, count: int) -> list[tuple[float, str, dict[str, float]]]:
    """(client ms, request id, response timings) per request, after 10 unmeasured ones, on one connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    rows = []
    try:
        for i in range(10 + count):
            started = time.perf_counter()
            writer.write(payload)
            await writer.drain()
            _, _, headers, body = await read_response(reader)
            ms = (time.perf_counter() - started) * 1000
            if i >= 10:
                rows.append((ms, headers["x-request-id"], json.loads(body)["timings"]))
    finally:
        writer.close()
    return rows


def in_process_single_ms(backend: str, weights: Path, data: bytes, count: int) -> float:
    """Median time of decode + preprocess + forward for one image, back to back, after 5 unmeasured ones."""
    from inprocess import decode_and_run, load_backend

    from resnet_api.settings import Settings

    settings = Settings(weights=str(weights), **backend_settings(backend))  # type: ignore[arg-type]
    model = load_backend(settings, weights)

    def step() -> float:
        started = time.perf_counter()
        decode_and_run(model, data, 1, draft=settings.jpeg_draft)
        return (time.perf_counter() - started) * 1000

    for _ in range(5):
        step()
    return median(step() for _ in range(count))


def main() -> None:
    backend = sys.argv[1] if len(sys.argv) > 1 else "torch"
    image = sys.argv[2] if len(sys.argv) > 2 else "451x300"
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 60
    work = Path(tempfile.mkdtemp(prefix="latency-split-"))
    weights, data, port = make_weights(work), make_images()[image], free_port()
    log_path = work / "server.log"
    env = resnet_api_env(backend, weights, port, log_level="info")  # the access log carries each request's duration
    with serving(SERVE_COMMAND, env, port, log_path, timeout=120):
        payload = multipart_request("/v1/predict", f"127.0.0.1:{port}", "photo.jpg", data)
        rows = asyncio.run(timed_requests(port, payload, count))
    app_ms = {}
    for line in log_path.read_text().splitlines():
        if line.startswith("{") and '"duration_ms"' in line:
            record = json.loads(line)
            app_ms[record["request_id"]] = record["duration_ms"]

    client = median([ms for ms, _, _ in rows])
    app = median([app_ms[rid] for _, rid, _ in rows])
    service = median([t["total_ms"] for _, _, t in rows])
    decode = median([t["decode_ms"] for _, _, t in rows])
    queue = median([t["queue_ms"] for _, _, t in rows])
    inference = median([t["inference_ms"] for _, _, t in rows])
    print(
        f"{backend} {image}, medians of {count} requests (ms): client {client:.1f} = wire and HTTP parser "
        f"{client - app:.1f} + app {app - service:.1f} + service {service:.1f} "
        f"(decode {decode:.1f}, queue {queue:.1f}, inference {inference:.1f})"
    )
    single = in_process_single_ms(backend, weights, data, count)
    print(f"in-process single image, right after: {single:.1f} ms; client p50 - that: {client - single:+.1f} ms")


if __name__ == "__main__":
    main()
