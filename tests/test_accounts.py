"""Accounts: Business Login against the sandbox, ``connect --token``, token refresh on a
controlled clock, 190 handling, ``accounts``/``disconnect``, and Meta's deauthorize and
data-deletion callbacks (signed_request), checked table by table."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import html
import json
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestClient
from typer.testing import CliRunner
from yarl import URL

from instaset.accounts import (
    SCOPES,
    WEBHOOK_FIELDS,
    AccountService,
    install,
)
from instaset.cli import app
from instaset.config import Config
from instaset.connect_flow import run_connect
from instaset.daemon import FEATURES, Runtime, runtime
from instaset.errors import InstasetError, SecretsError
from instaset.graph import GraphClient
from instaset.notify import notify_job
from instaset.outbox import Outgoing, enqueue_sends
from instaset.queue import NewJob, enqueue_in
from instaset.rules import SendKind
from instaset.sandbox import Fault, Sandbox
from instaset.sandbox.oauth import CODE_TTL, LONG_TTL
from instaset.secrets import MemorySecrets, token_key
from instaset.signed_request import SignedRequestError, parse_signed_request
from instaset.store import accounts as acctstore
from instaset.store import history
from instaset.store import jobs as jobstore
from instaset.store.db import Database, open_database
from instaset.webhook import make_app
from tests.http_helpers import reserved_port

SECRET = "accounts-test-app-secret"
META_SECRET = "accounts-test-meta-secret"
APP_ID = "990602627938098"
ACCT = "17841400000000001"
OTHER = "17841400000000777"
T0 = 1_760_000_000.0
DAY = 86400.0
DATA = Path(__file__).parent / "data"
ClientFactory = Callable[..., Awaitable[TestClient]]  # type: ignore[type-arg]


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make_config(tmp_path: Path, box_url: str, port: int, **extra: Any) -> Config:
    data: dict[str, Any] = {
        "instagram": {"app_id": APP_ID, "app_secret": SECRET, "meta_app_secret": META_SECRET,
                      "graph_url": box_url, "api_url": box_url, "auth_url": box_url,
                      "redirect_uri": f"http://127.0.0.1:{port}/oauth/callback"},
        "server": {"host": "127.0.0.1", "port": port, "public_url": "https://insta.example"},
        "storage": {"path": str(tmp_path / "accounts.db"), "synchronous": "NORMAL"},
        "secrets": {"backend": "memory"},
        "worker": {"poll_interval": 0.02},
    }
    for section, values in extra.items():
        data[section] = {**data.get(section, {}), **values}
    return Config.model_validate(data)


@pytest.fixture(autouse=True)
def _fresh_memory_secrets() -> None:
    MemorySecrets.reset()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def box(clock: Clock) -> AsyncIterator[Sandbox]:
    sandbox = Sandbox(app_secret=SECRET, account_id=ACCT, username="creator", clock=clock)
    await sandbox.start()
    try:
        yield sandbox
    finally:
        await sandbox.stop()


@pytest.fixture
def config(tmp_path: Path, box: Sandbox) -> Iterator[Config]:
    assert box.base_url is not None
    with reserved_port() as port:  # the callback binds it later (see reserved_port)
        yield make_config(tmp_path, box.base_url, port)


@contextlib.asynccontextmanager
async def daemon(config: Config, clock: Callable[[], float]) -> AsyncIterator[Runtime]:
    async with runtime(config, clock=clock) as rt:
        if "instaset.accounts" not in FEATURES:  # once the lead lists it, runtime() did it
            install(rt)
        yield rt


@pytest.fixture
async def rt(config: Config, clock: Clock) -> AsyncIterator[Runtime]:
    async with daemon(config, clock) as r:
        yield r


@pytest.fixture
async def service(rt: Runtime, clock: Clock) -> AccountService:
    return AccountService(rt.config, rt.db, rt.graph, clock=clock)


# -- a browser that clicks ------------------------------------------------------------------
class Browser:
    """Follows the sandbox's consent page like a person would: load it, click a link, follow
    the redirects to the callback; keeps the last page."""

    def __init__(self, click: str = "allow", tamper: Callable[[str], str] | None = None,
                 deliver: bool = True):
        self.click = click
        self.tamper = tamper
        self.deliver = deliver
        self.status = 0
        self.page = ""
        self.callback_url = ""

    async def __call__(self, url: str) -> None:
        async with aiohttp.ClientSession() as s:
            async with s.get(url) as resp:
                consent = await resp.text()
            m = re.search(rf"id='{self.click}' href='([^']+)'", consent)
            assert m, consent
            async with s.get(resp.url.join(URL(html.unescape(m.group(1)))),
                             allow_redirects=False) as resp:
                location = resp.headers["Location"]
            self.callback_url = self.tamper(location) if self.tamper else location
            if not self.deliver:
                return
            async with s.get(self.callback_url.split("#")[0]) as resp:
                self.status, self.page = resp.status, await resp.text()

    @property
    def outcome(self) -> str:
        m = re.search(r"data-outcome='(\w+)'", self.page)
        return m.group(1) if m else ""


def says(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


# -- connect ---------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", ["data", "flat"])
async def test_connect_through_the_sandbox_both_exchange_shapes(
    service: AccountService, box: Sandbox, clock: Clock, shape: str
) -> None:
    box.oauth_shape = shape  # type: ignore[assignment]
    browser = Browser()
    said: list[str] = []
    row = await run_connect(service, open_browser=browser, say=said.append, timeout=30)
    assert browser.status == 200 and browser.outcome == "connected", browser.page
    assert "@creator" in says(browser.page)
    assert (row["id"], row["username"], row["state"]) == (ACCT, "creator", "connected")
    assert row["app_scoped_id"] == box.app_user_id  # /me "id", kept as a string
    assert row["token_expires_at"] == clock() + LONG_TTL
    assert json.loads(row["subscribed_fields"]) == list(WEBHOOK_FIELDS)
    assert box.subscribed == list(WEBHOOK_FIELDS)
    stored = MemorySecrets().get(token_key(ACCT))
    assert stored is not None and box.tokens.tokens[stored].kind == "long"
    # the authorize URL: every required parameter and the three scopes
    url = next(s for s in said if "oauth/authorize" in s).split("\n")[-1]
    query = dict(URL(url).query)
    assert query["client_id"] == APP_ID and query["response_type"] == "code"
    assert query["scope"].split(",") == list(SCOPES)
    assert query["redirect_uri"] == f"http://127.0.0.1:{service.config.server.port}/oauth/callback"
    assert len(query["state"]) >= 32
    exchange = next(r for r in box.transcript if r.route == "/oauth/access_token")
    assert exchange.json["redirect_uri"] == query["redirect_uri"]


async def test_each_attempt_gets_its_own_random_state(service: AccountService) -> None:
    (s1, u1), (s2, u2) = await service.begin(), await service.begin()
    assert s1 != s2 and s1 in u1 and s2 in u2


async def test_user_denies(service: AccountService, box: Sandbox) -> None:
    browser = Browser(click="deny")
    with pytest.raises(InstasetError, match="denied"):
        await run_connect(service, open_browser=browser, say=lambda _m: None, timeout=30)
    assert browser.outcome == "denied"
    assert "user denied" in says(browser.page)
    assert await history.list_accounts(service.db) == []
    assert MemorySecrets().get(token_key(ACCT)) is None


async def test_the_callback_port_stays_ours_between_two_connects(
    service: AccountService, box: Sandbox
) -> None:
    """The config's callback port is held for the test (reserved_port): another process
    cannot bind it between two attempts (the browser tests deny after an allow; a port
    picked and released was free for anyone then), and `connect` still binds it each time."""
    port = service.config.server.port
    with socket.socket() as rival, pytest.raises(OSError):
        rival.bind(("127.0.0.1", port))  # what another server, or a bind to 0, would get
    for _attempt in range(2):
        with pytest.raises(InstasetError, match="denied"):
            await run_connect(service, open_browser=Browser(click="deny"),
                              say=lambda _m: None, timeout=30)
    with socket.socket() as rival, pytest.raises(OSError):
        rival.bind(("127.0.0.1", port))


async def test_a_denial_text_cannot_forge_log_lines(service: AccountService) -> None:
    """The browser brings error_description: it is logged and printed by `connect`, so
    newlines and bidi overrides must not pass (a forged line, a reordered terminal)."""
    state, _url = await service.begin()
    result = await service.handle_callback({
        "state": state, "error": "access_denied",
        "error_description": "oops\n2026-11-30 08:00:00,000 ERROR instaset.webhook: FORGED\u202e"})
    assert result.outcome == "denied"
    assert result.detail == ("Instagram says: oops 2026-11-30 08:00:00,000 ERROR "
                             "instaset.webhook: FORGED. Nothing was connected.")


async def test_wrong_state_is_refused_and_the_code_is_not_used(
    rt: Runtime, service: AccountService, box: Sandbox, aiohttp_client: ClientFactory
) -> None:
    client = await aiohttp_client(make_app(rt.web))
    state, url = await service.begin()
    browser = Browser(tamper=lambda loc: loc.replace(state, "forged-state"), deliver=False)
    # click Allow, but deliver the redirect to the daemon's callback with a forged state
    await browser(url)
    forged = URL(browser.callback_url.split("#")[0])
    resp = await client.get("/oauth/callback", params=dict(forged.query))
    page = await resp.text()
    assert resp.status == 400 and "data-outcome='failed'" in page
    assert "wrong state" in says(page)
    assert not any(r.route == "/oauth/access_token" for r in box.transcript)
    # the genuine redirect still works once, and a replay of it is refused
    genuine = dict(forged.query) | {"state": state}
    first = await client.get("/oauth/callback", params=genuine)
    assert first.status == 200 and "data-outcome='connected'" in await first.text()
    replay = await client.get("/oauth/callback", params=genuine)
    assert replay.status == 400 and "wrong state" in says(await replay.text())


async def test_expired_code_explains_itself(
    service: AccountService, box: Sandbox, clock: Clock
) -> None:
    state, url = await service.begin()
    async with aiohttp.ClientSession() as s:
        consent = await (await s.get(url)).text()
        href = html.unescape(re.search(r"id='allow' href='([^']+)'", consent).group(1))  # type: ignore[union-attr]
        resp = await s.get(f"{box.base_url}{href}", allow_redirects=False)
        query = dict(URL(resp.headers["Location"].split("#")[0]).query)
    service.clock = Clock(clock())  # the sandbox's hour passes; our state's 30 min do not
    clock.t += CODE_TTL + 1
    result = await service.handle_callback(query)
    assert (result.outcome, result.status) == ("failed", 400)
    assert "expired or was already used" in result.detail
    row = await service.db.fetchone("SELECT outcome, detail FROM oauth_states WHERE state = ?",
                                    (state,))
    assert row is not None and row["outcome"] == "failed"


async def test_reused_code_is_refused(service: AccountService, box: Sandbox) -> None:
    browser = Browser()
    await run_connect(service, open_browser=browser, say=lambda _m: None, timeout=30)
    code = dict(URL(browser.callback_url.split("#")[0]).query)["code"]
    state, _url = await service.begin()
    result = await service.handle_callback({"code": code, "state": state})
    assert result.outcome == "failed" and "already used" in result.detail


async def test_connect_completes_on_a_running_daemon(
    rt: Runtime, config: Config, box: Sandbox, clock: Clock
) -> None:
    runner = aiohttp.web.AppRunner(make_app(rt.web))
    await runner.setup()
    await aiohttp.web.TCPSite(runner, "127.0.0.1", config.server.port).start()
    try:
        async with aiohttp.ClientSession() as session:
            graph = GraphClient(session, graph_url=box.base_url or "", api_version="v25.0",
                                api_url=box.base_url or "")
            cli = AccountService(config, rt.db, graph, clock=clock)  # as `instaset connect`
            said: list[str] = []
            browser = Browser()
            row = await run_connect(cli, open_browser=browser, say=said.append, timeout=30)
    finally:
        await runner.cleanup()
    assert row["id"] == ACCT and browser.outcome == "connected"
    assert any("running instaset daemon" in s for s in said)


async def test_connect_token_checks_me_stores_and_subscribes(
    service: AccountService, box: Sandbox
) -> None:
    info = await service.store_token(box.token, None)
    assert (info.account_id, info.username, info.expires_at) == (ACCT, "creator", None)
    assert MemorySecrets().get(token_key(ACCT)) == box.token
    assert box.subscribed == list(WEBHOOK_FIELDS)
    box.revoke_token(box.token)
    with pytest.raises(InstasetError, match="reconnect") as info_err:
        await service.store_token(box.token, None)
    assert box.token not in str(info_err.value)


# -- token lifecycle -------------------------------------------------------------------------
async def run_refresh(rt: Runtime) -> None:
    await rt.handlers["refresh_tokens"](
        jobstore.Job(0, "refresh_tokens", "k", {}, 0, 1, 0.0, 0.0, None))


def refreshes(box: Sandbox) -> int:
    return sum(r.route == "/refresh_access_token" for r in box.transcript)


async def notify_keys(db: Database) -> list[str]:
    return [r[0] for r in await db.fetchall("SELECT key FROM jobs WHERE kind = 'notify'")]


async def test_refresh_is_scheduled_on_age_and_expiry(
    rt: Runtime, service: AccountService, box: Sandbox, clock: Clock
) -> None:
    assert rt.periodic["refresh_tokens"] == 3600
    await service.store_token(box.token, int(LONG_TTL))
    for offset in (2 * 3600, 29 * DAY):  # too young; then not yet within 30 days of expiry
        clock.t = T0 + offset
        await run_refresh(rt)
    assert refreshes(box) == 0
    clock.t = T0 + 31 * DAY
    await run_refresh(rt)
    assert refreshes(box) == 1
    new = MemorySecrets().get(token_key(ACCT))
    assert new is not None and new != box.token and box.tokens.problem(new) is None
    row = await history.get_account(rt.db, ACCT)
    assert row is not None
    assert (row["token_issued_at"], row["token_expires_at"]) == (clock.t, clock.t + LONG_TTL)
    await run_refresh(rt)  # the new token is younger than 24 h
    assert refreshes(box) == 1
    nxt = await rt.db.fetchone("SELECT max(run_at) FROM jobs WHERE kind = 'refresh_tokens'")
    assert nxt is not None and clock.t < nxt[0] <= clock.t + 3600  # each run books the next


async def test_failed_refresh_warns_only_within_seven_days_and_once(
    rt: Runtime, service: AccountService, box: Sandbox, clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await service.store_token(box.token, int(LONG_TTL))
    box.inject(Fault("status", path_contains="refresh_access_token", times=3, status=500))
    clock.t = T0 + 40 * DAY
    await run_refresh(rt)
    assert await notify_keys(rt.db) == []
    clock.t = T0 + 54 * DAY
    await run_refresh(rt)
    await run_refresh(rt)
    keys = await notify_keys(rt.db)
    assert keys == [f"notify:token-expiring:{ACCT}:{int(T0)}"]
    await rt.handlers["notify"](jobstore.Job.from_row(
        (await rt.db.fetchall("SELECT * FROM jobs WHERE kind = 'notify'"))[0]))
    note = await rt.db.fetchone("SELECT kind, text FROM notifications")
    assert note is not None and note["kind"] == "token" and "expires on" in note["text"]
    assert (await history.get_account(rt.db, ACCT))["state"] == "connected"  # type: ignore[index]
    assert box.token not in caplog.text and SECRET not in caplog.text


async def test_190_on_refresh_marks_reconnect_needed_and_notifies(
    rt: Runtime, service: AccountService, box: Sandbox, clock: Clock
) -> None:
    await service.store_token(box.token, int(LONG_TTL))
    box.revoke_token()
    clock.t = T0 + 31 * DAY
    await run_refresh(rt)
    row = await history.get_account(rt.db, ACCT)
    assert row is not None and row["state"] == "reconnect_needed"
    assert await notify_keys(rt.db) == [f"notify:token-reconnect:{ACCT}:{int(T0)}"]
    await run_refresh(rt)  # still reconnect_needed: no second notification
    assert len(await notify_keys(rt.db)) == 1


async def test_190_on_a_send_notifies(rt: Runtime, service: AccountService, box: Sandbox,
                                      clock: Clock) -> None:
    await service.store_token(box.token, int(LONG_TTL))
    async with rt.db.tx() as conn:
        await history.touch_contact(conn, ACCT, "555", clock())
        await history.update_conversation(conn, ACCT, "555", clock(), inbound_at=clock())
        await enqueue_sends(conn, [Outgoing(key="send:x", kind=SendKind.TEXT, account_id=ACCT,
                                            contact_id="555", text="hello")], clock())
    box.revoke_token()
    job = jobstore.Job.from_row((await rt.db.fetchall("SELECT * FROM jobs WHERE kind='send'"))[0])
    await rt.handlers["send"](job)
    assert (await history.get_account(rt.db, ACCT))["state"] == "reconnect_needed"  # type: ignore[index]
    for _ in range(200):  # the notification is enqueued by a task the refusal started
        if await notify_keys(rt.db):
            break
        await asyncio.sleep(0.01)
    assert await notify_keys(rt.db) == [f"notify:token-reconnect:{ACCT}:{int(T0)}"]


# -- disconnect ------------------------------------------------------------------------------
async def seed(db: Database, acct: str, contacts: tuple[str, ...] = ("555", "666")) -> None:
    """An account with, per contact: a raw event and its job, a message, a send and its job,
    a notify job and a notification."""
    await history.upsert_account(db, acct, username=f"u{acct[-3:]}", now=T0,
                                 app_scoped_id="26" + acct[-13:])
    MemorySecrets().set(token_key(acct), f"IGAAtoken{acct}")
    async with db.tx() as conn:
        for c in contacts:
            await history.touch_contact(conn, acct, c, T0, username=f"c{c}")
            cur = await conn.execute(
                "INSERT INTO events(dedupe_key, account_id, kind, contact_id, occurred_at,"
                " received_at, raw) VALUES (?, ?, 'message', ?, ?, ?, '{}')",
                (f"e:{acct}:{c}", acct, c, T0, T0))
            await enqueue_in(conn, [NewJob("process_event", f"event:{acct}:{c}",
                                           {"event_id": cur.lastrowid}, T0)], T0)
            await history.insert_message(
                conn, account_id=acct, contact_id=c, mid=f"m:{acct}:{c}", direction="in",
                sent_by="contact", text="hi", attachments=[], created_at=T0,
                event_id=cur.lastrowid)
            await enqueue_sends(conn, [Outgoing(key=f"s:{acct}:{c}", kind=SendKind.TEXT,
                                                account_id=acct, contact_id=c, text="yo")], T0)
            await enqueue_in(conn, [notify_job(f"n:{acct}:{c}", acct, c, "lead", "hot", T0)], T0)
    for c in contacts:
        await history.add_notification(db, key=f"note:{acct}:{c}", account_id=acct,
                                       contact_id=c, kind="lead", text="hot", now=T0)


async def census(db: Database) -> dict[str, dict[str, int]]:
    """Rows per table per account id (jobs: by the account in their key)."""
    out: dict[str, dict[str, int]] = {}
    tables = [r[0] for r in await db.fetchall(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
    for t in tables:
        cols = [r[1] for r in await db.fetchall(f'PRAGMA table_info("{t}")')]
        col = "account_id" if "account_id" in cols else "id" if t == "accounts" else None
        if col is not None:
            rows = await db.fetchall(f'SELECT {col}, count(*) FROM "{t}" GROUP BY 1')
            out[t] = {str(r[0]): int(r[1]) for r in rows if r[0] is not None}
    jobs = await db.fetchall("SELECT key FROM jobs WHERE kind != 'refresh_tokens'")
    out["jobs"] = {}
    for (key,) in jobs:
        acct = next(a for a in (ACCT, OTHER) if a in key)
        out["jobs"][acct] = out["jobs"].get(acct, 0) + 1
    return out


def without(census_: dict[str, dict[str, int]], acct: str) -> dict[str, dict[str, int]]:
    return {t: {a: n for a, n in per.items() if a != acct} for t, per in census_.items()}


async def test_disconnect_keeps_data_purge_deletes_exactly_that_account(
    service: AccountService, box: Sandbox
) -> None:
    await seed(service.db, ACCT)
    await seed(service.db, OTHER)
    box.subscribe(WEBHOOK_FIELDS)
    before = await census(service.db)
    assert before["jobs"] == {ACCT: 6, OTHER: 6} and before["messages"][ACCT] == 2
    MemorySecrets().set(token_key(ACCT), box.token)
    result = await service.disconnect(ACCT, purge=False)
    assert result.unsubscribed and result.token_deleted and box.subscribed == []
    row = await history.get_account(service.db, ACCT)
    assert row is not None and row["state"] == "disconnected"
    assert MemorySecrets().get(token_key(ACCT)) is None
    assert await census(service.db) == before  # data kept
    purged = await service.disconnect(ACCT, purge=True)
    after = await census(service.db)
    assert after == without(before, ACCT)  # every table: nothing of ACCT, OTHER untouched
    assert purged.deleted == {"accounts": 1, "contacts": 2, "conversations": 2, "events": 2,
                              "jobs": 6, "messages": 2, "notifications": 2, "sends": 2,
                              "stats_conversations": 1, "stats_messages": 1,
                              "stats_pending": 2, "stats_sends": 1}
    assert MemorySecrets().get(token_key(OTHER)) == f"IGAAtoken{OTHER}"


async def test_purging_an_account_takes_its_first_plan_jobs(service: AccountService) -> None:
    """A first_plan job's payload holds only an event id; the account is in its key."""
    for acct in (ACCT, OTHER):
        await seed(service.db, acct, ("555",))
        await jobstore.enqueue(service.db, [NewJob(
            "first_plan", f"first_plan:{acct}:555:1", {"event_id": 1}, T0)], T0)
    before = await census(service.db)
    purged = await service.disconnect(ACCT, purge=True)
    assert await census(service.db) == without(before, ACCT)
    assert purged.deleted["jobs"] == 4


