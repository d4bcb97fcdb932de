"""Reading a request body with a deadline.

aiohttp's server has no body read timeout: a client that sends the headers and then
trickles or withholds the body would hold a connection and a handler for ever. Contract:
:func:`in_time` returns what ``read()`` returns, or raises :class:`TimeoutError` when the
body is not complete within :data:`BODY_TIMEOUT` seconds; a body that already arrived with
the headers (a webhook's usually does) is read without arming a timer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web

# Meta gives up on a webhook after 20 s; a body still incomplete after 30 s is not coming.
BODY_TIMEOUT = 30.0

T = TypeVar("T")


async def in_time(request: web.Request, read: Callable[[], Awaitable[T]],
                  timeout: float | None = None) -> T:
    """``read()`` within ``timeout`` seconds (default :data:`BODY_TIMEOUT`, read at call
    time) unless the body has arrived already."""
    if request.content.is_eof():
        return await read()
    async with asyncio.timeout(BODY_TIMEOUT if timeout is None else timeout):
        return await read()


def _too_slow_text() -> str:
    return json.dumps({"error": f"the request body did not arrive within {BODY_TIMEOUT:g} s"})


def too_slow() -> web.Response:
    """The answer to a body that did not arrive in time (408); the connection is closed
    (the rest of the body may still come)."""
    resp = web.Response(status=408, text=_too_slow_text(), content_type="application/json")
    resp.force_close()
    return resp


def too_slow_error() -> web.HTTPRequestTimeout:
    """:func:`too_slow` as an exception to raise from inside a handler's helpers."""
    return web.HTTPRequestTimeout(text=_too_slow_text(), content_type="application/json",
                                  headers={"Connection": "close"})
