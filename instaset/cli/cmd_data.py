"""``instaset stats``, ``export``, ``purge`` and ``doctor``."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import typer

import instaset.cli.app as cli_app
from instaset.cli.app import STATE, app, handle_errors, is_tty, nonempty, run_async
from instaset.cli.cmd_config import load_or_exit, storage_or_exit
from instaset.cli.cmd_inbox import open_db
from instaset.errors import InstasetError

if TYPE_CHECKING:
    from instaset.retention import PurgeReport

# The features (and the config module) are imported inside the commands: `instaset --help`
# must not pay for them (see instaset/cli/app.py).
DAY = 86400.0


def _iso(ts: float) -> str | None:
    from instaset.timefmt import iso_seconds

    return iso_seconds(ts)


def _seconds(value: str, option: str) -> float:
    from instaset.timefmt import parse_duration

    try:
        return parse_duration(value).total_seconds()
    except ValueError as exc:
        raise InstasetError(f"{option}: {exc}") from None


# -- stats ------------------------------------------------------------------------------------
@app.command()
@handle_errors
def stats(
    since: str = typer.Option(
        "30d", "--since",
        help="Period: 7d, 30d, 12h ... (from the start of that hour, UTC, to now)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
    as_csv: bool = typer.Option(False, "--csv", help="The funnel as CSV on stdout."),
) -> None:
    """The funnel per workflow and per media, delivery figures and activity."""
    from rich.console import Console

    from instaset.stats import compute, render, to_csv

    if as_json and as_csv:
        raise InstasetError("choose one of --json and --csv")
    period = _seconds(since, "--since")
    storage = storage_or_exit()
    now = time.time()

    @run_async
    async def load() -> dict[str, Any]:
        async with open_db(storage) as db:
            return await compute(db, now - period, now)

    doc = load()
    if as_json:
        typer.echo(json.dumps(doc, ensure_ascii=False, indent=2))
    elif as_csv:
        typer.echo(to_csv(doc), nl=False)
    else:
        # Not a terminal (a pipe, a file): rich would assume 80 columns and fold the tables.
        render(doc, cli_app.out_console if cli_app.out_console.is_terminal else Console(width=140))


# -- export -----------------------------------------------------------------------------------
@contextlib.contextmanager
def _private_file(path: Path) -> Iterator[IO[str]]:
    """Write ``path`` atomically (temp file + rename), readable by the owner only: an export
    is personal data."""
    import tempfile

    path = path.expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yield fh
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@app.command()
@handle_errors
def export(
    contact: str | None = typer.Option(None, "--contact", help="Only this contact."),
    account: str | None = typer.Option(None, "--account", help="Only this account id."),
    out: Path | None = typer.Option(None, "--out", "-o", help="File (default: stdout)."),
    leads: Path | None = typer.Option(None, "--leads-csv", help="Also write leads as CSV."),
    events: bool = typer.Option(True, "--events/--no-events",
                                help="Include Meta's raw events."),
    schema: bool = typer.Option(False, "--schema", help="Print the JSON Schema and exit."),
) -> None:
    """Everything stored (or one contact's data) as portable JSON; never secrets."""
    from instaset.cli.cmd_accounts import resolve_account
    from instaset.export import EXPORT_SCHEMA, leads_csv, write_export
    from instaset.inbox import resolve_contact

    if schema:
        typer.echo(json.dumps(EXPORT_SCHEMA, indent=2))
        return
    nonempty(contact, "--contact")
    nonempty(account, "--account")
    for option, path, example in (("--out", out, "export.json"),
                                  ("--leads-csv", leads, "leads.csv")):
        if path is not None and path.expanduser().is_dir():
            # Before the export is built, and naming their path (the rename of our temp
            # file into a directory failed naming the temp file).
            raise InstasetError(f"{option} {path} is a directory: give a file name, e.g. "
                                f"{path / example}")
    config = load_or_exit()
    now = time.time()

    @run_async
    async def go() -> int:
        async with open_db(config) as db:
            # --account as `disconnect` reads it (id, app-scoped id or @username); an
            # account that does not exist is an error, not an empty export.
            account_id = None if account is None else (await resolve_account(db, account))[0]
            ref = (None if contact is None
                   else await resolve_contact(db, contact, account_id))
            if leads is not None:
                text = await leads_csv(db, account_id)
                with _private_file(leads) as fh:
                    fh.write(text)
            if out is None:
                return await write_export(db, sys.stdout, now, account_id=account_id,
                                          contact=ref, events=events)
            with _private_file(out) as fh:
                return await write_export(db, fh, now, account_id=account_id, contact=ref,
                                          events=events)

    n = go()
    if out is not None:
        cli_app.err_console.print(f"exported {n} contact{'s' if n != 1 else ''} to {out}",
                                  highlight=False)
    if leads is not None:
        cli_app.err_console.print(f"leads written to {leads}", highlight=False)


# -- purge ------------------------------------------------------------------------------------
@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str, int, int | None], None]]:
    if not enabled:
        yield lambda _what, _done, _total: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=cli_app.err_console, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def update(what: str, done: int, total: int | None) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=total)
            bar.update(tasks[what], completed=done, total=total)

        yield update


