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


async def in_time(request: web.Request, read: Callable[[], Awaitable[T]]) -> T:
    """``read()`` within :data:`BODY_TIMEOUT` seconds (read at call time) unless the body
    has arrived already."""
    if request.content.is_eof():
        return await read()
    async with asyncio.timeout(BODY_TIMEOUT):
        return await read()


def too_slow_message() -> str:
    """What a 408 says (every route that reads a body with :func:`in_time`)."""
    return f"the request body did not arrive within {BODY_TIMEOUT:g} s"


def too_slow() -> web.Response:
    """The answer to a body that did not arrive in time (408); the connection is closed
    (the rest of the body may still come)."""
    resp = web.json_response({"error": too_slow_message()}, status=408)
    resp.force_close()
    return resp


def too_slow_error() -> web.HTTPRequestTimeout:
    """:func:`too_slow` as an exception to raise from inside a handler's helpers."""
    return web.HTTPRequestTimeout(text=json.dumps({"error": too_slow_message()}),
                                  content_type="application/json",
                                  headers={"Connection": "close"})
