"""Contacts the creator can correct: ``contacts``/``show``/``set``/``tag``/``untag``/``forget``
change exactly what they name and record it, ``export`` shows the corrected values, and
profiles come from the sandbox's User Profile API only for people who messaged."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from instaset import contacts as svc
from instaset.automation import load_state
from instaset.catchup import CatchUp, CatchUpSettings
from instaset.cli import app
from instaset.engine.state import ConversationState, FrozenMap
from instaset.errors import InstasetError, PermissionMissing
from instaset.store import contacts as store
from instaset.store import history
from instaset.store.db import Database, open_database
from tests.sending_harness import ACCT
from tests.test_catchup import daemon, settle, world

runner = CliRunner()
OTHER_ACCT = "17841400000000002"
ANA, BEA = "1100000000000001", "1100000000000002"
T0 = 1_800_000_000.0


async def seed_contact(
    db: Database, acct: str, igsid: str, username: str | None, *, name: str | None = None,
    fields: dict[str, str] | None = None, tags: set[str] | None = None, text: str = "hi",
) -> None:
    """A contact as the pipeline leaves it: contact, conversation, engine state, a message."""
    async with db.tx() as conn:
        await history.touch_contact(conn, acct, igsid, T0, username=username)
        if name is not None:
            await store.set_contact_columns(conn, acct, igsid, T0, {"name": name})
        state = ConversationState(account_id=acct, contact_id=igsid, username=username,
                                  tags=frozenset(tags or ()), fields=FrozenMap(fields or {}),
                                  stage="lead", is_new=False, last_inbound_at=T0)
        await history.update_conversation(conn, acct, igsid, T0, state=state.to_json(),
                                          inbound_at=T0, message_at=T0)
        await history.insert_message(conn, account_id=acct, contact_id=igsid,
                                     mid=f"mid-{acct}-{igsid}", direction="in",
                                     sent_by="contact", text=text, attachments=[],
                                     created_at=T0)


def seeded(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"storage": {"path": str(tmp_path / "c.db")}}))

    async def go() -> None:
        db = await open_database(tmp_path / "c.db")
        try:
            for acct, user in ((ACCT, "creator"), (OTHER_ACCT, "second")):
                await history.upsert_account(db, acct, username=user, now=T0)
            await seed_contact(db, ACCT, ANA, "ana", name="Ana S",
                               fields={"email": "ana@old.example", "name": "Ana S",
                                       "plan": "gold"}, tags={"lead", "vip"})
            await seed_contact(db, ACCT, BEA, "bea", fields={"email": "bea@example.com"},
                               tags={"lead"})
            await seed_contact(db, OTHER_ACCT, "2200000000000001", "ana", text="other acct")
        finally:
            await db.close()

    asyncio.run(go())
    return path


def cli(path: Path, *args: str) -> Any:
    return runner.invoke(app, ["--config", str(path), *args])


def contact_state(tmp_path: Path, acct: str, igsid: str) -> tuple[ConversationState, Any]:
    async def go() -> tuple[ConversationState, Any]:
        db = await open_database(tmp_path / "c.db")
        try:
            async with db.tx() as conn:
                row = await store.get_state_row(conn, acct, igsid)
            return load_state(row, acct, igsid), None if row is None else dict(row)
        finally:
            await db.close()

    return asyncio.run(go())


def test_set_tag_untag_change_exactly_what_they_name_and_are_logged(tmp_path: Path) -> None:
    path = seeded(tmp_path)
    bea_before, _ = contact_state(tmp_path, ACCT, BEA)
    r = cli(path, "contacts", "set", "@ana", "--account", ACCT, "email=Ana@New.Example",
            "phone=+1 (555) 123-4567", "name=Ana Souza")
    assert r.exit_code == 0, r.output
    r = cli(path, "contacts", "tag", ANA, "customer", "vip")
    assert r.exit_code == 0, r.output
    r = cli(path, "contacts", "untag", ANA, "lead")
    assert r.exit_code == 0, r.output
    r = cli(path, "contacts", "set", ANA, "plan=")
    assert r.exit_code == 0, r.output

    ana, row = contact_state(tmp_path, ACCT, ANA)
    assert dict(ana.fields) == {"email": "Ana@new.example", "phone": "+15551234567",
                                "name": "Ana Souza"}
    assert ana.tags == {"vip", "customer"} and ana.stage == "lead"
    assert row["name"] == "Ana Souza" and row["username"] == "ana"
    bea_after, _ = contact_state(tmp_path, ACCT, BEA)
    assert bea_after == bea_before
    other, _ = contact_state(tmp_path, OTHER_ACCT, "2200000000000001")
    assert other.fields == {} and other.tags == frozenset()

    shown = cli(path, "contacts", "show", ANA, "--json")
    assert shown.exit_code == 0, shown.output
    changes = json.loads(shown.stdout)["changes"]
    log = [(c["field"], c["action"], c["old"], c["new"]) for c in changes]
    assert log == [
        ("email", "set", "ana@old.example", "Ana@new.example"),
        ("phone", "set", None, "+15551234567"),
        ("name", "set", "Ana S", "Ana Souza"),
        ("tags", "tag", None, "customer"),  # vip was there already: nothing recorded
        ("tags", "untag", "lead", None),
        ("plan", "unset", "gold", None),
    ]
    assert all(c["by"].startswith("cli") and c["at"].endswith("Z") for c in changes)
    # Setting the same value again records nothing.
    again = cli(path, "contacts", "set", ANA, "phone=+15551234567")
    assert again.exit_code == 0 and "nothing to change" in again.stdout
    assert len(json.loads(cli(path, "contacts", "show", ANA, "--json").stdout)["changes"]) == 6


def test_export_shows_the_corrected_values(tmp_path: Path) -> None:
    path = seeded(tmp_path)
    assert cli(path, "contacts", "set", BEA, "email=bea@fixed.example", "stage=customer",
               "name=Bea Lima").exit_code == 0
    assert cli(path, "contacts", "tag", "bea", "vip").exit_code == 0
    out = tmp_path / "export.json"
    r = cli(path, "export", "--contact", BEA, "--out", str(out))
    assert r.exit_code == 0, r.output
    (doc,) = json.loads(out.read_text())["contacts"]
    assert doc["name"] == "Bea Lima" and doc["stage"] == "customer"
    assert doc["fields"] == {"email": "bea@fixed.example", "name": "Bea Lima"}
    assert sorted(doc["tags"]) == ["lead", "vip"]


def test_listing_and_show(tmp_path: Path) -> None:
    path = seeded(tmp_path)
    listed = cli(path, "contacts", "--json")
    assert listed.exit_code == 0, listed.output
    data = json.loads(listed.stdout)
    assert {(c["account_id"], c["username"]) for c in data} == {
        (ACCT, "ana"), (ACCT, "bea"), (OTHER_ACCT, "ana")}
    ana = next(c for c in data if c["id"] == ANA)
    assert ana["tags"] == ["lead", "vip"] and ana["fields"]["plan"] == "gold"
    assert ana["last_message_at"] == "2027-01-15T08:00:00Z"
    only = json.loads(cli(path, "contacts", "--json", "--account", OTHER_ACCT).stdout)
    assert [c["id"] for c in only] == ["2200000000000001"]
    human = cli(path, "contacts")
    assert human.exit_code == 0, human.output
    assert "@bea" in human.stdout and "email=bea@example.com" in human.stdout
    shown = cli(path, "contacts", "show", "bea")
    assert shown.exit_code == 0 and "email: bea@example.com" in shown.stdout


def test_bad_input_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    path = seeded(tmp_path)
    cases = [
        (["contacts", "set", ANA, "email=not-an-email"], "is not an email address"),
        (["contacts", "set", ANA, "username=x"], "cannot be set by hand"),
        (["contacts", "set", ANA, "Bad Field=x"], "must be lowercase"),
        (["contacts", "set", ANA, "novalue"], "is not FIELD=VALUE"),
        (["contacts", "set", "nobody", "a=b"], "no contact 'nobody'"),
        (["contacts", "show", "ana"], "add --account"),
        (["contacts", "tag", ANA, " "], "tag"),
    ]
    for args, message in cases:
        r = cli(path, *args)
        assert r.exit_code == 1, (args, r.output)
        assert message in r.output, (args, r.output)
    ana, _ = contact_state(tmp_path, ACCT, ANA)
    assert ana.fields.get("email") == "ana@old.example"


def shown_stages(path: Path, contact: str) -> tuple[str, str, str]:
    """The stage `contacts show`, `contacts --json` and `leads --all --json` give."""
    show = json.loads(cli(path, "contacts", "show", contact, "--json").stdout)["stage"]
    listed = next(c["stage"] for c in json.loads(cli(path, "contacts", "--json").stdout)
                  if c["id"] == contact)
    leads = json.loads(cli(path, "leads", "--all", "--json").stdout)
    lead = next(x["stage"] for x in leads if x["contact_id"] == contact)
    return show, listed, lead


def test_a_stage_set_by_hand_shows_at_once_and_a_stage_of_ones_own_is_taken(
    tmp_path: Path,
) -> None:
    """s16 fresh audit, finding 4: `contacts set alice stage=vip` was taken, changed only the
    workflow's stage (listings show the lead's, so nothing showed until `leads rescore`), and
    printed as "from" a stage no listing showed."""
    path = seeded(tmp_path)
    assert cli(path, "leads", "rescore").exit_code == 0
    assert shown_stages(path, BEA) == ("engaged", "engaged", "engaged")  # she wrote

    # A stage of the creator's own (what a workflow's `stage` step may set: hers is "lead")
    # is taken, and taken away again (review s16 C, finding 2).
    vip = cli(path, "contacts", "set", BEA, "stage=vip")
    assert vip.exit_code == 0 and vip.stdout == f"{BEA}: stage 'lead' -> 'vip'\n"
    assert contact_state(tmp_path, ACCT, BEA)[0].stage == "vip"
    back = cli(path, "contacts", "set", BEA, "stage=engaged")
    assert back.exit_code == 0 and back.stdout == f"{BEA}: stage 'vip' -> 'engaged'\n"
    assert contact_state(tmp_path, ACCT, BEA)[0].stage == "engaged"

    done = cli(path, "contacts", "set", BEA, "stage=customer")
    assert done.exit_code == 0, done.output
    assert done.stdout == f"{BEA}: stage 'engaged' -> 'customer'\n"
    assert shown_stages(path, BEA) == ("customer", "customer", "customer")

    # Below what her messages give: it would not show, so it is refused, nothing changes.
    lower = cli(path, "contacts", "set", BEA, "stage=new")
    assert lower.exit_code == 1
    assert "stage 'new' would not show" in lower.stderr and "'engaged'" in lower.stderr
    assert shown_stages(path, BEA) == ("customer", "customer", "customer")

    qualified = cli(path, "contacts", "set", BEA, "stage=qualified")
    assert qualified.stdout == f"{BEA}: stage 'customer' -> 'qualified'\n"
    assert shown_stages(path, BEA) == ("qualified", "qualified", "qualified")
    assert "nothing to change" in cli(path, "contacts", "set", BEA, "stage=qualified").stdout
    changes = json.loads(cli(path, "contacts", "show", BEA, "--json").stdout)["changes"]
    assert [(c["old"], c["new"]) for c in changes] == [
        ("lead", "vip"), ("vip", "engaged"), ("engaged", "customer"),
        ("customer", "qualified")]
    state, _ = contact_state(tmp_path, ACCT, BEA)
    assert state.stage == "qualified"

    # The creator set "customer" (then "qualified") themselves: no "qualified lead" notice
    # (before: the one a rescore to that stage gives, as if it were news; s17 leftovers 1).
    assert notices(tmp_path) == []


def notices(tmp_path: Path) -> list[str]:
    """The keys of the notifications queued so far."""
    async def go() -> list[str]:
        db = await open_database(tmp_path / "c.db")
        try:
            return [r[0] for r in await db.fetchall(
                "SELECT key FROM jobs WHERE kind = 'notify' ORDER BY id")]
        finally:
            await db.close()

    return asyncio.run(go())


def test_a_stage_set_by_hand_does_not_notify_and_one_reached_by_scoring_does_once(
    tmp_path: Path,
) -> None:
    """s17 leftovers 1: `contacts set CONTACT stage=customer` queued the one-time "qualified
    lead" notice, as a rescore to that stage does. A stage set by hand is not news: no
    notice, then or at a later rescore. A score that reaches "qualified" (here through a
    field the creator set: the rules score it) still tells it, once."""
    path = seeded(tmp_path)
    config = yaml.safe_load(path.read_text())
    config["leads"] = {"qualified_at": 50, "rules": [
        {"name": "gave_phone", "points": 60, "field": "phone"}]}
    path.write_text(yaml.safe_dump(config))
    assert cli(path, "leads", "rescore").exit_code == 0  # both engaged, nobody qualified
    assert notices(tmp_path) == []

    done = cli(path, "contacts", "set", ANA, "stage=customer")
    assert done.exit_code == 0, done.output
    assert shown_stages(path, ANA) == ("customer", "customer", "customer")
    assert notices(tmp_path) == []
    # Neither a later rescore nor a score that gets there after it: she is a customer.
    assert cli(path, "leads", "rescore").exit_code == 0
    assert cli(path, "contacts", "set", ANA, "phone=+15551234567").exit_code == 0
    assert notices(tmp_path) == []

    # Bea's phone gives 60 points: qualified by her score, told once...
    scored = cli(path, "contacts", "set", BEA, "phone=+15557654321")
    assert scored.exit_code == 0, scored.output
    assert shown_stages(path, BEA) == ("qualified", "qualified", "qualified")
    assert notices(tmp_path) == [f"notify:lead-qualified:{ACCT}:{BEA}"]
    # ... and not again when the creator then marks her a customer, or on a rescore.
    assert cli(path, "contacts", "set", BEA, "stage=customer").exit_code == 0
    assert cli(path, "leads", "rescore").exit_code == 0
    assert notices(tmp_path) == [f"notify:lead-qualified:{ACCT}:{BEA}"]


def test_forget_deletes_exactly_that_contact(tmp_path: Path) -> None:
    path = seeded(tmp_path)
    assert cli(path, "contacts", "tag", ANA, "x").exit_code == 0
    refused = cli(path, "contacts", "forget", ANA)
    assert refused.exit_code == 1 and "--yes" in refused.output
    r = cli(path, "contacts", "forget", ANA, "--yes")
    assert r.exit_code == 0, r.output

    async def rows() -> dict[str, list[tuple[str, str]]]:
        db = await open_database(tmp_path / "c.db")
        try:
            out = {}
            for table, col in (("contacts", "id"), ("conversations", "contact_id"),
                               ("messages", "contact_id"), ("contact_changes", "contact_id")):
                found = await db.fetchall(f"SELECT account_id, {col} FROM {table}")
                out[table] = sorted((str(f[0]), str(f[1])) for f in found)
            return out
        finally:
            await db.close()

    left = asyncio.run(rows())
    others = [(ACCT, BEA), (OTHER_ACCT, "2200000000000001")]
    assert left["contacts"] == left["conversations"] == left["messages"] == others
    assert left["contact_changes"] == []
    gone = cli(path, "contacts", "show", ANA)
    assert gone.exit_code == 1 and "no contact" in gone.output


# -- profiles, against the sandbox --------------------------------------------------------------
async def test_profiles_come_from_the_user_profile_api_only_after_a_message(
    tmp_path: Path,
) -> None:
    async with world(tmp_path, workflows=()) as w, daemon(w) as rt:
        w.sandbox.profiles[ANA] = {"name": "Ana Souza", "follower_count": 321,
                                   "is_user_follow_business": True}
        await w.sandbox.user_sends_dm(ANA, "hello")
        await w.sandbox.user_comments(BEA, "nice post", "media-1")  # a comment is no consent
        await settle(w, rt)
        row = await store.get_contact(rt.db, ACCT, ANA)
        assert row is not None
        assert (row["username"], row["name"], row["follower_count"]) == (
            f"user_{ANA}", "Ana Souza", 321)
        assert row["is_user_follow_business"] == 1
        async with rt.db.tx() as conn:
            state = load_state(await store.get_state_row(conn, ACCT, ANA), ACCT, ANA)
        assert state.follower is True and state.fields.get("name") == "Ana Souza"
        changes = await store.changes(rt.db, ACCT, ANA)
        assert {(c["field"], c["changed_by"]) for c in changes} == {
            ("username", "profile"), ("name", "profile")}
        # Bea only commented: no lookup was even tried, and Meta would refuse it.
        assert await store.get_contact(rt.db, ACCT, BEA) is not None
        lookups = [r for r in w.sandbox.transcript if r.method == "GET"
                   and r.route.rstrip("/").endswith(BEA)]
        assert lookups == []
        with pytest.raises(PermissionMissing) as err:
            await rt.graph.user_profile(BEA, token=w.sandbox.token)
        assert err.value.code == 230


async def test_a_refresh_never_overwrites_a_name_the_creator_corrected(tmp_path: Path) -> None:
    async with world(tmp_path, workflows=()) as w, daemon(w) as rt:
        await w.sandbox.user_sends_dm(ANA, "hello")
        await settle(w, rt)
        ref = await svc.resolve(rt.db, ANA)
        await svc.set_fields(rt.db, ref, [("name", "Ana (from the gym)")], by="cli:test",
                             now=w.clock(), leads=rt.config.leads)
        w.sandbox.profiles[ANA] = {"name": "Ana Renamed", "is_user_follow_business": False}
        w.clock.advance(8 * 86400)  # past the 7-day refresh
        cu = CatchUp.for_runtime(rt, CatchUpSettings(calls_per_second=50))
        assert await cu.profiles.enqueue_due() == 1
        await settle(w, rt)
        row = await store.get_contact(rt.db, ACCT, ANA)
        assert row is not None and row["name"] == "Ana (from the gym)"
        assert row["is_user_follow_business"] == 0
        async with rt.db.tx() as conn:
            state = load_state(await store.get_state_row(conn, ACCT, ANA), ACCT, ANA)
        assert state.follower is False and state.fields["name"] == "Ana (from the gym)"


async def test_resolve(db: Database) -> None:
    await history.upsert_account(db, ACCT, username="c", now=T0)
    await seed_contact(db, ACCT, ANA, "Ana_S")
    assert await svc.resolve(db, "@ana_s") == svc.ContactRef(ACCT, ANA)
    assert await svc.resolve(db, ANA) == svc.ContactRef(ACCT, ANA)
    with pytest.raises(InstasetError, match="no contact"):
        await svc.resolve(db, "ana", account_id="nope")
