"""The worker contract: subclass ``BaseWorker``, set metadata, write ``task_<action>`` methods."""

from __future__ import annotations

import inspect
import random
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from stask.core.config import deep_merge, get_path, set_path
from stask.errors import WorkerDefinitionError
from stask.models import JSONDict

if TYPE_CHECKING:
    from stask.core.facade import Stask

ACTION_PREFIX = "task_"
IDENTIFIER_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,99}$")
SETTINGS_TTL_SECONDS = 2.0
BACKOFF_BASE_SECONDS = 2.0
BACKOFF_CAP_SECONDS = 3600.0

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NON_WORD = re.compile(r"[^a-z0-9]+")


def backoff_seconds(attempt: int, rng: random.Random | None = None) -> float:
    """Exponential backoff with +-20 % jitter: ~2 s, 4 s, 8 s, ... capped at an hour."""
    base = min(BACKOFF_BASE_SECONDS * 2 ** max(0, attempt - 1), BACKOFF_CAP_SECONDS)
    return float(base * (rng or random).uniform(0.8, 1.2))


def normalize_action(name: str) -> str:
    """``Sync-Stock``, ``syncStock``, ``sync stock``, ``SYNC_STOCK`` all become ``sync_stock``."""
    spaced = _CAMEL_BOUNDARY.sub("_", name.strip())
    return _NON_WORD.sub("_", spaced.lower()).strip("_")


class BaseWorker:
    """Base class of every worker. One instance per worker per ``Stask`` app, reused by tasks."""

    identifier: ClassVar[str] = ""
    scope: ClassVar[str] = "default"
    icon: ClassVar[str] = "cog"
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    queue: ClassVar[str | None] = None
    max_attempts: ClassVar[int] = 3
    timeout: ClassVar[float | None] = None
    _actions_cache: ClassVar[dict[str, str] | None] = None
    # "thread" (default) or "process": a child process per attempt, killed on timeout/cancel.
    isolation: ClassVar[str] = "thread"

    def __init__(self, app: Stask | None = None, *, identifier: str | None = None) -> None:
        self._app = app
        # Whose stored settings this instance reads: its class's, or a registered worker's whose
        # class cannot be imported in this process (config stays editable).
        self._settings_key = identifier or self.identifier
        self._stored: JSONDict | None = None
        self._stored_at = 0.0

    # -- metadata ------------------------------------------------------------------------------

    @classmethod
    def class_path(cls) -> str:
        return f"{cls.__module__}:{cls.__qualname__}"

    @classmethod
    def display_title(cls) -> str:
        return cls.title or cls.identifier.replace("_", " ").capitalize()

    @classmethod
    def actions(cls) -> dict[str, str]:
        """Normalized action name -> method name, for every ``task_<action>`` method.

        Computed once per class: the runner resolves an action for every task it runs.
        """
        return dict(cls._action_methods())

    @classmethod
    def _action_methods(cls) -> dict[str, str]:
        cached = cls.__dict__.get("_actions_cache")
        if cached is None:
            cached = cls._find_actions()
            cls._actions_cache = cached
        return cached

    @classmethod
    def _find_actions(cls) -> dict[str, str]:
        found: dict[str, str] = {}
        for name, _member in inspect.getmembers(cls, callable):
            if name.startswith(ACTION_PREFIX) and len(name) > len(ACTION_PREFIX):
                action = normalize_action(name[len(ACTION_PREFIX) :])
                if action in found:
                    raise WorkerDefinitionError(
                        f"worker {cls.class_path()} defines action {action!r} twice "
                        f"({found[action]} and {name}) - rename one of them"
                    )
                found[action] = name
        return found

    @classmethod
    def validate(cls) -> None:
        """Raise ``WorkerDefinitionError`` naming what is wrong with this class."""
        if not IDENTIFIER_PATTERN.match(cls.identifier or ""):
            raise WorkerDefinitionError(
                f"worker {cls.class_path()} has identifier {cls.identifier!r} - set a class "
                "attribute `identifier` in snake_case (letters, digits, _; starting with a letter)"
            )
        if not cls.actions():
            raise WorkerDefinitionError(
                f"worker {cls.class_path()} has no actions - define a method task_<action>"
            )
        if cls.isolation not in ("thread", "process"):
            raise WorkerDefinitionError(
                f"worker {cls.class_path()} has isolation {cls.isolation!r} - use "
                "'thread' or 'process'"
            )
        if cls.max_attempts < 1:
            raise WorkerDefinitionError(f"worker {cls.class_path()} has max_attempts < 1")

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retrying after failed attempt number ``attempt``."""
        return backoff_seconds(attempt)

    def resolve_action(self, action: str) -> Callable[..., Any] | None:
        actions = type(self)._action_methods()
        method = actions.get(action) or actions.get(normalize_action(action))
        return getattr(self, method) if method else None

    # -- settings ------------------------------------------------------------------------------

    def settings(self) -> JSONDict:
        """Defaults; stored settings (``s_workers.settings``) are merged over them."""
        return {}

    @property
    def app(self) -> Stask:
        if self._app is None:
            raise WorkerDefinitionError(
                f"worker {self.identifier!r} is not attached to a Stask app - get it with "
                "app.worker_instance(identifier) instead of instantiating it directly"
            )
        return self._app

    def _stored_settings(self) -> JSONDict:
        # Cached briefly so a loop calling get_config does not query the database each time.
        if self._stored is None or time.monotonic() - self._stored_at > SETTINGS_TTL_SECONDS:
            self._stored = self.app.stored_settings(self._settings_key)
            self._stored_at = time.monotonic()
        return self._stored

    def config(self) -> JSONDict:
        """All settings: defaults merged with what is stored."""
        return deep_merge(self.settings(), self._stored_settings())

    def get_config(self, key: str | None = None, default: Any = None) -> Any:
        merged = self.config()
        return merged if key is None else get_path(merged, key, default)

    def set_config(self, key: str, value: Any) -> None:
        self.update_config({key: value})

    def update_config(self, values: Mapping[str, Any]) -> None:
        """Persist several dot-notation keys at once."""

        def change(stored: JSONDict) -> JSONDict:
            for key, value in values.items():
                stored = set_path(stored, key, value)
            return stored

        self._stored = self.app.change_stored_settings(self._settings_key, change)
        self._stored_at = time.monotonic()
