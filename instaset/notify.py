"""Telling the creator what matters: hot leads, handoffs, refused sends, broken tokens.

Contract of the ``notify`` job: the notification is recorded once per key (the inbox and
``doctor`` show it), logged at WARNING on ``instaset.notify``, and, when configured, handed to
``notify.command`` (text on stdin, an environment without the daemon's secrets: see
:func:`command_env`), POSTed as JSON to ``notify.webhook_url`` (never through a redirect)
and/or emailed through ``notify.smtp`` (stdlib ``smtplib`` in a thread of its own, see
:class:`MailThreads`) and/or shown on the desktop (``notify.desktop``: ``notify-send``, or
``osascript`` on macOS; without it the channel fails, see :meth:`Notifier.show_desktop`). The
channels run side by side, each within its own bound (:data:`COMMAND_TIMEOUT`,
:data:`WEBHOOK_TIMEOUT`, :data:`SMTP_TIMEOUT`, :data:`DESKTOP_TIMEOUT`), cut to fit in the
worker's time limit for the job; a command that runs out of time is killed. The worker runs
at most :data:`NOTIFY_CONCURRENCY` notify jobs at once, in slots the replies leave.
A failing command, webhook or mail server makes the job retry (:class:`RetryLater`, for about
a day: see :data:`NOTIFY_MAX_ATTEMPTS`); the record is never duplicated. Delivery is at least
once per channel: a retry repeats only the channels that failed, unless the daemon restarted
in between (then it repeats all of them). So that a receiver can drop a repeat, every
delivery carries the notification's id (:func:`notice_id`): ``id`` in the webhook's JSON and its
``Idempotency-Key`` / ``X-Instaset-Notice-Id`` headers, and the email's ``Message-ID`` (see
:func:`message_id`). The webhook URL may be a credential: errors and logs show it masked."""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import html
import logging
import os
import random
import re
import shutil
import signal
import smtplib
import sys
import threading
import time
from collections.abc import Callable, Collection, Coroutine, Mapping
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import aiohttp
import yarl

from instaset.config import NotifyConfig, SmtpConfig, WorkerConfig
from instaset.config_models import JOB_SHARE_OF_LEASE
from instaset.config_types import mask_url
from instaset.queue import NewJob, RetryLater
from instaset.store import history
from instaset.store.db import Database
from instaset.store.jobs import Job

log = logging.getLogger("instaset.notify")

COMMAND_TIMEOUT = 30.0
"""Seconds ``notify.command`` may run before it is killed."""

WEBHOOK_TIMEOUT = 15.0
"""Seconds for the whole POST to ``notify.webhook_url``."""

DESKTOP_TIMEOUT = 10.0
"""Seconds ``notify-send`` / ``osascript`` may run before it is killed."""

NOTIFY_CONCURRENCY = 3
"""How many notify jobs the worker runs at once (``WorkerSettings.kind_limits``), and how
many mail deliveries (:class:`MailThreads`) may be under way: each may wait its whole bound
on a channel that does not answer, and the worker's other slots stay for the replies."""

# How long a notification is retried. A channel is down for minutes to hours at a time (a
# chat webhook being redeployed, a mail server greylisting or in maintenance, a laptop
# asleep): the first retry comes after 30 s (a blip), the wait then doubles up to an hour
# (30 s, 1, 2, 4, 8, 16, 32 min: the first hour), then one try an hour. 31 tries in all put
# the last one about 24 h after the first (3810 s + 23 x 3600 s); only then is the job
# dead-lettered (and `instaset doctor` says so). Hourly at most, a channel that is down for a
# day costs 31 tries per notification, not a flood. The waits are our own, not the worker's
# backoff (worker.backoff_base/backoff_cap shape the retries of sends, made for seconds).
NOTIFY_RETRY_FIRST = 30.0
NOTIFY_RETRY_CAP = 3600.0
NOTIFY_MAX_ATTEMPTS = 31


