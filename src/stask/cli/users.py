"""`stask users` and `stask tokens`: people who use the web app and scripts' API tokens."""

from __future__ import annotations

import click

from stask.cli.base import echo_json, pass_app
from stask.core.facade import Stask
from stask.identity import Role

ROLES = click.Choice([r.value for r in Role], case_sensitive=False)


def _password_prompt() -> str:
    value: str = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    return value


@click.group()
def users() -> None:
    """Manage the people who may log in to the web app."""


@users.command("add")
@click.argument("name")
@click.option("--role", type=ROLES, required=True, help="viewer, operator or admin.")
@click.option("--password", help="Their password (12+ characters); generated when left out.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    help="Limit the role to workers of this scope (repeatable); all scopes when left out.",
)
@pass_app
def add(app: Stask, name: str, role: str, password: str | None, scopes: tuple[str, ...]) -> None:
    """Create user NAME."""
    user, generated = app.accounts.add_user(name, role, password, scopes, actor="cli")
    click.echo(f"Created user {user.username} ({user.role.value}).")
    if generated:
        click.echo(f"Password (shown once): {generated}")


@users.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_app
def list_(app: Stask, as_json: bool) -> None:
    """List users."""
    found = app.accounts.users()
    if as_json:
        echo_json([u.to_dict() for u in found])
        return
    for user in found:
        scopes = ",".join(user.scopes) or "all scopes"
        state = " (disabled)" if user.disabled else ""
        click.echo(f"{user.username}\t{user.role.value}\t{scopes}{state}")


@users.command("set-password")
@click.argument("name")
@click.option("--password", help="The new password; asked for when left out.")
@pass_app
def set_password(app: Stask, name: str, password: str | None) -> None:
    """Set NAME's password; their sessions end."""
    app.accounts.user(name)  # fail before prompting for a user that does not exist
    app.accounts.set_password(name, password or _password_prompt(), actor="cli")
    click.echo(f"Password of {name} changed; their sessions ended.")


@users.command("disable")
@click.argument("name")
@pass_app
def disable(app: Stask, name: str) -> None:
    """Disable NAME: their sessions and API tokens stop working."""
    app.accounts.disable(name, actor="cli")
    click.echo(f"Disabled {name}.")


@users.command("enable")
@click.argument("name")
@pass_app
def enable(app: Stask, name: str) -> None:
    """Enable NAME again."""
    app.accounts.enable(name, actor="cli")
    click.echo(f"Enabled {name}.")


@click.group()
def tokens() -> None:
    """Manage API tokens for scripts (sent as 'Authorization: Bearer <token>')."""


@tokens.command("create")
@click.argument("name")
@click.option("--user", "username", required=True, help="Whose rights the token carries.")
@pass_app
def create(app: Stask, name: str, username: str) -> None:
    """Create token NAME for a user; it is printed once."""
    token_id, token = app.accounts.create_token(name, username, actor="cli")
    click.echo(f"Token {token_id} for {username} (shown once, store it now):")
    click.echo(token)


@tokens.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_app
def list_tokens(app: Stask, as_json: bool) -> None:
    """List tokens (never their values)."""
    found = app.accounts.tokens()
    if as_json:
        echo_json([t.to_dict() for t in found])
        return
    for token in found:
        state = "revoked" if token.revoked_at else "active"
        used = token.last_used_at.isoformat() if token.last_used_at else "never used"
        click.echo(f"{token.id}\t{token.name}\t{token.username}\t{state}\t{used}")


@tokens.command("revoke")
@click.argument("token_id", type=click.IntRange(min=1))
@pass_app
def revoke(app: Stask, token_id: int) -> None:
    """Revoke token TOKEN_ID."""
    app.accounts.revoke_token(token_id, actor="cli")
    click.echo(f"Revoked token {token_id}.")
