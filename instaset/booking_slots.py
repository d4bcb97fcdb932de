"""The pure part of booking: free slots, their labels, the quick-reply payloads of booking
taps, and iCalendar export. No I/O; :mod:`instaset.booking` re-exports every public name.

- :func:`free_slots` (pure) walks the local calendar day by day, so a slot at 09:00 stays at
  09:00 local time across a DST change; local times that do not exist (the spring-forward
  gap) are skipped, ambiguous ones (fall-back) take their first occurrence.
- Payloads: ``BOOK:<unix start>`` books a slot; ``BOOKING_CANCEL:<id>``,
  ``BOOKING_RESCHEDULE:<id>`` and ``BOOKING_MOVE:<id>:<unix start>`` are the contact's taps on
  a booking it has (:func:`parse_tap`, :func:`event_tap`).
- :func:`to_ics` writes one VEVENT per booking, its SEQUENCE bumped by every change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

from instaset.config import BookingConfig
from instaset.config_booking import window_minutes
from instaset.events import Event, EventKind, MessageEvent, PostbackEvent

PAYLOAD_PREFIX = "BOOK:"
CANCEL_PREFIX = "BOOKING_CANCEL:"  # + booking id
RESCHEDULE_PREFIX = "BOOKING_RESCHEDULE:"  # + booking id
MOVE_PREFIX = "BOOKING_MOVE:"  # + booking id + ":" + unix start
TAP_KIND = "booking_tap"
REMINDER_KIND = "booking_reminder"

MANAGE_TITLES = ("Reschedule", "Cancel")


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
    *, limit: int | None = None, until: float | None = None,
) -> list[Slot]:
    """Free slots from ``now + min_notice`` to ``now + horizon``, earliest first; with
    ``limit``, the first ``limit`` of them, and the walk stops at the first day past them (it
    runs in the job, on the daemon's one loop: a year of 1-minute slots took seconds); with
    ``until``, those that start by then (the walk stops at the first day past it)."""
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
            end = window.from_ + window_minutes(window)  # the rule the config checks
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
        # A later day's slots start at its midnight or after; 3 h below that is below any
        # DST shift: the slots before ``later`` are all found already.
        later = (datetime(date.year, date.month, date.day, tzinfo=tz)
                 + timedelta(days=1)).timestamp() - 3 * 3600
        if until is not None and later > until:
            break
        if limit is not None and len(found) >= limit and sum(
                start < later for start in found) >= limit:
            break
    slots = sorted(found.values(), key=lambda s: s.start)
    if until is not None:
        slots = [s for s in slots if s.start <= until]
    return slots if limit is None else slots[:limit]


def slot_label(start: float, tz: ZoneInfo) -> str:
    """Quick-reply title (at most 20 characters): ``Tue 14 Jan 09:30``."""
    return datetime.fromtimestamp(start, tz).strftime("%a %d %b %H:%M")


def slot_when(start: float, tz: ZoneInfo) -> str:
    """Long form for the confirmation: ``Tuesday 14 January 2025, 09:30``."""
    return datetime.fromtimestamp(start, tz).strftime("%A %d %B %Y, %H:%M")


def tz_label(tz: ZoneInfo) -> str:
    return str(tz.key).replace("_", " ")


def booking_link(template: str, contact_id: str) -> str:
    """The scheduling page's URL for one contact: ``{contact_id}`` replaced (URL-encoded),
    or, without that placeholder, ``utm_content=<contact id>`` added to the query."""
    cid = quote(contact_id, safe="")
    if "{contact_id}" in template:
        return template.replace("{contact_id}", cid)
    parts = urlsplit(template)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query = [(k, v) for k, v in query if k != "utm_content"] + [("utm_content", contact_id)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def slot_payload(start: float) -> str:
    return f"{PAYLOAD_PREFIX}{int(start)}"


_MAX_ID = 2**63 - 1  # SQLite's INTEGER
_MAX_START = 253402300799  # 9999-12-31 23:59:59 UTC, the last second a datetime holds


def _number(text: str, most: int) -> int | None:
    """``text`` as we write numbers in payloads (ASCII digits, no sign), at most ``most``;
    else None. A payload arrives from outside: a forged id beyond SQLite's INTEGER raised
    OverflowError in the tap's job (retried until dead), a start of 400 digits one in the
    event's own plan."""
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(most)):
        return None
    value = int(text)
    return value if value <= most else None


