"""Checks on what callers and task code hand to stask, made where it is handed over.

A value that every database cannot store (not JSON, too large, a NUL character, an unpaired
surrogate) is refused at the call that gave it, with a message naming it, so it never reaches
the runner's batched writes, where it would fail every other outcome of the batch.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stask.errors import ValidationError

if TYPE_CHECKING:
    from stask.settings import Settings

# A JSON escape of NUL that is not itself an escaped backslash followed by "u0000".
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
# Stored error texts (tracebacks) are cut to this many characters.
ERROR_TEXT_LIMIT = 64 * 1024


def _size(nbytes: int) -> str:
    if nbytes >= 1024 * 1024:
        return f"{nbytes / (1024 * 1024):g} MiB"
    if nbytes >= 1024:
        return f"{nbytes / 1024:g} KiB"
    return f"{nbytes} bytes"


def check_json(value: Any, what: str, limit: int, setting: str) -> str:
    """``value`` as the JSON text stask stores; ValidationError naming ``what`` if it cannot be.

    ``limit`` is the most bytes of JSON allowed, ``setting`` the setting that raises it.
    """
    try:
        dumped = json.dumps(value, allow_nan=False, ensure_ascii=False)
    except RecursionError:
        raise ValidationError(f"{what} is nested too deeply to store as JSON") from None
    except (TypeError, ValueError) as err:
        raise ValidationError(
            f"{what} is not JSON ({err}) - use dicts with string keys, lists, strings, numbers, "
            "booleans or None (convert dates, paths and objects to strings)"
        ) from err
    except Exception as err:  # a hostile __iter__ or __str__ of a subclass
        raise ValidationError(
            f"{what} could not be turned into JSON: {type(err).__name__}: {err}"
        ) from err
    encoded = _encoded(dumped, what)
    if len(encoded) > limit:
        raise ValidationError(
            f"{what} is {_size(len(encoded))} of JSON, over the limit of {_size(limit)} - store "
            f"large data in a file (task.storage_path()) or raise the setting {setting}"
        )
    if _JSON_NUL.search(dumped):
        raise ValidationError(f"{what} contains a NUL character (\\u0000), which cannot be stored")
    return dumped


def check_text(value: Any, what: str, limit: int, setting: str) -> str:
    """``value`` as text stask can store, at most ``limit`` bytes of UTF-8; else ValidationError."""
    if not isinstance(value, str):
        try:
            value = f"{value}"
        except Exception as err:
            raise ValidationError(
                f"{what} could not be turned into text: {type(err).__name__}: {err}"
            ) from err
    text: str = value
    encoded = _encoded(text, what)
    if len(encoded) > limit:
        raise ValidationError(
            f"{what} is {_size(len(encoded))}, over the limit of {_size(limit)} - shorten it or "
            f"raise the setting {setting}"
        )
    if "\x00" in text:
        raise ValidationError(f"{what} contains a NUL character, which cannot be stored")
    return text


def _encoded(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValidationError(
            f"{what} contains an unpaired surrogate ({err.reason} at position {err.start}), "
            "which is not valid Unicode text"
        ) from None


def storable_text(text: str, limit: int = ERROR_TEXT_LIMIT) -> str:
    """Text stask wrote itself (an error line, a traceback) made safe to store: NUL and unpaired
    surrogates replaced, cut to ``limit`` characters. Never raises."""
    cleaned = text.replace("\x00", "\\x00")
    try:
        cleaned.encode("utf-8")
    except UnicodeEncodeError:
        cleaned = cleaned.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(cleaned) > limit:
        cleaned = cleaned[: limit - 1] + "…"
    return cleaned


@dataclass(frozen=True, slots=True)
class Limits:
    """The size limits of settings (``max_*_bytes``), as the checks above take them."""

    options: int = 1024 * 1024
    result: int = 4 * 1024 * 1024
    message: int = 16 * 1024
    log_context: int = 64 * 1024

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(
            options=settings.max_options_bytes,
            result=settings.max_result_bytes,
            message=settings.max_message_bytes,
            log_context=settings.max_log_context_bytes,
        )

    def message_text(self, value: Any, what: str = "the message") -> str:
        return check_text(value, what, self.message, "max_message_bytes")

    def result_json(self, value: Any) -> str:
        return check_json(value, "the task's result", self.result, "max_result_bytes")
