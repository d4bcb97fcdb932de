"""``instaset export``: a round trip (export -> file -> parse -> validate against the published
JSON Schema -> compare with the database), one contact, leads CSV, never a secret."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from instaset import export as export_module
from instaset.cli import app
from instaset.errors import InstasetError
from instaset.export import EXPORT_SCHEMA, read_export
from instaset.store.db import open_database
from tests.sending_harness import SECRET, Harness, open_harness

U1, U2 = "1000000000000001", "1000000000000002"
GUIDE = {"name": "guide", "trigger": {"dm": {"keywords": ["guide"]}},
         "actions": [{"reply": "Here: https://example.com/guide"}, {"tag": "lead"},
                     {"stage": "engaged"}, {"set": {"email": "u1@example.com"}}]}
_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str, "integer": int, "boolean": bool, "object": dict, "array": list,
    "null": type(None), "number": (int, float),
}


def validate(value: Any, schema: dict[str, Any], path: str = "$") -> None:
    """The subset of JSON Schema that EXPORT_SCHEMA uses (type, const, enum, required,
    properties, additionalProperties, items); raises AssertionError naming the path."""
    if "const" in schema:
        assert value == schema["const"], f"{path}: {value!r} != {schema['const']!r}"
    if "enum" in schema:
        assert value in schema["enum"], f"{path}: {value!r} not in {schema['enum']}"
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        ok = any(isinstance(value, _TYPES[t]) and not (t == "integer" and isinstance(value, bool))
                 for t in types)
        assert ok, f"{path}: {value!r} is not {types}"
    if isinstance(value, dict):
        for key in schema.get("required", []):
            assert key in value, f"{path}: missing {key!r}"
        props = schema.get("properties", {})
        if schema.get("additionalProperties") is False:
            assert set(value) <= set(props), f"{path}: unexpected {set(value) - set(props)}"
        for key, sub in props.items():
            if key in value:
                validate(value[key], sub, f"{path}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            validate(item, schema["items"], f"{path}[{i}]")


async def scene(h: Harness) -> None:
    await h.dm(U1, "the guide please")
    await h.sandbox.user_sends_dm(U2, "", attachments=[
        {"type": "image", "payload": {"url": "https://cdn.example/p.jpg"}}])
    await h.settle()


@pytest.fixture
def exported(tmp_path: Path) -> tuple[Path, Path]:
    async def build() -> Path:
        async with open_harness(tmp_path, workflows=[GUIDE]) as h:
            await scene(h)
            return h.config.storage.db_path()

    db_path = asyncio.run(build())
    cfg = tmp_path / "config.yaml"
    cfg.write_text(json.dumps({"storage": {"path": str(db_path)},
                               "instagram": {"app_secret": SECRET}}), "utf-8")
    return cfg, db_path


def db_rows(db_path: Path, sql: str) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        db = await open_database(db_path)
        try:
            return [dict(r) for r in await db.fetchall(sql)]
        finally:
            await db.close()

    return asyncio.run(go())


def test_round_trip_against_the_schema_and_the_database(
    exported: tuple[Path, Path], tmp_path: Path,
) -> None:
    cfg, db_path = exported
    out = tmp_path / "export" / "all.json"
    result = CliRunner().invoke(app, ["--config", str(cfg), "export", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "exported 2 contacts" in result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # personal data
    text = out.read_text("utf-8")
    assert SECRET not in text and "IGAAsandbox-token" not in text  # never a secret
    doc = read_export(text)
    validate(doc, EXPORT_SCHEMA)
    assert doc["scope"] == {"type": "all", "account_id": None, "contact_id": None}
    assert [a["id"] for a in doc["accounts"]] == [r["id"] for r in db_rows(
        db_path, "SELECT id FROM accounts ORDER BY id")]
    contacts = {c["id"]: c for c in doc["contacts"]}
    assert set(contacts) == {U1, U2}
    for cid, contact in contacts.items():
        stored = db_rows(db_path, f"SELECT mid, direction, sent_by, text FROM messages"
                                  f" WHERE contact_id = '{cid}' ORDER BY created_at, id")
        assert [{k: m[k] for k in ("mid", "direction", "sent_by", "text")}
                for m in contact["messages"]] == stored
        events = db_rows(db_path, f"SELECT id FROM events WHERE contact_id = '{cid}'")
        assert sorted(e["id"] for e in contact["events"]) == sorted(e["id"] for e in events)
    # every stored event is in the export: under its contact, or at the top level
    exported_ids = [e["id"] for c in contacts.values() for e in c["events"]] + [
        e["id"] for e in doc["events"]]
    assert sorted(exported_ids) == [r["id"] for r in db_rows(
        db_path, "SELECT id FROM events ORDER BY id")]
    u1 = contacts[U1]
    assert (u1["stage"], u1["tags"]) == ("engaged", ["lead"])
    assert u1["fields"]["email"] == "u1@example.com"  # (the profile fetch may add "name")
    assert [(s["workflow"], s["state"], s["text"], s["detail"]) for s in u1["sends"]] == [
        ("guide", "sent", "Here: https://example.com/guide", None)]  # detail: no refusal
    assert contacts[U2]["messages"][0]["media"] == ["[image]"]
    assert contacts[U2]["messages"][0]["attachments"][0]["url"] == "https://cdn.example/p.jpg"
    # The AI feature's tables come along under "other" when they hold rows for the contact.
    assert all(isinstance(v, list) for c in contacts.values() for v in c["other"].values())


def test_one_contact_to_stdout_and_leads_csv(exported: tuple[Path, Path],
                                             tmp_path: Path) -> None:
    cfg, _ = exported
    leads = tmp_path / "leads.csv"
    result = CliRunner().invoke(app, ["--config", str(cfg), "export", "--contact", U1,
                                      "--no-events", "--leads-csv", str(leads)])
    assert result.exit_code == 0, result.output
    doc = read_export(result.stdout)
    validate(doc, EXPORT_SCHEMA)
    assert doc["scope"]["type"] == "contact" and doc["scope"]["contact_id"] == U1
    assert [c["id"] for c in doc["contacts"]] == [U1]
    assert doc["contacts"][0]["events"] == []
    rows = list(csv.DictReader(io.StringIO(leads.read_text("utf-8"))))
    assert [(r["contact_id"], r["stage"], r["tags"], r["field:email"]) for r in rows] == [
        (U1, "engaged", "lead", "u1@example.com")]  # U2 is still "new": not a lead

    schema = CliRunner().invoke(app, ["export", "--schema"])
    assert schema.exit_code == 0 and json.loads(schema.stdout) == EXPORT_SCHEMA


@pytest.mark.parametrize("option", ["--out", "--leads-csv"])
def test_a_directory_given_as_the_file_is_refused_naming_it(
        exported: tuple[Path, Path], tmp_path: Path, option: str) -> None:
    cfg, _ = exported
    result = CliRunner().invoke(app, ["--config", str(cfg), "export", option, str(tmp_path)])
    assert result.exit_code == 1
    assert f"{option} {tmp_path} is a directory: give a file name" in result.stderr
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_an_event_still_staged_by_ingest_is_exported_with_the_events_only(
    exported: tuple[Path, Path],
) -> None:
    """Found in review: a staged event (acknowledged under load, not moved into events yet)
    was exported under "other", raw payload included, even with --no-events."""
    cfg, db_path = exported
    raw = json.dumps({"mid": "m-staged", "text": "secret words"})
    with sqlite3.connect(db_path) as conn:
        acct = conn.execute("SELECT id FROM accounts").fetchone()[0]
        conn.execute("INSERT INTO staged_events(dedupe_key, account_id, kind, contact_id,"
                     " occurred_at, received_at, raw) VALUES ('msg:m-staged', ?, 'message', ?,"
                     " 1.7e9, 1.7e9, ?)", (acct, U1, raw))
    runner = CliRunner()
    result = runner.invoke(app, ["--config", str(cfg), "export", "--contact", U1])
    assert result.exit_code == 0, result.output
    doc = read_export(result.stdout)
    validate(doc, EXPORT_SCHEMA)
    (contact,) = doc["contacts"]
    assert contact["events"][-1]["id"] is None  # staged: after the stored ones
    assert contact["events"][-1]["payload"] == json.loads(raw)
    assert all(e["id"] is not None for e in contact["events"][:-1])
    assert "staged_events" not in contact["other"]
    result = runner.invoke(app, ["--config", str(cfg), "export", "--contact", U1,
                                 "--no-events"])
    assert result.exit_code == 0, result.output
    assert "secret words" not in result.stdout


@pytest.mark.parametrize("page", [500, 1])
def test_events_filed_under_no_contact_are_exported_at_the_top_level(
    exported: tuple[Path, Path], page: int, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by the session-15 privacy review: "everything stored" left out the events filed
    under no contact: the account's own public replies (their contact is the account), items
    of kinds instaset does not know (no contact), and such events still staged."""
    cfg, db_path = exported
    own = json.dumps({"text": "Thanks @u1, check your DMs!"})
    unknown = json.dumps({"pass_thread_control": {"metadata": "u1 said hi"}})
    with sqlite3.connect(db_path) as conn:
        acct = conn.execute("SELECT id FROM accounts").fetchone()[0]
        conn.execute("INSERT INTO events(dedupe_key, account_id, kind, contact_id, occurred_at,"
                     " received_at, raw, processed_at) VALUES ('cmt:own', ?1, 'comment', ?1,"
                     " 1.7e9, 1.7e9, ?2, 1.7e9)", (acct, own))
        conn.execute("INSERT INTO events(dedupe_key, account_id, kind, contact_id, occurred_at,"
                     " received_at, raw, processed_at) VALUES ('unk:1', ?, 'unknown', NULL,"
                     " 1.7e9, 1.7e9, ?, 1.7e9)", (acct, unknown))
        conn.execute("INSERT INTO staged_events(dedupe_key, account_id, kind, contact_id,"
                     " occurred_at, received_at, raw) VALUES ('unk:2', ?, 'unknown', NULL,"
                     " 1.7e9, 1.7e9, ?)", (acct, unknown))
    monkeypatch.setattr(export_module, "PAGE", page)  # 1: every row its own page
    runner = CliRunner()
    result = runner.invoke(app, ["--config", str(cfg), "export"])
    assert result.exit_code == 0, result.output
    doc = read_export(result.stdout)
    validate(doc, EXPORT_SCHEMA)
    assert [(e["kind"], e["contact_id"], e["id"] is None, e["payload"])
            for e in doc["events"]] == [
        ("comment", acct, False, json.loads(own)), ("unknown", None, False, json.loads(unknown)),
        ("unknown", None, True, json.loads(unknown))]
    # one contact's export, or one without events, has none of them
    for args in (["--contact", U1], ["--no-events"]):
        result = runner.invoke(app, ["--config", str(cfg), "export", *args])
        assert result.exit_code == 0, result.output
        assert "events" not in read_export(result.stdout) and "u1 said hi" not in result.stdout


def test_read_export_refuses_other_formats_and_versions() -> None:
    with pytest.raises(InstasetError, match="version 2 is not supported"):
        read_export(json.dumps({"format": "instaset-export", "version": 2}))
    with pytest.raises(InstasetError, match="not an instaset export"):
        read_export(json.dumps({"format": "something"}))
    with pytest.raises(InstasetError, match="invalid JSON"):
        read_export("{")
