"""Schedules at work: reading and setting a worker's schedule, and firing each due slot exactly
once however many runners ask (the rules, slots and state are in core/schedules.py)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from stask.core import creating, schedules, tasks_admin, workers_admin
from stask.errors import StaskError, ValidationError
from stask.models import JSONDict, NewTask, WorkerInfo, to_utc_naive, utcnow

if TYPE_CHECKING:
    from stask.core.facade import Stask

SCHEDULED_BY = "schedule"  # started_by of tasks a schedule created
log = logging.getLogger("stask")


def schedule(app: Stask, identifier: str) -> schedules.Schedule:
    """The worker's schedule from its settings; manual when it has none."""
    return schedules.parse_schedule(app.get_config(identifier, schedules.SCHEDULE_KEY))


def set_schedule(
    app: Stask,
    identifier: str,
    schedule: Mapping[str, Any] | schedules.Schedule,
    now: dt.datetime | None,
) -> schedules.Schedule:
    """Validate and store a worker's schedule (see ``Stask.set_schedule``)."""
    parsed = schedules.parse_schedule(schedule, strict=True)
    info = workers_admin.worker(app, identifier)
    moment = to_utc_naive(now) if now is not None else utcnow()
    if parsed.type != "manual":
        action = schedules.resolve_action(parsed, info.actions, identifier)
        schedules.slot_key(identifier, action, moment)  # refuses names too long for a key
    if isinstance(parsed, schedules.Once) and not schedules.next_runs(parsed, moment, 1):
        raise ValidationError(
            f"schedule of {identifier}: {parsed.when()} ({parsed.timezone}) has already "
            "passed, so it would never fire - give a later time (a once schedule fires "
            "only for a time after it is set)"
        )
    since = schedules.stamp(moment)
    app.update_config(
        identifier,
        {schedules.SCHEDULE_KEY: parsed.to_dict(), f"{schedules.STATE_KEY}.since": since},
    )
    return parsed


def enqueue_due_schedules(app: Stask, now: dt.datetime | None = None) -> list[int]:
    """Create the task of each active worker's latest due slot; the ids created."""
    moment = to_utc_naive(now) if now is not None else utcnow()
    created: list[int] = []
    for info in workers_admin.workers(app, active_only=True):
        if app.registry.get(info.identifier) is None:
            continue  # another host's worker: its runners fire it
        try:
            created.extend(_fire_schedule(app, info, moment))
        except Exception as err:  # one broken schedule or worker must not stop the others
            reason = err.message if isinstance(err, StaskError) else f"{type(err).__name__}: {err}"
            log.warning("schedule of worker %s skipped: %s", info.identifier, reason)
    return created


def _fire_schedule(app: Stask, info: WorkerInfo, now: dt.datetime) -> list[int]:
    schedule = schedules.parse_schedule(info.settings.get(schedules.SCHEDULE_KEY))
    state = info.settings.get(schedules.STATE_KEY)
    if not schedule.fires or not schedules.due_slot(schedule, state, now).changed:
        return []  # the common case, decided without a lock
    action = schedules.resolve_action(schedule, info.actions, info.identifier)
    template = creating.new_task(
        app, info.identifier, action, schedule.options, started_by=SCHEDULED_BY
    )
    fired: list[schedules.Due] = []

    def plan(stored: JSONDict) -> tuple[JSONDict | None, list[NewTask]]:
        # Decided again under the worker's lock: another runner may have fired meanwhile.
        due = schedules.due_slot(schedule, stored.get(schedules.STATE_KEY), now)
        if not due.changed:
            return None, []
        new = []
        if due.slot is not None:
            fired.append(due)
            key = schedules.slot_key(info.identifier, action, due.slot)
            new.append(dataclasses.replace(template, run_at=due.slot, unique_key=key))
        return {**stored, schedules.STATE_KEY: due.state}, new

    try:
        ids = app.store.workers.change_settings_with_tasks(info.identifier, plan) or []
    finally:
        workers_admin.forget(app, [info.identifier])
    for task_id, due in zip(ids, fired, strict=False):
        assert due.slot is not None
        local = schedules.local_time(schedule, due.slot)
        missed = "; earlier missed runs were skipped" if due.skipped else ""
        tasks_admin.log(
            app, task_id, "info", f"Scheduled run for {local:%Y-%m-%d %H:%M %Z}{missed}"
        )
    return ids
