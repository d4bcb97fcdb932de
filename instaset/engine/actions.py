"""The actions a :class:`~instaset.engine.decide.Decision` asks the daemon to perform.

Every action is a frozen, slotted dataclass with a class-level ``type`` string. Actions carry
no recipient: they all concern the conversation the decision was made for (``account_id`` /
``contact_id`` of the state), except comment replies, which name their ``comment_id``.
Texts are fully rendered, except ``{link:NAME}`` tokens (see :mod:`instaset.engine.templating`)
which the sender resolves to tracked URLs.

``to_dict()`` / :func:`action_from_dict` give a JSON-safe form for durable job payloads;
``action_from_dict(a.to_dict()) == a`` for every action.

State-changing actions (:class:`SetTag`, :class:`RemoveTag`, :class:`SetField`,
:class:`SetStage`) are already applied to ``Decision.state``; executors may mirror them (e.g.
into the leads table) but must not apply them to the engine state again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = [
    "Action",
    "Button",
    "GenerateAIReply",
    "HandOff",
    "Notify",
    "OfferBooking",
    "PrivateReply",
    "PublicReply",
    "QuickReplySpec",
    "RemoveTag",
    "Schedule",
    "ScoreLead",
    "SendButtons",
    "SendMedia",
    "SendTemplate",
    "SendText",
    "SetField",
    "SetStage",
    "SetTag",
    "TemplateCard",
    "TypingOn",
    "action_from_dict",
    "is_message",
]


# --- parts --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QuickReplySpec:
    """A quick-reply chip (title <= 20 characters; its tap comes back as ``payload``)."""

    title: str
    payload: str


@dataclass(frozen=True, slots=True)
class Button:
    """A ``web_url`` button (``url``) or a ``postback`` button (``payload``)."""

    title: str
    url: str | None = None
    payload: str | None = None


@dataclass(frozen=True, slots=True)
class TemplateCard:
    """One element of a generic template; ``url`` is the card's default action."""

    title: str
    subtitle: str | None = None
    image_url: str | None = None
    url: str | None = None
    buttons: tuple[Button, ...] = ()


# --- actions ------------------------------------------------------------------------------


