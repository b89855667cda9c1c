"""Fixtures: one fresh database per dialect per test session, emptied before every test."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import create_engine, text

import stask
from stask import Stask
from stask.db.dialects import store_for
from stask.db.engine import build_engine, parse_url
from stask.db.migrate import upgrade

if TYPE_CHECKING:
    from tests.web_helpers import Web

ROOT = Path(__file__).resolve().parent.parent
DIALECTS = [
    name
    for name in os.environ.get("STASK_TEST_DATABASES", "sqlite,postgresql,mariadb").split(",")
    if name
]
ADMIN_URLS = {
    "postgresql": os.environ.get(
        "STASK_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    ),
    "mariadb": os.environ.get("STASK_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/test"),
}
TEST_WORKERS = ["tests.sample_workers"]
STASK_SOURCE = str(Path(stask.__file__).resolve().parent.parent)


def _server_database(dialect: str) -> Iterator[str]:
    """Create a uniquely named database on the server, yield its URL, drop it afterwards."""
    admin_url = parse_url(ADMIN_URLS[dialect])
    name = f"stask_test_{secrets.token_hex(4)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            force = " WITH (FORCE)" if dialect == "postgresql" else ""
            conn.execute(text(f"DROP DATABASE IF EXISTS {name}{force}"))
        admin.dispose()


def fresh_database(dialect: str, folder: Path) -> Iterator[str]:
    if dialect == "sqlite":
        yield f"sqlite:///{folder / 'stask.db'}"
    else:
        yield from _server_database(dialect)


@pytest.fixture(scope="session", params=DIALECTS)
def db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated database of each dialect, shared by the session."""
    folder = tmp_path_factory.mktemp(f"db-{request.param}")
    for url in fresh_database(request.param, folder):
        engine = build_engine(url, create=True)
        upgrade(engine)
        engine.dispose()
        yield url


@pytest.fixture
def dialect(db_url: str) -> str:
    return parse_url(db_url).get_backend_name()


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    return tmp_path / "storage"


def fresh_app(db_url: str, storage: Path, *modules: str) -> Iterator[Stask]:
    """For fixtures: a Stask of ``modules`` on an emptied database, its workers registered,
    closed after the test."""
    instance = Stask(
        database_url=db_url, storage=storage, workers=list(modules), use_entry_points=False
    )
    instance.store.housekeeping.truncate_all()
    instance.discover()
    yield instance
    instance.close()


@pytest.fixture
def app(db_url: str, storage: Path) -> Iterator[Stask]:
    """A Stask on an emptied database with the sample workers registered."""
    yield from fresh_app(db_url, storage, *TEST_WORKERS)


@pytest.fixture
def cli_env(db_url: str, storage: Path) -> dict[str, str]:
    """Environment for running the installed `stask` entry point against the test database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STASK_")}
    env.update(
        STASK_DATABASE_URL=db_url,
        STASK_STORAGE=str(storage),
        STASK_WORKERS=",".join(TEST_WORKERS),
        # The processes import the very stask this test imported (a checkout's src/ included).
        PYTHONPATH=os.pathsep.join([str(ROOT), STASK_SOURCE]),
        COLUMNS="200",
        # `stask run` serves the web app too: on a free port, so parallel tests never collide.
        STASK_PORT="0",
    )
    return env


@pytest.fixture
def make_store(db_url: str):  # type: ignore[no-untyped-def]
    """A second store on the same database, as another process would have."""
    made = []

    def factory():  # type: ignore[no-untyped-def]
        store = store_for(build_engine(db_url), parse_url(db_url))
        made.append(store)
        return store

    yield factory
    for store in made:
        store.dispose()


@pytest.fixture
def web(app: Stask) -> Iterator[Web]:
    """The web app over ``app`` (the sample workers on an emptied database of each dialect),
    with a client per role."""
    from tests.web_helpers import make_web

    yield from make_web(app)
