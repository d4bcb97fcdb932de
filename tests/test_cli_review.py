"""CLI review defects: a blank option value never widens a command's reach, a reply that does
not go out does not pause automation, a config typo is never read as "defaults" by the read
commands, ``--account`` resolves like ``disconnect`` does, ``catch-up`` fails when an account
failed, and contradictory or empty choices are refused."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import instaset.tokens
from instaset.cli import app
from instaset.config import Config
from instaset.config_storage import TOP_LEVEL_KEYS, StorageLocation, quick_storage
from instaset.export import read_export
from instaset.paths import default_db_path
from instaset.secrets import MemorySecrets
from instaset.store import history
from instaset.store.db import open_database
from instaset.tokens import StaticTokens, TokenProvider
from tests.sending_harness import ACCT
from tests.test_inbox import HOUR, ThreadedSandbox, db_rows, seed_inbound, write_config
from tests.test_purge import A1, A2, DAY, seed

CAROL = "3339842642640639"


def run(cfg: Path, *args: str) -> Any:
    return CliRunner().invoke(app, ["--config", str(cfg), *args])


@pytest.fixture(autouse=True)
def _fresh_memory_secrets() -> None:
    MemorySecrets.reset()


@pytest.fixture
def seeded(tmp_path: Path) -> tuple[Path, Path]:
    """Two accounts (A1 @creator1 with contacts c1, c2; A2 @creator2 with c3), three messages
    per contact, memory secrets (no token stored), a Graph URL where nothing listens."""
    db_path = tmp_path / "review.db"
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "storage": {"path": str(db_path), "synchronous": "NORMAL"},
        "secrets": {"backend": "memory"},
        "instagram": {"graph_url": "http://127.0.0.1:9", "api_url": "http://127.0.0.1:9"},
    }), "utf-8")

    async def go() -> None:
        db = await open_database(db_path, synchronous="NORMAL")
        try:
            now = time.time()
            await seed(db, A1, "c1", now - DAY)
            await seed(db, A1, "c2", now - DAY)
            await seed(db, A2, "c3", now - DAY)
        finally:
            await db.close()

    asyncio.run(go())
    return cfg, db_path


def rows(db_path: Path, sql: str) -> list[dict[str, Any]]:
    return db_rows(db_path, sql)


def messages_per_account(db_path: Path) -> dict[str, int]:
    return {r["account_id"]: r["n"] for r in rows(
        db_path, "SELECT account_id, count(*) AS n FROM messages GROUP BY account_id")}


# -- 1. an empty value is an error naming the option ------------------------------------------
@pytest.mark.parametrize(("args", "option"), [
    (["export", "--contact", ""], "--contact"),
    (["export", "--account", ""], "--account"),
    (["export", "--account", "  "], "--account"),
    (["purge", "--contact", "", "--yes"], "--contact"),
    (["purge", "--account", "", "--dry-run"], "--account"),
    (["purge", "--account", "", "--yes"], "--account"),
    (["purge", "--older-than", "", "--yes"], "--older-than"),
    (["disconnect", "", "--yes"], "ACCOUNT"),
    (["inbox", "pause", "c1", "--for", ""], "--for"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_an_empty_value_is_refused_and_changes_nothing(
    seeded: tuple[Path, Path], args: list[str], option: str,
) -> None:
    cfg, db_path = seeded
    before = rows(db_path, "SELECT * FROM messages ORDER BY id")
    result = run(cfg, *args)
    assert result.exit_code == 1, result.output
    assert f"error: {option} is empty" in result.stderr
    assert result.stdout == ""  # nothing exported, nothing reported as done
    assert rows(db_path, "SELECT * FROM messages ORDER BY id") == before
    assert [(a["id"], a["state"]) for a in rows(db_path, "SELECT id, state FROM accounts"
                                                " ORDER BY id")] == [
        (A1, "connected"), (A2, "connected")]
    assert [r["paused_until"] for r in rows(db_path, "SELECT paused_until FROM conversations"
                                             )] == [None, None, None]


def test_disconnect_with_an_empty_name_leaves_the_only_account(tmp_path: Path) -> None:
    """With one account, `disconnect ''` used to pick it (the "only one connected" path)."""
    db_path = tmp_path / "one.db"
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"storage": {"path": str(db_path)},
                                   "secrets": {"backend": "memory"}}), "utf-8")

    async def go() -> None:
        db = await open_database(db_path)
        try:
            await seed(db, A1, "c1", time.time())
        finally:
            await db.close()

    asyncio.run(go())
    result = run(cfg, "disconnect", "", "--yes")
    assert result.exit_code == 1
    assert "error: ACCOUNT is empty" in result.stderr
    assert rows(db_path, "SELECT id, state FROM accounts") == [
        {"id": A1, "state": "connected"}]


# -- 4. --account resolves like disconnect ----------------------------------------------------
def test_purge_account_resolves_a_username_and_refuses_an_unknown_one(
    seeded: tuple[Path, Path],
) -> None:
    cfg, db_path = seeded
    unknown = run(cfg, "purge", "--account", "nobody", "--yes")
    assert unknown.exit_code == 1
    assert "no account 'nobody'" in unknown.stderr
    dry = run(cfg, "purge", "--account", "@nobody", "--dry-run")
    assert dry.exit_code == 1 and "no account '@nobody'" in dry.stderr
    assert messages_per_account(db_path) == {A1: 6, A2: 3}

    refused = run(cfg, "purge", "--account", "@creator1")  # no TTY, no --yes
    assert refused.exit_code == 1
    assert f"all data of account @creator1 ({A1})" in refused.stderr
    done = run(cfg, "purge", "--account", "@creator1", "--yes")
    assert done.exit_code == 0, done.output
    assert "messages: 6" in done.stdout
    assert messages_per_account(db_path) == {A2: 3}  # only that account's data went


def test_export_account_resolves_a_username_and_refuses_an_unknown_one(
    seeded: tuple[Path, Path],
) -> None:
    cfg, _ = seeded
    unknown = run(cfg, "export", "--account", "nobody")
    assert unknown.exit_code == 1
    assert "no account 'nobody'" in unknown.stderr and unknown.stdout == ""
    by_name = run(cfg, "export", "--account", "@creator2", "--no-events")
    assert by_name.exit_code == 0, by_name.output
    doc = read_export(by_name.stdout)
    assert doc["scope"]["account_id"] == A2
    assert [c["id"] for c in doc["contacts"]] == ["c3"]
    one = run(cfg, "export", "--account", "creator1", "--contact", "c2", "--no-events")
    assert one.exit_code == 0, one.output
    assert [c["id"] for c in read_export(one.stdout)["contacts"]] == ["c2"]


# -- 7. a zero pause --------------------------------------------------------------------------
@pytest.mark.parametrize("duration", ["0h", "0s", "0"])
def test_pause_for_zero_is_refused(seeded: tuple[Path, Path], duration: str) -> None:
    cfg, db_path = seeded
    result = run(cfg, "inbox", "pause", "c1", "--for", duration)
    assert result.exit_code == 1
    assert "--for must be longer than 0s" in result.stderr and result.stdout == ""
    assert rows(db_path, "SELECT paused_until FROM conversations WHERE contact_id = 'c1'"
                ) == [{"paused_until": None}]
    paused = run(cfg, "inbox", "pause", "c1", "--for", "90m")
    assert paused.exit_code == 0, paused.output
    assert "(90m)" in paused.stdout
    until = rows(db_path, "SELECT paused_until FROM conversations WHERE contact_id = 'c1'"
                 )[0]["paused_until"]
    assert until is not None and abs(until - (time.time() + 5400)) < 60


# -- 6. bookings --json --ics -----------------------------------------------------------------
def test_bookings_json_and_ics_together_are_refused(seeded: tuple[Path, Path]) -> None:
    cfg, _ = seeded
    both = run(cfg, "bookings", "--json", "--ics")
    assert both.exit_code == 1
    assert "choose either --json or --ics" in both.stderr and both.stdout == ""
    alone = run(cfg, "bookings", "--json")
    assert alone.exit_code == 0 and json.loads(alone.stdout) == []


# -- 5. catch-up fails when an account failed --------------------------------------------------
def test_catch_up_exits_1_when_an_account_failed(seeded: tuple[Path, Path]) -> None:
    cfg, _ = seeded  # two accounts, no token stored for either
    text = run(cfg, "catch-up", "--since", "1h")
    assert text.exit_code == 1, text.output
    fix = "no access token stored; reconnect it with `instaset connect`"
    assert f"error: @creator1: {fix}" in text.stderr
    assert f"error: @creator2: {fix}" in text.stderr
    assert "error" not in text.stdout
    as_json = run(cfg, "catch-up", "--since", "1h", "--json")
    assert as_json.exit_code == 1
    doc = json.loads(as_json.stdout)  # the document is still there, whole
    assert [(r["account_id"], r["error"]) for r in doc] == [
        (A1, fix), (A2, fix)]
    assert "no access token stored" in as_json.stderr


def test_catch_up_has_nothing_to_do_for_the_sandboxs_account(tmp_path: Path) -> None:
    """Without `serve --sandbox` its account has no token, and nothing at Meta to catch up:
    no failure (a cron catch-up failed on every run after the README's sandbox try)."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"storage": {"path": str(tmp_path / "s.db")},
                                   "secrets": {"backend": "memory"}}), "utf-8")

    async def go() -> None:
        db = await open_database(tmp_path / "s.db")
        try:
            await history.upsert_account(db, A1, username="sandbox_creator", now=time.time(),
                                         sandbox=True)
        finally:
            await db.close()

    asyncio.run(go())
    result = run(cfg, "catch-up")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "@sandbox_creator: nothing to catch up"


