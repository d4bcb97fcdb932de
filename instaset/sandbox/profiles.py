"""The sandbox's User Profile API and the Conversations API's detail limit, as Meta applies
them (reference §7 and the User Profile consent rule).

- ``GET /{igsid}?fields=...`` answers only for a person who has messaged the account; anyone
  else gets Meta's consent error (code 230, "User consent is required to access user
  profile"). Tests shape a profile through ``Sandbox.profiles[igsid]`` (any of
  :data:`PROFILE_FIELDS`); missing fields get plausible defaults.
- Only the :data:`DETAIL_LIMIT` newest messages of a conversation can be read one by one;
  older ones read as if deleted (Graph's "object does not exist" answer).

Pure functions over the sandbox's records, so that ``server.py`` keeps only the dispatch.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from aiohttp import web

from instaset.sandbox.model import Conversation, StoredMessage
from instaset.sandbox.wire import graph_error

DETAIL_LIMIT = 20
PROFILE_FIELDS = frozenset({
    "name", "username", "profile_pic", "follower_count", "is_user_follow_business",
    "is_business_follow_user", "is_verified_user",
})
CONSENT_CODE = 230
CONSENT_MESSAGE = "User consent is required to access user profile"


def profile_json(
    igsid: str, username: str, overrides: Mapping[str, object], fields: Collection[str]
) -> dict[str, object]:
    """The requested fields of ``igsid``'s profile (``id`` always), defaults filled in."""
    full: dict[str, object] = {
        "name": username.replace("_", " ").title(),
        "username": username,
        "profile_pic": f"https://example.invalid/profile/{igsid}.jpg",
        "follower_count": 0,
        "is_user_follow_business": False,
        "is_business_follow_user": False,
        "is_verified_user": False,
        **overrides,
    }
    wanted = (set(fields) & PROFILE_FIELDS) or {"name", "username"}
    return {"id": igsid, **{k: v for k, v in full.items() if k in wanted}}


def profile_response(
    igsid: str, username: str, *, consented: bool, overrides: Mapping[str, object],
    fields: Collection[str],
) -> web.Response:
    if not consented:
        return graph_error(400, CONSENT_CODE, CONSENT_MESSAGE, type="IGApiException")
    return web.json_response(profile_json(igsid, username, overrides, fields))


def has_details(conv: Conversation, msg: StoredMessage) -> bool:
    """Whether ``msg`` is among the :data:`DETAIL_LIMIT` newest messages of ``conv``."""
    newest = sorted(conv.messages, key=lambda m: m.at, reverse=True)[:DETAIL_LIMIT]
    return any(m is msg for m in newest)
