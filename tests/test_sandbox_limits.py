"""Meta's rate limits and usage header in the sandbox (reference §5.1-5.2; s17 sandbox audit
D8), read by instaset's real Graph client: the Business Use Case header on every Graph
answer, code 613 past 2 Conversations API calls a second or 750 private replies an hour,
code 80002 past the account's BUC budget; the daemon's catch-up keeps within the limit and,
throttled anyway, backs off and finishes. All on frozen clocks the tests move."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from rich.console import Console

from instaset.backfill import CallLimiter
from instaset.catchup import CatchUp, CatchUpSettings
from instaset.demo import Scene
from instaset.errors import GraphError, Throttled, WindowClosed
from instaset.graph import GraphClient
from instaset.graph_wire import QuickReply
from instaset.sandbox import Fault, Sandbox
from instaset.sandbox import server as sandbox_server
from instaset.sandbox.limits import Limits
from tests.test_catchup import World, daemon, mid_of, settle, world

SECRET = "limits-test-app-secret"
ACCT = "17841400000000001"
IGSID = "1129842642640637"
MEDIA = "17900000000000001"


class Clock:
    def __init__(self) -> None:
        self.t = 1_760_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def sandbox(clock: Clock) -> AsyncIterator[Sandbox]:
    sb = Sandbox(app_secret=SECRET, clock=clock, limits=Limits())
    await sb.start()
    await sb.user_sends_dm(IGSID, "hi", deliver=False)
    yield sb
    await sb.stop()


async def test_every_graph_answer_carries_the_buc_header_the_client_reads(
    sandbox: Sandbox, graph: GraphClient, session: aiohttp.ClientSession,
) -> None:
    sandbox.limits = Limits(buc_calls_per_hour=20)
    await graph.me(token=sandbox.token)
    assert graph.last_usage is not None and graph.last_usage.buc_pct == 5.0
    await graph.send_text(ACCT, IGSID, "hello", token=sandbox.token)
    assert graph.last_usage.buc_pct == 10.0
    async with session.get(f"{sandbox.base_url}/v25.0/me",
                           headers={"Authorization": f"Bearer {sandbox.token}"}) as resp:
        header = json.loads(resp.headers["X-Business-Use-Case-Usage"])
    # Reference §5.2's shape: keyed by the account, one "instagram" entry in percent.
    assert header == {ACCT: [{"type": "instagram", "call_count": 15, "total_cputime": 7,
                              "total_time": 7, "estimated_time_to_regain_access": 0}]}


async def test_a_third_conversations_api_call_in_a_second_gets_613(
    sandbox: Sandbox, graph: GraphClient, clock: Clock,
) -> None:
    [conv], _ = await graph.conversations(ACCT, token=sandbox.token)
    await graph.conversation_messages(str(conv["id"]), token=sandbox.token)
    with pytest.raises(Throttled) as caught:
        await graph.conversations(ACCT, token=sandbox.token)
    assert (caught.value.code, caught.value.status) == (613, 400)
    assert caught.value.retry_after is None  # under a minute: the header's unit says 0
    await graph.me(token=sandbox.token)  # other calls are not the Conversations API
    clock.t += 1.0
    await graph.conversations(ACCT, token=sandbox.token)
    assert sandbox.meter.refused == 1


async def test_private_replies_past_the_hourly_limit_get_613_with_the_wait(
    sandbox: Sandbox, graph: GraphClient, clock: Clock,
) -> None:
    sandbox.limits = Limits(private_replies_per_hour=2)
    comments = [await sandbox.user_comments(f"22000000000000{i}", "guide", MEDIA, deliver=False)
                for i in range(3)]
    cids = [str(c["entry"][0]["changes"][0]["value"]["id"]) for c in comments]  # type: ignore[index]
    for cid in cids[:2]:
        await graph.private_reply(ACCT, cid, "sent you the guide", token=sandbox.token)
        clock.t += 600
    with pytest.raises(Throttled) as caught:
        await graph.private_reply(ACCT, cids[2], "sent you the guide", token=sandbox.token)
    assert caught.value.code == 613
    assert caught.value.retry_after == 40 * 60.0  # the first reply leaves the hour then
    assert not sandbox.comments[cids[2]].private_replied
    clock.t += 40 * 60
    await graph.private_reply(ACCT, cids[2], "sent you the guide", token=sandbox.token)


async def test_the_buc_budget_spent_throttles_every_call_until_the_hour_moves_on(
    sandbox: Sandbox, graph: GraphClient, clock: Clock,
) -> None:
    sandbox.limits = Limits(buc_calls_per_hour=3)
    await graph.me(token=sandbox.token)
    await graph.me(token=sandbox.token)
    with pytest.raises(Throttled) as spent:  # answered, but at 100 %: the client stops there
        await graph.me(token=sandbox.token)
    assert graph.last_usage is not None and graph.last_usage.buc_pct == 100.0
    assert spent.value.retry_after == 3600.0  # the real wait, not 0, on the spending call
    clock.t += 600
    with pytest.raises(Throttled) as caught:
        await graph.send_text(ACCT, IGSID, "hello", token=sandbox.token)
    assert (caught.value.code, caught.value.retry_after) == (80002, 3000.0)
    assert sandbox.sends() == [] and sandbox.thread(IGSID)[-1].direction == "in"  # not sent
    assert [r.status for r in sandbox.send_attempts()] == [400]  # the call log has it
    clock.t += 3000
    await graph.send_text(ACCT, IGSID, "hello", token=sandbox.token)


async def test_a_call_without_a_valid_token_gets_no_usage_header(
    sandbox: Sandbox, session: aiohttp.ClientSession,
) -> None:
    for headers, code in (({}, 2500), ({"Authorization": "Bearer not-a-token"}, 190)):
        async with session.get(f"{sandbox.base_url}/v25.0/me", headers=headers) as resp:
            assert resp.status == 400 and (await resp.json())["error"]["code"] == code
            assert "X-Business-Use-Case-Usage" not in resp.headers
    async with session.get(f"{sandbox.base_url}/v25.0/me",
                           headers={"Authorization": f"Bearer {sandbox.token}"}) as resp:
        assert resp.status == 200 and "X-Business-Use-Case-Usage" in resp.headers


async def test_without_limits_nothing_is_throttled_or_reported(
    clock: Clock, session: aiohttp.ClientSession,
) -> None:
    """The default (benchmarks, tests on a frozen clock): no limit, no header."""
    async with Sandbox(app_secret=SECRET, clock=clock) as sb:
        assert sb.base_url is not None
        client = GraphClient(session, graph_url=sb.base_url, api_version="v25.0",
                             api_url=sb.base_url, timeout=5.0)
        for _ in range(5):
            await client.conversations(ACCT, token=sb.token)
        assert client.last_usage is None and sb.meter.refused == 0


# -- what a refused call leaves -----------------------------------------------------------------

SLOTS = (QuickReply("Tue 10:00", "SLOT_TUE"), QuickReply("Wed 15:00", "SLOT_WED"))


async def test_a_send_refused_for_the_budget_is_not_among_the_sends_the_demo_taps(
    sandbox: Sandbox, graph: GraphClient,
) -> None:
    """sends() is what reached the user; the transcript still lists the refused call, with
    the answer it got. The demo picks the chip it taps from sends()."""
    console = Console(record=True, width=200)
    scene = Scene(sandbox, None, console)  # type: ignore[arg-type]
    sam = scene.user("sam")  # the demo's user, as tap_first_slot finds them
    await sandbox.user_sends_dm(sam, "a time?", deliver=False)
    sandbox.limits = Limits(buc_calls_per_hour=1)
    await graph.send_text(ACCT, sam, "hello", token=sandbox.token)  # spends the budget
    with pytest.raises(Throttled):
        await graph.send_text(ACCT, sam, "pick a time", quick_replies=SLOTS,
                              token=sandbox.token)
    assert [r.json["message"] for r in sandbox.sends()] == [{"text": "hello"}]
    assert [(r.json["message"]["text"], r.status)  # type: ignore[index]
            for r in sandbox.send_attempts()] == [("hello", 200), ("pick a time", 400)]
    await scene.tap_first_slot("sam")
    assert "no time slots were offered to @sam" in console.export_text()


async def test_sends_refused_by_the_window_or_a_fault_are_not_delivered(
    sandbox: Sandbox, graph: GraphClient, clock: Clock,
) -> None:
    """Any refusal, not only throttling: outside the 24 h window, a fault answered before the
    send was made. A fault answered after it (the send made, the answer lost) was delivered."""
    clock.t += 25 * 3600
    with pytest.raises(WindowClosed):
        await graph.send_text(ACCT, IGSID, "too late", token=sandbox.token)
    await sandbox.user_sends_dm(IGSID, "back again", deliver=False)
    sandbox.inject(Fault("graph_error", path_contains="/messages", status=500, code=2))
    with pytest.raises(GraphError):
        await graph.send_text(ACCT, IGSID, "failed", token=sandbox.token)
    sandbox.inject(Fault("error_after_send", path_contains="/messages", status=500, code=2))
    with pytest.raises(GraphError):
        await graph.send_text(ACCT, IGSID, "made, answer lost", token=sandbox.token)
    assert [r.json["message"] for r in sandbox.sends()] == [{"text": "made, answer lost"}]
    assert [(r.status, r.accepted) for r in sandbox.send_attempts()] == [
        (403, False), (500, False), (500, True)]
    assert [m.text for m in sandbox.thread(IGSID) if m.direction == "out"] == [
        "made, answer lost"]


async def test_a_send_made_is_among_the_sends_even_if_its_handler_fails_after_it(
    sandbox: Sandbox, graph: GraphClient, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found in review: the outcome was written only on the handler's normal returns, so a
    send stored and then cut short (stop() while an echo_first send waits for its echo, or
    anything raising after the store) was in the thread but not in sends()."""

    def broken_echo(*args: object, **kwargs: object) -> dict[str, object]:
        raise RuntimeError("after the store")

    monkeypatch.setattr(sandbox_server, "build_echo_payload", broken_echo)
    with pytest.raises(GraphError):  # the sandbox answers 500
        await graph.send_text(ACCT, IGSID, "made", token=sandbox.token)
    assert [m.text for m in sandbox.thread(IGSID) if m.direction == "out"] == ["made"]
    assert [r.json["message"] for r in sandbox.sends()] == [{"text": "made"}]
    assert [(r.status, r.accepted) for r in sandbox.send_attempts()] == [(None, True)]


