"""The benchmark: in-process ceilings, then resnet-api per backend and a Flask baseline over loopback HTTP.

    scripts/bench.sh                 # the full run, about 8 minutes; writes bench/results/
    scripts/bench.sh --quick         # a smoke run, under a minute
    scripts/bench.sh --backends torch,int8 --duration 5

After a backend's cells (by default only `torch`'s, --paired), its server and its in-process ceiling are measured
in turn, round after round, for a ratio that the machine's drift in speed does not move.

Everything runs on 127.0.0.1; every phase is bounded in time. Weights are seeded random ones unless
--weights names a file (speed does not depend on the values). Results: results.md (the table),
results.json (raw numbers) and chart.png (throughput and p99 per server and concurrency).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from loadgen import multipart_request, run_load  # noqa: E402

BACKENDS = ("torch", "onnxruntime", "openvino", "openvino-bf16", "int8", "int8-openvino")
"""`openvino-bf16` is `openvino` with RESNET_API_OPENVINO_PRECISION=bf16 (the issue's OpenVINO figure ran bf16);
`int8-openvino` is `int8` with RESNET_API_INT8_RUNTIME=openvino (the same int8 file, run by OpenVINO)."""
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
VARIANTS = {"openvino": "openvino_precision", "int8": "int8_runtime"}
"""What the part after the dash sets, by backend."""


def backend_settings(name: str) -> dict[str, str]:
    """The settings that make a bench backend name: `openvino-bf16` and `int8-openvino` are two of them."""
    backend, _, variant = name.partition("-")
    return {"backend": backend, **({VARIANTS[backend]: variant} if variant else {})}


def cpu_flags(cpuinfo: str) -> set[str]:
    """The first CPU's flags in /proc/cpuinfo text."""
    return set(next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), []))


def default_backends(cpuinfo: str) -> list[str]:
    """Every backend, but `openvino-bf16` only where the CPU has bf16: elsewhere OpenVINO runs it as fp32 again."""
    return [b for b in BACKENDS if b != "openvino-bf16" or cpu_flags(cpuinfo) & set(BF16_FLAGS)]


# -- images and weights ---------------------------------------------------------------------------


def textured_photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A deterministic stand-in for a photo: smooth colour fields, edges and mild sensor noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(12, 18, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(coarse, "RGB").resize((width, height), Image.Resampling.BICUBIC), np.float32)
    y, x = np.mgrid[0:height, 0:width]
    stripes = 20 * np.sin(x / 9.0 + y / 23.0)[..., None]
    noise = rng.normal(0, 5, size=base.shape)
    return Image.fromarray(np.clip(base + stripes + noise, 0, 255).astype(np.uint8), "RGB")


def jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def make_images() -> dict[str, bytes]:
    photo = textured_photo(451, 300)
    return {"451x300": jpeg(photo), "3000x2000": jpeg(photo.resize((3000, 2000), Image.Resampling.BICUBIC))}


WEIGHTS_SCRIPT = (
    "import sys, torch; from resnet_api.inference.model import random_weights; "
    "torch.save(random_weights(0).state_dict, sys.argv[1])"
)


def make_weights(work: Path) -> Path:
    """Seeded random weights, written by a child process so that this one never imports torch.

    A torch imported here stayed mapped for the whole run, so the servers' page-out of start-up code
    (`RESNET_API_RELEASE_MEMORY`) could not drop the libtorch pages this process shared: on the first run,
    which wrote the weights, the `torch` server was measured 150 MB larger (423 vs 273 MB when ready).
    """
    path = work / "resnet18-bench-seed0.pth"
    if not path.is_file():
        partial = path.with_suffix(".partial")
        subprocess.run([sys.executable, "-c", WEIGHTS_SCRIPT, str(partial)], check=True)
        partial.replace(path)
    return path


# -- phase 1: in-process ceiling ------------------------------------------------------------------

