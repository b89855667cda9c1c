"""`stask worker`: the runner daemon, with signal handling and an optional process supervisor."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from types import FrameType

import click

from stask.cli.base import pass_app
from stask.core.facade import Stask
from stask.runner import Runner, RunnerOptions
from stask.runner.daemon import default_concurrency
from stask.settings import ENV_PREFIX, Settings

log = logging.getLogger("stask.runner")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


# Shared with `stask run`, which runs the same runner in the foreground.
concurrency_option = click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    default=default_concurrency,
    show_default="2 x CPUs",
    help="Tasks run at once (threads) per process.",
)
poll_option = click.option(
    "--poll",
    type=click.FloatRange(min=0.01),
    default=1.0,
    show_default=True,
    help="Longest wait between claims when nothing is due.",
)
grace_option = click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds running tasks get to finish after SIGTERM or Ctrl-C before being requeued.",
)


def configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def install_stop_handlers(runner: Runner, *, before_exit: Callable[[], None] | None = None) -> None:
    """First SIGTERM/SIGINT: stop claiming and drain; a second one exits at once.

    No KeyboardInterrupt is raised: it would land wherever the main thread happens to be
    (and a ``Thread.join`` it interrupts may return while the thread still runs), so the
    process could exit with its tasks still running. ``before_exit`` runs just before a
    second signal's immediate exit (`stask run` restores the terminal there).
    """

    def handle(signum: int, _frame: FrameType | None) -> None:
        if runner.stopping:
            log.warning(
                "second %s: exiting now; the rescuer recovers held tasks",
                signal.Signals(signum).name,
            )
            if before_exit is not None:
                before_exit()
            os._exit(1)
        log.info(
            "%s: finishing running tasks (grace %.0f s); repeat to exit at once",
            signal.Signals(signum).name,
            runner.options.grace_seconds,
        )
        runner.request_stop()

    for signum in STOP_SIGNALS:
        signal.signal(signum, handle)


def child_environment(settings: Settings) -> dict[str, str]:
    """This process's environment with its effective settings as ``STASK_*`` variables.

    A ``--processes`` child then serves the database, storage and workers its parent resolved
    (from ``--database-url``, ``--storage``, ``--workers``, the environment or stask.toml),
    never whatever its own environment would default to. Variables, not arguments: a database
    password stays out of the process list.
    """
    names = {f"{ENV_PREFIX}{name}".lower() for name in settings.to_json()}
    # Settings reads STASK_* in any letter case: drop every spelling of what is set below.
    env = {key: value for key, value in os.environ.items() if key.lower() not in names}
    for name, value in settings.to_json().items():
        if value is not None:
            text = ",".join(value) if isinstance(value, list) else str(value)
            env[f"{ENV_PREFIX}{name}".upper()] = text
    return env


# Set in a --processes child's environment: the supervisor's pid (see stop_with_supervisor).
SUPERVISOR_PID_ENV = "STASK_SUPERVISOR_PID"
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def stop_with_supervisor() -> None:
    """In a ``--processes`` child: stop gracefully (SIGTERM) when the supervisor dies.

    A supervisor killed outright (SIGKILL, the OOM killer) cannot forward a signal; without
    this its children went on serving the database with nobody left to stop them. On Linux
    the kernel sends the signal (PR_SET_PDEATHSIG); the parent pid is checked after setting
    it, since the supervisor may have died before.
    """
    expected = os.environ.pop(SUPERVISOR_PID_ENV, "")
    if not expected.isdigit() or not sys.platform.startswith("linux"):
        return
    import ctypes  # only --processes children need it

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != int(expected):
        os.kill(os.getpid(), signal.SIGTERM)


def supervise(processes: int, argv: list[str], env: dict[str, str] | None = None) -> int:
    """Run ``processes`` single-process runners and pass stop signals on to them; they stop
    by themselves if this process dies without passing one on."""
    child_env = {**(os.environ if env is None else env), SUPERVISOR_PID_ENV: str(os.getpid())}
    children = [
        subprocess.Popen([sys.executable, "-m", "stask", *argv], env=child_env)
        for _ in range(processes)
    ]

    def forward(signum: int, _frame: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    for signum in STOP_SIGNALS:
        signal.signal(signum, forward)
    return max(child.wait() for child in children)


@click.command()
@concurrency_option
@click.option(
    "-q",
    "--queue",
    "queues",
    multiple=True,
    help="Serve only this queue (repeatable; default: all queues).",
)
@click.option(
    "-p",
    "--processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Runner processes to start, each with --concurrency threads.",
)
@click.option(
    "--prefetch",
    type=click.IntRange(min=0),
    default=None,
    help="Extra tasks claimed ahead of free threads, fixed (default: adapts to how long "
    "tasks take; see `stask runners`).",
)
@grace_option
@poll_option
@pass_app
@click.pass_context
def worker(
    ctx: click.Context,
    app: Stask,
    concurrency: int,
    queues: tuple[str, ...],
    processes: int,
    prefetch: int | None,
    grace: float,
    poll: float,
) -> None:
    """Run tasks until stopped: the daemon for one or many hosts on one database."""
    options = RunnerOptions(
        concurrency=concurrency,
        queues=queues,
        prefetch=prefetch,
        poll_seconds=poll,
        grace_seconds=grace,
    )
    options.validate()  # once here rather than in each of --processes children
    configure_logging()
    if processes > 1:
        argv = ["worker", "-c", str(concurrency), "--grace", str(grace), "--poll", str(poll)]
        for queue in queues:
            argv += ["-q", queue]
        if prefetch is not None:
            argv += ["--prefetch", str(prefetch)]
        ctx.exit(supervise(processes, argv, child_environment(app.settings)))
    runner = Runner(app, options)
    install_stop_handlers(runner)
    stop_with_supervisor()
    runner.run()
