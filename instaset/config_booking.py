"""The ``booking:`` section of ``config.yaml`` (:class:`BookingConfig`), re-exported by
:mod:`instaset.config_models` and :mod:`instaset.config`."""

from __future__ import annotations

from datetime import date, timedelta

from pydantic import Field, ValidationInfo, field_validator

from instaset.config_checks import booking_link_problem
from instaset.config_types import ConfigModel as _Model
from instaset.config_types import Duration
from instaset.engine.model import Hours
from instaset.engine.values import check_not_blank, format_clock
from instaset.format_check import format_problem
from instaset.timefmt import format_duration


def _default_availability() -> list[Hours]:
    return [Hours.model_validate({"days": "mon-fri", "from": "09:00", "to": "17:00"})]


BOOKING_TEXT_PLACEHOLDERS: dict[str, tuple[str, ...]] = {
    "intro": ("timezone",),
    "confirmation": ("when", "timezone"),
    "unavailable": ("timezone",),
    "no_slots": ("title", "timezone"),
    "already_booked": ("title", "when", "timezone"),
    "reminder": ("title", "when", "timezone"),
    "cancelled": ("title", "when", "timezone"),
    "moved": ("title", "when", "timezone"),
    "reschedule_intro": ("title", "timezone"),
    "link_text": ("link",),
}
"""The names each booking message is filled with (``str.format`` in
:mod:`instaset.booking_desk` and :mod:`instaset.booking_lifecycle`): any other placeholder,
or a lone brace, would raise there at every send, so the config refuses it at load."""


MAX_BOOKING_HORIZON_DAYS = 366
"""The longest ``booking.horizon``: a year ahead, leap day included."""


class BookingConfig(_Model):
    """Appointment slots, in the top-level ``timezone``: weekly ``availability`` minus
    ``blackout`` dates and existing bookings, ``slot_length`` long, ``buffer`` apart, from
    ``min_notice`` ahead up to ``horizon`` ahead."""

    enabled: bool = False
    title: str = "Call"
    slot_length: Duration = timedelta(minutes=30)
    buffer: Duration = timedelta(0)
    min_notice: Duration = timedelta(hours=2)
    horizon: Duration = timedelta(days=14)
    offer: int = Field(default=5, ge=1, le=13)
    availability: list[Hours] = Field(default_factory=_default_availability)
    blackout: list[date] = Field(default_factory=list)
    intro: str = "Here are my next free times ({timezone}). Tap one to book it:"
    confirmation: str = "You're booked for {when} ({timezone}). See you then!"
    unavailable: str = "Sorry, that time is no longer free. Here are the next ones:"
    # When no slot is free at all (an offer, a tap on a time just taken, a reschedule); the
    # creator is notified too.
    no_slots: str = "Sorry, I have no free time to offer right now. I'll get back to you soon."
    # To a contact who has a booking ahead and taps a time or asks to book again (one live
    # booking per contact), with that booking's Reschedule/Cancel quick replies.
    already_booked: str = "You're already booked for your {title} on {when} ({timezone})."
    # Reminders before each booking, sent only while the 24 h messaging window is open.
    reminders: list[Duration] = Field(
        default_factory=lambda: [timedelta(hours=24), timedelta(hours=1)])
    reminder: str = "Reminder: your {title} is on {when} ({timezone}). See you then!"
    cancelled: str = "Your {title} on {when} ({timezone}) is cancelled."
    moved: str = "Your {title} is moved to {when} ({timezone}). See you then!"
    reschedule_intro: str = "Pick a new time for your {title} ({timezone}):"
    # A scheduling page (Calendly, Cal.com, ...) offered instead of slots when set. The
    # contact's id goes in it for attribution: where ``{contact_id}`` stands, else as
    # ``utm_content`` (both tools pass UTM parameters on to the booking).
    link: str | None = None
    link_text: str = "Pick a time that suits you here: {link}"

    @field_validator(*BOOKING_TEXT_PLACEHOLDERS)
    @classmethod
    def _known_placeholders(cls, value: str, info: ValidationInfo) -> str:
        # Each is sent as filled in, and Meta refuses a blank text (no offer, no confirmation).
        check_not_blank("", value, "write the message, or leave the key out for the default")
        problem = format_problem(value, BOOKING_TEXT_PLACEHOLDERS[str(info.field_name)])
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("link")
    @classmethod
    def _http_link(cls, value: str | None) -> str | None:
        problem = None if value is None else booking_link_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("horizon")
    @classmethod
    def _bookable_horizon(cls, value: timedelta) -> timedelta:
        # Each offer walks every day of the horizon in the job, on the daemon's one loop:
        # 100 years of 1-minute slots took 50 s.
        if value > timedelta(days=MAX_BOOKING_HORIZON_DAYS):
            raise ValueError(f"horizon must be at most {MAX_BOOKING_HORIZON_DAYS}d (a year):"
                             " how far ahead a contact can book")
        return value

    @field_validator("slot_length")
    @classmethod
    def _positive_length(cls, value: timedelta) -> timedelta:
        if value.total_seconds() < 60:
            raise ValueError("slot_length must be at least 1 minute")
        return value


