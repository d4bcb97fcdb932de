"""What goes over the wire to and from the Graph API, without the I/O: the value types of
requests and answers (:class:`SendResult`, :class:`TokenGrant`, :class:`QuickReply`), Meta's
documented limits, :func:`split_text` and the parsing of answer bodies.

Argument errors that Meta would reject anyway (too long, too many) raise ``ValueError`` here,
before any request is made. :mod:`instaset.graph` re-exports the public names.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field

from instaset.errors import GraphError
from instaset.graph_errors import _int

ATTACHMENT_TYPES = frozenset({"image", "audio", "video", "file"})
SENDER_ACTIONS = frozenset({"mark_seen", "typing_on", "typing_off"})
MAX_TEXT_BYTES = 1000
MAX_QUICK_REPLIES = 13
MAX_QUICK_REPLY_TITLE = 20
MAX_IMAGES = 10
MAX_TEMPLATE_ELEMENTS = 10
MAX_TEMPLATE_BUTTONS = 3
MAX_ICE_BREAKERS = 4


# --------------------------------------------------------------------------------------------
# Value types


@dataclass(frozen=True, slots=True)
class SendResult:
    """Meta's answer to a send: the recipient's IGSID and the new message id (``mid``)."""

    recipient_id: str | None
    message_id: str | None


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
# Answer bodies


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


__all__ = [
    "ATTACHMENT_TYPES",
    "MAX_ICE_BREAKERS",
    "MAX_IMAGES",
    "MAX_QUICK_REPLIES",
    "MAX_QUICK_REPLY_TITLE",
    "MAX_TEMPLATE_BUTTONS",
    "MAX_TEMPLATE_ELEMENTS",
    "MAX_TEXT_BYTES",
    "SENDER_ACTIONS",
    "QuickReply",
    "SendResult",
    "TokenGrant",
    "split_text",
]