CEILING_CODE = r"""
import json, sys, threading, time
import numpy as np
from pathlib import Path
args = json.loads(sys.argv[1])
sys.path.insert(0, args["bench"])
from inprocess import decode_and_run, load_backend
from resnet_api.inference.service import parallel_batches
from resnet_api.settings import Settings

settings = Settings(weights=args["weights"], **args["settings"])
backend = load_backend(settings, Path(args["weights"]))

def step(data, n, threads=None):
    decode_and_run(backend, data, n, draft=settings.jpeg_draft, threads=threads)

def rate(data, n, parallel, warm, seconds):
    # `parallel` threads of work side by side, the model threads split between them, as the server does
    threads = settings.torch_threads // parallel
    counts = [0] * parallel
    def work(i):
        if warm:
            step(data, n, threads); step(data, n, threads)
        barrier.wait()
        started = time.perf_counter()
        while time.perf_counter() - started < seconds or counts[i] == 0:
            step(data, n, threads); counts[i] += n
        ends[i] = time.perf_counter()
    barrier, ends = threading.Barrier(parallel + 1), [0.0] * parallel
    workers = [threading.Thread(target=work, args=(i,)) for i in range(parallel)]
    for w in workers: w.start()
    barrier.wait(); started = time.perf_counter()
    for w in workers: w.join()
    return sum(counts) / (max(ends) - started)

if args.get("commands"):
    # kept running: one {"image", "n", "parallel", "seconds"} per stdin line, one rate per stdout line
    datas = {name: Path(path).read_bytes() for name, path in args["images"].items()}
    print(json.dumps("ready"), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        print(json.dumps(rate(datas[cmd["image"]], cmd["n"], cmd["parallel"], True, cmd["seconds"])), flush=True)
    sys.exit(0)

out = {"backend": backend.name, "runtime": backend.runtime, "precision": backend.precision, "images": {}}
for name, path in args["images"].items():
    data = Path(path).read_bytes()
    layouts = sorted({1, parallel_batches(settings)})
    configs = [(n, parallel) for n in args["batch_sizes"] for parallel in layouts]
    rounds = {}
    for r in range(args["rounds"]):
        # each round starts one configuration later, so no configuration always runs first or last
        for n, parallel in configs[r % len(configs):] + configs[:r % len(configs)]:
            label = str(n) if parallel == 1 else f"{n}, {parallel} at once"
            rounds.setdefault(label, []).append(rate(data, n, parallel, r == 0, args["seconds"]))
    single = []
    for _ in range(args["single_runs"]):
        t = time.perf_counter(); step(data, 1); single.append(time.perf_counter() - t)
    out["images"][name] = {"rounds": rounds, "single_ms": 1000 * float(np.median(single))}
print(json.dumps(out))
"""


