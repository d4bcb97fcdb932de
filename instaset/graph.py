"""Meta Graph client for the Instagram API with Instagram Login.

Contract:
- :class:`GraphClient` sends the access token only in the ``Authorization: Bearer`` header,
  except on the two token GETs (``/access_token``, ``/refresh_access_token``) where Meta
  requires ``access_token`` in the query string. No token ever appears in an exception message
  or a log line.
- Every answer goes through :func:`~instaset.graph_errors.check_response`, the one place where
  Meta's answers become typed :class:`~instaset.errors.GraphError` subclasses.
- Network failures become :class:`~instaset.errors.Transient`. ``outcome_unknown`` is True only
  for a POST whose request may have reached Meta (a timeout or a dropped connection after the
  connection was made); a refused connection or a connect timeout is known not to have sent it.

The error mapping and usage headers live in :mod:`instaset.graph_errors`; value types, limits,
text splitting and answer parsing in :mod:`instaset.graph_wire`. Both are re-exported here, so
``from instaset.graph import ...`` works for all of them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp

from instaset.errors import GraphError, TokenInvalid, Transient
from instaset.graph_errors import (
    THROTTLE_CODES,
    THROTTLE_SUBCODES,
    TRANSIENT_CODES,
    WINDOW_SUBCODES,
    Usage,
    check_response,
    parse_usage,
    redact,
)
from instaset.graph_wire import (
    ATTACHMENT_TYPES,
    MAX_ICE_BREAKERS,
    MAX_IMAGES,
    MAX_QUICK_REPLIES,
    MAX_QUICK_REPLY_TITLE,
    MAX_TEMPLATE_BUTTONS,
    MAX_TEMPLATE_ELEMENTS,
    MAX_TEXT_BYTES,
    SENDER_ACTIONS,
    QuickReply,
    SendResult,
    TokenGrant,
    _check_text,
    _data,
    _parse_grant,
    _str_or_none,
    split_text,
)

log = logging.getLogger("instaset.graph")

ME_FIELDS = (
    "user_id,username,name,account_type,profile_picture_url,"
    "followers_count,follows_count,media_count"
)

PROFILE_FIELDS = (
    "name,username,profile_pic,follower_count,is_user_follow_business,is_business_follow_user"
)

_SENSITIVE = frozenset({"access_token", "client_secret", "code"})


# --------------------------------------------------------------------------------------------
# Client


def _seg(value: str) -> str:
    if not value:
        raise ValueError("an empty id cannot be used in a Graph path")
    return quote(value, safe="")


class GraphClient:
    """Async client for ``graph.instagram.com`` (and ``api.instagram.com`` for the code
    exchange). Shares the caller's :class:`aiohttp.ClientSession` and never closes it.
    ``last_usage`` holds the usage parsed from the latest response that carried usage headers.
    Argument errors that Meta would reject anyway (too long, too many) raise ``ValueError``
    before any request is made.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        graph_url: str,
        api_version: str,
        api_url: str,
        timeout: float = 20.0,
    ) -> None:
        self._session = session
        self._graph_url = graph_url.rstrip("/")
        self._version = api_version.strip("/")
        self._api_url = api_url.rstrip("/")
        self._timeout = timeout
        self.last_usage: Usage | None = None

    # -- plumbing ------------------------------------------------------------------------

    def _url(self, *segments: str, versioned: bool = True) -> str:
        head = (
            [self._graph_url, self._version] if versioned and self._version else [self._graph_url]
        )
        return "/".join([*head, *(_seg(s) for s in segments)])

    def _unreachable(self, url: str, exc: Exception) -> str:
        """Which configured base URL could not be reached and what to check. Only the base
        (scheme, host, port, path prefix) is named: never a query string (the token GETs
        carry the token there) nor user info."""
        bases = {"instagram.graph_url": self._graph_url, "instagram.api_url": self._api_url}
        hits = {k: b for k, b in bases.items() if b and url.startswith(b)}
        longest = max(hits.values(), key=len, default=self._graph_url)
        keys = " / ".join(k for k, b in hits.items() if b == longest) or "instagram.graph_url"
        parts = urlsplit(longest)
        shown = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
        return (f"{shown} cannot be reached ({type(exc).__name__}); check the network "
                f"connection, or {keys} in the config")

    async def _call(
        self,
        method: str,
        what: str,
        url: str,
        token: str | None,
        *,
        json_body: Mapping[str, object] | None = None,
        params: Mapping[str, str] | None = None,
        form: Mapping[str, str] | None = None,
    ) -> object:
        """One request; returns the parsed JSON body or raises a typed GraphError."""
        headers = {"Accept": "application/json"}
        if token is not None:
            if not token:
                raise TokenInvalid("no access token is stored for this account")
            headers["Authorization"] = f"Bearer {token}"
        secrets = [token or ""] + [
            v for src in (params, form) if src for k, v in src.items() if k in _SENSITIVE
        ]
        may_send = method == "POST"  # only a POST can have changed something on Meta's side
        log.debug("graph %s %s", method, what)
        try:
            async with self._session.request(
                method,
                url,
                json=json_body,
                params=params,
                data=form,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            ) as resp:
                raw = await resp.read()
                status, resp_headers = resp.status, dict(resp.headers)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # The connection was never established, so nothing was sent.
            msg = f"cannot connect to Meta for {what}: {self._unreachable(url, exc)}"
            raise Transient(msg, outcome_unknown=False) from None
        except TimeoutError:
            msg = f"Meta did not answer {what} within {self._timeout:g} s"
            raise Transient(msg, outcome_unknown=may_send) from None
        except aiohttp.ClientError as exc:
            msg = f"connection to Meta failed during {what}: {type(exc).__name__}"
            raise Transient(msg, outcome_unknown=may_send) from None
        usage = parse_usage(resp_headers)
        if usage is not None:
            self.last_usage = usage
        body: object
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        try:
            check_response(
                status, body, resp_headers, throttle_on_success=not may_send, secrets=secrets
            )
        except Transient as exc:
            if not may_send or exc.outcome_unknown:
                raise
            # A server error (5xx, codes 1 and 2) says nothing about whether Meta acted on
            # the POST before failing; it often has. Retrying blind could send twice.
            raise Transient(
                exc.message, outcome_unknown=True, code=exc.code, subcode=exc.subcode,
                status=exc.status, fbtrace_id=exc.fbtrace_id,
            ) from None
        if body is None:
            msg = f"Meta answered {what} with HTTP {status} but no JSON body"
            raise Transient(msg, outcome_unknown=may_send, status=status)
        return body

    async def _send(
        self, ig_id: str, body: Mapping[str, object], token: str, what: str
    ) -> SendResult:
        out = await self._call("POST", what, self._url(ig_id, "messages"), token, json_body=body)
        if not isinstance(out, Mapping):
            return SendResult(None, None)
        return SendResult(
            _str_or_none(out.get("recipient_id")), _str_or_none(out.get("message_id"))
        )

    async def _attach(
        self, ig_id: str, recipient_id: str, attachment: Mapping[str, object], token: str, what: str
    ) -> SendResult:
        body = {"recipient": {"id": recipient_id}, "message": {"attachment": dict(attachment)}}
        return await self._send(ig_id, body, token, what)

    @staticmethod
    def _check_success(body: object, what: str) -> None:
        if isinstance(body, Mapping) and body.get("success") is False:
            raise GraphError(f"Meta reported failure for {what}")

    # -- Send API ------------------------------------------------------------------------

    async def send_text(
        self,
        ig_id: str,
        recipient_id: str,
        text: str,
        *,
        token: str,
        quick_replies: Sequence[QuickReply] = (),
        human_agent: bool = False,
    ) -> SendResult:
        """Send a text (at most 1000 UTF-8 bytes; use :func:`split_text` first). With
        ``human_agent`` the message carries the ``HUMAN_AGENT`` tag (7-day window; humans only).
        """
        _check_text(text)
        if len(quick_replies) > MAX_QUICK_REPLIES:
            raise ValueError(
                f"{len(quick_replies)} quick replies given; Instagram allows at most "
                f"{MAX_QUICK_REPLIES} per message"
            )
        message: dict[str, object] = {"text": text}
        if quick_replies:
            message["quick_replies"] = [q.to_wire() for q in quick_replies]
        body: dict[str, object] = {"recipient": {"id": recipient_id}}
        if human_agent:
            body["messaging_type"] = "MESSAGE_TAG"
            body["tag"] = "HUMAN_AGENT"
        body["message"] = message
        return await self._send(ig_id, body, token, "send_text")

    async def send_attachment(
        self, ig_id: str, recipient_id: str, type: str, url: str, *, token: str
    ) -> SendResult:
        """One image/audio/video/file by URL, as the singular ``attachment`` object."""
        if type not in ATTACHMENT_TYPES:
            raise ValueError(f"attachment type {type!r} is not one of {sorted(ATTACHMENT_TYPES)}")
        attachment = {"type": type, "payload": {"url": url}}
        return await self._attach(ig_id, recipient_id, attachment, token, f"send_{type}")

    async def send_images(
        self, ig_id: str, recipient_id: str, urls: Sequence[str], *, token: str
    ) -> SendResult:
        """1-10 images in one message, as the ``attachments`` array."""
        if not urls or len(urls) > MAX_IMAGES:
            raise ValueError(f"send_images takes 1 to {MAX_IMAGES} URLs, got {len(urls)}")
        images = [{"type": "image", "payload": {"url": u}} for u in urls]
        body = {"recipient": {"id": recipient_id}, "message": {"attachments": images}}
        return await self._send(ig_id, body, token, "send_images")

    async def send_like_heart(self, ig_id: str, recipient_id: str, *, token: str) -> SendResult:
        return await self._attach(ig_id, recipient_id, {"type": "like_heart"}, token, "like_heart")

    async def send_media_share(
        self, ig_id: str, recipient_id: str, post_id: str, *, token: str
    ) -> SendResult:
        """Share a post the account owns."""
        attachment = {"type": "MEDIA_SHARE", "payload": {"id": post_id}}
        return await self._attach(ig_id, recipient_id, attachment, token, "send_media_share")

    async def send_generic_template(
        self, ig_id: str, recipient_id: str, elements: Sequence[Mapping[str, object]], *, token: str
    ) -> SendResult:
        """Carousel of 1-10 elements, each with at most 3 postback/web_url buttons."""
        if not elements or len(elements) > MAX_TEMPLATE_ELEMENTS:
            raise ValueError(f"a generic template takes 1 to {MAX_TEMPLATE_ELEMENTS} elements")
        for i, el in enumerate(elements):
            buttons = el.get("buttons", [])
            if isinstance(buttons, list) and len(buttons) > MAX_TEMPLATE_BUTTONS:
                raise ValueError(
                    f"template element {i} has more than {MAX_TEMPLATE_BUTTONS} buttons"
                )
        payload = {"template_type": "generic", "elements": [dict(e) for e in elements]}
        attachment = {"type": "template", "payload": payload}
        return await self._attach(ig_id, recipient_id, attachment, token, "generic_template")

    async def send_button_template(
        self,
        ig_id: str,
        recipient_id: str,
        text: str,
        buttons: Sequence[Mapping[str, object]],
        *,
        token: str,
    ) -> SendResult:
        """Text (at most 640 characters) with 1-3 postback/web_url buttons."""
        if not buttons or len(buttons) > MAX_TEMPLATE_BUTTONS:
            raise ValueError(f"a button template takes 1 to {MAX_TEMPLATE_BUTTONS} buttons")
        if not text.strip() or len(text) > 640:
            raise ValueError("button template text must be 1 to 640 characters")
        payload = {"template_type": "button", "text": text, "buttons": [dict(b) for b in buttons]}
        attachment = {"type": "template", "payload": payload}
        return await self._attach(ig_id, recipient_id, attachment, token, "button_template")

    async def sender_action(
        self,
        ig_id: str,
        recipient_id: str,
        action: Literal["mark_seen", "typing_on", "typing_off"],
        *,
        token: str,
    ) -> None:
        """A sender action, alone in its request as Meta requires."""
        if action not in SENDER_ACTIONS:
            raise ValueError(f"sender action {action!r} is not one of {sorted(SENDER_ACTIONS)}")
        body = {"recipient": {"id": recipient_id}, "sender_action": action}
        await self._send(ig_id, body, token, f"sender_action({action})")

    async def react(
        self, ig_id: str, recipient_id: str, message_id: str, reaction: str, *, token: str
    ) -> None:
        """React to a message (``love`` or an emoji)."""
        payload = {"message_id": message_id, "reaction": reaction}
        body = {"recipient": {"id": recipient_id}, "sender_action": "react", "payload": payload}
        await self._send(ig_id, body, token, "react")

    async def unreact(self, ig_id: str, recipient_id: str, message_id: str, *, token: str) -> None:
        payload = {"message_id": message_id}
        body = {"recipient": {"id": recipient_id}, "sender_action": "unreact", "payload": payload}
        await self._send(ig_id, body, token, "unreact")

    # -- comments ------------------------------------------------------------------------

    async def private_reply(
        self, ig_id: str, comment_id: str, text: str, *, token: str
    ) -> SendResult:
        """The one private DM a comment allows (within 7 days). ``recipient_id`` in the result
        is the commenter's IGSID."""
        _check_text(text)
        body = {"recipient": {"comment_id": comment_id}, "message": {"text": text}}
        return await self._send(ig_id, body, token, "private_reply")

    async def public_reply(self, comment_id: str, text: str, *, token: str) -> str:
        """Reply publicly under a top-level comment; returns the new comment's id. The text goes
        in the form body (Graph reads POST form fields as parameters), so it stays out of URLs
        and access logs."""
        url = self._url(comment_id, "replies")
        out = await self._call("POST", "public_reply", url, token, form={"message": text})
        new_id = _str_or_none(out.get("id")) if isinstance(out, Mapping) else None
        if new_id is None:
            raise GraphError("Meta's answer to a comment reply had no id")
        return new_id

    async def hide_comment(self, comment_id: str, hide: bool, *, token: str) -> None:
        params = {"hide": "true" if hide else "false"}
        out = await self._call("POST", "hide_comment", self._url(comment_id), token, params=params)
        self._check_success(out, "hide_comment")

    # -- account and webhooks ------------------------------------------------------------

    async def me(self, *, token: str) -> dict[str, object]:
        """The account behind ``token``. ``user_id`` is the professional account id (webhook
        ``entry.id``); ``id`` is app-scoped. Both are returned as strings."""
        params = {"fields": ME_FIELDS}
        out = await self._call("GET", "me", self._url("me"), token, params=params)
        if not isinstance(out, Mapping):
            raise GraphError("Meta's /me answer was not an object")
        result = dict(out)
        for key in ("user_id", "id"):
            if key in result:
                result[key] = _str_or_none(result[key])
        return result

    async def user_profile(
        self, igsid: str, *, token: str, fields: str = PROFILE_FIELDS
    ) -> dict[str, object]:
        """The User Profile API: ``GET /{igsid}`` (name, username, profile picture, follower
        count, who follows whom). Meta answers only for a person who messaged the account (or
        tapped an ice breaker or menu item); otherwise code 230, "User consent is required to
        access user profile", which raises :class:`PermissionMissing`."""
        out = await self._call(
            "GET", "user_profile", self._url(igsid), token, params={"fields": fields}
        )
        if not isinstance(out, Mapping):
            raise GraphError("Meta's user profile answer was not an object")
        result = dict(out)
        if "id" in result:
            result["id"] = _str_or_none(result["id"])
        return result

    async def subscribe(self, ig_id: str, fields: Sequence[str], *, token: str) -> None:
        if not fields:
            raise ValueError("subscribe needs at least one webhook field")
        params = {"subscribed_fields": ",".join(fields)}
        url = self._url(ig_id, "subscribed_apps")
        self._check_success(await self._call("POST", "subscribe", url, token, params=params), "")

    async def subscribed_fields(self, ig_id: str, *, token: str) -> list[str]:
        """The webhook fields this app is subscribed to for the account (empty if none)."""
        url = self._url(ig_id, "subscribed_apps")
        out = await self._call("GET", "subscribed_fields", url, token)
        fields: list[str] = []
        for item in _data(out):
            raw = item.get("subscribed_fields")
            for f in raw if isinstance(raw, list) else []:
                name = f.get("name") if isinstance(f, Mapping) else f
                if isinstance(name, str) and name not in fields:
                    fields.append(name)
        return fields

    async def unsubscribe(self, ig_id: str, *, token: str) -> None:
        url = self._url(ig_id, "subscribed_apps")
        self._check_success(await self._call("DELETE", "unsubscribe", url, token), "unsubscribe")

    async def set_ice_breakers(
        self,
        ig_id: str,
        questions: Sequence[tuple[str, str]],
        *,
        token: str,
        locale: str = "default",
    ) -> None:
        """Set 1-4 ice breakers, each ``(question, payload)``."""
        if not questions or len(questions) > MAX_ICE_BREAKERS:
            raise ValueError(f"ice breakers take 1 to {MAX_ICE_BREAKERS} questions")
        actions = [{"question": q, "payload": p} for q, p in questions]
        body = {
            "platform": "instagram",
            "ice_breakers": [{"call_to_actions": actions, "locale": locale}],
        }
        url = self._url(ig_id, "messenger_profile")
        out = await self._call("POST", "set_ice_breakers", url, token, json_body=body)
        self._check_success(out, "set_ice_breakers")

    async def set_persistent_menu(
        self,
        ig_id: str,
        call_to_actions: Sequence[Mapping[str, object]],
        *,
        token: str,
        locale: str = "default",
    ) -> None:
        """Set the persistent menu (postback / web_url items). ``composer_input_disabled`` is
        left out on purpose: Instagram does not support it."""
        if not call_to_actions:
            raise ValueError("a persistent menu needs at least one item")
        menu = [{"locale": locale, "call_to_actions": [dict(c) for c in call_to_actions]}]
        body = {"platform": "instagram", "persistent_menu": menu}
        url = self._url(ig_id, "messenger_profile")
        out = await self._call("POST", "set_persistent_menu", url, token, json_body=body)
        self._check_success(out, "set_persistent_menu")

    async def messenger_profile(
        self, ig_id: str, field: str, *, token: str
    ) -> list[dict[str, object]]:
        """The account's ``ice_breakers`` or ``persistent_menu`` as Meta has them: a list of
        locales, each ``{"locale", "call_to_actions": [...]}`` (empty when none is set).
        Accepts both documented answers: the locales themselves in ``data``, or ``data`` as
        one object holding the field."""
        url = self._url(ig_id, "messenger_profile")
        out = await self._call("GET", f"messenger_profile {field}", url, token,
                               params={"fields": field, "platform": "instagram"})
        locales: list[dict[str, object]] = []
        for item in _data(out):
            inner = item.get(field)
            for loc in (inner if isinstance(inner, list) else [item]):
                if isinstance(loc, Mapping) and isinstance(loc.get("call_to_actions"), list):
                    locales.append(dict(loc))
        return locales

    async def delete_messenger_profile(
        self, ig_id: str, fields: Sequence[str], *, token: str
    ) -> None:
        """Remove ``ice_breakers`` and/or ``persistent_menu``."""
        body = {"fields": list(fields)}
        url = self._url(ig_id, "messenger_profile")
        out = await self._call("DELETE", "delete_messenger_profile", url, token, json_body=body)
        self._check_success(out, "delete_messenger_profile")

    # -- Conversations API ---------------------------------------------------------------

    async def conversations(
        self, ig_id: str, *, token: str, user_id: str | None = None, after: str | None = None
    ) -> tuple[list[dict[str, object]], str | None]:
        """One page of conversations, newest first, and the cursor of the next page (``None``
        on the last page)."""
        params = {"platform": "instagram", "fields": "id,updated_time,participants"}
        if user_id is not None:
            params["user_id"] = user_id
        if after is not None:
            params["after"] = after
        url = self._url(ig_id, "conversations")
        out = await self._call("GET", "conversations", url, token, params=params)
        cursor: str | None = None
        paging = out.get("paging") if isinstance(out, Mapping) else None
        if isinstance(paging, Mapping) and paging.get("next"):
            cursors = paging.get("cursors")
            if isinstance(cursors, Mapping):
                cursor = _str_or_none(cursors.get("after"))
        return _data(out), cursor

    async def conversation_messages(
        self, conversation_id: str, *, token: str
    ) -> list[dict[str, object]]:
        """Ids and times of a conversation's messages (``messages.data``), newest first."""
        url, params = self._url(conversation_id), {"fields": "messages"}
        out = await self._call("GET", "conversation_messages", url, token, params=params)
        return _data(out.get("messages") if isinstance(out, Mapping) else None)

    async def message(self, message_id: str, *, token: str) -> dict[str, object]:
        params = {"fields": "id,created_time,from,to,message,attachments"}
        out = await self._call("GET", "message", self._url(message_id), token, params=params)
        if not isinstance(out, Mapping):
            raise GraphError("Meta's message answer was not an object")
        return dict(out)

    # -- OAuth ---------------------------------------------------------------------------

    async def exchange_code(
        self, *, client_id: str, client_secret: str, redirect_uri: str, code: str
    ) -> TokenGrant:
        """Code from the OAuth redirect -> short-lived token (form POST to ``api_url``).
        A trailing ``#_`` that Meta appends to the redirect is stripped."""
        form = {
            "client_id": client_id,
            "client_secret": client_secret,
            "grant_type": "authorization_code",
            "redirect_uri": redirect_uri,
            "code": code.removesuffix("#_"),
        }
        url = f"{self._api_url}/oauth/access_token"
        return _parse_grant(await self._call("POST", "exchange_code", url, None, form=form))

    async def long_lived_token(self, short_token: str, *, client_secret: str) -> TokenGrant:
        """Short-lived (1 h) -> long-lived (60 days) token. Meta wants the token in the query."""
        params = {
            "grant_type": "ig_exchange_token",
            "client_secret": client_secret,
            "access_token": short_token,
        }
        url = self._url("access_token", versioned=False)
        return _parse_grant(await self._call("GET", "long_lived_token", url, None, params=params))

    async def refresh_token(self, token: str) -> TokenGrant:
        """Refresh a long-lived token (at least 24 h old, not expired) for another 60 days."""
        params = {"grant_type": "ig_refresh_token", "access_token": token}
        url = self._url("refresh_access_token", versioned=False)
        return _parse_grant(await self._call("GET", "refresh_token", url, None, params=params))


__all__ = [
    "ATTACHMENT_TYPES",
    "MAX_ICE_BREAKERS",
    "MAX_IMAGES",
    "MAX_QUICK_REPLIES",
    "MAX_QUICK_REPLY_TITLE",
    "MAX_TEMPLATE_BUTTONS",
    "MAX_TEMPLATE_ELEMENTS",
    "MAX_TEXT_BYTES",
    "ME_FIELDS",
    "PROFILE_FIELDS",
    "SENDER_ACTIONS",
    "THROTTLE_CODES",
    "THROTTLE_SUBCODES",
    "TRANSIENT_CODES",
    "WINDOW_SUBCODES",
    "GraphClient",
    "QuickReply",
    "SendResult",
    "TokenGrant",
    "Usage",
    "check_response",
    "parse_usage",
    "redact",
    "split_text",
]
