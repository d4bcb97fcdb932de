"""The creator's notification settings and what they see of the notices: channel settings
that can never work are config errors naming file:line and the fix; ``doctor`` reports
failing notices at once, with their channel and error, and looks at each channel."""

# Expected messages read best one per line, so long lines are allowed here.
# ruff: noqa: E501

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from typer.testing import CliRunner

from instaset.cli import app as cli_app
from instaset.config import NotifyConfig, parse_config_text
from instaset.config_types import mask_url
from instaset.doctor import Check, run_checks
from instaset.doctor_notify import redact_error
from instaset.notify import NOTIFY_MAX_ATTEMPTS, Notifier, describe_redirect, notify_job
from instaset.queue import RetryLater
from instaset.store import jobs as jobstore
from instaset.store.db import open_database
from instaset.store.jobs import Job
from tests.config_helpers import problems
from tests.sending_harness import Clock, open_harness
from tests.test_doctor import ACCT, make_db, write_config

TOKEN = "bot123456:AAHsecretTOKEN"


@pytest.mark.parametrize(("url", "message"), [
    ("not a url", "webhook_url must be an http(s) URL without spaces"),
    ("ftp://example.com/hook", "webhook_url must be an http(s) URL without spaces"),
    ("127.0.0.1:18901/hook", "webhook_url must be an http(s) URL without spaces"),
    (f"https://api.telegram.org/{TOKEN} /sendMessage", "webhook_url must be an http(s) URL without spaces"),
    (f"http://127.0.0.1:99999/{TOKEN}/x", "webhook_url is not a valid URL (check the host and the port)"),
])
def test_a_webhook_url_that_is_no_http_url_is_an_error(url: str, message: str) -> None:
    [line] = problems(f"notify:\n  desktop: false\n  webhook_url: \"{url}\"\n")
    assert line.startswith(f"config.yaml:3:16: notify.webhook_url: {message}")
    assert TOKEN not in line  # a chat webhook's URL carries its token: never repeated


def test_http_and_https_webhook_urls_are_fine() -> None:
    for url in ("https://api.telegram.org/bot1:AA/sendMessage?chat_id=42",
                "http://127.0.0.1:18901/hook", "https://hooks.slack.com/services/T0/B0/x"):
        config = parse_config_text(f"notify:\n  webhook_url: \"{url}\"\n", "config.yaml", {})
        assert config.notify.webhook_url is not None


def test_an_empty_webhook_url_is_no_webhook_and_spaces_around_one_go() -> None:
    """Review E (s17): `webhook_url: ""` meant "no webhook" before URLs were checked and
    became a fatal error on upgrade; a URL pasted with a trailing space passed the check and
    was POSTed to as .../hook%20 (a 404 every time, for a day of retries)."""
    for empty in ('""', '"  "'):
        config = parse_config_text(f"notify:\n  webhook_url: {empty}\n", "config.yaml", {})
        assert config.notify.webhook_url is None
    config = parse_config_text('notify:\n  webhook_url: " https://example.com/hook "\n',
                               "config.yaml", {})
    assert config.notify.webhook_url == "https://example.com/hook"


SMTP = "notify:\n  smtp:\n    host: smtp.example.com\n{extra}    from_addr: {sender}\n    to_addr: {to}\n"


def test_smtp_port_465_is_refused_with_the_fix() -> None:
    """smtplib.SMTP (plain, then STARTTLS) waits forever for a greeting on an implicit-TLS
    port: every notice would fail, retried for a day."""
    [line] = problems(SMTP.format(extra="    port: 465\n", sender="a@example.com",
                                  to="me@example.com"))
    assert line == (
        "config.yaml:4:11: notify.smtp.port: port 465 is SMTP over implicit TLS, which instaset"
        " does not speak (it connects in plain and upgrades with STARTTLS): use port 587 with"
        " starttls: true, which mail providers offer beside 465")


@pytest.mark.parametrize(("sender", "to", "where"), [
    ("a@example.com", "not-an-address", "config.yaml:5:14: notify.smtp.to_addr: to_addr"),
    ("instaset", "me@example.com", "config.yaml:4:16: notify.smtp.from_addr: from_addr"),
    ("a@example.com", "me@example.com, nobody", "config.yaml:5:14: notify.smtp.to_addr: to_addr"),
])
def test_smtp_addresses_must_be_addresses(sender: str, to: str, where: str) -> None:
    [line] = problems(SMTP.format(extra="", sender=sender, to=f"\"{to}\""))
    assert line == (f"{where} must be an email address, e.g. me@example.com (several:"
                    " comma-separated)")


