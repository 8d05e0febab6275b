"""A small closed-loop HTTP/1.1 load generator on asyncio streams (keep-alive, one request in flight per connection).

Hand-written on purpose: it costs far less CPU per request than a full client library, which matters when
the load generator shares two cores with the server it measures.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from statistics import median

REQUEST_TIMEOUT_S = 30.0  # a request still unanswered then counts as an error; the run never hangs


def multipart_request(path: str, host: str, filename: str, content: bytes) -> bytes:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    ).encode()
    return head + body


BURST_S = 0.010
"""Completions closer than this to the window's first one belong to the same batch (one burst of responses)."""


def completion_rate(done: list[float], window: float) -> float:
    """Requests per second from completion times, without the quantisation of counting whole batches.

    A batching server answers in bursts (8 responses, then nothing for one forward pass), so "completions in
    the window / window" moves in steps of one batch per window: 1.3 img/s for batches of 8 in 6 s, 5 % of
    25 img/s. Measuring from the first burst to the last completion and leaving out the first burst's own
    requests counts whole periods only. Falls back to the plain count when the window holds too few bursts.
    """
    if not done or window <= 0:
        return 0.0
    ordered = sorted(done)
    span = ordered[-1] - ordered[0]
    first_burst = sum(1 for t in ordered if t - ordered[0] <= BURST_S)
    if span < window / 2 or first_burst == len(ordered):
        return len(ordered) / window
    return (len(ordered) - first_burst) / span


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)
    completed_at: list[float] = field(default_factory=list)
    server_s: list[float] = field(default_factory=list)
    """With `server_timings`: each measured request's own server-side time (`timings.total_ms`), as `latencies`."""
    errors: int = 0
    elapsed: float = 0.0

    @property
    def throughput(self) -> float:
        return completion_rate(self.completed_at, self.elapsed)

    def overhead_p50(self) -> float:
        """The median of (client time - the server's own time) per request: what serving over HTTP adds.

        Taken request by request, so it does not move with the model's speed, which drifts by 10-30 % between
        measurements taken minutes apart on a shared machine.
        """
        if not self.server_s:
            return float("nan")
        return median(c - s for c, s in zip(self.latencies, self.server_s, strict=True))

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q / 100.0 * len(ordered)))]


async def read_response(reader: asyncio.StreamReader) -> tuple[str, int, dict[str, str], bytes]:
    """Read one whole HTTP/1.1 response: (version, status, headers with lower-case names, body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    version, status = lines[0].split(" ", 2)[:2]
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunks.append((await reader.readexactly(size + 2))[:size])
            if size == 0:
                break
        body = b"".join(chunks)
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return version, int(status), headers, body


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes
) -> tuple[int, bool, bytes]:
    """Send one request, read the whole response; returns (status, connection still usable, body)."""
    writer.write(payload)
    await writer.drain()
    version, status, headers, body = await read_response(reader)
    keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    return status, keep, body


async def run_load(
    host: str,
    port: int,
    payload: bytes,
    concurrency: int,
    duration: float,
    warmup: float,
    server_timings: bool = False,
) -> LoadResult:
    """`concurrency` connections each send requests back to back; only those finishing after `warmup` count.

    With `server_timings`, each answer's JSON `timings.total_ms` (resnet-api's own decode, queue and inference
    time) is kept beside the client's time; only then are bodies parsed, so other cells cost no extra CPU.
    """
    result = LoadResult()
    start = time.perf_counter()
    measure_from = start + warmup
    end = measure_from + duration

    async def worker() -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while time.perf_counter() < end:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            assert reader is not None
            sent = time.perf_counter()
            try:
                status, keep, body = await asyncio.wait_for(_exchange(reader, writer, payload), REQUEST_TIMEOUT_S)
            except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError):
                status, keep, body = 0, False, b""
            done = time.perf_counter()
            if done >= measure_from and done <= end:
                if status == 200:
                    result.latencies.append(done - sent)
                    result.completed_at.append(done)
                    if server_timings:
                        result.server_s.append(json.loads(body)["timings"]["total_ms"] / 1000)
                else:
                    result.errors += 1
            if not keep:
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.elapsed = min(time.perf_counter(), end) - measure_from
    return result
