"""A generic dynamic micro-batcher: bounded queue of (item, future), a monotonic deadline, model threads.

1. `submit` puts an item and a future on the queue, bounded by the items whose caller still waits there (full ->
   `Overloaded`, at once); an item whose caller gave up no longer counts, though it stays queued until collected.
2. The collector waits for the first item without polling, then takes more until `max_batch_size`
   or `max_wait_s` after the first one, whichever comes first. With `more_coming` (adaptive wait) it
   waits only while that says more items are on their way, so a lone request never waits.
3. The batch runs on a model thread; every future is resolved, or failed with the batch. With `parallel` > 1
   several batches run at once, each on its own model thread, and the `threads` (intra-op threads, the
   cores the model may use) are split between them: `threads // parallel` each while others are queued,
   and a batch with nothing behind it takes every idle thread (a lone request is as fast as with one
   model thread). The threads handed out never add up to more than `threads`, so batches do not
   oversubscribe the cores. A batch given every thread runs on a model thread of its own (see `_whole`).
4. Items whose caller gave up (cancelled: disconnected) or whose deadline passed are dropped before inference.
5. With `on_idle`, once no item has arrived for `idle_after_s` after a batch, `on_idle` runs on the model
   thread (once per idle spell): housekeeping that must not slow a busy server. Then `after_idle`, if given,
   runs as a lone request's batch would (every thread, on its thread): the memory the housekeeping gave back
   and that batch uses is paged in again before the next request, not by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from resnet_api.inference.errors import DeadlineExceeded, NotReady, Overloaded

In = TypeVar("In")
Out = TypeVar("Out")

log = logging.getLogger(__name__)


@dataclass
class _Pending(Generic[In, Out]):
    item: In
    future: asyncio.Future[BatchResult[Out]]
    enqueued: float = field(default_factory=time.perf_counter)
    deadline: float | None = None  # perf_counter time after which the item is dropped unless already running
    started: bool = False
    waiting: bool = False  # queued, and its caller still waits: counts in the queue's bound and depth


@dataclass(frozen=True)
class BatchResult(Generic[Out]):
    """One caller's output plus how it was served."""

    value: Out
    queue_s: float
    inference_s: float
    batch_size: int


@dataclass(frozen=True)
class BatchStats:
    size: int
    queue_waits_s: list[float]
    inference_s: float


def _expire(pending: _Pending[In, Out], timeout_s: float) -> None:
    """Deadline timer: answer an item that is still waiting; one already in a running batch is let finish."""
    if not pending.started and not pending.future.done():
        pending.future.set_exception(
            DeadlineExceeded(
                f"the image waited {timeout_s * 1000:.0f} ms without reaching the model (RESNET_API_REQUEST_DEADLINE_MS)"
            )
        )


