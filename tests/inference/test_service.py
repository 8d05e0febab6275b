"""The inference service end to end, without HTTP."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from imagegen import photo_like
from resnet_api.inference.errors import DeadlineExceeded, NotReady
from resnet_api.inference.service import InferenceService, parallel_batches
from resnet_api.settings import Settings


async def test_batched_results_equal_results_alone(settings: Settings) -> None:
    images = [photo_like(160 + 8 * i, 120 + 4 * i, seed=i) for i in range(12)]
    alone = InferenceService(settings.model_copy(update={"max_batch_size": 1}))
    await alone.start()
    try:
        singles = [await alone.classify(data, top_k=5) for data in images]
    finally:
        await alone.stop()

    batched = InferenceService(settings.model_copy(update={"max_batch_size": 8, "max_batch_wait_ms": 50.0}))
    await batched.start()
    try:
        together = await asyncio.gather(*(batched.classify(data, top_k=5) for data in images))
    finally:
        await batched.stop()

    assert batched.batches_run < len(images)
    assert max(r.timings.batch_size for r in together) > 1
    assert len({tuple(p.index for p in r.predictions) for r in singles}) > 1  # images differ, so must answers
    for one, many in zip(singles, together, strict=True):
        assert [p.index for p in one.predictions] == [p.index for p in many.predictions]
        np.testing.assert_allclose([p.score for p in one.predictions], [p.score for p in many.predictions], atol=1e-5)


async def test_embed_is_512_d_and_normalised(settings: Settings) -> None:
    service = InferenceService(settings)
    await service.start()
    try:
        unit = await service.embed(photo_like(seed=1), normalize=True)
        raw = await service.embed(photo_like(seed=1), normalize=False)
    finally:
        await service.stop()
    assert len(unit.vector) == 512
    assert np.linalg.norm(unit.vector) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(np.array(raw.vector) / np.linalg.norm(raw.vector), unit.vector, atol=1e-6)


async def test_requests_before_start_are_not_ready(settings: Settings) -> None:
    service = InferenceService(settings)
    with pytest.raises(NotReady):
        await service.classify(photo_like())


async def test_min_score_and_top_k(settings: Settings) -> None:
    service = InferenceService(settings)
    await service.start()
    try:
        all_classes = await service.classify(photo_like(), top_k=1000)
        filtered = await service.classify(photo_like(), top_k=1000, min_score=0.002)
    finally:
        await service.stop()
    scores = [p.score for p in all_classes.predictions]
    assert len(scores) == 1000
    assert scores == sorted(scores, reverse=True)
    assert sum(scores) == pytest.approx(1.0, abs=1e-4)
    assert all(p.score >= 0.002 for p in filtered.predictions)
    assert len(filtered.predictions) == sum(s >= 0.002 for s in scores)


def test_inference_package_does_not_import_fastapi() -> None:
    code = (
        "import sys, resnet_api.inference.service, resnet_api.inference.batcher;"
        "bad = [m for m in ('fastapi', 'starlette') if m in sys.modules]; print(bad); raise SystemExit(bool(bad))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("backend", "threads", "asked", "expected"),
    [
        ("torch", 2, 0, 2),  # auto: two batches side by side, one thread each under load
        ("torch", 1, 0, 1),  # one core: nothing to split
        ("torch", 8, 0, 2),
        ("torch", 8, 4, 4),
        ("torch", 2, 4, 2),  # never more batches than threads
        ("onnxruntime", 2, 0, 1),  # pools sized at load time: one batch at a time
        ("int8", 4, 2, 1),
    ],
)
def test_parallel_batches(backend: str, threads: int, asked: int, expected: int) -> None:
    settings = Settings(weights="random", backend=backend, torch_threads=threads, parallel_batches=asked)
    assert parallel_batches(settings) == expected


def recording(call: Any, note: Any) -> Any:
    """`call`, which first passes its arguments to `note` (for monkeypatching a method or function to watch it)."""

    def recorded(*args: Any, **kwargs: Any) -> Any:
        note(*args, **kwargs)
        return call(*args, **kwargs)

    return recorded


@pytest.mark.parametrize(("fold_bn", "sizes"), [(True, (1, 2, 3)), (False, (1, 3))])
async def test_warm_up_runs_every_batch_size_only_where_a_new_size_costs_extra(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, fold_bn: bool, sizes: tuple[int, ...]
) -> None:
    """Prepacked `torch` packs weights on the first batch of a size; the plain module (like ONNX) does not."""
    from resnet_api.inference.backends.torch_backend import TorchBackend

    seen: set[tuple[int, int | None]] = set()

    def note(self: TorchBackend, batch: np.ndarray, threads: int | None = None) -> None:
        seen.add((len(batch), threads))

    monkeypatch.setattr(TorchBackend, "run", recording(TorchBackend.run, note))
    update = {"torch_threads": 2, "parallel_batches": 2, "max_batch_size": 6, "torch_fold_bn": fold_bn}
    service = InferenceService(settings.model_copy(update=update))
    await service.start()
    await service.stop()
    assert seen == {(size, threads) for size in sizes for threads in (1, 2)}  # 6 images split in 2 batches: cap 3


async def test_memory_is_released_before_what_requests_run_is_paged_back_in(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The warm-up pages back in what requests run, so the first request is as fast as the next (75-130 ms slower
    when the page-out came after the warm-up); Pillow's codecs load then too. The idle trim is followed by the same
    paging back in."""
    import threading

    from resnet_api.inference import memory
    from resnet_api.inference.backends.torch_backend import TorchBackend

    events: list[str] = []
    decode_threads: set[str] = set()

    def record(name: str, call: Any) -> Any:
        def note(*_: Any, **__: Any) -> None:
            events.append(name)
            if name == "decode":
                decode_threads.add(threading.current_thread().name)

        return recording(call, note)

    monkeypatch.setattr(memory, "page_out_shared_libraries", record("page out", memory.page_out_shared_libraries))
    monkeypatch.setattr(memory, "release_free_memory", record("trim", memory.release_free_memory))
    monkeypatch.setattr(TorchBackend, "run", record("forward", TorchBackend.run))
    monkeypatch.setattr(InferenceService, "_decode", record("decode", InferenceService._decode))
    update = {"release_memory": True, "idle_release_s": 0.3}
    service = InferenceService(settings.model_copy(update=update))
    await service.start()
    try:
        assert events[0] == "page out"
        assert events[-1] == "trim"
        assert "forward" in events
        assert events.count("decode") == 1
        assert decode_threads == {"resnet-load_0"}  # not the decode threads, which start with the first requests
        events.clear()
        await service.classify(photo_like())
        assert events == ["decode", "forward"]  # requests never page out nor trim on their own
        async with asyncio.timeout(10):  # the quiet spell is 0.3 s; a busy machine may take longer to get there
            while len(events) < 5:
                await asyncio.sleep(0.05)
        assert events[2:] == ["trim", "decode", "forward"]  # after a quiet spell: trim, then page back in
    finally:
        await service.stop()


