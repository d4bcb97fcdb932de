"""``instaset inbox``, ``inbox show``, ``inbox reply``, ``inbox pause`` and ``inbox resume``.

The listing is a rich table (``--plain`` asks for it explicitly; the full-screen Textual inbox
is an optional extra that is not part of this build, so a terminal gets the table too).
``--json`` prints one document. AI drafts (approve, edit, reject) belong to the AI feature.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import typer

import instaset.cli.app as cli_app
from instaset.cli.app import app, handle_errors, is_tty, nonempty, run_async, sub_app
from instaset.cli.app import open_db as open_database
from instaset.cli.cmd_config import load_or_exit, storage_or_exit
from instaset.errors import InstasetError
from instaset.oneline import one_line, printable, refusal_words, shortened

if TYPE_CHECKING:
    from instaset.config import Config
    from instaset.config_storage import StorageLocation
    from instaset.store.db import Database

# The daemon, the config, the inbox logic and rich tables are imported inside the commands:
# `instaset --help` (and every other command) must not pay for them (see instaset/cli/app.py).

inbox_app = sub_app(help="Conversations, threads and replying as yourself.")
app.add_typer(inbox_app, name="inbox")


@contextlib.asynccontextmanager
async def open_db(where: Config | StorageLocation) -> AsyncIterator[Database]:
    """The configured database, always closed (an unclosed aiosqlite connection hangs)."""
    db = await open_database(where)
    try:
        yield db
    finally:
        await db.close()


def _echo_json(doc: object) -> None:
    typer.echo(json.dumps(doc, ensure_ascii=False, indent=2))


def _short(text: str | None, n: int = 60) -> str:
    return shortened(text, n)  # a contact's text: no escape may reach the terminal


async def _notifications(db: Database, limit: int, *, undelivered: bool = False
                         ) -> list[dict[str, Any]]:
    from instaset.inbox import iso_utc
    from instaset.store import history

    return [{"key": r["key"], "kind": r["kind"], "text": r["text"],
             "account_id": r["account_id"], "contact_id": r["contact_id"],
             "created_at": iso_utc(r["created_at"]), "delivered_at": iso_utc(r["delivered_at"])}
            for r in await history.recent_notifications(db, limit, undelivered=undelivered)]


def _note_line(note: dict[str, Any]) -> str:
    """One notification on one line: ``!`` marks one not delivered (yet, or given up)."""
    late = note["delivered_at"] is None
    return (f"{'!' if late else '-'} {note['created_at']} {note['kind']}:"
            f" {_short(note['text'], 90)}{' (not delivered)' if late else ''}")


@inbox_app.callback(invoke_without_command=True)
@handle_errors
def inbox(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
    plain: bool = typer.Option(False, "--plain", help="A plain table, never full-screen."),
    limit: int = typer.Option(50, "--limit", "-n", min=1, help="How many conversations."),
    unread: bool = typer.Option(False, "--unread", help="Only conversations with unread."),
) -> None:
    """Conversations, newest first: unread, lead stage, automation and window state."""
    if ctx.invoked_subcommand is not None:
        return
    if not (as_json or plain) and cli_app.out_console.is_terminal and is_tty():
        from instaset.tui import run_inbox

        run_async(run_inbox)(load_or_exit(), limit=limit)
        return
    from instaset.inbox import conversations
    from instaset.store import inbox as inbox_store

    storage = storage_or_exit()
    now = time.time()

    @run_async
    async def load() -> tuple[list[dict[str, Any]], list[dict[str, Any]], tuple[int, int]]:
        async with open_db(storage) as db:
            convs = await conversations(db, now, limit=limit, unread_only=unread)
            return convs, await _notifications(db, 5), await inbox_store.totals(db)

    convs, notes, (total, with_unread) = load()
    if as_json:
        _echo_json({"conversations": convs, "notifications": notes,
                    "total": total, "unread": with_unread})
        return
    rows = []
    for c in convs:
        last = _short(c["last_message"])
        if c["last_from"] in ("automation", "human"):
            last = f"{'you' if c['last_from'] == 'human' else 'bot'}: {last}"
        rows.append((one_line(f"@{c['username']}" if c["username"] else c["contact_id"]),
                     str(c["unread"] or ""), c["stage"], _automation_text(c["automation"], now),
                     _window_text(c["window"], now), last, _ago(c["last_message_at"], now),
                     c))
    typer.echo(f"{total} conversations, {with_unread} with unread messages")
    if plain or not cli_app.out_console.is_terminal:
        # One line per conversation, never wrapped: for pipes, grep and narrow terminals.
        for who, n, stage, auto, window, last, ago, _c in rows:
            unread_text = f"{n} unread" if n else "read"
            typer.echo(f"{who}  {unread_text}  {stage}  automation {auto}  window {window}"
                       f"  {ago}  {last}")
    elif rows:
        from rich.table import Table  # only for a terminal: pipes get the lines above
        from rich.text import Text

        table = Table(show_edge=False, pad_edge=False)
        for col in ("contact", "unread", "stage", "automation", "window", "last message",
                    "when"):
            table.add_column(col, justify="right" if col == "unread" else "left",
                             overflow="ellipsis", no_wrap=col != "last message")
        for who, n, stage, auto, window, last, ago, c in rows:
            table.add_row(Text(who, style="bold" if n else ""), n, stage, auto,
                          Text(window, style=_window_style(c["window"]["state"])), Text(last),
                          ago)
        cli_app.out_console.print(table)
    for note in notes:
        typer.echo(_note_line(note))


def _ts(iso: str | None) -> float | None:
    if iso is None:
        return None
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _ago(iso: str | None, now: float) -> str:
    from instaset.timefmt import human_duration

    ts = _ts(iso)
    return "" if ts is None else human_duration(now - ts) + " ago"


def _window_text(w: dict[str, Any], now: float) -> str:
    from instaset.timefmt import human_duration

    closes = _ts(w["closes_at"])
    if w["state"] == "open" and closes is not None:
        return f"{human_duration(closes - now)} left"
    if w["state"] == "human" and closes is not None:
        return f"you only, {human_duration(closes - now)}"
    return "closed" if w["state"] == "closed" else "no DM"


def _window_style(state: str) -> str:
    return {"open": "green", "human": "yellow", "closed": "red"}.get(state, "dim")


def _automation_text(a: dict[str, Any], now: float) -> str:
    from instaset.inbox import describe_automation

    return describe_automation(_ts(a["paused_until"]), now)


@inbox_app.command("notifications")
@handle_errors
def notifications_cmd(
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
    limit: int = typer.Option(50, "--limit", "-n", min=1, help="How many, newest first."),
    undelivered: bool = typer.Option(False, "--undelivered",
                                     help="Only those not delivered (yet, or given up)."),
) -> None:
    """Your notifications, newest first, and whether each was delivered (`inbox` shows only
    the last 5; `doctor` says why one fails)."""
    from instaset.store import history

    storage = storage_or_exit()

    @run_async
    async def load() -> tuple[list[dict[str, Any]], tuple[int, int]]:
        async with open_db(storage) as db:
            notes = await _notifications(db, limit, undelivered=undelivered)
            return notes, await history.count_notifications(db)

    notes, (total, late) = load()
    if as_json:
        _echo_json({"notifications": notes, "total": total, "undelivered": late})
        return
    typer.echo(f"{total} notifications, {late} not delivered"
               + (f" (the newest {len(notes)} shown)" if len(notes) < (
                   late if undelivered else total) else ""))
    for note in notes:
        typer.echo(_note_line(note))


@inbox_app.command("show")
@handle_errors
def show(
    contact: str = typer.Argument(..., help="Username or Instagram-scoped id."),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
    limit: int = typer.Option(200, "--limit", "-n", min=1, help="Latest messages to show."),
    keep_unread: bool = typer.Option(False, "--keep-unread", help="Do not mark it read."),
) -> None:
    """One thread: media described, reactions, and who sent each message."""
    from rich.text import Text

    from instaset.inbox import describe_automation, item_time, resolve_contact, thread, timeline

    storage = storage_or_exit()
    now = time.time()

    @run_async
    async def load() -> dict[str, Any]:
        async with open_db(storage) as db:
            ref = await resolve_contact(db, contact)
            return await thread(db, ref, now, limit=limit, mark_read=not keep_unread)

    doc = load()
    if as_json:
        _echo_json(doc)
        return
    c = doc["contact"]
    who = one_line(f"@{c['username']}" if c["username"] else c["id"])
    cli_app.out_console.print(Text.assemble(
        (who, "bold"), f"  stage {c['stage']}  ·  automation ",
        describe_automation(_ts(c["automation"]["paused_until"]), now),
        "  ·  window ", (_window_text(c["window"], now), _window_style(c["window"]["state"])),
    ))
    # Everything in time order (inbox.timeline): comments among the messages, each public
    # reply when it went, each unsent send where it was decided, with what it was.
    senders = {"contact": who, "automation": "bot", "human": "you"}
    for kind, m in timeline(doc):
        line = Text(f"{(item_time(kind, m) or '')[:16].replace('T', ' ')}  ", style="dim")
        if kind == "comment":
            where = "a live video" if m["live"] else f"media {m['media_id'] or '?'}"
            what = "replied to a comment" if m["reply"] else "commented"
            line.append(f"{who} {what} on {where}: ", style="cyan")
            line.append(printable(m["text"] or "[no text]"))
        elif kind == "public_reply":
            line.append(f"{senders.get(m['sent_by'], m['sent_by'])}: ", style="magenta")
            line.append(f"public reply under the comment: {printable(m['text'] or '')}",
                        style="yellow")
        elif kind == "unsent":
            # Why, in Meta's (or the rules') words when they were stored (migration 0021).
            why = refusal_words(m["reason"], m["detail"])
            line.append(f"{senders.get(m['sent_by'], m['sent_by'])}: ", style="magenta")
            line.append(f"not sent ({why}): {_short(m['what'], 80)}", style="red")
        else:
            sender = senders[m["sent_by"]]
            line.append(f"{sender}: ", style="cyan" if m["direction"] == "in" else "magenta")
            line.append(printable(m["preview"]))
            if m["edited"]:
                line.append(" (edited)", style="dim")
            for by, reaction in m["reactions"].items():
                line.append(f"  [{by} reacted {reaction}]", style="yellow")
        cli_app.out_console.print(line)


@inbox_app.command("reply")
@handle_errors
def reply_cmd(
    contact: str = typer.Argument(..., help="Username or Instagram-scoped id."),
    text: str = typer.Argument(..., help="What to send."),
    wait: float = typer.Option(30.0, "--wait", min=0, help="Seconds to wait for delivery."),
) -> None:
    """Send as yourself (HUMAN_AGENT tag after 24 h, refused after 7 days) and pause
    automation for that contact."""
    from instaset import tokens as tokens_mod
    from instaset.daemon import runtime
    from instaset.inbox import iso_utc, reply, resolve_contact

    config = load_or_exit()

    @run_async
    async def go() -> tuple[str, Any]:
        tokens = tokens_mod.default_tokens(config)
        async with runtime(config, tokens=tokens) as rt:
            ref = await resolve_contact(rt.db, contact)
            return ref.label, await reply(rt, ref, text, wait=wait)

    label, outcome = go()
    if outcome.state in ("refused", "failed"):
        verb = "refused" if outcome.state == "refused" else "Instagram refused it"
        # Meta's words (a string from outside): on one line, without control characters.
        typer.echo(f"error: not sent to {label} ({verb}: {outcome.reason}): "
                   f"{one_line(outcome.detail or '')}; automation was not paused", err=True)
        raise typer.Exit(1)
    until = iso_utc(outcome.paused_until)
    if outcome.state == "sent":
        tag = " with the HUMAN_AGENT tag (the 24 h window had closed)" \
            if outcome.human_agent_tag else ""
        typer.echo(f"sent to {label}{tag}; automation paused until {until}")
    else:
        typer.echo(f"queued for {label} ({outcome.detail or 'waiting for its turn'}); it goes "
                   f"out when `instaset serve` runs; automation paused until {until}")


@inbox_app.command("pause")
@handle_errors
def pause_cmd(
    contact: str = typer.Argument(..., help="Username or Instagram-scoped id."),
    for_: str | None = typer.Option(None, "--for", help="How long (default handoff.pause_for)."),
) -> None:
    """Pause automation for one contact."""
    from instaset.inbox import automation_json, pause, resolve_contact
    from instaset.timefmt import format_duration, parse_duration

    nonempty(for_, "--for")
    config = load_or_exit()
    try:
        duration = parse_duration(for_) if for_ is not None else config.handoff.pause_for
    except ValueError as exc:
        raise InstasetError(f"--for: {exc}") from None
    seconds = duration.total_seconds()
    if seconds <= 0:  # a pause that ends before it starts would pause nothing
        raise InstasetError("--for must be longer than 0s, e.g. --for 2h" if for_ is not None
                            else "handoff.pause_for is 0s: give --for, e.g. --for 2h")
    now = time.time()

    @run_async
    async def go() -> str:
        async with open_db(config) as db:
            ref = await resolve_contact(db, contact)
            await pause(db, ref, now + seconds, now)
            return ref.label

    label = go()
    state = automation_json(now + seconds, now)
    typer.echo(f"automation paused for {label} until {state['paused_until']} "
               f"({format_duration(duration)})")


@inbox_app.command("resume")
@handle_errors
def resume_cmd(
    contact: str = typer.Argument(..., help="Username or Instagram-scoped id."),
) -> None:
    """Resume automation for one contact."""
    from instaset.inbox import pause, resolve_contact

    config = load_or_exit()

    @run_async
    async def go() -> str:
        async with open_db(config) as db:
            ref = await resolve_contact(db, contact)
            await pause(db, ref, None, time.time())
            return ref.label

    typer.echo(f"automation resumed for {go()}")
