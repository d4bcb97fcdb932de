"""``instaset contacts [--json]``, ``contacts show|set|tag|untag|forget`` and
``instaset catch-up [--since]``.

CONTACT is a username (``@`` optional) or an Instagram-scoped id; ``--account`` picks one
account when the same person wrote to several. Corrections are recorded with who made them
(``cli:<os user>``) and when; ``contacts show`` lists that log.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import typer

from instaset.cli.app import app, handle_errors, is_tty, run_async, sub_app
from instaset.cli.cmd_config import load_or_exit
from instaset.errors import InstasetError
from instaset.timefmt import iso_or_none

if TYPE_CHECKING:
    from instaset import contacts as svc
    from instaset.catchup import RunReport
    from instaset.config import Config
    from instaset.store.db import Database

# The contacts service, catch-up (aiohttp) and the store are imported inside the commands:
# `instaset --help` must not pay for them (see instaset/cli/app.py).

contacts_app = sub_app(
    help="The people who wrote to your accounts: see, correct, tag, forget.",
    invoke_without_command=True,
)
app.add_typer(contacts_app, name="contacts")

_ACCOUNT = typer.Option(None, "--account", help="The account id, when CONTACT is ambiguous.")
_JSON = typer.Option(False, "--json", help="One JSON document on stdout.")


@contextlib.asynccontextmanager
async def _open(config: Config) -> AsyncIterator[Database]:
    from instaset.store.db import open_database

    db = await open_database(config.storage.db_path(), synchronous=config.storage.synchronous)
    try:
        yield db
    finally:
        await db.close()


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no login name in some containers
        return "cli"


def _label(c: dict[str, Any]) -> str:
    return f"@{c['username']}" if c.get("username") else str(c["id"])


@contacts_app.callback()
@handle_errors
def contacts(
    ctx: typer.Context, as_json: bool = _JSON,
    account: str | None = typer.Option(None, "--account", help="Only this account id."),
) -> None:
    """List contacts, most recently active first."""
    if ctx.invoked_subcommand is not None:
        return
    from instaset import contacts as svc

    config = load_or_exit()

    @run_async
    async def go() -> list[dict[str, Any]]:
        async with _open(config) as db:
            return await svc.listing(db, account)

    rows = go()
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    if not rows:
        typer.echo("no contacts yet")
        return
    for c in rows:
        bits = [_label(c), c["name"] or "-", c["stage"]]
        if c["tags"]:
            bits.append("#" + " #".join(c["tags"]))
        bits.extend(f"{k}={v}" for k, v in sorted(c["fields"].items()) if k != "name")
        typer.echo("  ".join(bits))


@contacts_app.command("show")
@handle_errors
def show(contact: str, as_json: bool = _JSON, account: str | None = _ACCOUNT) -> None:
    """One contact: identity, profile, tags, fields, and the log of corrections."""
    from instaset import contacts as svc

    config = load_or_exit()

    @run_async
    async def go() -> dict[str, Any]:
        async with _open(config) as db:
            return await svc.details(db, await svc.resolve(db, contact, account))

    c = go()
    if as_json:
        typer.echo(json.dumps(c, ensure_ascii=False, indent=2))
        return
    typer.echo(f"{_label(c)}  (id {c['id']}, account {c['account_id']})")
    typer.echo(f"  name: {c['name'] or '-'}")
    typer.echo(f"  stage: {c['stage']}")
    typer.echo(f"  tags: {', '.join(c['tags']) or '-'}")
    for k, v in sorted(c["fields"].items()):
        typer.echo(f"  {k}: {v}")
    follower = {True: "yes", False: "no", None: "unknown"}[c["follower"]]
    typer.echo(f"  follows you: {follower}")
    typer.echo(f"  first seen: {c['first_seen_at']}, last message: {c['last_message_at']}")
    for ch in c["changes"]:
        typer.echo(f"  {ch['at']} {ch['by']}: {ch['action']} {ch['field']} "
                   f"{ch['old']!r} -> {ch['new']!r}")


def _print_changes(label: str, changes: list[svc.Change]) -> None:
    if not changes:
        typer.echo(f"{label}: nothing to change")
    for ch in changes:
        if ch.action in ("tag", "untag"):
            typer.echo(f"{label}: {ch.action}ged {ch.new or ch.old}")
        else:
            typer.echo(f"{label}: {ch.field} {ch.old!r} -> {ch.new!r}")


@contacts_app.command("set")
@handle_errors
def set_(
    contact: str,
    assignments: list[str] = typer.Argument(..., metavar="FIELD=VALUE...",
                                            help="e.g. name='Ana Souza' email=ana@x.com"),
    account: str | None = _ACCOUNT,
) -> None:
    """Correct a name, email, phone, stage or any captured field; the change is recorded.

    An empty value (email=) removes the field. A stage is one of new, engaged, qualified,
    booked, customer, lost; the lead is rescored at once, so every listing shows it."""
    from instaset import contacts as svc

    values = svc.parse_assignments(assignments)
    config = load_or_exit()

    @run_async
    async def go() -> list[svc.Change]:
        async with _open(config) as db:
            ref = await svc.resolve(db, contact, account)
            return await svc.set_fields(db, ref, values, by=_who(), now=time.time(),
                                        leads=config.leads)

    _print_changes(contact, go())


def _tags(contact: str, tags: list[str], account: str | None, add: bool) -> None:
    from instaset import contacts as svc

    config = load_or_exit()

    @run_async
    async def go() -> list[svc.Change]:
        async with _open(config) as db:
            ref = await svc.resolve(db, contact, account)
            fn = svc.add_tags if add else svc.remove_tags
            return await fn(db, ref, tags, by=_who(), now=time.time(), leads=config.leads)

    _print_changes(contact, go())


@contacts_app.command("tag")
@handle_errors
def tag(contact: str, tags: list[str] = typer.Argument(..., metavar="TAG..."),
        account: str | None = _ACCOUNT) -> None:
    """Add tags (workflows can test them with tags_any/tags_all/tags_none)."""
    _tags(contact, tags, account, add=True)


@contacts_app.command("untag")
@handle_errors
def untag(contact: str, tags: list[str] = typer.Argument(..., metavar="TAG..."),
          account: str | None = _ACCOUNT) -> None:
    """Remove tags."""
    _tags(contact, tags, account, add=False)


@contacts_app.command("forget")
@handle_errors
def forget(
    contact: str, account: str | None = _ACCOUNT,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete everything stored about one person (the same as `purge --contact`)."""
    from instaset import contacts as svc

    config = load_or_exit()

    @run_async
    async def find() -> svc.ContactRef:
        async with _open(config) as db:
            return await svc.resolve(db, contact, account)

    ref = find()
    if not yes:
        if not is_tty():
            raise InstasetError(f"refusing to delete everything about {contact} without "
                                "confirmation; pass --yes")
        if not typer.confirm(f"Delete everything stored about {contact}?", default=False):
            raise InstasetError("nothing deleted")

    @run_async
    async def go() -> dict[str, int]:
        async with _open(config) as db:
            return await svc.forget(db, ref)

    counts = go()
    total = sum(counts.values())
    detail = ", ".join(f"{t} {n}" for t, n in sorted(counts.items()))
    typer.echo(f"forgot {contact}: {total} rows deleted" + (f" ({detail})" if detail else ""))


