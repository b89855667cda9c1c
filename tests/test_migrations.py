"""Migrations build exactly the schema in ``stask.db.tables``; broken URLs and schemas say so."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Engine, Integer, MetaData, String, event, inspect, text

from stask import Stask, Status
from stask.db import tables
from stask.db.engine import build_engine, parse_url
from stask.db.migrate import alembic_config, current_revision, head_revision, upgrade
from stask.db.migrations.env_constants import VERSION_TABLE
from stask.errors import ConfigError, DatabaseUnavailable, SchemaMissing
from stask.models import Outcome, utcnow
from tests.conftest import TEST_WORKERS, fresh_database

# conftest names MariaDB by product; URLs name it by dialect.
FRESH_DATABASE_KIND = {"sqlite": "sqlite", "postgresql": "postgresql", "mysql": "mariadb"}
WRITES_AND_DDL = ("CREATE", "ALTER", "DROP", "INSERT", "UPDATE", "DELETE")
UNICODE_TEXT = "Рядок 3 из 5 ✓ 🚀 naïve"


def _not_version_table(name: str | None, type_: str, _parents: Any) -> bool:
    return not (type_ == "table" and name == VERSION_TABLE)


def schema_diff(engine: Engine, metadata: MetaData = tables.metadata) -> list[Any]:
    """What autogenerate would change to turn the database into ``metadata``."""
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_name": _not_version_table}
        )
        return list(compare_metadata(context, metadata))


def diff_kinds(diff: list[Any]) -> set[str]:
    """The operation names in a diff; column changes come grouped in lists."""
    flat = [op for entry in diff for op in (entry if isinstance(entry, list) else [entry])]
    return {op[0] for op in flat}


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    built = build_engine(db_url)
    yield built
    built.dispose()


@pytest.fixture
def empty_url(db_url: str, tmp_path: Path) -> Iterator[str]:
    """A database nothing has touched yet, of the same dialect and server as ``db_url``."""
    kind = FRESH_DATABASE_KIND[parse_url(db_url).get_backend_name()]
    yield from fresh_database(kind, tmp_path / "fresh")


@pytest.fixture
def empty_engine(empty_url: str) -> Iterator[Engine]:
    built = build_engine(empty_url, create=True)
    yield built
    built.dispose()


# -- the schema ------------------------------------------------------------------------------


def test_migrated_database_equals_the_metadata(engine: Engine) -> None:
    assert schema_diff(engine) == []
    assert current_revision(engine) == head_revision()


def test_schema_comparison_sees_drift(engine: Engine) -> None:
    """Guards the test above: an empty diff must not come from a comparison that sees nothing."""
    drifted = MetaData()
    for table in tables.metadata.sorted_tables:
        table.to_metadata(drifted)
    drifted.tables["s_tasks"].append_column(Column("extra", Integer, nullable=True))
    drifted.tables["s_task_logs"].c.level.type = String(20)
    queue = drifted.tables["s_queue"]
    queue.indexes.discard(next(ix for ix in queue.indexes if ix.name == "ix_s_queue_claim"))

    assert diff_kinds(schema_diff(engine, drifted)) == {
        "add_column",
        "modify_type",
        "remove_index",
    }


def test_migrating_an_empty_database_reaches_head_once(empty_engine: Engine) -> None:
    assert current_revision(empty_engine) is None
    assert head_revision() is not None

    upgrade(empty_engine)
    assert current_revision(empty_engine) == head_revision()
    assert schema_diff(empty_engine) == []

    with empty_engine.begin() as conn:
        conn.execute(tables.nodes.insert().values(**_node_row()))
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement.lstrip().upper())

    event.listen(empty_engine, "before_cursor_execute", record)
    try:
        upgrade(empty_engine)
    finally:
        event.remove(empty_engine, "before_cursor_execute", record)

    assert statements, "the second upgrade should at least read the version table"
    assert [s for s in statements if s.startswith(WRITES_AND_DDL)] == []
    assert current_revision(empty_engine) == head_revision()
    with empty_engine.connect() as conn:
        assert conn.execute(text("SELECT id FROM s_nodes")).scalars().all() == ["node-1"]


def test_downgrade_to_base_drops_everything_and_upgrade_rebuilds(empty_engine: Engine) -> None:
    upgrade(empty_engine)
    with empty_engine.begin() as conn:
        command.downgrade(alembic_config(conn), "base")

    assert set(inspect(empty_engine).get_table_names()) <= {VERSION_TABLE}
    assert current_revision(empty_engine) is None

    upgrade(empty_engine)
    assert schema_diff(empty_engine) == []


def test_dialect_storage_options(engine: Engine, dialect: str) -> None:
    """What autogenerate does not compare: table options each dialect relies on."""
    with engine.connect() as conn:
        if dialect == "postgresql":
            options = dict(
                conn.execute(
                    text(
                        "SELECT relname, reloptions FROM pg_class "
                        "WHERE relname IN ('s_tasks', 's_queue')"
                    )
                ).all()
            )
            assert "fillfactor=80" in options["s_tasks"]
            assert set(options["s_queue"]) >= {
                "autovacuum_vacuum_scale_factor=0",
                "autovacuum_vacuum_threshold=1000",
            }
        elif dialect == "mysql":
            found = dict(
                conn.execute(
                    text(
                        "SELECT table_name, CONCAT(engine, ' ', table_collation) "
                        "FROM information_schema.tables WHERE table_schema = DATABASE()"
                    )
                ).all()
            )
            for table in tables.ALL_TABLES:
                assert found[table.name].startswith("InnoDB utf8mb4"), table.name
        else:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_text_holds_any_unicode_whatever_the_database_default(
    empty_url: str, dialect: str, storage: Path
) -> None:
    """Upstream MariaDB before 11.6 creates latin1 databases; stask's tables must not inherit it."""
    if dialect == "mysql":
        admin = build_engine(empty_url)
        with admin.begin() as conn:
            conn.exec_driver_sql("ALTER DATABASE CHARACTER SET latin1 COLLATE latin1_swedish_ci")
        admin.dispose()
    with Stask(
        database_url=empty_url, storage=storage, workers=TEST_WORKERS, use_entry_points=False
    ) as app:
        app.migrate()
        app.discover()
        task = app.create("inventory", "sync_stock", {"echo": UNICODE_TEXT})
        app.log(task.id, "info", UNICODE_TEXT, detail=UNICODE_TEXT)
        [claimed] = app.store.claims.claim("node-1", ["inventory"], 1)
        outcome = Outcome(
            status=Status.FAILED, message=UNICODE_TEXT, error=UNICODE_TEXT, result=[UNICODE_TEXT]
        )
        assert app.store.claims.finish(claimed.claim, outcome)

        stored = app.get(task.id)
        [entry] = app.get_logs(task.id)
    assert stored.options == {"echo": UNICODE_TEXT}
    assert (stored.message, stored.error, stored.result) == (
        UNICODE_TEXT,
        UNICODE_TEXT,
        [UNICODE_TEXT],
    )
    assert (entry.message, entry.context) == (UNICODE_TEXT, {"detail": UNICODE_TEXT})


