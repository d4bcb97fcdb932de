"""Meta Graph client for the Instagram API with Instagram Login.

Contract:
- :func:`check_response` is the one place where Meta's answers become typed
  :class:`~instaset.errors.GraphError` subclasses. The client and the sandbox tests both go
  through it, so the mapping is exercised by every call.
- :class:`GraphClient` sends the access token only in the ``Authorization: Bearer`` header,
  except on the two token GETs (``/access_token``, ``/refresh_access_token``) where Meta
  requires ``access_token`` in the query string. No token ever appears in an exception message
  or a log line.
- Network failures become :class:`~instaset.errors.Transient`. ``outcome_unknown`` is True only
  for a POST whose request may have reached Meta (a timeout or a dropped connection after the
  connection was made); a refused connection or a connect timeout is known not to have sent it.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import quote

import aiohttp

from instaset.errors import (
    GraphError,
    InvalidParameter,
    PermissionMissing,
    Throttled,
    TokenInvalid,
    Transient,
    UserUnavailable,
    WindowClosed,
)

log = logging.getLogger("instaset.graph")

THROTTLE_CODES = frozenset({4, 17, 32, 613, 80002})
THROTTLE_SUBCODES = frozenset({1349210, 1349211, 1349212})
WINDOW_SUBCODES = frozenset({2534022, 2018278})
TRANSIENT_CODES = frozenset({1, 2})
ATTACHMENT_TYPES = frozenset({"image", "audio", "video", "file"})
SENDER_ACTIONS = frozenset({"mark_seen", "typing_on", "typing_off"})
MAX_TEXT_BYTES = 1000
MAX_QUICK_REPLIES = 13
MAX_QUICK_REPLY_TITLE = 20
MAX_IMAGES = 10
MAX_TEMPLATE_ELEMENTS = 10
MAX_TEMPLATE_BUTTONS = 3
MAX_ICE_BREAKERS = 4
ME_FIELDS = (
    "user_id,username,name,account_type,profile_picture_url,"
    "followers_count,follows_count,media_count"
)

PROFILE_FIELDS = (
    "name,username,profile_pic,follower_count,is_user_follow_business,is_business_follow_user"
)

_WINDOW_MESSAGE = re.compile(r"allowed window|outside (of )?(the )?(allowed |messaging )?window")
# Token-looking strings: Instagram user tokens (IGAA/IGAB/IGQV...) and Facebook tokens (EAA...).
_TOKENISH = re.compile(r"\b(?:IG[A-Z]{2}|EAA)[A-Za-z0-9_\-]{16,}")
_ACCESS_TOKEN_PARAM = re.compile(r"(access_token=)[^&\s\"']+")
_SENSITIVE = frozenset({"access_token", "client_secret", "code"})
_USAGE_KEYS = ("call_count", "total_cputime", "total_time", "call_volume", "cpu_time")


# --------------------------------------------------------------------------------------------
# Value types


@dataclass(frozen=True, slots=True)
class SendResult:
    """Meta's answer to a send: the recipient's IGSID and the new message id (``mid``)."""

    recipient_id: str | None
    message_id: str | None


@dataclass(frozen=True, slots=True)
class Usage:
    """Rate-limit usage in percent (throttling starts at 100) and Meta's estimate, in seconds,
    of when access comes back. ``None`` where the headers did not say."""

    app_pct: float | None
    buc_pct: float | None
    regain_seconds: float | None

    @property
    def max_pct(self) -> float:
        return max(self.app_pct or 0.0, self.buc_pct or 0.0)


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """A token from the OAuth endpoints. ``user_id`` is the app-scoped id from the code
    exchange (absent on exchange/refresh); ``expires_in`` is seconds. The token is kept out of
    ``repr`` so that a logged grant never leaks it."""

    access_token: str = field(repr=False)
    user_id: str | None = None
    permissions: tuple[str, ...] = ()
    expires_in: int | None = None


@dataclass(frozen=True, slots=True)
class QuickReply:
    """One quick-reply button. ``content_type`` ``text`` needs a title of at most 20
    characters; ``user_phone_number`` / ``user_email`` need neither title nor payload."""

    title: str
    payload: str
    content_type: str = "text"

    def __post_init__(self) -> None:
        if self.content_type == "text":
            if not self.title.strip():
                raise ValueError("quick reply title must not be empty")
            if len(self.title) > MAX_QUICK_REPLY_TITLE:
                raise ValueError(
                    f"quick reply title {self.title!r} is {len(self.title)} characters; "
                    f"Instagram allows at most {MAX_QUICK_REPLY_TITLE}"
                )
        elif self.content_type not in ("user_phone_number", "user_email"):
            raise ValueError(
                f"quick reply content_type {self.content_type!r} is not one of "
                "text, user_phone_number, user_email"
            )

    def to_wire(self) -> dict[str, object]:
        out: dict[str, object] = {"content_type": self.content_type}
        if self.title:
            out["title"] = self.title
        if self.payload:
            out["payload"] = self.payload
        return out


# --------------------------------------------------------------------------------------------
# Response checking


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup that also works on plain dicts."""
    value = headers.get(name)
    if value is not None:
        return value
    lower = name.lower()
    for key, val in headers.items():
        if key.lower() == lower:
            return val
    return None


