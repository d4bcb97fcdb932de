"""Retention and erasure: the time policy (what goes, what must stay), the dedupe guard,
erasing a contact / an account / everything, idempotence, space reclaim, the CLI, the
daemon's daily job, and purging under concurrent webhook ingest on the same file."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from typer.testing import CliRunner

from instaset import retention
from instaset.cli import app
from instaset.config import Config
from instaset.daemon import Runtime, runtime, single_instance
from instaset.store import history
from instaset.store import jobs as jobstore
from instaset.store import retention as retention_store
from instaset.store.accounts import delete_contact_data
from instaset.store.db import Database, open_database
from instaset.webhook import make_app
from tests.conftest import SECRET, sign
from tests.test_accounts import seed as accounts_seed

ClientFactory = Callable[..., Awaitable[TestClient]]  # type: ignore[type-arg]
DAY = 86400.0
NOW = 1_800_000_000.0
A1, A2 = "17841400000000001", "17841400000000002"


async def seed(db: Database, acct: str, contact: str, at: float, n: int = 3, *,
               tag: str = "") -> None:
    """``n`` of each kind of row for ``contact``, all dated ``at``: messages, processed
    events, finished jobs, finished sends, notifications, a link with a click."""
    await history.upsert_account(db, acct, username=f"creator{acct[-1]}", now=1.0)
    async with db.tx() as conn:
        await history.touch_contact(conn, acct, contact, at)
        for i in range(n):
            key = f"{contact}:{at}:{i}{tag}"
            cur = await conn.execute(
                "INSERT INTO events(dedupe_key, account_id, kind, contact_id, occurred_at,"
                " received_at, processed_at, raw) VALUES (?, ?, 'message', ?, ?, ?, ?, ?)",
                (f"msg:{key}", acct, contact, at, at, at, json.dumps({"entry": [key]})))
            await history.insert_message(
                conn, account_id=acct, contact_id=contact, mid=f"m:{key}", direction="in",
                sent_by="contact", text=f"hello {i}", attachments=[
                    {"type": "image", "url": "https://cdn.example/i.jpg", "title": None}],
                created_at=at, event_id=cur.lastrowid)
            await conn.execute(
                "INSERT INTO jobs(kind, key, payload, state, run_at, created_at, finished_at)"
                " VALUES ('process_event', ?, '{}', 'done', ?, ?, ?)", (f"event:{key}", at, at, at))
            await conn.execute(
                "INSERT INTO sends(key, account_id, contact_id, kind, body, state, created_at,"
                " updated_at) VALUES (?, ?, ?, 'text', '{}', 'sent', ?, ?)",
                (f"send:{key}", acct, contact, at, at))
            await conn.execute(
                "INSERT INTO notifications(key, account_id, contact_id, kind, text, created_at)"
                " VALUES (?, ?, ?, 'lead', 'hot lead', ?)", (f"n:{key}", acct, contact, at))
        code = f"{contact[-6:]}{int(at) % 10000:04d}"[-10:].lower()
        await conn.execute(
            "INSERT INTO links(code, url, account_id, contact_id, send_key, workflow, created_at)"
            " VALUES (?, 'https://example.com', ?, ?, NULL, 'guide', ?)", (code, acct, contact, at))
        await conn.execute("INSERT INTO clicks(code, account_id, contact_id, at)"
                           " VALUES (?, ?, ?, ?)", (code, acct, contact, at))


async def count(db: Database, sql: str, params: tuple[object, ...] = ()) -> int:
    row = await db.fetchone(sql, params)
    assert row is not None
    return int(row[0])


async def counts(db: Database) -> dict[str, int]:
    tables = ("messages", "events", "jobs", "sends", "notifications", "links", "clicks",
              "contacts", "conversations")
    return {t: await count(db, f"SELECT count(*) FROM {t}") for t in tables}


# -- the time policy --------------------------------------------------------------------------
def base_counts(counts: dict[str, int]) -> dict[str, int]:
    """The history tables' counts, without the stats rollups' (tested above)."""
    return {k: v for k, v in counts.items() if not k.startswith("stats_")}


async def test_time_policy_deletes_old_finished_rows_and_keeps_pending_work(db: Database
                                                                            ) -> None:
    old, new = NOW - 100 * DAY, NOW - DAY
    await seed(db, A1, "c1", old)
    await seed(db, A1, "c1", new, tag="n")
    async with db.tx() as conn:  # old rows that are still work in progress
        await conn.execute(
            "INSERT INTO events(dedupe_key, account_id, kind, contact_id, occurred_at,"
            " received_at, raw) VALUES ('msg:pending', ?, 'message', 'c1', ?, ?, '{}')",
            (A1, old, old))
        await conn.execute("INSERT INTO jobs(kind, key, payload, run_at, created_at) VALUES"
                           " ('process_event', 'event:msg:pending', '{}', ?, ?)", (old, old))
        await conn.execute(
            "INSERT INTO sends(key, account_id, contact_id, kind, body, state, created_at,"
            " updated_at) VALUES ('send:flying', ?, 'c1', 'text', '{}', 'in_flight', ?, ?)",
            (A1, old, old))
        await conn.execute("UPDATE messages SET deleted_at = ? WHERE mid LIKE 'm:c1:%:0n'",
                           (new,))
        await conn.execute("INSERT INTO stats_reads(account_id, contact_id, upto)"
                           " VALUES (?, 'c1', ?)", (A1, old))
    report = await retention.purge_older_than(db, NOW - 90 * DAY, NOW)
    assert report.counts == {
        "messages": 3, "events": 3, "jobs": 3, "sends": 3, "notifications": 3, "clicks": 1,
        "links (anonymised)": 1, "unsent messages (scrubbed)": 1,
        # the stats rollups of those old hours (0010); stats_reads is never aged out
        "stats_sends": 1, "stats_messages": 1, "stats_conversations": 1, "stats_clicks": 1,
        "stats_pending": 1,
    }
    # what the person's receipts reached stays, or old reads would count again as new
    assert await count(db, "SELECT count(*) FROM stats_reads WHERE upto = ?", (old,)) == 1
    left = await counts(db)
    assert left == {"messages": 3, "events": 4, "jobs": 4, "sends": 4, "notifications": 3,
                    "links": 2, "clicks": 1, "contacts": 1, "conversations": 1}
    assert await count(db, "SELECT count(*) FROM events WHERE processed_at IS NULL") == 1
    assert await count(db, "SELECT count(*) FROM jobs WHERE state = 'ready'") == 1
    assert await count(db, "SELECT count(*) FROM sends WHERE state = 'in_flight'") == 1
    scrubbed = await db.fetchone("SELECT text, attachments FROM messages WHERE deleted_at"
                                 " IS NOT NULL")
    assert scrubbed is not None and tuple(scrubbed) == (None, "[]")
    # The old link still redirects, but no longer says who got it.
    assert await count(db, "SELECT count(*) FROM links WHERE contact_id IS NULL") == 1
    again = await retention.purge_older_than(db, NOW - 90 * DAY, NOW)
    assert again.counts == {} and await counts(db) == left  # idempotent


async def test_dry_run_counts_and_changes_nothing(db: Database) -> None:
    await seed(db, A1, "c1", NOW - 100 * DAY)
    before = await counts(db)
    report = await retention.purge_older_than(db, NOW - 90 * DAY, NOW, dry_run=True)
    assert report.dry_run and report.counts["messages"] == 3 and report.total == 22
    assert await counts(db) == before


async def test_recent_events_are_kept_as_blank_dedupe_keys(db: Database) -> None:
    """Meta may still retry a webhook received less than 36 h ago: its key must stay."""
    await seed(db, A1, "c1", NOW - 3 * DAY, n=1)
    await seed(db, A1, "c1", NOW - 10 * 3600, n=1, tag="r")
    report = await retention.purge_older_than(db, NOW - 3600, NOW)
    assert report.counts["events"] == 1
    assert report.counts["events (blanked, kept as dedupe keys)"] == 1
    rows = await db.fetchall("SELECT dedupe_key, raw FROM events")
    assert [(r[0], r[1]) for r in rows] == [(f"msg:c1:{NOW - 10 * 3600}:0r", "{}")]


async def test_an_unprocessed_event_no_job_can_process_any_more_ages_out(db: Database
                                                                        ) -> None:
    """An event whose job dead-lettered (a poison event) is no pending work: it goes after
    the horizon like a processed one, instead of keeping its text for ever once the dead
    job is purged. One that a job will still process (due, retrying later, running) stays
    whatever its age."""
    await history.upsert_account(db, A1, username="creator1", now=1.0)
    old, recent = NOW - 100 * DAY, NOW - DAY
    cases = {  # dedupe key: (received at, its job's state and due time, or no job)
        "dead": (old, ("dead", old)), "done": (old, ("done", old)), "none": (old, None),
        "due": (old, ("ready", old)), "retrying": (old, ("ready", NOW + DAY)),
        "running": (old, ("running", old)), "recent-dead": (recent, ("dead", recent)),
    }
    async with db.tx() as conn:
        for key, (at, job) in cases.items():
            await conn.execute(
                "INSERT INTO events(dedupe_key, account_id, kind, contact_id, occurred_at,"
                " received_at, raw) VALUES (?, ?, 'message', 'c1', ?, ?, ?)",
                (key, A1, at, at, json.dumps({"text": f"card 4111 {key}"})))
            if job is not None:
                await conn.execute(
                    "INSERT INTO jobs(kind, key, payload, state, run_at, created_at,"
                    " finished_at) VALUES ('process_event', ?, '{}', ?, ?, ?, ?)",
                    (f"event:{key}", job[0], job[1], at, at))
    report = await retention.purge_older_than(db, NOW - 90 * DAY, NOW)
    assert report.counts["events"] == 3
    left = [r[0] for r in await db.fetchall("SELECT dedupe_key FROM events ORDER BY id")]
    assert left == ["due", "retrying", "running", "recent-dead"]
    # The old finished jobs went too; a second run finds nothing more.
    assert (await retention.purge_older_than(db, NOW - 90 * DAY, NOW)).counts == {}
    # A horizon inside Meta's retry window blanks such an event instead (its key stays).
    report = await retention.purge_older_than(db, NOW - 3600, NOW)
    assert report.counts["events (blanked, kept as dedupe keys)"] == 1
    rows = await db.fetchall("SELECT dedupe_key, raw FROM events ORDER BY id")
    assert [tuple(r) for r in rows if r[1] == "{}"] == [("recent-dead", "{}")]


# -- erasure ----------------------------------------------------------------------------------
async def test_a_leads_quotes_of_old_messages_go_with_the_messages(db: Database) -> None:
    """Found by the session-15 privacy review: a lead's reasons quoted the contact's message
    word for word ("evidence") and outlived the message by years. Past the horizon the
    quotes go; the score, the stage and the rules behind them stay."""
    old, new = NOW - 100 * DAY, NOW - DAY
    await seed(db, A1, "c1", old, n=1)
    await seed(db, A1, "c2", new, n=1)
    reasons = json.dumps([{"rule": "wants_a_call", "points": 20,
                           "evidence": "I'd like to book a call, my number is 555-0100"},
                          {"rule": "tagged", "points": 5}])
    async with db.tx() as conn:
        for contact, at in (("c1", old), ("c2", new)):
            await conn.execute(
                "INSERT INTO leads(account_id, contact_id, score, stage, reasons, rules_hash,"
                " updated_at) VALUES (?, ?, 25, 'engaged', ?, 'h', ?)", (A1, contact, reasons, at))
            await conn.execute(
                "INSERT INTO lead_facts(key, account_id, contact_id, source, name, value,"
                " evidence, created_at) VALUES (?, ?, ?, 'ai', 'phone', '555-0100',"
                " 'my number is 555-0100', ?)", (f"f:{contact}", A1, contact, at))
    report = await retention.purge_older_than(db, NOW - 90 * DAY, NOW)
    assert report.counts["leads (quotes removed)"] == 1
    assert report.counts["lead facts (quotes removed)"] == 1
    rows = {r["contact_id"]: r for r in await db.fetchall(
        "SELECT contact_id, score, stage, reasons FROM leads")}
    assert json.loads(rows["c1"]["reasons"]) == [{"rule": "wants_a_call", "points": 20},
                                                 {"rule": "tagged", "points": 5}]
    assert (rows["c1"]["score"], rows["c1"]["stage"]) == (25, "engaged")
    assert rows["c2"]["reasons"] == reasons  # a recent lead keeps its quotes
    # A lead still scored (updated yesterday) keeps an old reason, with its time: that
    # reason's quote goes, the recent one's stays.
    mixed = [{"rule": "asked_price", "points": 10, "evidence": "price? 555-0100", "at": old},
             {"rule": "wants_a_call", "points": 20, "evidence": "call me", "at": new}]
    async with db.tx() as conn:
        await conn.execute("UPDATE leads SET reasons = ?, updated_at = ? WHERE contact_id = 'c2'",
                           (json.dumps(mixed), new))
    report = await retention.purge_older_than(db, NOW - 90 * DAY, NOW)
    assert report.counts["leads (quotes removed)"] == 1
    row = await db.fetchone("SELECT reasons FROM leads WHERE contact_id = 'c2'")
    assert row is not None and json.loads(row[0]) == [
        {"rule": "asked_price", "points": 10, "at": old},
        {"rule": "wants_a_call", "points": 20, "evidence": "call me", "at": new}]
    facts = {r["contact_id"]: tuple(r) for r in await db.fetchall(
        "SELECT contact_id, value, evidence FROM lead_facts")}
    assert facts == {"c1": ("c1", "555-0100", None),
                     "c2": ("c2", "555-0100", "my number is 555-0100")}
    again = await retention.purge_older_than(db, NOW - 90 * DAY, NOW)
    assert "leads (quotes removed)" not in again.counts  # idempotent


async def test_contact_erasure_reaches_every_table_and_spares_others(db: Database) -> None:
    await seed(db, A1, "c1", NOW)
    await seed(db, A1, "c2", NOW)
    async with db.tx() as conn:
        # Another feature's table (AI drafts), and a continuation job naming the contact.
        await conn.execute(
            "INSERT INTO ai_drafts(key, account_id, contact_id, text, created_at, updated_at)"
            " VALUES ('ai:1', ?, 'c1', 'draft', 1, 1)", (A1,))
        await jobstore.enqueue_in(conn, [jobstore.NewJob(
            "resume_flow", "resume:c1", {"account_id": A1, "contact_id": "c1"}, NOW)], NOW)
    dry = await retention.purge_contacts(db, [(A1, "c1")], dry_run=True)
    report = await retention.purge_contacts(db, [(A1, "c1")])
    assert report.counts == dry.counts == {
        "messages": 3, "events": 3, "sends": 3, "notifications": 3, "links": 1, "clicks": 1,
        "conversations": 1, "contacts": 1, "ai_drafts": 1, "jobs": 1, "stats_pending": 1}
    for table in ("messages", "events", "sends", "notifications", "links", "clicks",
                  "conversations", "ai_drafts"):
        assert await count(db, f"SELECT count(*) FROM {table} WHERE contact_id = 'c1'") == 0
    assert await count(db, "SELECT count(*) FROM contacts WHERE id = 'c1'") == 0
    assert await count(db, "SELECT count(*) FROM jobs WHERE key = 'resume:c1'") == 0
    assert await count(db, "SELECT count(*) FROM messages WHERE contact_id = 'c2'") == 3
    assert (await retention.purge_contacts(db, [(A1, "c1")])).counts == {}


@pytest.mark.parametrize("path", ["purge --contact", "data deletion"])
async def test_erasing_a_contact_takes_all_of_their_jobs(db: Database, path: str) -> None:
    """Both erasure paths find a contact's jobs alike: the ones naming them in the payload,
    their events' process_event jobs, their sends' send jobs, and first_plan jobs (only an
    event id in the payload; the contact is in the key), finished or still ready."""
    await accounts_seed(db, A1, ("555", "666"))
    async with db.tx() as conn:
        for c in ("555", "666"):
            event_id = (await (await conn.execute(
                "SELECT id FROM events WHERE contact_id = ?", (c,))).fetchone())[0]
            await jobstore.enqueue_in(conn, [jobstore.NewJob(
                "first_plan", f"first_plan:{A1}:{c}:{event_id}", {"event_id": event_id},
                NOW)], NOW)
        await conn.execute("UPDATE jobs SET state = 'done', finished_at = ?"
                           " WHERE key = ?", (NOW, f"event:{A1}:555"))
    keys = "SELECT key FROM jobs ORDER BY key"
    before = [r[0] for r in await db.fetchall(keys)]
    assert len([k for k in before if "555" in k]) == 4
    if path == "purge --contact":
        report = await retention.purge_contacts(db, [(A1, "555")])
        assert report.counts["jobs"] == 4
    else:
        async with db.tx() as conn:
            assert (await delete_contact_data(conn, A1, "555"))["jobs"] == 4
    assert [r[0] for r in await db.fetchall(keys)] == [k for k in before if "555" not in k]


async def test_account_and_all_keep_the_connection_and_periodic_jobs(db: Database) -> None:
    for acct in (A1, A2):
        for c in ("c1", "c2", "c3"):
            await seed(db, acct, f"{acct[-1]}{c}", NOW)
    await jobstore.enqueue(db, [jobstore.NewJob("retention", "periodic:retention:9", {}, NOW)],
                           NOW)
    report = await retention.purge_account(db, A1)
    assert report.counts["contacts"] == 3 and report.counts["messages"] == 9
    assert await count(db, "SELECT count(*) FROM messages WHERE account_id = ?", (A1,)) == 0
    assert await count(db, "SELECT count(*) FROM messages WHERE account_id = ?", (A2,)) == 9
    assert await count(db, "SELECT count(*) FROM accounts") == 2
    await retention.purge_all(db)
    left = await counts(db)
    assert set(left.values()) == {0, 1} and left["jobs"] == 1  # the periodic job stays
    assert await count(db, "SELECT count(*) FROM accounts") == 2


# -- space ------------------------------------------------------------------------------------
async def test_a_new_database_returns_space_even_under_a_daemon(tmp_path: Path) -> None:
    """New files are created with auto_vacuum=INCREMENTAL (it can only be chosen before the
    first table): no advice to stop the daemon and purge again (said of 0.0 MB on every
    first start)."""
    path = tmp_path / "new.db"
    db = await open_database(path, synchronous="NORMAL")
    try:
        assert await retention_store.pragma_int(db, "auto_vacuum") == 2
        await seed(db, A1, "c1", NOW - 100 * DAY, n=300)
        await retention.purge_older_than(db, NOW - 90 * DAY, NOW)
        assert await retention_store.pragma_int(db, "freelist_count") > 0
        with single_instance(path), retention.daemon_lock(path) as alone:
            assert not alone
            msg = await retention.reclaim_space(db, exclusive=alone)
        assert "MB to the OS (incremental_vacuum)" in msg and "daemon" not in msg
        assert await retention_store.pragma_int(db, "freelist_count") == 0
    finally:
        await db.close()


async def test_one_incremental_vacuum_returns_up_to_its_pages_in_one_transaction(
        tmp_path: Path) -> None:
    """The sqlite3 module steps the pragma once (one page); 1,000 free pages took 1,000
    transactions, each with its fsync, under the running daemon."""
    db = await open_database(tmp_path / "pages.db", synchronous="NORMAL")
    try:
        await seed(db, A1, "c1", NOW - 100 * DAY, n=1500)
        await retention.purge_older_than(db, NOW - 90 * DAY, NOW)
        free = await retention_store.pragma_int(db, "freelist_count")
        assert free > 100
        await retention_store.incremental_vacuum(db, 10)  # bounded by its pages
        assert await retention_store.pragma_int(db, "freelist_count") == free - 10
        await retention_store.incremental_vacuum(db, 100_000)
        assert await retention_store.pragma_int(db, "freelist_count") == 0
        async with db.tx() as conn:  # the connection is usable as before
            await conn.execute("DELETE FROM messages WHERE 0")
    finally:
        await db.close()


async def test_vacuum_only_when_alone_then_incremental(tmp_path: Path) -> None:
    """A file from before new files were incremental switches at its first purge with no
    daemon running."""
    import sqlite3

    path = tmp_path / "space.db"
    # A table first: auto_vacuum 0. Its own (an instaset file of any age has one; another
    # program's tables would be refused).
    with contextlib.closing(sqlite3.connect(path)) as old:
        old.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,"
                    " name TEXT NOT NULL, applied_at REAL NOT NULL) STRICT")
    db = await open_database(path, synchronous="NORMAL")
    try:
        await seed(db, A1, "c1", NOW - 100 * DAY, n=1500)  # over 1 MB: worth a word
        await retention.purge_older_than(db, NOW - 90 * DAY, NOW)
        # A daemon holds the database: no VACUUM.
        with single_instance(path), retention.daemon_lock(path) as alone:
            assert not alone
            msg = await retention.reclaim_space(db, exclusive=alone)
        assert "daemon is running" in msg
        assert await retention_store.pragma_int(db, "auto_vacuum") == 0
        with retention.daemon_lock(path) as alone:
            assert alone
            msg = await retention.reclaim_space(db, exclusive=alone)
        assert "VACUUM" in msg and await retention_store.pragma_int(db, "freelist_count") == 0
        assert await retention_store.pragma_int(db, "auto_vacuum") == 2  # incremental now
        await seed(db, A1, "c2", NOW - 100 * DAY, n=300)
        await retention.purge_older_than(db, NOW - 90 * DAY, NOW)
        assert await retention_store.pragma_int(db, "freelist_count") > 0
        msg = await retention.reclaim_space(db, exclusive=False)  # even under a daemon
        assert "incremental_vacuum" in msg
        assert await retention_store.pragma_int(db, "freelist_count") == 0
    finally:
        await db.close()


# -- the CLI ----------------------------------------------------------------------------------
def cli_env(tmp_path: Path) -> tuple[Path, Path]:
    db_path = tmp_path / "cli.db"
    cfg = tmp_path / "config.yaml"
    cfg.write_text(json.dumps({"storage": {"path": str(db_path), "synchronous": "NORMAL"},
                               "retention": {"days": 60}}), "utf-8")

    async def go() -> None:
        db = await open_database(db_path, synchronous="NORMAL")
        try:
            now = time.time()
            await seed(db, A1, "c1", now - 100 * DAY)
            await seed(db, A1, "c2", now - 40 * DAY)
            await seed(db, A1, "c3", now - DAY)
        finally:
            await db.close()

    asyncio.run(go())
    return cfg, db_path


def messages_left(db_path: Path) -> int:
    async def go() -> int:
        db = await open_database(db_path)
        try:
            return await count(db, "SELECT count(*) FROM messages")
        finally:
            await db.close()

    return asyncio.run(go())


def test_cli_purge_policy_flags_confirmation_and_dry_run(tmp_path: Path) -> None:
    cfg, db_path = cli_env(tmp_path)
    run = CliRunner().invoke
    refused = run(app, ["--config", str(cfg), "purge", "--older-than", "30d"])
    assert refused.exit_code == 1 and "add --yes" in refused.stderr  # no TTY, no --yes
    assert messages_left(db_path) == 9
    both = run(app, ["--config", str(cfg), "purge", "--older-than", "30d", "--all", "--yes"])
    assert both.exit_code == 1 and "choose one of" in both.stderr
    # "30" would be 30 seconds: nearly everything (docs audit). A unit is required here.
    bare = run(app, ["--config", str(cfg), "purge", "--older-than", "30", "--yes"])
    assert bare.exit_code == 1 and "give a unit, e.g. 30d for days" in bare.stderr
    decimal = run(app, ["--config", str(cfg), "purge", "--older-than", "30.0", "--yes"])
    assert decimal.exit_code == 1 and "give a unit, e.g. 30.0d for days" in decimal.stderr
    # "6M" read as 6 minutes deleted all but the last 6 minutes (months were meant)
    months = run(app, ["--config", str(cfg), "purge", "--older-than", "6M", "--yes"])
    assert months.exit_code == 1 and "months as days (180d)" in months.stderr
    assert messages_left(db_path) == 9
    # the report says the time it applied, not only the words it was given
    preview = run(app, ["--config", str(cfg), "purge", "--older-than", "30d", "--dry-run"])
    assert preview.exit_code == 0 and "would delete" in preview.stdout
    assert re.search(r"older than 30d: before \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", preview.stdout)
    assert messages_left(db_path) == 9

    plain = run(app, ["--config", str(cfg), "purge"])  # cron: retention.days=60, never asks
    assert plain.exit_code == 0, plain.output
    assert "deleted" in plain.stdout and "messages: 3" in plain.stdout
    # space returned as the file allows (new files are incremental), never advice to stop
    assert "\nspace: " in plain.stdout and "daemon is running" not in plain.stdout
    assert messages_left(db_path) == 6

    dry = run(app, ["--config", str(cfg), "purge", "--older-than", "30d", "--dry-run",
                    "--json"])
    assert dry.exit_code == 0, dry.output
    report = json.loads(dry.stdout)
    assert report["dry_run"] and report["counts"]["messages"] == 3
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", report["cutoff"])
    assert messages_left(db_path) == 6

    done = run(app, ["--config", str(cfg), "purge", "--older-than", "30d", "--yes", "--json"])
    assert json.loads(done.stdout)["counts"]["messages"] == 3
    assert messages_left(db_path) == 3

    one = run(app, ["--config", str(cfg), "purge", "--contact", "c3", "--yes"])
    assert one.exit_code == 0, one.output
    assert "contacts: 1" in one.stdout and messages_left(db_path) == 0
    again = run(app, ["--config", str(cfg), "purge", "--older-than", "30d", "--yes"])
    assert again.exit_code == 0 and "nothing to purge" in again.stdout


# -- the daemon -------------------------------------------------------------------------------
def config_for(tmp_path: Path, name: str, **extra: object) -> Config:
    return Config.model_validate({"instagram": {"app_secret": SECRET},
                                  "secrets": {"backend": "memory"},
                                  "storage": {"path": str(tmp_path / name),
                                              "synchronous": "NORMAL"}, **extra})


@pytest.mark.parametrize("bulk_min_rows", [retention.BULK_MIN_ROWS, 1], ids=["batches", "bulk"])
async def test_daemon_applies_retention_daily_through_the_queue(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        bulk_min_rows: int) -> None:
    """The daemon's own daily job, in batches or (most of the history old, retention just
    shortened) in one bulk pass per table through the daemon's write gate."""
    monkeypatch.setattr(retention, "BULK_MIN_ROWS", bulk_min_rows)
    caplog.set_level(logging.INFO, logger="instaset.retention")
    async with runtime(config_for(tmp_path, "d.db", retention={"days": 30})) as rt:
        assert rt.periodic["retention"] == DAY  # installed by the daemon's FEATURES
        now = time.time()
        await seed(rt.db, A1, "c1", now - 40 * DAY)
        await seed(rt.db, A1, "c2", now - DAY)
        await rt.start_periodic()  # today's slot is due at once (a restart would run it)
        await rt.worker.run_burst()
        assert await count(rt.db, "SELECT count(*) FROM messages") == 3
        slot = int(now // DAY) + 1
        rows = await rt.db.fetchall("SELECT key, state, run_at FROM jobs"
                                    " WHERE kind = 'retention' ORDER BY run_at")
        assert [(r["key"], r["state"], r["run_at"]) for r in rows] == [
            (f"periodic:retention:{slot - 1}", "done", (slot - 1) * DAY),
            (f"periodic:retention:{slot}", "ready", slot * DAY),  # tomorrow's run
        ]
    passes = [r.getMessage() for r in caplog.records if "in one pass" in r.getMessage()]
    assert bool(passes) == (bulk_min_rows == 1), passes


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Runtime]:
    async with runtime(config_for(tmp_path, "busy.db")) as rt:
        rt.writer.start()
        try:
            yield rt
        finally:
            await rt.writer.stop()


