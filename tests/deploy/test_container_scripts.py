"""The image's entrypoint and health-check scripts, run for real on this machine."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from deployfiles import ROOT

from resnet_api import __version__
from resnet_api.settings import available_cpus

ENTRYPOINT = ROOT / "deploy" / "docker" / "entrypoint.sh"
HEALTHCHECK = ROOT / "deploy" / "docker" / "healthcheck.py"


def run_entrypoint(path: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args],
        env={**clean, "PATH": path, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def stub_bin(tmp_path: Path) -> str:
    """A PATH whose `resnet-api` prints what it was started with; python is the real one."""
    stub = tmp_path / "resnet-api"
    stub.write_text('#!/bin/sh\necho "OMP_NUM_THREADS=$OMP_NUM_THREADS args=$*"\n')
    stub.chmod(0o755)
    return f"{tmp_path}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin"


def test_entrypoint_is_executable() -> None:
    assert os.access(ENTRYPOINT, os.X_OK), "git must keep the exec bit: the image runs it directly"


def test_entrypoint_sizes_openmp_like_torch_and_passes_arguments(stub_bin: str) -> None:
    result = run_entrypoint(stub_bin, "serve", "--port", "9000")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"OMP_NUM_THREADS={available_cpus()} args=serve --port 9000"


def test_entrypoint_keeps_an_explicit_openmp_setting(stub_bin: str) -> None:
    result = run_entrypoint(stub_bin, "serve", OMP_NUM_THREADS="3")
    assert result.stdout.strip() == "OMP_NUM_THREADS=3 args=serve"


def test_entrypoint_runs_the_real_cli() -> None:
    result = run_entrypoint(f"{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin", "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"resnet-api {__version__}"


class _Handler(BaseHTTPRequestHandler):
    status = 200
    seen: list[str] = []  # noqa: RUF012 - one server per test, reset by the fixture

    def do_GET(self) -> None:
        type(self).seen.append(self.path)
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def probe_server() -> Iterator[tuple[int, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {"status": 200, "seen": []})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def run_healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK)],
        env={**os.environ, "RESNET_API_PORT": str(port)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_healthcheck_passes_on_200_from_livez(probe_server: tuple[int, type[_Handler]]) -> None:
    port, handler = probe_server
    assert run_healthcheck(port).returncode == 0
    assert handler.seen == ["/livez"]


def test_healthcheck_fails_on_an_error_status(probe_server: tuple[int, type[_Handler]]) -> None:
    port, handler = probe_server
    handler.status = 503
    result = run_healthcheck(port)
    assert result.returncode == 1
    assert "unhealthy" in result.stderr


def test_healthcheck_fails_when_nothing_listens() -> None:
    with socket.socket() as s:  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    assert run_healthcheck(free).returncode == 1
