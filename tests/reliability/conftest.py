"""Fixtures that run the real server process (`python -m resnet_api serve`) on a free 127.0.0.1 port."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from liveserver import ServerProcess, start_server

SHARED_MAX_REQUEST_BYTES = 2 * 1024 * 1024
SHARED_BODY_TIMEOUT_S = 2.0
# One torch thread per server leaves a core for the load generator in the same test.
SMALL_MACHINE = {"torch_threads": 1, "decode_workers": 2}


ServerFactory = Callable[..., ServerProcess]


@pytest.fixture
def server_factory(weights_file: Path, tmp_path: Path) -> Iterator[ServerFactory]:
    """Start servers with given settings; every one is terminated when the test ends."""
    started: list[ServerProcess] = []

    def start(**settings: object) -> ServerProcess:
        server = start_server(weights_file, tmp_path / f"server-{len(started)}.log", **{**SMALL_MACHINE, **settings})
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
        **SMALL_MACHINE,
        max_batch_size=8,
        max_request_bytes=SHARED_MAX_REQUEST_BYTES,
        body_timeout_seconds=SHARED_BODY_TIMEOUT_S,
    )
    yield server
    server.stop()
