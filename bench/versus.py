"""``python -m bench.versus REV``: the runner's drains at REV and in this tree, alternated.

A change to the runner's hot path is judged against the code before it, in the same
invocation, because this machine's speed drifts between runs by more than most changes
matter. Each round drains ``--tasks`` no-op tasks (``bench.measure_stask.drain``, default
runner options) with REV's code and with this tree's, one after the other, in fresh processes
and fresh databases; the table gives each side's median and their ratio.

REV is checked out into a temporary git worktree and imported from there (``PYTHONPATH``);
the measuring code is REV's own ``bench``, so REV needs a ``bench.measure_stask.drain`` with
the signature used here (any commit since the drain bench existed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import DEFAULT_POSTGRES, ROOT

# Run inside the measured tree: one drain, its tasks per second as JSON on stdout.
ONE_DRAIN = """
import json, sys, tempfile
from pathlib import Path
from bench import measure_stask
from bench.common import database
dialect, concurrency, tasks, admin = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
with database(dialect, admin) as db, tempfile.TemporaryDirectory() as storage:
    found = measure_stask.drain(db, Path(storage), tasks, concurrency)
print(json.dumps({"per_second": found["per_second"]}))
"""
CASES = (("postgresql", 4), ("postgresql", 1), ("sqlite", 4), ("sqlite", 1))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.versus", description=__doc__)
    parser.add_argument("rev", help="the commit to compare this tree with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="libpq URL to CREATE from")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.tasks < 1:
        parser.error("--rounds and --tasks must be at least 1")
    return args


def drain(tree: Path, dialect: str, concurrency: int, tasks: int, admin: str) -> float:
    done = subprocess.run(
        [sys.executable, "-c", ONE_DRAIN, dialect, str(concurrency), str(tasks), admin],
        cwd=tree,
        env={"PYTHONPATH": f"{tree / 'src'}:{tree}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"drain in {tree} failed:\n{done.stderr[-2000:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["per_second"])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    found: dict[tuple[str, int, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="stask-versus-") as folder:
        old = Path(folder) / "old"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(old), args.rev],
            check=True,
        )
        try:
            for round_number in range(1, args.rounds + 1):
                for dialect, concurrency in CASES:
                    for side, tree in (("old", old), ("new", ROOT)):
                        rate = drain(tree, dialect, concurrency, args.tasks, args.postgres)
                        found.setdefault((dialect, concurrency, side), []).append(rate)
                        print(
                            f"round {round_number} {dialect} c={concurrency} {side}: {rate:,.0f}/s"
                        )
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=False
            )
    print(f"\nmedians of {args.rounds} rounds, {args.tasks:,} no-op tasks, tasks/s")
    print(f"{'drain':<26}{args.rev[:10]:>12}{'this tree':>12}{'new/old':>10}")
    for dialect, concurrency in CASES:
        before = statistics.median(found[dialect, concurrency, "old"])
        after = statistics.median(found[dialect, concurrency, "new"])
        name = f"{dialect}, concurrency {concurrency}"
        print(f"{name:<26}{before:>12,.0f}{after:>12,.0f}{after / before:>9.2f}x")


if __name__ == "__main__":
    main()
