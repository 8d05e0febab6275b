"""Schemathesis fuzzes the running server through its own OpenAPI schema, with all of its checks.

It runs as its CLI (`st run`) in a subprocess: Schemathesis' pytest plugin (`from_fixture`) fails on pytest 9.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from reliability.conftest import ServerProcess

MAX_EXAMPLES = 50  # per operation and phase; bounded so the run stays well under a minute
CONFIG = Path(__file__).with_name("schemathesis.toml")
OPENAPI = Path(__file__).parents[2] / "openapi.json"


def test_api_conforms_to_its_schema(shared_server: ServerProcess) -> None:
    st = Path(sys.executable).with_name("st")
    command = [
        str(st),
        "--config-file",
        str(CONFIG),
        "run",
        f"{shared_server.base_url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--generation-deterministic",
        "--request-timeout",
        "60",
        "--no-color",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    operations = sum(len(methods) for methods in json.loads(OPENAPI.read_text())["paths"].values())
    tested = re.search(r"Tested: (\d+)", output)
    assert tested is not None, output[-4000:]
    assert int(tested.group(1)) == operations
    assert "failure" not in output.split("SUMMARY")[-1].lower(), output[-4000:]
    assert shared_server.process.poll() is None, "the server died under fuzzing"