def ceiling(python: str, backend: str, weights: Path, images: dict[str, Path], quick: bool) -> dict[str, Any]:
    args = {
        "bench": str(HERE),
        "settings": backend_settings(backend),
        "weights": str(weights),
        "images": {k: str(v) for k, v in images.items()},
        "batch_sizes": [1, 8] if quick else [1, 4, 8, 16],
        "rounds": 2 if quick else CEILING_ROUNDS,
        "seconds": 0.3 if quick else 0.8,
        "single_runs": 3 if quick else 15,
    }
    out = subprocess.run(
        [python, "-c", CEILING_CODE, json.dumps(args)], capture_output=True, text=True, timeout=600, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"ceiling run for {backend} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["backend"] = backend  # the bench's name: `int8` and `int8-openvino` are both "int8" to the service
    for image in result["images"].values():
        image.update(best_of_rounds(image["rounds"]))
    return result


CEILING_ROUNDS = 3


def best_of_rounds(rounds: dict[str, list[float]]) -> dict[str, Any]:
    """The ceiling: the configuration with the highest median over its rounds, and that median.

    Taking the highest single measurement instead would pick whichever configuration the machine's noise
    favoured (on the 2-core machines, one 1.5 s run of a configuration varies by 10-20 %, while the batch size
    changes torch's forward by less), so the ceiling would sit above what any configuration sustains.
    """
    rates = {label: float(np.median(samples)) for label, samples in rounds.items()}
    best = max(rates, key=lambda label: rates[label])
    return {
        "rates": rates,
        "best_batch": best,
        "ceiling": rates[best],
        "spread": [min(rounds[best]), max(rounds[best])],
    }


def batch_layout(label: str) -> tuple[int, int]:
    """(batch size, batches at once) of a ceiling configuration's label: "8" or "4, 2 at once"."""
    size, _, at_once = label.partition(", ")
    return int(size), int(at_once.split()[0]) if at_once else 1


@contextlib.contextmanager
def ceiling_process(
    python: str, backend: str, weights: Path, images: dict[str, Path], log_path: Path, code: str = CEILING_CODE
) -> Iterator[Callable[[str, str, float], float]]:
    """The ceiling's `code` loaded once in a process of its own, kept running; yields `rate(image, label, seconds)`,
    which measures one configuration again there (img/s). Stopped on exit; its standard error goes to `log_path`.
    """
    args = {
        "bench": str(HERE),
        "settings": backend_settings(backend),
        "weights": str(weights),
        "images": {k: str(v) for k, v in images.items()},
        "commands": True,
    }
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [python, "-c", code, json.dumps(args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    stdin, stdout = proc.stdin, proc.stdout
    assert stdin is not None
    assert stdout is not None

    def answer() -> Any:
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"the ceiling process for {backend} exited with {proc.wait()}: see {log_path}")
        return json.loads(line)

    def rate(image: str, label: str, seconds: float) -> float:
        n, parallel = batch_layout(label)
        stdin.write(json.dumps({"image": image, "n": n, "parallel": parallel, "seconds": seconds}) + "\n")
        stdin.flush()
        return float(answer())

    try:
        answer()  # "ready": the backend is loaded
        yield rate
    finally:
        with contextlib.suppress(BrokenPipeError):
            stdin.close()  # the end of its commands: it exits
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stdout.close()


# -- phase 2: servers over HTTP -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before becoming ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server on port {port} not ready after {timeout:.0f}s")


def proc_status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Cell:
    server: str
    image: str
    concurrency: int
    throughput: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int
    peak_rss_mb: float
    overhead_p50_ms: float | None = None  # one client, resnet-api: median of client time - the server's own time


async def sample_rss(pid: int, stop: asyncio.Event, peak: list[int]) -> None:
    while not stop.is_set():
        try:
            peak[0] = max(peak[0], proc_status(pid, "VmRSS"))
        except OSError:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)


async def measure(
    server: str, port: int, pid: int, images: dict[str, bytes], concurrencies: list[int], duration: float, warmup: float
) -> list[Cell]:
    cells = []
    for name, data in images.items():
        payload = multipart_request("/v1/predict", f"127.0.0.1:{port}", f"{name}.jpg", data)
        for c in concurrencies:
            stop, peak = asyncio.Event(), [0]
            sampler = asyncio.create_task(sample_rss(pid, stop, peak))
            # resnet-api's answers carry their own server-side time; Flask's do not
            timed = c == 1 and server.startswith("resnet-api/")
            result = await run_load("127.0.0.1", port, payload, c, duration, warmup, server_timings=timed)
            stop.set()
            await sampler
            cell = Cell(
                server,
                name,
                c,
                round(result.throughput, 1),
                round(1000 * result.percentile(50), 1),
                round(1000 * result.percentile(95), 1),
                round(1000 * result.percentile(99), 1),
                result.errors,
                round(peak[0] / 2**20, 1),
                round(1000 * result.overhead_p50(), 1) if timed else None,
            )
            print(
                f"  {server:<12} {name:<10} c={c:<3} {cell.throughput:7.1f} img/s  p50 {cell.p50_ms:7.1f} ms  "
                f"p99 {cell.p99_ms:7.1f} ms  rss {cell.peak_rss_mb:6.1f} MB  errors {cell.errors}",
                flush=True,
            )
            cells.append(cell)
    return cells


@dataclass
class Paired:
    """A server and its in-process ceiling measured in turn, round after round: the ratio without the drift.

    The ceiling phase runs minutes before the server, and the machine's speed drifts by 10-30 % over that
    time; choosing the best of several configurations' medians also favours whichever the noise lifted. Here
    the ceiling's chosen configuration is measured again between the server's rounds, in the order
    ceiling-server, server-ceiling, ... (ABBA: a steady drift favours neither), and each round gives a ratio.
    """

    server: str
    image: str
    concurrency: int
    configuration: str
    seconds: float
    server_rates: list[float]
    ceiling_rates: list[float]

    def ratios(self) -> list[float]:
        return [s / c for s, c in zip(self.server_rates, self.ceiling_rates, strict=True)]


def paired_rounds(
    server: str,
    port: int,
    images: dict[str, bytes],
    configurations: dict[str, str],
    ceiling_rate: Callable[[str, str, float], float],
    rounds: int,
    seconds: float,
    warmup: float,
    concurrency: int,
) -> list[Paired]:
    """`rounds` rounds per image of the server at `concurrency` clients and of `ceiling_rate` on the ceiling's
    configuration for that image, each for `seconds`, in ABBA order."""
    results = []
    for name, data in images.items():
        payload = multipart_request("/v1/predict", f"127.0.0.1:{port}", f"{name}.jpg", data)
        paired = Paired(server, name, concurrency, configurations[name], seconds, [], [])

        for r in range(rounds):
            for step in ("http", "in process") if r % 2 else ("in process", "http"):
                if step == "http":
                    load = asyncio.run(run_load("127.0.0.1", port, payload, concurrency, seconds, warmup))
                    paired.server_rates.append(round(load.throughput, 1))
                else:
                    paired.ceiling_rates.append(round(ceiling_rate(name, configurations[name], seconds), 1))
            print(
                f"  {server:<12} {name:<10} round {r + 1}: {paired.server_rates[-1]:7.1f} img/s over HTTP, "
                f"{paired.ceiling_rates[-1]:7.1f} in process, ratio {paired.ratios()[-1]:.2f}",
                flush=True,
            )
        results.append(paired)
    return results


def resnet_api_env(backend: str, weights: Path, port: int, log_level: str = "warning") -> dict[str, str]:
    """The environment of `python -m resnet_api serve` for a bench run: default settings but these."""
    return {
        **os.environ,
        **{f"RESNET_API_{key.upper()}": value for key, value in backend_settings(backend).items()},
        "RESNET_API_WEIGHTS": str(weights),
        "RESNET_API_PORT": str(port),
        "RESNET_API_LOG_LEVEL": log_level,
    }


@contextlib.contextmanager
def serving(
    cmd: list[str], env: dict[str, str], port: int, log_path: Path, timeout: float = 300
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server, wait until its /readyz answers on `port`; on exit stop it (SIGTERM, SIGKILL after 30 s).

    Its output goes to `log_path`: an undrained pipe would fill up and block the server.
    """
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_ready(port, proc, timeout)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


SETTLE_S = 4.0
SERVE_COMMAND = [sys.executable, "-m", "resnet_api", "serve"]


def run_server(
    server: str,
    cmd: list[str],
    env: dict[str, str],
    port: int,
    images: dict[str, bytes],
    args: argparse.Namespace,
    then: Callable[[], None] | None = None,
) -> tuple[list[Cell], dict[str, Any]]:
    """The server's cells, start-up, memory and idle CPU; then `then()`, if given, while it still runs."""
    log_path = args.out / f"{server.replace('/', '-')}.log"
    started = time.perf_counter()
    with serving(cmd, env, port, log_path) as proc:
        startup_s = time.perf_counter() - started
        rss_ready = proc_status(proc.pid, "VmRSS")
        cells = asyncio.run(measure(server, port, proc.pid, images, args.concurrency, args.duration, args.warmup))
        # Let the last requests drain and the server's one-off memory release (RESNET_API_IDLE_RELEASE_S
        # after its last image) pass: idle CPU is the steady state that follows.
        time.sleep(1.0 if args.quick else SETTLE_S)
        cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
        time.sleep(args.idle)
        idle_cpu = 100 * (cpu_seconds(proc.pid) - cpu0) / (time.perf_counter() - t0)
        extra = {
            "startup_s": round(startup_s, 1),
            "rss_ready_mb": round(rss_ready / 2**20, 1),
            "rss_idle_mb": round(proc_status(proc.pid, "VmRSS") / 2**20, 1),
            "idle_cpu_percent": round(idle_cpu, 2),
            "torch_loaded": torch_loaded(proc.pid),
        }
        print(
            f"  {server:<12} startup {extra['startup_s']} s, idle CPU {extra['idle_cpu_percent']} %, "
            f"torch loaded: {extra['torch_loaded']}",
            flush=True,
        )
        if then is not None:
            then()
        return cells, extra


def torch_loaded(pid: int) -> bool:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


# -- report ---------------------------------------------------------------------------------------


def cpu_features(cpuinfo: str) -> str:
    """The instruction sets that decide fp32, bf16 and int8 speed here (the same CPU model name can differ)."""
    flags = cpu_flags(cpuinfo)
    wanted = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile"]
    return " ".join(flag for flag in wanted if flag in flags) or "no AVX2"


def read_cpuinfo() -> str:
    return Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""


RESNET18_GFLOP = 3.64
"""Multiply-adds of one 224x224 forward, counted as two operations each (1.82 GMAC), the convolutions nearly all."""

SGEMM_CODE = """
import time, torch
torch.set_num_threads(1)
a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
a @ b
rates = []
for _ in range(5):
    started = time.perf_counter(); a @ b; rates.append(2 * 2048**3 / (time.perf_counter() - started) / 1e9)
print(max(rates))
"""


def sgemm_gflops(python: str) -> float:
    """fp32 matrix-multiply GFLOP/s on one core (MKL through torch): a guide to the speed convolutions reach there."""
    out = subprocess.run([python, "-c", SGEMM_CODE], capture_output=True, text=True, timeout=120, check=True)
    return round(float(out.stdout.strip().splitlines()[-1]), 1)


def machine(python: str = sys.executable) -> dict[str, Any]:
    cpuinfo = read_cpuinfo()
    cpu = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line),
        platform.processor(),
    )
    return {
        "cpu": cpu,
        "cpu_features": cpu_features(cpuinfo),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "sgemm_gflops_per_core": sgemm_gflops(python),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def rounds_taken(report: dict[str, Any]) -> int:
    return min(
        (len(samples) for c in report["ceilings"] for r in c["images"].values() for samples in r["rounds"].values()),
        default=0,
    )


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"Machine: {m['cpu']} ({m['cpu_features']}), {m['cpus_usable']} usable CPUs, "
        f"Python {m['python']}, {m['date']}; "
        f"load average at start {m['load_average_at_start']} (other processes were running).",
        f"fp32 matrix multiply: {m['sgemm_gflops_per_core']} GFLOP/s per core; at that speed an fp32 ResNet-18 "
        f"forward ({RESNET18_GFLOP} GFLOP per image) runs at about "
        f"{m['sgemm_gflops_per_core'] * m['cpus_usable'] / RESNET18_GFLOP:.0f} img/s on these {m['cpus_usable']} CPUs "
        "(a guide to the machine's speed in this hour, not a bound: oneDNN's convolutions ran at about "
        "matrix-multiply speed on an AVX2 CPU and 15-30 % faster on an AVX-512 one).",
        f"Command: `{report['command']}`",
        "",
        f"**In-process ceiling** (decode + preprocess + forward, best batch size; for `torch` also as several batches at once, as the server runs them; every configuration measured in {rounds_taken(report)} rounds taken in turn, the ceiling is the best median):",
        "",
        "| backend | precision | image | ceiling img/s | its rounds img/s | best batch | single image ms |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for c in report["ceilings"]:
        for name, r in c["images"].items():
            low, high = r["spread"]
            lines.append(
                f"| {c['backend']} | {c['precision']} | {name} | {r['ceiling']:.1f} | {low:.1f}-{high:.1f} "
                f"| {r['best_batch']} | {r['single_ms']:.1f} |"
            )
    lines += [
        "",
        "**Over HTTP** (closed loop, keep-alive, `POST /v1/predict`; Flask: the tutorial server on the same weights):",
        "",
        "| server | image | clients | img/s | p50 ms | p95 ms | p99 ms | errors | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for cell in report["cells"]:
        lines.append(
            f"| {cell['server']} | {cell['image']} | {cell['concurrency']} | {cell['throughput']:.1f} | {cell['p50_ms']:.1f} "
            f"| {cell['p95_ms']:.1f} | {cell['p99_ms']:.1f} | {cell['errors']} | {cell['peak_rss_mb']:.0f} |"
        )
    lines += paired_table(report)
    lines += one_client_table(report)
    lines += [
        "",
        "| server | start-up s | RSS when ready MB | RSS idle after load MB | idle CPU % | torch loaded |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for server, extra in report["servers"].items():
        lines.append(
            f"| {server} | {extra['startup_s']} | {extra['rss_ready_mb']:.0f} | {extra['rss_idle_mb']:.0f} "
            f"| {extra['idle_cpu_percent']} | "
            f"{'yes' if extra['torch_loaded'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def paired_table(report: dict[str, Any]) -> list[str]:
    """Each paired measurement: both rates round by round, and the median ratio with its range."""
    if not report.get("paired"):
        return []
    rounds = max(len(p["ratios"]) for p in report["paired"])
    seconds = report["paired"][0]["seconds"]
    lines = [
        "",
        f"**Over HTTP against the in-process ceiling, in turn** ({rounds} rounds of {seconds:g} s each, "
        "alternating which goes first; the ceiling's best configuration measured again in a process of its own "
        "between the server's rounds, so both see the machine at the same speed):",
        "",
        "| server | image | clients | ceiling configuration | over HTTP img/s | in process img/s "
        "| ratio, median (range) |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for p in report["paired"]:
        ratios = p["ratios"]
        lines.append(
            f"| {p['server']} | {p['image']} | {p['concurrency']} | {p['configuration']} "
            f"| {' / '.join(f'{x:.1f}' for x in p['server_rates'])} "
            f"| {' / '.join(f'{x:.1f}' for x in p['ceiling_rates'])} "
            f"| {float(np.median(ratios)):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) |"
        )
    return lines


def one_client_table(report: dict[str, Any]) -> list[str]:
    """One client's p50 over HTTP against the in-process single-image time, two ways.

    The ceiling process measured the single image minutes before the server ran, and the machine's speed
    drifts between the two; the same requests' own server-side time (`timings.total_ms`) gives what HTTP adds
    without that drift.
    """
    single = {
        (f"resnet-api/{c['backend']}", name): r["single_ms"]
        for c in report["ceilings"]
        for name, r in c["images"].items()
    }
    rows = [
        cell
        for cell in report["cells"]
        if cell["concurrency"] == 1
        and cell.get("overhead_p50_ms") is not None
        and (cell["server"], cell["image"]) in single
    ]
    if not rows:
        return []
    lines = [
        "",
        "**One client** (p50 over HTTP against the in-process single-image time of the ceiling run, and what HTTP "
        "adds to the same requests: the median of client time minus the server's own decode, queue and inference time):",
        "",
        "| server | image | in-process single ms | HTTP p50 ms | difference ms | added by HTTP, same requests ms |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for cell in rows:
        alone = single[(cell["server"], cell["image"])]
        lines.append(
            f"| {cell['server']} | {cell['image']} | {alone:.1f} | {cell['p50_ms']:.1f} | {cell['p50_ms'] - alone:+.1f} "
            f"| {cell['overhead_p50_ms']:.1f} |"
        )
    return lines


def chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = report["cells"]
    images = list(dict.fromkeys(c["image"] for c in cells))
    servers = list(dict.fromkeys(c["server"] for c in cells))
    concs = sorted({c["concurrency"] for c in cells})
    fig, axes = plt.subplots(2, len(images), figsize=(5.5 * len(images), 6), squeeze=False)
    width = 0.8 / max(1, len(servers))
    for col, image in enumerate(images):
        for row, (key, label) in enumerate(
            (("throughput", "img/s (higher is better)"), ("p99_ms", "p99 ms (lower is better)"))
        ):
            ax = axes[row][col]
            for i, server in enumerate(servers):
                values = [
                    next(
                        (
                            c[key]
                            for c in cells
                            if c["server"] == server and c["image"] == image and c["concurrency"] == k
                        ),
                        0,
                    )
                    for k in concs
                ]
                ax.bar(np.arange(len(concs)) + i * width, values, width, label=server)
            ax.set_xticks(np.arange(len(concs)) + width * (len(servers) - 1) / 2, [f"{k} clients" for k in concs])
            ax.set_title(f"{image} JPEG: {label}", fontsize=9)
            if key == "p99_ms":
                ax.set_yscale("log")
            ax.tick_params(labelsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(servers), 5), fontsize=8, frameon=False)
    fig.suptitle(
        f"resnet-api vs Flask baseline, {report['machine']['cpus_usable']} CPUs "
        f"({report['machine']['cpu_features']}; noisy shared machine)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.06, 1, 1))  # room for the legend below the plots, clear of every bar
    fig.savefig(path, dpi=72)
    plt.close(fig)


# -- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--backends",
        default=None,
        help=f"comma-separated, from {', '.join(BACKENDS)} (default: all; openvino-bf16 only on a CPU with bf16)",
    )
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated client counts")
    parser.add_argument("--duration", type=float, default=6.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each cell")
    parser.add_argument("--idle", type=float, default=3.0, help="seconds of idle CPU measurement per server")
    parser.add_argument("--no-flask", action="store_true", help="skip the Flask baseline")
    parser.add_argument("--weights", type=Path, default=None, help="state_dict file (default: seeded random)")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="output folder")
    parser.add_argument(
        "--paired",
        default="torch",
        help="comma-separated backends whose server and ceiling are also measured in turn, for the ratio (default torch)",
    )
    parser.add_argument("--paired-rounds", type=int, default=4, help="rounds of each (0: none)")
    parser.add_argument("--paired-seconds", type=float, default=4.0, help="measured seconds of each, per round")
    parser.add_argument("--quick", action="store_true", help="smoke run: one backend, short cells")
    args = parser.parse_args(argv)
    # A plain `kill` still runs the finally blocks that stop the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.quick:
        args.backends, args.concurrency, args.duration, args.warmup, args.idle = "onnxruntime", "1,8", 1.5, 0.5, 1.0
        args.paired, args.paired_rounds, args.paired_seconds = "onnxruntime", 2, 1.0
    if args.backends is None:
        args.backends = ",".join(default_backends(read_cpuinfo()))
    args.backends = [b for b in args.backends.split(",") if b]
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.paired = [b for b in args.paired.split(",") if b]
    unknown = (set(args.backends) | set(args.paired)) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backends {sorted(unknown)}; choose from {BACKENDS}")

    args.out.mkdir(parents=True, exist_ok=True)
    work = HERE / ".work"  # weights and the cached ONNX / int8 files, kept between runs
    work.mkdir(exist_ok=True)
    weights = args.weights or make_weights(work)
    images = make_images()
    report: dict[str, Any] = {
        "machine": machine(),
        "command": "scripts/bench.sh " + " ".join(sys.argv[1:] if argv is None else argv),
        "ceilings": [],
        "cells": [],
        "servers": {},
        "paired": [],
    }
    python = sys.executable

    def serve(
        server: str, cmd: list[str], env: dict[str, str], port: int, then: Callable[[], None] | None = None
    ) -> None:
        cells, extra = run_server(server, cmd, env, port, images, args, then)
        report["cells"] += [asdict(c) for c in cells]
        report["servers"][server] = extra

    # Each backend's ceiling, then its server, back to back, and Flask right after `torch`: the ratios compare
    # numbers taken minutes apart at most, on machines whose speed drifts by 10-30 % over half an hour.
    flask_after = "torch" if "torch" in args.backends else args.backends[-1]
    with tempfile.TemporaryDirectory(prefix="resnet-bench-") as tmp:
        paths = {}
        for name, data in images.items():
            paths[name] = Path(tmp) / f"{name}.jpg"
            paths[name].write_bytes(data)
        for backend in args.backends:
            print(f"{backend}: in-process ceiling (the first run also builds and caches ONNX files)", flush=True)
            result = ceiling(python, backend, weights, paths, args.quick)
            report["ceilings"].append(result)
            for name, r in result["images"].items():
                print(
                    f"  {backend:<12} {name:<10} {r['ceiling']:7.1f} img/s at batch {r['best_batch']}, "
                    f"single {r['single_ms']:.1f} ms",
                    flush=True,
                )
            port = free_port()
            server = f"resnet-api/{backend}"

            def paired(server: str = server, backend: str = backend, port: int = port) -> None:
                # After the server's own cells: a process with torch loaded beside it from its start would keep
                # the libtorch pages its page-out drops resident (see `make_weights`).
                print(f"{backend}: server and in-process ceiling in turn", flush=True)
                configurations = {name: r["best_batch"] for name, r in report["ceilings"][-1]["images"].items()}
                log_path = args.out / f"ceiling-{backend}.log"
                with ceiling_process(python, backend, weights, paths, log_path) as ceiling_rate:
                    rounds = paired_rounds(
                        server,
                        port,
                        images,
                        configurations,
                        ceiling_rate,
                        args.paired_rounds,
                        args.paired_seconds,
                        args.warmup,
                        max(args.concurrency),
                    )
                report["paired"] += [asdict(p) | {"ratios": [round(x, 3) for x in p.ratios()]} for p in rounds]

            print(f"{backend}: server over HTTP", flush=True)
            pair = backend in args.paired and args.paired_rounds > 0
            serve(server, SERVE_COMMAND, resnet_api_env(backend, weights, port), port, paired if pair else None)
            if backend == flask_after and not args.no_flask:
                port = free_port()
                print("flask baseline over HTTP", flush=True)
                command = [python, str(HERE / "flask_baseline.py"), str(weights), str(port)]
                serve("flask", command, dict(os.environ), port)
    order = [f"resnet-api/{b}" for b in args.backends] + ["flask"]  # tables list Flask last, as before
    report["cells"].sort(key=lambda cell: order.index(cell["server"]))
    report["servers"] = {name: report["servers"][name] for name in order if name in report["servers"]}

    (args.out / "results.json").write_text(json.dumps(report, indent=2))
    (args.out / "results.md").write_text(markdown(report))
    chart(report, args.out / "chart.png")
    print(f"wrote {args.out / 'results.md'}, results.json and chart.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
