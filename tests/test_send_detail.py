"""A send's refusal in words (``sends.detail``, migration 0021): written by the outbox when a
send is refused or fails (Meta's message and code, or the sending rules' words), scrubbed of
tokens, and read back by ``inbox reply``, ``inbox show`` and ``export``.

``inbox reply`` used to dig a daemon's refusal words out of the text of the notice it queued
for the creator: a refusal with no notice (a revoked token) showed only its slug."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from typer.testing import CliRunner

from instaset.cli import app
from instaset.config import load_config
from instaset.export import EXPORT_SCHEMA, read_export
from instaset.inbox import deliver_now
from instaset.sandbox import Fault
from instaset.store import sends as sendstore
from instaset.store.db import open_database
from instaset.store.migrate import migrations
from tests.sending_harness import SECRET, Clock, open_harness
from tests.test_export import validate

IGSID = "1000000000000001"
HOUR = 3600.0
# What a token leak in Meta's words looks like: a request URL echoed back with its query.
TOKEN = "IGAAleakedtokenvalue0123456789abcdef"
PROOF = "5f0c2a9d8e7b6a5f4e3d2c1b0a9f8e7d"
ECHOED = (f"https://graph.instagram.com/v25.0/me/messages?access_token={TOKEN}"
          f"&appsecret_proof={PROOF}")
GUIDE = {"name": "guide", "trigger": {"dm": {"keywords": ["guide"]}},
         "actions": [{"reply": "Here is the guide"}]}


def _leaks(text: str) -> bool:
    return TOKEN in text or PROOF in text or "leakedtoken" in text


async def test_0021_adds_detail_to_a_database_that_has_sends(tmp_path: Path) -> None:
    """A database at 0020 with sends (sent and refused) upgrades in place: the rows stay as
    they were, their detail NULL (their words were never stored)."""
    path = tmp_path / "old.db"
    db = await open_database(path)
    try:
        async with db.tx() as conn:
            await sendstore.insert_sends(conn, [
                (k, "A", IGSID, None, "text", json.dumps({"text": k}), "automation", None, 5.0)
                for k in ("went", "held")])
            await sendstore.mark_sent_in(conn, "went", "mid-1", 6.0)
            await sendstore.set_state_in(conn, "held", "refused", 6.0, reason="window_closed")
    finally:
        await db.close()
    raw = sqlite3.connect(path)
    raw.executescript("ALTER TABLE sends DROP COLUMN detail;"
                      " DELETE FROM schema_migrations WHERE version = 21;")
    raw.close()
    db = await open_database(path)
    try:
        assert await db.schema_version() == len(migrations())
        rows = await db.fetchall("SELECT key, state, reason, message_id, detail FROM sends"
                                 " ORDER BY key")
        assert [tuple(r) for r in rows] == [("held", "refused", "window_closed", None, None),
                                            ("went", "sent", None, "mid-1", None)]
        # and the column is written from now on
        async with db.tx() as conn:
            await sendstore.set_state_in(conn, "held", "refused", 7.0,
                                         detail="the 24 h window closed")
        row = await sendstore.get_send(db, "held")
        assert row is not None
        assert (row["reason"], row["detail"]) == ("window_closed", "the 24 h window closed")
    finally:
        await db.close()


def test_a_refused_automation_send_records_metas_words_and_the_rules(tmp_path: Path) -> None:
    """Meta refuses automation's reply (551, the person is unavailable, its message echoing
    the request URL with the token): the send keeps Meta's message and code without the
    token; a send the sending rules refuse keeps the rules' words; `export` has both, per
    its schema, and `inbox show` lists them."""

    async def build() -> tuple[Path, dict[str, str], dict[str, str]]:
        clock = Clock(frozen=True)
        async with open_harness(tmp_path, workflows=[GUIDE], clock=clock) as h:
            h.sandbox.inject(Fault("graph_error", path_contains="/messages", status=400,
                                   code=551, message="This person isn't available right now."
                                                     f" Request: {ECHOED}"))
            await h.dm(IGSID, "the guide please")
            await h.settle()
            [meta] = await h.rt.db.fetchall("SELECT * FROM sends WHERE workflow = 'guide'")
            clock.advance(25 * HOUR)
            await h.enqueue(h.text("late", IGSID, "sorry, late answer", workflow="guide"))
            await h.settle()
            late = await h.send_row("late")
            return h.config.storage.db_path(), dict(meta), dict(late)

    db_path, meta, late = asyncio.run(build())
    assert (meta["state"], meta["reason"]) == ("failed", "user_unavailable")
    assert meta["detail"].startswith(
        "this person cannot be messaged: This person isn't available right now.")
    assert meta["detail"].endswith("(code 551) [HTTP 400]")
    assert "access_token=***" in meta["detail"] and "appsecret_proof=***" in meta["detail"]
    assert not _leaks(meta["detail"])
    assert (late["state"], late["reason"]) == ("refused", "window_closed")
    assert late["detail"] == "last message from this person was 25.0 h ago; the limit is 24 h"
    cfg = tmp_path / "config.yaml"
    cfg.write_text(json.dumps({"storage": {"path": str(db_path)},
                               "instagram": {"app_secret": SECRET}}), "utf-8")
    result = CliRunner().invoke(app, ["--config", str(cfg), "export", "--contact", IGSID])
    assert result.exit_code == 0, result.output
    assert not _leaks(result.stdout)
    doc = read_export(result.stdout)
    validate(doc, EXPORT_SCHEMA)
    assert "detail" in EXPORT_SCHEMA["properties"]["contacts"]["items"]["properties"][
        "sends"]["items"]["properties"]
    sends = {s["key"]: s for s in doc["contacts"][0]["sends"]}
    assert sends["late"]["detail"] == late["detail"]
    assert sends[meta["key"]]["detail"] == meta["detail"]
    shown = CliRunner().invoke(app, ["--config", str(cfg), "inbox", "show", IGSID, "--json"])
    assert shown.exit_code == 0, shown.output
    held = {h["key"]: h["detail"] for h in json.loads(shown.stdout)["held"]}
    assert held == {meta["key"]: meta["detail"], "late": late["detail"]}
    text = CliRunner().invoke(app, ["--config", str(cfg), "inbox", "show", IGSID])
    assert "not sent (window_closed: last message from this person was 25.0 h ago" \
        in " ".join(text.stdout.split())  # as one line (the console wraps at 80 columns)


async def test_a_send_that_goes_out_after_all_keeps_no_refusal_words(tmp_path: Path) -> None:
    """Meta sometimes fails a request it carried out: the echo marks the send sent, and its
    refusal's words go with its reason."""
    async with open_harness(tmp_path) as h:
        await h.dm(IGSID, "hello")
        await h.settle()
        await h.enqueue(h.text("k", IGSID, "hi"))
        async with h.rt.db.tx() as conn:
            await sendstore.set_state_in(conn, "k", "failed", h.clock(), reason="graph_error",
                                         detail="An unexpected error has occurred.")
            await sendstore.mark_sent_in(conn, "k", "mid-k", h.clock())
        row = await h.send_row("k")
        assert (row["state"], row["reason"], row["detail"]) == ("sent", None, None)


