"""The HTTP surface against clients that break the rules: malformed HTTP, bodies that are not
what their Content-Encoding says, clients that drop or withhold a body, idle connections,
forged hosts and log lines. Each is answered (or closed) without a traceback in the log."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import select
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import IO

import pytest
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.test_utils import TestClient

from instaset import http_body
from instaset.config import Config
from instaset.daemon import Runtime, runtime, web_runner
from instaset.logsetup import ClientFaults, client_fault, setup_logging
from instaset.oneline import one_line
from instaset.proxy import valid_host
from instaset.webhook import make_app
from tests.conftest import SECRET, sign
from tests.http_helpers import run_json_serve, withheld_body_answer

ClientFactory = Callable[..., Awaitable[TestClient]]  # type: ignore[type-arg]


pytestmark = pytest.mark.usefixtures("restore_loggers")


@pytest.fixture
async def rt(tmp_path: Path) -> AsyncIterator[Runtime]:
    config = Config.model_validate({"instagram": {"app_secret": SECRET},
                                    "storage": {"path": str(tmp_path / "h.db")}})
    async with runtime(config) as r:
        r.writer.start()
        try:
            yield r
        finally:
            await r.writer.stop()


async def raw_exchange(port: int, data: bytes, *, close_after: bool = False,
                       timeout: float = 10.0) -> bytes:
    """Send ``data`` on a new connection; return what comes back until the server closes
    (or, with ``close_after``, close our side at once and return nothing)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        if close_after:
            return b""
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def iter_lines_within(stream: IO[str], seconds: float) -> Iterator[str]:
    """Lines of a subprocess pipe as they come, until EOF or ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([stream], [], [], left)
        if not ready:
            return
        line = stream.readline()
        if not line:
            return
        yield line


# -- log records of client faults ---------------------------------------------------------
@pytest.mark.parametrize(("exc", "fault"), [
    (ConnectionResetError("Connection lost"), True),
    (BadHttpMessage("bad"), True),
    (LineTooLong("line", "8190"), True),
    (web.RequestPayloadError("Can not decode content-encoding: gzip"), True),
    (ValueError("ours"), False),
    (RuntimeError("ours"), False),
])
def test_client_fault_tells_the_clients_doing_from_ours(exc: BaseException, fault: bool) -> None:
    assert client_fault(exc) is fault


def test_a_client_fault_record_becomes_one_info_line() -> None:
    stream = io.StringIO()
    setup_logging("INFO", "text", stream=stream)
    log = logging.getLogger("aiohttp.server")
    try:
        raise BadHttpMessage("Invalid header value char\nsecond line")
    except BadHttpMessage as exc:
        log.exception("Error handling request from %s", "127.0.0.1", exc_info=exc)
    try:
        raise ValueError("a bug of ours")
    except ValueError as exc:
        log.exception("Unhandled exception", exc_info=exc)
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith(" INFO aiohttp.server: Error handling request from 127.0.0.1: "
                             "BadHttpMessage: 400, message: Invalid header value char "
                             "second line")
    # Not a client fault: kept at ERROR with its traceback.
    assert " ERROR aiohttp.server: Unhandled exception" in lines[1]
    assert "Traceback (most recent call last):" in lines[2]
    assert any(isinstance(f, ClientFaults) for h in logging.getLogger("aiohttp").handlers
               for f in h.filters)


def test_client_fault_lines_respect_the_log_level() -> None:
    stream = io.StringIO()
    setup_logging("WARNING", "text", stream=stream)
    try:
        raise BadHttpMessage("bad")
    except BadHttpMessage as exc:
        logging.getLogger("aiohttp.server").exception("Error handling request", exc_info=exc)
    logging.getLogger("aiohttp.web").warning("a warning of aiohttp's own")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].endswith(" WARNING aiohttp.web: a warning of aiohttp's own")


def test_serve_answers_broken_clients_without_a_traceback(tmp_path: Path) -> None:
    """A real `instaset serve --log-format json`: malformed HTTP, a gzip body that is not
    gzip, a client that drops mid-body. Each gets its 400 (or nothing: it left), the log
    stays one JSON object per line, and no record is an ERROR or carries a traceback."""
    answers: list[bytes] = []

    def abuse(port: int, stderr: IO[str], lines: list[str]) -> None:
        async def send() -> None:
            answers.append(await raw_exchange(
                port, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"))
            answers.append(await raw_exchange(
                port, b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"))
            answers.append(await raw_exchange(
                port, b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
                      b"X-Hub-Signature-256: sha256=00\r\nContent-Length: 7\r\n"
                      b"Connection: close\r\n\r\ngarbage"))
            await raw_exchange(port, b"POST /webhook HTTP/1.1\r\nHost: x\r\n"
                                     b"Content-Length: 100\r\n\r\n{\"a\"", close_after=True)

        asyncio.run(send())
        # Stop only once the server has seen the drop (bounded: a line or 30 s).
        for line in iter_lines_within(stderr, 30.0):
            lines.append(line)
            if "the client closed the connection" in line:
                break

    lines = run_json_serve(tmp_path, abuse)
    assert [a.split(b"\r\n", 1)[0].split()[1] for a in answers] == [b"400"] * 3
    records = [json.loads(line) for line in lines if line.strip()]  # every line is JSON
    assert [r for r in records if r["level"] in ("ERROR", "CRITICAL") or "exc" in r] == []
    messages = [r["msg"] for r in records]
    assert sum("LineTooLong" in m or "BadHttpMessage" in m for m in messages) >= 2
    assert any("ContentEncodingError" in m or "RequestPayloadError" in m for m in messages)
    assert any(m == "POST /webhook: the client closed the connection" for m in messages)


# -- bodies that do not come, connections that idle ------------------------------------------
async def test_a_body_that_does_not_arrive_in_time_is_408(
    rt: Runtime, aiohttp_client: ClientFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http_body, "BODY_TIMEOUT", 0.3)
    client = await aiohttp_client(make_app(rt.web))
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    try:
        writer.write(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n"
                     b"X-Hub-Signature-256: " + sign(b"x" * 50).encode()
                     + b"\r\n\r\n{\"object\"")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
        body = await asyncio.wait_for(reader.readexactly(length), 10)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 408 ") and b"Connection: close" in head
    assert json.loads(body) == {"error": "the request body did not arrive within 0.3 s"}
    row = await rt.db.fetchone("SELECT count(*) FROM events")
    assert row is not None and row[0] == 0


async def test_meta_callbacks_answer_408_to_a_body_that_does_not_arrive(
    rt: Runtime, aiohttp_client: ClientFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http_body, "BODY_TIMEOUT", 0.3)
    client = await aiohttp_client(make_app(rt.web))
    for path in ("/meta/deauthorize", "/meta/data-deletion"):
        head, body = await withheld_body_answer(client.server.port, path)
        assert head.startswith(b"HTTP/1.1 408 ") and b"Connection: close" in head
        assert json.loads(body) == {"error": "the request body did not arrive within 0.3 s"}


async def test_idle_connections_are_closed_after_the_keepalive(rt: Runtime) -> None:
    runner = web_runner(make_app(rt.web), keepalive=0.3)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
        # A connection that never sends a request is closed (read returns at EOF).
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        # So is one that idles after a complete request.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 10)
        assert answer.startswith(b"HTTP/1.1 200 ") and b'"status": "ok"' in answer
        writer.close()
    finally:
        await runner.cleanup()


# -- Expect: 100-continue -----------------------------------------------------------------
async def _expect_answer(port: int, path: str, length: int) -> bytes:
    """The first answer head to a POST that announces ``length`` bytes and waits for 100."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n"
                     "Expect: 100-continue\r\n\r\n".encode())
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()


