from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import torch
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from resnet_api.app import create_app
from resnet_api.inference.model import random_weights
from resnet_api.settings import Settings


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seeded untrained weights saved to a file, so tests go through the real path loader."""
    path = tmp_path_factory.mktemp("weights") / "resnet18-test.pth"
    torch.save(random_weights(seed=1234).state_dict, path)
    return path


@pytest.fixture
def settings(weights_file: Path) -> Settings:
    return Settings(
        weights=str(weights_file),
        max_batch_size=8,
        max_batch_wait_ms=5.0,
        allow_download=False,
        release_memory=False,  # paging out torch's code after every test app's start would only slow the suite
    )


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with LifespanManager(application, startup_timeout=60, shutdown_timeout=60) as manager:
        yield manager.app  # type: ignore[misc]


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        yield c
