"""``python -m bench.run``: stask beside a raw SQL loop (and pgqueuer, procrastinate), as ratios.

Every figure is measured in this invocation next to its baseline, because the machine is shared
and noisy: compare ratios across runs, not absolute numbers. Results: a table on the terminal
and JSON in ``bench/results/latest.json`` (or ``--json PATH``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench import measure_stask as stask_side
from bench import raw, runners, startup, unanalyzed
from bench.common import DEFAULT_POSTGRES, ROOT, Database, database, idle_rss, machine_info
from bench.report import print_table, table_rows

DIALECTS = ("sqlite", "postgresql")
SECTIONS = (
    "enqueue",
    "drain",
    "latency",
    "rss",
    "progress",
    "runners",
    "startup",
    "unanalyzed",
    "peers",
)
PREFETCH_TRIAL = 12  # 3x concurrency 4: the extra, non-default drain row
LONG_TASK_MS = 200  # runners: the long tasks
MIXED_LONG_MS = 500  # runners: the long tenth of the mixed queue
MIXED_LONG_SHARE = 0.1
MIXED_SEED = 20_240_602
PEERS_PYTHON = ROOT / "bench" / ".venv-peers" / "bin" / "python"
RESULTS = ROOT / "bench" / "results" / "latest.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts, under 2 minutes")
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated sections ({', '.join(SECTIONS)}) and/or databases "
        f"({', '.join(DIALECTS)})",
    )
    parser.add_argument("--json", type=Path, default=RESULTS, help="where to write the results")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="libpq URL to CREATE from")
    parser.add_argument("--tasks", type=int, help="tasks per drain (default 10,000; quick 1,500)")
    parser.add_argument("--raw-poll-ms", type=float, default=raw.DEFAULT_POLL_SECONDS * 1000)
    args = parser.parse_args(argv)
    wanted = {name.strip() for name in args.only.split(",") if name.strip()}
    unknown = wanted - set(SECTIONS) - set(DIALECTS)
    if unknown:
        parser.error(f"unknown --only names: {', '.join(sorted(unknown))}")
    args.sections = [s for s in SECTIONS if s in wanted] or list(SECTIONS)
    args.dialects = [d for d in DIALECTS if d in wanted] or list(DIALECTS)
    quick = args.quick
    args.tasks = args.tasks or (1_500 if quick else 10_000)
    args.single = 200 if quick else 1_000
    args.samples = 8 if quick else 20
    rng = random.Random(20_240_601)
    low, high = (0.05, 0.5) if quick else (0.1, 1.5)
    args.gaps = [round(rng.uniform(low, high), 3) for _ in range(args.samples)]
    args.progress_repeats = 1 if quick else 3
    args.peer_cap = 4.0 if quick else 20.0
    # runners: two runners' makespan (2,000 x 200 ms / 8 slots = 50 s), one runner's (600 x
    # 200 ms / 4 = 30 s), the mixed queue's (200 x 500 ms / 8 = 12.5 s)
    args.runner_tasks = 200 if quick else 2_000
    args.one_runner_tasks = 100 if quick else 600
    args.mixed_tasks = 300 if quick else 2_000
    # startup: process starts per side; the producer process's samples and gaps
    args.starts = 3 if quick else 5
    args.import_repeats = 5
    args.process_samples = 8 if quick else 20
    process_rng = random.Random(20_240_603)
    args.process_gaps = [
        round(process_rng.uniform(0.1, 1.0), 3) for _ in range(args.process_samples)
    ]
    # unanalyzed: tasks per drain, rounds of both cases
    args.unanalyzed_tasks = 1_500 if quick else 4_000
    args.unanalyzed_rounds = 2 if quick else 3
    return args


def attempt(what: str, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one measurement; a failure is recorded as text instead of a figure."""
    print(f"  {what} ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        result = measure()
    except Exception as err:
        print(f"    failed: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        return {"error": f"{type(err).__name__}: {err}".strip()[:500]}
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    return result


@contextlib.contextmanager
def stask_db(dialect: str, args: argparse.Namespace) -> Iterator[tuple[Database, Path]]:
    with (
        database(dialect, args.postgres, "bench_stask") as db,
        tempfile.TemporaryDirectory(prefix="stask-storage-") as storage,
    ):
        yield db, Path(storage)


def raw_db(dialect: str, args: argparse.Namespace) -> contextlib.AbstractContextManager[Database]:
    return database(dialect, args.postgres, "bench_raw")


def measure_dialect(dialect: str, args: argparse.Namespace, config: Path) -> dict[str, Any]:
    """stask and its raw baseline on one database kind, each pair measured back to back."""
    found: dict[str, dict[str, Any]] = {"raw": {}, "stask": {}}
    if "drain" in args.sections:
        for c in (1, 4):
            found["raw"][f"drain_c{c}"] = attempt(
                f"raw {dialect} drain c={c}", lambda c=c: raw_drain(dialect, args, c)
            )
            found["stask"][f"drain_c{c}"] = attempt(
                f"stask {dialect} drain c={c}", lambda c=c: stask_drain(dialect, args, c)
            )
        # Not the default: what a larger prefetch (turns of 16 tasks) buys; see the README.
        found["stask"]["drain_c4_prefetch12"] = attempt(
            f"stask {dialect} drain c=4 prefetch 12",
            lambda: stask_drain(dialect, args, 4, prefetch=PREFETCH_TRIAL),
        )
    if {"enqueue", "latency", "progress", "rss"} & set(args.sections):
        with stask_db(dialect, args) as (db, storage), raw_db(dialect, args) as raw_base:
            raw.setup(raw_base)
            app = stask_side.prepared_app(db, storage)
            try:
                for side, key, value in paired_figures(app, db, storage, raw_base, config, args):
                    found[side][key] = value
            finally:
                app.close()
    if "runners" in args.sections:
        found["stask"].update(runner_figures(dialect, args))
    if "startup" in args.sections:
        for key, figures in startup_figures(dialect, args, config):
            mine, base = both_sides(figures)
            found["stask"][key], found["raw"][key] = mine, base
        found["stask"]["imports"] = attempt(
            f"python -c 'import ...' x{args.import_repeats}",
            lambda: startup.import_times(args.import_repeats),
        )
    if "unanalyzed" in args.sections and dialect == "postgresql":
        found["stask"]["unanalyzed"] = attempt(
            f"stask worker process: drain of {args.unanalyzed_tasks} never analyzed vs analyzed"
            f" x{args.unanalyzed_rounds}",
            lambda: unanalyzed.compare(
                args.postgres, config, args.unanalyzed_tasks, args.unanalyzed_rounds
            ),
        )
    return found


def runner_figures(dialect: str, args: argparse.Namespace) -> Iterator[tuple[str, dict[str, Any]]]:
    """Makespans of long tasks: two runners, one runner (the other stopped), a mixed queue."""
    with stask_db(dialect, args) as (db, storage):
        yield (
            "runners_two",
            attempt(
                f"stask {dialect} 2 runners x4, {args.runner_tasks} x {LONG_TASK_MS} ms",
                lambda: runners.long_tasks(db, storage, args.runner_tasks, LONG_TASK_MS),
            ),
        )
    with stask_db(dialect, args) as (db, storage):
        yield (
            "runners_one",
            attempt(
                f"stask {dialect} 1 runner x4 (other stopped), {args.one_runner_tasks} x "
                f"{LONG_TASK_MS} ms",
                lambda: runners.long_tasks(
                    db, storage, args.one_runner_tasks, LONG_TASK_MS, keep=1
                ),
            ),
        )
    with stask_db(dialect, args) as (db, storage):
        yield (
            "runners_mixed",
            attempt(
                f"stask {dialect} 2 runners x4, mixed queue of {args.mixed_tasks}",
                lambda: runners.mixed_queue(
                    db, storage, args.mixed_tasks, MIXED_LONG_MS, MIXED_LONG_SHARE, MIXED_SEED
                ),
            ),
        )


def startup_figures(
    dialect: str, args: argparse.Namespace, config: Path
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The worker process against the raw consumer process: start-up, producer-process pickup."""
    poll = args.raw_poll_ms / 1000
    yield (
        "startup",
        attempt(
            f"{dialect} start-up to first task, stask worker and raw consumer x{args.starts}",
            lambda: startup.startup_times(dialect, args.postgres, config, args.starts, poll),
        ),
    )
    yield (
        "pickup_process",
        attempt(
            f"{dialect} pickup from a producer process x{args.process_samples}, raw then stask",
            lambda: startup.producer_pickup(
                dialect, args.postgres, config, args.process_gaps, poll
            ),
        ),
    )


def both_sides(figures: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A measurement of both sides at once, split into stask's and raw's (an error: both)."""
    if "error" in figures:
        return figures, figures
    wall = {"wall_seconds_both": figures.get("wall_seconds")}
    return figures["stask"] | wall, figures["raw"] | wall


def raw_drain(dialect: str, args: argparse.Namespace, concurrency: int) -> dict[str, Any]:
    with raw_db(dialect, args) as db:
        raw.setup(db)
        return raw.drain(db, args.tasks, concurrency)


def stask_drain(
    dialect: str, args: argparse.Namespace, concurrency: int, prefetch: int | None = None
) -> dict[str, Any]:
    with stask_db(dialect, args) as (db, storage):
        return stask_side.drain(db, storage, args.tasks, concurrency, prefetch)


def paired_figures(
    app: Any, db: Database, storage: Path, base: Database, config: Path, args: Any
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(side, key, figures) for the measurements that share one database per side."""
    name = db.dialect
    poll = args.raw_poll_ms / 1000
    if "rss" in args.sections:  # first, while both queues are empty
        argv = [sys.executable, "-m", "bench.raw", "idle", "--dialect", name, "--dsn", base.dsn]
        argv += ["--poll", str(poll)]
        yield (
            "raw",
            "idle_rss",
            attempt(f"raw {name} idle RSS", lambda: {"rss_mb": idle_rss(argv, env=None)}),
        )
        yield (
            "stask",
            "idle_rss",
            attempt(
                f"stask {name} idle RSS", lambda: stask_side.idle_worker_rss(db, storage, config)
            ),
        )
    if "enqueue" in args.sections:
        yield (
            "raw",
            "enqueue",
            attempt(
                f"raw {name} insert x{args.single}", lambda: raw.enqueue_rate(base, args.single)
            ),
        )
        yield (
            "stask",
            "enqueue",
            attempt(
                f"stask {name} create x{args.single}",
                lambda: stask_side.enqueue_rate(app, args.single),
            ),
        )
        stask_side.clear_queue(app)
        raw.clear(base)
    if "latency" in args.sections:
        yield (
            "raw",
            "latency",
            attempt(
                f"raw {name} pickup latency (poll {args.raw_poll_ms:g} ms)",
                lambda: raw.pickup_latency(base, args.samples, args.gaps, poll),
            ),
        )
        other = stask_side.make_app(db, storage)
        try:
            yield (
                "stask",
                "latency_other",
                attempt(
                    f"stask {name} pickup latency, producer with its own engine",
                    lambda: stask_side.pickup_latency(app, other, args.samples, args.gaps),
                ),
            )
        finally:
            other.close()
        yield (
            "stask",
            "latency_same",
            attempt(
                f"stask {name} pickup latency, producer is the runner's app",
                lambda: stask_side.pickup_latency(app, app, args.samples, args.gaps),
            ),
        )
    if "progress" in args.sections:
        yield (
            "stask",
            "progress",
            attempt(
                f"stask {name} progress overhead",
                lambda: stask_side.progress_overhead(
                    app, stask_side.PROGRESS_CALLS, args.progress_repeats
                ),
            ),
        )


def measure_peers(args: argparse.Namespace) -> dict[str, Any]:
    if not PEERS_PYTHON.exists():
        note = f"{PEERS_PYTHON} is missing - `make bench` creates it (see bench/README.md)"
        return {"pgqueuer": {"error": note}, "procrastinate": {"error": note}}
    argv = [str(PEERS_PYTHON), "-m", "bench.peers", "measure", "--admin", args.postgres]
    argv += ["--tasks", str(args.tasks), "--single", str(args.single)]
    argv += ["--samples", str(args.samples), "--cap", str(args.peer_cap)]
    argv += ["--gaps", ",".join(str(g) for g in args.gaps)]
    print("  pgqueuer and procrastinate (bench/.venv-peers) ...", file=sys.stderr, flush=True)
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False, timeout=900)
    try:
        return dict(json.loads(done.stdout))
    except json.JSONDecodeError:
        note = f"peers script failed (exit {done.returncode}): {done.stderr.strip()[-400:]}"
        return {"pgqueuer": {"error": note}, "procrastinate": {"error": note}}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    for key in [k for k in os.environ if k.startswith("STASK_")]:
        del os.environ[key]  # the benchmark's settings only
    stask_side.quiet_logs()
    started = time.monotonic()
    load_before = os.getloadavg()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="stask-bench-") as folder:
        config = Path(folder) / "stask.toml"
        config.write_text("# empty: the benchmark passes its settings explicitly\n")
        os.environ["STASK_CONFIG"] = str(config)
        for dialect in args.dialects:
            print(f"{dialect}:", file=sys.stderr, flush=True)
            results[dialect] = measure_dialect(dialect, args, config)
    if "peers" in args.sections and "postgresql" in args.dialects:
        results["peers"] = measure_peers(args)
    report = {
        "command": "python -m bench.run " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_seconds": round(time.monotonic() - started, 1),
        "machine": machine_info(args.postgres if "postgresql" in args.dialects else None)
        | {"loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "parameters": {
            "tasks_per_drain": args.tasks,
            "single_enqueues": args.single,
            "latency_samples": args.samples,
            "latency_gaps_seconds": args.gaps,
            "raw_poll_ms": args.raw_poll_ms,
            "progress_calls": stask_side.PROGRESS_CALLS,
            "progress_repeats": args.progress_repeats,
            "peer_drain_cap_seconds": args.peer_cap,
            "runner_long_tasks": args.runner_tasks,
            "one_runner_long_tasks": args.one_runner_tasks,
            "long_task_ms": LONG_TASK_MS,
            "mixed_tasks": args.mixed_tasks,
            "mixed_long_ms": MIXED_LONG_MS,
            "mixed_long_share": MIXED_LONG_SHARE,
            "mixed_seed": MIXED_SEED,
            "startup_starts": args.starts,
            "import_repeats": args.import_repeats,
            "process_pickup_samples": args.process_samples,
            "process_pickup_gaps_seconds": args.process_gaps,
            "unanalyzed_tasks": args.unanalyzed_tasks,
            "unanalyzed_rounds": args.unanalyzed_rounds,
            "unanalyzed_idle_seconds": unanalyzed.IDLE_SECONDS,
        },
        "results": results,
    }
    report["table"] = table_rows(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print_table(report)
    print(f"JSON: {args.json}  ({report['wall_seconds']} s)")


if __name__ == "__main__":
    main()
