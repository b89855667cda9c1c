"""The benchmark's table: each figure, its baseline, the ratio, the peers, the issue's target."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

Path = tuple[str, ...]
Check = Callable[[str, float, float | None], tuple[str, bool | None]]


def _times_raw(postgresql: float, sqlite: float) -> Check:
    """At least this many times the raw loop, per database (issue 14's drain targets)."""

    def check(db: str, value: float, base: float | None) -> tuple[str, bool | None]:
        times = sqlite if db == "sqlite" else postgresql
        return f">= {times:g}x raw", None if base is None else value >= times * base

    return check


def _create_one(_db: str, value: float, base: float | None) -> tuple[str, bool | None]:
    return ">= 0.8x raw", None if base is None else value >= 0.8 * base


def _create_many(db: str, value: float, base: float | None) -> tuple[str, bool | None]:
    if db == "sqlite":
        return ">= 0.5x raw", None if base is None else value >= 0.5 * base
    return ">= pgqueuer bulk", None  # its figure is in the pgqueuer column


def _pickup(db: str, value: float, base: float | None) -> tuple[str, bool | None]:
    if db == "sqlite":
        return "p50 <= 5 ms", value <= 5.0
    return "p50 <= raw", None if base is None else value <= base


def _statements(_db: str, value: float, _base: float | None) -> tuple[str, bool | None]:
    return "<= 1", value <= 1.0


def _rss(db: str, value: float, _base: float | None) -> tuple[str, bool | None]:
    limit = 45.0 if db == "sqlite" else 55.0  # issue 14: no regression past these
    return f"<= {limit:g} MB", value <= limit


def _progress(_db: str, value: float, _base: float | None) -> tuple[str, bool | None]:
    return "<= 0.2 s", value <= 0.2


def _near_ideal(_db: str, value: float, base: float | None) -> tuple[str, bool | None]:
    return "<= 1.1x ideal", None if base is None else value <= 1.1 * base


def _startup(_db: str, value: float, _base: float | None) -> tuple[str, bool | None]:
    return "<= 0.35 s", value <= 0.35


def _process_pickup(_db: str, value: float, base: float | None) -> tuple[str, bool | None]:
    return "p50 <= 1.2x raw", None if base is None else value <= 1.2 * base


def _unanalyzed(_db: str, value: float, base: float | None) -> tuple[str, bool | None]:
    return ">= 0.9x analyzed", None if base is None else value >= 0.9 * base


@dataclass(frozen=True)
class Figure:
    label: str
    stask: Path | None  # in results[db]["stask"]
    raw: Path | None  # in results[db]["raw"], or results[db]["stask"] when raw_from_stask
    peer: Path | None = None  # in results["peers"][system], PostgreSQL rows only
    better: str = "higher"
    check: Check | None = None
    dialects: tuple[str, ...] = ("sqlite", "postgresql")
    raw_from_stask: bool = False


FIGURES = (
    Figure(
        "enqueue/s, create() one by one",
        ("enqueue", "per_second"),
        ("enqueue", "per_second"),
        ("enqueue", "per_second"),
        check=_create_one,
    ),
    Figure(
        "bulk enqueue/s, create_many() x1,000",
        ("drain_c4", "bulk_enqueue", "per_second"),
        ("drain_c4", "bulk_enqueue", "per_second"),
        ("drain_c4", "bulk_enqueue", "per_second"),
        check=_create_many,
    ),
    Figure(
        "drain/s, concurrency 1",
        ("drain_c1", "per_second"),
        ("drain_c1", "per_second"),
        ("drain_c1", "per_second"),
        check=_times_raw(postgresql=2.0, sqlite=1.0),
    ),
    Figure(
        "drain/s, concurrency 4",
        ("drain_c4", "per_second"),
        ("drain_c4", "per_second"),
        ("drain_c4", "per_second"),
        check=_times_raw(postgresql=2.5, sqlite=1.5),
    ),
    Figure(
        "drain/s, concurrency 4, prefetch 12 (not default)",
        ("drain_c4_prefetch12", "per_second"),
        ("drain_c4", "per_second"),
        None,
    ),
    Figure(
        "drain/s, pgqueuer defaults",
        None,
        None,
        ("drain_defaults", "per_second"),
        dialects=("postgresql",),
    ),
    Figure(
        "pickup p50 ms, producer elsewhere",
        ("latency_other", "p50_ms"),
        ("latency", "p50_ms"),
        ("latency", "p50_ms"),
        better="lower",
        check=_pickup,
    ),
    Figure(
        "pickup p95 ms, producer elsewhere",
        ("latency_other", "p95_ms"),
        ("latency", "p95_ms"),
        ("latency", "p95_ms"),
        better="lower",
    ),
    Figure(
        "pickup p50 ms, same-process create()",
        ("latency_same", "p50_ms"),
        ("latency", "p50_ms"),
        better="lower",
        check=_pickup,
    ),
    Figure(
        "pickup p95 ms, same-process create()",
        ("latency_same", "p95_ms"),
        ("latency", "p95_ms"),
        better="lower",
    ),
    Figure(
        "SQL statements/task, drain c=4",
        ("drain_c4", "sql", "statements_per_task"),
        ("drain_c4", "sql", "statements_per_task"),
        ("drain_c4", "sql", "statements_per_task"),
        better="lower",
        check=_statements,
    ),
    Figure(
        "SQL statements/task, drain c=1",
        ("drain_c1", "sql", "statements_per_task"),
        ("drain_c1", "sql", "statements_per_task"),
        ("drain_c1", "sql", "statements_per_task"),
        better="lower",
        check=_statements,
    ),
    Figure(
        "round trips/task, drain c=4",
        ("drain_c4", "sql", "round_trips_per_task"),
        ("drain_c4", "sql", "round_trips_per_task"),
        ("drain_c4", "sql", "round_trips_per_task"),
        better="lower",
    ),
    Figure(
        "idle runner RSS MB",
        ("idle_rss", "rss_mb"),
        ("idle_rss", "rss_mb"),
        ("idle_rss", "rss_mb"),
        better="lower",
        check=_rss,
    ),
    Figure(
        "progress() x100k: task s (raw: empty loop)",
        ("progress", "progress_seconds"),
        ("progress", "empty_seconds"),
        better="lower",
        raw_from_stask=True,
    ),
    Figure(
        "progress() x100k: overhead s",
        ("progress", "overhead_seconds"),
        None,
        better="lower",
        check=_progress,
    ),
    # Section runners: the raw column is the ideal makespan (the work over every slot).
    Figure(
        "makespan s, 2 runners x4, 200 ms tasks (raw col: ideal = work / 8)",
        ("runners_two", "makespan_seconds"),
        ("runners_two", "ideal_seconds"),
        better="lower",
        check=_near_ideal,
        raw_from_stask=True,
    ),
    Figure(
        "  tasks run by runner 1 (raw col: an even share)",
        ("runners_two", "runner_1_tasks"),
        ("runners_two", "even_share"),
        better="even",
        raw_from_stask=True,
    ),
    Figure(
        "  tasks run by runner 2 (raw col: an even share)",
        ("runners_two", "runner_2_tasks"),
        ("runners_two", "even_share"),
        better="even",
        raw_from_stask=True,
    ),
    Figure(
        "makespan s, 1 runner x4 (other stopped), 200 ms tasks (raw col: work / 4)",
        ("runners_one", "makespan_seconds"),
        ("runners_one", "ideal_seconds"),
        better="lower",
        check=_near_ideal,
        raw_from_stask=True,
    ),
    Figure(
        "makespan s, 2 runners x4, 90 % no-op + 10 % 500 ms (raw col: long work / 8)",
        ("runners_mixed", "makespan_seconds"),
        ("runners_mixed", "ideal_seconds"),
        better="lower",
        raw_from_stask=True,
    ),
    # Section startup: the real `stask worker` process against the raw consumer process.
    Figure(
        "start-up s, new worker process to first task (median)",
        ("startup", "median_seconds"),
        ("startup", "median_seconds"),
        better="lower",
        check=_startup,
    ),
    Figure(
        "  of which: python -c 'import stask.cli' s (raw col: import bench.raw)",
        ("imports", "stask_cli_seconds"),
        ("imports", "bench_raw_seconds"),
        better="lower",
        raw_from_stask=True,
    ),
    Figure(
        "pickup p50 ms, producer process -> worker process",
        ("pickup_process", "p50_ms"),
        ("pickup_process", "p50_ms"),
        better="lower",
        check=_process_pickup,
    ),
    Figure(
        "pickup p95 ms, producer process -> worker process",
        ("pickup_process", "p95_ms"),
        ("pickup_process", "p95_ms"),
        better="lower",
    ),
    # Section unanalyzed: the raw column is the same drain after ANALYZE.
    Figure(
        "drain/s, worker process c=4, tables never analyzed (raw col: analyzed)",
        ("unanalyzed", "unanalyzed", "per_second"),
        ("unanalyzed", "analyzed", "per_second"),
        check=_unanalyzed,
        dialects=("postgresql",),
        raw_from_stask=True,
    ),
)
PEERS = ("pgqueuer", "procrastinate")


def _dig(tree: Any, path: Path | None) -> tuple[float | None, str | None]:
    """The number at ``path``, or None with the error or partial note found on the way."""
    if path is None:
        return None, None
    node = tree
    for key in path:
        if not isinstance(node, dict):
            return None, None
        if "error" in node:
            return None, str(node["error"])
        node = node.get(key)
    if isinstance(node, int | float):
        return float(node), None
    return None, None


def _partial(tree: Any, path: Path | None) -> str | None:
    """A capped drain's note, for the figures measured on that drain (not its bulk enqueue)."""
    if path and "bulk_enqueue" in path:
        return None
    if path and isinstance(tree, dict) and isinstance(tree.get(path[0]), dict):
        note = tree[path[0]].get("partial")
        return str(note) if note else None
    return None


def table_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    results = report["results"]
    rows = []
    for db in ("sqlite", "postgresql"):
        if db not in results:
            continue
        for figure in FIGURES:
            if db not in figure.dialects:
                continue
            rows.append(_row(figure, db, results))
    return [row for row in rows if any(row[k] is not None for k in ("stask", "raw", *PEERS))]


def _row(figure: Figure, db: str, results: dict[str, Any]) -> dict[str, Any]:
    mine = results[db].get("stask", {})
    base_tree = mine if figure.raw_from_stask else results[db].get("raw", {})
    value, error = _dig(mine, figure.stask)
    base, base_error = _dig(base_tree, figure.raw)
    row: dict[str, Any] = {
        "figure": figure.label,
        "db": db,
        "better": figure.better,
        "stask": value,
        "raw": base,
        "ratio": round(value / base, 3) if value is not None and base else None,
        "errors": [e for e in (error, base_error) if e],
        "target": None,
        "met": None,
    }
    for system in PEERS:
        tree = results.get("peers", {}).get(system, {}) if db == "postgresql" else {}
        row[system], peer_error = _dig(tree, figure.peer)
        row[f"{system}_note"] = peer_error or _partial(tree, figure.peer)
    if figure.check is not None and value is not None:
        row["target"], row["met"] = figure.check(db, value, base)
    return row


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def print_table(report: dict[str, Any]) -> None:
    table = Table(title=f"stask benchmark - {report['command']}", title_justify="left")
    for name in ("figure", "db", "stask", "raw loop", "stask/raw", *PEERS, "target", "met"):
        numeric = name not in ("figure", "db", "target", "met")
        table.add_column(name, justify="right" if numeric else "left")
    notes: list[str] = []
    for row in report["table"]:
        cells = [row["figure"], "SQLite" if row["db"] == "sqlite" else "PostgreSQL"]
        cells.append(_fmt(row["stask"]) if not row["errors"] else "error")
        cells += [_fmt(row["raw"]), f"{row['ratio']:.2f}x" if row["ratio"] is not None else "-"]
        for system in PEERS:
            cell = _fmt(row[system])
            if row[f"{system}_note"]:
                notes.append(
                    f"[{len(notes) + 1}] {system}, {row['figure']}: {row[system + '_note']}"
                )
                cell += f" [{len(notes)}]"
            cells.append(cell)
        met = {True: "[green]met[/]", False: "[red]MISSED[/]", None: "-"}[row["met"]]
        cells += [row["target"] or "", met]
        for error in row["errors"]:
            notes.append(f"[{len(notes) + 1}] {row['figure']} ({row['db']}): {error}")
        table.add_row(*cells)
    console = Console(width=180)
    console.print(table)
    for note in notes:
        console.print(note, soft_wrap=True)
    machine = report["machine"]
    console.print(
        f"{machine.get('cores')} cores, Python {machine.get('python')}, SQLite "
        f"{machine.get('sqlite')}, PostgreSQL {machine.get('postgresql', '-')}; stask/raw "
        "above 1 is better for rates, below 1 for times, sizes and counts; where a figure names "
        "its raw col, that column holds the baseline it names instead of the raw loop."
    )
