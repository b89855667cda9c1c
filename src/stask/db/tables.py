"""The schema as SQLAlchemy Core metadata; migrations must produce exactly this."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

metadata = MetaData()


class _Variant(TypeDecorator[Any]):
    """A generic type that turns into a dialect's own type only when that dialect uses it.

    ``with_variant(postgresql.JSONB(), ...)`` would import sqlalchemy.dialects.postgresql and
    .mysql in every process, SQLite runners included: about 3.7 MB of an idle runner's RSS.
    """

    cache_ok = True
    variants: ClassVar[dict[str, Callable[[], TypeEngine[Any]]]] = {}

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        make = self.variants.get(dialect.name)
        return dialect.type_descriptor(make() if make is not None else self.impl_instance)


def _jsonb() -> TypeEngine[Any]:
    from sqlalchemy.dialects.postgresql import JSONB

    return JSONB()


def _mysql_datetime() -> TypeEngine[Any]:
    from sqlalchemy.dialects.mysql import DATETIME

    return DATETIME(fsp=6)


def _mediumtext() -> TypeEngine[Any]:
    from sqlalchemy.dialects.mysql import MEDIUMTEXT

    return MEDIUMTEXT()


class _Json(_Variant):
    """JSONB on PostgreSQL; MariaDB's JSON is LONGTEXT with a json_valid check; SQLite: text."""

    cache_ok = True  # read from each class's own namespace
    impl = JSON
    variants = {"postgresql": _jsonb}


class _Timestamp(_Variant):
    """Microseconds on MariaDB (its DATETIME default drops fractions, which breaks ordering)."""

    cache_ok = True  # read from each class's own namespace
    impl = DateTime
    variants = {"mysql": _mysql_datetime, "mariadb": _mysql_datetime}


class _LongText(_Variant):
    cache_ok = True  # read from each class's own namespace
    impl = Text
    variants = {"mysql": _mediumtext, "mariadb": _mediumtext}


# BIGINT ids everywhere but SQLite, where only INTEGER PRIMARY KEY is the autoincrementing rowid.
BigId: TypeEngine[int] = BigInteger().with_variant(Integer(), "sqlite")
Json: TypeEngine[Any] = _Json()
Timestamp: TypeEngine[Any] = _Timestamp()
LongText: TypeEngine[str] = _LongText()

