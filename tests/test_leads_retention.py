"""Lead scores once retention took the messages behind them (README: "Contacts, their tags,
captured fields, scores and bookings stay until purge --contact/--account/--all"): a full
rescore keeps the points of messages gone from the history while their rule holds, and
`leads explain` shows the stored score, with a rescore's differing result next to it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typer.testing import CliRunner

from instaset.ai.scoring import LeadScoring, rescore_all
from instaset.cli import app
from instaset.cli.cmd_leads import _explain, _list
from instaset.config import LeadRule, LeadsConfig, load_config
from instaset.retention import purge_older_than
from instaset.store import history
from instaset.store.db import Database, open_database
from tests import test_ai_feature, test_leads
from tests.conftest import connect_account
from tests.fake_gemini import reply
from tests.test_ai_feature import IGSID, Make
from tests.test_leads import ACCT, add_dm, job, write_config

make = test_ai_feature.make  # the fixtures: a daemon with the AI feature and a fake Gemini,
cli_config = test_leads.cli_config  # and a config + database for the CLI

DAY = 86400.0
T0 = 1_000_000.0
SAID = "price? call me on +44 7700 900123"
RULES = LeadsConfig(qualified_at=30, rules=[
    LeadRule(name="asked_price", points=15, keywords=["price"]),
    LeadRule(name="wants_call", points=20, keywords=["call", "book"]),
    LeadRule(name="phone", points=10, regex=r"\+?\d[\d ]{7,}\d"),
])
PHONE = "pattern '\\\\+?\\\\d[\\\\d ]{7,}\\\\d'"


async def lead(db: Database, contact: str = "c1") -> tuple[int, str, list[tuple[object, ...]]]:
    row = await db.fetchone("SELECT * FROM leads WHERE contact_id = ?", (contact,))
    assert row is not None
    return row["score"], row["stage"], [
        (r["rule"], r["points"], r["matched"], r.get("evidence"), r.get("at"))
        for r in json.loads(row["reasons"])]


async def aged_out(db: Database) -> None:
    """c1 asked for the price and a call with their number on day 0 (45 points, qualified);
    on day 100 retention (horizon: 90 days) took the message and the quotes."""
    await connect_account(db, ACCT)
    await add_dm(db, "c1", SAID, T0)
    await rescore_all(db, RULES, T0, only_stale=False)
    await purge_older_than(db, T0 + 10 * DAY, T0 + 100 * DAY)
    assert await db.fetchall("SELECT 1 FROM messages") == []
    score, stage, reasons = await lead(db)
    assert (score, stage, [r[3] for r in reasons]) == (45, "qualified", [None] * 3)


async def test_a_full_rescore_keeps_the_points_of_messages_retention_took(
    db: Database,
) -> None:
    await aged_out(db)
    await add_dm(db, "c1", "hello again", T0 + 100 * DAY)
    assert await rescore_all(db, RULES, T0 + 100 * DAY, only_stale=False) == 1
    # Kept with their rule, points and time; no words (a pattern's match is words too).
    assert await lead(db) == (45, "qualified", [
        ("asked_price", 15, "keyword 'price'", None, T0),
        ("wants_call", 20, "keyword 'call'", None, T0),
        ("phone", 10, PHONE, None, T0),
    ])
    # A workflow's score step rescores in full as well: its points add up to the kept ones.
    scoring = LeadScoring(db, RULES, clock=lambda: T0 + 101 * DAY)
    await scoring.handle(job("lead_score", "lead:quiz", {
        "account_id": ACCT, "contact_id": "c1", "points": 5, "reason": "quiz"}))
    score, stage, reasons = await lead(db)
    assert (score, stage) == (50, "qualified")
    assert [r[0] for r in reasons] == ["asked_price", "wants_call", "phone", "workflow"]
    # A later message matching a kept rule: the reason stays on its earliest message.
    await add_dm(db, "c1", "what was the price again?", T0 + 102 * DAY)
    await rescore_all(db, RULES, T0 + 102 * DAY, only_stale=False)
    assert (await lead(db))[2][0] == ("asked_price", 15, "keyword 'price'", None, T0)


async def test_a_rules_edit_keeps_only_the_points_its_rules_still_give(db: Database) -> None:
    """Without the old words, a rule can be told to hold only by the keyword that matched
    (still one of its keywords) or the same regex; anything else drops the points."""
    await aged_out(db)
    await add_dm(db, "c1", "hello again", T0 + 100 * DAY)
    edited = LeadsConfig(qualified_at=30, rules=[
        LeadRule(name="asked_price", points=25, keywords=["cost", "price"]),  # still 'price'
        LeadRule(name="wants_call", points=20, keywords=["phone me"]),  # 'call' removed
        LeadRule(name="phone", points=10, regex=r"\d{9,}"),  # another regex
        LeadRule(name="nutrition", points=5, keywords=["nutrition"]),  # new, unrelated
    ])
    assert await rescore_all(db, edited, T0 + 100 * DAY, only_stale=True) == 1
    assert await lead(db) == (25, "engaged", [
        ("asked_price", 25, "keyword 'price'", None, T0)])
    renamed = LeadsConfig(qualified_at=30, rules=[
        LeadRule(name="pricing", points=25, keywords=["price"])])
    await rescore_all(db, renamed, T0 + 100 * DAY, only_stale=True)
    assert await lead(db) == (0, "engaged", [])
    # Dropped for good: going back to the old rules cannot show the old words again.
    await rescore_all(db, RULES, T0 + 100 * DAY, only_stale=True)
    assert await lead(db) == (0, "engaged", [])


async def test_leads_rescore_reaches_a_lead_whose_messages_are_all_gone(
    db: Database,
) -> None:
    """A rule removed from config.yaml loses its points at `leads rescore` (and the daemon's
    hourly rescore of stale scores) although the contact has no message left to select."""
    await aged_out(db)
    fewer = LeadsConfig(qualified_at=30, rules=[RULES.rules[0]])
    assert await rescore_all(db, fewer, T0 + 100 * DAY, only_stale=True) == 1
    assert await lead(db) == (15, "engaged", [
        ("asked_price", 15, "keyword 'price'", None, T0)])
    assert await rescore_all(db, fewer, T0 + 100 * DAY, only_stale=True) == 0
    assert await rescore_all(db, fewer, T0 + 100 * DAY, only_stale=False) == 1


async def test_an_edit_that_took_the_keyword_out_takes_the_points(db: Database) -> None:
    """A message still in the history is scored as it reads now, not kept as it read."""
    await connect_account(db, ACCT)
    await add_dm(db, "c1", "what's the price?", T0, mid="m1")
    await rescore_all(db, RULES, T0, only_stale=False)
    async with db.tx() as conn:
        assert await history.edit_message(conn, "m1", "hello", 1)
    await rescore_all(db, RULES, T0 + 1, only_stale=False)
    assert await lead(db) == (0, "engaged", [])


async def test_leads_and_explain_agree_after_retention_and_a_new_fact(make: Make) -> None:
    """The audit's G2, through the daemon: the AI's new fact rescores in full."""
    env = await make(leads={"qualified_at": 30, "rules": [
        {"name": "asked_price", "points": 15, "keywords": ["price"]},
        {"name": "wants_call", "points": 20, "keywords": ["call"]},
        {"name": "budget", "points": 20, "ai_fact": "budget"}]})
    env.fake.script(reply("Happy to help!"), reply("Sure!", lead_fields=[
        {"name": "budget", "value": "500 a month", "evidence": "500 a month"}]))
    await env.h.dm(IGSID, "what's the price? can we do a call?")
    await env.h.settle()
    env.h.clock.advance(100 * DAY)
    now = env.h.clock()
    await purge_older_than(env.h.rt.db, now - 90 * DAY, now)
    config = env.h.rt.config
    [listed] = await _list(config, None)
    [explained] = await _explain(config, IGSID)
    assert (listed["score"], listed["stage"]) == (35, "qualified")
    assert (explained["score"], explained["stage"]) == (35, "qualified")
    assert explained["reasons"] == listed["reasons"]
    assert explained["rescore"]["differs"] is False and explained["current_rules"] is True
    await env.h.dm(IGSID, "I could do 500 a month")
    await env.h.settle()
    [listed] = await _list(config, None)
    assert (listed["score"], listed["stage"]) == (55, "qualified")
    assert [(r["rule"], r["evidence"]) for r in listed["reasons"]] == [
        ("asked_price", None), ("wants_call", None), ("budget", "500 a month")]
    [explained] = await _explain(config, IGSID)
    assert explained["score"] == 55 and explained["rescore"]["differs"] is False


def test_cli_explain_shows_the_stored_score_and_a_differing_rescore(
    cli_config: Path, tmp_path: Path,
) -> None:
    async def purge() -> None:
        config = load_config(cli_config, env={})
        db = await open_database(config.storage.db_path(), synchronous="NORMAL")
        try:
            await purge_older_than(db, 100.0, 200.0)  # the seeded DMs are at 1 s and 2 s
        finally:
            await db.close()

    asyncio.run(purge())
    runner = CliRunner()
    res = runner.invoke(app, ["--config", str(cli_config), "leads", "explain", "@sam"])
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[1:] == [
        "  score 35, stage engaged",
        "  +15  asked_price: keyword 'how much'",
        "  +20  wants_call: keyword 'book'",
    ]
    # The rules change in config.yaml, no rescore yet: the stored score, then the new one.
    write_config(tmp_path, leads={"qualified_at": 10, "rules": [
        {"name": "reel_fan", "points": 12, "keywords": ["reel"]}]})
    res = runner.invoke(app, ["--config", str(cli_config), "leads", "explain", "@sam"])
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[1:] == [
        "  score 35, stage engaged",
        "  +15  asked_price: keyword 'how much'",
        "  +20  wants_call: keyword 'book'",
        "  rescoring now gives score 0, stage engaged (the rules changed since it was scored;"
        " `instaset leads rescore` stores it):",
    ]
    res = runner.invoke(app, ["--config", str(cli_config), "leads", "explain", "@sam",
                              "--json"])
    data = json.loads(res.stdout)
    assert (data["score"], data["stage"], data["stored"], data["current_rules"]) == (
        35, "engaged", True, False)
    assert data["rescore"] == {"score": 0, "stage": "engaged", "reasons": [], "differs": True}
