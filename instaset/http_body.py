"""Reading a request body: with a deadline, and not at all when it is too large.

aiohttp's server has no body read timeout: a client that sends the headers and then
trickles or withholds the body would hold a connection and a handler for ever. Contract:
:func:`in_time` returns what ``read()`` returns, or raises :class:`TimeoutError` when the
body is not complete within :data:`BODY_TIMEOUT` seconds; a body that already arrived with
the headers (a webhook's usually does) is read without arming a timer.

:func:`expect_within` answers ``Expect: 100-continue`` with the refusal itself when the
announced body is over the limit, so the client does not upload what will be refused.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web
from aiohttp.web_urldispatcher import _default_expect_handler

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


ExpectHandler = Callable[[web.Request], Awaitable[web.StreamResponse | None]]


def expect_within(
    limit: int, refuse: Callable[[web.Request], web.StreamResponse]
) -> ExpectHandler:
    """An ``expect_handler`` for a route that reads a body of at most ``limit`` bytes.

    aiohttp's own handler says ``100 Continue`` to any ``Expect: 100-continue`` and the
    413 comes only once the client has sent ``limit`` bytes. Here a request whose
    Content-Length is over ``limit`` gets ``refuse(request)`` at once, its connection
    closed (the body may follow anyway); any other goes to aiohttp's handler.
    """

    async def handle(request: web.Request) -> web.StreamResponse | None:
        if request.content_length is not None and request.content_length > limit:
            resp = refuse(request)
            resp.force_close()
            return resp
        # aiohttp's (private) default: 100 Continue, or 417 for an unknown expectation.
        await _default_expect_handler(request)
        return None

    return handle


def too_large(request: web.Request) -> web.Response:
    """The answer to a body over the route's limit (413)."""
    return web.json_response({"error": "body too large"}, status=413)


def with_expect(route: web.RouteDef, handler: ExpectHandler) -> web.RouteDef:
    """``route`` with ``handler`` as its expect handler, unless it has one already."""
    if "expect_handler" in route.kwargs:
        return route
    return web.RouteDef(route.method, route.path, route.handler,
                        {**route.kwargs, "expect_handler": handler})
