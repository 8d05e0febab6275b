from __future__ import annotations

import httpx
import numpy as np
import pytest

from imagegen import photo_like
from resnet_api.inference.cache import LruCache, content_key
from resnet_api.settings import Settings


def test_lru_evicts_least_recently_used_by_entries() -> None:
    cache: LruCache[str] = LruCache(max_entries=2, max_bytes=1000, size_of=len)
    cache.put("a", "1")
    cache.put("b", "2")
    assert cache.get("a") == "1"  # a is now the most recent
    cache.put("c", "3")
    assert cache.get("b") is None
    assert cache.get("a") == "1"
    assert cache.get("c") == "3"
    assert (cache.hits, cache.misses) == (3, 1)


def test_lru_is_bounded_in_bytes() -> None:
    cache: LruCache[str] = LruCache(max_entries=100, max_bytes=10, size_of=len)
    cache.put("a", "xxxx")
    cache.put("b", "yyyy")
    cache.put("c", "zzzz")  # 12 bytes > 10: the oldest goes
    assert cache.get("a") is None
    assert cache.bytes == 8
    assert len(cache) == 2
    cache.put("huge", "x" * 11)  # bigger than the whole cache: not stored, nothing evicted
    assert cache.get("huge") is None
    assert len(cache) == 2


def test_key_depends_on_bytes_and_context() -> None:
    assert content_key(b"abc", "m:torch") == content_key(b"abc", "m:torch")
    assert content_key(b"abc", "m:torch") != content_key(b"abd", "m:torch")
    assert content_key(b"abc", "m:torch") != content_key(b"abc", "m:int8")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"cache_max_entries": 8})


async def test_second_identical_upload_is_a_marked_cache_hit(client: httpx.AsyncClient) -> None:
    image = photo_like(seed=7)
    first = await client.post("/v1/predict", files={"file": ("a.jpg", image, "image/jpeg")}, params={"top_k": 5})
    second = await client.post("/v1/predict", files={"file": ("b.jpg", image, "image/jpeg")}, params={"top_k": 2})
    assert first.status_code == second.status_code == 200
    assert first.json()["timings"]["cached"] is False
    assert second.json()["timings"]["cached"] is True
    assert second.json()["timings"]["batch_size"] == 0
    # Options apply after the cache: the hit answers top_k=2 with the same ranking.
    assert second.json()["predictions"] == first.json()["predictions"][:2]
    assert second.json()["image"] == first.json()["image"]

    embed = (await client.post("/v1/embed", files={"file": ("c.jpg", image, "image/jpeg")})).json()
    assert embed["timings"]["cached"] is True
    other = await client.post("/v1/predict", files={"file": ("d.jpg", photo_like(seed=8), "image/jpeg")})
    assert other.json()["timings"]["cached"] is False
    assert not np.allclose(
        [p["score"] for p in other.json()["predictions"]], [p["score"] for p in first.json()["predictions"][:3]]
    )

    metrics = (await client.get("/metrics")).text
    assert "resnet_api_cache_hits_total 2.0" in metrics
    assert "resnet_api_cache_misses_total 2.0" in metrics
    assert "resnet_api_cache_entries 2.0" in metrics