def _report_json(r: RunReport) -> dict[str, Any]:
    return {
        "account_id": r.account_id, "username": r.username, "resubscribed": r.resubscribed,
        "reason": r.reason, "since": iso_or_none(r.since), "recovered": r.recovered,
        "unavailable": r.unavailable, "error": r.error,
    }


@app.command("catch-up")
@handle_errors
def catch_up(
    since: str | None = typer.Option(
        None, "--since", help="Look back this far (6h, 2d) or from this UTC time "
        "(2026-11-28T10:00); default: since the last check."),
    as_json: bool = _JSON,
) -> None:
    """Fetch the messages Instagram did not deliver (Conversations API) and restore a dropped
    webhook subscription. The daemon then processes what was recovered."""
    from instaset.catchup import run_catch_up

    config = load_or_exit()
    reports = run_async(run_catch_up)(config, since=since)
    failed = [r for r in reports if r.error]
    if as_json:
        typer.echo(json.dumps([_report_json(r) for r in reports], indent=2))
    else:
        if not reports:
            typer.echo("no connected account")
        for r in reports:
            parts = []
            if r.resubscribed:
                parts.append("webhook subscription restored")
            if r.error:
                pass  # said on stderr below
            elif r.reason is None:
                parts.append("nothing to catch up")
            else:
                parts.append(f"recovered {r.recovered} message(s) since {iso_or_none(r.since)}")
                if r.unavailable:
                    parts.append(f"{r.unavailable} could not be read back")
            if parts:
                typer.echo(f"{_account_label(r)}: " + "; ".join(parts))
        if any(r.recovered for r in reports):
            typer.echo("the recovered messages are processed by `instaset serve` (workflows, "
                       "replies inside the 24 h window)")
    # A catch-up that could not check an account did not do its job: cron and scripts must
    # see it in the exit code, whatever the other accounts did.
    for r in failed:
        typer.echo(f"error: {_account_label(r)}: {r.error}", err=True)
    if failed:
        raise typer.Exit(1)


def _account_label(r: RunReport) -> str:
    return f"@{r.username}" if r.username else r.account_id
