"""``instaset bookings [--json] [--ics] [--upcoming]``, ``bookings cancel ID`` and
``bookings reschedule ID (--to WHEN | --offer)``.

The listing is unchanged from before the lifecycle commands (same flags, same JSON shape).
``cancel`` and ``reschedule`` change the database in one transaction each; the message to
the contact is queued in the outbox (the daemon sends it) only if Instagram's rules allow an
automated DM now, and the command says so, or why not. Light at import: everything beyond
typer and the app is imported inside the commands.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import typer

from instaset.cli.app import app, handle_errors, is_tty, open_db, run_async, sub_app
from instaset.timefmt import iso_seconds

if TYPE_CHECKING:
    from datetime import datetime

    from instaset.booking import BookingDesk, Outcome
    from instaset.config import Config
    from instaset.store.db import Database

bookings_app = sub_app(
    help="Appointments booked through Instagram: list, cancel, reschedule.",
    invoke_without_command=True,
)
app.add_typer(bookings_app, name="bookings")


@bookings_app.callback()
@handle_errors
def bookings(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
    as_ics: bool = typer.Option(False, "--ics", help="An iCalendar (.ics) file on stdout."),
    upcoming: bool = typer.Option(False, "--upcoming", help="Only those not over yet."),
) -> None:
    """Appointments booked through Instagram, earliest first (cancelled ones too)."""
    if ctx.invoked_subcommand is not None:
        return
    import json
    from datetime import datetime

    from instaset.booking import to_ics
    from instaset.cli.cmd_config import load_or_exit
    from instaset.errors import InstasetError

    if as_json and as_ics:  # as `leads --json --csv`: one document, the one asked for
        raise InstasetError("choose either --json or --ics")
    config = load_or_exit()
    rows = run_async(_list)(config, time.time() if upcoming else None)
    if as_ics:
        typer.echo(to_ics(rows, now=time.time()), nl=False)
        return
    tz = config.tzinfo
    data = [{
        "id": r["id"], "account_id": r["account_id"], "contact_id": r["contact_id"],
        "username": r["username"], "title": r["title"], "status": r["status"],
        "start": iso_seconds(r["start_at"]), "end": iso_seconds(r["end_at"]),
        "local_start": datetime.fromtimestamp(r["start_at"], tz).isoformat(),
        "timezone": config.timezone, "created_at": iso_seconds(r["created_at"]),
    } for r in rows]
    if as_json:
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    if not data:
        typer.echo("no bookings")
    for b in data:
        who = f"@{b['username']}" if b["username"] else b["contact_id"]
        local = datetime.fromisoformat(str(b["local_start"])).strftime("%a %d %b %Y %H:%M")
        typer.echo(f"#{b['id']:<4} {local} ({config.timezone})  {b['title']:<12} {who}"
                   f"  {b['status']}")


async def _list(config: Config, since: float | None) -> list[dict[str, Any]]:
    from instaset.store import ai as aistore

    db = await open_db(config)
    try:
        return [dict(r) for r in await aistore.list_bookings(db, since=since)]
    finally:
        await db.close()


def _desk(config: Config, db: Database) -> BookingDesk:
    from instaset.booking import BookingDesk
    from instaset.queue import NewJob

    async def rescore(_conn: object, acct: str, contact: str, now: float) -> list[NewJob]:
        # The daemon's lead_score job: the contact's stage follows the cancellation.
        return [NewJob("lead_score", f"lead:booking:{contact}:{now}",
                       {"account_id": acct, "contact_id": contact}, run_at=now)]

    return BookingDesk(db, config, clock=time.time, on_booked=rescore)


def _report(outcome: Outcome, done: str, notify: bool = True) -> None:
    typer.echo(done)
    if outcome.told:
        typer.echo(f"{outcome.who} will be told (queued; `instaset serve` sends it)")
    elif notify:
        typer.echo(f"{outcome.who} could not be told: {outcome.why_not}")
    else:
        typer.echo(f"{outcome.who} was not told (--no-notify)")


@bookings_app.command("cancel")
@handle_errors
def cancel(
    booking_id: int = typer.Argument(..., metavar="ID", help="The booking's id (see the list)."),
    reason: str | None = typer.Option(
        None, "--reason", help="Kept with the booking and added to the message to the contact."),
    notify: bool = typer.Option(True, "--notify/--no-notify",
                                help="Tell the contact (if Instagram's 24 h window allows)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Cancel a booking: its slot is free again at once."""
    from instaset.cli.cmd_config import load_or_exit
    from instaset.errors import InstasetError

    config = load_or_exit()
    what = run_async(_describe)(config, booking_id)
    if not yes:
        if not is_tty():
            raise InstasetError(f"refusing to cancel booking {booking_id} ({what}) without"
                                " confirmation; pass --yes")
        if not typer.confirm(f"Cancel booking {booking_id} ({what})?", default=False):
            raise typer.Exit(1)
    outcome = run_async(_cancel)(config, booking_id, reason, notify)
    _report(outcome, f"cancelled booking {booking_id} ({what})", notify)


