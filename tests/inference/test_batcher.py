"""The micro-batcher: batches form, every caller gets its own answer, every future ends."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from resnet_api.inference.batcher import BatchStats, MicroBatcher
from resnet_api.inference.errors import DeadlineExceeded, NotReady, Overloaded


class Recorder:
    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[list[int]] = []
        self.threads: list[int] = []
        self.delay = delay
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, items: Sequence[int], threads: int) -> list[int]:
        self.gate.wait(5)
        if self.delay:
            threading.Event().wait(self.delay)
        self.calls.append(list(items))
        self.threads.append(threads)
        return [i * 10 for i in items]


async def test_concurrent_submits_are_batched_and_answered_in_order() -> None:
    fn = Recorder(delay=0.01)
    stats: list[BatchStats] = []
    batcher: MicroBatcher[int, int] = MicroBatcher(
        fn, max_batch_size=8, max_wait_s=0.02, max_queue_size=100, on_batch=stats.append
    )
    batcher.start()
    results = await asyncio.gather(*(batcher.submit(i) for i in range(40)))
    await batcher.stop()
    assert [r.value for r in results] == [i * 10 for i in range(40)]
    assert len(fn.calls) < 40
    assert max(len(c) for c in fn.calls) > 1
    assert all(len(c) <= 8 for c in fn.calls)
    assert sorted(i for c in fn.calls for i in c) == list(range(40))
    assert sum(s.size for s in stats) == 40
    assert all(r.batch_size >= 1 and r.queue_s >= 0 for r in results)


async def test_lone_request_waits_at_most_the_deadline() -> None:
    fn = Recorder()
    batcher: MicroBatcher[int, int] = MicroBatcher(fn, max_batch_size=64, max_wait_s=0.05, max_queue_size=10)
    batcher.start()
    result = await asyncio.wait_for(batcher.submit(1), timeout=2)
    await batcher.stop()
    assert result.value == 10
    assert fn.calls == [[1]]


async def test_full_queue_raises_overloaded_at_once() -> None:
    fn = Recorder()
    fn.gate.clear()  # the model thread blocks until we open the gate
    batcher: MicroBatcher[int, int] = MicroBatcher(fn, max_batch_size=1, max_wait_s=0, max_queue_size=2)
    batcher.start()
    first = asyncio.ensure_future(batcher.submit(0))
    await asyncio.sleep(0.05)  # first is now on the model thread, the queue is empty
    queued = [asyncio.ensure_future(batcher.submit(i)) for i in (1, 2)]
    await asyncio.sleep(0)
    with pytest.raises(Overloaded):
        await batcher.submit(3)
    fn.gate.set()
    assert [r.value for r in await asyncio.gather(first, *queued)] == [0, 10, 20]
    await batcher.stop()


async def test_a_failing_batch_fails_every_caller_and_the_batcher_keeps_serving() -> None:
    calls = 0

    def flaky(items: Sequence[int], threads: int) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return list(items)

    batcher: MicroBatcher[int, int] = MicroBatcher(flaky, max_batch_size=4, max_wait_s=0.05, max_queue_size=10)
    batcher.start()
    results = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert (await batcher.submit(7)).value == 7
    await batcher.stop()


async def test_wrong_output_count_is_an_error_not_a_mixup() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(
        lambda xs, _: [1], max_batch_size=4, max_wait_s=0.05, max_queue_size=10
    )
    batcher.start()
    results = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    await batcher.stop()
    assert all(isinstance(r, RuntimeError) and "outputs" in str(r) for r in results)


async def test_stop_answers_everything_accepted_then_refuses() -> None:
    fn = Recorder(delay=0.02)
    batcher: MicroBatcher[int, int] = MicroBatcher(fn, max_batch_size=2, max_wait_s=0, max_queue_size=50)
    batcher.start()
    pending = [asyncio.ensure_future(batcher.submit(i)) for i in range(10)]
    await asyncio.sleep(0)
    await batcher.stop()
    assert [p.result().value for p in pending] == [i * 10 for i in range(10)]
    with pytest.raises(NotReady):
        await batcher.submit(99)


async def test_cancelled_callers_are_skipped() -> None:
    fn = Recorder()
    fn.gate.clear()
    batcher: MicroBatcher[int, int] = MicroBatcher(fn, max_batch_size=1, max_wait_s=0, max_queue_size=10)
    batcher.start()
    first = asyncio.ensure_future(batcher.submit(0))
    await asyncio.sleep(0.05)
    abandoned = asyncio.ensure_future(batcher.submit(1))
    await asyncio.sleep(0)
    abandoned.cancel()
    fn.gate.set()
    assert (await first).value == 0
    await batcher.stop()
    assert [1] not in fn.calls


async def test_callers_that_gave_up_free_their_place_in_the_queue_at_once() -> None:
    """A disconnected or expired caller's item stays queued until collected, but no longer counts: the queue's
    bound and depth are the callers still waiting, so live requests are not refused as overloaded."""
    fn = Recorder()
    fn.gate.clear()
    batcher: MicroBatcher[int, int] = MicroBatcher(fn, max_batch_size=1, max_wait_s=0, max_queue_size=2)
    batcher.start()
    first = asyncio.ensure_future(batcher.submit(0))
    await asyncio.sleep(0.05)  # on the model thread, held there
    gone = asyncio.ensure_future(batcher.submit(1))
    with pytest.raises(DeadlineExceeded):
        await batcher.submit(2, timeout_s=0.05)
    await asyncio.sleep(0)
    assert batcher.depth == 1
    gone.cancel()
    await asyncio.sleep(0)
    assert batcher.depth == 0
    live = [asyncio.ensure_future(batcher.submit(i)) for i in (3, 4)]  # were Overloaded: 2 dead items held the slots
    await asyncio.sleep(0)
    assert batcher.depth == 2
    with pytest.raises(Overloaded):
        await batcher.submit(5)
    fn.gate.set()
    assert [r.value for r in await asyncio.gather(first, *live)] == [0, 30, 40]
    await batcher.stop()
    assert fn.calls == [[0], [3], [4]]  # the dead items never ran
    assert batcher.depth == 0


async def test_idle_housekeeping_runs_once_after_a_quiet_spell_on_the_model_thread() -> None:
    fn = Recorder()
    idle_threads: list[str] = []
    batcher: MicroBatcher[int, int] = MicroBatcher(
        fn,
        max_batch_size=4,
        max_wait_s=0.0,
        max_queue_size=10,
        thread_name="model-under-test",
        on_idle=lambda: idle_threads.append(threading.current_thread().name),
        idle_after_s=0.3,
    )
    batcher.start()
    await asyncio.sleep(0.5)
    assert idle_threads == []  # nothing has run yet: nothing to tidy
    for i in range(6):  # busy: items closer together than idle_after_s
        await batcher.submit(i)
        await asyncio.sleep(0.1)
    assert idle_threads == []
    await asyncio.sleep(0.6)
    assert len(idle_threads) == 1
    assert idle_threads[0].startswith("model-under-test")
    await asyncio.sleep(0.5)
    assert len(idle_threads) == 1  # once per quiet spell, not on a timer
    assert (await batcher.submit(7)).value == 70
    await asyncio.sleep(0.6)
    assert len(idle_threads) == 2
    await batcher.stop()


async def test_after_idle_housekeeping_a_lone_batch_runs_where_a_lone_request_would() -> None:
    """What the housekeeping released is paged back in by a batch like the next lone request's, not by it."""
    model = InFlight(delay=0.0)
    order: list[str] = []
    batcher: MicroBatcher[int, int] = MicroBatcher(
        model,
        max_batch_size=4,
        max_wait_s=0.0,
        max_queue_size=10,
        threads=2,
        parallel=2,
        on_idle=lambda: order.append(f"idle after {len(model.calls)} batches"),
        idle_after_s=0.2,
        after_idle=[-1],
    )
    batcher.start()
    await asyncio.sleep(0.4)
    assert model.calls == []  # no idle spell before any work
    assert (await batcher.submit(5)).value == 50
    await asyncio.sleep(0.5)
    assert order == ["idle after 1 batches"]
    assert len(model.calls) == 2
    size, threads, name = model.calls[1]
    assert (size, threads) == (1, 2)  # every thread, on the thread that runs batches given every thread
    assert name.startswith("resnet-model-all")
    await asyncio.sleep(0.4)
    assert len(model.calls) == 2  # once per idle spell
    await batcher.stop()


