"""How notices travel, and what they must not hold up or give away: real receivers on
127.0.0.1 (an aiohttp app, a small SMTP server), the real daemon runtime against the sandbox,
and ``instaset serve`` itself for the stop. Waits are bounded hang guards; what is asserted
is what happened (a reply sent while notices were stuck), never how long it took."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from instaset.config import Config, NotifyConfig, SmtpConfig, config_to_json
from instaset.daemon import runtime
from instaset.notify import NOTIFY_CONCURRENCY, Notifier, notify_job
from instaset.queue import RetryLater
from instaset.store import jobs as jobstore
from instaset.store.db import Database, open_database
from instaset.store.jobs import Job, NewJob
from tests.sending_harness import Harness, open_harness

NOW = 1_800_000_000.0
KEY = "handoff:17841400000000001:5260000000000042:1"
TEXT = "@alice needs you (free-guide)"
TOKEN = "bot123456:AAHsecretTOKEN"
GUIDE = [{"name": "guide", "trigger": {"dm": {"keywords": ["guide"]}},
          "actions": [{"reply": "here is the guide"}]}]
REPO = Path(__file__).resolve().parents[1]


def job(key: str = KEY, attempts: int = 1) -> Job:
    return Job(id=1, kind="notify", key=f"notify:{key}",
               payload={"key": key, "kind": "handoff", "text": TEXT, "account_id": None,
                        "contact_id": None},
               attempts=attempts, max_attempts=5, run_at=NOW, created_at=NOW, worker=None)


async def until(check: Callable[[], Awaitable[bool] | bool], what: str,
                guard: float = 60.0) -> None:
    """Wait for ``check`` (a hang guard of ``guard`` seconds, not a threshold)."""
    for _ in range(int(guard / 0.02)):
        got = check()
        if await got if not isinstance(got, bool) else got:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


# -- a mail server that answers, or holds every connection ------------------------------------
@dataclass
class MailServer:
    """Just enough SMTP for smtplib. ``stuck``: every new connection is greeted with
    ``220-`` continuation lines, one every 0.2 s, forever: smtplib keeps reading (its socket
    timeout never fires), like a server that trickles; only closing it ends the client."""

    stuck: bool = False
    mails: list[bytes] = field(default_factory=list)
    opened: int = 0
    ended: int = 0  # connections that ended while stuck (the client gave up or went away)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.opened += 1
        self.writers.append(writer)
        try:
            if self.stuck:
                await self.trickle(reader, writer)
            else:
                await self.converse(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def trickle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        eof = asyncio.ensure_future(reader.read())
        try:
            while not eof.done() and not writer.is_closing():
                writer.write(b"220-still waking up\r\n")
                await writer.drain()
                await asyncio.wait({eof}, timeout=0.2)
        finally:
            eof.cancel()
            self.ended += 1

    async def converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def say(line: str) -> None:
            writer.write(line.encode() + b"\r\n")

        say("220 mail.test ESMTP")
        while line := await reader.readline():
            verb = line.decode().split(" ", 1)[0].strip().upper()
            if verb == "EHLO":
                say("250 mail.test")
            elif verb == "DATA":
                say("354 go on")
                await writer.drain()
                lines: list[bytes] = []
                while (data := await reader.readline()) not in (b".\r\n", b""):
                    lines.append(data[1:] if data.startswith(b".") else data)
                self.mails.append(b"".join(lines))
                say("250 queued")
            elif verb == "QUIT":
                say("221 bye")
                await writer.drain()
                return
            else:
                say("250 OK")
            await writer.drain()

    def release(self) -> None:
        for w in self.writers:
            w.close()


@contextlib.asynccontextmanager
async def mail_server(stuck: bool = False) -> AsyncIterator[tuple[MailServer, int]]:
    srv = MailServer(stuck=stuck)
    server = await asyncio.start_server(srv.handle, "127.0.0.1", 0)
    try:
        yield srv, server.sockets[0].getsockname()[1]
    finally:
        srv.release()  # the mail threads still reading get EOF and end
        server.close()
        await server.wait_closed()


def smtp(port: int) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": port, "starttls": False,
            "from_addr": "instaset@notices.example", "to_addr": "me@example.com"}


# -- a webhook receiver -----------------------------------------------------------------------
@dataclass
class Hook:
    """Records every request; ``hang``: POST /hook never answers."""

    hang: bool = False
    seen: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, request.path, dict(request.headers),
                          await request.read()))
        if request.path == "/moved":
            raise web.HTTPMovedPermanently("/hook")
        if request.path.startswith("/r/"):
            raise web.HTTPFound(request.path_qs)  # a redirect loop, as in the audit
        if self.hang:
            await asyncio.Event().wait()
        return web.Response(text="ok")


@contextlib.asynccontextmanager
async def hook_server(hang: bool = False) -> AsyncIterator[tuple[Hook, str]]:
    hook = Hook(hang=hang)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hook.handle)
    async with TestServer(app, host="127.0.0.1") as server:
        yield hook, str(server.make_url("/"))


async def run_worker(h: Harness) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    return stop, asyncio.create_task(h.rt.worker.run(stop))


async def stop_worker(stop: asyncio.Event, task: asyncio.Task[None]) -> None:
    stop.set()
    await asyncio.wait_for(task, 60)


# -- 1. a stuck mail server holds up no reply -------------------------------------------------
async def test_stuck_mail_deliveries_do_not_hold_up_a_reply(tmp_path: Path) -> None:
    # More stuck deliveries than the loop's default thread pool has threads (min(32, cpus
    # + 4)): when mail ran there, the pool was full and the reply's fsync (db.barrier under
    # synchronous FULL, the default) waited behind them for as long as the server held them.
    stuck = min(32, (os.cpu_count() or 1) + 4) + 2
    async with mail_server(stuck=True) as (mail, port), open_harness(
            tmp_path, workflows=GUIDE, extra={"notify": {"smtp": smtp(port)}},
            synchronous="FULL") as h:
        notifier = h.rt.handlers["notify"].__self__  # type: ignore[attr-defined]
        assert isinstance(notifier, Notifier)
        notices = [asyncio.create_task(notifier.handle(job(f"n{i}"))) for i in range(stuck)]
        await until(lambda: mail.opened >= NOTIFY_CONCURRENCY, "the mail server held")
        stop, worker = await run_worker(h)
        try:
            await h.dm("5260000000000099", "guide")
            await until(lambda: bool(h.graph_sends("5260000000000099")), "the reply sent")
            # Sent while every notice was still stuck: none finished, none connection ended.
            assert not any(t.done() for t in notices)
            assert mail.ended == 0 and mail.mails == []
            # And the mail deliveries stayed bounded: a few threads, not one per notice.
            assert mail.opened == NOTIFY_CONCURRENCY
        finally:
            for t in notices:
                t.cancel()
            await asyncio.gather(*notices, return_exceptions=True)
            await stop_worker(stop, worker)


# -- 2. notify jobs get a few of the worker's slots, not all ----------------------------------
async def test_notices_on_a_hanging_webhook_leave_the_worker_free_for_replies(
    tmp_path: Path
) -> None:
    async with hook_server(hang=True) as (hook, base), open_harness(
            tmp_path, workflows=GUIDE, extra={"notify": {"webhook_url": base + "hook"}},
            worker={"concurrency": 8}) as h:
        now = h.clock()
        await jobstore.enqueue(h.rt.db, [notify_job(f"n{i}", None, None, "handoff", TEXT, now)
                                         for i in range(20)], now)
        stop, worker = await run_worker(h)
        try:
            await until(lambda: len(hook.seen) >= NOTIFY_CONCURRENCY, "notices posted")
            await h.dm("5260000000000099", "guide")
            await until(lambda: bool(h.graph_sends("5260000000000099")), "the reply sent")
            # The reply went while the notices were stuck on the webhook: only the capped
            # few were ever started, and they are still running.
            assert len(hook.seen) == NOTIFY_CONCURRENCY
            rows = await h.rt.db.fetchall(
                "SELECT state, count(*) FROM jobs WHERE kind = 'notify' GROUP BY state")
            assert dict((r[0], r[1]) for r in rows) == {
                "running": NOTIFY_CONCURRENCY, "ready": 20 - NOTIFY_CONCURRENCY}
        finally:
            await stop_worker(stop, worker)


async def test_a_capped_kind_gets_the_slots_the_others_leave(db: Database) -> None:
    await jobstore.enqueue(db, [NewJob("notify", f"notify:{i}", {}, run_at=i) for i in range(5)]
                           + [NewJob("send", f"send:{i}", {}, run_at=10 + i) for i in range(3)],
                           now=0)
    got = await jobstore.claim(db, "w", 100.0, 60.0, 6, capped={"notify": 2})
    assert sorted(j.key for j in got) == ["notify:0", "notify:1", "send:0", "send:1", "send:2"]
    # None of it now: the cap is used up (the worker counts what it runs).
    assert await jobstore.claim(db, "w", 100.0, 60.0, 6, capped={"notify": 0}) == []
    assert len(await jobstore.claim(db, "w", 100.0, 60.0, 6)) == 3


# -- 3. a redirect is a failure, not a silent GET ---------------------------------------------
@pytest.mark.parametrize("path", ["moved", "r/x"])
async def test_a_redirecting_webhook_fails_and_says_where_to(db: Database, path: str) -> None:
    async with hook_server() as (hook, base):
        notifier = Notifier(db, NotifyConfig(webhook_url=base + path), clock=lambda: NOW)
        with pytest.raises(RetryLater) as err:
            await notifier.handle(job())
    assert [(m, p) for m, p, _h, _b in hook.seen] == [("POST", "/" + path)]  # nothing followed
    host = base.rstrip("/")
    where = "another path" if path == "moved" else "the same path"
    assert f"a redirect to {host}/… ({where})" in err.value.reason
    assert "put the final URL in notify.webhook_url" in err.value.reason
    row = await db.fetchone("SELECT delivered_at FROM notifications")
    assert row is not None and row["delivered_at"] is None


# -- 4. a webhook URL holding a token is never shown whole ------------------------------------
async def test_a_webhook_token_stays_out_of_errors_logs_and_config_show(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    # aiohttp's errors may quote the URL whole (its InvalidUrlClientError does). The config
    # refuses this one (the port), so it is put in as is: what is tested is the notifier's
    # guard for any such error.
    caplog.set_level("DEBUG")
    bad = f"http://127.0.0.1:99999/{TOKEN}/sendMessage?chat_id=42"
    notifier = Notifier(db, NotifyConfig.model_construct(webhook_url=bad), clock=lambda: NOW)
    with pytest.raises(RetryLater) as err:
        await notifier.handle(job())
    assert err.value.reason.startswith("webhook: InvalidUrlClientError")
    assert "http://127.0.0.1:99999/…" in err.value.reason  # which URL, not its secret part
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("instaset"))
    assert "not delivered" in ours and TOKEN not in err.value.reason + ours
    url = f"https://api.telegram.org/{TOKEN}/sendMessage?chat_id=42"
    shown = config_to_json(Config.model_validate({"notify": {"webhook_url": url}}))
    assert shown["notify"]["webhook_url"] == "https://api.telegram.org/…"


async def test_a_token_in_the_url_stays_out_of_the_jobs_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A redirect loop to itself, the token in the path: the error says where it points
    # (the same path) without the path; the stored error and the log hold no token.
    caplog.set_level("DEBUG")
    async with hook_server() as (hook, base), open_harness(
            tmp_path, extra={"notify": {"webhook_url": f"{base}r/{TOKEN}/x?chat_id=42"}}) as h:
        now = h.clock()
        await jobstore.enqueue(h.rt.db, [notify_job(KEY, None, None, "handoff", TEXT, now)], now)
        await h.rt.worker.run_burst()
        error = await jobstore.last_error(h.rt.db, f"notify:{KEY}")
    assert len(hook.seen) == 1
    assert error is not None and "HTTP 302, a redirect to" in error
    assert "/… (the same path)" in error
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("instaset"))
    assert f"notification {KEY} not delivered" in ours  # the daemon did log the failure
    assert "AAHsecret" not in error + ours and "chat_id" not in error


# -- 5. a stable id for every notice ----------------------------------------------------------
async def test_every_delivery_of_a_notice_carries_the_same_id(db: Database) -> None:
    async with hook_server() as (hook, base), mail_server() as (mail, port):
        config = NotifyConfig(webhook_url=base + "hook", smtp=SmtpConfig(**smtp(port)))
        for _restart in range(2):  # a new daemon repeats every channel: the ids say so
            await Notifier(db, config, clock=lambda: NOW).handle(job())
    assert len(hook.seen) == 2 and len(mail.mails) == 2
    ident = f"{KEY}.{round(NOW * 1000)}"  # the key and when its job was queued
    for _m, _p, headers, body in hook.seen:
        assert yaml.safe_load(body) == {"id": ident, "kind": "handoff", "text": TEXT}
        assert headers["Idempotency-Key"] == headers["X-Instaset-Notice-Id"] == ident
    ids = set()
    for raw in mail.mails:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        ids.add(msg["Message-ID"])
        assert msg["X-Instaset-Notice-Id"] == ident and msg["Date"]
    assert ids == {"<instaset.handoff=3A17841400000000001=3A5260000000000042=3A1"
                   f"=2E{round(NOW * 1000)}@notices.example>"}


async def test_a_notice_whose_key_comes_back_gets_another_id(db: Database) -> None:
    """Review E (s17): a booking's id is reused after `contacts forget`, so another contact's
    `booking:1:cancel` carried the id of an earlier notice, and a receiver dropping repeats
    (a mail client, by Message-ID) dropped it."""
    async with hook_server() as (hook, base):
        config = NotifyConfig(webhook_url=base + "hook")
        first = job()
        again = replace(first, created_at=NOW + 86400.0)  # the same key, queued a day later
        for j in (first, again):
            await Notifier(db, config, clock=lambda: NOW).handle(j)
    ids = [yaml.safe_load(body)["id"] for _m, _p, _h, body in hook.seen]
    assert len(ids) == 2 and ids[0] != ids[1]


# -- 6. the command does not get the daemon's secrets -----------------------------------------
async def test_the_command_runs_without_the_daemons_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {"INSTASET_APP_SECRET": "appsecretXYZ", "GEMINI_API_KEY": "AIzaFAKE1",
               "GOOGLE_API_KEY": "AIzaFAKE2", "MY_MODEL_KEY": "AIzaFAKE3"}
    for name, value in {**secrets, "LANG": "C.UTF-8", "HOME": str(tmp_path)}.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "env.txt"
    config = Config.model_validate({
        "secrets": {"backend": "memory"}, "ai": {"api_key_env": "MY_MODEL_KEY"},
        "notify": {"command": f"env > '{out}'"},
        "storage": {"path": str(tmp_path / "d.db"), "synchronous": "NORMAL"}})
    async with runtime(config) as rt:
        await rt.handlers["notify"](job())
    env = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    assert not set(secrets) & set(env)
    assert not any(v in out.read_text() for v in secrets.values())
    assert env["PATH"] == os.environ["PATH"] and env["LANG"] == "C.UTF-8"
    assert env["HOME"] == str(tmp_path)


# -- 1 (stop). a stopping daemon does not wait for a stuck mail server ------------------------
def serve_config(tmp_path: Path, port: int) -> Path:
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(yaml.safe_dump({
        "storage": {"path": str(tmp_path / "serve.db"), "synchronous": "NORMAL"},
        "worker": {"poll_interval": 0.05, "shutdown_grace": 0.5},
        "notify": {"smtp": smtp(port)}}), "utf-8")
    return cfg


async def serve(tmp_path: Path, cfg: Path) -> asyncio.subprocess.Process:
    env = {**os.environ, "INSTASET_HOME": str(tmp_path / "home"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    log = (tmp_path / "serve.log").open("a", encoding="utf-8")
    with log:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "instaset", "--config", str(cfg), "serve", "--sandbox",
            "--host", "127.0.0.1", "--port", "0", stdin=asyncio.subprocess.DEVNULL,
            stdout=log, stderr=log, env=env, cwd=tmp_path)


async def stopped(proc: asyncio.subprocess.Process, tmp_path: Path) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(proc.wait(), 60)  # hang guard
    except TimeoutError:
        proc.kill()
        await proc.wait()
        log = (tmp_path / "serve.log").read_text("utf-8")[-3000:]
        raise AssertionError(f"the daemon did not exit after SIGTERM:\n{log}") from None


async def test_a_stop_leaves_a_stuck_notice_queued_and_the_restart_sends_it(
    tmp_path: Path
) -> None:
    db = await open_database(tmp_path / "serve.db", synchronous="NORMAL")
    try:
        await jobstore.enqueue(db, [notify_job(KEY, None, None, "handoff", TEXT, 0.0)], 0.0)
    finally:
        await db.close()
    async with mail_server(stuck=True) as (mail, port):
        cfg = serve_config(tmp_path, port)
        proc = await serve(tmp_path, cfg)
        await until(lambda: mail.opened == 1, "the notice at the mail server")
        assert await stopped(proc, tmp_path) == 0
        assert mail.mails == []  # exited while the mail server still held the delivery
    db = await open_database(tmp_path / "serve.db", synchronous="NORMAL")
    try:
        row = await jobstore.get_by_key(db, f"notify:{KEY}")
        assert row is not None and row["state"] in ("running", "ready")  # durable, not lost
    finally:
        await db.close()
    async with mail_server() as (mail, port):
        proc = await serve(tmp_path, serve_config(tmp_path, port))
        try:
            await until(lambda: len(mail.mails) == 1, "the notice sent after the restart")
        finally:
            assert await stopped(proc, tmp_path) == 0
    db = await open_database(tmp_path / "serve.db", synchronous="NORMAL")
    try:
        row = await db.fetchone("SELECT delivered_at FROM notifications")
        assert row is not None and row["delivered_at"] is not None
    finally:
        await db.close()
