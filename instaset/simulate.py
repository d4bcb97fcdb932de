"""Simulated Instagram users: the daemon's ``/sandbox/*`` routes (sandbox mode only) and the
client side of ``instaset simulate``.

In sandbox mode ``simulate`` asks the daemon's sandbox to act as the user: the sandbox records
the message (so its 24 h window rule knows about it) and posts the signed webhook to the
daemon, exactly as Meta would. Against a daemon that is not in sandbox mode, ``simulate``
signs a Meta-shaped webhook with the app secret that daemon uses (:func:`daemon_signing`) and
posts it to ``/webhook``.

Contracts:

- ``POST /sandbox/dm`` and ``POST /sandbox/comment`` take a JSON object ``{"user", "text",
  "media"}``, ``POST /sandbox/postback`` (an ice-breaker, menu or button tap, which opens
  the 24 h window) ``{"user", "payload", "title"}`` (``user`` required, and ``payload``
  for a tap; every field a string or absent; no lone surrogates). Each answers
  ``{"user": IGSID, "webhook_status": N}`` where N is the status the daemon really
  answered the sandbox's signed webhook with (its first POST: one not accepted is retried
  in the background and, given up, recorded in the sandbox's ``undelivered``, as
  ``Sandbox.delivery`` says). Bad input gets 400 ``{"error": "..."}``; a webhook that
  could not be delivered at all, or was not answered within :data:`ROUTE_WAIT` seconds
  (the sandbox keeps waiting for it, as Meta does), gets 502 ``{"error": "..."}``.
- :func:`simulate` returns ``{"user", "webhook_status": 200}`` or raises
  :class:`InstasetError` naming what went wrong: an unreachable daemon, an answer that is not
  instaset's, a refused request, or a webhook the daemon did not accept (any status but 200).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets as pysecrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from instaset.config_models import ICE_BREAKER_QUESTION_MAX, POSTBACK_PAYLOAD_MAX
from instaset.errors import InstasetError
from instaset.http_body import in_time, too_slow_error
from instaset.oneline import one_line
from instaset.sandbox import (
    Sandbox,
    build_comment_payload,
    build_dm_payload,
    build_postback_payload,
    signed_delivery,
)
from instaset.store import contacts as contact_store

if TYPE_CHECKING:
    from instaset.config import Config
    from instaset.store.db import Database

DEFAULT_MEDIA = "17900000000000001"
# How long a /sandbox/* route waits for the daemon's answer to the webhook, and the margin
# `simulate` waits beyond it: the route's explanation must arrive before the client gives up
# (Meta's own timeout, the sandbox's, is longer: 20 s).
ROUTE_WAIT = 10.0
_CLIENT_MARGIN = 5.0
# An answer longer than this is not the small JSON document the sandbox routes send.
_MAX_ANSWER = 64 * 1024
_MAX_DETAIL = 200


def stable_igsid(username: str) -> str:
    """A made-up but stable IGSID for a simulated username (valid Unicode text)."""
    return str(9_000_000_000_000_000 + int(hashlib.sha256(username.encode()).hexdigest()[:12], 16))


def is_igsid(who: str) -> bool:
    """An IGSID is ASCII digits only (``str.isdigit`` alone accepts ``"١٢٣"`` and ``"²"``)."""
    return who.isascii() and who.isdigit()


def _valid_unicode(text: str) -> bool:
    """False for a lone surrogate (JSON's ``"\\ud800"``, or argv bytes that were not UTF-8):
    no UTF-8 text, SQLite column or signed body can carry it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# -- the daemon's /sandbox/* routes -------------------------------------------------------


def _bad(message: str, *, close: bool = False) -> web.HTTPBadRequest:
    """A 400 to raise (an HTTPException passes never_500), JSON like every other error
    answer of the daemon; ``close``: the connection closes after it (an unreadable body)."""
    headers = {"Connection": "close"} if close else None
    return web.HTTPBadRequest(text=json.dumps({"error": message}),
                              content_type="application/json", headers=headers)


def _field(body: dict[str, Any], key: str) -> str | None:
    """``body[key]`` as text; None when absent or null. Anything but a string (a list, an
    object, a number) and a string with a lone surrogate are refused (400)."""
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad(f"{key!r} must be a string, not {type(value).__name__}")
    if not _valid_unicode(value):
        raise _bad(f"{key!r} is not valid Unicode (it contains a lone surrogate)")
    return value


def tap_problem(title: str | None, payload: str) -> str | None:
    """Why Instagram could not deliver a tap with this payload and button title (None: no
    title given), or None. A tap carries what a configured button sends (config_models'
    limits): a longer one is refused rather than stored as an event that no real account
    could ever receive."""
    if len(payload) > POSTBACK_PAYLOAD_MAX:
        return (f"the payload is {len(payload)} characters; a button sends at most "
                f"{POSTBACK_PAYLOAD_MAX}: shorten it")
    if title is not None and len(title) > ICE_BREAKER_QUESTION_MAX:
        return (f"the title is {len(title)} characters; a button's title has at most "
                f"{ICE_BREAKER_QUESTION_MAX} (an ice breaker's question): shorten it")
    return None


def untitled(payload: str) -> str:
    """The title of a tap given none: its payload, cut to the longest a title can be."""
    return payload[:ICE_BREAKER_QUESTION_MAX]


def _user(body: dict[str, Any], box: Sandbox) -> str:
    """Accept an IGSID or a username; a new username gets a stable new IGSID."""
    who = (_field(body, "user") or "").lstrip("@")
    if not who:
        raise _bad("'user' is required (a username or an IGSID)")
    if is_igsid(who):
        return who
    for igsid, name in box.users.items():
        if name == who:
            return igsid
    igsid = stable_igsid(who)
    box.add_user(igsid, who)
    return igsid


async def remember_stored_users(box: Sandbox, db: Database) -> int:
    """Tell a sandbox that starts on existing data about the contacts stored for its account
    (Meta would still know them after a restart): replies to them are accepted within their
    window, while an IGSID nobody stored still gets Meta's "user not found". Returns how many
    contacts it was told about."""
    rows = await contact_store.known_users(db, box.account_id)
    for row in rows:
        box.know_user(row["id"], row["username"], row["last_inbound_at"])
    return len(rows)


def sandbox_routes(box: Sandbox) -> list[web.RouteDef]:
    async def dm(request: web.Request) -> web.Response:
        body = await _json(request)
        igsid = _user(body, box)
        text = _field(body, "text") or ""
        payload = await box.user_sends_dm(igsid, text, deliver=False)
        status = await _deliver(box, "messages", payload)
        return web.json_response({"user": igsid, "webhook_status": status})

    async def comment(request: web.Request) -> web.Response:
        body = await _json(request)
        igsid = _user(body, box)
        text = _field(body, "text") or ""
        media = _field(body, "media") or DEFAULT_MEDIA
        payload = await box.user_comments(igsid, text, media, deliver=False)
        status = await _deliver(box, "comments", payload)
        return web.json_response({"user": igsid, "webhook_status": status})

    async def postback(request: web.Request) -> web.Response:
        body = await _json(request)
        igsid = _user(body, box)
        payload = _field(body, "payload")
        if not payload or not payload.strip():
            raise _bad("'payload' is required (what the ice breaker or menu item sends)")
        title = _field(body, "title") or None
        problem = tap_problem(title, payload)
        if problem is not None:
            raise _bad(problem)
        title = title or untitled(payload)
        event = await box.user_taps_postback(igsid, title, payload, deliver=False)
        status = await _deliver(box, "messaging_postbacks", event)
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
        web.post("/sandbox/postback", postback),
        web.get("/sandbox/thread/{user}", thread),
    ]


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = await in_time(request, request.json)
    except TimeoutError:
        raise too_slow_error() from None
    except (ValueError, LookupError, RecursionError):
        # ValueError: not JSON, not UTF-8; LookupError: a charset Python does not know;
        # RecursionError: nesting deeper than the parser's stack (a 100k-deep array). All
        # are the client's fault.
        raise _bad("body must be JSON") from None
    except (web.RequestPayloadError, HttpProcessingError):
        # The rest of the stream cannot be read either: answer, then close.
        raise _bad("unreadable body (bad Content-Encoding, or cut short)", close=True) from None
    if not isinstance(body, dict):
        raise _bad("body must be a JSON object")
    return body


