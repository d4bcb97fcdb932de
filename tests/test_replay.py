"""Replay: the workflows over the stored history, and the difference a candidate config makes.

The history is made by the real daemon: signed webhooks from the sandbox through the
pipeline, the engine, the outbox and the Send API (tests/sending_harness.py). Replay then
runs while the daemon is still up, and must reproduce what the daemon actually sent.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from instaset.cli import app, hoist_config
from instaset.config import Config
from instaset.engine.actions import PrivateReply, SendText
from instaset.engine.model import Workflow
from instaset.engine.settings import EngineSettings
from instaset.events import parse_webhook
from instaset.outbox import Outgoing
from instaset.replay import (
    History,
    Replayer,
    StoredEvent,
    describe_action,
    load_history,
    offline_ai,
    replay_config,
)
from instaset.replay_diff import diff
from instaset.sandbox import build_comment_payload, build_dm_payload, build_echo_payload
from tests.sending_harness import ACCT, Harness, open_harness

FAR_FUTURE = 4_102_444_800.0  # 2100-01-01: "until" that includes everything stored

WORKFLOWS: list[dict[str, Any]] = [
    {"name": "free-guide", "priority": 10, "trigger": {"dm": {"keywords": ["guide"]}},
     "actions": [{"reply": "Here's the free guide: https://example.com/guide"},
                 {"tag": "guide"}]},
    {"name": "comment-to-dm", "trigger": {"comment": {"keywords": ["guide"]}},
     "actions": [{"private_reply": "Sent you the guide!"},
                 {"public_reply": "Check your DMs 📩"}]},
    {"name": "fallback", "trigger": {"fallback": True},
     "actions": [{"reply": "Thanks for your message!"}]},
]


def candidate_workflows() -> list[dict[str, Any]]:
    """The same workflows with free-guide's keyword changed from "guide" to "ebook"."""
    wfs = copy.deepcopy(WORKFLOWS)
    wfs[0]["trigger"]["dm"]["keywords"] = ["ebook"]
    return wfs


@dataclass
class Scene:
    h: Harness
    keys: dict[str, str]  # label -> dedupe key of the event


async def _dm(h: Harness, igsid: str, text: str) -> str:
    payload = await h.dm(igsid, text)
    await h.settle()
    return str(parse_webhook(payload)[0].dedupe_key)


@pytest.fixture
async def scene(tmp_path: Path) -> AsyncIterator[Scene]:
    async with open_harness(tmp_path, workflows=WORKFLOWS) as h:
        keys = {
            "u1 guide": await _dm(h, "u1", "can I get the guide?"),
            "u2 hello": await _dm(h, "u2", "hello"),
        }
        payload = await h.sandbox.user_comments("u3", "GUIDE please 🔥", "17900000000000001")
        await h.settle()
        keys["u3 comment"] = parse_webhook(payload)[0].dedupe_key
        keys["u2 guide"] = await _dm(h, "u2", "guide")
        keys["u4 ebook"] = await _dm(h, "u4", "I want the ebook")
        keys["u5 hi"] = await _dm(h, "u5", "hi")
        await h.creator_types("u5", "Hey, it's me, the human")
        await h.settle()
        keys["u5 guide"] = await _dm(h, "u5", "guide")  # paused: the creator took over
        yield Scene(h, keys)


def _config(h: Harness, workflows: list[dict[str, Any]], source: Path | None = None) -> Config:
    cfg = Config.model_validate({**h.config.model_dump(mode="json", by_alias=True,
                                                       exclude={"source"}),
                                 "workflows": workflows})
    return cfg.model_copy(update={"source": source})


async def _history(h: Harness) -> History:
    return await load_history(h.rt.db, since=None, until=FAR_FUTURE)


