"""``instaset connect [--no-browser] [--token]``, ``instaset accounts [--json]`` and
``instaset disconnect [ACCOUNT] [--purge] [--yes]``.

Output never contains a token or an app secret: ``accounts`` shows ids, names, expiry,
subscribed fields and state only. Progress goes to stderr; the authorize URL (with
``--no-browser``) and the listings go to stdout.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import typer

from instaset.cli.app import app, handle_errors, is_tty, nonempty, run_async
from instaset.cli.cmd_config import load_or_exit
from instaset.errors import InstasetError
from instaset.timefmt import iso_or_none

if TYPE_CHECKING:
    import sqlite3

    from instaset.accounts import AccountService
    from instaset.config import Config
    from instaset.store.db import Database

# aiohttp, the account service, the Graph client and the store are imported inside the
# commands: `instaset --help` must not pay for them (see instaset/cli/app.py).


@contextlib.asynccontextmanager
async def _service(config: Config) -> AsyncIterator[AccountService]:
    import aiohttp

    from instaset.accounts import AccountService
    from instaset.graph import GraphClient
    from instaset.store.db import open_database

    db = await open_database(config.storage.db_path(), synchronous=config.storage.synchronous)
    try:
        async with aiohttp.ClientSession() as session:
            ig = config.instagram
            graph = GraphClient(session, graph_url=ig.graph_url, api_version=ig.api_version,
                                api_url=ig.api_url)
            yield AccountService(config, db, graph)
    finally:
        await db.close()


async def resolve_account(db: Database, ref: str | None) -> tuple[str, str | None]:
    """``(id, username)`` of the one account ``ref`` names (its id, app-scoped id or
    username, ``@`` optional), or of the only account when ``ref`` is None. An
    :class:`InstasetError` naming the choices when there is none or several: every command
    that takes an account (``disconnect``, ``purge --account``, ``export --account``) answers
    the same way."""
    from instaset.store import accounts as accountstore
    from instaset.store import history

    rows = (await accountstore.find_account(db, ref) if ref is not None
            else await history.list_accounts(db))
    if len(rows) == 1:
        return str(rows[0]["id"]), rows[0]["username"]
    if not rows:
        raise InstasetError(f"no account {ref!r}; see `instaset accounts`" if ref is not None
                            else "no account is connected")
    names = ", ".join(f"{r['id']} (@{r['username']})" for r in rows)
    raise InstasetError(f"several accounts match; name one of: {names}")


def _say(message: str) -> None:
    typer.echo(message, err=True)


def account_json(row: sqlite3.Row) -> dict[str, object]:
    """An account as ``accounts --json`` shows it (never the token)."""
    return {
        "id": row["id"], "username": row["username"], "app_scoped_id": row["app_scoped_id"],
        "state": row["state"], "token_expires_at": iso_or_none(row["token_expires_at"]),
        "token_issued_at": iso_or_none(row["token_issued_at"]),
        "subscribed_fields": json.loads(row["subscribed_fields"] or "[]"),
        "sandbox": bool(row["sandbox"]),
    }


def _when(ts: float | None) -> str:
    if ts is None:
        return "unknown"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _read_token() -> str:
    if is_tty():
        token = getpass.getpass("Paste the access token (input is hidden): ")
    else:
        token = sys.stdin.read()
    token = token.strip()
    if not token or any(c.isspace() for c in token):
        raise InstasetError("no access token on stdin; pipe exactly one token, e.g. "
                            "`instaset connect --token < token.txt`")
    return token


async def _open_browser(url: str) -> None:
    import asyncio
    import webbrowser

    # webbrowser may run a blocking command (BROWSER=...): keep the callback listener serving.
    if not await asyncio.to_thread(webbrowser.open, url):
        _say("could not open a browser; open the URL above yourself")


@app.command()
@handle_errors
def connect(
    no_browser: bool = typer.Option(
        False, "--no-browser", help="Print the sign-in URL instead of opening a browser."),
    token: bool = typer.Option(
        False, "--token", help="Read an access token (e.g. from Meta's App Dashboard) from "
        "stdin instead of signing in."),
    timeout: float = typer.Option(
        600.0, "--timeout", min=1.0, help="Seconds to wait for the sign-in to finish."),
) -> None:
    """Connect an Instagram professional account (Business Login) and subscribe its webhooks."""
    from instaset.accounts import redirect_warning
    from instaset.connect_flow import run_connect

    config = load_or_exit()
    raw = _read_token() if token else None
    # The redirect is only worth a warning once a sign-in can start at all (without an app
    # id the error below comes alone).
    if (raw is None and config.instagram.app_id
            and (warning := redirect_warning(config)) is not None):
        typer.echo(f"warning: {warning}", err=True)

    @run_async
    async def go() -> None:
        async with _service(config) as service:
            if raw is not None:
                from instaset.errors import TokenInvalid

                try:
                    info = await service.store_token(raw, None)
                except TokenInvalid as exc:
                    # Not "reconnect with instaset connect": this token came from the
                    # dashboard, and it is the one to replace.
                    raise InstasetError(
                        f"Meta refused this token as invalid or expired (code {exc.code}); "
                        "generate a new one in the "
                        "App Dashboard (Instagram > API setup with Instagram business login) "
                        "and pipe it to `instaset connect --token` again") from None
                _say(info.summary())
                return
            row = await run_connect(
                service, open_browser=None if no_browser else _open_browser, say=_say,
                show_url=typer.echo, timeout=timeout)
            fields = json.loads(row["subscribed_fields"] or "[]")
            _say(f"connected @{row['username']} ({row['id']}); token expires "
                 f"{_when(row['token_expires_at'])}; webhook fields: {', '.join(fields) or 'none'}")

    go()


@app.command()
@handle_errors
def accounts(
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
) -> None:
    """Connected accounts: id, username, token expiry, webhook subscription, state."""
    from instaset.store import history
    from instaset.store.db import open_database

    config = load_or_exit()

    @run_async
    async def go() -> list[dict[str, object]]:
        db = await open_database(config.storage.db_path(),
                                 synchronous=config.storage.synchronous)
        try:
            return [account_json(r) for r in await history.list_accounts(db)]
        finally:
            await db.close()

    rows = go()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no account is connected; run `instaset connect`")
        return
    for r in rows:
        fields = r["subscribed_fields"]
        count = len(fields) if isinstance(fields, list) else 0
        typer.echo(f"{r['id']}  @{r['username'] or '?'}  {r['state']}  token expires "
                   f"{r['token_expires_at'] or 'unknown'}  webhook fields: {count}")


@app.command()
@handle_errors
def disconnect(
    account: str | None = typer.Argument(
        None, help="Account id or @username (optional when only one is connected)."),
    purge: bool = typer.Option(False, "--purge", help="Also delete all of its stored data."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Unsubscribe an account, delete its tokens and stop its automation."""
    from instaset.store.db import open_database

    nonempty(account, "ACCOUNT")
    config = load_or_exit()

    @run_async
    async def resolve() -> tuple[str, str | None]:
        db = await open_database(config.storage.db_path(),
                                 synchronous=config.storage.synchronous)
        try:
            return await resolve_account(db, account)
        finally:
            await db.close()

    account_id, username = resolve()
    what = f"@{username} ({account_id})" if username else account_id
    action = "disconnect and DELETE ALL DATA of" if purge else "disconnect"
    if not yes:
        if not is_tty():
            raise InstasetError(f"refusing to {action} {what} without confirmation; "
                                "pass --yes")
        typer.confirm(f"{action[0].upper()}{action[1:]} {what}?", abort=True)

    @run_async
    async def go() -> None:
        async with _service(config) as service:
            result = await service.disconnect(account_id, purge=purge)
        _say(f"disconnected {what}" + (
            "" if result.unsubscribed or result.sandbox
            else " (could not unsubscribe its webhooks: remove the app in Instagram's "
                 "settings, Apps and websites)"))
        if purge:
            counts = ", ".join(f"{t}: {n}" for t, n in sorted(result.deleted.items()))
            _say(f"deleted {counts or 'nothing'}")

    go()
