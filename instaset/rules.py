"""Instagram's sending rules, checked before any Graph call. Pure: no I/O, no clock.

Contract: :func:`check_send` returns ``None`` when the send may go out (and whether it must
carry the HUMAN_AGENT tag), or a :class:`Refusal` whose ``reason`` is a stable slug that the
inbox and stats show. A refused send is recorded and never retried blindly.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

WINDOW_SECONDS = 24 * 3600
HUMAN_AGENT_SECONDS = 7 * 24 * 3600
PRIVATE_REPLY_SECONDS = 7 * 24 * 3600
MAX_QUICK_REPLIES = 13
MAX_QUICK_REPLY_TITLE = 20


class SendKind(StrEnum):
    TEXT = "text"
    MEDIA = "media"
    TEMPLATE = "template"
    PRIVATE_REPLY = "private_reply"
    PUBLIC_REPLY = "public_reply"
    SENDER_ACTION = "sender_action"
    REACT = "react"


# Kinds that go to a person's DM thread and so need the messaging window.
DM_KINDS = frozenset(
    {SendKind.TEXT, SendKind.MEDIA, SendKind.TEMPLATE, SendKind.SENDER_ACTION, SendKind.REACT}
)


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class SendFacts:
    """What the rules need to know about one send and its conversation."""

    kind: SendKind
    human: bool  # typed by the creator (inbox reply), not automation
    account_state: str
    last_inbound_at: float | None
    paused_until: float | None
    comment_at: float | None = None
    private_reply_used: bool = False  # a private reply to the comment is sent or in flight
    after_private: bool = False  # a public reply announcing the comment's private reply
    quick_reply_titles: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Clearance:
    human_agent_tag: bool


def _ago(seconds: float) -> str:
    hours = seconds / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"


def check_send(f: SendFacts, now: float) -> Refusal | Clearance:
    if f.account_state != "connected":
        return Refusal(
            f"account_{f.account_state}",
            f"the account is {f.account_state.replace('_', ' ')}; run `instaset connect`",
        )
    if len(f.quick_reply_titles) > MAX_QUICK_REPLIES:
        return Refusal(
            "invalid_quick_replies",
            f"{len(f.quick_reply_titles)} quick replies; Instagram allows {MAX_QUICK_REPLIES}",
        )
    for title in f.quick_reply_titles:
        if len(title) > MAX_QUICK_REPLY_TITLE:
            return Refusal(
                "invalid_quick_replies",
                f"quick reply title {title!r} is longer than {MAX_QUICK_REPLY_TITLE} characters",
            )
    if not f.human and f.paused_until is not None and f.paused_until > now:
        return Refusal("paused", "automation is paused for this contact (a human took over)")
    if f.kind == SendKind.PRIVATE_REPLY:
        if f.private_reply_used:
            return Refusal("private_reply_used", "this comment already got its one private reply")
        if f.comment_at is None or now - f.comment_at > PRIVATE_REPLY_SECONDS:
            shown = "unknown" if f.comment_at is None else _ago(now - f.comment_at)
            return Refusal(
                "private_reply_expired",
                f"private replies are allowed for 7 days; comment age {shown}",
            )
        return Clearance(human_agent_tag=False)
    if f.kind == SendKind.PUBLIC_REPLY:
        if f.after_private and not f.private_reply_used:
            # "Sent it to your DMs!" under a comment whose DM was refused or failed.
            return Refusal("private_reply_not_sent",
                           "the comment's private reply, which this public reply announces, "
                           "was not sent")
        return Clearance(human_agent_tag=False)
    # A DM: the 24 h window after the contact's last message (7 days for a human reply).
    if f.last_inbound_at is None:
        return Refusal("window_closed", "this person has never messaged the account")
    age = now - f.last_inbound_at
    if age <= WINDOW_SECONDS:
        return Clearance(human_agent_tag=False)
    if f.human and age <= HUMAN_AGENT_SECONDS and f.kind != SendKind.SENDER_ACTION:
        return Clearance(human_agent_tag=True)
    limit = "7 days (human agent)" if f.human else "24 h"
    return Refusal(
        "window_closed", f"last message from this person was {_ago(age)} ago; the limit is {limit}"
    )
