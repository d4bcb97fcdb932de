"""The baseline of ``bench/e2e.py``: a bare relay from webhook to reply, with no instaset.

Run by ``bench/e2e.py`` as a subprocess on the same event loop as ``instaset serve``::

    python bench/e2e_relay.py --graph-url URL --token TOKEN --secret SECRET

It does the least a reply bot can do with the same load: per webhook POST it reads the body,
checks ``X-Hub-Signature-256``, decodes the JSON and answers 200; for each inbound DM that
names one of the bench's workflow keywords it then sends that workflow's reply through
instaset's own :class:`~instaset.graph.GraphClient` (the same HTTP client code), in a task
of its own. Echoes (the sandbox delivers one per reply, as Meta does) are answered and
dropped. Nothing is stored, queued or looked up (no database, no profile call, no engine),
and nothing survives a crash: it is a floor for the machine's HTTP and Python cost at that
moment, not a design to copy. Prints ``relay listening on http://127.0.0.1:PORT`` on
stderr once it serves; exits on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import sys

import aiohttp
from aiohttp import web
from serve_http import serve_until_signal  # bench/serve_http.py

from instaset.cli.app import server_loop_factory
from instaset.graph import GraphClient


def keyword(i: int) -> str:
    return f"kw{i:02d}word"


def reply_text(i: int) -> str:
    return f"Reply from workflow {i:02d}: here is your link https://example.com/{i}"


async def relay(args: argparse.Namespace) -> None:
    replies = {keyword(i): reply_text(i) for i in range(args.workflows)}
    secret = args.secret.encode()
    tasks: set[asyncio.Task[None]] = set()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                    timeout=aiohttp.ClientTimeout(total=20))
    graph = GraphClient(session, graph_url=args.graph_url, api_version=args.api_version,
                        api_url=args.graph_url)

    async def send(account: str, recipient: str, text: str) -> None:
        try:
            await graph.send_text(account, recipient, text, token=args.token)
        except Exception as exc:  # a baseline that lost a reply shows up as "missing"
            print(f"relay: send to {recipient} failed: {exc}", file=sys.stderr)

    async def webhook(request: web.Request) -> web.Response:
        body = await request.read()
        given = request.headers.get("X-Hub-Signature-256", "")
        expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return web.Response(status=403, text="bad signature")
        try:
            payload = json.loads(body)
            for entry in payload["entry"]:
                for item in entry.get("messaging", ()):
                    message = item.get("message") or {}
                    if message.get("is_echo"):
                        continue
                    word = next((w for w in str(message.get("text", "")).split()
                                 if w in replies), None)
                    if word is not None:
                        task = asyncio.create_task(
                            send(str(entry["id"]), str(item["sender"]["id"]), replies[word]))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
        except (ValueError, KeyError, TypeError, AttributeError):
            return web.Response(status=400, text="bad payload")
        return web.Response(text="EVENT_RECEIVED", content_type="text/plain")

    app = web.Application()
    app.add_routes([web.post("/webhook", webhook)])
    try:
        await serve_until_signal(app, args.port, "relay")
    finally:
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        await session.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--graph-url", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--secret", required=True)
    ap.add_argument("--api-version", default="v25.0")
    ap.add_argument("--workflows", type=int, default=50)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    with asyncio.Runner(loop_factory=server_loop_factory()) as runner:
        runner.run(relay(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