def notify_job(key: str, account_id: str | None, contact_id: str | None, kind: str, text: str,
               now: float) -> NewJob:
    """The job that records and delivers one notification; a channel that is down is
    retried for about a day (see :data:`NOTIFY_MAX_ATTEMPTS`)."""
    return NewJob("notify", f"notify:{key}", {
        "key": key, "account_id": account_id, "contact_id": contact_id, "kind": kind,
        "text": text}, run_at=now, max_attempts=NOTIFY_MAX_ATTEMPTS)


def notify_retry_delay(attempts: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after ``attempts`` failed tries of a notification (1 after the first):
    :data:`NOTIFY_RETRY_FIRST` doubling up to :data:`NOTIFY_RETRY_CAP`, +-10 % jitter (the
    notifications that failed together do not all retry in the same second)."""
    r = rng if rng is not None else random
    delay = NOTIFY_RETRY_FIRST * 2.0 ** min(max(0, attempts - 1), 20)
    return min(NOTIFY_RETRY_CAP, delay) * r.uniform(0.9, 1.1)


JOB_MARGIN = 5.0
"""Seconds of a ``notify`` job's time limit kept for its own database work: no channel's
bound goes past the rest (see :meth:`Notifier.bound`)."""

SMTP_TIMEOUT = 30.0
"""Seconds for each SMTP socket operation (connect, each command, the data)."""


async def run_bounded(
    proc: asyncio.subprocess.Process, data: bytes | None, timeout: float, what: str
) -> None:
    """Feed ``data`` to ``proc`` (started with ``start_new_session=True``) and wait for it,
    at most ``timeout`` seconds. Timed out or cancelled, the process and everything it
    started (its process group: a shell's children too) are killed and reaped before the
    error goes on: nothing is left running, no transport is left open. A non-zero exit
    raises :class:`RuntimeError` naming ``what``."""
    try:
        async with asyncio.timeout(timeout):
            _out, err = await proc.communicate(data)
    except TimeoutError:
        kill_group(proc)
        await proc.wait()
        raise TimeoutError(f"{what} still running after {timeout:g} s: killed") from None
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


def desktop_tool(platform: str = sys.platform) -> str:
    """The program that shows a desktop notification here: ``osascript`` on macOS,
    ``notify-send`` (libnotify) elsewhere."""
    return "osascript" if platform == "darwin" else "notify-send"


def desktop_argv(path: str, kind: str, text: str, platform: str = sys.platform) -> list[str]:
    """The command line that shows ``text`` with ``path`` (:func:`desktop_tool`, found). An
    argv list, never a shell: the text may quote a contact. osascript gets it as arguments of
    a fixed script (``on run argv``), never inside the script's source; notify-send after
    ``--`` (a text starting with ``-`` is no option), with ``<>&`` escaped (its body may be
    read as markup: a contact's ``<a href>`` is shown, not made a link)."""
    title = f"instaset: {kind}"
    if platform == "darwin":
        return [path, "-e", "on run argv",
                "-e", "display notification (item 2 of argv) with title (item 1 of argv)",
                "-e", "end run", title, text]
    return [path, "--app-name=instaset", "--", title, html.escape(text, quote=False)]


def notice_id(key: str, created_at: float) -> str:
    """The id a receiver drops repeats of a notice by (webhook ``id``, email ``Message-ID``):
    its key and when its job was queued, in ms. The same for every try and restart; not the
    key alone, which can come back for another notice (a booking's id is reused once its
    row was deleted by ``contacts forget``: ``booking:1:cancel`` of another contact)."""
    return f"{key}.{round(created_at * 1000)}"


def message_id(key: str, from_addr: str) -> str:
    """The ``Message-ID`` of the email of notification ``key``: the same for every delivery of
    it (a retry, a restart), so that a mail client or filter can drop a repeat; on the domain
    of ``from_addr``. A character the header does not allow in its left part is written
    ``=XX`` (its code in hex), so two keys never share an id."""
    local = re.sub(r"[^A-Za-z0-9_-]", lambda m: "".join(f"={b:02X}" for b in
                                                       m.group().encode()), key)
    domain = parseaddr(from_addr)[1].rpartition("@")[2].strip() or "instaset.invalid"
    return f"<instaset.{local or 'notice'}@{domain}>"


def email_for(smtp: SmtpConfig, kind: str, text: str, key: str | None = None,
              now: float | None = None) -> EmailMessage:
    """The email of one notification: ``[instaset] kind: first line`` as the subject; with
    ``key``, its :func:`message_id` and an ``X-Instaset-Notice-Id`` header. Lines up to
    RFC 5322's 998 characters: a long ``Message-ID`` is then never folded, so a receiver
    that compares the raw header still sees one id."""
    msg = EmailMessage(policy=email.policy.default.clone(max_line_length=998))
    first = " ".join(text.strip().splitlines()[:1]) if text.strip() else kind
    subject = f"[instaset] {kind}: {first}"
    msg["Subject"] = subject if len(subject) <= 120 else subject[:119] + "…"
    msg["From"] = smtp.from_addr
    msg["To"] = smtp.to_addr
    msg["Date"] = formatdate(now, usegmt=True)
    if key is not None:
        msg["Message-ID"] = message_id(key, smtp.from_addr)
        msg["X-Instaset-Notice-Id"] = key
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


T = TypeVar("T")


class MailThreads:
    """Runs blocking mail deliveries (``smtplib``) off the event loop: at most ``size`` at
    once, each in a daemon thread of its own.

    Never in the loop's default executor: the database's commits (``db.barrier``, which
    every send awaits) and aiohttp's DNS lookups run there, and a mail server that never
    answers holds a thread for the socket timeout (the caller's ``wait_for`` gives up, the
    thread goes on), so a few stuck notices stalled every reply. A thread that outlives its
    caller keeps its slot until smtplib's own timeout ends it, so a dead mail server holds
    ``size`` threads at most; the next delivery waits for a slot within its own bound. A
    daemon thread is not waited for at exit: a stopping daemon leaves a stuck delivery
    behind (its job stays in the queue and runs again after the restart)."""

    def __init__(self, size: int = NOTIFY_CONCURRENCY) -> None:
        self.slots = asyncio.Semaphore(size)

    async def run(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        await self.slots.acquire()
        done: asyncio.Future[T] = loop.create_future()

        def settle(result: T | None, error: BaseException | None) -> None:
            self.slots.release()
            if done.done():  # its caller gave up (a bound, a cancel): nobody to tell
                return
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(result)  # type: ignore[arg-type]

        def target() -> None:
            try:
                outcome: tuple[T | None, BaseException | None] = (fn(), None)
            except BaseException as exc:  # handed to the loop, raised there
                outcome = (None, exc)
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(settle, *outcome)

        try:
            threading.Thread(target=target, name="instaset-mail", daemon=True).start()
        except BaseException:
            self.slots.release()
            raise
        return await done


SECRET_ENV = ("INSTASET_APP_SECRET", "INSTASET_META_APP_SECRET", "INSTASET_VERIFY_TOKEN",
              "GEMINI_API_KEY", "GOOGLE_API_KEY")
"""Variables of the daemon's environment that hold its secrets (see config.ENV_OVERRIDES and
``AIConfig.api_key``): not passed to ``notify.command`` nor the desktop tool."""


def command_env(hidden: Collection[str] = (), environ: Mapping[str, str] | None = None
                ) -> dict[str, str]:
    """The environment of ``notify.command``: the daemon's (PATH, HOME, LANG, a desktop
    session's variables ...) without :data:`SECRET_ENV` and the names in ``hidden`` (the
    variable ``ai.api_key_env`` names). The command needs the text on stdin, not the app
    secret: a script that logs or forwards its environment must not leak it."""
    env = os.environ if environ is None else environ
    drop = {*SECRET_ENV, *(h for h in hidden if h)}
    return {k: v for k, v in env.items() if k not in drop}


def scrub_url(text: str, url: str) -> str:
    """``text`` (an error, a log line) with ``url`` shown as :func:`mask_url` shows it: the URL
    as written and as aiohttp/yarl prints it, then any of its path or query left alone."""
    forms = {url}
    with contextlib.suppress(ValueError, TypeError):
        parsed = yarl.URL(url)
        forms |= {str(parsed), parsed.human_repr()}
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, mask_url(url))
    parts = urlsplit(url)
    pieces = {parts.path, parts.query, parts.fragment, parts.password or ""}
    with contextlib.suppress(ValueError, TypeError):
        pieces |= {yarl.URL(url).raw_path, yarl.URL(url).raw_query_string}
    for piece in sorted(pieces, key=len, reverse=True):
        if len(piece.strip("/")) >= 2:
            text = text.replace(piece, "…")
    return text


def describe_redirect(url: str, location: str) -> str:
    """Where a redirect from ``url`` to ``location`` goes, without either one's credential:
    ``https://host/…`` and how the path compares (the same, with a trailing ``/`` ...)."""
    try:  # the Location comes from the webhook's server: it may not parse
        target = urljoin(url, location)
        a, b = urlsplit(url), urlsplit(target)
    except ValueError:
        return "(a URL)"
    if (a.path, a.query) == (b.path, b.query):
        how = "the same path"
    elif b.path == a.path + "/" and a.query == b.query:
        how = "the same path with a trailing /"
    else:
        how = "another path"
    return f"{mask_url(target)} ({how})"


class Notifier:
    """Runs the ``notify`` jobs. ``job_seconds`` is the worker's time limit for one job
    (``WorkerSettings.job_timeout``): the channels run side by side, and each one's own
    bound is cut to fit in it (less :data:`JOB_MARGIN`), so the worker never cuts a
    delivery off midway; a channel that runs out of time fails on its own, named."""

    def __init__(
        self, db: Database, config: NotifyConfig, *, clock: Callable[[], float] = time.time,
        job_seconds: float = JOB_SHARE_OF_LEASE * WorkerConfig().lease_seconds,
        hidden_env: Collection[str] = (),
    ) -> None:
        self.db = db
        self.config = config
        self.clock = clock
        self.job_seconds = job_seconds
        self.hidden_env = tuple(hidden_env)  # more secret variables (see command_env)
        self.mail = MailThreads()
        self.delivered: dict[str, set[str]] = {}  # key -> channels done (see handle)
        self.platform = sys.platform
        self.said_no_desktop = False  # the missing notify-send/osascript is logged once

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
        # The channels that already took this notification in an earlier try of this process
        # are not repeated (a channel down for hours would otherwise have the others say the
        # same thing every hour). After a restart all run again: at least once per channel.
        done = self.delivered.setdefault(key, set())
        channels = {name: c for name, c in self.channels(
            notice_id(key, job.created_at), p.get("kind"), text).items() if name not in done}
        results = await asyncio.gather(*(c() for c in channels.values()),
                                       return_exceptions=True)
        failed: list[tuple[str, Exception]] = []
        for name, result in zip(channels, results, strict=True):
            if isinstance(result, Exception):
                failed.append((name, result))
            elif isinstance(result, BaseException):  # cancelled: not a channel's failure
                raise result
            else:
                done.add(name)
        if failed:
            error = "; ".join(f"{name}: {type(exc).__name__}: {exc}" for name, exc in failed)
            if self.config.webhook_url:  # aiohttp's errors quote the URL: it may be a token
                error = scrub_url(error, self.config.webhook_url)
            if job.attempts >= job.max_attempts:
                self.delivered.pop(key, None)
                log.error("notification %s not delivered, given up after %d tries: %s",
                          key, job.attempts, error)
                raise RetryLater(0.0, error[:2000]) from failed[0][1]
            delay = notify_retry_delay(job.attempts)
            log.warning("notification %s not delivered (try %d/%d), next try in %.0f s: %s",
                        key, job.attempts, job.max_attempts, delay, error)
            raise RetryLater(delay, error[:2000]) from failed[0][1]
        self.delivered.pop(key, None)
        await history.mark_notification_delivered(self.db, key, self.clock())

    def channels(
        self, key: str, kind: object, text: str
    ) -> dict[str, Callable[[], Coroutine[Any, Any, None]]]:
        """The configured channels, by name, each a delivery to run once of notification
        ``key``."""
        out: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {}
        if self.config.command:
            out["command"] = lambda: self.run_command(text)
        if self.config.webhook_url:
            out["webhook"] = lambda: self.post_webhook(key, kind, text)
        if self.config.smtp is not None:
            out["smtp"] = lambda: self.send_mail(key, str(kind or "notify"), text)
        if self.config.desktop:
            out["desktop"] = lambda: self.show_desktop(str(kind or "notify"), text)
        return out

    async def show_desktop(self, kind: str, text: str) -> None:
        """A desktop notification. Without the tool (:func:`desktop_tool` not on PATH) the
        channel fails like one that is down: the notification is not marked delivered, it is
        retried (installing the tool is enough: it is looked up at each try) and ``doctor``
        reports it; the reason is logged once per daemon at WARNING, then with each try."""
        tool = desktop_tool(self.platform)
        path = shutil.which(tool)
        if path is None:
            if not self.said_no_desktop:
                self.said_no_desktop = True
                log.warning("notify.desktop is on but %s is not on the daemon's PATH: no desktop "
                            "notification is shown, and notifications stay undelivered until "
                            "it is installed (or set notify.desktop: false)", tool)
            raise RuntimeError(f"notify.desktop: {tool} not found on PATH")
        proc = await asyncio.create_subprocess_exec(
            *desktop_argv(path, kind, text, self.platform), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            start_new_session=True, env=command_env(self.hidden_env),
        )
        await run_bounded(proc, None, self.bound(DESKTOP_TIMEOUT), f"notify.desktop ({tool})")

    async def run_command(self, text: str) -> None:
        assert self.config.command
        proc = await asyncio.create_subprocess_shell(
            self.config.command, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            start_new_session=True, env=command_env(self.hidden_env),
        )
        await run_bounded(proc, text.encode(), self.bound(COMMAND_TIMEOUT), "notify.command")

    async def post_webhook(self, key: str, kind: object, text: str) -> None:
        """POST ``{"id": key, "kind", "text"}``, with ``key`` in the ``Idempotency-Key`` and
        ``X-Instaset-Notice-Id`` headers. A redirect is not followed but fails: aiohttp would
        turn the POST into a GET without the body (301, 302, 303), which the receiver answers
        200, and the notice would count as delivered though its text never arrived."""
        url = self.config.webhook_url
        assert url
        bound = self.bound(WEBHOOK_TIMEOUT)
        try:
            async with aiohttp.ClientSession() as session, session.post(
                url, json={"id": key, "kind": kind, "text": text},
                headers={"Idempotency-Key": key, "X-Instaset-Notice-Id": key},
                timeout=aiohttp.ClientTimeout(total=bound), allow_redirects=False,
            ) as resp:
                if 300 <= resp.status < 400:
                    where = resp.headers.get("Location")
                    to = describe_redirect(url, where) if where else "no Location given"
                    raise RuntimeError(
                        f"notify.webhook_url answered HTTP {resp.status}, a redirect to {to}; "
                        "notices do not follow redirects (the POST would lose its body): put "
                        "the final URL in notify.webhook_url")
                if resp.status >= 300:
                    raise RuntimeError(f"notify.webhook_url answered HTTP {resp.status}")
        except TimeoutError:
            raise TimeoutError(f"notify.webhook_url did not answer within {bound:g} s") from None

    async def send_mail(self, key: str, kind: str, text: str) -> None:
        smtp = self.config.smtp
        assert smtp is not None
        msg = email_for(smtp, kind, text, key, self.clock())
        # The socket timeout bounds each SMTP step; the whole is bounded too (a server that
        # trickles), at four steps' worth. The bound includes waiting for a mail thread.
        total = self.bound(4 * SMTP_TIMEOUT)
        try:
            await asyncio.wait_for(
                self.mail.run(lambda: send_email(smtp, msg, total / 4)), timeout=total)
        except TimeoutError as exc:
            raise TimeoutError(
                f"notify.smtp: no answer within {total / 4:g} s, or not done in {total:g} s"
            ) from exc
