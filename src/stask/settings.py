"""Typed settings: arguments, then ``STASK_*`` environment variables, then ``stask.toml``.

A small hand-written loader (pydantic-settings cost the runner about 10 MB of memory). Values
are coerced and checked the way pydantic's lax mode did, with the same error wording.
"""

from __future__ import annotations

import dataclasses
import os
from collections import deque
from collections.abc import Callable, Iterator, KeysView, Mapping, ValuesView
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path, PurePath
from typing import Any

from stask.errors import ConfigError

DEFAULT_DATABASE_URL = "sqlite:///./storage/stask.db"
CONFIG_FILE_ENV = "STASK_CONFIG"
DEFAULT_CONFIG_FILE = "stask.toml"
ENV_PREFIX = "STASK_"


class _Invalid(Exception):
    """What is wrong with one value: (where below the field, message) pairs."""

    def __init__(
        self, message: str = "", problems: list[tuple[tuple[int, ...], str]] | None = None
    ) -> None:
        super().__init__(message)
        self.problems = problems if problems is not None else [((), message)]


NOT_A_NUMBER = "Input should be a valid number"
UNPARSABLE_NUMBER = "Input should be a valid number, unable to parse string as a number"


def _string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode()
        except UnicodeDecodeError:
            raise _Invalid(
                "Input should be a valid string, unable to parse raw data as a unicode string"
            ) from None
    raise _Invalid("Input should be a valid string")


def _path(value: Any) -> Path:
    if isinstance(value, str | PurePath):
        return Path(value)
    raise _Invalid(f"Input is not a valid path for {Path}")


def _positive_float(value: Any) -> float:
    if isinstance(value, str | bytes):
        if isinstance(value, str) and not value.isascii():
            raise _Invalid(UNPARSABLE_NUMBER)
        try:
            number = float(value)
        except ValueError:
            raise _Invalid(UNPARSABLE_NUMBER) from None
    elif isinstance(value, bool | int | float | Decimal):
        try:
            number = float(value)
        except OverflowError:
            raise _Invalid(NOT_A_NUMBER) from None
    else:
        raise _Invalid(NOT_A_NUMBER)
    if not number > 0:  # also refuses NaN
        raise _Invalid("Input should be greater than 0")
    return number


def _positive_int(value: Any) -> int:
    if isinstance(value, bool):
        raise _Invalid("Input should be a valid integer")
    if isinstance(value, str):
        try:
            number = int(value.strip().replace("_", ""))
        except ValueError:
            raise _Invalid("Input should be a valid integer, unable to parse string") from None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    else:
        raise _Invalid("Input should be a valid integer")
    if number < 1:
        raise _Invalid("Input should be greater than 0")
    return number


def _module_list(value: Any) -> list[str]:
    """A list of names; a string is split on commas (``STASK_WORKERS=a.workers,b.workers``)."""
    if isinstance(value, str):
        return [name.strip() for name in value.split(",") if name.strip()]
    if not isinstance(
        value, list | tuple | set | frozenset | deque | KeysView | ValuesView | Iterator
    ):
        raise _Invalid("Input should be a valid list")
    names: list[str] = []
    problems: list[tuple[tuple[int, ...], str]] = []
    for index, item in enumerate(value):
        try:
            names.append(_string(item))
        except _Invalid as invalid:
            problems += [((index, *loc), message) for loc, message in invalid.problems]
    if problems:
        raise _Invalid(problems=problems)
    return names


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("1", "true", "yes", "on"):
            return True
        if word in ("0", "false", "no", "off", ""):
            return False
    raise _Invalid("Input should be a valid boolean")


