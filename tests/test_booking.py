"""Booking: free slots in the creator's time zone (DST included), atomic booking of a tapped
slot under concurrency, the offer message, the .ics export and the `bookings` CLI."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

import instaset.cli.cmd_bookings  # noqa: F401  (registers `bookings` until cli/__init__ does)
from instaset import booking_slots
from instaset.booking import (
    BookingDesk,
    free_slots,
    manage_replies,
    parse_payload,
    slot_label,
    slot_payload,
    to_ics,
)
from instaset.cli import app
from instaset.config import BookingConfig, Config, load_config
from instaset.outbox import Outgoing
from instaset.store import ai as aistore
from instaset.store import history
from instaset.store.db import Database, open_database
from instaset.store.jobs import Job
from tests.conftest import connect_account

ACCT = "17841400000000001"
BERLIN = ZoneInfo("Europe/Berlin")


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def utc(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")


def booking(**kw: object) -> BookingConfig:
    base: dict[str, object] = {"min_notice": 0, "horizon": "3d", "slot_length": "30m",
                               "availability": [{"days": "daily", "from": "09:00",
                                                 "to": "10:00"}]}
    base.update(kw)
    return BookingConfig.model_validate(base)


def test_slots_follow_local_time_across_spring_forward() -> None:
    now = ts("2025-03-28T12:00:00+00:00")  # Friday; Berlin moves to CEST on Sunday 30 March
    slots = free_slots(booking(), BERLIN, now)
    assert [utc(s.start) for s in slots] == [
        "2025-03-29 08:00", "2025-03-29 08:30",  # 09:00 CET = 08:00 UTC
        "2025-03-30 07:00", "2025-03-30 07:30",  # 09:00 CEST = 07:00 UTC
        "2025-03-31 07:00", "2025-03-31 07:30",
    ]
    assert [slot_label(s.start, BERLIN) for s in slots[:3]] == [
        "Sat 29 Mar 09:00", "Sat 29 Mar 09:30", "Sun 30 Mar 09:00"]
    assert all(s.end - s.start == 1800 for s in slots)


def test_nonexistent_and_ambiguous_local_times() -> None:
    cfg = booking(availability=[{"days": "sun", "from": "01:30", "to": "03:30"}], horizon="2d")
    gap = free_slots(cfg, BERLIN, ts("2025-03-29T00:00:00+00:00"))
    # 02:00 and 02:30 do not exist that night: 01:30 CET, then 03:00 CEST
    assert [utc(s.start) for s in gap] == ["2025-03-30 00:30", "2025-03-30 01:00"]
    back = free_slots(cfg, BERLIN, ts("2025-10-25T00:00:00+00:00"))
    # 02:00-03:00 happens twice on 26 October: each slot once, at its first occurrence
    assert [utc(s.start) for s in back] == [
        "2025-10-25 23:30", "2025-10-26 00:00", "2025-10-26 00:30", "2025-10-26 02:00"]


@pytest.mark.parametrize(
    ("zone", "first"),
    [("America/New_York", "2025-03-10 13:00"),  # EDT since 9 March: 09:00 = 13:00 UTC
     ("Asia/Tokyo", "2025-03-10 05:00"),  # already 13:00 there: 14:00 after the notice
     ("UTC", "2025-03-10 09:00")],
)
def test_time_zones(zone: str, first: str) -> None:
    now = ts("2025-03-10T04:00:00+00:00")
    cfg = booking(availability=[{"days": "mon-fri", "from": "09:00", "to": "17:00"}],
                  min_notice="1h")
    slots = free_slots(cfg, ZoneInfo(zone), now)
    assert utc(slots[0].start) == first


def test_busy_buffer_blackout_notice_and_limit() -> None:
    now = ts("2025-06-02T06:00:00+00:00")  # Monday 08:00 in Berlin
    cfg = booking(availability=[{"days": "mon-fri", "from": "09:00", "to": "12:00"}],
                  buffer="15m", min_notice="90m", blackout=[date(2025, 6, 3)], horizon="3d")
    busy = [(ts("2025-06-02T08:30:00+00:00"), ts("2025-06-02T09:00:00+00:00"))]  # 10:30 local
    got = [slot_label(s.start, BERLIN) for s in free_slots(cfg, BERLIN, now, busy)]
    # step 45 min: 09:00 is inside the notice, 09:45-10:15 leaves exactly the buffer before
    # 10:30, 10:30 is taken, 11:15 is 15 min after its end; Tuesday is blacked out.
    assert got[:3] == ["Mon 02 Jun 09:45", "Mon 02 Jun 11:15", "Wed 04 Jun 09:00"]
    # a 30 min buffer (60 min step): 10:00 and 11:00 are too close to the booking
    tight = cfg.model_copy(update={"buffer": cfg.buffer * 2})
    assert slot_label(free_slots(tight, BERLIN, now, busy)[0].start, BERLIN) == (
        "Wed 04 Jun 09:00")
    assert len(free_slots(cfg, BERLIN, now, busy, limit=3)) == 3


def test_window_across_midnight_and_payloads() -> None:
    cfg = booking(availability=[{"days": "fri", "from": "23:00", "to": "01:00"}],
                  slot_length="1h", horizon="7d")
    slots = free_slots(cfg, ZoneInfo("UTC"), ts("2025-06-02T00:00:00+00:00"))
    assert [utc(s.start) for s in slots] == ["2025-06-06 23:00", "2025-06-07 00:00"]
    assert parse_payload(slot_payload(slots[0].start)) == slots[0].start
    assert parse_payload("BOOK:nope") is None and parse_payload("OTHER") is None
    assert len(slot_label(slots[0].start, BERLIN)) <= 20



@pytest.mark.parametrize("zone", ["Europe/Berlin", "UTC", "Australia/Lord_Howe"])
@pytest.mark.parametrize("limit", [1, 3, 7, 40])
def test_a_limit_gives_the_first_slots_of_the_whole_walk(zone: str, limit: int) -> None:
    """free_slots stops at the first day past ``limit`` slots (s18 audit: it walked every
    day of the horizon first); what it gives is still the start of the full list, across
    DST changes and windows over midnight."""
    cfg = booking(availability=[{"days": ["mon", "wed"], "from": "23:00", "to": "02:00"},
                                {"days": "fri", "from": "09:00", "to": "10:00"}],
                  slot_length="45m", buffer="10m", horizon="60d", min_notice="5h")
    for now in (ts("2025-03-28T12:00:00+00:00"), ts("2025-10-01T21:30:00+00:00")):
        every = free_slots(cfg, ZoneInfo(zone), now)
        assert free_slots(cfg, ZoneInfo(zone), now, limit=limit) == every[:limit]


def days_walked(monkeypatch: pytest.MonkeyPatch) -> set[object]:
    """The local days free_slots looks at from now on (a spy on its per-slot helper)."""
    seen: set[object] = set()
    real = booking_slots._local_start

    def spy(midnight: datetime, minutes: int, tz: ZoneInfo) -> float | None:
        seen.add(midnight.date())
        return real(midnight, minutes, tz)

    monkeypatch.setattr(booking_slots, "_local_start", spy)
    return seen


def test_a_year_of_one_minute_slots_gives_the_first_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by the s18 audit: a 100-year horizon of 1-minute slots took 51 s per offer, in
    the job on the daemon's one loop. The horizon is now at most 366d, and an offer stops at
    its first day (the whole year took about 2 s, the offer a few ms)."""
    cfg = booking(availability=[{"days": "mon-sun", "from": "00:00", "to": "24:00"}],
                  slot_length="1m", horizon="366d")
    walked = days_walked(monkeypatch)
    slots = free_slots(cfg, BERLIN, ts("2025-06-02T06:00:00+00:00"), limit=5)
    assert [utc(s.start) for s in slots] == [f"2025-06-02 06:0{m}" for m in range(5)]
    assert len(walked) <= 2  # yesterday and today, not the year
    for horizon in ("367d", "36500d"):
        with pytest.raises(ValidationError, match=r"horizon must be at most 366d \(a year\)"):
            booking(horizon=horizon)


