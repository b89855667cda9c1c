"""Hide the values of secret-looking keys, at any depth, before anything leaves stask.

Every response, export, log view, CLI print and audit entry passes task options, results and
log context through ``redact``. A key is secret when its name contains one of ``SECRET_WORDS``
(case-insensitive), or one of the extra words of the ``redact_keys`` setting.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

SECRET_WORDS = (
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "auth",
    "credential",
)
REDACTED = "[redacted]"
_MAX_DEPTH = 64


class Redactor:
    def __init__(self, extra: Iterable[str] = ()) -> None:
        self.words = tuple(dict.fromkeys([*SECRET_WORDS, *(w.lower() for w in extra if w)]))

    def is_secret(self, key: object) -> bool:
        name = str(key).lower()
        return any(word in name for word in self.words)

    def __call__(self, value: Any) -> Any:
        return self._walk(value, 0)

    def _walk(self, value: Any, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            return REDACTED  # deeper than any real option: never echo what was not inspected
        if isinstance(value, dict):
            return {
                key: REDACTED if self.is_secret(key) else self._walk(item, depth + 1)
                for key, item in value.items()
            }
        if isinstance(value, list | tuple):
            return [self._walk(item, depth + 1) for item in value]
        return value


def redact(value: Any, extra: Iterable[str] = ()) -> Any:
    return Redactor(extra)(value)
