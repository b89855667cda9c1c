"""Finding worker classes: modules named in config and the ``stask.workers`` entry points."""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from importlib.metadata import entry_points
from types import ModuleType

from stask.core.worker import BaseWorker
from stask.errors import ConfigError, WorkerDefinitionError

ENTRY_POINT_GROUP = "stask.workers"
log = logging.getLogger("stask.registry")


def import_from_cwd() -> None:
    """Put the current directory first on ``sys.path`` (once), as ``python -m`` does.

    The ``stask`` console script starts with its own ``bin/`` folder there instead, so
    ``STASK_WORKERS=myapp.workers`` would not find ``./myapp`` without this.
    """
    try:
        cwd = os.getcwd()
    except OSError:  # the directory was removed under us: nothing to add
        return
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def import_class(class_path: str) -> type[BaseWorker] | None:
    """The worker class at ``package.module:Class``, or None if it can no longer be imported."""
    module_name, _, qualname = class_path.partition(":")
    import_from_cwd()
    try:
        target: object = importlib.import_module(module_name)
    except Exception:  # any import failure makes the worker orphaned, not the caller broken
        return None
    for part in qualname.split("."):
        target = getattr(target, part, None)
        if target is None:
            return None
    if inspect.isclass(target) and issubclass(target, BaseWorker):
        return target
    return None


def _workers_in(module: ModuleType) -> list[type[BaseWorker]]:
    found = []
    for value in vars(module).values():
        if (
            inspect.isclass(value)
            and issubclass(value, BaseWorker)
            and value is not BaseWorker
            and not inspect.isabstract(value)
            and value.identifier
        ):
            found.append(value)
    return found


def _import_module(name: str, origin: str) -> ModuleType:
    import_from_cwd()
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ConfigError(
            f"cannot import worker module {name!r} ({origin}): {err} - check the name and that "
            "the module is importable from this directory or the installed packages"
        ) from err
    except Exception as err:
        raise ConfigError(
            f"worker module {name!r} ({origin}) failed while importing: {type(err).__name__}: {err}"
        ) from err


def _entry_point_classes() -> Iterable[type[BaseWorker]]:
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = point.load()
        except Exception as err:  # a broken third-party package must not stop the others
            log.warning("skipping entry point %s = %s: %s", point.name, point.value, err)
            continue
        if inspect.ismodule(loaded):
            yield from _workers_in(loaded)
        elif inspect.isclass(loaded) and issubclass(loaded, BaseWorker):
            yield loaded
        else:
            log.warning(
                "entry point %s = %s is not a module or worker class", point.name, point.value
            )


class Registry:
    """Identifier -> worker class for every worker this process can run."""

    def __init__(self, modules: Sequence[str], *, use_entry_points: bool = True) -> None:
        self.modules = list(modules)
        self.use_entry_points = use_entry_points
        self._classes: dict[str, type[BaseWorker]] | None = None

    def classes(self) -> dict[str, type[BaseWorker]]:
        if self._classes is None:
            self._classes = self._load()
        return self._classes

    def reload(self) -> dict[str, type[BaseWorker]]:
        self._classes = None
        return self.classes()

    def get(self, identifier: str) -> type[BaseWorker] | None:
        return self.classes().get(identifier)

    def _load(self) -> dict[str, type[BaseWorker]]:
        candidates: list[type[BaseWorker]] = []
        for name in self.modules:
            candidates.extend(_workers_in(_import_module(name, "from the `workers` setting")))
        if self.use_entry_points:
            candidates.extend(_entry_point_classes())
        found: dict[str, type[BaseWorker]] = {}
        for cls in candidates:
            cls.validate()
            other = found.get(cls.identifier)
            if other is not None and other is not cls:
                raise WorkerDefinitionError(
                    f"two worker classes use identifier {cls.identifier!r}: "
                    f"{other.class_path()} and {cls.class_path()} - give one another identifier"
                )
            found[cls.identifier] = cls
        return found
