"""Shared fixtures: a real SQLite database in a temp dir, an HTTP client session and a Graph
client of the module's own ``sandbox`` fixture, and signing helpers."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from aiohttp import web

from instaset.graph import GraphClient
from instaset.store import history
from instaset.store.db import Database, open_database

if TYPE_CHECKING:
    from instaset.sandbox import Sandbox
    from tests.sending_harness import Harness, MakeHarness

DATA = Path(__file__).parent / "data"
SECRET = "test-app-secret"
SECRET2 = "test-meta-app-secret"


def load(name: str) -> object:
    return json.loads((DATA / name).read_text("utf-8"))


def raw_fixture(name: str) -> bytes:
    return (DATA / name).read_bytes()


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@pytest.fixture
def restore_loggers() -> Iterator[None]:
    """setup_logging changes the process-wide "instaset" and "aiohttp" loggers: put them
    back afterwards (use it in tests that call setup_logging)."""
    saved = {name: (lg.handlers[:], lg.level, lg.propagate)
             for name in ("instaset", "aiohttp") for lg in [logging.getLogger(name)]}
    try:
        yield
    finally:
        for name, (handlers, level, propagate) in saved.items():
            lg = logging.getLogger(name)
            lg.handlers[:], lg.level, lg.propagate = handlers, level, propagate


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the real data directory or a config in the cwd."""
    monkeypatch.setenv("INSTASET_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("INSTASET_CONFIG", raising=False)
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_database(tmp_path / "test.db")
    try:
        yield database
    finally:
        await database.close()


@contextlib.asynccontextmanager
async def on_loopback(app: web.Application, *, shutdown_timeout: float = 60.0
                      ) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 (a free port) for the block; yields its base URL
    (``http://127.0.0.1:PORT``, no trailing slash)."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def connect_account(db: Database, account_id: str, username: str = "creator") -> None:
    await history.upsert_account(db, account_id, username=username, now=1.0)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def graph(sandbox: Sandbox, session: aiohttp.ClientSession) -> GraphClient:
    """A Graph client of the requesting module's ``sandbox`` fixture."""
    assert sandbox.base_url is not None
    url = sandbox.base_url
    return GraphClient(session, graph_url=url, api_version="v25.0", api_url=url, timeout=5.0)


@pytest.fixture
async def make_harness(tmp_path: Path) -> AsyncIterator[MakeHarness]:
    """``await make_harness(workflows=..., clock=..., ...)``: a started sandbox + daemon
    (options of :func:`tests.sending_harness.open_harness`), torn down after the test (the
    sending tests' harness)."""
    from tests.sending_harness import open_harness  # the daemon's modules: only when used

    async with contextlib.AsyncExitStack() as stack:
        count = 0

        async def make(**options: Any) -> Harness:
            nonlocal count
            count += 1
            return await stack.enter_async_context(
                open_harness(tmp_path, name=f"h{count}", **options)
            )

        yield make
