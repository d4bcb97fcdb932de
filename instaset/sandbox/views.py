"""Read-side answers of the sandbox (``/me``, subscriptions, messenger profile, the
Conversations API) and request parsing helpers. Pure functions over the sandbox's records, so
that ``server.py`` keeps only the rules and the lifecycle."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from urllib.parse import parse_qsl

from aiohttp import web
from yarl import URL

from instaset.sandbox.fields import FieldsError, Selection, bad_fields, project, requested
from instaset.sandbox.messaging import coerce_form
from instaset.sandbox.model import Comment, Conversation, StoredMessage
from instaset.sandbox.profiles import DETAIL_LIMIT
from instaset.sandbox.wire import KNOWN_FIELDS, graph_error, iso_time, unknown_object

ME_DEFAULTS: dict[str, object] = {
    "name": "Sandbox Creator",
    "account_type": "MEDIA_CREATOR",
    "profile_picture_url": "https://example.invalid/sandbox_creator.jpg",
    "followers_count": 1234,
    "follows_count": 56,
    "media_count": 78,
}


def as_list(value: object) -> list[object]:
    return list(value) if isinstance(value, list) else []


def cursor(n: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{n}".encode()).decode().rstrip("=")


def offset(text: str) -> int | None:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        return int(raw.removeprefix("offset:")) if raw.startswith("offset:") else None
    except ValueError:
        return None


def requested_fields(params: Mapping[str, str]) -> Selection:
    """``fields`` parsed, nested selections kept (``{"messages": {"id": None, ...}}``); empty
    when absent or malformed (handlers answer a malformed one with ``bad_fields`` first)."""
    try:
        return requested(params)
    except FieldsError:
        return {}


def me_json(
    account_id: str, app_user_id: str, username: str, fields: Selection
) -> dict[str, object]:
    full: dict[str, object] = {"user_id": account_id, "username": username, **ME_DEFAULTS}
    out = {k: v for k, v in full.items() if k in fields}
    out["id"] = app_user_id
    return out


def subscribed_apps(method: str, params: Mapping[str, str], subscribed: list[str]) -> web.Response:
    """``/{ig-id}/subscribed_apps``; ``subscribed`` is updated in place."""
    if method == "POST":
        names = [f.strip() for f in params.get("subscribed_fields", "").split(",") if f.strip()]
        if not names:
            return graph_error(400, 100, "(#100) The parameter subscribed_fields is required")
        bad = [n for n in names if n not in KNOWN_FIELDS]
        if bad:
            return graph_error(400, 100, f"(#100) Field {bad[0]} is not available")
        subscribed[:] = list(dict.fromkeys(names))
        return web.json_response({"success": True})
    if method == "DELETE":
        subscribed.clear()
        return web.json_response({"success": True})
    if method == "GET":
        if not subscribed:
            return web.json_response({"data": []})
        app = {"name": "instaset sandbox", "id": "990000000000001"}
        return web.json_response({"data": [{**app, "subscribed_fields": list(subscribed)}]})
    return unknown_object(method, "subscribed_apps")


def messenger_profile(
    method: str, params: Mapping[str, str], body: object, profile: dict[str, object]
) -> web.Response:
    """``/{ig-id}/messenger_profile``; ``profile`` is updated in place."""
    data = body if isinstance(body, Mapping) else {}
    if method == "POST":
        updates = {k: data[k] for k in ("ice_breakers", "persistent_menu") if k in data}
        if not updates:
            return graph_error(
                400, 100, "(#100) Requires one of the params: ice_breakers, persistent_menu"
            )
        for locale in as_list(updates.get("ice_breakers")):
            actions = locale.get("call_to_actions") if isinstance(locale, Mapping) else None
            if not isinstance(actions, list) or not 1 <= len(actions) <= 4:
                return graph_error(400, 100, "(#100) ice_breakers take 1 to 4 questions")
        profile.update(updates)
        return web.json_response({"success": True})
    if method == "DELETE":
        names = data.get("fields") or params.get("fields", "").split(",")
        for name in as_list(names):
            profile.pop(str(name), None)
        return web.json_response({"success": True})
    if method == "GET":
        problem = bad_fields(params, "MessengerProfile")
        if problem is not None:
            return problem
        wanted = set(requested_fields(params))
        if wanted == {"ice_breakers"}:
            return web.json_response({"data": profile.get("ice_breakers", [])})
        found = {k: v for k, v in profile.items() if k in wanted}
        return web.json_response({"data": [found] if found else []})
    return unknown_object(method, "messenger_profile")


def conversations_page(
    convs: list[Conversation],
    params: Mapping[str, str],
    url: URL,
    render: Callable[[Conversation, Selection], dict[str, object]],
) -> web.Response:
    """One page of conversations, newest first, with Graph's cursor paging."""
    problem = bad_fields(params, "IGConversation")
    if problem is not None:
        return problem
    if params.get("user_id"):
        convs = [c for c in convs if c.igsid == params["user_id"]]
    convs = sorted(convs, key=lambda c: (c.updated_at, c.seq), reverse=True)
    try:
        limit = min(max(int(params.get("limit", "25")), 1), 100)
    except ValueError:
        return graph_error(400, 100, "(#100) Param limit must be an integer")
    start = 0
    if params.get("after"):
        found = offset(params["after"])
        if found is None:
            return graph_error(400, 100, "(#100) Invalid cursor")
        start = found
    page = convs[start : start + limit]
    fields = requested_fields(params) or {"id": None, "updated_time": None}
    out: dict[str, object] = {"data": [render(c, fields) for c in page]}
    if page:
        end = start + len(page)
        paging: dict[str, object] = {"cursors": {"before": cursor(start), "after": cursor(end)}}
        if end < len(convs):
            paging["next"] = str(url.update_query(after=cursor(end)))
        out["paging"] = paging
    return web.json_response(out)


