"""An LRU cache of model outputs, bounded in entries and in bytes.

Keys are the SHA-256 of the uploaded bytes plus everything that changes the model output (weights,
backend, precision, decode options). Per-request options such as top_k or normalize are applied after
the model, so one entry serves every variant of the request (and both /predict and /embed).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


def content_key(data: bytes, context: str) -> str:
    return hashlib.sha256(data).hexdigest() + ":" + context


class LruCache(Generic[V]):
    """Not thread-safe: used from the event loop only."""

    def __init__(self, max_entries: int, max_bytes: int, size_of: Callable[[V], int]) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._items: OrderedDict[str, tuple[V, int]] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0 and self.max_bytes > 0

    def get(self, key: str) -> V | None:
        found = self._items.get(key)
        if found is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return found[0]

    def put(self, key: str, value: V) -> None:
        size = self._size_of(value)
        if not self.enabled or size > self.max_bytes:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        self._items[key] = (value, size)
        self.bytes += size
        while len(self._items) > self.max_entries or self.bytes > self.max_bytes:
            _, (_, evicted) = self._items.popitem(last=False)
            self.bytes -= evicted