async def test_replay_reproduces_what_the_daemon_sent(scene: Scene) -> None:
    h = scene.h
    report = replay_config(h.config, await _history(h))
    # What the daemon really sent, per contact, in order (DMs, private and public replies).
    sent: dict[str, list[tuple[str | None, str | None, str | None]]] = {}
    for row in await h.rt.db.fetchall("SELECT body FROM sends ORDER BY created_at, key"):
        out = Outgoing.from_json(row["body"])
        assert out.contact_id is not None
        sent.setdefault(out.contact_id, []).append((out.workflow, out.kind.value, out.text))
    replayed: dict[str, list[tuple[str | None, str | None, str | None]]] = {}
    kinds = {"send_text": "text", "private_reply": "private_reply",
             "public_reply": "public_reply"}
    for step in report.steps:
        for a in step.outcome.messages:
            d = a.to_dict()
            replayed.setdefault(step.contact_id, []).append(
                (step.outcome.workflow, kinds[d["type"]], d.get("text")))
    assert replayed == sent
    assert sent["u5"] == [("fallback", "text", "Thanks for your message!")]  # paused after
    by_key = {s.key: s for s in report.steps}
    paused = by_key[scene.keys["u5 guide"]].outcome
    assert paused.workflow is None and paused.trace[0].startswith("paused until ")
    assert {k: (v.fired, v.messages) for k, v in report.counts().items()} == {
        "comment-to-dm": (1, 2), "fallback": (3, 3), "free-guide": (2, 2),
    }


async def test_a_changed_keyword_changes_exactly_the_affected_events(scene: Scene) -> None:
    h, keys = scene.h, scene.keys
    history = await _history(h)
    current = replay_config(h.config, history)
    candidate = replay_config(_config(h, candidate_workflows()), history)
    result = diff(current, candidate)
    assert [c.step.key for c in result.changes] == [
        keys["u1 guide"], keys["u2 guide"], keys["u4 ebook"]]
    to_fallback = ('would now reply "Thanks for your message!" (fallback) where it replied '
                   '"Here\'s the free guide: https://example.com/guide" (free-guide)')
    to_guide = ('would now reply "Here\'s the free guide: https://example.com/guide" '
                '(free-guide) where it replied "Thanks for your message!" (fallback)')
    assert [c.describe() for c in result.changes] == [to_fallback, to_fallback, to_guide]
    counts = result.to_json()["counts"]
    assert {n: (c["current"]["fired"], c["candidate"]["fired"]) for n, c in counts.items()} == {
        "comment-to-dm": (1, 1), "fallback": (3, 4), "free-guide": (2, 1)}
    # the unchanged config makes no difference at all
    assert diff(current, replay_config(_config(h, WORKFLOWS), history)).changes == ()


async def test_replay_twice_gives_identical_output_and_writes_nothing(scene: Scene) -> None:
    h = scene.h
    counts_sql = ("SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM jobs),"
                  " (SELECT count(*) FROM sends), (SELECT group_concat(state) FROM conversations)")
    before = tuple(await h.rt.db.fetchone(counts_sql) or ())
    posts = len(h.graph_posts())
    first = json.dumps(replay_config(h.config, await _history(h)).to_json())
    second = json.dumps(replay_config(h.config, await _history(h)).to_json())
    assert first == second
    assert tuple(await h.rt.db.fetchone(counts_sql) or ()) == before
    await h.settle()
    assert len(h.graph_posts()) == posts  # nothing reached Instagram


async def test_fresh_states_keep_contact_facts_and_stored_states_keep_everything(
    scene: Scene,
) -> None:
    h = scene.h
    fresh = await load_history(h.rt.db, since=None, until=FAR_FUTURE)
    stored = await load_history(h.rt.db, since=None, until=FAR_FUTURE, start="stored")
    assert stored.states[(ACCT, "u1")].tags == {"guide"}
    assert stored.states[(ACCT, "u1")].is_new is False
    assert fresh.states[(ACCT, "u1")].tags == frozenset()
    assert fresh.states[(ACCT, "u1")].is_new is True
    # the commenter's username is a fact about the contact: kept in a fresh state
    assert fresh.states[(ACCT, "u3")].username == stored.states[(ACCT, "u3")].username == (
        "user_u3")
    # from the stored states, u5 is still paused: even the first "hi" is not answered
    report = replay_config(h.config, stored)
    u5 = [s for s in report.steps if s.contact_id == "u5" and s.kind == "message"]
    assert [s.outcome.workflow for s in u5] == [None, None]
    assert all(s.outcome.trace[0].startswith("paused until ") for s in u5)