async def _deliver(box: Sandbox, field: str, payload: dict[str, object]) -> int:
    """Post the signed webhook to the daemon as the sandbox delivers a user's event (retried
    in the background when not accepted); the status the daemon really answered the first
    POST with. Meta sends nothing for an account that is not subscribed, and neither does
    the sandbox: 409."""
    if not box.delivers(field):
        raise web.HTTPConflict(
            text=json.dumps({"error": (
                f"the sandbox account is not subscribed to webhooks ({field}), so Meta would "
                "send nothing (was it disconnected?); restart `instaset serve --sandbox`, "
                "which subscribes it")}),
            content_type="application/json",
        )
    try:
        return await box.deliver_event(payload, wait=ROUTE_WAIT)
    except (ConnectionError, ValueError) as exc:
        raise web.HTTPBadGateway(
            text=json.dumps({"error": f"the sandbox could not deliver the webhook: {exc}"}),
            content_type="application/json",
        ) from None


# -- the client: `instaset simulate` ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Signing:
    """The app secret ``simulate`` signs with, and where it came from (for messages; never
    the value)."""

    secret: str
    source: str


def daemon_signing(config: Config) -> Signing:
    """The app secret a daemon (not in sandbox mode) started on ``config`` accepts, found as
    ``instaset serve`` finds it: the config's (``instagram.app_secret``,
    ``INSTASET_APP_SECRET``, ``meta_app_secret``), else the secret store's. Reads the secret
    store (synchronous; may touch the OS keyring). Raises :class:`InstasetError` when there
    is none."""
    from instaset.secrets import app_secrets, open_secrets

    configured = config.instagram.webhook_secrets()
    if configured:
        return Signing(configured[0].decode(), "the config's app secret "
                       "(instagram.app_secret or INSTASET_APP_SECRET)")
    try:
        store = open_secrets(config)
        stored = app_secrets(config, store)
    except InstasetError as exc:
        raise InstasetError(
            "no app secret to sign the webhook with: the config has none and the secret "
            f"store could not be read ({exc})"
        ) from None
    if not stored:
        raise InstasetError(
            "no app secret to sign the webhook with (the daemon is not in sandbox mode); set "
            "instagram.app_secret or INSTASET_APP_SECRET, or put it in the secret store, as "
            "for `instaset serve`"
        )
    return Signing(stored[0].decode(), f"the app secret in the secret store ({store.name})")