async def _describe(config: Config, booking_id: int) -> str:
    from instaset.booking import slot_when
    from instaset.errors import InstasetError
    from instaset.store import booking as bstore

    db = await open_db(config)
    try:
        row = await bstore.find_booking(db, booking_id)
    finally:
        await db.close()
    if row is None:
        raise InstasetError(f"no booking {booking_id} (`instaset bookings` lists them with"
                            " their ids)")
    who = f"@{row['username']}" if row["username"] else row["contact_id"]
    return (f"{row['title']} with {who} on {slot_when(row['start_at'], config.tzinfo)}"
            f" ({config.timezone})")


async def _cancel(config: Config, booking_id: int, reason: str | None, notify: bool
                  ) -> Outcome:
    db = await open_db(config)
    try:
        return await _desk(config, db).cancel(booking_id, reason=reason, notify=notify)
    finally:
        await db.close()


def parse_when(value: str, config: Config) -> float:
    """``--to``: an ISO 8601 date-time; without an offset it is the creator's local time
    (the config's ``timezone``). A local time the clocks skip (when summer time starts) is
    refused; one they show twice (when it ends) is the first of the two, as in the slots."""
    from datetime import datetime

    from instaset.errors import InstasetError

    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise InstasetError(f"--to {value!r} is not an ISO date-time; write e.g."
                            f" 2025-06-02T10:00 ({config.timezone}) or 2025-06-02T08:00Z"
                            ) from None
    if dt.tzinfo is None:
        local = dt.replace(tzinfo=config.tzinfo, fold=0)
        if datetime.fromtimestamp(local.timestamp(), config.tzinfo).replace(tzinfo=None) != dt:
            raise InstasetError(_skipped(value, dt, config))
        dt = local
    return dt.timestamp()


def _skipped(value: str, dt: datetime, config: Config) -> str:
    """Why ``dt``, a local time in a gap of the config's zone (clocks going forward), is
    refused, and what to write instead."""
    from datetime import UTC, datetime, timedelta

    tz = config.tzinfo
    before = dt.replace(tzinfo=tz, fold=0).utcoffset() or timedelta(0)
    after = dt.replace(tzinfo=tz, fold=1).utcoffset() or timedelta(0)
    as_utc = dt.replace(tzinfo=UTC).timestamp()
    # the change lies between the two readings of dt; find its second
    lo, hi = int(as_utc - after.total_seconds()), int(as_utc - before.total_seconds())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, tz).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    change = datetime.fromtimestamp(hi, UTC).replace(tzinfo=None)

    def wall(t: datetime) -> str:
        return t.strftime("%H:%M" if t.date() == dt.date() else "%Y-%m-%d %H:%M")

    later = (dt + (after - before)).isoformat(timespec="minutes")
    return (f"--to {value}: that time does not exist in {config.timezone}, the clocks jump"
            f" from {wall(change + before)} to {wall(change + after)} that night; give a time"
            f" before {wall(change + before)} or from {wall(change + after)} on"
            f" (e.g. {later})")


@bookings_app.command("reschedule")
@handle_errors
def reschedule(
    booking_id: int = typer.Argument(..., metavar="ID", help="The booking's id (see the list)."),
    to: str | None = typer.Option(
        None, "--to", metavar="ISO_DATETIME",
        help="The new start, a free slot; local time (config timezone) unless it has an"
             " offset. A local time the clocks skip is refused; one they show twice is the"
             " first."),
    offer: bool = typer.Option(False, "--offer",
                               help="Send the contact free times to pick from instead."),
) -> None:
    """Move a booking to another free slot, or let the contact pick one (--offer)."""
    from instaset.cli.cmd_config import load_or_exit
    from instaset.errors import InstasetError

    if (to is None) == (not offer):
        raise InstasetError("give either --to ISO_DATETIME or --offer")
    config = load_or_exit()
    if offer:
        outcome = run_async(_offer)(config, booking_id)
        typer.echo(f"sent {outcome.who} the next free times for booking {booking_id};"
                   " their tap moves it (queued; `instaset serve` sends it)")
        return
    start = parse_when(str(to), config)
    outcome = run_async(_move)(config, booking_id, start)
    _report(outcome, f"moved booking {booking_id} to {outcome.when} ({config.timezone})")


async def _move(config: Config, booking_id: int, start: float) -> Outcome:
    db = await open_db(config)
    try:
        return await _desk(config, db).reschedule(booking_id, start)
    finally:
        await db.close()


async def _offer(config: Config, booking_id: int) -> Outcome:
    db = await open_db(config)
    try:
        return await _desk(config, db).offer_reschedule(booking_id)
    finally:
        await db.close()


__all__ = ["bookings_app", "parse_when"]
