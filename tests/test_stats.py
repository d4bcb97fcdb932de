"""``instaset stats``: the funnel per workflow and per media from a real scene played through
the daemon and the sandbox (comments, private replies, a DM, a read receipt, clicks on tracked
links, a refused send, AI calls), then the same figures through the CLI (JSON and CSV); and a
live comment's reply credited to the live video, the account's own comments (its public
replies, back as comments webhooks) not counted as comments."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from typer.testing import CliRunner

from instaset import links
from instaset.cli import app
from instaset.outbox import Outgoing
from instaset.rules import SendKind
from instaset.stats import compute, compute_scan
from tests.sending_harness import ACCT, Clock, Harness, open_harness

M1, M2 = "18000000000000001", "18000000000000002"
U1, U2, U3 = "1000000000000001", "1000000000000002", "1000000000000003"
COMMENT_WF = {"name": "comment-guide", "trigger": {"comment": {"keywords": ["guide"]}},
              "actions": [{"private_reply": "Here it is!"}, {"stage": "engaged"}]}
BOOK_WF = {"name": "book", "trigger": {"dm": {"keywords": ["book"]}},
           "actions": [{"reply": "Pick a slot"}, {"stage": "booked"}]}
BROWSER = "Mozilla/5.0 (iPhone) Instagram"


async def click_link_of(h: Harness, send_key: str, workflow: str) -> None:
    """Register a tracked link for ``send_key`` the way the outbox does, and click it."""
    async with h.rt.db.tx() as conn:
        [out] = await links.track_links(conn, [Outgoing(
            key=send_key, kind=SendKind.TEXT, account_id=ACCT, contact_id=U1,
            text="https://example.com/x", workflow=workflow)], base_url="https://c.example",
            now=h.clock())
    path = (out.text or "").removeprefix("https://c.example")
    site = web.Application()
    site.add_routes([links.redirect_route(h.rt)])
    async with TestClient(TestServer(site)) as client:
        resp = await client.get(path, headers={"User-Agent": BROWSER}, allow_redirects=False)
        assert resp.status == 302


async def play(h: Harness) -> None:
    for user, text, media in ((U1, "guide!", M1), (U2, "guide please", M1), (U3, "nice", M2)):
        await h.sandbox.user_comments(user, text, media)
    await h.settle()
    h.clock.advance(60)  # a minute after the private replies, U1 writes
    await h.dm(U1, "can I book a call?")
    h.clock.advance(90)  # the daemon picks the DM up 90 s later: first response after 90 s
    await h.settle()
    reply = [m for m in h.sandbox.thread(U1) if m.direction == "out"][-1]
    ms = int(h.clock() * 1000)
    read: dict[str, object] = {"object": "instagram", "entry": [{"id": ACCT, "time": ms,
        "messaging": [{"sender": {"id": U1}, "recipient": {"id": ACCT}, "timestamp": ms,
                       "read": {"mid": reply.mid}}]}]}
    assert await h.post(read) == 200
    await h.enqueue(h.text("manual:1", U3, "hello?"))  # U3 never wrote: refused
    await h.settle()
    keys = {r["workflow"]: r["key"] for r in await h.rt.db.fetchall(
        "SELECT workflow, key FROM sends WHERE workflow IS NOT NULL ORDER BY key")}
    await click_link_of(h, keys["book"], "book")
    await click_link_of(h, keys["comment-guide"], "comment-guide")
    async with h.rt.db.tx() as conn:  # two model calls, as the AI feature records them
        for n, outcome in enumerate(("ok", "timeout")):
            await conn.execute(
                "INSERT INTO ai_calls(job_key, attempt, account_id, contact_id, backend,"
                " outcome, total_tokens, latency_ms, created_at)"
                " VALUES ('ai:x', ?, ?, ?, 'gemini', ?, ?, 10, ?)",
                (n, ACCT, U1, outcome, 120 if outcome == "ok" else None, h.clock()))


def funnel(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    return {r[key]: r for r in rows}


def check(doc: dict[str, Any]) -> None:
    wf = funnel(doc["workflows"], "workflow")
    pick = ("triggers", "sent", "read", "clicks", "leads", "qualified", "booked", "refused")
    assert {k: wf["comment-guide"][k] for k in pick} == {
        "triggers": 2, "sent": 2, "read": 1, "clicks": 1, "leads": 2, "qualified": 1,
        "booked": 1, "refused": 0}
    assert {k: wf["book"][k] for k in pick} == {
        "triggers": 1, "sent": 1, "read": 1, "clicks": 1, "leads": 1, "qualified": 1,
        "booked": 1, "refused": 0}
    assert wf["(no workflow)"]["refused"] == 1 and wf["(no workflow)"]["sent"] == 0
    media = funnel(doc["media"], "media_id")
    assert {k: media[M1][k] for k in ("comments", *pick)} == {
        "comments": 2, "triggers": 2, "sent": 2, "read": 1, "clicks": 1, "leads": 2,
        "qualified": 1, "booked": 1, "refused": 0}
    assert {k: media[M2][k] for k in ("comments", "triggers", "sent", "leads")} == {
        "comments": 1, "triggers": 0, "sent": 0, "leads": 0}
    tot = doc["totals"]
    assert {k: tot[k] for k in (*pick, "conversations")} == {
        "triggers": 3, "sent": 3, "read": 2, "clicks": 2, "leads": 2, "qualified": 1,
        "booked": 1, "refused": 1, "conversations": 3}
    assert doc["refused_by_reason"] == {"window_closed": 1}
    assert doc["ai"] == {"available": True, "calls": 2, "tokens": 120, "failures": 1}
    assert doc["first_response"] == {"conversations": 1, "median_seconds": 90.0}
    days = doc["messages_per_day"]
    assert sum(d["in"] for d in days) == 1 and sum(d["out"] for d in days) == 3


LIVE = "18000000000000055"
PUBLIC_WF = {"name": "guide-public", "trigger": {"comment": {"keywords": ["guide"]}},
             "actions": [{"private_reply": "Here it is!"},
                         {"public_reply": "Sent it to your DMs!"}]}
LIVE_WF = {"name": "live-guide", "trigger": {"live_comment": {"keywords": ["guide"]}},
           "actions": [{"private_reply": "Here it is, live!"}]}


async def test_live_sends_count_for_the_live_video_and_own_comments_do_not_count(
        tmp_path: Path) -> None:
    """(audit s16 findings 6 and 7) A live comment's reply is credited to the live video
    (its key names 'live:{id}', not 'comment:{id}'); the account's public reply, which Meta
    sends back as a comment on the post, is not one of the post's comments."""
    async with open_harness(tmp_path, workflows=[PUBLIC_WF, LIVE_WF],
                            clock=Clock(frozen=True)) as h:
        await h.sandbox.user_comments(U1, "guide please", M1)
        live = await h.sandbox.user_comments(U2, "guide!", LIVE, deliver=False)
        change = live["entry"][0]["changes"][0]  # type: ignore[index]
        change["field"] = "live_comments"
        change["value"]["media"]["media_product_type"] = "LIVE"
        assert await h.post(live) == 200
        await h.settle()
        own = await h.rt.db.fetchall(
            "SELECT processed_at FROM events WHERE kind = 'comment' AND contact_id = ?", (ACCT,))
        assert len(own) == 1 and own[0]["processed_at"] is not None  # the public reply
        now = h.clock()
        for doc in (await compute(h.rt.db, now - 86400, now),
                    await compute_scan(h.rt.db, now - 86400, now)):
            media = funnel(doc["media"], "media_id")
            pick = ("comments", "triggers", "sent", "refused", "pending")
            assert {k: media[M1][k] for k in pick} == {
                "comments": 1, "triggers": 1, "sent": 2, "refused": 0, "pending": 0}
            assert {k: media[LIVE][k] for k in pick} == {
                "comments": 1, "triggers": 1, "sent": 1, "refused": 0, "pending": 0}
            wf = funnel(doc["workflows"], "workflow")
            assert (wf["live-guide"]["triggers"], wf["live-guide"]["sent"]) == (1, 1)


