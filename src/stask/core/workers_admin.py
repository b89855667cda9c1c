"""Worker administration: discovery, rescan and cleaning of registered workers, activation and
rate limits, live instances, and stored settings (``get_config`` and friends).

Worker rows that are read often (creating a task checks its worker; task code reads settings
in loops) come from the app's ``worker_cache`` (core/cache.py); every write here forgets the
entries of the workers it changed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from stask.core.config import deep_merge
from stask.core.queues import check_limits
from stask.core.registry import import_class
from stask.core.worker import BaseWorker
from stask.errors import UnknownWorker
from stask.models import JSONDict, WorkerInfo, WorkerRecord

if TYPE_CHECKING:
    from stask.core.facade import Stask

log = logging.getLogger("stask")
# Entries live this long, so a change made by another process is seen within it.
WORKER_CACHE_SECONDS = 2.0
WORKER_CACHE_ENTRIES = 1024


def metadata(cls: type[BaseWorker]) -> JSONDict:
    """The columns of ``s_workers`` that come from the worker's class."""
    return {
        "class_path": cls.class_path(),
        "scope": cls.scope,
        "title": cls.display_title(),
        "description": cls.description,
        "icon": cls.icon,
        "actions": sorted(cls.actions()),
    }


def _stored_metadata(record: WorkerRecord) -> JSONDict:
    return {
        "class_path": record.class_path,
        "scope": record.scope,
        "title": record.title,
        "description": record.description,
        "icon": record.icon,
        "actions": list(record.actions),
    }


def info(app: Stask, record: WorkerRecord) -> WorkerInfo:
    # The registry decides what this process runs (by identifier), so a worker it knows is
    # not orphaned even if its stored class path is stale (moved class; rescan updates it).
    cls = app.registry.get(record.identifier) or import_class(record.class_path)
    defaults = worker_defaults(app, cls) if cls is not None else {}
    return WorkerInfo(
        id=record.id,
        identifier=record.identifier,
        class_path=record.class_path,
        scope=record.scope,
        title=record.title,
        description=record.description or "",
        icon=record.icon,
        actions=record.actions,
        active=record.active,
        position=record.position,
        settings=deep_merge(defaults, record.settings),
        orphaned=cls is None,
        created_at=record.created_at,
        updated_at=record.updated_at,
        rate_limit=record.rate_limit,
        rate_period_seconds=record.rate_period_seconds,
    )


def worker_defaults(app: Stask, cls: type[BaseWorker]) -> JSONDict:
    """A worker's default settings; {} (logged) when its ``__init__`` or ``settings()`` raise,
    so one broken worker does not break listing the others or firing their schedules."""
    try:
        defaults = cls(app).settings()
    except Exception as err:
        log.warning(
            "worker %s: its settings() failed: %s: %s", cls.__name__, type(err).__name__, err
        )
        return {}
    return dict(defaults) if isinstance(defaults, Mapping) else {}


# -- reading -----------------------------------------------------------------------------------


def record(app: Stask, identifier: str) -> WorkerRecord:
    """The stored row, read now; UnknownWorker if there is none."""
    found = app.store.workers.get(identifier)
    if found is None:
        raise unknown_worker(app, identifier)
    return found


def cached_record(app: Stask, identifier: str) -> WorkerRecord | None:
    """The stored row from the cache, read (and cached) on a miss; None if there is none."""
    found = app.worker_cache.get(identifier)
    if found is None:
        found = app.store.workers.get(identifier)
        if found is not None:
            app.worker_cache.put(identifier, found)
    return found


def forget(app: Stask, identifiers: list[str] | None = None) -> None:
    """Drop the cached rows of ``identifiers`` (None: all) after a write changed them."""
    if identifiers is None:
        app.worker_cache.clear()
    else:
        for identifier in identifiers:
            app.worker_cache.pop(identifier)


