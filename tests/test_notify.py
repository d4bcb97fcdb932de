"""Notifications: a local HTTP receiver, a local SMTP server, the shell command, and a job
that reruns after a failure without recording the notification twice."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import gc
import os
import signal
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

import instaset.notify as nmod
from instaset.config import Config, NotifyConfig, SmtpConfig
from instaset.daemon import runtime, worker_settings
from instaset.notify import Notifier
from instaset.queue import RetryLater
from instaset.store.db import Database, open_database
from instaset.store.jobs import Job

NOW = 1_800_000_000.0
TEXT = "@alice is a qualified lead (score 60)\nShe asked for the price twice."


def job(key: str = "notify:lead:alice", text: str = TEXT, attempts: int = 1) -> Job:
    return Job(id=1, kind="notify", key=key,
               payload={"key": key, "kind": "qualified_lead", "text": text,
                        "account_id": None, "contact_id": None},
               attempts=attempts, max_attempts=5, run_at=NOW, created_at=NOW, worker=None)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_database(tmp_path / "notify.db", synchronous="NORMAL")
    try:
        yield database
    finally:
        await database.close()


async def records(db: Database) -> list[tuple[str, str, float | None]]:
    rows = await db.fetchall("SELECT key, text, delivered_at FROM notifications ORDER BY id")
    return [(r["key"], r["text"], r["delivered_at"]) for r in rows]


# -- a local HTTP receiver --------------------------------------------------------------------
@dataclass
class Receiver:
    statuses: list[int]
    bodies: list[Any] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    rec = Receiver(statuses=[])
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    async with TestServer(app, host="127.0.0.1") as server:
        yield rec, str(server.make_url("/hook"))


async def test_webhook_gets_json_and_a_rerun_records_once(
    db: Database, receiver: tuple[Receiver, str]
) -> None:
    rec, url = receiver
    rec.statuses = [500]  # the first delivery fails: the job must retry
    notifier = Notifier(db, NotifyConfig(webhook_url=url), clock=lambda: NOW)
    with pytest.raises(RetryLater, match="HTTP 500"):
        await notifier.handle(job())
    assert await records(db) == [("notify:lead:alice", TEXT, None)]
    await notifier.handle(job(attempts=2))
    ident = f"notify:lead:alice.{round(NOW * 1000)}"  # the key and when its job was queued
    assert rec.bodies == [{"id": ident, "kind": "qualified_lead", "text": TEXT}] * 2
    assert await records(db) == [("notify:lead:alice", TEXT, NOW)]


# -- a local SMTP server ----------------------------------------------------------------------
@dataclass
class Mail:
    mail_from: str
    rcpt_to: list[str]
    data: bytes


@dataclass
class SmtpSink:
    """Just enough SMTP (RFC 5321) for smtplib: EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT.
    ``refuse_rcpt`` answers 550 to every RCPT (a mail server that rejects the recipient)."""

    refuse_rcpt: bool = False
    mails: list[Mail] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def say(line: str) -> None:
            writer.write(line.encode() + b"\r\n")

        say("220 sink.test ESMTP ready")
        mail_from, rcpts = "", list[str]()
        try:
            while line := await reader.readline():
                cmd = line.decode().rstrip("\r\n")
                verb = cmd.split(" ", 1)[0].upper()
                self.commands.append(verb)
                if verb == "EHLO":
                    say("250-sink.test")
                    say("250 8BITMIME")
                elif verb in ("HELO", "RSET", "NOOP"):
                    if verb == "RSET":
                        mail_from, rcpts = "", []
                    say("250 OK")
                elif verb == "MAIL":
                    mail_from = cmd.split(":", 1)[1].split()[0].strip("<>")
                    say("250 OK")
                elif verb == "RCPT":
                    if self.refuse_rcpt:
                        say("550 no such user")
                    else:
                        rcpts.append(cmd.split(":", 1)[1].strip().strip("<>"))
                        say("250 OK")
                elif verb == "DATA":
                    say("354 end with <CRLF>.<CRLF>")
                    await writer.drain()
                    lines: list[bytes] = []
                    while (data_line := await reader.readline()) != b".\r\n":
                        lines.append(data_line[1:] if data_line.startswith(b".") else data_line)
                    self.mails.append(Mail(mail_from, rcpts, b"".join(lines)))
                    say("250 queued")
                elif verb == "QUIT":
                    say("221 bye")
                    await writer.drain()
                    break
                else:
                    say("502 not implemented")
                await writer.drain()
        finally:
            writer.close()
            await writer.wait_closed()


@pytest.fixture
async def sink() -> AsyncIterator[tuple[SmtpSink, int]]:
    smtp = SmtpSink()
    server = await asyncio.start_server(smtp.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield smtp, port


def smtp_config(port: int) -> SmtpConfig:
    return SmtpConfig(host="127.0.0.1", port=port, starttls=False,
                      from_addr="instaset@example.com", to_addr="creator@example.com")


async def test_email_over_smtp(db: Database, sink: tuple[SmtpSink, int]) -> None:
    smtp, port = sink
    notifier = Notifier(db, NotifyConfig(smtp=smtp_config(port)), clock=lambda: NOW)
    await notifier.handle(job())
    assert len(smtp.mails) == 1
    mail = smtp.mails[0]
    assert mail.mail_from == "instaset@example.com"
    assert mail.rcpt_to == ["creator@example.com"]
    msg = email.message_from_bytes(mail.data, policy=email.policy.default)
    assert msg["Subject"] == "[instaset] qualified_lead: @alice is a qualified lead (score 60)"
    assert msg["To"] == "creator@example.com"
    assert msg["From"] == "instaset@example.com"
    body = msg.get_body()
    assert body is not None and body.get_content().replace("\r\n", "\n").strip() == TEXT
    assert "STARTTLS" not in smtp.commands and smtp.commands[-1] == "QUIT"
    assert await records(db) == [("notify:lead:alice", TEXT, NOW)]


async def test_refused_recipient_raises_and_the_rerun_delivers(
    db: Database, sink: tuple[SmtpSink, int]
) -> None:
    smtp, port = sink
    smtp.refuse_rcpt = True
    notifier = Notifier(db, NotifyConfig(smtp=smtp_config(port)), clock=lambda: NOW)
    with pytest.raises(RetryLater, match="no such user"):
        await notifier.handle(job())
    assert smtp.mails == []
    assert await records(db) == [("notify:lead:alice", TEXT, None)]
    smtp.refuse_rcpt = False
    await notifier.handle(job(attempts=2))
    assert [m.rcpt_to for m in smtp.mails] == [["creator@example.com"]]
    assert await records(db) == [("notify:lead:alice", TEXT, NOW)]


async def test_unreachable_smtp_server_raises(db: Database) -> None:
    # A port nobody listens on (bound then closed): the job must fail, to be retried.
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    notifier = Notifier(db, NotifyConfig(smtp=smtp_config(port)), clock=lambda: NOW)
    with pytest.raises(RetryLater) as err:
        await notifier.handle(job())
    assert isinstance(err.value.__cause__, OSError)
    assert await records(db) == [("notify:lead:alice", TEXT, None)]


def test_smtp_password_is_never_serialised() -> None:
    config = NotifyConfig(smtp=SmtpConfig(
        host="smtp.example.com", username="me", password=SecretStr("hunter2-app-pw"),
        from_addr="a@example.com", to_addr="b@example.com"))
    assert config.smtp is not None and config.smtp.port == 587 and config.smtp.starttls
    assert "hunter2-app-pw" not in config.model_dump_json()
    assert "hunter2-app-pw" not in repr(config)


# -- the shell command ------------------------------------------------------------------------
async def test_command_gets_the_text_on_stdin(db: Database, tmp_path: Path) -> None:
    out = tmp_path / "note.txt"
    notifier = Notifier(db, NotifyConfig(command=f"cat > '{out}'"), clock=lambda: NOW)
    await notifier.handle(job())
    assert out.read_text("utf-8") == TEXT
    # A rerun (the job retried after a crash) delivers again but records once.
    out.unlink()
    await notifier.handle(job(attempts=2))
    assert out.read_text("utf-8") == TEXT
    assert await records(db) == [("notify:lead:alice", TEXT, NOW)]


async def test_failing_command_raises(db: Database) -> None:
    notifier = Notifier(db, NotifyConfig(command="echo nope >&2; exit 3"), clock=lambda: NOW)
    with pytest.raises(RetryLater, match="exited 3"):
        await notifier.handle(job())
    assert await records(db) == [("notify:lead:alice", TEXT, None)]


async def test_the_log_names_the_notification_not_the_contacts_words(
    db: Database, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="instaset.notify")
    quoted = '@alice needs you (free-guide): "my email is alice@private.example"'
    note = Job(id=2, kind="notify", key="notify:handoff:alice",
               payload={"key": "notify:handoff:alice", "kind": "handoff", "text": quoted,
                        "account_id": "17841400000000001", "contact_id": "5260000000000042"},
               attempts=1, max_attempts=5, run_at=NOW, created_at=NOW, worker=None)
    await Notifier(db, NotifyConfig(), clock=lambda: NOW).handle(note)
    assert [r.getMessage() for r in caplog.records] == [
        "notification (handoff) for contact 5260000000000042: see instaset inbox"]
    assert await records(db) == [("notify:handoff:alice", quoted, NOW)]


# -- a command that hangs ---------------------------------------------------------------------
def hanging_command(tmp_path: Path) -> str:
    """A command that never ends and has a child of its own (a shell that forked): the
    ``hang-child`` in a process's command line marks both as this test's."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    child = bindir / "hang-child"
    child.write_text("#!/bin/sh\nsleep 20\n")
    child.chmod(0o755)
    return f"'{child}' & wait"


