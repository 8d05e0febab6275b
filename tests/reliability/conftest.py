"""Fixtures that run the real server process (`python -m resnet_api serve`) on a free 127.0.0.1 port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

STARTUP_TIMEOUT_S = 90.0
SHARED_MAX_REQUEST_BYTES = 2 * 1024 * 1024
SHARED_BODY_TIMEOUT_S = 2.0


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


def start_server(weights: Path, log_path: Path, **settings: object) -> ServerProcess:
    """Start the server with `RESNET_API_<NAME>` settings and wait until /readyz answers 200."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESNET_API_")}
    env.update(
        {
            "RESNET_API_WEIGHTS": str(weights),
            "RESNET_API_ALLOW_DOWNLOAD": "false",
            "RESNET_API_HOST": "127.0.0.1",
            "RESNET_API_PORT": str(port),
            "RESNET_API_TORCH_THREADS": "1",
            "RESNET_API_DECODE_WORKERS": "2",
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


ServerFactory = Callable[..., ServerProcess]


@pytest.fixture
def server_factory(weights_file: Path, tmp_path: Path) -> Iterator[ServerFactory]:
    """Start servers with given settings; every one is terminated when the test ends."""
    started: list[ServerProcess] = []

    def start(**settings: object) -> ServerProcess:
        server = start_server(weights_file, tmp_path / f"server-{len(started)}.log", **settings)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def shared_server(weights_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One default-settings server for the tests that only read from it (schema fuzzing, soak, logs)."""
    server = start_server(
        weights_file,
        tmp_path_factory.mktemp("server") / "shared.log",
        max_batch_size=8,
        max_request_bytes=SHARED_MAX_REQUEST_BYTES,
        body_timeout_seconds=SHARED_BODY_TIMEOUT_S,
    )
    yield server
    server.stop()