# -- 3. a top-level typo is a config error for the read commands too -------------------------
def test_the_fast_path_knows_exactly_the_top_level_keys_of_the_config() -> None:
    assert set(Config.model_fields) - {"source"} == TOP_LEVEL_KEYS


@pytest.mark.parametrize("argv", [["inbox", "--json"], ["stats", "--json"],
                                  ["inbox", "show", "c1", "--json"]])
def test_an_unknown_top_level_key_is_reported_not_read_as_defaults(
    tmp_path: Path, argv: list[str],
) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("timezone: UTC\nstorag:\n  path: mine.db\n", "utf-8")
    result = run(cfg, *argv)
    assert result.exit_code == 1
    assert "config.yaml:2" in result.stderr and "storag" in result.stderr
    assert result.stdout == ""
    assert not default_db_path(os.environ).exists()  # no empty database made up
    assert not (tmp_path / "mine.db").exists()


def test_known_top_level_keys_keep_the_fast_path(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"timezone": "Europe/Berlin", "workflows": [],
                                   "retention": {"days": 30},
                                   "storage": {"path": "kept.db"}}), "utf-8")
    assert quick_storage(cfg, env={}) == StorageLocation(tmp_path / "kept.db", "FULL")


# -- 2. a reply that does not go out does not pause automation --------------------------------
@pytest.fixture
def box() -> Iterator[ThreadedSandbox]:
    with ThreadedSandbox.running() as sb:
        yield sb


