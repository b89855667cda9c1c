"""A host application mounts stask's ASGI app and hands it its own users through ``auth``."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from stask import Stask
from stask.identity import Principal, Role
from stask.web import create_app


def host_app(stask: Stask) -> FastAPI:
    """The README's example: the host's login decides who is asking."""

    def current_user(request: Request) -> Principal | None:
        name = request.headers.get("x-host-user")  # stands in for the host's own session
        if name is None:
            return None
        role = Role.VIEWER if name == "reader" else Role.OPERATOR
        return Principal(username=name, role=role, via="host")

    host = FastAPI()

    @host.get("/")
    def home() -> dict[str, str]:
        return {"host": "yes"}

    host.mount("/", create_app(stask, prefix="/stask", auth=current_user))
    return host


def test_a_mounted_app_serves_its_routes_and_trusts_the_hosts_user(app: Stask) -> None:
    client = TestClient(host_app(app), base_url="https://testserver")
    assert client.get("/").json() == {"host": "yes"}
    assert client.get("/stask/api/tasks").status_code == 401  # nobody logged in to the host
    created = client.post(
        "/stask/workers/inventory/tasks/sync_stock", json={"n": 1}, headers={"x-host-user": "ops"}
    )
    assert created.status_code == 200, created.text
    task = app.get(created.json()["id"])
    assert task.started_by == "ops"  # the host's user is recorded as who started it
    # The host's viewer reads but may not start tasks; stask's own login is off.
    reader = {"x-host-user": "reader"}
    assert client.get(f"/stask/tasks/{task.id}/progress", headers=reader).json()["id"] == task.id
    refused = client.post("/stask/workers/inventory/tasks/sync_stock", json={}, headers=reader)
    assert refused.status_code == 403
    login = client.post("/stask/api/login", json={"username": "admin", "password": "x" * 12})
    assert login.status_code == 404


def test_an_async_hook_works_as_well(app: Stask) -> None:
    async def hook(request: Request) -> Principal | None:
        return Principal(username="async-user", role=Role.VIEWER, via="host")

    client = TestClient(create_app(app, auth=hook), base_url="https://testserver")
    session = client.get("/stask/api/session").json()
    assert session["user"] == {"username": "async-user", "role": "viewer", "scopes": []}
