"""The worker cache (core/cache.py): bounded, expiring, counted, and forgotten on every write."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stask import Stask
from stask.core.cache import TTLCache, approximate_size
from stask.errors import WorkerInactive

STATS_KEYS = {"hits", "misses", "evictions", "hit_rate", "cache_size", "memory_usage"}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


# -- TTLCache ----------------------------------------------------------------------------------


def test_hits_and_misses_are_counted(clock: Clock) -> None:
    cache: TTLCache[str, int] = TTLCache(10, 5.0, clock=clock)
    assert cache.get("a") is None
    cache.put("a", 1)
    assert cache.get("a") == 1
    assert cache.get("a") == 1
    assert cache.get("b") is None
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["cache_size"]) == (2, 2, 1)
    assert stats["hit_rate"] == 50.0


def test_hit_rate_is_a_percentage_with_two_decimals(clock: Clock) -> None:
    cache: TTLCache[str, int] = TTLCache(10, 5.0, clock=clock)
    cache.put("a", 1)
    cache.get("a")
    cache.get("a")
    cache.get("missing")
    assert cache.stats()["hit_rate"] == 66.67
    assert TTLCache[str, int](1, 1.0).stats()["hit_rate"] == 0.0  # no lookups yet


def test_the_least_recently_used_entry_is_evicted_at_the_bound(clock: Clock) -> None:
    cache: TTLCache[str, int] = TTLCache(2, 5.0, clock=clock)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # now "b" is the least recently used
    cache.put("c", 3)
    assert len(cache) == 2
    assert cache.evictions == 1
    assert cache.get("b") is None
    assert (cache.get("a"), cache.get("c")) == (1, 3)


def test_storing_a_key_again_replaces_it_without_evicting(clock: Clock) -> None:
    cache: TTLCache[str, int] = TTLCache(2, 5.0, clock=clock)
    cache.put("a", 1)
    cache.put("a", 2)
    assert (len(cache), cache.evictions, cache.get("a")) == (1, 0, 2)


def test_an_entry_expires_after_its_ttl(clock: Clock) -> None:
    cache: TTLCache[str, int] = TTLCache(10, 5.0, clock=clock)
    cache.put("a", 1)
    clock.now += 5.0
    assert cache.get("a") == 1  # still within the TTL
    clock.now += 0.01
    assert cache.get("a") is None
    assert (cache.stats()["misses"], len(cache), cache.memory_usage) == (1, 0, 0)


def test_memory_usage_follows_what_is_held(clock: Clock) -> None:
    cache: TTLCache[str, object] = TTLCache(10, 5.0, clock=clock)
    small = {"k": 1}
    large = {"k": "x" * 10_000}
    cache.put("small", small)
    after_small = cache.memory_usage
    assert after_small == approximate_size("small") + approximate_size(small)
    cache.put("large", large)
    assert cache.memory_usage - after_small > 10_000
    cache.pop("large")
    assert cache.memory_usage == after_small
    assert cache.clear() == 1
    assert cache.memory_usage == 0


def test_approximate_size_counts_what_a_value_holds() -> None:
    assert approximate_size({"a": "x" * 1000}) > approximate_size({"a": "x"}) + 900
    assert approximate_size(("x" * 1000,)) > 1000
    shared = "y" * 1000
    assert approximate_size([shared, shared]) < approximate_size(["y" * 1000, "z" * 1000])


def test_clear_and_pop_say_what_they_dropped(clock: Clock) -> None:
    cache: TTLCache[str, int] = TTLCache(10, 5.0, clock=clock)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.pop("a") is True
    assert cache.pop("a") is False
    assert cache.clear() == 1
    assert cache.clear() == 0


# -- the facade's worker cache -----------------------------------------------------------------


@pytest.fixture
def other_app(db_url: str, storage: Path) -> Iterator[Stask]:
    """A second Stask on the same database, as another process would have."""
    other = Stask(
        database_url=db_url,
        storage=storage,
        workers=["tests.sample_workers"],
        use_entry_points=False,
    )
    yield other
    other.close()


def test_cache_stats_has_the_seed_keys(app: Stask) -> None:
    assert set(app.cache_stats()) == STATS_KEYS


def test_creating_reads_the_worker_once_then_hits(app: Stask) -> None:
    app.clear_cache()
    before = app.cache_stats()
    app.create("inventory", "sync_stock")
    app.create("inventory", "sync_stock")
    app.create("inventory", "sync_stock")
    after = app.cache_stats()
    assert after["misses"] - before["misses"] == 1
    assert after["hits"] - before["hits"] == 2
    assert after["cache_size"] == 1
    assert after["memory_usage"] > 0


def test_a_write_through_the_facade_forgets_that_worker(app: Stask) -> None:
    app.create("mailer", "send")  # cached: active
    app.create("inventory", "sync_stock")
    app.deactivate("mailer")
    with pytest.raises(WorkerInactive):
        app.create("mailer", "send")  # not the cached, active row
    app.activate("mailer")
    app.create("mailer", "send")
    assert app.cache_stats()["cache_size"] == 2


def test_set_config_is_read_back_at_once(app: Stask) -> None:
    assert "colour" not in app.stored_settings("inventory")  # cached now
    app.set_config("inventory", "colour", "blue")
    assert app.stored_settings("inventory")["colour"] == "blue"


def test_another_process_change_is_seen_after_the_ttl(app: Stask, other_app: Stask) -> None:
    clock = Clock()
    app.worker_cache.clock = clock
    assert "colour" not in app.stored_settings("inventory")
    other_app.set_config("inventory", "colour", "red")
    assert "colour" not in app.stored_settings("inventory")  # still cached here
    clock.now += app.worker_cache.ttl_seconds + 0.1
    assert app.stored_settings("inventory")["colour"] == "red"


def test_clear_cache_drops_one_worker_or_all(app: Stask) -> None:
    app.clear_cache()
    app.stored_settings("inventory")
    app.stored_settings("mailer")
    assert app.cache_stats()["cache_size"] == 2
    assert app.clear_cache("mailer") == 1
    assert app.cache_stats()["cache_size"] == 1
    assert app.clear_cache("mailer") == 0
    app.stored_settings("inventory")  # the other one is still cached
    assert app.clear_cache() == 1
    assert app.cache_stats()["cache_size"] == 0
    misses = app.cache_stats()["misses"]
    app.stored_settings("inventory")
    assert app.cache_stats()["misses"] == misses + 1
