"""``instaset inbox``: the listing, a thread, pause/resume, and replying as the human against
the sandbox (in the 24 h window, with the HUMAN_AGENT tag up to 7 days, refused after)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from typer.testing import CliRunner

import instaset.tokens
from instaset.cli import app
from instaset.config import Config
from instaset.sandbox import Sandbox
from instaset.store import history
from instaset.store.db import open_database
from instaset.timefmt import iso_utc
from instaset.tokens import StaticTokens, TokenProvider
from tests.sending_harness import ACCT, Harness, open_harness

ALICE = "1129842642640637"
BOB = "2229842642640638"
GUIDE_TEXT = "Here is the free guide: https://example.com/guide"
GUIDE = {"name": "guide", "trigger": {"dm": {"keywords": ["guide"]}},
         "actions": [{"reply": GUIDE_TEXT}, {"stage": "engaged"}]}
HOUR = 3600.0
T = TypeVar("T")


def write_config(tmp_path: Path, db_path: Path, **extra: Any) -> Path:
    path = tmp_path / "config.yaml"
    data: dict[str, Any] = {"storage": {"path": str(db_path), "synchronous": "NORMAL"}}
    data.update(extra)
    path.write_text(yaml.safe_dump(data), "utf-8")
    return path


def run_cli(config: Path, *args: str) -> Any:
    return CliRunner().invoke(app, ["--config", str(config), *args])


def reaction_payload(igsid: str, mid: str, emoji: str, ts_ms: int) -> dict[str, object]:
    return {"object": "instagram", "entry": [{"id": ACCT, "time": ts_ms, "messaging": [{
        "sender": {"id": igsid}, "recipient": {"id": ACCT}, "timestamp": ts_ms,
        "reaction": {"mid": mid, "action": "react", "reaction": "love", "emoji": emoji}}]}]}


@dataclass(frozen=True)
class Scene:
    db_path: Path
    alice_reply_mid: str


async def play_scene(h: Harness) -> Scene:
    """Alice asks for the guide (automation answers, she reacts), then Bob sends a photo and
    the creator answers him in the Instagram app (automation pauses for Bob)."""
    h.sandbox.add_user(ALICE, "alice")
    h.sandbox.add_user(BOB, "bob")
    await h.dm(ALICE, "hi, can I get the guide?")
    await h.settle()
    reply = next(m for m in h.sandbox.thread(ALICE) if m.direction == "out")
    assert await h.post(reaction_payload(ALICE, reply.mid, "❤️",
                                         int(h.clock() * 1000))) == 200
    await h.settle()
    await h.sandbox.user_sends_dm(BOB, "", attachments=[
        {"type": "image", "payload": {"url": "https://cdn.example/x.jpg"}}])
    await h.settle()
    await h.creator_types(BOB, "nice photo!")
    await h.settle()
    async with h.rt.db.tx() as conn:  # usernames, as the contacts feature would fill them
        for igsid, name in ((ALICE, "alice"), (BOB, "bob")):
            await conn.execute("UPDATE contacts SET username = ? WHERE id = ?", (name, igsid))
    return Scene(h.config.storage.db_path(), reply.mid)


@pytest.fixture
def scene(tmp_path: Path) -> tuple[Path, Scene]:
    async def build() -> Scene:
        async with open_harness(tmp_path, workflows=[GUIDE]) as h:
            return await play_scene(h)

    s = asyncio.run(build())
    return write_config(tmp_path, s.db_path), s


def test_inbox_lists_newest_first_with_unread_stage_automation_and_window(
    scene: tuple[Path, Scene],
) -> None:
    cfg, _ = scene
    result = run_cli(cfg, "inbox", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    convs = doc["conversations"]
    assert [c["username"] for c in convs] == ["bob", "alice"]  # Bob's thread moved last
    bob, alice = convs
    assert alice["unread"] == 1 and alice["stage"] == "engaged"
    assert alice["automation"] == {"state": "on", "paused_until": None}
    assert alice["last_message"] == GUIDE_TEXT and alice["last_from"] == "automation"
    assert alice["window"]["state"] == "open"
    assert 23 * HOUR < alice["window"]["seconds_left"] <= 24 * HOUR
    # The creator answered Bob in the app: read, paused for handoff.pause_for (12 h).
    assert bob["unread"] == 0 and bob["stage"] == "new"
    assert bob["automation"]["state"] == "paused"
    assert bob["last_message"] == "nice photo!" and bob["last_from"] == "human"
    assert doc["total"] == 2 and doc["unread"] == 1

    table = run_cli(cfg, "inbox", "--plain")
    assert table.exit_code == 0, table.output
    assert "@alice" in table.stdout and "engaged" in table.stdout
    assert "paused" in table.stdout and "bot: Here is the free guide" in table.stdout


def test_show_json_shape_media_reactions_and_marks_read(scene: tuple[Path, Scene]) -> None:
    cfg, s = scene
    result = run_cli(cfg, "inbox", "show", "@alice", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["contact"]["id"] == ALICE and doc["contact"]["username"] == "alice"
    msgs = doc["messages"]
    assert [(m["direction"], m["sent_by"], m["text"]) for m in msgs] == [
        ("in", "contact", "hi, can I get the guide?"), ("out", "automation", GUIDE_TEXT)]
    assert msgs[1]["mid"] == s.alice_reply_mid
    assert msgs[1]["reactions"] == {"contact": "❤️"}
    for m in msgs:
        assert m["created_at"].endswith("Z") and "T" in m["created_at"]

    async def unread() -> int:
        db = await open_database(s.db_path)
        try:
            row = await db.fetchone("SELECT unread FROM conversations WHERE contact_id = ?",
                                    (ALICE,))
            assert row is not None
            return int(row[0])
        finally:
            await db.close()

    assert asyncio.run(unread()) == 0  # showing it marked it read

    bob = run_cli(cfg, "inbox", "show", BOB)  # by IGSID, the human-readable thread
    assert bob.exit_code == 0, bob.output
    assert "[image]" in bob.stdout and "you: nice photo!" in bob.stdout


def test_pause_resume_and_unknown_contact(scene: tuple[Path, Scene]) -> None:
    cfg, s = scene
    paused = run_cli(cfg, "inbox", "pause", "alice", "--for", "2h")
    assert paused.exit_code == 0, paused.output
    assert "paused for @alice" in paused.stdout

    async def paused_until() -> float | None:
        db = await open_database(s.db_path)
        try:
            row = await db.fetchone("SELECT paused_until FROM conversations"
                                    " WHERE contact_id = ?", (ALICE,))
            assert row is not None
            return row[0]  # type: ignore[no-any-return]
        finally:
            await db.close()

    until = asyncio.run(paused_until())
    assert until is not None and abs(until - (time.time() + 2 * HOUR)) < 60
    resumed = run_cli(cfg, "inbox", "resume", "alice")
    assert resumed.exit_code == 0 and "resumed for @alice" in resumed.stdout
    assert asyncio.run(paused_until()) is None

    missing = run_cli(cfg, "inbox", "show", "nobody")
    assert missing.exit_code == 1
    assert "no contact 'nobody'" in missing.stderr


def test_inbox_json_in_a_real_subprocess(scene: tuple[Path, Scene], tmp_path: Path) -> None:
    cfg, _ = scene
    proc = subprocess.run(
        [sys.executable, "-m", "instaset", "--config", str(cfg), "inbox", "--json"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert [c["contact_id"] for c in json.loads(proc.stdout)["conversations"]] == [BOB, ALICE]


# -- replying as the human against the sandbox ------------------------------------------------
class ThreadedSandbox:
    """A sandbox served from its own event loop in a thread, so a synchronous CliRunner
    (which runs its own asyncio loop) can talk to it. ``offset`` shifts the sandbox clock."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.box = Sandbox(app_secret="inbox-test", account_id=ACCT,
                           clock=lambda: time.time() + self.offset)
        self.url = ""

    @classmethod
    @contextlib.contextmanager
    def running(cls) -> Iterator[ThreadedSandbox]:
        """A started sandbox, stopped (with its loop and thread) on exit."""
        sb = cls()
        sb.thread.start()
        try:
            sb.url = sb.run(sb.box.start())
            yield sb
        finally:
            with contextlib.suppress(Exception):
                sb.run(sb.box.stop())
            sb.loop.call_soon_threadsafe(sb.loop.stop)
            sb.thread.join(timeout=10)
            sb.loop.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def user_dm_at(self, igsid: str, ago: float) -> None:
        """The user DMs the account, ``ago`` seconds in the past (not delivered)."""
        self.offset = -ago
        try:
            self.run(self.box.user_sends_dm(igsid, "hello?", deliver=False))
        finally:
            self.offset = 0.0


