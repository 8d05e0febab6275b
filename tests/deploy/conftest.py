"""Fixtures for the deployment checks: the files as parsed, and what the application itself says."""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import dockerfile
import pytest
import yaml
from deployfiles import PREFIX, ROOT, load_module

from resnet_api.app import create_app
from resnet_api.settings import Settings


@pytest.fixture(scope="session")
def gen() -> ModuleType:
    """scripts/gen_compose_env.py, which also parses the Dockerfile for the tests."""
    return load_module(ROOT / "scripts" / "gen_compose_env.py")


@pytest.fixture(scope="session")
def final_stage(gen: ModuleType) -> list[dockerfile.Command]:
    stage: list[dockerfile.Command] = gen.dockerfile_final_stage(ROOT / "Dockerfile")
    return stage


@pytest.fixture(scope="session")
def image_env(gen: ModuleType) -> dict[str, str]:
    env: dict[str, str] = gen.dockerfile_env(ROOT / "Dockerfile")
    return env


@pytest.fixture(scope="session")
def compose_text() -> str:
    return (ROOT / "docker-compose.yml").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def compose(compose_text: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(compose_text)
    return data


@pytest.fixture(scope="session")
def routes() -> set[str]:
    """Paths the application serves, from its own OpenAPI schema (building the app loads no model)."""
    app = create_app(Settings(weights="random", warmup=False))
    return set(app.openapi()["paths"])


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No RESNET_API_* variable of the developer's shell leaks into Settings()."""
    for name in list(os.environ):
        if name.startswith(PREFIX):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture
def image_settings(clean_env: pytest.MonkeyPatch, image_env: dict[str, str]) -> Settings:
    """Settings as the container builds them from the image's ENV."""
    for name, value in image_env.items():
        clean_env.setenv(name, value)
    return Settings()


@pytest.fixture
def serve_call(clean_env: pytest.MonkeyPatch, image_env: dict[str, str]) -> dict[str, Any]:
    """Keyword arguments `resnet-api serve` passes to uvicorn (through `resnet_api.server.serve`) in the container."""
    from resnet_api import cli, server

    for name, value in image_env.items():
        clean_env.setenv(name, value)
    captured: dict[str, Any] = {}

    def fake_serve(app: object, **kwargs: Any) -> bool:
        captured.update(kwargs, app=app)
        return True

    clean_env.setattr(server, "serve", fake_serve)
    clean_env.setattr(cli, "_setup_logging", lambda level: None)
    assert cli.main(["serve"]) == 0
    return captured
