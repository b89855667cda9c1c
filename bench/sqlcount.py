"""Counting and timing what stask asks of the database, from the outside.

``SqlCounter`` listens to SQLAlchemy events on one or more engines: ``calls`` is one per cursor
execute (an executemany is one call), ``statements`` weighs an executemany by its parameter
sets, and ``round_trips`` adds what never reaches a cursor event: each transaction's BEGIN, its
COMMIT or ROLLBACK, and the pool's pre-ping on checkout. ``CallTimer`` wraps a method (such as
``store.claims.claim``) on one or more objects to time its calls.
"""

from __future__ import annotations

import functools
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, event, exc

_TABLE = re.compile(r"\bs_[a-z_]+\b")


@functools.lru_cache(maxsize=1024)
def label(statement: str) -> str:
    """A short name for a statement: its verb and the stask tables it names. Cached: the
    counter runs on every statement of a timed drain, and scanning a runner's turn (3 kB of
    SQL) each time cost it about 8 % of the runner's CPU (py-spy --gil)."""
    verb = statement.split(None, 1)[0].upper() if statement.strip() else "?"
    tables = sorted(set(_TABLE.findall(statement)))
    return f"{verb} {'+'.join(tables)}".strip()


def distinct(items: Sequence[Any]) -> list[Any]:
    """``items`` without repeats (by identity), in order."""
    seen: dict[int, Any] = {}
    for item in items:
        seen.setdefault(id(item), item)
    return list(seen.values())


def autocommit(conn: Connection) -> bool:
    """Whether ``conn``'s driver connection is in autocommit: SQLAlchemy still fires begin and
    commit events there, but psycopg sends no BEGIN, and no COMMIT or ROLLBACK while idle
    (stask's one-statement turn and create() on PostgreSQL). sqlite3 on Python 3.11 has no
    such attribute; stask sends its BEGIN IMMEDIATE itself there, so those are counted."""
    try:
        driver = conn.connection.driver_connection
    except exc.SQLAlchemyError:  # closed or invalidated
        return False
    return getattr(driver, "autocommit", False) is True


class SqlCounter:
    """Counts statements, round trips and transactions on some engines while counting.

    SQLAlchemy keeps an engine's listeners in a deque that it iterates on every event: adding or
    removing one while another thread begins a transaction breaks that thread ("deque mutated
    during iteration"). So ``attach`` and ``detach`` happen while no runner is up, and ``pause``
    / ``resume`` switch the counting in between.
    """

    _EVENTS = ("before_cursor_execute", "begin", "commit", "rollback")

    def __init__(self, *engines: Engine) -> None:
        self.engines = distinct(engines)
        self.calls = 0
        self.statements = 0
        self.begins = 0
        self.commits = 0
        self.rollbacks = 0
        self.pings = 0
        self.unsent = 0  # BEGIN / COMMIT / ROLLBACK events that sent nothing (autocommit)
        self.kinds: Counter[str] = Counter()
        self.counting = False
        self._lock = threading.Lock()
        self._handlers = {
            "before_cursor_execute": self._on_execute,
            "begin": self._on_begin,
            "commit": self._on_commit,
            "rollback": self._on_rollback,
        }

    def pause(self) -> None:
        self.counting = False

    def resume(self) -> None:
        self.counting = True

    def _on_execute(self, *args: Any) -> None:
        if not self.counting:
            return
        statement: str = args[2]
        parameters = args[3]
        executemany: bool = args[5]
        if statement.lstrip()[:5].upper() == "BEGIN":
            return  # SQLite's BEGIN [IMMEDIATE], counted by the begin event
        # A real executemany gets a list of parameter sets; SQLAlchemy's "insertmanyvalues"
        # batches arrive as one multi-row INSERT with one flat set: a single statement.
        many = executemany and isinstance(parameters, list | tuple) and parameters
        weight = len(parameters) if many and isinstance(parameters[0], dict | list | tuple) else 1
        with self._lock:
            self.calls += 1
            self.statements += weight
            self.kinds[label(statement)] += weight

    def _count(self, name: str, conn: Connection | None = None) -> None:
        if self.counting:
            unsent = conn is not None and autocommit(conn)
            with self._lock:
                setattr(self, name, getattr(self, name) + 1)
                self.unsent += unsent

    def _on_begin(self, conn: Connection) -> None:
        self._count("begins", conn)

    def _on_commit(self, conn: Connection) -> None:
        self._count("commits", conn)

    def _on_rollback(self, conn: Connection) -> None:
        self._count("rollbacks", conn)

    def attach(self) -> SqlCounter:
        for engine in self.engines:
            for name, handler in self._handlers.items():
                event.listen(engine, name, handler)
            original = engine.dialect.do_ping

            def counted_ping(dbapi_connection: Any, original: Any = original) -> bool:
                self._count("pings")
                return bool(original(dbapi_connection))

            engine.dialect.do_ping = counted_ping  # type: ignore[method-assign]
        self.counting = True
        return self

    def detach(self) -> None:
        self.counting = False
        for engine in self.engines:
            for name, handler in self._handlers.items():
                event.remove(engine, name, handler)
            del engine.dialect.do_ping  # back to the class's method

    def per_task(self, tasks: int) -> dict[str, Any]:
        sent = self.begins + self.commits + self.rollbacks - self.unsent
        round_trips = self.calls + sent + self.pings
        return {
            "statements_per_task": round(self.statements / tasks, 3),
            "calls_per_task": round(self.calls / tasks, 3),
            "round_trips_per_task": round(round_trips / tasks, 3),
            "commits_per_task": round(self.commits / tasks, 3),
            "transactions_per_task": round(self.begins / tasks, 3),
            "pings_per_task": round(self.pings / tasks, 3),
            "engines": len(self.engines),
            "by_statement": {kind: round(n / tasks, 3) for kind, n in self.kinds.most_common(12)},
        }


