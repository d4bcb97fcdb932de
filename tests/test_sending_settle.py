"""The sending side end to end, continued (tests/test_sending.py): how an unknown outcome is
settled by its echo, restarts, throttling past the attempts, sends two echoes could explain,
and the creator's own replies and pauses. The daemon against the built-in sandbox as a real
Graph server on 127.0.0.1; assertions on the sandbox's transcript and the daemon's records."""

from __future__ import annotations

import asyncio
import json

import pytest

from instaset.outbox import Outgoing
from instaset.pipeline import ECHO_SETTLE_SECONDS
from instaset.rules import SendKind
from instaset.sandbox import Fault, build_echo_payload
from instaset.sandbox.wire import new_mid
from instaset.store import ingest as ingest_module
from instaset.store.ingest import EventRow
from tests.sending_harness import (
    ACCT,
    GUIDE,
    GUIDE_TEXT,
    HOUR,
    IGSID,
    Clock,
    Harness,
    MakeHarness,
    body_of,
)


# -- regression: a send settled by its echo still releases the rest of its chain ------------
async def test_chain_continues_after_a_send_settled_by_its_echo(
    make_harness: MakeHarness,
) -> None:
    """Found by bench/soak.py: when a send's answer was lost and its echo marked it sent,
    the retried job returned early and the next send of the decision was never queued."""
    h = await make_harness(graph_timeout=0.5)
    await h.dm(IGSID, "hello")
    await h.settle()
    h.sandbox.inject(Fault(kind="drop_after_send", path_contains="/messages", times=1))
    await h.enqueue(h.text("c1", IGSID, "first part"), h.text("c2", IGSID, "second part"))
    await h.settle(advance_up_to=30.0)
    first, second = await h.send_row("c1"), await h.send_row("c2")
    assert (first["state"], second["state"]) == ("sent", "sent")
    texts = [m.text for m in h.sandbox.thread(IGSID) if m.direction == "out"]
    assert texts == ["first part", "second part"]  # each once, in order


@pytest.mark.parametrize("public", [False, True], ids=["dm-echo", "own-comment-webhook"])
async def test_stored_unprocessed_echo_settles_a_send_when_the_worker_is_behind(
    make_harness: MakeHarness, public: bool,
) -> None:
    """Found by bench/soak.py: with the worker far behind, a send whose answer was lost was
    sent again after ``echo_wait`` although Meta's echo of it (for a public reply: the
    webhook of our own comment) was already stored, just not processed yet: a duplicate,
    and a DM echo then looked like the creator's own message."""
    h = await make_harness(graph_timeout=0.5)
    await h.dm(IGSID, "hello")
    comment = await h.sandbox.user_comments(IGSID, "love it", "18000000000000001")
    await h.settle()
    comment_id = str(comment["entry"][0]["changes"][0]["value"]["id"])  # type: ignore[index]
    text = "only once please"
    if public:
        h.sandbox.inject(Fault("drop_after_send", path_contains="/replies", times=1))
        await h.enqueue(Outgoing(key="c1", kind=SendKind.PUBLIC_REPLY, account_id=ACCT,
                                 contact_id=IGSID, comment_id=comment_id, text=text))
    else:
        h.sandbox.inject(Fault(kind="drop_after_send", path_contains="/messages", times=1))
        await h.enqueue(h.text("c1", IGSID, text))
    await h.rt.worker.run_burst(max_rounds=1)  # the send times out: outcome unknown
    await asyncio.wait_for(h.sandbox.drain(), timeout=10)
    (stored,) = await h.rt.db.fetchall(
        "SELECT * FROM events WHERE kind = ? AND processed_at IS NULL",
        ("comment" if public else "echo",))
    # The worker is behind: processing the stored event is not due for an hour.
    await h.rt.db.execute("UPDATE jobs SET run_at = run_at + 3600 WHERE kind = 'process_event'"
                          " AND state = 'ready'")
    h.clock.advance(h.rt.deliverer.echo_wait + 60)
    await h.rt.worker.run_burst()

    if public:
        (meta_id,) = [c.id for c in h.sandbox.comments.values() if c.text == text]
    else:
        (meta_id,) = [m.mid for m in h.sandbox.thread(IGSID) if m.text == text]
    row = await h.send_row("c1")
    assert (row["state"], row["message_id"]) == ("sent", meta_id)
    h.clock.advance(3600)
    await h.settle()
    after = await h.rt.db.fetchone("SELECT processed_at FROM events WHERE id = ?",
                                   (stored["id"],))
    assert after is not None and after["processed_at"] is not None
    if not public:
        out = await h.messages(IGSID, "out")
        assert [(r["mid"], r["sent_by"]) for r in out] == [(meta_id, "automation")]
    assert (await h.conversation(IGSID))["paused_until"] is None


