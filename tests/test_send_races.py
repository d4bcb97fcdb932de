"""Crash points and races on the sending side, found by the session-11 audit of "nothing
lost, nothing sent twice": the real daemon against the sandbox (``tests/sending_harness``).

A kill -9 is stood for by :class:`Crash`, a ``BaseException`` the worker does not catch
(like the process dying, nothing after it runs: the job stays ``running`` under its lease);
"restarting" is moving the shared clock past the lease, so the job is claimed again.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from instaset.sandbox import Fault
from tests.sending_harness import Harness, open_harness

IGSID = "1129842642640637"
HOUR = 3600.0
LEASE = 120.0  # past the worker's lease in the harness: a crashed job is claimed again


class Crash(BaseException):
    """Stands for kill -9: nothing after this point runs in the process."""


DRIP = [{"name": "drip", "trigger": {"dm": {"keywords": ["go"]}}, "actions": [
    {"reply": "first"}, {"delay": "23h"}, {"reply": "still there?"},
    {"notify": "followed up with the contact"},
    {"score": {"points": 5, "reason": "followed up"}}]}]


async def follow_ups(h: Harness) -> tuple[list[str], list[int], list[str]]:
    """The workflow's notifications, its lead points and the DMs the contact got. (A step
    refused because the window closed meanwhile is also told to the creator: kind
    'refused', not counted here.)"""
    notes = [str(r["text"]) for r in await h.rt.db.fetchall(
        "SELECT text FROM notifications WHERE kind = 'notify' ORDER BY id")]
    points = [int(r["points"]) for r in await h.rt.db.fetchall(
        "SELECT points FROM lead_facts WHERE source = 'workflow' ORDER BY rowid")]
    texts = [str(r.json["message"].get("text")) for r in h.graph_sends(IGSID)]
    return notes, points, texts


def crash_after_commit_of(h: Harness, kind: str) -> list[str]:
    """Wrap the job handler of ``kind`` so that the first COMMIT on the daemon's write
    connection after it started is followed by a kill -9 (the COMMIT itself is done).
    :func:`restart` undoes it."""
    worker, main = h.rt.worker, h.rt.db.main
    real_handler, real_execute = worker.handlers[kind], main.execute
    armed: list[str] = []

    async def handler(job: Any) -> Any:
        if not armed:
            armed.append(job.key)
        return await real_handler(job)

    async def execute(sql: str, *args: Any, **kw: Any) -> Any:
        cur = await real_execute(sql, *args, **kw)
        if sql == "COMMIT" and armed and armed[-1] != "crashed":
            armed.append("crashed")
            raise Crash(f"kill -9 right after the COMMIT of {armed[0]}")
        return cur

    worker.handlers[kind] = handler
    main.execute = execute  # type: ignore[method-assign]
    _real_handlers[kind] = real_handler
    return armed


_real_handlers: dict[str, Any] = {}


def restart(h: Harness, kind: str) -> None:
    """The real handler and write connection again, as in a restarted process."""
    h.rt.worker.handlers[kind] = _real_handlers.pop(kind)
    del h.rt.db.main.execute  # the instance attribute: the class's method again


async def test_resume_flow_decides_once_when_killed_right_after_its_commit(
    tmp_path: Path,
) -> None:
    """The step after a ``delay`` committed its decision, then the worker marked the job
    done in a second commit: a kill -9 between them made the restarted daemon decide the
    step again with its own clock (the 24 h window closed meanwhile), under new keys. The
    creator was notified twice and the lead scored twice."""
    async with open_harness(tmp_path, workflows=DRIP) as h:
        await h.dm(IGSID, "go")
        await h.settle()
        h.clock.advance(23 * HOUR + 1)  # the delay is over; the 24 h window still open
        armed = crash_after_commit_of(h, "resume_flow")
        with pytest.raises(Crash):
            await h.rt.worker.run_burst()
        assert armed[-1] == "crashed"
        restart(h, "resume_flow")
        h.clock.advance(HOUR)  # restarted an hour later: past the lease and the window
        h.rt.deliverer.started_at = h.clock()
        await h.settle(advance_up_to=60.0)
        notes, points, texts = await follow_ups(h)
    assert notes == ["followed up with the contact"]
    assert points == [5]
    # The follow-up was decided before the crash, but its send comes after the restart,
    # when the window has closed: refused then, not decided again.
    assert texts == ["first"]


async def test_resume_flow_decides_once_when_its_timeout_fires_during_the_commit(
    tmp_path: Path,
) -> None:
    """The same rerun without a crash: the job's timeout fired while its COMMIT ran in the
    database thread (the COMMIT still completes), so the job was retried and decided again
    after the window had closed: the DM refused, the notification and score at new keys."""
    async with open_harness(tmp_path, workflows=DRIP) as h:
        await h.dm(IGSID, "go")
        await h.settle()
        # The step runs just before the 24 h window closes; the retry would run after it.
        conv = await h.conversation(IGSID)
        h.clock.advance(float(conv["last_inbound_at"]) + 24 * HOUR - 0.3 - h.clock())
        worker, main = h.rt.worker, h.rt.db.main
        worker.settings = replace(worker.settings, job_timeout=0.5)
        real_handler, real_execute = worker.handlers["resume_flow"], main.execute
        slow: list[bool] = []

        async def handler(job: Any) -> Any:
            slow.append(True)
            return await real_handler(job)

        async def execute(sql: str, *args: Any, **kw: Any) -> Any:
            cur = await real_execute(sql, *args, **kw)
            if sql == "COMMIT" and slow:
                slow.clear()
                await asyncio.sleep(1.0)  # committed; its caller is still waiting
            return cur

        worker.handlers["resume_flow"] = handler
        main.execute = execute  # type: ignore[method-assign]
        await h.settle(advance_up_to=60.0)
        notes, points, texts = await follow_ups(h)
    assert notes == ["followed up with the contact"]
    assert points == [5]
    assert texts == ["first"]  # its send came after the window closed: refused


async def test_public_reply_after_a_delay_is_posted(tmp_path: Path) -> None:
    """The continuation had no comment, so a ``public_reply`` after a ``delay`` was always
    skipped."""
    flows = [{"name": "c2dm", "trigger": {"comment": {"keywords": ["guide"]}},
              "actions": [{"private_reply": "sent!"}, {"delay": "1m"},
                          {"public_reply": "Check your DMs"}]}]
    async with open_harness(tmp_path, workflows=flows) as h:
        posted = await h.sandbox.user_comments(IGSID, "guide pls", "17900000000000001")
        await h.settle()
        comment_id = str(posted["entry"][0]["changes"][0]["value"]["id"])  # type: ignore[index]
        assert not [c for c in h.sandbox.comments.values() if c.parent_id == comment_id]
        await h.settle(advance_up_to=120.0)
        replies = [c.text for c in h.sandbox.comments.values() if c.parent_id == comment_id]
    assert replies == ["Check your DMs"]


async def test_the_answered_text_reaches_the_step_after_a_delay(tmp_path: Path) -> None:
    """{text} after a delay: carried in the resume_flow job's payload."""
    flows = [{"name": "drip", "trigger": {"dm": {"keywords": ["guide"]}},
              "actions": [{"delay": "1h"}, {"reply": "About '{text}': did you read it?"}]}]
    async with open_harness(tmp_path, workflows=flows) as h:
        await h.dm(IGSID, "send the guide")
        await h.settle()
        await h.settle(advance_up_to=HOUR + 60)
        texts = [r.json["message"].get("text") for r in h.graph_sends(IGSID)]
    assert texts == ["About 'send the guide': did you read it?"]