# Field name -> (coercion, default factory), in the order errors are reported.
_FIELDS: dict[str, tuple[Callable[[Any], Any], Callable[[], Any]]] = {
    "database_url": (_string, lambda: DEFAULT_DATABASE_URL),
    "storage": (_path, lambda: Path("./storage")),
    "workers": (_module_list, list),
    "default_queue": (_string, lambda: "default"),
    "lease_seconds": (_positive_float, lambda: 30.0),
    "heartbeat_seconds": (_positive_float, lambda: 5.0),
    # Size limits of what callers and tasks hand to stask (bytes of UTF-8 / of JSON text).
    "max_options_bytes": (_positive_int, lambda: 1024 * 1024),
    "max_result_bytes": (_positive_int, lambda: 4 * 1024 * 1024),
    "max_message_bytes": (_positive_int, lambda: 16 * 1024),
    "max_log_context_bytes": (_positive_int, lambda: 64 * 1024),
    # The most times one task runs in all, snoozes (`raise Retry`) included.
    "max_runs": (_positive_int, lambda: 100),
    # Performance alerts (the seed's defaults): success rate below this percent, mean duration
    # above these seconds, mean peak memory above these bytes.
    "alert_success_rate": (_positive_float, lambda: 95.0),
    "alert_average_duration": (_positive_float, lambda: 300.0),
    "alert_average_memory": (_positive_float, lambda: float(100 * 1024 * 1024)),
    # Statistics roll up tasks that finished at least this long ago (commit lag, clock skew);
    # summaries add the newer ones live.
    "stats_grace_seconds": (_positive_float, lambda: 30.0),
    # The web app: session lifetime, login throttling, uploads, and extra option keys to redact.
    "session_hours": (_positive_float, lambda: 12.0),
    "login_max_failures": (_positive_int, lambda: 5),
    "login_window_seconds": (_positive_float, lambda: 900.0),
    "max_upload_bytes": (_positive_int, lambda: 50 * 1024 * 1024),
    "redact_keys": (_module_list, list),
    # Serve the session cookie without Secure (and without the __Host- prefix) over plain HTTP on
    # a non-loopback address. Only behind a network you trust: prefer TLS in front of stask.
    "insecure_cookies": (_bool, lambda: False),
}


@dataclass(init=False)
class Settings:
    """Everything stask reads from its environment. Minimal config is none at all.

    ``Settings(**values)`` takes ``values`` first, then ``STASK_*`` environment variables (in
    any letter case), then ``stask.toml`` (or the file named by ``STASK_CONFIG``), then the
    defaults; it raises ConfigError naming every invalid value.
    """

    database_url: str
    storage: Path
    workers: list[str]
    default_queue: str
    lease_seconds: float
    heartbeat_seconds: float
    max_options_bytes: int
    max_result_bytes: int
    max_message_bytes: int
    max_log_context_bytes: int
    max_runs: int
    alert_success_rate: float
    alert_average_duration: float
    alert_average_memory: float
    stats_grace_seconds: float
    session_hours: float
    login_max_failures: int
    login_window_seconds: float
    max_upload_bytes: int
    redact_keys: list[str]
    insecure_cookies: bool

    def __init__(self, **values: Any) -> None:
        from_file = _read_toml(config_file_path())
        environment = {name.lower(): value for name, value in os.environ.items()}
        problems: list[str] = []
        for name, (coerce, default) in _FIELDS.items():
            env_name = f"{ENV_PREFIX}{name}".lower()
            if name in values:
                raw = values[name]
            elif env_name in environment:
                raw = environment[env_name]
            elif name in from_file:
                raw = from_file[name]
            else:
                setattr(self, name, default())
                continue
            try:
                setattr(self, name, coerce(raw))
            except _Invalid as invalid:
                problems += [_describe((name, *loc), message) for loc, message in invalid.problems]
        problems += [
            _describe((name,), "Extra inputs are not permitted")
            for name in values
            if name not in _FIELDS
        ]
        if problems:
            raise ConfigError(f"invalid settings: {'; '.join(problems)}")

    def to_json(self) -> dict[str, Any]:
        """JSON-safe values that ``Settings(**values)`` turns back into these settings."""
        values = dataclasses.asdict(self)
        values["storage"] = str(self.storage)
        return values


def _describe(loc: tuple[str | int, ...], message: str) -> str:
    return f"{'.'.join(str(part) for part in loc)}: {message}"


def _read_toml(path: Path | None) -> dict[str, Any]:
    """The top-level keys of ``stask.toml`` (or its ``[stask]`` table); unknown keys refused."""
    if path is None or not path.is_file():
        return {}
    import tomllib  # only when there is a file to read

    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc} - fix the TOML syntax") from exc
    section: Mapping[str, Any] = data.get("stask", data)
    known = set(_FIELDS)
    unknown = sorted(set(section) - known)
    if unknown:
        raise ConfigError(
            f"unknown key(s) in {path}: {', '.join(unknown)} - "
            f"known keys are {', '.join(sorted(known))}"
        )
    return dict(section)


def config_file_path() -> Path | None:
    explicit = os.environ.get(CONFIG_FILE_ENV)
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"{CONFIG_FILE_ENV} names {path}, which does not exist")
        return path
    return Path(DEFAULT_CONFIG_FILE)


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the given values (``None`` means "not given"), env and file."""
    return Settings(**{key: value for key, value in overrides.items() if value is not None})
