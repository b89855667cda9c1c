"""`stask web`: the REST API served by uvicorn; `serve_in_thread` for `stask run`."""

from __future__ import annotations

import contextlib
import ipaddress
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import click

from stask.cli.base import pass_app
from stask.core.facade import Stask

STARTUP_SECONDS = 15.0

host_option = click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="STASK_HOST",
    help="Address to listen on (STASK_HOST).",
)
port_option = click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    envvar="STASK_PORT",
    help="Port to listen on; 0 picks a free one (STASK_PORT).",
)
prefix_option = click.option(
    "--prefix", default="/stask", show_default=True, help="Path the app is served under."
)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Served:
    url: str
    stop: Callable[[], None]
    thread: threading.Thread


def cookie_warning(app: Stask, host: str) -> str | None:
    if is_loopback(host) or app.settings.insecure_cookies:
        return None
    return (
        f"Warning: the login cookie is Secure, so browsers send it to {host} over HTTPS only - "
        "put TLS in front of stask (a reverse proxy), or on a network you trust set "
        "STASK_INSECURE_COOKIES=1."
    )


def serve_in_thread(app: Stask, host: str, port: int, prefix: str) -> Served:
    """Start uvicorn on a thread; returns once it listens (or raises ClickException)."""
    import uvicorn

    from stask.web import create_app

    config = uvicorn.Config(
        create_app(app, prefix=prefix),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            server.run()
        except BaseException as err:
            failure.append(err)

    thread = threading.Thread(target=serve, name="stask-web", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_SECONDS
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        server.should_exit = True
        reason = f": {failure[0]}" if failure else " (is the port in use?)"
        raise click.ClickException(f"the web app could not listen on {host}:{port}{reason}")
    bound = port
    with contextlib.suppress(AttributeError, IndexError, OSError):
        bound = server.servers[0].sockets[0].getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{bound}{prefix.rstrip('/')}/"

    def stop() -> None:
        server.should_exit = True
        thread.join(5)

    return Served(url=url, stop=stop, thread=thread)


def announce(app: Stask, served: Served, host: str) -> None:
    """The URL, and on the very first start the admin's one-time password."""
    password = app.accounts.ensure_admin()
    click.echo(f"stask web app: {served.url}")
    if password is not None:
        click.echo(
            f"First start: created user 'admin' with the one-time password {password}\n"
            "  (shown once; change it with `stask users set-password admin`)"
        )
    warning = cookie_warning(app, host)
    if warning:
        click.echo(warning, err=True)


@click.command()
@host_option
@port_option
@prefix_option
@pass_app
def web(app: Stask, host: str, port: int, prefix: str) -> None:
    """Serve the REST API (and admin UI) with uvicorn until Ctrl-C."""
    app.store.ping()
    served = serve_in_thread(app, host, port, prefix)
    announce(app, served, host)
    try:
        while served.thread.is_alive():
            served.thread.join(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        served.stop()