async def test_failing_idle_housekeeping_does_not_stop_the_batcher() -> None:
    def broken() -> None:
        raise RuntimeError("boom")

    batcher: MicroBatcher[int, int] = MicroBatcher(
        Recorder(), max_batch_size=4, max_wait_s=0.0, max_queue_size=10, on_idle=broken, idle_after_s=0.05
    )
    batcher.start()
    assert (await batcher.submit(1)).value == 10
    await asyncio.sleep(0.2)
    assert (await batcher.submit(2)).value == 20
    await batcher.stop()


class InFlight:
    """A model that records how many threads the batches running at the same moment were given."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.lock = threading.Lock()
        self.running = 0  # threads handed to the batches running now
        self.most_running = 0
        self.most_batches = 0
        self.batches_now = 0
        self.calls: list[tuple[int, int, str]] = []  # (batch size, threads, model thread)

    def __call__(self, items: Sequence[int], threads: int) -> list[int]:
        with self.lock:
            self.running += threads
            self.batches_now += 1
            self.most_running = max(self.most_running, self.running)
            self.most_batches = max(self.most_batches, self.batches_now)
            self.calls.append((len(items), threads, threading.current_thread().name))
        threading.Event().wait(self.delay)
        with self.lock:
            self.running -= threads
            self.batches_now -= 1
        return [i * 10 for i in items]


async def serve_backlog(model: InFlight, count: int, *, max_batch_size: int, threads: int, parallel: int) -> None:
    """Submit `count` items at once and check every caller got its own answer."""
    batcher: MicroBatcher[int, int] = MicroBatcher(
        model,
        max_batch_size=max_batch_size,
        max_wait_s=0.0,
        max_queue_size=100,
        threads=threads,
        parallel=parallel,
        thread_name="m",
    )
    batcher.start()
    results = await asyncio.gather(*(batcher.submit(i) for i in range(count)))
    await batcher.stop()
    assert [r.value for r in results] == [i * 10 for i in range(count)]


async def test_parallel_batches_split_the_threads_under_load() -> None:
    model = InFlight(delay=0.05)
    await serve_backlog(model, 40, max_batch_size=4, threads=2, parallel=2)
    assert model.most_batches == 2  # two batches really ran side by side
    assert model.most_running <= 2  # never more threads than the budget
    assert len({name for _, _, name in model.calls}) == 2  # on two model threads
    assert [threads for _, threads, _ in model.calls].count(1) >= 8  # with a backlog each batch got its share


async def test_a_lone_batch_gets_every_thread() -> None:
    model = InFlight(delay=0.0)
    batcher: MicroBatcher[int, int] = MicroBatcher(
        model, max_batch_size=4, max_wait_s=0.0, max_queue_size=10, threads=4, parallel=2, more_coming=lambda: 0
    )
    batcher.start()
    for i in range(3):  # one at a time: nothing is ever behind the batch
        assert (await batcher.submit(i)).value == i * 10
    await batcher.stop()
    assert [threads for _, threads, _ in model.calls] == [4, 4, 4]


async def test_only_batches_given_every_thread_run_on_the_whole_machine_thread() -> None:
    model = InFlight(delay=0.02)
    batcher: MicroBatcher[int, int] = MicroBatcher(
        model, max_batch_size=2, max_wait_s=0.0, max_queue_size=50, threads=2, parallel=2, thread_name="m"
    )
    batcher.start()
    await asyncio.gather(*(batcher.submit(i) for i in range(16)))  # a backlog: split threads
    for i in range(3):  # then one at a time: every thread
        assert (await batcher.submit(i)).value == i * 10
    await batcher.stop()
    by_threads = {t: {name.rsplit("_", 1)[0] for _, threads, name in model.calls if threads == t} for t in (1, 2)}
    assert by_threads == {1: {"m-0", "m-1"}, 2: {"m-all"}}  # only the whole-machine thread leads a team of 2
    assert model.most_running <= 2


async def test_one_model_thread_always_gets_every_thread() -> None:
    model = InFlight(delay=0.01)
    await serve_backlog(model, 12, max_batch_size=2, threads=3, parallel=1)
    assert model.most_batches == 1
    assert {threads for _, threads, _ in model.calls} == {3}


async def test_parallel_is_capped_by_the_threads() -> None:
    model = InFlight(delay=0.05)
    await serve_backlog(model, 12, max_batch_size=1, threads=2, parallel=8)
    assert model.most_batches == 2
    assert model.most_running <= 2


async def test_warm_up_runs_every_thread_count_batches_will_get() -> None:
    model = InFlight(delay=0.0)
    batcher: MicroBatcher[int, int] = MicroBatcher(
        model, max_batch_size=4, max_wait_s=0.0, max_queue_size=10, threads=2, parallel=2
    )
    await batcher.warm_up([1, 2])
    assert sorted(threads for _, threads, _ in model.calls) == [1, 2]
    assert [name.startswith("resnet-model-all") for _, threads, name in sorted(model.calls)] == [False, True]
    batcher.start()
    await batcher.stop()
