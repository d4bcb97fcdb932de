"""The ``fields`` parameter as Graph reads it: parsing (with nested selections such as
``messages{id,message,from}``), the fields each node documents, and Meta's code 100 for a
field the node does not have (reference §5.4: "100 | Invalid parameter / nonexisting field
(e.g. ``unread_count`` on an IG conversation) | real"; §7).

The lists come from the reference: the IG user (§1.7), the conversation and its messages
(§7) and the messenger profile (§8). The User Profile API and the comment node are not in the
reference [outside ref]; their lists are Meta's public docs for those nodes.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from instaset.sandbox.wire import graph_error

# A parsed selection: field name -> its sub-selection, or None when none was given.
Selection = dict[str, "Selection | None"]

# node type -> {field: node type of its sub-fields, or None for a scalar / free-form value}
SCHEMA: dict[str, dict[str, str | None]] = {
    "IGUser": dict.fromkeys((
        "id", "user_id", "username", "name", "account_type", "profile_picture_url",
        "followers_count", "follows_count", "media_count", "biography", "website", "ig_id",
    )),
    "IGConversation": {"id": None, "updated_time": None, "participants": "IGParticipant",
                       "messages": "IGMessage"},
    "IGMessage": {"id": None, "created_time": None, "from": "IGParticipant",
                  "to": "IGParticipant", "message": None, "attachments": None,
                  "is_unsupported": None, "reactions": None, "shares": None, "story": None},
    "IGParticipant": {"id": None, "username": None},
    "IGUserProfile": dict.fromkeys((
        "id", "name", "username", "profile_pic", "follower_count", "is_user_follow_business",
        "is_business_follow_user", "is_verified_user",
    )),
    "IGComment": {"id": None, "text": None, "timestamp": None, "username": None,
                  "hidden": None, "from": "IGParticipant", "media": None, "parent_id": None,
                  "like_count": None, "replies": None, "user": None,
                  "legacy_instagram_comment_id": None},
    "MessengerProfile": {"ice_breakers": None, "persistent_menu": None},
}  # fmt: skip


class FieldsError(ValueError):
    """``fields`` cannot be parsed."""


def parse_fields(raw: str) -> Selection:
    """``a,b{c,d{e}},f`` -> ``{"a": None, "b": {"c": None, "d": {"e": None}}, "f": None}``.
    Field modifiers (``messages.limit(5)``) are accepted and ignored. Raises
    :class:`FieldsError` on unbalanced braces."""
    sel, rest = _parse(raw, 0)
    if rest != len(raw):
        raise FieldsError(f"unexpected '}}' at {rest} in fields={raw}")
    return sel


def _parse(raw: str, i: int) -> tuple[Selection, int]:
    out: Selection = {}
    name = ""
    while i < len(raw):
        ch = raw[i]
        if ch == "{":
            sub, i = _parse(raw, i + 1)
            if i >= len(raw) or raw[i] != "}":
                raise FieldsError(f"unbalanced '{{' in fields={raw}")
            out[_bare(name)] = sub
            name = ""
        elif ch == "}":
            break
        elif ch == "(":
            # A modifier's arguments (``.fields(id,message)``, ``.limit(2)``) belong to the
            # name before them: their commas separate nothing here.
            end = raw.find(")", i)
            if end < 0:
                raise FieldsError(f"unbalanced '(' in fields={raw}")
            name += raw[i:end + 1]
            i = end
        elif ch == ",":
            if _bare(name):
                out.setdefault(_bare(name), None)
            name = ""
        else:
            name += ch
        i += 1
    if _bare(name):
        out.setdefault(_bare(name), None)
    return out, i


def _bare(name: str) -> str:
    return name.strip().split(".", 1)[0].strip()


def requested(params: Mapping[str, str]) -> Selection:
    """The parsed ``fields`` of a request (empty when absent); raises :class:`FieldsError`."""
    return parse_fields(params.get("fields", ""))


def unknown_field(sel: Selection, node: str) -> web.Response | None:
    """Meta's answer when ``sel`` names a field ``node`` does not have (also in nested
    selections), else None. The message is Graph's usual wording [memory]; the code is the
    reference's (100)."""
    fields = SCHEMA[node]
    for name, sub in sel.items():
        if name not in fields:
            return graph_error(
                400, 100,
                f"(#100) Tried accessing nonexisting field ({name}) on node type ({node})",
                type="IGApiException",
            )
        child = fields[name]
        if sub and child is not None:
            problem = unknown_field(sub, child)
            if problem is not None:
                return problem
    return None


def bad_fields(params: Mapping[str, str], node: str) -> web.Response | None:
    """:func:`unknown_field` for a request's ``fields``, or Meta's 100 for a malformed one."""
    try:
        sel = requested(params)
    except FieldsError as exc:
        return graph_error(400, 100, f"(#100) {exc}", type="IGApiException")
    return unknown_field(sel, node)


def project(value: Mapping[str, object], sel: Selection | None) -> dict[str, object]:
    """``value`` cut down to a nested selection (``id`` kept). A list edge
    (``{"data": [...]}``) has the selection applied to each item."""
    if not sel:
        return dict(value)
    out: dict[str, object] = {}
    for key, item in value.items():
        if key != "id" and key not in sel:
            continue
        sub = sel.get(key)
        if sub and isinstance(item, Mapping):
            data = item.get("data")
            if isinstance(data, list):
                out[key] = {**item, "data": [
                    project(d, sub) if isinstance(d, Mapping) else d for d in data
                ]}
            else:
                out[key] = project(item, sub)
        else:
            out[key] = item
    return out
