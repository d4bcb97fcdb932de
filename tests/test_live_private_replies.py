"""Private replies to live comments have their own budget (audit s16 finding 2).

Meta takes a private reply to a live comment only while the broadcast runs, at up to 100
calls/s; replies to post and reel comments have 750/h. A live comment's reply used to share
the hourly budget (``rate_limits.private_replies_per_hour``) and could wait an hour behind
the post replies, long after the broadcast ended. Now it goes under
``rate_limits.live_private_replies_per_second``, whether the workflow answers at once,
after a ``delay`` or with an AI reply; and it is not counted in the hourly budget that a
restart restores. The real daemon against the sandbox (on a frozen clock, but for the
draft, approved as `inbox approve` does).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from instaset.ai.feature import install_feature
from instaset.config import AIConfig
from instaset.drafts import approve
from instaset.engine.model import Workflow
from instaset.engine.settings import EngineSettings
from instaset.events import parse_webhook
from instaset.ratelimit import WINDOW_MARGIN
from instaset.replay import Replayer, StoredEvent
from instaset.sandbox import build_comment_payload
from tests.fake_gemini import DEADLINE_MS, FakeGemini, reply
from tests.sending_harness import ACCT, Clock, Harness, open_harness

POST, LIVE = "18000000000000001", "18000000000000055"
POST_GUIDE = {"name": "post-guide", "trigger": {"comment": {"keywords": ["guide"]}},
              "actions": [{"private_reply": "here is the guide"}]}
LIVE_GUIDE = {"name": "live-guide", "trigger": {"live_comment": {"keywords": ["livetest"]}},
              "actions": [{"private_reply": "here is the live guide"}]}
LIVE_LATER = {"name": "live-later", "trigger": {"live_comment": {"keywords": ["later"]}},
              "actions": [{"delay": "30s"}, {"private_reply": "a little later"}]}
LIVE_AI = {"name": "live-ai", "trigger": {"live_comment": {"keywords": ["price"]}},
           "actions": [{"ai_reply": "auto"}]}
LIVE_DRAFT = {"name": "live-draft", "trigger": {"live_comment": {"keywords": ["draft"]}},
              "actions": [{"ai_reply": "draft"}]}
HOURLY_WAIT = 3600 * WINDOW_MARGIN


def comment_payload(payload: dict[str, Any]) -> dict[str, Any]:
    return payload["entry"][0]["changes"][0]  # type: ignore[no-any-return]


async def live_comment(h: Harness, igsid: str, text: str) -> str:
    """``igsid`` comments ``text`` on the live video (a ``live_comments`` webhook, as Meta
    sends during a broadcast); the comment's id."""
    payload = await h.sandbox.user_comments(igsid, text, LIVE, deliver=False)
    change = comment_payload(payload)
    change["field"] = "live_comments"
    change["value"]["media"]["media_product_type"] = "LIVE"
    assert await h.post(payload) == 200
    return str(change["value"]["id"])


async def post_comment(h: Harness, igsid: str, text: str) -> str:
    payload = await h.sandbox.user_comments(igsid, text, POST)
    return str(comment_payload(payload)["value"]["id"])


async def state_of(h: Harness, key: str) -> tuple[str, str | None]:
    row = await h.send_row(key)
    job = await h.job_row(f"send:{key}")
    return str(row["state"]), job["last_error"]


def private_replies(h: Harness) -> list[tuple[str, float]]:
    """(comment id, sandbox time) of each private reply Meta received, in order."""
    return [(str(dict(r.json["recipient"])["comment_id"]), r.at)  # type: ignore[call-overload]
            for r in h.graph_sends() if "comment_id" in dict(r.json["recipient"])]  # type: ignore[call-overload]


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Harness]]]:
    async with contextlib.AsyncExitStack() as stack:
        count = 0

        async def make(**rate_limits: Any) -> Harness:
            nonlocal count
            count += 1
            return await stack.enter_async_context(open_harness(
                tmp_path, name=f"live{count}", clock=Clock(frozen=True),
                workflows=[POST_GUIDE, LIVE_GUIDE, LIVE_LATER], rate_limits=rate_limits))

        yield make


async def test_a_live_reply_does_not_wait_behind_the_hourly_budget(
        harness: Callable[..., Awaitable[Harness]]) -> None:
    h = await harness(private_replies_per_hour=1)
    t0 = h.clock()
    first = await post_comment(h, "9000000000000001", "guide please")
    second = await post_comment(h, "9000000000000002", "guide too")
    await h.settle()
    # The hour's one post reply went; the next waits for the hourly budget.
    assert await state_of(h, f"send:comment:{first}:0") == ("sent", None)
    assert await state_of(h, f"send:comment:{second}:0") == (
        "pending", "waiting for the rate budget")
    waiting = await h.job_row(f"send:send:comment:{second}:0")
    assert waiting["run_at"] == pytest.approx(t0 + HOURLY_WAIT, abs=1)

    live = await live_comment(h, "9000000000000003", "livetest!")
    await h.settle(advance_up_to=5)
    # Answered during the broadcast, without waiting for the post reply's hour.
    assert await state_of(h, f"send:live:{live}:0") == ("sent", None)
    assert h.sandbox.comments[live].private_replied
    assert [c for c, _ in private_replies(h)] == [first, live]
    assert h.clock() - t0 < 5
    # The post reply still waits for its hour: the live reply took nothing from it.
    assert await state_of(h, f"send:comment:{second}:0") == (
        "pending", "waiting for the rate budget")
    await h.settle(advance_up_to=HOURLY_WAIT)
    assert [c for c, _ in private_replies(h)] == [first, live, second]