workers = Table(
    "s_workers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("identifier", String(100), nullable=False, unique=True),
    Column("class_path", String(255), nullable=False),
    Column("scope", String(100), nullable=False, server_default=""),
    Column("title", String(255), nullable=False, server_default=""),
    Column("description", Text, nullable=True),
    Column("icon", String(255), nullable=False, server_default=""),
    Column("actions", Json, nullable=False),
    Column("active", Boolean, nullable=False, server_default="1"),
    Column("position", Integer, nullable=False, server_default="0"),
    Column("settings", Json, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
    # Cluster-wide: at most rate_limit of its tasks started per rate_period_seconds (0004).
    Column("rate_limit", Integer, nullable=True),
    Column("rate_period_seconds", Integer, nullable=True),
)

tasks = Table(
    "s_tasks",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("identifier", String(100), nullable=False),
    Column("action", String(100), nullable=False),
    Column("status", SmallInteger, nullable=False),
    Column("priority", SmallInteger, nullable=False),
    Column("queue", String(100), nullable=False),
    Column("meta", Json, nullable=False),
    Column("result", Json, nullable=True),
    Column("progress", SmallInteger, nullable=False, server_default="0"),
    Column("processed", BigInteger, nullable=False, server_default="0"),
    Column("total", BigInteger, nullable=False, server_default="0"),
    Column("eta_seconds", Integer, nullable=True),
    Column("message", Text, nullable=True),
    Column("error", LongText, nullable=True),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("max_attempts", Integer, nullable=False, server_default="3"),
    Column("run_at", Timestamp, nullable=False),
    Column("unique_key", String(255), nullable=True, unique=True),
    Column("started_by", String(100), nullable=True),
    Column("locked_by", String(100), nullable=True),
    Column("locked_at", Timestamp, nullable=True),
    Column("cancel_requested", Boolean, nullable=False, server_default="0"),
    Column("created_at", Timestamp, nullable=False),
    Column("started_at", Timestamp, nullable=True),
    Column("finished_at", Timestamp, nullable=True),
    Column("updated_at", Timestamp, nullable=False),
    Column("duration_ms", BigInteger, nullable=True),
    Column("peak_memory", BigInteger, nullable=True),
    # Per-task overrides (revision 0002): seconds an attempt may run, and a start deadline.
    Column("timeout_seconds", Float, nullable=True),
    Column("expires_at", Timestamp, nullable=True),
    # Written by each claim (revision 0007): the fence of every write of that attempt.
    Column("claim_token", String(32), nullable=True),
)
Index("ix_s_tasks_status_id", tasks.c.status, tasks.c.id)
Index("ix_s_tasks_identifier_id", tasks.c.identifier, tasks.c.id)
Index("ix_s_tasks_finished_at", tasks.c.finished_at)
# Running tasks only on PostgreSQL and SQLite (revision 0006; ddl_metadata adds the WHERE):
# every lookup by node also asks for status = 50 or names the task ids.
locked_by_index = Index("ix_s_tasks_locked_by", tasks.c.locked_by)
# Queue limits (revision 0003) count a queue's running tasks (queue, status = 50) and the tasks it
# started within the rate period (queue, status IN (every code), started_at > since): both are
# range scans bounded by what they count, never the queue's finished history. One index for both,
# since every claim and finish already rewrites s_tasks' index entries (status is indexed).
Index("ix_s_tasks_queue_status_started", tasks.c.queue, tasks.c.status, tasks.c.started_at)
# The same count for a rate-limited worker (revision 0004).
Index(
    "ix_s_tasks_identifier_status_started",
    tasks.c.identifier,
    tasks.c.status,
    tasks.c.started_at,
)

# The claimable set, kept narrow so the claim never reads the history in s_tasks. `identifier`
# is here (not in DESIGN.md's sketch) so the claim can skip inactive or unknown workers without
# joining the history table.
queue = Table(
    "s_queue",
    metadata,
    Column(
        "task_id",
        BigId,
        ForeignKey("s_tasks.id", ondelete="CASCADE", name="fk_s_queue_task"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("queue", String(100), nullable=False),
    Column("identifier", String(100), nullable=False),
    Column("priority", SmallInteger, nullable=False),
    Column("run_at", Timestamp, nullable=False),
)
Index("ix_s_queue_claim", queue.c.queue, queue.c.priority, queue.c.run_at, queue.c.task_id)
# Claims across all queues walk this one in claim order; without it MariaDB sorts the whole set
# and locks every due row before LIMIT applies, so concurrent claimers find nothing to skip to.
Index("ix_s_queue_order", queue.c.priority, queue.c.run_at, queue.c.task_id)

# A global id rather than DESIGN.md's per-task seq: two writers (the runner and an operator's
# cancel) can log to one task at once, and a per-task counter would need a read-modify-write.
task_logs = Table(
    "s_task_logs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("task_id", BigInteger, nullable=False),
    Column("ts", Timestamp, nullable=False),
    Column("level", String(10), nullable=False),
    Column("message", Text, nullable=False),
    Column("context", Json, nullable=True),
)
Index("ix_s_task_logs_task_id", task_logs.c.task_id, task_logs.c.id)
Index("ix_s_task_logs_ts", task_logs.c.ts)

nodes = Table(
    "s_nodes",
    metadata,
    Column("id", String(100), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("concurrency", Integer, nullable=False),
    Column("queues", Json, nullable=False),
    Column("version", String(50), nullable=False),
    Column("started_at", Timestamp, nullable=False),
    Column("heartbeat_at", Timestamp, nullable=False),
    # What the runner learned (runner/pace.py), written with its heartbeats (revision 0010).
    Column("pace", Json, nullable=True),
)
Index("ix_s_nodes_heartbeat_at", nodes.c.heartbeat_at)

# Per-queue controls shared by every runner (revision 0003). A queue without a row is not paused
# and has no limits. `paused` pauses until resumed; `paused_until` alone pauses until that time.
queue_controls = Table(
    "s_queues",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("paused", Boolean, nullable=False, server_default="0"),
    Column("paused_until", Timestamp, nullable=True),
    # At most this many tasks of the queue running (claimed, prefetched included) at once.
    Column("concurrency_limit", Integer, nullable=True),
    # At most rate_limit tasks of the queue started within any rate_period_seconds.
    Column("rate_limit", Integer, nullable=True),
    Column("rate_period_seconds", Integer, nullable=True),
    Column("updated_at", Timestamp, nullable=False),
)

# People and how they authenticate (revision 0008). ``scopes`` lists the worker scopes the role
# applies to; an empty list means every scope. A NULL password_hash cannot log in.
users = Table(
    "s_users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("username", String(100), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=True),
    Column("role", String(20), nullable=False),
    Column("scopes", Json, nullable=False),
    Column("disabled", Boolean, nullable=False, server_default="0"),
    Column("created_at", Timestamp, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
)

# Server-side sessions: the cookie holds a random value, this table only its SHA-256.
sessions = Table(
    "s_sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", Integer, nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("address", String(64), nullable=True),
    Column("user_agent", String(255), nullable=True),
    Column("created_at", Timestamp, nullable=False),
    Column("last_seen_at", Timestamp, nullable=False),
    Column("expires_at", Timestamp, nullable=False),
    Column("revoked_at", Timestamp, nullable=True),
)
Index("ix_s_sessions_user_id", sessions.c.user_id)

# Bearer tokens for scripts, stored as their SHA-256 (they carry 256 random bits).
api_tokens = Table(
    "s_api_tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user_id", Integer, nullable=False),
    Column("name", String(100), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", Timestamp, nullable=False),
    Column("last_used_at", Timestamp, nullable=True),
    Column("revoked_at", Timestamp, nullable=True),
)
Index("ix_s_api_tokens_user_id", api_tokens.c.user_id)

# Append-only: who did what, when, from where. Nothing in stask updates or deletes a row.
audit = Table(
    "s_audit",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("at", Timestamp, nullable=False),
    Column("actor", String(100), nullable=True),
    Column("action", String(100), nullable=False),
    Column("target", String(255), nullable=True),
    Column("address", String(64), nullable=True),
    Column("outcome", String(20), nullable=False),
    Column("detail", Json, nullable=True),
)
Index("ix_s_audit_at", audit.c.at)
# Login throttling counts recent failures per account and per address.
Index("ix_s_audit_actor_action_at", audit.c.actor, audit.c.action, audit.c.at)
Index("ix_s_audit_address_action_at", audit.c.address, audit.c.action, audit.c.at)

# Statistics rolled up per hour and worker as tasks end, so no summary scans s_tasks.
# duration_buckets holds counts per fixed duration bound (stask.core.stats), for p95.
stats = Table(
    "s_stats",
    metadata,
    Column("hour", Timestamp, primary_key=True),
    Column("identifier", String(100), primary_key=True),
    Column("completed", BigInteger, nullable=False, server_default="0"),
    Column("failed", BigInteger, nullable=False, server_default="0"),
    Column("cancelled", BigInteger, nullable=False, server_default="0"),
    Column("duration_ms_sum", BigInteger, nullable=False, server_default="0"),
    Column("duration_count", BigInteger, nullable=False, server_default="0"),
    Column("memory_sum", BigInteger, nullable=False, server_default="0"),
    Column("memory_count", BigInteger, nullable=False, server_default="0"),
    Column("duration_buckets", Json, nullable=False),
    Column("last_finished_at", Timestamp, nullable=True),
)

# Small named state rows: the rollup's watermark and the like.
state = Table(
    "s_state",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("value", Json, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
)

# "Run again": which task a task was run again from (a task a retry requeues keeps its id and
# its attempts; a re-run is a new task). Beside s_tasks so creating a task never writes it.
task_reruns = Table(
    "s_task_reruns",
    metadata,
    Column("task_id", BigId, primary_key=True, autoincrement=False),
    Column("rerun_of", BigInteger, nullable=False),
    Column("created_at", Timestamp, nullable=False),
)
Index("ix_s_task_reruns_rerun_of", task_reruns.c.rerun_of, task_reruns.c.task_id)

ALL_TABLES = (
    workers,
    tasks,
    queue,
    task_logs,
    nodes,
    queue_controls,
    users,
    sessions,
    api_tokens,
    audit,
    stats,
    state,
    task_reruns,
)


# Any Unicode in every text column even where the database default is latin1 (upstream MariaDB
# before 11.6). Both prefixes: a `mariadb+` URL reads only `mariadb_` options.
MYSQL_TEXT: dict[str, Any] = {"mysql_charset": "utf8mb4", "mariadb_charset": "utf8mb4"}
# Options only CREATE TABLE reads. Given to Table() above, they would load the PostgreSQL and
# MySQL dialects in every process (SQLAlchemy imports a dialect to check its options): 3.2 MB
# of a SQLite runner's RSS. The migrations set them in their DDL; autogenerate sees them
# through ddl_metadata().
DDL_OPTIONS: dict[str, dict[str, Any]] = {
    # Room for HOT updates of the progress columns, which are never indexed.
    "s_tasks": {"postgresql_with": {"fillfactor": 80}, **MYSQL_TEXT},
    **dict.fromkeys(
        (
            "s_workers",
            "s_queue",
            "s_task_logs",
            "s_nodes",
            "s_queues",
            "s_users",
            "s_sessions",
            "s_api_tokens",
            "s_audit",
            "s_stats",
            "s_state",
            "s_task_reruns",
        ),
        MYSQL_TEXT,
    ),
}


def ddl_metadata() -> MetaData:
    """The schema with its CREATE TABLE and CREATE INDEX options, for Alembic (idempotent)."""
    for name, options in DDL_OPTIONS.items():
        Table(name, metadata, extend_existing=True, **options)
    for dialect in ("postgresql", "sqlite"):  # MariaDB has no partial indexes
        locked_by_index.dialect_options[dialect]["where"] = tasks.c.status == 50
    return metadata
