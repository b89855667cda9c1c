"""Helpers of the web API's tests: an API over the test database, logged-in clients per role,
the app's routes with their declared permissions, and a snapshot of what requests may change.

Each test module declares its ``web`` fixture with :func:`make_web`.
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import delete, select, update

from stask import Stask
from stask.db.tables import (
    api_tokens,
    queue,
    queue_controls,
    task_logs,
    tasks,
    users,
    workers,
)
from stask.models import Status, Task, TaskQuery
from stask.web import create_app
from stask.web.security import CSRF_HEADER, PERMISSION_KEY

PREFIX = "/stask"
BASE_URL = "https://testserver"  # https, so the Secure __Host- cookie is sent back
PASSWORD = "correct horse battery staple"
ROLES = ("anonymous", "viewer", "operator", "admin", "scoped")
# The user of each role: "scoped" is an admin of the "shop" scope only (the inventory worker).
ROLE_OF = {"viewer": "viewer", "operator": "operator", "admin": "admin", "scoped": "admin"}
SCOPES_OF: dict[str, tuple[str, ...]] = {"scoped": ("shop",)}
RANKS = {"read": 1, "operate": 2, "admin": 3}
RANK_OF = {"viewer": 1, "operator": 2, "admin": 3, "scoped": 3}
HOSTILE = "<img src=x onerror=alert(1)>"
_names = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}{next(_names)}"


@dataclass(frozen=True)
class ApiRoute:
    method: str
    path: str  # with the prefix, parameters as in the route: /stask/api/tasks/{task_id}
    permission: str  # public | read | operate | admin, maybe with ":everywhere"

    @property
    def key(self) -> tuple[str, str]:
        return (self.method, self.path)

    @property
    def mutating(self) -> bool:
        return self.method not in ("GET", "HEAD", "OPTIONS")


def app_routes(api: FastAPI) -> list[ApiRoute]:
    """Every API route of ``api`` (each method apart) with its ``x-stask-permission``
    ("" when it declared none)."""
    from fastapi import routing

    contexts: Any = getattr(routing, "iter_route_contexts", None)
    found = []
    # FastAPI from 0.13x includes routers lazily: api.routes holds the included routers.
    entries = (
        [(c.original_route, c.path, c.methods) for c in contexts(api.routes)]
        if contexts
        else [(r, getattr(r, "path", None), getattr(r, "methods", None)) for r in api.routes]
    )
    for original, path, methods in entries:
        if not isinstance(original, routing.APIRoute):
            continue
        permission = (original.openapi_extra or {}).get(PERMISSION_KEY, "")
        for method in sorted(methods or ()):
            found.append(ApiRoute(method, path, permission))
    return found


def expected_status(permission: str, role: str) -> int | None:
    """The refusal ``role`` gets from a route needing ``permission``; None when allowed."""
    base, _, everywhere = permission.partition(":")
    if base == "public":
        return None
    if role == "anonymous":
        return 401
    if RANK_OF[role] < RANKS[base]:
        return 403
    if everywhere and SCOPES_OF.get(role):
        return 403
    return None


class Web:
    """The API of ``app`` and clients: anonymous, and logged in per role (made when first
    asked for, since each login costs an argon2 hash)."""

    def __init__(self, app: Stask, **options: Any) -> None:
        self.app = app
        self.api = create_app(app, **options)
        self.anon = self.client()
        self._clients: dict[str, TestClient] = {}
        self.made: set[str] = set()

    def client(self, **options: Any) -> TestClient:
        return TestClient(self.api, base_url=BASE_URL, **options)

    def user(
        self, name: str, role: str, scopes: tuple[str, ...] | list[str] = (), **options: Any
    ) -> str:
        self.app.accounts.add_user(name, role, PASSWORD, list(scopes), **options)
        return name

    def login(
        self, name: str, password: str = PASSWORD, client: TestClient | None = None
    ) -> TestClient:
        """A client logged in as ``name``, sending the session's CSRF token on every request."""
        client = client or self.client()
        answer = client.post(f"{PREFIX}/api/login", json={"username": name, "password": password})
        assert answer.status_code == 200, answer.text
        client.headers[CSRF_HEADER] = answer.json()["csrf_token"]
        return client

    def role_user(self, role: str) -> str:
        """The user of ``role`` (viewer, operator, admin, scoped), created when first needed."""
        if role not in self.made:
            self.user(role, ROLE_OF[role], SCOPES_OF.get(role, ()))
            self.made.add(role)
        return role

    def as_role(self, role: str) -> TestClient:
        """The (cached) client of ``role``; ``anonymous`` is the client with no credentials."""
        if role == "anonymous":
            return self.anon
        if role not in self._clients:
            self._clients[role] = self.login(self.role_user(role))
        return self._clients[role]

    @property
    def viewer(self) -> TestClient:
        return self.as_role("viewer")

    @property
    def operator(self) -> TestClient:
        return self.as_role("operator")

    @property
    def admin(self) -> TestClient:
        return self.as_role("admin")

    def throwaway(self, role: str) -> tuple[str, TestClient]:
        """A new user of ``role``'s rights and a client logged in as them (anonymous: a new
        client without credentials)."""
        if role == "anonymous":
            return unique("nobody"), self.client()
        name = self.user(unique(f"{role}-"), ROLE_OF[role], SCOPES_OF.get(role, ()))
        return name, self.login(name)

    def token(self, username: str, name: str = "test") -> tuple[int, str]:
        return self.app.accounts.create_token(name, username)

    def bearer(self, token: str) -> TestClient:
        return self.client(headers={"Authorization": f"Bearer {token}"})


