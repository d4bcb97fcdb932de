"""``instaset workflows test``: the dry run of one DM or comment, through the real CLI."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from instaset.cli import app
from instaset.engine.state import Awaiting, ConversationState, FrozenMap
from instaset.store import history
from instaset.store.db import open_database

runner = CliRunner()
ACCT = "17841400000000001"
MAYA = "5260000000000042"

CONFIG = """\
storage:
  path: {db}
timezone: Europe/Madrid
workflows:
  - name: free-guide
    priority: 10
    trigger:
      dm: {{keywords: [guide, "free guide", guía], match: word}}
    actions:
      - reply: "Hey {{username|there}}! Here's the guide: https://example.com/guide"
      - tag: guide
      - ask:
          field: email
          type: email
          prompt: "What's your email?"
          retry: "That doesn't look like an email."
      - reply: "Sent to {{email}}"
  - name: reel-guide
    trigger:
      comment: {{keywords: [guide], media: ["111"]}}
    actions:
      - private_reply: "Here it is, {{username}}!"
      - public_reply: "Check your DMs!"
  - name: office-hours
    trigger:
      dm: {{keywords: [call]}}
    when:
      hours: {{days: mon-fri, from: "09:00", to: "18:00"}}
    actions:
      - reply: "Let's book a call"
  - name: booking-link
    trigger:
      postback: {{payload: [BOOK_YES]}}
    actions:
      - reply: "Here is the booking link"
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.format(db=tmp_path / "cli.db"), "utf-8")
    return path


def run(config: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--config", str(config), "workflows", "test", *args])
    return result.exit_code, result.stdout, result.stderr


def test_a_matching_dm_prints_the_workflow_the_trace_and_the_actions(config: Path) -> None:
    code, out, err = run(config, "can I get the free guide?", "--from", "maya")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        'DM from @maya (a new contact): "can I get the free guide?"',
        "matched: free-guide (fires)",
        "why:",
        "  free-guide: dm keyword 'free guide' matched (word)",
        "  free-guide step 3: waiting for email",
        "actions (a dry run: nothing was sent):",
        '  1. reply "Hey maya! Here\'s the guide: https://example.com/guide"',
        "  2. tag guide",
        '  3. reply "What\'s your email?"',
    ]
    # a dry run never creates the database
    assert not (config.parent / "cli.db").exists()


def test_accents_and_case_fold_in_the_dry_run(config: Path) -> None:
    code, out, _ = run(config, "GUIA por favor")
    assert code == 0
    assert "  free-guide: dm keyword 'guía' matched (word)" in out.splitlines()


def test_no_match_says_so_and_exits_zero(config: Path) -> None:
    code, out, err = run(config, "hello there")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        'DM from @tester (a new contact): "hello there"',
        "no workflow matched",
        "why:",
        "  no workflow matched message",
        "no actions; nothing was sent",
    ]


def test_a_comment_on_the_listed_media_gets_private_and_public_replies(config: Path) -> None:
    code, out, _ = run(config, "GUIDE please 🔥", "--comment", "--media", "111", "--from", "leo")
    assert code == 0
    assert out.splitlines() == [
        'comment on 111 from @leo (a new contact): "GUIDE please 🔥"',
        "matched: reel-guide (fires)",
        "why:",
        "  reel-guide: comment keyword 'guide' matched (word)",
        "actions (a dry run: nothing was sent):",
        '  1. private reply "Here it is, leo!"',
        '  2. public reply "Check your DMs!" (if the private reply is sent)',
    ]
    # --media alone implies a comment; another post does not match the media list
    code, out, _ = run(config, "guide", "--media", "222")
    assert code == 0
    assert out.splitlines()[:2] == ['comment on 222 from @tester (a new contact): "guide"',
                                    "no workflow matched"]


def test_conditions_are_evaluated_at_the_given_local_time(config: Path) -> None:
    code, out, _ = run(config, "call me", "--at", "2024-06-03T10:00")  # Monday, Madrid
    assert code == 0 and "matched: office-hours (fires)" in out
    code, out, _ = run(config, "call me", "--at", "2024-06-08T10:00")  # Saturday
    assert code == 0
    assert "  skipped office-hours: dm keyword 'call' matched (word), but outside hours " \
           "(mon,tue,wed,thu,fri 09:00-18:00; now Sat 10:00 Europe/Madrid)" in out.splitlines()