def window_minutes(window: Hours) -> int:
    """How long a weekly window of ``availability`` is, in wall-clock minutes, as
    :func:`instaset.booking_slots.free_slots` walks it: ``from`` at or after ``to`` spans
    midnight, so ``"09:00"``-``"09:00"`` is a whole day."""
    return (window.to if window.to > window.from_ else window.to + 1440) - window.from_


def _offers_slots(booking: BookingConfig, offered_by: list[str]) -> str | None:
    """Who offers slots from ``booking`` (for the messages below), or None when nobody does:
    with ``link`` set the scheduling page is offered instead, and without ``enabled`` or a
    workflow's ``offer_booking`` step nothing offers; the slot settings are never read."""
    if booking.link is not None or not (booking.enabled or offered_by):
        return None
    return ("booking.enabled: true" if booking.enabled else "") + (
        (" and " if booking.enabled else "") + f"workflow {offered_by[0]!r}" if offered_by
        else "")


def availability_problem(booking: BookingConfig, offered_by: list[str]) -> str | None:
    """Why ``booking.availability`` cannot serve the offers that ``offered_by`` names (the
    workflows with an ``offer_booking`` step; ``booking.enabled`` lets the AI offer too), or
    None. Empty hours while slots are offered: every offer, tap and reschedule found no free
    time, and each one notified the creator. With ``link`` set the scheduling page is
    offered instead of slots, and unused hours are no mistake."""
    who = _offers_slots(booking, offered_by)
    if booking.availability or who is None:
        return None
    return (f"no weekly hours, so every booking offer (from {who}) finds no free time; "
            "add some, e.g. - {days: mon-fri, from: \"09:00\", to: \"17:00\"}, "
            "or set booking.link to your scheduling page")


def no_slot_problems(booking: BookingConfig, offered_by: list[str]) -> list[tuple[str, str]]:
    """``(key, why)`` for each setting under which :func:`instaset.booking_slots.free_slots`
    finds no slot whenever it runs, with no booking taken, while slots are offered (as
    :func:`availability_problem`); the key is the one to point at (a key the file sets).

    Only what is empty for certain is refused (the walk's own rules, in wall-clock minutes,
    so no time zone or DST change matters): a ``slot_length`` longer than every window
    (a window exactly as long holds one slot), and a ``min_notice`` not shorter than
    ``horizon`` (a slot starts at least the one and at most the other from now; equal
    leaves a single instant). Blackout dates end, and every weekday comes back."""
    who = _offers_slots(booking, offered_by)
    if who is None:
        return []
    found: list[tuple[str, str]] = []
    written = booking.model_fields_set
    slot = booking.slot_length
    if booking.availability:
        longest = max(booking.availability, key=window_minutes)
        most = window_minutes(longest)
        if slot.total_seconds() / 60 > most:  # free_slots: `t + length / 60 <= end`
            span = (f"the longest, {format_clock(longest.from_)}-{format_clock(longest.to)},"
                    f" is {format_duration(timedelta(minutes=most))}")
            fix = f"at most {format_duration(timedelta(minutes=most))}"
            if "slot_length" in written or "availability" not in written:
                found.append(("slot_length", (
                    f"{format_duration(slot)} is longer than every window of"
                    f" booking.availability ({span}), so every booking offer (from {who})"
                    f" finds no free time; make it {fix}"
                    + (", or widen the hours" if most < 24 * 60 else ""))))
            else:
                found.append(("availability", (
                    f"every window is shorter than booking.slot_length"
                    f" ({format_duration(slot)}; {span}), so every booking offer (from {who})"
                    " finds no free time; widen the hours, or set booking.slot_length to"
                    f" {fix}")))
    notice, horizon = booking.min_notice, booking.horizon
    if notice >= horizon:
        why = ("a slot must start at least min_notice and at most horizon from now, so every"
               f" booking offer (from {who}) finds no free time")
        # A min_notice of 0 cannot be made shorter: the horizon is the one to fix.
        if ("horizon" in written and "min_notice" not in written) or not notice:
            found.append(("horizon", (
                f"{format_duration(horizon)} is not longer than booking.min_notice"
                f" ({format_duration(notice)}): {why}; make it longer than"
                f" {format_duration(notice)}"
                + (", or booking.min_notice shorter" if notice else ""))))
        else:
            found.append(("min_notice", (
                f"{format_duration(notice)} is not shorter than booking.horizon"
                f" ({format_duration(horizon)}): {why}; make it shorter than"
                f" {format_duration(horizon)}, or booking.horizon longer")))
    return found
