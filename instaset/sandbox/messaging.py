"""Validation of Send API bodies, as Meta applies it, before any state changes.

:func:`parse_send` turns a ``POST /{ig-id}/messages`` body into a :class:`SendSpec`, or the
error response Meta would give. Window, recipient and private-reply rules need the sandbox's
state and live in the server."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from instaset.sandbox.wire import graph_error

MAX_TEXT_BYTES = 1000
SIMPLE_ACTIONS = frozenset({"mark_seen", "typing_on", "typing_off"})
MEDIA_TYPES = frozenset({"image", "audio", "video", "file"})
QUICK_REPLY_TYPES = frozenset({"text", "user_phone_number", "user_email"})  # reference §4.2
MAX_ELEMENT_TEXT = 80  # generic template title and subtitle (reference §4.2)
REACTION_NAMES = frozenset({"love"})  # "reaction":"love", or an emoji (reference §4.2)
# Unicode categories an emoji is made of: symbols, skin-tone modifiers (Sk), variation
# selectors (Mn), the zero-width joiner and tag characters (Cf).
_EMOJI_CATEGORIES = frozenset({"So", "Sk", "Mn", "Me", "Cf"})

SendKind = Literal["message", "action", "react", "unreact"]


@dataclass(frozen=True, slots=True)
class SendSpec:
    kind: SendKind
    recipient_id: str | None
    comment_id: str | None
    message: Mapping[str, object]
    action: str | None
    human_agent: bool
    reacted_mid: str | None
    reaction: str | None


def _bad(message: str) -> web.Response:
    return graph_error(400, 100, f"(#100) {message}", type="IGApiException")


def coerce_form(form: Mapping[str, str]) -> dict[str, object]:
    """Meta accepts Send API bodies as form fields whose values are JSON (``recipient={...}``);
    decode those so both encodings validate the same way."""
    out: dict[str, object] = {}
    for key, value in form.items():
        try:
            out[key] = json.loads(value) if value[:1] in "{[" else value
        except ValueError:
            out[key] = value
    return out


def _check_message(message: Mapping[str, object]) -> str | None:
    """Why ``message`` is invalid, or None."""
    keys = {"text", "attachment", "attachments"} & set(message)
    if not keys:
        return "Must provide valid text or attachment in message"
    if len(keys) > 1:
        return "Only one of text, attachment or attachments may be set"
    if "text" in message:
        text = message["text"]
        if not isinstance(text, str) or not text.strip():
            return "Param message[text] must be a non-empty string"
        if len(text.encode("utf-8")) > MAX_TEXT_BYTES:
            return f"Length of param message[text] must be less than or equal to {MAX_TEXT_BYTES}"
        quick = message.get("quick_replies")
        if quick is not None:
            return _check_quick_replies(quick)
        return None
    if message.get("quick_replies") is not None:
        # The reference shows quick replies only on a text prompt (§4.2); Messenger allows
        # them on attachments, so they are checked here, not refused [unverified].
        problem = _check_quick_replies(message["quick_replies"])
        if problem is not None:
            return problem
    if "attachments" in message:
        items = message["attachments"]
        if not isinstance(items, list) or not 1 <= len(items) <= 10:
            return "Param message[attachments] must hold 1 to 10 images"
        for item in items:
            if not isinstance(item, Mapping) or item.get("type") != "image":
                return "Only images may be sent in message[attachments]"
            if _url_of(item) is None:
                return "Param message[attachments][payload][url] is required"
        return None
    return _check_attachment(message["attachment"])


def _url_of(item: Mapping[str, object]) -> str | None:
    payload = item.get("payload")
    if not isinstance(payload, Mapping):
        return None
    url = payload.get("url") or payload.get("attachment_id")
    return url if isinstance(url, str) and url else None


def _check_quick_replies(quick: object) -> str | None:
    if not isinstance(quick, list) or len(quick) > 13:
        return "Param message[quick_replies] must be an array with at most 13 elements"
    for q in quick:
        if not isinstance(q, Mapping):
            return "Each quick reply must be an object"
        kind = q.get("content_type", "text")
        if kind not in QUICK_REPLY_TYPES:
            return (f"Param message[quick_replies][content_type] {kind!r} must be one of "
                    f"{', '.join(sorted(QUICK_REPLY_TYPES))}")
        if kind == "text":
            title = q.get("title")
            if not isinstance(title, str) or not title:
                return "Param message[quick_replies][title] is required"
            if not q.get("payload"):
                return "Param message[quick_replies][payload] is required"
    return None


def _check_attachment(att: object) -> str | None:
    if not isinstance(att, Mapping):
        return "Param message[attachment] must be an object"
    kind = att.get("type")
    if kind in MEDIA_TYPES:
        return None if _url_of(att) else "Param message[attachment][payload][url] is required"
    if kind == "like_heart":
        return None
    payload = att.get("payload")
    if kind == "MEDIA_SHARE":
        ok = isinstance(payload, Mapping) and isinstance(payload.get("id"), str)
        return None if ok else "Param message[attachment][payload][id] is required"
    if kind == "template":
        return _check_template(payload)
    return f"Param message[attachment][type] {kind!r} is not supported"


def _check_template(payload: object) -> str | None:
    if not isinstance(payload, Mapping):
        return "Param message[attachment][payload] must be an object"
    ttype = payload.get("template_type")
    if ttype == "generic":
        elements = payload.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
            return "A generic template needs 1 to 10 elements"
        for el in elements:
            err = _check_element(el)
            if err:
                return err
        return None
    if ttype == "button":
        text = payload.get("text")
        if not isinstance(text, str) or not 1 <= len(text) <= 640:
            return "A button template needs text of 1 to 640 characters"
        return _check_buttons(payload.get("buttons"), required=True)
    return f"template_type {ttype!r} is not supported"


def _check_element(el: object) -> str | None:
    """A generic template element: title (and subtitle) of at most 80 characters, a
    ``web_url`` default action with its url, and valid buttons."""
    if not isinstance(el, Mapping) or not isinstance(el.get("title"), str) or not el["title"]:
        return "Each template element needs a title"
    for key in ("title", "subtitle"):
        value = el.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > MAX_ELEMENT_TEXT):
            return f"Param element[{key}] must be a string of at most {MAX_ELEMENT_TEXT} characters"
    action = el.get("default_action")
    if action is not None and (
        not isinstance(action, Mapping) or action.get("type") != "web_url"
        or not isinstance(action.get("url"), str) or not action["url"]
    ):
        return "Param element[default_action] must be a web_url with a url"
    return _check_buttons(el.get("buttons", []), required=False)


def _check_buttons(buttons: object, *, required: bool) -> str | None:
    """1 to 3 (0 to 3 when not ``required``) buttons: ``web_url`` with ``url`` and ``title``,
    ``postback`` with ``title`` and ``payload`` (reference §4.2)."""
    if not isinstance(buttons, list) or len(buttons) > 3 or (required and not buttons):
        return "Templates take 1 to 3 buttons"
    for b in buttons:
        if not isinstance(b, Mapping) or b.get("type") not in ("postback", "web_url"):
            return "Only postback and web_url buttons are supported"
        needs = ("url", "title") if b["type"] == "web_url" else ("title", "payload")
        for key in needs:
            value = b.get(key)
            if not isinstance(value, str) or not value:
                return f"Param buttons[{key}] is required for a {b['type']} button"
    return None


def is_reaction(value: str) -> bool:
    """``love``, or an emoji: a short run of emoji characters and their modifiers (a
    keycap ``1️⃣`` is a digit, U+FE0F and U+20E3). How Meta treats two emoji in one reaction
    is not in the reference: accepted, the lenient side of unknown."""
    if value in REACTION_NAMES:
        return True
    if not 0 < len(value) <= 10 or value.isascii():
        return False
    return all(unicodedata.category(ch) in _EMOJI_CATEGORIES or ch.isdigit() or ch in "#*"
               for ch in value) and any(not ch.isascii() for ch in value)


def parse_send(body: Mapping[str, object]) -> SendSpec | web.Response:
    """The send described by ``body``, or Meta's 400 answer."""
    recipient = body.get("recipient")
    if not isinstance(recipient, Mapping):
        return _bad("The parameter recipient is required")
    rid = recipient.get("id")
    cid = recipient.get("comment_id")
    if not isinstance(rid, str | int) and not isinstance(cid, str | int):
        return _bad("Param recipient must have an id or a comment_id")
    recipient_id = str(rid) if isinstance(rid, str | int) else None
    comment_id = str(cid) if isinstance(cid, str | int) and recipient_id is None else None
    action = body.get("sender_action")
    if action is not None:
        if "message" in body:
            return _bad("sender_action must be sent alone, without a message")
        if comment_id is not None:
            return _bad("sender_action cannot be sent to a comment")
        if action in SIMPLE_ACTIONS:
            return SendSpec("action", recipient_id, None, {}, str(action), False, None, None)
        if action in ("react", "unreact"):
            payload = body.get("payload")
            mid = payload.get("message_id") if isinstance(payload, Mapping) else None
            if not isinstance(mid, str) or not mid:
                return _bad("Param payload[message_id] is required")
            reaction = payload.get("reaction") if isinstance(payload, Mapping) else None
            if action == "react" and (not isinstance(reaction, str) or not reaction):
                return _bad("Param payload[reaction] is required")
            if action == "react" and not is_reaction(str(reaction)):
                return _bad("Param payload[reaction] must be love or an emoji")
            kind: SendKind = "react" if action == "react" else "unreact"
            react = str(reaction) if action == "react" else None
            return SendSpec(kind, recipient_id, None, {}, str(action), False, mid, react)
        return _bad(f"Param sender_action {action!r} is not supported")
    message = body.get("message")
    if not isinstance(message, Mapping):
        return _bad("The parameter message is required")
    problem = _check_message(message)
    if problem is not None:
        return _bad(problem)
    tag = body.get("tag")
    human = tag == "HUMAN_AGENT" and body.get("messaging_type") == "MESSAGE_TAG"
    if tag is not None and not human:
        return _bad("Param tag must be HUMAN_AGENT with messaging_type MESSAGE_TAG")
    if comment_id is not None and "text" not in message:
        return _bad("A private reply must be a text message")
    return SendSpec("message", recipient_id, comment_id, message, None, human, None, None)
