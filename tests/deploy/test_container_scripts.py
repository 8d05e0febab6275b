"""The image's entrypoint and health-check scripts, run for real on this machine."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from deployfiles import PREFIX, ROOT

from liveserver import free_port
from resnet_api import __version__
from resnet_api.inference.model import IMAGENET_WEIGHTS_FILE
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
    keys: list[str | None] = []  # noqa: RUF012 - as above

    def do_GET(self) -> None:
        type(self).seen.append(self.path)
        type(self).keys.append(self.headers.get("X-API-Key"))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def probe_server() -> Iterator[tuple[int, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {"status": 200, "seen": [], "keys": []})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def run_healthcheck(port: int, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK)],
        env={**os.environ, "RESNET_API_PORT": str(port), **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_healthcheck_passes_on_200_from_readyz(probe_server: tuple[int, type[_Handler]]) -> None:
    port, handler = probe_server
    assert run_healthcheck(port).returncode == 0
    assert handler.seen == ["/readyz"]


def test_healthcheck_sends_a_key_only_when_the_probes_need_one(
    probe_server: tuple[int, type[_Handler]], tmp_path: Path
) -> None:
    """With RESNET_API_PROTECT_PROBES the container never turned healthy: /readyz answered 401 to the check."""
    port, handler = probe_server
    keys = tmp_path / "keys"
    keys.write_text("# from the secret\nkey-from-file-0123456789\n")
    assert run_healthcheck(port, RESNET_API_API_KEYS_FILE=str(keys)).returncode == 0
    assert run_healthcheck(port, RESNET_API_API_KEYS_FILE=str(keys), RESNET_API_PROTECT_PROBES="true").returncode == 0
    # read as the server reads it: pydantic's "f" and "n" are off too (a hand-written list had missed them)
    assert run_healthcheck(port, RESNET_API_API_KEYS_FILE=str(keys), RESNET_API_PROTECT_PROBES="f").returncode == 0
    assert handler.keys == [None, "key-from-file-0123456789", None]


def test_healthcheck_fails_on_an_error_status(probe_server: tuple[int, type[_Handler]]) -> None:
    port, handler = probe_server
    handler.status = 503
    result = run_healthcheck(port)
    assert result.returncode == 1
    assert "unhealthy" in result.stderr


def test_healthcheck_fails_when_nothing_listens() -> None:
    assert run_healthcheck(free_port()).returncode == 1


def test_image_command_serves_offline_and_stops_on_sigterm(
    tmp_path: Path, weights_file: Path, image_env: dict[str, str], final_stage: list[Any]
) -> None:
    """The container's start, short of Docker: the image's ENV, entrypoint and CMD, with a weights dir laid
    out like the baked one (untrained weights under the official file name) and downloads off."""
    baked = tmp_path / "weights"
    baked.mkdir()
    shutil.copy(weights_file, baked / IMAGENET_WEIGHTS_FILE)
    port = free_port()
    (cmd,) = [c.value for c in final_stage if c.cmd == "CMD"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX) and k != "OMP_NUM_THREADS"}
    env.update(image_env)
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin",
        RESNET_API_WEIGHTS_DIR=str(baked),
        RESNET_API_HOST="127.0.0.1",  # traffic stays on loopback here
        RESNET_API_PORT=str(port),
        RESNET_API_TORCH_THREADS="1",
        RESNET_API_DECODE_WORKERS="1",
    )
    assert env["RESNET_API_WEIGHTS"] == "imagenet"
    assert env["RESNET_API_ALLOW_DOWNLOAD"] == "false"
    server = subprocess.Popen(
        ["sh", str(ENTRYPOINT), *cmd], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 90
        while run_healthcheck(port).returncode != 0:
            assert server.poll() is None, server.communicate()[0]
            assert time.monotonic() < deadline, "the server did not come up within 90 s"
            time.sleep(0.5)
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/readyz", timeout=10) as response:
            assert response.status == 200
        with urllib.request.urlopen(f"{base}/v1/model", timeout=10) as response:
            model = json.load(response)
        assert model["untrained"] is False, "loaded from the weights dir, as in the image"
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught (exit status 128 + 15 in Docker).
        assert server.wait(timeout=45) in (0, -signal.SIGTERM)
        assert time.monotonic() - started < 10, "an idle server stops at once"
    finally:
        if server.poll() is None:
            server.kill()
        output = server.communicate()[0]
    assert "Traceback" not in output, output
    assert "Application shutdown complete" in output, output
