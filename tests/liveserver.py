"""The real server as a user runs it: `python -m resnet_api serve` on a free 127.0.0.1 port, in a subprocess."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

STARTUP_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    base_url: str
    port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def rss_bytes(self) -> int:
        """Resident memory of the server process, from /proc."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("VmRSS not found")

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


def start_server(weights: Path | str, log_path: Path, **settings: object) -> ServerProcess:
    """Start the server with `RESNET_API_<NAME>` settings and wait until /readyz answers 200."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESNET_API_")}
    env.update(
        {
            "RESNET_API_WEIGHTS": str(weights),
            "RESNET_API_ALLOW_DOWNLOAD": "false",
            "RESNET_API_HOST": "127.0.0.1",
            "RESNET_API_PORT": str(port),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(
        {f"RESNET_API_{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v) for k, v in settings.items()}
    )
    log_file = log_path.open("wb")
    # Output goes to a file, never a pipe nobody reads: a full pipe would block the server mid-test.
    process = subprocess.Popen(
        [sys.executable, "-m", "resnet_api", "serve"], env=env, stdout=log_file, stderr=subprocess.STDOUT
    )
    log_file.close()
    server = ServerProcess(process, f"http://127.0.0.1:{port}", port, log_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.base_url}/readyz", timeout=2.0).status_code == 200:
                return server
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"server not ready within {STARTUP_TIMEOUT_S} s:\n{server.log()}")


@contextlib.contextmanager
def running_server(weights: Path | str, log_path: Path, **settings: object) -> Iterator[ServerProcess]:
    """`start_server` as a context manager: the process is stopped (SIGTERM, then kill) on exit."""
    server = start_server(weights, log_path, **settings)
    try:
        yield server
    finally:
        server.stop()