def dm_batch(n: int, batch: int) -> bytes:
    items = [{"sender": {"id": f"u{i}"}, "recipient": {"id": A1}, "timestamp": 1740157200421,
              "message": {"mid": f"live-{batch}-{i}", "text": "hi"}} for i in range(n)]
    return json.dumps({"object": "instagram", "entry": [
        {"id": A1, "time": 1740157200749, "messaging": items}]}).encode()


@pytest.mark.parametrize("bulk", [False, True], ids=["batches", "bulk"])
async def test_purge_while_the_daemon_ingests(daemon: Runtime, tmp_path: Path,
                                              aiohttp_client: ClientFactory, bulk: bool
                                              ) -> None:
    """Two connections on one file: the daemon's ingest commits webhooks while a purge
    deletes 20,000 old rows per table, in small batches or in one bulk pass per table. No
    "database is locked", every acknowledged event is stored, every old row is gone."""
    old = time.time() - 100 * DAY
    await history.upsert_account(daemon.db, A1, username="creator", now=1.0)
    async with daemon.db.tx() as conn:
        await conn.executemany(
            "INSERT INTO events(dedupe_key, account_id, kind, contact_id, occurred_at,"
            " received_at, processed_at, raw) VALUES (?, ?, 'message', 'x', ?, ?, ?, '{}')",
            [(f"old-{i}", A1, old, old, old) for i in range(20_000)])
        await conn.executemany(
            "INSERT INTO messages(account_id, contact_id, mid, direction, sent_by, text,"
            " created_at) VALUES (?, 'x', ?, 'in', 'contact', 'old', ?)",
            [(A1, f"old-m-{i}", old) for i in range(20_000)])
    client = await aiohttp_client(make_app(daemon.web))
    purger = await open_database(tmp_path / "busy.db", synchronous="NORMAL")
    try:
        async def post(n: int) -> int:
            body = dm_batch(5, n)
            resp = await client.post("/webhook", data=body, headers={
                "Content-Type": "application/json", "X-Hub-Signature-256": sign(body)})
            await resp.read()
            return resp.status

        # 1. While a purge transaction holds the write lock, a webhook waits (SQLite's busy
        #    handler), and is acknowledged once the purge commits: never "database is locked".
        async with purger.tx() as conn:
            await conn.execute("DELETE FROM messages WHERE rowid IN"
                               " (SELECT rowid FROM messages LIMIT 500)")
            waiting = asyncio.ensure_future(post(0))
            await asyncio.sleep(0.2)
            assert not waiting.done()  # it cannot be acknowledged before it is committed
        statuses = [await waiting]
        # 2. The whole purge, with webhooks arriving until it is done.
        purge = asyncio.ensure_future(retention.purge_older_than(
            purger, time.time() - 90 * DAY, time.time(), batch=500, bulk=bulk))
        while not purge.done() or len(statuses) < 20:
            statuses.append(await post(len(statuses)))
        report = await purge
        assert report.bulk == (["messages", "events"] if bulk else [])
        assert statuses == [200] * len(statuses)
        assert base_counts(report.counts) == {"messages": 19_500, "events": 20_000}
        live = 5 * len(statuses)
        assert await count(daemon.db, "SELECT count(*) FROM events WHERE dedupe_key LIKE"
                                      " 'msg:live-%'") == live
        assert await count(daemon.db, "SELECT count(*) FROM events") == live
        # ... each with its processing job, queued durably with it.
        assert await count(daemon.db, "SELECT count(*) FROM jobs WHERE kind = 'process_event'"
                                      " AND state = 'ready'") == live
    finally:
        await purger.close()


