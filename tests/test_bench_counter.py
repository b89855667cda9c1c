"""The benchmark's statement counter (bench/sqlcount.py), on the figures it reports."""

from __future__ import annotations

from bench.sqlcount import SqlCounter

from stask import Stask
from stask.db.dialects import hot_path_store

# Round trips of one runner turn on the hot path (no pre-ping): PostgreSQL runs it as one
# statement in autocommit, where psycopg sends no BEGIN or COMMIT; SQLite sends its own
# BEGIN IMMEDIATE, the statement and COMMIT.
TURN_ROUND_TRIPS = {"postgresql": 1, "sqlite": 3}


def test_counter_counts_no_begin_or_commit_that_autocommit_never_sends(
    app: Stask, dialect: str
) -> None:
    app.create_many([("inventory", "sync_stock")] * 4)
    store = hot_path_store(app.store)
    first, _ = store.claims.record_and_claim("n1", ["inventory"], 2)  # fills the 1 s control caches
    counter = SqlCounter(store.engine).attach()
    try:
        claimed, _ = store.claims.record_and_claim("n1", ["inventory"], 2)
    finally:
        counter.detach()
        store.dispose()
    figures = counter.per_task(1)
    assert len(first) == len(claimed) == 2, counter.kinds
    assert figures["calls_per_task"] >= 1
    assert figures["transactions_per_task"] >= 1
    if dialect in TURN_ROUND_TRIPS:
        assert figures["round_trips_per_task"] == TURN_ROUND_TRIPS[dialect]
    else:  # MariaDB: the general transaction, each statement and the COMMIT a round trip
        assert figures["round_trips_per_task"] > figures["calls_per_task"]
