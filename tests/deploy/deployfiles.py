"""Paths and loaders shared by the deployment checks."""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from pathlib import Path, PurePosixPath
from types import ModuleType

from resnet_api.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PREFIX = str(Settings.model_config.get("env_prefix", "")).upper()


def load_module(path: Path) -> ModuleType:
    """Import a script that is not part of the package (scripts/*.py, deploy/docker/*.py)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tool(name: str) -> str:
    """A command-line tool installed by a test dependency, beside this Python first."""
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if beside_python.exists() else shutil.which(name)
    assert found, f"{name} is missing: `scripts/setup.sh test` installs it"
    return found


def setting_env_names() -> set[str]:
    return {f"{PREFIX}{name.upper()}" for name in Settings.model_fields}


def _docker_pattern(pattern: str) -> re.Pattern[str]:
    regex, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] == "*":
            regex, i = regex + "[^/]*", i + 1
        elif pattern[i] == "?":
            regex, i = regex + "[^/]", i + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return re.compile(regex)


def dockerignored(path: str, lines: list[str]) -> bool:
    """Whether Docker leaves `path` out of the build context (its rules: the last matching pattern wins,
    and a pattern matching a parent directory matches everything below it)."""
    rules = []
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        cleaned = str(PurePosixPath(line.lstrip("!").strip("/")))
        rules.append((negated, _docker_pattern(cleaned)))
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for negated, rule in rules:
        if any(rule.fullmatch(candidate) for candidate in candidates):
            ignored = not negated
    return ignored
