"""`instaset simulate` and the daemon's `/sandbox/*` routes on bad input and refused webhooks
(s9 audits: interface findings 1 and 3, HTTP finding F6).

Everything runs for real on 127.0.0.1: the daemon is `daemon.serving()` (the code behind
`instaset serve`), in sandbox mode or not; the CLI runs through `CliRunner`. CLI tests serve
the daemon from an event loop in a thread, because the CLI runs its own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import yaml
from aiohttp import web
from typer.testing import CliRunner

from instaset import http_body
from instaset.cli import app
from instaset.config import Config, load_config
from instaset.daemon import Serving, serving
from instaset.secrets import APP_SECRET, FileSecrets, secrets_file
from tests.conftest import connect_account
from tests.http_helpers import withheld_body_answer

T = TypeVar("T")
ACCT = "17841400000000001"


def config_data(tmp_path: Path, name: str, **instagram: str) -> dict[str, Any]:
    return {
        "storage": {"path": str(tmp_path / f"{name}.db"), "synchronous": "NORMAL"},
        # Nothing may leave 127.0.0.1, even a catch-up or token refresh by mistake.
        "instagram": {"graph_url": "http://127.0.0.1:1", **instagram},
        "secrets": {"backend": "file"},
        "sandbox": {"account_id": ACCT},
    }


def write_config(tmp_path: Path, name: str, **instagram: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config_data(tmp_path, name, **instagram)), "utf-8")
    return path


def run_cli(config: Path, *args: str) -> Any:
    return CliRunner().invoke(app, ["--config", str(config), *args])


class LoopThread:
    """An event loop running in a thread; :meth:`run` waits for a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@contextlib.contextmanager
def threaded_daemon(config: Config, *, sandbox: bool, connected: bool = True,
                    ) -> Iterator[tuple[LoopThread, Serving]]:
    """`serving(config)` on 127.0.0.1 in a loop thread, stopped on exit; not in sandbox
    mode, with the account simulate addresses (``ACCT``) connected unless ``connected`` is
    False."""
    lt = LoopThread()
    started: Future[Serving] = Future()
    stop = asyncio.Event()

    async def serve() -> None:
        try:
            async with serving(config, host="127.0.0.1", port=0, sandbox=sandbox) as srv:
                if connected and not sandbox:
                    await connect_account(srv.rt.db, ACCT)
                started.set_result(srv)
                await stop.wait()
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)
            raise

    task = asyncio.run_coroutine_threadsafe(serve(), lt.loop)
    try:
        yield lt, started.result(timeout=30)
    finally:
        lt.loop.call_soon_threadsafe(stop.set)
        task.result(timeout=30)
        lt.close()


@contextlib.contextmanager
def foreign_server(routes: list[web.RouteDef]) -> Iterator[str]:
    """Some other HTTP server (not instaset) at the URL given to `simulate --url`."""
    lt = LoopThread()
    web_app = web.Application()
    web_app.add_routes(routes)
    runner = web.AppRunner(web_app, access_log=None)

    async def start() -> str:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    try:
        yield lt.run(start())
    finally:
        lt.run(runner.cleanup())
        lt.close()


def assert_clean_failure(result: Any, *needles: str) -> str:
    """Exit 1 with one `error: ...` message on stderr naming ``needles``, no traceback."""
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    err: str = result.stderr
    assert err.startswith("error: "), err
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in err, (needle, err)
    assert result.stdout == ""
    return err


# -- the /sandbox/* routes ------------------------------------------------------------------


@pytest.fixture
async def sandbox_daemon(tmp_path: Path) -> AsyncIterator[Serving]:
    config = Config.model_validate(config_data(tmp_path, "sb"))
    async with serving(config, host="127.0.0.1", port=0, sandbox=True) as srv:
        yield srv


