"""What every command shares: the lazily built app, one-line errors, JSON output."""

from __future__ import annotations

import datetime as dt
import functools
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import click

from stask.core.config import set_path
from stask.core.facade import Stask
from stask.errors import StaskError
from stask.models import JSONDict

F = TypeVar("F", bound=Callable[..., Any])
EXIT_INTERRUPTED = 130


class StaskGroup(click.Group):
    """Prints every failure as one ``Error: ...`` line on stderr with the right exit code.

    0 success, 1 operational error (database down, task not found, ...), 2 usage error
    (bad arguments, unknown worker or action, invalid configuration).
    """

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            returned = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as err:
            hint = f" (see `{err.ctx.command_path} --help`)" if err.ctx else ""
            _fail(f"{err.format_message()}{hint}", 2)
        except click.ClickException as err:
            _fail(err.format_message(), err.exit_code)
        except click.exceptions.Abort:
            _fail("aborted", 1)
        except StaskError as err:
            _fail(err.message, err.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", EXIT_INTERRUPTED)
        code = returned if isinstance(returned, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


def _fail(message: str, code: int) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


class AppFactory:
    """Builds the Stask on first use, so `--help` and usage errors never touch the database."""

    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self._app: Stask | None = None

    def get(self) -> Stask:
        if self._app is None:
            self._app = Stask(**self.settings)
        return self._app

    def close(self) -> None:
        if self._app is not None:
            self._app.close()


def pass_app(func: F) -> F:
    """Inject the Stask as the first argument of a command."""

    @click.pass_context
    def wrapper(ctx: click.Context, /, *args: Any, **kwargs: Any) -> Any:
        factory = ctx.find_object(AppFactory)
        assert factory is not None, "the root group always installs an AppFactory"
        return ctx.invoke(func, factory.get(), *args, **kwargs)

    return cast(F, functools.update_wrapper(wrapper, func))


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def parse_value(raw: str) -> Any:
    """JSON when it parses (numbers, booleans, null, lists, objects), else the plain string."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def parse_pairs(pairs: Sequence[str]) -> JSONDict:
    """``-o key=value`` pairs; dotted keys nest (``-o filters.active=true``)."""
    options: JSONDict = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(
                f"{pair!r} is not key=value (e.g. -o file=products.csv -o rows=100)",
                param_hint="'-o' / '--option'",
            )
        try:
            options = set_path(options, key.strip(), parse_value(raw))
        except StaskError as err:
            raise click.BadParameter(err.message, param_hint="'-o' / '--option'") from err
    return options


class IsoDateTime(click.ParamType[dt.datetime]):
    """ISO-8601; a time without an offset is local time."""

    name = "ISO-8601"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> dt.datetime:
        if isinstance(value, dt.datetime):
            return value
        try:
            parsed = dt.datetime.fromisoformat(str(value))
        except ValueError:
            self.fail(
                f"{value!r} is not an ISO-8601 date-time (e.g. 2026-12-01T09:30 or "
                "2026-12-01T09:30:00+02:00)",
                param,
                ctx,
            )
        return parsed if parsed.tzinfo else parsed.astimezone()
