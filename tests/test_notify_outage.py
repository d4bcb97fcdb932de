"""A notification outlives a channel outage of hours: the real daemon and the sandbox, the
clock moved on as the retries come due (``tests/sending_harness.py``)."""

from __future__ import annotations

import random
from pathlib import Path

from instaset.notify import NOTIFY_MAX_ATTEMPTS, NOTIFY_RETRY_CAP, notify_job, notify_retry_delay
from tests.sending_harness import open_harness

IGSID = "1129842642640637"
HOUR = 3600.0
HANDOFF = [{"name": "human", "trigger": {"dm": {"keywords": ["human"]}},
            "actions": [{"reply": "getting the human"}, {"handoff": {"note": "wants a person"}}]}]


class Fixed(random.Random):
    """A "random" source that always draws ``value`` (the jitter at one end)."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.value


def test_the_retry_schedule_spans_about_a_day_hourly_at_most() -> None:
    for end in (0.0, 0.5, 1.0):
        delays = [notify_retry_delay(n, Fixed(end)) for n in range(1, NOTIFY_MAX_ATTEMPTS)]
        assert delays[0] <= 60  # a blip is retried soon
        assert max(delays) <= NOTIFY_RETRY_CAP * 1.1
        assert 21 * HOUR <= sum(delays) <= 27 * HOUR, sum(delays) / HOUR
    assert notify_job("k", None, None, "handoff", "t", 0.0).max_attempts == NOTIFY_MAX_ATTEMPTS


async def notify_state(h: object) -> tuple[str, int]:
    row = await h.rt.db.fetchone(  # type: ignore[attr-defined]
        "SELECT state, attempts FROM jobs WHERE kind = 'notify'")
    assert row is not None
    return row["state"], row["attempts"]


async def test_a_notification_waits_out_a_six_hour_outage(tmp_path: Path) -> None:
    flag, out = tmp_path / "up", tmp_path / "got.txt"
    command = f"test -e '{flag}' && cat >> '{out}'"  # fails until the channel is back
    async with open_harness(tmp_path, workflows=HANDOFF,
                            extra={"notify": {"command": command}}) as h:
        await h.dm(IGSID, "I want a human")
        await h.settle()
        start = h.clock()
        while True:  # each retry as it comes due, for 6 hours
            state, attempts = await notify_state(h)
            assert state == "ready", (state, attempts, (h.clock() - start) / HOUR)
            row = await h.rt.db.fetchone("SELECT run_at FROM jobs WHERE kind = 'notify'")
            assert row is not None
            if row["run_at"] - start > 6 * HOUR:
                break
            h.clock.advance(max(0.0, row["run_at"] - h.clock()))
            await h.settle()
        assert 9 <= attempts < NOTIFY_MAX_ATTEMPTS
        assert not out.exists()
        flag.write_text("")  # the channel is back
        await h.settle(advance_up_to=1.2 * HOUR)
        assert await notify_state(h) == ("done", attempts + 1)
        assert "wants a person" in out.read_text()
        row = await h.rt.db.fetchone("SELECT delivered_at FROM notifications")
        assert row is not None and row["delivered_at"] is not None


async def test_a_channel_down_for_good_gives_up_after_about_a_day(tmp_path: Path) -> None:
    async with open_harness(tmp_path, workflows=HANDOFF,
                            extra={"notify": {"command": "exit 1"}}) as h:
        await h.dm(IGSID, "I want a human")
        start = h.clock()
        await h.settle(advance_up_to=1.2 * HOUR)
        assert await notify_state(h) == ("dead", NOTIFY_MAX_ATTEMPTS)
        assert 21 * HOUR <= h.clock() - start <= 27 * HOUR
        row = await h.rt.db.fetchone("SELECT delivered_at FROM notifications")
        assert row is not None and row["delivered_at"] is None
