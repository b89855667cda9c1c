"""Conversions between rows and the value objects of ``stask.models``, and the SQL pieces every
repository shares (the attempt fence, filter clauses). No SQL is run here."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import and_
from sqlalchemy.sql.elements import ColumnElement

from stask.db.tables import tasks
from stask.models import (
    Claim,
    LogEntry,
    Outcome,
    Priority,
    Status,
    Task,
    TaskFilter,
    WorkerRecord,
)

RUNNING = Status.RUNNING.code
PENDING = Status.PENDING.code
FINAL_CODES = (Status.COMPLETED.code, Status.CANCELLED.code, Status.FAILED.code)
# What creating a task writes (task_writes.new_task_rows; PostgreSQL's one-statement create binds
# exactly these).
NEW_TASK_COLUMNS = (
    "identifier",
    "action",
    "status",
    "priority",
    "queue",
    "meta",
    "max_attempts",
    "run_at",
    "started_by",
    "unique_key",
    "timeout_seconds",
    "expires_at",
    "created_at",
    "updated_at",
)
# What a task's s_queue row copies from it, beside task_id.
QUEUED_COLUMNS = ("queue", "identifier", "priority", "run_at")


# The fence of every write an attempt makes: the claim's own token, and the task still running.
# One Core clause and one SQL fragment, used by every dialect and every such write.
def attempt_fence(task_id: Any, token: Any) -> ColumnElement[bool]:
    """Core: the row of ``task_id`` while the claim that wrote ``token`` still holds it."""
    return and_(tasks.c.id == task_id, tasks.c.claim_token == token, tasks.c.status == RUNNING)


def attempt_fence_sql(task: str, claim: str) -> str:
    """SQL text of ``attempt_fence`` for batched statements: ``task`` names the s_tasks row,
    ``claim`` a row with the columns ``id`` and ``token``."""
    return f"{task}.id = {claim}.id AND {task}.claim_token = {claim}.token AND {task}.status = 50"


def filter_clauses(where: TaskFilter) -> list[ColumnElement[bool]]:
    """The WHERE clauses of a ``TaskFilter``; none for an empty one."""
    found: list[ColumnElement[bool]] = []
    if where.statuses:
        found.append(tasks.c.status.in_([s.code for s in where.statuses]))
    if where.identifier:
        found.append(tasks.c.identifier == where.identifier)
    if where.action:
        found.append(tasks.c.action == where.action)
    if where.queue:
        found.append(tasks.c.queue == where.queue)
    if where.created_after:
        found.append(tasks.c.created_at >= where.created_after)
    return found


def in_claim_order(found: list[Task]) -> list[Task]:
    """Claimed tasks sorted as claims take them: priority, then run_at, then id."""
    found.sort(key=lambda t: (t.priority.weight, t.run_at, t.id))
    return found


def task_from_row(row: Mapping[Any, Any]) -> Task:
    return Task(
        id=int(row["id"]),
        identifier=row["identifier"],
        action=row["action"],
        status=Status.from_code(int(row["status"])),
        priority=Priority.from_weight(int(row["priority"])),
        queue=row["queue"],
        options=row["meta"] if row["meta"] is not None else {},
        result=row["result"],
        progress=int(row["progress"]),
        processed=int(row["processed"]),
        total=int(row["total"]),
        eta_seconds=row["eta_seconds"],
        message=row["message"],
        error=row["error"],
        attempts=int(row["attempts"]),
        max_attempts=int(row["max_attempts"]),
        run_at=row["run_at"],
        unique_key=row["unique_key"],
        started_by=row["started_by"],
        locked_by=row["locked_by"],
        locked_at=row["locked_at"],
        cancel_requested=bool(row["cancel_requested"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        updated_at=row["updated_at"],
        duration_ms=row["duration_ms"],
        peak_memory=row["peak_memory"],
        timeout_seconds=row["timeout_seconds"],
        expires_at=row["expires_at"],
        claim_token=row["claim_token"],
    )


def log_from_row(row: Mapping[Any, Any]) -> LogEntry:
    return LogEntry(
        id=int(row["id"]),
        task_id=int(row["task_id"]),
        ts=row["ts"],
        level=row["level"],
        message=row["message"],
        context=row["context"] or {},
    )


def outcome_params(claim: Claim, outcome: Outcome, now: dt.datetime) -> dict[str, Any]:
    return {
        "b_id": claim.id,
        "b_token": claim.token,
        "b_status": outcome.status.code,
        "b_message": outcome.message,
        "b_error": outcome.error,
        "b_result": outcome.result,
        "b_progress": outcome.progress,
        "b_processed": outcome.processed,
        "b_total": outcome.total,
        "b_duration_ms": outcome.duration_ms,
        "b_peak_memory": outcome.peak_memory,
        "b_run_at": outcome.retry_at or now,
        "b_extend": 1 if outcome.snooze else 0,
        "b_now": now,
    }


def final_payload(finished: Sequence[tuple[Claim, Outcome]]) -> str:
    """Final outcomes as one JSON array for a single batched UPDATE.

    ``result`` travels as JSON text (what the result column stores on every database), so a
    string result is not confused with JSON by the database's own JSON functions.
    """
    return json.dumps(
        [
            {
                "id": claim.id,
                "token": claim.token,
                "status": outcome.status.code,
                "message": outcome.message,
                "error": outcome.error,
                "result": json.dumps(outcome.result),
                "progress": outcome.progress,
                "processed": outcome.processed,
                "total": outcome.total,
                "duration_ms": outcome.duration_ms,
                "peak_memory": outcome.peak_memory,
            }
            for claim, outcome in finished
        ]
    )


def final_params(finished: Sequence[tuple[Claim, Outcome]], now: dt.datetime) -> dict[str, Any]:
    """Parameters of a dialect's ``finish_final_sql``: the outcomes as one JSON array, and
    their ids (PostgreSQL's finish looks them up by primary key)."""
    return {"rows": final_payload(finished), "ids": [claim.id for claim, _ in finished], "now": now}


def worker_from_row(row: Mapping[Any, Any]) -> WorkerRecord:
    return WorkerRecord(
        id=int(row["id"]),
        identifier=row["identifier"],
        class_path=row["class_path"],
        scope=row["scope"],
        title=row["title"],
        description=row["description"],
        icon=row["icon"],
        actions=tuple(row["actions"] or ()),
        active=bool(row["active"]),
        position=int(row["position"]),
        settings=dict(row["settings"] or {}),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        rate_limit=row["rate_limit"],
        rate_period_seconds=row["rate_period_seconds"],
    )
