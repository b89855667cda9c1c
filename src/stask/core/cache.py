"""A small in-process cache: bounded (least recently used goes first), entries expire after a
few seconds so a change made by another process is seen, and it counts what it does.

The facade keeps the rows of registered workers here (creating a task checks its worker every
time; task code reads its settings in loops); ``Stask.cache_stats`` and ``Stask.clear_cache``
show and empty it.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """At most ``max_entries`` values, each for ``ttl_seconds``; safe to share between threads.

    ``hits`` and ``misses`` count lookups (an expired entry is a miss), ``evictions`` the entries
    pushed out by the bound. ``memory_usage`` is the approximate size in bytes of the keys and
    values held (``approximate_size``), measured when they are stored.
    """

    def __init__(
        self,
        max_entries: int,
        ttl_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"a cache holds at least one entry, got max_entries={max_entries}")
        self.max_entries = max_entries
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self._entries: OrderedDict[K, tuple[float, V, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.memory_usage = 0

    def get(self, key: K) -> V | None:
        """The value stored for ``key`` if it has not expired, else None (a miss)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and self.clock() - entry[0] <= self.ttl_seconds:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[1]
            if entry is not None:
                self._drop(key)
            self.misses += 1
            return None

    def put(self, key: K, value: V) -> None:
        size = approximate_size(key) + approximate_size(value)
        with self._lock:
            if key in self._entries:
                self._drop(key)
            self._entries[key] = (self.clock(), value, size)
            self.memory_usage += size
            while len(self._entries) > self.max_entries:
                self._drop(next(iter(self._entries)))
                self.evictions += 1

    def pop(self, key: K) -> bool:
        """Forget ``key``; whether it was held."""
        with self._lock:
            if key not in self._entries:
                return False
            self._drop(key)
            return True

    def clear(self) -> int:
        """Forget every entry; how many there were. The counters keep counting."""
        with self._lock:
            count = len(self._entries)
            self._entries.clear()
            self.memory_usage = 0
            return count

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            lookups = self.hits + self.misses
            return {
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
                "hit_rate": round(100 * self.hits / lookups, 2) if lookups else 0.0,
                "cache_size": len(self._entries),
                "memory_usage": self.memory_usage,
            }

    def _drop(self, key: K) -> None:
        _, _, size = self._entries.pop(key)
        self.memory_usage -= size


def approximate_size(value: object) -> int:
    """Bytes of ``value`` and what it holds (containers, dataclass fields), each object once."""
    seen: set[int] = set()

    def size(obj: object) -> int:
        if id(obj) in seen:
            return 0
        seen.add(id(obj))
        total = sys.getsizeof(obj)
        if isinstance(obj, dict):
            total += sum(size(k) + size(v) for k, v in obj.items())
        elif isinstance(obj, list | tuple | set | frozenset):
            total += sum(size(item) for item in obj)
        elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            total += sum(size(getattr(obj, f.name)) for f in dataclasses.fields(obj))
        return total

    return size(value)
