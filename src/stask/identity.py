"""Value types of people and their rights: roles, users, sessions, API tokens, audit entries.

Part of the models layer (no database, no web): ``db`` returns these, ``core`` decides with
them, ``web`` and ``cli`` show them.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field
from typing import Any

from stask.errors import ValidationError


class Role(enum.StrEnum):
    """What a user may do: each role may do everything the ones before it may."""

    VIEWER = "viewer"  # read tasks, logs, workers, statistics
    OPERATOR = "operator"  # also create, cancel, retry, delete tasks and upload inputs
    ADMIN = "admin"  # also workers, settings, schedules, queues, users, clean

    @property
    def rank(self) -> int:
        return _RANKS[self]

    @classmethod
    def parse(cls, value: str | Role) -> Role:
        if isinstance(value, Role):
            return value
        if isinstance(value, str) and value.lower() in cls._value2member_map_:
            return cls(value.lower())
        raise ValidationError(f"unknown role {value!r} - use one of: viewer, operator, admin")


_RANKS = {Role.VIEWER: 1, Role.OPERATOR: 2, Role.ADMIN: 3}


class Permission(enum.StrEnum):
    """What a route needs. Every route declares one; a route without one is refused."""

    PUBLIC = "public"  # health, login, static files: no authentication
    READ = "read"  # viewer
    OPERATE = "operate"  # operator
    ADMIN = "admin"  # admin

    @property
    def role(self) -> Role | None:
        return {
            Permission.READ: Role.VIEWER,
            Permission.OPERATE: Role.OPERATOR,
            Permission.ADMIN: Role.ADMIN,
        }.get(self)


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    role: Role
    # The worker scopes the role applies to; empty means every scope.
    scopes: tuple[str, ...]
    disabled: bool
    has_password: bool
    created_at: dt.datetime
    updated_at: dt.datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.username,
            "role": self.role.value,
            "scopes": list(self.scopes),
            "disabled": self.disabled,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a user of stask's own login, of an API token, or of the host app."""

    username: str
    role: Role
    scopes: tuple[str, ...] = ()
    user_id: int | None = None
    # How the request was authenticated: "session", "token" or "host".
    via: str = "session"
    session_id: str | None = None
    csrf_token: str | None = None

    @property
    def is_global(self) -> bool:
        """Whether the role applies to every worker scope."""
        return not self.scopes

    def may(self, permission: Permission, scope: str | None = None) -> bool:
        """Whether this principal holds ``permission`` (within worker ``scope`` if given).

        Without a scope, a permission on everything (users, settings, queues, statistics of
        all workers) needs a role that applies to every scope.
        """
        needed = permission.role
        if needed is None:
            return True
        if self.role.rank < needed.rank:
            return False
        if scope is None:
            return self.is_global
        return self.sees(scope)

    def sees(self, scope: str) -> bool:
        """Whether objects of worker ``scope`` exist for this principal at all."""
        return self.is_global or scope in self.scopes


@dataclass(frozen=True, slots=True)
class ApiToken:
    id: int
    user_id: int
    username: str
    name: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user": self.username,
            "name": self.name,
            "created_at": _iso(self.created_at),
            "last_used_at": _iso(self.last_used_at),
            "revoked_at": _iso(self.revoked_at),
        }


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: dt.datetime
    actor: str | None
    action: str
    target: str | None
    address: str | None
    outcome: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": _iso(self.at),
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "address": self.address,
            "outcome": self.outcome,
            "detail": self.detail,
        }


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.replace(tzinfo=dt.UTC).isoformat()
