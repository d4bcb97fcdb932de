"""The bench baselines' HTTP servers: serve an app until SIGTERM/SIGINT.

Contract: :func:`serve_until_signal` serves ``app`` on 127.0.0.1 (``port`` 0: any free
port) without an access log, prints ``<name> listening on http://127.0.0.1:PORT`` on
stderr once it accepts connections (the benches wait for that line), and returns after a
SIGTERM or SIGINT, once the server is shut down. aiohttp only: the processes that import
it load nothing of instaset through it.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from aiohttp import web


async def serve_until_signal(app: web.Application, port: int, name: str) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        bound = next(a[1] for a in runner.addresses if isinstance(a, tuple))
        print(f"{name} listening on http://127.0.0.1:{bound}", file=sys.stderr, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
