"""Booking reminders after downtime and after a change of ``booking.reminders``, through the
real sandbox and daemon on a frozen clock: one reminder per booking at the latest moment due,
and none for an offset the creator removed."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from instaset.booking import REMINDER_KIND, BookingDesk, slot_payload
from tests.sending_harness import Clock, Harness, open_harness
from tests.test_booking_lifecycle import BOOKING as ANY_TIME
from tests.test_booking_lifecycle import IGSID, NOW, rows, tap, texts

BOOKING = {**ANY_TIME, "availability": [{"days": "daily", "from": "09:00", "to": "17:00"}]}


@contextlib.asynccontextmanager
async def booking_env(tmp_path: Path, workflows: tuple[dict[str, Any], ...] = (),
                      **booking: Any) -> AsyncIterator[Harness]:
    """The daemon as in production (its features installed by ``runtime()``) on a frozen clock
    at Monday 2025-06-02 06:00 UTC; slots daily 09:00-17:00 UTC, 30 min long, 3 offered, with
    ``booking`` overriding keys of that section."""
    async with open_harness(tmp_path, clock=Clock(NOW, frozen=True), workflows=workflows,
                            extra={"timezone": "UTC",
                                   "booking": {**BOOKING, **booking}}) as h:
        yield h


def reminders_sent(h: Harness) -> list[str]:
    return [t for t in texts(h) if t.startswith("Reminder:")]


async def test_after_downtime_only_the_latest_reminder_due_goes_out(tmp_path: Path) -> None:
    async with booking_env(tmp_path) as h:
        tue9 = NOW + 86400 + 3 * 3600  # Tue 09:00 UTC: reminders due Mon 09:00 and Tue 08:00
        await tap(h, "Tue 03 Jun 09:00", slot_payload(tue9))
        [booking] = await rows(h, "SELECT * FROM bookings")
        h.clock.advance(2 * 3600 + 45 * 60)  # Mon 08:45: the contact writes again
        await h.dm(IGSID, "thanks!")
        await h.settle()  # the 24 h reminder (Mon 09:00) is not due yet
        assert await rows(h, "SELECT * FROM booking_reminders") == []
        # the daemon is down from now until Tue 08:30, 30 min before the call (the window
        # opened by Monday's message is still open), and starts again
        h.clock.advance(23 * 3600 + 45 * 60)
        await h.rt.start()
        await h.settle()
        assert reminders_sent(h) == [
            "Reminder: your Call is on Tuesday 03 June 2025, 09:00 (UTC). See you then!"]
        bid = booking["id"]
        assert await rows(h, "SELECT key, outcome, reason FROM booking_reminders"
                             " ORDER BY offset_seconds DESC") == [
            {"key": f"remind:{bid}:{int(tue9)}:86400", "outcome": "skipped", "reason": "late"},
            {"key": f"remind:{bid}:{int(tue9)}:3600", "outcome": "sent", "reason": None}]


async def test_each_reminder_on_time_is_sent(tmp_path: Path) -> None:
    """Without downtime both reminders go out, each at its own moment (the lateness rule
    only drops a reminder whose moment a later one's has passed too)."""
    async with booking_env(tmp_path) as h:
        tue9 = NOW + 86400 + 3 * 3600
        await tap(h, "Tue 03 Jun 09:00", slot_payload(tue9))
        h.clock.advance(2 * 3600 + 45 * 60)  # Mon 08:45
        await h.dm(IGSID, "thanks!")
        await h.settle(advance_up_to=900)  # Mon 09:00: the 24 h reminder
        assert len(reminders_sent(h)) == 1
        h.clock.advance(22 * 3600)  # Tue 07:00: the contact writes again
        await h.dm(IGSID, "see you soon")
        await h.settle(advance_up_to=3600)  # Tue 08:00: the 1 h reminder
        assert len(reminders_sent(h)) == 2
        assert [r["outcome"] for r in await rows(h, "SELECT outcome FROM booking_reminders")
                ] == ["sent", "sent"]


async def restart_with_reminders(h: Harness, reminders: list[timedelta]) -> None:
    """The creator edits ``booking.reminders`` and restarts: the new config's handler runs the
    queued reminder jobs, and its start hook schedules the new offsets."""
    cfg = h.rt.config.model_copy(update={"booking": h.rt.config.booking.model_copy(
        update={"reminders": reminders})})
    desk = BookingDesk(h.rt.db, cfg, clock=h.rt.clock)
    h.rt.handlers[REMINDER_KIND] = desk.remind
    await desk.schedule_reminders()


async def test_reminders_emptied_after_booking_stop_the_queued_ones(tmp_path: Path) -> None:
    async with booking_env(tmp_path) as h:
        ten = NOW + 4 * 3600  # Mon 10:00: its 1 h reminder is queued for 09:00
        await tap(h, "Mon 02 Jun 10:00", slot_payload(ten))
        assert len(await rows(h, "SELECT * FROM jobs WHERE kind = 'booking_reminder'")) == 1
        await restart_with_reminders(h, [])
        await h.settle(advance_up_to=86400)
        assert reminders_sent(h) == []
        assert await rows(h, "SELECT offset_seconds, outcome, reason FROM booking_reminders"
                          ) == [{"offset_seconds": 3600, "outcome": "skipped",
                                 "reason": "unconfigured"}]


async def test_a_removed_offset_stops_and_a_new_one_is_sent(tmp_path: Path) -> None:
    async with booking_env(tmp_path) as h:
        ten = NOW + 4 * 3600
        await tap(h, "Mon 02 Jun 10:00", slot_payload(ten))
        await restart_with_reminders(h, [timedelta(minutes=30)])  # 1 h -> 30 min
        await h.settle(advance_up_to=86400)
        assert reminders_sent(h) == [
            "Reminder: your Call is on Monday 02 June 2025, 10:00 (UTC). See you then!"]
        assert await rows(h, "SELECT offset_seconds, outcome, reason, created_at"
                             " FROM booking_reminders ORDER BY created_at") == [
            {"offset_seconds": 3600, "outcome": "skipped", "reason": "unconfigured",
             "created_at": ten - 3600},
            {"offset_seconds": 1800, "outcome": "sent", "reason": None,
             "created_at": ten - 1800}]
