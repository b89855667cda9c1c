"""Dot-notation access to nested settings (``api.timeout`` -> ``{"api": {"timeout": ..}}``)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from stask.errors import ValidationError
from stask.models import JSONDict

_MISSING = object()


def _parts(key: str) -> list[str]:
    parts = key.split(".")
    if not key or any(not part for part in parts):
        raise ValidationError(
            f"invalid config key {key!r} - use names joined by dots, e.g. api.url"
        )
    return parts


def get_path(data: Mapping[str, Any], key: str, default: Any = None) -> Any:
    node: Any = data
    for part in _parts(key):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def set_path(data: Mapping[str, Any], key: str, value: Any) -> JSONDict:
    """A copy of ``data`` with ``key`` set; intermediate dicts are created (or replace scalars)."""
    result: JSONDict = copy.deepcopy(dict(data))
    parts = _parts(key)
    node = result
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value
    return result


def unset_path(data: Mapping[str, Any], key: str) -> JSONDict:
    result: JSONDict = copy.deepcopy(dict(data))
    parts = _parts(key)
    node: Any = result
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return result
    if isinstance(node, dict):
        node.pop(parts[-1], None)
    return result


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> JSONDict:
    """``override`` wins; nested dicts merge key by key."""
    merged: JSONDict = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged
