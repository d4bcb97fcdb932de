"""Meta's wire format as the sandbox speaks it: signing, webhook payload builders, ids and
error bodies. Everything here is pure (no I/O, no clock reads) so that ``instaset simulate``
and tests can build byte-exact deliveries without a running sandbox."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime

from aiohttp import web

# The real bodies Meta returned (tests/data/send_error_*_real.json), byte-for-byte in content.
WINDOW_CLOSED_STATUS = 403
WINDOW_CLOSED_BODY: dict[str, object] = {
    "error": {
        "message": "Essa mensagem foi enviada fora do período permitido.",
        "type": "IGApiException",
        "code": 10,
        "error_subcode": 2534022,
        "fbtrace_id": "AH8pjdbGEQUjnztFwv_WH7_",
    }
}
USER_NOT_FOUND_STATUS = 400
USER_NOT_FOUND_BODY: dict[str, object] = {
    "error": {
        "message": "Não foi possível encontrar o usuário solicitado.",
        "type": "IGApiException",
        "code": 100,
        "error_subcode": 2534014,
    }
}

# Webhook fields a subscription may name (Meta's own list, from an API error message).
KNOWN_FIELDS = frozenset(
    {
        "comment_poll_response",
        "comments",
        "follow",
        "live_comments",
        "mentions",
        "message_edit",
        "message_reactions",
        "messages",
        "messaging_optins",
        "messaging_postbacks",
        "messaging_referral",
        "messaging_seen",
        "onboarding_welcome_message_series",
        "share_to_story",
        "standby",
        "story_insights",
        "story_poll_response",
    }
)


def sign(body: bytes, secret: str) -> str:
    """``X-Hub-Signature-256`` value: ``sha256=`` + hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def sign_sha1(body: bytes, secret: str) -> str:
    """Legacy ``X-Hub-Signature`` value, which Meta still sends alongside."""
    return "sha1=" + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


def meta_dumps(payload: object) -> bytes:
    """Serialise as Meta does: ASCII-only with ``\\uXXXX`` escapes and ``/`` escaped as
    ``\\/``. ``/`` can only occur inside JSON strings, so the blanket replace is safe, and it
    makes naive re-serialisation on the receiving side fail the signature check, as with Meta.
    """
    text = json.dumps(payload, ensure_ascii=True, separators=(",", ":"))
    return text.replace("/", "\\/").encode("ascii")


def signed_delivery(payload: object, secret: str) -> tuple[bytes, dict[str, str]]:
    """Raw body and headers of a webhook delivery signed with ``secret``."""
    raw = meta_dumps(payload)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "facebookexternalua",
        "X-Hub-Signature-256": sign(raw, secret),
        "X-Hub-Signature": sign_sha1(raw, secret),
    }
    return raw, headers


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def new_mid(account_id: str) -> str:
    """A fresh message id shaped like Meta's (``aWdf...``: base64 of ``ig_...``)."""
    return _b64(f"ig_message_item:1:IGMessageThread:{account_id}:{secrets.token_hex(12)}")


def new_conversation_id(account_id: str, igsid: str) -> str:
    return _b64(f"ig_conversation:{account_id}:{igsid}:{secrets.token_hex(6)}")