OPENMP_WORKERS = r"""
import asyncio, io, os, sys, threading, time
import numpy as np
import torch
torch.set_num_threads(2)  # before counting: this starts a pool thread of torch's own (not OpenMP's)
from PIL import Image
from resnet_api.inference.service import InferenceService
from resnet_api.settings import Settings

def native_threads():  # threads Python did not start: OpenMP's workers, among others
    return len(os.listdir("/proc/self/task")) - len(threading.enumerate())

async def main():
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(buf, "JPEG")
    image = buf.getvalue()
    service = InferenceService(Settings(weights=sys.argv[1], backend="torch", torch_threads=2, parallel_batches=2,
                                        max_batch_size=4, release_memory=False))
    before = native_threads()
    await service.start()
    for _ in range(2):
        await service.classify(image)  # alone: every thread
        await asyncio.gather(*(service.classify(image) for _ in range(12)))  # under load: split
    deadline = time.monotonic() + 10  # workers of a thread that ended are let go asynchronously
    while native_threads() - before > 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    print(native_threads() - before)
    await service.stop()

asyncio.run(main())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts threads in /proc")
def test_only_one_thread_ever_leads_an_openmp_team(weights_file: Path) -> None:
    # libgomp keeps a worker team for every thread that ever ran torch on several threads, and once the workers
    # outnumber the cores every team sleeps between operators instead of spinning (about 15 % slower on 2 cores).
    # Loading on a thread that ends, and running every 2-thread batch on one model thread, keeps it at one worker.
    result = subprocess.run(
        [sys.executable, "-c", OPENMP_WORKERS, str(weights_file)], check=True, capture_output=True, text=True
    )
    assert result.stdout.split() == ["1"]


async def test_an_image_waiting_for_a_decode_thread_is_answered_at_its_deadline(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deadline counts from admission, decoding included: a decode backlog does not make every image wait
    for its own (wasted) decode before being refused."""
    real_decode = InferenceService._decode
    decodes: list[int] = []

    def slow_decode(self: InferenceService, data: bytes) -> Any:
        decodes.append(1)
        time.sleep(0.2)
        return real_decode(self, data)

    monkeypatch.setattr(InferenceService, "_decode", slow_decode)
    service = InferenceService(
        settings.model_copy(update={"decode_workers": 1, "request_deadline_ms": 500.0, "warmup": False})
    )
    await service.start()
    try:
        outcomes = await asyncio.gather(
            *(service.classify(photo_like(64, 48, seed=i)) for i in range(8)), return_exceptions=True
        )
    finally:
        await service.stop()
    refused = [o for o in outcomes if isinstance(o, DeadlineExceeded)]
    assert len(refused) >= 4
    assert all(not isinstance(o, BaseException) for o in outcomes[: 8 - len(refused)])  # first come, first served
    assert len(decodes) <= 8 - len(refused) + 1  # the refused were never decoded (one may have been under way)
    text = service.metrics.render().decode()
    assert f'resnet_api_images_total{{outcome="deadline_exceeded"}} {len(refused)}.0' in text


async def test_a_batch_the_model_fails_on_is_counted(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from resnet_api.inference.backends.torch_backend import TorchBackend

    def broken(self: TorchBackend, batch: np.ndarray, threads: int | None = None) -> Any:
        raise RuntimeError("a fault in the model")

    service = InferenceService(settings.model_copy(update={"warmup": False}))
    await service.start()
    try:
        monkeypatch.setattr(TorchBackend, "run", broken)
        with pytest.raises(RuntimeError):
            await service.classify(photo_like(seed=2))
        monkeypatch.undo()
        await service.classify(photo_like(seed=3))  # and it keeps serving
    finally:
        await service.stop()
    text = service.metrics.render().decode()
    assert 'resnet_api_images_total{outcome="internal_error"} 1.0' in text
    assert 'resnet_api_images_total{outcome="ok"} 1.0' in text
