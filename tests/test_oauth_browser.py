"""Business Login end to end, driven by browsers:

- headless Chromium (Debian's ``chromium``; ``.ci/run`` installs it) loads the sandbox's
  consent page, clicks Allow or Deny, and lands on our callback's result page; driven over
  the DevTools protocol, with a screenshot of the result;
- a whole CLI session in real subprocesses (``connect`` with a scripted browser, a denied
  connect, ``accounts``, ``connect --token``, ``disconnect --purge``), after
  which every output, log and file written is searched for the tokens and the app secret.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import stat
import sys
from base64 import b64decode
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from instaset.accounts import AccountService
from instaset.connect_flow import run_connect
from instaset.graph import GraphClient
from instaset.sandbox import Sandbox
from instaset.secrets import FileSecrets, MemorySecrets, secrets_file, token_key
from instaset.store.db import open_database
from tests.http_helpers import reserved_port
from tests.test_accounts import ACCT, SECRET, make_config

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
STEP_TIMEOUT = 30.0


class Chromium:
    """One headless Chromium, driven over the DevTools protocol (one page)."""

    def __init__(self, proc: asyncio.subprocess.Process, ws: aiohttp.ClientWebSocketResponse):
        self.proc = proc
        self.ws = ws
        self._ids = iter(range(1, 1_000_000))

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        await self.ws.send_json({"id": msg_id, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json()
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                return msg.get("result", {})  # type: ignore[no-any-return]

    async def js(self, expression: str) -> Any:
        out = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return out.get("result", {}).get("value")

    async def wait_for(self, expression: str) -> Any:
        """Poll ``expression`` until it is truthy (bounded by the caller's timeout)."""
        while True:
            value = await self.js(expression)
            if value:
                return value
            await asyncio.sleep(0.05)

    async def click_through(self, url: str, link: str) -> str:
        """Open the consent page, click ``link`` (allow/deny), return the result page."""
        async with asyncio.timeout(STEP_TIMEOUT):
            await self.call("Page.navigate", url=url)
            await self.wait_for(f"document.getElementById('{link}') !== null")
            await self.js(f"document.getElementById('{link}').click()")
            await self.wait_for("document.getElementById('result')?.dataset.outcome")
            return str(await self.js("document.documentElement.outerHTML"))


@pytest.fixture
async def chromium(tmp_path: Path) -> AsyncIterator[Chromium]:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium; .ci/run does it)")
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-proxy-server",
        "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium'}",
        "--remote-debugging-port=0", "about:blank",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(STEP_TIMEOUT):
            while True:
                line = (await proc.stderr.readline()).decode(errors="replace")
                assert line, "chromium exited before opening its DevTools port"
                m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
                if m:
                    break
        # keep draining stderr so Chromium never blocks on a full pipe
        drain = asyncio.create_task(proc.stderr.read())
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{m.group(1)}/json/list") as resp:
                targets = await resp.json()
            page = next(t for t in targets if t.get("type") == "page")
            async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                browser = Chromium(proc, ws)
                await browser.call("Page.enable")
                yield browser
        drain.cancel()
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


@pytest.fixture
def callback_port() -> Iterator[int]:
    """The OAuth callback's port, held for the test: ``connect`` binds it once per attempt
    (a port picked and released could be taken in between: see reserved_port)."""
    with reserved_port() as port:
        yield port