# -- signed_request --------------------------------------------------------------------------
def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(payload: dict[str, Any], secret: str = SECRET) -> str:
    body = b64(json.dumps(payload).encode())
    return b64(hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()) + "." + body


def fixture_request() -> dict[str, str]:
    return json.loads((DATA / "signed_request_example.json").read_text("utf-8"))  # type: ignore[no-any-return]


def test_parses_the_real_fixture() -> None:
    fx = fixture_request()
    issued = json.loads(fx["decoded_payload_json"])["issued_at"]
    payload = parse_signed_request(fx["signed_request"], [b"nope", b"key"], now=issued + 60)
    assert payload == json.loads(fx["decoded_payload_json"])
    with pytest.raises(SignedRequestError) as info:
        parse_signed_request(fx["signed_request"], [b"other"], now=issued + 60)
    assert info.value.status == 403


@pytest.mark.parametrize(("value", "status"), [
    ("", 400), ("nodot", 400), ("a.b.c", 400), (".x", 400), ("!!!.abc", 400),
    (b64(b"x") + "." + b64(b"not json"), 400), (b64(b"x") + "." + b64(b"[1]"), 400),
    (signed({"algorithm": "none", "issued_at": T0, "user_id": "1"}), 400),
    (signed({"algorithm": "HMAC-SHA256", "issued_at": T0}), 400),
    (signed({"algorithm": "HMAC-SHA256", "user_id": "1"}), 400),
    (signed({"algorithm": "HMAC-SHA256", "issued_at": T0 + 3600, "user_id": "1"}), 403),
    (signed({"algorithm": "HMAC-SHA256", "issued_at": T0, "user_id": "1"}, "wrong"), 403),
    (signed({"algorithm": "HMAC-SHA256", "issued_at": float("nan"), "user_id": "1"}), 403),
    (signed({"algorithm": "HMAC-SHA256", "issued_at": 10**400, "user_id": "1"}), 400),
    (signed({"algorithm": "HMAC-SHA256", "issued_at": T0, "user_id": "\ud800"}), 400),
])
def test_refused_signed_requests(value: str, status: int) -> None:
    with pytest.raises(SignedRequestError) as info:
        parse_signed_request(value, [SECRET.encode()], now=T0)
    assert info.value.status == status


