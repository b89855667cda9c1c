"""People in ``s_users``, their sessions and API tokens, and the append-only ``s_audit`` log.

Only hashes of secrets are stored: the SHA-256 of a session cookie or an API token, the argon2
hash of a password. Nothing here updates or deletes an audit row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import RowMapping, func, insert, or_, select, update

from stask.db.store import Store
from stask.db.tables import api_tokens, audit, sessions, users
from stask.identity import ApiToken, AuditEntry, Role, User
from stask.models import utcnow


def _user(row: RowMapping) -> User:
    return User(
        id=row["id"],
        username=row["username"],
        role=Role(row["role"]),
        scopes=tuple(row["scopes"] or ()),
        disabled=bool(row["disabled"]),
        has_password=row["password_hash"] is not None,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class AccountStore:
    """The SQL of users, sessions, API tokens and the audit log, on a Store's connections."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- users ---------------------------------------------------------------------------------

    def count_users(self) -> int:
        with self.store.reading() as conn:
            return int(conn.execute(select(func.count()).select_from(users)).scalar_one())

    def users(self) -> list[User]:
        with self.store.reading() as conn:
            rows = conn.execute(select(users).order_by(users.c.username)).mappings()
            return [_user(row) for row in rows]

    def user(self, username: str) -> tuple[User, str | None] | None:
        """The user and their password hash."""
        with self.store.reading() as conn:
            row = conn.execute(select(users).where(users.c.username == username)).mappings().first()
        return None if row is None else (_user(row), row["password_hash"])

    def user_by_id(self, user_id: int) -> User | None:
        with self.store.reading() as conn:
            row = conn.execute(select(users).where(users.c.id == user_id)).mappings().first()
        return None if row is None else _user(row)

    def insert_user(
        self, username: str, password_hash: str | None, role: Role, scopes: Sequence[str]
    ) -> User | None:
        """The new user, or None when the name is taken."""
        now = utcnow()
        with self.store.writing() as conn:
            taken = conn.execute(select(users.c.id).where(users.c.username == username)).first()
            if taken is not None:
                return None
            conn.execute(
                insert(users).values(
                    username=username,
                    password_hash=password_hash,
                    role=role.value,
                    scopes=list(scopes),
                    disabled=False,
                    created_at=now,
                    updated_at=now,
                )
            )
            row = conn.execute(select(users).where(users.c.username == username)).mappings().one()
        return _user(row)

    def update_user(self, username: str, values: Mapping[str, Any]) -> User | None:
        """Change a user's columns; when the password or ``disabled`` changes, every session
        of the user ends in the same transaction."""
        now = utcnow()
        with self.store.writing() as conn:
            found = conn.execute(select(users.c.id).where(users.c.username == username)).first()
            if found is None:
                return None
            conn.execute(
                update(users).where(users.c.id == found.id).values(**values, updated_at=now)
            )
            if "password_hash" in values or values.get("disabled"):
                conn.execute(
                    update(sessions)
                    .where(sessions.c.user_id == found.id, sessions.c.revoked_at.is_(None))
                    .values(revoked_at=now)
                )
            row = conn.execute(select(users).where(users.c.id == found.id)).mappings().one()
        return _user(row)

    # -- sessions ------------------------------------------------------------------------------

    def insert_session(
        self,
        session_hash: str,
        user_id: int,
        csrf_token: str,
        address: str | None,
        user_agent: str | None,
        expires_at: dt.datetime,
    ) -> None:
        now = utcnow()
        with self.store.writing() as conn:
            conn.execute(
                insert(sessions).values(
                    id=session_hash,
                    user_id=user_id,
                    csrf_token=csrf_token,
                    address=(address or "")[:64] or None,
                    user_agent=(user_agent or "")[:255] or None,
                    created_at=now,
                    last_seen_at=now,
                    expires_at=expires_at,
                )
            )

    def live_session(self, session_hash: str, now: dt.datetime) -> tuple[User, str] | None:
        """The user and CSRF token of a session that is neither revoked nor expired."""
        with self.store.reading() as conn:
            row = (
                conn.execute(
                    select(sessions.c.csrf_token, sessions.c.last_seen_at, users)
                    .join(users, users.c.id == sessions.c.user_id)
                    .where(
                        sessions.c.id == session_hash,
                        sessions.c.revoked_at.is_(None),
                        sessions.c.expires_at > now,
                    )
                )
                .mappings()
                .first()
            )
        if row is None:
            return None
        return _user(row), row["csrf_token"]

    def touch_session(self, session_hash: str, now: dt.datetime) -> None:
        with self.store.writing() as conn:
            conn.execute(
                update(sessions).where(sessions.c.id == session_hash).values(last_seen_at=now)
            )

    def revoke_session(self, session_hash: str) -> bool:
        with self.store.writing() as conn:
            stmt = (
                update(sessions)
                .where(sessions.c.id == session_hash, sessions.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            return conn.execute(stmt).rowcount > 0

    # -- API tokens ----------------------------------------------------------------------------

    def insert_token(self, user_id: int, name: str, token_hash: str) -> int:
        with self.store.writing() as conn:
            conn.execute(
                insert(api_tokens).values(
                    user_id=user_id, name=name, token_hash=token_hash, created_at=utcnow()
                )
            )
            return int(
                conn.execute(
                    select(api_tokens.c.id).where(api_tokens.c.token_hash == token_hash)
                ).scalar_one()
            )

    def token_owner(self, token_hash: str) -> tuple[int, str, User] | None:
        """(token id, stored hash, user) of a token that is not revoked."""
        with self.store.reading() as conn:
            row = (
                conn.execute(
                    select(api_tokens.c.id.label("token_id"), api_tokens.c.token_hash, users)
                    .join(users, users.c.id == api_tokens.c.user_id)
                    .where(api_tokens.c.token_hash == token_hash, api_tokens.c.revoked_at.is_(None))
                )
                .mappings()
                .first()
            )
        if row is None:
            return None
        return row["token_id"], row["token_hash"], _user(row)

    def touch_token(self, token_id: int, now: dt.datetime) -> None:
        with self.store.writing() as conn:
            conn.execute(
                update(api_tokens).where(api_tokens.c.id == token_id).values(last_used_at=now)
            )

    def tokens(self) -> list[ApiToken]:
        with self.store.reading() as conn:
            rows = conn.execute(
                select(api_tokens, users.c.username)
                .join(users, users.c.id == api_tokens.c.user_id)
                .order_by(api_tokens.c.id)
            ).mappings()
            return [
                ApiToken(
                    id=row["id"],
                    user_id=row["user_id"],
                    username=row["username"],
                    name=row["name"],
                    created_at=row["created_at"],
                    last_used_at=row["last_used_at"],
                    revoked_at=row["revoked_at"],
                )
                for row in rows
            ]

    def revoke_token(self, token_id: int) -> bool | None:
        """True if revoked now, False if it already was, None if there is no such token."""
        with self.store.writing() as conn:
            found = conn.execute(
                select(api_tokens.c.revoked_at).where(api_tokens.c.id == token_id)
            ).first()
            if found is None:
                return None
            if found.revoked_at is not None:
                return False
            conn.execute(
                update(api_tokens).where(api_tokens.c.id == token_id).values(revoked_at=utcnow())
            )
            return True

    # -- audit ---------------------------------------------------------------------------------

    def append_audit(self, entry: Mapping[str, Any]) -> None:
        with self.store.writing() as conn:
            conn.execute(insert(audit).values(**entry))

    def recent_failures(
        self, action: str, actor: str, address: str | None, since: dt.datetime
    ) -> tuple[int, int]:
        """How many ``action`` entries since ``since`` name the account, and the address."""
        with self.store.reading() as conn:
            by_actor = conn.execute(
                select(func.count())
                .select_from(audit)
                .where(audit.c.actor == actor, audit.c.action == action, audit.c.at >= since)
            ).scalar_one()
            by_address = 0
            if address:
                by_address = conn.execute(
                    select(func.count())
                    .select_from(audit)
                    .where(
                        audit.c.address == address, audit.c.action == action, audit.c.at >= since
                    )
                ).scalar_one()
        return int(by_actor), int(by_address)

    def audit_entries(
        self, *, limit: int, before_id: int | None = None, actor: str | None = None
    ) -> list[AuditEntry]:
        stmt = select(audit).order_by(audit.c.id.desc()).limit(limit)
        if before_id is not None:
            stmt = stmt.where(audit.c.id < before_id)
        if actor:
            stmt = stmt.where(or_(audit.c.actor == actor))
        with self.store.reading() as conn:
            return [
                AuditEntry(
                    id=row["id"],
                    at=row["at"],
                    actor=row["actor"],
                    action=row["action"],
                    target=row["target"],
                    address=row["address"],
                    outcome=row["outcome"],
                    detail=row["detail"] or {},
                )
                for row in conn.execute(stmt).mappings()
            ]
