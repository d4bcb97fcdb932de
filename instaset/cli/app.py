"""The root Typer app and the helpers every command module shares.

Command modules (``instaset/cli/cmd_*.py``) import :data:`app` and register commands on it;
``instaset/cli/__init__.py`` imports them all. This package is the only place where errors
become exit codes: 0 success, 1 failed operation or invalid input, 2 wrong usage.

Import-time contract: this package is imported by every ``instaset`` invocation, including
``--help``, so at module level it imports only typer, the standard library and
:mod:`instaset.errors` (which imports nothing); :data:`out_console` and :data:`err_console`
(rich) are made on first use. Everything else (asyncio, aiohttp,
pydantic, the config, the store, the daemon) is imported inside the commands;
``tests/test_cli_startup.py`` enforces it.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar, cast

import typer

from instaset.errors import InstasetError

if TYPE_CHECKING:
    from rich.console import Console

    from instaset.config import Config
    from instaset.config_storage import StorageLocation
    from instaset.store.db import Database

app = typer.Typer(rich_markup_mode=None,
    name="instaset",
    help="Self-hosted Instagram DM automation for solo creators.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)



async def open_db(where: Config | StorageLocation) -> Database:
    """The configured database (the caller closes it: an unclosed aiosqlite connection hangs
    the interpreter's exit). ``where``: the whole config, or only its storage location
    (read-only commands, see :func:`instaset.cli.cmd_config.storage_or_exit`)."""
    from instaset.config_storage import StorageLocation
    from instaset.store.db import open_database

    if isinstance(where, StorageLocation):
        return await open_database(where.path, synchronous=where.synchronous)
    return await open_database(where.storage.db_path(), synchronous=where.storage.synchronous)


def sub_app(**options: Any) -> typer.Typer:
    """A command group, with the same plain help as :data:`app`."""
    return typer.Typer(rich_markup_mode=None, **options)


if TYPE_CHECKING:
    err_console: Console
    out_console: Console


def __getattr__(name: str) -> Any:
    """``out_console`` / ``err_console``: rich Consoles made on first use. Importing
    rich.console costs every command ~25 ms, and ``--help`` and the ``--json`` listings
    never print through rich; command modules import them inside their functions."""
    if name in ("out_console", "err_console"):
        from rich.console import Console

        class _Console(Console):
            def on_broken_pipe(self) -> None:
                # rich exits 1; a reader that stopped early (`| head`) is no failure, the
                # same as for plain output (see handle_errors).
                self.quiet = True
                _reader_gone()

        console = _Console(stderr=True) if name == "err_console" else _Console()
        globals()[name] = console
        return console
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

P = ParamSpec("P")
R = TypeVar("R")


class State:
    """Global options, set by the root callback."""

    config_path: Path | None = None


STATE = State()


def _print_version(given: bool) -> None:
    if given:
        from instaset import __version__

        typer.echo(f"instaset {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    config: Path | None = typer.Option(
        None, "--config", "-c", envvar="INSTASET_CONFIG", help="Path of config.yaml."
    ),
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print instaset's version and exit."),
) -> None:
    STATE.config_path = config


def fail(message: str) -> typer.Exit:
    """Print ``message`` on stderr and return an Exit(1) to raise."""
    # Plain echo, not rich: rich would wrap long lines and read "[...]" in messages as markup.
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def nonempty(value: str | None, name: str) -> str | None:
    """``value`` unchanged; an :class:`InstasetError` naming the option when it was given but
    blank. A blank value must not read as "not given": ``--contact ''`` would then act on
    every contact instead of none."""
    if value is not None and not value.strip():
        raise InstasetError(f"{name} is empty")
    return value


def _reader_gone() -> NoReturn:
    """stdout's reader stopped early (`instaset inbox | head`): it has all it wanted, which
    is no failure. Exit 0 saying nothing; stdout goes to /dev/null first, or Python would
    complain again when it flushes at exit."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    raise SystemExit(0)


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn an :class:`InstasetError`, a file system error or a database error into a
    one-line message and exit code 1 (never a traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except InstasetError as exc:
            raise fail(str(exc)) from None
        except BrokenPipeError:
            _reader_gone()
        except OSError as exc:
            raise fail(describe_os_error(exc)) from None
        except Exception as exc:
            # sqlite3 is only imported by the commands that open the database.
            sqlite3 = sys.modules.get("sqlite3")
            if sqlite3 is not None and isinstance(exc, sqlite3.Error):
                raise fail(describe_db_error(exc)) from None
            raise

    return wrapper


def describe_os_error(exc: OSError) -> str:
    what = exc.strerror or type(exc).__name__
    where = exc.filename if exc.filename is not None else None
    return f"{what}: {where}" if where is not None else what


def describe_db_error(exc: Exception) -> str:
    text = str(exc)
    if "readonly" in text:
        hint = "check that this user may write the database file and its directory"
    elif "locked" in text:
        hint = "another process holds a write transaction; try again"
    else:
        hint = "run `instaset doctor`"
    return f"database error: {text} ({hint})"


def _run_on(fn: Callable[P, Coroutine[Any, Any, R]],
            loop_factory: Callable[[], Callable[[], Any] | None]) -> Callable[P, R]:
    """``fn`` as a plain function that runs its coroutine to the end on a new event loop,
    made by ``loop_factory()`` (None: asyncio's default, as :func:`asyncio.run`)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        import asyncio  # ~50 ms: only the commands that run a coroutine pay for it

        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            return runner.run(fn(*args, **kwargs))

    return wrapper


def run_async(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, R]:
    """Typer silently ignores ``async def`` commands; run the coroutine ourselves."""
    return _run_on(fn, lambda: None)


def server_loop_factory() -> Callable[[], Any] | None:
    """The event loop factory of the daemon: uvloop's when it is installed (a dependency on
    Linux and macOS), else None (asyncio's default loop, e.g. on Windows). On uvloop the
    daemon spends ~10 % less CPU per event: its loop, transports and timers are in C
    (bench/e2e.py, interleaved runs). Short CLI commands stay on asyncio: importing uvloop
    would only add to their start-up."""
    try:
        import uvloop
    except ImportError:
        return None
    return cast(Callable[[], Any], uvloop.new_event_loop)


def run_server(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, R]:
    """:func:`run_async` on :func:`server_loop_factory`'s loop (``instaset serve``)."""
    return _run_on(fn, server_loop_factory)


def is_tty() -> bool:
    return sys.stdin.isatty()
