"""The benchmark's in-process ceiling: the best median over rounds, not the luckiest single measurement."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))  # run.py imports loadgen beside it
_spec = importlib.util.spec_from_file_location("bench_run", BENCH / "run.py")
assert _spec is not None
assert _spec.loader is not None
bench_run = importlib.util.module_from_spec(_spec)
sys.modules["bench_run"] = bench_run  # dataclasses look their module up by name
_spec.loader.exec_module(bench_run)


MACHINE = {
    "cpu": "test CPU",
    "cpu_features": "avx2",
    "cpus_usable": 2,
    "python": "3.11",
    "date": "2026-12-02 00:00 UTC",
    "load_average_at_start": [0.0, 0.0, 0.0],
    "sgemm_gflops_per_core": 60.0,
}
"""A report's machine line, for tests of the report's tables."""


def test_one_lucky_round_does_not_make_the_ceiling() -> None:
    rounds = {
        "4": [30.1, 29.8, 30.4],
        "8": [27.0, 34.0, 27.5],  # the highest single round, by noise
        "8, 2 at once": [31.0, 30.5, 31.2],
    }
    summary = bench_run.best_of_rounds(rounds)
    assert summary["best_batch"] == "8, 2 at once"
    assert summary["ceiling"] == 31.0
    assert summary["spread"] == [30.5, 31.2]
    assert summary["rates"]["8"] == 27.5


def test_report_shows_the_rounds_behind_each_ceiling() -> None:
    rounds = {"1": [20.0, 22.0, 21.0], "4": [25.0, 24.0, 26.5]}
    image = {"rounds": rounds, "single_ms": 41.0, **bench_run.best_of_rounds(rounds)}
    report = {
        "machine": MACHINE,
        "command": "scripts/bench.sh",
        "ceilings": [{"backend": "int8", "precision": "int8", "images": {"451x300": image}}],
        "cells": [
            asdict(bench_run.Cell("resnet-api/int8", "451x300", 1, 20.0, 48.5, 50.0, 52.0, 0, 120.0, 3.2)),
            asdict(bench_run.Cell("resnet-api/int8", "451x300", 8, 40.0, 190.0, 200.0, 210.0, 0, 130.0)),
            asdict(bench_run.Cell("flask", "451x300", 1, 10.0, 90.0, 95.0, 99.0, 0, 300.0)),
        ],
        "servers": {},
    }
    table = bench_run.markdown(report)
    # one client: its p50 against the ceiling run's single image (+7.5 ms), and HTTP's share of the same requests
    assert "| resnet-api/int8 | 451x300 | 41.0 | 48.5 | +7.5 | 3.2 |" in table
    assert table.count("| resnet-api/int8 | 451x300 | 41.0 |") == 1  # not the 8-client cell, nor Flask
    assert "measured in 3 rounds" in table
    assert "| int8 | int8 | 451x300 | 25.0 | 24.0-26.5 | 4 | 41.0 |" in table
    # 60 GFLOP/s per core x 2 cores / 3.64 GFLOP per image: the fp32 speed the machine line states
    assert "60.0 GFLOP/s per core" in table
    assert "runs at about 33 img/s on these 2 CPUs" in table


AVX2_ONLY = "model name\t: AMD EPYC\nflags\t\t: fpu sse avx avx2 fma\n"
SAPPHIRE_RAPIDS = "model name\t: Intel Xeon\nflags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile\n"


def test_openvino_bf16_is_benchmarked_by_default_only_where_the_cpu_has_bf16() -> None:
    assert "openvino-bf16" not in bench_run.default_backends(AVX2_ONLY)
    assert bench_run.default_backends(SAPPHIRE_RAPIDS) == [
        "torch",
        "onnxruntime",
        "openvino",
        "openvino-bf16",
        "int8",
        "int8-openvino",
    ]


def test_openvino_bf16_serves_openvino_at_bf16() -> None:
    env = bench_run.resnet_api_env("openvino-bf16", Path("w.pth"), 8000)
    assert (env["RESNET_API_BACKEND"], env["RESNET_API_OPENVINO_PRECISION"]) == ("openvino", "bf16")
    plain = bench_run.resnet_api_env("openvino", Path("w.pth"), 8000)
    assert plain["RESNET_API_BACKEND"] == "openvino"
    assert plain.get("RESNET_API_OPENVINO_PRECISION") == os.environ.get("RESNET_API_OPENVINO_PRECISION")


def test_int8_openvino_serves_the_int8_file_on_openvino() -> None:
    env = bench_run.resnet_api_env("int8-openvino", Path("w.pth"), 8000)
    assert (env["RESNET_API_BACKEND"], env["RESNET_API_INT8_RUNTIME"]) == ("int8", "openvino")
    assert "RESNET_API_OPENVINO_PRECISION" not in bench_run.backend_settings("int8-openvino")


def test_ceilings_are_named_as_the_bench_runs_them(monkeypatch: pytest.MonkeyPatch) -> None:
    # The service calls both int8 runtimes "int8"; the report must not give two rows that name and mix up their
    # single-image times (the one-client table looks ceilings up by name).
    rounds = {"8": [70.0, 71.0, 72.0]}
    sent = []

    def fake_run(command: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        sent.append(json.loads(command[-1])["settings"])
        image = {"rounds": rounds, "single_ms": 18.0}
        line = {"backend": "int8", "runtime": "openvino", "precision": "int8", "images": {"451x300": image}}
        return subprocess.CompletedProcess(command, 0, stdout=json.dumps(line) + "\n", stderr="")

    monkeypatch.setattr(bench_run.subprocess, "run", fake_run)
    result = bench_run.ceiling(sys.executable, "int8-openvino", Path("w.pth"), {"451x300": Path("a.jpg")}, quick=True)
    assert sent == [{"backend": "int8", "int8_runtime": "openvino"}]
    assert (result["backend"], result["runtime"]) == ("int8-openvino", "openvino")
    assert result["images"]["451x300"]["ceiling"] == 71.0


def test_bench_writes_its_weights_without_importing_torch_itself(tmp_path: Path) -> None:
    """A torch in the bench process keeps libtorch mapped, and the servers it measures then cannot page it out."""
    code = (
        "import importlib.util, sys; from pathlib import Path\n"
        f"sys.path.insert(0, {str(BENCH)!r})\n"
        f"spec = importlib.util.spec_from_file_location('bench_run', {str(BENCH / 'run.py')!r})\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['bench_run'] = m; spec.loader.exec_module(m)\n"
        "path = m.make_weights(Path(sys.argv[1]))\n"
        "print(path.stat().st_size, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    size, torch_loaded = out.stdout.split()
    assert torch_loaded == "False"
    assert int(size) > 40_000_000  # ResNet-18's 11.7 M fp32 parameters
    assert [p.name for p in tmp_path.iterdir()] == ["resnet18-bench-seed0.pth"]  # no partial file left


@pytest.mark.parametrize(("label", "layout"), [("8", (8, 1)), ("4, 2 at once", (4, 2)), ("16, 3 at once", (16, 3))])
def test_a_ceiling_label_gives_back_its_batch_layout(label: str, layout: tuple[int, int]) -> None:
    assert bench_run.batch_layout(label) == layout


def test_paired_rounds_alternate_which_goes_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """ABBA: with the machine slowing down steadily, neither the server nor the ceiling always runs first."""
    steps: list[str] = []
    http_rates = iter([40.0, 44.0, 42.0, 46.0])

    async def fake_load(host: str, port: int, payload: bytes, concurrency: int, *_: object) -> object:
        steps.append(f"http c={concurrency}")
        return SimpleNamespace(throughput=next(http_rates))

    def ceiling_rate(image: str, label: str, seconds: float) -> float:
        steps.append(f"ceiling {image} {label} {seconds:g}s")
        return 50.0

    monkeypatch.setattr(bench_run, "run_load", fake_load)
    (paired,) = bench_run.paired_rounds(
        "resnet-api/torch", 8000, {"451x300": b"jpeg"}, {"451x300": "4, 2 at once"}, ceiling_rate, 4, 3.0, 1.0, 32
    )
    ceiling, http = "ceiling 451x300 4, 2 at once 3s", "http c=32"
    assert steps == [ceiling, http, http, ceiling, ceiling, http, http, ceiling]
    assert paired.server_rates == [40.0, 44.0, 42.0, 46.0]
    assert paired.ratios() == [0.8, 0.88, 0.84, 0.92]


def test_report_shows_each_paired_round_and_the_median_ratio() -> None:
    paired = bench_run.Paired(
        "resnet-api/torch", "451x300", 32, "4, 2 at once", 4.0, [45.0, 47.0, 46.0], [50.0, 50.0, 46.0]
    )
    report = {
        "machine": MACHINE,
        "command": "scripts/bench.sh",
        "ceilings": [],
        "cells": [],
        "servers": {},
        "paired": [asdict(paired) | {"ratios": paired.ratios()}],
    }
    table = bench_run.markdown(report)
    assert "3 rounds of 4 s each" in table
    assert (
        "| resnet-api/torch | 451x300 | 32 | 4, 2 at once | 45.0 / 47.0 / 46.0 | 50.0 / 50.0 / 46.0 | 0.94 (0.90-1.00) |"
        in table
    )
    assert "against the in-process ceiling, in turn" not in bench_run.markdown(report | {"paired": []})


def test_a_ceiling_process_that_dies_is_an_error_not_a_hang(tmp_path: Path) -> None:
    log = tmp_path / "ceiling.log"
    code = "import sys; print('no backend here', file=sys.stderr); sys.exit(3)"
    with (
        pytest.raises(RuntimeError, match="exited with 3"),
        bench_run.ceiling_process(sys.executable, "torch", Path("w.pth"), {}, log, code=code),
    ):
        pass
    assert "no backend here" in log.read_text()
