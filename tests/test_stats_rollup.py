"""The rollups (migration 0010's triggers and backfill) against the reference scans.

Seeded random histories are written through the store's own write functions (the same
statements the daemon, the inbox and the drafts run): DMs in and out, decisions with several
sends (comment-caused ones, live-comment-caused ones, resumed flows, chunks), every send state
transition, human replies, read receipts (also for messages stored after the receipt, and
unknown ones), comments and live comments on media (processed at once or later; the account's
own too), workflow fires, stage and tag changes, conversation touches and tracked-link
clicks, over several hours and days and two accounts. Then ``compute`` (rollups) must equal
``compute_scan`` (rows) for periods starting at different hours; and again after the rollup
tables are emptied and rebuilt by the migrations' backfills (0010, then 0020's corrections);
and for a history written under 0010's triggers, once 0020 has run.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from instaset.stats import compute, compute_scan, median_of, wait_bucket
from instaset.store import history
from instaset.store import sends as sendstore
from instaset.store import stats as statstore
from instaset.store.db import Database, open_database
from instaset.store.migrate import _split_sql

START = 1_700_000_000.0 - 1_700_000_000.0 % 86400 + 5 * 3600 + 17  # 05:00:17 UTC
ACCOUNTS = ("17841400000000001", "17841400000000002")
CONTACTS = tuple(f"90000000000000{i:02d}" for i in range(6))
WORKFLOWS = ("welcome", "comment-guide", "book")
MEDIA = ("18000000000000001", "18000000000000002")
LIVE_MEDIA = ("18000000000000055",)
STAGES = ("new", "engaged", "qualified", "booked", "customer")
REASONS = ("window_closed", "paused", None, "graph_error")
HELD = ("private_reply_not_sent",)  # a public reply whose private reply did not go
STATS_ROLLUP, STATS_LIVE = "0010_stats_rollup.sql", "0020_stats_live_and_own_comments.sql"
STATS_DECISION = "0023_stats_one_decision.sql"
ROLLUPS = ("stats_sends", "stats_refusals", "stats_reads", "stats_messages", "stats_pending",
           "stats_waits_hour", "stats_waits_day", "stats_conversations", "stats_fired",
           "stats_commenters", "stats_media", "stats_clicks")


@dataclass
class World:
    """What the generator has written so far (to pick plausible next steps)."""

    rng: random.Random
    now: float = START
    n: int = 0
    sends: list[tuple[str, str, str, str]] = field(default_factory=list)  # key, acct, c, kind
    outs: list[tuple[str, str, str]] = field(default_factory=list)  # mid, acct, contact
    # the comment event's key ('comment:{id}' or 'live:{id}'), acct, contact
    comments: list[tuple[str, str, str]] = field(default_factory=list)
    unprocessed: list[int] = field(default_factory=list)
    late_mids: list[tuple[str, str, str]] = field(default_factory=list)  # sent, no message yet
    states: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # Also AI replies, their slots and fallbacks, and held public replies (an extra draw of
    # the generator: off for the seeds chosen before they existed).
    ai: bool = False

    def uid(self) -> int:
        self.n += 1
        return self.n


async def _event(conn: aiosqlite.Connection, w: World, kind: str, acct: str, contact: str,
                 raw: dict[str, Any], key: str, processed: bool) -> None:
    cur = await conn.execute(
        "INSERT INTO events(dedupe_key, account_id, kind, contact_id, occurred_at, received_at,"
        " raw) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (key, acct, kind, contact, w.now, w.now, json.dumps(raw)))
    assert cur.lastrowid is not None
    if processed:
        await history.mark_processed(conn, cur.lastrowid, w.now)
    else:
        w.unprocessed.append(cur.lastrowid)


async def _conversation(conn: aiosqlite.Connection, w: World, acct: str, contact: str,
                        **changes: Any) -> None:
    st = w.states.setdefault((acct, contact), {"stage": "new", "tags": [], "fired": {}})
    fired = changes.pop("fired", None)
    if fired:
        st["fired"][fired] = w.now
    st.update(changes)
    await history.update_conversation(conn, acct, contact, w.now, state=json.dumps(st))


async def _ai_sends(conn: aiosqlite.Connection, w: World, base: str, n: int, acct: str,
                    contact: str, wf: str | None) -> None:
    """What the AI adds to a decision (``base`` = 'send:{event}', ``n`` its sends): an
    ai_reply's answer (and its typing, no workflow), its offer of slots, or the AI's
    fallback (today's format, or the older one per contact and day); the engine's refused
    sends (a held public reply among them)."""
    rng = w.rng
    job = f"ai:{base[5:]}:{n}"
    keys: list[str] = []
    shape = rng.randrange(5)
    if shape <= 1:
        keys.append(f"send:{job}")
        if rng.random() < 0.3:
            keys.append(f"send:{job}:slots")
        if rng.random() < 0.2:
            keys.append(f"send:{job}#2")
        if rng.random() < 0.3:  # after a delay: the continuation's ai_reply
            keys.append(f"send:{job}:{rng.randrange(3)}")
    elif shape == 2:
        day = f"send:ai-fallback:{acct}:{contact}:{int(w.now // 86400)}"
        keys.append(day if rng.random() < 0.2 else f"{day}:{job}")
    elif shape == 3:
        await sendstore.insert_refused(conn, [(
            f"{base}:{n + 1}", acct, contact, None, "public_reply", "{}", "automation", wf,
            rng.choice((*HELD, "private_reply_expired")), "words", w.now)])
        w.sends.append((f"{base}:{n + 1}", acct, contact, "public_reply"))
    if not keys:
        return
    kinds = [rng.choice(("text", "private_reply")) for _ in keys]
    await sendstore.insert_sends(conn, [
        (k, acct, contact, None, kind, "{}", "automation", wf, w.now)
        for k, kind in zip(keys, kinds, strict=True)])
    w.sends += [(k, acct, contact, kind) for k, kind in zip(keys, kinds, strict=True)]
    if rng.random() < 0.3:
        await sendstore.insert_sends(conn, [(f"send:{job}:typing", acct, contact, None,
                                             "sender_action", "{}", "automation", None, w.now)])


async def step(conn: aiosqlite.Connection, w: World) -> None:
    rng = w.rng
    w.now += rng.choice((0.0, 0.4, 3.0, 45.0, 200.0, 1300.0, 5000.0))
    acct, contact = rng.choice(ACCOUNTS), rng.choice(CONTACTS)
    await history.touch_contact(conn, acct, contact, w.now)
    op = rng.randrange(13)
    if op <= 2:  # the person writes
        await history.insert_message(
            conn, account_id=acct, contact_id=contact, mid=f"in{w.uid()}", direction="in",
            sent_by="contact", text="hi", attachments=[], created_at=w.now)
        await history.update_conversation(conn, acct, contact, w.now, inbound_at=w.now,
                                          message_at=w.now, unread_delta=1)
    elif op <= 4:  # a decision: sends (maybe caused by a comment), and the workflow fires
        wf = rng.choice((*WORKFLOWS, None))
        if w.comments and rng.random() < 0.5:  # caused by a comment: to its author
            event, acct, contact = rng.choice(w.comments)
            base = f"send:{event}"
        else:
            base = rng.choice((f"send:msg:m{w.uid()}", f"send:resume:r{w.uid()}"))
        if base.startswith("send:live:") and rng.random() < 0.3:  # a live flow resumed
            base = f"send:resume:resume:{base[5:]}:{rng.randrange(3)}"
        keys = [f"{base}:{i}" for i in range(rng.randint(1, 3))]
        if rng.random() < 0.2:
            keys.append(f"{keys[0]}#2")
        kinds = [rng.choice(("text", "text", "private_reply", "sender_action")) for _ in keys]
        await sendstore.insert_sends(conn, [
            (k, acct, contact, None, kind, "{}", "automation", wf, w.now)
            for k, kind in zip(keys, kinds, strict=True)])
        w.sends += [(k, acct, contact, kind) for k, kind in zip(keys, kinds, strict=True)]
        if w.ai:
            await _ai_sends(conn, w, base, len(keys), acct, contact, wf)
        if wf is not None:
            await _conversation(conn, w, acct, contact, fired=wf)
    elif op <= 6 and w.sends:  # a send moves on
        key, s_acct, s_contact, kind = rng.choice(w.sends)
        move = rng.randrange(6)
        if move == 0:
            await sendstore.set_state_in(conn, key, "in_flight", w.now)
        elif move <= 2:
            mid = f"out{w.uid()}"
            await sendstore.mark_sent_in(conn, key, mid, w.now)
            if kind != "sender_action":
                if rng.random() < 0.8:
                    await history.insert_message(
                        conn, account_id=s_acct, contact_id=s_contact, mid=mid,
                        direction="out", sent_by="automation", text="x", attachments=[],
                        created_at=w.now)
                    w.outs.append((mid, s_acct, s_contact))
                else:  # its message row comes later (an echo)
                    w.late_mids.append((mid, s_acct, s_contact))
        elif move == 3:
            await sendstore.set_state_in(conn, key, rng.choice(("refused", "failed")), w.now,
                                         reason=rng.choice((*REASONS, *HELD) if w.ai else REASONS))
        elif move == 4:
            await sendstore.set_state_in(conn, key, "pending", w.now)
        else:  # another reason for a refused send
            await sendstore.set_state_in(conn, key, "refused", w.now, reason="rate_limited")
    elif op == 7:  # the creator answers from the inbox
        mid = f"h{w.uid()}"
        key = f"human:{w.uid()}"
        await sendstore.insert_sends(
            conn, [(key, acct, contact, None, "text", "{}", "human", None, w.now)])
        await sendstore.mark_sent_in(conn, key, mid, w.now)
        await history.insert_message(
            conn, account_id=acct, contact_id=contact, mid=mid, direction="out",
            sent_by="human", text="hey", attachments=[], created_at=w.now)
        w.outs.append((mid, acct, contact))
    elif op == 8:  # a read receipt (of a stored message of theirs, or an unknown one)
        # Not of a message stored only later: the rollup applies a receipt when it is
        # processed, to the messages stored then (the daemon stores our message with the
        # send's outcome, before Meta can deliver a receipt for it).
        theirs = [o for o in w.outs if o[1] == acct and o[2] == contact]
        mid = rng.choice(theirs)[0] if theirs else "unknown"
        raw = {"object": "instagram", "entry": [{"id": acct, "time": 1, "messaging": [
            {"sender": {"id": contact}, "recipient": {"id": acct}, "read": {"mid": mid}}]}]}
        await _event(conn, w, "read", acct, contact, raw, f"read:{w.uid()}",
                     processed=rng.random() < 0.7)
    elif op == 9:  # a comment, a live comment, or the account's own comment (a public reply)
        cid = f"c{w.uid()}"
        kind = rng.choice(("comment", "comment", "live_comment"))
        author = acct if rng.random() < 0.25 else contact
        value: dict[str, Any] = {"id": cid, "text": "guide", "from": {"id": author}}
        if rng.random() < 0.9:
            value["media"] = {"id": rng.choice(MEDIA if kind == "comment" else LIVE_MEDIA)}
        raw = {"object": "instagram", "entry": [{"id": acct, "time": 1, "changes": [
            {"field": "comments" if kind == "comment" else "live_comments", "value": value}]}]}
        key = f"{'comment' if kind == 'comment' else 'live'}:{cid}"
        await _event(conn, w, kind, acct, author, raw, key, processed=rng.random() < 0.8)
        if author != acct:  # the account's own comments never trigger anything
            w.comments.append((key, acct, contact))
    elif op == 10:  # stage or tags change
        if rng.random() < 0.7:
            await _conversation(conn, w, acct, contact, stage=rng.choice(STAGES))
        else:
            await _conversation(conn, w, acct, contact,
                                tags=rng.choice(([], ["lead"], ["vip", "lead"])))
    elif op == 11:  # late work: an unprocessed event is processed, a late echo is stored
        if w.unprocessed:
            await history.mark_processed(conn, w.unprocessed.pop(0), w.now)
        if w.late_mids:
            mid, l_acct, l_contact = w.late_mids.pop(0)
            await history.insert_message(
                conn, account_id=l_acct, contact_id=l_contact, mid=mid, direction="out",
                sent_by="automation", text="x", attachments=[], created_at=w.now)
            w.outs.append((mid, l_acct, l_contact))
    elif w.sends:  # a tracked link of a send is clicked
        key, s_acct, s_contact, _ = rng.choice(w.sends)
        code = f"k{w.uid()}"
        wf = rng.choice((*WORKFLOWS, None))
        await statstore.insert_links(
            conn, [(code, "https://x.example", s_acct, s_contact, key, wf, w.now)])
        await conn.execute("INSERT INTO clicks(code, account_id, contact_id, at)"
                           " VALUES (?, ?, ?, ?)", (code, s_acct, s_contact, w.now))


async def build(db: Database, seed: int, steps: int, *, ai: bool = False) -> World:
    w = World(random.Random(seed), ai=ai)
    for acct in ACCOUNTS:
        await history.upsert_account(db, acct, username=f"a{acct[-1]}", now=START)
    async with db.tx() as conn:
        for _ in range(steps):
            await step(conn, w)
    return w


def migration(name: str) -> str:
    return (resources.files("instaset.store") / "migrations" / name).read_text("utf-8")


def backfills() -> list[str]:
    """The statements an existing database got from 0010 (its backfill) and then from
    0020 and 0023 (their corrections), but for their tables and triggers."""
    sql = migration(STATS_ROLLUP)
    backfill = sql[sql.index("-- Backfill"):sql.index("-- Triggers.")]
    statements = [s for s in _split_sql(backfill) if not s.startswith("CREATE TABLE stats_")]
    for name in (STATS_LIVE, STATS_DECISION):
        sql = migration(name)
        statements += _split_sql(sql[sql.index("-- Corrections"):sql.index("-- Triggers:")])
    return statements


async def rebuild_from_backfill(db: Database) -> None:
    """Empty the rollups and run the migrations' backfills (the statements before their
    triggers), as an existing database gets them."""
    async with db.tx() as conn:
        for table in ROLLUPS:
            await conn.execute(f"DELETE FROM {table}")
        for statement in backfills():
            await conn.execute(statement)


async def assert_same(db: Database, w: World) -> None:
    for since in (START - 3600, START + 1800, START + 3 * 3600 + 59, (START + w.now) / 2,
                  w.now - 7200, w.now):
        expected = await compute_scan(db, since, w.now)
        assert await compute(db, since, w.now) == expected, since


@pytest.mark.parametrize("seed", range(12))
async def test_rollups_equal_the_reference(tmp_path: Path, seed: int) -> None:
    db = await open_database(tmp_path / "s.db")
    try:
        w = await build(db, seed, 260)
        full = await compute_scan(db, START - 3600, w.now)
        # The history is varied enough to mean something.
        assert full["totals"]["triggers"] and full["totals"]["read"]
        assert full["totals"]["refused"] and full["totals"]["leads"]
        assert full["totals"]["clicks"] and full["first_response"]["conversations"]
        assert any(m["comments"] for m in full["media"])
        assert any(m["media_id"] in LIVE_MEDIA and m["comments"] for m in full["media"])
        await assert_same(db, w)
        await rebuild_from_backfill(db)
        await assert_same(db, w)
    finally:
        await db.close()


async def old_triggers(db: Database) -> None:
    """Put back the triggers 0020 replaced, as 0010 made them (a database before 0020)."""
    sql = migration(STATS_ROLLUP)
    names = re.findall(r"^DROP TRIGGER (\w+);", migration(STATS_LIVE), re.M)
    assert len(names) == 6
    async with db.tx() as conn:
        for name in names:
            await conn.execute(f"DROP TRIGGER {name}")
        for statement in _split_sql(sql[sql.index("-- Triggers."):]):
            if any(f"CREATE TRIGGER {name} " in statement for name in names):
                await conn.execute(statement)


@pytest.mark.parametrize("seed", (3, 5, 6, 9))  # with sends and clicks of live comments
async def test_0020_corrects_what_0010_counted(tmp_path: Path, seed: int) -> None:
    """A history written under 0010's triggers (a live comment's sends under no media, the
    account's own comments counted), then 0020 as an upgrade applies it: the figures are
    the reference's, and stay so as the history goes on under 0020's triggers."""
    db = await open_database(tmp_path / "s.db")
    try:
        await old_triggers(db)
        w = await build(db, seed, 260)
        full = await compute_scan(db, START - 3600, w.now)
        [live] = [m for m in full["media"] if m["media_id"] in LIVE_MEDIA]
        assert live["sent"] and live["clicks"] and live["triggers"]
        own = await db.fetchone("SELECT count(*) FROM events WHERE contact_id = account_id"
                                " AND processed_at IS NOT NULL")
        assert own is not None and own[0] > 0
        assert await compute(db, START - 3600, w.now) != full  # 0010 had it wrong
        async with db.tx() as conn:
            for statement in _split_sql(migration(STATS_LIVE)):
                await conn.execute(statement)
        await assert_same(db, w)
        async with db.tx() as conn:
            for _ in range(120):
                await step(conn, w)
        await assert_same(db, w)
    finally:
        await db.close()


@pytest.mark.parametrize("seed", range(6))
async def test_rollups_equal_the_reference_with_ai_replies(tmp_path: Path, seed: int) -> None:
    """With AI replies, their slots and fallbacks among a decision's sends, and public
    replies held back for their private reply (migration 0023)."""
    db = await open_database(tmp_path / "s.db")
    try:
        w = await build(db, seed, 260, ai=True)
        full = await compute_scan(db, START - 3600, w.now)
        assert full["totals"]["triggers"] and full["totals"]["refused"]
        held = await db.fetchone("SELECT count(*) FROM sends WHERE state IN ('refused',"
                                 " 'failed') AND reason = 'private_reply_not_sent'")
        assert held is not None and held[0] > 0
        assert "private_reply_not_sent" not in full["refused_by_reason"]
        await assert_same(db, w)
        await rebuild_from_backfill(db)
        await assert_same(db, w)
    finally:
        await db.close()


async def triggers_before_0023(db: Database) -> None:
    """Put back the triggers 0023 replaced, as 0020 (and 0010) made them."""
    names = re.findall(r"^DROP TRIGGER (\w+);", migration(STATS_DECISION), re.M)
    assert len(names) == 3
    async with db.tx() as conn:
        for name in names:
            await conn.execute(f"DROP TRIGGER {name}")
        for source in (STATS_LIVE, STATS_ROLLUP):
            sql = migration(source)
            for statement in _split_sql(sql[sql.index("-- Triggers"):]):
                made = re.search(r"^CREATE TRIGGER (\w+) ", statement, re.M)
                if made and made[1] in names:
                    await conn.execute(statement)
                    names.remove(made[1])
    assert names == []


@pytest.mark.parametrize("seed", (1, 4, 7))
async def test_0023_corrects_what_0020_counted(tmp_path: Path, seed: int) -> None:
    """A history written under 0020's triggers (an AI reply or fallback counted as a
    decision of its own, a held public reply as a refusal), then 0023 as an upgrade applies
    it: the figures are the reference's, and stay so as the history goes on."""
    db = await open_database(tmp_path / "s.db")
    try:
        await triggers_before_0023(db)
        w = await build(db, seed, 260, ai=True)
        full = await compute_scan(db, START - 3600, w.now)
        before = await compute(db, START - 3600, w.now)
        assert before["totals"]["triggers"] > full["totals"]["triggers"]  # 0020 had it wrong
        assert before["totals"]["refused"] > full["totals"]["refused"]
        assert before["refused_by_reason"]["private_reply_not_sent"] > 0
        async with db.tx() as conn:
            for statement in _split_sql(migration(STATS_DECISION)):
                await conn.execute(statement)
        await assert_same(db, w)
        async with db.tx() as conn:
            for _ in range(120):
                await step(conn, w)
        await assert_same(db, w)
    finally:
        await db.close()