@pytest.mark.parametrize("zone", ["Europe/Berlin", "UTC", "Australia/Lord_Howe"])
def test_until_gives_the_slots_up_to_a_time_and_stops_there(
    zone: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A tapped new time for a booking is looked up to that time only (s18: a move walked
    the whole horizon on the daemon's one loop)."""
    cfg = booking(availability=[{"days": ["mon", "wed"], "from": "23:00", "to": "02:00"},
                                {"days": "fri", "from": "09:00", "to": "10:00"}],
                  slot_length="45m", buffer="10m", horizon="60d", min_notice="5h")
    now = ts("2025-03-28T12:00:00+00:00")
    every = free_slots(cfg, ZoneInfo(zone), now)
    for target in (every[0], every[4], every[-1]):
        upto = free_slots(cfg, ZoneInfo(zone), now, until=target.start)
        assert upto == [s for s in every if s.start <= target.start]
    walked = days_walked(monkeypatch)
    free_slots(cfg, ZoneInfo(zone), now, until=every[4].start)
    assert len(walked) < 20  # the 60 days stop a day past the fifth slot


# -- booking in the database ---------------------------------------------------------------------
NOW = ts("2025-06-02T06:00:00+00:00")  # Monday 08:00 Berlin


def config(tmp_path: Path) -> Config:
    return Config.model_validate({
        "storage": {"path": str(tmp_path / "book.db")}, "timezone": "Europe/Berlin",
        "booking": {"min_notice": "30m", "offer": 3,
                    "availability": [{"days": "mon-fri", "from": "09:00", "to": "11:00"}]},
    })


async def seed(db: Database, *contacts: str) -> None:
    await connect_account(db, ACCT)
    async with db.tx() as conn:
        for c in contacts:
            await history.touch_contact(conn, ACCT, c, NOW, username=f"user_{c}")
            # a tap is a message: the 24 h window is open
            await history.update_conversation(conn, ACCT, c, NOW, inbound_at=NOW - 60)


def book_job(key: str, contact: str, start: float) -> Job:
    return Job(id=0, kind="book_slot", key=key, attempts=1, max_attempts=3, run_at=NOW,
               created_at=NOW, worker=None,
               payload={"account_id": ACCT, "contact_id": contact, "start": start})


async def sends(db: Database) -> dict[str, Outgoing]:
    rows = await db.fetchall("SELECT key, body FROM sends ORDER BY key")
    return {r["key"]: Outgoing.from_json(r["body"]) for r in rows}


async def test_offer_and_two_concurrent_taps_on_one_slot(db: Database, tmp_path: Path) -> None:
    cfg = config(tmp_path)
    await seed(db, "c1", "c2")
    desk = BookingDesk(db, cfg, clock=lambda: NOW)
    async with db.tx() as conn:
        [offer] = await desk.offer_in(conn, ACCT, "c1", "send:x", None, "wf", NOW)
    assert offer.text == "Here are my next free times (Europe/Berlin). Tap one to book it:"
    assert offer.quick_replies == (
        ("Mon 02 Jun 09:00", slot_payload(ts("2025-06-02T07:00:00+00:00"))),
        ("Mon 02 Jun 09:30", slot_payload(ts("2025-06-02T07:30:00+00:00"))),
        ("Mon 02 Jun 10:00", slot_payload(ts("2025-06-02T08:00:00+00:00"))),
    )
    start = float(offer.quick_replies[0][1].split(":")[1])

    await asyncio.gather(desk.book(book_job("book:1", "c1", start)),
                         desk.book(book_job("book:2", "c2", start)))
    rows = await db.fetchall("SELECT * FROM bookings")
    assert len(rows) == 1 and rows[0]["start_at"] == start
    winner = rows[0]["contact_id"]
    loser = "c2" if winner == "c1" else "c1"
    out = await sends(db)
    win_key = "send:book:1" if winner == "c1" else "send:book:2"
    lose_key = "send:book:2" if winner == "c1" else "send:book:1"
    assert out[win_key].text == (
        "You're booked for Monday 02 June 2025, 09:00 (Europe/Berlin). See you then!")
    assert out[win_key].quick_replies == manage_replies(rows[0]["id"]) == (
        ("Reschedule", f"BOOKING_RESCHEDULE:{rows[0]['id']}"),
        ("Cancel", f"BOOKING_CANCEL:{rows[0]['id']}"))
    assert out[lose_key].contact_id == loser
    assert out[lose_key].text == "Sorry, that time is no longer free. Here are the next ones:"
    assert [t for t, _p in out[lose_key].quick_replies] == [
        "Mon 02 Jun 09:30", "Mon 02 Jun 10:00", "Mon 02 Jun 10:30"]
    notes = await db.fetchall("SELECT payload FROM jobs WHERE kind = 'notify'")
    assert [json.loads(n["payload"])["text"] for n in notes] == [
        f"@user_{winner} booked Call on Monday 02 June 2025, 09:00 (Europe/Berlin)"]

    # the same tap delivered again books nothing new; later offers skip the booked slot
    await desk.book(book_job("book:1", "c1", start))
    assert len(await db.fetchall("SELECT * FROM bookings")) == 1
    async with db.tx() as conn:
        [again] = await desk.offer_in(conn, ACCT, "c2", "send:y", "Pick one:", None, NOW)
    assert again.text == "Pick one:" and again.quick_replies[0][0] == "Mon 02 Jun 09:30"


async def test_a_slot_not_offered_cannot_be_booked(db: Database, tmp_path: Path) -> None:
    await seed(db, "c1")
    desk = BookingDesk(db, config(tmp_path), clock=lambda: NOW)
    sunday = ts("2025-06-08T08:00:00+00:00")
    await desk.book(book_job("book:x", "c1", sunday))
    assert await db.fetchall("SELECT * FROM bookings") == []
    assert str((await sends(db))["send:book:x"].text).startswith("Sorry, that time is no")


def parse_ics(text: str) -> list[dict[str, str]]:
    events: list[dict[str, str]] = []
    for line in text.splitlines():
        if line == "BEGIN:VEVENT":
            events.append({})
        elif events and ":" in line and line != "END:VEVENT":
            key, value = line.split(":", 1)
            events[-1][key] = value
    return events


def test_ics_round_trip() -> None:
    start = ts("2025-06-02T07:00:00+00:00")
    text = to_ics([{"id": 7, "start_at": start, "end_at": start + 1800, "title": "Call; intro",
                    "status": "booked", "username": "sam"}], now=start)
    assert text.startswith("BEGIN:VCALENDAR\r\n") and text.endswith("END:VCALENDAR\r\n")
    [event] = parse_ics(text)
    assert event["UID"] == "booking-7@instaset"
    assert datetime.strptime(event["DTSTART"], "%Y%m%dT%H%M%SZ").replace(
        tzinfo=UTC).timestamp() == start
    assert event["DTEND"] == "20250602T073000Z"
    assert event["SUMMARY"] == "Call\\; intro with @sam"
    assert event["STATUS"] == "CONFIRMED" and event["SEQUENCE"] == "0"


async def _seed_cli(cfg: Config, starts: list[float]) -> None:
    db = await open_database(cfg.storage.db_path())
    try:
        await seed(db, "c1")
        async with db.tx() as conn:
            for i, start in enumerate(starts):
                await aistore.insert_booking(conn, key=f"k{i}", account_id=ACCT,
                                             contact_id="c1", start_at=start,
                                             end_at=start + 1800, title="Call", now=NOW)
    finally:
        await db.close()


def test_cli_bookings(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"storage": {"path": str(tmp_path / "cli.db")},
                                    "timezone": "Europe/Berlin"}))
    cfg = load_config(path, env={})
    start = ts("2001-06-04T07:00:00+00:00")
    future = ts("2099-06-01T07:00:00+00:00")
    asyncio.run(_seed_cli(cfg, [start, future]))
    runner = CliRunner()
    res = runner.invoke(app, ["--config", str(path), "bookings", "--json"])
    assert res.exit_code == 0, res.output
    b, _later = json.loads(res.stdout)
    assert (b["username"], b["start"], b["local_start"], b["status"]) == (
        "user_c1", "2001-06-04T07:00:00Z", "2001-06-04T09:00:00+02:00", "booked")
    res = runner.invoke(app, ["--config", str(path), "bookings", "--ics"])
    assert [e["DTSTART"] for e in parse_ics(res.stdout)] == ["20010604T070000Z",
                                                             "20990601T070000Z"]
    res = runner.invoke(app, ["--config", str(path), "bookings"])
    assert "Mon 04 Jun 2001 09:00 (Europe/Berlin)" in res.stdout and "@user_c1" in res.stdout
    res = runner.invoke(app, ["--config", str(path), "bookings", "--upcoming", "--json"])
    assert [x["start"] for x in json.loads(res.stdout)] == ["2099-06-01T07:00:00Z"]
