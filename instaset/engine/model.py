"""The workflow language: pydantic models of the ``workflows:`` section of config.yaml.

A workflow is *when this happens* (``trigger``), *if these hold* (``when``), *do these*
(``actions``)::

    workflows:
      - name: free-guide
        priority: 10                    # higher runs first; ties: order in the file
        trigger:
          dm: {keywords: [guide, "free guide"], match: word}
          comment: {keywords: [guide], media: any}   # several triggers = any of them
        when:
          tags_none: [customer]
          cooldown: 24h
        actions:
          - reply: "Hey {first_name|there}! Here's the guide: {link:guide}"
          - public_reply: ["Check your DMs!", "Sent 📩"]
          - tag: lead

Every model is ``extra="forbid"`` (an unknown key is an error, so typos are caught) and
frozen. Step and trigger mappings hold exactly one kind (``- reply: ...``), and most values
have a short form (a string for a text, ``true`` for an empty block, a list for variants).
Hard Meta limits (13 quick replies, 20-character titles, 3 buttons, 10 template elements) are
validation errors. Keys that are Python keywords use aliases: ``set`` (``set_``) and ``from``
(``from_``); suggestions for unknown keys should use the aliases.

Durations are ``"30s"``, ``"15m"``, ``"12h"``, ``"7d"``, combinations (``"1h30m"``) or plain
seconds; times of day are ``"HH:MM"`` in the creator's timezone.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from instaset.engine.trigger_model import (
    CommentTrigger,
    DMTrigger,
    EmptyTrigger,
    MatchMode,
    PostbackTrigger,
    ReferralTrigger,
    Trigger,
    TriggerKeywords,
)
from instaset.engine.values import (
    ClockTime,
    Days,
    Duration,
    StrList,
    YamlStr,
    YamlWord,
    check_field_name,
    check_not_blank,
    check_template,
    parse_clock,
    parse_days,
    parse_duration,
    true_only,
    true_or_block,
    unbool,
    yaml_bool,
)
from instaset.engine.values import FrozenModel as _Model

__all__ = [
    "NAME_PATTERN",
    "URL_OR_LINK_PATTERN",
    "URL_PATTERN",
    "ActionStep",
    "AskSpec",
    "AskType",
    "ButtonSpec",
    "ButtonsSpec",
    "CommentTrigger",
    "Conditions",
    "DMTrigger",
    "Duration",
    "EmptyTrigger",
    "FieldTest",
    "HandoffSpec",
    "Hours",
    "MatchMode",
    "MediaSpec",
    "OnFail",
    "PostbackTrigger",
    "QuickReply",
    "ReferralTrigger",
    "ReplySpec",
    "ScoreSpec",
    "TemplateElement",
    "TemplateSpec",
    "TextSpec",
    "Trigger",
    "TriggerKeywords",
    "Workflow",
    "check_workflow_names",
    "parse_clock",
    "parse_days",
    "parse_duration",
]


# Patterns of the models' strings (the config loader words its errors by them).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
URL_PATTERN = r"^https?://"
URL_OR_LINK_PATTERN = r"^(https?://|\{link:)"



# --- conditions ---------------------------------------------------------------------------


def _field_test_shorthand(value: object) -> object:
    if isinstance(value, YamlWord):  # `vip: yes` reads like a yes/no, which a test is not
        raise ValueError(f"{value} is not a field test: write {{exists: {value}}} (whether "
                         f"the field is set) or '{value}' in quotes (the field's text is "
                         f"{value})")
    if isinstance(value, str):
        return {"equals": value}
    if isinstance(value, list):
        return {"one_of": value}
    return value


class FieldTest(_Model):
    """A test on one contact field: ``{exists: true}``, ``{equals: pro}``, ``{one_of: [a, b]}``
    (a plain string means ``equals``; values compare case-insensitively)."""

    exists: bool | None = None
    equals: str | None = None
    one_of: tuple[str, ...] | None = None


class Hours(_Model):
    """A weekly time span in the creator's timezone. ``from`` after ``to`` spans midnight
    (``22:00``-``08:00``); such a span belongs to the day it starts on."""

    days: Days = tuple(range(7))
    from_: ClockTime = Field(0, alias="from")
    to: ClockTime = 1440


class Conditions(_Model):
    """Everything listed must hold for the workflow to fire (``when:``)."""

    tags_any: StrList = ()
    tags_all: StrList = ()
    tags_none: StrList = ()
    fields: dict[str, Annotated[FieldTest, BeforeValidator(
        _field_test_shorthand, json_schema_input_type=str | list[str] | FieldTest)]] = Field(
        default_factory=dict
    )
    stage: StrList = ()
    window_open: bool | None = None
    hours: Hours | None = None
    quiet_hours: Hours | None = None
    follower: bool | None = None
    cooldown: Duration | None = None

    @model_validator(mode="after")
    def _check_names(self) -> Conditions:
        for name in self.fields:
            check_field_name(name)
        return self


# --- actions ------------------------------------------------------------------------------


def _text_shorthand(value: object) -> object:
    if isinstance(value, str):
        return {"text": value}
    if isinstance(value, list):
        return {"variants": value}
    return value


class TextSpec(_Model):
    """One text, or ``variants`` of which one is picked per event (deterministically)."""

    text: str | None = None
    variants: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _one_text(self) -> TextSpec:
        if self.text is not None and self.variants:
            raise ValueError("give either text or variants (a list of texts), not both")
        if self.text is None and not self.variants:
            raise ValueError("give a text, or variants (a list of at least one text)")
        for t in self.texts():
            if not t.strip():
                raise ValueError("texts must not be empty")
            check_template(t)
        return self

    def texts(self) -> tuple[str, ...]:
        return (self.text,) if self.text is not None else self.variants


def _quick_reply_shorthand(value: object) -> object:
    value = unbool(value)
    return {"title": value} if isinstance(value, str) else value


class QuickReply(_Model):
    """A quick-reply chip: ``title`` (<= 20 characters, not blank) and ``payload`` (default,
    and when empty: the title, as for a button)."""

    title: YamlStr = Field(min_length=1, max_length=20)
    payload: YamlStr | None = None

    @model_validator(mode="after")
    def _check(self) -> QuickReply:
        check_not_blank("title", self.title, "write the text the chip shows")
        return self

    @property
    def effective_payload(self) -> str:
        # Meta requires a payload: an empty one falls back to the title, as a button's does.
        return self.payload or self.title


class ReplySpec(TextSpec):
    """A DM text with optional quick replies (at most 13)."""

    quick_replies: tuple[Annotated[QuickReply, BeforeValidator(
        _quick_reply_shorthand, json_schema_input_type=str | bool | QuickReply)], ...] = (
        Field(default=(), max_length=13)
    )


class AskType(StrEnum):
    TEXT = "text"
    EMAIL = "email"
    PHONE = "phone"
    CHOICE = "choice"


class OnFail(StrEnum):
    """What happens after ``max_retries`` invalid answers: ``stop`` the workflow silently,
    ``continue`` with the next step without the field, or ``handoff`` to the creator."""

    STOP = "stop"
    CONTINUE = "continue"
    HANDOFF = "handoff"


class AskSpec(_Model):
    """Ask a question, wait for the answer, validate it and store it in ``field``."""

    field: str
    prompt: str = Field(min_length=1)
    type: AskType = AskType.TEXT
    choices: StrList = Field(default=(), max_length=13)
    retry: str | None = None
    max_retries: int = Field(2, ge=0, le=10)
    on_fail: OnFail = OnFail.STOP

    @model_validator(mode="after")
    def _check(self) -> AskSpec:
        check_field_name(self.field)
        check_not_blank("prompt", self.prompt, "write the question to ask")
        check_template(self.prompt)
        check_not_blank("retry", self.retry, "write the text sent after an invalid answer, "
                        "or leave retry out to ask the prompt again")
        if self.retry is not None:
            check_template(self.retry)
        if self.type is AskType.CHOICE and not self.choices:
            raise ValueError("type: choice needs choices")
        if self.choices and self.type is not AskType.CHOICE:
            raise ValueError("choices are only used with type: choice")
        for c in self.choices:
            check_not_blank("choices", c, "remove it")  # each choice is a quick reply
            if not 1 <= len(c) <= 20:
                raise ValueError(f"choice {c!r} must be 1-20 characters (it is a quick reply)")
        return self


def _ai_shorthand(value: object) -> object:
    truth = yaml_bool(value)
    if truth is False:  # YAML reads a bare `off` (and `no`) as false: the creator meant off
        return {"mode": "off"}
    if truth is True or value is None:
        return {}
    if isinstance(value, str):
        return {"mode": value}
    return value


AIMode = Literal["auto", "draft", "off"]


class AISpec(_Model):
    """``auto`` sends the AI's reply, ``draft`` saves it for the creator, ``off`` does nothing."""

    mode: AIMode = "auto"


