"""The ``instaset connect`` command's side of the sign-in: where Meta's redirect lands and
how the command learns the outcome. Split from :mod:`instaset.accounts`, whose
:class:`~instaset.accounts.AccountService` starts the attempt and handles the callback.

Contract (:func:`run_connect`):

- The command listens for ``GET /oauth/callback`` on ``server.host:server.port``; when the
  port is taken and something there answers ``/oauth/callback`` (a running daemon, whatever
  its answer but 404), that one receives the callback instead; otherwise it fails naming the
  port and the fix.
- It shows the authorize URL (and opens it when given a browser), then polls the attempt's
  state row, where the callback writes the outcome wherever it ran, until there is one or
  ``timeout`` passes (an error saying to run ``instaset connect`` again). Its own listener is
  closed on every way out.
- It returns the connected account's row; a denied or failed sign-in raises
  :class:`~instaset.errors.InstasetError` with the callback's words.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from instaset.accounts import AccountService, callback_route
from instaset.errors import InstasetError
from instaset.store import accounts as acctstore
from instaset.store import history
from instaset.store.db import Database

__all__ = ["run_connect"]


async def _wait_for_outcome(db: Database, state: str, timeout: float) -> sqlite3.Row:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        row = await acctstore.get_state(db, state)
        if row is not None and row["outcome"] is not None:
            return row
        if loop.time() >= deadline:
            raise InstasetError(f"no answer from Instagram within {timeout:g} s; run "
                                "`instaset connect` again and finish signing in sooner")
        await asyncio.sleep(0.2)


async def _callback_served(host: str, port: int) -> bool:
    """True when something at host:port answers /oauth/callback (a running daemon)."""
    url = f"http://{host}:{port}/oauth/callback"
    try:
        async with aiohttp.ClientSession() as session, session.get(
            url, timeout=aiohttp.ClientTimeout(total=5)
        ) as resp:
            return resp.status != 404
    except (aiohttp.ClientError, TimeoutError):
        return False


async def run_connect(
    service: AccountService, *, open_browser: Callable[[str], Awaitable[None]] | None,
    say: Callable[[str], None], show_url: Callable[[str], None] | None = None,
    timeout: float = 600.0,
) -> sqlite3.Row:
    """The OAuth flow of ``instaset connect``: listen on server.host:server.port unless a
    daemon already serves the callback there, show/open the URL, wait for the outcome.
    Returns the account row; raises :class:`InstasetError` with the reason otherwise."""
    state, url = await service.begin()
    host = service.config.server.host
    port = service.config.server.port
    runner: web.AppRunner | None = None
    app = web.Application()
    app.add_routes([callback_route(service)])
    candidate = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await candidate.setup()
    try:
        await web.TCPSite(candidate, host, port).start()
        runner = candidate
    except OSError:
        await candidate.cleanup()
        if not await _callback_served(host if host not in ("0.0.0.0", "::") else "127.0.0.1",
                                      port):
            raise InstasetError(
                f"cannot listen on {host}:{port} for the OAuth callback and no instaset daemon "
                "answers there; stop what uses the port or change server.port") from None
        say(f"the running instaset daemon on port {port} will receive the callback")
    try:
        say("Open this URL to connect your Instagram account:")
        (show_url or say)(url)
        if open_browser is not None:
            await open_browser(url)
        row = await _wait_for_outcome(service.db, state, timeout)
    finally:
        if runner is not None:
            await runner.cleanup()
    if row["outcome"] != "connected":
        raise InstasetError(f"not connected: {row['detail']}")
    account = await history.get_account(service.db, str(row["account_id"]))
    if account is None:
        raise InstasetError("the account was connected but then removed")
    return account
