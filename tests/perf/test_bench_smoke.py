"""`bench/run.py --quick` runs end to end: ceilings, resnet-api and the Flask baseline over loopback, the report."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_bench_script(*args: str, timeout: float, env: dict[str, str] | None = None) -> str:
    """Run `bench/<args[0]>` with the rest as its arguments; its stdout, once it exited with 0."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.slow
def test_quick_bench_writes_table_and_chart(tmp_path: Path) -> None:
    for module in ("flask", "matplotlib", "onnxruntime"):
        pytest.importorskip(module, reason="install the accel and bench extras")
    run_bench_script("run.py", "--quick", "--out", str(tmp_path), timeout=300)
    report = json.loads((tmp_path / "results.json").read_text())
    servers = {c["server"] for c in report["cells"]}
    assert servers == {"resnet-api/onnxruntime", "flask"}
    assert all(c["throughput"] > 0 and c["errors"] == 0 for c in report["cells"]), report["cells"]
    assert report["servers"]["resnet-api/onnxruntime"]["torch_loaded"] is False
    assert 0 < report["servers"]["resnet-api/onnxruntime"]["rss_idle_mb"] < 2000
    assert report["machine"]["cpu_features"]  # the same CPU model name can mean AVX2 or AVX-512 + VNNI
    assert report["machine"]["sgemm_gflops_per_core"] > 1
    assert report["ceilings"][0]["images"]["451x300"]["ceiling"] > 0
    table = (tmp_path / "results.md").read_text()
    assert "| resnet-api/onnxruntime | 451x300 | 8 |" in table
    # one client: HTTP's share of each request, from the answers' own server-side time, is part of the p50
    for cell in report["cells"]:
        timed = cell["concurrency"] == 1 and cell["server"] != "flask"
        assert (cell["overhead_p50_ms"] is not None) == timed, cell
        if timed:
            assert 0 < cell["overhead_p50_ms"] < cell["p50_ms"], cell
    assert "added by HTTP, same requests ms" in table
    assert "| flask | 3000x2000 | 1 |" in table
    assert "RSS idle after load MB" in table
    # the server and its ceiling measured in turn (the ratio's own measurement), two rounds per image
    assert [(p["server"], p["image"]) for p in report["paired"]] == [
        ("resnet-api/onnxruntime", "451x300"),
        ("resnet-api/onnxruntime", "3000x2000"),
    ]
    for paired in report["paired"]:
        ceiling = next(c for c in report["ceilings"] if c["backend"] == "onnxruntime")["images"][paired["image"]]
        assert paired["configuration"] == ceiling["best_batch"]
        assert len(paired["server_rates"]) == len(paired["ceiling_rates"]) == len(paired["ratios"]) == 2
        assert all(rate > 0 for rate in paired["server_rates"] + paired["ceiling_rates"]), paired
    assert "| resnet-api/onnxruntime | 3000x2000 | 8 |" in table.split("in turn**")[1]
    chart = (tmp_path / "chart.png").read_bytes()
    assert chart.startswith(b"\x89PNG")
    assert len(chart) < 200_000


@pytest.mark.slow
def test_latency_split_accounts_for_the_client_time() -> None:
    stdout = run_bench_script("latency_split.py", "torch", "451x300", "5", timeout=180)
    parts = re.search(
        r"client ([\d.]+) = wire and HTTP parser (-?[\d.]+) \+ app (-?[\d.]+) \+ service ([\d.]+)", stdout
    )
    assert parts is not None, stdout
    client, wire, app, service = map(float, parts.groups())
    assert abs(client - (wire + app + service)) < 0.25  # the three parts add up (each rounded to 0.1 ms)
    assert app > 0  # the access log's durations were found and matched to the requests
    single = re.search(r"in-process single image, right after: ([\d.]+) ms; client p50 - that: ([-+][\d.]+) ms", stdout)
    assert single is not None, stdout
    assert float(single.group(1)) > 0
    assert abs(client - float(single.group(1)) - float(single.group(2))) < 0.15
    assert service > 0


@pytest.mark.slow
def test_idle_faults_reports_both_request_patterns() -> None:
    env = {**os.environ, "RESNET_API_IDLE_RELEASE_S": "0.2"}  # quiet spells of 0.6 s pass the idle trim
    stdout = run_bench_script("idle_faults.py", "torch", "0.6", "3", timeout=180, env=env)
    rows = re.findall(r"torch, (.+?): page faults per request median (\d+) \(each: ([\d ]+)\)", stdout)
    assert [label for label, _, _ in rows] == ["0.6 s apart", "back to back"], stdout
    assert all(len(each.split()) == 3 for _, _, each in rows)
