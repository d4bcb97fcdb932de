"""The contact's side of booking, through the real sandbox and daemon on a frozen clock
(Monday 2025-06-02 06:00 UTC, slots daily 09:00-17:00 UTC): what a contact hears after a tap
on a slot, on Reschedule, Cancel or a new time, in the edge cases (the time was just taken,
nothing is free, the contact is booked already, automation is paused, the call is over)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from instaset.booking import slot_payload
from instaset.config import BookingConfig
from tests.sending_harness import Harness
from tests.test_booking_lifecycle import IGSID, NOW, message, rows
from tests.test_booking_reminders import booking_env

OTHER = "5550001112229999"
NINE, TEN = NOW + 3 * 3600, NOW + 4 * 3600  # Monday 09:00 and 10:00 UTC


def texts(h: Harness, who: str = IGSID) -> list[str]:
    return [str(message(r).get("text")) for r in h.graph_sends(who)]


def quick(h: Harness, who: str = IGSID) -> list[tuple[str, str]]:
    msg = message(h.graph_sends(who)[-1])
    return [(q["title"], q["payload"]) for q in msg.get("quick_replies", [])]


async def tap(h: Harness, title: str, payload: str, who: str = IGSID) -> None:
    await h.sandbox.user_sends_dm(who, title, quick_reply={"payload": payload})
    await h.settle()


async def notes(h: Harness) -> list[str]:
    return [n["text"] for n in await rows(
        h, "SELECT text FROM notifications WHERE kind = 'booking' ORDER BY id")]


# -- 7: the `unavailable` text is filled in like the others -------------------------------------
UNAVAILABLE = "Sorry, taken. Next free times ({timezone}):"


async def test_unavailable_is_filled_in_after_a_lost_race_for_a_slot(tmp_path: Path) -> None:
    async with booking_env(tmp_path, unavailable=UNAVAILABLE) as h:
        await tap(h, "Mon 02 Jun 09:00", slot_payload(NINE))
        await tap(h, "Mon 02 Jun 09:00", slot_payload(NINE), who=OTHER)
        assert texts(h, OTHER) == ["Sorry, taken. Next free times (UTC):"]
        assert [t for t, _ in quick(h, OTHER)] == [
            "Mon 02 Jun 09:30", "Mon 02 Jun 10:00", "Mon 02 Jun 10:30"]


async def test_unavailable_is_filled_in_when_a_new_time_was_taken(tmp_path: Path) -> None:
    async with booking_env(tmp_path, unavailable=UNAVAILABLE) as h:
        await tap(h, "Mon 02 Jun 09:00", slot_payload(NINE))
        await tap(h, *quick(h)[0])  # Reschedule
        offered: dict[str, str] = dict(quick(h))
        await tap(h, "Mon 02 Jun 10:00", slot_payload(TEN), who=OTHER)  # takes 10:00
        await tap(h, "Mon 02 Jun 10:00", offered["Mon 02 Jun 10:00"])
        assert texts(h)[-1] == "Sorry, taken. Next free times (UTC):"
        assert [t for t, _ in quick(h)] == [
            "Mon 02 Jun 09:30", "Mon 02 Jun 10:30", "Mon 02 Jun 11:00"]
        [mine] = await rows(h, f"SELECT start_at FROM bookings WHERE contact_id = '{IGSID}'")
        assert mine["start_at"] == NINE  # it stays where it was



def test_unavailable_takes_only_timezone_at_load() -> None:
    with pytest.raises(ValidationError, match=r"unknown placeholder \{when\} \(this message can"
                       r" use \{timezone\}\)"):
        BookingConfig.model_validate({"unavailable": "{when} is taken ({timezone})"})
    assert BookingConfig.model_validate({"unavailable": "{{sorry}} ({timezone})"})