async def test_a_new_contacts_second_message_waits_for_the_first(tmp_path: Path) -> None:
    """With ``{username}`` in a workflow, a new contact's first message waits for their
    profile (``first_plan``). Their second message was decided meanwhile: it took the
    welcome, and the first then matched nothing, so the guide was never sent."""
    flows = [
        {"name": "welcome", "trigger": {"first_message": True},
         "actions": [{"reply": "Welcome {username|friend}!"}]},
        {"name": "guide", "trigger": {"dm": {"keywords": ["guide"]}},
         "actions": [{"reply": "Here is the guide"}]},
    ]
    async with open_harness(tmp_path, workflows=flows) as h:
        await h.dm(IGSID, "hi")
        await h.dm(IGSID, "can I get the guide?")
        await h.settle(advance_up_to=10.0)
        texts = [r.json["message"].get("text") for r in h.graph_sends(IGSID)]
        row = await h.rt.db.fetchone("SELECT username FROM contacts WHERE id = ?", (IGSID,))
        username = row["username"] if row is not None else None
    assert username, "the sandbox's profile lookup gave no username"
    assert texts == [f"Welcome {username}!", "Here is the guide"]


async def test_a_new_contacts_burst_is_answered_in_order(tmp_path: Path) -> None:
    """Three messages while the first waits for the profile: the two later ones wait, and
    keep their order among themselves when the first is done (the session's review: one
    caught between two looks could be overtaken by the next)."""
    flows = [
        {"name": "welcome", "trigger": {"first_message": True},
         "actions": [{"reply": "Welcome {username|friend}!"}]},
        {"name": "guide", "trigger": {"dm": {"keywords": ["guide"]}},
         "actions": [{"reply": "Here is the guide"}]},
        {"name": "price", "trigger": {"dm": {"keywords": ["price"]}},
         "actions": [{"reply": "It is $90"}]},
    ]
    async with open_harness(tmp_path, workflows=flows) as h:
        h.sandbox.inject(Fault("delay", path_contains=f"/{IGSID}?", delay=1.0))  # slow lookup
        await h.dm(IGSID, "hi")
        await h.dm(IGSID, "the guide?")
        await h.dm(IGSID, "and the price?")
        await h.settle(advance_up_to=30.0)
        texts = [r.json["message"].get("text") for r in h.graph_sends(IGSID)]
    assert texts[1:] == ["Here is the guide", "It is $90"]
    assert texts[0].startswith("Welcome ")


