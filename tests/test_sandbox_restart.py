"""`instaset serve --sandbox` started again on the same data directory, as the README's
"Trying it without a Meta app" invites (s16 fresh audit, finding 1): comments made after
the restart are new comments.

The daemon is `daemon.serving()` (the code behind `instaset serve`) in a loop thread; the
CLI (`simulate`) runs through CliRunner against it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from instaset.config import load_config
from instaset.daemon import Serving
from instaset.simulate import stable_igsid
from instaset.store.db import open_database
from tests.test_simulate_errors import run_cli, threaded_daemon, write_config


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