def test_age_is_not_held_against_a_signed_request_unless_asked() -> None:
    """The signature authenticates it; Meta's own example (issued in 2021) must work today."""
    fx = fixture_request()
    payload = parse_signed_request(fx["signed_request"], [b"key"], now=T0)
    assert payload["user_id"] == json.loads(fx["decoded_payload_json"])["user_id"]
    old = signed({"algorithm": "HMAC-SHA256", "issued_at": T0 - 400 * DAY, "user_id": "7"})
    assert parse_signed_request(old, [SECRET.encode()], now=T0)["issued_at"] == T0 - 400 * DAY
    with pytest.raises(SignedRequestError) as info:
        parse_signed_request(old, [SECRET.encode()], now=T0, max_age=DAY)
    assert info.value.status == 403


def test_tampered_payload_and_padding() -> None:
    good = signed({"algorithm": "HMAC-SHA256", "issued_at": T0, "user_id": 42})
    assert parse_signed_request(good + "", [SECRET.encode()], now=T0)["user_id"] == "42"
    sig, body = good.split(".")
    assert parse_signed_request(f"{sig}=.{body}", [SECRET.encode()], now=T0)["user_id"] == "42"
    forged = b64(json.dumps({"algorithm": "HMAC-SHA256", "issued_at": T0,
                             "user_id": "43"}).encode())
    with pytest.raises(SignedRequestError) as info:
        parse_signed_request(f"{sig}.{forged}", [SECRET.encode()], now=T0)
    assert info.value.status == 403


