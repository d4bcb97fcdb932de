"""HTTP helpers for tests: a real `instaset serve --sandbox --log-format json` subprocess
whose log a test reads, a raw request whose body never arrives, and a reserved port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO


def run_json_serve(tmp_path: Path, during: Callable[[int, IO[str], list[str]], None]
                   ) -> list[str]:
    """Start the daemon on a free port, wait for "listening", call ``during(port, stderr,
    lines)`` (it may read more stderr lines into ``lines``), then SIGTERM it and return every
    stderr line. Fails the test unless it exits 0."""
    config = tmp_path / "config.yaml"
    config.write_text(f"storage:\n  path: {tmp_path / 'serve.db'}\n", "utf-8")
    env = {**os.environ, "INSTASET_HOME": str(tmp_path / "home"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "instaset", "--config", str(config), "serve", "--sandbox",
         "--port", "0", "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        port = 0
        for line in proc.stderr:  # ends at "listening" or when the process exits
            lines.append(line)
            if m := re.search(r"instaset listening on http://127\.0\.0\.1:(\d+)", line):
                port = int(m.group(1))
                break
        assert port, "".join(lines)
        during(port, proc.stderr, lines)
        proc.terminate()
        _, rest = proc.communicate(timeout=60)
        lines += rest.splitlines(keepends=True)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "".join(lines)
    return lines


async def withheld_body_answer(port: int, path: str) -> tuple[bytes, bytes]:
    """POST ``path`` announcing 50 bytes, send 10, wait: the (head, body) of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n"
                     "Content-Type: application/x-www-form-urlencoded\r\n\r\n"
                     "signed_req".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
        return head, await asyncio.wait_for(reader.readexactly(length), 10)
    finally:
        writer.close()


@contextlib.contextmanager
def reserved_port() -> Iterator[int]:
    """A port on 127.0.0.1 kept for the caller until the block ends, for a server that the
    code under test binds later, once or several times (``instaset connect``'s callback).

    Picking a free port and closing it (bind to 0, close) leaves it to anyone until the server
    binds it: another process's server (bind to 0) or an outgoing connection's local port
    may take it meanwhile, and the server then fails with "address already in use": a flaky
    test on a busy machine. Here the port stays bound (SO_REUSEADDR, never listening), so
    the kernel gives it to no other bind to 0 and no connect, while our server, which binds
    with SO_REUSEADDR too (asyncio's default on POSIX, in this process or a child), can
    still listen on it, and listen again after closing. Nothing answers on it meanwhile: a
    connection to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])
