"""`instaset serve --sandbox` started again on the same data directory, as the README's
"Trying it without a Meta app" invites (s16 fresh audit, findings 1 and 2): comments made
after the restart are new comments, and the contacts of the earlier run can still be
answered.

The daemon is `daemon.serving()` (the code behind `instaset serve`) in a loop thread; the
CLI (`simulate`, `inbox reply`) runs through CliRunner against it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp

from instaset.config import load_config
from instaset.daemon import Serving
from instaset.simulate import stable_igsid
from instaset.store import history
from instaset.store.db import open_database
from tests.test_simulate_errors import ACCT, run_cli, threaded_daemon, write_config

DAY = 86400.0


def db_rows(db_path: Path, sql: str, params: tuple[object, ...] = ()) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        db = await open_database(db_path)
        try:
            return [dict(r) for r in await db.fetchall(sql, params)]
        finally:
            await db.close()

    return asyncio.run(go())


def simulate(cfg: Path, srv: Serving, kind: str, user: str, text: str) -> None:
    result = run_cli(cfg, "simulate", kind, user, text, "--url", srv.url)
    assert result.exit_code == 0, result.output
    assert '"webhook_status": 200' in result.stdout


def wait_for_contact(db_path: Path, igsid: str) -> None:
    """The worker has processed the event (the contact is stored)."""
    deadline = time.monotonic() + 30
    while not db_rows(db_path, "SELECT 1 FROM contacts WHERE id = ?", (igsid,)):
        assert time.monotonic() < deadline, f"contact {igsid} never stored"
        time.sleep(0.05)


def test_comments_after_a_restart_are_stored_not_dropped_as_duplicates(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "sb")
    config = load_config(cfg)
    with threaded_daemon(config, sandbox=True) as (_lt, srv):
        simulate(cfg, srv, "comment", "bob", "GUIDE please")
    with threaded_daemon(config, sandbox=True) as (_lt, srv):
        simulate(cfg, srv, "comment", "dave", "GUIDE")
        simulate(cfg, srv, "comment", "erin", "hello")
    rows = db_rows(config.storage.db_path(),
                   "SELECT dedupe_key, contact_id FROM events WHERE kind = 'comment' ORDER BY id")
    assert [r["contact_id"] for r in rows] == [stable_igsid(u) for u in ("bob", "dave", "erin")]
    ids = [r["dedupe_key"].removeprefix("comment:") for r in rows]
    assert len(set(ids)) == 3
    assert all(len(i) == 17 and i.isdigit() and i.startswith("1790") for i in ids)


async def send_api(srv: Serving, recipient: str, *, human_agent: bool = False
                   ) -> tuple[int, dict[str, Any]]:
    """A Send API call to the daemon's sandbox, as the daemon makes it."""
    box = srv.sandbox
    assert box is not None and box.base_url is not None
    body: dict[str, Any] = {"recipient": {"id": recipient}, "message": {"text": "hi"}}
    if human_agent:
        body.update(messaging_type="MESSAGE_TAG", tag="HUMAN_AGENT")
    async with aiohttp.ClientSession() as session, session.post(
        f"{box.base_url}/v25.0/{ACCT}/messages", json=body,
        headers={"Authorization": f"Bearer {box.token}"},
    ) as resp:
        return resp.status, await resp.json()


def seed_old_contact(db_path: Path, igsid: str, ago: float) -> None:
    """A contact of the sandbox account who last wrote ``ago`` seconds ago."""

    async def go() -> None:
        db = await open_database(db_path)
        try:
            now = time.time()
            async with db.tx() as conn:
                await history.touch_contact(conn, ACCT, igsid, now, username="olga")
                await history.update_conversation(conn, ACCT, igsid, now,
                                                  inbound_at=now - ago, message_at=now - ago)
        finally:
            await db.close()

    asyncio.run(go())


def test_after_a_restart_the_sandbox_knows_the_stored_contacts(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "sb")
    config = load_config(cfg)
    db_path = config.storage.db_path()
    carol, cid = stable_igsid("carol"), stable_igsid("cid")
    with threaded_daemon(config, sandbox=True) as (_lt, srv):
        simulate(cfg, srv, "dm", "carol", "hello")
        simulate(cfg, srv, "comment", "cid", "nice reel")
        wait_for_contact(db_path, carol)
        wait_for_contact(db_path, cid)
    seed_old_contact(db_path, "4440000000000001", 8 * DAY)
    with threaded_daemon(config, sandbox=True) as (lt, srv):
        reply = run_cli(cfg, "inbox", "reply", "carol", "Hi Carol, it's me", "--wait", "30")
        assert reply.exit_code == 0, reply.output
        assert reply.stdout.startswith("sent to @carol")
        assert srv.sandbox is not None
        assert [m.text for m in srv.sandbox.thread(carol)] == ["Hi Carol, it's me"]
        # Known users keep Meta's rules: a commenter who never wrote, and a contact whose
        # last message is 8 days old, are outside any window; a stranger is still unknown.
        for who in (cid, "4440000000000001"):
            status, body = lt.run(send_api(srv, who, human_agent=True))
            assert (status, body["error"]["error_subcode"]) == (403, 2534022), who
        status, body = lt.run(send_api(srv, "5550000000000001"))
        assert (status, body["error"]["error_subcode"]) == (400, 2534014)
    sends = db_rows(db_path, "SELECT sent_by, state FROM sends WHERE contact_id = ?", (carol,))
    assert sends == [{"sent_by": "human", "state": "sent"}]
