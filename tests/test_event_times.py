"""Implausible event times from outside (found by the session-11 input audit): one webhook
whose timestamp was near the year 9999 made ``inbox``, ``export`` and ``stats`` fail with
a traceback for the whole database, kept the message out of retention's reach and the
24 h window open. Such a time is now replaced by the arrival time at ingest and in
processing, and the time formatters clamp instead of raising on rows stored before."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from instaset.event_values import EARLIEST_EVENT, MAX_AHEAD, normalise_timestamp, plausible_time
from instaset.inbox import conversations
from instaset.replay import load_history, replay_config
from instaset.timefmt import iso_seconds, iso_utc
from tests.sending_harness import open_harness

IGSID = "1129842642640637"
RECEIVED = 1_764_500_000.0  # 2025-11-30


@pytest.mark.parametrize(
    ("occurred", "expected"),
    [
        (RECEIVED - 3600, RECEIVED - 3600),  # an hour before it arrived: Meta's
        (RECEIVED - 200 * 86400, RECEIVED - 200 * 86400),  # months late (a catch-up)
        (RECEIVED + 600, RECEIVED + 600),  # clock skew
        (RECEIVED + MAX_AHEAD + 1, RECEIVED),  # far ahead
        (253_402_214_400.0, RECEIVED),  # 9999-12-31
        (EARLIEST_EVENT - 1, RECEIVED),  # before Instagram
        (0.0, RECEIVED),  # what the parser gives for a missing time
        (None, RECEIVED),
    ],
)
def test_plausible_time(occurred: float | None, expected: float) -> None:
    assert plausible_time(occurred, RECEIVED) == expected


def test_iso_times_past_9999_are_unusable() -> None:
    """The ISO path had no upper bound (a negative offset carried the year past 9999)."""
    assert normalise_timestamp("9999-12-31T23:59:59-12:00") is None
    assert normalise_timestamp("2026-11-30T10:00:00+01:00") == 1_796_029_200.0


@pytest.mark.parametrize("ts", [1e13, 253_402_300_800.0, -5.0, math.inf, math.nan])
def test_time_formatters_clamp_instead_of_raising(ts: float) -> None:
    text = iso_utc(ts)
    assert text.startswith(("9999-12-31T23:59:59", "1970-01-01T00:00:00"))
    assert iso_seconds(ts) in ("9999-12-31T23:59:59Z", "1970-01-01T00:00:00Z")


def _with_timestamp(payload: dict[str, Any], ts: object) -> dict[str, Any]:
    payload["entry"][0]["messaging"][0]["timestamp"] = ts
    return payload


@pytest.mark.parametrize("ts", [253_402_214_400_000, "9999-12-31T23:59:59-12:00", 1])
async def test_a_dm_with_an_implausible_time_is_stored_at_its_arrival(
    tmp_path: Path, ts: object
) -> None:
    async with open_harness(tmp_path) as h:
        # An unusable ISO time falls back to the entry's time (ms, set when it was built).
        before = h.clock() - 0.001
        payload = await h.sandbox.user_sends_dm(IGSID, "hello", deliver=False)
        assert await h.post(_with_timestamp(payload, ts)) == 200
        await h.settle()
        after = h.clock()
        (event,) = await h.rt.db.fetchall("SELECT occurred_at FROM events")
        (message,) = await h.messages(IGSID, "in")
        conv = await h.conversation(IGSID)
        listing = await conversations(h.rt.db, h.clock())
    for stored in (event["occurred_at"], message["created_at"], conv["last_inbound_at"]):
        assert before <= stored <= after
    assert [c["contact_id"] for c in listing] == [IGSID]
    assert listing[0]["window"]["state"] == "open"


async def test_replay_decides_with_the_same_time_as_the_daemon(tmp_path: Path) -> None:
    """Found by the session's review: the daemon decided a DM stamped 3 days ahead with its
    arrival time (cooldown held), replay with the stamp (it fired)."""
    flows = [{"name": "go", "trigger": {"dm": {"keywords": ["go"]}}, "when": {"cooldown": "1d"},
              "actions": [{"reply": "going"}]}]
    async with open_harness(tmp_path, workflows=flows) as h:
        await h.dm(IGSID, "go")
        await h.settle()
        h.clock.advance(60)
        payload = await h.sandbox.user_sends_dm(IGSID, "go", deliver=False)
        assert await h.post(_with_timestamp(payload, int((h.clock() + 3 * 86400) * 1000))) == 200
        await h.settle()
        live = [r.json["message"].get("text") for r in h.graph_sends(IGSID)]
        report = replay_config(h.config, await load_history(h.rt.db, since=None, until=4e9))
    assert live == ["going"]
    assert [s.outcome.fired for s in report.steps] == [True, False]
