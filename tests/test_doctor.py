"""``instaset doctor``: each check against real things (a sandbox Meta, a served webhook app,
a real database), what it says to fix, and the exit code."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from typer.testing import CliRunner

from instaset.cli import app
from instaset.config import Config
from instaset.daemon import runtime
from instaset.doctor import Check, failed, run_checks
from instaset.inbox import iso_utc
from instaset.sandbox import Sandbox
from instaset.store import history
from instaset.store import jobs as jobstore
from instaset.store.db import open_database
from instaset.tokens import StaticTokens
from instaset.webhook import make_app

ACCT = "17841400000000009"
DAY = 86400.0


def write_config(tmp_path: Path, **sections: Any) -> Path:
    data: dict[str, Any] = {
        "instagram": {"app_secret": "s3cret-app", "verify_token": "vt-123"},
        "storage": {"path": str(tmp_path / "doc.db"), "synchronous": "NORMAL"},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(data), "utf-8")
    return path


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


async def make_db(tmp_path: Path, *, sandbox: bool = True, expires: float | None = None
                  ) -> None:
    db = await open_database(tmp_path / "doc.db", synchronous="NORMAL")
    try:
        await history.upsert_account(db, ACCT, username="coach", now=time.time(),
                                     sandbox=sandbox, token_expires_at=expires,
                                     subscribed_fields=["messages"])
    finally:
        await db.close()


def test_cli_healthy_setup_exits_0_and_names_each_check(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    asyncio.run(make_db(tmp_path))
    result = CliRunner().invoke(app, ["--config", str(cfg), "doctor", "--offline"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for line in ("✓ config:", "✓ app secret:", "✓ verify token:", "✓ database integrity:",
                 "✓ schema:", "✓ journal:", "✓ queue:", "✓ account @coach: sandbox",
                 "✓ retention:"):
        assert line in out, line
    # Warnings do not fail: no daemon, no public URL.
    assert "! daemon: not running" in out and "! public URL:" in out
    assert "docs/setup.md#public-url" in out
    assert "s3cret-app" not in out and "vt-123" not in out  # never a secret


def test_cli_missing_secrets_and_bad_config_exit_1_with_the_fix(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(json.dumps({"storage": {"path": str(tmp_path / "doc.db")}}), "utf-8")
    result = CliRunner().invoke(app, ["--config", str(cfg), "doctor", "--offline", "--json"])
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["ok"] is False
    checks = {c["name"]: c for c in doc["checks"]}
    assert checks["app secret"]["status"] == "fail"
    assert "INSTASET_APP_SECRET" in checks["app secret"]["fix"]
    assert checks["app secret"]["ref"] == "docs/setup.md#setup-meta-app"
    assert checks["verify token"]["status"] == "fail"
    assert checks["database"]["status"] == "warn"  # not created yet: doctor creates nothing
    assert not (tmp_path / "doc.db").exists()

    cfg.write_text("storage:\n  pth: x\n", "utf-8")
    bad = CliRunner().invoke(app, ["--config", str(cfg), "doctor"])
    assert bad.exit_code == 1
    assert "✗ config:" in bad.stdout and "pth" in bad.stdout


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    box = Sandbox(app_secret="s3cret-app", account_id=ACCT, token="IGAA-doctor")
    await box.start()
    try:
        yield box
    finally:
        await box.stop()


async def test_token_and_subscriptions_checked_at_meta(tmp_path: Path, sandbox: Sandbox) -> None:
    url = sandbox.base_url or ""
    cfg = write_config(tmp_path, instagram={"graph_url": url, "api_url": url})
    await make_db(tmp_path, sandbox=False, expires=time.time() + 3 * DAY)
    tokens = StaticTokens({ACCT: sandbox.token})

    checks = by_name(await run_checks(cfg, tokens=tokens))
    assert checks["token @coach"].status == "warn"  # expires in 3 days
    assert "expires in 2d" in checks["token @coach"].message
    sub = checks["subscriptions @coach"]
    assert sub.status == "fail" and "not subscribed to messages" in sub.message
    assert sub.ref == "docs/setup.md#connect-an-account"

    sandbox.subscribe(["messages", "comments"])
    sub = by_name(await run_checks(cfg, tokens=tokens))["subscriptions @coach"]
    assert sub.status == "warn" and "missing message_reactions" in sub.message
    sandbox.subscribe(["messages", "comments", "message_reactions",
                       "messaging_postbacks", "messaging_seen"])
    sub = by_name(await run_checks(cfg, tokens=tokens))["subscriptions @coach"]
    assert sub.status == "ok"

    sandbox.revoke_token()
    checks = by_name(await run_checks(cfg, tokens=tokens))
    assert checks["subscriptions @coach"].status == "fail"
    assert "rejected the token" in checks["subscriptions @coach"].message

    offline = by_name(await run_checks(cfg, tokens=StaticTokens({}), offline=True))
    assert offline["token @coach"].status == "fail"  # nothing stored
    assert offline["subscriptions @coach"].status == "skip"
    assert "last known: messages" in offline["subscriptions @coach"].message
    assert len(sandbox.transcript) == 4  # the offline run asked Meta nothing


async def test_expired_token_fails(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    await make_db(tmp_path, sandbox=False, expires=time.time() - 60)
    checks = await run_checks(cfg, tokens=StaticTokens({ACCT: "tok"}), offline=True)
    assert by_name(checks)["token @coach"].status == "fail" and failed(checks)


async def test_public_url_reaches_the_webhook(tmp_path: Path) -> None:
    served = Config.model_validate({"instagram": {"verify_token": "vt-123"},
                                    "storage": {"path": str(tmp_path / "served.db")}})
    async with runtime(served) as rt:
        server = TestServer(make_app(rt.web), host="127.0.0.1")
        await server.start_server()
        try:
            public = str(server.make_url("/")).rstrip("/")
            good = write_config(tmp_path, server={"public_url": public})
            check = by_name(await run_checks(good))["public URL"]
            assert check.status == "ok", check
            wrong = write_config(tmp_path, server={"public_url": public},
                                 instagram={"verify_token": "other"})
            check = by_name(await run_checks(wrong))["public URL"]
            assert check.status == "fail" and "HTTP 403" in check.message
        finally:
            await server.close()
    gone = by_name(await run_checks(good))["public URL"]
    assert gone.status == "fail" and "unreachable" in gone.message


async def test_events_left_staged_with_no_daemon_running_are_a_warning(
    tmp_path: Path,
) -> None:
    """Found in review: events ingest staged under load and did not move before it stopped
    (or died) have no job, so the queue check said ok while they waited for hours."""
    cfg = write_config(tmp_path)
    await make_db(tmp_path)
    db = await open_database(tmp_path / "doc.db", synchronous="NORMAL")
    try:
        now = time.time()
        async with db.tx() as conn:
            await conn.executemany(
                "INSERT INTO staged_events(dedupe_key, account_id, kind, contact_id,"
                " occurred_at, received_at, raw) VALUES (?, ?, 'message', '1', ?, ?, '{}')",
                [(f"msg:s{i}", ACCT, now - 3600, now - 3600) for i in range(3)])
    finally:
        await db.close()
    queue = by_name(await run_checks(cfg, offline=True))["queue"]
    assert queue.status == "warn", queue
    assert "3 events staged by ingest" in queue.message
    assert "3 jobs or events overdue and no daemon is running" in queue.message


async def test_queue_dead_letters_and_notifications(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    await make_db(tmp_path)
    db = await open_database(tmp_path / "doc.db", synchronous="NORMAL")
    try:
        now = time.time()
        await jobstore.enqueue(db, [jobstore.NewJob("send", "send:x", {}, now - 3600)], now)
        async with db.tx() as conn:
            await conn.execute(
                "INSERT INTO jobs(kind, key, state, run_at, created_at, finished_at, last_error)"
                " VALUES ('notify', 'n:1', 'dead', ?, ?, ?, 'RuntimeError: HTTP 500')",
                (now, now, now))
        await history.add_notification(db, key="k1", account_id=ACCT, contact_id=None,
                                       kind="lead", text="@ana is a hot lead",
                                       now=now - 7200)
    finally:
        await db.close()
    checks = by_name(await run_checks(cfg, offline=True))
    assert checks["queue"].status == "warn" and "no daemon is running" in checks["queue"].message
    dead = checks["dead letters"]
    assert dead.status == "warn" and "notify: RuntimeError: HTTP 500" in dead.message
    note = checks["notification"]
    assert note.status == "warn" and "@ana is a hot lead (not delivered)" in note.message


async def test_undelivered_notifications_beyond_the_last_five_retrying_or_given_up(
    tmp_path: Path,
) -> None:
    # A notification is retried for a day: doctor counts every one not delivered after an
    # hour, also when five newer ones (delivered) hide it from the list, and tells those
    # still retried from those given up.
    cfg = write_config(tmp_path)
    await make_db(tmp_path)
    db = await open_database(tmp_path / "doc.db", synchronous="NORMAL")
    try:
        now = time.time()
        for i in range(3):
            await history.add_notification(db, key=f"old{i}", account_id=ACCT, contact_id=None,
                                           kind="handoff", text=f"old {i}", now=now - 7200)
        await jobstore.enqueue(db, [jobstore.NewJob("notify", f"notify:old{i}", {}, now + 600 * i)
                                    for i in range(2)], now)
        async with db.tx() as conn:
            await conn.execute(
                "INSERT INTO jobs(kind, key, state, run_at, created_at, finished_at, last_error)"
                " VALUES ('notify', 'notify:old2', 'dead', ?, ?, ?, 'RuntimeError: HTTP 500')",
                (now, now, now))
        for i in range(5):
            await history.add_notification(db, key=f"new{i}", account_id=ACCT, contact_id=None,
                                           kind="lead", text=f"new {i}", now=now - 60)
            await history.mark_notification_delivered(db, f"new{i}", now - 50)
    finally:
        await db.close()
    checks = await run_checks(cfg, offline=True)
    assert [c.status for c in checks if c.name == "notification"] == ["ok"] * 5
    late = by_name(checks)["undelivered notifications"]
    assert late.status == "warn"
    assert late.message == (f"3 not delivered after an hour: 2 still retried (next try "
                            f"{iso_utc(now)}), 1 given up after a day of tries")


@pytest.mark.parametrize(("state", "status"), [("disconnected", "warn"),
                                               ("reconnect_needed", "fail")])
async def test_a_disconnected_account_is_a_warning_a_dead_token_a_failure(
        tmp_path: Path, state: str, status: str) -> None:
    """CLI review, session 15: after a deliberate `disconnect` (history kept for export),
    doctor failed for ever; a token Meta no longer accepts still fails."""
    cfg = write_config(tmp_path)
    await make_db(tmp_path, sandbox=False, expires=time.time() + 30 * DAY)
    db = await open_database(tmp_path / "doc.db", synchronous="NORMAL")
    try:
        await db.execute("UPDATE accounts SET state = ?", (state,))
    finally:
        await db.close()
    checks = await run_checks(cfg, tokens=StaticTokens({}), offline=True)
    account = by_name(checks)["account @coach"]
    assert account.status == status and "instaset connect" in (account.fix or "")
    assert bool(failed(checks)) is (status == "fail")