def unknown_worker(app: Stask, identifier: str) -> UnknownWorker:
    known = sorted(found.identifier for found in app.store.workers.all())
    listing = ", ".join(known) if known else "none"
    return UnknownWorker(
        f"no worker {identifier!r} is registered (registered: {listing}) - check the "
        "identifier, or run `stask workers discover` after adding its module to STASK_WORKERS"
    )


def workers(app: Stask, *, active_only: bool = False) -> list[WorkerInfo]:
    infos = [info(app, found) for found in app.store.workers.all()]
    return [found for found in infos if found.active or not active_only]


def worker(app: Stask, identifier: str) -> WorkerInfo:
    return info(app, record(app, identifier))


# -- registering -------------------------------------------------------------------------------


def discover(app: Stask) -> list[WorkerInfo]:
    """Register workers found in code that are not registered yet; returns the new ones."""
    classes = app.registry.reload()
    known = {found.identifier for found in app.store.workers.all()}
    added = []
    for position, (identifier, cls) in enumerate(sorted(classes.items()), start=len(known)):
        if identifier in known:
            continue
        values = {
            "identifier": identifier,
            "active": True,
            "position": position,
            "settings": {},
            **metadata(cls),
        }
        if app.store.workers.insert(values):
            added.append(identifier)
    forget(app, added)
    return [worker(app, identifier) for identifier in added]


def rescan(app: Stask) -> list[WorkerInfo]:
    """Refresh the stored metadata (class path, title, actions, ...) of registered workers."""
    classes = app.registry.reload()
    updated = []
    for found in app.store.workers.all():
        cls = classes.get(found.identifier) or import_class(found.class_path)
        if cls is None:
            continue
        values = metadata(cls)
        stored = _stored_metadata(found)
        if any(stored[key] != value for key, value in values.items()):
            app.store.workers.update(found.identifier, values)
            updated.append(found.identifier)
    forget(app, updated)
    return [worker(app, identifier) for identifier in updated]


def clean_orphaned(app: Stask) -> list[str]:
    """Remove registered workers whose class can no longer be imported; their tasks stay."""
    app.registry.reload()
    orphaned = [found.identifier for found in workers(app) if found.orphaned]
    app.store.workers.delete(orphaned)
    forget(app, orphaned)
    return orphaned


def update(app: Stask, identifier: str, values: Mapping[str, Any]) -> None:
    """Change a registered worker's columns (UnknownWorker if there is none)."""
    if not app.store.workers.update(identifier, values):
        raise unknown_worker(app, identifier)
    forget(app, [identifier])


def rate_limit_values(rate: int | None, period_seconds: int | None) -> JSONDict:
    """The columns of a worker rate limit (checked), for ``update``."""
    limits = check_limits(None, rate, period_seconds)
    return {key: limits[key] for key in ("rate_limit", "rate_period_seconds")}


# -- instances and settings --------------------------------------------------------------------


def worker_instance(app: Stask, identifier: str) -> BaseWorker | None:
    """The live instance of a worker this process can run, or None."""
    instance = app.instances.get(identifier)
    if instance is None:
        cls = app.registry.get(identifier)
        if cls is None:
            return None
        instance = app.instances[identifier] = cls(app)
    return instance


def stored_settings(app: Stask, identifier: str) -> JSONDict:
    found = cached_record(app, identifier)
    if found is None:
        raise unknown_worker(app, identifier)
    return dict(found.settings)


def change_stored_settings(
    app: Stask, identifier: str, change: Callable[[JSONDict], JSONDict]
) -> JSONDict:
    try:
        changed = app.store.workers.change_settings(identifier, change)
    finally:
        forget(app, [identifier])
    if changed is None:
        raise unknown_worker(app, identifier)
    return changed


def configurable(app: Stask, identifier: str) -> BaseWorker:
    """An instance for config access, even of a worker this process does not run."""
    instance = worker_instance(app, identifier)
    if instance is not None:
        return instance
    cls = import_class(record(app, identifier).class_path)
    return cls(app) if cls is not None else BaseWorker(app, identifier=identifier)