class CommitClock:
    """When the last commit of a given thread returned: a COMMIT (from the engine's dialect),
    or a statement on an autocommit connection, which commits as it returns (stask's
    one-statement create() on PostgreSQL)."""

    def __init__(self, engine: Engine, thread_id: int) -> None:
        self.engine = engine
        self.thread_id = thread_id
        self.last = 0.0

    def attach(self) -> CommitClock:
        dialect = self.engine.dialect
        original = dialect.do_commit

        def timed_commit(dbapi_connection: Any) -> None:
            original(dbapi_connection)
            if threading.get_ident() == self.thread_id:
                self.last = time.perf_counter()

        dialect.do_commit = timed_commit  # type: ignore[method-assign]
        event.listen(self.engine, "after_cursor_execute", self._after_statement)
        return self

    def _after_statement(self, conn: Connection, *_args: Any) -> None:
        if threading.get_ident() != self.thread_id:
            return
        if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
            self.last = time.perf_counter()

    def detach(self) -> None:
        del self.engine.dialect.do_commit
        event.remove(self.engine, "after_cursor_execute", self._after_statement)


class CallTimer:
    """Wraps one method on some objects (e.g. ``claim`` of each store) to time its calls.

    ``size`` turns a call's (args, result) into how many tasks it handled. Setting and removing
    an instance attribute is atomic, so this may be attached while a runner is up.
    """

    def __init__(
        self, targets: Sequence[Any], name: str, size: Callable[[tuple[Any, ...], Any], int]
    ) -> None:
        self.targets = distinct(targets)
        self.name = name
        self.size = size
        self.seconds: list[float] = []
        self.sizes: list[int] = []
        self._lock = threading.Lock()

    def attach(self) -> CallTimer:
        for target in self.targets:
            original = getattr(target, self.name)

            def timed(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
                started = time.perf_counter()
                result = _original(*args, **kwargs)
                elapsed = time.perf_counter() - started
                with self._lock:
                    self.seconds.append(elapsed)
                    self.sizes.append(int(self.size(args, result)))
                return result

            setattr(target, self.name, timed)
        return self

    def detach(self) -> None:
        for target in self.targets:
            delattr(target, self.name)  # the instance attribute; the class method shows again

    def summary(self, *, reset: bool = False) -> dict[str, float | int]:
        """Calls so far (and, with ``reset``, start a new window)."""
        with self._lock:
            seconds, sizes = list(self.seconds), list(self.sizes)
            if reset:
                self.seconds.clear()
                self.sizes.clear()
        if not seconds:
            return {"calls": 0}
        ordered = sorted(seconds)
        return {
            "calls": len(seconds),
            "tasks_per_call": round(sum(sizes) / len(sizes), 2),
            "empty_calls": sum(1 for s in sizes if s == 0),
            "mean_ms": round(sum(seconds) / len(seconds) * 1000, 3),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 3),
            "busy_seconds": round(sum(seconds), 3),
        }
