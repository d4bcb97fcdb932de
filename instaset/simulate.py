"""Simulated Instagram users: the daemon's ``/sandbox/*`` routes (sandbox mode only) and the
client side of ``instaset simulate``.

In sandbox mode ``simulate`` asks the daemon's sandbox to act as the user: the sandbox records
the message (so its 24 h window rule knows about it) and posts the signed webhook to the
daemon, exactly as Meta would. Against a daemon that is not in sandbox mode, ``simulate``
signs a Meta-shaped webhook with the configured app secret and posts it to ``/webhook``.
"""

from __future__ import annotations

import hashlib
import secrets as pysecrets
import time
from typing import Any

import aiohttp
from aiohttp import web

from instaset.errors import InstasetError
from instaset.sandbox import Sandbox, build_comment_payload, build_dm_payload, signed_delivery


def stable_igsid(username: str) -> str:
    """A made-up but stable IGSID for a simulated username."""
    return str(9_000_000_000_000_000 + int(hashlib.sha256(username.encode()).hexdigest()[:12], 16))


def _user(body: dict[str, Any], box: Sandbox) -> str:
    """Accept an IGSID or a username; a new username gets a stable new IGSID."""
    who = str(body.get("user") or "").lstrip("@")
    if not who:
        raise web.HTTPBadRequest(text="'user' is required")
    if who.isdigit():
        return who
    for igsid, name in box.users.items():
        if name == who:
            return igsid
    igsid = stable_igsid(who)
    box.add_user(igsid, who)
    return igsid


def sandbox_routes(box: Sandbox) -> list[web.RouteDef]:
    async def dm(request: web.Request) -> web.Response:
        body = await _json(request)
        igsid = _user(body, box)
        status = await _deliver(box.user_sends_dm(igsid, str(body.get("text") or "")))
        return web.json_response({"user": igsid, "webhook_status": status})

    async def comment(request: web.Request) -> web.Response:
        body = await _json(request)
        igsid = _user(body, box)
        media = str(body.get("media") or "17900000000000001")
        payload = await box.user_comments(igsid, str(body.get("text") or ""), media,
                                          deliver=False)
        status = await box.deliver(payload)
        return web.json_response({"user": igsid, "webhook_status": status})

    async def thread(request: web.Request) -> web.Response:
        igsid = _user({"user": request.match_info["user"]}, box)
        return web.json_response([
            {"mid": m.mid, "direction": m.direction, "text": m.text}
            for m in box.thread(igsid)
        ])

    return [
        web.post("/sandbox/dm", dm),
        web.post("/sandbox/comment", comment),
        web.get("/sandbox/thread/{user}", thread),
    ]


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="body must be JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object")
    return body


async def _deliver(coro: Any) -> int:
    payload = await coro
    return 200 if payload else 500


async def simulate(
    base_url: str, kind: str, user: str, text: str, *, media: str | None, secret: str | None,
    account_id: str,
) -> dict[str, Any]:
    """Post one simulated user action to a running daemon. Returns what the daemon said."""
    base = base_url.rstrip("/")
    timeout = aiohttp.ClientTimeout(total=15)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.post(
                f"{base}/sandbox/{kind}", json={"user": user, "text": text, "media": media}
            ) as resp:
                if resp.status != 404:
                    body = await resp.json(content_type=None)
                    if resp.status != 200:
                        raise InstasetError(f"the sandbox refused the {kind}: {body}")
                    return dict(body)
            # Not in sandbox mode: sign a Meta-shaped webhook ourselves.
            if not secret:
                raise InstasetError(
                    "the daemon is not in sandbox mode and no app secret is configured to "
                    "sign with; set instagram.app_secret or INSTASET_APP_SECRET"
                )
            now_ms = int(time.time() * 1000)
            igsid = user if user.isdigit() else stable_igsid(user)
            mid = "sim-" + pysecrets.token_hex(12)
            if kind == "dm":
                payload = build_dm_payload(account_id, igsid, text, mid, now_ms)
            else:
                payload = build_comment_payload(
                    account_id, igsid, user, text, media or "17900000000000001",
                    "sim" + str(now_ms), now_ms // 1000,
                )
            raw, headers = signed_delivery(payload, secret)
            async with session.post(f"{base}/webhook", data=raw, headers=headers) as resp:
                return {"user": igsid, "webhook_status": resp.status}
    except aiohttp.ClientError as exc:
        raise InstasetError(
            f"cannot reach instaset at {base} ({type(exc).__name__}); is `instaset serve` running?"
        ) from None
