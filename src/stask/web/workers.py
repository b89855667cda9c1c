"""Worker routes: list, detail, settings, schedule, activation, discovery, uploads."""

from __future__ import annotations

import contextlib
import json
import re
import secrets
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Body, Request
from pydantic import BaseModel, ConfigDict, Field

from stask.errors import StaskError
from stask.identity import Permission
from stask.web.common import clamp, ok, visible_identifiers, visible_worker
from stask.web.errors import ERROR_RESPONSES, ApiError, BodyTooLarge
from stask.web.security import context, principal_of, route
from stask.web.tasks import Created, Envelope

router = APIRouter(responses=ERROR_RESPONSES)
UPLOAD_EXTENSIONS_KEY = "upload_extensions"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class SettingsBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"values": {"batch_size": 200}}}
    )
    values: dict[str, Any] = Field(description="dot-notation keys and their new values")


def _worker_dict(request: Request, identifier: str) -> dict[str, Any]:
    ctx = context(request)
    info = ctx.app.worker(identifier)
    data = info.to_dict()
    data["settings"] = ctx.app.listing.redact(data["settings"])
    return data


@route(router, "GET", "/api/workers", Permission.READ, response_model=Envelope)
def list_workers(request: Request) -> dict[str, Any]:
    ctx = context(request)
    allowed = visible_identifiers(ctx, principal_of(request))
    rows = [
        {**info.to_dict(), "settings": ctx.app.listing.redact(info.settings)}
        for info in ctx.app.workers()
        if allowed is None or info.identifier in allowed
    ]
    return ok(workers=rows)


@route(router, "GET", "/api/workers/{identifier}", Permission.READ, response_model=Envelope)
def worker_detail(request: Request, identifier: str) -> dict[str, Any]:
    visible_worker(request, identifier, Permission.READ)
    return ok(worker=_worker_dict(request, identifier))


@route(
    router, "GET", "/api/workers/{identifier}/settings", Permission.READ, response_model=Envelope
)
def worker_settings(request: Request, identifier: str) -> dict[str, Any]:
    ctx = context(request)
    visible_worker(request, identifier, Permission.READ)
    return ok(settings=ctx.app.listing.redact(ctx.app.get_config(identifier)))


@route(
    router, "PUT", "/api/workers/{identifier}/settings", Permission.ADMIN, response_model=Envelope
)
def change_worker_settings(request: Request, identifier: str, body: SettingsBody) -> dict[str, Any]:
    ctx = context(request)
    visible_worker(request, identifier, Permission.ADMIN)
    ctx.app.update_config(identifier, body.values)
    ctx.audit(
        request,
        principal_of(request),
        "worker.settings",
        f"worker:{identifier}",
        detail={"keys": sorted(body.values)[:50]},
    )
    return ok(settings=ctx.app.listing.redact(ctx.app.get_config(identifier)))


@route(
    router, "GET", "/api/workers/{identifier}/schedule", Permission.READ, response_model=Envelope
)
def worker_schedule(request: Request, identifier: str, runs: int = 5) -> dict[str, Any]:
    ctx = context(request)
    visible_worker(request, identifier, Permission.READ)
    schedule = ctx.app.schedule(identifier)
    upcoming = ctx.app.next_runs(identifier, clamp(runs, 1, 50))
    return ok(
        schedule=schedule.to_dict(),
        next_runs=[moment.isoformat() + "Z" for moment in upcoming],
    )


@route(
    router, "PUT", "/api/workers/{identifier}/schedule", Permission.ADMIN, response_model=Envelope
)
def set_worker_schedule(
    request: Request,
    identifier: str,
    schedule: dict[str, Any] = Body(  # noqa: B008
        examples=[{"type": "periodic", "frequency": "daily", "time": "02:00"}]
    ),
) -> dict[str, Any]:
    ctx = context(request)
    visible_worker(request, identifier, Permission.ADMIN)
    parsed = ctx.app.set_schedule(identifier, schedule)
    ctx.audit(
        request,
        principal_of(request),
        "worker.schedule",
        f"worker:{identifier}",
        detail=parsed.to_dict(),
    )
    return ok(
        schedule=parsed.to_dict(),
        next_runs=[m.isoformat() + "Z" for m in ctx.app.next_runs(identifier, 5)],
    )


def _toggle(request: Request, identifier: str, active: bool) -> dict[str, Any]:
    ctx = context(request)
    visible_worker(request, identifier, Permission.ADMIN)
    info = ctx.app.activate(identifier) if active else ctx.app.deactivate(identifier)
    verb = "activate" if active else "deactivate"
    ctx.audit(request, principal_of(request), f"worker.{verb}", f"worker:{identifier}")
    return ok(worker=info.to_dict() | {"settings": ctx.app.listing.redact(info.settings)})


@route(
    router, "POST", "/api/workers/{identifier}/activate", Permission.ADMIN, response_model=Envelope
)
def activate(request: Request, identifier: str) -> dict[str, Any]:
    return _toggle(request, identifier, True)


@route(
    router,
    "POST",
    "/api/workers/{identifier}/deactivate",
    Permission.ADMIN,
    response_model=Envelope,
)
def deactivate(request: Request, identifier: str) -> dict[str, Any]:
    return _toggle(request, identifier, False)