def test_json_shape(config: Path) -> None:
    code, out, _ = run(config, "guide", "--comment", "--media", "111", "--from", "leo",
                       "--at", "2024-06-03T10:00:00+00:00", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc == {
        "event": {"kind": "comment", "text": "guide",
                  "from": {"id": doc["event"]["from"]["id"], "username": "leo"},
                  "media_id": "111", "at": "2024-06-03T10:00:00Z"},
        "account_id": ACCT,
        "state": "fresh",
        "matched": True,
        "workflow": "reel-guide",
        "fired": True,
        "trace": ["reel-guide: comment keyword 'guide' matched (word)"],
        "actions": [
            {"type": "private_reply", "comment_id": doc["actions"][0]["comment_id"],
             "text": "Here it is, leo!"},
            {"type": "public_reply", "comment_id": doc["actions"][0]["comment_id"],
             "text": "Check your DMs!", "after_private": True},
        ],
        "sent": False,
    }
    assert doc["event"]["from"]["id"].isdigit()
    miss = json.loads(run(config, "nothing here", "--json")[1])
    assert (miss["matched"], miss["workflow"], miss["actions"], miss["sent"]) == (
        False, None, [], False)
    assert miss["event"]["media_id"] is None and miss["event"]["kind"] == "message"


def test_the_same_test_gives_the_same_answer(config: Path) -> None:
    args = ("guide", "--from", "maya", "--at", "2024-06-03T10:00", "--json")
    assert run(config, *args)[1] == run(config, *args)[1]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ((), 2, "Missing argument"),
        (("hi", "--comment", "--quick-reply", "X"), 1,
         "error: --comment/--media/--reply-to/--live and --quick-reply describe different"),
        (("hi", "--at", "yesterday"), 1, "error: --at 'yesterday' is not a date and time"),
        (("hi", "--nope"), 2, "No such option: --nope"),
    ],
)
def test_exit_codes(config: Path, args: tuple[str, ...], code: int, message: str) -> None:
    result = runner.invoke(app, ["--config", str(config), "workflows", "test", *args])
    assert result.exit_code == code
    assert message in result.stderr