def iso_time(ts: float) -> str:
    """Graph's timestamp format, e.g. ``2026-04-05T05:27:08+0000``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


def build_dm_payload(
    account_id: str,
    igsid: str,
    text: str | None,
    mid: str,
    ts_ms: int,
    *,
    extras: Mapping[str, object] | None = None,
) -> dict[str, object]:
    """An inbound DM webhook (``messages`` field), shaped like ``dm_text_real_tester.json``.
    ``extras`` are merged into ``message`` (``attachments``, ``quick_reply``, ``reply_to``...)."""
    message: dict[str, object] = {"mid": mid}
    if text:
        message["text"] = text
    message.update(extras or {})
    item = {
        "sender": {"id": igsid},
        "recipient": {"id": account_id},
        "timestamp": ts_ms,
        "message": message,
    }
    return {
        "object": "instagram",
        "entry": [{"time": ts_ms, "id": account_id, "messaging": [item]}],
    }


def build_postback_payload(account_id: str, igsid: str, title: str, payload: str, mid: str,
                           ts_ms: int) -> dict[str, object]:
    """A ``messaging_postbacks`` webhook: the user tapped a button (an ice breaker, a
    persistent-menu item, a template's postback button) titled ``title`` (reference §3.3,
    with the ``mid`` Meta sends since v11.0)."""
    item = {
        "sender": {"id": igsid},
        "recipient": {"id": account_id},
        "timestamp": ts_ms,
        "postback": {"mid": mid, "title": title, "payload": payload},
    }
    return {
        "object": "instagram",
        "entry": [{"time": ts_ms, "id": account_id, "messaging": [item]}],
    }


def build_referral_payload(account_id: str, igsid: str, ref: str, ts_ms: int
                            ) -> dict[str, object]:
    """A standalone ``messaging_referral`` webhook: an ig.me link with ``ref`` opened an
    existing thread (reference §3.5)."""
    item = {
        "sender": {"id": igsid},
        "recipient": {"id": account_id},
        "timestamp": ts_ms,
        "referral": {"ref": ref, "source": "SHORTLINK", "type": "OPEN_THREAD"},
    }
    return {
        "object": "instagram",
        "entry": [{"time": ts_ms, "id": account_id, "messaging": [item]}],
    }


def build_echo_payload(
    account_id: str, igsid: str, message: Mapping[str, object], mid: str, ts_ms: int
) -> dict[str, object]:
    """The ``is_echo`` copy of our own send, shaped like ``dm_echo_text_real.json``: sender is
    the account, recipient the user. ``message`` is the Send API ``message`` object."""
    echo: dict[str, object] = {"mid": mid}
    if "text" in message:
        echo["text"] = message["text"]
    attachments = message.get("attachments")
    if isinstance(attachments, list):
        echo["attachments"] = attachments
    elif isinstance(message.get("attachment"), Mapping):
        echo["attachments"] = [message["attachment"]]
    echo["is_echo"] = True
    item = {
        "sender": {"id": account_id},
        "message": echo,
        "recipient": {"id": igsid},
        "timestamp": ts_ms,
    }
    return {
        "entry": [{"id": account_id, "time": ts_ms, "messaging": [item]}],
        "object": "instagram",
    }


def build_comment_payload(
    account_id: str,
    igsid: str,
    username: str,
    text: str,
    media_id: str,
    comment_id: str,
    ts: int,
    *,
    parent_id: str | None = None,
    media_product_type: str = "FEED",
) -> dict[str, object]:
    """A ``comments`` change webhook. ``ts`` is in **seconds**, as on real change entries."""
    value: dict[str, object] = {
        "from": {"id": igsid, "username": username},
        "media": {"id": media_id, "media_product_type": media_product_type},
        "id": comment_id,
    }
    if parent_id is not None:
        value["parent_id"] = parent_id
    value["text"] = text
    change = {"field": "comments", "value": value}
    return {"object": "instagram", "entry": [{"id": account_id, "time": ts, "changes": [change]}]}


def fbtrace() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")[:22]


def graph_error(
    status: int,
    code: int,
    message: str,
    *,
    subcode: int | None = None,
    type: str = "OAuthException",
    is_transient: bool | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """A Graph error envelope response."""
    err: dict[str, object] = {"message": message, "type": type, "code": code}
    if subcode is not None:
        err["error_subcode"] = subcode
    if is_transient is not None:
        err["is_transient"] = is_transient
    err["fbtrace_id"] = fbtrace()
    return web.json_response({"error": err}, status=status, headers=headers)


def oauth_error(message: str, *, code: int = 400) -> web.Response:
    """The ``api.instagram.com`` OAuth envelope (``error_type``/``code``/``error_message``)."""
    body = {"error_type": "OAuthException", "code": code, "error_message": message}
    return web.json_response(body, status=code)


def unknown_object(method: str, obj: str) -> web.Response:
    return graph_error(
        400,
        100,
        f"Unsupported {method.lower()} request. Object with ID '{obj}' does not exist, cannot "
        "be loaded due to missing permissions, or does not support this operation.",
        subcode=33,
        type="IGApiException",
    )