async def test_the_cli_diffs_a_candidate_file_while_the_daemon_runs(
    scene: Scene, tmp_path: Path
) -> None:
    h, keys = scene.h, scene.keys
    current = tmp_path / "config.yaml"
    current.write_text(yaml.safe_dump(
        {"storage": {"path": str(h.config.storage.db_path())}, "workflows": WORKFLOWS},
        allow_unicode=True), "utf-8")
    cand = tmp_path / "candidate.yaml"
    cand.write_text(yaml.safe_dump({"workflows": candidate_workflows()}, allow_unicode=True),
                    "utf-8")
    runner = CliRunner()
    args = ["--config", str(current), "workflows", "replay", "--since", "all"]

    def invoke(*extra: str) -> tuple[int, str]:
        r = runner.invoke(app, [*args, *extra])
        return r.exit_code, r.stdout

    # The daemon (harness) still has the database open: replay reads beside it.
    code, out = await asyncio.to_thread(invoke, "--config-candidate", str(cand), "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert [c["key"] for c in doc["changes"]] == [
        keys["u1 guide"], keys["u2 guide"], keys["u4 ebook"]]
    assert doc["candidate"] == str(cand.absolute())
    assert doc["changes"][2]["before"]["workflow"] == "fallback"
    assert doc["changes"][2]["after"]["workflow"] == "free-guide"
    assert doc["counts"]["free-guide"] == {"current": {"fired": 2, "messages": 2, "refused": 0},
                                           "candidate": {"fired": 1, "messages": 1, "refused": 0}}
    # `workflows replay --config OTHER`, as the issue spells it, is the same comparison.
    again = json.loads((await asyncio.to_thread(invoke, "--config", str(cand), "--json"))[1])
    assert {**again, "until": None} == {**doc, "until": None}
    # ... also through the console script's own argument handling (main() hoists a
    # --config given after a command; here it must not).
    hoisted = hoist_config([*args, "--config", str(cand), "--json"])
    done = await asyncio.to_thread(runner.invoke, app, hoisted)
    assert {**json.loads(done.stdout), "until": None} == {**doc, "until": None}

    code, text = await asyncio.to_thread(invoke, "--config-candidate", str(cand))
    assert code == 0
    lines = text.splitlines()
    assert "3 events would be handled differently" in lines
    assert "  was: free-guide: reply \"Here's the free guide: https://example.com/guide\"; " \
           "tag guide" in lines
    assert "  now: fallback: reply \"Thanks for your message!\"" in lines
    assert any(line.startswith("free-guide ") and line.split()[1:] == ["2", "1", "-1", "0", "0"]
               for line in lines)

    code, text = await asyncio.to_thread(invoke)
    assert code == 0
    assert "you replied in the Instagram app: automation paused until" in text
    assert any(line.startswith("fallback ") and line.split()[1:] == ["3", "3", "0"]
               for line in text.splitlines())
    one = json.loads((await asyncio.to_thread(invoke, "--json"))[1])
    assert {s["key"] for s in one["steps"]} >= set(keys.values())


def test_replay_needs_an_existing_database_and_a_valid_candidate(tmp_path: Path) -> None:
    runner = CliRunner()
    config = tmp_path / "config.yaml"
    config.write_text(f"storage:\n  path: {tmp_path / 'none.db'}\n", "utf-8")
    r = runner.invoke(app, ["--config", str(config), "workflows", "replay"])
    assert r.exit_code == 1
    assert r.stderr.startswith(f"error: no database at {tmp_path / 'none.db'}: nothing to replay")
    assert not (tmp_path / "none.db").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text("workflows: [{name: x}]\n", "utf-8")
    r = runner.invoke(app, ["--config", str(config), "workflows", "replay",
                            "--config-candidate", str(bad)])
    assert r.exit_code == 1 and r.stderr.startswith(f"{bad}:1:13: workflows[0]")
    r = runner.invoke(app, ["--config", str(config), "workflows", "replay", "--since", "soon"])
    assert r.exit_code == 1 and "--since 'soon' is not a duration" in r.stderr


# --- the pure replayer: continuations, windows, budgets -----------------------------------

T0 = 1_717_408_800.0  # 2024-06-03T10:00:00Z
SETTINGS = EngineSettings(ACCT)


def _dm_event(n: int, user: str, text: str, at: float) -> StoredEvent:
    payload = build_dm_payload(ACCT, user, text, f"mid-{n}", int(at * 1000))
    return StoredEvent(n, parse_webhook(payload)[0])


def _comment_event(n: int, user: str, text: str, at: float) -> StoredEvent:
    payload = build_comment_payload(ACCT, user, f"name_{user}", text, "111", f"c-{n}", int(at))
    return StoredEvent(n, parse_webhook(payload)[0])


def _replayer(workflows: list[dict[str, Any]], per_hour: int | None = None) -> Replayer:
    wfs = [Workflow.model_validate(w) for w in workflows]
    return Replayer(wfs, lambda _acct: SETTINGS, pause_for_seconds=3600,
                    private_replies_per_hour=per_hour)