async def test_a_message_retried_later_does_not_hold_up_the_next(tmp_path: Path) -> None:
    """The second review: with a profile lookup in the workflows, a returning contact's
    message waited behind any earlier unprocessed one, even one failing and retried with
    backoff (49 s with the defaults). Only an earlier one about to run holds it up now."""
    flows = [{"name": "hi", "trigger": {"dm": {"keywords": ["hi", "price"]}},
              "actions": [{"reply": "Hey {username|there}!"}]}]
    async with open_harness(tmp_path, workflows=flows) as h:
        await h.dm(IGSID, "hi")
        await h.settle(advance_up_to=10.0)
        sent = len(h.graph_sends(IGSID))
        await h.dm(IGSID, "hi again")  # its processing failed: retried in 10 minutes
        await h.rt.db.execute("UPDATE jobs SET run_at = run_at + 600 WHERE state = 'ready'"
                              " AND kind = 'process_event'")
        await h.dm(IGSID, "what is the price?")
        await h.settle()
        texts = [r.json["message"].get("text") for r in h.graph_sends(IGSID)][sent:]
    assert len(texts) == 1 and texts[0].startswith("Hey ")


async def lost_answer_and_echo(h: Harness, text: str) -> dict[str, object]:
    """Send ``text`` to the contact so that Meta delivers it but both our answer and its
    echo are lost; returns the echo's payload (for Meta's later retry)."""
    await h.dm(IGSID, "hello")
    await h.settle()
    webhook, h.sandbox.webhook_url = h.sandbox.webhook_url, "http://127.0.0.1:9/webhook"
    h.sandbox.delivery_attempts = 1
    h.sandbox.inject(Fault("drop_after_send", path_contains="/messages", times=1))
    await h.enqueue(h.text("c1", IGSID, text))
    await h.rt.worker.run_burst(max_rounds=1)
    await asyncio.wait_for(h.sandbox.drain(), timeout=10)
    (echo,) = [u.payload for u in h.sandbox.undelivered]
    h.sandbox.webhook_url = webhook
    return echo


async def test_a_late_echo_of_an_earlier_try_does_not_hand_the_thread_to_the_creator(
    tmp_path: Path,
) -> None:
    """A send whose answer was lost goes again after the echo wait (the documented
    duplicate window). When Meta's echo of the first try came after that, it was taken for
    the creator typing in the app: stored as theirs and automation paused for 12 h."""
    async with open_harness(tmp_path, graph_timeout=0.5) as h:
        echo = await lost_answer_and_echo(h, "only once please")
        await h.settle(advance_up_to=h.rt.deliverer.echo_wait + 60)
        assert len(h.graph_sends(IGSID)) == 2  # sent again: no echo within the wait
        assert await h.sandbox.deliver(echo) == 200
        await h.settle()
        conv = await h.conversation(IGSID)
        out = [(r["sent_by"], r["text"]) for r in await h.messages(IGSID, "out")]
    assert conv["paused_until"] is None
    assert out == [("automation", "only once please")] * 2