async def test_a_refusal_without_stored_words_names_inbox_show(tmp_path: Path) -> None:
    """A reply refused by a daemon that stored no words (an instaset from before 0021 still
    running): `inbox reply` says where to look, not the slug twice."""
    async with open_harness(tmp_path) as h:
        await h.dm(IGSID, "hello")
        await h.settle()
        [key] = await h.enqueue(h.text("human:old", IGSID, "hi", sent_by="human"))
        async with h.rt.db.tx() as conn:  # as the older daemon left it
            await sendstore.set_state_in(conn, key, "failed", h.clock(),
                                         reason="invalid_parameter")
        done = await deliver_now(h.rt, [key], wait=1.0, poll=0.05)
    assert (done.state, done.reason) == ("failed", "invalid_parameter")
    assert done.detail == (f"no details were stored with it; `instaset inbox show {IGSID}`"
                           " lists what was not sent")


def test_a_reply_the_daemon_refused_for_a_dead_token_shows_metas_words(tmp_path: Path) -> None:
    """With `serve` running, its worker sends the reply and Meta answers 190: no notice is
    queued for that refusal (the token has its own), so the command printed
    "(refused: token_invalid): token_invalid". It now prints Meta's words, stored on the
    send, without the token Meta's message echoed; `inbox show` has them too."""
    from tests.test_inbox import db_rows, seed_inbound
    from tests.test_simulate_errors import threaded_daemon
    from tests.test_simulate_errors import write_config as daemon_config

    cfg = daemon_config(tmp_path, "d")
    config = load_config(cfg)
    db_path = config.storage.db_path()
    carol = "3339842642640639"
    with threaded_daemon(config, sandbox=True) as (lt, srv):
        assert srv.sandbox is not None
        box = srv.sandbox

        async def inject() -> None:
            box.inject(Fault("graph_error", path_contains="/messages", status=400, code=190,
                             message=f"Error validating access token: Session has expired."
                                     f" ({ECHOED})"))

        lt.run(inject())
        seed_inbound(db_path, carol, HOUR)
        result = CliRunner().invoke(app, ["--config", str(cfg), "inbox", "reply", "carol",
                                          "Hi Carol", "--wait", "30"])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: not sent to @carol (refused: "
                                    "token_invalid): the access token is invalid or expired "
                                    "(Error validating access token: Session has expired."), \
        result.stderr
    assert "access_token=***" in result.stderr and not _leaks(result.output)
    [row] = db_rows(db_path, "SELECT state, reason, detail FROM sends")
    assert (row["state"], row["reason"]) == ("refused", "token_invalid")
    assert row["detail"] in result.stderr
    shown = CliRunner().invoke(app, ["--config", str(cfg), "inbox", "show", "carol", "--json"])
    assert [h["detail"] for h in json.loads(shown.stdout)["held"]] == [row["detail"]]
    stored = "\n".join(str(r) for r in db_rows(
        db_path, "SELECT payload, last_error FROM jobs UNION ALL SELECT text, NULL"
                 " FROM notifications"))
    assert not _leaks(stored)