FOLLOW_UP: list[dict[str, Any]] = [
    {"name": "call", "trigger": {"dm": {"keywords": ["call"]}},
     "actions": [{"reply": "Let's talk!"}, {"delay": "1h"}, {"reply": "Still keen on a call?"}]},
]


def test_delayed_steps_run_between_events_at_their_time() -> None:
    events = [_dm_event(1, "u1", "a call please", T0), _dm_event(2, "u1", "ok", T0 + 1800),
              _dm_event(3, "u1", "thanks", T0 + 7200)]
    report = _replayer(FOLLOW_UP).run(events, {}, until=T0 + 9000)
    assert [(s.kind, s.at, s.outcome.workflow) for s in report.steps] == [
        ("message", T0, "call"), ("message", T0 + 1800, None),
        ("continuation", T0 + 3600, "call"), ("message", T0 + 7200, None)]
    cont = report.steps[2]
    assert cont.key == "resume:msg:mid-1:call:2"
    assert cont.outcome.actions == (SendText("Still keen on a call?"),)
    assert report.counts()["call"].fired == 1 and report.counts()["call"].messages == 2
    # a continuation due after "until" has not happened yet
    early = _replayer(FOLLOW_UP).run(events[:1], {}, until=T0 + 60)
    assert [s.kind for s in early.steps] == ["message"]


def test_a_continuation_after_the_window_closed_is_reported_refused() -> None:
    late = copy.deepcopy(FOLLOW_UP)
    late[0]["actions"] = [{"reply": "Let's talk!"}, {"delay": "25h"},
                          {"reply": "Still keen on a call?"}]
    report = _replayer(late).run([_dm_event(1, "u1", "call", T0)], {}, until=T0 + 30 * 3600)
    cont = report.steps[-1].outcome
    assert cont.actions == ()
    assert cont.refused == ("call step 3: refused reply: 24 h window closed",)
    assert report.counts()["call"].refused == 1


def test_the_private_reply_budget_is_noted() -> None:
    wf = [{"name": "c", "trigger": {"comment": {"keywords": ["guide"]}},
           "actions": [{"private_reply": "here"}]}]
    events = [_comment_event(i, f"u{i}", "guide", T0 + i * 60) for i in range(3)]
    report = _replayer(wf, per_hour=2).run(events, {}, until=T0 + 3600)
    assert [isinstance(s.outcome.actions[0], PrivateReply) for s in report.steps] == [True] * 3
    assert [s.notes for s in report.steps] == [(), (), (
        "private reply held back 58 min by the 2/h budget (rate_limits.private_replies_per_hour)",
    )]


def test_ai_steps_are_answered_by_the_offline_responder() -> None:
    """Replay runs AI replies offline (the creator's examples and facts, no network): the
    report says what would have been replied, or why the creator would have been asked."""
    config = Config.model_validate({
        "ai": {"examples": [{"message": "how much is coaching?",
                             "reply": "Coaching is 200 a month, all included."}],
               "facts": ["Coaching costs 200 a month."]},
        "workflows": [{"name": "ai", "trigger": {"fallback": True},
                       "actions": [{"ai_reply": "auto"}]}],
    })
    wfs = list(config.workflows)
    replayer = Replayer(wfs, lambda _acct: SETTINGS, pause_for_seconds=3600,
                        ai=offline_ai(config))
    events = [_dm_event(1, "u1", "how much is the coaching?", T0),
              _dm_event(2, "u2", "I want a refund now", T0 + 60)]
    report = replayer.run(events, {}, until=T0 + 120)
    notes = [s.notes for s in report.steps]
    assert notes[0] == ('AI (offline): would reply "Coaching is 200 a month, all included."',)
    assert len(notes[1]) == 1 and notes[1][0].startswith("AI (offline): would hand it to you")
    assert "refund" in notes[1][0]
    assert describe_action(report.steps[0].outcome.actions[0]) == (
        "AI reply (auto, offline responder)")


def _creator_event(n: int, user: str, text: str, at: float) -> StoredEvent:
    payload = build_echo_payload(ACCT, user, {"text": text}, f"mid-{n}", int(at * 1000))
    return StoredEvent(n, parse_webhook(payload)[0], human_echo=True)