def make_web(app: Stask, **options: Any) -> Iterator[Web]:
    web = Web(app, **options)
    yield web
    for client in [web.anon, *web._clients.values()]:
        client.close()


# -- tasks and the database --------------------------------------------------------------------


def new_task(
    app: Stask, action: str = "sync_stock", identifier: str = "inventory", **kw: Any
) -> int:
    options = kw.pop("options", {"rows": 1})
    return app.create(identifier, action, options, **kw).id


def run_task(
    app: Stask, action: str = "sync_stock", identifier: str = "inventory", **kw: Any
) -> Task:
    """Create a task and run everything pending in this process; the task afterwards."""
    task_id = new_task(app, action, identifier, **kw)
    app.process_pending()
    return app.get(task_id)


def cancelled_task(app: Stask, **kw: Any) -> int:
    task_id = new_task(app, **kw)
    app.cancel(task_id)
    return task_id


def set_task(app: Stask, task_id: int, **values: Any) -> None:
    """Change a task's columns directly (``status`` as a Status)."""
    if "status" in values:
        values["status"] = Status(values["status"]).code
    with app.store.writing() as conn:
        conn.execute(update(tasks).where(tasks.c.id == task_id).values(**values))


def make_running(app: Stask, task_id: int) -> None:
    """As if a runner had claimed and started the task."""
    from stask.models import utcnow

    set_task(app, task_id, status=Status.RUNNING, started_at=utcnow(), locked_by="elsewhere:1")
    with app.store.writing() as conn:
        conn.execute(delete(queue).where(queue.c.task_id == task_id))


def make_due(app: Stask, task_id: int) -> None:
    """A task waiting for a retry's back-off: due now."""
    with app.store.writing() as conn:
        conn.execute(
            update(queue).where(queue.c.task_id == task_id).values(run_at=dt.datetime(2000, 1, 1))
        )
        conn.execute(
            update(tasks).where(tasks.c.id == task_id).values(run_at=dt.datetime(2000, 1, 1))
        )