def running(marker: str) -> list[int]:
    """Pids of live (not zombie) processes whose command line contains ``marker``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            pids.append(int(proc.name))
    return pids


async def none_left(marker: str) -> list[int]:
    """Waits (a little: SIGKILL is delivered asynchronously) for no process to match; the
    pids still there, killed so that a failing run leaves nothing behind."""
    for _ in range(100):
        left = running(marker)
        if not left:
            return []
        await asyncio.sleep(0.05)
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return left


class Spawned:
    """Wraps ``asyncio.create_subprocess_*`` to keep the processes the notifier starts."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.procs: list[asyncio.subprocess.Process] = []
        for name in ("create_subprocess_shell", "create_subprocess_exec"):
            real = getattr(asyncio, name)

            async def spawn(*args: Any, _real: Any = real, **kwargs: Any) -> Any:
                proc = await _real(*args, **kwargs)
                self.procs.append(proc)
                return proc

            monkeypatch.setattr(nmod.asyncio, name, spawn)


needs_proc = pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")


@needs_proc
async def test_a_hanging_command_is_killed_on_timeout(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nmod, "COMMAND_TIMEOUT", 0.3)
    spawned = Spawned(monkeypatch)
    notifier = Notifier(db, NotifyConfig(command=hanging_command(tmp_path)), clock=lambda: NOW)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for attempt in (1, 2):  # each try of the job: none leaves a process behind
            with pytest.raises(RetryLater, match=r"command: TimeoutError: .* killed"):
                await notifier.handle(job(attempts=attempt))
            assert await none_left(str(tmp_path)) == []
        # Reaped (a return code): -SIGKILL, or 255 when asyncio's threaded child watcher
        # lost the race to waitpid ("Unknown child process pid ..."), one run in a few
        # under load. That the processes are gone is checked above (none_left).
        codes = [p.returncode for p in spawned.procs]
        assert len(codes) == 2 and all(c in (-signal.SIGKILL, 255) for c in codes), codes
        await asyncio.sleep(0)
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert await records(db) == [("notify:lead:alice", TEXT, None)]


