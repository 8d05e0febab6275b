"""A real server in a subprocess on a free loopback port, shared by the interop tests of a session."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def interop_server(weights_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of `python -m resnet_api serve` on untrained test weights; stopped at the end of the session."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("interop-server") / "server.log"
    env = {
        **os.environ,
        "RESNET_API_WEIGHTS": str(weights_file),
        "RESNET_API_ALLOW_DOWNLOAD": "false",
        "RESNET_API_HOST": "127.0.0.1",
        "RESNET_API_PORT": str(port),
        "RESNET_API_MAX_BATCH_SIZE": "8",
        "RESNET_API_MAX_BATCH_WAIT_MS": "5",
        "RESNET_API_MAX_UPLOAD_BYTES": str(256 * 1024),
        "RESNET_API_TORCH_THREADS": "2",
        "RESNET_API_LOG_LEVEL": "warning",
    }
    base_url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "resnet_api", "serve"], env=env, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 90
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
                try:
                    if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"server not ready after 90 s:\n{log_path.read_text()}")
                time.sleep(0.2)
            yield base_url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