def snapshot(app: Stask) -> dict[str, Any]:
    """What a refused request must leave alone: tasks, logs, workers, users, tokens, queues."""

    def rows(table: Any, *columns: str) -> list[tuple[Any, ...]]:
        chosen = [table.c[name] for name in columns]
        with app.store.reading() as conn:
            return sorted(tuple(row) for row in conn.execute(select(*chosen)))

    return {
        "tasks": rows(
            tasks, "id", "status", "cancel_requested", "attempts", "meta", "message", "queue"
        ),
        "logs": rows(task_logs, "id"),
        "workers": rows(workers, "identifier", "active", "settings"),
        "users": rows(users, "username", "role", "disabled", "password_hash"),
        "tokens": rows(api_tokens, "id", "revoked_at"),
        "queues": rows(
            queue_controls, "name", "paused", "paused_until", "concurrency_limit", "rate_limit"
        ),
    }


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# -- a sample request of every route -------------------------------------------------------------


@dataclass
class Call:
    """One sample request of a route."""

    path: str
    json: Any = None
    params: dict[str, Any] | None = None
    files: dict[str, Any] | None = None
    client: TestClient | None = None  # instead of the role's client
    after: Callable[[], None] | None = None  # puts back what the call changed
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Matrix:
    """The objects the sample requests act on (all of the "shop" scope's inventory worker,
    which the scoped admin sees)."""

    web: Web
    done: int  # a completed task with logs
    export: int  # a completed task with a result file

    @property
    def app(self) -> Stask:
        return self.web.app

    def pending(self) -> int:
        return new_task(self.app)

    def cancelled(self) -> int:
        return cancelled_task(self.app)

    def job(self, role: str) -> str:
        started_by = None if role == "anonymous" else self.web.role_user(role)
        job = self.app.bulk("cancel", TaskQuery(task_id=self.pending()), started_by=started_by)
        wait_for_job(self.app, job)
        return job