@pytest.fixture
def sandbox() -> Iterator[ThreadedSandbox]:
    with ThreadedSandbox.running() as sb:
        yield sb


def seed_inbound(db_path: Path, igsid: str, ago: float) -> None:
    """The stored side of "igsid wrote ``ago`` seconds ago" (account connected)."""

    async def go() -> None:
        db = await open_database(db_path)
        try:
            now = time.time()
            await history.upsert_account(db, ACCT, username="creator", now=now)
            async with db.tx() as conn:
                await history.touch_contact(conn, ACCT, igsid, now, username="carol")
                await history.insert_message(
                    conn, account_id=ACCT, contact_id=igsid, mid=f"in-{igsid}",
                    direction="in", sent_by="contact", text="hello?", attachments=[],
                    created_at=now - ago)
                await history.update_conversation(conn, ACCT, igsid, now,
                                                  inbound_at=now - ago, message_at=now - ago,
                                                  unread_delta=1)
        finally:
            await db.close()

    asyncio.run(go())


@pytest.fixture
def reply_env(tmp_path: Path, sandbox: ThreadedSandbox, monkeypatch: pytest.MonkeyPatch
              ) -> tuple[Path, Path]:
    db_path = tmp_path / "reply.db"
    cfg = write_config(tmp_path, db_path, instagram={"graph_url": sandbox.url,
                                                      "api_url": sandbox.url},
                       handoff={"pause_for": "6h"})

    def tokens(_config: Config) -> TokenProvider:
        return StaticTokens({ACCT: sandbox.box.token})

    monkeypatch.setattr(instaset.tokens, "default_tokens", tokens)
    return cfg, db_path