# -- session 5 review: throttling, local argument errors, restarts ------------------------------
async def test_throttling_longer_than_the_attempts_never_dead_letters(
    make_harness: MakeHarness,
) -> None:
    """Ten throttled answers in a row (more than a send job's 8 attempts): each one waits
    as Meta asks without counting as an attempt; the message goes out once it is over."""
    clock = Clock(frozen=True)
    h = await make_harness(clock=clock)
    await h.dm(IGSID, "hello")
    await h.settle()
    usage = json.dumps({"call_count": 100, "total_cputime": 20, "total_time": 30})
    h.sandbox.inject(Fault("graph_error", path_contains="/messages", status=403, code=4,
                           times=10, headers={"X-App-Usage": usage}))
    await h.enqueue(h.text("patient", IGSID, "worth the wait"))
    await h.settle(advance_up_to=120.0)
    row, job = await h.send_row("patient"), await h.job_row("send:patient")
    assert (row["state"], job["state"], job["attempts"]) == ("sent", "done", 1)
    assert len(h.graph_sends(IGSID)) == 11
    assert [m.text for m in h.sandbox.thread(IGSID) if m.direction == "out"] == [
        "worth the wait"]


async def test_a_send_graph_refuses_locally_fails_at_once_and_the_chain_goes_on(
    make_harness: MakeHarness,
) -> None:
    """A button template whose text is over Meta's 640 characters (a template filled in
    after validation can get there): no request, the send fails as invalid_request
    instead of sitting in_flight, and the next link of its chain is still sent."""
    h = await make_harness()
    await h.dm(IGSID, "hello")
    await h.settle()
    template = json.dumps({"type": "button", "text": "x" * 641,
                           "buttons": [{"type": "postback", "title": "Go", "payload": "GO"}]})
    await h.enqueue(
        Outgoing(key="tpl", kind=SendKind.TEMPLATE, account_id=ACCT, contact_id=IGSID,
                 template=template),
        h.text("after", IGSID, "and then this"),
    )
    await h.settle()
    row, job = await h.send_row("tpl"), await h.job_row("send:tpl")
    assert (row["state"], row["reason"], job["state"]) == ("failed", "invalid_request", "done")
    assert (await h.send_row("after"))["state"] == "sent"
    assert body_of(h, IGSID) == [{"recipient": {"id": IGSID},
                                  "message": {"text": "and then this"}}]


async def test_after_a_restart_an_unknown_outcome_waits_for_its_echo_again(
    make_harness: MakeHarness,
) -> None:
    """Meta carried out the send but its answer was lost, and the daemon was down for long
    enough that the in_flight mark is older than the echo wait. Meta could not deliver the
    echo meanwhile, so the new process waits for it before sending again; the echo then
    settles the send. One message, recorded as automation, no handoff pause."""
    h = await make_harness(graph_timeout=0.5)
    await h.dm(IGSID, "hello")
    await h.settle()
    webhook, h.sandbox.webhook_url = h.sandbox.webhook_url, "http://127.0.0.1:9/webhook"
    h.sandbox.delivery_attempts = 1
    h.sandbox.inject(Fault("drop_after_send", path_contains="/messages", times=1))
    await h.enqueue(h.text("c1", IGSID, "only once please"))
    await h.rt.worker.run_burst(max_rounds=1)  # the answer is lost: outcome unknown
    await asyncio.wait_for(h.sandbox.drain(), timeout=10)
    (echo,) = [u.payload for u in h.sandbox.undelivered]
    assert (await h.send_row("c1"))["state"] == "in_flight"

    h.clock.advance(3600)  # the daemon was down for an hour
    h.rt.deliverer.started_at = h.clock()  # as a new process's deliverer has it
    await h.rt.worker.run_burst()
    assert len(h.graph_sends(IGSID)) == 1  # not sent again yet
    h.sandbox.webhook_url = webhook
    assert await h.sandbox.deliver(echo) == 200  # Meta's retry of the echo
    await h.settle(advance_up_to=h.rt.deliverer.echo_wait + 60)

    (mid,) = [m.mid for m in h.sandbox.thread(IGSID) if m.direction == "out"]
    assert len(h.graph_sends(IGSID)) == 1
    row = await h.send_row("c1")
    assert (row["state"], row["message_id"]) == ("sent", mid)
    out = await h.messages(IGSID, "out")
    assert [(r["mid"], r["sent_by"]) for r in out] == [(mid, "automation")]
    assert (await h.conversation(IGSID))["paused_until"] is None