def test_an_invalid_config_exits_1_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("workflows:\n  - name: x\n    trigger: {dm: {keywrods: [a]}}\n"
                   "    actions: [{reply: hi}]\n", "utf-8")
    result = runner.invoke(app, ["--config", str(bad), "workflows", "test", "a"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"{bad}:3:20: workflows[0].trigger.dm: unknown key 'keywrods'")


async def _seed_waiting_contact(db_path: Path) -> dict[str, object]:
    """A contact in the database whose conversation waits for an email, as the daemon
    leaves it after free-guide asked. Returns the row counts a dry run must not change."""
    db = await open_database(db_path)
    try:
        await history.upsert_account(db, ACCT, username="coach", now=1.0)
        state = ConversationState(
            ACCT, MAYA, username="maya", tags=frozenset({"guide"}), is_new=False,
            last_inbound_at=4_000_000_000.0, fired=FrozenMap({"free-guide": 4_000_000_000.0}),
            awaiting=Awaiting("free-guide", 2, "email", "email", 0, 4_000_000_000.0),
        )
        async with db.tx() as conn:
            await history.touch_contact(conn, ACCT, MAYA, 1.0, username="maya")
            await history.update_conversation(conn, ACCT, MAYA, 1.0, state=state.to_json(),
                                              inbound_at=4_000_000_000.0)
        return await _snapshot(db_path)
    finally:
        await db.close()


async def _snapshot(db_path: Path) -> dict[str, object]:
    db = await open_database(db_path)
    try:
        out: dict[str, object] = {}
        for table in ("events", "jobs", "sends", "messages", "notifications"):
            row = await db.fetchone(f"SELECT count(*) FROM {table}")
            assert row is not None
            out[table] = row[0]
        conv = await db.fetchone("SELECT state, updated_at FROM conversations")
        assert conv is not None
        out["conversation"] = tuple(conv)
        return out
    finally:
        await db.close()


def test_a_stored_contact_continues_from_their_stored_state(config: Path) -> None:
    db_path = config.parent / "cli.db"
    before = asyncio.run(_seed_waiting_contact(db_path))
    at = "2096-10-02T08:00:00+00:00"  # shortly after the question was asked
    code, out, _ = run(config, "maya@Example.COM", "--from", "@maya", "--at", at)
    assert code == 0
    assert out.splitlines() == [
        'DM from @maya (stored conversation state): "maya@Example.COM"',
        "matched: free-guide (continues)",
        "why:",
        "  free-guide: captured email (email)",
        "actions (a dry run: nothing was sent):",
        '  1. set email = "maya@example.com"',
        '  2. reply "Sent to maya@example.com"',
    ]
    # by id too, with an invalid answer: asked again
    doc = json.loads(run(config, "not an email", "--from", MAYA, "--at", at, "--json")[1])
    assert (doc["state"], doc["workflow"], doc["fired"]) == ("stored", "free-guide", False)
    assert doc["actions"] == [{"type": "send_text", "quick_replies": [],
                               "text": "That doesn't look like an email."}]
    # a tap a postback workflow answers goes to it; the question keeps waiting (as the
    # daemon would)
    tap = json.loads(run(config, "Yes please", "--from", "maya", "--quick-reply", "BOOK_YES",
                         "--at", at, "--json")[1])
    assert tap["workflow"] == "booking-link"
    assert tap["trace"] == ["question for free-guide still pending: the tap's payload "
                            "'BOOK_YES' goes to its postback workflow",
                            "booking-link: quick reply 'BOOK_YES'"]
    # ... any other tap is read as the answer
    other = json.loads(run(config, "Maybe", "--from", "maya", "--quick-reply", "MAYBE",
                           "--at", at, "--json")[1])
    assert other["trace"] == ["free-guide: invalid email for email, asking again (1/2)"]
    # ... whereas a new contact's tap reaches the postback workflow
    fresh = json.loads(run(config, "Yes please", "--from", "sam", "--quick-reply", "BOOK_YES",
                           "--json")[1])
    assert (fresh["state"], fresh["workflow"]) == ("fresh", "booking-link")
    assert fresh["trace"] == ["booking-link: quick reply 'BOOK_YES'"]
    # nothing was written: no event, job, send or message, the state untouched
    assert asyncio.run(_snapshot(db_path)) == before


KINDS_CONFIG = """
storage: {{path: {db}}}
workflows:
  - name: story
    trigger: {{story_reply: {{keywords: [fire]}}}}
    actions: [{{reply: "thanks for the story reply"}}]
  - name: mention
    trigger: {{story_mention: true}}
    actions: [{{reply: "thanks for the mention"}}]
  - name: button
    trigger: {{postback: {{payload: [START]}}}}
    actions: [{{reply: "started"}}]
  - name: link
    trigger: {{referral: {{ref: [bio]}}}}
    actions: [{{reply: "hi from the bio link"}}]
  - name: replies
    trigger: {{comment: {{keywords: [fire], replies: true}}}}
    actions: [{{private_reply: "saw your reply"}}]
  - name: live
    trigger: {{live_comment: {{keywords: [hello]}}}}
    actions: [{{private_reply: "hi from the live"}}]
"""


@pytest.mark.parametrize(("args", "headline", "workflow"), [
    (["🔥 fire", "--story-reply"], "reply to your story", "story"),
    (["", "--mention"], "story mention", "mention"),
    (["Get started", "--postback", "START"], "button tap 'START'", "button"),
    (["", "--referral", "bio"], "ig.me link with ref 'bio'", "link"),
    (["fire!", "--reply-to", "1790000000000042"],
     "reply to comment 1790000000000042 on test-media", "replies"),
    (["hello", "--live"], "live comment on a live video", "live"),
])
def test_every_trigger_kind_can_be_tried(tmp_path: Path, args: list[str], headline: str,
                                         workflow: str) -> None:
    """The issue-4 audit could try only DMs, quick replies and top-level comments."""
    cfg = tmp_path / "kinds.yaml"
    cfg.write_text(KINDS_CONFIG.format(db=tmp_path / "k.db"), "utf-8")
    code, out, err = run(cfg, *args)
    assert (code, err) == (0, ""), out
    lines = out.splitlines()
    assert lines[0].startswith(f"{headline} from @tester")
    assert lines[1] == f"matched: {workflow} (fires)"


def test_two_kinds_of_event_at_once_are_refused(config: Path) -> None:
    code, _out, err = run(config, "x", "--postback", "A", "--story-reply")
    assert code == 1 and "--story-reply and --postback describe different events" in err


def test_the_accounts_own_username_is_the_business_and_an_unknown_account_is_an_error(
        config: Path) -> None:
    """The pipeline ignores the account's own comments (its public replies come back as
    comment webhooks): the dry run showed a private reply to them that never goes out."""
    db_path = config.parent / "cli.db"
    asyncio.run(_seed_waiting_contact(db_path))  # the account is @coach
    for who in ("@coach", "COACH", ACCT):
        code, out, _ = run(config, "guide", "--comment", "--media", "111", "--from", who)
        assert code == 0, out
        assert "ignored: sent by the business" in out and "private reply" not in out
    code, out, err = run(config, "guide", "--from", "leo", "--account", "999")
    assert code == 1 and out == "" and "no account '999'" in err
    code, out, _ = run(config, "guide", "--from", "leo", "--account", "@coach")
    assert code == 0 and "free-guide" in out
