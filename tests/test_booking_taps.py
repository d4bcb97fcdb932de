"""The contact's side of booking, through the real sandbox and daemon on a frozen clock
(Monday 2025-06-02 06:00 UTC, slots daily 09:00-17:00 UTC): what a contact hears after a tap
on a slot, on Reschedule, Cancel or a new time, in the edge cases (the time was just taken,
nothing is free, the contact is booked already, automation is paused, the call is over)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from instaset.booking import slot_payload
from instaset.booking_slots import move_payload
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


# -- 3: no free slot at all: the contact hears so, the creator is told who ----------------------
WHO = f"@user_{IGSID}"
NO_SLOTS = "Sorry, I have no free time to offer right now. I'll get back to you soon."
NOTIFY_WORKFLOW = ({"name": "slots", "trigger": {"dm": {"keywords": ["book"]}},
                    "actions": [{"offer_booking": True}, {"notify": "@{username} is booking"}]},)


async def test_an_offer_with_no_free_slot_tells_the_contact_and_names_them(
        tmp_path: Path) -> None:
    sundays = [{"days": "sun", "from": "09:00", "to": "10:00"}]
    async with booking_env(tmp_path, NOTIFY_WORKFLOW, horizon="1d",
                           availability=sundays) as h:
        await h.dm(IGSID, "book")
        await h.settle()
        assert texts(h) == [NO_SLOTS]
        assert await notes(h) == [
            f"{WHO} wants to book, but no slot is free within booking.horizon (1d) (see"
            " booking.availability); they get booking.no_slots"]
        # the workflow goes on
        assert [n["text"] for n in await rows(
            h, "SELECT text FROM notifications WHERE kind = 'notify'")] == [f"{WHO} is booking"]


async def test_the_loser_of_the_race_for_the_last_slot_is_told(tmp_path: Path) -> None:
    one_slot = [{"days": "mon", "from": "09:00", "to": "09:30"}]
    async with booking_env(tmp_path, availability=one_slot) as h:
        await h.dm(OTHER, "hi")  # its profile (the username) is known before the tap
        await h.settle()
        await tap(h, "Mon 02 Jun 09:00", slot_payload(NINE))
        await tap(h, "Mon 02 Jun 09:00", slot_payload(NINE), who=OTHER)
        assert texts(h, OTHER) == [NO_SLOTS]
        assert (await notes(h))[1:] == [
            f"@user_{OTHER} tapped a time that is no longer free, and no slot is free within"
            " booking.horizon (1w) (see booking.availability)"]
        assert len(await rows(h, "SELECT * FROM bookings")) == 1


async def test_reschedule_with_no_other_free_time_tells_both(tmp_path: Path) -> None:
    one_slot = [{"days": "mon", "from": "09:00", "to": "09:30"}]
    async with booking_env(tmp_path, availability=one_slot) as h:
        await tap(h, "Mon 02 Jun 09:00", slot_payload(NINE))
        await tap(h, *quick(h)[0])  # Reschedule
        assert texts(h)[-1] == NO_SLOTS
        assert (await notes(h))[-1] == (
            f"{WHO} wants to reschedule Call on Monday 02 June 2025, 09:00 (UTC), but no slot"
            " is free within booking.horizon (1w) (see booking.availability); the booking"
            " stays")
        [booking] = await rows(h, "SELECT status, start_at FROM bookings")
        assert booking == {"status": "booked", "start_at": NINE}


async def test_a_new_time_taken_with_nothing_else_free_tells_both(tmp_path: Path) -> None:
    two_slots = [{"days": "mon", "from": "09:00", "to": "10:00"}]
    async with booking_env(tmp_path, availability=two_slots) as h:
        await tap(h, "Mon 02 Jun 09:00", slot_payload(NINE))
        await tap(h, *quick(h)[0])  # Reschedule: only 09:30 is offered
        [(title, move)] = quick(h)
        await tap(h, title, slot_payload(NINE + 1800), who=OTHER)  # takes 09:30
        await tap(h, title, move)
        assert texts(h)[-1] == NO_SLOTS
        assert (await notes(h))[-1] == (
            f"{WHO} tapped a new time that is no longer free for Call on Monday 02 June 2025,"
            " 09:00 (UTC), but no slot is free within booking.horizon (1w) (see"
            " booking.availability); the booking stays")
        [mine] = await rows(h, f"SELECT start_at FROM bookings WHERE contact_id = '{IGSID}'")
        assert mine["start_at"] == NINE


def test_no_slots_takes_title_and_timezone_at_load() -> None:
    with pytest.raises(ValidationError, match=r"unknown placeholder \{when\} \(this message can"
                       r" use \{title\}, \{timezone\}\)"):
        BookingConfig.model_validate({"no_slots": "Nothing before {when}"})
    cfg = BookingConfig.model_validate({"no_slots": "No {title} times ({timezone}) {{soon}}"})
    assert cfg.no_slots.format(title="Call", timezone="UTC") == "No Call times (UTC) {soon}"


# -- 4: one live booking per contact ------------------------------------------------------------
BOOK_WORKFLOW = ({"name": "slots", "trigger": {"dm": {"keywords": ["book"]}},
                  "actions": [{"offer_booking": True}]},)
ALREADY = "You're already booked for your Call on Monday 02 June 2025, 09:00 (UTC)."
BOOKED_NINE = "You're booked for Monday 02 June 2025, 09:00 (UTC). See you then!"


async def test_a_booked_contact_tapping_another_slot_is_told_instead_of_booked_twice(
        tmp_path: Path) -> None:
    async with booking_env(tmp_path, BOOK_WORKFLOW) as h:
        await h.dm(IGSID, "book")
        await h.settle()
        offered = quick(h)
        await tap(h, *offered[0])  # 09:00
        [booking] = await rows(h, "SELECT * FROM bookings")
        manage = quick(h)
        await tap(h, *offered[1])  # 09:30, from the same offer
        assert texts(h)[-1] == ALREADY
        assert quick(h) == manage == [("Reschedule", f"BOOKING_RESCHEDULE:{booking['id']}"),
                                      ("Cancel", f"BOOKING_CANCEL:{booking['id']}")]
        assert len(await rows(h, "SELECT * FROM bookings")) == 1
        assert len(await notes(h)) == 1  # the one "booked" notice

        # asking to book again: the same answer instead of an offer
        await h.dm(IGSID, "book")
        await h.settle()
        assert texts(h)[-1] == ALREADY and quick(h) == manage

        # the Reschedule button it carries moves the one booking
        await tap(h, *manage[0])
        await tap(h, *quick(h)[1])  # 10:00
        [moved] = await rows(h, "SELECT id, start_at FROM bookings")
        assert moved == {"id": booking["id"], "start_at": TEN}


async def test_a_second_tap_on_the_slot_the_contact_holds_confirms_it_again(
        tmp_path: Path) -> None:
    async with booking_env(tmp_path) as h:
        await tap(h, "Mon 02 Jun 09:00", slot_payload(NINE))
        await tap(h, "Mon 02 Jun 09:00", slot_payload(NINE))  # a new message: a new mid
        assert texts(h) == [BOOKED_NINE, BOOKED_NINE]
        assert [t for t, _ in quick(h)] == ["Reschedule", "Cancel"]
        assert len(await rows(h, "SELECT * FROM bookings")) == 1
        assert len(await notes(h)) == 1


async def test_after_the_call_the_contact_can_book_a_follow_up(tmp_path: Path) -> None:
    async with booking_env(tmp_path) as h:
        await tap(h, "Mon 02 Jun 09:00", slot_payload(NINE))
        h.clock.advance(3 * 3600 + 60)  # Mon 09:01: the call has started
        await tap(h, "Mon 02 Jun 11:00", slot_payload(NOW + 5 * 3600))
        assert texts(h)[-1] == "You're booked for Monday 02 June 2025, 11:00 (UTC). See you then!"
        assert [b["start_at"] for b in await rows(
            h, "SELECT start_at FROM bookings WHERE status = 'booked' ORDER BY start_at")] == [
            NINE, NOW + 5 * 3600]


async def test_a_new_time_for_a_cancelled_booking_does_not_book_a_second_one(
        tmp_path: Path) -> None:
    async with booking_env(tmp_path) as h:
        await tap(h, "Mon 02 Jun 09:00", slot_payload(NINE))
        reschedule, cancel = quick(h)
        await tap(h, *reschedule)
        old_offer = dict(quick(h))
        await tap(h, *cancel)
        await tap(h, "Mon 02 Jun 11:00", slot_payload(NOW + 5 * 3600))  # booked afresh
        await tap(h, "Mon 02 Jun 10:00", old_offer["Mon 02 Jun 10:00"])
        assert texts(h)[-1] == (
            "You're already booked for your Call on Monday 02 June 2025, 11:00 (UTC).")
        assert [b["start_at"] for b in await rows(
            h, "SELECT start_at FROM bookings WHERE status = 'booked'")] == [NOW + 5 * 3600]


def test_already_booked_takes_title_when_and_timezone_at_load() -> None:
    with pytest.raises(ValidationError, match=r"unknown placeholder \{username\} \(this message"
                       r" can use \{title\}, \{when\}, \{timezone\}\)"):
        BookingConfig.model_validate({"already_booked": "Hi {username}, see you {when}"})


# -- 5: taps while automation is paused: booked, and both are told -------------------------------
PAUSED = (f"; automation is paused for {WHO} (a human took over), but this answer to their tap"
          " went out")


async def test_taps_while_paused_take_effect_and_are_answered(tmp_path: Path) -> None:
    async with booking_env(tmp_path, BOOK_WORKFLOW) as h:
        await h.dm(IGSID, "book")
        await h.settle()
        offered = quick(h)
        await h.creator_types(IGSID, "hey, I'll handle this myself")  # pauses automation
        await h.settle()
        [conv] = await rows(h, f"SELECT paused_until FROM conversations WHERE contact_id"
                               f" = '{IGSID}'")
        assert conv["paused_until"] > NOW

        await tap(h, *offered[0])  # Mon 09:00
        [booking] = await rows(h, "SELECT id, start_at, status FROM bookings")
        assert booking["start_at"] == NINE
        assert texts(h)[-1] == BOOKED_NINE
        assert [t for t, _ in quick(h)] == ["Reschedule", "Cancel"]
        assert (await notes(h))[-1] == (
            f"{WHO} booked Call on Monday 02 June 2025, 09:00 (UTC){PAUSED}")

        await tap(h, *quick(h)[0])  # Reschedule
        assert texts(h)[-1] == "Pick a new time for your Call (UTC):"
        await tap(h, *quick(h)[1])  # Mon 10:00
        assert texts(h)[-1] == (
            "Your Call is moved to Monday 02 June 2025, 10:00 (UTC). See you then!")
        assert (await notes(h))[-1] == (
            f"{WHO} moved Call from Monday 02 June 2025, 09:00 to Monday 02 June 2025, 10:00"
            f" (UTC){PAUSED}")

        await tap(h, *quick(h)[1])  # Cancel
        assert texts(h)[-1] == "Your Call on Monday 02 June 2025, 10:00 (UTC) is cancelled."
        assert (await notes(h))[-1] == (
            f"{WHO} cancelled Call on Monday 02 June 2025, 10:00 (UTC){PAUSED}")
        assert await rows(h, "SELECT state, reason FROM sends WHERE state != 'sent'") == []

        # everything else stays paused: a message is not answered by the workflow
        sent = len(texts(h))
        await h.dm(IGSID, "book")
        await h.settle()
        assert len(texts(h)) == sent


async def test_the_creator_is_told_when_the_contact_could_not_be_told(tmp_path: Path) -> None:
    async with booking_env(tmp_path) as h:
        wednesday = NOW + 2 * 86400 + 3 * 3600
        await h.sandbox.user_sends_dm(IGSID, "Wed 04 Jun 09:00",
                                      quick_reply={"payload": slot_payload(wednesday)})
        h.clock.advance(25 * 3600)  # the daemon only gets to the tap 25 h later
        await h.settle()
        [booking] = await rows(h, "SELECT start_at FROM bookings")
        assert booking["start_at"] == wednesday
        assert texts(h) == []
        # (named by the id: a new contact's profile is looked up after the tap's booking)
        assert (await notes(h)) == [
            f"{IGSID} booked Call on Wednesday 04 June 2025, 09:00 (UTC); {IGSID} could not be"
            " told: last message from this person was 25.0 h ago; the limit is 24 h"]


# -- 8: a booking that has started cannot be cancelled or moved by a tap ---------------------------
async def test_taps_on_a_booking_that_took_place_change_nothing(tmp_path: Path) -> None:
    async with booking_env(tmp_path) as h:
        await tap(h, "Mon 02 Jun 09:00", slot_payload(NINE))
        reschedule, cancel = quick(h)
        await tap(h, *reschedule)
        new_time = quick(h)[2]  # Mon 10:30
        sent = len(texts(h))
        [lead] = await rows(h, "SELECT stage FROM leads")
        assert lead["stage"] == "booked"

        h.clock.advance(5 * 3600)  # Mon 11:00: the call is over
        await h.dm(IGSID, "thanks for the call!")
        await h.settle()
        for button in (cancel, reschedule, new_time, cancel):
            await tap(h, *button)
        [booking] = await rows(h, "SELECT status, start_at, sequence FROM bookings")
        assert booking == {"status": "booked", "start_at": NINE, "sequence": 0}
        assert len(texts(h)) == sent  # no answer to the contact
        [lead] = await rows(h, "SELECT stage FROM leads")
        assert lead["stage"] == "booked"
        on = "Call on Monday 02 June 2025, 09:00 (UTC), which has already started: nothing changed"
        assert (await notes(h))[1:] == [f"{WHO} tapped Cancel on {on}",
                                        f"{WHO} tapped Reschedule on {on}",
                                        f"{WHO} tapped a new time on {on}"]  # once each


# -- a booking moved back to a time it had before: every move is told ------------------------
async def test_every_move_is_told_even_back_to_an_earlier_time(tmp_path: Path) -> None:
    """09:00 -> 09:30 -> 09:00 -> 09:30: three moves, three notices, the last one naming the
    time the booking is at (the notice was keyed by the new time, so the third was lost)."""
    half = NINE + 1800
    async with booking_env(tmp_path) as h:
        await tap(h, "Mon 02 Jun 09:00", slot_payload(NINE))
        [booking] = await rows(h, "SELECT id FROM bookings")
        for start in (half, NINE, half):
            await tap(h, "new time", move_payload(booking["id"], start))
        [now_at] = await rows(h, "SELECT start_at FROM bookings")
        assert now_at["start_at"] == half
        moved = [n for n in await notes(h) if " moved " in n]
        assert moved == [
            f"{WHO} moved Call from Monday 02 June 2025, {a} to Monday 02 June 2025, {b} (UTC)"
            for a, b in (("09:00", "09:30"), ("09:30", "09:00"), ("09:00", "09:30"))]
        # a second tap on the time the booking is at changes nothing and tells nothing
        await tap(h, "new time", move_payload(booking["id"], half))
        assert [n for n in await notes(h) if " moved " in n] == moved