# -- Meta's callbacks over HTTP --------------------------------------------------------------
def form(user_id: str, secret: str = SECRET, issued: float = T0) -> dict[str, str]:
    return {"signed_request": signed(
        {"algorithm": "HMAC-SHA256", "issued_at": int(issued), "expires": 0,
         "user_id": user_id}, secret)}


@pytest.fixture
async def client(rt: Runtime, aiohttp_client: ClientFactory) -> TestClient:  # type: ignore[type-arg]
    return await aiohttp_client(make_app(rt.web))


@pytest.mark.parametrize("secret", [SECRET, META_SECRET])
async def test_deauthorize_by_app_scoped_id_with_either_secret(
    rt: Runtime, client: TestClient, secret: str  # type: ignore[type-arg]
) -> None:
    await seed(rt.db, ACCT)
    await seed(rt.db, OTHER)
    before = await census(rt.db)
    scoped = (await history.get_account(rt.db, ACCT))["app_scoped_id"]  # type: ignore[index]
    resp = await client.post("/meta/deauthorize", data=form(scoped, secret))
    assert resp.status == 200
    assert (await history.get_account(rt.db, ACCT))["state"] == "disconnected"  # type: ignore[index]
    assert MemorySecrets().get(token_key(ACCT)) is None
    assert MemorySecrets().get(token_key(OTHER)) is not None
    assert await census(rt.db) == before  # deauthorize keeps the data


