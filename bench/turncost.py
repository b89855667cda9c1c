"""``python -m bench.turncost``: what one SQLite runner turn costs, and how much is Python.

A runner's turn records the outcomes of the tasks it finished and claims the next ones in one
statement. Here one thread drives ``Store.record_and_claim`` in batches of B tasks (a runner
at concurrency B/2 with its default prefetch), each turn recording the previous turn's claims,
and reports microseconds per turn. Then the very statement stask sent (captured from its last
turn) is replayed on a bare ``sqlite3`` connection, ``BEGIN IMMEDIATE``, statement, ``COMMIT``,
with the same kind of parameters: the floor any code path could reach with this schema and
this statement. Last, WAL pages written per turn (the replay with auto-checkpoints off).

Durable as stask runs (WAL, ``synchronous=FULL``). Compare the two columns of one invocation.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event

from bench.common import sqlite_database
from bench.measure_stask import NOOP, prepared_app, quiet_logs
from stask import Stask
from stask.db.rows import final_payload
from stask.db.tables import tasks
from stask.models import Claim, Outcome, Status, utcnow

NODE = "bench-turncost"
STATUS_AT = [column.name for column in tasks.c].index("status")
DONE = Outcome(Status.COMPLETED, duration_ms=1, peak_memory=1)


def _stored(moment: dt.datetime) -> str:
    """A datetime as SQLAlchemy's SQLite type stores (and binds) it."""
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def stask_turns(app: Stask, batch: int, turns: int) -> tuple[float, str, tuple[Any, ...], str]:
    """Seconds per turn through stask, and the last turn's SQL, parameters and ``now``."""
    identifiers = sorted(app.registry.classes())
    seen: dict[str, Any] = {}

    def capture(_c: Any, _cur: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        if "json_each" in statement and "RETURNING" in statement:
            seen["sql"], seen["params"] = statement, parameters

    event.listen(app.store.engine, "before_cursor_execute", capture)
    finished: list[tuple[Claim, Outcome]] = []
    started = time.perf_counter()
    try:
        for turn in range(turns + 1):
            now = utcnow()
            claimed, _ = app.store.claims.record_and_claim(
                NODE, identifiers, batch, finished=finished, now=now
            )
            if len(claimed) != batch:
                raise RuntimeError(f"turn {turn} claimed {len(claimed)} of {batch}")
            finished = [(task.claim, DONE) for task in claimed]
            seen["token"] = claimed[0].claim_token  # the token of the statement captured last
            if turn == turns - 1:
                elapsed = time.perf_counter() - started
    finally:
        event.remove(app.store.engine, "before_cursor_execute", capture)
    params = tuple(seen["params"])
    return elapsed / turns, seen["sql"], params, _stored(now), seen["token"]


class Replay:
    """The captured statement on a bare sqlite3 connection, fed each turn's own outcomes."""

    def __init__(
        self, path: str, sql: str, params: tuple[Any, ...], captured_now: str, token: str
    ) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA synchronous = FULL")
        self.sql = sql
        self.params = params
        self.captured_now = captured_now
        self.rows_at = next(i for i, value in enumerate(params) if str(value).startswith("[{"))
        self.claimed: list[int] = []
        self.token = token  # every replayed claim writes the captured turn's token

    def turn(self) -> None:
        rows = final_payload([(Claim(task_id, self.token), DONE) for task_id in self.claimed])
        now = _stored(utcnow())
        params = [
            rows if index == self.rows_at else now if value == self.captured_now else value
            for index, value in enumerate(self.params)
        ]
        self.conn.execute("BEGIN IMMEDIATE")
        returned = self.conn.execute(self.sql, params).fetchall()
        self.conn.execute("COMMIT")
        self.claimed = [row[0] for row in returned if row[STATUS_AT] == Status.RUNNING.code]

    def seconds_per_turn(self, turns: int) -> float:
        started = time.perf_counter()
        for _ in range(turns):
            self.turn()
        return (time.perf_counter() - started) / turns

    def wal_pages_per_turn(self, path: str, turns: int) -> float:
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.execute("PRAGMA wal_autocheckpoint = 0")
        page = int(self.conn.execute("PRAGMA page_size").fetchone()[0])
        for _ in range(turns):
            self.turn()
        frames = (Path(f"{path}-wal").stat().st_size - 32) / (page + 24)
        self.conn.execute("PRAGMA wal_autocheckpoint = 1000")
        return frames / turns


def measure(batch: int, turns: int, rounds: int) -> dict[str, Any]:
    page_turns = 100
    with sqlite_database("turncost.db") as db, tempfile.TemporaryDirectory() as storage:
        app = prepared_app(db, Path(storage))
        try:
            total = (2 * rounds * (turns + 1) + page_turns + 2) * batch
            for start in range(0, total, 5000):
                app.create_many([NOOP] * min(5000, total - start))
            through_stask, through_sqlite3 = [], []
            replay: Replay | None = None
            for _ in range(rounds):  # alternating, so drift hits both alike
                seconds, sql, params, now, token = stask_turns(app, batch, turns)
                through_stask.append(seconds)
                if replay is None:
                    replay = Replay(db.dsn, sql, params, now, token)
                through_sqlite3.append(replay.seconds_per_turn(turns))
            assert replay is not None
            pages = replay.wal_pages_per_turn(db.dsn, page_turns)
        finally:
            app.close()
    stask_us = statistics.median(through_stask) * 1e6
    sqlite3_us = statistics.median(through_sqlite3) * 1e6
    return {
        "batch": batch,
        "turns": turns,
        "rounds": rounds,
        "stask_us_per_turn": round(stask_us),
        "sqlite3_us_per_turn": round(sqlite3_us),
        "python_share": round(1 - sqlite3_us / stask_us, 2),
        "wal_pages_per_turn": round(pages, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="2,8", help="tasks per turn (default 2,8)")
    parser.add_argument("--turns", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.turns < 1 or args.rounds < 1:
        parser.error("--turns and --rounds must be at least 1")
    quiet_logs()
    figures = [measure(int(b), args.turns, args.rounds) for b in args.batches.split(",")]
    print("tasks/turn  stask us/turn  bare sqlite3 us/turn  Python share  WAL pages/turn")
    for row in figures:
        print(
            f"{row['batch']:>10}  {row['stask_us_per_turn']:>13}  {row['sqlite3_us_per_turn']:>20}"
            f"  {row['python_share']:>12.0%}  {row['wal_pages_per_turn']:>14}"
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
