"""The event types of :mod:`instaset.events`: :class:`EventKind` and the frozen dataclasses
:func:`~instaset.events.parse_webhook` builds, one class per kind of webhook item.

``Event`` carries what every event has (account, dedupe key, time, contact, ``raw``); the
subclasses add what their item carries. :mod:`instaset.events` re-exports every public name
here, so ``from instaset.events import MessageEvent`` keeps working.

This module does no I/O and imports only the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from instaset.media_labels import describe_attachment


class EventKind(StrEnum):
    MESSAGE = "message"  # inbound DM from a person
    ECHO = "echo"  # a message sent by the business account (is_echo)
    MESSAGE_DELETED = "message_deleted"  # message.is_deleted (unsend)
    MESSAGE_EDIT = "message_edit"
    REACTION = "reaction"  # react and unreact
    READ = "read"
    POSTBACK = "postback"  # ice breakers, persistent menu, template buttons
    REFERRAL = "referral"  # standalone messaging_referral
    OPTIN = "optin"
    COMMENT = "comment"  # changes field "comments"
    LIVE_COMMENT = "live_comment"  # changes field "live_comments"
    MENTION = "mention"  # changes field "mentions"
    UNKNOWN = "unknown"  # anything else: stored and skipped


# --------------------------------------------------------------------------- value objects

@dataclass(frozen=True, slots=True)
class Attachment:
    """One ``message.attachments[]`` element. ``type`` is Meta's string verbatim ("" if
    absent); ``media_id`` is ``payload.reel_video_id`` / ``ig_post_media_id`` / ``id``;
    ``payload`` is the compact JSON of the payload as received ("null" if absent)."""

    type: str
    url: str | None
    title: str | None
    media_id: str | None
    payload: str

    def describe(self) -> str:
        """See :func:`instaset.media_labels.describe_attachment`."""
        return describe_attachment(self.type, self.title)


@dataclass(frozen=True, slots=True)
class StoryRef:
    """``message.reply_to.story``: the story a DM replies to (CDN URLs expire in ~24 h)."""

    id: str | None
    url: str | None


@dataclass(frozen=True, slots=True)
class Referral:
    """An ig.me link or ad referral (standalone or inside ``message.referral``)."""

    ref: str | None
    source: str | None
    type: str | None
    ad_id: str | None


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Event:
    """Common shape of every event. ``account_id`` is ``entry.id`` as a string ("" if
    unusable); ``contact_id`` is the person's IGSID (None when unknown or for mentions).
    ``raw`` (and text fields) keep lone surrogates if the body had unpaired ``\\udXXX``
    escapes: such strings cannot be encoded as plain UTF-8."""

    kind: EventKind
    account_id: str
    dedupe_key: str
    occurred_at: float
    contact_id: str | None
    standby: bool
    raw: str = field(repr=False)

    @property
    def is_from_business(self) -> bool:
        """True when the business account itself caused the event (echoes, its own comments).
        Such events must never trigger automation."""
        return False


@dataclass(frozen=True, slots=True)
class MessagingEvent(Event):
    """Base of the events that come from a ``messaging[]``/``standby[]`` item."""

    sender_id: str | None
    recipient_id: str | None

    @property
    def is_from_business(self) -> bool:
        return self.sender_id is not None and self.sender_id == self.account_id


@dataclass(frozen=True, slots=True)
class MessageEvent(MessagingEvent):
    """A DM (kind MESSAGE) or the echo of one the business sent (kind ECHO)."""

    mid: str
    text: str | None
    attachments: tuple[Attachment, ...]
    is_echo: bool
    is_self: bool
    is_unsupported: bool
    quick_reply_payload: str | None
    reply_to_mid: str | None
    reply_to_story: StoryRef | None
    referral: Referral | None

    @property
    def is_from_business(self) -> bool:
        return self.is_echo or (self.sender_id is not None and self.sender_id == self.account_id)

    @property
    def preview(self) -> str:
        """Text and attachment placeholders on one line, e.g. ``"look [image]"``."""
        parts = [self.text] if self.text else []
        parts.extend(a.describe() for a in self.attachments)
        if not parts and self.is_unsupported:
            parts.append("[unsupported message]")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class MessageDeletedEvent(MessagingEvent):
    mid: str


@dataclass(frozen=True, slots=True)
class MessageEditEvent(MessagingEvent):
    mid: str
    text: str | None
    num_edit: int  # 0 when Meta's value is missing or not a number


@dataclass(frozen=True, slots=True)
class ReactionEvent(MessagingEvent):
    mid: str
    action: str  # "react" / "unreact" (inferred from reaction/emoji when absent)
    reaction: str | None
    emoji: str | None


@dataclass(frozen=True, slots=True)
class ReadEvent(MessagingEvent):
    mid: str | None


@dataclass(frozen=True, slots=True)
class PostbackEvent(MessagingEvent):
    mid: str | None
    title: str | None
    payload: str | None


@dataclass(frozen=True, slots=True)
class ReferralEvent(MessagingEvent):
    referral: Referral


@dataclass(frozen=True, slots=True)
class OptinEvent(MessagingEvent):
    payload: str | None
    ref: str | None
    optin_type: str | None


@dataclass(frozen=True, slots=True)
class CommentEvent(Event):
    """A comment (kind COMMENT) or live comment (kind LIVE_COMMENT); ``contact_id`` is
    ``from.id``."""

    comment_id: str
    text: str | None
    from_id: str | None
    from_username: str | None
    media_id: str | None
    media_product_type: str | None
    parent_id: str | None

    @property
    def is_reply(self) -> bool:
        return self.parent_id is not None

    @property
    def is_from_business(self) -> bool:
        # The business's own replies come back as comments too: answering them would loop.
        return self.from_id is not None and self.from_id == self.account_id


@dataclass(frozen=True, slots=True)
class MentionEvent(Event):
    media_id: str | None
    comment_id: str | None


@dataclass(frozen=True, slots=True)
class UnknownEvent(Event):
    """Anything not understood. ``field`` is the changes field or messaging key seen."""

    field: str | None
    reason: str


__all__ = [
    "Attachment",
    "CommentEvent",
    "Event",
    "EventKind",
    "MentionEvent",
    "MessageDeletedEvent",
    "MessageEditEvent",
    "MessageEvent",
    "MessagingEvent",
    "OptinEvent",
    "PostbackEvent",
    "ReactionEvent",
    "ReadEvent",
    "Referral",
    "ReferralEvent",
    "StoryRef",
    "UnknownEvent",
]
