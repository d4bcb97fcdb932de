"""``instaset serve``."""

from __future__ import annotations

from pathlib import Path

import typer

from instaset.cli.app import STATE, app, handle_errors, run_server
from instaset.errors import InstasetError
from instaset.logsetup import LogFormat, LogLevel

# LogFormat and LogLevel are parameter types, so typer resolves them from this module's
# globals when the command tree is built; instaset.logsetup imports only the standard
# library. The daemon (aiohttp) and the config are imported inside the command:
# `instaset --help` must not pay for them (see instaset/cli/app.py).


@app.command()
@handle_errors
def serve(
    sandbox: bool = typer.Option(
        False, "--sandbox", help="Run against the built-in Instagram sandbox instead of Meta."
    ),
    host: str | None = typer.Option(None, help="Listen address (default: server.host)."),
    port: int | None = typer.Option(None, min=0, max=65535,
                                    help="Listen port (default: server.port; 0: any free one)."),
    log_level: LogLevel = typer.Option(LogLevel.INFO, "--log-level", case_sensitive=False,
                                       help="DEBUG, INFO, WARNING, ERROR or CRITICAL."),
    log_format: LogFormat = typer.Option(
        LogFormat.TEXT, "--log-format", envvar="INSTASET_LOG_FORMAT", case_sensitive=False,
        help="text, or json: one JSON object per line (ts, level, logger, msg).",
    ),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="PEM certificate (HTTPS)."),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="PEM private key (HTTPS)."),
) -> None:
    """Run the webhook listener and the worker. SIGTERM or Ctrl-C stops it gracefully."""
    import signal

    # A stop signal during the start (imports, migrations) is remembered, not fatal: the
    # daemon stops as soon as it can, with exit code 0.
    early: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: early.append(signum))

    import logging

    from instaset.config import load_config
    from instaset.daemon import run_daemon, tls_context
    from instaset.logsetup import setup_logging

    setup_logging(log_level, log_format)
    config = load_config(STATE.config_path)
    if (tls_cert is None) != (tls_key is None):
        raise InstasetError("--tls-cert and --tls-key go together; give both or neither")
    ssl_context = tls_context(tls_cert, tls_key) if tls_cert and tls_key else None
    code = run_server(run_daemon)(
        config,
        host=host or config.server.host,
        port=config.server.port if port is None else port,
        sandbox=sandbox,
        ssl_context=ssl_context,
        stopped_early=lambda: bool(early),
        # In JSON mode the start/stop lines are log records too: every line parses.
        announce=logging.getLogger("instaset.daemon").info
        if log_format is LogFormat.JSON else None,
    )
    raise typer.Exit(code)