async def test_chromium_allow_and_deny_reach_the_result_page(
    chromium: Chromium, tmp_path: Path, callback_port: int
) -> None:
    MemorySecrets.reset()
    async with Sandbox(app_secret=SECRET, account_id=ACCT, username="creator") as box:
        config = make_config(tmp_path, box.base_url or "", callback_port)
        db = await open_database(config.storage.db_path())
        try:
            async with aiohttp.ClientSession() as session:
                graph = GraphClient(session, graph_url=box.base_url or "", api_version="v25.0",
                                    api_url=box.base_url or "")
                service = AccountService(config, db, graph)
                pages: dict[str, str] = {}

                def clicker(link: str) -> Any:
                    async def open_browser(url: str) -> None:
                        pages[link] = await chromium.click_through(url, link)
                    return open_browser

                row = await run_connect(service, open_browser=clicker("allow"),
                                        say=lambda _m: None, timeout=STEP_TIMEOUT)
                shot = await chromium.call("Page.captureScreenshot", format="png")
                with pytest.raises(Exception, match="denied"):
                    await run_connect(service, open_browser=clicker("deny"),
                                      say=lambda _m: None, timeout=STEP_TIMEOUT)
        finally:
            await db.close()
    assert row["id"] == ACCT and row["state"] == "connected"
    assert "data-outcome=\"connected\"" in pages["allow"] or \
        "data-outcome='connected'" in pages["allow"]
    assert "Connected @creator" in pages["allow"]
    assert "data-outcome=\"denied\"" in pages["deny"] or "data-outcome='denied'" in pages["deny"]
    assert "Access was not granted" in pages["deny"]
    token = MemorySecrets().get(token_key(ACCT))
    assert token and token not in pages["allow"]
    png = b64decode(shot["data"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    (tmp_path / "connected.png").write_bytes(png)


# -- a whole CLI session in subprocesses -----------------------------------------------------
BROWSER_SCRIPT = """#!{python}
import html, os, re, sys, urllib.request
url = sys.argv[1]
consent = urllib.request.urlopen(url, timeout=20).read().decode()
href = html.unescape(re.search(r"id='%s' href='([^']+)'" % os.environ["CLICK"], consent).group(1))
base = url.split("/oauth/")[0]
try:
    urllib.request.urlopen(base + href, timeout=20).read()
except urllib.error.HTTPError:
    pass  # a failure page is still a page
"""


async def cli(env: dict[str, str], *args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "instaset", *args, env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(90):
        out, err = await proc.communicate(stdin)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_a_whole_session_never_reveals_a_token_or_the_app_secret(
    tmp_path: Path, callback_port: int
) -> None:
    app_secret = "whole-session-app-secret-5f1c2d"
    async with Sandbox(app_secret=app_secret, account_id=ACCT, username="creator") as box:
        port = callback_port  # bound by two `connect` subprocesses, one after the other
        url = box.base_url or ""
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump({
            "instagram": {"app_id": "990602627938098", "graph_url": url, "api_url": url,
                          "auth_url": url,
                          "redirect_uri": f"http://127.0.0.1:{port}/oauth/callback"},
            "server": {"host": "127.0.0.1", "port": port},
            "storage": {"path": str(tmp_path / "session.db")},
            "secrets": {"backend": "auto"},
        }))
        browser = tmp_path / "browser.py"
        browser.write_text(BROWSER_SCRIPT.format(python=sys.executable))
        browser.chmod(0o700)
        env = dict(os.environ)
        env.update(PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",  # never a real one
                   INSTASET_CONFIG=str(config), INSTASET_APP_SECRET=app_secret,
                   BROWSER=str(browser), CLICK="allow", PYTHONPATH=str(REPO))
        outputs: list[str] = []

        async def run(*args: str, stdin: bytes = b"", click: str = "allow") -> tuple[int, str]:
            code, out, err = await cli({**env, "CLICK": click}, *args, stdin=stdin)
            outputs.extend([out, err])
            return code, out + err

        code, text = await run("connect", "--timeout", "60")
        assert code == 0, text
        assert "secrets are stored in" in text  # no OS keyring here: the 0600 file, announced
        # (subprocesses are slow to start: the independent steps run side by side)
        (denied, why), (by_token, _), (listed, listing), (bad, said) = await asyncio.gather(
            run("connect", "--timeout", "60", click="deny"),
            run("connect", "--token", stdin=box.token.encode() + b"\n"),
            run("accounts", "--json"),
            run("connect", "--token", stdin=b"EAAnot-a-token\n"),
        )
        assert (denied, by_token, listed, bad) == (1, 0, 0, 1)
        assert "denied" in why and ACCT in listing
        # A refused dashboard token: the fix is another token, not `instaset connect`.
        assert "generate a new one in the App Dashboard" in said
        code, text = await run("disconnect", ACCT, "--purge", "--yes")
        assert code == 0, text
        secrets = {app_secret, box.token, *box.tokens.tokens, *box.tokens.revoked}
    assert len(secrets) >= 4  # the app secret, the dashboard token, short- and long-lived
    for text in outputs:
        for secret in secrets:
            assert secret not in text
    store = secrets_file()
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p != browser]
    assert store in written and stat.S_IMODE(store.stat().st_mode) == 0o600
    assert FileSecrets(store).get(token_key(ACCT)) is None  # purged
    for path in written:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, f"{secret[:6]}... found in {path}"