def _num(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _max_usage(obj: Mapping[str, object]) -> float | None:
    values = [v for k in _USAGE_KEYS if (v := _num(obj.get(k))) is not None]
    return max(values) if values else None


def _load_header_json(headers: Mapping[str, str], name: str) -> object:
    raw = _header(headers, name)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def parse_usage(headers: Mapping[str, str]) -> Usage | None:
    """Read ``X-App-Usage`` and ``X-Business-Use-Case-Usage`` leniently: the highest of the
    known percentage keys wins, unknown keys and malformed JSON are ignored. ``None`` when
    neither header carries anything usable."""
    app_pct: float | None = None
    buc_pct: float | None = None
    regain_min: float | None = None
    app = _load_header_json(headers, "X-App-Usage")
    if isinstance(app, Mapping):
        app_pct = _max_usage(app)
    buc = _load_header_json(headers, "X-Business-Use-Case-Usage")
    if isinstance(buc, Mapping):
        for entries in buc.values():
            items = entries if isinstance(entries, list) else [entries]
            for item in items:
                if not isinstance(item, Mapping):
                    continue
                pct = _max_usage(item)
                if pct is not None:
                    buc_pct = pct if buc_pct is None else max(buc_pct, pct)
                regain = _num(item.get("estimated_time_to_regain_access"))
                if regain is not None:
                    regain_min = regain if regain_min is None else max(regain_min, regain)
    if app_pct is None and buc_pct is None and regain_min is None:
        return None
    return Usage(app_pct, buc_pct, regain_min * 60.0 if regain_min is not None else None)


def redact(text: str, secrets: Sequence[str] = ()) -> str:
    """Remove anything token-like (and the given secrets) from ``text``."""
    for secret in secrets:
        if len(secret) >= 6:  # shorter values are not secrets worth mangling messages for
            text = text.replace(secret, "***")
    text = _ACCESS_TOKEN_PARAM.sub(r"\1***", text)
    return _TOKENISH.sub("***", text)


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _classify(
    *,
    message: str,
    code: int | None,
    subcode: int | None,
    status: int,
    is_transient: bool,
    fbtrace_id: str | None,
    usage: Usage | None,
) -> GraphError:
    """Map one Graph error to its class. Order matters: throttling first (it is retryable
    whatever else is said), then the final classes, then transient, then the catch-alls."""

    def make(cls: type[GraphError], text: str) -> GraphError:
        return cls(text, code=code, subcode=subcode, status=status, fbtrace_id=fbtrace_id)

    if code in THROTTLE_CODES or subcode in THROTTLE_SUBCODES:
        retry = usage.regain_seconds if usage is not None and usage.regain_seconds else None
        return Throttled(
            f"rate limited by Meta: {message}",
            retry_after=retry,
            code=code,
            subcode=subcode,
            status=status,
            fbtrace_id=fbtrace_id,
        )
    if code == 190:
        return make(
            TokenInvalid,
            f"the access token is invalid or expired ({message}); "
            "reconnect the account with `instaset connect`",
        )
    if code == 10 and (subcode in WINDOW_SUBCODES or _WINDOW_MESSAGE.search(message.lower())):
        return make(WindowClosed, f"messaging window is closed: {message}")
    if code == 551:
        return make(UserUnavailable, f"this person cannot be messaged: {message}")
    if is_transient or code in TRANSIENT_CODES:
        return make(Transient, f"temporary Meta error: {message}")
    if code == 10 or (code is not None and 200 <= code <= 299):
        return make(PermissionMissing, f"the app lacks a permission or access level: {message}")
    if code == 100:
        return make(InvalidParameter, f"Meta rejected the request: {message}")
    if status >= 500:
        return make(Transient, f"Meta server error: {message}")
    return make(GraphError, f"Meta API error: {message}")


def check_response(
    status: int,
    body: object,
    headers: Mapping[str, str],
    *,
    throttle_on_success: bool = True,
    secrets: Sequence[str] = (),
) -> None:
    """Raise the typed :class:`GraphError` for a Meta answer, or return for a usable success.

    Recognises the Graph envelope ``{"error": {message, type, code, error_subcode, fbtrace_id,
    is_transient}}`` and the OAuth envelope ``{"error_type", "code", "error_message"}``. A
    success whose usage headers report 100 % raises :class:`Throttled` too, unless
    ``throttle_on_success`` is False (the client passes False for sends: the message went out,
    raising would invite a duplicate). ``secrets`` are scrubbed from messages in addition to
    anything token-shaped.
    """
    usage = parse_usage(headers)
    err = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(err, Mapping):
        raw_msg = err.get("message") or err.get("error_user_msg") or "no message"
        raise _classify(
            message=redact(str(raw_msg)[:500], secrets),
            code=_int(err.get("code")),
            subcode=_int(err.get("error_subcode")),
            status=status,
            is_transient=err.get("is_transient") is True,
            fbtrace_id=str(err["fbtrace_id"]) if err.get("fbtrace_id") else None,
            usage=usage,
        )
    if isinstance(body, Mapping) and ("error_type" in body or "error_message" in body):
        raise _oauth_error(status, body, usage, secrets)
    if isinstance(body, Mapping) and isinstance(err, str):
        # RFC 6749 style {"error": "invalid_request", "error_description": ...}
        desc = body.get("error_description") or err
        raise _oauth_error(
            status, {"error_type": err, "error_message": desc, "code": status}, usage, secrets
        )
    if status >= 500:
        raise Transient(f"Meta server error (HTTP {status})", status=status)
    if status == 429:
        retry = usage.regain_seconds if usage is not None else None
        raise Throttled("rate limited by Meta (HTTP 429)", retry_after=retry, status=status)
    if not 200 <= status < 300:
        raise GraphError(f"unexpected answer from Meta (HTTP {status})", status=status)
    if throttle_on_success and usage is not None and usage.max_pct >= 100:
        raise Throttled(
            f"rate limit usage is at {usage.max_pct:g} %",
            retry_after=usage.regain_seconds or None,
            status=status,
        )


def _oauth_error(
    status: int, body: Mapping[str, object], usage: Usage | None, secrets: Sequence[str]
) -> GraphError:
    message = redact(str(body.get("error_message") or body.get("error_type") or "")[:500], secrets)
    code = _int(body.get("code"))
    # The OAuth envelope's ``code`` mirrors the HTTP status (400); a real Graph code still wins.
    if code is not None and (code < 400 or code > 599):
        return _classify(
            message=message,
            code=code,
            subcode=None,
            status=status,
            is_transient=False,
            fbtrace_id=None,
            usage=usage,
        )
    effective = code or status
    if effective >= 500 or status >= 500:
        return Transient(f"Meta OAuth server error: {message}", code=code, status=status)
    if effective == 429:
        return Throttled(f"rate limited by Meta OAuth: {message}", code=code, status=status)
    return InvalidParameter(f"Meta OAuth error: {message}", code=code, status=status)


# --------------------------------------------------------------------------------------------
# Text splitting

_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s)|[。！？]+|\n")
_JOINERS = frozenset({"\u200d", "\ufe0f", "\ufe0e", "\u20e3"})


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def _glued(prev: str, nxt: str) -> bool:
    """True when a cut between ``prev`` and ``nxt`` would break a visible character."""
    if nxt in _JOINERS or prev == "\u200d" or unicodedata.combining(nxt):
        return True
    return 0x1F3FB <= ord(nxt) <= 0x1F3FF  # skin-tone modifier