def _node_row() -> dict[str, Any]:
    now = utcnow()
    return {
        "id": "node-1",
        "host": "host",
        "pid": 1,
        "concurrency": 1,
        "queues": ["default"],
        "version": "0",
        "started_at": now,
        "heartbeat_at": now,
    }


# -- databases that cannot be used -----------------------------------------------------------


def test_unmigrated_database_asks_for_migrate(empty_url: str, storage: Path) -> None:
    """A fresh server database, or a SQLite file that does not exist yet."""
    with Stask(database_url=empty_url, storage=storage, use_entry_points=False) as app:
        with pytest.raises(SchemaMissing, match="stask migrate"):
            app.stats()
        app.migrate()
        assert app.stats()["total"] == 0


def test_empty_sqlite_file_asks_for_migrate(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    with (
        Stask(database_url=f"sqlite:///{path}", use_entry_points=False) as app,
        pytest.raises(SchemaMissing, match="stask migrate"),
    ):
        app.stats()


def test_missing_database_is_not_mistaken_for_a_missing_schema(
    db_url: str, dialect: str, tmp_path: Path
) -> None:
    """Server databases (and roles) named like ``jobs_db`` used to read as "run stask migrate"."""
    url = parse_url(db_url)
    if dialect == "sqlite":
        wrong = url.set(database=str(tmp_path / "jobs_missing.db"))
        expected: type[Exception] = SchemaMissing
    else:
        wrong = url.set(database="jobs_missing_here")
        expected = DatabaseUnavailable
    shown = wrong.render_as_string(hide_password=True)
    with (
        Stask(database_url=shown, use_entry_points=False) as app,
        pytest.raises(expected) as raised,
    ):
        app.stats()
    assert type(raised.value) is expected
    assert "jobs_missing" in str(raised.value)


def test_unreachable_server_is_unavailable() -> None:
    url = "postgresql+psycopg://postgres@127.0.0.1:1/nope"
    with (
        Stask(database_url=url, use_entry_points=False) as app,
        pytest.raises(DatabaseUnavailable) as raised,
    ):
        app.stats()
    assert url in str(raised.value)
    assert "STASK_DATABASE_URL" in str(raised.value)


@pytest.mark.parametrize("url", ["nonsense", "oracle://x/y", "sqlite://"])
def test_unsupported_urls_name_the_supported_forms(url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Stask(database_url=url, use_entry_points=False)
    message = str(raised.value)
    assert "sqlite:///" in message
    if url != "sqlite://":
        assert "postgresql+psycopg://" in message
        assert "mysql+pymysql://" in message


def test_locked_by_index_holds_running_tasks_only(engine: Engine, dialect: str) -> None:
    """Revision 0006 (autogenerate does not compare index predicates): PostgreSQL's and
    SQLite's ix_s_tasks_locked_by is partial, so a finished task leaves it."""
    with engine.connect() as conn:
        if dialect == "postgresql":
            sql = "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_s_tasks_locked_by'"
        elif dialect == "sqlite":
            sql = "SELECT sql FROM sqlite_master WHERE name = 'ix_s_tasks_locked_by'"
        else:
            pytest.skip("MariaDB has no partial indexes")
        definition = conn.exec_driver_sql(sql).scalar_one()
    assert "WHERE" in definition.upper()
    assert "50" in definition


def test_sqlite_claim_trigger_is_in_place_at_head(engine: Engine, dialect: str) -> None:
    """Revision 0005's trigger (autogenerate does not compare triggers): a later migration
    that rebuilds s_tasks on SQLite drops it with the old table, and claims would leave
    their rows in s_queue (a stale row never claims twice: the claim requires status 10)."""
    if dialect != "sqlite":
        pytest.skip("the other databases delete the queue row in the claim statement")
    with engine.connect() as conn:
        found = conn.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 's_tasks'"
        ).scalars()
        definitions = [str(sql) for sql in found]
    assert len(definitions) == 1
    assert "DELETE FROM s_queue" in definitions[0]