@pytest.mark.parametrize("path", ["data-deletion", "purge --contact"])
async def test_erasing_a_contact_takes_the_events_filed_under_no_contact_that_name_them(
        db: Database, path: str) -> None:
    """Found by the session-15 privacy review: the account's own public reply naming
    @leo_lifts under his comment (filed under the account) and an item of an unknown kind
    he sent (no contact) survived his data deletion. A reply naming @leo_lifts2, another
    person, stays."""
    await seed(db, A1, "leo", NOW, n=1)
    async with db.tx() as conn:
        await conn.execute("UPDATE contacts SET username = 'leo_lifts' WHERE id = 'leo'")
        rows = [("cmt:1", "comment", A1, {"text": "Thanks @leo_lifts, check your DMs!"}),
                ("unk:1", "unknown", None, {"sender": {"id": "leo"}, "x": {"text": "hi"}}),
                ("cmt:2", "comment", A1, {"text": "Thanks @leo_lifts2!"}),
                ("cmt:3", "comment", A1, {"text": "@leo_lifts: see you Monday"}),
                ("cmt:4", "comment", A1, {"text": "Thanks @Leo_Lifts."}),
                ("cmt:5", "comment", A1, {"text": "Ask @leo_lifts.fit, not me"})]
        for key, kind, contact, raw in rows:
            await conn.execute(
                "INSERT INTO events(dedupe_key, account_id, kind, contact_id, occurred_at,"
                " received_at, processed_at, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (key, A1, kind, contact, NOW, NOW, NOW, json.dumps(raw)))
        await conn.execute(
            "INSERT INTO staged_events(dedupe_key, account_id, kind, contact_id, occurred_at,"
            " received_at, raw) VALUES ('unk:2', ?, 'unknown', NULL, ?, ?, ?)",
            (A1, NOW, NOW, json.dumps({"sender": {"id": "leo"}})))
    if path == "data-deletion":
        async with db.tx() as conn:
            counts = await delete_contact_data(conn, A1, "leo")
    else:
        tables = retention_store.contact_tables(await retention_store.columns(db))
        counts = await retention_store.delete_contacts(db, tables, [(A1, "leo")])
    # cmt:1, cmt:3, cmt:4 (capitals, a sentence's period), unk:1 and the staged unk:2
    assert counts["events naming them"] == 5
    left = [r[0] for r in await db.fetchall("SELECT dedupe_key FROM events ORDER BY id")]
    assert left == ["cmt:2", "cmt:5"]  # @leo_lifts2 and @leo_lifts.fit are other people
    assert await count(db, "SELECT count(*) FROM staged_events") == 0