# -- the daemon's catch-up ---------------------------------------------------------------------


async def catch_up(w: World, *, other_app_calls: int) -> tuple[int, int]:
    """Three DMs missed while the daemon was down, then its catch-up (2 calls/s, in the fake
    time its limiter waits in) while another app has just made ``other_app_calls``
    Conversations API calls for the account. Returns (recovered, calls the sandbox refused)."""
    async with daemon(w, start=False) as rt:  # connected, checked once, then stopped
        await CatchUp.for_runtime(rt).check_all()
        await settle(w, rt)
    w.clock.advance(600)
    missed = [await w.sandbox.user_sends_dm(f"110000000000010{i}", "hi", deliver=False)
              for i in range(3)]
    w.clock.advance(5)
    w.sandbox.limits = Limits()
    async with daemon(w, start=False) as rt:

        async def wait(seconds: float) -> None:  # the limiter waits in fake time
            w.clock.advance(seconds)
            await asyncio.sleep(0)

        cu = CatchUp(rt.db, rt.graph, rt.tokens, clock=w.clock, timer=w.clock,
                     settings=CatchUpSettings(calls_per_second=2.0), wake=rt.wake.set,
                     limiter=CallLimiter(2.0, clock=w.clock, sleep=wait))
        rt.worker.handlers["catchup_backfill"] = cu.backfill_job
        for _ in range(other_app_calls):
            await rt.graph.conversations(ACCT, token=w.sandbox.token)
        [report] = await cu.check_all()
        for _ in range(20):  # bounded: each round runs what is due, then moves the clock on
            await settle(w, rt)
            run = await rt.db.fetchone("SELECT * FROM catchup_runs WHERE id = ?",
                                       (report.run_id,))
            assert run is not None
            if run["finished_at"] is not None:
                break
            due = await rt.db.fetchone("SELECT min(run_at) FROM jobs WHERE state = 'ready'"
                                       " AND kind = 'catchup_backfill'")
            assert due is not None and due[0] is not None
            w.clock.advance(max(0.0, due[0] - w.clock()))
        assert run["finished_at"] is not None and run["error"] is None
        got = {r["mid"] for r in await rt.db.fetchall("SELECT mid FROM recovered_events")}
        assert got == {mid_of(p) for p in missed}
        return len(got), w.sandbox.meter.refused


