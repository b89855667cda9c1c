"""How many of a claim's tasks start with it: Little's law over what the runner observed.

A prefetched task is held, not started: its attempt is counted and its ``started_at`` written
only when a thread takes it up, which costs one more statement (and commit) per task. A task
that a thread will take up within about one turn's latency starts with the claim instead, so a
stream of short tasks pays nothing extra, while tasks behind long-running ones stay unstarted:
a crash spends no attempt on them and a cancel ends them before they start.
"""

from __future__ import annotations

# Weight of the newest observation in the running means.
SMOOTHING = 0.1


class Pace:
    """Running means of one runner's attempt durations and turn latencies (seconds).

    Updated from several threads without a lock: an update lost to a race only makes a mean
    lag by one observation, which a lock on every task's path is not worth.
    """

    def __init__(self) -> None:
        self.attempt_seconds: float | None = None
        self.turn_seconds: float | None = None

    def attempt_took(self, seconds: float) -> None:
        self.attempt_seconds = _mean(self.attempt_seconds, seconds)

    def turn_took(self, seconds: float) -> None:
        self.turn_seconds = _mean(self.turn_seconds, seconds)

    def drain_wait(self, in_hand: int, concurrency: int) -> float:
        """Seconds worth waiting before a turn for the ``in_hand`` tasks to finish: their
        expected time when that is under half a turn, else 0 (claim now)."""
        attempt, turn = self.attempt_seconds, self.turn_seconds
        if not in_hand or attempt is None or turn is None:
            return 0.0
        expected = in_hand * attempt / concurrency
        return expected if expected < turn / 2 else 0.0

    def starting(self, free: int, want: int, concurrency: int) -> int:
        """Of ``want`` tasks claimed now, how many start with the claim: one per free slot,
        plus what ``concurrency`` slots finish within one turn at the observed pace. Before
        anything was observed, only the free slots."""
        attempt, turn = self.attempt_seconds, self.turn_seconds
        soon = 0
        if attempt is not None and turn is not None:
            soon = want if attempt <= 0 else int(concurrency * turn / attempt)
        return max(0, min(want, free + soon))


def _mean(current: float | None, seconds: float) -> float:
    seconds = max(0.0, seconds)
    return seconds if current is None else current + SMOOTHING * (seconds - current)
