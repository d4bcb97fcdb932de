"""Telling the creator what matters: hot leads, handoffs, refused sends, broken tokens.

Contract of the ``notify`` job: the notification is recorded once per key (the inbox and
``doctor`` show it), logged at WARNING on ``instaset.notify``, and, when configured, handed to
``notify.command`` (text on stdin), POSTed as JSON to ``notify.webhook_url`` and/or emailed
through ``notify.smtp`` (stdlib ``smtplib`` in a thread, bounded by :data:`SMTP_TIMEOUT`). A
failing command, webhook or mail server raises, so the job retries; the record is never
duplicated. Delivery is at least once per channel: a retry after a partial failure repeats the
channels that had already succeeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import smtplib
import time
from collections.abc import Callable
from email.message import EmailMessage

import aiohttp

from instaset.config import NotifyConfig, SmtpConfig
from instaset.store import history
from instaset.store.db import Database
from instaset.store.jobs import Job

log = logging.getLogger("instaset.notify")

COMMAND_TIMEOUT = 30.0
"""Seconds ``notify.command`` may run before it is killed."""

SMTP_TIMEOUT = 30.0
"""Seconds for each SMTP socket operation (connect, each command, the data)."""


async def run_bounded(
    proc: asyncio.subprocess.Process, data: bytes, timeout: float, what: str
) -> None:
    """Feed ``data`` to ``proc`` (started with ``start_new_session=True``) and wait for it,
    at most ``timeout`` seconds. Timed out or cancelled, the process and everything it
    started (its process group: a shell's children too) are killed and reaped before the
    error goes on: nothing is left running, no transport is left open. A non-zero exit
    raises :class:`RuntimeError` naming ``what``."""
    try:
        async with asyncio.timeout(timeout):
            _out, err = await proc.communicate(data)
    except BaseException:
        kill_group(proc)
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"{what} exited {proc.returncode}: {err[:200]!r}")


def kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the process group ``proc`` leads (see :func:`run_bounded`)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()  # in case it left its group


def email_for(smtp: SmtpConfig, kind: str, text: str) -> EmailMessage:
    """The email of one notification: ``[instaset] kind: first line`` as the subject."""
    msg = EmailMessage()
    first = " ".join(text.strip().splitlines()[:1]) if text.strip() else kind
    subject = f"[instaset] {kind}: {first}"
    msg["Subject"] = subject if len(subject) <= 120 else subject[:119] + "…"
    msg["From"] = smtp.from_addr
    msg["To"] = smtp.to_addr
    msg.set_content(text)
    return msg


def send_email(smtp: SmtpConfig, msg: EmailMessage, timeout: float = SMTP_TIMEOUT) -> None:
    """Deliver ``msg`` (blocking: call it in a thread). Raises on any refusal or error."""
    with smtplib.SMTP(smtp.host, smtp.port, timeout=timeout) as conn:
        conn.ehlo()
        if smtp.starttls:
            conn.starttls()
            conn.ehlo()
        if smtp.username:
            password = smtp.password.get_secret_value() if smtp.password is not None else ""
            conn.login(smtp.username, password)
        refused = conn.send_message(msg)
        if refused:  # some recipients refused, others accepted: still worth a retry
            raise RuntimeError(f"notify.smtp refused recipients: {sorted(refused)}")


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
            # The text may quote a contact's message: in the log only at DEBUG (one line per
            # event with ids; `instaset inbox` shows the notification itself).
            log.warning("notification (%s) for contact %s: see instaset inbox",
                        p.get("kind", "notify"), p.get("contact_id") or "-")
            log.debug("notify text: %s", text)
        if self.config.command:
            proc = await asyncio.create_subprocess_shell(
                self.config.command, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
            await run_bounded(proc, text.encode(), COMMAND_TIMEOUT, "notify.command")
        if self.config.webhook_url:
            async with aiohttp.ClientSession() as session, session.post(
                self.config.webhook_url, json={"kind": p.get("kind"), "text": text},
                timeout=aiohttp.ClientTimeout(total=15),
            ) as resp:
                if resp.status >= 300:
                    raise RuntimeError(f"notify.webhook_url answered HTTP {resp.status}")
        if self.config.smtp is not None:
            msg = email_for(self.config.smtp, str(p.get("kind", "notify")), text)
            # The socket timeout bounds each SMTP step; this bounds a server that trickles.
            await asyncio.wait_for(asyncio.to_thread(send_email, self.config.smtp, msg),
                                   timeout=4 * SMTP_TIMEOUT)
        await history.mark_notification_delivered(self.db, key, self.clock())