def reply_config(tmp_path: Path, box: ThreadedSandbox, monkeypatch: pytest.MonkeyPatch,
                 tokens: dict[str, str]) -> tuple[Path, Path]:
    db_path = tmp_path / "reply.db"
    cfg = write_config(tmp_path, db_path, instagram={"graph_url": box.url,
                                                      "api_url": box.url},
                       handoff={"pause_for": "12h"})

    def provider(_config: Config) -> TokenProvider:
        return StaticTokens(tokens)

    monkeypatch.setattr(instaset.tokens, "default_tokens", provider)
    seed_inbound(db_path, CAROL, HOUR)  # carol wrote an hour ago: one unread message
    return cfg, db_path


def conversation(cfg: Path) -> dict[str, Any]:
    shown = run(cfg, "inbox", "show", "carol", "--json", "--keep-unread")
    assert shown.exit_code == 0, shown.output
    contact: dict[str, Any] = json.loads(shown.stdout)["contact"]
    return contact


def test_a_reply_refused_for_want_of_a_token_does_not_pause(
    tmp_path: Path, box: ThreadedSandbox, monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg, db_path = reply_config(tmp_path, box, monkeypatch, tokens={})
    result = run(cfg, "inbox", "reply", "carol", "hi", "--wait", "5")
    assert result.exit_code == 1
    assert "not sent to @carol (refused: no_token)" in result.stderr
    assert "automation was not paused" in result.stderr
    assert box.box.send_attempts() == []
    contact = conversation(cfg)
    assert contact["automation"]["state"] == "on"
    assert contact["automation"]["paused_until"] is None
    assert contact["unread"] == 1
    assert rows(db_path, "SELECT state, reason FROM sends") == [
        {"state": "refused", "reason": "no_token"}]  # recorded, with its reason


def test_a_reply_meta_rejects_does_not_pause_and_a_sent_one_does(
    tmp_path: Path, box: ThreadedSandbox, monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg, db_path = reply_config(tmp_path, box, monkeypatch, tokens={ACCT: box.box.token})
    box.box.add_user(CAROL, "carol")  # known to Meta, but never wrote: Meta says no
    failed = run(cfg, "inbox", "reply", "carol", "hi")
    assert failed.exit_code == 1
    assert "window_closed" in failed.stderr and "automation was not paused" in failed.stderr
    contact = conversation(cfg)
    assert (contact["automation"]["paused_until"], contact["unread"]) == (None, 1)

    box.user_dm_at(CAROL, HOUR)  # now Meta has her message too
    sent = run(cfg, "inbox", "reply", "carol", "hello again")
    assert sent.exit_code == 0, sent.output
    assert "automation paused until" in sent.stdout
    contact = conversation(cfg)
    assert contact["automation"]["state"] == "paused" and contact["unread"] == 0
    until = rows(db_path, "SELECT paused_until FROM conversations")[0]["paused_until"]
    assert abs(until - (time.time() + 12 * HOUR)) < 60