async def post(srv: Serving, route: str, body: bytes | object) -> tuple[int, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with aiohttp.ClientSession() as session, session.post(
        f"{srv.url}{route}", data=raw, headers={"Content-Type": "application/json"},
        timeout=aiohttp.ClientTimeout(total=20),
    ) as resp:
        return resp.status, await resp.json(content_type=None)


@pytest.mark.parametrize("route", ["/sandbox/dm", "/sandbox/comment"])
@pytest.mark.parametrize(("body", "names"), [
    # json.dumps keeps the lone surrogate as the escape `\ud800`, as a client would send it.
    ({"user": "\ud800", "text": "hi"}, "'user' is not valid Unicode"),
    ({"user": "alice", "text": "a\udc80b"}, "'text' is not valid Unicode"),
    ({"user": ["alice"], "text": "hi"}, "'user' must be a string"),
    ({"user": {"name": "alice"}, "text": "hi"}, "'user' must be a string"),
    ({"user": "alice", "text": 5}, "'text' must be a string"),
    (b'{"user": "alice", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "body must be JSON"),
    ({"text": "hi"}, "'user' is required"),
])
async def test_sandbox_routes_refuse_bad_input_with_400(
    sandbox_daemon: Serving, route: str, body: object, names: str,
) -> None:
    status, answer = await post(sandbox_daemon, route, body)
    assert (status, answer) == (400, {"error": answer["error"]})
    assert names in answer["error"]
    assert sandbox_daemon.sandbox is not None
    assert sandbox_daemon.sandbox.deliveries == []  # nothing reached the daemon's webhook


@pytest.mark.parametrize(("headers", "names"), [
    ({"Content-Type": "application/json; charset=no-such-charset"}, "body must be JSON"),
    ({"Content-Type": "application/json", "Content-Encoding": "gzip"}, "unreadable body"),
])
async def test_sandbox_routes_refuse_unreadable_bodies_with_400(
    sandbox_daemon: Serving, headers: dict[str, str], names: str,
) -> None:
    async with aiohttp.ClientSession(auto_decompress=False) as session, session.post(
        f"{sandbox_daemon.url}/sandbox/dm", data=b'{"user": "alice", "text": "hi"}',
        headers=headers, timeout=aiohttp.ClientTimeout(total=20),
    ) as resp:
        assert resp.status == 400
        assert names in (await resp.json(content_type=None))["error"]
    assert sandbox_daemon.sandbox is not None and sandbox_daemon.sandbox.deliveries == []


async def test_sandbox_routes_answer_408_to_a_body_that_does_not_arrive(
    sandbox_daemon: Serving, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http_body, "BODY_TIMEOUT", 0.3)
    head, body = await withheld_body_answer(int(sandbox_daemon.url.rsplit(":", 1)[1]),
                                            "/sandbox/dm")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert json.loads(body) == {"error": "the request body did not arrive within 0.3 s"}
    assert sandbox_daemon.sandbox is not None and sandbox_daemon.sandbox.deliveries == []


async def test_unicode_digits_are_a_username_not_an_igsid(sandbox_daemon: Serving) -> None:
    box = sandbox_daemon.sandbox
    assert box is not None
    status, answer = await post(sandbox_daemon, "/sandbox/dm", {"user": "١٢٣", "text": "hi"})
    assert status == 200 and answer["webhook_status"] == 200
    igsid = answer["user"]
    assert igsid != "١٢٣" and igsid.isascii() and igsid.isdigit()
    assert box.users[igsid] == "١٢٣"
    status, again = await post(sandbox_daemon, "/sandbox/dm", {"user": "12345", "text": "hi"})
    assert (status, again["user"]) == (200, "12345")  # ASCII digits are an IGSID


@pytest.mark.parametrize("route", ["/sandbox/dm", "/sandbox/comment"])
async def test_sandbox_routes_report_the_real_webhook_status(
    sandbox_daemon: Serving, route: str,
) -> None:
    """The daemon refuses the sandbox's webhook (here: signed with a secret it does not
    know): the route reports the daemon's 403, not a made-up 200, and the sandbox retries
    it in the background as Meta would, then records it as undelivered."""
    box = sandbox_daemon.sandbox
    assert box is not None
    status, answer = await post(sandbox_daemon, route, {"user": "alice", "text": "hi"})
    assert (status, answer["webhook_status"]) == (200, 200)
    box.app_secret = "not-the-daemon-secret"
    status, answer = await post(sandbox_daemon, route, {"user": "alice", "text": "hi"})
    assert (status, answer["webhook_status"]) == (200, 403)
    await asyncio.wait_for(box.drain(), 10)
    assert [code for _payload, code in box.deliveries] == [200] + [403] * 4
    assert [u.reason for u in box.undelivered] == ["HTTP 403"]


@pytest.mark.parametrize("route", ["/sandbox/dm", "/sandbox/comment"])
async def test_sandbox_routes_send_nothing_for_an_unsubscribed_account(
    sandbox_daemon: Serving, route: str,
) -> None:
    """`serve --sandbox` subscribes its account through the sandbox's API, as `connect`
    does; once unsubscribed (`disconnect`), Meta sends no webhook, and the route says why
    instead of delivering one anyway."""
    box = sandbox_daemon.sandbox
    assert box is not None
    assert box.transcript[0].method == "POST" and box.transcript[0].route.endswith(
        "/subscribed_apps")
    await sandbox_daemon.rt.graph.unsubscribe(box.account_id, token=box.token)
    status, answer = await post(sandbox_daemon, route, {"user": "alice", "text": "hi"})
    assert status == 409 and "not subscribed" in answer["error"]
    assert box.deliveries == []


# -- `instaset simulate` ----------------------------------------------------------------------


def test_simulate_empty_user_is_a_clean_error(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "sb")
    with threaded_daemon(load_config(cfg), sandbox=True) as (_lt, srv):
        result = run_cli(cfg, "simulate", "dm", "", "x", "--url", srv.url)
        assert_clean_failure(result, "USER")
        ok = run_cli(cfg, "simulate", "dm", "@bob", "x", "--url", srv.url)
        assert ok.exit_code == 0, ok.output
        assert json.loads(ok.stdout)["webhook_status"] == 200


def test_simulate_reports_an_answer_that_is_not_instaset_json(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "foreign", app_secret="s")

    async def refuse(_request: web.Request) -> web.Response:
        return web.Response(status=400, text="nope, not\nhere")

    async def html(_request: web.Request) -> web.Response:
        return web.Response(text="<html>hello</html>", content_type="text/html")

    with foreign_server([web.post("/sandbox/dm", refuse), web.post("/sandbox/comment", html)]
                        ) as url:
        err = assert_clean_failure(run_cli(cfg, "simulate", "dm", "bob", "hi", "--url", url),
                                   "HTTP 400", "nope, not here")
        assert err.count("\n") == 1  # the server's newline does not split the message
        assert_clean_failure(run_cli(cfg, "simulate", "comment", "bob", "hi", "--url", url),
                             "not with instaset's JSON", "<html>hello</html>")


def test_simulate_fails_when_the_daemon_refuses_the_sandbox_webhook(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "sb")
    with threaded_daemon(load_config(cfg), sandbox=True) as (_lt, srv):
        assert srv.sandbox is not None
        srv.sandbox.app_secret = "not-the-daemon-secret"
        assert_clean_failure(run_cli(cfg, "simulate", "dm", "bob", "hi", "--url", srv.url),
                             "HTTP 403")


def test_simulate_fails_with_a_hint_when_the_signature_is_refused(tmp_path: Path) -> None:
    daemon_cfg = write_config(tmp_path, "daemon", app_secret="the-daemon-secret")
    other_cfg = write_config(tmp_path, "other", app_secret="another-secret")
    with threaded_daemon(load_config(daemon_cfg), sandbox=False) as (_lt, srv):
        err = assert_clean_failure(
            run_cli(other_cfg, "simulate", "dm", "bob", "hi", "--url", srv.url),
            "HTTP 403", "signature", "instagram.app_secret", "--config",
        )
        assert "another-secret" not in err and "the-daemon-secret" not in err
        ok = run_cli(daemon_cfg, "simulate", "comment", "bob", "hi", "--url", srv.url)
        assert ok.exit_code == 0, ok.output
        assert json.loads(ok.stdout)["webhook_status"] == 200


def test_simulate_signs_with_the_secret_store_like_the_daemon(tmp_path: Path) -> None:
    """The app secret lives only in the secret store: `serve` accepts webhooks signed with
    it, so `simulate` must sign with it too (it used to sign with the sandbox default)."""
    cfg = write_config(tmp_path, "store")
    config = load_config(cfg)
    FileSecrets(secrets_file()).set(APP_SECRET, "store-secret")
    with threaded_daemon(config, sandbox=False) as (_lt, srv):
        result = run_cli(cfg, "simulate", "dm", "bob", "hi", "--url", srv.url)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["webhook_status"] == 200


def test_simulate_without_any_app_secret_says_where_to_put_one(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "none")
    with threaded_daemon(load_config(cfg), sandbox=False) as (_lt, srv):
        assert_clean_failure(run_cli(cfg, "simulate", "dm", "bob", "hi", "--url", srv.url),
                             "no app secret", "INSTASET_APP_SECRET", "secret store")


def test_simulate_refuses_when_the_daemon_would_drop_the_event(tmp_path: Path) -> None:
    """Not in sandbox mode, the event is addressed to sandbox.account_id: a daemon without
    that account connected answers 200 and drops it, so simulate must not say success."""
    cfg = write_config(tmp_path, "unconnected", app_secret="s3cret")
    with threaded_daemon(load_config(cfg), sandbox=False, connected=False) as (_lt, srv):
        assert_clean_failure(run_cli(cfg, "simulate", "dm", "bob", "hi", "--url", srv.url),
                             "no connected Instagram account", ACCT, "serve --sandbox")
        assert srv.rt.writer.rows == 0  # nothing was posted to /webhook