async def creator_types_the_same(h: Harness, text: str) -> tuple[bool, list[tuple[str, str]]]:
    """The creator types ``text`` in the app: (automation paused?, the outgoing history as
    (sent_by, text))."""
    await h.creator_types(IGSID, text)
    await h.settle()
    conv = await h.conversation(IGSID)
    out = [(str(r["sent_by"]), str(r["text"])) for r in await h.messages(IGSID, "out")]
    return conv["paused_until"] is not None, out


async def test_the_creator_typing_what_a_retried_send_said_still_hands_the_thread_over(
    tmp_path: Path,
) -> None:
    """The session's review: a first version took any echo matching a send tried more than
    once (here throttled once, then sent) for a late echo of ours, so the creator typing the
    same words in the app did not pause automation. Only a send that went again after an
    unknown outcome explains a late echo, and only one."""
    async with open_harness(tmp_path) as h:
        await h.dm(IGSID, "hello")
        await h.settle()
        h.sandbox.inject(Fault("graph_error", path_contains="/messages", status=403, code=4))
        await h.enqueue(h.text("c1", IGSID, "see you at 5"))
        await h.settle(advance_up_to=120.0)
        row = await h.send_row("c1")
        assert (row["state"], row["attempts"]) == ("sent", 2)
        paused, out = await creator_types_the_same(h, "see you at 5")
    assert paused
    assert out == [("automation", "see you at 5"), ("human", "see you at 5")]


async def test_a_try_that_never_reached_meta_explains_no_later_echo(tmp_path: Path) -> None:
    """The second review: a 5xx whose try never reached Meta (the usual case) left the send
    marked for 36 h, and the creator typing the same words afterwards was taken for it. A
    late echo is stamped by Meta when the try was made; what the creator types is later."""
    async with open_harness(tmp_path) as h:
        await h.dm(IGSID, "hello")
        await h.settle()
        h.sandbox.inject(Fault("status", path_contains="/messages", status=503))
        await h.enqueue(h.text("c1", IGSID, "see you at 5"))
        await h.settle(advance_up_to=h.rt.deliverer.echo_wait + 60)
        row = await h.send_row("c1")
        assert row["state"] == "sent" and row["unknown_at"] is not None
        h.clock.advance(60)  # a minute later
        paused, out = await creator_types_the_same(h, "see you at 5")
    assert paused
    assert out == [("automation", "see you at 5"), ("human", "see you at 5")]


async def test_a_late_echo_explains_one_echo_only(tmp_path: Path) -> None:
    """The late echo is ours; the creator typing the same words after it is the creator."""
    async with open_harness(tmp_path, graph_timeout=0.5) as h:
        echo = await lost_answer_and_echo(h, "only once please")
        await h.settle(advance_up_to=h.rt.deliverer.echo_wait + 60)
        assert await h.sandbox.deliver(echo) == 200
        await h.settle()
        assert (await h.conversation(IGSID))["paused_until"] is None
        h.clock.advance(60)
        await h.creator_types(IGSID, "only once please")  # a minute later, the creator
        await h.settle()
        conv = await h.conversation(IGSID)
        out = [r["sent_by"] for r in await h.messages(IGSID, "out")]
    assert conv["paused_until"] is not None
    assert out == ["automation", "automation", "human"]


async def test_an_echo_settling_a_send_just_before_its_call_stops_the_call(
    tmp_path: Path,
) -> None:
    """The echo of the first try was processed between the deliverer's checks and its
    Graph call: the ``in_flight`` update changed nothing (the row was ``sent``), but the
    call went out anyway."""
    async with open_harness(tmp_path, graph_timeout=0.5) as h:
        echo = await lost_answer_and_echo(h, "only once please")
        h.clock.advance(h.rt.deliverer.echo_wait + 5)  # the wait is over, no echo yet
        tokens = h.rt.deliverer.tokens
        real_token = tokens.token
        landed: list[str] = []

        async def token(acct: str) -> str | None:
            if not landed:
                # Meta's retry of the echo lands now, and the worker processes it.
                assert await h.sandbox.deliver(echo) == 200
                await h.rt.worker.run_burst()
                landed.append(str((await h.send_row("c1"))["state"]))
            return await real_token(acct)

        tokens.token = token  # type: ignore[method-assign]
        await h.settle()
        sends = len(h.graph_sends(IGSID))
        row = await h.send_row("c1")
    assert landed == ["sent"]
    assert sends == 1
    assert row["state"] == "sent"