class HandoffSpec(_Model):
    """Pause automation for this contact (default pause from settings) and notify the creator."""

    pause_for: Duration | None = None
    note: str | None = None

    _note = field_validator("note")(lambda v: v if v is None else check_template(v))


class MediaSpec(_Model):
    type: Literal["image", "video", "audio", "file"]
    url: str = Field(pattern=URL_PATTERN)


class ButtonSpec(_Model):
    """A button: opens ``url``, or sends ``payload`` back as a postback."""

    title: YamlStr = Field(min_length=1, max_length=20)
    url: str | None = Field(None, pattern=URL_OR_LINK_PATTERN)
    payload: YamlStr | None = None

    @model_validator(mode="after")
    def _one_target(self) -> ButtonSpec:
        if self.url is None and self.payload is None:
            raise ValueError("a button needs either url or payload")
        if self.url is not None and self.payload is not None:
            raise ValueError("a button has either url or payload, not both")
        check_not_blank("title", self.title, "write the button's label")
        return self


class ButtonsSpec(_Model):
    """A text (<= 640 characters) with 1-3 buttons."""

    text: str = Field(min_length=1, max_length=640)
    buttons: tuple[ButtonSpec, ...] = Field(min_length=1, max_length=3)

    _text = field_validator("text")(check_template)

    @model_validator(mode="after")
    def _check(self) -> ButtonsSpec:
        check_not_blank("text", self.text, "write the text shown above the buttons")
        return self


