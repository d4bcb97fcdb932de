"""Booking lifecycle: cancel and reschedule from the CLI (real database), a race of two moves
onto one slot, the contact's own taps (Reschedule, a new time, Cancel) through the real
sandbox and daemon, and reminders that go out once inside the 24 h window and never outside
it or for a booking that moved or was cancelled."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import instaset.cli.cmd_bookings  # noqa: F401  (registers `bookings` until cli/__init__ does)
from instaset.ai.feature import install_feature
from instaset.booking import (
    BookingDesk,
    SlotTaken,
    install,
    move_payload,
    parse_tap,
    slot_payload,
)
from instaset.cli import app
from instaset.config import Config, load_config
from instaset.outbox import Outgoing
from instaset.sandbox import Recorded
from instaset.store import ai as aistore
from instaset.store import booking as bstore
from instaset.store import history
from instaset.store.db import Database, open_database
from instaset.store.jobs import Job
from tests.sending_harness import Clock, Harness, open_harness
from tests.test_booking import days_walked

ACCT = "17841400000000001"
IGSID = "5550001112223334"


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M")


# -- the CLI against a real database -------------------------------------------------------------
# The CLI runs on the wall clock: bookings sit on the 30 min grid a day or more ahead, inside
# the horizon, so the assertions do not depend on when the test runs.
BOOKING = {"enabled": True, "min_notice": 0, "horizon": "7d", "slot_length": "30m",
           "availability": [{"days": "daily", "from": "00:00", "to": "24:00"}], "offer": 3}


def write_config(tmp_path: Path) -> tuple[Path, Config]:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"storage": {"path": str(tmp_path / "cli.db")},
                                    "timezone": "UTC", "booking": BOOKING}))
    return path, load_config(path, env={})


BASE = math.ceil(time.time() / 3600) * 3600 + 86400  # a whole hour, a day or more ahead


async def seed(cfg: Config, *, inbound_ago: float, starts: dict[str, float]) -> dict[str, int]:
    """Contacts (key of ``starts``) who last wrote ``inbound_ago`` seconds ago, each with a
    booking at its start. Returns contact -> booking id."""
    db = await open_database(cfg.storage.db_path())
    now = time.time()
    try:
        await history.upsert_account(db, ACCT, username="creator", now=now)
        ids: dict[str, int] = {}
        async with db.tx() as conn:
            for contact, start in starts.items():
                await history.touch_contact(conn, ACCT, contact, now, username=f"u_{contact}")
                await history.update_conversation(conn, ACCT, contact, now,
                                                  inbound_at=now - inbound_ago)
                await aistore.insert_booking(conn, key=f"k:{contact}", account_id=ACCT,
                                             contact_id=contact, start_at=start,
                                             end_at=start + 1800, title="Call", now=now)
                row = await aistore.booking_by_key(conn, f"k:{contact}")
                assert row is not None
                ids[contact] = int(row["id"])
        return ids
    finally:
        await db.close()


async def query(cfg: Config, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    db = await open_database(cfg.storage.db_path())
    try:
        return [dict(r) for r in await db.fetchall(sql, params)]
    finally:
        await db.close()


def cli(path: Path, *args: str) -> Any:
    return CliRunner().invoke(app, ["--config", str(path), "bookings", *args])


def test_cancel_frees_the_slot_and_tells_the_contact(tmp_path: Path) -> None:
    path, cfg = write_config(tmp_path)
    ids = asyncio.run(seed(cfg, inbound_ago=3600, starts={"c1": BASE}))
    bid = ids["c1"]

    res = cli(path, "cancel", str(bid))  # no terminal, no --yes
    assert res.exit_code == 1 and "without confirmation; pass --yes" in res.output
    res = cli(path, "cancel", str(bid), "--yes", "--reason", "I'm ill, sorry!")
    assert res.exit_code == 0, res.output
    assert f"cancelled booking {bid} (Call with @u_c1 on " in res.stdout
    assert "@u_c1 will be told" in res.stdout

    [b] = asyncio.run(query(cfg, "SELECT * FROM bookings"))
    assert (b["status"], b["cancelled_by"], b["cancel_reason"], b["sequence"]) == (
        "cancelled", "creator", "I'm ill, sorry!", 1)
    [send] = asyncio.run(query(cfg, "SELECT * FROM sends"))
    out = Outgoing.from_json(send["body"])
    assert send["key"] == f"send:booking:{bid}:cancel" and out.contact_id == "c1"
    assert out.text == (f"Your Call on {datetime.fromtimestamp(BASE, UTC):%A %d %B %Y, %H:%M}"
                        " (UTC) is cancelled. I'm ill, sorry!")
    jobs = asyncio.run(query(cfg, "SELECT kind, key FROM jobs ORDER BY id"))
    assert [j["kind"] for j in jobs] == ["send", "lead_score"]
    # the creator made the change: no notification for the creator
    assert not any(j["kind"] == "notify" for j in jobs)

    res = cli(path, "cancel", str(bid), "--yes")
    assert res.exit_code == 1 and f"booking {bid} is cancelled already" in res.output
    res = cli(path, "cancel", "999", "--yes")
    assert res.exit_code == 1 and "no booking 999" in res.output
    # the slot is free again: another booking can take it
    assert asyncio.run(seed(cfg, inbound_ago=60, starts={"c2": BASE}))["c2"] != bid
    assert len(asyncio.run(query(cfg, "SELECT * FROM bookings WHERE status = 'booked'"))) == 1


def test_cancel_outside_the_window_or_without_notify_sends_nothing(tmp_path: Path) -> None:
    path, cfg = write_config(tmp_path)
    ids = asyncio.run(seed(cfg, inbound_ago=3 * 86400, starts={"c1": BASE, "c2": BASE + 3600}))
    res = cli(path, "cancel", str(ids["c1"]), "--yes")
    assert res.exit_code == 0, res.output
    assert ("@u_c1 could not be told: last message from this person was 3.0 days ago;"
            " the limit is 24 h") in res.stdout
    res = cli(path, "cancel", str(ids["c2"]), "--yes", "--no-notify")
    assert res.exit_code == 0 and "@u_c2 was not told (--no-notify)" in res.stdout
    assert asyncio.run(query(cfg, "SELECT * FROM sends")) == []
    statuses = asyncio.run(query(cfg, "SELECT status FROM bookings"))
    assert [s["status"] for s in statuses] == ["cancelled", "cancelled"]


def test_reschedule_to_a_free_slot_and_the_ics_follows(tmp_path: Path) -> None:
    path, cfg = write_config(tmp_path)
    ids = asyncio.run(seed(cfg, inbound_ago=600, starts={"c1": BASE, "c2": BASE + 7200}))
    bid = ids["c1"]
    new = BASE + 3600

    res = cli(path, "reschedule", str(bid), "--to", iso(BASE + 7200))
    assert res.exit_code == 1 and f"is booked already (booking {ids['c2']})" in res.output
    res = cli(path, "reschedule", str(bid), "--to", iso(BASE + 600))  # off the 30 min grid
    assert res.exit_code == 1 and "is not a free slot" in res.output
    res = cli(path, "reschedule", str(bid))
    assert res.exit_code == 1 and "give either --to ISO_DATETIME or --offer" in res.output
    res = cli(path, "reschedule", str(bid), "--to", "next tuesday")
    assert res.exit_code == 1 and "is not an ISO date-time" in res.output

    res = cli(path, "reschedule", str(bid), "--to", iso(new))  # local time (UTC here)
    assert res.exit_code == 0, res.output
    assert f"moved booking {bid} to " in res.stdout and "@u_c1 will be told" in res.stdout
    [b] = asyncio.run(query(cfg, "SELECT * FROM bookings WHERE id = ?", (bid,)))
    assert (b["start_at"], b["end_at"], b["sequence"], b["status"]) == (
        new, new + 1800, 1, "booked")
    [send] = asyncio.run(query(cfg, "SELECT * FROM sends"))
    out = Outgoing.from_json(send["body"])
    assert send["key"] == f"send:booking:{bid}:move:1"
    assert str(out.text).startswith("Your Call is moved to ")
    assert [t for t, _ in out.quick_replies] == ["Reschedule", "Cancel"]
    reminders = asyncio.run(query(cfg, "SELECT key, run_at FROM jobs WHERE kind ="
                                       " 'booking_reminder' ORDER BY run_at"))
    assert [(r["key"], r["run_at"]) for r in reminders] == [
        (f"remind:{bid}:{int(new)}:86400", new - 86400),
        (f"remind:{bid}:{int(new)}:3600", new - 3600)]

    ics = cli(path, "--ics").stdout
    events = {e["UID"]: e for e in parse_ics(ics)}
    assert events[f"booking-{bid}@instaset"]["SEQUENCE"] == "1"
    assert events[f"booking-{bid}@instaset"]["DTSTART"] == (
        datetime.fromtimestamp(new, UTC).strftime("%Y%m%dT%H%M%SZ"))
    assert cli(path, "cancel", str(bid), "--yes", "--no-notify").exit_code == 0
    event = {e["UID"]: e for e in parse_ics(cli(path, "--ics").stdout)}[
        f"booking-{bid}@instaset"]
    assert (event["STATUS"], event["SEQUENCE"]) == ("CANCELLED", "2")


def test_reschedule_offer_sends_new_times_as_quick_replies(tmp_path: Path) -> None:
    path, cfg = write_config(tmp_path)
    ids = asyncio.run(seed(cfg, inbound_ago=600, starts={"c1": BASE}))
    res = cli(path, "reschedule", str(ids["c1"]), "--offer")
    assert res.exit_code == 0, res.output
    assert "sent @u_c1 the next free times" in res.stdout
    [send] = asyncio.run(query(cfg, "SELECT * FROM sends"))
    out = Outgoing.from_json(send["body"])
    assert out.text == "Pick a new time for your Call (UTC):"
    taps = [parse_tap(p) for _, p in out.quick_replies]
    assert len(taps) == 3 and all(t is not None and t.action == "move"
                                  and t.booking_id == ids["c1"] for t in taps)
    assert BASE not in [t.start for t in taps if t is not None]  # not its own time

    far = asyncio.run(seed(cfg, inbound_ago=2 * 86400, starts={"c2": BASE + 7200}))
    res = cli(path, "reschedule", str(far["c2"]), "--offer")
    assert res.exit_code == 1
    assert "cannot offer new times to @u_c2: last message from this person was 2.0 days" in (
        res.output)


def test_list_json_shape_is_unchanged(tmp_path: Path) -> None:
    path, cfg = write_config(tmp_path)
    asyncio.run(seed(cfg, inbound_ago=60, starts={"c1": BASE}))
    res = cli(path, "--json")
    assert res.exit_code == 0, res.output
    [b] = json.loads(res.stdout)
    assert list(b) == ["id", "account_id", "contact_id", "username", "title", "status",
                       "start", "end", "local_start", "timezone", "created_at"]
    assert (b["start"], b["timezone"], b["status"]) == (
        datetime.fromtimestamp(BASE, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "UTC", "booked")
    assert f"#{b['id']:<4}" in cli(path).stdout


def parse_ics(text: str) -> list[dict[str, str]]:
    events: list[dict[str, str]] = []
    for line in text.splitlines():
        if line == "BEGIN:VEVENT":
            events.append({})
        elif events and ":" in line and line != "END:VEVENT":
            key, value = line.split(":", 1)
            events[-1][key] = value
    return events


# -- races and the unique index ---------------------------------------------------------------
NOW = datetime(2025, 6, 2, 6, 0, tzinfo=UTC).timestamp()  # Monday


def db_config(tmp_path: Path) -> Config:
    return Config.model_validate({
        "storage": {"path": str(tmp_path / "race.db")}, "timezone": "UTC",
        "booking": {**BOOKING, "availability": [{"days": "daily", "from": "09:00",
                                                  "to": "17:00"}]},
    })


async def test_two_moves_onto_one_slot_exactly_one_wins(tmp_path: Path) -> None:
    cfg = db_config(tmp_path)
    one = await open_database(cfg.storage.db_path())
    two = await open_database(cfg.storage.db_path())  # a second process's connection
    try:
        await history.upsert_account(one, ACCT, username="creator", now=NOW)
        async with one.tx() as conn:
            for i, c in enumerate(("a", "b")):
                await history.touch_contact(conn, ACCT, c, NOW)
                await history.update_conversation(conn, ACCT, c, NOW, inbound_at=NOW - 60)
                await aistore.insert_booking(conn, key=c, account_id=ACCT, contact_id=c,
                                             start_at=NOW + 3 * 3600 + i * 3600,
                                             end_at=NOW + 3 * 3600 + i * 3600 + 1800,
                                             title="Call", now=NOW)
        a, b = [r["id"] for r in await one.fetchall("SELECT id FROM bookings ORDER BY id")]
        target = NOW + 6 * 3600
        results = await asyncio.gather(
            BookingDesk(one, cfg, clock=lambda: NOW).reschedule(a, target),
            BookingDesk(two, cfg, clock=lambda: NOW).reschedule(b, target),
            return_exceptions=True)
        won = [r for r in results if not isinstance(r, BaseException)]
        lost = [r for r in results if isinstance(r, BaseException)]
        assert len(won) == 1 and len(lost) == 1 and isinstance(lost[0], SlotTaken)
        assert "is booked already" in str(lost[0])
        at_target = await one.fetchall("SELECT id FROM bookings WHERE start_at = ?", (target,))
        assert [r["id"] for r in at_target] == [won[0].booking_id]
        # the loser did not move, and only the winner's change left a message
        loser = b if won[0].booking_id == a else a
        row = await one.fetchone("SELECT start_at, sequence FROM bookings WHERE id = ?",
                                 (loser,))
        assert row is not None and row["start_at"] != target and row["sequence"] == 0
        assert len(await one.fetchall("SELECT * FROM sends")) == 1

        # the partial unique index is the guarantee, not the check before it
        async with one.tx() as conn:
            assert not await bstore.move_booking(conn, loser, target, target + 1800, NOW)
            assert await bstore.cancel_booking(conn, won[0].booking_id, by="creator",
                                               reason=None, now=NOW)
            assert await bstore.move_booking(conn, loser, target, target + 1800, NOW)
    finally:
        await one.close()
        await two.close()


async def test_taps_on_someone_elses_booking_do_nothing(tmp_path: Path, db: Database) -> None:
    cfg = db_config(tmp_path)
    await history.upsert_account(db, ACCT, username="creator", now=NOW)
    async with db.tx() as conn:
        await history.touch_contact(conn, ACCT, "owner", NOW)
        await aistore.insert_booking(conn, key="k", account_id=ACCT, contact_id="owner",
                                     start_at=NOW + 4 * 3600, end_at=NOW + 4 * 3600 + 1800,
                                     title="Call", now=NOW)
    desk = BookingDesk(db, cfg, clock=lambda: NOW)
    assert await desk.schedule_reminders() == 1  # a booking from before reminders existed
    reminders = await db.fetchall("SELECT key FROM jobs WHERE kind = 'booking_reminder'")
    assert [r["key"] for r in reminders] == [f"remind:1:{int(NOW + 4 * 3600)}:3600"]
    for action in ("cancel", "move"):
        await desk.on_tap(Job(id=0, kind="booking_tap", key=f"btap:{action}", attempts=1,
                              max_attempts=3, run_at=NOW, created_at=NOW, worker=None,
                              payload={"account_id": ACCT, "contact_id": "intruder",
                                       "action": action, "booking_id": 1,
                                       "start": NOW + 5 * 3600}))
    row = await db.fetchone("SELECT status, start_at FROM bookings")
    assert row is not None and (row["status"], row["start_at"]) == ("booked", NOW + 4 * 3600)
    assert await db.fetchall("SELECT * FROM sends") == []
    assert parse_tap("BOOKING_CANCEL:x") is None and parse_tap("BOOKING_MOVE:1") is None


# -- the contact's side, through the sandbox and the daemon -------------------------------------
@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Harness]:
    """The daemon wired as in production (the AI feature, then this one) on a frozen clock."""
    async with open_harness(tmp_path, clock=Clock(NOW, frozen=True)) as h:
        h.rt.config = h.rt.config.model_copy(update={
            "timezone": "UTC", "booking": db_config(tmp_path).booking})
        install_feature(h.rt)
        install(h.rt)
        yield h


def message(r: Recorded) -> dict[str, Any]:
    msg = r.json["message"]
    assert isinstance(msg, dict)
    return msg


def texts(h: Harness) -> list[str]:
    return [str(message(r).get("text")) for r in h.graph_sends(IGSID)]


async def tap(h: Harness, title: str, payload: str) -> None:
    await h.sandbox.user_sends_dm(IGSID, title, quick_reply={"payload": payload})
    await h.settle()


def quick(h: Harness) -> list[tuple[str, str]]:
    msg = message(h.graph_sends(IGSID)[-1])
    return [(q["title"], q["payload"]) for q in msg["quick_replies"]]


async def rows(h: Harness, sql: str) -> list[dict[str, Any]]:
    return [dict(r) for r in await h.rt.db.fetchall(sql)]


async def test_contact_reschedules_by_tap_and_the_reminder_follows(env: Harness) -> None:
    h = env
    nine = NOW + 3 * 3600  # Monday 09:00 UTC, the first free slot
    await tap(h, "Mon 02 Jun 09:00", slot_payload(nine))
    [booking] = await rows(h, "SELECT * FROM bookings")
    assert texts(h) == ["You're booked for Monday 02 June 2025, 09:00 (UTC). See you then!"]
    assert [t for t, _ in quick(h)] == ["Reschedule", "Cancel"]

    await tap(h, "Reschedule", quick(h)[0][1])
    assert texts(h)[-1] == "Pick a new time for your Call (UTC):"
    offered = quick(h)
    assert [t for t, _ in offered] == ["Mon 02 Jun 09:30", "Mon 02 Jun 10:00",
                                       "Mon 02 Jun 10:30"]
    assert offered[1][1] == move_payload(booking["id"], NOW + 4 * 3600)

    await tap(h, *offered[1])
    after = await rows(h, "SELECT * FROM bookings")
    assert len(after) == 1  # moved, not a second booking
    assert (after[0]["id"], after[0]["start_at"], after[0]["sequence"]) == (
        booking["id"], NOW + 4 * 3600, 1)
    assert texts(h)[-1] == "Your Call is moved to Monday 02 June 2025, 10:00 (UTC). See you then!"
    notes = await rows(h, "SELECT text FROM notifications WHERE kind = 'booking' ORDER BY id")
    assert len(notes) == 2 and "booked Call on Monday 02 June 2025, 09:00" in notes[0]["text"]
    assert notes[1]["text"] == ("@user_5550001112223334 moved Call from Monday 02 June 2025,"
                                " 09:00 to Monday 02 June 2025, 10:00 (UTC)")

    # the 08:00 reminder of the old time is a no-op; the 09:00 one of the new time goes out
    await h.settle(advance_up_to=86400)
    reminders = await rows(h, "SELECT key, outcome, reason FROM booking_reminders ORDER BY key")
    bid = booking["id"]
    assert reminders == [
        {"key": f"remind:{bid}:{int(nine)}:3600", "outcome": "skipped", "reason": "moved"},
        {"key": f"remind:{bid}:{int(NOW + 4 * 3600)}:3600", "outcome": "sent",
         "reason": None}]
    sent = [t for t in texts(h) if t.startswith("Reminder:")]
    assert sent == ["Reminder: your Call is on Monday 02 June 2025, 10:00 (UTC). See you then!"]
    # running the reminder again (a redelivered job) sends nothing new
    job = Job(id=0, kind="booking_reminder", key=f"remind:{bid}:{int(NOW + 4 * 3600)}:3600",
              attempts=1, max_attempts=4, run_at=h.clock(), created_at=NOW, worker=None,
              payload={"booking_id": bid, "account_id": ACCT, "contact_id": IGSID,
                       "start_at": NOW + 4 * 3600, "offset": 3600.0})
    await h.rt.handlers["booking_reminder"](job)
    await h.settle()
    assert [t for t in texts(h) if t.startswith("Reminder:")] == sent


async def test_reminders_only_inside_the_window(env: Harness) -> None:
    h = env
    wednesday = NOW + 2 * 86400 + 3 * 3600  # Wed 09:00 UTC: reminders Tue 09:00, Wed 08:00
    await tap(h, "Wed 04 Jun 09:00", slot_payload(wednesday))
    [booking] = await rows(h, "SELECT * FROM bookings")
    assert booking["start_at"] == wednesday
    h.clock.advance(27 * 3600)  # Tue 09:00: the last message was 27 h ago
    await h.settle()
    [first] = await rows(h, "SELECT * FROM booking_reminders")
    assert (first["offset_seconds"], first["outcome"], first["reason"]) == (
        86400, "skipped", "window_closed")
    h.clock.advance(3600)
    await h.dm(IGSID, "looking forward to it")  # Tue 10:00: the window opens again
    await h.settle(advance_up_to=86400)
    reminders = await rows(h, "SELECT offset_seconds, outcome, reason FROM booking_reminders"
                              " ORDER BY offset_seconds DESC")
    assert reminders == [{"offset_seconds": 86400, "outcome": "skipped",
                          "reason": "window_closed"},
                         {"offset_seconds": 3600, "outcome": "sent", "reason": None}]
    assert [t for t in texts(h) if t.startswith("Reminder:")] == [
        "Reminder: your Call is on Wednesday 04 June 2025, 09:00 (UTC). See you then!"]
    # sent as a plain DM inside the window, never with the HUMAN_AGENT tag
    assert all("tag" not in r.json for r in h.graph_sends(IGSID))


async def test_contact_cancels_by_tap_and_reminders_are_noops(env: Harness) -> None:
    h = env
    ten = NOW + 4 * 3600
    await tap(h, "Mon 02 Jun 10:00", slot_payload(ten))
    cancel = dict(quick(h))["Cancel"]
    await tap(h, "Cancel", cancel)
    [booking] = await rows(h, "SELECT * FROM bookings")
    assert (booking["status"], booking["cancelled_by"], booking["sequence"]) == (
        "cancelled", "contact", 1)
    assert texts(h)[-1] == "Your Call on Monday 02 June 2025, 10:00 (UTC) is cancelled."
    notes = await rows(h, "SELECT text FROM notifications WHERE kind = 'booking' ORDER BY id")
    assert notes[-1]["text"] == (
        "@user_5550001112223334 cancelled Call on Monday 02 June 2025, 10:00 (UTC)")
    [lead] = await rows(h, "SELECT stage FROM leads")
    assert lead["stage"] != "booked"
    await tap(h, "Cancel", cancel)  # a second tap: nothing more
    assert texts(h).count("Your Call on Monday 02 June 2025, 10:00 (UTC) is cancelled.") == 1

    await h.settle(advance_up_to=86400)
    assert await rows(h, "SELECT outcome, reason FROM booking_reminders") == [
        {"outcome": "skipped", "reason": "cancelled"}]
    assert not [t for t in texts(h) if t.startswith("Reminder:")]
    # the slot is free again: the contact (or anyone) can book it
    await tap(h, "Mon 02 Jun 10:00", slot_payload(ten))
    live = await rows(h, "SELECT * FROM bookings WHERE status = 'booked'")
    assert [b["start_at"] for b in live] == [ten]


async def test_a_chosen_new_time_is_looked_up_up_to_that_time_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A contact's tap on a new time (`_tapped_move_in`) and `bookings reschedule --to`
    (`_free_slot_in`) walk the calendar up to the time chosen, not the whole horizon (s18:
    up to 366 days of slots, in the job on the daemon's one loop). Counted in days walked."""
    async with open_harness(tmp_path, clock=Clock(NOW, frozen=True)) as h:
        year = db_config(tmp_path).booking.model_copy(update={"horizon": timedelta(days=366)})
        h.rt.config = h.rt.config.model_copy(update={"timezone": "UTC", "booking": year})
        install_feature(h.rt)
        install(h.rt)
        await tap(h, "Mon 02 Jun 09:00", slot_payload(NOW + 3 * 3600))
        [booking] = await rows(h, "SELECT * FROM bookings")
        await tap(h, "Reschedule", quick(h)[0][1])
        offered = quick(h)

        walked = days_walked(monkeypatch)
        await tap(h, *offered[1])  # 10:00 the same day
        [moved] = await rows(h, "SELECT * FROM bookings")
        assert (moved["start_at"], moved["sequence"]) == (NOW + 4 * 3600, 1)
        assert 0 < len(walked) <= 3  # yesterday, today (and tomorrow), not the year

        walked.clear()
        desk = BookingDesk(h.rt.db, h.rt.config, clock=lambda: NOW)
        await desk.reschedule(booking["id"], NOW + 5 * 3600)  # 11:00 the same day
        [moved] = await rows(h, "SELECT * FROM bookings")
        assert (moved["start_at"], moved["sequence"]) == (NOW + 5 * 3600, 2)
        assert 0 < len(walked) <= 3
