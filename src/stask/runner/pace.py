"""How much a runner claims ahead, and which of a claim's tasks start with it: Little's law over
what the runner observed.

A runner learns how long each worker's actions take (a running mean per worker and action,
seeded from recent finished tasks in the database) and how long its own turns take. Slots finish
``concurrency / mean attempt`` tasks a second, so within one turn they finish
``concurrency * turn / mean attempt``: that many tasks are worth claiming ahead (the prefetch),
within ``PREFETCH_PER_SLOT`` per slot. Short tasks then stream at the speed of the turns rather
than of one turn per batch of slots, while long ones are never held: a task claimed beyond the
slots free now must be of an action known to finish within a turn. An action never seen is
not claimed ahead (the conservative default) until this runner has timed it.

A prefetched task is held, not started: its attempt is counted and its ``started_at`` written
only when a thread takes it up, which costs one more statement (and commit) per task. A task
that a thread will take up within about one turn's latency starts with the claim instead, so a
stream of short tasks pays nothing extra, while tasks behind long-running ones stay unstarted:
a crash spends no attempt on them and a cancel ends them before they start.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# Weight of the newest observation in the running means (once an action has been seen this
# many times, 1 / SMOOTHING; before that, the plain mean of what was seen).
SMOOTHING = 0.1
# Claimed ahead at most this many tasks per slot: past it, a bigger turn costs the database
# more than it saves (bench: concurrency 4 drained no-op tasks as fast with 60 ahead as with 200).
PREFETCH_PER_SLOT = 16
# An action counts as short when its mean attempt is within this share of a turn.
SHORT_SHARE = 1.0
# A seeded mean counts as this many observations at most, so the runner's own take over soon.
SEED_WEIGHT = 5
# How many actions a runner's heartbeat reports.
REPORTED_ACTIONS = 50


def action_key(identifier: str, action: str) -> str:
    """How the claim SQL names a worker's action (identifiers are ``[a-z][a-z0-9_]*``)."""
    return f"{identifier}:{action}"


@dataclass(frozen=True, slots=True)
class Learned:
    """One action's running mean attempt duration and how many attempts it weighs."""

    seconds: float
    seen: int


class Pace:
    """Running means of one runner's attempt durations (overall and per action) and turn
    latencies, in seconds, and the prefetch they call for.

    ``fixed`` is the ``--prefetch N`` of the command line: then the prefetch is N whatever was
    observed, and any action may be claimed ahead (the behaviour before it adapted).

    The overall means are updated from several threads without a lock: an update lost to a
    race only makes a mean lag by one observation. The per-action table takes a lock, as a
    new action grows it while the fetcher reads it.
    """

    def __init__(self, concurrency: int = 1, fixed: int | None = None) -> None:
        self.concurrency = concurrency
        self.fixed = fixed
        self.bound = PREFETCH_PER_SLOT * concurrency
        self.attempt_seconds: float | None = None
        self.turn_seconds: float | None = None
        self._actions: dict[str, Learned] = {}
        self._lock = threading.Lock()

    # -- what was observed ---------------------------------------------------------------------

    def seed(self, observed: Iterable[tuple[str, float, int]]) -> None:
        """Start from durations the database holds: (action key, mean seconds, attempts)."""
        total = weight = 0.0
        with self._lock:
            for key, seconds, seen in observed:
                if key not in self._actions and seen > 0:
                    self._actions[key] = Learned(max(0.0, seconds), min(seen, SEED_WEIGHT))
                    total += max(0.0, seconds) * seen
                    weight += seen
        if weight and self.attempt_seconds is None:  # the mix those attempts made
            self.attempt_seconds = total / weight

    def attempt_took(self, seconds: float, key: str | None = None) -> None:
        self.attempt_seconds = _mean(self.attempt_seconds, seconds)
        if key is None:
            return
        seconds = max(0.0, seconds)
        with self._lock:
            known = self._actions.get(key)
            if known is None:
                self._actions[key] = Learned(seconds, 1)
            else:
                seen = known.seen + 1
                weight = max(SMOOTHING, 1 / seen)
                mean = known.seconds + weight * (seconds - known.seconds)
                self._actions[key] = Learned(mean, seen)

    def turn_took(self, seconds: float) -> None:
        self.turn_seconds = _mean(self.turn_seconds, seconds)

    def learned(self) -> dict[str, Learned]:
        """Every action's mean so far (a copy)."""
        with self._lock:
            return dict(self._actions)

    def report(self) -> dict[str, Any]:
        """What ``stask runners`` shows: the prefetch now and the means it came from, in ms
        (at most ``REPORTED_ACTIONS`` actions, the most seen first)."""
        learned = sorted(self.learned().items(), key=lambda item: -item[1].seen)
        return {
            "prefetch": self.prefetch(),
            "adaptive": self.adaptive,
            "bound": self.bound if self.adaptive else self.fixed,
            "turn_ms": _ms(self.turn_seconds),
            "attempt_ms": _ms(self.attempt_seconds),
            "actions": {
                key: {"ms": _ms(item.seconds), "seen": item.seen}
                for key, item in learned[:REPORTED_ACTIONS]
            },
        }

    # -- what to claim -------------------------------------------------------------------------

    @property
    def adaptive(self) -> bool:
        return self.fixed is None

    def prefetch(self, moving: int | None = None) -> int:
        """How many tasks to hold beyond the slots: what the slots finish within a turn at the
        observed pace (Little's law), within the bound; none before anything was observed.

        ``moving`` is how many slots will take up another task soon (free, or running a short
        action; default: all): slots busy with long tasks finish nothing within a turn.
        """
        if self.fixed is not None:
            return self.fixed
        attempt, turn = self.attempt_seconds, self.turn_seconds
        slots = self.concurrency if moving is None else max(0, min(moving, self.concurrency))
        if attempt is None or turn is None or not slots:
            return 0
        if attempt <= 0:
            return self.bound
        return max(0, min(self.bound, int(slots * turn / attempt)))

    def short_actions(self) -> list[str]:
        """Action keys known to finish within a turn: the only ones claimed beyond the free
        slots. Sorted, so equal sets give equal statement parameters."""
        turn = self.turn_seconds
        if turn is None:
            return []
        limit = turn * SHORT_SHARE
        with self._lock:
            return sorted(key for key, known in self._actions.items() if known.seconds <= limit)

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


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _mean(current: float | None, seconds: float) -> float:
    seconds = max(0.0, seconds)
    return seconds if current is None else current + SMOOTHING * (seconds - current)