def parse_payload(payload: str | None) -> float | None:
    if not payload or not payload.startswith(PAYLOAD_PREFIX):
        return None
    start = _number(payload[len(PAYLOAD_PREFIX):], _MAX_START)
    return None if start is None else float(start)


# -- the contact's taps on a booking it has ----------------------------------------------------
@dataclass(frozen=True, slots=True)
class Tap:
    """A tap on "Cancel", "Reschedule" or one of the new times offered for a booking."""

    action: Literal["cancel", "reschedule", "move"]
    booking_id: int
    start: float | None = None  # the new time of a "move"


def move_payload(booking_id: int, start: float) -> str:
    return f"{MOVE_PREFIX}{booking_id}:{int(start)}"


def manage_replies(booking_id: int) -> tuple[tuple[str, str], ...]:
    """The quick replies that let the contact reschedule or cancel a booking."""
    return ((MANAGE_TITLES[0], f"{RESCHEDULE_PREFIX}{booking_id}"),
            (MANAGE_TITLES[1], f"{CANCEL_PREFIX}{booking_id}"))


def parse_tap(payload: str | None) -> Tap | None:
    """The tap ``payload`` stands for; None for anything else, a malformed or out-of-range
    id or time included (a payload we never sent)."""
    if not payload:
        return None
    if payload.startswith(CANCEL_PREFIX):
        ident = _number(payload[len(CANCEL_PREFIX):], _MAX_ID)
        return None if ident is None else Tap("cancel", ident)
    if payload.startswith(RESCHEDULE_PREFIX):
        ident = _number(payload[len(RESCHEDULE_PREFIX):], _MAX_ID)
        return None if ident is None else Tap("reschedule", ident)
    if payload.startswith(MOVE_PREFIX):
        ident_text, _, start_text = payload[len(MOVE_PREFIX):].partition(":")
        ident, start = _number(ident_text, _MAX_ID), _number(start_text, _MAX_START)
        if ident is not None and start is not None:
            return Tap("move", ident, float(start))
    return None


def event_tap(event: Event) -> Tap | None:
    """The booking tap an inbound quick reply or postback carries, if any."""
    if isinstance(event, MessageEvent) and event.kind == EventKind.MESSAGE:
        return parse_tap(event.quick_reply_payload)
    if isinstance(event, PostbackEvent):
        return parse_tap(event.payload)
    return None


# -- iCalendar ---------------------------------------------------------------------------------
def _ics_text(text: str) -> str:
    return (text.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
            .replace("\n", "\\n"))


def _ics_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y%m%dT%H%M%SZ")


def to_ics(bookings: Sequence[dict[str, object]], *, now: float) -> str:
    """An iCalendar (RFC 5545) file with one VEVENT per booking (times in UTC). Each booking
    needs ``id``, ``start_at``, ``end_at``, ``title``, ``status`` and optionally ``username``
    and ``sequence`` (bumped by every move or cancellation, so a calendar that imported an
    older version of the event replaces it; the UID never changes)."""
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
            f"SEQUENCE:{int(b.get('sequence') or 0)}",  # type: ignore[call-overload]
            f"SUMMARY:{_ics_text(str(b['title']) + who)}",
            "STATUS:" + ("CANCELLED" if b.get("status") == "cancelled" else "CONFIRMED"),
            "END:VEVENT",
        ]
    lines.append("END:VCALENDAR")
    return "\r\n".join(lines) + "\r\n"


def reminder_key(booking_id: int, start: float, offset: float) -> str:
    return f"remind:{booking_id}:{int(start)}:{int(offset)}"


__all__ = [
    "CANCEL_PREFIX", "MANAGE_TITLES", "MOVE_PREFIX", "PAYLOAD_PREFIX", "REMINDER_KIND",
    "RESCHEDULE_PREFIX", "TAP_KIND", "Slot", "Tap", "event_tap", "free_slots",
    "manage_replies", "move_payload", "parse_payload", "parse_tap", "reminder_key",
    "slot_label", "slot_payload", "slot_when", "to_ics", "tz_label",
]