async def test_the_last_failed_try_records_a_verdict_and_the_chain_goes_on(
    make_harness: MakeHarness,
) -> None:
    """Every one of a send's 8 tries gets a server error: the job is not dead-lettered with
    its chain stuck behind it. The send stays in_flight (Meta may have carried out any of
    those tries: an echo would still settle it) and the next link is sent."""
    clock = Clock(frozen=True)
    h = await make_harness(clock=clock, worker={"backoff_base": 2.0, "backoff_cap": 60})
    await h.dm(IGSID, "hello")
    await h.settle()
    h.sandbox.inject(Fault("status", path_contains="/messages", times=8, status=500))
    await h.enqueue(h.text("doomed", IGSID, "never arrives"), h.text("next", IGSID, "I do"))
    await h.settle(advance_up_to=h.rt.deliverer.echo_wait + 120, max_rounds=2000)
    row, job = await h.send_row("doomed"), await h.job_row("send:doomed")
    assert (row["state"], row["attempts"], job["state"], job["attempts"]) == (
        "in_flight", 8, "done", 8)
    assert (await h.send_row("next"))["state"] == "sent"
    assert [m.text for m in h.sandbox.thread(IGSID) if m.direction == "out"] == ["I do"]


async def test_a_stored_echo_settles_an_image_send_too(make_harness: MakeHarness) -> None:
    """The worker is behind and an image send's answer was lost: its stored, unprocessed
    echo (an image attachment, no text) settles it, as for a text (it was sent again)."""
    h = await make_harness(graph_timeout=0.5)
    await h.dm(IGSID, "hello")
    await h.settle()
    h.sandbox.inject(Fault(kind="drop_after_send", path_contains="/messages", times=1))
    await h.enqueue(Outgoing(key="img", kind=SendKind.MEDIA, account_id=ACCT, contact_id=IGSID,
                             media_type="image", media_url="https://example.com/menu.png"))
    await h.rt.worker.run_burst(max_rounds=1)  # the send times out: outcome unknown
    await asyncio.wait_for(h.sandbox.drain(), timeout=10)
    await h.rt.db.execute("UPDATE jobs SET run_at = run_at + 3600 WHERE kind = 'process_event'"
                          " AND state = 'ready'")
    h.clock.advance(h.rt.deliverer.echo_wait + 60)
    await h.rt.worker.run_burst()
    (mid,) = [m.mid for m in h.sandbox.thread(IGSID) if m.direction == "out"]
    row = await h.send_row("img")
    assert (row["state"], row["message_id"]) == ("sent", mid)
    assert len(h.graph_sends(IGSID)) == 1


