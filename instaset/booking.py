"""Appointment booking: free slots from the weekly availability in the creator's time zone,
offered as quick replies, booked on tap, atomically; then cancelled, moved and reminded.

The feature is split by concept; this module installs it and re-exports every public name, so
``from instaset.booking import ...`` works for all of them:

- :mod:`instaset.booking_slots` (pure): :func:`free_slots`, slot labels, the quick-reply
  payloads of booking taps, iCalendar (:func:`to_ics`).
- :mod:`instaset.booking_desk`: offering free slots and booking one (the ``book_slot`` job),
  atomically.
- :mod:`instaset.booking_lifecycle`: :class:`BookingDesk` (cancel, reschedule, the
  ``booking_tap`` and ``booking_reminder`` jobs) and :class:`BookingTaps`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiosqlite

from instaset.automation import WorkflowAutomation
from instaset.booking_desk import OnBooked, SlotDesk
from instaset.booking_lifecycle import BookingDesk, BookingError, BookingTaps, Outcome, SlotTaken
from instaset.booking_slots import (
    CANCEL_PREFIX,
    MANAGE_TITLES,
    MOVE_PREFIX,
    PAYLOAD_PREFIX,
    REMINDER_KIND,
    RESCHEDULE_PREFIX,
    TAP_KIND,
    Slot,
    Tap,
    booking_link,
    event_tap,
    free_slots,
    manage_replies,
    move_payload,
    parse_payload,
    parse_tap,
    reminder_key,
    slot_label,
    slot_payload,
    slot_when,
    to_ics,
    tz_label,
)
from instaset.queue import NewJob

if TYPE_CHECKING:
    from instaset.daemon import Runtime


def rescore_job(account_id: str, contact_id: str, now: float) -> NewJob:
    """The AI feature's ``lead_score`` job, so the lead's stage follows a booking change."""
    return NewJob("lead_score", f"lead:booking:{contact_id}:{now}",
                  {"account_id": account_id, "contact_id": contact_id}, run_at=now)


def install(rt: Runtime) -> None:
    """Register ``booking_tap`` and ``booking_reminder``, schedule the reminders of bookings
    made before this ran (start hook), and route the contact's Reschedule/Cancel/new-time
    taps (:class:`BookingTaps` wraps the automation). Either install order with
    ``instaset.ai.feature`` works: the workflows' ``offer_booking`` hook is set here too."""

    async def rescore(_conn: aiosqlite.Connection, acct: str, contact: str, now: float
                      ) -> list[NewJob]:
        return [rescore_job(acct, contact, now)] if "lead_score" in rt.handlers else []

    desk = BookingDesk(rt.db, rt.config, clock=rt.clock, on_booked=rescore)
    rt.handlers[TAP_KIND] = desk.on_tap
    rt.handlers[REMINDER_KIND] = desk.remind

    async def on_start() -> None:
        await desk.schedule_reminders()

    rt.on_start.append(on_start)
    inner = rt.pipeline.automation
    if isinstance(inner, WorkflowAutomation) and inner.offer_booking is None:
        inner.offer_booking = desk.offer_in
    rt.pipeline.automation = BookingTaps(inner)


__all__ = [
    "CANCEL_PREFIX", "MANAGE_TITLES", "MOVE_PREFIX", "PAYLOAD_PREFIX", "REMINDER_KIND",
    "RESCHEDULE_PREFIX", "TAP_KIND", "BookingDesk", "BookingError", "BookingTaps", "OnBooked",
    "Outcome", "Slot", "SlotDesk", "SlotTaken", "Tap", "booking_link", "event_tap",
    "free_slots", "install",
    "manage_replies", "move_payload", "parse_payload", "parse_tap", "reminder_key",
    "rescore_job", "slot_label", "slot_payload", "slot_when", "to_ics", "tz_label",
]
