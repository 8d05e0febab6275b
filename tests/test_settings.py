"""Settings: bounded, read from RESNET_API_*, and mirrored by the README table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from resnet_api.settings import Settings, available_cpus

README = Path(__file__).parents[1] / "README.md"


def test_environment_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESNET_API_MAX_BATCH_SIZE", "4")
    monkeypatch.setenv("RESNET_API_WEIGHTS", "random")
    settings = Settings()
    assert settings.max_batch_size == 4
    assert settings.weights == "random"


def test_an_empty_variable_means_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATA_DIR", "WEIGHTS_DIR", "API_KEYS_FILE", "MODEL_CACHE_DIR", "PORT", "CORS_ORIGINS"):
        monkeypatch.setenv(f"RESNET_API_{name}", "")
    settings = Settings()
    assert (settings.data_dir, settings.weights_dir, settings.api_keys_file, settings.model_cache_dir) == (None,) * 4
    assert (settings.port, settings.cors_origins) == (8000, ())  # was Path("."), the working directory


def test_defaults_are_strict_and_sane() -> None:
    settings = Settings()
    assert settings.weights == "imagenet"
    assert settings.fallback_to_random is False
    assert settings.torch_threads == available_cpus()
    assert settings.max_upload_bytes == 20 * 1024 * 1024
    assert settings.max_batch_files == 32


@pytest.mark.parametrize(("field", "value"), [("max_batch_size", 0), ("port", 70000), ("max_batch_wait_ms", -1)])
def test_out_of_bounds_values_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        Settings(**{field: value})


def test_available_cpus_respects_affinity() -> None:
    import os

    assert 1 <= available_cpus() <= len(os.sched_getaffinity(0))


def documented_default(name: str) -> str:
    field = Settings.model_fields[name]
    if field.default_factory is not None:
        return "CPUs this process may use"
    value = field.default
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def test_readme_settings_table_mirrors_the_settings_class() -> None:
    rows = re.findall(r"^\| `(RESNET_API_[A-Z0-9_]+)` \| (.+?) \| (.+?) \|$", README.read_text(), flags=re.MULTILINE)
    documented = {name: (default, text) for name, default, text in rows}
    expected = {f"RESNET_API_{name.upper()}": field for name, field in Settings.model_fields.items()}
    assert set(documented) == set(expected), "README settings table and Settings differ"
    for env, field in expected.items():
        assert field.description, f"{env} has no docstring"
        assert documented[env][1].strip() == field.description.strip(), (
            f"README text for {env} differs from its docstring"
        )
        name = env.removeprefix("RESNET_API_").lower()
        assert documented[env][0] == documented_default(name), f"README default for {env} differs from the code"
