"""Lead scoring: pure table tests with reasons and evidence, rescoring when the rules change,
the qualified notification, and the `leads` CLI."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from instaset.ai.scoring import LeadScoring, rescore_all, rescore_in
from instaset.cli import app
from instaset.config import Config, LeadRule, LeadsConfig
from instaset.leads import Fact, LeadInput, Msg, explain, rules_hash, score_lead
from instaset.store import history
from instaset.store.db import Database, open_database
from instaset.store.jobs import Job
from tests.conftest import connect_account

ACCT = "17841400000000001"
CFG = LeadsConfig(qualified_at=40, rules=[
    LeadRule(name="asked_price", points=15, keywords=["price", "how much"]),
    LeadRule(name="wants_call", points=20, keywords=["call", "book"]),
    LeadRule(name="phone", points=10, regex=r"\+?\d[\d ]{7,}\d"),
    LeadRule(name="gave_email", points=15, field="email"),
    LeadRule(name="is_pro", points=5, field="level", equals="Advanced"),
    LeadRule(name="vip", points=30, tag="vip"),
    LeadRule(name="budget", points=20, ai_fact="budget"),
    LeadRule(name="not_interested", points=-40, keywords=["not interested"]),
])


def msgs(*texts: str) -> tuple[Msg, ...]:
    return tuple(Msg(t, float(i + 1), f"m{i}") for i, t in enumerate(texts))


@pytest.mark.parametrize(
    ("inp", "score", "stage", "reasons"),
    [
        (LeadInput(), 0, "new", []),
        (LeadInput(messages=msgs("hey!")), 0, "engaged", []),
        (LeadInput(messages=msgs("hi", "what's the PRICE?", "price again")), 15, "engaged",
         [("asked_price", 15, "keyword 'price'", "what's the PRICE?")]),
        (LeadInput(messages=msgs("how much is it", "can I book a call?")), 35, "engaged",
         [("asked_price", 15, "keyword 'how much'", "how much is it"),
          ("wants_call", 20, "keyword 'book'", "can I book a call?")]),
        (LeadInput(messages=msgs("call me on +44 7700 900123")), 30, "engaged",
         [("wants_call", 20, "keyword 'call'", "call me on +44 7700 900123"),
          ("phone", 10, "pattern '\\\\+?\\\\d[\\\\d ]{7,}\\\\d' ('+44 7700 900123')",
           "call me on +44 7700 900123")]),
        (LeadInput(messages=msgs("sure, sam@example.com"), fields={"email": "sam@example.com"}),
         15, "engaged",
         [("gave_email", 15, "field email = 'sam@example.com'", "sure, sam@example.com")]),
        (LeadInput(fields={"level": "advanced"}), 5, "new",
         [("is_pro", 5, "field level = 'advanced'", None)]),
        (LeadInput(fields={"level": "beginner"}), 0, "new", []),
        (LeadInput(tags=frozenset({"vip"})), 30, "new", [("vip", 30, "tag 'vip'", None)]),
        (LeadInput(messages=msgs("price?", "book"), facts=(
            Fact("ai", "budget", "$500", "I can spend about $500", at=9.0),)),
         55, "qualified",
         [("asked_price", 15, "keyword 'price'", "price?"),
          ("wants_call", 20, "keyword 'book'", "book"),
          ("budget", 20, "AI: budget = '$500'", "I can spend about $500")]),
        (LeadInput(messages=msgs("hi"), facts=(
            Fact("workflow", "clicked the pricing button", points=25, evidence="Pricing"),)),
         25, "engaged", [("workflow", 25, "clicked the pricing button", "Pricing")]),
        (LeadInput(messages=msgs("price?", "not interested, thanks")), -25, "engaged",
         [("asked_price", 15, "keyword 'price'", "price?"),
          ("not_interested", -40, "keyword 'not interested'", "not interested, thanks")]),
    ],
    ids=["nothing", "engaged", "keyword-once", "two-rules", "regex", "field-with-quote",
         "field-equals", "field-equals-no", "tag", "ai-fact-qualified", "workflow-points",
         "negative"],
)
def test_score_table(inp: LeadInput, score: int, stage: str,
                     reasons: list[tuple[str, int, str, str | None]]) -> None:
    result = score_lead(CFG, inp)
    assert result.score == score
    assert result.stage == stage
    assert [(r.rule, r.points, r.matched, r.evidence) for r in result.reasons] == reasons


@pytest.mark.parametrize(
    ("workflow_stage", "booked", "score_msgs", "stage"),
    [
        ("new", True, ("hi",), "booked"),
        ("customer", True, ("hi",), "customer"),
        ("lost", False, ("price?", "book a call"), "lost"),
        ("qualified", False, ("hi",), "qualified"),
        ("engaged", False, ("price", "book", "call"), "engaged"),  # 35 < 40
        ("new", False, ("price", "book"), "engaged"),
    ],
)
def test_stages(workflow_stage: str, booked: bool, score_msgs: tuple[str, ...],
                stage: str) -> None:
    inp = LeadInput(messages=msgs(*score_msgs), workflow_stage=workflow_stage, booked=booked)
    assert score_lead(CFG, inp).stage == stage


def test_explain_and_hash() -> None:
    result = score_lead(CFG, LeadInput(messages=msgs("how much?")))
    assert explain(result) == ["score 15, stage engaged",
                               "+15  asked_price: keyword 'how much'  ← \"how much?\""]
    assert rules_hash(CFG) == rules_hash(CFG.model_copy())
    assert rules_hash(CFG) != rules_hash(CFG.model_copy(update={"qualified_at": 41}))


def test_rule_validation() -> None:
    with pytest.raises(ValueError, match="exactly one of"):
        LeadRule(name="x", points=1)
    with pytest.raises(ValueError, match="exactly one of"):
        LeadRule(name="x", points=1, tag="a", field="b")
    with pytest.raises(ValueError, match="invalid regex"):
        LeadRule(name="x", points=1, regex="(")
    # Lead rules run on every message too: a repeated repeat could stall the daemon.
    with pytest.raises(ValueError, match="repeats a group that itself repeats"):
        LeadRule(name="x", points=1, regex=r"(\w+\s?)+price")
    assert LeadRule(name="x", points=1, regex=r"\bprice\b").regex == r"\bprice\b"
    # A blank keyword was accepted, and then failed every message's scoring (s18 review).
    for blank in ("", " ", "\t"):
        with pytest.raises(ValueError, match="keywords must not be blank"):
            LeadRule(name="x", points=1, keywords=["price", blank])
    with pytest.raises(ValueError, match="two lead rules"):
        LeadsConfig(rules=[LeadRule(name="x", points=1, tag="a"),
                           LeadRule(name="x", points=2, tag="b")])


# -- in the database -----------------------------------------------------------------------------
async def add_dm(db: Database, contact: str, text: str, at: float, username: str = "sam",
                 mid: str | None = None) -> None:
    async with db.tx() as conn:
        await history.touch_contact(conn, ACCT, contact, at, username=username)
        await history.insert_message(conn, account_id=ACCT, contact_id=contact,
                                     mid=mid or f"mid-{contact}-{at}", direction="in",
                                     sent_by="contact", text=text, attachments=[],
                                     created_at=at)


def job(kind: str, key: str, payload: dict[str, object]) -> Job:
    return Job(id=0, kind=kind, key=key, payload=payload, attempts=1, max_attempts=3,
               run_at=0.0, created_at=0.0, worker=None)


async def jobs_of(db: Database, kind: str) -> list[dict[str, object]]:
    rows = await db.fetchall("SELECT payload FROM jobs WHERE kind = ? ORDER BY id", (kind,))
    return [json.loads(r["payload"]) for r in rows]


async def test_qualified_notification_once_and_workflow_points(db: Database) -> None:
    await connect_account(db, ACCT)
    await add_dm(db, "c1", "how much is coaching?", 10.0)
    scoring = LeadScoring(db, CFG, clock=lambda: 100.0)
    await scoring.handle(job("lead_score", "lead:a", {"account_id": ACCT, "contact_id": "c1"}))
    assert await jobs_of(db, "notify") == []
    # a workflow `score` step pushes it over the line: one notification naming the reasons
    await scoring.handle(job("lead_score", "lead:b", {
        "account_id": ACCT, "contact_id": "c1", "points": 30, "reason": "watched the webinar"}))
    [note] = await jobs_of(db, "notify")
    assert note["kind"] == "lead" and note["key"] == f"lead-qualified:{ACCT}:c1"
    assert str(note["text"]).startswith("@sam is a qualified lead (score 45)")
    assert "watched the webinar +30" in str(note["text"])
    # the same job again (at-least-once) adds no points; more messages do not re-notify
    await scoring.handle(job("lead_score", "lead:b", {
        "account_id": ACCT, "contact_id": "c1", "points": 30, "reason": "watched the webinar"}))
    await add_dm(db, "c1", "can we book a call", 20.0)
    await scoring.handle(job("lead_score", "lead:c", {"account_id": ACCT, "contact_id": "c1"}))
    row = await db.fetchone("SELECT * FROM leads WHERE contact_id = 'c1'")
    assert row is not None and row["score"] == 65 and row["stage"] == "qualified"
    assert row["qualified_at"] == 100.0
    reasons = json.loads(row["reasons"])
    assert [(r["rule"], r["evidence"]) for r in reasons] == [
        ("asked_price", "how much is coaching?"), ("wants_call", "can we book a call"),
        ("workflow", "how much is coaching?")]
    assert len(await jobs_of(db, "notify")) == 1


async def test_rescoring_when_rules_change(db: Database) -> None:
    await connect_account(db, ACCT)
    await add_dm(db, "c1", "do you do nutrition plans?", 1.0)
    await add_dm(db, "c2", "price?", 2.0, username="alex")
    assert await rescore_all(db, CFG, 10.0, only_stale=True) == 2
    assert await rescore_all(db, CFG, 11.0, only_stale=True) == 0  # nothing stale
    scores = {r["contact_id"]: r["score"] for r in await db.fetchall("SELECT * FROM leads")}
    assert scores == {"c1": 0, "c2": 15}

    changed = LeadsConfig(qualified_at=40, rules=[
        *CFG.rules, LeadRule(name="nutrition", points=45, keywords=["nutrition"])])
    assert await rescore_all(db, changed, 12.0, only_stale=True) == 2
    rows = {r["contact_id"]: r for r in await db.fetchall("SELECT * FROM leads")}
    assert (rows["c1"]["score"], rows["c1"]["stage"]) == (45, "qualified")
    assert rows["c1"]["rules_hash"] == rules_hash(changed)
    [note] = await jobs_of(db, "notify")
    assert note["contact_id"] == "c1"


async def test_a_rules_change_that_qualifies_many_leads_sends_one_summary(
    db: Database,
) -> None:
    """Found by bench/terminal.py: a daemon rescoring 100,000 contacts after a rules change
    sent one "qualified lead" notification per contact; above BULK_QUALIFIED it is one."""
    await connect_account(db, ACCT)
    for i in range(6):
        await add_dm(db, f"n{i}", "do you do nutrition plans?", 1.0 + i, username=f"u{i}")
    assert await rescore_all(db, CFG, 10.0, only_stale=True) == 6
    assert await jobs_of(db, "notify") == []
    changed = LeadsConfig(qualified_at=40, rules=[
        *CFG.rules, LeadRule(name="nutrition", points=45, keywords=["nutrition"])])
    assert await rescore_all(db, changed, 12.0, only_stale=True) == 6
    [note] = await jobs_of(db, "notify")
    text = str(note["text"])
    assert note["contact_id"] is None and text.startswith("6 leads became qualified")
    assert "@u0, @u1, @u2" in text
    stages = {r["stage"] for r in await db.fetchall("SELECT stage FROM leads")}
    assert stages == {"qualified"}


async def test_rescore_reads_engine_state(db: Database) -> None:
    await connect_account(db, ACCT)
    await add_dm(db, "c1", "hello", 1.0)
    state = {"account_id": ACCT, "contact_id": "c1", "tags": ["vip"], "stage": "customer",
             "fields": {"email": "x@y.z"}}
    async with db.tx() as conn:
        await history.update_conversation(conn, ACCT, "c1", 2.0, state=json.dumps(state))
        result, _jobs = await rescore_in(conn, CFG, ACCT, "c1", 3.0)
    assert (result.score, result.stage) == (45, "customer")
    assert [r.rule for r in result.reasons] == ["gave_email", "vip"]


# -- CLI -------------------------------------------------------------------------------------
def write_config(tmp_path: Path, **extra: object) -> Path:
    path = tmp_path / "config.yaml"
    data = {"storage": {"path": str(tmp_path / "cli.db"), "synchronous": "NORMAL"},
            "leads": {"qualified_at": 40, "rules": [r.model_dump(exclude_defaults=True)
                                                    for r in CFG.rules]}, **extra}
    path.write_text(yaml.safe_dump(data))
    return path


async def seed_cli_db(tmp_path: Path, config: Config) -> None:
    db = await open_database(config.storage.db_path(), synchronous="NORMAL")
    try:
        await connect_account(db, ACCT)
        await add_dm(db, "c1", "how much? can we book a call", 1.0, username="sam")
        await add_dm(db, "c2", "nice reel", 2.0, username="alex")
        await rescore_all(db, config.leads, 5.0, only_stale=False)
        async with db.tx() as conn:
            await conn.execute("UPDATE leads SET updated_at = 1700000000")
    finally:
        await db.close()


@pytest.fixture
async def cli_config(tmp_path: Path) -> Path:
    from instaset.config import load_config

    path = write_config(tmp_path)
    await seed_cli_db(tmp_path, load_config(path, env={}))
    return path


def test_cli_leads_json_csv_and_text(cli_config: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["--config", str(cli_config), "leads", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout) == []  # nobody qualified yet
    res = runner.invoke(app, ["--config", str(cli_config), "leads", "--all", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert [(d["username"], d["score"], d["stage"]) for d in data] == [
        ("sam", 35, "engaged"), ("alex", 0, "engaged")]
    assert data[0]["contact_id"] == "c1" and data[0]["updated_at"] == "2023-11-14T22:13:20Z"
    assert [r["rule"] for r in data[0]["reasons"]] == ["asked_price", "wants_call"]

    res = runner.invoke(app, ["--config", str(cli_config), "leads", "--stage", "engaged",
                              "--csv"])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [(r["username"], r["score"]) for r in rows] == [("sam", "35"), ("alex", "0")]
    assert rows[0]["reasons"] == "asked_price +15; wants_call +20"

    res = runner.invoke(app, ["--config", str(cli_config), "leads", "--stage", "qualified",
                              "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout) == []

    res = runner.invoke(app, ["--config", str(cli_config), "leads", "--all"])
    assert res.exit_code == 0 and "@sam" in res.stdout and "35" in res.stdout
    res = runner.invoke(app, ["--config", str(cli_config), "leads"])
    assert res.exit_code == 0 and "no leads qualified yet" in res.stdout


def test_cli_leads_explain_and_rescore(cli_config: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["--config", str(cli_config), "leads", "explain", "@sam"])
    assert res.exit_code == 0, res.output
    assert "score 35, stage engaged" in res.stdout
    assert "+15  asked_price: keyword 'how much'" in res.stdout
    assert '"how much? can we book a call"' in res.stdout
    res = runner.invoke(app, ["--config", str(cli_config), "leads", "explain", "c1", "--json"])
    assert json.loads(res.stdout)["score"] == 35

    res = runner.invoke(app, ["--config", str(cli_config), "leads", "explain", "nobody"])
    assert res.exit_code == 1 and "no contact 'nobody'" in res.stderr

    # the rules change: rescoring applies them to the stored history
    write_config(tmp_path, leads={"qualified_at": 10, "rules": [
        {"name": "reel_fan", "points": 12, "keywords": ["reel"]}]})
    res = runner.invoke(app, ["--config", str(cli_config), "leads", "rescore"])
    assert res.exit_code == 0, res.output
    assert "rescored 2 leads" in res.stdout
    data = json.loads(runner.invoke(app, ["--config", str(cli_config), "leads",
                                          "--all", "--json"]).stdout)
    assert [(d["username"], d["score"], d["stage"]) for d in data] == [
        ("alex", 12, "qualified"), ("sam", 0, "engaged")]
    qualified = json.loads(runner.invoke(app, ["--config", str(cli_config), "leads",
                                               "--json"]).stdout)
    assert [d["username"] for d in qualified] == ["alex"]
    assert qualified[0]["reasons"] == [{"rule": "reel_fan", "points": 12,
                                        "matched": "keyword 'reel'", "evidence": "nice reel",
                                        "at": "1970-01-01T00:00:02Z"}]

    res = runner.invoke(app, ["--config", str(cli_config), "leads", "--csv", "--json"])
    assert res.exit_code == 1 and "either --json or --csv" in res.stderr


def test_cli_rescore_warns_that_a_running_daemon_keeps_its_old_rules(
    cli_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The daemon reads the config once: while one runs, `leads rescore` says that it will
    put the old scores back until it is restarted (the creator was told "qualified", then
    the lead quietly dropped back). It says so BEFORE writing anything (s17 leftovers 2:
    the scores and a "qualified" notice were written first), asks on a terminal, and with
    no terminal refuses unless --yes, as destructive commands do (interface.md)."""
    import instaset.cli.cmd_leads
    from instaset.config import load_config
    from instaset.daemon import single_instance

    runner = CliRunner()
    db_path = load_config(cli_config, env={}).storage.db_path()

    def stored() -> tuple[list[tuple[str, int, str]], int]:
        """(username, score, stage) of every lead, and the notifications queued."""
        data = json.loads(runner.invoke(app, ["--config", str(cli_config), "leads", "--all",
                                              "--json"]).stdout)
        with sqlite3.connect(db_path) as conn:
            (jobs,) = conn.execute("SELECT count(*) FROM jobs WHERE kind = 'notify'").fetchone()
        return [(d["username"], d["score"], d["stage"]) for d in data], int(jobs)

    before = stored()
    assert before == ([("sam", 35, "engaged"), ("alex", 0, "engaged")], 0)
    # New rules: rescoring qualifies alex (a score and a "qualified" notice to write).
    write_config(tmp_path, leads={"qualified_at": 10, "rules": [
        {"name": "reel_fan", "points": 12, "keywords": ["reel"]}]})
    rescore = ["--config", str(cli_config), "leads", "rescore"]

    with single_instance(db_path):
        refused = runner.invoke(app, rescore)  # no terminal, no --yes
        assert refused.exit_code == 1
        assert "instaset serve is running" in refused.stderr and "restart it" in refused.stderr
        assert "nothing rescored" in refused.stderr and "--yes" in refused.stderr
        assert "rescored" not in refused.stdout
        assert stored() == before

        monkeypatch.setattr(instaset.cli.cmd_leads, "is_tty", lambda: True)
        declined = runner.invoke(app, rescore, input="n\n")
        assert declined.exit_code == 1 and "Rescore now anyway?" in declined.stdout
        assert "instaset serve is running" in declined.stderr
        assert stored() == before
        accepted = runner.invoke(app, rescore, input="y\n")
        assert accepted.exit_code == 0, accepted.output
        assert "instaset serve is running" in accepted.stderr
        assert "rescored 2 leads" in accepted.stdout
        assert stored() == ([("alex", 12, "qualified"), ("sam", 0, "engaged")], 1)
        monkeypatch.setattr(instaset.cli.cmd_leads, "is_tty", lambda: False)

        write_config(tmp_path)  # the first rules again
        forced = runner.invoke(app, [*rescore, "--yes"])
        assert forced.exit_code == 0 and "rescored 2 leads" in forced.stdout
        assert "instaset serve is running" in forced.stderr and "restart it" in forced.stderr
        assert stored()[0] == before[0]

    # No daemon: as before, no question, no warning.
    res = runner.invoke(app, rescore)
    assert res.exit_code == 0 and "rescored 2 leads" in res.stdout
    assert res.stderr == ""