async def test_data_deletion_of_an_account(rt: Runtime, client: TestClient) -> None:  # type: ignore[type-arg]
    await seed(rt.db, ACCT)
    await seed(rt.db, OTHER)
    before = await census(rt.db)
    resp = await client.post("/meta/data-deletion", data=form(ACCT, META_SECRET))
    assert resp.status == 200
    body = await resp.json()
    code = body["confirmation_code"]
    assert body["url"] == f"https://insta.example/meta/data-deletion/{code}"
    assert await census(rt.db) == without(before, ACCT)
    assert MemorySecrets().get(token_key(ACCT)) is None
    page = await client.get(f"/meta/data-deletion/{code}")
    text = says(await page.text())
    assert page.status == 200 and "completed" in text and code in text
    assert "messages 2" in " ".join(text.split()) and "access tokens 1" in " ".join(text.split())
    receipt = await rt.db.fetchone("SELECT * FROM deletion_receipts")
    assert receipt is not None and ACCT not in json.dumps(dict(receipt))  # no personal data


async def test_data_deletion_of_a_contact(rt: Runtime, client: TestClient) -> None:  # type: ignore[type-arg]
    await seed(rt.db, ACCT, ("555", "666"))
    before = await census(rt.db)
    resp = await client.post("/meta/data-deletion", data=form("555"))
    assert resp.status == 200
    after = await census(rt.db)
    for table in ("contacts", "conversations", "events", "messages", "sends", "notifications"):
        assert after[table][ACCT] == before[table][ACCT] - 1, table
    assert after["jobs"][ACCT] == before["jobs"][ACCT] - 3
    assert after["accounts"] == before["accounts"]
    left = await rt.db.fetchall("SELECT contact_id FROM messages")
    assert [r[0] for r in left] == ["666"]
    assert MemorySecrets().get(token_key(ACCT)) is not None


async def oauth_rows(db: Database) -> list[tuple[str, str | None]]:
    rows = await db.fetchall("SELECT state, account_id FROM oauth_states ORDER BY state")
    return [(str(r[0]), r[1]) for r in rows]


