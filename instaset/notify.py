"""Telling the creator what matters: hot leads, handoffs, refused sends, broken tokens.

Contract of the ``notify`` job: the notification is recorded once per key (the inbox and
``doctor`` show it), logged at WARNING on ``instaset.notify``, and, when configured, handed to
``notify.command`` (text on stdin), POSTed as JSON to ``notify.webhook_url`` and/or emailed
through ``notify.smtp`` (stdlib ``smtplib`` in a thread). The channels run side by side, each
within its own bound (:data:`COMMAND_TIMEOUT`, :data:`WEBHOOK_TIMEOUT`, :data:`SMTP_TIMEOUT`),
cut to fit in the worker's time limit for the job; a command that runs out of time is killed.
A failing command, webhook or mail server raises, so the job retries; the record is never
duplicated. Delivery is at least once per channel: a retry after a partial failure repeats the
channels that had already succeeded."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import smtplib
import time
from collections.abc import Callable, Coroutine
from email.message import EmailMessage
from typing import Any

import aiohttp

from instaset.config import NotifyConfig, SmtpConfig, WorkerConfig
from instaset.config_models import JOB_SHARE_OF_LEASE
from instaset.store import history
from instaset.store.db import Database
from instaset.store.jobs import Job

log = logging.getLogger("instaset.notify")

COMMAND_TIMEOUT = 30.0
"""Seconds ``notify.command`` may run before it is killed."""

WEBHOOK_TIMEOUT = 15.0
"""Seconds for the whole POST to ``notify.webhook_url``."""

JOB_MARGIN = 5.0
"""Seconds of a ``notify`` job's time limit kept for its own database work: no channel's
bound goes past the rest (see :meth:`Notifier.bound`)."""

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
    """Runs the ``notify`` jobs. ``job_seconds`` is the worker's time limit for one job
    (``WorkerSettings.job_timeout``): the channels run side by side, and each one's own
    bound is cut to fit in it (less :data:`JOB_MARGIN`), so the worker never cuts a
    delivery off midway; a channel that runs out of time fails on its own, named."""

    def __init__(
        self, db: Database, config: NotifyConfig, *, clock: Callable[[], float] = time.time,
        job_seconds: float = JOB_SHARE_OF_LEASE * WorkerConfig().lease_seconds,
    ) -> None:
        self.db = db
        self.config = config
        self.clock = clock
        self.job_seconds = job_seconds

    def bound(self, seconds: float) -> float:
        """``seconds``, a channel's own bound, cut to what a job leaves to its channels."""
        return max(0.1, min(seconds, self.job_seconds - JOB_MARGIN))

    async def handle(self, job: Job) -> None:
        p = job.payload
        key = str(p["key"])
        text = str(p["text"])
        kind = str(p.get("kind", "notify"))
        new = await history.add_notification(
            self.db, key=key, account_id=p.get("account_id"), contact_id=p.get("contact_id"),
            kind=kind, text=text, now=self.clock(),
        )
        if new:
            # The text may quote a contact's message: in the log only at DEBUG (one line per
            # event with ids; `instaset inbox` shows the notification itself).
            log.warning("notification (%s) for contact %s: see instaset inbox",
                        kind, p.get("contact_id") or "-")
            log.debug("notify text: %s", text)
        channels = self.channels(p.get("kind"), text)
        results = await asyncio.gather(*(c() for c in channels.values()),
                                       return_exceptions=True)
        failed: list[tuple[str, Exception]] = []
        for name, result in zip(channels, results, strict=True):
            if isinstance(result, Exception):
                failed.append((name, result))
            elif isinstance(result, BaseException):  # cancelled: not a channel's failure
                raise result
        if len(failed) == 1:
            raise failed[0][1]
        if failed:
            raise RuntimeError("; ".join(f"{name}: {type(exc).__name__}: {exc}"
                                         for name, exc in failed)) from failed[0][1]
        await history.mark_notification_delivered(self.db, key, self.clock())

    def channels(
        self, kind: object, text: str
    ) -> dict[str, Callable[[], Coroutine[Any, Any, None]]]:
        """The configured channels, by name, each a delivery to run once."""
        out: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {}
        if self.config.command:
            out["command"] = lambda: self.run_command(text)
        if self.config.webhook_url:
            out["webhook"] = lambda: self.post_webhook(kind, text)
        if self.config.smtp is not None:
            out["smtp"] = lambda: self.send_mail(str(kind or "notify"), text)
        return out

    async def run_command(self, text: str) -> None:
        assert self.config.command
        proc = await asyncio.create_subprocess_shell(
            self.config.command, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        await run_bounded(proc, text.encode(), self.bound(COMMAND_TIMEOUT), "notify.command")

    async def post_webhook(self, kind: object, text: str) -> None:
        assert self.config.webhook_url
        async with aiohttp.ClientSession() as session, session.post(
            self.config.webhook_url, json={"kind": kind, "text": text},
            timeout=aiohttp.ClientTimeout(total=self.bound(WEBHOOK_TIMEOUT)),
        ) as resp:
            if resp.status >= 300:
                raise RuntimeError(f"notify.webhook_url answered HTTP {resp.status}")

    async def send_mail(self, kind: str, text: str) -> None:
        assert self.config.smtp is not None
        msg = email_for(self.config.smtp, kind, text)
        # The socket timeout bounds each SMTP step; the whole is bounded too (a server that
        # trickles), at four steps' worth.
        total = self.bound(4 * SMTP_TIMEOUT)
        await asyncio.wait_for(
            asyncio.to_thread(send_email, self.config.smtp, msg, total / 4), timeout=total)