async def test_rollup_queries_read_the_period_only(db: Database) -> None:
    """A period that starts after everything shows nothing, though the rollups hold rows."""
    w = await build(db, 99, 120)
    later = (w.now // 3600 + 1) * 3600
    doc = await compute(db, later, later)
    assert doc["workflows"] == [] and doc["media"] == [] and doc["messages_per_day"] == []
    assert set(doc["totals"].values()) == {0}
    assert doc["first_response"] == {"conversations": 0, "median_seconds": None}
    assert (await db.fetchone("SELECT count(*) FROM stats_sends"))[0] > 0  # type: ignore[index]


def test_wait_buckets_and_median() -> None:
    assert [wait_bucket(d) for d in (0, 7, 199, 200, 204, 205, 999, 1234, 10**8)] == \
        [0, 7, 199, 200, 200, 205, 990, 1220, 10**8]
    # Every step is at most 2.5 % of the waits it rounds.
    for d in range(200, 10**9, 99_991):
        assert (d - wait_bucket(d)) <= 0.025 * d
    assert median_of([]) is None
    assert median_of([(10, 1), (30, 1), (900, 1)]) == 3.0
    assert median_of([(10, 2), (30, 2)]) == 2.0
    assert median_of([(10, 1), (20, 1), (30, 5)]) == 3.0
