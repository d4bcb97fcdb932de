"""Telling the creator what matters: hot leads, handoffs, refused sends, broken tokens.

Contract of the ``notify`` job: the notification is recorded once per key (the inbox and
``doctor`` show it), logged at WARNING on ``instaset.notify``, and, when configured, handed to
``notify.command`` (text on stdin) and/or POSTed as JSON to ``notify.webhook_url``. A failing
command or webhook retries through the job queue; the record is never duplicated.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import aiohttp

from instaset.config import NotifyConfig
from instaset.store import history
from instaset.store.db import Database
from instaset.store.jobs import Job

log = logging.getLogger("instaset.notify")


class Notifier:
    def __init__(
        self, db: Database, config: NotifyConfig, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.db = db
        self.config = config
        self.clock = clock

    async def handle(self, job: Job) -> None:
        p = job.payload
        key = str(p["key"])
        text = str(p["text"])
        new = await history.add_notification(
            self.db, key=key, account_id=p.get("account_id"), contact_id=p.get("contact_id"),
            kind=str(p.get("kind", "notify")), text=text, now=self.clock(),
        )
        if new:
            log.warning("notify: %s", text)
        if self.config.command:
            proc = await asyncio.create_subprocess_shell(
                self.config.command, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )
            _out, err = await asyncio.wait_for(proc.communicate(text.encode()), timeout=30)
            if proc.returncode != 0:
                raise RuntimeError(f"notify.command exited {proc.returncode}: {err[:200]!r}")
        if self.config.webhook_url:
            async with aiohttp.ClientSession() as session, session.post(
                self.config.webhook_url, json={"kind": p.get("kind"), "text": text},
                timeout=aiohttp.ClientTimeout(total=15),
            ) as resp:
                if resp.status >= 300:
                    raise RuntimeError(f"notify.webhook_url answered HTTP {resp.status}")
        await history.mark_notification_delivered(self.db, key, self.clock())
