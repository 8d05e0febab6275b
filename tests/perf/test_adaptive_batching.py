from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from resnet_api.inference.batcher import MicroBatcher


def doubled(items: Sequence[int], threads: int) -> list[int]:
    return [2 * i for i in items]


async def test_lone_item_does_not_wait_when_nothing_is_coming() -> None:
    batcher = MicroBatcher(doubled, max_batch_size=8, max_wait_s=1.0, max_queue_size=8, more_coming=lambda: 0)
    batcher.start()
    started = time.perf_counter()
    result = await batcher.submit(21)
    elapsed = time.perf_counter() - started
    await batcher.stop()
    assert result.value == 42
    assert elapsed < 0.5  # a fixed wait would take the whole second


async def test_waits_for_items_still_being_decoded() -> None:
    coming = 1
    batcher = MicroBatcher(doubled, max_batch_size=8, max_wait_s=1.0, max_queue_size=8, more_coming=lambda: coming)
    batcher.start()

    async def late() -> int:
        nonlocal coming
        await asyncio.sleep(0.05)  # "decoding"
        coming = 0
        return (await batcher.submit(2)).batch_size

    first, second = await asyncio.gather(batcher.submit(1), late())
    await batcher.stop()
    assert first.batch_size == second == 2