def db_rows(db_path: Path, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
    async def go() -> list[Any]:
        db = await open_database(db_path)
        try:
            return [dict(r) for r in await db.fetchall(sql, params)]
        finally:
            await db.close()

    return asyncio.run(go())


def human_sends(sb: ThreadedSandbox) -> list[dict[str, object]]:
    return [r.json for r in sb.box.send_attempts()]  # refused ones too: "none" means none tried


def made_sends(sb: ThreadedSandbox) -> list[dict[str, object]]:
    """Only the sends the sandbox made (it refused none of them)."""
    return [r.json for r in sb.box.sends()]


@pytest.mark.parametrize(("ago", "tagged"), [(2 * HOUR, False), (30 * HOUR, True)])
def test_reply_sends_as_the_human_and_pauses(
    reply_env: tuple[Path, Path], sandbox: ThreadedSandbox, ago: float, tagged: bool,
) -> None:
    cfg, db_path = reply_env
    sandbox.user_dm_at("3339842642640639", ago)
    seed_inbound(db_path, "3339842642640639", ago)
    result = run_cli(cfg, "inbox", "reply", "carol", "I'll send it tonight")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("sent to @carol")
    assert ("HUMAN_AGENT" in result.stdout) is tagged
    sends = human_sends(sandbox)
    assert len(sends) == 1 and made_sends(sandbox) == sends  # tried once, and made
    assert sends[0]["message"] == {"text": "I'll send it tonight"}
    assert (sends[0].get("tag") == "HUMAN_AGENT") is tagged
    rows = db_rows(db_path, "SELECT sent_by, state, message_id FROM sends")
    assert [(r["sent_by"], r["state"]) for r in rows] == [("human", "sent")]
    msgs = db_rows(db_path, "SELECT sent_by, text, mid FROM messages WHERE direction = 'out'")
    assert msgs == [{"sent_by": "human", "text": "I'll send it tonight",
                     "mid": rows[0]["message_id"]}]
    conv = db_rows(db_path, "SELECT paused_until, unread FROM conversations")[0]
    assert conv["unread"] == 0
    assert abs(conv["paused_until"] - (time.time() + 6 * HOUR)) < 60
    job = db_rows(db_path, "SELECT state FROM jobs WHERE kind = 'send'")
    assert [j["state"] for j in job] == ["done"]


def test_reply_after_seven_days_is_refused_and_changes_nothing(
    reply_env: tuple[Path, Path], sandbox: ThreadedSandbox,
) -> None:
    cfg, db_path = reply_env
    sandbox.user_dm_at("3339842642640639", 8 * 24 * HOUR)
    seed_inbound(db_path, "3339842642640639", 8 * 24 * HOUR)
    result = run_cli(cfg, "inbox", "reply", "carol", "sorry for the delay")
    assert result.exit_code == 1
    assert "not sent to @carol" in result.stderr and "7 days" in result.stderr
    assert human_sends(sandbox) == []
    assert db_rows(db_path, "SELECT * FROM sends") == []
    assert db_rows(db_path, "SELECT paused_until FROM conversations") == [{"paused_until": None}]


def test_reply_refused_by_meta_reports_the_reason(
    reply_env: tuple[Path, Path], sandbox: ThreadedSandbox,
) -> None:
    """Our records say the window is open, Meta says it is not (e.g. the DM never reached
    the sandbox): the send is recorded as failed and the CLI says why."""
    cfg, db_path = reply_env
    sandbox.box.add_user("3339842642640639", "carol")  # known to Meta, but never wrote
    seed_inbound(db_path, "3339842642640639", HOUR)
    result = run_cli(cfg, "inbox", "reply", "carol", "hi!")
    assert result.exit_code == 1
    assert "window_closed" in result.stderr
    rows = db_rows(db_path, "SELECT state, reason FROM sends")
    assert rows == [{"state": "failed", "reason": "window_closed"}]



def test_reply_while_serve_sandbox_runs_is_sent_by_the_daemon(tmp_path: Path) -> None:
    """With `instaset serve` running on the database, the daemon's worker sends the reply:
    a sandbox account's token and address exist only in the daemon (the CLI used to claim
    the send itself and refuse it with no_token)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = write_config(tmp_path, tmp_path / "d.db", server={"host": "127.0.0.1", "port": port})
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "instaset", "--config", str(cfg), "serve", "--sandbox"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 60
        while "instaset listening" not in log.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        dm = run_cli(cfg, "simulate", "dm", "zed", "hello")
        assert dm.exit_code == 0, dm.output
        while "zed" not in run_cli(cfg, "inbox", "--json").stdout:  # the worker stored it
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        reply = run_cli(cfg, "inbox", "reply", "zed", "hi from me", "--wait", "30")
        assert reply.exit_code == 0, reply.output
        assert reply.stdout.startswith("sent to @zed")
        shown = json.loads(run_cli(cfg, "inbox", "show", "zed", "--json").stdout)
        last = shown["messages"][-1]
        assert (last["direction"], last["sent_by"], last["text"]) == ("out", "human", "hi from me")
        assert shown["contact"]["automation"]["state"] == "paused"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_show_has_the_comment_a_private_reply_answered(tmp_path: Path) -> None:
    """A commenter's thread showed only the bot's private reply, not what it answered
    (docs audit): the comment is in the thread, in time order."""
    carl = "3329842642640639"
    workflow = {"name": "c2dm", "trigger": {"comment": {"keywords": ["guide"]}},
                "actions": [{"private_reply": "Here it is!"}]}

    async def build() -> Path:
        async with open_harness(tmp_path, workflows=[workflow]) as h:
            h.sandbox.add_user(carl, "carl")
            await h.sandbox.user_comments(carl, "GUIDE please 🙏", "17900000000000555")
            await h.settle()
            return h.config.storage.db_path()

    cfg = write_config(tmp_path, asyncio.run(build()))
    doc = json.loads(run_cli(cfg, "inbox", "show", carl, "--json").stdout)
    [comment] = doc["comments"]
    assert (comment["text"], comment["media_id"], comment["reply"], comment["live"]) == (
        "GUIDE please 🙏", "17900000000000555", False, False)
    assert [m["text"] for m in doc["messages"]] == ["Here it is!"]
    shown = run_cli(cfg, "inbox", "show", carl)
    assert shown.exit_code == 0, shown.output
    lines = [line for line in shown.stdout.splitlines() if "GUIDE" in line or "Here it" in line]
    assert len(lines) == 2
    assert "commented on media 17900000000000555: GUIDE please 🙏" in lines[0]
    assert "bot: Here it is!" in lines[1]


def test_escape_codes_in_a_contacts_text_never_reach_the_terminal(tmp_path: Path) -> None:
    """Found by the s11 input audit: a DM (or an attachment type) holding ANSI/OSC escapes
    cleared the screen, set the window title and recoloured the terminal through `inbox`
    and `inbox show`."""
    evil = "hello \x1b[2J\x1b[H\x1b]0;PWNED\x07\x1b[31mred\x1b[0m\rOVER\x00"

    async def build() -> Path:
        async with open_harness(tmp_path) as h:
            await h.sandbox.user_sends_dm(ALICE, evil, attachments=[
                {"type": "\x1b[31mevil\nline", "payload": {"url": "https://cdn.example/x"}}])
            await h.settle()
            return h.config.storage.db_path()

    cfg = write_config(tmp_path, asyncio.run(build()))
    listing = run_cli(cfg, "inbox", "--plain")
    shown = run_cli(cfg, "inbox", "show", ALICE)
    for result in (listing, shown):
        assert result.exit_code == 0, result.output
        assert not any(ch in result.stdout for ch in "\x1b\x07\r\x00"), repr(result.stdout)
    assert "hello" in shown.stdout and "OVER" in shown.stdout and "evil line" in shown.stdout


def test_a_reply_keeps_a_longer_pause_set_before(
    reply_env: tuple[Path, Path], sandbox: ThreadedSandbox,
) -> None:
    """Handoff review, session 15: `inbox pause --for 30d` then `inbox reply` left a 12 h
    (here 6 h) pause: the reply shortened it. It now keeps the longer one, and says so."""
    cfg, db_path = reply_env
    sandbox.user_dm_at("3339842642640639", 2 * HOUR)
    seed_inbound(db_path, "3339842642640639", 2 * HOUR)
    assert run_cli(cfg, "inbox", "pause", "carol", "--for", "30d").exit_code == 0
    month = db_rows(db_path, "SELECT paused_until FROM conversations")[0]["paused_until"]
    assert abs(month - (time.time() + 30 * 24 * HOUR)) < 60
    result = run_cli(cfg, "inbox", "reply", "carol", "I'll send it tonight")
    assert result.exit_code == 0, result.output
    assert db_rows(db_path, "SELECT paused_until FROM conversations") == [
        {"paused_until": month}]
    assert [m["message"] for m in made_sends(sandbox)] == [{"text": "I'll send it tonight"}]
    assert f"automation paused until {iso_utc(month)}" in result.stdout


def test_a_reply_refused_for_a_revoked_token_says_so_without_a_traceback(
    reply_env: tuple[Path, Path], sandbox: ThreadedSandbox,
) -> None:
    """CLI review, session 15: the "reconnect" notification the 190 starts ran after the
    command had closed its database: a "Task exception was never retrieved" traceback on
    stderr, and no notification. The command now waits for it."""
    cfg, db_path = reply_env
    sandbox.user_dm_at("3339842642640639", 2 * HOUR)
    seed_inbound(db_path, "3339842642640639", 2 * HOUR)
    sandbox.box.revoke_token()
    result = run_cli(cfg, "inbox", "reply", "carol", "hi")
    assert result.exit_code == 1
    assert "token_invalid" in result.stderr and "instaset connect" in result.stderr
    assert "Traceback" not in result.output and "never retrieved" not in result.output
    jobs = db_rows(db_path, "SELECT key FROM jobs WHERE kind = 'notify'")
    assert len(jobs) == 1 and "token" in jobs[0]["key"]
    state = db_rows(db_path, "SELECT state FROM accounts")[0]["state"]
    assert state == "reconnect_needed"


def test_a_failed_reply_under_a_longer_pause_gives_the_unread_count_back(
    reply_env: tuple[Path, Path], sandbox: ThreadedSandbox,
) -> None:
    """Found by the session-15 fix review: the reply keeps a longer pause that was set
    before; when it then failed, the undo matched only the reply's own pause, and the
    thread stayed marked read."""
    cfg, db_path = reply_env
    seed_inbound(db_path, "3339842642640639", 2 * HOUR)  # Meta never saw carol write
    assert run_cli(cfg, "inbox", "pause", "carol", "--for", "30d").exit_code == 0
    before = db_rows(db_path, "SELECT paused_until, unread FROM conversations")
    assert before[0]["unread"] == 1
    result = run_cli(cfg, "inbox", "reply", "carol", "hi!")
    assert result.exit_code == 1  # Meta refused it
    assert db_rows(db_path, "SELECT paused_until, unread FROM conversations") == before
    # shown here, in the terminal: not a notification as well
    assert db_rows(db_path, "SELECT key FROM jobs WHERE kind = 'notify'") == []


def test_a_reply_the_running_daemon_sent_and_meta_refused_shows_metas_words(
    tmp_path: Path,
) -> None:
    """s16 fresh audit, finding 5: with `serve` running, its worker sends the reply; when
    Meta refused it, the command printed "(Instagram refused it: invalid_parameter):
    invalid_parameter" (the words were only in the daemon's log and notice). The same for
    `inbox edit` and `inbox approve` of a draft. Here the daemon's sandbox does not know
    the contact (stored after it started), so Meta answers "user not found"."""
    import instaset.cli.cmd_drafts  # noqa: F401  (registers inbox approve/edit)
    from instaset.config import load_config
    from instaset.store.ai import insert_draft
    from tests.test_simulate_errors import threaded_daemon
    from tests.test_simulate_errors import write_config as daemon_config

    cfg = daemon_config(tmp_path, "d")
    config = load_config(cfg)
    db_path = config.storage.db_path()
    carol = "3339842642640639"
    meta = "Não foi possível encontrar o usuário solicitado. (code 100/2534014) [HTTP 400]"
    with threaded_daemon(config, sandbox=True):
        seed_inbound(db_path, carol, HOUR)

        async def drafts() -> list[int]:
            db = await open_database(db_path)
            try:
                async with db.tx() as conn:
                    for n in (1, 2):
                        await insert_draft(conn, key=f"ai_reply:carol:{n}", account_id=ACCT,
                                           contact_id=carol, comment_id=None, text="AI text",
                                           intent=None, confidence=None, reason="draft",
                                           now=time.time())
                return [r["id"] for r in await db.fetchall("SELECT id FROM ai_drafts")]
            finally:
                await db.close()

        first, second = asyncio.run(drafts())
        results = [run_cli(cfg, "inbox", "reply", "carol", "Hi Carol", "--wait", "30"),
                   run_cli(cfg, "inbox", "edit", str(first), "My words", "--wait", "30"),
                   run_cli(cfg, "inbox", "approve", str(second), "--yes", "--wait", "30")]
    for result in results:
        assert result.exit_code == 1, result.output
        assert "(Instagram refused it: invalid_parameter): " in result.stderr
        assert meta in result.stderr, result.stderr
        assert "invalid_parameter): invalid_parameter" not in result.stderr
    assert results[0].stderr.startswith("error: not sent to @carol (Instagram refused it")
    rows = db_rows(db_path, "SELECT state, reason FROM sends ORDER BY created_at")
    assert rows == [{"state": "failed", "reason": "invalid_parameter"}] * 3


def _thread_lines(cfg: Path, contact: str) -> list[str]:
    shown = run_cli(cfg, "inbox", "show", contact)
    assert shown.exit_code == 0, shown.output
    lines: list[str] = []
    for line in shown.stdout.splitlines()[1:]:  # after the header
        if lines and not _stamped(line):  # wrapped at the console's width: one line again
            lines[-1] += line if lines[-1].endswith(" ") else f" {line}"
        else:
            lines.append(line)
    return lines


def _stamped(line: str) -> bool:
    """The line starts with its time, as every line of a thread does."""
    return len(line) > 18 and line[4] == "-" and line[13] == ":" and line[16:18] == "  "


def test_show_has_the_public_reply_that_went_out_under_the_comment(tmp_path: Path) -> None:
    """s17 fresh audit, finding 4a: the public reply under a contact's comment (sent after
    the private reply went) was in the demo's thread but nowhere in `inbox show` or its
    JSON. It now shows when it went, as a public reply, by whom it was sent."""
    dan = "4429842642640640"
    workflow = {"name": "c2dm", "trigger": {"comment": {"keywords": ["guide"]}},
                "actions": [{"private_reply": "Here it is!"},
                            {"public_reply": "Sent it to your DMs!"}]}

    async def build() -> Path:
        async with open_harness(tmp_path, workflows=[workflow]) as h:
            h.sandbox.add_user(dan, "dan")
            await h.sandbox.user_comments(dan, "GUIDE please", "17900000000000777")
            await h.settle()
            return h.config.storage.db_path()

    cfg = write_config(tmp_path, asyncio.run(build()))
    [sent] = db_rows(cfg.parent / "harness.db",
                     "SELECT key, updated_at FROM sends WHERE kind = 'public_reply'"
                     " AND state = 'sent'")
    doc = json.loads(run_cli(cfg, "inbox", "show", dan, "--json").stdout)
    assert [m["text"] for m in doc["messages"]] == ["Here it is!"]  # messages: DMs only
    [public] = doc["public_replies"]
    assert (public["key"], public["text"], public["sent_by"], public["workflow"]) == (
        sent["key"], "Sent it to your DMs!", "automation", "c2dm")
    assert public["sent_at"] == iso_utc(sent["updated_at"])
    assert public["comment_id"] == doc["comments"][0]["comment_id"]
    lines = _thread_lines(cfg, dan)
    assert len(lines) == 3 and all(_stamped(line) for line in lines), lines
    assert "@dan commented on media 17900000000000777: GUIDE please" in lines[0]
    assert lines[1].endswith("bot: Here it is!")
    assert lines[2].endswith("bot: public reply under the comment: Sent it to your DMs!")


def test_an_unsent_send_shows_where_it_happened_with_its_time_and_what_it_was(
    tmp_path: Path,
) -> None:
    """s17 fresh audit, finding 4b: a refused send was printed after the whole thread, with
    no time, and ``not sent (...): `` followed by nothing when it had no text (an image, an
    AI reply, a booking offer). It now stands where it was decided, with its time, named."""
    erin, fay = "5529842642640641", "6629842642640642"
    image = {"name": "img-delay", "trigger": {"comment": {"keywords": ["pic"]}},
             "actions": [{"media": {"type": "image", "url": "https://example.com/p.png"}},
                         {"delay": "1h"}, {"reply": "Text after the delay"}]}
    # After the comment's one private reply, the commenter has no DM window: refused.
    ai = {"name": "ai-after", "trigger": {"comment": {"keywords": ["help"]}},
          "actions": [{"private_reply": "One moment!"}, {"ai_reply": "auto"},
                      {"offer_booking": True}]}

    async def build() -> Path:
        async with open_harness(tmp_path, workflows=[image, ai]) as h:
            for igsid, name in ((erin, "erin"), (fay, "fay")):
                h.sandbox.add_user(igsid, name)
            await h.sandbox.user_comments(erin, "pic please", "17900000000000888")
            await h.settle(advance_up_to=2 * HOUR)
            await h.sandbox.user_comments(fay, "help me", "17900000000000888")
            await h.settle()
            return h.config.storage.db_path()

    cfg = write_config(tmp_path, asyncio.run(build()))
    doc = json.loads(run_cli(cfg, "inbox", "show", erin, "--json").stdout)
    [held] = doc["held"]
    assert (held["kind"], held["text"], held["what"], held["reason"]) == (
        "media", None, "[image]", "private_reply_not_text")
    lines = _thread_lines(cfg, erin)
    assert len(lines) == 3 and all(_stamped(line) for line in lines), lines
    assert "commented on media 17900000000000888: pic please" in lines[0]
    assert lines[1].endswith("bot: not sent (private_reply_not_text: a comment's private "
                             "reply can only be text): [image]")
    assert lines[1][:16] == held["created_at"][:16].replace("T", " ")
    assert lines[2].endswith("bot: Text after the delay")

    doc = json.loads(run_cli(cfg, "inbox", "show", fay, "--json").stdout)
    assert [(h["kind"], h["text"], h["what"], h["reason"]) for h in doc["held"]] == [
        ("text", None, "(AI reply)", "private_reply_used"),
        ("text", None, "(booking offer)", "private_reply_used")]
    lines = _thread_lines(cfg, fay)
    assert len(lines) == 4 and all(_stamped(line) for line in lines), lines
    # Refused when the comment was decided on, before the private reply went out.
    assert lines[1].endswith("): (AI reply)") and "bot: not sent (private_reply_used" in lines[1]
    assert lines[2].endswith("): (booking offer)")
    assert lines[3].endswith("bot: One moment!")