@pytest.mark.parametrize("path", ["/webhook", "/meta/data-deletion", "/meta/deauthorize"])
async def test_an_announced_oversized_body_is_refused_before_100_continue(
    rt: Runtime, aiohttp_client: ClientFactory, path: str,
) -> None:
    client = await aiohttp_client(make_app(rt.web))
    head = await _expect_answer(client.server.port, path, rt.web.max_body_bytes + 1)
    # Not "100 Continue": the client must not upload what will be refused.
    assert head.startswith(b"HTTP/1.1 413 ") and b"Connection: close" in head
    if path == "/webhook":
        text = rt.web.metrics.render().decode()
        assert 'instaset_webhook_rejections_total{reason="too_large"} 1.0' in text


async def test_a_body_within_the_limit_still_gets_100_continue(
    rt: Runtime, aiohttp_client: ClientFactory,
) -> None:
    client = await aiohttp_client(make_app(rt.web))
    body = b'{"object": "instagram", "entry": []}'
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    try:
        writer.write(b"POST /webhook HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                     b"Content-Length: %d\r\nX-Hub-Signature-256: %s\r\n\r\n"
                     % (len(body), sign(body).encode()))
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        writer.write(body)
        second = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()
    assert first == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert second.startswith(b"HTTP/1.1 200 ")


# -- hosts and texts that end up in URLs and logs ---------------------------------------------
@pytest.mark.parametrize(("host", "ok"), [
    ("example.com", True), ("example.com:8443", True), ("localhost", True),
    ("127.0.0.1:8787", True), ("[2001:db8::1]", True), ("[2001:db8::1]:443", True),
    ("a-b.c0", True), ("example.com.", True), ("my_host:8787", True), ("EXAMPLE.COM", True),
    ("xn--bcher-kva.example", True), ('[::1%"><b>]', False), ("[fe80::1%eth0]", False),
    ("[::1%a@b]:80", False), ("example.com..", False),
    ('x"><script>', False), ("user@host", False), ("%41", False), ("..", False), ("-", False),
    ("x:0", False), ("x:65536", False), ("x:", False), ("a" * 64, False),
    (".".join(["a" * 63] * 4) + "a", False), ("-a.com", False), ("a-.com", False),
    ("é.com", False), ("a b", False), ("[::1", False), ("[zz]", False), ("[::1]x", False),
    ("a:1:2", False), ("", False), ("x:١٢", False),
])
def test_valid_host(host: str, ok: bool) -> None:
    assert valid_host(host) is ok


def test_one_line_removes_what_could_forge_a_log_line() -> None:
    text = "oops\n2026-11-30 08:00:00,000 ERROR instaset.webhook: FORGED\r\u202eevil\u200b \x00!"
    out = one_line(text)
    assert "\n" not in out and "\r" not in out and "\u202e" not in out and "\x00" not in out
    assert out == "oops 2026-11-30 08:00:00,000 ERROR instaset.webhook: FORGED evil !"
    assert one_line("Permissions error: user denied") == "Permissions error: user denied"