async def test_the_catch_up_keeps_within_the_conversations_api_limit(tmp_path: Path) -> None:
    async with world(tmp_path, frozen=True, workflows=()) as w:
        assert await catch_up(w, other_app_calls=0) == (3, 0)


async def test_a_throttled_catch_up_backs_off_and_finishes(tmp_path: Path) -> None:
    async with world(tmp_path, frozen=True, workflows=()) as w:
        recovered, refused = await catch_up(w, other_app_calls=2)
        assert (recovered, refused) == (3, 1)


async def test_a_check_throttled_by_the_buc_budget_says_so_and_when_it_frees(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """subscribed_apps is a Graph call like any other, so it counts toward the BUC budget
    (reference §5.2: Instagram Platform requests fall under BUC limits); once that is spent,
    the daemon's subscription check names the throttling and the wait, not a failure."""
    async with world(tmp_path, frozen=True, workflows=()) as w, daemon(w, start=False) as rt:
        w.sandbox.limits = Limits(buc_calls_per_hour=2)
        await rt.graph.me(token=w.sandbox.token)
        with pytest.raises(Throttled):  # the second call spends the budget
            await rt.graph.me(token=w.sandbox.token)
        caplog.set_level(logging.INFO, "instaset.catchup")
        await CatchUp.for_runtime(rt).check_all()
        warned = [r.getMessage() for r in caplog.records if r.name == "instaset.catchup"
                  and "subscription" in r.getMessage()]
        assert warned == [f"account {ACCT}: the webhook subscription was not checked: Meta is "
                          "throttling this account's Graph calls (code 80002); the next check "
                          "asks again, the limit frees in 60 min"], warned
        assert w.sandbox.subscribed  # still subscribed: nothing was changed on a refusal
        # Found in review: each check of the episode (every 300 s) logged it again.
        cu = CatchUp.for_runtime(rt)  # the daemon's one instance, its first check
        caplog.set_level(logging.DEBUG, "instaset.catchup")
        caplog.clear()
        for _ in range(3):
            await cu.check_all()
        said = [(r.levelno, r.getMessage()) for r in caplog.records
                if r.name == "instaset.catchup" and "subscription" in r.getMessage()]
        assert [level for level, _ in said] == [logging.WARNING, logging.DEBUG, logging.DEBUG]
        w.sandbox.limits = None  # the budget frees
        await cu.check_all()
        assert caplog.records[-1].getMessage() == (
            f"account {ACCT}: the webhook subscription is checked again")
        w.sandbox.limits = Limits(buc_calls_per_hour=1)  # spent again (this hour's calls
        # count): a new episode, a new WARNING
        caplog.clear()
        await cu.check_all()
        assert [r.levelno for r in caplog.records if r.name == "instaset.catchup"
                and "not checked" in r.getMessage()] == [logging.WARNING]
