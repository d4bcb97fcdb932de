"""Input from outside the config: `bookings reschedule --to` with a local time the clocks
skip (audit s16 #9), and tap payloads with numbers we never wrote (#10)."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from instaset.booking import parse_payload, parse_tap, slot_payload
from instaset.booking_slots import Tap
from instaset.cli import app
from instaset.cli.cmd_bookings import parse_when
from instaset.config import Config, load_config
from instaset.errors import InstasetError
from tests.sending_harness import Clock, open_harness
from tests.test_booking_lifecycle import BOOKING, NOW, query, quick, rows, seed, tap, texts

BERLIN = Config.model_validate({"timezone": "Europe/Berlin"})


def local(value: str, config: Config = BERLIN) -> str:
    return datetime.fromtimestamp(parse_when(value, config), config.tzinfo).isoformat()


# -- 9. a local time in a DST gap ---------------------------------------------------------------
def test_reschedule_refuses_a_local_time_the_clocks_skip(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"storage": {"path": str(tmp_path / "cli.db")},
                                    "timezone": "Europe/Berlin", "booking": BOOKING}))
    cfg = load_config(path, env={})
    start = float(int(time.time() // 3600) * 3600 + 86400)
    ids = asyncio.run(seed(cfg, inbound_ago=60, starts={"c1": start}))
    res = CliRunner().invoke(app, ["--config", str(path), "bookings", "reschedule",
                                   str(ids["c1"]), "--to", "2025-03-30T02:30"])
    assert res.exit_code == 1
    assert res.stdout == ""
    assert " ".join(res.stderr.split()) == (
        "error: --to 2025-03-30T02:30: that time does not exist in Europe/Berlin, the clocks"
        " jump from 02:00 to 03:00 that night; give a time before 02:00 or from 03:00 on"
        " (e.g. 2025-03-30T03:30)")
    [row] = asyncio.run(query(cfg, "SELECT start_at, sequence FROM bookings"))
    assert (row["start_at"], row["sequence"]) == (start, 0)

    shown = CliRunner().invoke(app, ["--config", str(path), "bookings", "reschedule",
                                     "--help"], env={"COLUMNS": "200"})
    assert "A local time the clocks skip is refused; one they show twice is the first." in (
        " ".join(shown.stdout.replace("│", " ").split()))


def test_times_around_the_changes() -> None:
    # the last minute before the gap and its end are real times
    assert local("2025-03-30T01:59") == "2025-03-30T01:59:00+01:00"
    assert local("2025-03-30T03:00") == "2025-03-30T03:00:00+02:00"
    for gap in ("2025-03-30T02:00", "2025-03-30T02:59:59"):
        with pytest.raises(InstasetError, match="does not exist in Europe/Berlin"):
            parse_when(gap, BERLIN)
    # with an offset it is an instant, not a local time: nothing to refuse
    assert local("2025-03-30T02:30+01:00") == "2025-03-30T03:30:00+02:00"
    # clocks going back: the first 02:30 (summer time), as the offered slots
    assert local("2025-10-26T02:30") == "2025-10-26T02:30:00+02:00"
    # another zone and a 30 min change
    new_york = Config.model_validate({"timezone": "America/New_York"})
    with pytest.raises(InstasetError, match=r"from 02:00 to 03:00 .* 2025-03-09T03:15"):
        parse_when("2025-03-09T02:15", new_york)
    lord_howe = Config.model_validate({"timezone": "Australia/Lord_Howe"})
    with pytest.raises(InstasetError, match=r"from 02:00 to 02:30 .* 2025-10-05T02:40"):
        parse_when("2025-10-05T02:10", lord_howe)
    assert local("2025-03-30T02:30", Config()) == "2025-03-30T02:30:00+00:00"  # UTC


# -- 10. payloads with numbers we never wrote ---------------------------------------------------
def test_payload_numbers_are_bounded() -> None:
    huge_id = "99999999999999999999999"  # beyond SQLite's INTEGER
    assert parse_tap(f"BOOKING_CANCEL:{huge_id}") is None
    assert parse_tap(f"BOOKING_RESCHEDULE:{huge_id}") is None
    assert parse_tap(f"BOOKING_MOVE:{huge_id}:1748854800") is None
    assert parse_tap(f"BOOKING_CANCEL:{2**63}") is None
    assert parse_tap(f"BOOKING_CANCEL:{2**63 - 1}") == Tap("cancel", 2**63 - 1)
    assert parse_tap("BOOKING_MOVE:3:" + "9" * 400) is None  # float() overflowed
    assert parse_payload("BOOK:" + "9" * 400) is None
    assert parse_payload("BOOK:253402300800") is None  # after 9999-12-31
    for odd in ("-3", "+3", "3_0", "٣", " 3", ""):
        assert parse_tap(f"BOOKING_CANCEL:{odd}") is None, odd
        assert parse_payload(f"BOOK:{odd}") is None, odd
    # what we send still parses
    assert parse_tap("BOOKING_MOVE:3:1748854800") == Tap("move", 3, 1748854800.0)
    assert parse_tap("BOOKING_RESCHEDULE:7") == Tap("reschedule", 7)
    assert parse_payload(slot_payload(1748854800.0)) == 1748854800.0


async def test_forged_taps_leave_no_failing_job(tmp_path: Path) -> None:
    """Through the daemon: each forged tap is dropped like any unknown one; nothing is
    retried, nothing is sent, the contact's booking stands."""
    booking = {**BOOKING, "availability": [{"days": "daily", "from": "09:00", "to": "17:00"}]}
    async with open_harness(tmp_path, clock=Clock(NOW, frozen=True),
                            extra={"timezone": "UTC", "booking": booking}) as h:
        await tap(h, "Mon 02 Jun 09:00", slot_payload(NOW + 3 * 3600))
        assert [t for t, _ in quick(h)] == ["Reschedule", "Cancel"]
        huge = "99999999999999999999999"
        for payload in (f"BOOKING_CANCEL:{huge}", f"BOOKING_RESCHEDULE:{huge}",
                        f"BOOKING_MOVE:1:{'9' * 400}", f"BOOK:{'9' * 400}"):
            await tap(h, "Cancel", payload)
        assert await rows(h, "SELECT kind, state, last_error FROM jobs WHERE state != 'done'"
                             " OR last_error IS NOT NULL") == [  # the 1 h reminder, at 08:00
            {"kind": "booking_reminder", "state": "ready", "last_error": None}]
        [live] = await rows(h, "SELECT status, start_at FROM bookings")
        assert live == {"status": "booked", "start_at": NOW + 3 * 3600}
        assert texts(h) == ["You're booked for Monday 02 June 2025, 09:00 (UTC). See you then!"]
