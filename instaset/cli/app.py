"""The root Typer app and the helpers every command module shares.

Command modules (``instaset/cli/cmd_*.py``) import :data:`app` and register commands on it;
``instaset/cli/__init__.py`` imports them all. This package is the only place where errors
become exit codes: 0 success, 1 failed operation or invalid input, 2 wrong usage.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console

from instaset.errors import InstasetError

app = typer.Typer(
    name="instaset",
    help="Self-hosted Instagram DM automation for solo creators.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

err_console = Console(stderr=True)
out_console = Console()

P = ParamSpec("P")
R = TypeVar("R")


class State:
    """Global options, set by the root callback."""

    config_path: Path | None = None


STATE = State()


@app.callback()
def _root(
    config: Path | None = typer.Option(
        None, "--config", "-c", envvar="INSTASET_CONFIG", help="Path of config.yaml."
    ),
) -> None:
    STATE.config_path = config


def fail(message: str) -> typer.Exit:
    """Print ``message`` on stderr and return an Exit(1) to raise."""
    # Plain echo, not rich: rich would wrap long lines and read "[...]" in messages as markup.
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn an :class:`InstasetError` into a one-line message and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except InstasetError as exc:
            raise fail(str(exc)) from None

    return wrapper


def run_async(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, R]:
    """Typer silently ignores ``async def`` commands; run the coroutine ourselves."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        return asyncio.run(fn(*args, **kwargs))

    return wrapper


def is_tty() -> bool:
    return sys.stdin.isatty()