class _Base:
    """Shared serialisation; subclasses are frozen slotted dataclasses."""

    __slots__ = ()
    type: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict with a ``type`` key; inverse of :func:`action_from_dict`."""
        out: dict[str, Any] = {"type": self.type}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            out[f.name] = _encode(getattr(self, f.name))
        return out


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class SendText(_Base):
    """Send a DM text, optionally with quick replies."""

    type: ClassVar[str] = "send_text"
    text: str
    quick_replies: tuple[QuickReplySpec, ...] = ()


@dataclass(frozen=True, slots=True)
class SendMedia(_Base):
    """Send an attachment by URL (``kind``: image, video, audio or file)."""

    type: ClassVar[str] = "send_media"
    kind: str
    url: str


@dataclass(frozen=True, slots=True)
class SendButtons(_Base):
    """Send a button template: a text with 1-3 buttons."""

    type: ClassVar[str] = "send_buttons"
    text: str
    buttons: tuple[Button, ...]


@dataclass(frozen=True, slots=True)
class SendTemplate(_Base):
    """Send a generic template (1-10 cards)."""

    type: ClassVar[str] = "send_template"
    elements: tuple[TemplateCard, ...]


@dataclass(frozen=True, slots=True)
class PrivateReply(_Base):
    """The one private DM allowed in answer to a comment (within 7 days of it)."""

    type: ClassVar[str] = "private_reply"
    comment_id: str
    text: str


@dataclass(frozen=True, slots=True)
class PublicReply(_Base):
    """A public reply under a top-level (non-live) comment. ``after_private``: it follows
    the comment's private reply in its workflow (it announces it: "Sent it to your DMs!"),
    so it goes out only if that private reply did."""

    type: ClassVar[str] = "public_reply"
    comment_id: str
    text: str
    after_private: bool = False


@dataclass(frozen=True, slots=True)
class GenerateAIReply(_Base):
    """Ask the AI for a reply: ``auto`` sends it, ``draft`` stores it for the creator.

    ``comment_id`` is set when the reply answers a comment (it is then sent as the comment's
    private reply)."""

    type: ClassVar[str] = "generate_ai_reply"
    mode: str
    comment_id: str | None = None


@dataclass(frozen=True, slots=True)
class SetTag(_Base):
    type: ClassVar[str] = "set_tag"
    tag: str


@dataclass(frozen=True, slots=True)
class RemoveTag(_Base):
    type: ClassVar[str] = "remove_tag"
    tag: str


@dataclass(frozen=True, slots=True)
class SetField(_Base):
    """A contact field was set (by ``set:`` or a captured ``ask:`` answer).

    ``captured``: the value is the contact's answer in the message decided on (the daemon
    records that message as its source, so that their unsend takes it back). Where a value
    came from is not what the action does: equal actions compare equal either way."""

    type: ClassVar[str] = "set_field"
    name: str
    value: str
    captured: bool = dataclasses.field(default=False, compare=False)


@dataclass(frozen=True, slots=True)
class SetStage(_Base):
    type: ClassVar[str] = "set_stage"
    stage: str


@dataclass(frozen=True, slots=True)
class ScoreLead(_Base):
    type: ClassVar[str] = "score_lead"
    points: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class OfferBooking(_Base):
    """Offer booking slots to the contact (the booking feature picks and sends them)."""

    type: ClassVar[str] = "offer_booking"
    text: str | None = None


@dataclass(frozen=True, slots=True)
class HandOff(_Base):
    """The conversation was handed to the creator. ``Decision.state.paused_until`` is already
    set; the executor records the handoff (inbox). The creator is told by a separate
    :class:`Notify` action in the same decision."""

    type: ClassVar[str] = "handoff"
    pause_for_seconds: int
    note: str = ""


@dataclass(frozen=True, slots=True)
class Notify(_Base):
    """Tell the creator something (not the contact)."""

    type: ClassVar[str] = "notify"
    text: str


@dataclass(frozen=True, slots=True)
class Schedule(_Base):
    """Run ``workflow`` from step ``step`` (0-based) at ``run_at`` (unix seconds), by calling
    :func:`~instaset.engine.decide.resume`. ``comment_id`` carries the comment a
    comment-triggered workflow answers, so a private reply after a delay still has it;
    ``public_ok``: it is a top-level post comment, so a public reply after the delay may
    answer it too; ``comment_at``: when it was written (a private reply's 7 days);
    ``text``: the message or comment the workflow answers (``{text}`` in later steps);
    ``private_used`` / ``private_made`` / ``private_missed``: whether the steps before the
    delay used the comment's one private reply, made it as a text (a public reply after the
    delay announces it), or had it refused by the rules (a public reply after the delay is
    dropped); None for a continuation queued before they were carried."""

    type: ClassVar[str] = "schedule"
    run_at: float
    workflow: str
    step: int
    comment_id: str | None = None
    public_ok: bool = False
    comment_at: float | None = None
    text: str | None = None
    private_used: bool | None = None
    private_made: bool = False
    private_missed: bool = False


@dataclass(frozen=True, slots=True)
class TypingOn(_Base):
    """Show the typing indicator to the contact."""

    type: ClassVar[str] = "typing_on"


Action = (
    SendText
    | SendMedia
    | SendButtons
    | SendTemplate
    | PrivateReply
    | PublicReply
    | GenerateAIReply
    | SetTag
    | RemoveTag
    | SetField
    | SetStage
    | ScoreLead
    | OfferBooking
    | HandOff
    | Notify
    | Schedule
    | TypingOn
)

_CLASSES: dict[str, type[Any]] = {
    cls.type: cls
    for cls in (
        SendText,
        SendMedia,
        SendButtons,
        SendTemplate,
        PrivateReply,
        PublicReply,
        GenerateAIReply,
        SetTag,
        RemoveTag,
        SetField,
        SetStage,
        ScoreLead,
        OfferBooking,
        HandOff,
        Notify,
        Schedule,
        TypingOn,
    )
}

#: Actions that put a message in front of the contact (subject to the 24 h window).
_MESSAGES = (SendText, SendMedia, SendButtons, SendTemplate, OfferBooking, TypingOn)


def is_message(action: Action) -> bool:
    """Whether ``action`` sends something to the contact's DMs (needs the 24 h window)."""
    if isinstance(action, GenerateAIReply):
        return action.mode == "auto"
    return isinstance(action, _MESSAGES)


def _button(d: dict[str, Any]) -> Button:
    return Button(title=d["title"], url=d.get("url"), payload=d.get("payload"))


def action_from_dict(d: dict[str, Any]) -> Action:
    """Rebuild an action from :meth:`to_dict` output. Raises ``ValueError`` on an unknown
    ``type`` or missing fields (a job payload from an incompatible version)."""
    kind = d.get("type")
    cls = _CLASSES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown action type {kind!r}")
    args = {k: v for k, v in d.items() if k != "type"}
    if cls is SendText:
        args["quick_replies"] = tuple(QuickReplySpec(**q) for q in args.get("quick_replies", ()))
    elif cls is SendButtons:
        args["buttons"] = tuple(_button(b) for b in args.get("buttons", ()))
    elif cls is SendTemplate:
        args["elements"] = tuple(
            TemplateCard(**{**e, "buttons": tuple(_button(b) for b in e.get("buttons", ()))})
            for e in args.get("elements", ())
        )
    try:
        action: Action = cls(**args)
    except TypeError as exc:
        raise ValueError(f"bad {kind} action: {exc}") from None
    return action