async def test_funnel_from_a_real_scene(tmp_path: Path) -> None:
    async with open_harness(tmp_path, workflows=[COMMENT_WF, BOOK_WF],
                            clock=Clock(frozen=True)) as h:
        await play(h)
        now = h.clock()
        check(await compute(h.rt.db, now - 86400, now))
        check(await compute_scan(h.rt.db, now - 86400, now))
        # Nothing happened since the next hour (a period starts at the top of an hour).
        later = (now // 3600 + 1) * 3600
        empty = await compute(h.rt.db, later, later + 1)
        assert empty["workflows"] == [] and empty["media"] == []
        assert set(empty["totals"].values()) == {0} and empty["messages_per_day"] == []


def test_stats_cli_json_csv_and_chart(tmp_path: Path) -> None:
    async def build() -> Path:
        async with open_harness(tmp_path, workflows=[COMMENT_WF, BOOK_WF]) as h:
            await play(h)
            return h.config.storage.db_path()

    db_path = asyncio.run(build())
    cfg = tmp_path / "config.yaml"
    cfg.write_text(json.dumps({"storage": {"path": str(db_path)}}), "utf-8")
    runner = CliRunner()
    as_json = runner.invoke(app, ["--config", str(cfg), "stats", "--since", "1d", "--json"])
    assert as_json.exit_code == 0, as_json.output
    doc = json.loads(as_json.stdout)
    # The real clock ticked here (not frozen): the first response took the scene's 90 s
    # jump plus however long the daemon took, so only that figure is checked loosely.
    assert doc["first_response"]["median_seconds"] >= 90
    doc["first_response"]["median_seconds"] = 90.0
    check(doc)

    as_csv = runner.invoke(app, ["--config", str(cfg), "stats", "--since", "1d", "--csv"])
    assert as_csv.exit_code == 0, as_csv.output
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    media = next(r for r in rows if r["scope"] == "media" and r["name"] == M1)
    assert (media["comments"], media["triggers"], media["sent"], media["clicks"]) == \
        ("2", "2", "2", "1")
    assert {(r["scope"], r["name"], r["refused"]) for r in rows if r["scope"] == "refused"} \
        == {("refused", "window_closed", "1")}

    text = runner.invoke(app, ["--config", str(cfg), "stats"])
    assert text.exit_code == 0, text.output
    assert "comment-guide" in text.stdout and "messages per day" in text.stdout
    assert "█" in text.stdout and "1 in / 3 out" in text.stdout

    bad = runner.invoke(app, ["--config", str(cfg), "stats", "--since", "soon"])
    assert bad.exit_code == 1 and "--since" in bad.stderr


def test_the_text_header_shows_whole_seconds(tmp_path: Path) -> None:
    """The document keeps the exact time; people read 03:17:31Z, not 03:17:31.363185Z."""
    import re

    from typer.testing import CliRunner

    from instaset.cli import app

    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"storage: {{path: {tmp_path / 's.db'}}}\n", "utf-8")
    result = CliRunner().invoke(app, ["--config", str(cfg), "stats"])
    assert result.exit_code == 0, result.output
    header = result.stdout.splitlines()[0]
    assert re.fullmatch(r"instaset stats \S+Z → \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", header), header