def split_text(text: str, limit: int = MAX_TEXT_BYTES) -> list[str]:
    """Split ``text`` into messages of at most ``limit`` UTF-8 bytes each.

    Cuts at the last sentence end (or newline) that fits, else the last whitespace, else the
    last code point boundary that does not break a combining sequence or emoji. Pieces are
    stripped of surrounding whitespace; empty input gives ``[]``. Text that fits is returned
    unchanged as one piece.
    """
    if limit < 4:
        raise ValueError("limit must be at least 4 bytes (one UTF-8 character)")
    if not text.strip():
        return []
    if _utf8_len(text) <= limit:
        return [text]
    pieces: list[str] = []
    rest = text.strip()
    while _utf8_len(rest) > limit:
        prefix = rest.encode("utf-8")[:limit].decode("utf-8", errors="ignore")
        hard = len(prefix)  # rest[:hard] is the longest fitting prefix; hard < len(rest)
        # One character past the prefix, so that a sentence end or space right at the limit
        # is still seen as a boundary.
        window = rest[: hard + 1]
        cut = max((m.end() for m in _SENTENCE_END.finditer(window) if m.end() <= hard), default=0)
        if cut == 0:
            cut = max((i for i, ch in enumerate(window) if ch.isspace()), default=0)
        if cut == 0:
            cut = hard
            while cut > 1 and _glued(rest[cut - 1], rest[cut]):
                cut -= 1
            if cut <= 1:
                cut = hard
        piece = rest[:cut].strip()
        if piece:
            pieces.append(piece)
        rest = rest[cut:].lstrip()
    if rest:
        pieces.append(rest)
    return pieces