def test_working_smtp_settings_are_fine() -> None:
    for sender, to in (("a@example.com", "me@example.com"),
                       ("\"instaset <a@example.com>\"", "\"me@example.com, you@example.org\""),
                       ("root@localhost", "me@localhost")):
        config = parse_config_text(SMTP.format(extra="    port: 25\n", sender=sender, to=to),
                                   "config.yaml", {})
        assert config.notify.smtp is not None and config.notify.smtp.port == 25



@pytest.mark.parametrize(("key", "value", "why"), [
    ("from_addr", "instaset@[example.com", "from_addr 'instaset@[example.com' cannot be read as"
     " an email header; write it as me@example.com or Me <me@example.com> (several:"
     " comma-separated)"),
    ("to_addr", "a@[b", "to_addr 'a@[b' cannot be read as an email header"),
    ("to_addr", "a@b.com\\r\\nBcc: x@y.com", "to_addr must be on one line (it holds a line break)"),
    ("from_addr", "a@b.com\\nBcc: x@y.com", "from_addr must be on one line"),
    ("from_addr", "jöhn@exämple.com", "from_addr must be ASCII, as the email's header is sent:"
     " write a non-ASCII domain in its xn-- form"),
])
def test_smtp_addresses_the_email_header_cannot_take_are_refused(key: str, value: str,
                                                                  why: str) -> None:
    """Found by the s18 audit: each loaded, then building the email raised (AttributeError
    in email's header parser, or ValueError for a line break) on every notification,
    retried for a day."""
    good = {"from_addr": "a@example.com", "to_addr": "me@example.com"}
    good[key] = value
    [line] = problems(SMTP.format(extra="", sender=f"\"{good['from_addr']}\"",
                                  to=f"\"{good['to_addr']}\""))
    where = "4:16" if key == "from_addr" else "5:14"
    assert line.startswith(f"config.yaml:{where}: notify.smtp.{key}: {why}")


def test_a_blank_smtp_host_is_refused() -> None:
    """Found by the s18 audit: `host: ""` loaded; every notification then failed with
    "please run connect() first"."""
    text = SMTP.format(extra="", sender="a@example.com", to="me@example.com")
    for blank in ('""', '"  "'):
        [line] = problems(text.replace("smtp.example.com", blank))
        assert line.startswith("config.yaml:3:11: notify.smtp.host: host must be the mail"
                               " server's name, e.g. smtp.example.com")

# -- doctor: failing notices at once, with channel and error; the channels' form -------------
async def redirect_loop(request: web.Request) -> web.Response:
    """A webhook URL that only redirects to itself (a moved chat endpoint gone wrong)."""
    raise web.HTTPFound(str(request.rel_url))


