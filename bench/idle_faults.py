"""What a request after a quiet spell costs: page faults and time, against the same request back to back.

Usage: .venv/bin/python bench/idle_faults.py [BACKEND] [GAP_S] [REQUESTS]   (default torch 3 6)

Starts `python -m resnet_api serve` on 127.0.0.1 with seeded random weights and the server's own settings
(extra RESNET_API_* variables in the environment pass through, e.g. RESNET_API_IDLE_RELEASE_S=0), sends three
unmeasured uploads of the 451x300 bench photo, then REQUESTS uploads GAP_S seconds apart and REQUESTS back to
back, each on a new connection. For each it reads the server's minor page faults (`/proc/<pid>/stat`) before
and after, and the client's time. With RESNET_API_RELEASE_MEMORY on, the server returns freed memory after
RESNET_API_IDLE_RELEASE_S (2 s) without images; what a later request faults back in is what this shows.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

from loadgen import multipart_request, read_response
from run import SERVE_COMMAND, free_port, make_images, make_weights, resnet_api_env, serving


def minor_faults(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


async def one_request(port: int, payload: bytes, pid: int) -> tuple[int, float]:
    """(server page faults, client ms) of one upload on a fresh connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        faults, started = minor_faults(pid), time.perf_counter()
        writer.write(payload)
        await writer.drain()
        _, status, _, _ = await read_response(reader)
        elapsed = (time.perf_counter() - started) * 1000
        if status != 200:
            raise RuntimeError(f"the server answered {status}")
        return minor_faults(pid) - faults, elapsed
    finally:
        writer.close()


async def measure(port: int, payload: bytes, pid: int, gap: float, count: int) -> dict[str, list[tuple[int, float]]]:
    for _ in range(3):
        await one_request(port, payload, pid)
    after_gap = []
    for _ in range(count):
        await asyncio.sleep(gap)
        after_gap.append(await one_request(port, payload, pid))
    back_to_back = [await one_request(port, payload, pid) for _ in range(count)]
    return {f"{gap:g} s apart": after_gap, "back to back": back_to_back}


def main() -> None:
    backend = sys.argv[1] if len(sys.argv) > 1 else "torch"
    gap = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 6
    work = Path(tempfile.mkdtemp(prefix="idle-faults-"))
    weights, port = make_weights(work), free_port()
    env = resnet_api_env(backend, weights, port)
    with serving(SERVE_COMMAND, env, port, work / "server.log", timeout=120) as server:
        payload = multipart_request("/v1/predict", f"127.0.0.1:{port}", "photo.jpg", make_images()["451x300"])
        rows = asyncio.run(measure(port, payload, server.pid, gap, count))
    for label, samples in rows.items():
        faults = [f for f, _ in samples]
        print(
            f"{backend}, {label}: page faults per request median {median(faults):.0f} (each: "
            f"{' '.join(map(str, faults))}), client ms median {median(ms for _, ms in samples):.1f}"
        )


if __name__ == "__main__":
    main()
