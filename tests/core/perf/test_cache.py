"""core.perf.cache.FileCache: Django's file cache, culled at most once a second instead of on every write."""

from __future__ import annotations

from core.perf import cache as file_cache
from core.perf.cache import FileCache


def _files(cache: FileCache) -> int:
    return len(cache._list_cache_files())


def test_it_culls_at_most_once_a_second_and_then_back_under_the_limit(tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(file_cache.time, "monotonic", lambda: clock[0])
    cache = FileCache(str(tmp_path), {"OPTIONS": {"MAX_ENTRIES": 10, "CULL_FREQUENCY": 2}})
    for index in range(25):
        cache.set(f"key-{index}", index)
    # The first write culled (nothing to cull yet); the rest of that second's writes did not.
    assert _files(cache) == 25
    clock[0] += 1.5
    cache.set("one-more", 1)
    assert _files(cache) <= 14  # culled by half, then the new entry
    assert cache.get("one-more") == 1
