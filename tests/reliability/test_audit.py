"""The supply-chain audit: what fails CI and what is only reported."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch

SCRIPT = Path(__file__).parents[2] / "scripts" / "audit.py"


def _audit() -> ModuleType:
    spec = importlib.util.spec_from_file_location("audit_script", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fixable_vulnerability_fails() -> None:
    report = {
        "dependencies": [
            {"name": "jinja2", "version": "3.1.0", "vulns": [{"id": "GHSA-x", "fix_versions": ["3.1.3"]}]},
            {"name": "fastapi", "version": "0.165.0", "vulns": []},
        ]
    }
    code, lines = _audit().verdict(report)
    assert code == 1
    assert any("VULNERABLE: jinja2 3.1.0 GHSA-x: fixed in 3.1.3" in line for line in lines)


def test_vulnerability_without_fix_is_reported_but_passes() -> None:
    report = {"dependencies": [{"name": "a", "version": "1", "vulns": [{"id": "PYSEC-1", "fix_versions": []}]}]}
    code, lines = _audit().verdict(report)
    assert code == 0
    assert any("no fix yet" in line for line in lines)


def test_unreachable_database_is_reported_not_silently_passed() -> None:
    report = {"dependencies": [{"name": "a", "version": "1", "skip_reason": "Dependency not found on PyPI"}]}
    audit = _audit()
    code, lines = audit.verdict(report)
    assert code == 0
    assert "AUDIT NOT PERFORMED" in lines[-1]
    assert audit.verdict(report, strict=True)[0] == 1


def test_every_dependency_is_pinned_exactly() -> None:
    root = Path(__file__).parents[2]
    pins = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (root / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    }
    for line in (root / "constraints.txt").read_text().splitlines():
        assert not line or line.startswith("#") or "==" in line, line
    from importlib.metadata import requires

    for requirement in requires("resnet-api") or []:
        name = requirement.split(";")[0].split("[")[0]
        for sep in "<>=!~ ":
            name = name.split(sep)[0]
        assert name.lower().replace("_", "-") in pins, f"{name} is not pinned in constraints.txt"


def test_weights_are_loaded_with_weights_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A checkpoint that would run code when unpickled is refused, not executed."""
    from resnet_api.inference.errors import WeightsUnavailable
    from resnet_api.inference.model import load_state_dict_file

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": Evil()}, path)
    with pytest.raises(WeightsUnavailable, match="cannot load weights"):
        load_state_dict_file(path)
    assert "pwned" not in capsys.readouterr().out