async def test_doctor_reports_a_failing_notice_at_once_with_channel_and_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A notice failing for two minutes was shown as OK (doctor waited an hour, then only
    counted it); now it warns at once, names the channel and its error, and never prints
    the webhook URL's path (a chat webhook's token)."""
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no notify-send: the desktop channel fails
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", redirect_loop)
    async with TestServer(app, host="127.0.0.1") as server:
        port = server.port
        url = f"http://127.0.0.1:{port}/{TOKEN}/sendMessage?chat_id=42"
        notify = {"webhook_url": url, "desktop": True}
        cfg = write_config(tmp_path, notify=notify)
        await make_db(tmp_path)
        now = time.time()
        db = await open_database(tmp_path / "doc.db", synchronous="NORMAL")
        try:
            await jobstore.enqueue(db, [notify_job("handoff:ana", ACCT, "c1", "handoff",
                                                   "@ana needs you", now - 120)], now - 120)
            [job] = await jobstore.claim(db, "w1", now - 120, 60.0, 1)
            notifier = Notifier(db, NotifyConfig.model_validate(notify), clock=lambda: now - 120)
            with pytest.raises(RetryLater) as failure:
                await notifier.handle(job)
            await jobstore.reschedule(db, job, run_at=now - 120 + failure.value.delay,
                                      error=failure.value.reason, dead=False)
        finally:
            await db.close()
        checks = await run_checks(cfg, offline=True)
    shown = "\n".join(f"{c.name}: {c.status}: {c.message} | {c.fix}" for c in checks)
    assert TOKEN not in shown and "sendMessage" not in shown and "chat_id" not in shown
    by = {c.name: c for c in checks}
    assert by["notification"].status == "warn"
    assert by["notification"].message.endswith(
        "handoff: @ana needs you (not delivered: failing on desktop, webhook)")
    webhook = by["failing notifications (webhook)"]
    assert webhook.status == "warn" and webhook.message.startswith(
        f"1 notification not delivered on webhook (try 1 of {NOTIFY_MAX_ATTEMPTS}, next try ")
    assert "2xx to a JSON POST" in str(webhook.fix)
    desktop = by["failing notifications (desktop)"]
    assert desktop.status == "warn" and "notify-send not found on PATH" in desktop.message
    assert by["notify channel (desktop)"].status == "warn"
    assert by["notify channel (webhook)"].message == (
        f"POST to http://127.0.0.1:{port}/… (path hidden)")
    assert "undelivered notifications" not in by  # not an hour old: not counted as late


def test_an_error_quoting_the_url_is_shown_without_its_path() -> None:
    error = ("TooManyRedirects: 0, message='', url='http://127.0.0.1:18901/r/"
             f"{TOKEN}/sendMessage?chat_id=42'")
    assert redact_error(error) == (
        "TooManyRedirects: 0, message='', url='http://127.0.0.1:18901/…'")


async def test_doctor_looks_at_each_configured_channel(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "notify-send"
    tool.write_text("#!/bin/sh\nexit 0\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    cfg = write_config(tmp_path, notify={
        "command": "/nonexistent/notify.sh --quiet", "desktop": True,
        "smtp": {"host": "smtp.example.com", "port": 25, "starttls": False, "username": "me",
                 "password": "pw-123456", "from_addr": "a@example.com",
                 "to_addr": "me@example.com"}})
    await make_db(tmp_path)
    by = {c.name: c for c in await run_checks(cfg, offline=True)}
    command = by["notify channel (command)"]
    assert (command.status, command.message) == (
        "warn", "notify.command runs '/nonexistent/notify.sh', which is not found (no such"
        " executable file)")
    smtp = by["notify channel (smtp)"]
    assert smtp.status == "warn" and "password go over the network in clear" in smtp.message
    assert by["notify channel (desktop)"] == Check(
        "notify channel (desktop)", "ok", f"notify-send at {tool}")
    assert "notify channels" not in by


async def test_doctor_without_channels_says_so(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    await make_db(tmp_path)
    by = {c.name: c for c in await run_checks(cfg, offline=True)}
    assert by["notify channels"].status == "skip"


# -- listing the notifications: all of them, not the last 5 ----------------------------------
async def eight_handoffs(tmp_path: Path, now: float) -> None:
    """Eight handoffs through the real notifier: the two oldest fail (a command that exits
    1), the six newer ones are delivered."""
    await make_db(tmp_path)
    db = await open_database(tmp_path / "doc.db", synchronous="NORMAL")
    try:
        for i in range(8):
            command = "exit 1" if i < 2 else "cat > /dev/null"
            notifier = Notifier(db, NotifyConfig(command=command), clock=lambda i=i: now + i)
            job = Job(id=i, kind="notify", key=f"notify:h{i}", payload={
                "key": f"h{i}", "kind": "handoff", "text": f"@u{i} needs you",
                "account_id": ACCT, "contact_id": f"c{i}"}, attempts=1, max_attempts=31,
                run_at=now, created_at=now, worker=None)
            if i < 2:
                with pytest.raises(RetryLater):
                    await notifier.handle(job)
            else:
                await notifier.handle(job)
    finally:
        await db.close()


def test_inbox_notifications_lists_past_the_last_five_with_limit_and_json(
        tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    asyncio.run(eight_handoffs(tmp_path, time.time()))

    def cli(*args: str) -> str:
        result = CliRunner().invoke(cli_app, ["--config", str(cfg), "inbox", *args])
        assert result.exit_code == 0, result.output
        return result.stdout

    doc = json.loads(cli("notifications", "--json"))
    assert (doc["total"], doc["undelivered"]) == (8, 2)
    assert [n["text"] for n in doc["notifications"]] == [f"@u{i} needs you"
                                                         for i in reversed(range(8))]
    assert {n["key"]: n["delivered_at"] is None for n in doc["notifications"]} == {
        f"h{i}": i < 2 for i in range(8)}
    assert [n["key"] for n in json.loads(cli("notifications", "--json", "--limit", "3"))[
        "notifications"]] == ["h7", "h6", "h5"]
    assert [n["key"] for n in json.loads(cli("notifications", "--json", "--undelivered"))[
        "notifications"]] == ["h1", "h0"]
    plain = cli("notifications", "--undelivered").splitlines()
    assert plain[0] == "8 notifications, 2 not delivered"
    assert plain[1].startswith("! ") and plain[1].endswith("handoff: @u1 needs you (not delivered)")
    # `inbox` keeps its last 5, now marked delivered or not
    assert [line[:2] for line in cli("--plain").splitlines()[1:]] == ["- "] * 5


# -- notice contents: refusals name @username, handoffs have their own kind -------------------
OLGA = "9270074373746416"
HOUR = 3600.0


async def test_refusal_notices_name_the_contact_by_username(tmp_path: Path) -> None:
    """Both refusal notices (the engine's, for a delayed step after the 24 h window; the
    outbox's, for a queued send after it) said the numeric id although @olga was known."""
    late = {"name": "late", "trigger": {"dm": {"keywords": ["go"]}},
            "actions": [{"reply": "first"}, {"delay": "25h"}, {"reply": "a day later"}]}
    clock = Clock(frozen=True)
    async with open_harness(tmp_path, workflows=[late], clock=clock) as h:
        h.sandbox.add_user(OLGA, "olga")
        await h.dm(OLGA, "go")
        await h.settle()
        clock.advance(25 * HOUR + 1)
        await h.settle()
        await h.enqueue(h.text("queued", OLGA, "still there?", workflow="late"))
        await h.settle()
        notes = [r["text"] for r in await h.rt.db.fetchall(
            "SELECT text FROM notifications WHERE kind = 'refused' ORDER BY id")]
    assert notes[0].startswith("Workflow late could not message @olga: refused reply:")
    assert notes[1].startswith("A message from workflow late to @olga was not sent"
                               " (window_closed)")
    assert not any(OLGA in n for n in notes)


async def test_a_workflow_handoff_has_its_own_kind(tmp_path: Path) -> None:
    """A workflow `handoff` reached the receivers as kind "notify", like a `notify:` step;
    an AI hand-off was already "handoff". A `notify:` step keeps "notify"."""
    wf = {"name": "human", "trigger": {"dm": {"keywords": ["human"]}},
          "actions": [{"notify": "someone asked for a human"}, {"handoff": True}]}
    async with open_harness(tmp_path, workflows=[wf]) as h:
        h.sandbox.add_user(OLGA, "olga")
        await h.dm(OLGA, "a human please")
        await h.settle()
        notes = [(r["kind"], r["text"]) for r in await h.rt.db.fetchall(
            "SELECT kind, text FROM notifications ORDER BY id")]
    assert [kind for kind, _ in notes] == ["notify", "handoff"]
    assert notes[0][1] == "someone asked for a human"
    assert notes[1][1].endswith(" needs you (human)")


@pytest.mark.parametrize(
    ("url", "shown"),
    [("https://hooks.slack.com/services/T/B/X", "https://hooks.slack.com/…"),
     ("http://user:pw@127.0.0.1:8080/r/tok?chat_id=4", "http://127.0.0.1:8080/…"),
     ("http://[::1]:8080/r/tok", "http://[::1]:8080/…"),  # doctor showed http://::1:8080
     ("https://example.com", "https://example.com"),
     ("http://[::1/r/tok", "(a URL)"),  # urlsplit raises: config show and notify did too
     ("http://", "(a URL)"), ("not a url", "(a URL)"), ("", "")],
)
def test_one_url_masker_serves_config_show_the_notifier_and_doctor(url: str, shown: str) -> None:
    assert mask_url(url) == shown
    if url.startswith("http") and url != "http://":  # doctor finds URLs by their scheme
        assert redact_error(f"failed: url={url} and more") == f"failed: url={shown} and more"


def test_a_redirect_to_a_location_that_cannot_be_parsed_is_described() -> None:
    # The Location comes from the webhook's server: it raised ValueError in the job.
    assert describe_redirect("https://hooks.example.com/x", "http://[oops/") == "(a URL)"
    assert describe_redirect("https://hooks.example.com/x", "/x/") == (
        "https://hooks.example.com/… (the same path with a trailing /)")