@route(
    router,
    "POST",
    "/api/workers/discover",
    Permission.ADMIN,
    everywhere=True,
    response_model=Envelope,
)
def discover(request: Request) -> dict[str, Any]:
    ctx = context(request)
    found = ctx.app.discover()
    ctx.audit(request, principal_of(request), "worker.discover", None)
    return ok(registered=[w.identifier for w in found])


@route(
    router,
    "POST",
    "/api/workers/rescan",
    Permission.ADMIN,
    everywhere=True,
    response_model=Envelope,
)
def rescan(request: Request) -> dict[str, Any]:
    ctx = context(request)
    found = ctx.app.rescan()
    ctx.audit(request, principal_of(request), "worker.rescan", None)
    return ok(workers=[w.identifier for w in found])


@route(
    router,
    "POST",
    "/api/workers/clean-orphaned",
    Permission.ADMIN,
    everywhere=True,
    response_model=Envelope,
)
def clean_orphaned(request: Request) -> dict[str, Any]:
    ctx = context(request)
    removed = ctx.app.clean_orphaned()
    ctx.audit(request, principal_of(request), "worker.clean_orphaned", None)
    return ok(removed=removed)


def upload_extensions(ctx: Any, identifier: str) -> list[str]:
    value = ctx.app.get_config(identifier, UPLOAD_EXTENSIONS_KEY, [])
    if not isinstance(value, list):
        return []
    return [str(v).lower() if str(v).startswith(".") else "." + str(v).lower() for v in value]


async def _save(storage: Path, original: str, source: Any, limit: int) -> tuple[Path, Path, int]:
    """Stream ``source`` to a new folder under storage/uploads; 413 past ``limit`` bytes."""
    safe = _SAFE_NAME.sub("_", original)[:100] or "upload"
    relative = Path("uploads") / secrets.token_hex(8) / safe
    target = storage / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    size = 0
    try:
        with target.open("xb") as out:
            while chunk := await source.read(1024 * 1024):
                size += len(chunk)
                if size > limit:
                    raise ApiError(  # noqa: TRY301 - the partial file goes below
                        413, f"the upload is over the limit of {limit:,} bytes (max_upload_bytes)"
                    )
                out.write(chunk)
    except BaseException:
        _discard(target)
        raise
    return relative, target, size


def _discard(target: Path) -> None:
    target.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        target.parent.rmdir()


UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "options": {"type": "string", "description": "task options as JSON"},
                    },
                }
            }
        },
    }
}


@route(
    router,
    "POST",
    "/api/workers/{identifier}/tasks/{action}/upload",
    Permission.OPERATE,
    response_model=Created,
    openapi_extra=UPLOAD_BODY,
)
async def upload(request: Request, identifier: str, action: str) -> dict[str, Any]:
    """Stream a file into storage and start a task with it as its input.

    The worker's ``upload_extensions`` setting lists what it accepts; the ``max_upload_bytes``
    setting bounds the size. The file is stored as it came: never unpacked.
    """
    from starlette.concurrency import run_in_threadpool

    ctx = context(request)
    await run_in_threadpool(visible_worker, request, identifier, Permission.OPERATE)
    allowed = await run_in_threadpool(upload_extensions, ctx, identifier)
    limit = ctx.app.settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise ApiError(413, f"the upload is over the limit of {limit:,} bytes (max_upload_bytes)")
    kind = request.headers.get("content-type", "")
    if not kind.startswith("multipart/form-data"):
        raise ApiError(415, "send the file as multipart/form-data with a 'file' field")
    try:
        form = await request.form(max_files=1, max_fields=5, max_part_size=1024 * 1024)
    except BodyTooLarge:
        raise  # the body limit answers 413
    except Exception as err:
        raise ApiError(400, f"the multipart body is malformed: {str(err)[:200]}") from None
    try:
        upload_file = form.get("file")
        if upload_file is None or isinstance(upload_file, str):
            raise ApiError(422, "send the file in a field named 'file'")
        original = Path(upload_file.filename or "upload").name
        suffix = Path(original).suffix.lower()
        if suffix not in allowed:
            accepted = ", ".join(allowed) or "nothing (set its upload_extensions)"
            raise ApiError(
                422, f"{identifier} accepts {accepted}, not {suffix or 'no extension'!r}"
            )
        raw_options = form.get("options")
        options: dict[str, Any] = {}
        if isinstance(raw_options, str) and raw_options.strip():
            try:
                options = json.loads(raw_options)
            except ValueError:
                raise ApiError(400, "options is not valid JSON") from None
            if not isinstance(options, dict):
                raise ApiError(400, "options must be a JSON object")
        relative, target, size = await _save(ctx.app.settings.storage, original, upload_file, limit)
        options["upload"] = {"path": str(relative), "name": original, "size": size}
        principal = principal_of(request)
        try:
            task = await run_in_threadpool(
                lambda: ctx.app.create(identifier, action, options, started_by=principal.username)
            )
        except StaskError:
            _discard(target)
            raise
        ctx.audit(
            request,
            principal,
            "task.upload",
            f"task:{task.id}",
            detail={"file": original, "size": size},
        )
        return ok(id=task.id, message="Task created successfully", upload=options["upload"])
    finally:
        await form.close()  # its spooled temporary file
