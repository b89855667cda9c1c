"""Users, logins, sessions, API tokens and the audit log: the rules, over ``db.accounts``.

- Passwords are argon2id hashes (OWASP's minimum parameters: 19 MiB, 2 passes).
- A session is a random 256-bit value in the cookie; the database keeps its SHA-256, so a
  copy of the table cannot be replayed. Logging in makes a new one; logging out, changing the
  password or disabling the user revokes them.
- API tokens (``stask_`` + 256 random bits) are shown once and stored as SHA-256, looked up by
  hash and compared in constant time.
- Failed logins are throttled per account name and per address, counted from the audit log,
  the same way whether or not the account exists.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from stask.core.redact import Redactor
from stask.db.accounts import AccountStore
from stask.db.store import Store
from stask.errors import NotFound, StaskError, ValidationError
from stask.identity import ApiToken, AuditEntry, Principal, Role, User
from stask.models import utcnow
from stask.settings import Settings

USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$")
MIN_PASSWORD = 12
TOKEN_PREFIX = "stask_"
_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# Verified when the account does not exist, so both answers take as long.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))


class LoginFailed(StaskError):
    """Wrong user name or password."""

    http_status = 401
    exit_code = 1


class LoginThrottled(StaskError):
    """Too many failed logins - wait and try again."""

    http_status = 429
    exit_code = 1


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class NewSession:
    cookie: str  # what the browser keeps; never stored
    csrf_token: str
    user: User
    expires_at: dt.datetime


class Accounts:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.rows = AccountStore(store)
        self.settings = settings
        self.redact = Redactor(settings.redact_keys)

    # -- users ---------------------------------------------------------------------------------

    def users(self) -> list[User]:
        return self.rows.users()

    def user(self, username: str) -> User:
        found = self.rows.user(username)
        if found is None:
            raise NotFound(f"no user is named {username!r}")
        return found[0]

    def add_user(
        self,
        username: str,
        role: str | Role,
        password: str | None = None,
        scopes: Sequence[str] = (),
        *,
        actor: str | None = None,
    ) -> tuple[User, str | None]:
        """Create a user; with no password given, one is generated and returned (once)."""
        if not isinstance(username, str) or not USERNAME.match(username):
            raise ValidationError(
                "a user name is 1-100 letters, digits and . _ @ -, starting with a letter or digit"
            )
        parsed = Role.parse(role)
        clean_scopes = _check_scopes(scopes)
        generated = None
        if password is None:
            password = generated = secrets.token_urlsafe(18)
        check_password(password)
        user = self.rows.insert_user(username, _HASHER.hash(password), parsed, clean_scopes)
        if user is None:
            raise ValidationError(f"a user named {username!r} already exists")
        self.audit(actor, "user.add", username, detail={"role": parsed.value})
        return user, generated

    def ensure_admin(self) -> str | None:
        """On the very first start: create ``admin`` with a random password and return it."""
        if self.rows.count_users() > 0:
            return None
        password = secrets.token_urlsafe(18)
        user = self.rows.insert_user("admin", _HASHER.hash(password), Role.ADMIN, ())
        if user is None:  # another process created it first
            return None
        self.audit(None, "user.add", "admin", detail={"role": "admin", "first_start": True})
        return password

    def set_password(self, username: str, password: str, *, actor: str | None = None) -> User:
        check_password(password)
        user = self.rows.update_user(username, {"password_hash": _HASHER.hash(password)})
        if user is None:
            raise NotFound(f"no user is named {username!r}")
        self.audit(actor, "user.set_password", username)
        return user

    def set_role(
        self,
        username: str,
        role: str | Role,
        scopes: Sequence[str] | None = None,
        *,
        actor: str | None = None,
    ) -> User:
        values: dict[str, Any] = {"role": Role.parse(role).value}
        if scopes is not None:
            values["scopes"] = _check_scopes(scopes)
        user = self.rows.update_user(username, values)
        if user is None:
            raise NotFound(f"no user is named {username!r}")
        self.audit(actor, "user.set_role", username, detail={"role": values["role"]})
        return user

    def disable(self, username: str, *, actor: str | None = None) -> User:
        user = self.rows.update_user(username, {"disabled": True})
        if user is None:
            raise NotFound(f"no user is named {username!r}")
        self.audit(actor, "user.disable", username)
        return user

    def enable(self, username: str, *, actor: str | None = None) -> User:
        user = self.rows.update_user(username, {"disabled": False})
        if user is None:
            raise NotFound(f"no user is named {username!r}")
        self.audit(actor, "user.enable", username)
        return user

    # -- logging in ----------------------------------------------------------------------------

    def login(
        self,
        username: str,
        password: str,
        *,
        address: str | None = None,
        user_agent: str | None = None,
    ) -> NewSession:
        """A new session, or LoginFailed / LoginThrottled with the same words for every cause."""
        name = username[:100] if isinstance(username, str) else ""
        now = utcnow()
        since = now - dt.timedelta(seconds=self.settings.login_window_seconds)
        by_account, by_address = self.rows.recent_failures("login_failed", name, address, since)
        limit = self.settings.login_max_failures
        if by_account >= limit or by_address >= limit * 4:
            self.audit(name, "login_throttled", name, address=address, outcome="denied")
            raise LoginThrottled(
                "too many failed logins - wait "
                f"{round(self.settings.login_window_seconds / 60)} minutes and try again"
            )
        found = self.rows.user(name) if name else None
        stored = found[1] if found else None
        valid = _verify(stored or _DUMMY_HASH, password if isinstance(password, str) else "")
        if found is None or stored is None or not valid or found[0].disabled:
            self.audit(name, "login_failed", name, address=address, outcome="failed")
            raise LoginFailed("wrong user name or password")
        user = found[0]
        if _HASHER.check_needs_rehash(stored):
            self.rows.update_user(name, {"password_hash": _HASHER.hash(password)})
        cookie = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        expires = now + dt.timedelta(hours=self.settings.session_hours)
        self.rows.insert_session(digest(cookie), user.id, csrf, address, user_agent, expires)
        self.audit(user.username, "login", user.username, address=address)
        return NewSession(cookie=cookie, csrf_token=csrf, user=user, expires_at=expires)

    def check_password_of(self, username: str, password: str) -> None:
        """LoginFailed unless ``password`` is the user's."""
        found = self.rows.user(username)
        stored = found[1] if found else None
        if not _verify(stored or _DUMMY_HASH, password) or found is None or stored is None:
            raise LoginFailed("wrong user name or password")

    def session(self, cookie: str) -> Principal | None:
        """Who holds this session cookie, if the session is live and the user enabled."""
        if not cookie or len(cookie) > 200:
            return None
        session_hash = digest(cookie)
        now = utcnow()
        found = self.rows.live_session(session_hash, now)
        if found is None:
            return None
        user, csrf = found
        if user.disabled:
            return None
        return Principal(
            username=user.username,
            role=user.role,
            scopes=user.scopes,
            user_id=user.id,
            via="session",
            session_id=session_hash,
            csrf_token=csrf,
        )

    def logout(self, principal: Principal, *, address: str | None = None) -> None:
        if principal.session_id is not None:
            self.rows.revoke_session(principal.session_id)
        self.audit(principal.username, "logout", principal.username, address=address)

    # -- API tokens ----------------------------------------------------------------------------

    def create_token(
        self, name: str, username: str, *, actor: str | None = None
    ) -> tuple[int, str]:
        """A new token for ``username``: (id, the token). The token is never shown again."""
        if not isinstance(name, str) or not 1 <= len(name.strip()) <= 100:
            raise ValidationError("a token name is 1-100 characters")
        user = self.user(username)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_id = self.rows.insert_token(user.id, name.strip(), digest(token))
        self.audit(actor, "token.create", f"token:{token_id}", detail={"user": username})
        return token_id, token

    def tokens(self) -> list[ApiToken]:
        return self.rows.tokens()

    def revoke_token(self, token_id: int, *, actor: str | None = None) -> None:
        revoked = self.rows.revoke_token(token_id)
        if revoked is None:
            raise NotFound(f"no API token has id {token_id}")
        self.audit(actor, "token.revoke", f"token:{token_id}")

    def bearer(self, token: str) -> Principal | None:
        """Who holds this API token, if it is live and its user enabled."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        token_hash = digest(token)
        found = self.rows.token_owner(token_hash)
        if found is None:
            return None
        token_id, stored, user = found
        if not hmac.compare_digest(stored, token_hash) or user.disabled:
            return None
        self.rows.touch_token(token_id, utcnow())
        return Principal(
            username=user.username,
            role=user.role,
            scopes=user.scopes,
            user_id=user.id,
            via="token",
        )

    # -- audit ---------------------------------------------------------------------------------

    def audit(
        self,
        actor: str | None,
        action: str,
        target: str | None = None,
        *,
        address: str | None = None,
        outcome: str = "ok",
        detail: dict[str, Any] | None = None,
    ) -> None:
        self.rows.append_audit(
            {
                "at": utcnow(),
                "actor": actor[:100] if actor else None,
                "action": action[:100],
                "target": target[:255] if target else None,
                "address": address[:64] if address else None,
                "outcome": outcome,
                "detail": self.redact(detail) if detail else None,
            }
        )

    def audit_entries(
        self, *, limit: int = 100, before_id: int | None = None, actor: str | None = None
    ) -> list[AuditEntry]:
        return self.rows.audit_entries(
            limit=max(1, min(limit, 1000)), before_id=before_id, actor=actor
        )


def check_password(password: object) -> None:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise ValidationError(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise ValidationError("a password is at most 1024 characters")


def _check_scopes(scopes: Sequence[str]) -> list[str]:
    clean = []
    for scope in scopes:
        if not isinstance(scope, str) or not 1 <= len(scope) <= 100:
            raise ValidationError("a scope is a worker scope name of 1-100 characters")
        clean.append(scope)
    return sorted(set(clean))


def _verify(stored: str, password: str) -> bool:
    try:
        return _HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False
