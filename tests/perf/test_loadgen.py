"""The benchmark's throughput estimate: whole batch periods, not a count quantised by batch bursts."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("loadgen", Path(__file__).resolve().parents[2] / "bench" / "loadgen.py")
assert _spec is not None
assert _spec.loader is not None
loadgen = importlib.util.module_from_spec(_spec)
sys.modules["loadgen"] = loadgen  # dataclasses look their module up by name
_spec.loader.exec_module(loadgen)


def bursts(start: float, period: float, size: int, until: float) -> list[float]:
    times, t = [], start
    while t <= until:
        times += [t + 0.0005 * i for i in range(size)]  # a batch's responses arrive within a few ms
        t += period
    return times


def test_batched_completions_give_the_true_rate_wherever_the_window_starts() -> None:
    # 8 images every 0.32 s = 25 img/s. Counting completions in a 6 s window says 24.0 or 25.3 by phase.
    windows = [bursts(offset / 100, 0.32, 8, 6.0) for offset in range(0, 32, 2)]
    plain = {round(len(done) / 6.0, 2) for done in windows}
    assert max(plain) - min(plain) >= 1.0  # the quantisation this estimator removes
    for done in windows:
        assert loadgen.completion_rate(done, 6.0) == pytest.approx(25.0, rel=0.005)


def test_evenly_spaced_completions() -> None:
    done = [0.05 + 0.04 * i for i in range(150)]  # 25 per second
    assert loadgen.completion_rate(done, 6.0) == pytest.approx(25.0, rel=0.001)


def test_too_few_completions_fall_back_to_the_plain_count() -> None:
    assert loadgen.completion_rate([], 6.0) == 0.0
    assert loadgen.completion_rate([1.0, 1.001], 6.0) == pytest.approx(2 / 6.0)  # one burst: no period to measure
    assert loadgen.completion_rate([1.0, 1.5, 2.0], 6.0) == pytest.approx(3 / 6.0)  # spans under half the window


def test_overhead_is_the_median_of_per_request_differences_not_a_difference_of_medians() -> None:
    # The model slows down half-way (a noisy neighbour); HTTP adds 3 ms to every request throughout.
    server = [0.020] * 5 + [0.040] * 6
    result = loadgen.LoadResult(latencies=[s + 0.003 for s in server], server_s=server)
    assert result.overhead_p50() == pytest.approx(0.003)
    assert result.percentile(50) - 0.020 == pytest.approx(0.023)  # against an earlier "single image" time


def test_overhead_is_unknown_without_server_timings() -> None:
    assert math.isnan(loadgen.LoadResult(latencies=[0.02]).overhead_p50())