@app.command()
@handle_errors
def purge(
    older_than: str | None = typer.Option(None, "--older-than", help="e.g. 30d."),
    contact: str | None = typer.Option(None, "--contact", help="Everything about one person."),
    account: str | None = typer.Option(None, "--account", help="All of one account's data."),
    all_: bool = typer.Option(False, "--all", help="All data of every account."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only count what would go."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    as_json: bool = typer.Option(False, "--json", help="The report as JSON."),
) -> None:
    """Apply retention.days (no flags: for cron, never asks), or delete what the flags say."""
    from instaset.cli.cmd_accounts import resolve_account
    from instaset.inbox import ContactRef, resolve_contact
    from instaset.retention import (
        daemon_lock,
        purge_account,
        purge_all,
        purge_contacts,
        purge_older_than,
        reclaim_space,
    )

    # A blank value is a mistake, never "not given": that would run a different purge.
    for name, value in (("--older-than", older_than), ("--contact", contact),
                        ("--account", account)):
        nonempty(value, name)
    chosen = [n for n, given in (("--older-than", older_than is not None),
                                 ("--contact", contact is not None),
                                 ("--account", account is not None), ("--all", all_))
              if given]
    if len(chosen) > 1:
        raise InstasetError(f"choose one of {', '.join(chosen)}")
    if older_than is not None and re.fullmatch(r"\d+(\.\d*)?|\.\d+", older_than.strip()):
        # A bare number is seconds in the duration grammar; here, next to retention.days,
        # "30" surely meant days: deleting nearly everything is no way to find out.
        bare = older_than.strip()
        raise InstasetError(f"--older-than {bare}: give a unit, e.g. {bare}d for days "
                            f"({bare}h hours, {bare}m minutes)")
    config = load_or_exit()
    now = time.time()
    horizon = now - (_seconds(older_than, "--older-than") if older_than is not None
                     else config.retention.days * DAY)
    db_path = config.storage.db_path()
    if not db_path.exists():
        if not chosen:
            # Plain `purge` is cron's: a fresh install with nothing stored yet is no failure.
            typer.echo(f"nothing to purge (no database at {db_path} yet)")
            return
        raise InstasetError(f"no database at {db_path}: nothing to purge")

    @run_async
    async def find() -> tuple[ContactRef | None, str | None, str | None]:
        """What --contact / --account name, resolved before asking (and before deleting):
        an unknown one is an error, not "nothing to purge"."""
        async with open_db(config) as db:
            if contact is not None:
                return await resolve_contact(db, contact), None, None
            return None, *await resolve_account(db, account)

    ref, account_id, username = (find() if contact is not None or account is not None
                                 else (None, None, None))
    if ref is not None:
        what = f"everything about {ref.label}"
    elif account_id is not None:
        what = f"all data of account {f'@{username} ({account_id})' if username else account_id}"
    elif all_:
        what = "ALL data of every account"
    else:
        what = "" if older_than is None else (
            f"data older than {older_than.strip()}: before {_iso(horizon)}")
    if chosen and not dry_run and not yes:
        if not is_tty():
            raise InstasetError(f"purge would delete {what}; no terminal to confirm: add --yes")
        if not typer.confirm(f"Delete {what}?", default=False):
            raise typer.Exit(1)

    @run_async
    async def go() -> PurgeReport:
        async with open_db(config) as db:
            with _progress(cli_app.err_console.is_terminal and not as_json) as progress:
                if ref is not None:
                    report = await purge_contacts(db, [(ref.account_id, ref.contact_id)],
                                                  dry_run=dry_run, progress=progress)
                elif account_id is not None:
                    report = await purge_account(db, account_id, dry_run=dry_run,
                                                 progress=progress)
                elif all_:
                    report = await purge_all(db, dry_run=dry_run, progress=progress)
                else:
                    report = await purge_older_than(db, horizon, now, dry_run=dry_run,
                                                    progress=progress)
            if not dry_run:
                with daemon_lock(db_path) as alone:
                    report.space = await reclaim_space(db, exclusive=alone)
            return report

    report = go()
    if as_json:
        doc = report.to_json()
        if ref is None and account_id is None and not all_:
            doc["cutoff"] = _iso(horizon)  # what "older than" meant, as the text report says
        typer.echo(json.dumps(doc, indent=2))
        return
    scope = what or (f"data older than retention.days={config.retention.days}: before "
                     f"{_iso(horizon)}")
    verb = "would delete" if dry_run else "deleted"
    if not report.counts:
        typer.echo(f"nothing to purge ({scope})")
    else:
        typer.echo(f"{verb} {report.total} rows ({scope}):")
        for table, n in sorted(report.counts.items()):
            typer.echo(f"  {table}: {n}")
    if report.space:
        typer.echo(f"space: {report.space}")


# -- doctor -----------------------------------------------------------------------------------
_MARK = {"ok": ("✓", "green"), "warn": ("!", "yellow"), "fail": ("✗", "red"),
         "skip": ("-", "dim")}


@app.command()
@handle_errors
def doctor(
    offline: bool = typer.Option(False, "--offline", help="Skip the checks that go online."),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
) -> None:
    """Check config, secrets, tokens, subscriptions, database and queue; say what to fix."""
    from instaset.doctor import failed, run_checks

    checks = run_async(run_checks)(STATE.config_path, offline=offline)
    bad = failed(checks)
    if as_json:
        typer.echo(json.dumps({"ok": not bad, "checks": [c.to_json() for c in checks]},
                              ensure_ascii=False, indent=2))
    else:
        for c in checks:
            mark, style = _MARK.get(c.status, ("?", ""))
            cli_app.out_console.print(f"[{style}]{mark}[/] {c.name}: ", end="", highlight=False)
            cli_app.out_console.print(c.message, markup=False, highlight=False)
            if c.fix:
                ref = f" (see {c.ref})" if c.ref else ""
                cli_app.out_console.print(f"    fix: {c.fix}{ref}", markup=False, highlight=False)
        fails = sum(c.status == "fail" for c in checks)
        warns = sum(c.status == "warn" for c in checks)
        cli_app.out_console.print(f"{fails} failed, {warns} warning{'s' if warns != 1 else ''}",
                                  highlight=False)
    if bad:
        raise typer.Exit(1)
