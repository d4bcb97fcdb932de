"""The daemon's /sandbox/* routes deliver a simulated user's webhook as the sandbox delivers
any user event (s19 review #3, #5): the first POST's status is answered, a webhook the daemon
does not accept is retried in the background, and a webhook the daemon does not answer gets
the route's explanation before `simulate` stops waiting.

The routes run in a small aiohttp app on 127.0.0.1 in front of a real sandbox, whose webhook
is a receiver answering from a script."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from instaset import simulate as simulate_mod
from instaset.errors import InstasetError
from instaset.sandbox import Sandbox
from instaset.simulate import Signing, sandbox_routes, simulate
from tests.conftest import on_loopback

SECRET = "simulate-delivery-secret"


@dataclass
class Setup:
    box: Sandbox
    url: str  # the routes' base URL
    script: list[int] = field(default_factory=list)  # the webhook's statuses, then 200
    hang: float = 0.0  # the webhook's wait before answering
    posts: int = 0


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    box = Sandbox(app_secret=SECRET)
    box.subscribe(["messages", "comments"])
    st = Setup(box, "")

    async def webhook(request: web.Request) -> web.Response:
        await request.read()
        st.posts += 1
        if st.hang:
            await asyncio.sleep(st.hang)
        return web.Response(status=st.script.pop(0) if st.script else 200)

    app = web.Application()
    app.router.add_post("/webhook", webhook)
    app.add_routes(sandbox_routes(box))
    async with on_loopback(app, shutdown_timeout=0.1) as base:
        st.url = base
        box.webhook_url = f"{st.url}/webhook"
        await box.start()
        yield st
        await box.stop()


async def post(st: Setup, route: str, body: object) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as session, session.post(
        f"{st.url}{route}", json=body, timeout=aiohttp.ClientTimeout(total=30),
    ) as resp:
        return resp.status, await resp.json()


@pytest.mark.parametrize("route", ["/sandbox/dm", "/sandbox/comment"])
async def test_a_webhook_the_daemon_refuses_is_retried_after_the_route_answers(
    setup: Setup, route: str
) -> None:
    setup.script = [503]
    status, answer = await post(setup, route, {"user": "alice", "text": "hi"})
    assert (status, answer["webhook_status"]) == (200, 503)
    await asyncio.wait_for(setup.box.drain(), 10)
    assert [code for _payload, code in setup.box.deliveries] == [503, 200]
    assert setup.posts == 2 and setup.box.undelivered == []


async def test_a_webhook_never_accepted_ends_in_undelivered(setup: Setup) -> None:
    setup.script = [500] * 10
    status, answer = await post(setup, "/sandbox/dm", {"user": "alice", "text": "hi"})
    assert (status, answer["webhook_status"]) == (200, 500)
    await asyncio.wait_for(setup.box.drain(), 10)
    assert [u.reason for u in setup.box.undelivered] == ["HTTP 500"]
    assert setup.posts == 1 + setup.box.delivery.retries


async def test_simulate_gets_the_routes_explanation_of_a_webhook_that_hangs(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The webhook answers later than the route waits but within the sandbox's (Meta's)
    timeout: `simulate` must get the route's 502 saying so, not give up first. The route's
    wait is made small; the client's follows from it."""
    monkeypatch.setattr(simulate_mod, "ROUTE_WAIT", 0.3)
    setup.hang = 3.0

    def no_signing() -> Signing:
        raise AssertionError("the sandbox signs its own webhooks")

    with pytest.raises(InstasetError) as err:
        await simulate(setup.url, "dm", "alice", "hi", media=None, signing=no_signing,
                       account_id=setup.box.account_id)
    message = str(err.value)
    assert "HTTP 502" in message and "has not answered within 0.3 s" in message, message
    # The POST was not cut short: the sandbox got the daemon's late answer.
    await asyncio.wait_for(setup.box.drain(), 10)
    assert [code for _p, code in setup.box.deliveries] == [200]
    assert setup.posts == 1 and setup.box.undelivered == []


async def test_a_webhook_still_unanswered_when_the_sandbox_stops_is_undelivered(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(simulate_mod, "ROUTE_WAIT", 0.2)
    setup.hang = 30.0
    status, answer = await post(setup, "/sandbox/dm", {"user": "alice", "text": "hi"})
    assert status == 502 and "has not answered within 0.2 s" in str(answer["error"])
    await asyncio.wait_for(setup.box.stop(), 10)
    assert len(setup.box.undelivered) == 1 and setup.box.deliveries == []