@needs_proc
async def test_a_cancelled_notification_kills_its_command(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker cancels the job (shutdown, or its own time limit): the command goes with it.
    spawned = Spawned(monkeypatch)
    notifier = Notifier(db, NotifyConfig(command=hanging_command(tmp_path)), clock=lambda: NOW)
    task = asyncio.create_task(notifier.handle(job()))
    for _ in range(200):  # until the child runs
        if running("hang-child"):
            break
        await asyncio.sleep(0.05)
    assert running(str(tmp_path))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await none_left(str(tmp_path)) == []
    assert [p.returncode for p in spawned.procs] == [-signal.SIGKILL]


# -- every channel's bound fits in the worker's job time limit --------------------------------
def test_each_channel_bound_fits_in_the_shortest_job() -> None:
    # The shortest lease allowed (30 s) leaves a job 22.5 s: SMTP's 4 x 30 s, the command's
    # 30 s and the webhook's 15 s must all end before the worker would cut the job off.
    job_seconds = worker_settings(Config.model_validate(
        {"worker": {"lease_seconds": 30}})).job_timeout
    notifier = Notifier(None, NotifyConfig(), job_seconds=job_seconds)  # type: ignore[arg-type]
    for own in (nmod.COMMAND_TIMEOUT, nmod.WEBHOOK_TIMEOUT, 4 * nmod.SMTP_TIMEOUT,
                nmod.DESKTOP_TIMEOUT):
        assert notifier.bound(own) <= job_seconds - nmod.JOB_MARGIN
    default = Notifier(None, NotifyConfig())  # type: ignore[arg-type]
    assert default.job_seconds == worker_settings(Config()).job_timeout


async def test_the_daemon_gives_the_notifier_its_job_time_limit(tmp_path: Path) -> None:
    config = Config.model_validate({
        "secrets": {"backend": "memory"}, "worker": {"lease_seconds": 40},
        "storage": {"path": str(tmp_path / "d.db"), "synchronous": "NORMAL"}})
    async with runtime(config) as rt:
        notifier = getattr(rt.handlers["notify"], "__self__", None)
        assert isinstance(notifier, Notifier)
        assert notifier.job_seconds == rt.worker.settings.job_timeout == 30.0


@needs_proc
async def test_channels_that_hang_each_fail_on_their_own_bound(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A command that never ends, a webhook that never answers, a mail server that never
    # greets: with a job limit shortened to 1 s (0.5 s kept for the job), every channel
    # gives up on its own bound, together, and says which it was; the command is killed.
    monkeypatch.setattr(nmod, "JOB_MARGIN", 0.5)
    stalled: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stalled.append(writer)
        await reader.read()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}/hook"
    config = NotifyConfig(command=hanging_command(tmp_path), webhook_url=url,
                          smtp=smtp_config(port))
    notifier = Notifier(db, config, clock=lambda: NOW, job_seconds=1.0)
    try:
        with pytest.raises(RetryLater) as err:
            await notifier.handle(job())
    finally:
        for w in stalled:
            w.close()
        server.close()
        await server.wait_closed()
    assert [part.split(":")[0] for part in err.value.reason.split("; ")] == [
        "command", "webhook", "smtp"]
    command, webhook, smtp = err.value.reason.split("; ")
    assert " TimeoutError: " in command and " TimeoutError: " in webhook
    assert "timed out" in smtp or " TimeoutError: " in smtp  # smtplib's own words, or ours
    assert await none_left(str(tmp_path)) == []
    assert await records(db) == [("notify:lead:alice", TEXT, None)]


# -- retries ----------------------------------------------------------------------------------
async def test_a_retry_repeats_only_the_channels_that_failed(
    db: Database, receiver: tuple[Receiver, str], tmp_path: Path
) -> None:
    # The webhook is down for two tries; the command took the notification the first time and
    # is not run again (a channel down for hours would have it repeat every hour).
    rec, url = receiver
    rec.statuses = [503, 503]
    out = tmp_path / "note.txt"
    notifier = Notifier(db, NotifyConfig(command=f"cat >> '{out}'", webhook_url=url),
                        clock=lambda: NOW)
    for attempt in (1, 2):
        with pytest.raises(RetryLater, match=r"^webhook: .*HTTP 503$") as err:
            await notifier.handle(job(attempts=attempt))
        assert err.value.delay > 0 and err.value.count_attempt
    await notifier.handle(job(attempts=3))
    assert out.read_text("utf-8") == TEXT
    assert len(rec.bodies) == 3
    assert await records(db) == [("notify:lead:alice", TEXT, NOW)]
    # A new daemon (nothing remembered) would run every channel again: at least once each.
    assert notifier.delivered == {}


async def test_the_last_try_gives_up_and_says_so(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="instaset.notify")
    notifier = Notifier(db, NotifyConfig(command="exit 1"), clock=lambda: NOW)
    with pytest.raises(RetryLater, match="exited 1"):
        await notifier.handle(job(attempts=5))  # max_attempts=5: the worker dead-letters it
    assert "given up after 5 tries" in caplog.text
    assert notifier.delivered == {}


# -- desktop notifications --------------------------------------------------------------------
UNTRUSTED = "@eve <a href='https://x.example'>win</a> & $(touch pwned) `touch pwned2`\n-rf"


def fake_tool(bindir: Path, name: str, body: str) -> Path:
    """A ``name`` script first on PATH; ``body`` runs after it logged its arguments
    (NUL-separated) to ``<name>.args`` next to ``bindir``."""
    bindir.mkdir(exist_ok=True)
    log = bindir.parent / f"{name}.args"
    tool = bindir / name
    tool.write_text(f"#!/bin/sh\nprintf '%s\\0' \"$@\" > '{log}'\n{body}\n")
    tool.chmod(0o755)
    return log


def logged_args(log: Path) -> list[str]:
    return log.read_text("utf-8").split("\0")[:-1]


@pytest.mark.parametrize("platform", ["linux", "darwin"])
async def test_desktop_notification_passes_the_text_as_one_argument(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, platform: str
) -> None:
    bindir = tmp_path / "bin"
    logs = {name: fake_tool(bindir, name, "exit 0") for name in ("notify-send", "osascript")}
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    notifier = Notifier(db, NotifyConfig(desktop=True), clock=lambda: NOW)
    notifier.platform = platform
    await notifier.handle(job(text=UNTRUSTED))
    if platform == "darwin":
        assert not logs["notify-send"].exists()
        assert logged_args(logs["osascript"]) == [
            "-e", "on run argv",
            "-e", "display notification (item 2 of argv) with title (item 1 of argv)",
            "-e", "end run", "instaset: qualified_lead", UNTRUSTED]
    else:
        assert not logs["osascript"].exists()
        assert logged_args(logs["notify-send"]) == [
            "--app-name=instaset", "--", "instaset: qualified_lead",
            "@eve &lt;a href='https://x.example'&gt;win&lt;/a&gt; &amp; $(touch pwned) "
            "`touch pwned2`\n-rf"]
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()
    assert await records(db) == [("notify:lead:alice", UNTRUSTED, NOW)]


async def test_without_a_desktop_tool_nothing_is_claimed_delivered(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    caplog.set_level("WARNING", logger="instaset.notify")
    notifier = Notifier(db, NotifyConfig(desktop=True), clock=lambda: NOW)
    for attempt in (1, 2):
        with pytest.raises(RetryLater, match=r"^desktop: .*notify-send not found on PATH"):
            await notifier.handle(job(attempts=attempt))
    assert await records(db) == [("notify:lead:alice", TEXT, None)]
    assert sum("is not on the daemon's PATH" in r.getMessage() for r in caplog.records) == 1
    # Installed later: the next try shows it and the notification is delivered.
    fake_tool(tmp_path / "empty", "notify-send", "exit 0")
    await notifier.handle(job(attempts=3))
    assert await records(db) == [("notify:lead:alice", TEXT, NOW)]


async def test_a_failing_desktop_tool_is_retried(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # notify-send with no session bus to talk to (a headless service) exits non-zero.
    fake_tool(tmp_path / "bin", "notify-send", "echo 'Cannot autolaunch D-Bus' >&2; exit 1")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    notifier = Notifier(db, NotifyConfig(desktop=True), clock=lambda: NOW)
    with pytest.raises(RetryLater, match=r"notify-send.* exited 1: .*D-Bus"):
        await notifier.handle(job())
    assert await records(db) == [("notify:lead:alice", TEXT, None)]


@needs_proc
async def test_a_hanging_desktop_tool_is_killed(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nmod, "DESKTOP_TIMEOUT", 0.3)
    fake_tool(tmp_path / "bin", "notify-send", hanging_command(tmp_path))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    notifier = Notifier(db, NotifyConfig(desktop=True), clock=lambda: NOW)
    with pytest.raises(RetryLater, match=r"desktop: TimeoutError: .* killed"):
        await notifier.handle(job())
    assert await none_left(str(tmp_path)) == []
