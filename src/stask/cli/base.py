"""What every command shares: the lazily built app, one-line errors, JSON output."""

from __future__ import annotations

import datetime as dt
import functools
import importlib
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from gettext import gettext as _
from pathlib import Path
from typing import Any, NamedTuple, TypeVar, cast

import click

from stask.core.config import set_path
from stask.core.facade import Stask
from stask.errors import StaskError
from stask.models import JSONDict

F = TypeVar("F", bound=Callable[..., Any])
EXIT_INTERRUPTED = 130


class LazyCommand(NamedTuple):
    """A command imported on first use: where it lives and its help's first paragraph."""

    target: str  # "package.module:attribute"
    help: str


class StaskGroup(click.Group):
    """Prints every failure as one ``Error: ...`` line on stderr with the right exit code.

    0 success, 1 operational error (database down, task not found, ...), 2 usage error
    (bad arguments, unknown worker or action, invalid configuration).

    ``lazy_commands`` are imported only when they run or their own help is shown; the group's
    help lists them from their stored help text, so it imports none of them.
    """

    def __init__(
        self,
        *args: Any,
        lazy_commands: Mapping[str, LazyCommand] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = self.commands.get(cmd_name)
        if command is None and cmd_name in self.lazy_commands:
            module, _sep, attribute = self.lazy_commands[cmd_name].target.partition(":")
            loaded = getattr(importlib.import_module(module), attribute)
            if not isinstance(loaded, click.Command):
                raise TypeError(f"{self.lazy_commands[cmd_name].target} is not a click command")
            self.add_command(loaded, cmd_name)
            command = loaded
        return command

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.exceptions.NoSuchCommand as err:
            # click suggests close names from ``self.commands``: only the loaded ones here.
            raise click.exceptions.NoSuchCommand(
                err.command_name, possibilities=self.list_commands(ctx), ctx=ctx
            ) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's listing, with unloaded commands described by their stored help."""
        commands: list[tuple[str, click.Command]] = []
        for name in self.list_commands(ctx):
            command = self.commands.get(name)
            if command is None:
                command = click.Command(name, help=self.lazy_commands[name].help)
            if not command.hidden:
                commands.append((name, command))
        if commands:
            limit = formatter.width - 6 - max(len(name) for name, _cmd in commands)
            rows = [(name, command.get_short_help_str(limit)) for name, command in commands]
            with formatter.section(_("Commands")):
                formatter.write_dl(rows)

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


JSON_STARTS = ("[", "{", '"')  # a value starting so is meant as JSON: it must parse
FILE_PREFIX = "@"  # KEY=@path.json reads the value from a JSON file
OPTION_HINT = "'-o' / '--option'"


def _strict_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _loads(raw: str) -> Any:
    """Strict JSON: NaN and Infinity are refused (no database stores them in a JSON column)."""
    return json.loads(raw, parse_constant=_strict_constant)


def parse_value(raw: str, key: str, *, what: str = "option") -> Any:
    """One command-line value: JSON when it parses (numbers, booleans, null), else plain text.

    A value starting with ``[``, ``{`` or ``"`` is meant as JSON and must parse; ``@path`` reads
    the value from a JSON file. Raises click.UsageError naming ``what`` ``key`` and the fix.
    """
    if raw.startswith(FILE_PREFIX):
        return _read_json_file(raw[len(FILE_PREFIX) :], key, what)
    try:
        return _loads(raw)
    except ValueError as err:
        if raw.lstrip().startswith(JSON_STARTS):
            raise _usage_error(
                f"{what} {key}: {_shorten(raw)} is not valid JSON ({err}) - fix it, or quote "
                'it as a JSON string ("...") if you mean text'
            ) from None
        return raw


def _read_json_file(name: str, key: str, what: str) -> Any:
    if not name:
        raise _usage_error(
            f"{what} {key}: give a JSON file after @ (e.g. @values.json), or quote a text "
            'starting with @ as a JSON string ("@...")'
        )
    path = Path(name).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise _usage_error(
            f"{what} {key}: cannot read {str(path)!r} ({reason}) - give the path of a JSON "
            'file, or quote a text starting with @ as a JSON string ("@...")'
        ) from None
    except UnicodeDecodeError as err:
        raise _usage_error(
            f"{what} {key}: {str(path)!r} is not UTF-8 text ({err.reason} at byte {err.start})"
        ) from None
    try:
        return _loads(text)
    except ValueError as err:
        raise _usage_error(
            f"{what} {key}: {str(path)!r} is not valid JSON ({err}) - fix the file"
        ) from None


def _usage_error(message: str) -> click.UsageError:
    """A usage error of the running command (so its message points at its --help)."""
    return click.UsageError(message, ctx=click.get_current_context(silent=True))


def _shorten(raw: str, limit: int = 60) -> str:
    return repr(raw if len(raw) <= limit else raw[: limit - 3] + "...")


def parse_pairs(pairs: Sequence[str]) -> JSONDict:
    """``-o key=value`` pairs; dotted keys nest (``-o filters.active=true``).

    Every pair is checked before anything is returned; a key given twice, or both a key and a
    key under it (``-o a=1 -o a.b=2``), is an error naming both pairs.
    """
    options: JSONDict = {}
    given: dict[tuple[str, ...], str] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(
                f"{pair!r} is not key=value (e.g. -o file=products.csv -o rows=100)",
                param_hint=OPTION_HINT,
            )
        parts = tuple(key.split("."))
        for earlier, earlier_pair in given.items():
            if parts == earlier:
                raise _usage_error(
                    f"option {key} is given twice ({earlier_pair!r} and {pair!r}) - give it once"
                )
            shorter, longer = sorted((parts, earlier), key=len)
            if longer[: len(shorter)] == shorter:
                outer, inner = ".".join(shorter), ".".join(longer)
                raise _usage_error(
                    f"options {earlier_pair!r} and {pair!r} conflict: {outer} would replace "
                    f"{inner} - give either {outer} or the keys under it"
                )
        value = parse_value(raw, key)
        try:
            options = set_path(options, key, value)
        except StaskError as err:
            raise click.BadParameter(err.message, param_hint=OPTION_HINT) from err
        given[parts] = pair
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