def wait_for_job(app: Stask, job: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while (found := app.bulk_job(job))["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.02)
    return found


Sample = Callable[[Matrix, str], Call]
T = f"{PREFIX}/api/tasks"
W = f"{PREFIX}/api/workers"
QUEUES = f"{PREFIX}/api/queues"


def _login(m: Matrix, role: str) -> Call:
    name = "viewer" if role == "anonymous" else m.web.role_user(role)
    return Call(
        f"{PREFIX}/api/login", json={"username": name, "password": PASSWORD}, client=m.web.client()
    )


def _logout(m: Matrix, role: str) -> Call:
    return Call(f"{PREFIX}/api/logout", client=m.web.throwaway(role)[1])


def _own_password(m: Matrix, role: str) -> Call:
    body = {"password": PASSWORD, "current_password": PASSWORD}
    return Call(f"{PREFIX}/api/session/password", json=body, client=m.web.throwaway(role)[1])


def _victim(m: Matrix) -> str:
    return m.web.user(unique("victim"), "viewer")


def _process_pending(m: Matrix, role: str) -> Call:
    def settle() -> None:  # the batch runs in the background: let it end before the next role
        for job in list(m.app.bulk_jobs._jobs):
            wait_for_job(m.app, job)

    return Call(f"{PREFIX}/api/process-pending", json={"batch_size": 1}, after=settle)


def _deactivate(m: Matrix, role: str) -> Call:
    return Call(f"{W}/inventory/deactivate", after=lambda: m.app.activate("inventory"))


SAMPLES: dict[tuple[str, str], Sample] = {
    ("POST", f"{PREFIX}/workers/{{identifier}}/tasks/{{action}}"): lambda m, r: Call(
        f"{PREFIX}/workers/inventory/tasks/sync_stock", json={"rows": 1}
    ),
    ("POST", f"{PREFIX}/worker/{{identifier}}/run/{{action}}"): lambda m, r: Call(
        f"{PREFIX}/worker/inventory/run/sync_stock", json={"rows": 1}
    ),
    ("POST", T): lambda m, r: Call(T, json={"identifier": "inventory", "action": "sync_stock"}),
    ("GET", f"{PREFIX}/tasks/{{task_id}}/progress"): lambda m, r: Call(
        f"{PREFIX}/tasks/{m.done}/progress"
    ),
    ("GET", f"{PREFIX}/task/{{task_id}}/progress"): lambda m, r: Call(
        f"{PREFIX}/task/{m.done}/progress"
    ),
    ("GET", f"{PREFIX}/tasks/{{task_id}}/download"): lambda m, r: Call(
        f"{PREFIX}/tasks/{m.export}/download"
    ),
    ("GET", f"{PREFIX}/task/{{task_id}}/download"): lambda m, r: Call(
        f"{PREFIX}/task/{m.export}/download"
    ),
    ("GET", T): lambda m, r: Call(T, params={"status": "completed"}),
    ("GET", f"{T}/count"): lambda m, r: Call(f"{T}/count"),
    ("GET", f"{T}/export"): lambda m, r: Call(f"{T}/export", params={"format": "jsonl"}),
    ("GET", f"{T}/{{task_id}}"): lambda m, r: Call(f"{T}/{m.done}"),
    ("POST", f"{T}/{{task_id}}/cancel"): lambda m, r: Call(f"{T}/{m.pending()}/cancel"),
    ("POST", f"{T}/{{task_id}}/retry"): lambda m, r: Call(f"{T}/{m.cancelled()}/retry"),
    ("POST", f"{T}/{{task_id}}/rerun"): lambda m, r: Call(f"{T}/{m.done}/rerun"),
    ("DELETE", f"{T}/{{task_id}}"): lambda m, r: Call(f"{T}/{m.pending()}"),
    ("POST", f"{T}/bulk/{{action}}"): lambda m, r: Call(
        f"{T}/bulk/cancel", json={"ids": [m.pending(), m.pending()]}
    ),
    ("GET", f"{PREFIX}/api/bulk/{{job_id}}"): lambda m, r: Call(f"{PREFIX}/api/bulk/{m.job(r)}"),
    ("GET", f"{T}/{{task_id}}/logs"): lambda m, r: Call(f"{T}/{m.done}/logs"),
    ("GET", f"{T}/{{task_id}}/logs/download"): lambda m, r: Call(f"{T}/{m.done}/logs/download"),
    ("GET", f"{T}/{{task_id}}/events"): lambda m, r: Call(f"{T}/{m.done}/events"),
    ("GET", f"{PREFIX}/api/events"): lambda m, r: Call(
        f"{PREFIX}/api/events", params={"once": "true"}
    ),
    ("GET", W): lambda m, r: Call(W),
    ("GET", f"{W}/{{identifier}}"): lambda m, r: Call(f"{W}/inventory"),
    ("GET", f"{W}/{{identifier}}/settings"): lambda m, r: Call(f"{W}/inventory/settings"),
    ("PUT", f"{W}/{{identifier}}/settings"): lambda m, r: Call(
        f"{W}/inventory/settings", json={"values": {"batch": 20}}
    ),
    ("GET", f"{W}/{{identifier}}/schedule"): lambda m, r: Call(f"{W}/inventory/schedule"),
    ("PUT", f"{W}/{{identifier}}/schedule"): lambda m, r: Call(
        f"{W}/inventory/schedule", json={"type": "manual"}
    ),
    ("POST", f"{W}/{{identifier}}/activate"): lambda m, r: Call(f"{W}/inventory/activate"),
    ("POST", f"{W}/{{identifier}}/deactivate"): _deactivate,
    ("POST", f"{W}/discover"): lambda m, r: Call(f"{W}/discover"),
    ("POST", f"{W}/rescan"): lambda m, r: Call(f"{W}/rescan"),
    ("POST", f"{W}/clean-orphaned"): lambda m, r: Call(f"{W}/clean-orphaned"),
    ("POST", f"{W}/{{identifier}}/tasks/{{action}}/upload"): lambda m, r: Call(
        f"{W}/inventory/tasks/sync_stock/upload",
        files={"file": ("rows.csv", b"id\n1\n", "text/csv")},
    ),
    ("GET", f"{PREFIX}/performance/summary"): lambda m, r: Call(f"{PREFIX}/performance/summary"),
    ("GET", f"{PREFIX}/performance/workers"): lambda m, r: Call(f"{PREFIX}/performance/workers"),
    ("GET", f"{PREFIX}/performance/alerts"): lambda m, r: Call(f"{PREFIX}/performance/alerts"),
    ("GET", f"{PREFIX}/cache/stats"): lambda m, r: Call(f"{PREFIX}/cache/stats"),
    ("POST", f"{PREFIX}/cache/clear"): lambda m, r: Call(
        f"{PREFIX}/cache/clear", json={"identifier": "inventory"}
    ),
    ("GET", f"{PREFIX}/api/queues"): lambda m, r: Call(f"{PREFIX}/api/queues"),
    ("POST", f"{PREFIX}/api/queues/{{name}}/pause"): lambda m, r: Call(
        f"{PREFIX}/api/queues/matrix/pause", json={}
    ),
    ("POST", f"{PREFIX}/api/queues/{{name}}/resume"): lambda m, r: Call(
        f"{PREFIX}/api/queues/matrix/resume"
    ),
    ("PUT", f"{PREFIX}/api/queues/{{name}}/limits"): lambda m, r: Call(
        f"{PREFIX}/api/queues/matrix/limits", json={"concurrency": 2}
    ),
    ("POST", f"{PREFIX}/clean"): lambda m, r: Call(f"{PREFIX}/clean", json={"days": 30}),
    ("POST", f"{PREFIX}/api/process-pending"): _process_pending,
    ("GET", f"{PREFIX}/health"): lambda m, r: Call(f"{PREFIX}/health"),
    ("GET", f"{PREFIX}/metrics"): lambda m, r: Call(f"{PREFIX}/metrics"),
    ("POST", f"{PREFIX}/api/login"): _login,
    ("POST", f"{PREFIX}/api/logout"): _logout,
    ("GET", f"{PREFIX}/api/session"): lambda m, r: Call(f"{PREFIX}/api/session"),
    ("POST", f"{PREFIX}/api/session/password"): _own_password,
    ("GET", f"{PREFIX}/api/users"): lambda m, r: Call(f"{PREFIX}/api/users"),
    ("POST", f"{PREFIX}/api/users"): lambda m, r: Call(
        f"{PREFIX}/api/users", json={"username": unique("new"), "role": "viewer"}
    ),
    ("POST", f"{PREFIX}/api/users/{{username}}/disable"): lambda m, r: Call(
        f"{PREFIX}/api/users/{_victim(m)}/disable"
    ),
    ("POST", f"{PREFIX}/api/users/{{username}}/password"): lambda m, r: Call(
        f"{PREFIX}/api/users/{_victim(m)}/password", json={"password": "another long password"}
    ),
    ("GET", f"{PREFIX}/api/tokens"): lambda m, r: Call(f"{PREFIX}/api/tokens"),
    ("POST", f"{PREFIX}/api/tokens"): lambda m, r: Call(
        f"{PREFIX}/api/tokens", json={"name": "deploy", "user": "viewer"}
    ),
    ("DELETE", f"{PREFIX}/api/tokens/{{token_id}}"): lambda m, r: Call(
        f"{PREFIX}/api/tokens/{m.web.token(m.web.role_user('viewer'))[0]}"
    ),
    ("GET", f"{PREFIX}/api/audit"): lambda m, r: Call(f"{PREFIX}/api/audit"),
}


def matrix(web: Web) -> Matrix:
    app = web.app
    app.set_config("inventory", "upload_extensions", [".csv"])
    done = run_task(app, options={"rows": 2}).id
    export = run_task(app, "export").id
    assert app.get(done).status is Status.COMPLETED
    assert app.get(export).result_file is not None
    for role in ROLES[1:]:
        web.as_role(role)
    web.role_user("viewer")
    return Matrix(web, done, export)


def send(client: TestClient, method: str, call: Call) -> Any:
    return client.request(
        method,
        call.path,
        json=call.json,
        params=call.params,
        files=call.files,
        headers=call.headers,
    )