class MicroBatcher(Generic[In, Out]):
    def __init__(
        self,
        run_batch: Callable[[Sequence[In], int], Sequence[Out]],
        *,
        max_batch_size: int,
        max_wait_s: float,
        max_queue_size: int,
        threads: int = 1,
        parallel: int = 1,
        on_batch: Callable[[BatchStats], None] | None = None,
        initializer: Callable[[], None] | None = None,
        thread_name: str = "resnet-model",
        more_coming: Callable[[], int] | None = None,
        on_idle: Callable[[], object] | None = None,
        idle_after_s: float = 2.0,
        after_idle: Sequence[In] = (),
    ) -> None:
        self._run_batch = run_batch
        self._max_batch_size = max_batch_size
        self._max_wait_s = max_wait_s
        self._queue: asyncio.Queue[_Pending[In, Out]] = asyncio.Queue()  # bounded by `_waiting`, see `submit`
        self._max_queue_size = max_queue_size
        self._waiting = 0
        self._on_batch = on_batch
        self._more_coming = more_coming
        self._on_idle = on_idle
        self._idle_after_s = idle_after_s
        self._after_idle = list(after_idle)
        self._threads = threads
        parallel = max(1, min(parallel, threads))
        self._share = threads // parallel  # threads of a batch run beside others
        self._executors = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{thread_name}-{i}", initializer=initializer)
            for i in range(parallel)
        ]
        # With split threads, a batch given every thread runs on its own model thread, so only that thread ever
        # leads a multi-thread OpenMP team: more teams' workers than cores and libgomp throttles every team
        # (see `resnet_api.inference.backends.on_passing_thread`).
        self._whole = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{thread_name}-all", initializer=initializer)
            if self._share < threads
            else None
        )
        self._idle_executors = list(self._executors)
        self._free_threads = threads
        self._capacity = asyncio.Event()  # set when a model thread and threads are handed back (all on the loop)
        self._running: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._accepting = False

    @property
    def depth(self) -> int:
        """Items queued whose caller still waits (those given up on are skipped when collected)."""
        return self._waiting

    @property
    def accepting(self) -> bool:
        return self._accepting

    def start(self) -> None:
        self._accepting = True
        self._task = asyncio.get_running_loop().create_task(self._collect(), name="micro-batcher")

    async def warm_up(self, items: Sequence[In]) -> None:
        """Run `items` at every thread count batches will get (alone, and beside others), bypassing the queue."""
        loop = asyncio.get_running_loop()
        whole = self._whole or self._executors[0]
        for threads, executor in {self._share: self._executors[0], self._threads: whole}.items():
            await loop.run_in_executor(executor, self._run_batch, items, threads)

    async def submit(self, item: In, *, timeout_s: float | None = None) -> BatchResult[Out]:
        """Queue `item`; if it has not started running within `timeout_s`, drop it and raise `DeadlineExceeded`."""
        if not self._accepting:
            raise NotReady("the service is not accepting work (starting up or shutting down)")
        future: asyncio.Future[BatchResult[Out]] = asyncio.get_running_loop().create_future()
        pending = _Pending(item, future)
        if timeout_s is not None:
            if timeout_s <= 0:
                raise DeadlineExceeded("the request deadline passed before the image reached the queue")
            pending.deadline = pending.enqueued + timeout_s
        if 0 < self._max_queue_size <= self._waiting:
            raise Overloaded(f"the queue is full ({self._max_queue_size} images waiting): retry shortly")
        self._queue.put_nowait(pending)
        pending.waiting = True
        self._waiting += 1
        timer = None
        if timeout_s is not None:
            timer = asyncio.get_running_loop().call_later(timeout_s, _expire, pending, timeout_s)
        try:
            return await future  # a cancelled caller cancels the future at once, so the collector skips it
        finally:
            self._dequeued(pending)  # answered, expired or given up: its place in the bound is free
            if timer is not None:
                timer.cancel()

    def _dequeued(self, pending: _Pending[In, Out]) -> None:
        if pending.waiting:
            pending.waiting = False
            self._waiting -= 1

    def _take(self, pending: _Pending[In, Out]) -> _Pending[In, Out]:
        """The collector took `pending` off the queue."""
        self._dequeued(pending)
        return pending

    async def stop(self) -> None:
        """Stop accepting, finish everything already accepted, then stop the model thread."""
        self._accepting = False
        if self._task is not None:
            await self._queue.join()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while not self._queue.empty():  # only if the collector died: fail, never strand, the callers
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(NotReady("the service shut down before this request ran"))
            self._queue.task_done()
        for executor in self._executors:
            executor.shutdown(wait=True)
        if self._whole is not None:
            self._whole.shutdown(wait=True)

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        busy_since_idle = False
        while True:
            executor = await self._reserve()
            idle_timeout = self._idle_after_s if busy_since_idle and self._on_idle is not None else None
            try:
                first = self._take(await asyncio.wait_for(self._queue.get(), idle_timeout))  # None: no timer
            except TimeoutError:
                busy_since_idle = False
                await self._idle(loop, executor)
                self._release(executor, self._share)
                continue
            busy_since_idle = True
            batch = [first]
            deadline = time.perf_counter() + self._max_wait_s
            while len(batch) < self._max_batch_size:
                if not self._queue.empty():
                    batch.append(self._take(self._queue.get_nowait()))
                    continue
                if self._more_coming is not None and self._more_coming() <= 0:
                    break
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    batch.append(self._take(await asyncio.wait_for(self._queue.get(), remaining)))
                except TimeoutError:
                    break
            threads = self._share
            if self._waiting == 0 and (self._more_coming is None or self._more_coming() <= 0):
                threads += self._free_threads  # nothing behind this batch: it may use every idle thread
                self._free_threads = 0
            if threads == self._threads and self._whole is not None:
                self._idle_executors.append(executor)  # not needed: the batch runs on the whole-machine thread
                executor = self._whole
            task = loop.create_task(self._run(loop, batch, executor, threads))
            self._running.add(task)
            task.add_done_callback(functools.partial(self._finished, batch, executor, threads))

    async def _reserve(self) -> ThreadPoolExecutor:
        """Wait for an idle model thread and its share of the threads (the collector is the only waiter)."""
        while not (self._idle_executors and self._free_threads >= self._share):
            self._capacity.clear()
            await self._capacity.wait()
        self._free_threads -= self._share
        return self._idle_executors.pop()  # the most recently used thread: its caches and thread team are warm

    def _release(self, executor: ThreadPoolExecutor, threads: int) -> None:
        self._free_threads += threads
        if executor is not self._whole:
            self._idle_executors.append(executor)
        self._capacity.set()

    def _finished(
        self, batch: list[_Pending[In, Out]], executor: ThreadPoolExecutor, threads: int, task: asyncio.Task[None]
    ) -> None:
        """A batch's task ended (however it ended): its items are done and its model thread is free again."""
        self._running.discard(task)
        for _ in batch:
            self._queue.task_done()
        self._release(executor, threads)
        if not task.cancelled() and task.exception() is not None:
            log.error("batch bookkeeping failed", exc_info=task.exception())

    async def _idle(self, loop: asyncio.AbstractEventLoop, executor: ThreadPoolExecutor) -> None:
        assert self._on_idle is not None
        try:
            await loop.run_in_executor(executor, self._on_idle)
            if self._after_idle:  # as a lone request's batch runs: every thread, on its thread (see 5. above)
                await loop.run_in_executor(self._whole or executor, self._run_batch, self._after_idle, self._threads)
        except Exception:
            log.exception("idle housekeeping failed")

    async def _run(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[_Pending[In, Out]],
        executor: ThreadPoolExecutor,
        threads: int,
    ) -> None:
        """Run one batch on `executor` with `threads` and answer its callers (`_finished` hands both back)."""
        now = time.perf_counter()
        for p in batch:  # the caller normally notices first; this is the backstop
            if p.deadline is not None and now > p.deadline and not p.future.done():
                p.future.set_exception(
                    DeadlineExceeded("the image waited past its deadline without reaching the model")
                )
        live = [p for p in batch if not p.future.done()]  # skip callers that gave up (cancelled) or expired
        if not live:
            return
        for p in live:
            p.started = True
        started = time.perf_counter()
        try:
            outputs = await loop.run_in_executor(executor, self._run_batch, [p.item for p in live], threads)
            if len(outputs) != len(live):
                raise RuntimeError(f"model returned {len(outputs)} outputs for {len(live)} inputs")
        except Exception as exc:
            log.exception("batch of %d failed", len(live))
            for p in live:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        inference_s = time.perf_counter() - started
        waits = [started - p.enqueued for p in live]
        for p, out, wait in zip(live, outputs, waits, strict=True):
            if not p.future.done():
                p.future.set_result(BatchResult(out, wait, inference_s, len(live)))
        if self._on_batch is not None:
            self._on_batch(BatchStats(len(live), waits, inference_s))