# --------------------------------------------------------------------------------------------
# Client


def _seg(value: str) -> str:
    if not value:
        raise ValueError("an empty id cannot be used in a Graph path")
    return quote(value, safe="")


def _str_or_none(value: object) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | str):
        return str(value)
    return None


def _data(body: object) -> list[dict[str, object]]:
    """The object items of a Graph list answer's ``data``."""
    data = body.get("data") if isinstance(body, Mapping) else None
    return [dict(d) for d in data if isinstance(d, Mapping)] if isinstance(data, list) else []


def _check_text(text: str) -> None:
    if not text.strip():
        raise ValueError("message text must not be empty")
    size = _utf8_len(text)
    if size > MAX_TEXT_BYTES:
        raise ValueError(
            f"message text is {size} UTF-8 bytes; Instagram accepts at most {MAX_TEXT_BYTES} "
            "(split it with split_text)"
        )


def _parse_grant(body: object) -> TokenGrant:
    """Accept the documented ``{"data": [{...}]}`` and the flat shape seen live,
    ``permissions`` as a comma string or a list, ``user_id`` as int or str."""
    item: object = body
    if isinstance(body, Mapping) and isinstance(body.get("data"), list) and body["data"]:
        item = body["data"][0]
    token = item.get("access_token") if isinstance(item, Mapping) else None
    if not isinstance(item, Mapping) or not isinstance(token, str) or not token:
        raise GraphError("Meta's token response did not contain an access_token")
    perms_raw = item.get("permissions")
    if isinstance(perms_raw, str):
        perms = tuple(p.strip() for p in perms_raw.split(",") if p.strip())
    elif isinstance(perms_raw, list):
        perms = tuple(str(p).strip() for p in perms_raw if str(p).strip())
    else:
        perms = ()
    return TokenGrant(
        access_token=token,
        user_id=_str_or_none(item.get("user_id")),
        permissions=perms,
        expires_in=_int(item.get("expires_in")),
    )


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
            msg = f"cannot connect to Meta for {what}: {type(exc).__name__}"
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
        check_response(
            status, body, resp_headers, throttle_on_success=not may_send, secrets=secrets
        )
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
