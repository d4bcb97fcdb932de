"""The built-in Instagram: a real aiohttp server that answers like ``graph.instagram.com`` and
``api.instagram.com`` for one professional account, stores conversations and comments,
enforces the messaging window and private-reply rules, sends signed echo webhooks, records
every request, and breaks on demand (:class:`Fault`).

Routes live under ``/vNN.N/...`` and unversioned. One catch-all handler dispatches on the
path segments because Graph's ``/{id}`` routes (comment, conversation, message, account)
cannot be told apart by pattern."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import itertools
import logging
import random
import re
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

import aiohttp
from aiohttp import web

from instaset.sandbox.delivery import DeliveryMixin
from instaset.sandbox.faults import FaultQueue, fault_response
from instaset.sandbox.fields import Selection, bad_fields
from instaset.sandbox.limits import Limits, Meter
from instaset.sandbox.messaging import SendSpec, parse_send
from instaset.sandbox.model import (
    Comment,
    Conversation,
    DeliveryPolicy,
    Fault,
    Recorded,
    StoredMessage,
    Undelivered,
)
from instaset.sandbox.oauth import ALL_MESSAGING_SCOPES, OAuthRoutes, TokenBook, needed_scope
from instaset.sandbox.profiles import has_details, profile_response
from instaset.sandbox.users import UsersMixin
from instaset.sandbox.views import (
    as_list,
    bearer,
    comment_json,
    conversation_json,
    conversations_page,
    me_json,
    message_json,
    messenger_profile,
    read_body,
    requested_fields,
    subscribed_apps,
)
from instaset.sandbox.wire import (
    KNOWN_FIELDS,
    USER_NOT_FOUND_BODY,
    USER_NOT_FOUND_STATUS,
    WINDOW_CLOSED_BODY,
    WINDOW_CLOSED_STATUS,
    build_comment_payload,
    build_echo_payload,
    graph_error,
    new_conversation_id,
    new_mid,
    unknown_object,
)

log = logging.getLogger("instaset.sandbox")

WINDOW_SECONDS = 24 * 3600.0
HUMAN_AGENT_SECONDS = 7 * 86400.0
PRIVATE_REPLY_SECONDS = 7 * 86400.0
_VERSION = re.compile(r"v\d+\.\d+")
_KEPT_HEADERS = ("Authorization", "Content-Type", "User-Agent")
# The request being handled (its task's own context): a send marks it made as it stores the
# message, so the transcript says so even if the handler is cancelled before it answers.
_MADE: contextvars.ContextVar[list[bool] | None] = contextvars.ContextVar("made", default=None)
# Random comment sequence starts: 13 digits, leaving 10**12 ids above the highest start.
_COMMENT_BASE_LOW = 10**12
_COMMENT_BASE_SPAN = 8 * 10**12


class Sandbox(UsersMixin, DeliveryMixin):
    """A fake Meta for one Instagram professional account. See the package docstring.

    ``token_scopes`` are the scopes granted to ``token`` (tokens from the OAuth flow carry
    what was authorized). ``comment_id_base`` makes comment ids predictable (``1`` gives
    ``17900000000000001``, then ``...0002``); by default their sequence starts at a random
    point.

    No webhook is sent for the account until it subscribes (``POST /{ig-id}/subscribed_apps``
    or :meth:`subscribe`), as on Meta; see :mod:`instaset.sandbox.delivery`. ``delivery`` is
    how webhooks go out (retries, batching, duplicates, order: :class:`DeliveryPolicy`).
    ``limits`` (off by default) throttles like Meta and adds its usage header
    (:mod:`instaset.sandbox.limits`)."""

    def __init__(
        self,
        *,
        app_secret: str,
        account_id: str = "17841400000000001",
        username: str = "sandbox_creator",
        token: str = "IGAAsandbox-token",
        webhook_url: str | None = None,
        clock: Callable[[], float] = time.time,
        comment_id_base: int | None = None,
        token_scopes: tuple[str, ...] = ALL_MESSAGING_SCOPES,
        delivery: DeliveryPolicy | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.app_secret = app_secret
        self.account_id = account_id
        self.username = username
        self.token = token
        self.webhook_url = webhook_url
        self.clock = clock
        self.app_user_id = "26" + account_id[-15:].rjust(15, "0")  # app-scoped, not the IG id
        self.echo_delay = 0.05
        # Share of sends whose echo is delivered *before* the Send API answers (0 never, 1
        # always): on Meta the echo often wins that race (reference §3.1).
        self.echo_first = 0.0
        self._rng = random.Random()
        self.delivery_attempts = 3  # of an echo (user events: `delivery`)
        self.retry_delay = 0.05
        self.delivery = delivery or DeliveryPolicy()
        self.limits = limits
        self.meter = Meter(clock)
        self.echo_comment_replies = True  # Meta also sends `comments` for the account's own
        self.oauth_shape: Literal["data", "flat"] = "data"
        self.base_url: str | None = None
        self.transcript: list[Recorded] = []
        self.undelivered: list[Undelivered] = []
        self.deliveries: list[tuple[dict[str, object], int]] = []
        self.users: dict[str, str] = {}
        self.profiles: dict[str, dict[str, object]] = {}  # User Profile API overrides
        # The account's `subscribed_apps` fields (none until it subscribes, as on Meta) and
        # the App Dashboard's (every field by default): see instaset.sandbox.delivery.
        self.subscribed: list[str] = []
        self.app_fields: frozenset[str] = KNOWN_FIELDS
        self.withheld: list[Undelivered] = []
        self.messenger_profile: dict[str, object] = {}
        self.comments: dict[str, Comment] = {}
        self.tokens = TokenBook(clock, token, token_scopes)
        self._oauth = OAuthRoutes(
            self.tokens,
            app_secret=app_secret,
            app_user_id=self.app_user_id,
            shape=lambda: self.oauth_shape,
        )
        self._convs: dict[str, Conversation] = {}  # by IGSID
        self._conv_ids: dict[str, Conversation] = {}
        self._messages: dict[str, tuple[Conversation, StoredMessage]] = {}
        self._last_inbound: dict[str, float] = {}
        self._faults = FaultQueue()
        self._seq = itertools.count(1)
        # Comment ids are 17 digits like Meta's: "1790" and a 13-digit sequence. The
        # sequence starts at a random point unless a test seeds it, so a sandbox started
        # again on the same data directory does not hand out ids the daemon has stored
        # (they would be dropped as duplicates), as its random message ids do not.
        if comment_id_base is None:
            comment_id_base = _COMMENT_BASE_LOW + secrets.randbelow(_COMMENT_BASE_SPAN)
        self._comment_seq = itertools.count(comment_id_base)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024**2)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        app.on_shutdown.append(self._on_shutdown)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0 picks a free port); returns the base URL."""
        self._closing = asyncio.Event()
        runner = web.AppRunner(self.make_app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        self._runner = runner
        bound = runner.addresses[0][1]
        self.base_url = f"http://{host}:{bound}"
        return self.base_url

    async def stop(self) -> None:
        """Stop serving, cancel pending webhook deliveries and close the client session."""
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.aclose()

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def aclose(self) -> None:
        """Cancel the pending deliveries and close the client session. Never raises: a
        delivery that failed meanwhile is already in ``undelivered``."""
        self._closing.set()  # no delivery starts (or opens a session) from now on
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("a sandbox webhook delivery failed while stopping")
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _on_shutdown(self, _app: web.Application) -> None:
        self._closing.set()  # releases handlers hanging in drop_after_send

    async def _on_cleanup(self, _app: web.Application) -> None:
        await self.aclose()

    async def drain(self) -> None:
        """Wait until every scheduled webhook delivery has finished (delivered or given up)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- control -------------------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        self._faults.inject(fault)

    def revoke_token(self, token: str | None = None) -> None:
        """Invalidate ``token``, or every token issued so far: calls then answer 190."""
        self.tokens.revoke(token)

    def sends(self) -> list[Recorded]:
        """The message sends (DMs and private replies, not sender actions) the sandbox made:
        what reached the user. A send it refused (rate limit, window, validation, a fault
        answered first) is only in :meth:`send_attempts`."""
        return [r for r in self.send_attempts() if r.accepted]

    def send_attempts(self) -> list[Recorded]:
        """Every Send API request that carried a message, refused ones included; each
        ``Recorded`` says how it was answered (``status``, ``accepted``)."""
        return [
            r
            for r in self.transcript
            if r.method == "POST" and r.route.endswith("/messages") and "message" in r.json
        ]

    def thread(self, igsid: str) -> list[StoredMessage]:
        conv = self._convs.get(igsid)
        return list(conv.messages) if conv else []

    # -- store ---------------------------------------------------------------------------

    def _store(self, igsid: str, msg: StoredMessage) -> Conversation:
        conv = self._convs.get(igsid)
        if conv is None:
            conv = Conversation(new_conversation_id(self.account_id, igsid), igsid)
            self._convs[igsid] = conv
            self._conv_ids[conv.id] = conv
        conv.messages.append(msg)
        conv.updated_at = msg.at
        conv.seq = next(self._seq)
        self._messages[msg.mid] = (conv, msg)
        return conv

    def _new_comment(
        self, igsid: str, username: str, text: str, media_id: str, parent_id: str | None
    ) -> Comment:
        cid = f"1790{next(self._comment_seq):013d}"
        comment = Comment(cid, igsid, username, text, media_id, self.clock(), parent_id)
        self.comments[cid] = comment
        return comment

    # -- request handling ----------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body, fields = await read_body(request)
        params = {**dict(request.query.items()), **fields}
        headers = {h: request.headers[h] for h in _KEPT_HEADERS if h in request.headers}
        rec = Recorded(request.method, request.path, dict(request.query.items()), body,
                       headers, self.clock())
        self.transcript.append(rec)  # in arrival order; the outcome is filled in below
        made = [False]
        token = _MADE.set(made)
        outcome: tuple[int | None, bool] = (None, False)
        try:
            response, outcome = await self._answer(request, rec, params, body)
            return response
        finally:
            # Also when the handler is cancelled or raises after a send was made (stop()
            # while an echo_first send waits for its echo): made is made.
            _MADE.reset(token)
            self._outcome(rec, outcome[0], accepted=outcome[1] or made[0])

    async def _answer(self, request: web.Request, rec: Recorded, params: dict[str, str],
                      body: object) -> tuple[web.StreamResponse, tuple[int | None, bool]]:
        """The answer to one request, with its (status, whether the call was carried out)."""
        fault = self._faults.take(request.path_qs)
        if fault is not None and fault.kind == "delay":
            await self._wait(fault.delay)
        elif fault is not None and fault.kind not in ("drop_after_send", "error_after_send"):
            answer = fault_response(fault)
            return answer, (answer.status, False)
        segs = [s for s in request.path.split("/") if s]
        if segs and _VERSION.fullmatch(segs[0]):
            segs = segs[1:]
        response = await self._route(request, segs, params, body)
        if self.limits is not None:
            token = bearer(request) or params.get("access_token")
            self.meter.stamp(self.limits, response, request.method, segs, self.account_id,
                             authenticated=self.tokens.problem(token) is None)
        accepted = response.status < 300
        if fault is not None and fault.kind == "error_after_send":
            answer = fault_response(fault)
            return answer, (answer.status, accepted)
        if fault is not None and fault.kind == "drop_after_send":
            self._outcome(rec, None, accepted=accepted)  # made, while the drop waits
            if fault.delay > 0:
                await self._wait(fault.delay)
            elif request.transport is not None:
                request.transport.close()
            return response, (None, accepted)
        return response, (response.status, accepted)

    def _outcome(self, rec: Recorded, status: int | None, *, accepted: bool) -> None:
        """Put what became of ``rec`` in the transcript, in its place (found from the end:
        it is among the last few; gone when a test cleared the transcript meanwhile)."""
        for i in range(len(self.transcript) - 1, -1, -1):
            if self.transcript[i] is rec:
                self.transcript[i] = dataclasses.replace(rec, status=status, accepted=accepted)
                return

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    async def _route(
        self, request: web.Request, segs: list[str], params: dict[str, str], body: object
    ) -> web.StreamResponse:
        method = request.method
        if segs[:1] == ["oauth"]:
            return self._oauth_route(method, segs[1:], params)
        token = bearer(request) or params.get("access_token")
        if segs == ["access_token"] and method == "GET":
            return self._oauth.exchange(params, token)
        if segs == ["refresh_access_token"] and method == "GET":
            return self._oauth.refresh(params, token)
        need = needed_scope(segs, body, self._node_type)
        problem = self.tokens.problem(token) or (self.tokens.lacks(token, need) if need else None)
        if problem is not None:
            return problem
        refused = self.meter.gate(self.limits, method, segs, body, self._node_type,
                                  self.account_id)
        if refused is not None:
            return refused
        if len(segs) == 1:
            return self._node(method, segs[0], params)
        if len(segs) == 2:
            obj, edge = segs
            if edge == "replies" and method == "POST":
                return self._comment_reply(obj, params)
            if edge in ("messages", "subscribed_apps", "messenger_profile", "conversations"):
                if obj not in (self.account_id, "me"):
                    return unknown_object(method, obj)
                return await self._account_edge(request, edge, params, body)
        return graph_error(400, 2500, f"Unknown path components: /{'/'.join(segs)}")

    def _oauth_route(self, method: str, rest: list[str], params: dict[str, str]) -> web.Response:
        if rest == ["authorize"] and method == "GET":
            return self._oauth.authorize(params)
        if rest in (["authorize", "allow"], ["authorize", "deny"]) and method == "GET":
            return self._oauth.decide(params, allow=rest[1] == "allow")
        if rest == ["access_token"] and method == "POST":
            return self._oauth.access_token(params)
        return web.Response(status=404, text="not found")

    async def _account_edge(
        self, request: web.Request, edge: str, params: dict[str, str], body: object
    ) -> web.Response:
        method = request.method
        if edge == "messages" and method == "POST":
            spec = parse_send(body if isinstance(body, Mapping) else {})
            return spec if isinstance(spec, web.Response) else await self._send(spec)
        if edge == "subscribed_apps":
            return subscribed_apps(method, params, self.subscribed)
        if edge == "messenger_profile":
            return messenger_profile(method, params, body, self.messenger_profile)
        if edge == "conversations" and method == "GET":
            convs = [c for c in self._convs.values() if c.messages]
            return conversations_page(convs, params, request.url, self._conversation_json)
        return unknown_object(method, edge)

    # -- Send API ------------------------------------------------------------------------

    async def _send(self, spec: SendSpec) -> web.Response:
        now = self.clock()
        if spec.comment_id is not None:
            return await self._private_reply(spec, now)
        rid = spec.recipient_id or ""
        if rid not in self.users:
            return web.json_response(USER_NOT_FOUND_BODY, status=USER_NOT_FOUND_STATUS)
        if spec.kind == "action":
            return web.json_response({"recipient_id": rid})
        if spec.kind in ("react", "unreact"):
            found = self._messages.get(spec.reacted_mid or "")
            if found is None or found[0].igsid != rid:
                return graph_error(
                    400,
                    100,
                    "(#100) The message_id is invalid for this recipient",
                    type="IGApiException",
                )
            return web.json_response({"recipient_id": rid})
        last = self._last_inbound.get(rid)
        allowed = HUMAN_AGENT_SECONDS if spec.human_agent else WINDOW_SECONDS
        if last is None or now - last > allowed:
            return web.json_response(WINDOW_CLOSED_BODY, status=WINDOW_CLOSED_STATUS)
        return await self._deliver_send(rid, spec.message, now)

    async def _private_reply(self, spec: SendSpec, now: float) -> web.Response:
        comment = self.comments.get(spec.comment_id or "")
        if comment is None or comment.deleted or comment.igsid == self.account_id:
            return graph_error(
                400,
                100,
                "(#100) The comment_id does not name a comment that can be replied to",
                type="IGApiException",
            )
        if comment.private_replied:
            # Messenger's answer to a second private reply to the same activity.
            return graph_error(400, 10900, "Activity already replied to", type="IGApiException")
        if now - comment.at > PRIVATE_REPLY_SECONDS:
            return graph_error(
                403,
                10,
                "This message is sent outside of allowed window.",
                subcode=2534022,
                type="IGApiException",
            )
        comment.private_replied = True
        return await self._deliver_send(comment.igsid, spec.message, now)

    async def _deliver_send(
        self, igsid: str, message: Mapping[str, object], now: float
    ) -> web.Response:
        """Store our message and echo it (``messages`` field); with ``echo_first`` the echo
        is delivered (or given up on) before this returns the answer."""
        mid = new_mid(self.account_id)
        atts = message.get("attachments") or (
            [message["attachment"]] if "attachment" in message else []
        )
        text = message.get("text")
        stored = StoredMessage(
            mid, igsid, "out", text if isinstance(text, str) else None, as_list(atts), now
        )
        self._store(igsid, stored)
        made = _MADE.get()
        if made is not None:
            made[0] = True
        echo = build_echo_payload(self.account_id, igsid, message, mid, int(now * 1000))
        first = self.echo_first > 0 and self._rng.random() < self.echo_first
        task = self._emit("messages", echo, delay=0.0 if first else None)
        if first and task is not None:
            await asyncio.wait({task})  # not task itself: a cancelled echo must not raise here
        return web.json_response({"recipient_id": igsid, "message_id": mid})

    # -- comments and nodes --------------------------------------------------------------

    def _comment_reply(self, comment_id: str, params: dict[str, str]) -> web.Response:
        parent = self.comments.get(comment_id)
        if parent is None or parent.deleted:
            return unknown_object("POST", comment_id)
        text = params.get("message", "")
        if not text.strip():
            return graph_error(400, 100, "(#100) The parameter message is required")
        if parent.parent_id is not None or parent.hidden:
            return graph_error(
                400, 100, "(#100) Replies are only allowed on visible top-level comments"
            )
        reply = self._new_comment(self.account_id, self.username, text, parent.media_id, parent.id)
        if self.echo_comment_replies:
            self._emit(
                "comments",
                build_comment_payload(
                    self.account_id,
                    self.account_id,
                    self.username,
                    text,
                    parent.media_id,
                    reply.id,
                    int(reply.at),
                    parent_id=parent.id,
                )
            )
        return web.json_response({"id": reply.id})

    def _node_type(self, obj: str) -> str | None:
        """The fields schema (instaset.sandbox.fields) of the node ``GET /{obj}`` reads."""
        if obj in ("me", self.account_id):
            return "IGUser"
        if obj in self.comments and not self.comments[obj].deleted:
            return "IGComment"
        if obj in self.users:
            return "IGUserProfile"
        if obj in self._conv_ids:
            return "IGConversation"
        return "IGMessage" if obj in self._messages else None

    def _node(self, method: str, obj: str, params: dict[str, str]) -> web.Response:
        node = self._node_type(obj) if method == "GET" else None
        if node is not None:
            problem = bad_fields(params, node)
            if problem is not None:
                return problem
        fields = requested_fields(params)
        if node == "IGUser":
            return web.json_response(
                me_json(self.account_id, self.app_user_id, self.username, fields)
            )
        if obj in self.comments and not self.comments[obj].deleted:
            comment = self.comments[obj]
            if method == "POST" and "hide" in params:
                comment.hidden = params["hide"].lower() == "true"
                return web.json_response({"success": True})
            if method == "DELETE":
                comment.deleted = True
                return web.json_response({"success": True})
            if method == "GET":
                return web.json_response(comment_json(comment, fields))
        if node == "IGUserProfile":
            return profile_response(
                obj, self.users[obj], consented=obj in self._last_inbound,
                overrides=self.profiles.get(obj, {}), fields=fields,
            )
        if node == "IGConversation":
            return web.json_response(self._conversation_json(self._conv_ids[obj], fields))
        if node == "IGMessage":
            conv, msg = self._messages[obj]
            if not has_details(conv, msg):
                return unknown_object(method, obj)  # past the 20 newest: reads as deleted
            return web.json_response(message_json(conv, msg, fields, self._me_ref(), self.users))
        return unknown_object(method, obj)

    def _me_ref(self) -> dict[str, str]:
        return {"username": self.username, "id": self.account_id}

    def _conversation_json(self, conv: Conversation, fields: Selection) -> dict[str, object]:
        return conversation_json(conv, fields, self._me_ref(), self.users)


async def run_sandbox(host: str = "127.0.0.1", port: int = 0, **kw: object) -> Sandbox:
    """Start a :class:`Sandbox` (``kw`` are its constructor arguments) and return it serving;
    ``sandbox.base_url`` is where to point ``graph_url``/``api_url``/``auth_url``. The caller
    owns it and must ``await sandbox.stop()``."""
    sandbox = Sandbox(**kw)  # type: ignore[arg-type]
    await sandbox.start(host, port)
    log.info("sandbox serving on %s for account %s", sandbox.base_url, sandbox.account_id)
    return sandbox