async def test_live_replies_go_at_their_own_rate_per_second(
        harness: Callable[..., Awaitable[Harness]]) -> None:
    h = await harness(private_replies_per_hour=1, live_private_replies_per_second=2)
    t0 = h.clock()
    comments = [await live_comment(h, f"90000000000001{i:02d}", "livetest") for i in range(5)]
    await h.settle(advance_up_to=10)
    sent = private_replies(h)
    assert sorted(c for c, _ in sent) == sorted(comments)
    # Two per second (with the budgets' margin on the window), not one per hour.
    times = sorted(at - t0 for _, at in sent)
    step = WINDOW_MARGIN
    assert times == pytest.approx([0, 0, step, step, 2 * step], abs=0.01)


async def test_a_delayed_live_reply_keeps_the_live_budget(
        harness: Callable[..., Awaitable[Harness]]) -> None:
    h = await harness(private_replies_per_hour=1)
    t0 = h.clock()
    post = await post_comment(h, "9000000000000001", "guide")
    live = await live_comment(h, "9000000000000002", "later please")
    await h.settle(advance_up_to=60)
    # The workflow resumed after its 30 s delay and replied then, though the hourly budget
    # was spent on the post reply.
    assert [c for c, _ in private_replies(h)] == [post, live]
    assert private_replies(h)[1][1] == pytest.approx(t0 + 30, abs=1)
    [row] = await h.rt.db.fetchall(
        "SELECT key, state FROM sends WHERE comment_id = ? AND kind = 'private_reply'", (live,))
    assert row["state"] == "sent" and row["key"].startswith("send:resume:")


@contextlib.asynccontextmanager
async def with_ai(tmp_path: Path, clock: Clock | None = None) -> AsyncIterator[
        tuple[Harness, FakeGemini]]:
    """A harness whose hourly budget is 1, with the AI feature on a fake Gemini."""
    async with FakeGemini() as fake, open_harness(
            tmp_path, clock=clock, workflows=[POST_GUIDE, LIVE_AI, LIVE_DRAFT],
            rate_limits={"private_replies_per_hour": 1}) as h:
        h.rt.config = h.rt.config.model_copy(update={"ai": AIConfig.model_validate({
            "persona": "A coach.", "base_url": fake.url, "timeout_ms": DEADLINE_MS,
            "api_key_env": "TEST_GEMINI_KEY"})})
        install_feature(h.rt)
        yield h, fake


async def test_an_ai_reply_to_a_live_comment_keeps_the_live_budget(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_GEMINI_KEY", "test-key")
    async with with_ai(tmp_path, Clock(frozen=True)) as (h, fake):
        fake.script(reply("Thanks for asking! I will tell you all about it."))
        post = await post_comment(h, "9000000000000001", "guide")
        await h.settle()
        live = await live_comment(h, "9000000000000002", "price?")
        await h.settle(advance_up_to=5)
        assert [c for c, _ in private_replies(h)] == [post, live]
        [row] = await h.rt.db.fetchall(
            "SELECT state FROM sends WHERE comment_id = ? AND kind = 'private_reply'", (live,))
        assert row["state"] == "sent"


async def test_an_approved_draft_for_a_live_comment_keeps_the_live_budget(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_GEMINI_KEY", "test-key")
    async with with_ai(tmp_path) as (h, fake):
        fake.script(reply("Thanks for asking! I will tell you all about it."))
        post = await post_comment(h, "9000000000000001", "guide")
        live = await live_comment(h, "9000000000000002", "a draft please")
        await h.settle()
        [draft] = await h.rt.db.fetchall("SELECT id, comment_id FROM ai_drafts")
        assert draft["comment_id"] == live
        outcome = await approve(h.rt, draft["id"])
        # Out at once, though the post reply took the hour's one private reply.
        assert outcome.state == "sent"
        assert [c for c, _ in private_replies(h)] == [post, live]


def test_replay_notes_the_hourly_budget_for_post_replies_only() -> None:
    t0 = 1_717_408_800.0

    def event(n: int, field: str) -> StoredEvent:
        payload = build_comment_payload(ACCT, f"u{n}", f"name{n}", "guide livetest",
                                        LIVE if field == "live_comments" else POST,
                                        f"c-{n}", int(t0 + n * 60))
        comment_payload(payload)["field"] = field
        return StoredEvent(n, parse_webhook(payload)[0])

    wfs = [Workflow.model_validate(w) for w in (POST_GUIDE, LIVE_GUIDE, LIVE_LATER)]
    replayer = Replayer(wfs, lambda _acct: EngineSettings(ACCT), pause_for_seconds=3600,
                        private_replies_per_hour=1)
    events = [event(1, "comments"), event(2, "live_comments"), event(3, "comments")]
    report = replayer.run(events, {}, until=t0 + 3600)
    assert [(s.kind, s.outcome.workflow) for s in report.steps] == [
        ("comment", "post-guide"), ("live_comment", "live-guide"), ("comment", "post-guide")]
    assert [s.notes for s in report.steps] == [(), (), (
        "private reply held back 58 min by the 1/h budget (rate_limits.private_replies_per_hour)",
    )]
