"""``instaset serve``."""

from __future__ import annotations

import asyncio

import typer

from instaset.cli.app import STATE, app, handle_errors
from instaset.config import load_config
from instaset.daemon import run_daemon
from instaset.logsetup import setup_logging


@app.command()
@handle_errors
def serve(
    sandbox: bool = typer.Option(
        False, "--sandbox", help="Run against the built-in Instagram sandbox instead of Meta."
    ),
    host: str | None = typer.Option(None, help="Listen address (default: server.host)."),
    port: int | None = typer.Option(None, help="Listen port (default: server.port)."),
    log_level: str = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING, ERROR."),
) -> None:
    """Run the webhook listener and the worker. SIGTERM or Ctrl-C stops it gracefully."""
    setup_logging(log_level)
    config = load_config(STATE.config_path)
    code = asyncio.run(
        run_daemon(
            config,
            host=host or config.server.host,
            port=config.server.port if port is None else port,
            sandbox=sandbox,
        )
    )
    raise typer.Exit(code)
