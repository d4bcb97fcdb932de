"""The ``booking:`` section of ``config.yaml`` (:class:`BookingConfig`), re-exported by
:mod:`instaset.config_models` and :mod:`instaset.config`."""

from __future__ import annotations

from datetime import date, timedelta

from pydantic import Field, ValidationInfo, field_validator

from instaset.config_checks import booking_link_problem
from instaset.config_types import ConfigModel as _Model
from instaset.config_types import Duration
from instaset.engine.model import Hours
from instaset.engine.values import check_not_blank
from instaset.format_check import format_problem


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


def availability_problem(booking: BookingConfig, offered_by: list[str]) -> str | None:
    """Why ``booking.availability`` cannot serve the offers that ``offered_by`` names (the
    workflows with an ``offer_booking`` step; ``booking.enabled`` lets the AI offer too), or
    None. Empty hours while slots are offered: every offer, tap and reschedule found no free
    time, and each one notified the creator. With ``link`` set the scheduling page is
    offered instead of slots, and unused hours are no mistake."""
    if booking.availability or booking.link is not None or not (
            booking.enabled or offered_by):
        return None
    who = ("booking.enabled: true" if booking.enabled else "") + (
        (" and " if booking.enabled else "") + f"workflow {offered_by[0]!r}" if offered_by
        else "")
    return (f"no weekly hours, so every booking offer (from {who}) finds no free time; "
            "add some, e.g. - {days: mon-fri, from: \"09:00\", to: \"17:00\"}, "
            "or set booking.link to your scheduling page")