async def test_deleting_an_account_forgets_its_connect_attempts(
    rt: Runtime, client: TestClient, service: AccountService  # type: ignore[type-arg]
) -> None:
    """oauth_states rows name the account by id and @username: data deletion and
    `disconnect --purge` take them with the account; others' attempts stay."""
    await seed(rt.db, ACCT)
    await seed(rt.db, OTHER)
    for state, acct in (("s-acct", ACCT), ("s-other", OTHER), ("s-failed", None)):
        await acctstore.create_state(rt.db, state, "http://127.0.0.1/cb", T0, 600)
        if acct is not None:
            name = f"u{acct[-3:]}"
            await acctstore.finish_state(
                rt.db, state, "connected", acct,
                f"Instagram account @{name} ({acct}) is connected; its token expires soon.")
        else:
            await acctstore.finish_state(rt.db, state, "failed", None, "Instagram said no.")
    # An attempt that failed after naming the account (no account_id on the row).
    await acctstore.create_state(rt.db, "s-named", "http://127.0.0.1/cb", T0, 600)
    await acctstore.finish_state(rt.db, "s-named", "failed", None,
                                 f"Instagram account @u{ACCT[-3:]} ({ACCT}) could not subscribe.")
    resp = await client.post("/meta/data-deletion", data=form(ACCT, META_SECRET))
    assert resp.status == 200
    assert await oauth_rows(rt.db) == [("s-failed", None), ("s-other", OTHER)]
    receipt = await acctstore.get_receipt(rt.db, (await resp.json())["confirmation_code"])
    assert receipt is not None and json.loads(receipt["summary"])["oauth_states"] == 2
    purged = await service.disconnect(OTHER, purge=True)
    assert purged.deleted["oauth_states"] == 1
    assert await oauth_rows(rt.db) == [("s-failed", None)]


class LockedKeyring:
    """An OS keyring that cannot be read (locked, or none on a headless server)."""

    name = "keyring"

    def _fail(self, key: str) -> SecretsError:
        return SecretsError(f"the OS keyring could not read {key!r} (NoKeyringError)")

    def get(self, key: str) -> str | None:
        raise self._fail(key)

    def set(self, key: str, value: str) -> None:
        raise self._fail(key)

    def delete(self, key: str) -> bool:
        raise self._fail(key)


