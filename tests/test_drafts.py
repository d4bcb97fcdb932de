"""Acting on AI drafts: ``instaset inbox drafts|approve|edit|reject``.

Two halves:
- the drafts the real ai_reply job stores (fake Gemini through the real SDK, the daemon
  against the sandbox via :mod:`tests.sending_harness`), approved through
  :mod:`instaset.drafts`: exactly one send under concurrent approvals, a comment's draft
  as a private reply, a guardrail hand-off's draft despite (and without lifting) the pause;
- the commands through CliRunner against a real database and a sandbox served from its own
  thread (as ``inbox reply`` is tested): approve once, twice, edit, reject, the 24 h window,
  the JSON listing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import instaset.cli.cmd_drafts  # registers the commands (until instaset.cli imports it)
import instaset.tokens
from instaset.ai.feature import install_feature
from instaset.cli import app
from instaset.config import AIConfig, Config
from instaset.drafts import DraftOutcome, approve
from instaset.errors import InstasetError
from instaset.store import ai as aistore
from instaset.store.db import open_database
from instaset.tokens import StaticTokens, TokenProvider
from tests.fake_gemini import DEADLINE_MS, FakeGemini, reply
from tests.sending_harness import ACCT, Harness, open_harness
from tests.test_inbox import ThreadedSandbox, db_rows, run_cli, seed_inbound, write_config

IGSID = "1129842642640637"
CAROL = "3339842642640639"
HOUR = 3600.0
FACTS = ["1:1 coaching is $90 per session"]
AI_DRAFT = {"name": "ai-draft", "trigger": {"fallback": True},
            "actions": [{"ai_reply": "draft"}]}
AI_AUTO = {"name": "ai", "trigger": {"fallback": True}, "actions": [{"ai_reply": "auto"}]}
AI_COMMENT_DRAFT = {"name": "ai-comment", "trigger": {"comment": {"keywords": []}},
                    "actions": [{"ai_reply": "draft"}]}


# -- the real ai_reply job's drafts, approved through instaset.drafts ---------------------------
Make = Callable[[Sequence[Mapping[str, Any]]], Awaitable[Harness]]


@pytest.fixture
async def make(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
               ) -> AsyncIterator[tuple[Make, FakeGemini]]:
    monkeypatch.setenv("TEST_GEMINI_KEY", "test-key")
    async with contextlib.AsyncExitStack() as stack:
        fake = await stack.enter_async_context(FakeGemini())

        async def build(workflows: Sequence[Mapping[str, Any]]) -> Harness:
            h = await stack.enter_async_context(open_harness(tmp_path, workflows=workflows))
            ai = AIConfig.model_validate({"persona": "Maya, a coach.", "facts": FACTS,
                                          "base_url": fake.url, "timeout_ms": DEADLINE_MS,
                                          "api_key_env": "TEST_GEMINI_KEY"})
            h.rt.config = h.rt.config.model_copy(update={"ai": ai})
            install_feature(h.rt, typing_after=30.0)
            return h

        yield build, fake


async def rows(h: Harness, sql: str, params: Sequence[object] = ()) -> list[dict[str, Any]]:
    return [dict(r) for r in await h.rt.db.fetchall(sql, params)]


def sent_texts(h: Harness) -> list[object]:
    return [r.json["message"] for r in h.graph_sends()]


async def test_concurrent_approvals_send_the_draft_once_as_the_automation(
    make: tuple[Make, FakeGemini],
) -> None:
    build, fake = make
    h = await build([AI_DRAFT])
    fake.script(reply("Yes, I coach online!", confidence=0.8))
    await h.dm(IGSID, "do you coach online?")
    await h.settle()
    [draft] = await rows(h, "SELECT * FROM ai_drafts")
    assert draft["state"] == "pending" and sent_texts(h) == []

    results = await asyncio.gather(approve(h.rt, draft["id"]), approve(h.rt, draft["id"]),
                                   return_exceptions=True)
    await h.settle()
    wins = [r for r in results if isinstance(r, DraftOutcome)]
    losses = [r for r in results if isinstance(r, InstasetError)]
    assert len(wins) == 1 and len(losses) == 1, results
    assert wins[0].state == "sent" and not wins[0].human_agent_tag
    assert "is sent, not pending" in str(losses[0])
    assert sent_texts(h) == [{"text": "Yes, I coach online!"}]
    # As the automation would have sent it: its workflow, its sender, no pause.
    [send] = await rows(h, "SELECT key, sent_by, workflow, state FROM sends")
    assert send == {"key": f"send:{draft['key']}:approved", "sent_by": "automation",
                    "workflow": "ai-draft", "state": "sent"}
    out = await h.messages(IGSID, "out")
    assert [(m["sent_by"], m["text"]) for m in out] == [("automation", "Yes, I coach online!")]
    assert (await h.conversation(IGSID))["paused_until"] is None
    assert (await rows(h, "SELECT state FROM ai_drafts")) == [{"state": "sent"}]
    # Later approvals find it decided and send nothing more.
    with pytest.raises(InstasetError, match="is sent"):
        await approve(h.rt, draft["id"])
    await h.settle()
    assert len(h.graph_sends()) == 1


async def test_a_comments_draft_goes_out_as_its_private_reply(
    make: tuple[Make, FakeGemini],
) -> None:
    build, fake = make
    h = await build([AI_COMMENT_DRAFT])
    fake.script(reply("Thanks! 1:1 coaching is $90 per session."))
    await h.sandbox.user_comments(IGSID, "price??", "media-1")
    await h.settle()
    [draft] = await rows(h, "SELECT * FROM ai_drafts")
    assert draft["comment_id"] is not None and h.graph_sends() == []

    outcome = await approve(h.rt, draft["id"])
    await h.settle()
    assert outcome.state == "sent"
    [send] = h.graph_sends()
    assert send.json["message"] == {"text": "Thanks! 1:1 coaching is $90 per session."}
    assert dict(send.json["recipient"]) == {"comment_id": draft["comment_id"]}  # type: ignore[call-overload]
    [row] = await rows(h, "SELECT kind, comment_id FROM sends")
    assert row == {"kind": "private_reply", "comment_id": draft["comment_id"]}


async def test_a_hand_offs_draft_goes_out_despite_the_pause_which_stays(
    make: tuple[Make, FakeGemini],
) -> None:
    build, fake = make
    h = await build([AI_AUTO])
    fake.script(reply("Maybe next week?", confidence=0.2))
    await h.dm(IGSID, "hmm, when?")
    await h.settle()
    [draft] = await rows(h, "SELECT * FROM ai_drafts")
    assert draft["reason"] == "low_confidence"
    paused = (await h.conversation(IGSID))["paused_until"]
    assert paused is not None and paused > h.clock()

    outcome = await approve(h.rt, draft["id"])
    await h.settle()
    assert outcome.state == "sent"
    assert sent_texts(h) == [{"text": "Maybe next week?"}]
    assert (await h.conversation(IGSID))["paused_until"] == paused


# -- the commands, against a sandbox in its own thread ------------------------------------------
@pytest.fixture
def box() -> Iterator[ThreadedSandbox]:
    with ThreadedSandbox.running() as sb:
        yield sb


@pytest.fixture
def env(tmp_path: Path, box: ThreadedSandbox, monkeypatch: pytest.MonkeyPatch
        ) -> tuple[Path, Path]:
    db_path = tmp_path / "drafts.db"
    cfg = write_config(tmp_path, db_path, instagram={"graph_url": box.url, "api_url": box.url},
                       handoff={"pause_for": "6h"})

    def tokens(_config: Config) -> TokenProvider:
        return StaticTokens({ACCT: box.box.token})

    monkeypatch.setattr(instaset.tokens, "default_tokens", tokens)
    return cfg, db_path


def seed_draft(db_path: Path, igsid: str, text: str, *, n: int = 1, ago: float = 60.0,
               reason: str = "draft", comment_id: str | None = None) -> int:
    """A draft as the ai_reply job stores it, ``ago`` seconds old; returns its id."""

    async def go() -> int:
        db = await open_database(db_path)
        try:
            async with db.tx() as conn:
                await aistore.insert_draft(
                    conn, key=f"ai:test-{igsid}-{n}", account_id=ACCT, contact_id=igsid,
                    comment_id=comment_id, text=text, intent="question", confidence=0.5,
                    reason=reason, now=time.time() - ago)
            row = await db.fetchone("SELECT id FROM ai_drafts WHERE key = ?",
                                    (f"ai:test-{igsid}-{n}",))
            assert row is not None
            return int(row["id"])
        finally:
            await db.close()

    return asyncio.run(go())


def conversation(box: ThreadedSandbox, db_path: Path, ago: float) -> None:
    """Carol wrote ``ago`` seconds ago, at Meta (the sandbox) and in our records."""
    box.user_dm_at(CAROL, ago)
    seed_inbound(db_path, CAROL, ago)


def meta_sends(box: ThreadedSandbox) -> list[dict[str, object]]:
    """Every send the daemon asked Meta for, refused or not."""
    return [r.json for r in box.box.send_attempts()]


def test_approve_sends_exactly_once(env: tuple[Path, Path], box: ThreadedSandbox) -> None:
    cfg, db_path = env
    conversation(box, db_path, 2 * HOUR)
    draft = seed_draft(db_path, CAROL, "The guide is on its way!")
    result = run_cli(cfg, "inbox", "approve", str(draft), "--yes")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"draft #{draft} sent to @carol"
    [send] = meta_sends(box)
    assert send["message"] == {"text": "The guide is on its way!"} and "tag" not in send
    assert db_rows(db_path, "SELECT state FROM ai_drafts") == [{"state": "sent"}]
    assert db_rows(db_path, "SELECT sent_by, state FROM sends") == [
        {"sent_by": "automation", "state": "sent"}]
    assert db_rows(db_path, "SELECT paused_until FROM conversations") == [
        {"paused_until": None}]

    again = run_cli(cfg, "inbox", "approve", str(draft), "--yes")
    assert again.exit_code == 1
    assert f"draft {draft} is sent, not pending" in again.stderr
    assert len(meta_sends(box)) == 1
    assert len(db_rows(db_path, "SELECT * FROM sends")) == 1


def test_approve_without_a_terminal_needs_yes(env: tuple[Path, Path],
                                              box: ThreadedSandbox) -> None:
    cfg, db_path = env
    conversation(box, db_path, HOUR)
    draft = seed_draft(db_path, CAROL, "Sure!")
    result = run_cli(cfg, "inbox", "approve", str(draft))
    assert result.exit_code == 1 and "--yes" in result.stderr
    assert meta_sends(box) == []
    assert db_rows(db_path, "SELECT state FROM ai_drafts") == [{"state": "pending"}]


def test_edit_sends_the_new_text_and_keeps_the_original(env: tuple[Path, Path],
                                                         box: ThreadedSandbox) -> None:
    cfg, db_path = env
    conversation(box, db_path, HOUR)
    draft = seed_draft(db_path, CAROL, "It's $75!", reason="unverified_price")
    result = run_cli(cfg, "inbox", "edit", str(draft), "It's $90 per session.")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"edited reply #{draft} sent to @carol"
    assert [s["message"] for s in meta_sends(box)] == [{"text": "It's $90 per session."}]
    assert db_rows(db_path, "SELECT state, text FROM ai_drafts") == [
        {"state": "sent", "text": "It's $75!"}]
    assert db_rows(db_path, "SELECT sent_by FROM messages WHERE direction = 'out'") == [
        {"sent_by": "human"}]
    listed = run_cli(cfg, "inbox", "drafts", "--all", "--json")
    [d] = json.loads(listed.stdout)["drafts"]
    assert (d["text"], d["send"]["text"], d["send"]["edited"], d["send"]["state"]) == (
        "It's $75!", "It's $90 per session.", True, "sent")
    assert run_cli(cfg, "inbox", "approve", str(draft), "--yes").exit_code == 1
    assert len(meta_sends(box)) == 1


def test_reject_sends_nothing(env: tuple[Path, Path], box: ThreadedSandbox) -> None:
    cfg, db_path = env
    conversation(box, db_path, HOUR)
    draft = seed_draft(db_path, CAROL, "Sure!")
    refused = run_cli(cfg, "inbox", "reject", str(draft))  # no terminal, no --yes
    assert refused.exit_code == 1
    assert refused.stderr == (f"error: rejecting discards draft {draft} for good; no terminal "
                              "to confirm: pass --yes\n")
    assert db_rows(db_path, "SELECT state FROM ai_drafts") == [{"state": "pending"}]
    result = run_cli(cfg, "inbox", "reject", str(draft), "--yes")
    assert result.exit_code == 0, result.output
    assert "discarded; nothing was sent" in result.stdout
    assert db_rows(db_path, "SELECT state FROM ai_drafts") == [{"state": "discarded"}]
    approved = run_cli(cfg, "inbox", "approve", str(draft), "--yes")
    assert approved.exit_code == 1
    assert f"draft {draft} is discarded, not pending" in approved.stderr
    assert meta_sends(box) == []
    assert db_rows(db_path, "SELECT * FROM sends") == []


def test_unknown_draft_names_the_listing(env: tuple[Path, Path]) -> None:
    cfg, _db_path = env
    for args in (("approve", "42", "--yes"), ("edit", "42", "hi"), ("reject", "42", "-y")):
        result = run_cli(cfg, "inbox", *args)
        assert result.exit_code == 1
        assert "no draft 42" in result.stderr and "instaset inbox drafts" in result.stderr


def test_after_24_hours_approval_is_refused_but_an_edit_goes_as_the_human(
    env: tuple[Path, Path], box: ThreadedSandbox,
) -> None:
    cfg, db_path = env
    conversation(box, db_path, 30 * HOUR)
    draft = seed_draft(db_path, CAROL, "Here you go!")
    refused = run_cli(cfg, "inbox", "approve", str(draft), "--yes")
    assert refused.exit_code == 1
    assert "window_closed" in refused.stderr and "HUMAN_AGENT" in refused.stderr
    assert f"instaset inbox edit {draft} TEXT" in refused.stderr
    assert meta_sends(box) == []
    assert db_rows(db_path, "SELECT state FROM ai_drafts") == [{"state": "pending"}]
    assert db_rows(db_path, "SELECT * FROM sends") == []

    edited = run_cli(cfg, "inbox", "edit", str(draft), "Sorry for the wait, here you go!")
    assert edited.exit_code == 0, edited.output
    assert "HUMAN_AGENT" in edited.stdout
    [send] = meta_sends(box)
    assert send["message"] == {"text": "Sorry for the wait, here you go!"}
    assert send.get("tag") == "HUMAN_AGENT"
    assert db_rows(db_path, "SELECT paused_until FROM conversations") == [
        {"paused_until": None}]


def test_after_seven_days_an_edit_is_refused_too(env: tuple[Path, Path],
                                                 box: ThreadedSandbox) -> None:
    cfg, db_path = env
    conversation(box, db_path, 8 * 24 * HOUR)
    draft = seed_draft(db_path, CAROL, "Here you go!")
    result = run_cli(cfg, "inbox", "edit", str(draft), "late, sorry")
    assert result.exit_code == 1 and "7 days" in result.stderr
    assert meta_sends(box) == []
    assert db_rows(db_path, "SELECT state FROM ai_drafts") == [{"state": "pending"}]


def test_listing_json_shape_newest_first(env: tuple[Path, Path], box: ThreadedSandbox) -> None:
    cfg, db_path = env
    conversation(box, db_path, HOUR)
    older = seed_draft(db_path, CAROL, "First draft", n=1, ago=600.0)
    newer = seed_draft(db_path, CAROL, "Second draft", n=2, ago=60.0,
                       reason="low_confidence")
    gone = seed_draft(db_path, CAROL, "Third draft", n=3, ago=30.0)
    assert run_cli(cfg, "inbox", "reject", str(gone), "--yes").exit_code == 0

    result = run_cli(cfg, "inbox", "drafts", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["counts"] == {"pending": 2, "sent": 0, "discarded": 1}
    assert [d["id"] for d in doc["drafts"]] == [newer, older]
    d = doc["drafts"][0]
    assert set(d) == {"id", "account_id", "contact_id", "username", "comment_id", "channel",
                      "state", "reason", "intent", "confidence", "text", "created_at",
                      "updated_at", "window", "automation", "send"}
    assert (d["contact_id"], d["username"], d["state"], d["reason"], d["text"]) == (
        CAROL, "carol", "pending", "low_confidence", "Second draft")
    assert (d["channel"], d["intent"], d["confidence"], d["send"]) == (
        "dm", "question", 0.5, None)
    assert d["created_at"].endswith("Z") and d["window"]["state"] == "open"
    assert d["automation"] == {"state": "on", "paused_until": None}

    every = json.loads(run_cli(cfg, "inbox", "drafts", "--all", "--json").stdout)
    assert [(x["id"], x["state"]) for x in every["drafts"]] == [
        (gone, "discarded"), (newer, "pending"), (older, "pending")]

    plain = run_cli(cfg, "inbox", "drafts")
    assert plain.exit_code == 0
    assert plain.stdout.startswith("2 drafts waiting")
    assert f"#{newer}  @carol" in plain.stdout and "held: low_confidence" in plain.stdout
    assert "Second draft" in plain.stdout and "Third draft" not in plain.stdout


def test_approve_on_a_terminal_shows_the_draft_and_asks(
    env: tuple[Path, Path], box: ThreadedSandbox, monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg, db_path = env
    conversation(box, db_path, HOUR)
    draft = seed_draft(db_path, CAROL, "See you Tuesday!")
    monkeypatch.setattr(instaset.cli.cmd_drafts, "is_tty", lambda: True)
    runner = CliRunner()
    declined = runner.invoke(app, ["--config", str(cfg), "inbox", "approve", str(draft)],
                             input="n\n")
    assert declined.exit_code == 1
    assert "See you Tuesday!" in declined.stdout and "Send this to @carol?" in declined.stdout
    assert meta_sends(box) == []
    assert db_rows(db_path, "SELECT state FROM ai_drafts") == [{"state": "pending"}]
    accepted = runner.invoke(app, ["--config", str(cfg), "inbox", "approve", str(draft)],
                             input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert [s["message"] for s in meta_sends(box)] == [{"text": "See you Tuesday!"}]


def test_reject_on_a_terminal_shows_the_draft_and_asks(
    env: tuple[Path, Path], box: ThreadedSandbox, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A discarded draft cannot be brought back: reject asks, as approve does (s17 D4)."""
    cfg, db_path = env
    conversation(box, db_path, HOUR)
    draft = seed_draft(db_path, CAROL, "See you Tuesday!")
    monkeypatch.setattr(instaset.cli.cmd_drafts, "is_tty", lambda: True)
    runner = CliRunner()
    declined = runner.invoke(app, ["--config", str(cfg), "inbox", "reject", str(draft)],
                             input="n\n")
    assert declined.exit_code == 1
    assert "See you Tuesday!" in declined.stdout
    assert "Discard this draft for @carol? Nothing is sent" in declined.stdout
    assert db_rows(db_path, "SELECT state FROM ai_drafts") == [{"state": "pending"}]
    accepted = runner.invoke(app, ["--config", str(cfg), "inbox", "reject", str(draft)],
                             input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert "discarded; nothing was sent" in accepted.stdout
    assert db_rows(db_path, "SELECT state FROM ai_drafts") == [{"state": "discarded"}]
    assert meta_sends(box) == []