class TemplateElement(_Model):
    title: str = Field(min_length=1, max_length=80)
    subtitle: str | None = Field(None, max_length=80)
    image_url: str | None = None
    url: str | None = None
    buttons: tuple[ButtonSpec, ...] = Field(default=(), max_length=3)

    _texts = field_validator("title", "subtitle")(
        lambda v: v if v is None else check_template(v))

    @model_validator(mode="after")
    def _check(self) -> TemplateElement:
        check_not_blank("title", self.title, "write the card's title")
        return self


class TemplateSpec(_Model):
    """A generic template (carousel) of 1-10 cards."""

    elements: tuple[TemplateElement, ...] = Field(min_length=1, max_length=10)


def _score_shorthand(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        return {"points": value}
    if not isinstance(value, dict):
        shown = "null" if value is None else (  # as YAML says it
            str(value).lower() if isinstance(value, bool)
            else str(value) if isinstance(value, YamlWord) else repr(value))
        raise ValueError(f"must be a number of points (score: 20) or {{points: 20, reason: "
                         f"TEXT}}, got {shown}")
    return value


MAX_POINTS = 1_000_000
"""The most points one lead rule or ``score`` step may give or take: a score is stored as
an SQLite integer (at most 2**63), and one past it failed every event of the contact."""


class ScoreSpec(_Model):
    points: int = Field(ge=-MAX_POINTS, le=MAX_POINTS)
    reason: str = ""


class OfferBookingSpec(_Model):
    """Offer booking slots (the booking feature sends them); optional intro text."""

    text: str | None = None

    _text = field_validator("text")(lambda v: v if v is None else check_template(v))

    @model_validator(mode="after")
    def _check(self) -> OfferBookingSpec:
        check_not_blank("text", self.text, "write the intro, or leave text out to use "
                        "booking.intro")
        return self


# The JSON Schema of each short form's field is what the YAML may say (the input type), not
# the expanded model alone: `instaset config schema` serves editors the config as written.
_Text = Annotated[TextSpec, BeforeValidator(
    _text_shorthand, json_schema_input_type=str | list[str] | TextSpec)]

_STEP_KINDS = (
    "reply",
    "private_reply",
    "public_reply",
    "tag",
    "untag",
    "set",
    "stage",
    "ask",
    "delay",
    "ai_reply",
    "handoff",
    "notify",
    "media",
    "template",
    "buttons",
    "score",
    "offer_booking",
    "typing",
)


class ActionStep(_Model):
    """One step of a workflow: a mapping with exactly one of the kinds below."""

    reply: Annotated[ReplySpec, BeforeValidator(
        _text_shorthand, json_schema_input_type=str | list[str] | ReplySpec)] | None = None
    private_reply: _Text | None = None
    public_reply: _Text | None = None
    tag: StrList | None = None
    untag: StrList | None = None
    set_: dict[str, str] | None = Field(None, alias="set")
    stage: str | None = None
    ask: AskSpec | None = None
    delay: Duration | None = None
    ai_reply: Annotated[AISpec, BeforeValidator(
        _ai_shorthand, json_schema_input_type=bool | AIMode | AISpec | None)] | None = None
    handoff: Annotated[HandoffSpec, true_or_block(HandoffSpec)] | None = None
    notify: str | None = None
    media: MediaSpec | None = None
    template: TemplateSpec | None = None
    buttons: ButtonsSpec | None = None
    score: Annotated[ScoreSpec, BeforeValidator(
        _score_shorthand, json_schema_input_type=int | ScoreSpec)] | None = None
    offer_booking: Annotated[OfferBookingSpec, true_or_block(OfferBookingSpec)] | None = None
    typing: Annotated[Literal[True] | None, BeforeValidator(true_only)] = None

    @model_validator(mode="before")
    @classmethod
    def _null_blocks(cls, data: Any) -> Any:
        # ``- handoff:`` / ``- offer_booking:`` with no value mean "with defaults", and
        # ``- typing:`` means ``typing: true`` (it has no other value).
        if isinstance(data, dict):
            return {
                k: ({} if v is None and k in ("handoff", "offer_booking", "ai_reply")
                    else True if v is None and k == "typing" else v)
                for k, v in data.items()
            }
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> ActionStep:
        kinds = [k for k in _STEP_KINDS if self.value(k) is not None]
        if len(kinds) != 1:
            found = ", ".join(kinds) if kinds else "nothing"
            raise ValueError(
                f"each step is exactly one of {', '.join(_STEP_KINDS)} (found {found}); "
                "start a new '- ' item for each step"
            )
        if self.set_ is not None:
            for name, value in self.set_.items():
                check_field_name(name)
                check_template(value)
        if self.notify is not None:
            check_template(self.notify)
        return self

    def value(self, kind: str) -> Any:
        return getattr(self, "set_" if kind == "set" else kind)

    @property
    def kind(self) -> str:
        """The step kind (``reply``, ``ask``, ``set`` ...)."""
        return next(k for k in _STEP_KINDS if self.value(k) is not None)


# --- workflow -----------------------------------------------------------------------------


class Workflow(_Model):
    """A named automation: trigger, conditions (``when``) and ordered steps (``actions``)."""

    name: str = Field(min_length=1, max_length=64, pattern=NAME_PATTERN)
    description: str | None = None
    enabled: bool = True
    priority: int = 0
    trigger: Trigger
    when: Conditions = Field(default_factory=Conditions)
    actions: tuple[ActionStep, ...]

    @model_validator(mode="after")
    def _check_steps(self) -> Workflow:
        if not self.actions:
            raise ValueError("actions needs at least one step")
        for i, step in enumerate(self.actions, start=1):
            if step.kind in ("private_reply", "public_reply") and not self.trigger.on_comments:
                raise ValueError(
                    f"step {i} ({step.kind}) only works on comments: add a comment or "
                    "live_comment trigger, or use reply"
                )
        return self


def check_workflow_names(workflows: list[Workflow] | tuple[Workflow, ...]) -> list[str]:
    """Problems with a set of workflows taken together (duplicate names); empty if fine.

    Names are how cooldowns, scheduled continuations and pending questions refer to a
    workflow, so they must be unique."""
    seen: set[str] = set()
    problems: list[str] = []
    for wf in workflows:
        if wf.name in seen:
            problems.append(f"workflow name {wf.name!r} is used twice; names must be unique")
        seen.add(wf.name)
    return problems