async def test_an_echo_still_staged_by_ingest_under_load_settles_the_send(
    make_harness: MakeHarness, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found in review: under sustained load ingest stages events (store/ingest.py), and
    the echo check read only ``events``: the staged echo was missed and the image went twice.
    Here a phantom request always waits (staged rows move only in the writer's share) and a
    burst of other people's messages was staged just before the echo."""
    h = await make_harness(graph_timeout=0.5)
    await h.dm(IGSID, "hello")
    await h.settle()
    w = h.rt.writer
    w._waiting += 1  # a request always waiting for its commit: no calm to move in
    monkeypatch.setattr(ingest_module, "MOVE_EVERY", 3600.0)  # nor a periodic move
    try:
        await asyncio.gather(*(w.submit([EventRow(f"msg:fill{i}", ACCT, "message",
                                                  f"9{i:05d}", 1.0,
                                                  json.dumps({"mid": f"fill{i}"}))])
                               for i in range(1000)))
        h.sandbox.inject(Fault(kind="drop_after_send", path_contains="/messages", times=1))
        await h.enqueue(Outgoing(key="img", kind=SendKind.MEDIA, account_id=ACCT,
                                 contact_id=IGSID, media_type="image",
                                 media_url="https://example.com/menu.png"))
        await h.rt.worker.run_burst(max_rounds=1)  # the send times out: outcome unknown
        await asyncio.wait_for(h.sandbox.drain(), timeout=10)  # its echo: acknowledged
        staged = await h.rt.db.fetchone(
            "SELECT count(*) FROM staged_events WHERE kind = 'echo'")
        assert staged is not None and staged[0] == 1  # the case under test: still staged
        h.clock.advance(h.rt.deliverer.echo_wait + 60)
        await h.rt.worker.run_burst()
    finally:
        w._waiting -= 1
    (mid,) = [m.mid for m in h.sandbox.thread(IGSID) if m.direction == "out"]
    row = await h.send_row("img")
    assert (row["state"], row["message_id"]) == ("sent", mid)
    assert len(h.graph_sends(IGSID)) == 1


async def test_the_creators_photo_is_not_taken_for_our_template(make_harness: MakeHarness,
                                                                ) -> None:
    """A template send whose outcome is unknown, and the creator sends a photo from the app:
    the photo's echo (no text, an image) is the creator's (handoff pause), not our template;
    and the pause does not refuse the template while its echo may still come."""
    h = await make_harness(graph_timeout=0.5)
    h.rt.deliverer.echo_wait = 60.0
    await h.dm(IGSID, "hello")
    await h.settle()
    h.sandbox.inject(Fault(kind="drop_after_send", path_contains="/messages", times=1,
                           delay=30.0))
    template = json.dumps({"type": "button", "text": "Pick one",
                           "buttons": [{"type": "postback", "title": "Go", "payload": "GO"}]})
    await h.enqueue(Outgoing(key="tpl", kind=SendKind.TEMPLATE, account_id=ACCT,
                             contact_id=IGSID, template=template))
    h.sandbox.echo_delay = 600.0  # our template's own echo comes (much) later
    await h.rt.worker.run_burst(max_rounds=1)  # times out: outcome unknown
    assert (await h.send_row("tpl"))["state"] == "in_flight"
    photo = build_echo_payload(ACCT, IGSID, {"attachment": {
        "type": "image", "payload": {"url": "https://cdn.example/selfie.jpg"}}},
        "creator-photo-mid", int(h.clock() * 1000))
    assert await h.post(photo) == 200
    await h.rt.worker.run_burst()  # the echo waits a moment for the in-flight send first
    h.clock.advance(ECHO_SETTLE_SECONDS + 1)
    await h.rt.worker.run_burst()
    row = await h.send_row("tpl")
    assert (row["state"], row["message_id"]) == ("in_flight", None)
    out = await h.messages(IGSID, "out")
    assert [(r["mid"], r["sent_by"]) for r in out] == [("creator-photo-mid", "human")]
    assert (await h.conversation(IGSID))["paused_until"] is not None


# -- an echo that two sends in flight could both explain ---------------------------------------
async def echo_stored(h: Harness, before: int) -> str:
    """Wait (bounded) until the sandbox has delivered one more echo than ``before``; its mid."""
    for _ in range(500):
        echoes = await h.echo_events(IGSID)
        if len(echoes) > before:
            raw = json.loads(echoes[-1]["raw"])
            return str(raw["entry"][0]["messaging"][0]["message"]["mid"])
        await asyncio.sleep(0.01)
    raise AssertionError("no echo came")


TWICE = "same words twice"


async def first_try_failed(make_harness: MakeHarness) -> tuple[Harness, Clock]:
    """A contact in the window, and send a of :data:`TWICE` whose try got a 500 (Meta did not
    deliver it, which instaset cannot know: in flight, outcome unknown). Frozen clock."""
    clock = Clock(frozen=True)
    h = await make_harness(clock=clock)
    await h.dm(IGSID, "hello")
    await h.settle()
    h.sandbox.inject(Fault("status", path_contains="/messages", times=1, status=500))
    await h.enqueue(h.text("a", IGSID, TWICE))
    await h.rt.worker.run_burst()
    return h, clock


@pytest.mark.parametrize("answered", [True, False], ids=["answer-comes", "no-answer"])
async def test_an_echo_two_identical_sends_in_flight_could_be_waits_for_their_answers(
    make_harness: MakeHarness, answered: bool,
) -> None:
    """Send a of a text got a 500 (never delivered: outcome unknown, in flight); then send b
    of the same text to the same contact goes out, and its echo comes before its answer, as
    it often does. Claiming the echo for the oldest send (as the echo and a's retry both
    did) marked a as sent although it never went: never sent again. Now, while the echo is
    younger than ECHO_SETTLE_SECONDS, neither claims it; b's answer does. With no answer
    ever, the oldest gets it after that, as before."""
    h, clock = await first_try_failed(make_harness)
    assert (await h.send_row("a"))["state"] == "in_flight"
    clock.advance(10)
    # b reaches Meta, which echoes it, then answers 1.5 s later (or never: the connection drops).
    h.sandbox.inject(Fault("drop_after_send", path_contains="/messages", times=1,
                           delay=1.5 if answered else 0.0))
    before = len(await h.echo_events(IGSID))
    await h.enqueue(h.text("b", IGSID, TWICE))
    b_call = asyncio.create_task(h.rt.worker.run_burst())
    mid = await echo_stored(h, before)
    await h.rt.worker.run_burst()  # the echo: two sends could be its origin, it waits
    clock.advance(5)  # a's wait for its own echo is over: its retry finds this one, waits too
    await h.rt.worker.run_burst()
    assert [(await h.send_row(k))["state"] for k in "ab"] == ["in_flight", "in_flight"]
    await b_call
    if answered:
        assert ((await h.send_row("b"))["state"], (await h.send_row("b"))["message_id"]) == (
            "sent", mid)
        await h.settle(advance_up_to=60.0)
        a = await h.send_row("a")
        assert a["state"] == "sent" and a["message_id"] not in (None, mid)  # sent again
        assert len(h.graph_sends(IGSID)) == 3  # a's 500, b, a's second try
    else:
        clock.advance(ECHO_SETTLE_SECONDS)
        await h.rt.worker.run_burst()
        a = await h.send_row("a")
        assert (a["state"], a["message_id"]) == ("sent", mid)  # nobody claimed it: the oldest
    out = [r for r in await h.messages(IGSID, "out") if r["mid"] == mid]
    assert [r["sent_by"] for r in out] == ["automation"]  # ours either way
    assert (await h.conversation(IGSID))["paused_until"] is None  # not the creator typing


@pytest.mark.parametrize("where", ["behind", "staged"])
async def test_a_retry_takes_an_echo_another_send_could_explain_only_once_it_settled(
    make_harness: MakeHarness, where: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The retry's side of the test above, with nobody ever answering b's call: a's retry
    (its own echo wait over) finds b's echo stored and not processed (the worker is an hour
    behind, or ingest keeps it staged under load), and waits while the echo is younger than
    ECHO_SETTLE_SECONDS; then it takes it, as the oldest send, and b goes again. A wait
    that never ended, or a staged echo that never waited, would fail here."""
    h, clock = await first_try_failed(make_harness)
    clock.advance(10)
    w = h.rt.writer
    w._waiting += 1  # a request always waiting for its commit: staged rows stay staged
    # ...and no periodic move (every MOVE_EVERY under load) either: on a busy machine the
    # fill rows moved before the echo came, which then went straight into events.
    monkeypatch.setattr(ingest_module, "MOVE_EVERY", 3600.0)
    try:
        if where == "staged":  # ingest under load: what comes now is staged
            await asyncio.gather(*(w.submit([EventRow(f"msg:fill{i}", ACCT, "message",
                                                      f"9{i:05d}", 1.0,
                                                      json.dumps({"mid": f"fill{i}"}))])
                                   for i in range(8)))
        h.sandbox.inject(Fault("drop_after_send", path_contains="/messages", times=1))
        await h.enqueue(h.text("b", IGSID, TWICE))
        await h.rt.worker.run_burst(max_rounds=1)  # b goes out, its answer is lost
        await asyncio.wait_for(h.sandbox.drain(), timeout=10)  # its echo: acknowledged
        (echo_mid,) = [m.mid for m in h.sandbox.thread(IGSID) if m.direction == "out"]
        if where == "behind":
            await h.rt.db.execute("UPDATE jobs SET run_at = run_at + 3600"
                                  " WHERE kind = 'process_event' AND state = 'ready'")
        else:
            staged = await h.rt.db.fetchone(
                "SELECT count(*) FROM staged_events WHERE kind = 'echo'")
            assert staged is not None and staged[0] == 1
        echo_at = clock()
        states: dict[float, str] = {}
        while clock() <= echo_at + ECHO_SETTLE_SECONDS + 2:
            await h.rt.worker.run_burst()
            states[clock() - echo_at] = (await h.send_row("a"))["state"]
            clock.advance(1.0)
    finally:
        w._waiting -= 1
    # a's own echo wait ended 5 s after the echo came; it waited 5 s more, then took it.
    assert {t for t, s in states.items() if s == "in_flight"} == set(
        float(t) for t in range(int(ECHO_SETTLE_SECONDS)))
    a = await h.send_row("a")
    assert (a["state"], a["message_id"]) == ("sent", echo_mid)
    await h.settle(advance_up_to=60.0)
    b = await h.send_row("b")
    assert b["state"] == "sent" and b["message_id"] != echo_mid  # b went again
    assert len(h.graph_sends(IGSID)) == 3  # a's 500, b's lost answer, b again
    assert (await h.conversation(IGSID))["paused_until"] is None


# -- a creator's own reply never shortens a pause (handoff review, session 15) ---------------
REFUND = {"name": "refund", "trigger": {"dm": {"keywords": ["refund"]}},
          "actions": [{"reply": "A human will take care of it"},
                      {"handoff": {"pause_for": "7d"}}]}


async def test_a_creator_reply_keeps_a_longer_handoff_pause(make_harness: MakeHarness) -> None:
    clock = Clock(frozen=True)
    h = await make_harness(workflows=[REFUND, GUIDE], clock=clock, pause_for="12h")
    await h.dm(IGSID, "I want a refund")
    await h.settle()
    week = clock() + 7 * 24 * HOUR
    assert (await h.conversation(IGSID))["paused_until"] == pytest.approx(week)

    await h.creator_types(IGSID, "Hi, sorry about that, looking into it")
    await h.settle()
    assert (await h.conversation(IGSID))["paused_until"] == pytest.approx(week)  # not 12 h

    clock.advance(13 * HOUR)  # past the creator's 12 h, inside the workflow's week
    await h.dm(IGSID, "guide")
    await h.settle()
    assert [b["message"] for b in body_of(h, IGSID)] == [{"text": "A human will take care of it"}]


async def test_a_creator_reply_processed_late_pauses_from_when_they_typed(
        make_harness: MakeHarness) -> None:
    """A creator's message delivered (or processed) 11 h late pauses the thread for the hour
    left of its 12 h, as `workflows replay` counts it, not for 12 h from now."""
    clock = Clock(frozen=True)
    h = await make_harness(workflows=[GUIDE], clock=clock, pause_for="12h")
    await h.dm(IGSID, "hello")
    await h.settle()
    typed_at = clock() - 11 * HOUR
    payload = build_echo_payload(ACCT, IGSID, {"text": "hey! (typed during the outage)"},
                                 new_mid(ACCT), int(typed_at * 1000))
    assert await h.post(payload) == 200
    await h.settle()
    assert (await h.conversation(IGSID))["paused_until"] == pytest.approx(typed_at + 12 * HOUR)

    clock.advance(HOUR + 60)
    await h.dm(IGSID, "guide")
    await h.settle()
    assert body_of(h, IGSID) == [{"recipient": {"id": IGSID}, "message": {"text": GUIDE_TEXT}}]


ASK_EMAIL = {"name": "email", "trigger": {"dm": {"keywords": ["bonus"]}},
             "actions": [{"ask": {"field": "email", "type": "email",
                                  "prompt": "What's your email?"}},
                         {"reply": "Thanks!"}]}


async def test_a_question_asked_before_the_creator_took_over_is_dropped(
        make_harness: MakeHarness) -> None:
    """After the pause, the contact's next message is not taken as the answer to a question
    asked before the creator answered them (it got "that doesn't look like an email")."""
    clock = Clock(frozen=True)
    h = await make_harness(workflows=[ASK_EMAIL], clock=clock, pause_for="12h")
    await h.dm(IGSID, "bonus please")
    await h.settle()
    clock.advance(60)
    await h.creator_types(IGSID, "I'll send it to you myself")
    await h.settle()
    clock.advance(13 * HOUR)
    await h.dm(IGSID, "thanks so much, loved it")
    await h.settle()
    texts = [b["message"]["text"] for b in body_of(h, IGSID)]  # type: ignore[index]
    assert texts == ["What's your email?"]
    state = json.loads((await h.conversation(IGSID))["state"])
    assert state["awaiting"] is None


# -- refusals the creator is told about (handoff review, session 15) ----------------------------
async def test_an_automation_send_refused_for_a_closed_window_is_told_once_a_day(
        make_harness: MakeHarness) -> None:
    clock = Clock(frozen=True)
    h = await make_harness(workflows=[GUIDE], clock=clock)
    await h.dm(IGSID, "hello")
    await h.settle()
    clock.advance(25 * HOUR)
    await h.enqueue(h.text("late", IGSID, "sorry, late answer", workflow="guide"))
    await h.enqueue(h.text("later", IGSID, "still there?", workflow="guide"))
    await h.settle()
    rows = await h.rt.db.fetchall("SELECT key, state, reason FROM sends ORDER BY key")
    assert [tuple(r) for r in rows] == [("late", "refused", "window_closed"),
                                        ("later", "refused", "window_closed")]
    notes = await h.rt.db.fetchall("SELECT kind, text FROM notifications")
    assert [n["kind"] for n in notes] == ["refused"]  # once for the contact and the day
    assert "workflow guide" in notes[0]["text"] and "window_closed" in notes[0]["text"]
    assert IGSID in notes[0]["text"]


async def test_a_queued_inbox_reply_that_fails_later_gives_the_pause_back_and_says_so(
        make_harness: MakeHarness) -> None:
    """`inbox reply` that came back "queued" (the daemon sends it later) and then failed
    kept the 12 h pause, and nobody was told: the contact got neither the human's answer
    nor automation."""
    from instaset import inbox

    h = await make_harness(workflows=[GUIDE], pause_for="12h")
    await h.dm(IGSID, "hello")
    await h.settle()
    ref = await inbox.resolve_contact(h.rt.db, IGSID)
    out = await inbox.reply(h.rt, ref, "I'll answer properly", wait=0)
    assert out.state == "queued"
    assert (await h.conversation(IGSID))["paused_until"] is not None
    h.sandbox.inject(Fault("graph_error", path_contains="/messages", times=5, status=400,
                           code=551, message="This person isn't available right now."))
    await h.settle()
    [send] = await h.rt.db.fetchall("SELECT sent_by, state FROM sends")
    assert tuple(send) == ("human", "failed")
    conv = await h.conversation(IGSID)
    assert conv["paused_until"] is None  # as before the reply
    [note] = await h.rt.db.fetchall("SELECT kind, text FROM notifications")
    assert note["kind"] == "refused" and "I'll answer properly" in note["text"]


async def test_a_delayed_step_the_engine_refuses_after_the_window_is_told(
        make_harness: MakeHarness) -> None:
    """A step that comes due after the 24 h window is refused by the engine itself (no send
    row): it was a trace line only, and the creator never knew the follow-up did not go."""
    clock = Clock(frozen=True)
    late = {"name": "late", "trigger": {"dm": {"keywords": ["go"]}},
            "actions": [{"reply": "first"}, {"delay": "25h"}, {"reply": "a day later"}]}
    h = await make_harness(workflows=[late], clock=clock)
    await h.dm(IGSID, "go")
    await h.settle()
    clock.advance(25 * HOUR + 1)
    await h.settle()
    assert [b["message"] for b in body_of(h, IGSID)] == [{"text": "first"}]
    [note] = await h.rt.db.fetchall("SELECT kind, text FROM notifications")
    assert note["kind"] == "refused" and "Workflow late" in note["text"]
    assert "24 h window closed" in note["text"]


def test_only_the_first_part_of_a_long_human_reply_gives_the_pause_back() -> None:
    """Fix review 2: every part of a split reply carried the undo; a later part failing
    after the first went out took the pause away although the creator's reply was out."""
    from instaset.outbox import Outgoing, split_parts

    out = Outgoing("human:k", SendKind.TEXT, ACCT, IGSID, text="word " * 600,
                   sent_by="human", undo_pause=(2.0, None, 1))
    parts = split_parts(out)
    assert len(parts) >= 2
    assert [p.undo_pause for p in parts] == [(2.0, None, 1)] + [None] * (len(parts) - 1)
    from instaset.refusals import refusal_notice

    keys = {refusal_notice(p, "failed", "user_unavailable", "gone", 1.0).key  # type: ignore[union-attr]
            for p in parts}
    assert keys == {"notify:reply-not-sent:human:k"}  # one notice per reply
