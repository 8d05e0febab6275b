"""A real server in a subprocess on a free loopback port, shared by the interop tests of a session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from liveserver import running_server


@pytest.fixture(scope="session")
def interop_server(weights_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of `python -m resnet_api serve` on untrained test weights; stopped at the end of the session."""
    log_path = tmp_path_factory.mktemp("interop-server") / "server.log"
    with running_server(
        weights_file,
        log_path,
        max_batch_size=8,
        max_batch_wait_ms=5,
        max_upload_bytes=256 * 1024,
        torch_threads=2,
        log_level="warning",
    ) as server:
        yield server.base_url
