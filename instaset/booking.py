"""Appointment booking: free slots from the weekly availability in the creator's time zone,
offered as quick replies, booked on tap, atomically.

- :func:`free_slots` (pure) walks the local calendar day by day, so a slot at 09:00 stays at
  09:00 local time across a DST change; local times that do not exist (the spring-forward
  gap) are skipped, ambiguous ones (fall-back) take their first occurrence.
- :meth:`BookingDesk.offer_in` builds the message offering the next free slots (quick-reply
  payload ``BOOK:<unix start>``) inside the caller's transaction, so it can be part of a
  decision's ordered chain of sends.
- :meth:`BookingDesk.book` (the ``book_slot`` job) re-checks the slot and inserts the booking
  in one transaction; the unique index on (account, start) makes the second of two
  concurrent taps fail, and that person is offered the next free slots instead.
- :func:`to_ics` renders bookings as an iCalendar file.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import aiosqlite

from instaset.automation import notify_job
from instaset.config import BookingConfig, Config
from instaset.outbox import Outgoing, enqueue_sends
from instaset.queue import NewJob, enqueue_in
from instaset.rules import SendKind
from instaset.store import ai as aistore
from instaset.store.db import Database
from instaset.store.jobs import Job, complete_in

log = logging.getLogger("instaset.booking")

PAYLOAD_PREFIX = "BOOK:"
OnBooked = Callable[[aiosqlite.Connection, str, str, float], Awaitable[list[NewJob]]]


@dataclass(frozen=True, slots=True)
class Slot:
    start: float
    end: float


def _local_start(day: datetime, minutes: int, tz: ZoneInfo) -> float | None:
    """Unix time of ``day`` + ``minutes`` as local wall time, None if that time does not
    exist there (DST gap)."""
    wall = day + timedelta(minutes=minutes)
    aware = wall.replace(tzinfo=tz, fold=0)
    ts = aware.timestamp()
    if datetime.fromtimestamp(ts, tz).replace(tzinfo=None) != wall:
        return None
    return ts


def free_slots(
    cfg: BookingConfig, tz: ZoneInfo, now: float, busy: Sequence[tuple[float, float]] = (),
    *, limit: int | None = None,
) -> list[Slot]:
    """Free slots from ``now + min_notice`` to ``now + horizon``, earliest first."""
    length = cfg.slot_length.total_seconds()
    step = int((cfg.slot_length + cfg.buffer).total_seconds() // 60)
    buffer = cfg.buffer.total_seconds()
    earliest = now + cfg.min_notice.total_seconds()
    latest = now + cfg.horizon.total_seconds()
    blackout = set(cfg.blackout)
    today = datetime.fromtimestamp(now, tz).date()
    days = cfg.horizon.days + 2
    found: dict[float, Slot] = {}
    for d in range(-1, days):  # from yesterday: a window spanning midnight reaches today
        date = today + timedelta(days=d)
        if date in blackout:
            continue
        midnight = datetime(date.year, date.month, date.day)
        for window in cfg.availability:
            if date.weekday() not in window.days:
                continue
            end = window.to if window.to > window.from_ else window.to + 1440
            t = window.from_
            while t + length / 60 <= end:
                start = _local_start(midnight, t, tz)
                t += max(1, step)
                if start is None or start < earliest or start > latest:
                    continue
                slot = Slot(start, start + length)
                if any(slot.start < b_end + buffer and b_start < slot.end + buffer
                       for b_start, b_end in busy):
                    continue
                found.setdefault(start, slot)
    slots = sorted(found.values(), key=lambda s: s.start)
    return slots if limit is None else slots[:limit]


def slot_label(start: float, tz: ZoneInfo) -> str:
    """Quick-reply title (at most 20 characters): ``Tue 14 Jan 09:30``."""
    return datetime.fromtimestamp(start, tz).strftime("%a %d %b %H:%M")


def slot_when(start: float, tz: ZoneInfo) -> str:
    """Long form for the confirmation: ``Tuesday 14 January 2025, 09:30``."""
    return datetime.fromtimestamp(start, tz).strftime("%A %d %B %Y, %H:%M")


def tz_label(tz: ZoneInfo) -> str:
    return str(tz.key).replace("_", " ")


def slot_payload(start: float) -> str:
    return f"{PAYLOAD_PREFIX}{int(start)}"


def parse_payload(payload: str | None) -> float | None:
    if not payload or not payload.startswith(PAYLOAD_PREFIX):
        return None
    try:
        return float(int(payload[len(PAYLOAD_PREFIX):]))
    except ValueError:
        return None


def _ics_text(text: str) -> str:
    return (text.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
            .replace("\n", "\\n"))


def _ics_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y%m%dT%H%M%SZ")


def to_ics(bookings: Sequence[dict[str, object]], *, now: float) -> str:
    """An iCalendar (RFC 5545) file with one VEVENT per booking (times in UTC). Each booking
    needs ``id``, ``start_at``, ``end_at``, ``title``, ``status`` and optionally ``username``."""
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//instaset//bookings//EN",
             "CALSCALE:GREGORIAN"]
    for b in bookings:
        who = f" with @{b['username']}" if b.get("username") else ""
        lines += [
            "BEGIN:VEVENT",
            f"UID:booking-{b['id']}@instaset",
            f"DTSTAMP:{_ics_time(now)}",
            f"DTSTART:{_ics_time(float(b['start_at']))}",  # type: ignore[arg-type]
            f"DTEND:{_ics_time(float(b['end_at']))}",  # type: ignore[arg-type]
            f"SUMMARY:{_ics_text(str(b['title']) + who)}",
            "STATUS:" + ("CANCELLED" if b.get("status") == "cancelled" else "CONFIRMED"),
            "END:VEVENT",
        ]
    lines.append("END:VCALENDAR")
    return "\r\n".join(lines) + "\r\n"


class BookingDesk:
    """Offers and books slots for the accounts of one daemon (see the module docstring).
    ``on_booked(conn, account_id, contact_id, now)`` returns extra jobs to enqueue with a
    booking (the lead rescoring)."""

    def __init__(
        self, db: Database, config: Config, *, clock: Callable[[], float],
        on_booked: OnBooked | None = None,
    ) -> None:
        self.db = db
        self.cfg = config.booking
        self.tz = config.tzinfo
        self.clock = clock
        self.on_booked = on_booked

    async def slots_in(self, conn: aiosqlite.Connection, account_id: str, now: float,
                       limit: int | None) -> list[Slot]:
        end = now + (self.cfg.horizon + self.cfg.slot_length + self.cfg.buffer).total_seconds()
        busy = await aistore.busy_between(conn, account_id, now - 86400, end)
        return free_slots(self.cfg, self.tz, now, busy, limit=limit)

    def _offer(self, key: str, account_id: str, contact_id: str, text: str,
               slots: Sequence[Slot], workflow: str | None) -> Outgoing:
        return Outgoing(
            key=key, kind=SendKind.TEXT, account_id=account_id, contact_id=contact_id,
            text=text, workflow=workflow,
            quick_replies=tuple((slot_label(s.start, self.tz), slot_payload(s.start))
                                for s in slots),
        )

    async def offer_in(
        self, conn: aiosqlite.Connection, account_id: str, contact_id: str, key: str,
        intro: str | None, workflow: str | None, now: float,
    ) -> list[Outgoing]:
        """The message offering the next ``booking.offer`` free slots (none when there is no
        free slot: the caller tells the creator)."""
        slots = await self.slots_in(conn, account_id, now, self.cfg.offer)
        if not slots:
            log.warning("no free booking slot for %s in the next %s", contact_id,
                        self.cfg.horizon)
            return []
        text = intro or self.cfg.intro.format(timezone=tz_label(self.tz))
        return [self._offer(key, account_id, contact_id, text, slots, workflow)]

    async def book(self, job: Job) -> None:
        """The ``book_slot`` job: payload ``account_id``, ``contact_id``, ``start``."""
        p = job.payload
        acct, contact, start = str(p["account_id"]), str(p["contact_id"]), float(p["start"])
        now = self.clock()
        async with self.db.tx() as conn:
            if await aistore.booking_by_key(conn, job.key) is not None:
                await complete_in(conn, job, now)
                return
            free = {s.start: s for s in await self.slots_in(conn, acct, now, None)}
            slot = free.get(start)
            booked = slot is not None and await aistore.insert_booking(
                conn, key=job.key, account_id=acct, contact_id=contact, start_at=slot.start,
                end_at=slot.end, title=self.cfg.title, now=now,
            )
            jobs: list[NewJob] = []
            if booked:
                when = slot_when(start, self.tz)
                text = self.cfg.confirmation.format(when=when, timezone=tz_label(self.tz))
                outs = [Outgoing(key=f"send:{job.key}", kind=SendKind.TEXT, account_id=acct,
                                 contact_id=contact, text=text)]
                conv = await aistore.conversation_row(conn, acct, contact)
                who = f"@{conv['username']}" if conv is not None and conv["username"] else contact
                jobs.append(notify_job(job.key, acct, contact, "booking",
                                       f"{who} booked {self.cfg.title} on {when} "
                                       f"({tz_label(self.tz)})", now))
                if self.on_booked is not None:
                    jobs.extend(await self.on_booked(conn, acct, contact, now))
                log.info("%s booked %s", contact, when)
            else:
                nxt = await self.slots_in(conn, acct, now, self.cfg.offer)
                outs = [self._offer(f"send:{job.key}", acct, contact, self.cfg.unavailable,
                                    nxt, None)] if nxt else []
            if outs:
                await enqueue_sends(conn, outs, now)
            await enqueue_in(conn, jobs, now)
            await complete_in(conn, job, now)
