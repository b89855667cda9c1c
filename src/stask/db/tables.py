"""The schema as SQLAlchemy Core metadata; migrations must produce exactly this."""

from __future__ import annotations

from typing import Any

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
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.types import TypeEngine

metadata = MetaData()

# BIGINT ids everywhere but SQLite, where only INTEGER PRIMARY KEY is the autoincrementing rowid.
BigId: TypeEngine[int] = BigInteger().with_variant(Integer(), "sqlite")
# JSONB on PostgreSQL; MariaDB's JSON is LONGTEXT with a json_valid check; SQLite stores text.
Json: TypeEngine[Any] = JSON().with_variant(postgresql.JSONB(), "postgresql")
# Microsecond timestamps on MariaDB (its DATETIME default drops fractions, which breaks ordering).
Timestamp: TypeEngine[Any] = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
LongText: TypeEngine[str] = Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
# Any Unicode in every text column even where the database default is latin1 (upstream MariaDB
# before 11.6). Both prefixes: a `mariadb+` URL reads only `mariadb_` options.
MYSQL_TEXT: dict[str, Any] = {"mysql_charset": "utf8mb4", "mariadb_charset": "utf8mb4"}

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
    **MYSQL_TEXT,
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
    # Room for HOT updates of the progress columns, which are never indexed.
    postgresql_with={"fillfactor": 80},
    **MYSQL_TEXT,
)
Index("ix_s_tasks_status_id", tasks.c.status, tasks.c.id)
Index("ix_s_tasks_identifier_id", tasks.c.identifier, tasks.c.id)
Index("ix_s_tasks_finished_at", tasks.c.finished_at)
Index("ix_s_tasks_locked_by", tasks.c.locked_by)
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
    **MYSQL_TEXT,
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
    **MYSQL_TEXT,
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
    **MYSQL_TEXT,
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
    **MYSQL_TEXT,
)

ALL_TABLES = (workers, tasks, queue, task_logs, nodes, queue_controls)