def test_a_creator_message_keeps_a_longer_handoff_pause_and_drops_the_question() -> None:
    """As the daemon does (handoff review, session 15): the creator's own message does not
    shorten the week a handoff step set, and a question asked before it is dropped."""
    wfs = [{"name": "refund", "trigger": {"dm": {"keywords": ["refund"]}},
            "actions": [{"handoff": {"pause_for": "7d"}}]},
           {"name": "bonus", "trigger": {"dm": {"keywords": ["bonus"]}},
            "actions": [{"ask": {"field": "email", "type": "email", "prompt": "Email?"}}]},
           {"name": "hi", "trigger": {"fallback": True}, "actions": [{"reply": "Hi!"}]}]
    events = [_dm_event(1, "u1", "refund please", T0),
              _creator_event(2, "u1", "on it", T0 + 60),
              _dm_event(3, "u1", "hello?", T0 + 2 * 3600),  # past the 1 h pause_for
              _dm_event(4, "u2", "bonus", T0),
              _creator_event(5, "u2", "I'll send it myself", T0 + 60),
              _dm_event(6, "u2", "thanks", T0 + 2 * 3600)]
    events.sort(key=lambda e: e.event.occurred_at)
    report = _replayer(wfs).run(events, {}, until=T0 + 3 * 3600)
    by_key = {s.key: s.outcome for s in report.steps}
    assert by_key["msg:mid-3"].actions == ()  # still in the week's handoff
    assert by_key["msg:mid-6"].actions == (SendText("Hi!"),)  # not "that's not an email"


ASK_EMAIL: list[dict[str, Any]] = [
    {"name": "bonus", "trigger": {"dm": {"keywords": ["guide"]}},
     "actions": [{"reply": "Here's the guide!"},
                 {"ask": {"field": "email", "type": "email", "prompt": "Your email?"}},
                 {"reply": "Thanks! Sent to {email}"}]},
    {"name": "fallback", "trigger": {"fallback": True}, "actions": [{"reply": "Hi!"}]},
]


async def test_an_inbox_reply_pauses_the_replay_as_it_paused_the_daemon(tmp_path: Path) -> None:
    """s16 fresh audit, finding 3: replay paused only for replies typed in the Instagram app.
    A reply sent with `instaset inbox reply` (its message row has no event: its echo matched
    the send) was ignored, and replay showed the email captured and answered while the daemon,
    paused, had sent nothing. An edited draft does not pause (drafts.py), here neither."""
    from instaset.drafts import edit
    from instaset.inbox import reply, resolve_contact
    from instaset.store.ai import insert_draft

    async with open_harness(tmp_path, workflows=ASK_EMAIL) as h:
        await _dm(h, "u7", "can I get the guide?")
        ref = await resolve_contact(h.rt.db, "u7")
        done = await reply(h.rt, ref, "Hi, it's me", wait=10)
        assert done.state == "sent"
        await h.settle()  # its echo arrives and is stored
        email = await _dm(h, "u7", "me@example.com")
        # u8: an edited draft goes out as the human, and automation carries on.
        await _dm(h, "u8", "hello")
        async with h.rt.db.tx() as conn:  # as the ai_reply job stores one
            assert await insert_draft(conn, key="ai_reply:u8:test", account_id=ACCT,
                                      contact_id="u8", comment_id=None, text="AI draft",
                                      intent=None, confidence=None, reason="draft",
                                      now=h.clock())
        [draft_id] = [r["id"] for r in await h.rt.db.fetchall("SELECT id FROM ai_drafts")]
        assert (await edit(h.rt, draft_id, "My own words", wait=10)).state == "sent"
        await h.settle()
        later = await _dm(h, "u8", "guide")
        await h.settle(advance_up_to=60)  # past the per-second text budget
        sent = [r["text"] for r in await h.messages("u7", "out")]
        assert sent == ["Here's the guide!", "Your email?", "Hi, it's me"]  # paused after
        assert [r["text"] for r in await h.messages("u8", "out")][-2:] == [
            "Here's the guide!", "Your email?"]
        report = replay_config(h.config, await _history(h))
    by_key = {s.key: s for s in report.steps}
    assert by_key[email].outcome.actions == ()
    assert by_key[email].outcome.trace[0].startswith("paused until ")
    lines = [s.outcome.trace[0] for s in report.steps if s.contact_id == "u7" and s.text
             == "Hi, it's me"]
    assert len(lines) == 1 and lines[0].startswith(
        "you replied with `instaset inbox reply`: automation paused until ")
    # u8: the daemon answered "guide" after the edited draft, and so does the replay.
    assert [a.to_dict().get("text") for a in by_key[later].outcome.messages] == [
        "Here's the guide!", "Your email?"]
