"""Which of a claim's tasks start with it (runner/pace.py)."""

from __future__ import annotations

from stask.runner.pace import Pace


def test_before_anything_is_observed_only_the_free_slots_start() -> None:
    assert Pace().starting(free=2, want=8, concurrency=4) == 2
    assert Pace().starting(free=0, want=8, concurrency=4) == 0


def test_tasks_that_slots_finish_within_a_turn_start_with_the_claim() -> None:
    pace = Pace()
    pace.turn_took(0.002)
    pace.attempt_took(0.001)  # 4 slots finish 8 such tasks in one 2 ms turn
    assert pace.starting(free=0, want=8, concurrency=4) == 8
    assert pace.starting(free=1, want=12, concurrency=4) == 9


def test_long_tasks_stay_prefetched_unstarted() -> None:
    pace = Pace()
    pace.turn_took(0.002)
    pace.attempt_took(0.2)  # nothing finishes within a turn
    assert pace.starting(free=1, want=8, concurrency=4) == 1
    assert pace.starting(free=0, want=8, concurrency=4) == 0


def test_the_means_follow_what_the_runner_sees() -> None:
    pace = Pace()
    pace.turn_took(0.002)
    pace.attempt_took(0.0001)
    for _ in range(200):  # the tasks became long
        pace.attempt_took(0.5)
    assert pace.attempt_seconds is not None
    assert abs(pace.attempt_seconds - 0.5) < 0.01
    assert pace.starting(free=0, want=8, concurrency=4) == 0


def test_a_turn_waits_for_tasks_in_hand_only_when_they_finish_within_half_a_turn() -> None:
    pace = Pace()
    assert pace.drain_wait(4, 4) == 0.0  # nothing observed yet
    pace.turn_took(0.002)
    pace.attempt_took(0.0001)
    assert pace.drain_wait(4, 4) == 0.0001
    assert pace.drain_wait(0, 4) == 0.0
    pace.attempt_took(1.0)  # long tasks: claim into the free slots at once
    assert pace.drain_wait(4, 4) == 0.0