async def test_callbacks_check_with_the_configs_secret_while_the_keyring_is_locked(
    rt: Runtime, client: TestClient, tmp_path: Path, box: Sandbox,  # type: ignore[type-arg]
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """The config holds instagram.app_secret: a secret store that cannot be read must not
    turn Meta's callbacks away (503) while webhooks go on. Its error is logged once."""
    monkeypatch.setattr("instaset.accounts.open_secrets", lambda _config: LockedKeyring())
    await seed(rt.db, ACCT, ("555", "666"))
    caplog.set_level("WARNING", logger="instaset.accounts")
    resp = await client.post("/meta/data-deletion", data=form("555"))
    assert resp.status == 200
    assert [r[0] for r in await rt.db.fetchall("SELECT contact_id FROM messages")] == ["666"]
    assert (await client.post("/meta/deauthorize", data=form("42", META_SECRET))).status == 200
    assert (await client.post("/meta/deauthorize", data=form("42", "wrong"))).status == 403
    said = [r.getMessage() for r in caplog.records if "secret store" in r.getMessage()]
    assert len(said) == 1 and "NoKeyringError" in said[0] and "config" in said[0]
    # Without a secret in the config, the store's error still stands.
    with reserved_port() as port:
        bare = make_config(tmp_path, box.base_url or "", port,
                           instagram={"app_secret": None, "meta_app_secret": None})
        with pytest.raises(SecretsError):
            await AccountService(bare, rt.db, rt.graph, LockedKeyring()).secrets()


@contextlib.asynccontextmanager
async def fixture_daemon(
    tmp_path: Path, box: Sandbox, aiohttp_client: ClientFactory, fx: dict[str, Any],
) -> AsyncIterator[tuple[Runtime, TestClient]]:  # type: ignore[type-arg]
    """A daemon without server.public_url, its clock at the real fixture's issued_at."""
    issued = json.loads(fx["decoded_payload_json"])["issued_at"]
    with reserved_port() as port:
        config = make_config(tmp_path, box.base_url or "", port,
                             instagram={"app_secret": "key"}, server={"public_url": None})
        async with daemon(config, Clock(issued + 5)) as r:
            yield r, await aiohttp_client(make_app(r.web))


async def test_unknown_user_still_gets_a_receipt_and_the_real_fixture_works(
    tmp_path: Path, box: Sandbox, aiohttp_client: ClientFactory
) -> None:
    fx = fixture_request()
    async with fixture_daemon(tmp_path, box, aiohttp_client, fx) as (_r, client):
        resp = await client.post("/meta/data-deletion", data={"signed_request": fx[
            "signed_request"]})
        assert resp.status == 200
        body = await resp.json()
        status_path = f"/meta/data-deletion/{body['confirmation_code']}"
        assert body["url"] == str(client.make_url(status_path))  # no public_url: as reached
        page = await client.get(status_path)
        assert "nothing had to be deleted" in says(await page.text())
        assert (await client.post("/meta/deauthorize", data={
            "signed_request": fx["signed_request"]})).status == 200


@pytest.mark.parametrize("data", [
    {}, {"signed_request": ""}, {"signed_request": "garbage"}, {"other": "x"},
    {"signed_request": "a" * 10_000},
])
async def test_malformed_callbacks_are_400(client: TestClient, data: dict[str, str]) -> None:  # type: ignore[type-arg]
    for path in ("/meta/deauthorize", "/meta/data-deletion"):
        assert (await client.post(path, data=data)).status == 400
    resp = await client.post("/meta/data-deletion", data=b"\xff\xfe", headers={
        "Content-Type": "multipart/form-data; boundary=x"})
    assert resp.status == 400


@pytest.mark.parametrize("content_type", [
    "application/x-www-form-urlencoded; charset=bogus", "multipart/form-data; boundary=B",
])
async def test_unreadable_callback_forms_are_400(client: TestClient, content_type: str) -> None:  # type: ignore[type-arg]
    for path in ("/meta/deauthorize", "/meta/data-deletion"):
        resp = await client.post(path, data=b"--B\r\nnonsense\r\n\r\n",
                                 headers={"Content-Type": content_type})
        assert resp.status == 400


@pytest.mark.parametrize("host", ["a:99999999", "_:_", "a b", "x/y?z", 'x"><script>',
                                  "user@host", "%41", "..", "x:0",
                                  "[fe80::1%'onload=x]:8080"])
async def test_data_deletion_refuses_a_host_it_cannot_answer_with_before_deleting(
    tmp_path: Path, box: Sandbox, aiohttp_client: ClientFactory, host: str,
) -> None:
    """Without server.public_url the status URL comes from the Host header: one it cannot
    be built from got a 503 after the deletion and its receipt were committed."""
    fx = fixture_request()
    async with fixture_daemon(tmp_path, box, aiohttp_client, fx) as (r, client):
        body = urlencode({"signed_request": fx["signed_request"]}).encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
        writer.write(b"POST /meta/data-deletion HTTP/1.1\r\nHost: " + host.encode()
                     + b"\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                     + b"Content-Length: " + str(len(body)).encode()
                     + b"\r\nConnection: close\r\n\r\n" + body)
        status_line = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
        assert status_line.split()[1] == b"400"
        assert await r.db.fetchall("SELECT * FROM deletion_receipts") == []


async def test_deauthorizing_an_earlier_connection_leaves_the_current_one(
    rt: Runtime, client: TestClient,  # type: ignore[type-arg]
) -> None:
    """A deauthorization issued before the account's current token (a late or replayed
    callback, the creator having connected again since) must not disconnect it."""
    await seed(rt.db, ACCT)  # its token issued at T0
    resp = await client.post("/meta/deauthorize", data=form(ACCT, issued=T0 - 3 * DAY))
    assert resp.status == 200
    assert (await history.get_account(rt.db, ACCT))["state"] == "connected"  # type: ignore[index]
    assert MemorySecrets().get(token_key(ACCT)) is not None
    resp = await client.post("/meta/deauthorize", data=form(ACCT, issued=T0 + 60))
    assert resp.status == 200
    assert (await history.get_account(rt.db, ACCT))["state"] == "disconnected"  # type: ignore[index]
    assert MemorySecrets().get(token_key(ACCT)) is None


async def test_bad_signature_and_future_issued_at_are_403(rt: Runtime, client: TestClient) -> None:  # type: ignore[type-arg]
    await seed(rt.db, ACCT)
    before = await census(rt.db)
    for data in (form(ACCT, "wrong-secret"), form(ACCT, issued=T0 + 3 * DAY)):
        for path in ("/meta/deauthorize", "/meta/data-deletion"):
            assert (await client.post(path, data=data)).status == 403
    assert await census(rt.db) == before
    assert await rt.db.fetchall("SELECT * FROM deletion_receipts") == []


async def test_unknown_status_code_is_a_404_page(client: TestClient) -> None:  # type: ignore[type-arg]
    resp = await client.get("/meta/data-deletion/NOPE123")
    assert resp.status == 404 and "Unknown confirmation code" in await resp.text()
    resp = await client.get("/meta/data-deletion/%3Cscript%3E")
    assert resp.status == 404 and "<script>" not in await resp.text()


# -- CLI: accounts, disconnect, connect --token ----------------------------------------------
runner = CliRunner()


def cli_config(tmp_path: Path) -> Path:
    """Memory secrets (shared in-process with the CLI), and a Graph URL where nothing
    listens: unsubscribing is best effort and must not stop a disconnect."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "instagram": {"app_id": APP_ID, "graph_url": "http://127.0.0.1:9",
                      "api_url": "http://127.0.0.1:9"},
        "storage": {"path": str(tmp_path / "cli.db")}, "secrets": {"backend": "memory"},
    }))
    return path


def seeded_cli(tmp_path: Path) -> Path:
    path = cli_config(tmp_path)

    async def go() -> None:
        db = await open_database(tmp_path / "cli.db")
        try:
            await seed(db, ACCT)
            await seed(db, OTHER)
            await history.upsert_account(db, OTHER, username="u777", now=T0,
                                         token_expires_at=T0 + 10 * DAY,
                                         subscribed_fields=WEBHOOK_FIELDS)
        finally:
            await db.close()

    asyncio.run(go())
    return path


def test_accounts_lists_without_tokens(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = seeded_cli(tmp_path)
    result = runner.invoke(app, ["--config", str(path), "accounts", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [a["id"] for a in data] == [ACCT, OTHER]
    other = data[1]
    assert other["username"] == "u777" and other["state"] == "connected"
    assert other["token_expires_at"] == "2025-10-19T08:53:20Z"
    assert other["subscribed_fields"] == list(WEBHOOK_FIELDS)
    human = runner.invoke(app, ["--config", str(path), "accounts"])
    assert ACCT in human.stdout and "@u777" in human.stdout
    for text in (result.output, human.output, caplog.text):
        assert "IGAAtoken" not in text


def test_disconnect_needs_yes_without_a_terminal_and_a_name_when_several(
    tmp_path: Path,
) -> None:
    path = seeded_cli(tmp_path)
    refused = runner.invoke(app, ["--config", str(path), "disconnect", ACCT, "--purge"])
    assert refused.exit_code == 1 and "--yes" in refused.stderr
    several = runner.invoke(app, ["--config", str(path), "disconnect", "--yes"])
    assert several.exit_code == 1 and ACCT in several.stderr and OTHER in several.stderr
    unknown = runner.invoke(app, ["--config", str(path), "disconnect", "nobody", "--yes"])
    assert unknown.exit_code == 1 and "nobody" in unknown.stderr
    assert MemorySecrets().get(token_key(ACCT)) is not None


def test_disconnect_and_purge_from_the_cli(tmp_path: Path) -> None:
    path = seeded_cli(tmp_path)
    done = runner.invoke(app, ["--config", str(path), "disconnect", "@u001", "--yes"])
    assert done.exit_code == 0, done.output
    # best effort: Meta was unreachable; where to finish the job by hand
    assert "could not unsubscribe its webhooks: remove the app in Instagram's" in done.stderr
    listed = json.loads(runner.invoke(app, ["--config", str(path), "accounts", "--json"]).stdout)
    assert [(a["id"], a["state"]) for a in listed] == [(ACCT, "disconnected"),
                                                       (OTHER, "connected")]
    assert MemorySecrets().get(token_key(ACCT)) is None
    purged = runner.invoke(app, ["--config", str(path), "disconnect", ACCT, "--purge", "--yes"])
    assert purged.exit_code == 0, purged.output
    assert "messages: 2" in purged.stderr
    listed = json.loads(runner.invoke(app, ["--config", str(path), "accounts", "--json"]).stdout)
    assert [a["id"] for a in listed] == [OTHER]
    assert MemorySecrets().get(token_key(OTHER)) == f"IGAAtoken{OTHER}"


def test_disconnecting_the_sandbox_account_claims_no_failed_unsubscribe(tmp_path: Path) -> None:
    """Nothing at Meta is tried for the sandbox's account: "could not unsubscribe" was said
    of the README's own clean-up command."""
    path = cli_config(tmp_path)

    async def go() -> None:
        db = await open_database(tmp_path / "cli.db")
        try:
            await history.upsert_account(db, "17841400000000001", username="sandbox_creator",
                                         now=T0, sandbox=True)
        finally:
            await db.close()

    asyncio.run(go())
    done = runner.invoke(app, ["--config", str(path), "disconnect", "sandbox_creator",
                               "--purge", "--yes"])
    assert done.exit_code == 0, done.output
    assert "disconnected @sandbox_creator" in done.stderr
    assert "unsubscribe" not in done.stderr


def test_connect_token_needs_a_token_on_stdin(tmp_path: Path) -> None:
    path = cli_config(tmp_path)
    result = runner.invoke(app, ["--config", str(path), "connect", "--token"], input="\n")
    assert result.exit_code == 1 and "no access token" in result.stderr


def test_a_plain_http_redirect_to_meta_is_warned_about() -> None:
    """Without server.public_url or instagram.redirect_uri the sign-in redirected to
    http://127.0.0.1:8787/oauth/callback, which Meta refuses, without a word (docs audit)."""
    from instaset.accounts import redirect_warning

    warned = redirect_warning(Config())
    assert warned is not None and "http://127.0.0.1:8787/oauth/callback" in warned
    assert "server.public_url" in warned
    public = Config.model_validate({"server": {"public_url": "https://dm.example.com"}})
    assert redirect_warning(public) is None
    sandbox = Config.model_validate({"instagram": {"api_url": "http://127.0.0.1:9999"}})
    assert redirect_warning(sandbox) is None


def test_connect_without_an_app_id_says_only_that(tmp_path: Path) -> None:
    """The redirect warning came first, then the error that stops the sign-in anyway."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"storage": {"path": str(tmp_path / "c.db")},
                                    "secrets": {"backend": "memory"}}))
    result = runner.invoke(app, ["--config", str(path), "connect", "--no-browser"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: instagram.app_id is not set")
    assert "warning" not in result.stderr


@pytest.mark.parametrize(("meta_says", "advice"), [
    ("Error validating client secret.", "INSTASET_APP_SECRET"),
    ("Error validating verification code. Please make sure your redirect_uri is identical to "
     "the one you used in the OAuth dialog request", "instagram.redirect_uri"),
    ("Invalid platform app", "instagram.app_id"),
    ("This authorization code has expired.", "expired or was already used"),
    ("This authorization code has been used.", "expired or was already used"),
    ("Matching code was not found or was already used", "expired or was already used"),
])
def test_a_failed_code_exchange_names_the_setting_to_fix(meta_says: str, advice: str) -> None:
    """CLI review, session 15: every refusal of the code exchange said "the authorization
    code expired... run connect again", even a wrong app secret, which no rerun fixes."""
    from instaset.accounts import _explain
    from instaset.errors import InvalidParameter

    said = _explain(InvalidParameter(f"Meta OAuth error: {meta_says} (code 400)", code=400))
    assert advice in said and meta_says[:20] in said
    others = {"INSTASET_APP_SECRET", "instagram.redirect_uri", "instagram.app_id",
              "expired or was already used"} - {advice}
    assert not any(o in said for o in others)


async def test_a_disconnect_during_a_token_refresh_keeps_the_token_deleted(
    rt: Runtime, service: AccountService, box: Sandbox, clock: Clock
) -> None:
    """CLI review, session 15: a refresh in flight when `disconnect` (or a deauthorize)
    deleted the token stored the new one afterwards: a disconnected account with a valid
    60-day token in the secret store."""
    await service.store_token(box.token, int(LONG_TTL))
    clock.t = T0 + 31 * DAY  # due for a refresh
    box.inject(Fault("delay", path_contains="refresh_access_token", delay=1.0))
    cli = AccountService(rt.config, rt.db, rt.graph, clock=clock)  # another process's

    async def disconnect_meanwhile() -> None:
        # While Meta holds the refresh (had the refresh not started yet, it would skip the
        # disconnected account: the test passes then too, without the race).
        await asyncio.sleep(0.3)
        await cli.disconnect(ACCT, purge=False)

    await asyncio.wait_for(asyncio.gather(run_refresh(rt), disconnect_meanwhile()), 10)
    assert MemorySecrets().get(token_key(ACCT)) is None
    row = await history.get_account(rt.db, ACCT)
    assert row is not None and row["state"] == "disconnected"