def conversation_json(
    conv: Conversation, fields: Selection, me: dict[str, str], users: Mapping[str, str]
) -> dict[str, object]:
    """A conversation with the requested fields. ``messages{...}`` gives each message's
    sub-fields; only the :data:`DETAIL_LIMIT` newest have details, the older ones keep
    ``id`` and ``created_time`` (how Meta fills them is not in the reference [unverified])."""
    out: dict[str, object] = {"id": conv.id}
    if "updated_time" in fields:
        out["updated_time"] = iso_time(conv.updated_at)
    if "participants" in fields:
        them = {"username": users.get(conv.igsid, ""), "id": conv.igsid}
        sub = fields["participants"]
        out["participants"] = {"data": [project(p, sub) for p in (me, them)]}
    if "messages" in fields:
        newest = sorted(conv.messages, key=lambda m: m.at, reverse=True)
        sub = fields["messages"]
        items: list[object] = []
        for i, m in enumerate(newest):
            if sub and i < DETAIL_LIMIT:
                items.append(message_json(conv, m, sub, me, users))
            else:
                brief = {"id": m.mid, "created_time": iso_time(m.at)}
                items.append(project(brief, sub) if sub else brief)
        out["messages"] = {"data": items}
    return out


def message_json(
    conv: Conversation,
    msg: StoredMessage,
    fields: Selection,
    me: dict[str, str],
    users: Mapping[str, str],
) -> dict[str, object]:
    them = {"id": conv.igsid, "username": users.get(conv.igsid, "")}
    sender, receiver = (them, me) if msg.direction == "in" else (me, them)
    full: dict[str, object] = {
        "created_time": iso_time(msg.at),
        "from": sender,
        "to": {"data": [receiver]},
        "message": msg.text or "",
    }
    if msg.attachments:
        full["attachments"] = {"data": msg.attachments}
    return project({"id": msg.mid, **full}, fields or {"created_time": None})


def comment_json(comment: Comment, fields: Selection) -> dict[str, object]:
    """``GET /{comment-id}``: the requested fields, or a fixed default set when none are."""
    full: dict[str, object] = {
        "id": comment.id,
        "text": comment.text,
        "hidden": comment.hidden,
        "username": comment.username,
        "timestamp": iso_time(comment.at),
        "from": {"id": comment.igsid, "username": comment.username},
        "media": {"id": comment.media_id},
        "like_count": 0,
    }
    if comment.parent_id is not None:
        full["parent_id"] = comment.parent_id
    default = dict.fromkeys(("text", "hidden", "username", "timestamp"))
    return project(full, fields or default)


def bearer(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() in ("bearer", "oauth") and value.strip():
        return value.strip()
    return None


async def read_body(request: web.Request) -> tuple[object, dict[str, str]]:
    """The parsed body (JSON value, form dict or text) and its string fields as parameters."""
    if request.content_type.startswith("multipart/"):
        post = await request.post()
        form = {k: v for k, v in post.items() if isinstance(v, str)}
        return coerce_form(form), form
    raw = await request.read()
    if not raw:
        return None, {}
    if request.content_type == "application/x-www-form-urlencoded":
        form = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        return coerce_form(form), form
    try:
        body: object = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace"), {}
    if isinstance(body, dict):
        return body, {k: v for k, v in body.items() if isinstance(v, str)}
    return body, {}
