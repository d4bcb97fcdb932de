"""Webhook delivery as unkind as Meta's (reference §2.3, performance §1; s17 sandbox audit
D7): a failed delivery of a user event is retried, several updates come in one POST, some
come twice, in any order, and the daemon still answers every DM exactly once.

The sandbox-level tests POST to a small signed-webhook receiver on 127.0.0.1; the last one
runs the real daemon against the sandbox through :mod:`tests.sending_harness`."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from instaset.sandbox import DeliveryPolicy, Sandbox
from instaset.sandbox.delivery import STOPPED
from tests.conftest import on_loopback
from tests.sending_harness import open_harness

SECRET = "delivery-test-app-secret"
T0 = 1_760_000_000.0
USERS = [f"11000000000000{i:02d}" for i in range(1, 13)]
GUIDE_TEXT = "Here is the free guide"
GUIDE = {"name": "guide", "trigger": {"dm": {"keywords": ["guide"]}},
         "actions": [{"reply": GUIDE_TEXT}]}


@dataclass
class Receiver:
    """A webhook on 127.0.0.1 answering the statuses of ``script`` in turn, then 200;
    ``slow`` answers wait that long first."""

    url: str = ""
    script: list[int] = field(default_factory=list)
    slow: list[float] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)

    def items(self) -> list[tuple[str, str]]:
        """(sender, mid) of every messaging item received, in arrival order."""
        return [(item["sender"]["id"], item["message"]["mid"])
                for body in self.bodies for entry in body["entry"]
                for item in entry.get("messaging", [])]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()

    async def webhook(request: web.Request) -> web.Response:
        rec.bodies.append(json.loads(await request.read()))
        if rec.slow:
            await asyncio.sleep(rec.slow.pop(0))
        return web.Response(status=rec.script.pop(0) if rec.script else 200)

    app = web.Application()
    app.router.add_post("/webhook", webhook)
    async with on_loopback(app, shutdown_timeout=0.1) as base:
        rec.url = f"{base}/webhook"
        yield rec


@pytest.fixture
async def sandbox(receiver: Receiver) -> AsyncIterator[Sandbox]:
    sb = Sandbox(app_secret=SECRET, clock=lambda: T0, webhook_url=receiver.url)
    sb.echo_delay = 0.0
    sb.subscribe(["messages", "comments"])
    await sb.start()
    yield sb
    await sb.stop()


async def drained(sandbox: Sandbox) -> None:
    await asyncio.wait_for(sandbox.drain(), timeout=10)


async def test_a_refused_user_dm_is_retried_until_accepted(
    sandbox: Sandbox, receiver: Receiver
) -> None:
    receiver.script = [500, 503]
    payload = await sandbox.user_sends_dm(USERS[0], "hi")
    await drained(sandbox)
    assert [status for _body, status in sandbox.deliveries] == [500, 503, 200]
    assert receiver.bodies == [payload] * 3
    assert sandbox.undelivered == []


async def test_a_user_event_nobody_accepts_is_given_up_after_the_retries(
    sandbox: Sandbox, receiver: Receiver
) -> None:
    sandbox.delivery = DeliveryPolicy(retries=2, retry_base=0.0)
    receiver.script = [500] * 10
    payload = await sandbox.user_comments(USERS[0], "nice", "17900000000000001")
    await drained(sandbox)
    assert receiver.bodies == [payload] * 3
    assert [(u.payload, u.reason) for u in sandbox.undelivered] == [(payload, "HTTP 500")]


async def test_a_delivery_slower_than_the_timeout_is_retried(
    sandbox: Sandbox, receiver: Receiver
) -> None:
    sandbox.delivery = DeliveryPolicy(timeout=0.2)
    receiver.slow = [5.0]  # the first answer would come long after the timeout
    payload = await sandbox.user_sends_dm(USERS[0], "hi")
    await drained(sandbox)
    assert receiver.bodies == [payload] * 2
    assert sandbox.deliveries == [(payload, 200)] and sandbox.undelivered == []


async def test_a_lost_answer_brings_the_same_body_again(
    sandbox: Sandbox, receiver: Receiver
) -> None:
    sandbox.delivery = DeliveryPolicy(lose_answers=1)
    first = await sandbox.user_sends_dm(USERS[0], "one")
    second = await sandbox.user_sends_dm(USERS[1], "two")
    await drained(sandbox)
    # The receiver answered 200 each time; the sandbox counted the first as failed.
    assert sorted(receiver.items()) == sorted(
        [(USERS[0], mid(first))] * 2 + [(USERS[1], mid(second))])
    assert {status for _body, status in sandbox.deliveries} == {200}
    assert sandbox.undelivered == []


def mid(payload: dict[str, Any]) -> str:
    return str(payload["entry"][0]["messaging"][0]["message"]["mid"])


async def batched_run(sandbox: Sandbox, receiver: Receiver, seed: int) -> list[str]:
    sandbox.delivery = DeliveryPolicy(batch_window=0.05, duplicate_every=3, reorder=True,
                                      seed=seed)
    sent = [await sandbox.user_sends_dm(user, f"hello {i}") for i, user in enumerate(USERS)]
    assert receiver.bodies == []  # held for the batch window
    await drained(sandbox)
    mids = [p["entry"][0]["messaging"][0]["message"]["mid"] for p in sent]  # type: ignore[index]
    got = receiver.items()
    counts = Counter(mid for _sender, mid in got)
    # Every DM arrived; every third one twice (in the batch after its first).
    assert set(counts) == set(mids)
    assert sorted(counts.values()) == [1] * 8 + [2] * 4
    # Batched: a POST with several entries, and an entry with several items.
    assert len(receiver.bodies) == 2
    assert any(len(b["entry"]) > 1 for b in receiver.bodies)
    assert any(len(e["messaging"]) > 1 for b in receiver.bodies for e in b["entry"])
    # Shuffled: the first POST's items are not in the order the users wrote.
    first = [mid for b in receiver.bodies[:1] for e in b["entry"]
             for mid in (i["message"]["mid"] for i in e["messaging"])]
    assert first != mids and sorted(first) == sorted(mids)
    assert all(status == 200 for _b, status in sandbox.deliveries)
    return [sender for sender, _mid in got]


async def test_batches_duplicates_and_order_follow_the_seed(receiver: Receiver) -> None:
    orders = []
    for seed in (7, 7, 8):
        receiver.bodies.clear()
        sb = Sandbox(app_secret=SECRET, clock=lambda: T0, webhook_url=receiver.url)
        sb.subscribe(["messages"])
        await sb.start()
        try:
            orders.append(await batched_run(sb, receiver, seed))
        finally:
            await sb.stop()
    assert orders[0] == orders[1] != orders[2]


async def test_echoes_join_the_batch(sandbox: Sandbox, receiver: Receiver) -> None:
    await sandbox.user_sends_dm(USERS[0], "hi")
    await drained(sandbox)
    sandbox.delivery = DeliveryPolicy(batch_window=0.05)
    status, answer = await send(sandbox, USERS[0], "hello back")
    await sandbox.user_sends_dm(USERS[0], "thanks")
    await drained(sandbox)
    assert status == 200
    [body] = receiver.bodies[1:]
    items = [i for e in body["entry"] for i in e["messaging"]]
    assert [i["message"].get("is_echo", False) for i in items] == [True, False]
    assert items[0]["message"]["mid"] == answer["message_id"]


async def send(sandbox: Sandbox, igsid: str, text: str) -> tuple[int, dict[str, Any]]:
    body = {"recipient": {"id": igsid}, "message": {"text": text}}
    async with aiohttp.ClientSession() as session, session.post(
        f"{sandbox.base_url}/v25.0/me/messages", json=body,
        headers={"Authorization": f"Bearer {sandbox.token}"},
    ) as resp:
        return resp.status, await resp.json()


# -- the daemon ------------------------------------------------------------------------------


async def test_the_daemon_answers_every_dm_once_through_batches_duplicates_and_a_failure(
    tmp_path: Path,
) -> None:
    """Batched, shuffled deliveries, every third event twice, and the first POST's answer
    lost (so Meta delivers that whole batch again): one reply per DM, each DM stored once."""
    async with open_harness(tmp_path, workflows=[GUIDE]) as h:
        h.sandbox.delivery = DeliveryPolicy(batch_window=0.05, duplicate_every=3,
                                            reorder=True, lose_answers=1, seed=3)
        sent = [await h.sandbox.user_sends_dm(user, "the guide please?") for user in USERS]
        await h.settle(advance_up_to=60)  # the daemon paces its sends (rate_limits)

        for user in USERS:
            assert [r.json["message"] for r in h.graph_sends(user)] == [{"text": GUIDE_TEXT}]
        mids = {p["entry"][0]["messaging"][0]["message"]["mid"]  # type: ignore[index]
                for p in sent}
        rows = await h.rt.db.fetchall(
            "SELECT mid, count(*) AS n FROM messages WHERE direction = 'in' GROUP BY mid")
        assert {r["mid"]: r["n"] for r in rows} == dict.fromkeys(mids, 1)
        sends = await h.rt.db.fetchall("SELECT state FROM sends")
        assert [r["state"] for r in sends] == ["sent"] * len(USERS)

        # What the daemon met: batches, a DM delivered more than once, one lost answer.
        inbound = Counter(
            i["message"]["mid"] for body, status in h.sandbox.deliveries if status == 200
            for e in body["entry"] for i in e.get("messaging", [])  # type: ignore[attr-defined]
            if not i["message"].get("is_echo"))
        assert set(inbound) == mids and max(inbound.values()) >= 2
        assert any(len(e.get("messaging", [])) > 1  # type: ignore[attr-defined]
                   for body, _s in h.sandbox.deliveries for e in body["entry"])  # type: ignore[attr-defined]
        first_body = h.sandbox.deliveries[0][0]
        assert h.sandbox.deliveries[1][0] == first_body  # the lost answer, redelivered
        assert h.sandbox.undelivered == []


# -- stopping ----------------------------------------------------------------------------


async def test_stop_during_a_user_events_first_post_never_raises_and_records_it(
    sandbox: Sandbox, receiver: Receiver
) -> None:
    """stop() while the first POST waits for its answer (s19 review #1): stop() returns,
    no retry is spawned on the closed session, and the event is in ``undelivered``."""
    receiver.slow = [5.0]
    dm = asyncio.create_task(sandbox.user_sends_dm(USERS[0], "hi"))
    async with asyncio.timeout(10):
        while not receiver.bodies:
            await asyncio.sleep(0.01)
    await asyncio.wait_for(sandbox.stop(), 10)
    payload = await asyncio.wait_for(dm, 10)
    assert [u.payload for u in sandbox.undelivered] == [payload]
    assert sandbox._tasks == set() and sandbox._session is None
    assert len(receiver.bodies) == 1 and sandbox.deliveries == []


async def test_stop_during_a_retry_wait_records_the_event_and_opens_no_session(
    sandbox: Sandbox, receiver: Receiver
) -> None:
    sandbox.delivery = DeliveryPolicy(retries=3, retry_base=30.0)
    receiver.script = [500, 500]  # the first POST and the immediate retry; then a long wait
    payload = await sandbox.user_comments(USERS[0], "nice", "17900000000000001")
    async with asyncio.timeout(10):
        while len(receiver.bodies) < 2:
            await asyncio.sleep(0.01)
    await asyncio.wait_for(sandbox.stop(), 10)
    assert [(u.payload, u.reason) for u in sandbox.undelivered] == [(payload, STOPPED)]
    # A delivery asked for after stop() fails at once and opens no session.
    with pytest.raises(ConnectionError, match="stopped"):
        await sandbox.deliver(payload)
    assert sandbox._session is None and len(receiver.bodies) == 2


async def test_setting_the_policy_while_a_batch_is_gathered_loses_nothing(
    sandbox: Sandbox, receiver: Receiver
) -> None:
    """s19 review #2: the batch (and its duplicate) under the old policy is still delivered,
    and a later batching policy's events are not taken by the old batch."""
    sandbox.delivery = DeliveryPolicy(batch_window=0.2, duplicate_every=1)
    held = await sandbox.user_sends_dm(USERS[0], "held in the batch")
    sandbox.delivery = DeliveryPolicy()
    at_once = await sandbox.user_sends_dm(USERS[1], "sent at once")
    await drained(sandbox)
    assert receiver.items() == [(USERS[1], mid(at_once))] + [(USERS[0], mid(held))] * 2

    receiver.bodies.clear()
    sandbox.delivery = DeliveryPolicy(batch_window=0.05)
    first = await sandbox.user_sends_dm(USERS[2], "first policy")
    sandbox.delivery = DeliveryPolicy(batch_window=0.3)
    second = await sandbox.user_sends_dm(USERS[3], "second policy")
    await drained(sandbox)
    assert receiver.items() == [(USERS[2], mid(first)), (USERS[3], mid(second))]
    assert sandbox.undelivered == []


async def test_the_seed_repeats_the_user_events_duplicates_whatever_the_echoes_do(
    sandbox: Sandbox, receiver: Receiver
) -> None:
    """s19 review #7: echoes draw from their own count and RNG, so a run with the daemon
    answering (echoes in between) duplicates the same DMs as one without."""
    def twice() -> list[str]:
        texts = Counter(i["message"]["text"] for b in receiver.bodies for e in b["entry"]
                        for i in e["messaging"] if not i["message"].get("is_echo"))
        return sorted(t for t, n in texts.items() if n == 2)

    policy = DeliveryPolicy(duplicate_every=4, duplicate_rate=0.3, seed=11)
    runs = []
    for with_echoes in (False, True):
        receiver.bodies.clear()
        sandbox.delivery = policy
        for i, user in enumerate(USERS):
            await sandbox.user_sends_dm(user, f"dm {i}")
            if with_echoes:
                assert (await send(sandbox, user, "reply"))[0] == 200
            await drained(sandbox)
        runs.append(twice())
    echoes = [i for b in receiver.bodies for e in b["entry"] for i in e["messaging"]
              if i["message"].get("is_echo")]
    assert len(echoes) > len(USERS)  # the echoes had duplicates of their own
    assert runs[0] == runs[1] and 0 < len(runs[0]) < len(USERS)