def _clean(text: str) -> str:
    """One short line of someone else's text: control and format characters (newlines,
    ANSI escapes, bidi overrides) become spaces, and it is cut to a readable length."""
    line = one_line(text)
    return line if len(line) <= _MAX_DETAIL else line[:_MAX_DETAIL] + "..."


def _detail(raw: bytes) -> str:
    """What an error answer says: the ``error`` of instaset's JSON, else its text."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return _clean(body["error"])
    return _clean(raw.decode("utf-8", "replace")) or "empty answer"


async def _read(resp: aiohttp.ClientResponse) -> bytes:
    """The answer's body, at most a little over ``_MAX_ANSWER`` bytes (a foreign server may
    send anything)."""
    out = bytearray()
    while len(out) <= _MAX_ANSWER:
        chunk = await resp.content.read(_MAX_ANSWER + 1 - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def _sandbox_answer(base: str, kind: str, status: int, raw: bytes) -> dict[str, Any]:
    """The sandbox route's answer, checked: a refusal or anything that is not its JSON is an
    :class:`InstasetError`."""
    if status != 200:
        raise InstasetError(f"the sandbox at {base} refused the {kind} (HTTP {status}): "
                            f"{_detail(raw)}")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        body = None
    if (not isinstance(body, dict) or not isinstance(body.get("user"), str)
            or type(body.get("webhook_status")) is not int):
        raise InstasetError(
            f"{base}/sandbox/{kind} answered HTTP 200 but not with instaset's JSON "
            f"({_detail(raw)}); is --url the address of `instaset serve`?"
        )
    return {"user": body["user"], "webhook_status": body["webhook_status"]}


def _check_webhook(base: str, status: int, detail: str, signing: Signing | None) -> None:
    """A webhook the daemon did not accept with 200 is a failed simulation: say why and
    what to do. ``signing`` is None when the sandbox signed it (with the daemon's secret)."""
    if status == 200:
        return
    said = f"HTTP {status}: {detail}" if detail else f"HTTP {status}"
    if status in (401, 403) and signing is not None:
        raise InstasetError(
            f"the daemon at {base} refused the webhook's signature ({said}); simulate signed "
            f"it with {signing.source}. Run simulate with the daemon's config (--config), or "
            "give both the same app secret (INSTASET_APP_SECRET)"
        )
    hint = {
        400: "the daemon found the webhook malformed",
        401: "the daemon found no signature on the sandbox's webhook",
        403: "the daemon refused the sandbox's own signature",
        404: f"{base} has no /webhook route; is --url the address of `instaset serve`?",
        413: "the webhook is too large for the daemon (server.max_body_bytes)",
        503: "the daemon is busy or shutting down; try again",
    }.get(status, "the daemon did not accept the webhook")
    raise InstasetError(f"the webhook was not accepted ({said}): {hint}")


async def _connected_accounts(session: aiohttp.ClientSession, base: str) -> set[str] | None:
    """The ids of the accounts whose events the daemon stores (every account it knows but
    the disconnected ones, as ingest does), from its ``/healthz``; None when that cannot be
    told (then the webhook is sent anyway)."""
    async with session.get(f"{base}/healthz") as resp:
        raw = await _read(resp) if resp.status == 200 else b""
    try:
        accounts = json.loads(raw).get("accounts") if raw else None
    except (ValueError, RecursionError, AttributeError):
        return None
    if not isinstance(accounts, list):
        return None
    return {str(a.get("id")) for a in accounts
            if isinstance(a, dict) and a.get("state") != "disconnected"}


def postback_title(config: Config, payload: str) -> str:
    """The title a tap on ``payload`` carries: the config's ice-breaker question or menu
    title that sends it, else the payload itself (a template button's, say), cut to the
    longest a title can be."""
    for ice in config.ice_breakers or []:
        if ice.payload == payload:
            return ice.question
    for item in config.menu or []:
        if item.payload == payload:
            return item.title
    return untitled(payload)


async def simulate(
    base_url: str, kind: str, user: str, text: str, *, media: str | None,
    signing: Callable[[], Signing], account_id: str, title: str | None = None,
) -> dict[str, Any]:
    """Post one simulated user action (``kind`` "dm", "comment", or "postback": a tap whose
    payload is ``text`` and button title ``title``, the payload when None) to a running
    daemon.

    Returns ``{"user": IGSID, "webhook_status": 200}``. ``signing`` is called (in a thread)
    only when the daemon is not in sandbox mode. Raises :class:`InstasetError` for bad input,
    an unreachable daemon, an answer that is not instaset's, or a webhook not accepted."""
    tap = kind == "postback"
    for name, value in (("USER", user), ("PAYLOAD" if tap else "TEXT", text),
                        ("--media", media or ""), ("--title", title or "")):
        if not _valid_unicode(value):
            raise InstasetError(f"{name} is not valid UTF-8 text; check the terminal's encoding")
    who = user.lstrip("@")
    if not who:
        raise InstasetError("USER must be a username or an Instagram-scoped id, not empty")
    if tap and not text.strip():
        raise InstasetError("PAYLOAD must not be empty: give what the ice breaker or menu "
                            "item sends (its `payload` in the config)")
    problem = tap_problem(title or None, text) if tap else None
    if problem is not None:
        raise InstasetError(problem)
    tap_title = title or untitled(text)  # what the tap carries (unused for a dm or comment)
    route_body = ({"user": who, "payload": text, "title": tap_title} if tap
                  else {"user": who, "text": text, "media": media})
    base = base_url.rstrip("/")
    timeout = aiohttp.ClientTimeout(total=ROUTE_WAIT + _CLIENT_MARGIN)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.post(f"{base}/sandbox/{kind}", json=route_body) as resp:
                status, raw = resp.status, await _read(resp)
            if status != 404:
                result = _sandbox_answer(base, kind, status, raw)
                _check_webhook(base, result["webhook_status"], "", None)
                return result
            # Not in sandbox mode: sign a Meta-shaped webhook ourselves.
            connected = await _connected_accounts(session, base)
            if connected is not None and account_id not in connected:
                raise InstasetError(
                    f"the daemon at {base} has no connected Instagram account {account_id} "
                    "(sandbox.account_id): it would answer 200 and drop the event. Run "
                    "`instaset serve --sandbox`, or set sandbox.account_id to the id of a "
                    "connected account (`instaset accounts`)"
                )
            sign = await asyncio.to_thread(signing)
            now_ms = int(time.time() * 1000)
            igsid = who if is_igsid(who) else stable_igsid(who)
            mid = "sim-" + pysecrets.token_hex(12)
            if kind == "dm":
                payload = build_dm_payload(account_id, igsid, text, mid, now_ms)
            elif tap:
                payload = build_postback_payload(account_id, igsid, tap_title, text, mid,
                                                  now_ms)
            else:
                payload = build_comment_payload(
                    account_id, igsid, who, text, media or DEFAULT_MEDIA,
                    "sim" + str(now_ms), now_ms // 1000,
                )
            body, headers = signed_delivery(payload, sign.secret)
            async with session.post(f"{base}/webhook", data=body, headers=headers) as resp:
                status, raw = resp.status, await _read(resp)
            _check_webhook(base, status, _detail(raw) if status != 200 else "", sign)
            return {"user": igsid, "webhook_status": status}
    except aiohttp.ClientError as exc:
        raise InstasetError(
            f"cannot reach instaset at {base} ({type(exc).__name__}); is `instaset serve` running?"
        ) from None
    except TimeoutError:
        raise InstasetError(
            f"instaset at {base} did not answer within {timeout.total:.0f} s"
        ) from None
